//! Pure status computation: the complete desired `PhoneNumberStatus` from the object, what the
//! reconciler learned, and `now`. Deterministic, so an unchanged object yields an identical
//! status and costs no write (docs/resource.md, "Status and conditions").

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::crd::{
    ANNOTATION_RECONCILE_REQUESTED_AT, MAX_RECONCILE_TOKEN, PhoneNumber, PhoneNumberStatus,
    RegistrationAttempt,
};
use crate::oneinbox::Registration;

pub use crate::conditions::{READY, RECONCILING, STALLED, conditions_of, reason};
/// `managementPolicy: Observe` only: fields of the registration that differ from the spec
/// (present only while some do).
pub const DRIFTED: &str = "Drifted";

/// The `action` of an event with this reason: what the operator did or tried (events.k8s.io
/// `action`, a closed set).
pub fn event_action(event_reason: &str) -> &'static str {
    match event_reason {
        "Registered"
        | reason::ALREADY_REGISTERED
        | reason::REGISTRATION_REJECTED
        | reason::REGISTRATION_FAILED
        | "RegistrationLost" => "Register",
        "Adopted" | "UpdatedOnAdoption" | reason::ID_MISMATCH => "Adopt",
        "Updated" | "DriftCorrected" | reason::UPDATE_REJECTED => "Update",
        "Replacing" | reason::REPLACEMENT_REQUIRED => "Replace",
        "Deregistered" | reason::DELETION_BLOCKED => "Deregister",
        "Orphaned" | "NotDeregistered" | "ObserveOnly" => "Release",
        reason::DUPLICATE_PHONE_NUMBER => "Claim",
        reason::SECRET_NOT_FOUND | reason::SECRET_KEY_INVALID => "ReadSecret",
        reason::API_KEY_REJECTED => "Authenticate",
        "InvalidPollInterval" => "Schedule",
        _ => "Reconcile",
    }
}

/// Where the object stands, as the conditions will say it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Registered, active, in line with the spec: Ready=True.
    Available,
    /// Work under way or being retried: Ready=False + Reconciling=True.
    Progressing {
        reason: &'static str,
        message: String,
    },
    /// A human is needed: Ready=False + Stalled=True, same reason.
    Stalled {
        reason: &'static str,
        message: String,
    },
    /// Registered and working, but a human decision is pending (ReplacementRequired): Ready=True
    /// stays (the number works) and Stalled=True says what to decide.
    AvailableButStalled {
        reason: &'static str,
        message: String,
    },
    /// Deletion refused by the API: Ready=False Deleting, Reconciling=True,
    /// Stalled=True DeletionBlocked.
    DeletionBlocked { message: String },
    /// `oneinbox.ai/paused`: Ready=False Paused, nothing else.
    Paused,
    /// `managementPolicy: Observe`, the registration active: Ready=True Observed, and
    /// Drifted=True SpecDrift naming the spec fields that differ (names only), if any.
    Observed { drift: Vec<&'static str> },
}

/// The remote facts mirrored in status.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RemoteFacts {
    pub phone_number_id: Option<String>,
    pub state: Option<String>,
    pub inbound_trunk_id: Option<String>,
    pub outbound_trunk_id: Option<String>,
    pub dispatch_rule_id: Option<String>,
    pub created_at: Option<String>,
    pub updated_at: Option<String>,
}

impl RemoteFacts {
    pub fn from_registration(r: &Registration) -> RemoteFacts {
        RemoteFacts {
            phone_number_id: Some(r.id.clone()),
            state: Some(r.status.clone()),
            inbound_trunk_id: r.inbound_trunk_id.clone(),
            outbound_trunk_id: r.outbound_trunk_id.clone(),
            dispatch_rule_id: r.dispatch_rule_id.clone(),
            created_at: Some(r.created_at.clone()),
            updated_at: Some(r.updated_at.clone()),
        }
    }

    /// What the current status already says (used when no remote call was made).
    pub fn from_status(s: &PhoneNumberStatus) -> RemoteFacts {
        RemoteFacts {
            phone_number_id: s.phone_number_id.clone(),
            state: s.state.clone(),
            inbound_trunk_id: s.inbound_trunk_id.clone(),
            outbound_trunk_id: s.outbound_trunk_id.clone(),
            dispatch_rule_id: s.dispatch_rule_id.clone(),
            created_at: s.created_at.clone(),
            updated_at: s.updated_at.clone(),
        }
    }
}

