//! The OneInbox client: the operator's view of the phone-number API (docs/oneinbox-contract.md).
//!
//! `OneInboxApi` is the seam between the reconciler and the network; `http.rs` is the real
//! implementation. Errors arrive already classified as retryable, not-found, duplicate or
//! permanent, so the reconciler never looks at status codes.

pub mod http;
mod secret;
mod turn;

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use secret::SecretString;

/// Longest error detail kept from a response body (the API's text can be long; events cap too).
const MAX_DETAIL: usize = 512;

/// `POST /v1/phone-numbers` body (`PhoneNumberCreate`).
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct RegisterRequest {
    pub phone_number: String,
    pub provider: String,
    pub agent_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub friendly_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider_config: Option<SipProviderConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inbound_routing: Option<Routing>,
}

/// SIP digest credentials; the password is a `SecretString`, redacted in `Debug`.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct SipProviderConfig {
    pub trunk_address: String,
    pub auth_username: String,
    pub auth_password: SecretString,
}

/// `InboundRouting` as the API sends and receives it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct Routing {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<RoutingFallback>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voicemail_message: Option<String>,
}

/// `{"agent_id": ...}` of a fallback.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct RoutingFallback {
    pub agent_id: String,
}

/// `PhoneNumberResponse`.
#[derive(Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Registration {
    pub id: String,
    pub phone_number: String,
    #[serde(default)]
    pub friendly_name: Option<String>,
    pub provider: String,
    pub agent_id: String,
    pub status: String,
    #[serde(default)]
    pub inbound_trunk_id: Option<String>,
    #[serde(default)]
    pub outbound_trunk_id: Option<String>,
    #[serde(default)]
    pub dispatch_rule_id: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    #[serde(default)]
    pub inbound_routing: Option<Routing>,
}

/// `active` is the only ready registration state (contract: Status); anything else, known or not, is not.
pub fn is_active_state(status: &str) -> bool {
    status == "active"
}

impl Registration {
    pub fn is_active(&self) -> bool {
        is_active_state(&self.status)
    }
}

/// `PATCH /v1/phone-numbers/{id}` body: only the fields that change. Built by the reconciler's
/// pure diff; `inbound_routing` is a map so that a removed key can be sent as an explicit null.
#[derive(Serialize, Clone, Debug, Default, PartialEq)]
pub struct PatchRequest {
    /// `Some(None)` clears the name (explicit null).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub friendly_name: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inbound_routing: Option<Map<String, Value>>,
}

impl PatchRequest {
    /// Whether the patch would change nothing (and so is not sent).
    pub fn is_empty(&self) -> bool {
        self.friendly_name.is_none() && self.agent_id.is_none() && self.inbound_routing.is_none()
    }
}

/// Outcome of a deregistration that did not fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deregistered {
    /// The API released it now.
    Released,
    /// It was already gone (404).
    AlreadyGone,
}

/// A failed OneInbox call, classified (contract: Error bodies, Retries).
#[derive(thiserror::Error, Debug, Clone, PartialEq)]
pub enum ApiError {
    /// 429, 5xx, timeouts, connection errors: try again later (honouring `retry_after`).
    #[error("OneInbox API unavailable ({what}): {detail}")]
    Unavailable {
        /// "HTTP 503", "timeout", "connection", ...
        what: String,
        detail: String,
        retry_after: Option<Duration>,
    },
    /// 404 on `/v1/phone-numbers/{id}` that does not name a missing reference: the registration
    /// is gone.
    #[error("phone number not found in OneInbox")]
    NotFound,
    /// 401 or 403: the API key is missing, wrong or revoked. Nothing in the spec can fix it;
    /// retried with backoff after the key is read again.
    #[error("OneInbox rejected the API key (HTTP {status}): {detail}")]
    KeyRejected { status: u16, detail: String },
    /// 409 `PHONE_NUMBER_ALREADY_REGISTERED`.
    #[error("the number is already registered in OneInbox as {phone_id}: {message}")]
    AlreadyRegistered { phone_id: String, message: String },
    /// Any other 4xx: the same request must not be repeated until the input changes.
    #[error("OneInbox rejected the request (HTTP {status}{}): {detail}", code.as_ref().map(|c| format!(", {c}")).unwrap_or_default())]
    Rejected {
        status: u16,
        code: Option<String>,
        detail: String,
    },
}

