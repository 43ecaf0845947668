//! Pure request validation. Produces the FastAPI / Pydantic v2 shaped 422 items of the real
//! service (`type`, `loc`, `msg`, `input`, optional `ctx`) and collects every error, not only the
//! first, because that is what a FastAPI service answers.

use serde::Serialize;
use serde_json::{Map, Value, json};
use uuid::Uuid;

/// The E.164 pattern of `phone_number`, as the OpenAPI document states it.
pub const PHONE_PATTERN: &str = r"^\+[1-9]\d{1,14}$";

/// Replaces a secret echoed in `input`; a 422 must not hand the SIP password back.
const REDACTED: &str = "**********";

/// Maximum of `limit` on list.
pub const MAX_LIMIT: u32 = 100;
/// Default of `limit` on list.
pub const DEFAULT_LIMIT: u32 = 20;

/// One element of a 422 `detail` list.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ErrorItem {
    /// Pydantic error type, e.g. `missing`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Where: `["body", ...]`, `["path", ...]` or `["query", ...]`.
    pub loc: Vec<Value>,
    /// Human text; clients must not classify by it.
    pub msg: String,
    /// The offending input (secrets redacted).
    pub input: Value,
    /// Extra context, e.g. the pattern.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ctx: Option<Value>,
}

/// The carrier of a registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// Twilio.
    Twilio,
    /// Telnyx.
    Telnyx,
}

impl Provider {
    /// The wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Twilio => "twilio",
            Self::Telnyx => "telnyx",
        }
    }
}

/// `provider_config` as accepted. The password itself is not kept: only whether it was given
/// non-empty, which is all the mock needs and so it can never leak.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ProviderConfigInput {
    /// SIP trunk host.
    pub trunk_address: Option<String>,
    /// SIP digest user name.
    pub auth_username: Option<String>,
    /// Whether a non-empty password was given.
    pub auth_password_set: bool,
    /// Keys outside the schema, kept for the internal view.
    pub extra: Map<String, Value>,
}

impl ProviderConfigInput {
    /// Names of the three SIP fields that are missing or empty (contract: SIP credential resolution).
    pub fn missing_fields(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.trunk_address.as_deref().is_none_or(str::is_empty) {
            out.push("trunk_address");
        }
        if self.auth_username.as_deref().is_none_or(str::is_empty) {
            out.push("auth_username");
        }
        if !self.auth_password_set {
            out.push("auth_password");
        }
        out
    }
}

/// `inbound_routing` on POST: every field optional (contract: Paths and routes).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RoutingInput {
    /// Agent answering inbound calls.
    pub agent_id: Option<Uuid>,
    /// `fallback.agent_id`.
    pub fallback: Option<Uuid>,
    /// Voicemail text.
    pub voicemail_message: Option<String>,
}

/// A valid `PhoneNumberCreate`.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateInput {
    /// E.164 number.
    pub phone_number: String,
    /// Carrier.
    pub provider: Provider,
    /// Agent the number is wired to.
    pub agent_id: Uuid,
    /// Display name.
    pub friendly_name: Option<String>,
    /// SIP credentials, if given.
    pub provider_config: Option<ProviderConfigInput>,
    /// Inbound routing, if given.
    pub inbound_routing: Option<RoutingInput>,
    /// Telephony integration id, if given.
    pub credential_id: Option<Uuid>,
}

/// A field of a PATCH body: absent, explicit `null`, or a value.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Change<T> {
    /// Not in the body: unchanged.
    #[default]
    Absent,
    /// Explicit `null`.
    Null,
    /// A value.
    Set(T),
}

/// `inbound_routing` on PATCH (`InboundRoutingUpdate`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RoutingPatch {
    /// Routing agent.
    pub agent_id: Change<Uuid>,
    /// `fallback.agent_id`.
    pub fallback: Change<Uuid>,
    /// Voicemail text.
    pub voicemail_message: Change<String>,
}

/// A valid PATCH body. Top-level `agent_id: null` and `inbound_routing: null` mean unchanged
/// (contract: PATCH details), so they are folded into `None` here.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PatchInput {
    /// Display name; `Null` clears it.
    pub friendly_name: Change<String>,
    /// New agent, if given.
    pub agent_id: Option<Uuid>,
    /// Routing changes, if given.
    pub inbound_routing: Option<RoutingPatch>,
}

