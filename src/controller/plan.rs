//! Pure decisions of the reconciler: the register request a spec asks for, the PATCH that brings
//! a registration in line, the credentials hash, who owns a number claimed twice, and the poll
//! interval. No IO; everything here is unit-tested.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::Duration;

use hmac::{Hmac, Mac};
use kube::ResourceExt;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::config::parse_duration;
use crate::crd::{ANNOTATION_POLL_INTERVAL, PhoneNumber, SecretVersionMap};
use crate::oneinbox::{
    PatchRequest, RegisterRequest, Registration, Routing, RoutingFallback, SecretString,
    SipProviderConfig,
};

/// The SIP credentials as resolved for one reconcile.
#[derive(Clone, Debug, PartialEq)]
pub enum Credentials {
    Sip {
        trunk_address: String,
        auth_username: String,
        auth_password: SecretString,
    },
    Stored {
        credential_id: String,
    },
}

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

/// After a restart, when the first drift check of an object whose status this process trusts
/// is due: a fixed point of `(FIRST_CHECK_QUIET, 1]` of its interval, by a stable hash of its
/// UID. The fleet's first checks spread evenly over one interval (at most 1.25 × the steady
/// rate), and none falls in the first fifth of it: a restart, or a crash loop, costs no call
/// at once. The same object gets the same point after every restart.
pub fn first_check_in(uid: &str, interval: Duration) -> Duration {
    let h = Sha256::digest(uid.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&h[..8]);
    // 53 bits are all an f64 holds: a point of [0, 1).
    let point = (u64::from_be_bytes(first) >> 11) as f64 / (1u64 << 53) as f64;
    interval.mul_f64(FIRST_CHECK_QUIET + (1.0 - FIRST_CHECK_QUIET) * point)
}

/// The part of the interval after a restart in which no first check falls.
pub const FIRST_CHECK_QUIET: f64 = 0.2;

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

/// The key of the credentials hash: derived from a secret only the operator holds (never from
/// anything a reader of the object sees), with a short id stored in each hash. A hash made
/// with another key id is a new baseline, never a credentials change.
#[derive(Clone)]
pub struct HashKey {
    id: String,
    key: Vec<u8>,
}

impl HashKey {
    /// The key derived from `secret` (the `--credentials-hash-key-file`, or the operator's API
    /// key).
    pub fn derive(secret: &[u8]) -> HashKey {
        let key = hmac(secret, &[b"oneinbox-operator/credentials-hash/v2"]);
        let id = hex::encode(&hmac(&key, &[b"key-id"])[..4]);
        HashKey { id, key }
    }

    pub fn id(&self) -> &str {
        &self.id
    }
}

impl std::fmt::Debug for HashKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HashKey({}, [redacted])", self.id)
    }
}

