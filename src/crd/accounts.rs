//! The account resources (`oneinbox.ai/v1alpha1`): `OneInboxAccount`, usable by the
//! PhoneNumbers of its own namespace, and `ClusterOneInboxAccount`, usable by the namespaces it
//! allows. Each names an API key Secret, optionally another API URL and CA bundle, and the
//! request budget that its PhoneNumbers share (docs/tenancy.md).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::{AccountKind, PhoneNumber, SecretKeySelector};

/// Finalizer that keeps an account while PhoneNumbers use it.
pub const ACCOUNT_FINALIZER: &str = "oneinbox.ai/account-in-use";
/// Default key of the CA bundle in its Secret.
pub const DEFAULT_CA_KEY: &str = "ca.crt";
/// A DNS subdomain name (namespaces and Secrets).
const NAME_PATTERN: &str = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$";

/// OneInbox credentials for the PhoneNumbers of this namespace: an API key Secret, the API to
/// reach, and the request budget they share. A PhoneNumber uses it through
/// `spec.accountRef: {kind: OneInboxAccount, name: ...}`. While PhoneNumbers use it, deleting
/// it waits (finalizer) until they are gone.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "oneinbox.ai",
    version = "v1alpha1",
    kind = "OneInboxAccount",
    plural = "oneinboxaccounts",
    shortname = "oia",
    category = "oneinbox",
    namespaced,
    status = "AccountStatus",
    derive = "PartialEq",
    doc = "OneInbox credentials and request budget for the PhoneNumbers of one namespace.",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"PhoneNumbers","type":"integer","description":"PhoneNumbers that use the account","jsonPath":".status.phoneNumbers"}"#,
    printcolumn = r#"{"name":"URL","type":"string","priority":1,"jsonPath":".spec.apiUrl"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct OneInboxAccountSpec {
    /// The Secret in this namespace that holds the OneInbox API key (its workspace). The key
    /// defaults to "apiKey". A new value in the Secret takes effect within seconds.
    pub api_key_secret_ref: SecretKeySelector,

    /// Base URL of the OneInbox API, e.g. "https://api.oneinbox.ai". Defaults to the
    /// operator's --api-url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^https?://[^\s]+$"), length(max = 2048))]
    pub api_url: Option<String>,

    /// A Secret in this namespace with PEM CA certificates trusted for the API, in addition
    /// to the built-in roots (a private endpoint, a TLS-inspecting proxy). The key defaults
    /// to "ca.crt".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle_secret_ref: Option<SecretKeySelector>,

    /// The request budget of the account's PhoneNumbers, enforced by the operator; each
    /// field defaults to the operator's flag of the same meaning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<Budget>,

    /// The deletionPolicy of the account's PhoneNumbers that set none ("Delete" or "Orphan"),
    /// as it is when such a number is deleted. Unset: the operator's
    /// (--default-deletion-policy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::crd::default_deletion_policy_schema")]
    pub default_deletion_policy: Option<crate::crd::DeletionPolicy>,
}

/// OneInbox credentials and a request budget that an administrator grants to namespaces.
/// PhoneNumbers of an allowed namespace use it through
/// `spec.accountRef: {kind: ClusterOneInboxAccount, name: ...}` (or as the operator's default
/// account); any other namespace gets Stalled with reason AccountNotAllowed. While
/// PhoneNumbers use it, deleting it waits (finalizer) until they are gone.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "oneinbox.ai",
    version = "v1alpha1",
    kind = "ClusterOneInboxAccount",
    plural = "clusteroneinboxaccounts",
    shortname = "coia",
    category = "oneinbox",
    status = "AccountStatus",
    derive = "PartialEq",
    doc = "OneInbox credentials and request budget granted to the namespaces it allows.",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"PhoneNumbers","type":"integer","description":"PhoneNumbers that use the account","jsonPath":".status.phoneNumbers"}"#,
    printcolumn = r#"{"name":"URL","type":"string","priority":1,"jsonPath":".spec.apiUrl"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterOneInboxAccountSpec {
    /// The Secret (with its namespace) that holds the OneInbox API key. The key defaults to
    /// "apiKey". A new value in the Secret takes effect within seconds.
    pub api_key_secret_ref: NamespacedSecretKeySelector,

    /// Base URL of the OneInbox API, e.g. "https://api.oneinbox.ai". Defaults to the
    /// operator's --api-url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^https?://[^\s]+$"), length(max = 2048))]
    pub api_url: Option<String>,

    /// A Secret with PEM CA certificates trusted for the API, in addition to the built-in
    /// roots. The key defaults to "ca.crt".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle_secret_ref: Option<NamespacedSecretKeySelector>,

    /// The request budget of the account's PhoneNumbers, enforced by the operator; each
    /// field defaults to the operator's flag of the same meaning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<Budget>,

    /// The deletionPolicy of the account's PhoneNumbers that set none ("Delete" or "Orphan"),
    /// as it is when such a number is deleted. Unset: the operator's
    /// (--default-deletion-policy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::crd::default_deletion_policy_schema")]
    pub default_deletion_policy: Option<crate::crd::DeletionPolicy>,

    /// The namespaces whose PhoneNumbers may use the account: those matching the selector,
    /// and those named. At least one of the two must be given; the selector `{}` allows every
    /// namespace.
    pub allowed_namespaces: AllowedNamespaces,
}

/// A key of a Secret in a given namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NamespacedSecretKeySelector {
    /// Namespace of the Secret.
    #[schemars(regex(pattern = NAME_PATTERN), length(min = 1, max = 63))]
    pub namespace: String,
    /// Name of the Secret.
    #[schemars(regex(pattern = NAME_PATTERN), length(min = 1, max = 253))]
    pub name: String,
    /// Key within the Secret's data. Defaults: "apiKey" for apiKeySecretRef, "ca.crt" for
    /// caBundleSecretRef.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[-._a-zA-Z0-9]+$"), length(min = 1, max = 253))]
    pub key: Option<String>,
}

