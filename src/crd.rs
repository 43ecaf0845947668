//! The `PhoneNumber` custom resource (`oneinbox.ai/v1alpha1`): spec, status and the names that
//! other parts of the operator and its users rely on.
//!
//! The schema carries the admission-time validation (patterns, enums, lengths, CEL rules), so the
//! API server rejects bad input before the operator sees it.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::json_schema;
use serde::{Deserialize, Serialize};

pub mod accounts;
pub mod cached;
pub use accounts::AccountId;
pub use cached::{CachedPhoneNumber, packed_event, slim_for_cache};
mod versions;
mod wire;
pub use versions::SecretVersionMap;
pub use wire::WirePhoneNumber;

/// `kube::Resource` for another in-memory form of a PhoneNumber (the wire's, the cache's): the
/// PhoneNumber's kind, group, version and plural, and the metadata at `$meta` of the value `$o`.
macro_rules! phone_number_resource {
    ($ty:ty, |$o:ident| $o2:ident . $($meta:tt)+) => {
        impl kube::Resource for $ty {
            type DynamicType = ();
            type Scope = k8s_openapi::NamespaceResourceScope;

            fn kind(dt: &()) -> std::borrow::Cow<'_, str> {
                <$crate::crd::PhoneNumber as kube::Resource>::kind(dt)
            }
            fn group(dt: &()) -> std::borrow::Cow<'_, str> {
                <$crate::crd::PhoneNumber as kube::Resource>::group(dt)
            }
            fn version(dt: &()) -> std::borrow::Cow<'_, str> {
                <$crate::crd::PhoneNumber as kube::Resource>::version(dt)
            }
            fn plural(dt: &()) -> std::borrow::Cow<'_, str> {
                <$crate::crd::PhoneNumber as kube::Resource>::plural(dt)
            }
            fn meta(&self) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                let $o = self;
                &$o2.$($meta)+
            }
            fn meta_mut(
                &mut self,
            ) -> &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                let $o = self;
                &mut $o2.$($meta)+
            }
        }
    };
}
pub(crate) use phone_number_resource;

/// API group of the operator's resources.
pub const GROUP: &str = "oneinbox.ai";
/// Finalizer that keeps a registered object until the number is deregistered (or orphaned).
pub const FINALIZER: &str = "oneinbox.ai/deregister";
/// Field manager for every server-side apply of the operator.
pub const FIELD_MANAGER: &str = "oneinbox-operator";
/// Prefix of every annotation the operator reads.
pub const ANNOTATION_PREFIX: &str = "oneinbox.ai/";
/// Set by hand (or by `import`) to adopt an existing registration; read after a restore that
/// lost the status. The operator removes it when the registration it names is gone.
pub const ANNOTATION_PHONE_NUMBER_ID: &str = "oneinbox.ai/phone-number-id";
/// `"true"` stops every OneInbox call for the object.
pub const ANNOTATION_PAUSED: &str = "oneinbox.ai/paused";
/// Any new value asks for a reconcile now; echoed in `status.lastHandledReconcileAt`.
pub const ANNOTATION_RECONCILE_REQUESTED_AT: &str = "oneinbox.ai/reconcile-requested-at";
/// Per-object drift-check interval, e.g. `5m`; `0` turns periodic checks off once Ready.
pub const ANNOTATION_POLL_INTERVAL: &str = "oneinbox.ai/poll-interval";
/// The operator's record of its last attempt to register the number (a JSON
/// `RegistrationAttempt`), written with the finalizer before the POST: while `status.settledAttempt`
/// names another token, that POST may have reached OneInbox.
pub const ANNOTATION_REGISTRATION_ATTEMPT: &str = "oneinbox.ai/registration-attempt";
/// Longest `oneinbox.ai/reconcile-requested-at` value that `status.lastHandledReconcileAt`
/// holds (the schema's maxLength).
pub const MAX_RECONCILE_TOKEN: usize = 1024;

/// E.164, as OneInbox validates it.
pub const E164_PATTERN: &str = r"^\+[1-9][0-9]{1,14}$";
/// A canonical, lower- or upper-case UUID.
pub const UUID_PATTERN: &str =
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$";
/// A DNS host name (RFC 1123), optionally with a port: the SIP trunk's address.
pub const HOST_PATTERN: &str = r"^[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?)*(:[0-9]{1,5})?$";