/// Valid list query parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct ListQuery {
    /// Exact E.164 filter.
    pub phone_number: Option<String>,
    /// Page size, 1–100.
    pub limit: u32,
    /// Items to skip.
    pub offset: u64,
}

/// Builds error items against one location prefix.
struct Errors {
    items: Vec<ErrorItem>,
}

fn loc_of(path: &[&str]) -> Vec<Value> {
    path.iter().map(|p| Value::from(*p)).collect()
}

/// Masks `auth_password` anywhere in an echoed input, and whole values inside
/// `provider_config`, so that a 422 cannot carry the SIP password back.
fn redact(loc: &[&str], input: &Value) -> Value {
    fn scrub(v: &Value) -> Value {
        match v {
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| {
                        let v = if k == "auth_password" {
                            Value::from(REDACTED)
                        } else {
                            scrub(v)
                        };
                        (k.clone(), v)
                    })
                    .collect(),
            ),
            Value::Array(items) => Value::Array(items.iter().map(scrub).collect()),
            other => other.clone(),
        }
    }
    let in_config = loc.get(1) == Some(&"provider_config");
    match input {
        Value::Object(_) | Value::Array(_) => scrub(input),
        _ if in_config || loc.last() == Some(&"auth_password") => Value::from(REDACTED),
        other => other.clone(),
    }
}

impl Errors {
    fn new() -> Self {
        Self { items: Vec::new() }
    }

    fn push(
        &mut self,
        kind: &'static str,
        loc: &[&str],
        msg: String,
        input: &Value,
        ctx: Option<Value>,
    ) {
        self.items.push(ErrorItem {
            kind,
            loc: loc_of(loc),
            msg,
            input: redact(loc, input),
            ctx,
        });
    }

    fn missing(&mut self, loc: &[&str], parent: &Value) {
        self.push("missing", loc, "Field required".to_owned(), parent, None);
    }

    fn string_type(&mut self, loc: &[&str], input: &Value) {
        self.push(
            "string_type",
            loc,
            "Input should be a valid string".to_owned(),
            input,
            None,
        );
    }

    fn object_type(&mut self, loc: &[&str], input: &Value) {
        self.push(
            "model_attributes_type",
            loc,
            "Input should be a valid dictionary or object to extract fields from".to_owned(),
            input,
            None,
        );
    }

    /// A required or optional uuid; `None` for an error (recorded).
    fn uuid(&mut self, loc: &[&str], input: &Value) -> Option<Uuid> {
        match input {
            Value::String(s) => match Uuid::parse_str(s) {
                Ok(id) => Some(id),
                Err(e) => {
                    self.push(
                        "uuid_parsing",
                        loc,
                        format!("Input should be a valid UUID, {e}"),
                        input,
                        Some(json!({ "error": e.to_string() })),
                    );
                    None
                }
            },
            _ => {
                self.push(
                    "uuid_type",
                    loc,
                    "UUID input should be a string, bytes or UUID object".to_owned(),
                    input,
                    None,
                );
                None
            }
        }
    }

    /// An optional string where `null` is allowed; `Err(())` for an error (recorded).
    fn opt_string(&mut self, loc: &[&str], input: Option<&Value>) -> Result<Option<String>, ()> {
        match input {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => {
                self.string_type(loc, other);
                Err(())
            }
        }
    }

    fn finish<T>(self, value: Option<T>) -> Result<T, Vec<ErrorItem>> {
        match value {
            Some(v) if self.items.is_empty() => Ok(v),
            _ => Err(self.items),
        }
    }
}

/// Whether `s` matches `^\+[1-9]\d{1,14}$` (ASCII digits).
pub fn is_e164(s: &str) -> bool {
    let Some(rest) = s.strip_prefix('+') else {
        return false;
    };
    let bytes = rest.as_bytes();
    (2..=15).contains(&bytes.len()) && bytes[0] != b'0' && bytes.iter().all(u8::is_ascii_digit)
}

