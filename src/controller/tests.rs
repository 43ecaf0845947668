//! Mocked-apiserver scenarios (tower-test) for crash points a real server cannot produce on
//! demand. A tiny in-memory apiserver answers the reconciler's requests for one object, records
//! them, and fails the ones a scenario names; `FakeOneInbox` records OneInbox calls.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use kube::client::Body;
use kube::runtime::events::Reporter;
use kube::{Client, ResourceExt, runtime::reflector};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::{Context, Settings, backoff::Backoff, reconcile, take_our_echo};
use crate::crd::PhoneNumber;
use crate::metrics::Metrics;
use crate::mutex::lock;
use crate::oneinbox::{
    ApiError, Deregistered, OneInboxApi, PatchRequest, RegisterRequest, Registration,
};

// ------------------------------------------------------------------ fake OneInbox

#[derive(Default)]
struct FakeOneInbox {
    regs: Mutex<Vec<Registration>>,
    calls: Mutex<Vec<&'static str>>,
    /// Errors returned by the next calls, in order (None = behave normally).
    fail_register: Mutex<VecDeque<ApiError>>,
}

impl FakeOneInbox {
    fn calls(&self, op: &str) -> usize {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| **c == op)
            .count()
    }
    fn record(&self, op: &'static str) {
        self.calls.lock().unwrap().push(op);
    }
}

fn registration(req: &RegisterRequest) -> Registration {
    Registration {
        id: uuid::Uuid::new_v4().to_string(),
        phone_number: req.phone_number.clone(),
        friendly_name: req.friendly_name.clone(),
        provider: req.provider.clone(),
        agent_id: req.agent_id.clone(),
        status: "active".into(),
        inbound_trunk_id: None,
        outbound_trunk_id: Some("ST_out".into()),
        dispatch_rule_id: None,
        // Now, as the API stamps a new registration (after the attempt's marker).
        created_at: jiff::Timestamp::now().to_string(),
        updated_at: jiff::Timestamp::now().to_string(),
        inbound_routing: None,
    }
}

impl OneInboxApi for Arc<FakeOneInbox> {
    fn for_account(&self, _: &crate::oneinbox::AccountEndpoint) -> Result<Self, String> {
        Ok(self.clone())
    }
    async fn verify(&self) -> Result<(), ApiError> {
        Ok(())
    }
    fn in_background(&self) -> Self {
        self.clone()
    }
    async fn register(&self, req: &RegisterRequest) -> Result<Registration, ApiError> {
        self.record("register");
        if let Some(e) = self.fail_register.lock().unwrap().pop_front() {
            return Err(e);
        }
        let reg = registration(req);
        self.regs.lock().unwrap().push(reg.clone());
        Ok(reg)
    }
    async fn get(&self, id: &str) -> Result<Registration, ApiError> {
        self.record("get");
        self.regs
            .lock()
            .unwrap()
            .iter()
            .find(|r| r.id == id)
            .cloned()
            .ok_or(ApiError::NotFound)
    }
    async fn find_by_number(&self, number: &str) -> Result<Vec<Registration>, ApiError> {
        self.record("list");
        Ok(self
            .regs
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.phone_number == number)
            .cloned()
            .collect())
    }
    async fn patch(&self, id: &str, patch: &PatchRequest) -> Result<Registration, ApiError> {
        self.record("patch");
        let mut regs = self.regs.lock().unwrap();
        let reg = regs
            .iter_mut()
            .find(|r| r.id == id)
            .ok_or(ApiError::NotFound)?;
        if let Some(name) = &patch.friendly_name {
            reg.friendly_name = name.clone();
        }
        if let Some(agent) = &patch.agent_id {
            reg.agent_id = agent.clone();
        }
        Ok(reg.clone())
    }
    async fn deregister(&self, id: &str) -> Result<Deregistered, ApiError> {
        self.record("delete");
        let mut regs = self.regs.lock().unwrap();
        let before = regs.len();
        regs.retain(|r| r.id != id);
        Ok(if regs.len() < before {
            Deregistered::Released
        } else {
            Deregistered::AlreadyGone
        })
    }
}

// ------------------------------------------------------------------ mock apiserver

/// One request as the apiserver saw it.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path: String,
    query: String,
    body: Value,
}

