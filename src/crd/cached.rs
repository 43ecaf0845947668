//! What the watch cache keeps of each PhoneNumber: the object packed small, and beside it the
//! few facts the operator's scans over all objects read (the drift-check sweep, the Secret and
//! Namespace watches, the claims index, the accounts' counts, the object counts of `/metrics`).
//!
//! A decoded `PhoneNumber` is about 2.6 KiB in 39 allocations at rest (968 bytes inline, two
//! dozen small strings, the conditions); 10,000 of them were most of the operator's memory.
//! Packed, an object is its JSON compressed with LZ4 against a template of a typical object
//! (the keys, the constant values, the condition messages): about 300 bytes. A pass decodes
//! its object once (tens of microseconds beside the milliseconds of its API calls), and so
//! do the few rivals of a claim; nothing else decodes.

use std::sync::LazyLock;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Deserializer};
use serde_json::json;

use crate::conditions as status;
use crate::crd::AccountId;
use crate::crd::{
    ANNOTATION_PREFIX, ANNOTATION_REGISTRATION_ATTEMPT, AccountKind, PhoneNumber, WirePhoneNumber,
};
use crate::error::Error;
use kube::runtime::watcher;

/// One cached PhoneNumber.
#[derive(Clone, Debug)]
pub struct CachedPhoneNumber {
    /// Name, namespace and resourceVersion (kube's store keys the cache by a copy of them; its
    /// watcher resumes from the version of the last event, and relists without one), and the
    /// creation and deletion timestamps exactly: JSON keeps a `metav1.Time` to the second, and the
    /// ownership order compares creation times (a real apiserver serves whole seconds, but
    /// the cache must not be what decides).
    meta: ObjectMeta,
    /// The uid, the number, the id the object knows, its Secret's name and its account's
    /// name, in one allocation (`Facts`).
    facts: Box<str>,
    ends: [u16; Fact::COUNT],
    flags: u8,
    /// The whole object (as the cache slimmed it), JSON compressed against `TEMPLATE`.
    packed: Box<[u8]>,
    unpacked_len: u32,
}

/// The facts kept as text, in the order of `facts`.
#[derive(Clone, Copy)]
enum Fact {
    Uid,
    Number,
    KnownId,
    Secret,
    AccountName,
}

impl Fact {
    const COUNT: usize = 5;
}

// `flags`: the conditions the scans look at, and what makes a pass a background check.
const READY: u8 = 1;
const RECONCILING: u8 = 1 << 1;
const STALLED: u8 = 1 << 2;
const DELETION_BLOCKED: u8 = 1 << 3;
/// Generation observed, reconcile request handled, not being deleted
/// (`polling::is_background_check` but for the dispatch).
const SETTLED: u8 = 1 << 4;
const CLUSTER_ACCOUNT: u8 = 1 << 5;