/// A OneInbox phone number registration: an E.164 number on your own Twilio or Telnyx account,
/// wired to a OneInbox agent. The operator registers it with the OneInbox API, keeps it in line
/// with this spec, and deregisters it when the object is deleted (unless `deletionPolicy` is
/// `Orphan`).
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "oneinbox.ai",
    version = "v1alpha1",
    kind = "PhoneNumber",
    plural = "phonenumbers",
    shortname = "pn",
    category = "oneinbox",
    namespaced,
    status = "PhoneNumberStatus",
    derive = "PartialEq",
    doc = "A OneInbox phone number registration managed by oneinbox-operator.",
    printcolumn = r#"{"name":"Number","type":"string","jsonPath":".spec.phoneNumber"}"#,
    printcolumn = r#"{"name":"Provider","type":"string","jsonPath":".spec.provider"}"#,
    printcolumn = r#"{"name":"State","type":"string","jsonPath":".status.state"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Stalled","type":"string","description":"Why the object needs a human (the Stalled condition's reason); empty while it does not","jsonPath":".status.conditions[?(@.type==\"Stalled\")].reason"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"ID","type":"string","priority":1,"jsonPath":".status.phoneNumberId"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(has(self.providerConfig) && has(self.credentialId))").message(
    "spec.providerConfig (SIP credentials) and spec.credentialId (a stored OneInbox integration) are both set: keep only one of them"
))]
#[x_kube(validation = Rule::new("(has(self.managementPolicy) && self.managementPolicy == 'Observe') || has(self.providerConfig) || has(self.credentialId)").message(
    "set spec.providerConfig (SIP credentials) or spec.credentialId (a stored OneInbox integration): one of them is required when managementPolicy is Full (the default); only Observe may leave both out"
))]
#[x_kube(validation = Rule::new("has(self.accountRef) == has(oldSelf.accountRef) && (!has(self.accountRef) || self.accountRef == oldSelf.accountRef)").message(
    "accountRef is immutable: another account may be another OneInbox workspace. Create a new PhoneNumber (set deletionPolicy: Orphan on this one to keep its registration); the key inside the account's Secret may be rotated freely"
))]
pub struct PhoneNumberSpec {
    /// The number in E.164 form, e.g. "+15739693824". Immutable: a new number is a new
    /// PhoneNumber object.
    #[schemars(regex(pattern = E164_PATTERN), length(max = 16))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("phoneNumber is immutable; create a new PhoneNumber for another number"))]
    pub phone_number: String,

    /// The carrier account that owns the number: "twilio" or "telnyx". Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("provider is immutable; create a new PhoneNumber to move the number to another carrier"))]
    pub provider: Provider,

    /// UUID of the OneInbox agent the number is wired to. Changing it moves the number to another
    /// agent (one PATCH, no re-registration).
    #[schemars(regex(pattern = UUID_PATTERN), length(max = 36))]
    pub agent_id: String,

    /// Optional display name shown in the OneInbox dashboard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub friendly_name: Option<String>,

    /// SIP digest credentials for the outbound trunk. Exactly one of providerConfig and
    /// credentialId must be set. Changing them needs a re-registration (see replacementPolicy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_config: Option<ProviderConfig>,

    /// UUID of a telephony integration stored in OneInbox, instead of providerConfig.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = UUID_PATTERN), length(max = 36))]
    pub credential_id: Option<String>,

    /// Inbound call routing. Omit it for an outbound-only number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inbound_routing: Option<InboundRouting>,

    /// What happens to the registration when this object is deleted: "Delete" deregisters the
    /// number from OneInbox; "Orphan" leaves it registered. Unset: its account's
    /// spec.defaultDeletionPolicy, else the operator's (--default-deletion-policy, "Delete" unless
    /// set), as they are when the object is deleted. May be changed while the object is being
    /// deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "deletion_policy_schema")]
    pub deletion_policy: Option<DeletionPolicy>,

    /// While true, the API server refuses to delete this object, whatever its deletionPolicy:
    /// the ValidatingAdmissionPolicy oneinbox.ai-phonenumber-deletion-protection shipped with
    /// the operator denies it, and a namespace that holds it stays Terminating until this is
    /// set to false. Guards a number against an accidental delete.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deletion_protection: bool,