/// Which namespaces may use a ClusterOneInboxAccount.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.selector) || (has(self.names) && size(self.names) > 0)").message(
    "allowedNamespaces needs a selector or at least one name (the selector {} allows every namespace)"
))]
pub struct AllowedNamespaces {
    /// Namespaces whose labels match (matchLabels and matchExpressions, as in a Deployment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
    /// Namespaces allowed by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub names: Vec<String>,
}

/// The request budget of an account: what its PhoneNumbers together may ask of OneInbox.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Budget {
    /// Requests per second, sustained (the token bucket's rate). Default: --api-rps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub requests_per_second: Option<i32>,
    /// Requests that may go at once after a quiet period (the bucket's size). Default:
    /// --api-burst.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub burst: Option<i32>,
    /// Requests in flight at most. Default: --api-max-in-flight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_in_flight: Option<i32>,
}

/// Observed state of an account.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccountStatus {
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// How many PhoneNumbers (that this operator watches) use the account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone_numbers: Option<i32>,
    /// Ready (the key was verified by one authenticated call), Reconciling and Stalled, as
    /// kstatus, Flux and Argo CD read them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::crd::conditions_schema")]
    pub conditions: Vec<Condition>,
}

/// An account as the operator tells them apart.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AccountId {
    /// The operator-wide key (`--api-key-file`), for objects without an account when no
    /// default account is named.
    Operator,
    /// A OneInboxAccount.
    Namespaced { namespace: String, name: String },
    /// A ClusterOneInboxAccount.
    Cluster { name: String },
}

impl AccountId {
    /// The account `obj` uses: its `accountRef`, else the default account, else the
    /// operator-wide key.
    pub fn of(obj: &PhoneNumber, default_account: Option<&str>) -> AccountId {
        AccountId::named(
            obj.spec
                .account_ref
                .as_ref()
                .map(|r| (r.kind, r.name.as_str())),
            obj.metadata.namespace.as_deref().unwrap_or_default(),
            default_account,
        )
    }

    /// The account an object in `namespace` with this `accountRef` (kind, name) uses.
    pub fn named(
        account_ref: Option<(AccountKind, &str)>,
        namespace: &str,
        default_account: Option<&str>,
    ) -> AccountId {
        match (account_ref, default_account) {
            (Some((kind, name)), _) => match kind {
                AccountKind::OneInboxAccount => AccountId::Namespaced {
                    namespace: namespace.to_owned(),
                    name: name.to_owned(),
                },
                AccountKind::ClusterOneInboxAccount => AccountId::Cluster {
                    name: name.to_owned(),
                },
            },
            (None, Some(name)) => AccountId::Cluster {
                name: name.to_owned(),
            },
            (None, None) => AccountId::Operator,
        }
    }

    /// The label of the account's metrics: `operator`, `OneInboxAccount/<ns>/<name>`,
    /// `ClusterOneInboxAccount/<name>`.
    pub fn label(&self) -> String {
        match self {
            AccountId::Operator => crate::oneinbox::http::OPERATOR_ACCOUNT.to_owned(),
            AccountId::Namespaced { namespace, name } => {
                format!("OneInboxAccount/{namespace}/{name}")
            }
            AccountId::Cluster { name } => format!("ClusterOneInboxAccount/{name}"),
        }
    }
}

impl std::fmt::Display for AccountId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AccountId::Operator => f.write_str("operator"),
            AccountId::Namespaced { namespace, name } => {
                write!(f, "OneInboxAccount {namespace}/{name}")
            }
            AccountId::Cluster { name } => write!(f, "ClusterOneInboxAccount {name}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_of_an_object() {
        let pn = |account: serde_json::Value| -> PhoneNumber {
            let mut spec = serde_json::json!({"phoneNumber": "+15551234567", "provider": "twilio",
                     "agentId": "3c90c3cc-0d44-4b50-8888-8dd25736052a",
                     "credentialId": "3c90c3cc-0d44-4b50-8888-8dd25736052a"});
            if !account.is_null() {
                spec["accountRef"] = account;
            }
            serde_json::from_value(serde_json::json!({
                "apiVersion": "oneinbox.ai/v1alpha1", "kind": "PhoneNumber",
                "metadata": {"name": "x", "namespace": "team-a"}, "spec": spec}))
            .unwrap()
        };
        let own = serde_json::json!({"kind": "OneInboxAccount", "name": "a"});
        let cluster = serde_json::json!({"kind": "ClusterOneInboxAccount", "name": "shared"});
        let ns = |n: &str| AccountId::Namespaced {
            namespace: "team-a".into(),
            name: n.into(),
        };
        let cl = |n: &str| AccountId::Cluster { name: n.into() };
        assert_eq!(AccountId::of(&pn(own.clone()), None), ns("a"));
        assert_eq!(AccountId::of(&pn(own), Some("dflt")), ns("a"));
        assert_eq!(AccountId::of(&pn(cluster), Some("dflt")), cl("shared"));
        assert_eq!(
            AccountId::of(&pn(serde_json::Value::Null), Some("dflt")),
            cl("dflt")
        );
        assert_eq!(
            AccountId::of(&pn(serde_json::Value::Null), None),
            AccountId::Operator
        );
        assert_eq!(ns("a").label(), "OneInboxAccount/team-a/a");
        assert_eq!(ns("a").to_string(), "OneInboxAccount team-a/a");
        assert_eq!(cl("x").label(), "ClusterOneInboxAccount/x");
        assert_eq!(AccountId::Operator.label(), "operator");
    }
}