/// Parses a JSON body. An empty body is FastAPI's `missing` at `["body"]`; bad JSON is
/// `json_invalid` at `["body", <byte offset>]` as FastAPI reports it.
pub fn parse_body(bytes: &[u8]) -> Result<Value, Vec<ErrorItem>> {
    if bytes.is_empty() {
        return Err(vec![ErrorItem {
            kind: "missing",
            loc: loc_of(&["body"]),
            msg: "Field required".to_owned(),
            input: Value::Null,
            ctx: None,
        }]);
    }
    serde_json::from_slice(bytes).map_err(|e| {
        let offset = byte_offset(bytes, e.line(), e.column());
        vec![ErrorItem {
            kind: "json_invalid",
            loc: vec![Value::from("body"), Value::from(offset)],
            msg: "JSON decode error".to_owned(),
            input: json!({}),
            ctx: Some(json!({ "error": json_error_text(&e) })),
        }]
    })
}

/// serde_json's message without its "at line X column Y" suffix (the offset is in `loc`).
fn json_error_text(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.rfind(" at line ") {
        Some(idx) => text[..idx].to_owned(),
        None => text,
    }
}

/// Byte offset of a 1-based line / column position, clamped to the input.
fn byte_offset(bytes: &[u8], line: usize, column: usize) -> usize {
    let mut offset = 0;
    for _ in 1..line {
        match bytes[offset..].iter().position(|b| *b == b'\n') {
            Some(nl) => offset += nl + 1,
            None => return bytes.len(),
        }
    }
    (offset + column.saturating_sub(1)).min(bytes.len())
}

/// The body must be a JSON object; FastAPI answers `model_attributes_type` at `["body"]`.
fn body_object(body: &Value) -> Result<&Map<String, Value>, Vec<ErrorItem>> {
    match body {
        Value::Object(map) => Ok(map),
        other => {
            let mut errs = Errors::new();
            errs.object_type(&["body"], other);
            Err(errs.items)
        }
    }
}

/// Validates a `PhoneNumberCreate` body.
pub fn validate_create(body: &Value) -> Result<CreateInput, Vec<ErrorItem>> {
    let map = body_object(body)?;
    let mut errs = Errors::new();

    let phone_number = match map.get("phone_number") {
        None => {
            errs.missing(&["body", "phone_number"], body);
            None
        }
        Some(Value::String(s)) if is_e164(s) => Some(s.clone()),
        Some(Value::String(s)) => {
            errs.push(
                "string_pattern_mismatch",
                &["body", "phone_number"],
                format!("String should match pattern '{PHONE_PATTERN}'"),
                &Value::from(s.as_str()),
                Some(json!({ "pattern": PHONE_PATTERN })),
            );
            None
        }
        Some(other) => {
            errs.string_type(&["body", "phone_number"], other);
            None
        }
    };

    let provider = match map.get("provider") {
        None => {
            errs.missing(&["body", "provider"], body);
            None
        }
        Some(Value::String(s)) if s == "twilio" => Some(Provider::Twilio),
        Some(Value::String(s)) if s == "telnyx" => Some(Provider::Telnyx),
        Some(other) => {
            errs.push(
                "enum",
                &["body", "provider"],
                "Input should be 'twilio' or 'telnyx'".to_owned(),
                other,
                Some(json!({ "expected": "'twilio' or 'telnyx'" })),
            );
            None
        }
    };

    let agent_id = match map.get("agent_id") {
        None => {
            errs.missing(&["body", "agent_id"], body);
            None
        }
        Some(v) => errs.uuid(&["body", "agent_id"], v),
    };

    let friendly_name = errs
        .opt_string(&["body", "friendly_name"], map.get("friendly_name"))
        .ok()
        .flatten();

    let provider_config = match map.get("provider_config") {
        None | Some(Value::Null) => None,
        Some(Value::Object(cfg)) => Some(provider_config(&mut errs, cfg)),
        Some(other) => {
            errs.object_type(&["body", "provider_config"], other);
            None
        }
    };

    let inbound_routing = match map.get("inbound_routing") {
        None | Some(Value::Null) => None,
        Some(Value::Object(r)) => Some(routing_create(&mut errs, r)),
        Some(other) => {
            errs.object_type(&["body", "inbound_routing"], other);
            None
        }
    };

    let credential_id = match map.get("credential_id") {
        None | Some(Value::Null) => None,
        Some(v) => errs.uuid(&["body", "credential_id"], v),
    };

    let value = match (phone_number, provider, agent_id) {
        (Some(phone_number), Some(provider), Some(agent_id)) => Some(CreateInput {
            phone_number,
            provider,
            agent_id,
            friendly_name,
            provider_config,
            inbound_routing,
            credential_id,
        }),
        _ => None,
    };
    errs.finish(value)
}