    /// What to do when the SIP credentials (providerConfig, the referenced Secret's password, or
    /// credentialId) change, which OneInbox can only apply by registering the number again:
    /// "Manual" (default) reports it with reason ReplacementRequired and keeps the number
    /// working; "Replace" deregisters and registers the number again.
    #[serde(default)]
    pub replacement_policy: ReplacementPolicy,

    /// How far the operator manages the registration: "Full" (default) registers, updates and
    /// deregisters it; "Observe" only mirrors an existing registration (found by the
    /// oneinbox.ai/phone-number-id annotation, or else by number) into status and reports
    /// fields that differ from the spec as the Drifted condition. Observe never registers,
    /// updates or deregisters, adds no finalizer, and deleting the object leaves the
    /// registration; providerConfig and credentialId are optional under it. Switching to Full
    /// adopts the registration (finalizer first) and corrects any drift with one update.
    #[serde(default)]
    pub management_policy: ManagementPolicy,

    /// The account whose API key, API URL and request budget this object uses: a
    /// OneInboxAccount of this namespace, or a ClusterOneInboxAccount that allows this
    /// namespace. Defaults to the operator's default account. Immutable (another account may
    /// be another OneInbox workspace): set, changed or removed only by creating a new
    /// PhoneNumber.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_ref: Option<AccountRef>,
}

/// A reference to the account a PhoneNumber uses.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AccountRef {
    /// "OneInboxAccount" (in this namespace) or "ClusterOneInboxAccount".
    pub kind: AccountKind,
    /// Name of the account.
    #[schemars(
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"),
        length(min = 1, max = 253)
    )]
    pub name: String,
}

/// The kind of an account.
#[derive(
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    schemars::JsonSchema,
)]
pub enum AccountKind {
    /// A OneInboxAccount in the PhoneNumber's namespace.
    OneInboxAccount,
    /// A ClusterOneInboxAccount that allows the PhoneNumber's namespace.
    ClusterOneInboxAccount,
}

/// Carrier of the number.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// Twilio Elastic SIP Trunking.
    Twilio,
    /// Telnyx SIP connection.
    Telnyx,
}

impl Provider {
    /// The value the OneInbox API uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Twilio => "twilio",
            Provider::Telnyx => "telnyx",
        }
    }
}

/// What deletion does to the remote registration.
#[derive(
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    schemars::JsonSchema,
    clap::ValueEnum,
)]
pub enum DeletionPolicy {
    /// Deregister the number from OneInbox.
    #[default]
    #[value(name = "Delete")]
    Delete,
    /// Leave the registration in OneInbox.
    #[value(name = "Orphan")]
    Orphan,
}

/// What a change of non-patchable SIP credentials does.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum ReplacementPolicy {
    /// Report the change (reason ReplacementRequired); a human decides.
    #[default]
    Manual,
    /// Deregister and register again with the new credentials.
    Replace,
}

/// Whether the operator writes to OneInbox for the object.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum ManagementPolicy {
    /// Register, update and deregister the number.
    #[default]
    Full,
    /// Mirror an existing registration into status; never write to OneInbox.
    Observe,
}

/// SIP digest credentials for the outbound trunk.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ProviderConfig {
    /// Host of the carrier's SIP termination, e.g. "example.pstn.twilio.com" or "sip.telnyx.com".
    #[schemars(regex(pattern = HOST_PATTERN), length(min = 1, max = 253))]
    pub trunk_address: String,
    /// SIP credential user name.
    #[schemars(length(min = 1, max = 128))]
    pub auth_username: String,
    /// The Secret (in this object's namespace) that holds the SIP password.
    pub auth_password_secret_ref: SecretKeySelector,
}

/// A key of a Secret in the same namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeySelector {
    /// Name of the Secret.
    #[schemars(
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"),
        length(min = 1, max = 253)
    )]
    pub name: String,
    /// Key within the Secret's data. Defaults: "password" for authPasswordSecretRef,
    /// "apiKey" for apiKeySecretRef, "ca.crt" for caBundleSecretRef.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[-._a-zA-Z0-9]+$"), length(min = 1, max = 253))]
    pub key: Option<String>,
}