impl ApiError {
    /// Whether a retry with backoff can succeed without a change of the object: the API was
    /// unavailable, or the key may be rotated.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ApiError::Unavailable { .. } | ApiError::KeyRejected { .. }
        )
    }

    /// A 429: the API refused to act and changed nothing (contract: Retries).
    pub fn is_throttled(&self) -> bool {
        matches!(self, ApiError::Unavailable { what, .. } if what == "HTTP 429")
    }

    /// The server's requested wait, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ApiError::Unavailable { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// `from_response` of a body with the request's API key scrubbed: an error body may echo
    /// the request's credentials, and the key must reach no status, event or log.
    pub fn from_answer(
        endpoint: Endpoint,
        status: u16,
        retry_after: Option<Duration>,
        body: &str,
        key: &SecretString,
    ) -> ApiError {
        let key = key.expose();
        // A key too short to tell from ordinary words is not scrubbed (it is never that short).
        let body = if key.len() >= 8 {
            body.replace(key, "[redacted]")
        } else {
            body.to_owned()
        };
        ApiError::from_response(endpoint, status, retry_after, &body)
    }

    /// Classify a non-success HTTP answer from the endpoint, its status, `Retry-After` and
    /// body (pure). A 404 means "registration gone" only on an item endpoint and only when its
    /// detail does not name a missing reference (`agent_id not found`): the wording of the
    /// message is never matched (docs/oneinbox-contract.md).
    pub fn from_response(
        endpoint: Endpoint,
        status: u16,
        retry_after: Option<Duration>,
        body: &str,
    ) -> ApiError {
        let detail = ErrorDetail::parse(body);
        match status {
            408 | 429 | 500..=599 => ApiError::Unavailable {
                what: format!("HTTP {status}"),
                detail: detail.text,
                retry_after,
            },
            401 | 403 => ApiError::KeyRejected {
                status,
                detail: detail.text,
            },
            404 if endpoint == Endpoint::Item && !names_missing_reference(&detail.text) => {
                ApiError::NotFound
            }
            409 if detail.code.as_deref() == Some("PHONE_NUMBER_ALREADY_REGISTERED") => {
                ApiError::AlreadyRegistered {
                    phone_id: detail.phone_id.unwrap_or_default(),
                    message: detail.text,
                }
            }
            _ => ApiError::Rejected {
                status,
                code: detail.code,
                detail: detail.text,
            },
        }
    }
}

/// Which kind of path a request went to: the collection (`/v1/phone-numbers`) or one
/// registration (`/v1/phone-numbers/{id}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Collection,
    Item,
}

/// `agent_id not found`, `inbound_routing.fallback.agent_id not found`: a 404 detail naming a
/// field (a dotted snake_case path) whose referenced resource does not exist.
fn names_missing_reference(detail: &str) -> bool {
    let Some(field) = detail.strip_suffix(" not found") else {
        return false;
    };
    !field.is_empty()
        && field.split('.').all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        })
}

/// The useful parts of an error body: `detail` as a string, an object with `code`/`message`, or
/// the 422 list; otherwise the raw text, truncated.
#[derive(Debug, Default, PartialEq)]
struct ErrorDetail {
    text: String,
    code: Option<String>,
    phone_id: Option<String>,
}

impl ErrorDetail {
    fn parse(body: &str) -> ErrorDetail {
        let value: Option<Value> = serde_json::from_str(body).ok();
        let Some(detail) = value.as_ref().and_then(|v| v.get("detail")) else {
            return ErrorDetail {
                text: truncate(body.trim()),
                ..ErrorDetail::default()
            };
        };
        match detail {
            Value::String(s) => ErrorDetail {
                text: truncate(s),
                ..ErrorDetail::default()
            },
            Value::Object(o) => {
                let str_of = |k: &str| o.get(k).and_then(Value::as_str).map(str::to_owned);
                ErrorDetail {
                    text: truncate(&str_of("message").unwrap_or_else(|| detail.to_string())),
                    code: str_of("code"),
                    phone_id: str_of("phone_id"),
                }
            }
            Value::Array(items) => {
                let parts: Vec<String> = items.iter().map(validation_item).collect();
                ErrorDetail {
                    text: truncate(&parts.join("; ")),
                    ..ErrorDetail::default()
                }
            }
            other => ErrorDetail {
                text: truncate(&other.to_string()),
                ..ErrorDetail::default()
            },
        }
    }
}

/// `body.phone_number: String should match pattern ...` from one FastAPI validation item. The
/// `input` is left out on purpose: it can echo a submitted password.
fn validation_item(item: &Value) -> String {
    let loc = item
        .get("loc")
        .and_then(Value::as_array)
        .map(|l| {
            l.iter()
                .map(|p| {
                    p.as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| p.to_string())
                })
                .collect::<Vec<_>>()
                .join(".")
        })
        .unwrap_or_default();
    let msg = item.get("msg").and_then(Value::as_str).unwrap_or("invalid");
    if loc.is_empty() {
        msg.to_owned()
    } else {
        format!("{loc}: {msg}")
    }
}

