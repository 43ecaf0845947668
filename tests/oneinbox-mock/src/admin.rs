//! `/_mock/` test support (contract: Mock test support): no auth, not counted. Errors are `400 {"detail": "<text>"}`.
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
//! - `POST /reset`: back to the start-up state and configuration.

use std::collections::BTreeSet;
use std::time::Instant;

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
        (Method::GET, ["config"]) => json_response(StatusCode::OK, &state.lock().config),
        (Method::PUT, ["config"]) => put_config(&state, req).await,
        (_, ["config"]) => not_allowed("GET, PUT"),

        (Method::GET, ["faults"]) => pending_faults(&state),
        (Method::POST, ["faults"]) => post_faults(&state, req).await,
        (Method::DELETE, ["faults"]) => {
            state.lock().faults.clear();
            pending_faults(&state)
        }
        (_, ["faults"]) => not_allowed("GET, POST, DELETE"),

        (Method::GET, ["phone-numbers"]) => {
            let views: Vec<_> = state
                .lock()
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
                .and_then(|id| state.lock().store.get(&id).map(|r| r.internal_view()));
            match view {
                Some(view) => json_response(StatusCode::OK, &view),
                None => detail(StatusCode::NOT_FOUND, "Phone number not found"),
            }
        }
        (_, ["phone-numbers", _]) => not_allowed("GET"),
        (Method::PUT, ["phone-numbers", id, "status"]) => {
            let id = Uuid::parse_str(id).ok();
            force_status(&state, id, req).await
        }
        (_, ["phone-numbers", _, "status"]) => not_allowed("PUT"),

        (Method::GET, ["agents"]) => seed_view(state.lock().store.agents()),
        (Method::PUT, ["agents"]) => match body_json::<Seed>(req).await {
            Ok(seed) => {
                let ids: Option<BTreeSet<Uuid>> = seed.ids.map(|v| v.into_iter().collect());
                let mut sh = state.lock();
                sh.store.set_agents(ids);
                seed_view(sh.store.agents())
            }
            Err(resp) => resp,
        },
        (_, ["agents"]) => not_allowed("GET, PUT"),
        (Method::GET, ["credentials"]) => seed_view(state.lock().store.credentials()),
        (Method::PUT, ["credentials"]) => match body_json::<Seed>(req).await {
            Ok(seed) => {
                let ids: Option<BTreeSet<Uuid>> = seed.ids.map(|v| v.into_iter().collect());
                let mut sh = state.lock();
                sh.store.set_credentials(ids);
                seed_view(sh.store.credentials())
            }
            Err(resp) => resp,
        },
        (_, ["credentials"]) => not_allowed("GET, PUT"),

        (Method::GET, ["calls"]) => json_response(StatusCode::OK, &state.lock().calls),
        (_, ["calls"]) => not_allowed("GET"),
        (Method::GET, ["calls", "log"]) => {
            let sh = state.lock();
            json_response(
                StatusCode::OK,
                &json!({ "entries": sh.log, "accepted": sh.accepted }),
            )
        }
        (_, ["calls", "log"]) => not_allowed("GET"),

        (Method::POST, ["reset"]) => {
            reset(&state).await;
            json_response(StatusCode::OK, &json!({ "reset": true }))
        }
        (_, ["reset"]) => not_allowed("POST"),

        _ => detail(StatusCode::NOT_FOUND, "Not Found"),
    };
    tracing::debug!(method = %method, path = %path, status = resp.status().as_u16(), "admin");
    resp
}

fn seed_view(ids: Option<&BTreeSet<Uuid>>) -> Response<Body> {
    json_response(StatusCode::OK, &json!({ "ids": ids }))
}

fn pending_faults(state: &MockState) -> Response<Body> {
    json_response(
        StatusCode::OK,
        &json!({ "pending": state.lock().faults.pending() }),
    )
}

async fn put_config(state: &MockState, req: Request<Incoming>) -> Response<Body> {
    let config: FaultConfig = match body_json(req).await {
        Ok(c) => c,
        Err(resp) => return resp,
    };
    if let Err(text) = config.check() {
        return bad_request(&text);
    }
    let mut sh = state.lock();
    // A new configuration starts a new budget.
    sh.limiter = config.limiter(Instant::now());
    sh.config = config;
    json_response(StatusCode::OK, &sh.config)
}

async fn post_faults(state: &MockState, req: Request<Incoming>) -> Response<Body> {
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
        let mut sh = state.lock();
        for spec in specs {
            sh.faults.push(spec);
        }
    }
    pending_faults(state)
}

async fn force_status(
    state: &MockState,
    id: Option<Uuid>,
    req: Request<Incoming>,
) -> Response<Body> {
    let body: ForceStatus = match body_json(req).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let view = id.and_then(|id| {
        state
            .lock()
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

/// Back to the start-up state: no registrations, counts, log, faults or seeds, and the
/// start-up fault configuration.
async fn reset(state: &MockState) {
    {
        let initial = state.inner.initial_config.clone();
        let mut sh = state.lock();
        sh.store.clear();
        sh.limiter = initial.limiter(Instant::now());
        sh.config = initial;
        sh.faults.clear();
        sh.calls.clear();
        sh.accepted.clear();
        sh.log.clear();
        sh.seq = 0;
    }
    state.persist().await;
}