impl SecretKeySelector {
    /// The key to read, or `default` when none is given.
    pub fn key_or<'a>(&'a self, default: &'a str) -> &'a str {
        self.key.as_deref().unwrap_or(default)
    }
}

/// Default key of the SIP password in its Secret.
pub const DEFAULT_PASSWORD_KEY: &str = "password";
/// Default key of an account's API key in its Secret.
pub const DEFAULT_API_KEY_KEY: &str = "apiKey";

/// Per-number inbound routing.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct InboundRouting {
    /// UUID of the agent that answers inbound calls; defaults to spec.agentId.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = UUID_PATTERN), length(max = 36))]
    pub agent_id: Option<String>,
    /// Agent used when the primary one is unavailable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<Fallback>,
    /// Message left when voicemail is detected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1000))]
    pub voicemail_message: Option<String>,
}

/// The fallback agent of inbound routing.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Fallback {
    /// UUID of the fallback agent.
    #[schemars(regex(pattern = UUID_PATTERN), length(max = 36))]
    pub agent_id: String,
}

/// Observed state of a PhoneNumber.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PhoneNumberStatus {
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The OneInbox id of the registration. Changes only when the number is registered anew
    /// (replacementPolicy Replace, or a registration lost outside the cluster).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub phone_number_id: Option<String>,
    /// The registration's status as OneInbox reports it ("active", "provisioning", ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub state: Option<String>,
    /// OneInbox's inbound SIP trunk id (null for outbound-only numbers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub inbound_trunk_id: Option<String>,
    /// OneInbox's outbound SIP trunk id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub outbound_trunk_id: Option<String>,
    /// OneInbox's dispatch rule id (null for outbound-only numbers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub dispatch_rule_id: Option<String>,
    /// When OneInbox created the registration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub created_at: Option<String>,
    /// When OneInbox last changed the registration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub updated_at: Option<String>,
    /// Keyed hash of the SIP credentials the registration was made with, never the
    /// credentials themselves: HMAC-SHA256 keyed by the operator's key (--credentials-hash-key-file,
    /// or derived from the operator's API key) over the object's UID and the credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub credentials_hash: Option<String>,
    /// The token of the last registration attempt (the oneinbox.ai/registration-attempt
    /// annotation) whose outcome this status records. While the annotation names another
    /// token, that attempt's request may have reached OneInbox, and a restarted operator looks
    /// the number up before registering it again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub settled_attempt: Option<String>,
    /// The resourceVersion of each referenced Secret (by name) that the last successful check
    /// used; never any Secret data. While the Secret watch reports the same versions, a check
    /// needs no Secret read, also after a restart.
    #[serde(default, skip_serializing_if = "SecretVersionMap::is_empty")]
    #[schemars(schema_with = "secret_versions_schema")]
    pub secret_versions: SecretVersionMap,
    /// The last value of the oneinbox.ai/reconcile-requested-at annotation that was handled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_RECONCILE_TOKEN))]
    pub last_handled_reconcile_at: Option<String>,
    /// Ready, Reconciling and Stalled, as kstatus, Flux and Argo CD read them; with
    /// managementPolicy Observe also Drifted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
}

impl RegistrationAttempt {
    /// The credentials hash of the attempt, if `obj` made it (a restored or copied object has
    /// another UID, and the hash covers the UID).
    pub fn credentials_hash_for(&self, obj: &PhoneNumber) -> Option<String> {
        (self.uid.is_some() && self.uid == obj.metadata.uid)
            .then(|| self.credentials_hash.clone())
            .flatten()
    }
}

/// An attempt to register the number, recorded in the oneinbox.ai/registration-attempt
/// annotation with the finalizer, in one write, before the POST.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RegistrationAttempt {
    /// Random token of the attempt.
    pub token: String,
    /// When the attempt started (RFC 3339).
    pub started_at: String,
    /// Keyed hash of the SIP credentials the attempt registers with (never the credentials).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_hash: Option<String>,
    /// The UID of the object that made the attempt: the hash covers it, so a copy or a
    /// restore (another UID) must not take the hash for its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

