//! How a `PhoneNumber` is read off the wire: like the derived `Deserialize`, but without
//! `metadata.managedFields`. Every watch event and every write's response carries the object's
//! managed fields (a JSON tree per field manager, often larger than the spec); the operator
//! never reads them, and decoding them into `serde_json::Value`s was a tenth of its CPU in a
//! burst. Here serde skips them without building anything.
//!
//! `WirePhoneNumber` is the type the operator's watch and its writes are decoded as (an
//! `Api<WirePhoneNumber>` is the same resource); the rest of the operator sees its
//! `PhoneNumber`. (The derived `Deserialize` of `PhoneNumber` cannot be told to skip a field.)

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use serde::{Deserialize, Deserializer};

use super::{PhoneNumber, PhoneNumberSpec, PhoneNumberStatus};

/// A `PhoneNumber` as read off the wire (without its managed fields).
#[derive(Clone, Debug)]
pub struct WirePhoneNumber(pub PhoneNumber);

impl<'de> Deserialize<'de> for WirePhoneNumber {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<WirePhoneNumber, D::Error> {
        Wire::deserialize(d).map(|w| WirePhoneNumber(w.into()))
    }
}

crate::crd::phone_number_resource!(WirePhoneNumber, |o| o.0.metadata);

/// The object as it arrives. `apiVersion` and `kind` are not read (the derived impl ignores
/// them too).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Wire {
    metadata: WireMeta,
    spec: PhoneNumberSpec,
    #[serde(default)]
    status: Option<PhoneNumberStatus>,
}

/// `ObjectMeta` but for `managedFields`, which serde skips as an unknown field.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireMeta {
    annotations: Option<BTreeMap<String, String>>,
    creation_timestamp: Option<Time>,
    deletion_grace_period_seconds: Option<i64>,
    deletion_timestamp: Option<Time>,
    finalizers: Option<Vec<String>>,
    generate_name: Option<String>,
    generation: Option<i64>,
    labels: Option<BTreeMap<String, String>>,
    name: Option<String>,
    namespace: Option<String>,
    owner_references: Option<Vec<OwnerReference>>,
    resource_version: Option<String>,
    self_link: Option<String>,
    uid: Option<String>,
}

impl From<Wire> for PhoneNumber {
    fn from(w: Wire) -> PhoneNumber {
        let m = w.metadata;
        PhoneNumber {
            metadata: ObjectMeta {
                annotations: m.annotations,
                creation_timestamp: m.creation_timestamp,
                deletion_grace_period_seconds: m.deletion_grace_period_seconds,
                deletion_timestamp: m.deletion_timestamp,
                finalizers: m.finalizers,
                generate_name: m.generate_name,
                generation: m.generation,
                labels: m.labels,
                managed_fields: None,
                name: m.name,
                namespace: m.namespace,
                owner_references: m.owner_references,
                resource_version: m.resource_version,
                self_link: m.self_link,
                uid: m.uid,
            },
            spec: w.spec,
            status: w.status,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_field_but_the_managed_fields_is_read() {
        let full = json!({
            "apiVersion": "oneinbox.ai/v1alpha1",
            "kind": "PhoneNumber",
            "metadata": {
                "annotations": {"oneinbox.ai/paused": "true"},
                "creationTimestamp": "2026-12-01T10:00:00Z",
                "deletionGracePeriodSeconds": 0,
                "deletionTimestamp": "2026-12-01T11:00:00Z",
                "finalizers": ["oneinbox.ai/deregister"],
                "generateName": "pn-",
                "generation": 3,
                "labels": {"team": "voice"},
                "managedFields": [{"manager": "kubectl", "operation": "Apply",
                                   "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:agentId": {}}}}],
                "name": "pn-1",
                "namespace": "voice",
                "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "o",
                                     "uid": "u-1"}],
                "resourceVersion": "42",
                "selfLink": "/x",
                "uid": "3c90c3cc-0d44-4b50-8888-8dd25736052a"
            },
            "spec": {"phoneNumber": "+15551234567", "provider": "twilio",
                     "agentId": "3c90c3cc-0d44-4b50-8888-8dd25736052a",
                     "credentialId": "3c90c3cc-0d44-4b50-8888-8dd25736052a"},
            "status": {"observedGeneration": 2, "phoneNumberId": "pn_1"}
        });
        let read = serde_json::from_value::<WirePhoneNumber>(full.clone())
            .unwrap()
            .0;
        assert_eq!(read.metadata.managed_fields, None);
        // Everything else is what k8s-openapi's own ObjectMeta reads.
        let mut want: ObjectMeta = serde_json::from_value(full["metadata"].clone()).unwrap();
        assert!(want.managed_fields.is_some());
        want.managed_fields = None;
        assert_eq!(read.metadata, want);
        assert_eq!(
            read.spec,
            serde_json::from_value::<PhoneNumberSpec>(full["spec"].clone()).unwrap()
        );
        assert_eq!(
            read.status
                .as_ref()
                .and_then(|s| s.phone_number_id.as_deref()),
            Some("pn_1")
        );
        // The derived reading agrees but for the managed fields.
        let mut derived: PhoneNumber = serde_json::from_value(full).unwrap();
        derived.metadata.managed_fields = None;
        assert_eq!(derived, read);
    }

    #[test]
    fn an_object_without_status_or_metadata_fields_reads() {
        let pn = serde_json::from_value::<WirePhoneNumber>(json!({
            "metadata": {"name": "a"},
            "spec": {"phoneNumber": "+15551234567", "provider": "telnyx",
                     "agentId": "3c90c3cc-0d44-4b50-8888-8dd25736052a",
                     "credentialId": "3c90c3cc-0d44-4b50-8888-8dd25736052a"}
        }))
        .unwrap()
        .0;
        assert_eq!(pn.metadata.name.as_deref(), Some("a"));
        assert!(pn.status.is_none());
    }
}