fn provider_config(errs: &mut Errors, cfg: &Map<String, Value>) -> ProviderConfigInput {
    let mut out = ProviderConfigInput::default();
    for (key, value) in cfg {
        match key.as_str() {
            "trunk_address" => {
                out.trunk_address = errs
                    .opt_string(&["body", "provider_config", "trunk_address"], Some(value))
                    .ok()
                    .flatten();
            }
            "auth_username" => {
                out.auth_username = errs
                    .opt_string(&["body", "provider_config", "auth_username"], Some(value))
                    .ok()
                    .flatten();
            }
            "auth_password" => {
                out.auth_password_set = errs
                    .opt_string(&["body", "provider_config", "auth_password"], Some(value))
                    .ok()
                    .flatten()
                    .is_some_and(|p| !p.is_empty());
            }
            _ => {
                out.extra.insert(key.clone(), value.clone());
            }
        }
    }
    out
}

/// `fallback` object: `{"agent_id": <uuid>}` with `agent_id` required.
fn fallback(errs: &mut Errors, loc: &[&str], value: &Value) -> Option<Uuid> {
    match value {
        Value::Object(fb) => {
            let mut field = loc.to_vec();
            field.push("agent_id");
            match fb.get("agent_id") {
                None => {
                    errs.missing(&field, value);
                    None
                }
                Some(id) => errs.uuid(&field, id),
            }
        }
        other => {
            errs.object_type(loc, other);
            None
        }
    }
}

fn routing_create(errs: &mut Errors, r: &Map<String, Value>) -> RoutingInput {
    RoutingInput {
        agent_id: match r.get("agent_id") {
            None | Some(Value::Null) => None,
            Some(v) => errs.uuid(&["body", "inbound_routing", "agent_id"], v),
        },
        fallback: match r.get("fallback") {
            None | Some(Value::Null) => None,
            Some(v) => fallback(errs, &["body", "inbound_routing", "fallback"], v),
        },
        voicemail_message: errs
            .opt_string(
                &["body", "inbound_routing", "voicemail_message"],
                r.get("voicemail_message"),
            )
            .ok()
            .flatten(),
    }
}

/// Validates a PATCH body. Fields outside the schema are ignored (contract: PATCH details).
pub fn validate_patch(body: &Value) -> Result<PatchInput, Vec<ErrorItem>> {
    let map = body_object(body)?;
    let mut errs = Errors::new();
    let mut out = PatchInput::default();

    match map.get("friendly_name") {
        None => {}
        Some(Value::Null) => out.friendly_name = Change::Null,
        Some(Value::String(s)) => out.friendly_name = Change::Set(s.clone()),
        Some(other) => errs.string_type(&["body", "friendly_name"], other),
    }

    out.agent_id = match map.get("agent_id") {
        None | Some(Value::Null) => None,
        Some(v) => errs.uuid(&["body", "agent_id"], v),
    };

    out.inbound_routing = match map.get("inbound_routing") {
        None | Some(Value::Null) => None,
        Some(Value::Object(r)) => Some(routing_patch(&mut errs, r)),
        Some(other) => {
            errs.object_type(&["body", "inbound_routing"], other);
            None
        }
    };

    errs.finish(Some(out))
}

fn routing_patch(errs: &mut Errors, r: &Map<String, Value>) -> RoutingPatch {
    let mut out = RoutingPatch::default();
    match r.get("agent_id") {
        None => {}
        Some(Value::Null) => out.agent_id = Change::Null,
        Some(v) => {
            if let Some(id) = errs.uuid(&["body", "inbound_routing", "agent_id"], v) {
                out.agent_id = Change::Set(id);
            }
        }
    }
    match r.get("fallback") {
        None => {}
        Some(Value::Null) => out.fallback = Change::Null,
        Some(v) => {
            if let Some(id) = fallback(errs, &["body", "inbound_routing", "fallback"], v) {
                out.fallback = Change::Set(id);
            }
        }
    }
    match r.get("voicemail_message") {
        None => {}
        Some(Value::Null) => out.voicemail_message = Change::Null,
        Some(Value::String(s)) => out.voicemail_message = Change::Set(s.clone()),
        Some(other) => errs.string_type(&["body", "inbound_routing", "voicemail_message"], other),
    }
    out
}

