//! The `/v1` pipeline. Per request, in the contract's order (contract: Auth and check order): count, latency, one-shot
//! fault, rate limit, random error, auth, validation, `phone_id` lookup, references, duplicate,
//! SIP resolution, commit. Route-level 404/405 come after the random error and before auth, as
//! in a FastAPI service whose router answers before any dependency runs.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use axum::body::{Body, Bytes};
use axum::extract::Query;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use serde::Serialize;
use tokio::sync::Notify;

use super::faults::{self, FaultAction};
use super::state::{CreateError, PatchError, PhoneNumberView};
use super::validate::{self, ErrorItem};
use super::workspace::{self, Handle, Resolved};
use super::{MockState, admin};

/// Larger bodies are refused; registrations are tiny.
pub(super) const MAX_BODY: usize = 1024 * 1024;

/// Entry point of every request: `/_mock/` goes to the admin API, the rest to `/v1`.
pub(super) async fn handle(
    state: MockState,
    kill: Arc<Notify>,
    req: Request<Incoming>,
) -> Response<Body> {
    let path = req.uri().path();
    if path == "/_mock" || path.starts_with("/_mock/") {
        return admin::handle(state, req).await;
    }
    // Resolved once: a key rotated while the request runs does not move it.
    let resolved = state.registry().resolve(bearer_token(req.headers()));
    let ctx = Ctx { state, resolved };
    v1(ctx, kill, req).await
}

/// The token of `Authorization: Bearer <token>`.
fn bearer_token(headers: &http::HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// One `/v1` request: the mock and the workspace its key selects.
struct Ctx {
    state: MockState,
    resolved: Resolved,
}

/// What a path and method resolve to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Create,
    List,
    Get(String),
    Patch(String),
    Delete(String),
    NotFound,
    NotAllowed(&'static str),
}

const COLLECTION: &str = "/v1/phone-numbers";

/// Resolves the endpoint key and target. Purchase and search are not served (contract: Paths and routes): they are
/// 404 for every method instead of falling into `{phone_id}`.
fn route(method: &Method, path: &str) -> (String, Target) {
    if path == COLLECTION {
        let target = match *method {
            Method::POST => Target::Create,
            Method::GET => Target::List,
            _ => Target::NotAllowed("GET, POST"),
        };
        return (format!("{method} {COLLECTION}"), target);
    }
    if let Some(id) = path
        .strip_prefix(COLLECTION)
        .and_then(|rest| rest.strip_prefix('/'))
        && !id.is_empty()
        && !id.contains('/')
        && id != "purchase"
        && id != "search"
    {
        let id = id.to_owned();
        let target = match *method {
            Method::GET => Target::Get(id),
            Method::PATCH => Target::Patch(id),
            Method::DELETE => Target::Delete(id),
            _ => Target::NotAllowed("GET, PATCH, DELETE"),
        };
        return (format!("{method} {COLLECTION}/{{phone_id}}"), target);
    }
    (format!("{method} <unmatched>"), Target::NotFound)
}

/// A JSON response.
pub(super) fn json_response(status: StatusCode, value: &impl Serialize) -> Response<Body> {
    match serde_json::to_vec(value) {
        Ok(bytes) => {
            let mut resp = Response::new(Body::from(bytes));
            *resp.status_mut() = status;
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            resp
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot encode a response");
            let mut resp = Response::new(Body::from(r#"{"detail":"Internal Server Error"}"#));
            *resp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            resp
        }
    }
}

/// `{"detail": "<text>"}`.
pub(super) fn detail(status: StatusCode, text: &str) -> Response<Body> {
    json_response(status, &Detail { detail: text })
}

fn reason(status: StatusCode) -> &'static str {
    status.canonical_reason().unwrap_or("Error")
}

fn status_code(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::SERVICE_UNAVAILABLE)
}

/// `{"detail": ...}` keeping the field order of `T` (a `json!` map would sort the keys).
#[derive(Serialize)]
struct Detail<T> {
    detail: T,
}

/// `{"detail": {"code", "message", ...}}`.
#[derive(Serialize)]
struct CodedError<'a> {
    code: &'static str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    phone_id: Option<uuid::Uuid>,
}