/// `deletionPolicy`: optional, with the field's own description (an `Option` of the enum would
/// carry the enum's).
fn deletion_policy_schema(_: &mut schemars::generate::SchemaGenerator) -> schemars::Schema {
    json_schema!({
        "type": "string",
        "enum": ["Delete", "Orphan"],
        "nullable": true,
        "description": "What happens to the registration when this object is deleted: \"Delete\" deregisters the number from OneInbox; \"Orphan\" leaves it registered. Unset: its account's spec.defaultDeletionPolicy, else the operator's (--default-deletion-policy, Delete unless set), as they are when the object is deleted. May be changed while the object is being deleted."
    })
}

/// An account's `defaultDeletionPolicy`, with its own description.
pub(crate) fn default_deletion_policy_schema(
    _: &mut schemars::generate::SchemaGenerator,
) -> schemars::Schema {
    json_schema!({
        "type": "string",
        "enum": ["Delete", "Orphan"],
        "nullable": true,
        "description": "The deletionPolicy of the account's PhoneNumbers that set none (\"Delete\" or \"Orphan\"), as it is when such a number is deleted. Unset: the operator's (--default-deletion-policy)."
    })
}

fn secret_versions_schema(_: &mut schemars::generate::SchemaGenerator) -> schemars::Schema {
    json_schema!({
        "type": "object",
        "description": "The resourceVersion of each referenced Secret (by name) that the last successful check used; never any Secret data. While the Secret watch reports the same versions, a check needs no Secret read, also after a restart.",
        // The SIP password Secret (an account's key Secret is the account's to follow).
        "maxProperties": 1,
        "additionalProperties": {"type": "string", "maxLength": 64}
    })
}

pub(crate) fn conditions_schema(_: &mut schemars::generate::SchemaGenerator) -> schemars::Schema {
    json_schema!({
        "type": "array",
        "description": "Ready, Reconciling and Stalled, as kstatus, Flux and Argo CD read them; on a PhoneNumber with managementPolicy Observe also Drifted.",
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["type"],
        // The bounds of metav1.Condition (k8s.io/apimachinery/pkg/apis/meta/v1/types.go); four
        // types are used, and 8 leaves room as in most operators' CRDs.
        "maxItems": 8,
        "items": {
            "type": "object",
            "required": ["type", "status", "lastTransitionTime", "reason", "message"],
            "properties": {
                "type": {
                    "type": "string",
                    "maxLength": 316,
                    "pattern": r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$",
                    "description": "Condition type: Ready, Reconciling, Stalled, or Drifted (a PhoneNumber with managementPolicy Observe)."
                },
                "status": {"type": "string", "enum": ["True", "False", "Unknown"], "description": "True, False or Unknown."},
                "reason": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 1024,
                    "pattern": "^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
                    "description": "CamelCase reason, e.g. Available or APIUnavailable."
                },
                "message": {"type": "string", "maxLength": 32768, "description": "Human-readable detail, with the fix when a human is needed."},
                "lastTransitionTime": {"type": "string", "format": "date-time", "description": "When the status last changed."},
                "observedGeneration": {"type": "integer", "format": "int64", "minimum": 0, "description": "The metadata.generation the condition was computed for."}
            }
        }
    })
}

impl PhoneNumber {
    /// The remote id, from status or (after a restore, or for adoption) the annotation. While a
    /// registration attempt is pending the annotation may still name a registration this
    /// object already released (a replacement), so only the status counts then.
    pub fn known_id(&self) -> Option<String> {
        let status = self.status.as_ref();
        let from_status = status.and_then(|s| s.phone_number_id.clone());
        let pending = self.pending_create().is_some();
        let from_annotation = if pending {
            None
        } else {
            self.annotation(ANNOTATION_PHONE_NUMBER_ID)
                .map(str::to_owned)
        };
        from_status.or(from_annotation).filter(|id| !id.is_empty())
    }

    /// The last registration attempt the annotation records, settled or not. A value that
    /// does not parse (edited by hand) records none.
    pub fn registration_attempt(&self) -> Option<RegistrationAttempt> {
        serde_json::from_str(self.annotation(ANNOTATION_REGISTRATION_ATTEMPT)?).ok()
    }

    /// The registration attempt that may be in flight: the recorded one, unless the status
    /// records its outcome.
    pub fn pending_create(&self) -> Option<RegistrationAttempt> {
        self.registration_attempt().filter(|a| !self.settles(a))
    }