/// Everything but the conditions.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StatusData {
    pub remote: RemoteFacts,
    pub credentials_hash: Option<String>,
    /// The registration attempt still in flight after this write (`None` settles the one
    /// the annotation records).
    pub pending_create: Option<RegistrationAttempt>,
    pub last_handled_reconcile_at: Option<String>,
    /// `status.secretVersions`: the Secret versions the last successful check used.
    pub secret_versions: crate::crd::SecretVersionMap,
}

impl StatusData {
    /// The data the object's status carries now.
    pub fn current(obj: &PhoneNumber) -> StatusData {
        let s = obj.status.clone().unwrap_or_default();
        // While an attempt is in flight, the credentials in question are the ones it posts.
        let pending = obj.pending_create();
        StatusData {
            remote: RemoteFacts::from_status(&s),
            credentials_hash: pending
                .as_ref()
                .and_then(|a| a.credentials_hash_for(obj))
                .or(s.credentials_hash.clone()),
            pending_create: pending,
            last_handled_reconcile_at: s.last_handled_reconcile_at.clone(),
            secret_versions: s.secret_versions.clone(),
        }
    }
}

/// The complete desired status.
pub fn desired_status(
    obj: &PhoneNumber,
    data: StatusData,
    phase: &Phase,
    now: Time,
) -> PhoneNumberStatus {
    let generation = obj.metadata.generation;
    let previous = obj
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or(&[]);
    PhoneNumberStatus {
        observed_generation: generation,
        phone_number_id: data.remote.phone_number_id,
        state: data.remote.state,
        inbound_trunk_id: data.remote.inbound_trunk_id,
        outbound_trunk_id: data.remote.outbound_trunk_id,
        dispatch_rule_id: data.remote.dispatch_rule_id,
        created_at: data.remote.created_at,
        updated_at: data.remote.updated_at,
        credentials_hash: data.credentials_hash,
        settled_attempt: settled_attempt(obj, data.pending_create.as_ref()),
        secret_versions: data.secret_versions,
        last_handled_reconcile_at: data.last_handled_reconcile_at,
        conditions: conditions(previous, phase, generation, now),
    }
}

/// The attempt the status records the outcome of: the recorded one once nothing of it is
/// pending any more, else the one recorded before.
fn settled_attempt(obj: &PhoneNumber, pending: Option<&RegistrationAttempt>) -> Option<String> {
    let before = obj.status.as_ref().and_then(|s| s.settled_attempt.clone());
    match (pending, obj.registration_attempt()) {
        (None, Some(recorded)) => Some(recorded.token),
        _ => before,
    }
}

/// (type, status, reason, message) of each condition the phase calls for, in a fixed order.
fn wanted(phase: &Phase) -> Vec<(&'static str, bool, &'static str, String)> {
    match phase {
        Phase::Available => vec![(
            READY,
            true,
            reason::AVAILABLE,
            "The number is registered with OneInbox, active, and matches the spec".into(),
        )],
        Phase::Progressing { reason, message } => {
            vec![(READY, false, reason, message.clone()), (RECONCILING, true, reason, message.clone())]
        }
        Phase::Stalled { reason, message } => {
            vec![(READY, false, reason, message.clone()), (STALLED, true, reason, message.clone())]
        }
        Phase::AvailableButStalled { reason, message } => vec![
            (READY, true, reason::AVAILABLE, "The number is registered with OneInbox and active".into()),
            (STALLED, true, reason, message.clone()),
        ],
        Phase::DeletionBlocked { message } => vec![
            (READY, false, reason::DELETING, "The number is being deregistered from OneInbox".into()),
            (RECONCILING, true, reason::DELETING, "The number is being deregistered from OneInbox".into()),
            (STALLED, true, reason::DELETION_BLOCKED, message.clone()),
        ],
        Phase::Paused => vec![(
            READY,
            false,
            reason::PAUSED,
            "Reconciliation is paused by the oneinbox.ai/paused annotation; no OneInbox calls are made".into(),
        )],
        Phase::Observed { drift } => {
            let mut out = vec![(
                READY,
                true,
                reason::OBSERVED,
                "The number is registered with OneInbox and active; managementPolicy is Observe: the operator mirrors the registration and never changes it".into(),
            )];
            if !drift.is_empty() {
                out.push((
                    DRIFTED,
                    true,
                    reason::SPEC_DRIFT,
                    format!(
                        "The registration differs from the spec in {}. managementPolicy is Observe, so the operator does not correct it: change the spec to match, or set managementPolicy: Full to correct it with one update",
                        drift.join(", ")
                    ),
                ));
            }
            out
        }
    }
}