struct ApiServerState {
    obj: Value,
    rv: u64,
    seen: Vec<Seen>,
    /// Answer the n-th request (0-based, events excluded) of this kind with 500.
    fail_status_patch: Option<usize>,
    fail_metadata_patch: Option<usize>,
    status_patches: usize,
    metadata_patches: usize,
    /// Reasons of the Events published.
    events: Vec<String>,
    /// A user's spec update that lands just before the next status write (merged into the
    /// spec, generation + 1): the write then answers with that newer object.
    spec_update_before_status_write: Option<Value>,
    /// The user deletes the object just before the status write with this index: the write
    /// then answers with the object being deleted.
    delete_before_status_write: Option<usize>,
    /// The PhoneNumber CRD carries a deletionTimestamp (an uninstall).
    definition_deleting: bool,
}

fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

fn respond(code: StatusCode, body: Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(&body).unwrap()))
        .unwrap()
}

fn status_error(code: u16, reason: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": reason, "reason": reason, "code": code})
}

impl ApiServerState {
    fn handle(&mut self, method: &str, path: &str, query: &str, body: Value) -> Response<Body> {
        if path.contains("/events") {
            self.events
                .push(body["reason"].as_str().unwrap_or_default().to_owned());
            return respond(StatusCode::CREATED, body);
        }
        if path.ends_with("/customresourcedefinitions/phonenumbers.oneinbox.ai") {
            let mut crd = json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
                "metadata": {"name": "phonenumbers.oneinbox.ai", "resourceVersion": "1"}});
            if self.definition_deleting {
                crd["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:02:00Z");
            }
            return respond(StatusCode::OK, crd);
        }
        self.seen.push(Seen {
            method: method.into(),
            path: path.into(),
            query: query.into(),
            body: body.clone(),
        });
        let precondition = body["metadata"]["resourceVersion"]
            .as_str()
            .map(str::to_owned);
        if let Some(rv) = precondition
            && rv != self.rv.to_string()
        {
            return respond(StatusCode::CONFLICT, status_error(409, "Conflict"));
        }
        match (method, path.ends_with("/status")) {
            ("PATCH", true) => {
                let n = self.status_patches;
                self.status_patches += 1;
                if self.fail_status_patch == Some(n) {
                    return respond(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        status_error(500, "InternalError"),
                    );
                }
                if self.delete_before_status_write == Some(n) {
                    self.obj["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
                }
                if let Some(spec) = self.spec_update_before_status_write.take() {
                    merge(&mut self.obj["spec"], &spec);
                    let generation = self.obj["metadata"]["generation"].as_i64().unwrap_or(0);
                    self.obj["metadata"]["generation"] = json!(generation + 1);
                }
                self.obj["status"] = body["status"].clone();
            }
            ("PATCH", false) => {
                let n = self.metadata_patches;
                self.metadata_patches += 1;
                if self.fail_metadata_patch == Some(n) {
                    return respond(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        status_error(500, "InternalError"),
                    );
                }
                if body.is_array() {
                    // JSON patch (finalizer removal): test + remove.
                    let patch: json_patch::Patch = serde_json::from_value(body.clone()).unwrap();
                    if json_patch::patch(&mut self.obj, &patch).is_err() {
                        return respond(
                            StatusCode::UNPROCESSABLE_ENTITY,
                            status_error(422, "Invalid"),
                        );
                    }
                } else {
                    let mut meta = body["metadata"].clone();
                    if let Some(m) = meta.as_object_mut() {
                        m.remove("resourceVersion");
                    }
                    merge(&mut self.obj["metadata"], &meta);
                }
            }
            _ => return respond(StatusCode::NOT_FOUND, status_error(404, "NotFound")),
        }
        self.rv += 1;
        self.obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        respond(StatusCode::OK, self.obj.clone())
    }

    fn object(&self) -> Arc<PhoneNumber> {
        Arc::new(serde_json::from_value(self.obj.clone()).unwrap())
    }
}

struct Harness {
    ctx: Arc<Context<Arc<FakeOneInbox>>>,
    api: Arc<Mutex<ApiServerState>>,
    fake: Arc<FakeOneInbox>,
    /// Objects a pass asked to reconcile again (the siblings channel).
    woken: Mutex<mpsc::UnboundedReceiver<reflector::ObjectRef<super::CachedPhoneNumber>>>,
}