/// Validates the `phone_id` path parameter (a list, to join body errors in one 422).
pub fn validate_phone_id(raw: &str) -> Result<Uuid, Vec<ErrorItem>> {
    let mut errs = Errors::new();
    match errs.uuid(&["path", "phone_id"], &Value::from(raw)) {
        Some(id) => Ok(id),
        None if errs.items.is_empty() => Err(vec![missing_path_item()]),
        None => Err(errs.items),
    }
}

fn missing_path_item() -> ErrorItem {
    ErrorItem {
        kind: "missing",
        loc: loc_of(&["path", "phone_id"]),
        msg: "Field required".to_owned(),
        input: Value::Null,
        ctx: None,
    }
}

/// An integer query parameter with bounds, as FastAPI's `Query(ge=.., le=..)` checks it.
fn query_int(errs: &mut Errors, name: &str, raw: &str, ge: i64, le: Option<i64>) -> Option<i64> {
    let loc = ["query", name];
    let input = Value::from(raw);
    let trimmed = raw.trim();
    let digits = trimmed.strip_prefix(['-', '+']).unwrap_or(trimmed);
    let value = match trimmed.parse::<i64>() {
        Ok(v) => v,
        // Only digits but too large for i64: it is out of range rather than malformed.
        Err(_) if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) => {
            if trimmed.starts_with('-') {
                i64::MIN
            } else {
                i64::MAX
            }
        }
        Err(_) => {
            errs.push(
                "int_parsing",
                &loc,
                "Input should be a valid integer, unable to parse string as an integer".to_owned(),
                &input,
                None,
            );
            return None;
        }
    };
    if value < ge {
        errs.push(
            "greater_than_equal",
            &loc,
            format!("Input should be greater than or equal to {ge}"),
            &input,
            Some(json!({ "ge": ge })),
        );
        return None;
    }
    if let Some(le) = le
        && value > le
    {
        errs.push(
            "less_than_equal",
            &loc,
            format!("Input should be less than or equal to {le}"),
            &input,
            Some(json!({ "le": le })),
        );
        return None;
    }
    Some(value)
}

