//! The kstatus conditions both controllers write (`Ready`, `Reconciling`, `Stalled`), and how
//! a new set keeps the `lastTransitionTime` of the conditions that did not flip.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

pub const READY: &str = "Ready";
pub const RECONCILING: &str = "Reconciling";
pub const STALLED: &str = "Stalled";

/// Condition reasons (PascalCase, closed set).
pub mod reason {
    pub const AVAILABLE: &str = "Available";
    pub const CREATING: &str = "Creating";
    pub const UPDATING: &str = "Updating";
    pub const PROVISIONING: &str = "Provisioning";
    pub const SECRET_NOT_FOUND: &str = "SecretNotFound";
    /// The Secret exists, but its key is missing, empty or not UTF-8 text.
    pub const SECRET_KEY_INVALID: &str = "SecretKeyInvalid";
    /// OneInbox answered 401/403: the API key is wrong or revoked (not the spec).
    pub const API_KEY_REJECTED: &str = "APIKeyRejected";
    pub const API_UNAVAILABLE: &str = "APIUnavailable";
    pub const REGISTRATION_REJECTED: &str = "RegistrationRejected";
    pub const UPDATE_REJECTED: &str = "UpdateRejected";
    pub const REGISTRATION_FAILED: &str = "RegistrationFailed";
    pub const ALREADY_REGISTERED: &str = "AlreadyRegistered";
    pub const DUPLICATE_PHONE_NUMBER: &str = "DuplicatePhoneNumber";
    pub const ID_MISMATCH: &str = "IdMismatch";
    pub const REPLACEMENT_REQUIRED: &str = "ReplacementRequired";
    pub const DELETING: &str = "Deleting";
    pub const DELETION_BLOCKED: &str = "DeletionBlocked";
    pub const PAUSED: &str = "Paused";
    /// The account named (or the default account) does not exist.
    pub const ACCOUNT_NOT_FOUND: &str = "AccountNotFound";
    /// A ClusterOneInboxAccount that does not allow the object's namespace.
    pub const ACCOUNT_NOT_ALLOWED: &str = "AccountNotAllowed";
    /// The account exists but cannot be used (its endpoint, or cluster accounts are off).
    pub const ACCOUNT_NOT_READY: &str = "AccountNotReady";
    /// `managementPolicy: Observe`: the registration is mirrored and active.
    pub const OBSERVED: &str = "Observed";
    /// `managementPolicy: Observe`: the registration differs from the spec (the Drifted
    /// condition's reason).
    pub const SPEC_DRIFT: &str = "SpecDrift";
    /// `managementPolicy: Observe`: there is no registration to observe.
    pub const REGISTRATION_NOT_FOUND: &str = "RegistrationNotFound";
}

/// The conditions `(type, true?, reason, message)`, with `lastTransitionTime` kept unless the
/// condition's status flips (or it appears).
pub fn conditions_of(
    previous: &[Condition],
    wanted: Vec<(&str, bool, &str, String)>,
    generation: Option<i64>,
    now: Time,
) -> Vec<Condition> {
    wanted
        .into_iter()
        .map(|(type_, ok, reason, message)| {
            let status = if ok { "True" } else { "False" }.to_string();
            let last_transition_time = previous
                .iter()
                .find(|c| c.type_ == type_ && c.status == status)
                .map(|c| c.last_transition_time.clone())
                .unwrap_or_else(|| now.clone());
            Condition {
                type_: type_.to_string(),
                status,
                reason: reason.to_string(),
                message,
                last_transition_time,
                observed_generation: generation,
            }
        })
        .collect()
}