/// Conditions with `lastTransitionTime` kept unless the condition's status flips (or it appears).
pub fn conditions(
    previous: &[Condition],
    phase: &Phase,
    generation: Option<i64>,
    now: Time,
) -> Vec<Condition> {
    conditions_of(previous, wanted(phase), generation, now)
}

/// Whether writing `desired` would change anything.
pub fn needs_write(current: Option<&PhoneNumberStatus>, desired: &PhoneNumberStatus) -> bool {
    current != Some(desired)
}

/// The reconcile-now token as status can hold it (the CRD bounds the field).
pub fn reconcile_token(obj: &PhoneNumber) -> Option<&str> {
    obj.annotation(ANNOTATION_RECONCILE_REQUESTED_AT).map(|t| {
        let mut end = t.len().min(MAX_RECONCILE_TOKEN);
        while !t.is_char_boundary(end) {
            end -= 1;
        }
        &t[..end]
    })
}

/// The reconcile request this pass handles (echoed in status).
pub fn requested_reconcile(obj: &PhoneNumber) -> Option<String> {
    reconcile_token(obj).map(str::to_owned).or_else(|| {
        obj.status
            .as_ref()
            .and_then(|s| s.last_handled_reconcile_at.clone())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{DeletionPolicy, PhoneNumberSpec, Provider, ReplacementPolicy};

    fn time(s: i64) -> Time {
        Time(jiff::Timestamp::from_second(s).unwrap())
    }

    fn obj(generation: i64, status: Option<PhoneNumberStatus>) -> PhoneNumber {
        let mut pn = PhoneNumber::new(
            "sales",
            PhoneNumberSpec {
                phone_number: "+15551234567".into(),
                provider: Provider::Twilio,
                agent_id: "3c90c3cc-0d44-4b50-8888-8dd25736052a".into(),
                friendly_name: None,
                provider_config: None,
                credential_id: Some("3c90c3cc-0d44-4b50-8888-8dd25736052a".into()),
                inbound_routing: None,
                deletion_policy: Some(DeletionPolicy::Delete),
                deletion_protection: false,
                replacement_policy: ReplacementPolicy::Manual,
                management_policy: Default::default(),
                account_ref: None,
            },
        );
        pn.metadata.generation = Some(generation);
        pn.status = status;
        pn
    }

    fn types(s: &PhoneNumberStatus) -> Vec<(String, String, String)> {
        s.conditions
            .iter()
            .map(|c| (c.type_.clone(), c.status.clone(), c.reason.clone()))
            .collect()
    }

    #[test]
    fn observed_is_ready_and_names_drifted_fields_only_while_some_differ() {
        let s = desired_status(
            &obj(1, None),
            StatusData::default(),
            &Phase::Observed { drift: vec![] },
            time(10),
        );
        assert_eq!(
            types(&s),
            vec![("Ready".into(), "True".into(), "Observed".into())]
        );
        let s = desired_status(
            &obj(1, None),
            StatusData::default(),
            &Phase::Observed {
                drift: vec!["agentId", "friendlyName"],
            },
            time(10),
        );
        assert_eq!(
            types(&s),
            vec![
                ("Ready".into(), "True".into(), "Observed".into()),
                ("Drifted".into(), "True".into(), "SpecDrift".into())
            ]
        );
        assert!(
            s.conditions[1]
                .message
                .starts_with("The registration differs from the spec in agentId, friendlyName."),
            "{}",
            s.conditions[1].message
        );
    }

    #[test]
    fn available_has_only_ready_true() {
        let s = desired_status(
            &obj(1, None),
            StatusData::default(),
            &Phase::Available,
            time(10),
        );
        assert_eq!(
            types(&s),
            vec![("Ready".into(), "True".into(), "Available".into())]
        );
        assert_eq!(s.observed_generation, Some(1));
        assert_eq!(s.conditions[0].observed_generation, Some(1));
    }

    #[test]
    fn progressing_sets_ready_false_and_reconciling_true() {
        let p = Phase::Progressing {
            reason: reason::API_UNAVAILABLE,
            message: "503".into(),
        };
        let s = desired_status(&obj(1, None), StatusData::default(), &p, time(10));
        assert_eq!(
            types(&s),
            vec![
                ("Ready".into(), "False".into(), "APIUnavailable".into()),
                ("Reconciling".into(), "True".into(), "APIUnavailable".into())
            ]
        );
    }

    #[test]
    fn stalled_sets_ready_false_and_stalled_true_without_reconciling() {
        let p = Phase::Stalled {
            reason: reason::ALREADY_REGISTERED,
            message: "x".into(),
        };
        let s = desired_status(&obj(1, None), StatusData::default(), &p, time(10));
        assert_eq!(
            types(&s),
            vec![
                ("Ready".into(), "False".into(), "AlreadyRegistered".into()),
                ("Stalled".into(), "True".into(), "AlreadyRegistered".into())
            ]
        );
    }

    #[test]
    fn deletion_blocked_has_all_three() {
        let s = desired_status(
            &obj(1, None),
            StatusData::default(),
            &Phase::DeletionBlocked {
                message: "503".into(),
            },
            time(10),
        );
        assert_eq!(
            types(&s),
            vec![
                ("Ready".into(), "False".into(), "Deleting".into()),
                ("Reconciling".into(), "True".into(), "Deleting".into()),
                ("Stalled".into(), "True".into(), "DeletionBlocked".into())
            ]
        );
    }

    #[test]
    fn transition_time_moves_only_when_status_flips() {
        let creating = Phase::Progressing {
            reason: reason::CREATING,
            message: "c".into(),
        };
        let first = desired_status(&obj(1, None), StatusData::default(), &creating, time(10));
        // Same status False, other reason: time kept.
        let unavailable = Phase::Progressing {
            reason: reason::API_UNAVAILABLE,
            message: "u".into(),
        };
        let second = desired_status(
            &obj(1, Some(first.clone())),
            StatusData::default(),
            &unavailable,
            time(20),
        );
        assert_eq!(second.conditions[0].last_transition_time, time(10));
        // Flip to True: time moves.
        let third = desired_status(
            &obj(1, Some(second)),
            StatusData::default(),
            &Phase::Available,
            time(30),
        );
        assert_eq!(third.conditions[0].last_transition_time, time(30));
    }

    #[test]
    fn every_event_reason_the_operator_publishes_has_an_action() {
        for (event, action) in [
            ("Registered", "Register"),
            ("Adopted", "Adopt"),
            ("Updated", "Update"),
            ("DriftCorrected", "Update"),
            ("UpdatedOnAdoption", "Adopt"),
            ("Replacing", "Replace"),
            ("Deregistered", "Deregister"),
            ("Orphaned", "Release"),
            ("NotDeregistered", "Release"),
            ("RegistrationLost", "Register"),
            ("DuplicatePhoneNumber", "Claim"),
            ("AlreadyRegistered", "Register"),
            ("APIKeyRejected", "Authenticate"),
            ("SecretKeyInvalid", "ReadSecret"),
            ("DeletionBlocked", "Deregister"),
            ("InvalidPollInterval", "Schedule"),
        ] {
            assert_eq!(event_action(event), action, "{event}");
        }
    }

    #[test]
    fn steady_state_needs_no_write() {
        let data = StatusData {
            remote: RemoteFacts {
                phone_number_id: Some("id".into()),
                ..RemoteFacts::default()
            },
            ..StatusData::default()
        };
        let first = desired_status(&obj(2, None), data.clone(), &Phase::Available, time(10));
        let o = obj(2, Some(first.clone()));
        let again = desired_status(&o, data, &Phase::Available, time(99));
        assert!(!needs_write(o.status.as_ref(), &again));
        // A new generation is a change.
        let o3 = obj(3, Some(first));
        let newer = desired_status(&o3, StatusData::current(&o3), &Phase::Available, time(99));
        assert!(needs_write(o3.status.as_ref(), &newer));
    }
}