impl Harness {
    fn new(obj: Value) -> Harness {
        let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(svc, "ns");
        let state = Arc::new(Mutex::new(ApiServerState {
            obj,
            rv: 1,
            seen: Vec::new(),
            fail_status_patch: None,
            fail_metadata_patch: None,
            status_patches: 0,
            metadata_patches: 0,
            events: Vec::new(),
            spec_update_before_status_write: None,
            delete_before_status_write: None,
            definition_deleting: false,
        }));
        let server_state = state.clone();
        tokio::spawn(async move {
            while let Some((req, send)) = handle.next_request().await {
                let method = req.method().to_string();
                let path = req.uri().path().to_string();
                let query = req.uri().query().unwrap_or_default().to_string();
                let bytes = req.into_body().collect_bytes().await.unwrap();
                let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                let resp = server_state
                    .lock()
                    .unwrap()
                    .handle(&method, &path, &query, body);
                send.send_response(resp);
            }
        });
        let fake = Arc::new(FakeOneInbox::default());
        let (store, _writer) = reflector::store::<super::CachedPhoneNumber>();
        let (siblings, woken) = mpsc::unbounded_channel();
        let account_stores = crate::accounts::stores::AccountStores::unwatched();
        let accounts = Arc::new(crate::accounts::registry::Registry::new(
            fake.clone(),
            crate::accounts::registry::RegistrySettings::operator_only(
                crate::oneinbox::Budget {
                    rate_per_second: std::num::NonZeroU32::new(100).unwrap(),
                    burst: std::num::NonZeroU32::new(100).unwrap(),
                    max_in_flight: 16,
                },
                16,
            ),
        ));
        let ctx = Arc::new(Context {
            client: client.clone(),
            oneinbox: fake.clone(),
            accounts,
            account_stores,
            reporter: Reporter {
                controller: "oneinbox-operator".into(),
                instance: Some("test".into()),
            },
            metrics: Metrics::new(),
            settings: Settings {
                poll_interval: Duration::from_secs(600),
                min_poll_interval: Duration::from_secs(30),
                secret_grace_period: Duration::from_secs(60),
                provisioning_poll: Duration::from_secs(10),
                backoff_base: Duration::from_secs(1),
                backoff_max: Duration::from_secs(60),
                kube_timeout: Duration::from_secs(5),
                hash_key: super::credentials::HashKey::derive(b"oi_sk_unit"),
                secret_access: crate::secrets::SecretAccess::Watch,
            },
            backoff: Backoff::default(),
            memory: Default::default(),
            secret_versions: Default::default(),
            secrets_listed: Arc::new(std::sync::atomic::AtomicBool::new(true)),
            store,
            claims: Default::default(),
            housekept: Default::default(),
            pns_listed: Arc::new(std::sync::atomic::AtomicBool::new(true)),
            siblings,
        });
        Harness {
            ctx,
            api: state,
            fake,
            woken: Mutex::new(woken),
        }
    }

