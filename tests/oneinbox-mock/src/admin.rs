//! `/_mock/` test support (contract: Mock test support): no auth, not counted. Errors are `400 {"detail": "<text>"}`,
//! an unknown workspace `404 {"detail": "workspace <name> not found"}`.
//!
//! - `GET`/`PUT /config`: the `FaultConfig` (PUT replaces it whole and refills the bucket).
//! - `GET`/`POST`/`DELETE /faults`: `{"pending": [FaultSpec…]}`; POST takes one spec or a list.
//! - `GET /phone-numbers` (JSON array), `GET /phone-numbers/{id}`: internal views.
//! - `PUT /phone-numbers/{id}/status` `{"status": "..."}`: forced status.
//! - `GET`/`PUT /agents`, `/credentials`: `{"ids": [...] | null}`.
//! - `GET /calls`: `{"<endpoint key>": n}`; unmatched paths count as `"<METHOD> <unmatched>"`.
//! - `GET /calls/log`: `{"entries": [{"seq", "endpoint", "status", "dropped", "at_ms",
//!   "caller"}…],
//!   "accepted": {"<endpoint key>": n}}`, `accepted` counting committed writes (2xx POST,
//!   PATCH, DELETE, including those whose connection was then dropped).
//! - `POST /reset` (scoped): back to the workspace's initial state and configuration, keys kept.
//!
//! Each of the above is scoped to one workspace: `/_mock/workspaces/{name}/<x>` to `{name}`,
//! `/_mock/<x>` to `default`, except the unprefixed `POST /reset`, which is global. Global:
//!
//! - `GET /workspaces`: `[{"name", "keys", "registrations"}…]` (counts only), `default` first.
//! - `POST /workspaces` `{"name", "api_keys": [...], "config"?: FaultConfig}`: 201 and its line.
//! - `PUT /workspaces/{name}/api_keys` `{"api_keys": [...]}`: replaces a named workspace's keys.
//! - `POST /reset`: the whole mock back to its start-up state: workspaces created since are
//!   removed, the start-up ones get their start-up keys back, every one is reset.

use std::collections::BTreeSet;

use axum::body::Body;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use uuid::Uuid;

use super::MockState;
use super::api::{detail, json_response, read_body};
use super::faults::{FaultConfig, FaultSpec};
use super::workspace::{self, DEFAULT, Handle, RegistryError};

/// `{"ids": [...]}` or `{"ids": null}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Seed {
    ids: Option<Vec<Uuid>>,
}

/// `{"status": "..."}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ForceStatus {
    status: String,
}

/// `POST /_mock/workspaces`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewWorkspace {
    name: String,
    #[serde(default)]
    api_keys: Vec<String>,
    #[serde(default)]
    config: Option<FaultConfig>,
}

/// `PUT /_mock/workspaces/{name}/api_keys`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApiKeys {
    api_keys: Vec<String>,
}

/// One fault or a list of them.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Faults {
    One(FaultSpec),
    Many(Vec<FaultSpec>),
}

fn bad_request(text: &str) -> Response<Body> {
    detail(StatusCode::BAD_REQUEST, text)
}

async fn body_json<T: DeserializeOwned>(req: Request<Incoming>) -> Result<T, Response<Body>> {
    let bytes = read_body(req).await?;
    serde_json::from_slice(&bytes).map_err(|e| bad_request(&format!("invalid body: {e}")))
}

fn not_allowed(allow: &'static str) -> Response<Body> {
    let mut resp = detail(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
    resp.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    resp
}

pub(super) async fn handle(state: MockState, req: Request<Incoming>) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let segments: Vec<&str> = path
        .trim_start_matches("/_mock")
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let resp = match (method.clone(), segments.as_slice()) {
        (Method::GET, ["workspaces"]) => {
            json_response(StatusCode::OK, &state.registry().summaries())
        }
        (Method::POST, ["workspaces"]) => create_workspace(&state, req).await,
        (_, ["workspaces"]) => not_allowed("GET, POST"),
        (Method::PUT, ["workspaces", name, "api_keys"]) => set_keys(&state, name, req).await,
        (_, ["workspaces", _, "api_keys"]) => not_allowed("PUT"),
        (Method::POST, ["reset"]) => {
            state.registry().reset_all();
            state.persist().await;
            json_response(StatusCode::OK, &json!({ "reset": true }))
        }
        (_, ["workspaces", name, rest @ ..]) => {
            let ws = state.registry().get(name);
            match ws {
                Some(ws) => scoped(&state, &ws, &method, rest, req).await,
                None => unknown_workspace(name),
            }
        }
        (_, rest) => {
            let ws = state.registry().get(DEFAULT);
            match ws {
                Some(ws) => scoped(&state, &ws, &method, rest, req).await,
                None => unknown_workspace(DEFAULT),
            }
        }
    };
    tracing::debug!(method = %method, path = %path, status = resp.status().as_u16(), "admin");
    resp
}

fn unknown_workspace(name: &str) -> Response<Body> {
    detail(
        StatusCode::NOT_FOUND,
        &format!("workspace {name} not found"),
    )
}

async fn create_workspace(state: &MockState, req: Request<Incoming>) -> Response<Body> {
    let body: NewWorkspace = match body_json(req).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let created =
        state
            .registry()
            .create(&body.name, body.api_keys, body.config.unwrap_or_default());
    match created {
        Ok(summary) => json_response(StatusCode::CREATED, &summary),
        Err(text) => bad_request(&text),
    }
}

async fn set_keys(state: &MockState, name: &str, req: Request<Incoming>) -> Response<Body> {
    let body: ApiKeys = match body_json(req).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let set = state.registry().set_keys(name, body.api_keys);
    match set {
        Ok(keys) => json_response(StatusCode::OK, &json!({ "name": name, "keys": keys })),
        Err(RegistryError::NotFound(name)) => unknown_workspace(&name),
        Err(RegistryError::Invalid(text)) => bad_request(&text),
    }
}