fn truncate(s: &str) -> String {
    if s.len() <= MAX_DETAIL {
        return s.to_owned();
    }
    let mut end = MAX_DETAIL;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// A key that can be replaced while clients hold it (a rotated Secret, a re-read key file).
#[derive(Clone, Debug)]
pub struct KeyCell(std::sync::Arc<std::sync::RwLock<SecretString>>);

impl KeyCell {
    pub fn new(key: SecretString) -> KeyCell {
        KeyCell(std::sync::Arc::new(std::sync::RwLock::new(key)))
    }

    pub fn get(&self) -> SecretString {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set(&self, key: SecretString) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = key;
    }
}

/// A request budget: token bucket and concurrency cap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Budget {
    pub rate_per_second: std::num::NonZeroU32,
    pub burst: std::num::NonZeroU32,
    pub max_in_flight: usize,
}

/// Everything a client of one account needs.
#[derive(Clone, Debug)]
pub struct AccountEndpoint {
    /// The metrics label (`OneInboxAccount/<ns>/<name>`, `ClusterOneInboxAccount/<name>`).
    pub label: String,
    /// The account's API URL; the operator's when `None`.
    pub base_url: Option<String>,
    /// CA certificates of the account's bundle.
    pub extra_roots: Vec<reqwest::Certificate>,
    pub budget: Budget,
    pub key: KeyCell,
}

