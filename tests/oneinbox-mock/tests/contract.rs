//! Contract tests of the mock OneInbox server (docs/oneinbox-contract.md). Each test starts the real
//! `oneinbox-mock` binary on `127.0.0.1:0` and talks plain HTTP to it, so tests run in parallel
//! without port clashes. Timing assertions are lower bounds only.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

use reqwest::header::HeaderMap;
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

const KEY: &str = "oi_sk_contract_test_key_51f0";
const AGENT: &str = "3c90c3cc-0d44-4b50-8888-8dd25736052a";
const AGENT2: &str = "8b1d4c8e-2f0a-4d55-9d3e-6c1f2a7b9e10";
const AGENT3: &str = "0e6f3a2b-7c4d-4e8f-a1b2-c3d4e5f60718";
const PASSWORD: &str = "pw-3c1e0a9b-unique-sip-secret";
const UNKNOWN_ID: &str = "00000000-0000-4000-8000-000000000000";

/// A running mock; killed on drop.
struct Mock {
    child: Child,
    base: String,
    client: Client,
    stderr: JoinHandle<Vec<u8>>,
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    text: String,
    json: Value,
}

fn body(number: &str) -> Value {
    json!({
        "phone_number": number,
        "provider": "twilio",
        "friendly_name": "Sales line",
        "agent_id": AGENT,
        "provider_config": {
            "trunk_address": "example.pstn.twilio.com",
            "auth_username": "oneinbox",
            "auth_password": PASSWORD,
            "messaging_service_sid": "MG123"
        }
    })
}

fn with_routing(number: &str) -> Value {
    let mut b = body(number);
    b["inbound_routing"] = json!({
        "agent_id": AGENT2,
        "fallback": {"agent_id": AGENT3},
        "voicemail_message": "Sorry, we missed your call."
    });
    b
}

fn detail(r: &Reply) -> &Value {
    &r.json["detail"]
}

impl Mock {
    async fn start(args: &[&str]) -> Mock {
        Self::start_with(args, &[]).await
    }

    async fn start_with(args: &[&str], env: &[(&str, &str)]) -> Mock {
        // Plain HTTP needs no TLS, but reqwest's builder wants a provider to exist.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_oneinbox-mock"));
        for (name, _) in std::env::vars() {
            if name.starts_with("ONEINBOX_MOCK_") {
                cmd.env_remove(name);
            }
        }
        cmd.arg("--listen")
            .arg("127.0.0.1:0")
            .args(args)
            // The most verbose level: the secret checks then cover every log line.
            .env("RUST_LOG", "trace")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("spawn oneinbox-mock");
        let mut stderr = child.stderr.take().unwrap();
        let stderr = tokio::spawn(async move {
            let mut buf = Vec::new();
            let _ = stderr.read_to_end(&mut buf).await;
            buf
        });
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        tokio::time::timeout(Duration::from_secs(60), stdout.read_line(&mut line))
            .await
            .expect("mock did not announce its address")
            .unwrap();
        let base = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        assert!(base.starts_with("http://127.0.0.1:"), "{base}");
        tokio::spawn(async move {
            let mut rest = Vec::new();
            let _ = stdout.read_to_end(&mut rest).await;
        });
        let client = Client::builder()
            .timeout(Duration::from_secs(30))
            // A fresh connection per request: a dropped connection never affects the next one.
            .pool_max_idle_per_host(0)
            .build()
            .unwrap();
        Mock {
            child,
            base,
            client,
            stderr,
        }
    }

    /// Kills the mock and returns everything it logged.
    async fn stop(mut self) -> String {
        self.child.start_kill().unwrap();
        self.child.wait().await.unwrap();
        let bytes = (&mut self.stderr).await.unwrap();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        auth: Option<&str>,
        body: Option<&str>,
    ) -> Reply {
        let mut req = self.client.request(method, self.url(path));
        if let Some(auth) = auth {
            req = req.header("authorization", auth);
        }
        if let Some(body) = body {
            req = req
                .header("content-type", "application/json")
                .body(body.to_owned());
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            text,
            json,
        }
    }

    /// An authenticated `/v1` call.
    async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Reply {
        let auth = format!("Bearer {KEY}");
        let text = body.map(Value::to_string);
        self.send(method, path, Some(&auth), text.as_deref()).await
    }

    /// An authenticated `/v1` call expected to fail at the connection level.
    async fn call_err(&self, method: Method, path: &str, body: Option<&Value>) -> reqwest::Error {
        let mut req = self.client.request(method, self.url(path)).bearer_auth(KEY);
        if let Some(body) = body {
            req = req.json(body);
        }
        match req.send().await {
            Ok(resp) => panic!("expected a connection error, got {}", resp.status()),
            Err(e) => e,
        }
    }

    /// A `/v1` call with `key`.
    async fn call_as(&self, key: &str, method: Method, path: &str, body: Option<&Value>) -> Reply {
        let auth = format!("Bearer {key}");
        let text = body.map(Value::to_string);
        self.send(method, path, Some(&auth), text.as_deref()).await
    }

    /// Registers with `key`; the 201 body.
    async fn register_as(&self, key: &str, b: &Value) -> Value {
        let r = self
            .call_as(key, Method::POST, "/v1/phone-numbers", Some(b))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        r.json
    }

    async fn register(&self, b: &Value) -> Value {
        let r = self.call(Method::POST, "/v1/phone-numbers", Some(b)).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        r.json
    }

    async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> Reply {
        let text = body.map(|b| b.to_string());
        self.send(method, &format!("/_mock{path}"), None, text.as_deref())
            .await
    }

    async fn admin_ok(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let r = self.admin(method, path, body).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.text);
        r.json
    }

    async fn config(&self, cfg: Value) {
        self.admin_ok(Method::PUT, "/config", Some(cfg)).await;
    }

    async fn fault(&self, spec: Value) {
        self.admin_ok(Method::POST, "/faults", Some(spec)).await;
    }

    async fn stored(&self) -> Vec<Value> {
        self.admin_ok(Method::GET, "/phone-numbers", None)
            .await
            .as_array()
            .unwrap()
            .clone()
    }

    /// `GET /_mock{prefix}/config`, e.g. with prefix `/workspaces/team-a`.
    async fn config_at(&self, prefix: &str) -> Value {
        self.admin_ok(Method::GET, &format!("{prefix}/config"), None)
            .await
    }

    /// `GET /_mock{prefix}/calls`.
    async fn calls_at(&self, prefix: &str) -> Value {
        self.admin_ok(Method::GET, &format!("{prefix}/calls"), None)
            .await
    }

    async fn calls_log(&self) -> Value {
        self.admin_ok(Method::GET, "/calls/log", None).await
    }
}

fn assert_connection_error(e: &reqwest::Error) {
    assert!(e.status().is_none(), "{e:?}");
    assert!(
        !e.is_timeout(),
        "timed out instead of a closed connection: {e:?}"
    );
    assert!(e.is_request() || e.is_connect(), "{e:?}");
}

fn assert_no_secrets(text: &str) {
    assert!(!text.contains(PASSWORD), "password leaked: {text}");
    assert!(
        !text.contains("auth_password\""),
        "auth_password key leaked: {text}"
    );
    assert!(
        !text.contains("provider_config"),
        "provider_config leaked: {text}"
    );
}

fn ts(v: &Value) -> jiff::Timestamp {
    v.as_str().unwrap().parse().unwrap()
}

// ---------------------------------------------------------------------------------------------
// 201 and the response shape

#[tokio::test]
async fn register_returns_201_with_every_field_and_no_secrets() {
    let mock = Mock::start(&[]).await;
    let r = mock
        .call(
            Method::POST,
            "/v1/phone-numbers",
            Some(&body("+15739693824")),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(
        r.headers["content-type"].to_str().unwrap(),
        "application/json"
    );
    assert_no_secrets(&r.text);
    let v = &r.json;
    let obj = v.as_object().unwrap();
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "agent_id",
            "created_at",
            "dispatch_rule_id",
            "friendly_name",
            "id",
            "inbound_routing",
            "inbound_trunk_id",
            "outbound_trunk_id",
            "phone_number",
            "provider",
            "status",
            "updated_at"
        ]
    );
    let id = uuid::Uuid::parse_str(v["id"].as_str().unwrap()).unwrap();
    assert_eq!(id.get_version_num(), 4);
    assert_eq!(v["phone_number"], "+15739693824");
    assert_eq!(v["friendly_name"], "Sales line");
    assert_eq!(v["provider"], "twilio");
    assert_eq!(v["agent_id"], AGENT);
    assert_eq!(v["status"], "active");
    assert!(v["outbound_trunk_id"].as_str().unwrap().starts_with("ST_"));
    assert_eq!(v["inbound_trunk_id"], Value::Null);
    assert_eq!(v["dispatch_rule_id"], Value::Null);
    assert_eq!(v["inbound_routing"], Value::Null);
    assert!(v["created_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(ts(&v["created_at"]), ts(&v["updated_at"]));

    // The same record, still without secrets, from GET and list.
    let path = format!("/v1/phone-numbers/{id}");
    let got = mock.call(Method::GET, &path, None).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(&got.json, v);
    assert_no_secrets(&got.text);
    let list = mock.call(Method::GET, "/v1/phone-numbers", None).await;
    assert_eq!(list.json["items"][0], *v);
    assert_no_secrets(&list.text);

    // The internal view has the SIP details but only `auth_password_set`.
    let internal = mock
        .admin(Method::GET, &format!("/phone-numbers/{id}"), None)
        .await;
    assert_eq!(internal.status, StatusCode::OK);
    assert!(!internal.text.contains(PASSWORD));
    assert!(!internal.text.contains("\"auth_password\""));
    let iv = &internal.json;
    assert_eq!(iv["auth_password_set"], true);
    assert_eq!(iv["trunk_address"], "example.pstn.twilio.com");
    assert_eq!(iv["auth_username"], "oneinbox");
    assert_eq!(iv["credential_id"], Value::Null);
    assert_eq!(
        iv["provider_config_extra"],
        json!({"messaging_service_sid": "MG123"})
    );
    assert_eq!(iv["id"], v["id"]);
    assert_eq!(iv["status"], "active");
    let all = mock.admin(Method::GET, "/phone-numbers", None).await;
    assert!(!all.text.contains(PASSWORD));
    assert_eq!(all.json.as_array().unwrap().len(), 1);
    let unknown = mock
        .admin(Method::GET, &format!("/phone-numbers/{UNKNOWN_ID}"), None)
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);

    let log = mock.stop().await;
    assert!(!log.contains(PASSWORD), "password in the log");
    assert!(!log.contains(KEY), "API key in the log");
}