    /// Whether the status records the outcome of `attempt`.
    pub fn settles(&self, attempt: &RegistrationAttempt) -> bool {
        self.status
            .as_ref()
            .and_then(|s| s.settled_attempt.as_deref())
            == Some(attempt.token.as_str())
    }

    /// One annotation's value.
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.metadata
            .annotations
            .as_ref()?
            .get(key)
            .map(String::as_str)
    }

    /// The condition of the given type, if present.
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.status
            .as_ref()?
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
    }

    /// Whether the operator's finalizer is on the object.
    pub fn has_finalizer(&self) -> bool {
        self.metadata
            .finalizers
            .as_ref()
            .is_some_and(|f| f.iter().any(|f| f == FINALIZER))
    }

    /// Names of the Secrets (same namespace) this object reads.
    pub fn referenced_secrets(&self) -> impl Iterator<Item = &str> {
        let password = self
            .spec
            .provider_config
            .as_ref()
            .map(|p| p.auth_password_secret_ref.name.as_str());
        password.into_iter()
    }

    /// Whether the object only observes its registration (`managementPolicy: Observe`).
    pub fn is_observe_only(&self) -> bool {
        self.spec.management_policy == ManagementPolicy::Observe
    }

    /// Whether the object is paused by annotation.
    pub fn is_paused(&self) -> bool {
        self.annotation(ANNOTATION_PAUSED) == Some("true")
    }
}

/// Every CRD of the operator as `crdgen` writes them (`make crds`): PhoneNumber first, then
/// the two account kinds.
pub fn generated_crds()
-> Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>
{
    use crate::crd::accounts::{ClusterOneInboxAccount, OneInboxAccount};
    use kube::CustomResourceExt;
    vec![
        generated_crd(),
        reflowed(OneInboxAccount::crd()),
        reflowed(ClusterOneInboxAccount::crd()),
    ]
}

/// The CRD as `crdgen` writes it (`make crds`): the derived one, with every description
/// reflowed for `kubectl explain`, which prints a description as it is: the line breaks of
/// the doc comments would end its lines mid-sentence.
pub fn generated_crd()
-> k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition {
    reflowed(<PhoneNumber as kube::CustomResourceExt>::crd())
}

/// `crd` with every description of every version reflowed, and its status defaulted.
fn reflowed(
    mut crd: k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
) -> k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition {
    for version in &mut crd.spec.versions {
        if let Some(schema) = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
        {
            reflow_schema(schema);
            // Until the operator's first status write, an object reads as
            // `status: {observedGeneration: 0}` (defaulted on every read; nothing is stored):
            // kstatus, and so Flux's `wait`, sees generation 1 not yet observed (InProgress)
            // instead of a resource without status, which it would call Current.
            if let Some(status) = schema.properties.as_mut().and_then(|p| p.get_mut("status")) {
                status.default = Some(
                    k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSON(
                        serde_json::json!({"observedGeneration": 0}),
                    ),
                );
            }
        }
    }
    crd
}

fn reflow_schema(
    schema: &mut k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaProps,
) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
        JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
    };
    if let Some(d) = schema.description.as_mut() {
        *d = reflow(d);
    }
    for p in schema.properties.iter_mut().flat_map(|m| m.values_mut()) {
        reflow_schema(p);
    }
    match schema.items.as_mut() {
        Some(JSONSchemaPropsOrArray::Schema(s)) => reflow_schema(s),
        Some(JSONSchemaPropsOrArray::Schemas(v)) => v.iter_mut().for_each(reflow_schema),
        None => {}
    }
    if let Some(JSONSchemaPropsOrBool::Schema(s)) = schema.additional_properties.as_mut() {
        reflow_schema(s);
    }
    for list in [
        schema.all_of.as_mut(),
        schema.any_of.as_mut(),
        schema.one_of.as_mut(),
    ]
    .into_iter()
    .flatten()
    {
        list.iter_mut().for_each(reflow_schema);
    }
}

