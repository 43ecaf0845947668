//! What the reconciler sends and compares (pure): the register request a spec asks for, the
//! PATCH that brings a registration in line, the drifted fields, and the digests kept between
//! checks instead of the registration. No IO; everything here is unit-tested.

use std::hash::{DefaultHasher, Hash, Hasher};

use serde_json::{Map, Value};

use super::credentials::Credentials;
use crate::crd::{PhoneNumber, SecretVersionMap};
use crate::oneinbox::{
    PatchRequest, RegisterRequest, Registration, Routing, RoutingFallback, SipProviderConfig,
};

/// The routing the spec asks for, in the API's shape.
fn spec_routing(obj: &PhoneNumber) -> Option<Routing> {
    obj.spec.inbound_routing.as_ref().map(|r| Routing {
        agent_id: r.agent_id.clone(),
        fallback: r.fallback.as_ref().map(|f| RoutingFallback {
            agent_id: f.agent_id.clone(),
        }),
        voicemail_message: r.voicemail_message.clone(),
    })
}

/// `POST /v1/phone-numbers` for the spec and its resolved credentials.
pub fn register_request(obj: &PhoneNumber, creds: &Credentials) -> RegisterRequest {
    let (provider_config, credential_id) = match creds {
        Credentials::Sip {
            trunk_address,
            auth_username,
            auth_password,
        } => (
            Some(SipProviderConfig {
                trunk_address: trunk_address.clone(),
                auth_username: auth_username.clone(),
                auth_password: auth_password.clone(),
            }),
            None,
        ),
        Credentials::Stored { credential_id } => (None, Some(credential_id.clone())),
    };
    RegisterRequest {
        phone_number: obj.spec.phone_number.clone(),
        provider: obj.spec.provider.as_str().to_owned(),
        agent_id: obj.spec.agent_id.clone(),
        friendly_name: obj.spec.friendly_name.clone(),
        provider_config,
        credential_id,
        inbound_routing: spec_routing(obj),
    }
}

/// What the PATCHable fields of a registration held, one 64-bit digest per field: the reconciler
/// keeps this between checks instead of the registration, so a spec change is still diffed
/// without a GET, at a fixed 40 bytes per object and no allocation (memory at 10,000 objects).
/// The digests live in memory only (std's hasher is not stable across builds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PatchableDigest {
    friendly_name: u64,
    agent_id: u64,
    routing_agent_id: u64,
    fallback: u64,
    voicemail_message: u64,
}

impl PatchableDigest {
    /// A registration whose fields were not read (one that is not this object's: its
    /// digest is never compared with a spec).
    pub fn unread() -> PatchableDigest {
        PatchableDigest {
            friendly_name: 0,
            agent_id: 0,
            routing_agent_id: 0,
            fallback: 0,
            voicemail_message: 0,
        }
    }

    /// The digest of a registration as the API returned it.
    pub fn of_registration(r: &Registration) -> PatchableDigest {
        PatchableDigest::of(
            r.friendly_name.as_deref(),
            &r.agent_id,
            r.inbound_routing.as_ref(),
        )
    }

    /// The digest of what the spec asks for (what a registration in line with it holds).
    pub fn of_spec(obj: &PhoneNumber) -> PatchableDigest {
        PatchableDigest::of(
            obj.spec.friendly_name.as_deref(),
            &obj.spec.agent_id,
            spec_routing(obj).as_ref(),
        )
    }

    /// An absent routing and an empty one are the same to the API, and so are two spellings
    /// of one uuid: the CRD accepts upper-case hex, the API answers in lower case.
    fn of(friendly_name: Option<&str>, agent_id: &str, routing: Option<&Routing>) -> Self {
        let routing = routing.cloned().unwrap_or_default();
        let uuid = |u: Option<&str>| u.map(str::to_ascii_lowercase);
        PatchableDigest {
            friendly_name: digest(friendly_name),
            agent_id: digest(uuid(Some(agent_id))),
            routing_agent_id: digest(uuid(routing.agent_id.as_deref())),
            fallback: digest(uuid(routing.fallback.as_ref().map(|f| f.agent_id.as_str()))),
            voicemail_message: digest(routing.voicemail_message.as_deref()),
        }
    }
}