/// What the reconciler needs from OneInbox.
pub trait OneInboxApi: Clone + Send + Sync + 'static {
    /// A client for an account: its own budget, 429 cooldown and key (shared through the
    /// cell, so a rotated key reaches every call at once).
    fn for_account(&self, account: &AccountEndpoint) -> Result<Self, String>;

    /// The same client for background work (drift checks): its calls go behind other calls
    /// for the account's budget.
    fn in_background(&self) -> Self;

    /// Whether the budget is used up: a call is waiting for it now (its turn, its in-flight
    /// place, a `Retry-After` or its token), or one did within the last second. A client
    /// without a budget never waits.
    fn budget_used_up(&self) -> bool {
        false
    }

    /// One cheap authenticated call (the first registration of a list): `Ok` if the key is
    /// accepted.
    fn verify(&self) -> impl Future<Output = Result<(), ApiError>> + Send;

    /// `POST /v1/phone-numbers`. Not idempotent: callers guard it with the pending marker.
    fn register(
        &self,
        req: &RegisterRequest,
    ) -> impl Future<Output = Result<Registration, ApiError>> + Send;
    /// `GET /v1/phone-numbers/{id}`.
    fn get(&self, id: &str) -> impl Future<Output = Result<Registration, ApiError>> + Send;
    /// Every registration of `number` (`GET /v1/phone-numbers?phone_number=`), all pages.
    fn find_by_number(
        &self,
        number: &str,
    ) -> impl Future<Output = Result<Vec<Registration>, ApiError>> + Send;
    /// `PATCH /v1/phone-numbers/{id}` with only the changed fields.
    fn patch(
        &self,
        id: &str,
        req: &PatchRequest,
    ) -> impl Future<Output = Result<Registration, ApiError>> + Send;
    /// `DELETE /v1/phone-numbers/{id}`; 404 is `AlreadyGone`.
    fn deregister(&self, id: &str) -> impl Future<Output = Result<Deregistered, ApiError>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_detail_429_is_retryable_with_retry_after() {
        let e = ApiError::from_response(
            Endpoint::Collection,
            429,
            Some(Duration::from_secs(3)),
            r#"{"detail":"Rate limit exceeded"}"#,
        );
        assert!(e.is_retryable());
        assert!(e.is_throttled());
        assert_eq!(e.retry_after(), Some(Duration::from_secs(3)));
        assert!(!ApiError::from_response(Endpoint::Item, 503, None, "").is_throttled());
        assert!(e.to_string().contains("Rate limit exceeded"));
    }

    #[test]
    fn object_detail_400_is_permanent_with_code() {
        let e = ApiError::from_response(
            Endpoint::Collection,
            400,
            None,
            r#"{"detail":{"code":"SIP_TRUNK_PROVISION_FAILED","message":"no trunk"}}"#,
        );
        assert_eq!(
            e,
            ApiError::Rejected {
                status: 400,
                code: Some("SIP_TRUNK_PROVISION_FAILED".into()),
                detail: "no trunk".into()
            }
        );
        assert!(!e.is_retryable());
    }

    #[test]
    fn conflict_surfaces_the_existing_id() {
        let e = ApiError::from_response(
            Endpoint::Collection,
            409,
            None,
            r#"{"detail":{"code":"PHONE_NUMBER_ALREADY_REGISTERED","message":"taken","phone_id":"abc"}}"#,
        );
        assert_eq!(
            e,
            ApiError::AlreadyRegistered {
                phone_id: "abc".into(),
                message: "taken".into()
            }
        );
    }

    #[test]
    fn validation_list_names_fields_and_drops_input() {
        let e = ApiError::from_response(
            Endpoint::Collection,
            422,
            None,
            r#"{"detail":[{"loc":["body","provider_config","auth_password"],"msg":"bad","type":"x","input":"hunter2"},{"loc":["body","phone_number"],"msg":"String should match pattern","type":"string_pattern_mismatch","input":"12"}]}"#,
        );
        let text = e.to_string();
        assert!(
            text.contains("body.phone_number: String should match pattern"),
            "{text}"
        );
        assert!(!text.contains("hunter2"), "{text}");
    }

    #[test]
    fn a_404_on_an_item_means_gone_unless_it_names_a_reference() {
        let on_item = |body: &str| ApiError::from_response(Endpoint::Item, 404, None, body);
        assert_eq!(
            on_item(r#"{"detail":"Phone number not found"}"#),
            ApiError::NotFound
        );
        // Reworded by the API: still gone (no English text is matched).
        assert_eq!(
            on_item(r#"{"detail":"No such registration"}"#),
            ApiError::NotFound
        );
        assert_eq!(on_item(""), ApiError::NotFound);
        for reference in [
            "agent_id not found",
            "inbound_routing.fallback.agent_id not found",
        ] {
            let e = on_item(&format!(r#"{{"detail":"{reference}"}}"#));
            assert!(matches!(e, ApiError::Rejected { status: 404, .. }), "{e:?}");
        }
        // On the collection (POST), a 404 is always a reference error, never a lost registration.
        let e = ApiError::from_response(
            Endpoint::Collection,
            404,
            None,
            r#"{"detail":"Phone number not found"}"#,
        );
        assert!(matches!(e, ApiError::Rejected { status: 404, .. }), "{e:?}");
    }

    #[test]
    fn key_rejections_and_408_are_retried() {
        for status in [401, 403] {
            let e = ApiError::from_response(
                Endpoint::Collection,
                status,
                None,
                r#"{"detail":"Invalid or missing API key"}"#,
            );
            assert!(matches!(e, ApiError::KeyRejected { .. }), "{e:?}");
            assert!(e.is_retryable());
            assert!(!e.is_throttled());
        }
        let e = ApiError::from_response(Endpoint::Item, 408, None, "");
        assert!(matches!(e, ApiError::Unavailable { .. }), "{e:?}");
    }

    #[test]
    fn non_json_body_falls_back_to_truncated_text() {
        let body = "x".repeat(2000);
        let e = ApiError::from_response(Endpoint::Item, 502, None, &body);
        let ApiError::Unavailable { detail, .. } = e else {
            panic!("not unavailable")
        };
        assert!(detail.len() < 600);
    }

    #[test]
    fn patch_request_serializes_explicit_nulls() {
        let mut routing = Map::new();
        routing.insert("fallback".into(), Value::Null);
        let p = PatchRequest {
            friendly_name: Some(None),
            agent_id: None,
            inbound_routing: Some(routing),
        };
        assert_eq!(
            serde_json::to_value(&p).unwrap(),
            serde_json::json!({"friendly_name": null, "inbound_routing": {"fallback": null}})
        );
        assert!(PatchRequest::default().is_empty());
    }

    #[test]
    fn an_error_body_that_echoes_the_key_is_classified_without_it() {
        let key = SecretString::new("oi_sk_live_0123456789".into());
        let body = r#"{"detail": "API key oi_sk_live_0123456789 may not access this workspace"}"#;
        let e = ApiError::from_answer(Endpoint::Item, 403, None, body, &key);
        assert!(
            matches!(e, ApiError::KeyRejected { status: 403, .. }),
            "{e:?}"
        );
        assert!(!format!("{e} {e:?}").contains(key.expose()), "{e:?}");
    }

    #[test]
    fn register_request_debug_redacts_the_password() {
        let req = RegisterRequest {
            phone_number: "+15551234567".into(),
            provider: "twilio".into(),
            agent_id: "a".into(),
            friendly_name: None,
            provider_config: Some(SipProviderConfig {
                trunk_address: "t".into(),
                auth_username: "u".into(),
                auth_password: SecretString::new("s3cr3t-pw".into()),
            }),
            credential_id: None,
            inbound_routing: None,
        };
        assert!(!format!("{req:?}").contains("s3cr3t-pw"));
        assert!(serde_json::to_string(&req).unwrap().contains("s3cr3t-pw"));
    }
}