/// Validates list query parameters (already percent-decoded; the last repeat wins, as in
/// FastAPI). `phone_number` is not pattern-checked: it is a filter, and a bare `+` that decoded
/// to a space simply matches nothing.
pub fn validate_list_query(pairs: &[(String, String)]) -> Result<ListQuery, Vec<ErrorItem>> {
    let last = |name: &str| {
        pairs
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let mut errs = Errors::new();
    let limit = match last("limit") {
        None => Some(i64::from(DEFAULT_LIMIT)),
        Some(raw) => query_int(&mut errs, "limit", raw, 1, Some(i64::from(MAX_LIMIT))),
    };
    let offset = match last("offset") {
        None => Some(0),
        Some(raw) => query_int(&mut errs, "offset", raw, 0, None),
    };
    let value = match (limit, offset) {
        (Some(limit), Some(offset)) => Some(ListQuery {
            phone_number: last("phone_number").map(str::to_owned),
            limit: u32::try_from(limit).unwrap_or(DEFAULT_LIMIT),
            offset: u64::try_from(offset).unwrap_or(0),
        }),
        _ => None,
    };
    errs.finish(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    const AGENT: &str = "3c90c3cc-0d44-4b50-8888-8dd25736052a";

    fn types(items: &[ErrorItem]) -> Vec<(&'static str, Vec<Value>)> {
        items.iter().map(|i| (i.kind, i.loc.clone())).collect()
    }

    #[test]
    fn e164() {
        assert!(is_e164("+15739693824"));
        assert!(is_e164("+12"));
        assert!(is_e164("+123456789012345"));
        assert!(!is_e164("+1234567890123456"));
        assert!(!is_e164("+1"));
        assert!(!is_e164("+0123"));
        assert!(!is_e164("15739693824"));
        assert!(!is_e164("+1573969382a"));
        assert!(!is_e164(" +15739693824"));
        assert!(!is_e164("+15739693824\n"));
    }

    #[test]
    fn create_minimal_is_valid() {
        let body = json!({"phone_number": "+15739693824", "provider": "twilio", "agent_id": AGENT,
                          "credential_id": AGENT, "unknown": 1});
        let input = validate_create(&body).unwrap();
        assert_eq!(input.provider, Provider::Twilio);
        assert_eq!(input.credential_id, Some(Uuid::parse_str(AGENT).unwrap()));
        assert!(input.provider_config.is_none());
        assert!(input.inbound_routing.is_none());
    }

    #[test]
    fn create_collects_every_missing_field() {
        let errs = validate_create(&json!({})).unwrap_err();
        assert_eq!(
            types(&errs),
            vec![
                ("missing", vec![json!("body"), json!("phone_number")]),
                ("missing", vec![json!("body"), json!("provider")]),
                ("missing", vec![json!("body"), json!("agent_id")]),
            ]
        );
        assert_eq!(errs[0].msg, "Field required");
        assert_eq!(errs[0].input, json!({}));
    }

    #[test]
    fn create_reports_pattern_enum_and_uuid_errors() {
        let body = json!({"phone_number": "555-1234", "provider": "vonage", "agent_id": "nope",
                          "credential_id": "x", "friendly_name": 3,
                          "inbound_routing": {"agent_id": "bad", "fallback": {"agent_id": 5}}});
        let errs = validate_create(&body).unwrap_err();
        assert_eq!(
            types(&errs),
            vec![
                (
                    "string_pattern_mismatch",
                    vec![json!("body"), json!("phone_number")]
                ),
                ("enum", vec![json!("body"), json!("provider")]),
                ("uuid_parsing", vec![json!("body"), json!("agent_id")]),
                ("string_type", vec![json!("body"), json!("friendly_name")]),
                (
                    "uuid_parsing",
                    vec![json!("body"), json!("inbound_routing"), json!("agent_id")]
                ),
                (
                    "uuid_type",
                    vec![
                        json!("body"),
                        json!("inbound_routing"),
                        json!("fallback"),
                        json!("agent_id")
                    ]
                ),
                ("uuid_parsing", vec![json!("body"), json!("credential_id")]),
            ]
        );
        assert_eq!(errs[0].ctx, Some(json!({"pattern": PHONE_PATTERN})));
        assert_eq!(errs[0].input, json!("555-1234"));
        assert_eq!(
            errs[1].ctx,
            Some(json!({"expected": "'twilio' or 'telnyx'"}))
        );
        assert!(errs[2].msg.starts_with("Input should be a valid UUID, "));
        assert!(errs[2].ctx.as_ref().unwrap().get("error").is_some());
    }

    #[test]
    fn create_never_echoes_the_password() {
        let body = json!({"provider": "twilio", "agent_id": AGENT,
                          "provider_config": {"auth_password": "s3cret-pw", "trunk_address": 7}});
        let errs = validate_create(&body).unwrap_err();
        let text = serde_json::to_string(&errs).unwrap();
        assert!(!text.contains("s3cret-pw"), "{text}");
        let body = json!({"provider": "twilio", "agent_id": AGENT,
                          "provider_config": {"auth_password": 12345}});
        let text = serde_json::to_string(&validate_create(&body).unwrap_err()).unwrap();
        assert!(!text.contains("12345"), "{text}");
    }

    #[test]
    fn provider_config_keeps_extras_but_not_the_password() {
        let body = json!({"phone_number": "+15739693824", "provider": "telnyx", "agent_id": AGENT,
                          "provider_config": {"trunk_address": "sip.telnyx.com",
                                              "auth_username": "u", "auth_password": "p",
                                              "messaging_service_sid": "MG1"}});
        let cfg = validate_create(&body).unwrap().provider_config.unwrap();
        assert!(cfg.auth_password_set);
        assert!(cfg.missing_fields().is_empty());
        assert_eq!(cfg.extra.get("messaging_service_sid"), Some(&json!("MG1")));
        assert!(!format!("{cfg:?}").contains("\"p\""));
        let empty = ProviderConfigInput {
            trunk_address: Some(String::new()),
            ..ProviderConfigInput::default()
        };
        assert_eq!(
            empty.missing_fields(),
            vec!["trunk_address", "auth_username", "auth_password"]
        );
    }

    #[test]
    fn non_object_bodies() {
        let errs = validate_create(&json!([1])).unwrap_err();
        assert_eq!(
            types(&errs),
            vec![("model_attributes_type", vec![json!("body")])]
        );
        let errs = validate_patch(&json!("x")).unwrap_err();
        assert_eq!(
            types(&errs),
            vec![("model_attributes_type", vec![json!("body")])]
        );
        let errs = parse_body(b"{\n  \"a\": }").unwrap_err();
        assert_eq!(errs[0].kind, "json_invalid");
        assert_eq!(errs[0].loc, vec![json!("body"), json!(9)]);
        let errs = parse_body(b"").unwrap_err();
        assert_eq!(types(&errs), vec![("missing", vec![json!("body")])]);
    }

    #[test]
    fn patch_distinguishes_absent_null_and_value() {
        let body = json!({"friendly_name": null, "agent_id": null, "inbound_routing":
                          {"fallback": null, "voicemail_message": "hi"}, "phone_number": "x"});
        let p = validate_patch(&body).unwrap();
        assert_eq!(p.friendly_name, Change::Null);
        assert_eq!(p.agent_id, None);
        let r = p.inbound_routing.unwrap();
        assert_eq!(r.agent_id, Change::Absent);
        assert_eq!(r.fallback, Change::Null);
        assert_eq!(r.voicemail_message, Change::Set("hi".to_owned()));
        assert_eq!(
            validate_patch(&json!({"inbound_routing": null})).unwrap(),
            PatchInput::default()
        );
        let errs = validate_patch(&json!({"inbound_routing": {"fallback": {}}})).unwrap_err();
        assert_eq!(errs[0].kind, "missing");
        assert_eq!(
            errs[0].loc,
            vec![
                json!("body"),
                json!("inbound_routing"),
                json!("fallback"),
                json!("agent_id")
            ]
        );
    }

    #[test]
    fn path_id() {
        assert!(validate_phone_id(AGENT).is_ok());
        let errs = validate_phone_id("abc").unwrap_err();
        let err = &errs[0];
        assert_eq!(errs.len(), 1);
        assert_eq!(err.kind, "uuid_parsing");
        assert_eq!(err.loc, vec![json!("path"), json!("phone_id")]);
        assert_eq!(err.input, json!("abc"));
    }

    #[test]
    fn list_query_bounds() {
        let q = |pairs: &[(&str, &str)]| {
            let owned: Vec<(String, String)> = pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            validate_list_query(&owned)
        };
        let ok = q(&[]).unwrap();
        assert_eq!((ok.limit, ok.offset, ok.phone_number), (20, 0, None));
        let ok = q(&[("limit", "100"), ("offset", "7"), ("phone_number", "+1555")]).unwrap();
        assert_eq!((ok.limit, ok.offset), (100, 7));
        assert_eq!(ok.phone_number.as_deref(), Some("+1555"));
        let errs = q(&[("limit", "0"), ("offset", "-1")]).unwrap_err();
        assert_eq!(
            types(&errs),
            vec![
                ("greater_than_equal", vec![json!("query"), json!("limit")]),
                ("greater_than_equal", vec![json!("query"), json!("offset")]),
            ]
        );
        assert_eq!(errs[0].ctx, Some(json!({"ge": 1})));
        let errs = q(&[("limit", "101")]).unwrap_err();
        assert_eq!(errs[0].kind, "less_than_equal");
        assert_eq!(errs[0].ctx, Some(json!({"le": 100})));
        let errs = q(&[("limit", "ten")]).unwrap_err();
        assert_eq!(errs[0].kind, "int_parsing");
        let errs = q(&[("limit", "99999999999999999999999")]).unwrap_err();
        assert_eq!(errs[0].kind, "less_than_equal");
    }
}
