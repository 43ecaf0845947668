//! In-memory Kubernetes: the requests the operator makes, answered as a real API server would.
//!
//! - PhoneNumbers: GET; PATCH of the main resource (merge patch, JSON patch) that changes
//!   metadata only, with a `metadata.resourceVersion` in the body as a precondition (409 on a
//!   mismatch); server-side apply (`application/apply-patch+yaml`) on `/status`, which changes
//!   only status, tracks which status fields each field manager owns, drops the fields a manager
//!   stops applying, refuses a conflicting apply without `force`, and honours a resourceVersion
//!   in the body as a precondition. `generation` moves only when the spec changes; a write that
//!   changes nothing takes no new resourceVersion.
//! - Deletion: DELETE sets `deletionTimestamp` while finalizers remain; no finalizer may be
//!   added once it is set; the object goes when the last finalizer does. A namespace deletion
//!   deletes every PhoneNumber and Secret in it (Secrets first or last).
//! - Secrets: GET (404 when missing); armed read faults fail the next GETs (500, 504, 429).
//!   Events: POST (events.k8s.io/v1 or core/v1), recorded.
//! - The PhoneNumber CRD: GET of its metadata, always served and never being deleted.
//!
//! Every write is an effect: the armed crash can stop the server before or after it.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use serde_json::{Value, json};

use crate::world::{Gate, Removed, Shared, StoredObject, World, attempt_in_flight, lock};

/// The tower service the operator's `kube::Client` talks to.
#[derive(Clone)]
pub struct KubeService {
    pub world: Shared,
}

type BoxFuture = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

impl tower::Service<Request<Body>> for KubeService {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> BoxFuture {
        let world = self.world.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let bytes = body.collect_bytes().await.unwrap_or_default();
            let content_type = parts
                .headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let answer = lock(&world).handle(
                &parts.method,
                parts.uri.path(),
                parts.uri.query().unwrap_or_default(),
                &content_type,
                &bytes,
            );
            match answer {
                Some(resp) => Ok(resp),
                // The process crashed while this request was in flight: no answer, ever.
                None => std::future::pending().await,
            }
        })
    }
}

fn respond(code: StatusCode, body: &Value) -> Response<Body> {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut resp = Response::new(Body::from(bytes));
    *resp.status_mut() = code;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

fn status_error(code: u16, reason: &str, message: &str) -> Response<Body> {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code
    });
    respond(
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        &body,
    )
}

/// The answer of a failed request that did nothing: 500, 504 or 429.
fn fault_answer(kind: crate::ops::KubeFaultKind) -> Response<Body> {
    use crate::ops::KubeFaultKind;
    match kind {
        KubeFaultKind::Error => status_error(500, "InternalError", "etcdserver: leader changed"),
        KubeFaultKind::Timeout | KubeFaultKind::Lost => status_error(
            504,
            "Timeout",
            "the server was unable to return a response in the time allotted",
        ),
        KubeFaultKind::Throttled => status_error(
            429,
            "TooManyRequests",
            "too many requests, please try again later",
        ),
    }
}

fn query_param<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

/// RFC 7386 JSON merge patch.
pub fn merge(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = json!({});
            }
            if let Value::Object(t) = target {
                for (k, v) in p {
                    if v.is_null() {
                        t.remove(k);
                    } else {
                        merge(t.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
            }
        }
        other => *target = other.clone(),
    }
}