/// Joins the lines of each paragraph with spaces; blank lines still separate paragraphs, and a
/// line that starts a list item (`- `, `* `, `1. `) still starts a line.
pub fn reflow(text: &str) -> String {
    let starts_item = |line: &str| {
        line.starts_with("- ")
            || line.starts_with("* ")
            || line
                .split_once(". ")
                .is_some_and(|(n, _)| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
    };
    let mut paragraphs = Vec::new();
    let mut current = String::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() {
            if !current.is_empty() {
                paragraphs.push(std::mem::take(&mut current));
            }
            continue;
        }
        if !current.is_empty() {
            current.push(if starts_item(line) { '\n' } else { ' ' });
        }
        current.push_str(line);
    }
    if !current.is_empty() {
        paragraphs.push(current);
    }
    paragraphs.join("\n\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::{CustomResourceExt, ResourceExt};

    #[test]
    fn crd_names_match_the_design() {
        let crd = PhoneNumber::crd();
        assert_eq!(
            crd.metadata.name.as_deref(),
            Some("phonenumbers.oneinbox.ai")
        );
        assert_eq!(crd.spec.names.short_names, Some(vec!["pn".to_string()]));
        assert_eq!(
            crd.spec.names.categories,
            Some(vec!["oneinbox".to_string()])
        );
        assert_eq!(crd.spec.scope, "Namespaced");
    }

    #[test]
    fn a_pending_attempt_ignores_a_stale_id_annotation() {
        let mut pn: PhoneNumber = serde_json::from_value(serde_json::json!({
            "apiVersion": "oneinbox.ai/v1alpha1", "kind": "PhoneNumber",
            "metadata": {"name": "x", "annotations": {ANNOTATION_PHONE_NUMBER_ID: "old"}},
            "spec": {"phoneNumber": "+15551234567", "provider": "twilio",
                     "agentId": "3c90c3cc-0d44-4b50-8888-8dd25736052a",
                     "credentialId": "3c90c3cc-0d44-4b50-8888-8dd25736052a"}
        }))
        .unwrap();
        assert_eq!(
            pn.known_id().as_deref(),
            Some("old"),
            "restore/adopt from the annotation"
        );
        let attempt = RegistrationAttempt {
            token: "t".into(),
            started_at: "2026-12-01T00:00:00Z".into(),
            credentials_hash: None,
            uid: None,
        };
        pn.annotations_mut().insert(
            ANNOTATION_REGISTRATION_ATTEMPT.into(),
            serde_json::to_string(&attempt).unwrap(),
        );
        assert_eq!(pn.pending_create(), Some(attempt));
        assert_eq!(pn.known_id(), None);
        // The status records the attempt's outcome: nothing is in flight any more.
        pn.status = Some(PhoneNumberStatus {
            settled_attempt: Some("t".into()),
            ..Default::default()
        });
        assert_eq!(pn.pending_create(), None);
        assert_eq!(pn.known_id().as_deref(), Some("old"));
        // A hand-edited value records no attempt.
        pn.status = None;
        pn.annotations_mut()
            .insert(ANNOTATION_REGISTRATION_ATTEMPT.into(), "{".into());
        assert_eq!(pn.pending_create(), None);
    }

    #[test]
    fn every_annotation_the_operator_reads_has_its_prefix() {
        for key in [
            ANNOTATION_PHONE_NUMBER_ID,
            ANNOTATION_PAUSED,
            ANNOTATION_RECONCILE_REQUESTED_AT,
            ANNOTATION_POLL_INTERVAL,
            ANNOTATION_REGISTRATION_ATTEMPT,
        ] {
            assert!(key.starts_with(ANNOTATION_PREFIX), "{key}");
        }
    }

    #[test]
    fn secret_key_defaults_apply_only_when_no_key_is_given() {
        let s = SecretKeySelector {
            name: "x".into(),
            key: None,
        };
        assert_eq!(s.key_or(DEFAULT_PASSWORD_KEY), "password");
        let s = SecretKeySelector {
            name: "x".into(),
            key: Some("k".into()),
        };
        assert_eq!(s.key_or(DEFAULT_API_KEY_KEY), "k");
    }

    #[test]
    fn reflow_joins_lines_but_keeps_paragraphs_and_list_items() {
        assert_eq!(reflow("one line"), "one line");
        assert_eq!(
            reflow("A sentence that\nwraps, and\n  another."),
            "A sentence that wraps, and another."
        );
        assert_eq!(
            reflow("First\nparagraph.\n\nSecond\nparagraph.\n"),
            "First paragraph.\n\nSecond paragraph."
        );
        assert_eq!(
            reflow("Values:\n- Delete\n  deregisters\n- Orphan\n1. first\n2. second"),
            "Values:\n- Delete deregisters\n- Orphan\n1. first\n2. second"
        );
    }

    /// Every description of every generated CRD, with its property path.
    fn descriptions() -> Vec<(String, serde_json::Value)> {
        fn walk(node: &serde_json::Value, path: &str, out: &mut Vec<(String, serde_json::Value)>) {
            if let Some(props) = node["properties"].as_object() {
                for (name, prop) in props {
                    let p = format!("{path}.{name}");
                    out.push((p.clone(), prop.clone()));
                    walk(prop, &p, out);
                }
            }
            if node["items"].is_object() {
                walk(&node["items"], &format!("{path}[]"), out);
            }
        }
        let mut out = Vec::new();
        for crd in generated_crds() {
            let crd = serde_json::to_value(&crd).expect("crd");
            for v in crd["spec"]["versions"].as_array().expect("versions") {
                let kind = crd["spec"]["names"]["kind"].as_str().unwrap_or_default();
                walk(&v["schema"]["openAPIV3Schema"], kind, &mut out);
            }
        }
        out
    }

    /// The defaults and flags the CRD texts name are the code's: every `--flag` is one of
    /// `oneinbox-operator run`, every `"value" (default)` of an enum is its schema default, and
    /// every `"key" for <field>` of a Secret reference is the key the operator reads by default.
    #[test]
    fn crd_texts_name_the_defaults_and_flags_of_the_code() {
        use clap::CommandFactory;
        let cli = crate::config::Cli::command();
        let run = cli.find_subcommand("run").expect("run");
        let flags: Vec<String> = run
            .get_arguments()
            .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
            .collect();
        let key_defaults = [
            ("authPasswordSecretRef", DEFAULT_PASSWORD_KEY),
            ("apiKeySecretRef", DEFAULT_API_KEY_KEY),
            ("caBundleSecretRef", accounts::DEFAULT_CA_KEY),
        ];
        let all = descriptions();
        assert!(all.len() > 50, "{} properties", all.len());
        let mut checked = (0, 0, 0);
        for (path, prop) in &all {
            let Some(text) = prop["description"].as_str() else {
                continue;
            };
            let words = text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'));
            for f in words.filter(|w| w.starts_with("--") && w.len() > 2) {
                // kubectl's own flags in an example are not the operator's.
                if f == "--server-side" {
                    continue;
                }
                assert!(
                    flags.iter().any(|x| x == f),
                    "{path}: {f} is not a flag of run"
                );
                checked.0 += 1;
            }
            // `"Value" (default)`: the quoted word before each.
            for (before, _) in text
                .match_indices("\" (default)")
                .map(|(i, m)| (&text[..i], m))
            {
                let value = before.rsplit('"').next().unwrap_or_default();
                assert_eq!(prop["default"].as_str(), Some(value), "{path}: {text}");
                checked.1 += 1;
            }
            // `"value" for fieldSecretRef`.
            for (i, m) in text.match_indices("\" for ") {
                let value = text[..i].rsplit('"').next().unwrap_or_default();
                let field: String = text[i + m.len()..]
                    .chars()
                    .take_while(char::is_ascii_alphanumeric)
                    .collect();
                let (_, code) = key_defaults
                    .iter()
                    .find(|(f, _)| *f == field)
                    .unwrap_or_else(|| panic!("{path}: no default known for {field}"));
                assert_eq!(value, *code, "{path}: {text}");
                checked.2 += 1;
            }
            // A key of a Secret reference names its own field's default.
            if let Some(parent) = path.strip_suffix(".key").and_then(|p| p.rsplit('.').next())
                && parent.ends_with("SecretRef")
            {
                let (_, code) = key_defaults
                    .iter()
                    .find(|(field, _)| *field == parent)
                    .unwrap_or_else(|| panic!("{path}: no default known for {parent}"));
                assert!(
                    text.contains(&format!("\"{code}\" for {parent}")),
                    "{path} does not name its default {code:?}: {text}"
                );
            }
        }
        assert!(
            checked.0 >= 5 && checked.1 >= 2 && checked.2 >= 5,
            "{checked:?}"
        );
    }
}