/// The list page.
#[derive(Serialize)]
struct Page {
    items: Vec<PhoneNumberView>,
    total: usize,
    limit: u32,
    offset: u64,
}

/// A 422 with the Pydantic-shaped list.
fn unprocessable(items: Vec<ErrorItem>) -> Response<Body> {
    json_response(StatusCode::UNPROCESSABLE_ENTITY, &Detail { detail: items })
}

fn phone_not_found() -> Response<Body> {
    detail(StatusCode::NOT_FOUND, "Phone number not found")
}

/// Reads the whole body, or the response to give instead.
pub(super) async fn read_body(req: Request<Incoming>) -> Result<Bytes, Response<Body>> {
    axum::body::to_bytes(Body::new(req.into_body()), MAX_BODY)
        .await
        .map_err(|_| {
            detail(
                StatusCode::PAYLOAD_TOO_LARGE,
                "Request body too large or unreadable",
            )
        })
}

impl Ctx {
    fn ws(&self) -> &Handle {
        &self.resolved.ws
    }

    /// Step 1: count, and hand back the settings that apply to this endpoint.
    fn count(&self, key: &str) -> faults::Effective {
        let mut ws = workspace::lock(self.ws());
        *ws.calls.entry(key.to_owned()).or_insert(0) += 1;
        ws.config.effective(key)
    }

    fn take_fault(&self, key: &str) -> Option<FaultAction> {
        workspace::lock(self.ws()).faults.take(key)
    }

    /// Step 4: takes one token; when there is none, the `Retry-After` value of the 429.
    fn rate_limited(&self) -> Option<String> {
        let mut ws = workspace::lock(self.ws());
        let format = ws.config.retry_after_format;
        let secs = ws.limiter.as_mut()?.try_acquire(Instant::now()).err()?;
        Some(faults::retry_after_value(format, secs, SystemTime::now()))
    }

    /// Records the outcome in the workspace's log (and as accepted, for a committed write).
    fn record(&self, key: &str, status: Option<u16>, dropped: bool, accepted: bool) {
        workspace::lock(self.ws()).record(key, status, dropped, accepted, self.resolved.caller);
    }
}

/// Logs and records a response; only the method, route, status (never a body or a header).
fn finish(ctx: &Ctx, key: &str, resp: Response<Body>, accepted: bool) -> Response<Body> {
    let status = resp.status().as_u16();
    ctx.record(key, Some(status), false, accepted);
    let (method, route) = key.split_once(' ').unwrap_or((key, ""));
    tracing::info!(method, route, status, "request");
    resp
}

/// Closes the connection instead of answering: the handler never completes and the
/// connection task drops the socket.
async fn drop_connection(
    ctx: &Ctx,
    key: &str,
    status: Option<u16>,
    accepted: bool,
    kill: &Notify,
) -> Response<Body> {
    ctx.record(key, status, true, accepted);
    let (method, route) = key.split_once(' ').unwrap_or((key, ""));
    tracing::info!(
        method,
        route,
        status,
        "request answered by closing the connection"
    );
    kill.notify_one();
    std::future::pending().await
}