impl CachedPhoneNumber {
    /// Pack an object (already slimmed for the cache).
    pub fn pack(obj: &PhoneNumber) -> serde_json::Result<CachedPhoneNumber> {
        let json = serde_json::to_vec(obj)?;
        let packed = lz4_flex::block::compress_with_dict(&json, &TEMPLATE).into_boxed_slice();
        let is_true = |t: &str| obj.condition(t).is_some_and(|c| c.status == "True");
        let mut flags = 0;
        if is_true(status::READY) {
            flags |= READY;
        }
        if is_true(status::RECONCILING) {
            flags |= RECONCILING;
        }
        if is_true(status::STALLED) {
            flags |= STALLED;
            if obj
                .condition(status::STALLED)
                .is_some_and(|c| c.reason == status::reason::DELETION_BLOCKED)
            {
                flags |= DELETION_BLOCKED;
            }
        }
        let settled = obj.status.as_ref().is_some_and(|s| {
            s.observed_generation == obj.metadata.generation
                && s.last_handled_reconcile_at.as_deref()
                    == obj.annotation(crate::crd::ANNOTATION_RECONCILE_REQUESTED_AT)
        });
        if settled && obj.metadata.deletion_timestamp.is_none() {
            flags |= SETTLED;
        }
        let account = obj.spec.account_ref.as_ref();
        if account.is_some_and(|a| a.kind == AccountKind::ClusterOneInboxAccount) {
            flags |= CLUSTER_ACCOUNT;
        }
        let known_id = obj.known_id();
        let texts = [
            obj.metadata.uid.as_deref().unwrap_or_default(),
            obj.spec.phone_number.as_str(),
            known_id.as_deref().unwrap_or_default(),
            obj.referenced_secrets().next().unwrap_or_default(),
            account.map(|a| a.name.as_str()).unwrap_or_default(),
        ];
        let mut facts = String::with_capacity(texts.iter().map(|t| t.len()).sum());
        let mut ends = [0u16; Fact::COUNT];
        for (end, text) in ends.iter_mut().zip(texts) {
            facts.push_str(text);
            // Each is bounded by the schema (at most 253 bytes), so all fit in a u16.
            *end = u16::try_from(facts.len()).unwrap_or(u16::MAX);
        }
        Ok(CachedPhoneNumber {
            meta: ObjectMeta {
                name: obj.metadata.name.clone(),
                namespace: obj.metadata.namespace.clone(),
                resource_version: obj.metadata.resource_version.clone(),
                creation_timestamp: obj.metadata.creation_timestamp.clone(),
                deletion_timestamp: obj.metadata.deletion_timestamp.clone(),
                ..ObjectMeta::default()
            },
            facts: facts.into_boxed_str(),
            ends,
            flags,
            packed,
            unpacked_len: u32::try_from(json.len()).unwrap_or(u32::MAX),
        })
    }

    /// The object as it was packed.
    pub fn object(&self) -> Result<PhoneNumber, Error> {
        let json = lz4_flex::block::decompress_with_dict(
            &self.packed,
            self.unpacked_len as usize,
            &TEMPLATE,
        )
        .map_err(|_| Error::Unpack)?;
        let mut obj: PhoneNumber = serde_json::from_slice(&json).map_err(|_| Error::Unpack)?;
        obj.metadata.creation_timestamp = self.meta.creation_timestamp.clone();
        obj.metadata.deletion_timestamp = self.meta.deletion_timestamp.clone();
        Ok(obj)
    }

    fn fact(&self, f: Fact) -> Option<&str> {
        let i = f as usize;
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        let text = self.facts.get(start..self.ends[i] as usize)?;
        (!text.is_empty()).then_some(text)
    }

    pub fn uid(&self) -> Option<&str> {
        self.fact(Fact::Uid)
    }

    /// `metadata.resourceVersion`, as the number the apiserver's versions are.
    pub fn resource_version(&self) -> Option<u64> {
        self.meta.resource_version.as_deref()?.parse().ok()
    }

    /// `spec.phoneNumber`.
    pub fn phone_number(&self) -> &str {
        self.fact(Fact::Number).unwrap_or_default()
    }

    /// `PhoneNumber::known_id`.
    pub fn known_id(&self) -> Option<&str> {
        self.fact(Fact::KnownId)
    }

    /// `PhoneNumber::referenced_secrets`.
    pub fn referenced_secrets(&self) -> impl Iterator<Item = &str> {
        self.fact(Fact::Secret).into_iter()
    }

    /// `AccountId::of` the object.
    pub fn account(&self, default_account: Option<&str>) -> AccountId {
        let kind = if self.flags & CLUSTER_ACCOUNT != 0 {
            AccountKind::ClusterOneInboxAccount
        } else {
            AccountKind::OneInboxAccount
        };
        AccountId::named(
            self.fact(Fact::AccountName).map(|name| (kind, name)),
            self.meta.namespace.as_deref().unwrap_or_default(),
            default_account,
        )
    }

    /// Whether its Ready condition is True.
    pub fn is_ready(&self) -> bool {
        self.flags & READY != 0
    }

    pub fn is_reconciling(&self) -> bool {
        self.flags & RECONCILING != 0
    }

    pub fn is_stalled(&self) -> bool {
        self.flags & STALLED != 0
    }

    /// Stalled because its deletion is blocked.
    pub fn is_deletion_blocked(&self) -> bool {
        self.flags & DELETION_BLOCKED != 0
    }