fn digest(value: impl Hash) -> u64 {
    let mut h = DefaultHasher::new();
    value.hash(&mut h);
    h.finish()
}

/// Digest of the (Secret name, resourceVersion) pairs a check read, in any order: while the
/// Secret watch reports the same pairs, the Secrets need not be read again.
pub fn secret_versions_digest<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> u64 {
    let mut pairs: Vec<_> = pairs.into_iter().collect();
    pairs.sort_unstable();
    pairs.dedup();
    digest(pairs)
}

/// The `status.secretVersions` a check records: the versions `recorded` before, updated with
/// the (name, resourceVersion) pairs read in this pass, for the Secrets the object references.
pub fn secret_versions_used(
    obj: &PhoneNumber,
    recorded: &SecretVersionMap,
    read: &[(String, String)],
) -> SecretVersionMap {
    let mut out = recorded.clone();
    out.extend(read.iter().cloned());
    out.retain(|name| obj.referenced_secrets().any(|r| r == name));
    out
}

/// The PATCH that makes the registration `remote` digests match the spec: only changed fields,
/// with explicit nulls for removed routing keys (contract: PATCH details). Empty when nothing differs.
pub fn patch_for(obj: &PhoneNumber, remote: &PatchableDigest) -> PatchRequest {
    let want = PatchableDigest::of_spec(obj);
    let mut patch = PatchRequest::default();
    if want.friendly_name != remote.friendly_name {
        patch.friendly_name = Some(obj.spec.friendly_name.clone());
    }
    if want.agent_id != remote.agent_id {
        patch.agent_id = Some(obj.spec.agent_id.clone());
    }
    let routing_want = spec_routing(obj).unwrap_or_default();
    let mut routing = Map::new();
    let mut set = |key: &str, changed: bool, value: Option<Value>| {
        if changed {
            routing.insert(key.to_owned(), value.unwrap_or(Value::Null));
        }
    };
    set(
        "agent_id",
        want.routing_agent_id != remote.routing_agent_id,
        routing_want.agent_id.map(Value::String),
    );
    set(
        "fallback",
        want.fallback != remote.fallback,
        routing_want
            .fallback
            .map(|f| serde_json::json!({"agent_id": f.agent_id})),
    );
    set(
        "voicemail_message",
        want.voicemail_message != remote.voicemail_message,
        routing_want.voicemail_message.map(Value::String),
    );
    if !routing.is_empty() {
        patch.inbound_routing = Some(routing);
    }
    patch
}