async fn v1(ctx: Ctx, kill: Arc<Notify>, req: Request<Incoming>) -> Response<Body> {
    let (key, target) = route(req.method(), req.uri().path());

    let effective = ctx.count(&key);

    let latency = effective.latency(&mut rand::rng());
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }

    let mut commit_then_drop = false;
    let mut hold_answer = None;
    match ctx.take_fault(&key) {
        Some(FaultAction::Status {
            status,
            retry_after,
            detail: text,
        }) => {
            let code = status_code(status);
            let text = text.unwrap_or_else(|| reason(code).to_owned());
            let mut resp = detail(code, &text);
            if let Some(v) = retry_after.and_then(|v| HeaderValue::from_str(&v).ok()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
            return finish(&ctx, &key, resp, false);
        }
        Some(FaultAction::Drop) => return drop_connection(&ctx, &key, None, false, &kill).await,
        Some(FaultAction::Delay(d)) => tokio::time::sleep(d).await,
        Some(FaultAction::CommitThenDrop) => commit_then_drop = true,
        Some(FaultAction::CommitThenDelay(d)) => hold_answer = Some(d),
        None => {}
    }

    if let Some(retry_after) = ctx.rate_limited() {
        let mut resp = detail(StatusCode::TOO_MANY_REQUESTS, "Rate limit exceeded");
        if let Ok(v) = HeaderValue::from_str(&retry_after) {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return finish(&ctx, &key, resp, false);
    }

    if effective.draws_error(&mut rand::rng()) {
        let code = status_code(effective.error_status);
        return finish(&ctx, &key, detail(code, reason(code)), false);
    }

    match target {
        Target::NotFound => {
            return finish(
                &ctx,
                &key,
                detail(StatusCode::NOT_FOUND, "Not Found"),
                false,
            );
        }
        Target::NotAllowed(allow) => {
            let mut resp = detail(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
            resp.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(allow));
            return finish(&ctx, &key, resp, false);
        }
        _ => {}
    }

    if !ctx.resolved.authorized {
        let mut resp = detail(StatusCode::UNAUTHORIZED, "Invalid or missing API key");
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return finish(&ctx, &key, resp, false);
    }

    let (resp, accepted) = match target {
        Target::Create => match read_body(req).await {
            Ok(body) => create(&ctx, &body).await,
            Err(resp) => (resp, false),
        },
        Target::List => (list(&ctx, req.uri()), false),
        Target::Get(id) => (get(&ctx, &id), false),
        Target::Patch(id) => match read_body(req).await {
            Ok(body) => patch(&ctx, &id, &body).await,
            Err(resp) => (resp, false),
        },
        Target::Delete(id) => delete(&ctx, &id).await,
        Target::NotFound | Target::NotAllowed(_) => {
            (detail(StatusCode::NOT_FOUND, "Not Found"), false)
        }
    };

    if commit_then_drop {
        let status = Some(resp.status().as_u16());
        return drop_connection(&ctx, &key, status, accepted, &kill).await;
    }
    if let Some(d) = hold_answer {
        // Record the committed outcome before holding the answer: a client that gives up
        // drops this future, and the commit must still be counted.
        let resp = finish(&ctx, &key, resp, accepted);
        tokio::time::sleep(d).await;
        return resp;
    }
    finish(&ctx, &key, resp, accepted)
}

async fn create(ctx: &Ctx, body: &[u8]) -> (Response<Body>, bool) {
    let input = match validate::parse_body(body).and_then(|v| validate::validate_create(&v)) {
        Ok(input) => input,
        Err(items) => return (unprocessable(items), false),
    };
    let result = {
        let mut sh = workspace::lock(ctx.ws());
        let provisioning = (sh.config.provisioning_ms > 0).then(|| {
            let ms = i64::try_from(sh.config.provisioning_ms).unwrap_or(i64::MAX);
            (
                jiff::SignedDuration::from_millis(ms),
                sh.config.provisioning_outcome,
            )
        });
        sh.store
            .create(input, jiff::Timestamp::now(), provisioning)
            .map(|rec| rec.view())
    };
    match result {
        Ok(view) => {
            ctx.state.persist().await;
            (json_response(StatusCode::CREATED, &view), true)
        }
        Err(CreateError::Reference(text)) => (detail(StatusCode::NOT_FOUND, text), false),
        Err(CreateError::Duplicate(existing)) => (
            json_response(
                StatusCode::CONFLICT,
                &Detail {
                    detail: CodedError {
                        code: "PHONE_NUMBER_ALREADY_REGISTERED",
                        message: "This phone number is already registered in the workspace",
                        phone_id: Some(existing),
                    },
                },
            ),
            false,
        ),
        Err(CreateError::Sip(message)) => (
            json_response(
                StatusCode::BAD_REQUEST,
                &Detail {
                    detail: CodedError {
                        code: "SIP_TRUNK_PROVISION_FAILED",
                        message: &message,
                        phone_id: None,
                    },
                },
            ),
            false,
        ),
    }
}

fn list(ctx: &Ctx, uri: &http::Uri) -> Response<Body> {
    // A query that is not even form-encoded is treated as having no parameters.
    let pairs = Query::<Vec<(String, String)>>::try_from_uri(uri)
        .map(|q| q.0)
        .unwrap_or_default();
    let query = match validate::validate_list_query(&pairs) {
        Ok(q) => q,
        Err(items) => return unprocessable(items),
    };
    let sh = workspace::lock(ctx.ws());
    let (page, total) = sh
        .store
        .list(query.phone_number.as_deref(), query.limit, query.offset);
    json_response(
        StatusCode::OK,
        &Page {
            items: page.into_iter().map(|r| r.view()).collect(),
            total,
            limit: query.limit,
            offset: query.offset,
        },
    )
}

fn get(ctx: &Ctx, raw_id: &str) -> Response<Body> {
    let id = match validate::validate_phone_id(raw_id) {
        Ok(id) => id,
        Err(items) => return unprocessable(items),
    };
    let view = workspace::lock(ctx.ws()).store.get(&id).map(|r| r.view());
    match view {
        Some(view) => json_response(StatusCode::OK, &view),
        None => phone_not_found(),
    }
}

async fn patch(ctx: &Ctx, raw_id: &str, body: &[u8]) -> (Response<Body>, bool) {
    let id = validate::validate_phone_id(raw_id);
    let input = validate::parse_body(body).and_then(|v| validate::validate_patch(&v));
    let (id, input) = match (id, input) {
        (Ok(id), Ok(input)) => (id, input),
        (id, input) => {
            let mut items: Vec<ErrorItem> = id.err().unwrap_or_default();
            items.extend(input.err().unwrap_or_default());
            return (unprocessable(items), false);
        }
    };
    let result = workspace::lock(ctx.ws())
        .store
        .patch(&id, input, jiff::Timestamp::now())
        .map(|(rec, changed)| (rec.view(), changed));
    match result {
        Ok((view, changed)) => {
            if changed {
                ctx.state.persist().await;
            }
            (json_response(StatusCode::OK, &view), true)
        }
        Err(PatchError::NotFound) => (phone_not_found(), false),
        Err(PatchError::Reference(text)) => (detail(StatusCode::NOT_FOUND, text), false),
    }
}

async fn delete(ctx: &Ctx, raw_id: &str) -> (Response<Body>, bool) {
    let id = match validate::validate_phone_id(raw_id) {
        Ok(id) => id,
        Err(items) => return (unprocessable(items), false),
    };
    let removed = workspace::lock(ctx.ws()).store.delete(&id);
    if !removed {
        return (phone_not_found(), false);
    }
    ctx.state.persist().await;
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::NO_CONTENT;
    (resp, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let id = "3c90c3cc-0d44-4b50-8888-8dd25736052a";
        assert_eq!(
            route(&Method::POST, "/v1/phone-numbers"),
            ("POST /v1/phone-numbers".to_owned(), Target::Create)
        );
        assert_eq!(route(&Method::GET, "/v1/phone-numbers").1, Target::List);
        assert_eq!(
            route(&Method::PUT, "/v1/phone-numbers"),
            (
                "PUT /v1/phone-numbers".to_owned(),
                Target::NotAllowed("GET, POST")
            )
        );
        assert_eq!(
            route(&Method::PATCH, &format!("/v1/phone-numbers/{id}")),
            (
                "PATCH /v1/phone-numbers/{phone_id}".to_owned(),
                Target::Patch(id.to_owned())
            )
        );
        assert_eq!(
            route(&Method::GET, "/v1/phone-numbers/not-a-uuid").1,
            Target::Get("not-a-uuid".to_owned())
        );
        assert_eq!(
            route(&Method::POST, "/v1/phone-numbers/x").1,
            Target::NotAllowed("GET, PATCH, DELETE")
        );
        for path in [
            "/v1/phone-numbers/purchase",
            "/v1/phone-numbers/search",
            "/v1/phone-numbers/",
            "/v1/phone-numbers/a/b",
            "/v1/agents",
            "/",
        ] {
            assert_eq!(
                route(&Method::POST, path),
                ("POST <unmatched>".to_owned(), Target::NotFound),
                "{path}"
            );
        }
    }
}