    /// `polling::is_background_check` of the object.
    pub fn is_background_check(&self, check_dispatched: bool) -> bool {
        check_dispatched && self.is_ready() && self.flags & SETTLED != 0
    }

    /// Bytes it holds apart from its inline struct (for the footprint test).
    pub fn heap_bytes(&self) -> usize {
        self.facts.len()
            + self.packed.len()
            + self.meta.name.as_ref().map_or(0, String::capacity)
            + self.meta.namespace.as_ref().map_or(0, String::capacity)
    }
}

/// Read off the wire as the cache keeps it: without managed fields (`WirePhoneNumber`),
/// slimmed (`slim_for_cache`), packed. The watch decodes its events as this type.
impl<'de> Deserialize<'de> for CachedPhoneNumber {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<CachedPhoneNumber, D::Error> {
        let mut pn = WirePhoneNumber::deserialize(d)?.0;
        slim_for_cache(&mut pn);
        CachedPhoneNumber::pack(&pn).map_err(serde::de::Error::custom)
    }
}

crate::crd::phone_number_resource!(CachedPhoneNumber, |o| o.meta);

/// What objects have in common, as LZ4's dictionary: a Ready object with SIP credentials and
/// routing, as the operator writes it (its JSON has the same key order as every object's).
/// Values that differ per object compress less, never wrongly.
static TEMPLATE: LazyLock<Vec<u8>> = LazyLock::new(|| {
    let agent = "3c90c3cc-0d44-4b50-8888-8dd25736052a";
    let template = serde_json::from_value::<PhoneNumber>(json!({
        "apiVersion": "oneinbox.ai/v1alpha1", "kind": "PhoneNumber",
        "metadata": {
            "name": "phone-number", "namespace": "default",
            "uid": "00000000-0000-0000-0000-000000000000", "resourceVersion": "1000000",
            "generation": 1, "creationTimestamp": "2026-01-01T00:00:00Z",
            "deletionTimestamp": "2026-01-01T00:00:00Z",
            "finalizers": [crate::crd::FINALIZER],
            "annotations": {
                crate::crd::ANNOTATION_PHONE_NUMBER_ID: agent,
                crate::crd::ANNOTATION_REGISTRATION_ATTEMPT:
                    json!({"token": agent, "startedAt": "2026-01-01T00:00:00.000000Z",
                           "credentialsHash": "hmac-sha256:", "uid": agent}).to_string(),
            }
        },
        "spec": {
            "phoneNumber": "+15550000000", "provider": "twilio", "agentId": agent,
            "friendlyName": "Sales line",
            "providerConfig": {
                "trunkAddress": "example.pstn.twilio.com", "authUsername": "oneinbox",
                "authPasswordSecretRef": {"name": "phone-number-sip", "key": "password"}
            },
            "inboundRouting": {"agentId": agent, "fallback": {"agentId": agent},
                               "voicemailMessage": "Sorry, we missed your call."},
            "accountRef": {"kind": "ClusterOneInboxAccount", "name": "default"}
        },
        "status": {
            "observedGeneration": 1, "phoneNumberId": agent, "state": "active",
            "inboundTrunkId": "ST_", "outboundTrunkId": "ST_", "dispatchRuleId": "SDR_",
            "createdAt": "2026-01-01T00:00:00.000000Z", "updatedAt": "2026-01-01T00:00:00.000000Z",
            "credentialsHash": "hmac-sha256:00000000:", "settledAttempt": agent,
            "secretVersions": {"phone-number-sip": "1000000"},
            "conditions": [
                {"type": status::READY, "status": "True", "reason": status::reason::AVAILABLE,
                 "message": "The number is registered with OneInbox, active, and matches the spec",
                 "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 1},
                {"type": status::RECONCILING, "status": "True", "reason": "Registering",
                 "message": "The number is being registered with OneInbox",
                 "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 1}
            ]
        }
    }));
    // A template that did not build would only make the packing weaker: tested below.
    template
        .ok()
        .and_then(|mut t| {
            slim_for_cache(&mut t);
            serde_json::to_vec(&t).ok()
        })
        .unwrap_or_default()
});

/// What the cache keeps of a watched object: everything but the metadata the operator never
/// reads (managedFields, labels, annotations other than `oneinbox.ai/*`, among them kubectl's
/// full last-applied copy). These are most of an object's size (memory at 10,000 objects);
/// metadata writes are patches of single keys, so nothing dropped here is ever written back.
pub fn slim_for_cache(pn: &mut PhoneNumber) {
    // A settled attempt's record says nothing the status does not: only one in flight is kept.
    let settled = pn.registration_attempt().is_some_and(|a| pn.settles(&a));
    let meta = &mut pn.metadata;
    meta.managed_fields = None;
    meta.labels = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.retain(|key, _| {
            key.starts_with(ANNOTATION_PREFIX)
                && !(settled && key == ANNOTATION_REGISTRATION_ATTEMPT)
        });
        if annotations.is_empty() {
            meta.annotations = None;
        }
    }
}

/// A watch event as the cache keeps its object: slimmed (`slim_for_cache`) and packed
/// (`cache`), as the watch decodes it. For tests that feed a cache by hand.
pub fn packed_event(
    e: watcher::Event<PhoneNumber>,
) -> serde_json::Result<watcher::Event<CachedPhoneNumber>> {
    use watcher::Event;
    let cached = |mut pn: PhoneNumber| {
        slim_for_cache(&mut pn);
        CachedPhoneNumber::pack(&pn)
    };
    Ok(match e {
        Event::Apply(o) => Event::Apply(cached(o)?),
        Event::Delete(o) => Event::Delete(cached(o)?),
        Event::Init => Event::Init,
        Event::InitApply(o) => Event::InitApply(cached(o)?),
        Event::InitDone => Event::InitDone,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use kube::{Resource, ResourceExt};

    fn object(
        uid: &str,
        account: Option<serde_json::Value>,
        conditions: serde_json::Value,
    ) -> PhoneNumber {
        let mut spec = json!({"phoneNumber": "+15551234567", "provider": "twilio",
            "agentId": "3c90c3cc-0d44-4b50-8888-8dd25736052a",
            "providerConfig": {"trunkAddress": "t.example.com", "authUsername": "u",
                               "authPasswordSecretRef": {"name": "sip"}}});
        if let Some(a) = account {
            spec["accountRef"] = a;
        }
        serde_json::from_value(json!({
            "apiVersion": "oneinbox.ai/v1alpha1", "kind": "PhoneNumber",
            "metadata": {"name": "a", "namespace": "ns", "uid": uid, "resourceVersion": "42",
                         "generation": 2, "finalizers": [crate::crd::FINALIZER],
                         "annotations": {crate::crd::ANNOTATION_PHONE_NUMBER_ID: "id-from-annotation"}},
            "spec": spec,
            "status": {"observedGeneration": 2, "phoneNumberId": "id-1", "conditions": conditions}
        }))
        .unwrap()
    }

    fn condition(t: &str, s: &str, reason: &str) -> serde_json::Value {
        json!({"type": t, "status": s, "reason": reason, "message": "m",
               "lastTransitionTime": "2026-01-01T00:00:00Z"})
    }

    #[test]
    fn an_object_unpacks_as_it_was_packed_with_its_facts_beside_it() {
        let obj = object(
            "u-1",
            Some(json!({"kind": "OneInboxAccount", "name": "team"})),
            json!([condition("Ready", "True", "Available")]),
        );
        let cached = CachedPhoneNumber::pack(&obj).unwrap();
        assert_eq!(cached.object().unwrap(), obj);
        assert_eq!(cached.name_any(), "a");
        assert_eq!(cached.namespace().as_deref(), Some("ns"));
        assert_eq!(cached.uid(), Some("u-1"));
        assert_eq!(cached.resource_version(), Some(42));
        assert_eq!(cached.phone_number(), "+15551234567");
        assert_eq!(cached.known_id().map(str::to_owned), obj.known_id());
        assert_eq!(cached.referenced_secrets().collect::<Vec<_>>(), ["sip"]);
        assert_eq!(
            cached.account(Some("dflt")),
            AccountId::of(&obj, Some("dflt"))
        );
        assert!(cached.is_ready() && !cached.is_reconciling() && !cached.is_stalled());
        assert_eq!(
            cached.is_background_check(true),
            crate::controller::polling::is_background_check(&obj, true)
        );
        assert!(!cached.is_background_check(false));
        // The store key carries no uid; the watcher needs the version (it resumes from it).
        assert_eq!(cached.meta().uid, None);
        assert_eq!(cached.meta().resource_version.as_deref(), Some("42"));
    }

    #[test]
    fn creation_and_deletion_times_keep_their_fractions() {
        let mut obj = object("u", None, json!([]));
        let t: jiff::Timestamp = "2026-01-01T00:00:00.25Z".parse().unwrap();
        obj.metadata.creation_timestamp = Some(Time(t));
        obj.metadata.deletion_timestamp = Some(Time(t));
        let back = CachedPhoneNumber::pack(&obj).unwrap().object().unwrap();
        assert_eq!(back.metadata.creation_timestamp, Some(Time(t)));
        assert_eq!(back.metadata.deletion_timestamp, Some(Time(t)));
    }

    #[test]
    fn the_facts_match_the_object_for_every_account_and_condition() {
        let accounts = [
            None,
            Some(json!({"kind": "OneInboxAccount", "name": "team"})),
            Some(json!({"kind": "ClusterOneInboxAccount", "name": "shared"})),
        ];
        let conditions = [
            json!([]),
            json!([
                condition("Ready", "False", "Registering"),
                condition("Reconciling", "True", "Registering")
            ]),
            json!([
                condition("Ready", "False", "Invalid"),
                condition("Stalled", "True", "SecretNotFound")
            ]),
            json!([
                condition("Ready", "False", "Deleting"),
                condition("Reconciling", "True", "Deleting"),
                condition("Stalled", "True", status::reason::DELETION_BLOCKED)
            ]),
        ];
        for account in &accounts {
            for conds in &conditions {
                for uid in ["", "u"] {
                    let mut obj = object(uid, account.clone(), conds.clone());
                    if uid.is_empty() {
                        obj.metadata.uid = None;
                        obj.status.as_mut().unwrap().phone_number_id = None;
                        obj.metadata.annotations = None;
                        obj.spec.provider_config = None;
                        obj.spec.credential_id = Some("c".into());
                    }
                    let cached = CachedPhoneNumber::pack(&obj).unwrap();
                    let is_true = |t: &str| obj.condition(t).is_some_and(|c| c.status == "True");
                    assert_eq!(cached.object().unwrap(), obj);
                    assert_eq!(cached.uid().map(str::to_owned), obj.uid());
                    assert_eq!(cached.known_id().map(str::to_owned), obj.known_id());
                    assert!(cached.referenced_secrets().eq(obj.referenced_secrets()));
                    for default in [None, Some("dflt")] {
                        assert_eq!(cached.account(default), AccountId::of(&obj, default));
                    }
                    assert_eq!(cached.is_ready(), is_true(status::READY));
                    assert_eq!(cached.is_reconciling(), is_true(status::RECONCILING));
                    assert_eq!(cached.is_stalled(), is_true(status::STALLED));
                    assert_eq!(
                        cached.is_deletion_blocked(),
                        obj.condition(status::STALLED)
                            .is_some_and(|c| c.status == "True"
                                && c.reason == status::reason::DELETION_BLOCKED)
                    );
                }
            }
        }
    }

    #[test]
    fn a_typical_object_packs_to_a_fraction_of_its_json() {
        let obj = object(
            "5f0c6a0e-8d1e-4a7b-9a55-0f6f2f1c9a77",
            None,
            json!([condition("Ready", "True", "Available")]),
        );
        let cached = CachedPhoneNumber::pack(&obj).unwrap();
        let json = serde_json::to_vec(&obj).unwrap().len();
        assert!(TEMPLATE.len() > 1000);
        assert!(
            cached.packed.len() * 3 < json,
            "{} of {json}",
            cached.packed.len()
        );
    }
}