/// HMAC-SHA256 of the length-prefixed `parts`.
fn hmac(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    #[allow(clippy::expect_used)] // HMAC accepts keys of any length
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("hmac key");
    for part in parts {
        mac.update(&(part.len() as u64).to_be_bytes());
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

/// Keyed hash of everything whose change needs a re-registration, as
/// `hmac-sha256:<key id>:<hex>`. The object's UID is part of the input, so the same password
/// in two objects gives unrelated hashes; the status never holds the value or a plain hash.
pub fn credentials_hash(key: &HashKey, uid: &str, creds: &Credentials) -> String {
    let mac = match creds {
        Credentials::Sip {
            trunk_address,
            auth_username,
            auth_password,
        } => hmac(
            &key.key,
            &[
                uid.as_bytes(),
                b"sip",
                trunk_address.as_bytes(),
                auth_username.as_bytes(),
                auth_password.expose().as_bytes(),
            ],
        ),
        Credentials::Stored { credential_id } => hmac(
            &key.key,
            &[uid.as_bytes(), b"integration", credential_id.as_bytes()],
        ),
    };
    format!("hmac-sha256:{}:{}", key.id, hex::encode(mac))
}

/// The key id a stored hash was made with; `None` for the older form without one.
pub fn hash_key_id(hash: &str) -> Option<&str> {
    let rest = hash.strip_prefix("hmac-sha256:")?;
    let (id, mac) = rest.split_once(':')?;
    (!id.is_empty() && !mac.is_empty()).then_some(id)
}

/// Sort key of a claim on a number: the oldest object owns it.
fn claim_key(o: &PhoneNumber) -> (Option<jiff::Timestamp>, String, String) {
    (
        o.metadata.creation_timestamp.as_ref().map(|t| t.0),
        o.namespace().unwrap_or_default(),
        o.name_any(),
    )
}

/// The object that owns `obj`'s number, if it is another one: the oldest object claiming the
/// same number, where one that holds a registration (its id in status) wins over one that names
/// an id only in the annotation or has an attempt to register it in flight (a pending-create
/// marker: its registration may exist), and those win over one that has neither. The order is
/// total, so two claimants never both yield (or both win).
pub fn owner_of_number<'a>(
    obj: &PhoneNumber,
    others: impl IntoIterator<Item = &'a PhoneNumber>,
) -> Option<&'a PhoneNumber> {
    let uid = obj.uid();
    let rank = |o: &PhoneNumber| {
        let claim = if holds_id(o) {
            0
        } else if o.known_id().is_some() || has_pending_create(o) {
            1
        } else {
            2
        };
        (claim, claim_key(o))
    };
    let mine = rank(obj);
    others
        .into_iter()
        .filter(|o| o.uid() != uid && o.spec.phone_number == obj.spec.phone_number)
        .filter(|o| rank(o) < mine)
        .min_by_key(|o| rank(o))
}

/// The object's status names its registration (it registered or adopted it).
pub fn holds_id(o: &PhoneNumber) -> bool {
    o.status
        .as_ref()
        .is_some_and(|s| s.phone_number_id.is_some())
}

/// The object claims its number only by naming an id in the annotation: it holds no
/// registration and has no attempt to register it in flight.
pub fn claims_only_by_naming(o: &PhoneNumber) -> bool {
    !holds_id(o) && !has_pending_create(o) && o.known_id().is_some()
}

fn has_pending_create(o: &PhoneNumber) -> bool {
    o.pending_create().is_some()
}

/// The object that holds registration `id`, which `obj` names too, if it is another one. An
/// object that has the id in its status (it registered or adopted it) wins over one that only
/// names it in the annotation; between equals, the oldest claim wins. The loser never touches
/// the registration. One that only names it for another number is no claim on it: a
/// registration is for one number, and `phoneNumber` is immutable, so at most one of the two
/// can be right, and each finds out by reading it (the other one's is an id mismatch).
pub fn owner_of_id<'a>(
    obj: &PhoneNumber,
    id: &str,
    others: impl IntoIterator<Item = &'a PhoneNumber>,
) -> Option<&'a PhoneNumber> {
    let holds =
        |o: &PhoneNumber| o.status.as_ref().and_then(|s| s.phone_number_id.as_deref()) == Some(id);
    let uid = obj.uid();
    let mine = (!holds(obj), claim_key(obj));
    others
        .into_iter()
        .filter(|o| o.uid() != uid && o.known_id().as_deref() == Some(id))
        .filter(|o| holds(o) || o.spec.phone_number == obj.spec.phone_number)
        .filter(|o| (!holds(o), claim_key(o)) < mine)
        .min_by_key(|o| (!holds(o), claim_key(o)))
}

/// The drift-check interval of a Ready object: the annotation (clamped to `floor`) or the
/// default; `None` means never (annotation `0`).
pub fn poll_interval(obj: &PhoneNumber, default: Duration, floor: Duration) -> Option<Duration> {
    match obj.annotation(ANNOTATION_POLL_INTERVAL).map(parse_duration) {
        Some(Ok(d)) if d.is_zero() => None,
        Some(Ok(d)) => Some(d.max(floor)),
        _ => Some(default),
    }
}