#[tokio::test]
async fn register_with_routing_sets_inbound_ids_and_echoes_routing() {
    let mock = Mock::start(&[]).await;
    let v = mock.register(&with_routing("+15550100001")).await;
    assert!(v["inbound_trunk_id"].as_str().unwrap().starts_with("ST_"));
    assert!(v["outbound_trunk_id"].as_str().unwrap().starts_with("ST_"));
    assert!(v["dispatch_rule_id"].as_str().unwrap().starts_with("SDR_"));
    assert_ne!(v["inbound_trunk_id"], v["outbound_trunk_id"]);
    assert_eq!(
        v["inbound_routing"],
        json!({"agent_id": AGENT2, "fallback": {"agent_id": AGENT3},
               "voicemail_message": "Sorry, we missed your call."})
    );

    // Every routing field is optional; an empty routing still means "receives inbound calls".
    let mut b = body("+15550100002");
    b["inbound_routing"] = json!({});
    let v = mock.register(&b).await;
    assert_eq!(v["inbound_routing"], json!({}));
    assert!(v["inbound_trunk_id"].is_string());
    assert!(v["dispatch_rule_id"].is_string());
}

#[tokio::test]
async fn register_with_credential_id_only() {
    let mock = Mock::start(&[]).await;
    let cred = "5a4e9f1c-8d2b-4c3a-9e7f-1b2c3d4e5f60";
    let b = json!({"phone_number": "+4930123456", "provider": "telnyx", "agent_id": AGENT,
                   "credential_id": cred, "unknown_field": true});
    let v = mock.register(&b).await;
    assert_eq!(v["provider"], "telnyx");
    assert_eq!(v["friendly_name"], Value::Null);
    assert!(v.get("credential_id").is_none());
    assert!(v.get("unknown_field").is_none());
    let iv = mock
        .admin_ok(
            Method::GET,
            &format!("/phone-numbers/{}", v["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(iv["credential_id"], cred);
    assert_eq!(iv["auth_password_set"], false);
    assert_eq!(iv["trunk_address"], Value::Null);
}

// ---------------------------------------------------------------------------------------------
// 401

#[tokio::test]
async fn auth_rejects_missing_and_malformed_keys() {
    let mock = Mock::start(&[]).await;
    let list = "/v1/phone-numbers";
    for auth in [
        None,
        Some("Bearer sk_live_abc"),
        Some("Bearer oi_pk_abc"),
        Some("Bearer oi_sk_"),
        Some("Bearer "),
        Some("Basic oi_sk_abc"),
        Some("oi_sk_abc"),
    ] {
        let r = mock.send(Method::GET, list, auth, None).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{auth:?}");
        assert_eq!(r.json, json!({"detail": "Invalid or missing API key"}));
        assert_eq!(r.headers["www-authenticate"], "Bearer");
    }
    let ok = mock
        .send(Method::GET, list, Some("Bearer oi_sk_anything"), None)
        .await;
    assert_eq!(ok.status, StatusCode::OK);

    // Auth comes before validation, lookup and everything after it, on every endpoint.
    let r = mock.send(Method::POST, list, None, Some("{not json")).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    for method in [Method::GET, Method::PATCH, Method::DELETE] {
        let r = mock
            .send(
                method.clone(),
                "/v1/phone-numbers/not-a-uuid",
                None,
                Some("{}"),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{method}");
    }
}

#[tokio::test]
async fn auth_with_configured_keys_accepts_only_those() {
    let mock = Mock::start(&["--api-key", "oi_sk_alpha", "--api-key", "beta-key"]).await;
    let list = "/v1/phone-numbers";
    let r = mock
        .send(Method::GET, list, Some("Bearer oi_sk_other"), None)
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.headers["www-authenticate"], "Bearer");
    for good in ["Bearer oi_sk_alpha", "Bearer beta-key"] {
        let r = mock.send(Method::GET, list, Some(good), None).await;
        assert_eq!(r.status, StatusCode::OK, "{good}");
    }
    let log = mock.stop().await;
    assert!(!log.contains("oi_sk_alpha") && !log.contains("beta-key"));
}

#[tokio::test]
async fn auth_keys_from_environment() {
    let mock = Mock::start_with(&[], &[("ONEINBOX_MOCK_API_KEYS", "oi_sk_one,oi_sk_two")]).await;
    let list = "/v1/phone-numbers";
    let r = mock
        .send(Method::GET, list, Some("Bearer oi_sk_two"), None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = mock
        .send(Method::GET, list, Some("Bearer oi_sk_three"), None)
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

// ---------------------------------------------------------------------------------------------
// 422

#[tokio::test]
async fn validation_errors_in_the_body() {
    let mock = Mock::start(&[]).await;
    let post = "/v1/phone-numbers";

    let r = mock.call(Method::POST, post, Some(&json!({}))).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let items = detail(&r).as_array().unwrap();
    let locs: Vec<&Value> = items.iter().map(|i| &i["loc"]).collect();
    assert_eq!(
        locs,
        [
            &json!(["body", "phone_number"]),
            &json!(["body", "provider"]),
            &json!(["body", "agent_id"])
        ]
    );
    for item in items {
        assert_eq!(item["type"], "missing");
        assert_eq!(item["msg"], "Field required");
        assert!(item.get("input").is_some());
    }

    let bad = json!({"phone_number": "+0123", "provider": "vonage", "agent_id": "not-a-uuid",
                     "credential_id": "nope", "friendly_name": 42,
                     "inbound_routing": {"fallback": {"agent_id": "x"}, "voicemail_message": 1}});
    let r = mock.call(Method::POST, post, Some(&bad)).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let items = detail(&r).as_array().unwrap();
    let by_loc = |loc: Value| {
        items
            .iter()
            .find(|i| i["loc"] == loc)
            .unwrap_or_else(|| panic!("no error at {loc}: {}", r.text))
    };
    let phone = by_loc(json!(["body", "phone_number"]));
    assert_eq!(phone["type"], "string_pattern_mismatch");
    assert_eq!(phone["input"], "+0123");
    assert_eq!(phone["ctx"], json!({"pattern": r"^\+[1-9]\d{1,14}$"}));
    let provider = by_loc(json!(["body", "provider"]));
    assert_eq!(provider["type"], "enum");
    assert_eq!(provider["input"], "vonage");
    assert_eq!(by_loc(json!(["body", "agent_id"]))["type"], "uuid_parsing");
    assert_eq!(
        by_loc(json!(["body", "credential_id"]))["type"],
        "uuid_parsing"
    );
    assert_eq!(
        by_loc(json!(["body", "friendly_name"]))["type"],
        "string_type"
    );
    assert_eq!(
        by_loc(json!(["body", "inbound_routing", "fallback", "agent_id"]))["type"],
        "uuid_parsing"
    );
    assert_eq!(
        by_loc(json!(["body", "inbound_routing", "voicemail_message"]))["type"],
        "string_type"
    );
    assert_eq!(items.len(), 7, "{}", r.text);

    // Non-JSON, non-object and empty bodies are 422 at `body`.
    let auth = format!("Bearer {KEY}");
    let r = mock
        .send(Method::POST, post, Some(&auth), Some("{\"phone_number\": "))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(detail(&r)[0]["type"], "json_invalid");
    assert_eq!(detail(&r)[0]["loc"][0], "body");
    let r = mock.call(Method::POST, post, Some(&json!([1, 2]))).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(detail(&r)[0]["type"], "model_attributes_type");
    assert_eq!(detail(&r)[0]["loc"], json!(["body"]));
    let r = mock.send(Method::POST, post, Some(&auth), None).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(detail(&r)[0]["loc"], json!(["body"]));

    // A 422 never echoes the SIP password, even when it echoes the whole body.
    let mut b = body("not-e164");
    b.as_object_mut().unwrap().remove("agent_id");
    let r = mock.call(Method::POST, post, Some(&b)).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(!r.text.contains(PASSWORD), "{}", r.text);

    // Nothing was stored by any of it.
    assert!(mock.stored().await.is_empty());
}

#[tokio::test]
async fn validation_errors_in_query_and_path() {
    let mock = Mock::start(&[]).await;
    let cases = [
        ("limit=0", "limit", "greater_than_equal"),
        ("limit=101", "limit", "less_than_equal"),
        ("limit=abc", "limit", "int_parsing"),
        ("offset=-1", "offset", "greater_than_equal"),
    ];
    for (query, field, kind) in cases {
        let r = mock
            .call(Method::GET, &format!("/v1/phone-numbers?{query}"), None)
            .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{query}");
        assert_eq!(detail(&r)[0]["loc"], json!(["query", field]), "{query}");
        assert_eq!(detail(&r)[0]["type"], kind, "{query}");
    }
    let r = mock
        .call(Method::GET, "/v1/phone-numbers?limit=0&offset=-5", None)
        .await;
    assert_eq!(detail(&r).as_array().unwrap().len(), 2);
    for (q, limit) in [("limit=1", 1), ("limit=100", 100)] {
        let r = mock
            .call(Method::GET, &format!("/v1/phone-numbers?{q}"), None)
            .await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.json["limit"], limit);
    }

    for method in [Method::GET, Method::PATCH, Method::DELETE] {
        let b = json!({});
        let body = (method == Method::PATCH).then_some(&b);
        let r = mock
            .call(method.clone(), "/v1/phone-numbers/not-a-uuid", body)
            .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{method}");
        assert_eq!(detail(&r)[0]["loc"], json!(["path", "phone_id"]));
        assert_eq!(detail(&r)[0]["type"], "uuid_parsing");
        assert_eq!(detail(&r)[0]["input"], "not-a-uuid");
    }
    // Path and body errors are reported together.
    let r = mock
        .call(
            Method::PATCH,
            "/v1/phone-numbers/nope",
            Some(&json!({"agent_id": "x"})),
        )
        .await;
    let locs: Vec<&Value> = detail(&r)
        .as_array()
        .unwrap()
        .iter()
        .map(|i| &i["loc"])
        .collect();
    assert_eq!(
        locs,
        [&json!(["path", "phone_id"]), &json!(["body", "agent_id"])]
    );
}

#[tokio::test]
async fn patch_validation_errors() {
    let mock = Mock::start(&[]).await;
    let v = mock.register(&body("+15550200001")).await;
    let path = format!("/v1/phone-numbers/{}", v["id"].as_str().unwrap());
    let cases = [
        (
            json!({"agent_id": "x"}),
            json!(["body", "agent_id"]),
            "uuid_parsing",
        ),
        (
            json!({"friendly_name": 5}),
            json!(["body", "friendly_name"]),
            "string_type",
        ),
        (
            json!({"inbound_routing": "x"}),
            json!(["body", "inbound_routing"]),
            "model_attributes_type",
        ),
        (
            json!({"inbound_routing": {"fallback": {}}}),
            json!(["body", "inbound_routing", "fallback", "agent_id"]),
            "missing",
        ),
        (json!([]), json!(["body"]), "model_attributes_type"),
    ];
    for (b, loc, kind) in cases {
        let r = mock.call(Method::PATCH, &path, Some(&b)).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
        assert_eq!(detail(&r)[0]["loc"], loc, "{b}");
        assert_eq!(detail(&r)[0]["type"], kind, "{b}");
    }
    // Validation precedes the lookup: an unknown id with a bad body is 422, not 404.
    let r = mock
        .call(
            Method::PATCH,
            &format!("/v1/phone-numbers/{UNKNOWN_ID}"),
            Some(&json!({"agent_id": 1})),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let got = mock.call(Method::GET, &path, None).await;
    assert_eq!(got.json, v);
}

// ---------------------------------------------------------------------------------------------
// 400, 409, 404 and the order of those checks

#[tokio::test]
async fn sip_resolution_failures_are_400() {
    let mock = Mock::start(&[]).await;
    let post = "/v1/phone-numbers";
    let mut missing_pw = body("+15550300001");
    missing_pw["provider_config"]
        .as_object_mut()
        .unwrap()
        .remove("auth_password");
    let mut empty_user = body("+15550300001");
    empty_user["provider_config"]["auth_username"] = json!("");
    let mut neither = body("+15550300001");
    neither.as_object_mut().unwrap().remove("provider_config");
    let mut incomplete_with_cred = missing_pw.clone();
    incomplete_with_cred["credential_id"] = json!("5a4e9f1c-8d2b-4c3a-9e7f-1b2c3d4e5f60");
    let mut null_config = neither.clone();
    null_config["provider_config"] = Value::Null;
    for b in [
        missing_pw,
        empty_user,
        neither,
        incomplete_with_cred,
        null_config,
    ] {
        let r = mock.call(Method::POST, post, Some(&b)).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{b}");
        assert_eq!(detail(&r)["code"], "SIP_TRUNK_PROVISION_FAILED");
        assert!(detail(&r)["message"].is_string());
        assert!(!r.text.contains(PASSWORD));
    }
    assert!(mock.stored().await.is_empty());
}

#[tokio::test]
async fn duplicate_is_409_with_the_existing_id() {
    let mock = Mock::start(&[]).await;
    let first = mock.register(&body("+15550400001")).await;
    let r = mock
        .call(
            Method::POST,
            "/v1/phone-numbers",
            Some(&with_routing("+15550400001")),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(detail(&r)["code"], "PHONE_NUMBER_ALREADY_REGISTERED");
    assert_eq!(detail(&r)["phone_id"], first["id"]);
    assert!(detail(&r)["message"].is_string());
    assert_no_secrets(&r.text);

    // Duplicate comes before SIP resolution: no credentials at all is still a 409.
    let r = mock
        .call(
            Method::POST,
            "/v1/phone-numbers",
            Some(
                &json!({"phone_number": "+15550400001", "provider": "twilio",
                         "agent_id": AGENT}),
            ),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(mock.stored().await.len(), 1);
}

#[tokio::test]
async fn unknown_phone_ids_are_404() {
    let mock = Mock::start(&[]).await;
    let path = format!("/v1/phone-numbers/{UNKNOWN_ID}");
    for method in [Method::GET, Method::PATCH, Method::DELETE] {
        let b = json!({"friendly_name": "x"});
        let body = (method == Method::PATCH).then_some(&b);
        let r = mock.call(method.clone(), &path, body).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{method}");
        assert_eq!(r.json, json!({"detail": "Phone number not found"}));
    }
}

#[tokio::test]
async fn references_are_404_once_seeded() {
    let mock = Mock::start(&[]).await;
    let post = "/v1/phone-numbers";
    // Unseeded: any well-formed uuid is an agent.
    let existing = mock.register(&body("+15550500001")).await;

    let seeded = mock
        .admin_ok(
            Method::PUT,
            "/agents",
            Some(json!({"ids": [AGENT, AGENT2]})),
        )
        .await;
    assert_eq!(seeded["ids"].as_array().unwrap().len(), 2);

    let mut b = body("+15550500002");
    b["agent_id"] = json!(AGENT3);
    let r = mock.call(Method::POST, post, Some(&b)).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.json, json!({"detail": "agent_id not found"}));

    let mut b = body("+15550500002");
    b["inbound_routing"] = json!({"agent_id": AGENT3});
    let r = mock.call(Method::POST, post, Some(&b)).await;
    assert_eq!(
        r.json,
        json!({"detail": "inbound_routing.agent_id not found"})
    );

    let mut b = body("+15550500002");
    b["inbound_routing"] = json!({"agent_id": AGENT2, "fallback": {"agent_id": AGENT3}});
    let r = mock.call(Method::POST, post, Some(&b)).await;
    assert_eq!(
        r.json,
        json!({"detail": "inbound_routing.fallback.agent_id not found"})
    );

    // References come before the duplicate check.
    let mut dup = body("+15550500001");
    dup["agent_id"] = json!(AGENT3);
    let r = mock.call(Method::POST, post, Some(&dup)).await;
    assert_eq!(r.json, json!({"detail": "agent_id not found"}));

    // Validation comes before references.
    let mut bad = body("5550500002");
    bad["agent_id"] = json!(AGENT3);
    let r = mock.call(Method::POST, post, Some(&bad)).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);

    // PATCH checks references after the lookup and changes nothing on a 404.
    let path = format!("/v1/phone-numbers/{}", existing["id"].as_str().unwrap());
    let r = mock
        .call(Method::PATCH, &path, Some(&json!({"agent_id": AGENT3})))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.json, json!({"detail": "agent_id not found"}));
    let r = mock
        .call(
            Method::PATCH,
            &path,
            Some(&json!({"inbound_routing": {"fallback": {"agent_id": AGENT3}}})),
        )
        .await;
    assert_eq!(
        r.json,
        json!({"detail": "inbound_routing.fallback.agent_id not found"})
    );
    assert_eq!(mock.call(Method::GET, &path, None).await.json, existing);
    let r = mock
        .call(Method::PATCH, &path, Some(&json!({"agent_id": AGENT2})))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json["agent_id"], AGENT2);

    // Credentials.
    let cred = "5a4e9f1c-8d2b-4c3a-9e7f-1b2c3d4e5f60";
    let other = "6b5f0a2d-9e3c-4d4b-8f80-2c3d4e5f6071";
    mock.admin_ok(Method::PUT, "/credentials", Some(json!({"ids": [cred]})))
        .await;
    let cred_body = |c: &str| {
        json!({"phone_number": "+15550500003", "provider": "twilio", "agent_id": AGENT,
               "credential_id": c})
    };
    let r = mock.call(Method::POST, post, Some(&cred_body(other))).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.json, json!({"detail": "credential_id not found"}));
    mock.register(&cred_body(cred)).await;

    // Un-seeding accepts any uuid again.
    mock.admin_ok(Method::PUT, "/agents", Some(json!({"ids": null})))
        .await;
    let mut b = body("+15550500004");
    b["agent_id"] = json!(AGENT3);
    mock.register(&b).await;
    let bad_seed = mock
        .admin(Method::PUT, "/agents", Some(json!({"ids": ["nope"]})))
        .await;
    assert_eq!(bad_seed.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn unserved_routes_are_404_and_wrong_methods_405() {
    let mock = Mock::start(&[]).await;
    let id_path = format!("/v1/phone-numbers/{UNKNOWN_ID}");
    let cases: [(Method, &str); 7] = [
        (Method::POST, "/v1/phone-numbers/purchase"),
        (
            Method::GET,
            "/v1/phone-numbers/search?country=US&area_code=415",
        ),
        (Method::GET, "/v1/phone-numbers/search"),
        (Method::GET, "/v1/agents"),
        (Method::GET, "/v1/phone-numbers/a/b"),
        (Method::GET, "/"),
        (Method::GET, "/_mock/nothing"),
    ];
    for (method, path) in cases {
        // With or without a key: the router answers before auth.
        for auth in [None, Some(format!("Bearer {KEY}"))] {
            let r = mock.send(method.clone(), path, auth.as_deref(), None).await;
            assert_eq!(r.status, StatusCode::NOT_FOUND, "{method} {path}");
            assert_eq!(r.json, json!({"detail": "Not Found"}), "{method} {path}");
        }
    }
    let cases = [
        (Method::PUT, "/v1/phone-numbers", "GET, POST"),
        (Method::DELETE, "/v1/phone-numbers", "GET, POST"),
        (Method::POST, id_path.as_str(), "GET, PATCH, DELETE"),
        (Method::PUT, id_path.as_str(), "GET, PATCH, DELETE"),
    ];
    for (method, path, allow) in cases {
        let r = mock.send(method.clone(), path, None, None).await;
        assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        assert_eq!(r.json, json!({"detail": "Method Not Allowed"}));
        assert_eq!(r.headers["allow"], allow);
    }
}

// ---------------------------------------------------------------------------------------------
// List

#[tokio::test]
async fn list_filter_needs_percent_encoded_plus() {
    let mock = Mock::start(&[]).await;
    let a = mock.register(&body("+15550600001")).await;
    mock.register(&body("+15550600002")).await;

    let r = mock
        .call(
            Method::GET,
            "/v1/phone-numbers?phone_number=%2B15550600001",
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json["total"], 1);
    assert_eq!(r.json["items"], json!([a]));
    assert_eq!(r.json["limit"], 20);
    assert_eq!(r.json["offset"], 0);

    // A bare `+` decodes to a space and matches nothing.
    let r = mock
        .call(
            Method::GET,
            "/v1/phone-numbers?phone_number=+15550600001",
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json["total"], 0);
    assert_eq!(r.json["items"], json!([]));

    let r = mock
        .call(
            Method::GET,
            "/v1/phone-numbers?phone_number=%2B19999999999",
            None,
        )
        .await;
    assert_eq!(r.json["total"], 0);
}

#[tokio::test]
async fn list_pages_in_created_at_then_id_order() {
    let mock = Mock::start(&[]).await;
    let mut created = Vec::new();
    for n in 0..5 {
        created.push(mock.register(&body(&format!("+1555070000{n}"))).await);
    }
    let mut seen = Vec::new();
    let mut offset = 0;
    loop {
        let r = mock
            .call(
                Method::GET,
                &format!("/v1/phone-numbers?limit=2&offset={offset}"),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.json["total"], 5);
        assert_eq!(r.json["limit"], 2);
        assert_eq!(r.json["offset"], offset);
        let items = r.json["items"].as_array().unwrap().clone();
        assert!(items.len() <= 2);
        offset += items.len();
        seen.extend(items);
        if offset >= 5 {
            break;
        }
    }
    assert_eq!(seen, created);
    let keys: Vec<(jiff::Timestamp, String)> = seen
        .iter()
        .map(|v| (ts(&v["created_at"]), v["id"].as_str().unwrap().to_owned()))
        .collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);

    let r = mock
        .call(Method::GET, "/v1/phone-numbers?offset=10", None)
        .await;
    assert_eq!(r.json["items"], json!([]));
    assert_eq!(r.json["total"], 5);
    let r = mock.call(Method::GET, "/v1/phone-numbers", None).await;
    assert_eq!(r.json["items"].as_array().unwrap().len(), 5);
}

// ---------------------------------------------------------------------------------------------
// PATCH

#[tokio::test]
async fn patch_merges_routing_and_ignores_fields_outside_the_schema() {
    let mock = Mock::start(&[]).await;
    let v = mock.register(&with_routing("+15550800001")).await;
    let path = format!("/v1/phone-numbers/{}", v["id"].as_str().unwrap());

    // `fallback: null` removes it; other routing keys are kept.
    let r = mock
        .call(
            Method::PATCH,
            &path,
            Some(&json!({"inbound_routing": {"fallback": null}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.json["inbound_routing"],
        json!({"agent_id": AGENT2, "voicemail_message": "Sorry, we missed your call."})
    );
    assert!(ts(&r.json["updated_at"]) > ts(&v["updated_at"]));
    assert_eq!(r.json["created_at"], v["created_at"]);
    for id in ["inbound_trunk_id", "outbound_trunk_id", "dispatch_rule_id"] {
        assert_eq!(r.json[id], v[id], "{id}");
    }

    // Supplied keys merge; null removes agent_id and voicemail_message too.
    let r = mock
        .call(
            Method::PATCH,
            &path,
            Some(
                &json!({"inbound_routing": {"voicemail_message": "Call back later.",
                                             "fallback": {"agent_id": AGENT}}}),
            ),
        )
        .await;
    assert_eq!(
        r.json["inbound_routing"],
        json!({"agent_id": AGENT2, "fallback": {"agent_id": AGENT},
               "voicemail_message": "Call back later."})
    );
    let r = mock
        .call(
            Method::PATCH,
            &path,
            Some(&json!({"inbound_routing": {"agent_id": null, "voicemail_message": null}})),
        )
        .await;
    assert_eq!(
        r.json["inbound_routing"],
        json!({"fallback": {"agent_id": AGENT}})
    );

    // friendly_name null clears; agent_id moves the number; status is untouched.
    let r = mock
        .call(
            Method::PATCH,
            &path,
            Some(&json!({"friendly_name": null, "agent_id": AGENT3})),
        )
        .await;
    assert_eq!(r.json["friendly_name"], Value::Null);
    assert_eq!(r.json["agent_id"], AGENT3);
    assert_eq!(r.json["status"], "active");
    let before = r.json.clone();

    // Top-level nulls and fields outside the schema change nothing, updated_at included.
    let ignored = json!({
        "agent_id": null,
        "inbound_routing": null,
        "phone_number": "+19999999999",
        "provider": "telnyx",
        "provider_config": {"trunk_address": "x", "auth_username": "y", "auth_password": "z"},
        "credential_id": UNKNOWN_ID,
        "status": "failed",
        "id": UNKNOWN_ID,
    });
    let r = mock.call(Method::PATCH, &path, Some(&ignored)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json, before);
    let r = mock.call(Method::PATCH, &path, Some(&json!({}))).await;
    assert_eq!(r.json, before);
    // Setting a value to what it already is is no change either.
    let r = mock
        .call(Method::PATCH, &path, Some(&json!({"agent_id": AGENT3})))
        .await;
    assert_eq!(r.json["updated_at"], before["updated_at"]);
    assert_eq!(mock.call(Method::GET, &path, None).await.json, before);
    let iv = mock
        .admin_ok(
            Method::GET,
            &format!("/phone-numbers/{}", v["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(iv["trunk_address"], "example.pstn.twilio.com");
    assert_eq!(iv["credential_id"], Value::Null);
}

#[tokio::test]
async fn patch_giving_routing_creates_inbound_ids() {
    let mock = Mock::start(&[]).await;
    let v = mock.register(&body("+15550900001")).await;
    assert_eq!(v["inbound_trunk_id"], Value::Null);
    let path = format!("/v1/phone-numbers/{}", v["id"].as_str().unwrap());
    let r = mock
        .call(
            Method::PATCH,
            &path,
            Some(&json!({"inbound_routing": {"voicemail_message": "Hi"}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.json["inbound_trunk_id"]
            .as_str()
            .unwrap()
            .starts_with("ST_")
    );
    assert!(
        r.json["dispatch_rule_id"]
            .as_str()
            .unwrap()
            .starts_with("SDR_")
    );
    assert_eq!(r.json["outbound_trunk_id"], v["outbound_trunk_id"]);
    assert_eq!(
        r.json["inbound_routing"],
        json!({"voicemail_message": "Hi"})
    );
    // The ids then stay put.
    let again = mock
        .call(
            Method::PATCH,
            &path,
            Some(&json!({"inbound_routing": {"voicemail_message": "Hello"}})),
        )
        .await;
    assert_eq!(again.json["inbound_trunk_id"], r.json["inbound_trunk_id"]);
    assert_eq!(again.json["dispatch_rule_id"], r.json["dispatch_rule_id"]);
}

// ---------------------------------------------------------------------------------------------
// DELETE

#[tokio::test]
async fn delete_is_204_then_gone_and_the_number_can_return() {
    let mock = Mock::start(&[]).await;
    let v = mock.register(&with_routing("+15551000001")).await;
    let path = format!("/v1/phone-numbers/{}", v["id"].as_str().unwrap());
    let r = mock.call(Method::DELETE, &path, None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(r.text.is_empty());
    for method in [Method::GET, Method::DELETE, Method::PATCH] {
        let b = json!({});
        let body = (method == Method::PATCH).then_some(&b);
        let r = mock.call(method.clone(), &path, body).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{method}");
        assert_eq!(r.json, json!({"detail": "Phone number not found"}));
    }
    assert!(mock.stored().await.is_empty());
    let again = mock.register(&with_routing("+15551000001")).await;
    assert_ne!(again["id"], v["id"]);
}

// ---------------------------------------------------------------------------------------------
// Status

#[tokio::test]
async fn provisioning_delay_then_outcome() {
    let mock = Mock::start(&["--provisioning-ms", "300"]).await;
    let start = Instant::now();
    let v = mock.register(&body("+15551100001")).await;
    assert_eq!(v["status"], "provisioning");
    let path = format!("/v1/phone-numbers/{}", v["id"].as_str().unwrap());
    let status = loop {
        let r = mock.call(Method::GET, &path, None).await;
        let status = r.json["status"].as_str().unwrap().to_owned();
        if status != "provisioning" {
            break status;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "never settled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status, "active");
    assert!(start.elapsed() >= Duration::from_millis(300));

    mock.config(json!({"provisioning_ms": 200, "provisioning_outcome": "failed"}))
        .await;
    let v = mock.register(&body("+15551100002")).await;
    assert_eq!(v["status"], "provisioning");
    let path = format!("/v1/phone-numbers/{}", v["id"].as_str().unwrap());
    let start = Instant::now();
    loop {
        let r = mock.call(Method::GET, &path, None).await;
        if r.json["status"] != "provisioning" {
            assert_eq!(r.json["status"], "failed");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "never settled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // PATCH never changes status.
    let r = mock
        .call(Method::PATCH, &path, Some(&json!({"friendly_name": "x"})))
        .await;
    assert_eq!(r.json["status"], "failed");
}

#[tokio::test]
async fn provisioning_outcome_from_the_command_line() {
    let mock = Mock::start(&[
        "--provisioning-ms",
        "100",
        "--provisioning-outcome",
        "failed",
    ])
    .await;
    let v = mock.register(&body("+15551100003")).await;
    assert_eq!(v["status"], "provisioning");
    let path = format!("/v1/phone-numbers/{}", v["id"].as_str().unwrap());
    let start = Instant::now();
    while mock.call(Method::GET, &path, None).await.json["status"] == "provisioning" {
        assert!(start.elapsed() < Duration::from_secs(30), "never settled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        mock.call(Method::GET, &path, None).await.json["status"],
        "failed"
    );
}

#[tokio::test]
async fn forced_status_is_visible_and_kept_by_patch() {
    let mock = Mock::start(&[]).await;
    let v = mock.register(&body("+15551200001")).await;
    let id = v["id"].as_str().unwrap();
    let forced = mock
        .admin_ok(
            Method::PUT,
            &format!("/phone-numbers/{id}/status"),
            Some(json!({"status": "inactive"})),
        )
        .await;
    assert_eq!(forced["status"], "inactive");
    let path = format!("/v1/phone-numbers/{id}");
    assert_eq!(
        mock.call(Method::GET, &path, None).await.json["status"],
        "inactive"
    );
    let r = mock
        .call(Method::PATCH, &path, Some(&json!({"friendly_name": "y"})))
        .await;
    assert_eq!(r.json["status"], "inactive");
    mock.admin_ok(
        Method::PUT,
        &format!("/phone-numbers/{id}/status"),
        Some(json!({"status": "something-new"})),
    )
    .await;
    assert_eq!(
        mock.call(Method::GET, &path, None).await.json["status"],
        "something-new"
    );
    let r = mock
        .admin(
            Method::PUT,
            &format!("/phone-numbers/{UNKNOWN_ID}/status"),
            Some(json!({"status": "active"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

// ---------------------------------------------------------------------------------------------
// Fault configuration

#[tokio::test]
async fn config_get_put_replaces_the_whole_config() {
    let mock = Mock::start(&["--latency-ms", "1", "--error-status", "500"]).await;
    let cfg = mock.admin_ok(Method::GET, "/config", None).await;
    assert_eq!(cfg["latency_ms"], 1);
    assert_eq!(cfg["error_status"], 500);
    let cfg = mock
        .admin_ok(
            Method::PUT,
            "/config",
            Some(json!({"latency_jitter_ms": 2})),
        )
        .await;
    assert_eq!(cfg["latency_ms"], 0);
    assert_eq!(cfg["latency_jitter_ms"], 2);
    assert_eq!(cfg["error_status"], 503);
    assert_eq!(cfg["error_rate"], 0.0);
    assert_eq!(cfg["retry_after_format"], "seconds");
    assert_eq!(cfg["provisioning_outcome"], "active");
    assert_eq!(cfg["endpoints"], json!({}));
    assert_eq!(mock.admin_ok(Method::GET, "/config", None).await, cfg);
    for bad in [
        json!({"error_rate": 1.5}),
        json!({"error_status": 200}),
        json!({"latncy_ms": 1}),
        json!({"endpoints": {"POST /v1/phone-number": {"error_rate": 1.0}}}),
        json!({"retry_after_format": "minutes"}),
        json!({"rate_limit_burst": 0}),
    ] {
        let r = mock.admin(Method::PUT, "/config", Some(bad.clone())).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}");
        assert!(r.json["detail"].is_string());
    }
    assert_eq!(mock.admin_ok(Method::GET, "/config", None).await, cfg);
}

#[tokio::test]
async fn latency_delays_every_request() {
    let mock = Mock::start(&[]).await;
    mock.config(json!({"latency_ms": 300})).await;
    let start = Instant::now();
    let r = mock.call(Method::GET, "/v1/phone-numbers", None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(start.elapsed() >= Duration::from_millis(300));

    // Per-endpoint override.
    mock.config(json!({"endpoints": {"POST /v1/phone-numbers": {"latency_ms": 250}}}))
        .await;
    let start = Instant::now();
    mock.register(&body("+15551300001")).await;
    assert!(start.elapsed() >= Duration::from_millis(250));
}

#[tokio::test]
async fn latency_from_the_command_line() {
    let mock = Mock::start(&["--latency-ms", "200", "--latency-jitter-ms", "50"]).await;
    let start = Instant::now();
    let r = mock.call(Method::GET, "/v1/phone-numbers", None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(start.elapsed() >= Duration::from_millis(200));
}

#[tokio::test]
async fn random_errors_change_nothing() {
    let mock = Mock::start(&[]).await;
    let v = mock.register(&body("+15551400001")).await;
    let path = format!("/v1/phone-numbers/{}", v["id"].as_str().unwrap());

    mock.config(json!({"error_rate": 1.0, "error_status": 500}))
        .await;
    let r = mock
        .call(
            Method::POST,
            "/v1/phone-numbers",
            Some(&body("+15551400002")),
        )
        .await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(r.json, json!({"detail": "Internal Server Error"}));
    let r = mock
        .call(
            Method::PATCH,
            &path,
            Some(&json!({"friendly_name": "changed"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    let r = mock.call(Method::DELETE, &path, None).await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    // The random error comes before auth.
    let r = mock
        .send(Method::GET, "/v1/phone-numbers", None, None)
        .await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);

    // Default status is 503; a per-endpoint override wins over the global setting.
    mock.config(json!({"endpoints": {"POST /v1/phone-numbers":
        {"error_rate": 1.0, "error_status": 502}}}))
        .await;
    let r = mock
        .call(
            Method::POST,
            "/v1/phone-numbers",
            Some(&body("+15551400002")),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert_eq!(r.json, json!({"detail": "Bad Gateway"}));
    assert_eq!(
        mock.call(Method::GET, "/v1/phone-numbers", None)
            .await
            .status,
        StatusCode::OK
    );
    mock.config(json!({"endpoints": {"GET /v1/phone-numbers/{phone_id}": {"error_rate": 1.0}}}))
        .await;
    assert_eq!(
        mock.call(Method::GET, &path, None).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );

    mock.config(json!({})).await;
    let stored = mock.stored().await;
    assert_eq!(stored.len(), 1);
    assert_eq!(mock.call(Method::GET, &path, None).await.json, v);
    let log = mock.calls_log().await;
    assert_eq!(log["accepted"], json!({"POST /v1/phone-numbers": 1}));
}

#[tokio::test]
async fn error_rate_from_the_command_line() {
    let mock = Mock::start(&["--error-rate", "1.0", "--error-status", "504"]).await;
    let r = mock
        .call(
            Method::POST,
            "/v1/phone-numbers",
            Some(&body("+15551400003")),
        )
        .await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT);
    assert!(mock.stored().await.is_empty());
}

#[tokio::test]
async fn rate_limit_answers_429_with_retry_after_seconds() {
    let mock = Mock::start(&[]).await;
    let v = mock.register(&body("+15551500001")).await;
    // One token per 100 s: the third request is refused however slow the machine is.
    mock.config(json!({"rate_limit_rps": 0.01, "rate_limit_burst": 2}))
        .await;
    for _ in 0..2 {
        assert_eq!(
            mock.call(Method::GET, "/v1/phone-numbers", None)
                .await
                .status,
            StatusCode::OK
        );
    }
    let r = mock
        .call(
            Method::POST,
            "/v1/phone-numbers",
            Some(&body("+15551500002")),
        )
        .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.json, json!({"detail": "Rate limit exceeded"}));
    let secs: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(secs >= 1);
    let path = format!("/v1/phone-numbers/{}", v["id"].as_str().unwrap());
    let r = mock
        .call(
            Method::PATCH,
            &path,
            Some(&json!({"friendly_name": "nope"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    let r = mock.call(Method::DELETE, &path, None).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    // The rate limit comes before auth.
    let r = mock
        .send(Method::GET, "/v1/phone-numbers", None, None)
        .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);

    // Nothing changed; /_mock/ is not limited.
    let stored = mock.stored().await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["friendly_name"], "Sales line");
}

#[tokio::test]
async fn rate_limit_retry_after_as_http_date() {
    let mock = Mock::start(&[]).await;
    mock.config(json!({"rate_limit_rps": 0.01, "rate_limit_burst": 1,
                       "retry_after_format": "http-date"}))
        .await;
    let before = SystemTime::now();
    assert_eq!(
        mock.call(Method::GET, "/v1/phone-numbers", None)
            .await
            .status,
        StatusCode::OK
    );
    let r = mock.call(Method::GET, "/v1/phone-numbers", None).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    let date = httpdate::parse_http_date(r.headers["retry-after"].to_str().unwrap()).unwrap();
    assert!(date >= before + Duration::from_secs(1));
}

#[tokio::test]
async fn rate_limit_from_the_command_line() {
    let mock = Mock::start(&[
        "--rate-limit-rps",
        "0.01",
        "--rate-limit-burst",
        "1",
        "--retry-after-format",
        "http-date",
    ])
    .await;
    assert_eq!(
        mock.call(Method::GET, "/v1/phone-numbers", None)
            .await
            .status,
        StatusCode::OK
    );
    let r = mock.call(Method::GET, "/v1/phone-numbers", None).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(httpdate::parse_http_date(r.headers["retry-after"].to_str().unwrap()).is_ok());
    // Reset returns to the start-up configuration, with a full bucket.
    mock.admin_ok(Method::POST, "/reset", None).await;
    assert_eq!(
        mock.call(Method::GET, "/v1/phone-numbers", None)
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        mock.call(Method::GET, "/v1/phone-numbers", None)
            .await
            .status,
        StatusCode::TOO_MANY_REQUESTS
    );
}

// ---------------------------------------------------------------------------------------------
// One-shot faults

#[tokio::test]
async fn status_fault_answers_then_expires() {
    let mock = Mock::start(&[]).await;
    mock.fault(
        json!({"endpoint": "POST /v1/phone-numbers", "kind": "status",
                      "status": 503, "retry_after": "7", "count": 2}),
    )
    .await;
    let pending = mock.admin_ok(Method::GET, "/faults", None).await;
    assert_eq!(pending["pending"][0]["count"], 2);
    for _ in 0..2 {
        let r = mock
            .call(
                Method::POST,
                "/v1/phone-numbers",
                Some(&body("+15551600001")),
            )
            .await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers["retry-after"], "7");
        assert!(r.json["detail"].is_string());
    }
    assert!(mock.stored().await.is_empty());
    mock.register(&body("+15551600001")).await;

    // HTTP-date sent verbatim, and a 429 from a fault changes nothing either.
    let date = "Wed, 21 Oct 2015 07:28:00 GMT";
    mock.fault(
        json!([{"endpoint": "DELETE /v1/phone-numbers/{phone_id}", "kind": "status",
                       "status": 429, "retry_after": date},
                      {"endpoint": "GET /v1/phone-numbers", "kind": "status", "status": 500,
                       "detail": "custom"}]),
    )
    .await;
    let id = mock.stored().await[0]["id"].as_str().unwrap().to_owned();
    let r = mock
        .call(Method::DELETE, &format!("/v1/phone-numbers/{id}"), None)
        .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.headers["retry-after"], date);
    assert_eq!(mock.stored().await.len(), 1);
    // One-shot faults come before auth.
    let r = mock
        .send(Method::GET, "/v1/phone-numbers", None, None)
        .await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(r.json, json!({"detail": "custom"}));
    assert!(r.headers.get("retry-after").is_none());
    assert_eq!(
        mock.admin_ok(Method::GET, "/faults", None).await["pending"],
        json!([])
    );

    let log = mock.calls_log().await;
    assert_eq!(log["accepted"], json!({"POST /v1/phone-numbers": 1}));

    let bad = mock
        .admin(
            Method::POST,
            "/faults",
            Some(json!({"endpoint": "POST /v1/phone-numbers/purchase", "kind": "drop"})),
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let bad = mock
        .admin(
            Method::POST,
            "/faults",
            Some(json!({"endpoint": "POST /v1/phone-numbers", "kind": "status"})),
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn commit_then_drop_stores_but_never_answers() {
    let mock = Mock::start(&[]).await;
    mock.fault(json!({"endpoint": "POST /v1/phone-numbers", "kind": "commit_then_drop"}))
        .await;
    let err = mock
        .call_err(
            Method::POST,
            "/v1/phone-numbers",
            Some(&body("+15551700001")),
        )
        .await;
    assert_connection_error(&err);
    let stored = mock.stored().await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["phone_number"], "+15551700001");
    let id = stored[0]["id"].clone();

    let log = mock.calls_log().await;
    let last = log["entries"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["endpoint"], "POST /v1/phone-numbers");
    assert_eq!(last["status"], 201);
    assert_eq!(last["dropped"], true);

    // The operator's recovery path: find it by filter; a blind re-POST is a 409 naming it.
    let r = mock
        .call(
            Method::GET,
            "/v1/phone-numbers?phone_number=%2B15551700001",
            None,
        )
        .await;
    assert_eq!(r.json["items"][0]["id"], id);
    let r = mock
        .call(
            Method::POST,
            "/v1/phone-numbers",
            Some(&body("+15551700001")),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.json["detail"]["phone_id"], id);
    let log = mock.calls_log().await;
    assert_eq!(log["accepted"], json!({"POST /v1/phone-numbers": 1}));

    // DELETE too: performed, then no answer.
    mock.fault(json!({"endpoint": "DELETE /v1/phone-numbers/{phone_id}",
                      "kind": "commit_then_drop"}))
        .await;
    let path = format!("/v1/phone-numbers/{}", id.as_str().unwrap());
    let err = mock.call_err(Method::DELETE, &path, None).await;
    assert_connection_error(&err);
    assert_eq!(
        mock.call(Method::GET, &path, None).await.status,
        StatusCode::NOT_FOUND
    );
    let log = mock.calls_log().await;
    assert_eq!(
        log["accepted"],
        json!({"POST /v1/phone-numbers": 1, "DELETE /v1/phone-numbers/{phone_id}": 1})
    );
}

#[tokio::test]
async fn the_call_log_names_the_position_of_the_callers_key_never_the_key() {
    let mock = Mock::start(&["--api-key", "oi_sk_first", "--api-key", "oi_sk_second"]).await;
    for key in ["oi_sk_second", "oi_sk_first", "oi_sk_unknown"] {
        let _ = reqwest::Client::new()
            .get(mock.url("/v1/phone-numbers/00000000-0000-4000-8000-000000000000"))
            .bearer_auth(key)
            .send()
            .await
            .expect("send");
    }
    let log = mock.calls_log().await;
    let callers: Vec<&Value> = log["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| &e["caller"])
        .collect();
    assert_eq!(callers, [&json!(1), &json!(0), &Value::Null]);
    assert!(!log.to_string().contains("oi_sk_"), "{log}");
}

#[tokio::test]
async fn drop_closes_without_acting() {
    let mock = Mock::start(&[]).await;
    mock.fault(json!({"endpoint": "POST /v1/phone-numbers", "kind": "drop"}))
        .await;
    let err = mock
        .call_err(
            Method::POST,
            "/v1/phone-numbers",
            Some(&body("+15551800001")),
        )
        .await;
    assert_connection_error(&err);
    assert!(mock.stored().await.is_empty());
    let log = mock.calls_log().await;
    let entry = &log["entries"][0];
    assert_eq!(log["entries"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        (
            &entry["seq"],
            &entry["endpoint"],
            &entry["status"],
            &entry["dropped"],
            &entry["caller"]
        ),
        (
            &json!(1),
            &json!("POST /v1/phone-numbers"),
            &Value::Null,
            &json!(true),
            &Value::Null
        )
    );
    assert!(entry["at_ms"].as_u64().is_some_and(|t| t > 0), "{entry}");
    assert_eq!(log["accepted"], json!({}));
    // The fault was one-shot.
    mock.register(&body("+15551800001")).await;

    let v = mock.stored().await[0].clone();
    let path = format!("/v1/phone-numbers/{}", v["id"].as_str().unwrap());
    mock.fault(json!({"endpoint": "PATCH /v1/phone-numbers/{phone_id}", "kind": "drop"}))
        .await;
    let err = mock
        .call_err(Method::PATCH, &path, Some(&json!({"friendly_name": "x"})))
        .await;
    assert_connection_error(&err);
    assert_eq!(mock.stored().await[0], v);
}

#[tokio::test]
async fn delay_fault_waits_then_proceeds() {
    let mock = Mock::start(&[]).await;
    mock.fault(json!({"endpoint": "POST /v1/phone-numbers", "kind": "delay", "delay_ms": 300}))
        .await;
    let start = Instant::now();
    mock.register(&body("+15551900001")).await;
    assert!(start.elapsed() >= Duration::from_millis(300));
    assert_eq!(mock.stored().await.len(), 1);
}

#[tokio::test]
async fn commit_then_delay_commits_before_answering() {
    let mock = Mock::start(&[]).await;
    mock.fault(
        json!({"endpoint": "POST /v1/phone-numbers", "kind": "commit_then_delay",
                      "delay_ms": 400}),
    )
    .await;
    let start = Instant::now();
    let v = mock.register(&body("+15551900002")).await;
    let received = jiff::Timestamp::now();
    assert!(start.elapsed() >= Duration::from_millis(400));
    // The registration existed (created_at) at least the delay before the answer arrived.
    let committed = ts(&v["created_at"]);
    assert!(received.duration_since(committed) >= jiff::SignedDuration::from_millis(400));
    assert_eq!(
        mock.calls_log().await["accepted"],
        json!({"POST /v1/phone-numbers": 1})
    );
}

// ---------------------------------------------------------------------------------------------
// Counting and reset

#[tokio::test]
async fn calls_count_every_v1_request_but_not_admin_ones() {
    let mock = Mock::start(&[]).await;
    mock.register(&body("+15552000001")).await;
    mock.call(Method::POST, "/v1/phone-numbers", Some(&json!({})))
        .await;
    mock.send(Method::GET, "/v1/phone-numbers", None, None)
        .await;
    mock.call(Method::GET, "/v1/agents", None).await;
    mock.call(Method::PUT, "/v1/phone-numbers", None).await;
    mock.call(
        Method::GET,
        &format!("/v1/phone-numbers/{UNKNOWN_ID}"),
        None,
    )
    .await;
    mock.admin_ok(Method::GET, "/phone-numbers", None).await;
    let calls = mock.admin_ok(Method::GET, "/calls", None).await;
    assert_eq!(
        calls,
        json!({
            "POST /v1/phone-numbers": 2,
            "GET /v1/phone-numbers": 1,
            "GET <unmatched>": 1,
            "PUT /v1/phone-numbers": 1,
            "GET /v1/phone-numbers/{phone_id}": 1,
        })
    );
    let log = mock.calls_log().await;
    let statuses: Vec<&Value> = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["status"])
        .collect();
    assert_eq!(
        statuses,
        [
            &json!(201),
            &json!(422),
            &json!(401),
            &json!(404),
            &json!(405),
            &json!(404)
        ]
    );
    assert_eq!(log["accepted"], json!({"POST /v1/phone-numbers": 1}));
}

#[tokio::test]
async fn reset_clears_registrations_counts_faults_seeds_and_config() {
    let mock = Mock::start(&[]).await;
    mock.register(&body("+15552100001")).await;
    mock.admin_ok(Method::PUT, "/agents", Some(json!({"ids": [AGENT2]})))
        .await;
    mock.admin_ok(Method::PUT, "/credentials", Some(json!({"ids": []})))
        .await;
    mock.fault(json!({"endpoint": "GET /v1/phone-numbers", "kind": "drop"}))
        .await;
    mock.config(json!({"latency_ms": 5000})).await;

    let r = mock.admin(Method::POST, "/reset", None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(mock.stored().await.is_empty());
    assert_eq!(mock.admin_ok(Method::GET, "/calls", None).await, json!({}));
    assert_eq!(
        mock.calls_log().await,
        json!({"entries": [], "accepted": {}})
    );
    assert_eq!(
        mock.admin_ok(Method::GET, "/faults", None).await,
        json!({"pending": []})
    );
    assert_eq!(
        mock.admin_ok(Method::GET, "/agents", None).await,
        json!({"ids": null})
    );
    assert_eq!(
        mock.admin_ok(Method::GET, "/credentials", None).await,
        json!({"ids": null})
    );
    assert_eq!(
        mock.admin_ok(Method::GET, "/config", None).await["latency_ms"],
        0
    );
    // Seeds are gone (AGENT is accepted again), no drop fault, no latency.
    mock.register(&body("+15552100001")).await;
    assert_eq!(
        mock.call(Method::GET, "/v1/phone-numbers", None)
            .await
            .status,
        StatusCode::OK
    );
}

// ---------------------------------------------------------------------------------------------
// State file and secrets

#[tokio::test]
async fn state_file_survives_a_restart_without_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mock-state.json");
    let file_arg = file.to_str().unwrap().to_owned();

    let mock = Mock::start(&["--state-file", &file_arg]).await;
    let a = mock.register(&with_routing("+15552200001")).await;
    let b = mock.register(&body("+15552200002")).await;
    let path_a = format!("/v1/phone-numbers/{}", a["id"].as_str().unwrap());
    let patched = mock
        .call(
            Method::PATCH,
            &path_a,
            Some(&json!({"friendly_name": "Support", "inbound_routing": {"fallback": null}})),
        )
        .await
        .json;
    let path_b = format!("/v1/phone-numbers/{}", b["id"].as_str().unwrap());
    assert_eq!(
        mock.call(Method::DELETE, &path_b, None).await.status,
        StatusCode::NO_CONTENT
    );
    let internal_before = mock.stored().await;
    let log1 = mock.stop().await;

    let content = std::fs::read_to_string(&file).unwrap();
    assert!(!content.contains(PASSWORD), "password in the state file");
    assert!(!content.contains("\"auth_password\""));
    assert!(content.contains("auth_password_set"));
    assert!(!content.contains("+15552200002"));
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(leftovers.len(), 1, "temporary files left behind");

    let mock = Mock::start_with(&[], &[("ONEINBOX_MOCK_STATE_FILE", &file_arg)]).await;
    assert_eq!(mock.call(Method::GET, &path_a, None).await.json, patched);
    assert_eq!(mock.stored().await, internal_before);
    assert_eq!(
        mock.call(Method::GET, &path_b, None).await.status,
        StatusCode::NOT_FOUND
    );
    let r = mock
        .call(
            Method::POST,
            "/v1/phone-numbers",
            Some(&body("+15552200001")),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.json["detail"]["phone_id"], a["id"]);
    // A new registration after the restart sorts after the loaded ones.
    let c = mock.register(&body("+15552200003")).await;
    assert!(ts(&c["created_at"]) > ts(&patched["updated_at"]));
    let log2 = mock.stop().await;

    for log in [&log1, &log2] {
        assert!(!log.is_empty());
        assert!(!log.contains(PASSWORD), "password in the mock's log");
        assert!(!log.contains(KEY), "API key in the mock's log");
    }
    assert!(log1.contains("/v1/phone-numbers"), "requests are logged");
}

// ---------------------------------------------------------------------------------------------
// Workspaces

const KEY_A: &str = "oi_sk_workspace_a_7c21";
const KEY_B: &str = "oi_sk_workspace_b_93fe";

/// A mock with `team-a` (from the command line, key `KEY_A`) and `team-b` (created through
/// `/_mock/workspaces`, key `KEY_B`, with `config_b`).
async fn two_workspaces(extra: &[&str], config_b: Value) -> Mock {
    let mut args = vec!["--workspace", "team-a=oi_sk_workspace_a_7c21"];
    args.extend_from_slice(extra);
    let mock = Mock::start(&args).await;
    let r = mock
        .admin(
            Method::POST,
            "/workspaces",
            Some(json!({"name": "team-b", "api_keys": [KEY_B], "config": config_b})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(
        r.json,
        json!({"name": "team-b", "keys": 1, "registrations": 0})
    );
    mock
}

#[tokio::test]
async fn registrations_are_visible_only_inside_their_workspace() {
    let mock = two_workspaces(&[], json!({})).await;
    let a = mock.register_as(KEY_A, &body("+15553000001")).await;
    let path = format!("/v1/phone-numbers/{}", a["id"].as_str().unwrap());
    let not_found = json!({"detail": "Phone number not found"});

    // Another workspace's id is exactly an unknown id, for B and for default alike.
    for key in [KEY_B, KEY] {
        let r = mock.call_as(key, Method::GET, &path, None).await;
        assert_eq!((r.status, &r.json), (StatusCode::NOT_FOUND, &not_found));
        let r = mock
            .call_as(
                key,
                Method::PATCH,
                &path,
                Some(&json!({"friendly_name": "taken over"})),
            )
            .await;
        assert_eq!((r.status, &r.json), (StatusCode::NOT_FOUND, &not_found));
        let r = mock.call_as(key, Method::DELETE, &path, None).await;
        assert_eq!((r.status, &r.json), (StatusCode::NOT_FOUND, &not_found));
        for list in [
            "/v1/phone-numbers",
            "/v1/phone-numbers?phone_number=%2B15553000001",
        ] {
            let r = mock.call_as(key, Method::GET, list, None).await;
            assert_eq!(r.status, StatusCode::OK);
            assert_eq!(r.json["items"], json!([]), "{list}");
            assert_eq!(r.json["total"], 0, "{list}");
        }
    }

    // A still has it, unchanged.
    let r = mock.call_as(KEY_A, Method::GET, &path, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json, a);
    let r = mock
        .call_as(
            KEY_A,
            Method::GET,
            "/v1/phone-numbers?phone_number=%2B15553000001",
            None,
        )
        .await;
    assert_eq!(r.json["total"], 1);
    assert_eq!(r.json["items"][0]["id"], a["id"]);

    // The internal views are per workspace too.
    let id = a["id"].as_str().unwrap();
    let views = mock
        .admin_ok(Method::GET, "/workspaces/team-a/phone-numbers", None)
        .await;
    assert_eq!(views.as_array().unwrap().len(), 1);
    assert_eq!(views[0]["friendly_name"], "Sales line");
    let one = format!("/workspaces/team-a/phone-numbers/{id}");
    assert_eq!(mock.admin_ok(Method::GET, &one, None).await["id"], a["id"]);
    for other in ["/workspaces/team-b", "/workspaces/default", ""] {
        let r = mock
            .admin(Method::GET, &format!("{other}/phone-numbers/{id}"), None)
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{other}");
        let all = mock
            .admin_ok(Method::GET, &format!("{other}/phone-numbers"), None)
            .await;
        assert_eq!(all, json!([]), "{other}");
    }
}

#[tokio::test]
async fn the_same_number_registers_in_two_workspaces() {
    let mock = two_workspaces(&[], json!({})).await;
    let a = mock.register_as(KEY_A, &body("+15553100001")).await;
    let b = mock.register_as(KEY_B, &body("+15553100001")).await;
    let d = mock.register_as(KEY, &body("+15553100001")).await;
    assert_ne!(a["id"], b["id"]);
    assert_ne!(a["id"], d["id"]);
    // A duplicate only within one workspace, naming that workspace's id.
    for (key, existing) in [(KEY_A, &a), (KEY_B, &b), (KEY, &d)] {
        let r = mock
            .call_as(
                key,
                Method::POST,
                "/v1/phone-numbers",
                Some(&body("+15553100001")),
            )
            .await;
        assert_eq!(r.status, StatusCode::CONFLICT);
        assert_eq!(r.json["detail"]["phone_id"], existing["id"]);
    }
    // Deleting it in one workspace leaves the others.
    let path = format!("/v1/phone-numbers/{}", a["id"].as_str().unwrap());
    assert_eq!(
        mock.call_as(KEY_A, Method::DELETE, &path, None)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    let workspaces = mock.admin_ok(Method::GET, "/workspaces", None).await;
    assert_eq!(
        workspaces,
        json!([
            {"name": "default", "keys": 0, "registrations": 1},
            {"name": "team-a", "keys": 1, "registrations": 0},
            {"name": "team-b", "keys": 1, "registrations": 1},
        ])
    );
}

#[tokio::test]
async fn rate_limit_is_per_workspace() {
    // One token per 100 s in team-b: its second request is refused however slow the machine is.
    let mock = two_workspaces(&[], json!({"rate_limit_rps": 0.01, "rate_limit_burst": 1})).await;
    let list = "/v1/phone-numbers";
    assert_eq!(
        mock.call_as(KEY_B, Method::GET, list, None).await.status,
        StatusCode::OK
    );
    for n in 0..3 {
        let r = mock
            .call_as(
                KEY_B,
                Method::POST,
                list,
                Some(&body(&format!("+1555320000{n}"))),
            )
            .await;
        assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
        assert!(r.headers.contains_key("retry-after"));
        // The other workspaces are not limited at all.
        let number = format!("+1555320000{n}");
        mock.register_as(KEY_A, &body(&number)).await;
        mock.register_as(KEY, &body(&number)).await;
    }

    assert_eq!(
        mock.config_at("/workspaces/team-b").await["rate_limit_rps"],
        json!(0.01)
    );
    assert_eq!(
        mock.config_at("/workspaces/team-a").await["rate_limit_rps"],
        Value::Null
    );
    assert_eq!(mock.config_at("").await["rate_limit_rps"], Value::Null);
    assert_eq!(
        mock.admin_ok(Method::GET, "/workspaces/team-b/calls", None)
            .await,
        json!({"GET /v1/phone-numbers": 1, "POST /v1/phone-numbers": 3})
    );
    assert_eq!(
        mock.admin_ok(Method::GET, "/workspaces/team-b/phone-numbers", None)
            .await,
        json!([])
    );
    for ws in ["/workspaces/team-a", "/workspaces/default", ""] {
        assert_eq!(
            mock.admin_ok(Method::GET, &format!("{ws}/calls"), None)
                .await,
            json!({"POST /v1/phone-numbers": 3}),
            "{ws}"
        );
    }
}

#[tokio::test]
async fn mock_views_faults_and_call_counts_are_per_workspace() {
    let mock = Mock::start(&[
        "--workspace",
        "team-a=oi_sk_workspace_a_7c21,oi_sk_workspace_a2_41d0",
        "--workspace",
        "team-b=oi_sk_workspace_b_93fe",
    ])
    .await;
    let list = "/v1/phone-numbers";

    // A fault queued for team-a hits only team-a.
    mock.admin_ok(
        Method::POST,
        "/workspaces/team-a/faults",
        Some(json!({"endpoint": "GET /v1/phone-numbers", "kind": "status", "status": 502})),
    )
    .await;
    assert_eq!(
        mock.call_as(KEY_B, Method::GET, list, None).await.status,
        StatusCode::OK
    );
    assert_eq!(
        mock.call(Method::GET, list, None).await.status,
        StatusCode::OK
    );
    assert_eq!(
        mock.admin_ok(Method::GET, "/workspaces/team-a/faults", None)
            .await["pending"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        mock.call_as(KEY_A, Method::GET, list, None).await.status,
        StatusCode::BAD_GATEWAY
    );
    assert_eq!(
        mock.admin_ok(Method::GET, "/workspaces/team-a/faults", None)
            .await,
        json!({"pending": []})
    );

    // Seeds and configuration are per workspace.
    mock.admin_ok(
        Method::PUT,
        "/workspaces/team-b/agents",
        Some(json!({"ids": [AGENT2]})),
    )
    .await;
    let r = mock
        .call_as(KEY_B, Method::POST, list, Some(&body("+15553300001")))
        .await;
    assert_eq!(r.json, json!({"detail": "agent_id not found"}));
    mock.register_as("oi_sk_workspace_a2_41d0", &body("+15553300001"))
        .await;
    assert_eq!(
        mock.admin_ok(Method::GET, "/agents", None).await,
        json!({"ids": null})
    );
    mock.admin_ok(
        Method::PUT,
        "/workspaces/team-b/config",
        Some(json!({"latency_ms": 1})),
    )
    .await;
    assert_eq!(
        mock.admin_ok(Method::GET, "/workspaces/team-a/config", None)
            .await["latency_ms"],
        0
    );

    // A request without a valid key is counted in default.
    mock.send(Method::GET, list, None, None).await;
    mock.send(
        Method::GET,
        list,
        Some("Basic oi_sk_workspace_a_7c21"),
        None,
    )
    .await;

    assert_eq!(
        mock.calls_at("/workspaces/team-a").await,
        json!({"GET /v1/phone-numbers": 1, "POST /v1/phone-numbers": 1})
    );
    assert_eq!(
        mock.calls_at("/workspaces/team-b").await,
        json!({"GET /v1/phone-numbers": 1, "POST /v1/phone-numbers": 1})
    );
    assert_eq!(mock.calls_at("").await, json!({"GET /v1/phone-numbers": 3}));
    assert_eq!(
        mock.calls_at("/workspaces/default").await,
        json!({"GET /v1/phone-numbers": 3})
    );

    // Each workspace's log counts from 1 and names the caller's position among its own keys.
    let log = mock
        .admin_ok(Method::GET, "/workspaces/team-a/calls/log", None)
        .await;
    let entries: Vec<(u64, u64, u64)> = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["seq"].as_u64().unwrap(),
                e["status"].as_u64().unwrap(),
                e["caller"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(entries, [(1, 502, 0), (2, 201, 1)]);
    assert_eq!(log["accepted"], json!({"POST /v1/phone-numbers": 1}));
    let default_log = mock.calls_log().await;
    let statuses: Vec<&Value> = default_log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["status"])
        .collect();
    assert_eq!(statuses, [&json!(200), &json!(401), &json!(401)]);
    assert_eq!(default_log["accepted"], json!({}));

    // A scoped reset touches only its workspace (and keeps its keys).
    mock.admin_ok(Method::POST, "/workspaces/team-a/reset", None)
        .await;
    assert_eq!(mock.calls_at("/workspaces/team-a").await, json!({}));
    assert_eq!(
        mock.admin_ok(Method::GET, "/workspaces", None).await,
        json!([
            {"name": "default", "keys": 0, "registrations": 0},
            {"name": "team-a", "keys": 2, "registrations": 0},
            {"name": "team-b", "keys": 1, "registrations": 0},
        ])
    );
    assert_eq!(
        mock.calls_at("/workspaces/team-b").await,
        json!({"GET /v1/phone-numbers": 1, "POST /v1/phone-numbers": 1})
    );
    assert_eq!(
        mock.admin_ok(Method::GET, "/workspaces/team-b/agents", None)
            .await,
        json!({"ids": [AGENT2]})
    );
    assert_eq!(
        mock.call_as(KEY_A, Method::GET, list, None).await.status,
        StatusCode::OK
    );
    assert_eq!(
        mock.calls_at("/workspaces/team-a").await,
        json!({"GET /v1/phone-numbers": 1})
    );

    let log = mock.stop().await;
    for key in [KEY_A, KEY_B, "oi_sk_workspace_a2_41d0"] {
        assert!(!log.contains(key), "API key in the mock's log");
    }
}

#[tokio::test]
async fn rotated_keys_reach_the_workspace_and_the_old_key_no_longer_does() {
    // default accepts only KEY, so a key of no workspace is a 401.
    let mock = Mock::start(&[
        "--api-key",
        KEY,
        "--workspace",
        "team-a=oi_sk_workspace_a_7c21",
    ])
    .await;
    let a = mock.register_as(KEY_A, &body("+15553400001")).await;
    let path = format!("/v1/phone-numbers/{}", a["id"].as_str().unwrap());

    let r = mock
        .admin(
            Method::PUT,
            "/workspaces/team-a/api_keys",
            Some(json!({"api_keys": ["oi_sk_rotated_5e0b"]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json, json!({"name": "team-a", "keys": 1}));
    assert!(!r.text.contains("oi_sk_"));

    let r = mock.call_as(KEY_A, Method::GET, &path, None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = mock
        .call_as("oi_sk_rotated_5e0b", Method::GET, &path, None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json, a);
    // The old key's request was default's 401; the new key's is team-a's.
    assert_eq!(
        mock.admin_ok(Method::GET, "/calls", None).await,
        json!({"GET /v1/phone-numbers/{phone_id}": 1})
    );
    assert_eq!(
        mock.admin_ok(Method::GET, "/workspaces/team-a/calls", None)
            .await,
        json!({"POST /v1/phone-numbers": 1, "GET /v1/phone-numbers/{phone_id}": 1})
    );

    // A key of another workspace (default's included) is refused; no key at all is allowed.
    for keys in [json!([KEY]), json!([""])] {
        let r = mock
            .admin(
                Method::PUT,
                "/workspaces/team-a/api_keys",
                Some(json!({ "api_keys": keys })),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{keys}");
    }
    let r = mock
        .admin(
            Method::PUT,
            "/workspaces/default/api_keys",
            Some(json!({"api_keys": ["oi_sk_x"]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    mock.admin_ok(
        Method::PUT,
        "/workspaces/team-a/api_keys",
        Some(json!({"api_keys": []})),
    )
    .await;
    let r = mock
        .call_as("oi_sk_rotated_5e0b", Method::GET, &path, None)
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    // Without --api-key, a rotated-out key falls to default's rules: accepted, in default.
    let mock = Mock::start(&["--workspace", "team-a=oi_sk_workspace_a_7c21"]).await;
    let a = mock.register_as(KEY_A, &body("+15553400001")).await;
    mock.admin_ok(
        Method::PUT,
        "/workspaces/team-a/api_keys",
        Some(json!({"api_keys": ["oi_sk_rotated_5e0b"]})),
    )
    .await;
    let path = format!("/v1/phone-numbers/{}", a["id"].as_str().unwrap());
    let r = mock.call_as(KEY_A, Method::GET, &path, None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = mock
        .call_as(
            KEY_A,
            Method::POST,
            "/v1/phone-numbers",
            Some(&body("+15553400001")),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(
        mock.admin_ok(Method::GET, "/workspaces", None).await,
        json!([
            {"name": "default", "keys": 0, "registrations": 1},
            {"name": "team-a", "keys": 1, "registrations": 1},
        ])
    );
}

#[tokio::test]
async fn workspaces_from_the_command_line() {
    let mock = Mock::start(&[
        "--api-key",
        KEY,
        "--workspace",
        "team-a=oi_sk_workspace_a_7c21",
        "--workspace",
        "b2=oi_sk_workspace_b_93fe,oi_sk_workspace_b2_c5a8",
    ])
    .await;
    assert_eq!(
        mock.admin_ok(Method::GET, "/workspaces", None).await,
        json!([
            {"name": "default", "keys": 1, "registrations": 0},
            {"name": "b2", "keys": 2, "registrations": 0},
            {"name": "team-a", "keys": 1, "registrations": 0},
        ])
    );
    // b2's two keys reach one store: the second key's number is its second registration.
    for (key, n) in [
        (KEY, 1),
        (KEY_A, 1),
        (KEY_B, 1),
        ("oi_sk_workspace_b2_c5a8", 2),
    ] {
        mock.register_as(key, &body(&format!("+1555350000{n}")))
            .await;
    }
    let r = mock
        .call_as(
            "oi_sk_workspace_b2_c5a8",
            Method::POST,
            "/v1/phone-numbers",
            Some(&body("+15553500001")),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(
        mock.admin_ok(Method::GET, "/workspaces/b2/calls", None)
            .await,
        json!({"POST /v1/phone-numbers": 3})
    );
    let log = mock.stop().await;
    for key in [KEY, KEY_A, KEY_B, "oi_sk_workspace_b2_c5a8"] {
        assert!(!log.contains(key), "API key in the mock's log");
    }

    // A bad --workspace stops the start, and the message never repeats a key.
    for args in [
        &["--workspace", "Team=oi_sk_secret_cli_key"][..],
        &["--workspace", "oi_sk_secret_cli_key"],
        &["--workspace", "default=oi_sk_secret_cli_key"],
        &[
            "--workspace",
            "a=oi_sk_secret_cli_key",
            "--workspace",
            "b=oi_sk_secret_cli_key",
        ],
        &[
            "--api-key",
            "oi_sk_secret_cli_key",
            "--workspace",
            "a=oi_sk_secret_cli_key",
        ],
        &[
            "--workspace",
            "a=oi_sk_secret_cli_key",
            "--workspace",
            "a=oi_sk_other",
        ],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_oneinbox-mock"))
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "trace")
            .stdin(Stdio::null())
            .output()
            .await
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        let text = String::from_utf8_lossy(&out.stderr);
        assert!(text.contains("workspace"), "{args:?}: {text}");
        assert!(!text.contains("oi_sk_secret_cli_key"), "{args:?}: {text}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}

#[tokio::test]
async fn unknown_workspaces_are_404_and_bad_definitions_400() {
    let mock = Mock::start(&["--workspace", "team-a=oi_sk_workspace_a_7c21"]).await;
    let gone = json!({"detail": "workspace nope not found"});
    for (method, path) in [
        (Method::GET, "/workspaces/nope/calls"),
        (Method::GET, "/workspaces/nope/phone-numbers"),
        (Method::PUT, "/workspaces/nope/config"),
        (Method::POST, "/workspaces/nope/reset"),
        (Method::PUT, "/workspaces/nope/api_keys"),
    ] {
        let r = mock
            .admin(method, path, Some(json!({"api_keys": []})))
            .await;
        assert_eq!(
            (r.status, &r.json),
            (StatusCode::NOT_FOUND, &gone),
            "{path}"
        );
    }
    for bad in [
        json!({"name": "team-a", "api_keys": ["oi_sk_new"]}),
        json!({"name": "default", "api_keys": ["oi_sk_new"]}),
        json!({"name": "Team-B", "api_keys": ["oi_sk_new"]}),
        json!({"name": "-b", "api_keys": ["oi_sk_new"]}),
        json!({"name": "b", "api_keys": [KEY_A]}),
        json!({"name": "b", "api_keys": [""]}),
        json!({"name": "b", "config": {"error_rate": 2.0}}),
        json!({"name": "b", "api_key": ["oi_sk_new"]}),
    ] {
        let r = mock
            .admin(Method::POST, "/workspaces", Some(bad.clone()))
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}");
        assert!(r.json["detail"].is_string(), "{bad}");
        assert!(!r.text.contains("oi_sk_"), "{}", r.text);
    }
    let r = mock.admin(Method::DELETE, "/workspaces", None).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    let r = mock
        .admin(Method::GET, "/workspaces/team-a/api_keys", None)
        .await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        mock.admin_ok(Method::GET, "/workspaces", None).await,
        json!([
            {"name": "default", "keys": 0, "registrations": 0},
            {"name": "team-a", "keys": 1, "registrations": 0},
        ])
    );
}

#[tokio::test]
async fn reset_without_prefix_returns_to_the_startup_workspaces() {
    let mock = two_workspaces(&[], json!({})).await;
    mock.register_as(KEY_A, &body("+15553600001")).await;
    mock.register_as(KEY_B, &body("+15553600001")).await;
    mock.register(&body("+15553600001")).await;
    mock.admin_ok(
        Method::PUT,
        "/workspaces/team-a/api_keys",
        Some(json!({"api_keys": ["oi_sk_rotated_5e0b"]})),
    )
    .await;
    mock.admin_ok(
        Method::PUT,
        "/workspaces/team-a/config",
        Some(json!({"latency_ms": 5000})),
    )
    .await;

    mock.admin_ok(Method::POST, "/reset", None).await;
    assert_eq!(
        mock.admin_ok(Method::GET, "/workspaces", None).await,
        json!([
            {"name": "default", "keys": 0, "registrations": 0},
            {"name": "team-a", "keys": 1, "registrations": 0},
        ])
    );
    assert_eq!(
        mock.admin_ok(Method::GET, "/workspaces/team-a/config", None)
            .await["latency_ms"],
        0
    );
    // The start-up key reaches team-a again.
    mock.register_as(KEY_A, &body("+15553600001")).await;
    assert_eq!(
        mock.admin_ok(Method::GET, "/workspaces/team-a/calls", None)
            .await,
        json!({"POST /v1/phone-numbers": 1})
    );
    assert_eq!(mock.admin_ok(Method::GET, "/calls", None).await, json!({}));
}

#[tokio::test]
async fn state_file_keeps_every_workspace() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mock-state.json");
    let file_arg = file.to_str().unwrap().to_owned();

    let mock = two_workspaces(&["--state-file", &file_arg], json!({})).await;
    let a1 = mock.register_as(KEY_A, &with_routing("+15553700001")).await;
    let a2 = mock.register_as(KEY_A, &body("+15553700002")).await;
    let d = mock.register(&body("+15553700001")).await;
    let b = mock.register_as(KEY_B, &body("+15553700003")).await;
    let views_a = mock
        .admin_ok(Method::GET, "/workspaces/team-a/phone-numbers", None)
        .await;
    let views_b = mock
        .admin_ok(Method::GET, "/workspaces/team-b/phone-numbers", None)
        .await;
    mock.stop().await;

    let content = std::fs::read_to_string(&file).unwrap();
    assert!(!content.contains(PASSWORD), "password in the state file");
    assert!(!content.contains("\"auth_password\""));
    for key in [KEY, KEY_A, KEY_B] {
        assert!(!content.contains(key), "API key in the state file");
    }
    let saved: Value = serde_json::from_str(&content).unwrap();
    assert_eq!(saved["version"], 2);
    let names: Vec<&String> = saved["workspaces"].as_object().unwrap().keys().collect();
    assert_eq!(names, ["default", "team-a", "team-b"]);

    // team-a is defined again at start-up, team-b only later: both get their registrations.
    let mock = Mock::start(&[
        "--state-file",
        &file_arg,
        "--workspace",
        "team-a=oi_sk_workspace_a_7c21",
    ])
    .await;
    assert_eq!(
        mock.admin_ok(Method::GET, "/workspaces/team-a/phone-numbers", None)
            .await,
        views_a
    );
    let path_a1 = format!("/v1/phone-numbers/{}", a1["id"].as_str().unwrap());
    assert_eq!(
        mock.call_as(KEY_A, Method::GET, &path_a1, None).await.json,
        a1
    );
    assert_eq!(
        mock.call_as(KEY, Method::GET, &path_a1, None).await.status,
        StatusCode::NOT_FOUND
    );
    let r = mock
        .call_as(
            KEY_A,
            Method::POST,
            "/v1/phone-numbers",
            Some(&body("+15553700002")),
        )
        .await;
    assert_eq!(r.json["detail"]["phone_id"], a2["id"]);
    let stored = mock.stored().await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["id"], d["id"]);
    let r = mock
        .admin(
            Method::POST,
            "/workspaces",
            Some(json!({"name": "team-b", "api_keys": [KEY_B]})),
        )
        .await;
    assert_eq!(
        r.json,
        json!({"name": "team-b", "keys": 1, "registrations": 1})
    );
    assert_eq!(
        mock.admin_ok(Method::GET, "/workspaces/team-b/phone-numbers", None)
            .await,
        views_b
    );
    let path_b = format!("/v1/phone-numbers/{}", b["id"].as_str().unwrap());
    assert_eq!(
        mock.call_as(KEY_B, Method::GET, &path_b, None).await.json,
        b
    );
    mock.stop().await;

    // A file of the single-store layout loads as default.
    let v1 = json!({"version": 1, "registrations": saved["workspaces"]["team-a"]});
    std::fs::write(&file, v1.to_string()).unwrap();
    let mock = Mock::start(&["--state-file", &file_arg]).await;
    assert_eq!(mock.stored().await, views_a.as_array().unwrap().clone());
    assert_eq!(mock.call(Method::GET, &path_a1, None).await.json, a1);
}