/// The endpoints every workspace has, on `ws`.
async fn scoped(
    state: &MockState,
    ws: &Handle,
    method: &Method,
    segments: &[&str],
    req: Request<Incoming>,
) -> Response<Body> {
    let lock = || workspace::lock(ws);
    match (method.clone(), segments) {
        (Method::GET, ["config"]) => json_response(StatusCode::OK, &lock().config),
        (Method::PUT, ["config"]) => put_config(ws, req).await,
        (_, ["config"]) => not_allowed("GET, PUT"),

        (Method::GET, ["faults"]) => pending_faults(ws),
        (Method::POST, ["faults"]) => post_faults(ws, req).await,
        (Method::DELETE, ["faults"]) => {
            lock().faults.clear();
            pending_faults(ws)
        }
        (_, ["faults"]) => not_allowed("GET, POST, DELETE"),

        (Method::GET, ["phone-numbers"]) => {
            let views: Vec<_> = lock()
                .store
                .ordered()
                .into_iter()
                .map(|r| r.internal_view())
                .collect();
            json_response(StatusCode::OK, &views)
        }
        (_, ["phone-numbers"]) => not_allowed("GET"),
        (Method::GET, ["phone-numbers", id]) => {
            let view = Uuid::parse_str(id)
                .ok()
                .and_then(|id| lock().store.get(&id).map(|r| r.internal_view()));
            match view {
                Some(view) => json_response(StatusCode::OK, &view),
                None => detail(StatusCode::NOT_FOUND, "Phone number not found"),
            }
        }
        (_, ["phone-numbers", _]) => not_allowed("GET"),
        (Method::PUT, ["phone-numbers", id, "status"]) => {
            let id = Uuid::parse_str(id).ok();
            force_status(state, ws, id, req).await
        }
        (_, ["phone-numbers", _, "status"]) => not_allowed("PUT"),

        (Method::GET, ["agents"]) => seed_view(lock().store.agents()),
        (Method::PUT, ["agents"]) => match body_json::<Seed>(req).await {
            Ok(seed) => {
                let ids: Option<BTreeSet<Uuid>> = seed.ids.map(|v| v.into_iter().collect());
                let mut sh = lock();
                sh.store.set_agents(ids);
                seed_view(sh.store.agents())
            }
            Err(resp) => resp,
        },
        (_, ["agents"]) => not_allowed("GET, PUT"),
        (Method::GET, ["credentials"]) => seed_view(lock().store.credentials()),
        (Method::PUT, ["credentials"]) => match body_json::<Seed>(req).await {
            Ok(seed) => {
                let ids: Option<BTreeSet<Uuid>> = seed.ids.map(|v| v.into_iter().collect());
                let mut sh = lock();
                sh.store.set_credentials(ids);
                seed_view(sh.store.credentials())
            }
            Err(resp) => resp,
        },
        (_, ["credentials"]) => not_allowed("GET, PUT"),

        (Method::GET, ["calls"]) => json_response(StatusCode::OK, &lock().calls),
        (_, ["calls"]) => not_allowed("GET"),
        (Method::GET, ["calls", "log"]) => {
            let sh = lock();
            json_response(
                StatusCode::OK,
                &json!({ "entries": sh.log, "accepted": sh.accepted }),
            )
        }
        (_, ["calls", "log"]) => not_allowed("GET"),

        (Method::POST, ["reset"]) => {
            lock().reset();
            state.persist().await;
            json_response(StatusCode::OK, &json!({ "reset": true }))
        }
        (_, ["reset"]) => not_allowed("POST"),

        _ => detail(StatusCode::NOT_FOUND, "Not Found"),
    }
}

fn seed_view(ids: Option<&BTreeSet<Uuid>>) -> Response<Body> {
    json_response(StatusCode::OK, &json!({ "ids": ids }))
}

fn pending_faults(ws: &Handle) -> Response<Body> {
    json_response(
        StatusCode::OK,
        &json!({ "pending": workspace::lock(ws).faults.pending() }),
    )
}

async fn put_config(ws: &Handle, req: Request<Incoming>) -> Response<Body> {
    let config: FaultConfig = match body_json(req).await {
        Ok(c) => c,
        Err(resp) => return resp,
    };
    if let Err(text) = config.check() {
        return bad_request(&text);
    }
    let mut sh = workspace::lock(ws);
    sh.set_config(config);
    json_response(StatusCode::OK, &sh.config)
}

async fn post_faults(ws: &Handle, req: Request<Incoming>) -> Response<Body> {
    let specs = match body_json::<Faults>(req).await {
        Ok(Faults::One(spec)) => vec![spec],
        Ok(Faults::Many(specs)) => specs,
        Err(resp) => return resp,
    };
    for spec in &specs {
        if let Err(text) = spec.check() {
            return bad_request(&text);
        }
    }
    {
        let mut sh = workspace::lock(ws);
        for spec in specs {
            sh.faults.push(spec);
        }
    }
    pending_faults(ws)
}

async fn force_status(
    state: &MockState,
    ws: &Handle,
    id: Option<Uuid>,
    req: Request<Incoming>,
) -> Response<Body> {
    let body: ForceStatus = match body_json(req).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let view = id.and_then(|id| {
        workspace::lock(ws)
            .store
            .set_status(&id, body.status)
            .map(|r| r.internal_view())
    });
    match view {
        Some(view) => {
            state.persist().await;
            json_response(StatusCode::OK, &view)
        }
        None => detail(StatusCode::NOT_FOUND, "Phone number not found"),
    }
}