/// The `oneinbox.ai/poll-interval` value, if it is set and not a duration (then the default
/// interval applies).
pub fn invalid_poll_interval(obj: &PhoneNumber) -> Option<&str> {
    obj.annotation(ANNOTATION_POLL_INTERVAL)
        .filter(|v| parse_duration(v).is_err())
}

/// `d` scaled by `factor` in [0.8, 1.2]: spreads a fleet's polls over time.
pub fn jittered(d: Duration, factor: f64) -> Duration {
    d.mul_f64(factor.clamp(0.8, 1.2))
}

/// Whether a pass is a periodic drift check of an object that asks for nothing else: it goes
/// behind user work (creates, spec changes, deletions, reconcile-now, anything not Ready) for
/// the account's places and request budget.
pub fn is_background_check(obj: &PhoneNumber, check_dispatched: bool) -> bool {
    let ready = obj
        .condition(crate::controller::status::READY)
        .is_some_and(|c| c.status == "True");
    let settled = obj.status.as_ref().is_some_and(|s| {
        s.observed_generation == obj.metadata.generation
            && s.last_handled_reconcile_at.as_deref()
                == obj.annotation(crate::crd::ANNOTATION_RECONCILE_REQUESTED_AT)
    });
    check_dispatched && ready && settled && obj.metadata.deletion_timestamp.is_none()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{
        DeletionPolicy, Fallback, InboundRouting, PhoneNumberSpec, Provider, ReplacementPolicy,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    const AGENT: &str = "3c90c3cc-0d44-4b50-8888-8dd25736052a";
    const OTHER: &str = "11111111-2222-4333-8444-555555555555";

    fn pn(name: &str) -> PhoneNumber {
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
                deletion_policy: DeletionPolicy::Delete,
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

    #[test]
    fn only_a_due_check_of_a_settled_ready_object_is_background_work() {
        let ready = |generation: i64, observed: i64| {
            let mut p = pn("x");
            p.metadata.generation = Some(generation);
            p.status = Some(crate::crd::PhoneNumberStatus {
                observed_generation: Some(observed),
                conditions: vec![k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    reason: "Available".into(),
                    message: String::new(),
                    last_transition_time: Time(jiff::Timestamp::UNIX_EPOCH),
                    observed_generation: Some(observed),
                }],
                ..Default::default()
            });
            p
        };
        let requested = {
            let mut p = ready(1, 1);
            p.metadata.annotations = Some(
                [(
                    crate::crd::ANNOTATION_RECONCILE_REQUESTED_AT.to_string(),
                    "now".to_string(),
                )]
                .into(),
            );
            p
        };
        let deleting = {
            let mut p = ready(1, 1);
            p.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::UNIX_EPOCH));
            p
        };
        let rows: Vec<(&str, PhoneNumber, bool, bool)> = vec![
            ("due check, settled and Ready", ready(1, 1), true, true),
            (
                "not a due check (a watch event, a create)",
                ready(1, 1),
                false,
                false,
            ),
            ("spec changed since", ready(2, 1), true, false),
            ("reconcile requested", requested, true, false),
            ("being deleted", deleting, true, false),
            ("not Ready", pn("x"), true, false),
        ];
        for (what, obj, dispatched, want) in rows {
            assert_eq!(is_background_check(&obj, dispatched), want, "{what}");
        }
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
    fn first_checks_after_a_restart_spread_evenly_past_a_quiet_fifth() {
        let interval = Duration::from_secs(600);
        // Stable: the same object gets the same point after every restart.
        assert_eq!(
            first_check_in("uid-1", interval),
            first_check_in("uid-1", interval)
        );
        assert_ne!(
            first_check_in("uid-1", interval),
            first_check_in("uid-2", interval)
        );
        // 1,000 objects: none in the first 2 minutes, all within the interval, and each of the
        // eight minutes after the quiet part holds about an eighth of them.
        let mut per_minute = [0u32; 10];
        for i in 0..1000 {
            let d = first_check_in(&format!("0b9c2f3e-uid-{i}"), interval);
            assert!(d >= Duration::from_secs(120) && d < interval, "{d:?}");
            per_minute[(d.as_secs() / 60) as usize] += 1;
        }
        assert_eq!(per_minute[..2], [0, 0]);
        for (minute, n) in per_minute.iter().enumerate().skip(2) {
            assert!((95..=155).contains(n), "minute {minute}: {n} of 1000");
        }
        // Scales with the interval (a per-object poll-interval annotation).
        let short = first_check_in("uid-1", Duration::from_secs(20));
        assert!(short >= Duration::from_secs(4) && short < Duration::from_secs(20));
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

    #[test]
    fn credentials_hash_is_keyed_by_the_operator_and_hides_the_password() {
        let sip = |pw: &str| Credentials::Sip {
            trunk_address: "t".into(),
            auth_username: "u".into(),
            auth_password: SecretString::new(pw.into()),
        };
        let key = HashKey::derive(b"oi_sk_operator");
        let h1 = credentials_hash(&key, "uid-1", &sip("secret-pw"));
        assert_eq!(h1, credentials_hash(&key, "uid-1", &sip("secret-pw")));
        assert_ne!(h1, credentials_hash(&key, "uid-2", &sip("secret-pw")));
        assert_ne!(h1, credentials_hash(&key, "uid-1", &sip("other-pw")));
        // Whoever reads the object knows its UID, not the operator's key.
        let other = HashKey::derive(b"someone-else");
        assert_ne!(h1, credentials_hash(&other, "uid-1", &sip("secret-pw")));
        assert_ne!(key.id(), other.id());
        assert_eq!(hash_key_id(&h1), Some(key.id()));
        assert_eq!(
            hash_key_id("hmac-sha256:0123abcd"),
            None,
            "the older form has no key id"
        );
        assert!(!h1.contains("secret-pw"));
        assert!(!format!("{key:?}").contains("oi_sk_operator"));
        // Not a plain hash of the password.
        use sha2::Digest;
        assert!(!h1.contains(&hex::encode(sha2::Sha256::digest(b"secret-pw"))));
    }

    #[test]
    fn oldest_claim_owns_the_number() {
        let mut old = pn("old");
        old.metadata.creation_timestamp = Some(Time(jiff::Timestamp::from_second(100).unwrap()));
        let mut new = pn("new");
        new.metadata.creation_timestamp = Some(Time(jiff::Timestamp::from_second(200).unwrap()));
        let all = [old.clone(), new.clone()];
        assert_eq!(
            owner_of_number(&new, all.iter()).map(|o| o.name_any()),
            Some("old".into())
        );
        assert!(owner_of_number(&old, all.iter()).is_none());
    }

    #[test]
    fn a_registered_claim_wins_even_if_newer() {
        let mut old = pn("old");
        old.metadata.creation_timestamp = Some(Time(jiff::Timestamp::from_second(100).unwrap()));
        let mut new = pn("new");
        new.metadata.creation_timestamp = Some(Time(jiff::Timestamp::from_second(200).unwrap()));
        new.status = Some(crate::crd::PhoneNumberStatus {
            phone_number_id: Some("id".into()),
            ..Default::default()
        });
        let all = [old.clone(), new.clone()];
        assert_eq!(
            owner_of_number(&old, all.iter()).map(|o| o.name_any()),
            Some("new".into())
        );
    }

    /// An attempt in flight, as the annotation records it before the POST.
    fn record_attempt(o: &mut PhoneNumber) {
        let attempt = crate::crd::RegistrationAttempt {
            token: "t".into(),
            started_at: "2026-01-01T00:00:00Z".into(),
            credentials_hash: None,
            uid: o.metadata.uid.clone(),
        };
        o.annotations_mut().insert(
            crate::crd::ANNOTATION_REGISTRATION_ATTEMPT.into(),
            serde_json::to_string(&attempt).expect("json"),
        );
    }

    #[test]
    fn a_claim_with_an_attempt_in_flight_wins_over_an_older_one() {
        let mut old = pn("old");
        old.metadata.creation_timestamp = Some(Time(jiff::Timestamp::from_second(100).unwrap()));
        let mut new = pn("new");
        new.metadata.creation_timestamp = Some(Time(jiff::Timestamp::from_second(200).unwrap()));
        record_attempt(&mut new);
        let all = [old.clone(), new.clone()];
        assert_eq!(
            owner_of_number(&old, all.iter()).map(|o| o.name_any()),
            Some("new".into())
        );
    }

    #[test]
    fn two_claimants_never_both_yield_or_both_win() {
        #[derive(Clone, Copy, Debug)]
        enum Claim {
            Nothing,
            Annotation,
            Attempt,
            Holds,
        }
        let make = |name: &str, secs: i64, claim: Claim| {
            let mut o = pn(name);
            o.metadata.creation_timestamp = Some(Time(jiff::Timestamp::from_second(secs).unwrap()));
            let mut status = crate::crd::PhoneNumberStatus::default();
            match claim {
                Claim::Nothing => {}
                Claim::Annotation => {
                    o.metadata.annotations = Some(
                        [(
                            crate::crd::ANNOTATION_PHONE_NUMBER_ID.to_string(),
                            "id".to_string(),
                        )]
                        .into(),
                    )
                }
                Claim::Attempt => record_attempt(&mut o),
                Claim::Holds => status.phone_number_id = Some("id".into()),
            }
            o.status = Some(status);
            o
        };
        use Claim::*;
        // (older's claim, newer's claim, the owner)
        let cases = [
            (Nothing, Nothing, "older"),
            (Attempt, Annotation, "older"),
            (Annotation, Attempt, "older"),
            (Nothing, Attempt, "newer"),
            (Nothing, Annotation, "newer"),
            (Nothing, Holds, "newer"),
            (Attempt, Holds, "newer"),
            (Annotation, Holds, "newer"),
            (Holds, Attempt, "older"),
        ];
        for (a, b, owner) in cases {
            let older = make("older", 100, a);
            let newer = make("newer", 200, b);
            let all = [older.clone(), newer.clone()];
            let got = (
                owner_of_number(&older, all.iter()).map(|o| o.name_any()),
                owner_of_number(&newer, all.iter()).map(|o| o.name_any()),
            );
            let want = if owner == "older" {
                (None, Some("older".to_string()))
            } else {
                (Some("newer".to_string()), None)
            };
            assert_eq!(got, want, "older {a:?}, newer {b:?}");
        }
    }

    #[test]
    fn only_an_annotation_without_a_registration_or_an_attempt_is_a_claim_by_naming() {
        let mut o = pn("a");
        assert!(!claims_only_by_naming(&o));
        o.metadata.annotations = Some(
            [(
                crate::crd::ANNOTATION_PHONE_NUMBER_ID.to_string(),
                "id1".to_string(),
            )]
            .into(),
        );
        assert!(claims_only_by_naming(&o));
        record_attempt(&mut o);
        assert!(!claims_only_by_naming(&o), "an attempt in flight");
        o.status = Some(crate::crd::PhoneNumberStatus {
            settled_attempt: Some("t".into()),
            ..Default::default()
        });
        assert!(
            claims_only_by_naming(&o),
            "the attempt settled without a registration"
        );
        o.status = Some(crate::crd::PhoneNumberStatus {
            phone_number_id: Some("id1".into()),
            ..Default::default()
        });
        assert!(!claims_only_by_naming(&o), "holds it");
    }

    #[test]
    fn the_holder_of_an_id_owns_it_against_a_newcomer_naming_it() {
        let mut holder = pn("holder");
        holder.metadata.creation_timestamp =
            Some(Time("2026-01-02T00:00:00Z".parse().expect("ts")));
        holder.status = Some(crate::crd::PhoneNumberStatus {
            phone_number_id: Some("id1".into()),
            ..Default::default()
        });
        // Older, but only annotated: still the newcomer.
        let mut newcomer = pn("newcomer");
        newcomer.metadata.namespace = Some("other".into());
        newcomer.metadata.creation_timestamp =
            Some(Time("2026-01-01T00:00:00Z".parse().expect("ts")));
        newcomer.metadata.annotations = Some(
            [(
                crate::crd::ANNOTATION_PHONE_NUMBER_ID.to_string(),
                "id1".to_string(),
            )]
            .into(),
        );
        let all = [holder.clone(), newcomer.clone()];
        assert_eq!(
            owner_of_id(&newcomer, "id1", &all).map(|o| o.name_any()),
            Some("holder".into())
        );
        assert!(owner_of_id(&holder, "id1", &all).is_none());
        // Two that only annotate: the older claim owns it.
        let mut younger = newcomer.clone();
        younger.metadata.uid = Some("uid-younger".into());
        younger.metadata.name = Some("younger".into());
        younger.metadata.creation_timestamp =
            Some(Time("2026-01-03T00:00:00Z".parse().expect("ts")));
        let all = [newcomer.clone(), younger.clone()];
        assert_eq!(
            owner_of_id(&younger, "id1", &all).map(|o| o.name_any()),
            Some("newcomer".into())
        );
        assert!(owner_of_id(&newcomer, "id1", &all).is_none());
        // An older one that only names it for another number is no claim on it; one that
        // holds it is, whatever the number.
        let mut elsewhere = newcomer.clone();
        elsewhere.metadata.uid = Some("uid-elsewhere".into());
        elsewhere.metadata.name = Some("elsewhere".into());
        elsewhere.spec.phone_number = "+15550000000".into();
        let all = [elsewhere.clone(), younger.clone()];
        assert!(owner_of_id(&younger, "id1", &all).is_none());
        elsewhere.status = Some(crate::crd::PhoneNumberStatus {
            phone_number_id: Some("id1".into()),
            ..Default::default()
        });
        let all = [elsewhere.clone(), younger.clone()];
        assert_eq!(
            owner_of_id(&younger, "id1", &all).map(|o| o.name_any()),
            Some("elsewhere".into())
        );
    }

    #[test]
    fn poll_interval_annotation_is_clamped_and_zero_disables() {
        let mut p = pn("a");
        let d = Duration::from_secs(600);
        let floor = Duration::from_secs(30);
        assert_eq!(poll_interval(&p, d, floor), Some(d));
        p.metadata.annotations =
            Some([(ANNOTATION_POLL_INTERVAL.to_string(), "5s".to_string())].into());
        assert_eq!(poll_interval(&p, d, floor), Some(floor));
        p.metadata.annotations =
            Some([(ANNOTATION_POLL_INTERVAL.to_string(), "2m".to_string())].into());
        assert_eq!(poll_interval(&p, d, floor), Some(Duration::from_secs(120)));
        p.metadata.annotations =
            Some([(ANNOTATION_POLL_INTERVAL.to_string(), "0".to_string())].into());
        assert_eq!(poll_interval(&p, d, floor), None);
        p.metadata.annotations =
            Some([(ANNOTATION_POLL_INTERVAL.to_string(), "soon".to_string())].into());
        assert_eq!(poll_interval(&p, d, floor), Some(d));
    }

    #[test]
    fn jitter_stays_within_twenty_percent() {
        let d = Duration::from_secs(100);
        assert_eq!(jittered(d, 0.5), Duration::from_secs(80));
        assert_eq!(jittered(d, 1.5), Duration::from_secs(120));
    }
}