    /// As after a restart: no record of any check.
    fn forget_checks(&self) {
        let uid = self.obj()["metadata"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        self.ctx
            .memory
            .lock()
            .unwrap()
            .update(&uid, |m| m.check = None);
    }

    /// As after a restart: nothing says who released a registration.
    fn forget_releases(&self) {
        let uid = self.obj()["metadata"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        self.ctx
            .memory
            .lock()
            .unwrap()
            .update(&uid, |m| m.released = None);
    }

    async fn reconcile(&self) -> crate::error::Result<kube::runtime::controller::Action> {
        let obj = self.api.lock().unwrap().object();
        tokio::time::timeout(Duration::from_secs(10), reconcile(obj, self.ctx.clone()))
            .await
            .expect("reconcile timed out")
    }

    fn seen(&self) -> Vec<Seen> {
        self.api.lock().unwrap().seen.clone()
    }

    fn clear_seen(&self) {
        self.api.lock().unwrap().seen.clear();
    }

    fn obj(&self) -> Value {
        self.api.lock().unwrap().obj.clone()
    }
}

/// `obj` as the cache keeps it.
fn packed(obj: &PhoneNumber) -> super::CachedPhoneNumber {
    super::CachedPhoneNumber::pack(obj).unwrap()
}

fn new_object() -> Value {
    json!({
        "apiVersion": "oneinbox.ai/v1alpha1",
        "kind": "PhoneNumber",
        "metadata": {"name": "pn", "namespace": "ns", "uid": "uid-1", "generation": 1, "resourceVersion": "1",
                     "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"phoneNumber": "+15551234567", "provider": "telnyx",
                 "agentId": "3c90c3cc-0d44-4b50-8888-8dd25736052a",
                 "credentialId": "9b2d7c1e-3f4a-4b5c-8d6e-7f8a9b0c1d2e"}
    })
}

// ------------------------------------------------------------------ scenarios

/// The registration attempt the object's annotation records, if any.
fn attempt_of(obj: &Value) -> Option<Value> {
    let recorded =
        obj["metadata"]["annotations"][crate::crd::ANNOTATION_REGISTRATION_ATTEMPT].as_str()?;
    serde_json::from_str(recorded).ok()
}

/// Whether an attempt is in flight: recorded, and its outcome not in the status.
fn attempt_pending(obj: &Value) -> bool {
    attempt_of(obj).is_some_and(|a| a["token"] != obj["status"]["settledAttempt"])
}

#[tokio::test]
async fn a_create_is_one_guarded_metadata_write_the_post_and_one_status_write() {
    let h = Harness::new(new_object());
    h.reconcile().await.expect("reconcile");
    let seen = h.seen();
    // 1. finalizer and attempt (one merge patch guarded by resourceVersion), then the POST,
    // 2. the ids in status, settling the attempt. No other write (the event aside).
    assert_eq!(seen[0].method, "PATCH");
    assert!(!seen[0].path.ends_with("/status"));
    assert_eq!(
        seen[0].body["metadata"]["finalizers"],
        json!(["oneinbox.ai/deregister"])
    );
    assert_eq!(seen[0].body["metadata"]["resourceVersion"], json!("1"));
    let recorded = seen[0].body["metadata"]["annotations"]
        [crate::crd::ANNOTATION_REGISTRATION_ATTEMPT]
        .as_str()
        .expect("attempt recorded");
    let attempt: Value = serde_json::from_str(recorded).expect("json");
    assert!(attempt["token"].is_string() && attempt["startedAt"].is_string());
    assert!(attempt["credentialsHash"].is_string());
    assert!(seen[1].path.ends_with("/status"));
    assert!(
        seen[1].query.contains("fieldManager=oneinbox-operator")
            && seen[1].query.contains("force=true"),
        "{}",
        seen[1].query
    );
    assert!(seen[1].body["status"]["phoneNumberId"].is_string());
    assert_eq!(seen[1].body["status"]["settledAttempt"], attempt["token"]);
    assert_eq!(seen.len(), 2, "{seen:#?}");
    assert_eq!(h.fake.calls("register"), 1);
    let obj = h.obj();
    assert!(!attempt_pending(&obj), "{obj}");
    assert!(
        obj["metadata"]["annotations"]
            .get("oneinbox.ai/phone-number-id")
            .is_none(),
        "no id annotation written: {obj}"
    );
}

#[tokio::test]
async fn the_watch_event_of_a_pass_s_last_write_is_an_echo_unless_a_stale_pass_waits_for_it() {
    let h = Harness::new(new_object());
    h.reconcile().await.expect("create");
    let written = h.api.lock().unwrap().object();
    let uid = written.metadata.uid.clone().expect("uid");
    assert_eq!(written.resource_version().as_deref(), Some("3"));
    let at = |rv: &str| {
        let mut o = (*written).clone();
        o.metadata.resource_version = Some(rv.into());
        o
    };
    let echo = |o: &PhoneNumber| take_our_echo(&mut lock(&h.ctx.memory), &packed(o));
    assert!(
        echo(&written),
        "the create ended Ready: its last write is an echo"
    );
    assert!(echo(&at("2")), "older than our last write");
    assert!(!echo(&at("4")), "someone else's later write");

    // A pass handed the older version (a Secret event while the cache lags) replaces what the
    // create scheduled and ends waiting for the watch: the event of the write must start one.
    let action = reconcile(Arc::new(at("2")), h.ctx.clone())
        .await
        .expect("stale pass");
    assert_eq!(action, kube::runtime::controller::Action::await_change());
    assert!(!echo(&written), "awaited by the stale pass: not skipped");
    assert_eq!(lock(&h.ctx.memory).get(&uid).written, Some(3));
}

#[tokio::test]
async fn a_pass_that_skipped_its_echoes_and_did_not_end_ready_asks_for_another() {
    // As if the watch had skipped the echo of a write while the pass ran (`take_echo`).
    let skipped = |h: &Harness| {
        let uid = h.api.lock().unwrap().object().metadata.uid.clone().unwrap();
        lock(&h.ctx.memory).update(&uid, |m| m.skipped = true);
    };
    let woken = |h: &Harness| {
        let mut rx = h.woken.lock().unwrap();
        std::iter::from_fn(|| rx.try_recv().ok()).count()
    };
    let h = Harness::new(new_object());
    skipped(&h);
    h.reconcile().await.expect("create");
    assert_eq!(woken(&h), 0, "ended Ready with a fresh check: settled");

    let mut paused = new_object();
    paused["metadata"]["annotations"] = json!({ crate::crd::ANNOTATION_PAUSED: "true" });
    let h = Harness::new(paused);
    skipped(&h);
    h.reconcile().await.expect("paused");
    assert_eq!(
        woken(&h),
        1,
        "ended Paused: one more pass in place of the skipped echo"
    );
    h.reconcile().await.expect("paused again");
    assert_eq!(woken(&h), 0, "skipped nothing this time");
}

#[tokio::test]
async fn post_succeeded_but_status_write_failed_next_pass_adopts_without_posting() {
    let h = Harness::new(new_object());
    // Status patch #0 (the id after the POST) fails.
    h.api.lock().unwrap().fail_status_patch = Some(0);
    let err = h.reconcile().await.expect_err("the status write failed");
    assert_eq!(err.metric_label(), "patch_status");
    assert_eq!(h.fake.calls("register"), 1);
    let obj = h.obj();
    assert!(attempt_pending(&obj), "attempt in flight: {obj}");
    assert!(obj["status"].get("phoneNumberId").is_none());

    // The restarted / retried pass looks the number up and adopts it.
    h.reconcile().await.expect("second pass");
    assert_eq!(h.fake.calls("register"), 1, "registered twice");
    assert_eq!(h.fake.calls("list"), 1);
    assert_eq!(h.fake.regs.lock().unwrap().len(), 1);
    let obj = h.obj();
    let id = h.fake.regs.lock().unwrap()[0].id.clone();
    assert_eq!(obj["status"]["phoneNumberId"], json!(id));
    assert!(!attempt_pending(&obj), "attempt settled: {obj}");
}

#[tokio::test]
async fn stale_view_conflicts_instead_of_posting() {
    let h = Harness::new(new_object());
    // Someone else wrote the object after our cache saw it.
    {
        let mut s = h.api.lock().unwrap();
        s.rv = 7;
        s.obj["metadata"]["resourceVersion"] = json!("7");
    }
    let stale: Arc<PhoneNumber> = Arc::new(serde_json::from_value(new_object()).unwrap());
    let res = reconcile(stale, h.ctx.clone()).await;
    assert!(res.is_err(), "a stale write must fail");
    assert_eq!(h.fake.calls("register"), 0, "posted from a stale view");
}

#[tokio::test]
async fn transient_error_on_post_keeps_the_marker_and_writes_no_id() {
    let h = Harness::new(new_object());
    h.fake
        .fail_register
        .lock()
        .unwrap()
        .push_back(ApiError::Unavailable {
            what: "connection".into(),
            detail: "connection closed before message completed".into(),
            retry_after: None,
        });
    assert!(h.reconcile().await.is_err());
    let obj = h.obj();
    assert!(attempt_pending(&obj));
    assert_eq!(
        obj["status"]["conditions"][0]["reason"],
        json!("APIUnavailable")
    );
    // Next pass: look up first (nothing there), then post once more.
    h.reconcile().await.expect("second pass");
    assert_eq!(h.fake.calls("list"), 1);
    assert_eq!(h.fake.calls("register"), 2);
    assert_eq!(h.fake.regs.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn steady_ready_object_costs_zero_writes() {
    let h = Harness::new(new_object());
    h.reconcile().await.expect("create");
    h.clear_seen();
    // Same object again (e.g. the watch echo of our own write): no API call, no write.
    h.reconcile().await.expect("steady");
    assert!(h.seen().is_empty(), "{:#?}", h.seen());
    assert_eq!(
        h.fake.calls("get"),
        0,
        "checked again within the poll interval"
    );
    // After a restart (no memory of the last check): the status records this input, so no
    // GET and no write yet; the first check waits for its point of the poll interval.
    h.forget_checks();
    h.reconcile().await.expect("after restart");
    assert_eq!(h.fake.calls("get"), 0);
    assert!(h.seen().is_empty(), "{:#?}", h.seen());
    let uid = "uid-1";
    let check = h
        .ctx
        .memory
        .lock()
        .unwrap()
        .get(uid)
        .check
        .expect("resumed");
    assert_eq!(
        check.interval,
        Some(super::polling::first_check_in(
            uid,
            Duration::from_secs(600)
        ))
    );
    // When that check is due: one GET, still no write.
    h.ctx.memory.lock().unwrap().update(uid, |m| {
        m.check.as_mut().expect("check").interval = Some(Duration::ZERO)
    });
    h.reconcile().await.expect("first check after restart");
    assert_eq!(h.fake.calls("get"), 1);
    assert!(h.seen().is_empty(), "{:#?}", h.seen());
}

#[tokio::test]
async fn a_status_write_answered_with_a_newer_spec_does_not_count_it_as_applied() {
    // Found by the chaos soak (F11): the status write's answer carries the user's next update;
    // the record of the check must keep the generation this pass brought the API in line with.
    let h = Harness::new(new_object());
    h.reconcile().await.expect("create");
    {
        let mut api = h.api.lock().unwrap();
        api.obj["spec"]["friendlyName"] = json!("first");
        api.obj["metadata"]["generation"] = json!(2);
        api.spec_update_before_status_write = Some(json!({"friendlyName": "second"}));
    }
    h.reconcile().await.expect("generation 2");
    assert_eq!(h.obj()["metadata"]["generation"], json!(3));
    assert_eq!(h.obj()["status"]["observedGeneration"], json!(2));
    // The watch event of that write carries the user's update: it must start a pass (a relist
    // can deliver it without the user's own event before it).
    let answered = h.api.lock().unwrap().object();
    assert!(!take_our_echo(&mut lock(&h.ctx.memory), &packed(&answered)));
    h.reconcile().await.expect("generation 3");
    assert_eq!(h.fake.calls("patch"), 2);
    assert_eq!(
        h.fake.regs.lock().unwrap()[0].friendly_name.as_deref(),
        Some("second")
    );
    assert_eq!(h.obj()["status"]["observedGeneration"], json!(3));
    let events = h.api.lock().unwrap().events.clone();
    assert_eq!(
        events.iter().filter(|r| *r == "Updated").count(),
        2,
        "both user updates reported as such: {events:?}"
    );
    assert!(!events.iter().any(|r| r == "DriftCorrected"), "{events:?}");
}

#[tokio::test]
async fn a_replacement_interrupted_after_deregistering_is_not_reported_lost() {
    // Found by the chaos soak: `Replace` deregisters the old registration, then its
    // pending-create marker write fails (here a 500; in the soak a 409 from a concurrent
    // update, a lost DELETE answer, or a SIGKILL). The next pass finds the old id gone: that
    // is the replacement, not a loss.
    let mut obj = new_object();
    obj["spec"]["replacementPolicy"] = json!("Replace");
    let h = Harness::new(obj);
    h.reconcile().await.expect("create");
    let old = h.obj()["status"]["phoneNumberId"]
        .as_str()
        .unwrap()
        .to_owned();
    // As right after a restart: no record of a check, so each pass GETs the registration.
    h.forget_checks();
    {
        let mut api = h.api.lock().unwrap();
        api.obj["spec"]["credentialId"] = json!("0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9");
        api.obj["metadata"]["generation"] = json!(2);
        api.fail_status_patch = Some(api.status_patches);
    }
    assert!(
        h.reconcile().await.is_err(),
        "the write before the new POST failed"
    );
    assert_eq!(h.fake.calls("delete"), 1);
    // Also after a restart in between: nothing in memory says who released it.
    h.forget_releases();
    h.reconcile().await.expect("next pass");
    let new = h.obj()["status"]["phoneNumberId"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(new, old);
    assert_eq!(h.fake.regs.lock().unwrap().len(), 1);
    let events = h.api.lock().unwrap().events.clone();
    assert!(events.iter().any(|r| r == "Replacing"), "{events:?}");
    assert!(
        !events.iter().any(|r| r == "RegistrationLost"),
        "{events:?}"
    );
}

#[tokio::test]
async fn deleted_during_a_replacement_the_new_registration_is_deregistered_not_leaked() {
    // Found by the chaos smoke: a replacement's DELETE of the old registration, then the POST
    // of the new one; the status write after the POST answers with the object being deleted.
    // The deletion must deregister the new registration, not count the replacement's DELETE.
    let mut obj = new_object();
    obj["spec"]["replacementPolicy"] = json!("Replace");
    let h = Harness::new(obj);
    h.reconcile().await.expect("create");
    h.forget_checks();
    {
        let mut api = h.api.lock().unwrap();
        api.obj["spec"]["credentialId"] = json!("0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9");
        api.obj["metadata"]["generation"] = json!(2);
        // Status write 0: create's persist; 1: the replacement drops the old ids; 2: its
        // persist, answered with the object being deleted.
        api.delete_before_status_write = Some(2);
    }
    h.reconcile().await.expect("replace");
    assert_eq!(h.fake.calls("delete"), 1, "the old registration");
    assert_eq!(h.fake.regs.lock().unwrap().len(), 1, "the new one");
    assert!(
        h.obj()["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty())
    );
    // The next pass is a deletion pass: it deregisters the new registration.
    h.reconcile().await.expect("delete");
    assert_eq!(h.fake.calls("delete"), 2);
    assert!(h.fake.regs.lock().unwrap().is_empty(), "nothing leaked");
}

#[tokio::test]
async fn deregistered_but_finalizer_removal_failed_releases_without_a_second_delete() {
    let h = Harness::new(new_object());
    h.reconcile().await.expect("create");
    {
        let mut s = h.api.lock().unwrap();
        s.obj["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:01:00Z");
        // Metadata patches so far: finalizer and attempt. The next one (finalizer removal) fails.
        s.fail_metadata_patch = Some(1);
    }
    assert!(h.reconcile().await.is_err());
    assert!(h.fake.regs.lock().unwrap().is_empty(), "deregistered");
    assert_eq!(
        h.obj()["metadata"]["finalizers"],
        json!(["oneinbox.ai/deregister"])
    );
    h.reconcile().await.expect("second pass");
    assert_eq!(
        h.fake.calls("delete"),
        1,
        "this process deregistered it: the retry only removes the finalizer"
    );
    assert!(
        h.obj()["metadata"].get("finalizers").is_none()
            || h.obj()["metadata"]["finalizers"] == json!([])
    );
}

#[tokio::test]
async fn a_deletion_while_the_crd_is_deleted_orphans_instead_of_deregistering() {
    let h = Harness::new(new_object());
    h.reconcile().await.expect("create");
    {
        let mut s = h.api.lock().unwrap();
        s.obj["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:01:00Z");
        s.definition_deleting = true;
    }
    h.reconcile().await.expect("deletion pass");
    assert_eq!(h.fake.calls("delete"), 0, "no DELETE during an uninstall");
    assert_eq!(
        h.fake.regs.lock().unwrap().len(),
        1,
        "the number stays registered"
    );
    assert!(
        h.obj()["metadata"].get("finalizers").is_none()
            || h.obj()["metadata"]["finalizers"] == json!([]),
        "the finalizer is gone, so the CRD's deletion is not held up"
    );
    let events = h.api.lock().unwrap().events.clone();
    assert_eq!(events.last().map(String::as_str), Some("Orphaned"));
}

#[test]
fn cache_keeps_only_what_the_operator_reads() {
    let mut pn: PhoneNumber = serde_json::from_value(json!({
        "apiVersion": "oneinbox.ai/v1alpha1", "kind": "PhoneNumber",
        "metadata": {
            "name": "a", "namespace": "ns", "uid": "u", "resourceVersion": "5",
            "finalizers": [crate::crd::FINALIZER],
            "labels": {"app.kubernetes.io/managed-by": "Helm"},
            "annotations": {
                crate::crd::ANNOTATION_PHONE_NUMBER_ID: "id1",
                crate::crd::ANNOTATION_PAUSED: "true",
                "kubectl.kubernetes.io/last-applied-configuration": "{\"spec\":{}}",
                "meta.helm.sh/release-name": "r"
            },
            "managedFields": [{"manager": "kubectl", "operation": "Apply"}]
        },
        "spec": {"phoneNumber": "+15551234567", "provider": "twilio",
                 "agentId": "3c90c3cc-0d44-4b50-8888-8dd25736052a",
                 "credentialId": "3c90c3cc-0d44-4b50-8888-8dd25736052a"}
    }))
    .unwrap();
    let spec = pn.spec.clone();
    crate::crd::slim_for_cache(&mut pn);
    assert_eq!(pn.metadata.managed_fields, None);
    assert_eq!(pn.metadata.labels, None);
    let keys: Vec<&str> = pn
        .metadata
        .annotations
        .iter()
        .flatten()
        .map(|(k, _)| k.as_str())
        .collect();
    assert_eq!(
        keys,
        [
            crate::crd::ANNOTATION_PAUSED,
            crate::crd::ANNOTATION_PHONE_NUMBER_ID
        ]
    );
    assert_eq!(
        pn.metadata.finalizers.as_deref(),
        Some(&[crate::crd::FINALIZER.to_owned()][..])
    );
    assert_eq!(pn.metadata.resource_version.as_deref(), Some("5"));
    assert_eq!(pn.spec, spec);

    // An attempt in flight is kept; a settled one goes (the status says it all).
    let mut attempting = pn.clone();
    attempting.annotations_mut().insert(
        crate::crd::ANNOTATION_REGISTRATION_ATTEMPT.into(),
        json!({"token": "t", "startedAt": "2026-01-01T00:00:00Z"}).to_string(),
    );
    let mut settled = attempting.clone();
    crate::crd::slim_for_cache(&mut attempting);
    assert!(attempting.pending_create().is_some());
    settled.status = Some(crate::crd::PhoneNumberStatus {
        settled_attempt: Some("t".into()),
        ..Default::default()
    });
    crate::crd::slim_for_cache(&mut settled);
    assert_eq!(settled.registration_attempt(), None);
    assert!(settled.annotation(crate::crd::ANNOTATION_PAUSED).is_some());

    let mut foreign_only = pn.clone();
    foreign_only.metadata.annotations = Some([("example.com/x".to_owned(), "y".to_owned())].into());
    crate::crd::slim_for_cache(&mut foreign_only);
    assert_eq!(foreign_only.metadata.annotations, None);
}

#[test]
fn a_drift_check_is_handed_out_once_when_due() {
    use std::time::Instant;
    let at = Instant::now();
    let mut check = super::memory::Checked {
        generation: Some(1),
        id: "id1".into(),
        at,
        interval: Some(Duration::from_secs(60)),
        remote: crate::controller::plan::PatchableDigest::of_registration(&registration(
            &RegisterRequest {
                phone_number: "+15551234567".into(),
                provider: "twilio".into(),
                agent_id: "a".into(),
                friendly_name: None,
                provider_config: None,
                credential_id: Some("c".into()),
                inbound_routing: None,
            },
        )),
        secrets: 0,
        dispatched: false,
    };
    assert!(!check.drift_check_due(at + Duration::from_secs(59)));
    assert!(check.drift_check_due(at + Duration::from_secs(60)));
    check.dispatched = true;
    assert!(
        !check.drift_check_due(at + Duration::from_secs(600)),
        "handed out already"
    );
    check.dispatched = false;
    check.interval = None;
    assert!(
        !check.drift_check_due(at + Duration::from_secs(600)),
        "polling off"
    );
}

#[test]
fn the_sweep_runs_at_a_tenth_of_the_shortest_interval_within_bounds() {
    let period = |secs| super::watches::sweep_period(Duration::from_secs(secs));
    assert_eq!(period(5), Duration::from_millis(500));
    assert_eq!(period(30), Duration::from_secs(1));
    assert_eq!(period(1), Duration::from_millis(100));
    assert_eq!(period(3600), Duration::from_secs(1));
}

/// A restart hands the controller every object at once: each waits at its account's gate
/// holding its pass's future. Its state beyond the gate (the span, the boxed reconcile) is
/// made only once it has a place: 280 bytes waiting, against 1,200 when all of a pass was one
/// future (at 10,000 objects most of a restart's peak memory).
#[tokio::test]
async fn a_pass_waiting_for_its_place_is_small() {
    let h = Harness::new(new_object());
    let obj: PhoneNumber = serde_json::from_value(new_object()).unwrap();
    let waiting = super::pass(Arc::new(packed(&obj)), h.ctx.clone());
    let size = std::mem::size_of_val(&*waiting);
    assert!(size <= 400, "{size} bytes");
}