fn finalizers(obj: &Value) -> Vec<String> {
    obj["metadata"]["finalizers"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|f| f.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The status fields one apply sets, as SSA field paths: a top-level key, or one condition
/// (the conditions list is a map keyed by `type`).
fn status_fields(status: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    if let Some(o) = status.as_object() {
        for (k, v) in o {
            if k == "conditions" {
                for c in v.as_array().into_iter().flatten() {
                    out.insert(format!("conditions[{}]", c["type"].as_str().unwrap_or("")));
                }
            } else {
                out.insert(k.clone());
            }
        }
    }
    out
}

fn field_value(status: &Value, field: &str) -> Option<Value> {
    if let Some(t) = field
        .strip_prefix("conditions[")
        .and_then(|s| s.strip_suffix(']'))
    {
        return status["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"].as_str() == Some(t))
            .cloned();
    }
    status.get(field).cloned()
}

fn remove_field(status: &mut Value, field: &str) {
    if let Some(t) = field
        .strip_prefix("conditions[")
        .and_then(|s| s.strip_suffix(']'))
    {
        let now_empty = match status.get_mut("conditions").and_then(Value::as_array_mut) {
            Some(list) => {
                list.retain(|c| c["type"].as_str() != Some(t));
                list.is_empty()
            }
            None => false,
        };
        if now_empty && let Some(o) = status.as_object_mut() {
            o.remove("conditions");
        }
        return;
    }
    if let Some(o) = status.as_object_mut() {
        o.remove(field);
    }
}

fn set_field(status: &mut Value, field: &str, value: Value) {
    if !status.is_object() {
        *status = json!({});
    }
    if field.starts_with("conditions[") {
        let t = value["type"].clone();
        if !status.get("conditions").is_some_and(Value::is_array) {
            status["conditions"] = json!([]);
        }
        if let Some(list) = status.get_mut("conditions").and_then(Value::as_array_mut) {
            match list.iter_mut().find(|c| c["type"] == t) {
                Some(c) => *c = value,
                None => list.push(value),
            }
        }
        return;
    }
    status[field] = value;
}

impl World {
    /// Answer one request; `None` = the server crashed and never answers.
    pub fn handle(
        &mut self,
        method: &Method,
        path: &str,
        query: &str,
        content_type: &str,
        body: &[u8],
    ) -> Option<Response<Body>> {
        let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        if method == Method::GET
            && let Some((kind, left)) = self.kube_read_faults.take()
        {
            if left > 1 {
                self.kube_read_faults = Some((kind, left - 1));
            }
            // A fault is a stimulus when it fires.
            self.stimuli.push((self.now_ms, None));
            return Some(fault_answer(kind));
        }
        match (method.as_str(), segs.as_slice()) {
            ("POST", ["apis", "events.k8s.io", "v1", "namespaces", ns, "events"])
            | ("POST", ["api", "v1", "namespaces", ns, "events"]) => {
                let ns = ns.to_string();
                self.event(&ns, body)
            }
            // The PhoneNumber CRD's metadata, read before a deletion deregisters: always
            // served here (an uninstall is an e2e scenario, tests/e2e/deletion.rs).
            (
                "GET",
                [
                    "apis",
                    "apiextensions.k8s.io",
                    "v1",
                    "customresourcedefinitions",
                    "phonenumbers.oneinbox.ai",
                ],
            ) => Some(respond(
                StatusCode::OK,
                &json!({
                    "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
                    "metadata": {"name": "phonenumbers.oneinbox.ai", "resourceVersion": "1"}
                }),
            )),
            ("GET", ["api", "v1", "namespaces", ns, "secrets", name]) => {
                Some(self.get_secret(ns, name))
            }
            (
                "GET",
                [
                    "apis",
                    "oneinbox.ai",
                    "v1alpha1",
                    "namespaces",
                    ns,
                    "phonenumbers",
                    name,
                ],
            ) => {
                let key = (ns.to_string(), name.to_string());
                Some(match self.objects.get(&key) {
                    Some(s) => respond(StatusCode::OK, &s.obj),
                    None => status_error(404, "NotFound", "phonenumbers not found"),
                })
            }
            (
                "PATCH",
                [
                    "apis",
                    "oneinbox.ai",
                    "v1alpha1",
                    "namespaces",
                    ns,
                    "phonenumbers",
                    name,
                ],
            ) => {
                let key = (ns.to_string(), name.to_string());
                self.write("kube:patch", body, |w| {
                    w.patch_main(&key, content_type, body)
                })
            }
            (
                "PATCH",
                [
                    "apis",
                    "oneinbox.ai",
                    "v1alpha1",
                    "namespaces",
                    ns,
                    "phonenumbers",
                    name,
                    "status",
                ],
            ) => {
                let key = (ns.to_string(), name.to_string());
                let query = query.to_owned();
                self.write("kube:status", body, |w| {
                    w.apply_status(&key, &query, content_type, body)
                })
            }
            _ => {
                self.violations.push(format!(
                    "model gap: the in-memory Kubernetes does not serve {method} {path}"
                ));
                Some(status_error(404, "NotFound", "not served by the model"))
            }
        }
    }

    /// One write: charged to the running pass, subject to the armed crash.
    fn write(
        &mut self,
        kind: &'static str,
        body: &[u8],
        perform: impl FnOnce(&mut World) -> Response<Body>,
    ) -> Option<Response<Body>> {
        self.record(kind);
        self.write_bodies
            .push(String::from_utf8_lossy(body).into_owned());
        let gate = self.gate();
        // An Event that fails (or never gets there) is lost: Events are best effort.
        if kind == "kube:event"
            && (!matches!(gate, Gate::Go) || self.kube_faults.is_some())
            && let Some(uid) = self.current.clone()
        {
            self.events_lost.insert(uid);
        }
        match gate {
            Gate::Hang => None,
            Gate::PerformThenHang => {
                perform(self);
                None
            }
            Gate::Go => {
                let Some((kind, left)) = self.kube_faults.take() else {
                    return Some(perform(self));
                };
                if left > 1 {
                    self.kube_faults = Some((kind, left - 1));
                }
                // A fault is a stimulus when it fires.
                self.stimuli.push((self.now_ms, None));
                use crate::ops::KubeFaultKind;
                Some(match kind {
                    KubeFaultKind::Lost => {
                        perform(self);
                        status_error(
                            504,
                            "Timeout",
                            "the server was unable to return a response in the time allotted, but may still be processing the request",
                        )
                    }
                    kind => fault_answer(kind),
                })
            }
        }
    }

    fn event(&mut self, ns: &str, body: &[u8]) -> Option<Response<Body>> {
        let ns = ns.to_owned();
        self.write("kube:event", body, move |w| {
            let mut ev: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
            if !ev.is_object() {
                return status_error(400, "BadRequest", "not an Event");
            }
            let rv = w.next_rv();
            ev["metadata"]["namespace"] = json!(ns);
            ev["metadata"]["resourceVersion"] = json!(rv.to_string());
            ev["metadata"]["uid"] = json!(format!("event-{rv}"));
            if ev["reason"] == "Adopted" {
                let regarding = if ev["regarding"].is_object() {
                    &ev["regarding"]
                } else {
                    &ev["involvedObject"]
                };
                if let Some(uid) = regarding["uid"].as_str() {
                    w.adoptions.insert(uid.to_owned());
                }
            }
            w.events.push(ev.clone());
            respond(StatusCode::CREATED, &ev)
        })
    }

    fn get_secret(&self, ns: &str, name: &str) -> Response<Body> {
        match self.secrets.get(&(ns.to_owned(), name.to_owned())) {
            None => status_error(404, "NotFound", &format!("secrets \"{name}\" not found")),
            Some((rv, data)) => {
                let data: BTreeMap<String, k8s_openapi::ByteString> = data
                    .iter()
                    .map(|(k, v)| (k.clone(), k8s_openapi::ByteString(v.clone().into_bytes())))
                    .collect();
                let data = serde_json::to_value(data).unwrap_or(Value::Null);
                respond(
                    StatusCode::OK,
                    &json!({
                        "apiVersion": "v1", "kind": "Secret",
                        "metadata": {"name": name, "namespace": ns, "resourceVersion": rv.to_string(),
                                     "uid": format!("secret-{ns}-{name}")},
                        "type": "Opaque", "data": data
                    }),
                )
            }
        }
    }

    /// PATCH of the main resource: only metadata can change (status needs the subresource;
    /// the operator never writes spec).
    fn patch_main(
        &mut self,
        key: &(String, String),
        content_type: &str,
        body: &[u8],
    ) -> Response<Body> {
        let Some(stored) = self.objects.get(key) else {
            return status_error(404, "NotFound", "phonenumbers not found");
        };
        let old = stored.obj.clone();
        let mut new = old.clone();
        if content_type.starts_with("application/json-patch+json") {
            let patch: json_patch::Patch = match serde_json::from_slice(body) {
                Ok(p) => p,
                Err(e) => return status_error(400, "BadRequest", &e.to_string()),
            };
            if let Err(e) = json_patch::patch(&mut new, &patch) {
                return status_error(422, "Invalid", &format!("the JSON patch failed: {e}"));
            }
        } else if content_type.starts_with("application/merge-patch+json") {
            let mut patch: Value = match serde_json::from_slice(body) {
                Ok(p) => p,
                Err(e) => return status_error(400, "BadRequest", &e.to_string()),
            };
            if let Some(rv) = patch["metadata"]["resourceVersion"].as_str() {
                if old["metadata"]["resourceVersion"].as_str() != Some(rv) {
                    return status_error(
                        409,
                        "Conflict",
                        "Operation cannot be fulfilled on phonenumbers: the object has been modified; please apply your changes to the latest version and try again",
                    );
                }
                if let Some(m) = patch["metadata"].as_object_mut() {
                    m.remove("resourceVersion");
                }
            }
            merge(&mut new, &patch);
        } else {
            self.violations
                .push(format!("model gap: PATCH with content type {content_type}"));
            return status_error(415, "UnsupportedMediaType", content_type);
        }
        // The main resource ignores status, and these metadata fields are the server's.
        new["status"] = old["status"].clone();
        if old["status"].is_null()
            && let Some(o) = new.as_object_mut()
        {
            o.remove("status");
        }
        for f in [
            "uid",
            "name",
            "namespace",
            "creationTimestamp",
            "generation",
            "deletionTimestamp",
            "resourceVersion",
        ] {
            new["metadata"][f] = old["metadata"][f].clone();
            if old["metadata"][f].is_null()
                && let Some(m) = new["metadata"].as_object_mut()
            {
                m.remove(f);
            }
        }
        if !old["metadata"]["deletionTimestamp"].is_null() {
            let before = finalizers(&old);
            if finalizers(&new).iter().any(|f| !before.contains(f)) {
                return status_error(
                    422,
                    "Invalid",
                    "metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted",
                );
            }
        }
        let out = self.commit(key, new);
        respond(StatusCode::OK, &out)
    }

    /// Server-side apply on the status subresource.
    fn apply_status(
        &mut self,
        key: &(String, String),
        query: &str,
        content_type: &str,
        body: &[u8],
    ) -> Response<Body> {
        if !content_type.starts_with("application/apply-patch+yaml") {
            self.violations.push(format!(
                "model gap: status PATCH with content type {content_type}"
            ));
            return status_error(415, "UnsupportedMediaType", content_type);
        }
        let Some(manager) = query_param(query, "fieldManager").map(str::to_owned) else {
            return status_error(400, "BadRequest", "fieldManager is required for apply");
        };
        let force = query_param(query, "force") == Some("true");
        let applied: Value = match serde_json::from_slice(body)
            .or_else(|_| yaml_serde::from_slice::<Value>(body).map_err(|e| e.to_string()))
        {
            Ok(v) => v,
            Err(e) => return status_error(400, "BadRequest", &e),
        };
        if applied["apiVersion"] != "oneinbox.ai/v1alpha1" || applied["kind"] != "PhoneNumber" {
            return status_error(400, "BadRequest", "apply body is not a PhoneNumber");
        }
        let Some(stored) = self.objects.get(key) else {
            return status_error(404, "NotFound", "phonenumbers not found");
        };
        if let Some(name) = applied["metadata"]["name"].as_str()
            && name != key.1
        {
            return status_error(400, "BadRequest", "the name in the body does not match");
        }
        if let Some(rv) = applied["metadata"]["resourceVersion"].as_str()
            && stored.obj["metadata"]["resourceVersion"].as_str() != Some(rv)
        {
            return status_error(
                409,
                "Conflict",
                "Operation cannot be fulfilled on phonenumbers: the object has been modified; please apply your changes to the latest version and try again",
            );
        }
        let old = stored.obj.clone();
        let mut managed = stored.managed.clone();
        let new_status = applied["status"].clone();
        let fields = status_fields(&new_status);
        let old_status = old["status"].clone();
        // Conflicts with other managers' fields.
        let mut conflicts = Vec::new();
        for (m, owned) in managed.iter_mut() {
            if *m == manager {
                continue;
            }
            let clash: Vec<String> = owned
                .iter()
                .filter(|f| {
                    fields.contains(*f)
                        && field_value(&old_status, f) != field_value(&new_status, f)
                })
                .cloned()
                .collect();
            if !clash.is_empty() {
                if force {
                    for f in &clash {
                        owned.remove(f);
                    }
                } else {
                    conflicts.extend(clash.into_iter().map(|f| format!("{m}: .status.{f}")));
                }
            }
        }
        if !conflicts.is_empty() {
            return status_error(
                409,
                "Conflict",
                &format!("Apply failed with conflicts: {}", conflicts.join(", ")),
            );
        }
        let mut status = if old_status.is_object() {
            old_status.clone()
        } else {
            json!({})
        };
        let previously = managed.get(&manager).cloned().unwrap_or_default();
        for f in previously.difference(&fields) {
            let owned_by_other = managed
                .iter()
                .any(|(m, owned)| *m != manager && owned.contains(f));
            if !owned_by_other {
                remove_field(&mut status, f);
            }
        }
        for f in &fields {
            if let Some(v) = field_value(&new_status, f) {
                set_field(&mut status, f, v);
            }
        }
        // As structured-merge-diff merges a map-list: the applied items in the applied order,
        // then the items only other managers own (the field set above is sorted, not ordered).
        if let Some(list) = status.get_mut("conditions").and_then(Value::as_array_mut) {
            let applied: Vec<&Value> = new_status["conditions"]
                .as_array()
                .map(|l| l.iter().map(|c| &c["type"]).collect())
                .unwrap_or_default();
            list.sort_by_key(|c| {
                applied
                    .iter()
                    .position(|t| **t == c["type"])
                    .unwrap_or(usize::MAX)
            });
        }
        managed.insert(manager, fields);
        let mut new = old.clone();
        if status.as_object().is_some_and(|o| o.is_empty()) {
            if let Some(o) = new.as_object_mut() {
                o.remove("status");
            }
        } else {
            new["status"] = status;
        }
        if let Some(s) = self.objects.get_mut(key) {
            s.managed = managed;
        }
        let out = self.commit(key, new);
        respond(StatusCode::OK, &out)
    }

    /// A new registration attempt in flight: the operator's look-up after an ambiguous outcome
    /// cannot tell its own registration from one of the number made at most its clock-skew
    /// allowance (1 s) before the attempt started, so those become claimable by it too.
    fn note_attempt(&mut self, old: &Value, new: &Value) {
        let Some(attempt) = attempt_in_flight(new) else {
            return;
        };
        if attempt_in_flight(old).is_some_and(|a| a["token"] == attempt["token"]) {
            return;
        }
        if let (Some(uid), Some(number), Some(started)) = (
            new["metadata"]["uid"].as_str(),
            new["spec"]["phoneNumber"].as_str(),
            attempt["startedAt"]
                .as_str()
                .and_then(|t| t.parse::<jiff::Timestamp>().ok()),
        ) {
            let earliest = started - jiff::SignedDuration::from_secs(1);
            let ws = crate::world::ws_of(new);
            for r in self.api.regs.values_mut().filter(|r| r.ws == ws) {
                let recent = r
                    .reg
                    .created_at
                    .parse::<jiff::Timestamp>()
                    .is_ok_and(|c| c >= earliest);
                if r.reg.phone_number == number && recent {
                    r.claimants.insert(uid.to_owned());
                }
            }
        }
    }

    /// Store a new version of an object: a new resourceVersion if anything changed, the
    /// generation bumped if the spec changed, and removal once a deleted object has no
    /// finalizers left. Returns the object as stored (or as it was last).
    pub fn commit(&mut self, key: &(String, String), mut new: Value) -> Value {
        let Some(stored) = self.objects.get(key) else {
            return new;
        };
        let old = &stored.obj;
        if *old == new {
            return new;
        }
        let old = old.clone();
        self.note_attempt(&old, &new);
        if old["spec"] != new["spec"] {
            let g = old["metadata"]["generation"].as_i64().unwrap_or(1);
            new["metadata"]["generation"] = json!(g + 1);
        }
        let rv = self.next_rv();
        new["metadata"]["resourceVersion"] = json!(rv.to_string());
        let gone = !new["metadata"]["deletionTimestamp"].is_null() && finalizers(&new).is_empty();
        self.check_held_with_finalizer(key, &new, gone);
        if gone {
            self.remove_object(key);
        } else if let Some(s) = self.objects.get_mut(key) {
            s.obj = new.clone();
        }
        new
    }

    fn remove_object(&mut self, key: &(String, String)) {
        let Some(stored) = self.objects.remove(key) else {
            return;
        };
        let uid = stored.obj["metadata"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let orphan = crate::world::orphans(&stored.obj) || crate::driver::observed(&stored.obj);
        if orphan {
            self.check_orphan_left_its_registration(&uid, &stored.obj);
        }
        // The id annotation is a standing instruction: once its holder is gone, a live object
        // whose annotation names the registration (for its own number) adopts it deliberately.
        // So does one that an observer held (its status named it, made outside): the annotated
        // object was refused only because the observer held it.
        let observed_id = crate::driver::observed(&stored.obj)
            .then(|| stored.obj["status"]["phoneNumberId"].as_str())
            .flatten();
        let held: Vec<String> = self
            .api
            .regs
            .iter()
            .filter(|(id, r)| {
                r.owner.as_deref() == Some(uid.as_str())
                    || (r.owner.is_none() && observed_id == Some(id.as_str()))
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in held {
            let number = self.api.regs.get(&id).map(|r| r.reg.phone_number.clone());
            let ws = self.api.regs.get(&id).map(|r| r.ws.clone());
            // Several may name it: the oldest claim (creation time, then namespace and name).
            let heir = self
                .objects
                .iter()
                .filter(|(_, s)| {
                    s.obj["metadata"]["annotations"]["oneinbox.ai/phone-number-id"].as_str()
                        == Some(id.as_str())
                        && s.obj["spec"]["phoneNumber"].as_str() == number.as_deref()
                        && ws.as_deref() == Some(crate::world::ws_of(&s.obj).as_str())
                })
                .min_by_key(|(k, s)| {
                    (
                        s.obj["metadata"]["creationTimestamp"]
                            .as_str()
                            .and_then(|t| t.parse::<jiff::Timestamp>().ok()),
                        (*k).clone(),
                    )
                })
                .and_then(|(_, s)| s.obj["metadata"]["uid"].as_str().map(str::to_owned));
            if let (Some(heir), Some(r)) = (heir, self.api.regs.get_mut(&id)) {
                r.owner = Some(heir);
                r.by_annotation = true;
            }
        }
        let finalized = finalizers(&stored.obj)
            .iter()
            .any(|f| f == oneinbox_operator::crd::FINALIZER);
        let held = (self.status_named.contains_key(&uid) || self.adoptions.contains(&uid))
            && !self.takeover_pending.contains(&uid);
        self.removed.push(Removed {
            uid,
            key: key.clone(),
            orphan,
            finalized,
            held,
        });
        self.maybe_finish_namespace(&key.0);
        self.finish_accounts();
    }

    fn maybe_finish_namespace(&mut self, ns: &str) {
        if !self.terminating_namespaces.contains(ns) || self.objects.keys().any(|(n, _)| n == ns) {
            return;
        }
        if self.secrets_after_objects.remove(ns) {
            self.delete_secrets_of(ns);
        }
        self.terminating_namespaces.remove(ns);
    }

    /// The Secrets of a namespace being deleted; an account's key Secret only once the
    /// namespace's PhoneNumbers are gone (a limit of the model: see docs/model-test.md).
    fn delete_secrets_of(&mut self, ns: &str) {
        let objects_left = self.objects.keys().any(|(n, _)| n == ns);
        let names: Vec<String> = self
            .secrets
            .keys()
            .filter(|(n, _)| n == ns)
            .filter(|(n, name)| {
                !objects_left
                    || !crate::world::Acct::ALL
                        .iter()
                        .any(|a| a.key_secret() == (n.as_str(), name.as_str()))
            })
            .map(|(_, name)| name.clone())
            .collect();
        for name in names {
            self.user_delete_secret(ns, &name);
        }
    }

    // ------------------------------------------------------------ user actions

    pub fn user_create(&mut self, ns: &str, name: &str, spec: Value) -> bool {
        let key = (ns.to_owned(), name.to_owned());
        if self.objects.contains_key(&key) || self.terminating_namespaces.contains(ns) {
            return false;
        }
        self.next_uid += 1;
        let uid = format!("uid-{}", self.next_uid);
        let rv = self.next_rv();
        let obj = json!({
            "apiVersion": "oneinbox.ai/v1alpha1", "kind": "PhoneNumber",
            "metadata": {"name": name, "namespace": ns, "uid": uid, "generation": 1,
                         "resourceVersion": rv.to_string(),
                         "creationTimestamp": jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()},
            "spec": spec
        });
        self.objects.insert(
            key,
            StoredObject {
                obj,
                managed: BTreeMap::new(),
            },
        );
        self.stimuli.push((self.now_ms, Some(uid)));
        true
    }

    /// A user's edit of a live object (spec or metadata), as `kubectl edit` would send it.
    pub fn user_edit(&mut self, key: &(String, String), edit: impl FnOnce(&mut Value)) -> bool {
        let Some(stored) = self.objects.get(key) else {
            return false;
        };
        let mut new = stored.obj.clone();
        edit(&mut new);
        let uid = self.uid_of(key);
        self.stimuli.push((self.now_ms, uid));
        self.user_writing = true;
        self.commit(key, new);
        self.user_writing = false;
        true
    }

    pub fn user_delete(&mut self, key: &(String, String)) -> bool {
        let Some(stored) = self.objects.get(key) else {
            return false;
        };
        let uid = self.uid_of(key);
        self.stimuli.push((self.now_ms, uid));
        if finalizers(&stored.obj).is_empty() {
            self.next_rv();
            self.remove_object(key);
            return true;
        }
        if stored.obj["metadata"]["deletionTimestamp"].is_null() {
            let mut new = stored.obj.clone();
            new["metadata"]["deletionTimestamp"] = json!(
                jiff::Timestamp::now()
                    .strftime("%Y-%m-%dT%H:%M:%SZ")
                    .to_string()
            );
            new["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            self.commit(key, new);
        }
        true
    }

    pub fn user_delete_namespace(&mut self, ns: &str, secrets_first: bool) {
        self.terminating_namespaces.insert(ns.to_owned());
        self.stimuli.push((self.now_ms, None));
        // The accounts in it go with it (held by the in-use finalizer while used).
        for a in crate::world::Acct::ALL {
            if a == crate::world::Acct::Sales && ns == "b" {
                self.user_delete_account(a);
            }
        }
        // Its account key Secrets wait for its PhoneNumbers (see `delete_secrets_of`).
        self.secrets_after_objects.insert(ns.to_owned());
        if secrets_first {
            self.delete_secrets_of(ns);
        }
        let keys: Vec<_> = self
            .objects
            .keys()
            .filter(|(n, _)| n == ns)
            .cloned()
            .collect();
        for key in keys {
            self.user_delete(&key);
        }
        self.maybe_finish_namespace(ns);
    }

    pub fn user_put_secret(&mut self, ns: &str, name: &str, key: &str, value: &str) -> bool {
        if self.terminating_namespaces.contains(ns) {
            return false;
        }
        let rv = self.next_rv();
        let entry = self
            .secrets
            .entry((ns.to_owned(), name.to_owned()))
            .or_insert((rv, BTreeMap::new()));
        entry.0 = rv;
        entry.1.insert(key.to_owned(), value.to_owned());
        // Only a real value is a secret to look for (an empty one is in every text).
        if !value.trim().is_empty() {
            self.secret_values.insert(value.to_owned());
        }
        self.secret_events
            .push((ns.to_owned(), name.to_owned(), rv));
        self.stimuli.push((self.now_ms, None));
        true
    }

    /// Put `key` and remove `without` from a Secret (created if missing).
    pub fn user_put_secret_without(
        &mut self,
        ns: &str,
        name: &str,
        key: &str,
        value: &str,
        without: &str,
    ) -> bool {
        if !self.user_put_secret(ns, name, key, value) {
            return false;
        }
        // Not a secret (a user name): it may appear anywhere.
        self.secret_values.remove(value);
        if let Some((_, data)) = self.secrets.get_mut(&(ns.to_owned(), name.to_owned())) {
            data.remove(without);
        }
        true
    }

    pub fn user_delete_secret(&mut self, ns: &str, name: &str) -> bool {
        if self
            .secrets
            .remove(&(ns.to_owned(), name.to_owned()))
            .is_none()
        {
            return false;
        }
        let rv = self.next_rv();
        self.secret_events
            .push((ns.to_owned(), name.to_owned(), rv));
        self.stimuli.push((self.now_ms, None));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn world_with_object() -> (World, (String, String)) {
        let mut w = World::new();
        w.user_create(
            "a",
            "x",
            json!({"phoneNumber": "+15550000001", "provider": "twilio",
                   "agentId": "3c90c3cc-0d44-4b50-8888-8dd25736052a",
                   "credentialId": "9b2d7c1e-3f4a-4b5c-8d6e-7f8a9b0c1d2e"}),
        );
        (w, ("a".to_owned(), "x".to_owned()))
    }

    fn send(
        w: &mut World,
        method: Method,
        path: &str,
        query: &str,
        ct: &str,
        body: Value,
    ) -> (u16, Value) {
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        let resp = w.handle(&method, path, query, ct, &bytes).unwrap();
        let code = resp.status().as_u16();
        let obj = w
            .objects
            .get(&("a".to_owned(), "x".to_owned()))
            .map(|s| s.obj.clone());
        (code, obj.unwrap_or(Value::Null))
    }

    const PN: &str = "/apis/oneinbox.ai/v1alpha1/namespaces/a/phonenumbers/x";
    const MERGE: &str = "application/merge-patch+json";
    const APPLY: &str = "application/apply-patch+yaml";

    #[test]
    fn a_stale_resource_version_is_a_conflict_and_changes_nothing() {
        let (mut w, key) = world_with_object();
        let rv = w.objects[&key].obj["metadata"]["resourceVersion"].clone();
        let body = json!({"metadata": {"finalizers": ["f"], "resourceVersion": "1"}});
        let (code, obj) = send(&mut w, Method::PATCH, PN, "", MERGE, body);
        assert_eq!(code, 409);
        assert_eq!(obj["metadata"]["resourceVersion"], rv);
        let body = json!({"metadata": {"finalizers": ["f"], "resourceVersion": rv}});
        let (code, obj) = send(&mut w, Method::PATCH, PN, "", MERGE, body);
        assert_eq!(code, 200);
        assert_eq!(obj["metadata"]["finalizers"], json!(["f"]));
        assert_ne!(obj["metadata"]["resourceVersion"], rv);
        assert_eq!(
            obj["metadata"]["generation"],
            json!(1),
            "metadata is not spec"
        );
    }

    #[test]
    fn status_apply_owns_fields_and_drops_the_ones_no_longer_applied() {
        let (mut w, key) = world_with_object();
        let apply = |status: Value| json!({"apiVersion": "oneinbox.ai/v1alpha1", "kind": "PhoneNumber", "status": status});
        let q = "fieldManager=oneinbox-operator&force=true";
        let status = PN.to_owned() + "/status";
        let (code, obj) = send(
            &mut w,
            Method::PATCH,
            &status,
            q,
            APPLY,
            apply(json!({"state": "active", "phoneNumberId": "id1"})),
        );
        assert_eq!(code, 200);
        assert_eq!(obj["status"]["phoneNumberId"], json!("id1"));
        // Another manager's field survives; ours that we stop applying goes.
        let (code, _) = send(
            &mut w,
            Method::PATCH,
            &status,
            "fieldManager=other",
            APPLY,
            apply(json!({"note": "x"})),
        );
        assert_eq!(code, 200);
        let (code, obj) = send(
            &mut w,
            Method::PATCH,
            &status,
            q,
            APPLY,
            apply(json!({"state": "active"})),
        );
        assert_eq!(code, 200);
        assert_eq!(obj["status"], json!({"state": "active", "note": "x"}));
        // A clash with another manager needs force.
        let (code, _) = send(
            &mut w,
            Method::PATCH,
            &status,
            "fieldManager=oneinbox-operator",
            APPLY,
            apply(json!({"state": "active", "note": "y"})),
        );
        assert_eq!(code, 409);
        // The status subresource never changes the spec or the metadata.
        let mut body = apply(json!({"state": "active"}));
        body["spec"] = json!({"agentId": "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9"});
        let (code, obj) = send(&mut w, Method::PATCH, &status, q, APPLY, body);
        assert_eq!(code, 200);
        assert_eq!(obj["spec"], w.objects[&key].obj["spec"]);
        assert_eq!(
            obj["spec"]["agentId"],
            json!("3c90c3cc-0d44-4b50-8888-8dd25736052a")
        );
    }

    #[test]
    fn deletion_waits_for_the_last_finalizer_and_refuses_new_ones() {
        let (mut w, key) = world_with_object();
        let rv = w.objects[&key].obj["metadata"]["resourceVersion"].clone();
        send(
            &mut w,
            Method::PATCH,
            PN,
            "",
            MERGE,
            json!({"metadata": {"finalizers": ["f"], "resourceVersion": rv}}),
        );
        assert!(w.user_delete(&key));
        assert!(!w.objects[&key].obj["metadata"]["deletionTimestamp"].is_null());
        let (code, _) = send(
            &mut w,
            Method::PATCH,
            PN,
            "",
            MERGE,
            json!({"metadata": {"finalizers": ["f", "g"]}}),
        );
        assert_eq!(code, 422);
        let patch = json!([{"op": "test", "path": "/metadata/finalizers/0", "value": "f"},
                           {"op": "remove", "path": "/metadata/finalizers/0"}]);
        let (code, _) = send(
            &mut w,
            Method::PATCH,
            PN,
            "",
            "application/json-patch+json",
            patch,
        );
        assert_eq!(code, 200);
        assert!(
            !w.objects.contains_key(&key),
            "gone with its last finalizer"
        );
        assert_eq!(w.removed.len(), 1);
    }

    /// (h) and (b): a status that names a registration without the finalizer is a violation
    /// at once, and deleting that object under Delete policy leaves a leak (b) does not excuse.
    #[test]
    fn a_held_registration_without_the_finalizer_is_a_leak() {
        let (mut w, key) = world_with_object();
        let uid = w.uid_of(&key).unwrap_or_default();
        let id = w.new_registration(
            crate::world::OPERATOR_WS,
            "+15550000001",
            "a",
            None,
            None,
            Some(uid.clone()),
        );
        let mut obj = w.objects[&key].obj.clone();
        obj["status"] = json!({"phoneNumberId": id});
        w.commit(&key, obj);
        assert_eq!(
            w.violations,
            [format!(
                "(h) a/x: status names {id}, but the object does not carry the finalizer"
            )]
        );
        assert!(w.user_delete(&key));
        assert!(w.removed[0].held && !w.removed[0].finalized);
        let v: Vec<String> = w
            .final_checks(&[])
            .into_iter()
            .filter(|l| l.starts_with("(b)"))
            .collect();
        assert_eq!(
            v,
            [format!(
                "(b) a/x was deleted with deletionPolicy Delete, but its registration {id} remains (it went without the finalizer)"
            )]
        );
    }

    /// (b) excuses an adoption named only in the annotation, never confirmed.
    #[test]
    fn an_unconfirmed_adoption_may_go_without_deregistering() {
        let (mut w, key) = world_with_object();
        let uid = w.uid_of(&key).unwrap_or_default();
        w.new_registration(
            crate::world::OPERATOR_WS,
            "+15550000001",
            "a",
            None,
            None,
            Some(uid),
        );
        assert!(w.user_delete(&key));
        assert!(!w.removed[0].held);
        assert!(w.violations.is_empty());
        assert!(!w.final_checks(&[]).iter().any(|l| l.starts_with("(b)")));
    }

    #[test]
    fn a_crash_before_a_write_does_nothing_and_after_it_acts_without_answering() {
        let (mut w, key) = world_with_object();
        let rv = w.objects[&key].obj["metadata"]["resourceVersion"].clone();
        let body = serde_json::to_vec(&json!({"metadata": {"annotations": {"k": "v"}}}))
            .unwrap_or_default();
        w.crash = Some(crate::world::Crash {
            at: w.effects,
            after: false,
        });
        assert!(w.handle(&Method::PATCH, PN, "", MERGE, &body).is_none());
        assert_eq!(w.objects[&key].obj["metadata"]["resourceVersion"], rv);
        w.crashed = false;
        w.crash = Some(crate::world::Crash {
            at: w.effects,
            after: true,
        });
        assert!(w.handle(&Method::PATCH, PN, "", MERGE, &body).is_none());
        assert_eq!(
            w.objects[&key].obj["metadata"]["annotations"]["k"],
            json!("v")
        );
    }
}