/// The spec fields (their names in the spec, never their values) in which the registration
/// `remote` differs from the spec: what `managementPolicy: Observe` reports as drift. The
/// credentials are write-only in the API and never compared.
pub fn drifted_fields(obj: &PhoneNumber, remote: &Registration) -> Vec<&'static str> {
    let want = PatchableDigest::of_spec(obj);
    let have = PatchableDigest::of_registration(remote);
    let mut out = Vec::new();
    if !remote
        .provider
        .eq_ignore_ascii_case(obj.spec.provider.as_str())
    {
        out.push("provider");
    }
    for (name, differs) in [
        ("agentId", want.agent_id != have.agent_id),
        ("friendlyName", want.friendly_name != have.friendly_name),
        (
            "inboundRouting.agentId",
            want.routing_agent_id != have.routing_agent_id,
        ),
        ("inboundRouting.fallback", want.fallback != have.fallback),
        (
            "inboundRouting.voicemailMessage",
            want.voicemail_message != have.voicemail_message,
        ),
    ] {
        if differs {
            out.push(name);
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::crd::{
        DeletionPolicy, Fallback, InboundRouting, PhoneNumberSpec, Provider, ReplacementPolicy,
    };
    use crate::oneinbox::SecretString;

    const AGENT: &str = "3c90c3cc-0d44-4b50-8888-8dd25736052a";
    const OTHER: &str = "11111111-2222-4333-8444-555555555555";

    pub(crate) fn pn(name: &str) -> PhoneNumber {
        let mut p = PhoneNumber::new(
            name,
            PhoneNumberSpec {
                phone_number: "+15551234567".into(),
                provider: Provider::Twilio,
                agent_id: AGENT.into(),
                friendly_name: Some("Sales".into()),
                provider_config: None,
                credential_id: Some(AGENT.into()),
                inbound_routing: Some(InboundRouting {
                    agent_id: None,
                    fallback: Some(Fallback {
                        agent_id: AGENT.into(),
                    }),
                    voicemail_message: Some("hi".into()),
                }),
                deletion_policy: Some(DeletionPolicy::Delete),
                deletion_protection: false,
                replacement_policy: ReplacementPolicy::Manual,
                management_policy: Default::default(),
                account_ref: None,
            },
        );
        p.metadata.namespace = Some("ns".into());
        p.metadata.uid = Some(format!("uid-{name}"));
        p
    }

    fn remote_of(p: &PhoneNumber) -> Registration {
        Registration {
            id: "id1".into(),
            phone_number: p.spec.phone_number.clone(),
            friendly_name: p.spec.friendly_name.clone(),
            provider: "twilio".into(),
            agent_id: p.spec.agent_id.clone(),
            status: "active".into(),
            inbound_trunk_id: Some("ST_1".into()),
            outbound_trunk_id: Some("ST_2".into()),
            dispatch_rule_id: Some("SDR_1".into()),
            created_at: "2026-01-01T00:00:00Z".into(),
            updated_at: "2026-01-01T00:00:00Z".into(),
            inbound_routing: spec_routing(p),
        }
    }

    #[test]
    fn drift_is_reported_by_spec_field_name() {
        let p = pn("a");
        let mut remote = remote_of(&p);
        assert!(drifted_fields(&p, &remote).is_empty());
        remote.agent_id = AGENT.to_ascii_uppercase();
        assert!(drifted_fields(&p, &remote).is_empty(), "uuid spelling");
        remote.agent_id = OTHER.into();
        remote.friendly_name = None;
        remote.provider = "telnyx".into();
        remote.inbound_routing = None;
        assert_eq!(
            drifted_fields(&p, &remote),
            [
                "provider",
                "agentId",
                "friendlyName",
                "inboundRouting.fallback",
                "inboundRouting.voicemailMessage"
            ]
        );
    }

    #[test]
    fn in_line_registration_needs_no_patch() {
        let p = pn("a");
        assert!(patch_for(&p, &PatchableDigest::of_registration(&remote_of(&p))).is_empty());
    }

    #[test]
    fn patch_carries_only_changed_fields() {
        let p = pn("a");
        let mut remote = remote_of(&p);
        remote.agent_id = OTHER.into();
        let patch = patch_for(&p, &PatchableDigest::of_registration(&remote));
        assert_eq!(
            serde_json::to_value(&patch).unwrap(),
            serde_json::json!({"agent_id": AGENT})
        );
    }

    #[test]
    fn removing_fallback_sends_explicit_null() {
        let mut p = pn("a");
        let remote = remote_of(&p);
        if let Some(r) = p.spec.inbound_routing.as_mut() {
            r.fallback = None;
        }
        let patch = patch_for(&p, &PatchableDigest::of_registration(&remote));
        assert_eq!(
            serde_json::to_value(&patch).unwrap(),
            serde_json::json!({"inbound_routing": {"fallback": null}})
        );
    }

    #[test]
    fn clearing_the_name_sends_null() {
        let mut p = pn("a");
        let remote = remote_of(&p);
        p.spec.friendly_name = None;
        assert_eq!(
            serde_json::to_value(patch_for(&p, &PatchableDigest::of_registration(&remote)))
                .unwrap(),
            serde_json::json!({"friendly_name": null})
        );
    }

    #[test]
    fn voicemail_change_patches_only_that_key() {
        let mut p = pn("a");
        let remote = PatchableDigest::of_registration(&remote_of(&p));
        if let Some(r) = p.spec.inbound_routing.as_mut() {
            r.voicemail_message = Some("Leave a message".into());
        }
        assert_eq!(
            serde_json::to_value(patch_for(&p, &remote)).unwrap(),
            serde_json::json!({"inbound_routing": {"voicemail_message": "Leave a message"}})
        );
    }

    #[test]
    fn uuids_are_compared_without_regard_to_case() {
        let mut p = pn("a");
        p.spec.agent_id = "3C90C3CC-0D44-4B50-8888-8DD25736052A".into();
        p.spec.inbound_routing = Some(InboundRouting {
            agent_id: Some("3C90C3CC-0D44-4B50-8888-8DD25736052B".into()),
            fallback: Some(Fallback {
                agent_id: "ABCDEF00-0D44-4B50-8888-8DD25736052A".into(),
            }),
            voicemail_message: None,
        });
        // The API stores and answers in lower case.
        let mut r = remote_of(&p);
        r.agent_id = r.agent_id.to_ascii_lowercase();
        let routing = r.inbound_routing.as_mut().expect("routing");
        routing.agent_id = routing.agent_id.as_ref().map(|a| a.to_ascii_lowercase());
        routing.fallback.as_mut().expect("fallback").agent_id =
            "abcdef00-0d44-4b50-8888-8dd25736052a".into();
        assert!(patch_for(&p, &PatchableDigest::of_registration(&r)).is_empty());
        // A different uuid is still a change.
        r.agent_id = "00000000-0d44-4b50-8888-8dd25736052a".into();
        let patch = patch_for(&p, &PatchableDigest::of_registration(&r));
        assert_eq!(patch.agent_id.as_deref(), Some(p.spec.agent_id.as_str()));
    }

    #[test]
    fn absent_and_empty_routing_are_the_same() {
        let mut p = pn("a");
        p.spec.inbound_routing = None;
        let mut remote = remote_of(&p);
        remote.inbound_routing = Some(Routing::default());
        assert!(patch_for(&p, &PatchableDigest::of_registration(&remote)).is_empty());
    }

    #[test]
    fn the_recorded_secret_versions_are_those_read_now_over_those_recorded() {
        let mut p = pn("a");
        p.spec.credential_id = None;
        p.spec.provider_config = Some(crate::crd::ProviderConfig {
            trunk_address: "t.example".into(),
            auth_username: "u".into(),
            auth_password_secret_ref: crate::crd::SecretKeySelector {
                name: "sip".into(),
                key: None,
            },
        });
        let recorded: SecretVersionMap = [
            ("sip".to_string(), "7".to_string()),
            ("old".into(), "3".into()),
        ]
        .into_iter()
        .collect();
        // Unread: the recorded version stays; a Secret no longer referenced goes.
        assert_eq!(
            secret_versions_used(&p, &recorded, &[]),
            [("sip".to_string(), "7".to_string())].into_iter().collect()
        );
        assert_eq!(
            secret_versions_used(&p, &recorded, &[("sip".into(), "9".into())]),
            [("sip".to_string(), "9".to_string())]
                .into_iter()
                .collect::<SecretVersionMap>()
        );
    }

    #[test]
    fn secret_versions_digest_ignores_order_but_not_versions() {
        let a = secret_versions_digest([("pw", "1"), ("key", "7")]);
        assert_eq!(a, secret_versions_digest([("key", "7"), ("pw", "1")]));
        assert_ne!(a, secret_versions_digest([("pw", "2"), ("key", "7")]));
        assert_ne!(a, secret_versions_digest([("pw", "1")]));
    }

    #[test]
    fn register_request_uses_credential_id_or_sip_config() {
        let p = pn("a");
        let req = register_request(
            &p,
            &Credentials::Stored {
                credential_id: AGENT.into(),
            },
        );
        assert_eq!(req.credential_id.as_deref(), Some(AGENT));
        assert!(req.provider_config.is_none());
        assert_eq!(req.provider, "twilio");
        let req = register_request(
            &p,
            &Credentials::Sip {
                trunk_address: "t.pstn.twilio.com".into(),
                auth_username: "u".into(),
                auth_password: SecretString::new("pw".into()),
            },
        );
        assert!(req.credential_id.is_none());
        assert_eq!(req.provider_config.unwrap().auth_password.expose(), "pw");
    }
}
