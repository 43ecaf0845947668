//! `make bench`: benchmarks against the real control plane and the mock OneInbox API (issue 6).
//! They report, never threshold. A `harness = false` target that plain `cargo test` skips; run
//! it with `--release` so that the operator and the mock are release builds.
//!
//! 1. burst: N PhoneNumbers applied at once, mock latency 100 ms, with a 50 req/s rate limit
//!    (client budget matched to it) and without one; time until all are Ready, API calls per
//!    created number, deletion burst of the same N afterwards.
//! 2. steady: after the rate-limited burst, N Ready objects idle for a window at a 1-minute
//!    poll: OneInbox calls by endpoint, Kubernetes writes (kube-apiserver `/metrics` and a
//!    namespace watch).
//! 3. latency: one apply → Ready, sequentially, at mock latency 0 and 100 ms.
//! 4. footprint: operator RSS (peak = VmHWM, steady = VmRSS after idling) and CPU seconds at
//!    N (from the burst) and at BENCH_FOOTPRINT_N (10,000).
//! 5. fairness: account A has BENCH_FAIR_BACKLOG (2,000) creates queued at 20 req/s (its
//!    budget and its workspace's limit); account B applies BENCH_FAIR_B (20) objects while the
//!    backlog runs. B's time to all Ready against B alone on the idle operator.
//!
//! 6. lanes: BENCH_LANES_N (10,000) Ready objects whose drift checks fall due together after a
//!    restart at the defaults (1-minute poll, server 20 req/s): 20 new objects applied one by
//!    one meanwhile, apply → Ready p50 / p99.
//!
//! 7. restart: BENCH_RESTART_N (10,000) Ready objects, each with its own Secret; the operator
//!    restarted at its defaults (poll BENCH_RESTART_POLL, 10m): time to `/readyz`, OneInbox
//!    calls and Secret GETs in the first minute, calls per second over two intervals, Secret
//!    GETs in that (steady) window.
//!
//! 8. backlog: BENCH_FOOTPRINT_N PhoneNumbers applied while the operator is stopped, then the
//!    operator started: its own throughput (time to all Ready, CPU), without the load
//!    generator's pace.
//!
//! 10. scale: issue 30's memory at BENCH_SCALE_N objects (comma list, 10000), each with its
//!     own Secret (BENCH_SCALE_SECRETS=1; 0 = credentialId): RSS at all Ready and after idling,
//!     then the operator restarted at its defaults once per BENCH_SCALE_LISTS entry
//!     (`--initial-lists`, `pages,stream`): time to `/readyz`, peak RSS of the new process, RSS
//!     after BENCH_SCALE_WATCH_SECS (60), OneInbox calls and Secret GETs in that window. Strips
//!     the finalizers at the end instead of deleting one by one.
//!
//! 9. sidebyside: ours and crbase (the controller-runtime peer, built from its source outside the
//!    repository) alternating on the same control plane and mock, no rate limit: N creates each,
//!    time to all Ready, kube-apiserver + etcd CPU, operator CPU, RSS, OneInbox calls, the load;
//!    the guards of issue 30's goal 5 per pair (`sidebyside.rs`; `BENCH_SIDE_*`).
//!
//! Environment: `BENCH_ONLY` (comma list of burst, nolimit, latency, defaults, fairness, lanes,
//! restart, backlog, sidebyside, scale, footprint; default all but defaults, lanes, restart, backlog,
//! sidebyside and scale),
//! `BENCH_N` (1000), `BENCH_REPEATS` (3), `BENCH_RATE` (50), `BENCH_LATENCY_MS` (100),
//! `BENCH_STEADY_SECS` (600; 0 = skip), `BENCH_LATENCY_RUNS` (50), `BENCH_FOOTPRINT_N` (10000),
//! `BENCH_IDLE_SECS` (60), `BENCH_OVER_BUDGET` (1: also run the rate-limited burst with a client
//! budget far above the server's). Results are printed and appended as JSON lines to
//! `target/bench/results.jsonl`.

// Test support code: failing loudly is the point.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]
// The shared e2e harness has helpers this target does not use.
#![allow(dead_code)]

#[path = "../e2e/harness.rs"]
mod harness;
mod sidebyside;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use oneinbox_operator::crd::PhoneNumber;
use serde_json::{Value, json};

use harness::*;

fn log(msg: &str) {
    let t = jiff::Timestamp::now().strftime("%H:%M:%S");
    println!("[{t}] {msg}");
    let _ = std::io::stdout().flush();
}

fn results_file() -> PathBuf {
    let dir = repo().join("target/bench");
    let _ = std::fs::create_dir_all(&dir);
    dir.join("results.jsonl")
}

fn record(kind: &str, v: Value) {
    let mut v = v;
    v["bench"] = json!(kind);
    v["at"] = json!(jiff::Timestamp::now().to_string());
    println!("RESULT {v}");
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(results_file())
    {
        let _ = writeln!(f, "{v}");
    }
}

// ------------------------------------------------------------------ the operator process

/// A release operator with production defaults plus `args`; killed on drop.
struct Op {
    child: Child,
    admin_port: u16,
    log: PathBuf,
    args: Vec<String>,
}

#[derive(Clone, Copy, Debug, Default)]
struct ProcStats {
    rss_mib: f64,
    hwm_mib: f64,
    cpu_secs: f64,
}

impl Op {
    fn start(ns: &str, mock_url: &str, extra: &[String]) -> Op {
        let admin_port = free_port();
        let log = std::env::temp_dir().join(format!("oneinbox-bench-{ns}.log"));
        let mut args: Vec<String> = vec![
            "run".into(),
            "--api-url".into(),
            mock_url.into(),
            // The mock speaks plain http on loopback.
            "--allow-insecure-http".into(),
            "--watch-namespace".into(),
            ns.into(),
            "--admin-addr".into(),
            format!("127.0.0.1:{admin_port}"),
        ];
        args.extend(extra.iter().cloned());
        let logf = std::fs::File::create(&log).expect("operator log");
        let child = Command::new(env!("CARGO_BIN_EXE_oneinbox-operator"))
            .args(&args)
            .env("KUBECONFIG", state_dir().join("kubeconfig-operator"))
            .env("ONEINBOX_API_KEY", API_KEY)
            .env_remove("ONEINBOX_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::from(logf))
            .spawn()
            .expect("spawn oneinbox-operator");
        Op {
            child,
            admin_port,
            log,
            args,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stats(&self) -> ProcStats {
        proc_stats(self.pid())
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(r) =
                reqwest::get(format!("http://127.0.0.1:{}/readyz", self.admin_port)).await
                && r.status().is_success()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "operator never ready; log:\n{}",
            tail(&std::fs::read_to_string(&self.log).unwrap_or_default(), 30)
        );
    }

    async fn metrics(&self) -> String {
        match reqwest::get(format!("http://127.0.0.1:{}/metrics", self.admin_port)).await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }
}

impl Drop for Op {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// RSS, peak RSS and CPU seconds (utime + stime) of a process from /proc (zeros if it is gone).
fn proc_stats(pid: u32) -> ProcStats {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |key: &str| -> f64 {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the ")" of comm: state is field 3, utime 14, stime 15.
    let rest: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        rest.get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    ProcStats {
        rss_mib: kib("VmRSS:") / 1024.0,
        hwm_mib: kib("VmHWM:") / 1024.0,
        cpu_secs: (ticks(11) + ticks(12)) / clk_tck(),
    }
}

fn clk_tck() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

// ------------------------------------------------------------------ kube-apiserver metrics

/// The API server's port: the one `up.sh` recorded (it picks a free one when 16443 is taken).
fn apiserver_port() -> u16 {
    std::fs::read_to_string(state_dir().join("ports.env"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("saved_api_port=")?.trim().parse().ok())
        .unwrap_or(16443)
}

/// `apiserver_request_total` summed by "resource[/subresource] VERB" for the resources the
/// operator touches (cluster-wide: other clients count too).
fn apiserver_requests() -> BTreeMap<String, u64> {
    let token = std::fs::read_to_string(state_dir().join("tokens.csv"))
        .unwrap_or_default()
        .lines()
        .next()
        .and_then(|l| l.split(',').next())
        .unwrap_or_default()
        .to_string();
    let out = Command::new("curl")
        .args([
            "-s",
            "--max-time",
            "20",
            "--cacert",
            state_dir()
                .join("pki/apiserver.crt")
                .to_str()
                .unwrap_or_default(),
            "-H",
            &format!("Authorization: Bearer {token}"),
            &format!("https://127.0.0.1:{}/metrics", apiserver_port()),
        ])
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut m = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("apiserver_request_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.split_once("} ") else {
            continue;
        };
        let mut l = HashMap::new();
        for kv in labels.split("\",") {
            if let Some((k, v)) = kv.split_once("=\"") {
                l.insert(k, v.trim_end_matches('"'));
            }
        }
        let resource = l.get("resource").copied().unwrap_or_default();
        if !["phonenumbers", "events", "secrets", "leases"].contains(&resource) {
            continue;
        }
        let sub = l.get("subresource").copied().unwrap_or_default();
        let key = format!(
            "{}{}{} {}",
            resource,
            if sub.is_empty() { "" } else { "/" },
            sub,
            l.get("verb").copied().unwrap_or_default()
        );
        *m.entry(key).or_insert(0) += value.trim().parse::<f64>().unwrap_or(0.0) as u64;
    }
    m
}

fn delta(after: &BTreeMap<String, u64>, before: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.saturating_sub(before.get(k).copied().unwrap_or(0)),
            )
        })
        .filter(|(_, v)| *v > 0)
        .collect()
}

fn is_write(key: &str) -> bool {
    [
        "APPLY",
        "PATCH",
        "UPDATE",
        "POST",
        "CREATE",
        "DELETE",
        "DELETECOLLECTION",
    ]
    .iter()
    .any(|v| key.ends_with(&format!(" {v}")))
}

// ------------------------------------------------------------------ watch tracker

#[derive(Default)]
struct TrackState {
    inited: bool,
    present: HashSet<String>,
    /// Objects Ready (and observedGeneration == generation), with when that was first seen.
    ready: HashMap<String, Instant>,
    /// Watch events (modifications) seen after the initial list.
    applies: u64,
}

/// Follows the namespace's PhoneNumbers through a watch (no polling of 1,000-object lists).
struct Tracker {
    state: Arc<Mutex<TrackState>>,
    task: tokio::task::JoinHandle<()>,
}

impl Tracker {
    async fn start(api: Api<PhoneNumber>) -> Tracker {
        let state = Arc::new(Mutex::new(TrackState::default()));
        let s = state.clone();
        let task = tokio::spawn(async move {
            let mut stream = watcher(api, watcher::Config::default())
                .default_backoff()
                .boxed();
            let mut buffer: Vec<PhoneNumber> = Vec::new();
            while let Some(ev) = stream.next().await {
                let Ok(ev) = ev else { continue };
                let now = Instant::now();
                let mut st = s.lock().unwrap();
                let apply = |st: &mut TrackState, pn: &PhoneNumber| {
                    let name = pn.name_any();
                    st.present.insert(name.clone());
                    if is_ready(pn) && synced(pn) {
                        st.ready.entry(name).or_insert(now);
                    } else {
                        st.ready.remove(&name);
                    }
                };
                match ev {
                    watcher::Event::Init => buffer.clear(),
                    watcher::Event::InitApply(pn) => buffer.push(pn),
                    watcher::Event::InitDone => {
                        st.present.clear();
                        for pn in buffer.drain(..) {
                            apply(&mut st, &pn);
                        }
                        st.inited = true;
                    }
                    watcher::Event::Apply(pn) => {
                        st.applies += 1;
                        apply(&mut st, &pn);
                    }
                    watcher::Event::Delete(pn) => {
                        let name = pn.name_any();
                        st.present.remove(&name);
                        st.ready.remove(&name);
                    }
                }
            }
        });
        let t = Tracker { state, task };
        t.wait("watch initialised", Duration::from_secs(30), |s| s.inited)
            .await;
        t
    }

    /// Wait until `pred` holds; the instant it was seen to hold, or panic after `timeout`.
    async fn wait(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&TrackState) -> bool,
    ) -> Instant {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let st = self.state.lock().unwrap();
                if pred(&st) {
                    return Instant::now();
                }
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn ready_count(&self) -> usize {
        self.state.lock().unwrap().ready.len()
    }

    fn applies(&self) -> u64 {
        self.state.lock().unwrap().applies
    }

    fn ready_at(&self, name: &str) -> Option<Instant> {
        self.state.lock().unwrap().ready.get(name).copied()
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Counts events.k8s.io Events written in the namespace after the initial list.
async fn event_counter(client: Client, ns: &str) -> (Arc<Mutex<u64>>, tokio::task::JoinHandle<()>) {
    let api: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client, ns);
    let n = Arc::new(Mutex::new(0u64));
    let c = n.clone();
    let task = tokio::spawn(async move {
        let mut stream = watcher(api, watcher::Config::default())
            .default_backoff()
            .boxed();
        while let Some(ev) = stream.next().await {
            if let Ok(watcher::Event::Apply(_)) = ev {
                *c.lock().unwrap() += 1;
            }
        }
    });
    (n, task)
}

/// Events of the namespace by reason (e.g. `Adopted` on a happy path means a stale pass).
async fn event_reasons(client: &Client, ns: &str) -> BTreeMap<String, u64> {
    let api: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), ns);
    let mut m = BTreeMap::new();
    if let Ok(list) = api.list(&ListParams::default()).await {
        for e in list.items {
            let n = e.deprecated_count.unwrap_or(1).max(1) as u64;
            *m.entry(e.reason.unwrap_or_default()).or_insert(0) += n;
        }
    }
    m
}

// ------------------------------------------------------------------ test bed

/// A namespace, a mock and (usually) an operator.
struct Bed {
    ns: String,
    client: Client,
    pns: Api<PhoneNumber>,
    secrets: Api<Secret>,
    mock: Mock,
    op: Option<Op>,
}

impl Bed {
    async fn new(tag: &str, mock_config: Value, op_args: &[String]) -> Bed {
        let client = admin_client().await;
        let ns = format!(
            "bench-{tag}-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..6]
        );
        let nss: Api<Namespace> = Api::all(client.clone());
        nss.create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap(),
        )
        .await
        .expect("create namespace");
        let mock = Mock::start(&[]);
        mock.config(mock_config).await;
        let op = Op::start(&ns, &mock.url, op_args);
        op.wait_ready().await;
        Bed {
            pns: Api::namespaced(client.clone(), &ns),
            secrets: Api::namespaced(client.clone(), &ns),
            ns,
            client,
            mock,
            op: Some(op),
        }
    }

    fn op(&self) -> &Op {
        self.op.as_ref().expect("operator")
    }

    async fn create_secrets(&self, names: &[String]) {
        create_secrets(&self.secrets, names).await;
    }

    async fn apply_pn(pns: &Api<PhoneNumber>, name: &str, number: &str, sip: bool) {
        let spec = if sip {
            sip_spec(number, &format!("{name}-sip"))
        } else {
            credential_spec(number)
        };
        let obj = json!({"apiVersion": "oneinbox.ai/v1alpha1", "kind": "PhoneNumber",
            "metadata": {"name": name}, "spec": spec});
        pns.patch(
            name,
            &PatchParams::apply("bench").force(),
            &Patch::Apply(&obj),
        )
        .await
        .expect("apply PhoneNumber");
    }

    async fn create_pns(&self, names: &[String], sip: bool) {
        futures::stream::iter(names.iter().enumerate())
            .map(|(i, name)| {
                let pns = self.pns.clone();
                async move {
                    let number = format!("+1{}", 2_000_000_000u64 + i as u64);
                    Bed::apply_pn(&pns, name, &number, sip).await;
                }
            })
            .buffer_unordered(32)
            .collect::<Vec<()>>()
            .await;
    }

    async fn registrations(&self) -> usize {
        self.mock.registrations().await.len()
    }

    /// Delete every PhoneNumber at once and wait until they are gone and the mock is empty.
    async fn delete_all(&self, tracker: &Tracker, timeout: Duration) -> Duration {
        let t0 = Instant::now();
        // One request marks every object for deletion; at 10,000 objects its (huge) answer can
        // be cut off after the work is done, so an error is retried (bounded) and then ignored:
        // the wait below decides.
        let mut marked = false;
        for attempt in 1..=3 {
            match self
                .pns
                .delete_collection(&DeleteParams::default(), &ListParams::default())
                .await
            {
                Ok(_) => {
                    marked = true;
                    break;
                }
                Err(e) => log(&format!("  delete collection, attempt {attempt}: {e}")),
            }
        }
        if !marked {
            // Each attempt may have stopped part-way: the objects not marked yet one by one.
            let left: Vec<String> = match self.pns.list_metadata(&ListParams::default()).await {
                Ok(list) => list
                    .items
                    .into_iter()
                    .filter(|o| o.metadata.deletion_timestamp.is_none())
                    .map(|o| o.name_any())
                    .collect(),
                Err(_) => Vec::new(),
            };
            log(&format!(
                "  deleting the {} objects left one by one",
                left.len()
            ));
            futures::stream::iter(left)
                .map(|name| {
                    let pns = self.pns.clone();
                    async move {
                        let _ = pns.delete(&name, &DeleteParams::default()).await;
                    }
                })
                .buffer_unordered(32)
                .collect::<Vec<()>>()
                .await;
        }
        tracker
            .wait("all PhoneNumbers gone", timeout, |s| s.present.is_empty())
            .await;
        let deadline = Instant::now() + timeout;
        while self.registrations().await > 0 {
            assert!(Instant::now() < deadline, "mock never emptied");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        t0.elapsed()
    }

    /// Kill the operator, release leftovers, delete the namespace.
    async fn teardown(mut self) {
        self.op.take();
        if let Ok(list) = self.pns.list(&ListParams::default()).await {
            futures::stream::iter(list.items)
                .map(|pn| {
                    let pns = self.pns.clone();
                    async move {
                        let _ = pns
                            .patch(
                                &pn.name_any(),
                                &PatchParams::default(),
                                &Patch::Merge(json!({"metadata": {"finalizers": null}})),
                            )
                            .await;
                    }
                })
                .buffer_unordered(32)
                .collect::<Vec<()>>()
                .await;
        }
        // Accounts keep their in-use finalizer without an operator.
        let accounts: Api<kube::core::DynamicObject> = Api::namespaced_with(
            self.client.clone(),
            &self.ns,
            &account_resource("OneInboxAccount"),
        );
        if let Ok(list) = accounts.list(&ListParams::default()).await {
            for a in list.items {
                let _ = accounts
                    .patch(
                        &a.name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
                    )
                    .await;
            }
        }
        let nss: Api<Namespace> = Api::all(self.client.clone());
        let _ = nss.delete(&self.ns, &DeleteParams::default()).await;
    }
}

fn names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i:05}")).collect()
}

fn calls_map(v: &Value) -> BTreeMap<String, u64> {
    v.as_object()
        .map(|o| {
            o.iter()
                .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default()
}

async fn outcomes(mock: &Mock) -> BTreeMap<String, u64> {
    let log = mock.get("/_mock/calls/log").await;
    let mut m = BTreeMap::new();
    for e in log["entries"].as_array().cloned().unwrap_or_default() {
        let k = format!(
            "{} {}",
            e["endpoint"].as_str().unwrap_or_default(),
            e["status"]
                .as_u64()
                .map(|s| s.to_string())
                .unwrap_or("dropped".into())
        );
        *m.entry(k).or_insert(0) += 1;
    }
    m
}

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Nearest-rank percentile.
fn percentile(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    if s.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * s.len() as f64).ceil().max(1.0) as usize;
    s[rank.min(s.len()) - 1]
}

// ------------------------------------------------------------------ 1 + 2 + 5: burst, steady, deletion

struct BurstCfg {
    label: &'static str,
    n: usize,
    latency_ms: u64,
    rate: Option<u32>,
    client_rps: u32,
    client_burst: u32,
    steady: Duration,
    idle: Duration,
    /// Run the operator at its default flags (the client budget and concurrency fields are
    /// then unused).
    defaults: bool,
    /// The server's burst, when not its rate.
    server_burst: Option<u32>,
    /// With `defaults`: the client budget (`--api-rps`, `--api-burst`) matched to the server's
    /// rate, every other flag at its default.
    budget: Option<u32>,
    /// Keep one core busy during the burst (a bounded busy loop, stopped when it ends).
    hog: bool,
}

/// One core kept busy until the returned flag is set (or 30 minutes at most).
fn cpu_hog() -> Arc<std::sync::atomic::AtomicBool> {
    use std::sync::atomic::{AtomicBool, Ordering};
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    std::thread::spawn(move || {
        let until = Instant::now() + Duration::from_secs(1800);
        let mut x: u64 = 1;
        while !flag.load(Ordering::Relaxed) && Instant::now() < until {
            for _ in 0..100_000 {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
            }
            std::hint::black_box(x);
        }
    });
    stop
}

/// Kubernetes writes of the operator among the API server's request counts: its metadata
/// patches, status applies and events (the bench's own requests are its applies, which create
/// the objects, and deletes).
fn operator_writes(kube: &BTreeMap<String, u64>) -> u64 {
    kube.iter()
        .filter(|(k, _)| {
            [
                "phonenumbers PATCH",
                "phonenumbers/status PATCH",
                "phonenumbers/status APPLY",
                "events POST",
                "events PATCH",
                "events CREATE",
            ]
            .contains(&k.as_str())
        })
        .map(|(_, v)| v)
        .sum()
}

async fn burst(c: &BurstCfg, rep: usize) -> Value {
    let mut mock_cfg = json!({"latency_ms": c.latency_ms});
    if let Some(r) = c.rate {
        mock_cfg["rate_limit_rps"] = json!(r as f64);
        mock_cfg["rate_limit_burst"] = json!(c.server_burst.unwrap_or(r));
    }
    let args: Vec<String> = [
        "--api-rps",
        &c.client_rps.to_string(),
        "--api-burst",
        &c.client_burst.to_string(),
        "--api-max-in-flight",
        "64",
        "--concurrency",
        "64",
        "--poll-interval",
        "1m",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let args = match (c.defaults, c.budget) {
        (false, _) => args,
        (true, None) => Vec::new(),
        (true, Some(r)) => vec![
            "--api-rps".to_string(),
            r.to_string(),
            "--api-burst".to_string(),
            r.to_string(),
        ],
    };
    log(&format!(
        "burst[{}] rep {rep}: N={} mock latency {} ms, rate limit {:?}, operator {}",
        c.label,
        c.n,
        c.latency_ms,
        c.rate,
        args.join(" ")
    ));
    // Secrets first: they are prerequisites, not part of the burst.
    let bed = Bed::new("burst", json!({}), &args).await;
    let names = names("b", c.n);
    bed.create_secrets(&names).await;
    bed.mock.config(mock_cfg.clone()).await;
    let tracker = Tracker::start(bed.pns.clone()).await;
    let before = bed.op().stats();
    let kube_before = apiserver_requests();
    let hog = c.hog.then(cpu_hog);

    let t0 = Instant::now();
    bed.create_pns(&names, true).await;
    let created = t0.elapsed();
    let n = c.n;
    let progress = async {
        loop {
            tokio::time::sleep(Duration::from_secs(10)).await;
            log(&format!(
                "  {} / {n} Ready after {:.0} s",
                tracker.ready_count(),
                t0.elapsed().as_secs_f64()
            ));
        }
    };
    let t_ready = tokio::select! {
        t = tracker.wait("all Ready", Duration::from_secs(1800), |s| s.ready.len() >= n) => t,
        _ = progress => unreachable!(),
    };
    let took = t_ready - t0;
    if let Some(h) = hog {
        h.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    let at_ready = bed.op().stats();
    // The account's pass places at the end (the gate grows while the budget is idle).
    let places = metric_sum(
        &bed.op().metrics().await,
        "oneinbox_operator_reconcile_places",
    );
    let kube_burst = delta(&apiserver_requests(), &kube_before);
    let writes_per_create = operator_writes(&kube_burst) as f64 / c.n as f64;
    let calls = calls_map(&bed.mock.calls().await);
    let outs = outcomes(&bed.mock).await;
    let total: u64 = calls.values().sum();
    let posts = calls.get(POST).copied().unwrap_or(0);
    let ok_calls: u64 = outs
        .iter()
        .filter(|(k, _)| k.ends_with(" 200") || k.ends_with(" 201"))
        .map(|(_, v)| v)
        .sum();
    let limit = c.rate.map(|r| n as f64 / r as f64);
    log(&format!(
        "  all {n} Ready in {:.2} s (objects created in {:.2} s, the last Ready {:.2} s after); limit {:?} s; pass places {places}; calls {calls:?}; outcomes {outs:?}",
        took.as_secs_f64(),
        created.as_secs_f64(),
        (took - created).as_secs_f64(),
        limit
    ));
    let reasons = event_reasons(&bed.client, &bed.ns).await;
    log(&format!(
        "  events by reason: {reasons:?}; operator's Kubernetes writes per create {writes_per_create:.3}; API server requests {kube_burst:?}"
    ));
    let mut result = json!({
        "events_by_reason": reasons,
        "label": c.label, "rep": rep, "n": n, "latency_ms": c.latency_ms, "rate": c.rate,
        "client_rps": c.client_rps, "client_burst": c.client_burst,
        "ready_secs": took.as_secs_f64(), "create_secs": created.as_secs_f64(),
        "ready_after_created_secs": (took - created).as_secs_f64(), "pass_places": places,
        "limit_secs": limit, "ratio": limit.map(|l| took.as_secs_f64() / l),
        "calls": calls, "outcomes": outs, "calls_per_number": total as f64 / n as f64,
        "successful_calls_per_number": ok_calls as f64 / n as f64,
        "posts": posts,
        "cpu_secs_burst": at_ready.cpu_secs - before.cpu_secs,
        "kube_writes_per_create": writes_per_create, "apiserver_requests_burst": kube_burst,
        "hog": c.hog, "budget": c.budget,
        "rss_mib_at_ready": at_ready.rss_mib, "hwm_mib_at_ready": at_ready.hwm_mib,
    });

    // Steady state (idle, 1-minute poll).
    if !c.steady.is_zero() {
        log(&format!(
            "  steady state: settling 5 s, then idling {:?}",
            c.steady
        ));
        tokio::time::sleep(Duration::from_secs(5)).await;
        let (events, ev_task) = event_counter(bed.client.clone(), &bed.ns).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let m0 = apiserver_requests();
        let calls0 = calls_map(&bed.mock.calls().await);
        let outs0 = outcomes(&bed.mock).await;
        let applies0 = tracker.applies();
        let ev0 = *events.lock().unwrap();
        let s0 = bed.op().stats();
        let w0 = Instant::now();
        let mut last = Instant::now();
        while w0.elapsed() < c.steady {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if last.elapsed() >= Duration::from_secs(60) {
                last = Instant::now();
                let now = calls_map(&bed.mock.calls().await);
                log(&format!(
                    "  steady {:.0} s: GETs so far {}",
                    w0.elapsed().as_secs_f64(),
                    now.get(GET).copied().unwrap_or(0) - calls0.get(GET).copied().unwrap_or(0)
                ));
            }
        }
        let window = w0.elapsed();
        let m1 = apiserver_requests();
        let calls1 = calls_map(&bed.mock.calls().await);
        let outs1 = outcomes(&bed.mock).await;
        let s1 = bed.op().stats();
        let kube = delta(&m1, &m0);
        let kube_writes: BTreeMap<String, u64> = kube
            .iter()
            .filter(|(k, _)| is_write(k))
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        let api = delta(&calls1, &calls0);
        let api_outcomes = delta(&outs1, &outs0);
        let gets = api.get(GET).copied().unwrap_or(0);
        let expected = n as f64 * window.as_secs_f64() / 60.0;
        let pn_mods = tracker.applies() - applies0;
        let ev_writes = *events.lock().unwrap() - ev0;
        ev_task.abort();
        log(&format!(
            "  steady {:.0} s: OneInbox {api:?}; GETs {gets} (expected {expected:.0} = N x window / 60 s); kube requests {kube:?}; PhoneNumber modifications seen {pn_mods}; Events written {ev_writes}; CPU {:.2} s; RSS {:.1} MiB",
            window.as_secs_f64(),
            s1.cpu_secs - s0.cpu_secs,
            s1.rss_mib
        ));
        result["steady"] = json!({
            "window_secs": window.as_secs_f64(), "oneinbox_calls": api, "oneinbox_outcomes": api_outcomes,
            "gets": gets, "expected_gets": expected, "gets_per_object_per_minute": gets as f64 / n as f64 / (window.as_secs_f64() / 60.0),
            "apiserver_requests_all_clients": kube, "apiserver_writes_all_clients": kube_writes,
            "phonenumber_modifications_in_namespace": pn_mods, "events_written_in_namespace": ev_writes,
            "cpu_secs": s1.cpu_secs - s0.cpu_secs, "rss_mib": s1.rss_mib, "hwm_mib": s1.hwm_mib,
        });
    } else if !c.idle.is_zero() {
        tokio::time::sleep(c.idle).await;
    }
    let idle = bed.op().stats();
    result["rss_mib_steady"] = json!(idle.rss_mib);
    result["hwm_mib"] = json!(idle.hwm_mib);
    result["cpu_secs_total_before_delete"] = json!(idle.cpu_secs);

    // Deletion burst.
    let calls_before = calls_map(&bed.mock.calls().await);
    let gone = bed.delete_all(&tracker, Duration::from_secs(1800)).await;
    let del_calls = delta(&calls_map(&bed.mock.calls().await), &calls_before);
    let end = bed.op().stats();
    log(&format!(
        "  deletion burst: {n} gone and mock empty in {:.2} s; calls {del_calls:?}; operator peak RSS {:.1} MiB, CPU {:.1} s",
        gone.as_secs_f64(),
        end.hwm_mib,
        end.cpu_secs
    ));
    result["delete_secs"] = json!(gone.as_secs_f64());
    result["delete_calls"] = json!(del_calls);
    result["delete_limit_secs"] = json!(c.rate.map(|r| n as f64 / r as f64));
    result["hwm_mib_end"] = json!(end.hwm_mib);
    result["cpu_secs_end"] = json!(end.cpu_secs);
    record("burst", result.clone());
    drop(tracker);
    bed.teardown().await;
    result
}

// ------------------------------------------------------------------ 3: latency

async fn latency(latency_ms: u64, runs: usize, rep: usize) -> Value {
    log(&format!(
        "latency rep {rep}: {runs} sequential apply→Ready at mock latency {latency_ms} ms, operator defaults"
    ));
    let bed = Bed::new("latency", json!({"latency_ms": latency_ms}), &[]).await;
    let names = names("l", runs);
    bed.create_secrets(&names).await;
    let tracker = Tracker::start(bed.pns.clone()).await;
    let mut samples = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let number = format!("+1{}", 3_000_000_000u64 + i as u64);
        let t0 = Instant::now();
        Bed::apply_pn(&bed.pns, name, &number, true).await;
        let n = name.clone();
        let at = tracker
            .wait("Ready", Duration::from_secs(60), move |s| {
                s.ready.contains_key(&n)
            })
            .await;
        let ready_at = tracker.ready_at(name).unwrap_or(at);
        samples.push((ready_at - t0).as_secs_f64() * 1000.0);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let p50 = percentile(&samples, 50.0);
    let p99 = percentile(&samples, 99.0);
    let calls = calls_map(&bed.mock.calls().await);
    log(&format!(
        "  latency {latency_ms} ms: p50 {p50:.1} ms, p99 {p99:.1} ms, min {:.1}, max {:.1}; calls {calls:?}",
        percentile(&samples, 0.0),
        percentile(&samples, 100.0)
    ));
    let result = json!({"latency_ms": latency_ms, "rep": rep, "runs": runs, "p50_ms": p50, "p99_ms": p99,
        "samples_ms": samples, "calls": calls});
    record("latency", result.clone());
    bed.delete_all(&tracker, Duration::from_secs(120)).await;
    drop(tracker);
    bed.teardown().await;
    result
}

// ------------------------------------------------------------------ 5: fairness across accounts

/// A key Secret and a OneInboxAccount in the bed's namespace.
async fn bench_account(bed: &Bed, name: &str, key: &str, budget: Value) {
    let body = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": format!("{name}-key")},
        "stringData": {"apiKey": key}});
    bed.secrets
        .patch(
            &format!("{name}-key"),
            &PatchParams::apply("bench").force(),
            &Patch::Apply(&body),
        )
        .await
        .expect("key Secret");
    let accounts: Api<kube::core::DynamicObject> = Api::namespaced_with(
        bed.client.clone(),
        &bed.ns,
        &account_resource("OneInboxAccount"),
    );
    let body = json!({"apiVersion": "oneinbox.ai/v1alpha1", "kind": "OneInboxAccount",
        "metadata": {"name": name},
        "spec": {"apiKeySecretRef": {"name": format!("{name}-key")}, "budget": budget}});
    accounts
        .patch(
            name,
            &PatchParams::apply("bench").force(),
            &Patch::Apply(&body),
        )
        .await
        .expect("OneInboxAccount");
}

/// Apply `names` on account `account` (numbers from `base`), at once.
async fn apply_on_account(bed: &Bed, names: &[String], account: &str, base: u64) {
    futures::stream::iter(names.iter().enumerate())
        .map(|(i, name)| {
            let pns = bed.pns.clone();
            let account = account.to_owned();
            async move {
                let spec = with(
                    credential_spec(&format!("+1{}", base + i as u64)),
                    json!({"accountRef": {"kind": "OneInboxAccount", "name": account}}),
                );
                let obj = json!({"apiVersion": "oneinbox.ai/v1alpha1", "kind": "PhoneNumber",
                    "metadata": {"name": name}, "spec": spec});
                pns.patch(
                    name,
                    &PatchParams::apply("bench").force(),
                    &Patch::Apply(&obj),
                )
                .await
                .expect("apply PhoneNumber");
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<()>>()
        .await;
}

/// Time until every one of `names` is Ready.
async fn time_to_ready(tracker: &Tracker, names: &[String], t0: Instant) -> f64 {
    let wanted: Vec<String> = names.to_vec();
    let w = wanted.clone();
    tracker
        .wait("all Ready", Duration::from_secs(300), move |s| {
            w.iter().all(|n| s.ready.contains_key(n))
        })
        .await;
    wanted
        .iter()
        .filter_map(|n| tracker.ready_at(n))
        .max()
        .map_or(f64::NAN, |t| (t - t0).as_secs_f64())
}

/// Account A has `backlog` creates queued at `rate` req/s (its budget and its workspace's limit);
/// account B applies `b` objects while the backlog runs. B's time to all Ready, against B alone
/// on an idle operator (operator at default flags, mock latency `latency_ms`).
async fn fairness(backlog: usize, b: usize, rate: u32, latency_ms: u64, rep: usize) -> Value {
    log(&format!(
        "fairness rep {rep}: A {backlog} creates at {rate} req/s, B {b} objects, latency {latency_ms} ms, operator defaults"
    ));
    let bed = Bed::new("fair", json!({"latency_ms": latency_ms}), &[]).await;
    let limited =
        json!({"latency_ms": latency_ms, "rate_limit_rps": rate, "rate_limit_burst": rate});
    bed.mock
        .create_workspace("a", &["oi_sk_bench_account_a"], limited)
        .await;
    bed.mock
        .create_workspace(
            "b",
            &["oi_sk_bench_account_b"],
            json!({"latency_ms": latency_ms}),
        )
        .await;
    bench_account(
        &bed,
        "a",
        "oi_sk_bench_account_a",
        json!({"requestsPerSecond": rate, "burst": rate}),
    )
    .await;
    bench_account(&bed, "b", "oi_sk_bench_account_b", json!({})).await;
    let tracker = Tracker::start(bed.pns.clone()).await;

    // B alone on the idle operator.
    let alone = names("b-alone", b);
    let t0 = Instant::now();
    apply_on_account(&bed, &alone, "b", 4_000_000_000).await;
    let alone_secs = time_to_ready(&tracker, &alone, t0).await;

    // A's backlog, running at its limit; then B again.
    let backlog_names = names("a", backlog);
    let ta = Instant::now();
    apply_on_account(&bed, &backlog_names, "a", 5_000_000_000).await;
    let quarter = backlog / 4;
    tracker
        .wait("a quarter of A Ready", Duration::from_secs(600), move |s| {
            s.ready.keys().filter(|k| k.starts_with("a-")).count() >= quarter
        })
        .await;
    let busy = names("b-busy", b);
    let t1 = Instant::now();
    apply_on_account(&bed, &busy, "b", 6_000_000_000).await;
    let busy_secs = time_to_ready(&tracker, &busy, t1).await;
    let a_ready_when_b_done = tracker
        .state
        .lock()
        .unwrap()
        .ready
        .keys()
        .filter(|k| k.starts_with("a-"))
        .count();
    let backlog_secs = time_to_ready(&tracker, &backlog_names, ta).await;
    let a_calls = calls_map(&bed.mock.workspace("a").calls().await);
    let b_calls = calls_map(&bed.mock.workspace("b").calls().await);
    let a_429 = outcomes(&bed.mock.workspace("a")).await;
    let ratio = busy_secs / alone_secs;
    log(&format!(
        "  B alone {alone_secs:.2} s; B beside A's backlog {busy_secs:.2} s (ratio {ratio:.3}, goal ≤ 1.2); A's {backlog} Ready in {backlog_secs:.1} s (floor {:.1} s), {a_ready_when_b_done} of them when B was done; A calls {a_calls:?} outcomes {a_429:?}; B calls {b_calls:?}",
        backlog as f64 / rate as f64
    ));
    let result = json!({"rep": rep, "backlog": backlog, "b": b, "rate": rate, "latency_ms": latency_ms,
        "b_alone_secs": alone_secs, "b_busy_secs": busy_secs, "ratio": ratio,
        "a_backlog_secs": backlog_secs, "a_ready_when_b_done": a_ready_when_b_done,
        "a_calls": a_calls, "a_outcomes": a_429, "b_calls": b_calls});
    record("fairness", result.clone());
    bed.delete_all(&tracker, Duration::from_secs(600)).await;
    drop(tracker);
    bed.teardown().await;
    result
}

/// Operator flags far above any mock limit: setting up or tearing down many objects fast.
fn high_budget_args() -> Vec<String> {
    [
        "--api-rps",
        "1000",
        "--api-burst",
        "1000",
        "--api-max-in-flight",
        "64",
        "--concurrency",
        "64",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

// ------------------------------------------------------------------ 6: user work ahead of drift checks

/// `n` Ready objects named `prefix-…` (each with its own Secret if `sip`), made at a high
/// budget; then the operator stopped and the mock set to `latency_ms` and 20 req/s (burst 20),
/// the default budget's rate, for the measured phase.
async fn ready_then_stopped(
    tag: &str,
    prefix: &str,
    n: usize,
    sip: bool,
    latency_ms: u64,
) -> (Bed, Tracker) {
    let mut bed = Bed::new(tag, json!({"latency_ms": 0}), &high_budget_args()).await;
    let tracker = Tracker::start(bed.pns.clone()).await;
    let names = names(prefix, n);
    if sip {
        bed.create_secrets(&names).await;
    }
    bed.create_pns(&names, sip).await;
    tracker
        .wait("all Ready", Duration::from_secs(3600), move |s| {
            s.ready.len() >= n
        })
        .await;
    log(&format!("  {n} Ready"));
    bed.op.take();
    bed.mock
        .config(json!({"latency_ms": latency_ms, "rate_limit_rps": 20.0, "rate_limit_burst": 20}))
        .await;
    (bed, tracker)
}

/// Clean-up at a high budget again: every object deleted, the namespace gone.
async fn delete_at_high_budget(mut bed: Bed, tracker: Tracker) {
    bed.op.take();
    bed.mock.config(json!({})).await;
    let op = Op::start(&bed.ns, &bed.mock.url, &high_budget_args());
    op.wait_ready().await;
    bed.op = Some(op);
    bed.delete_all(&tracker, Duration::from_secs(1800)).await;
    drop(tracker);
    bed.teardown().await;
}

/// Goals 2 and 3 of the cost issue: `n` Ready objects, each with its own SIP password Secret
/// (made at a high budget), then the operator restarted at its default flags (`poll` is the
/// default poll interval unless `BENCH_RESTART_POLL` says otherwise) against a mock at the
/// default budget's 20 req/s. Reported: the time from the new process to `/readyz`; OneInbox
/// calls and Secret GETs in the first minute; OneInbox calls per second in each tenth of the
/// first two intervals (the drift checks resuming, spread over the first one); Secret GETs over
/// the whole window (the steady state: no Secret changed, so none is read).
async fn restart(n: usize, poll: &str, latency_ms: u64) -> Value {
    // The operator's own parser: the benchmark reads the flag as the operator will.
    let interval = oneinbox_operator::config::parse_duration(poll)
        .expect("BENCH_RESTART_POLL is a duration")
        .as_secs_f64();
    log(&format!(
        "restart: {n} Ready objects with their own Secrets; the operator restarted at its defaults (poll {poll}), mock at 20 req/s, latency {latency_ms} ms; two intervals watched"
    ));
    let (mut bed, tracker) = ready_then_stopped("restart", "rs", n, true, latency_ms).await;
    let calls = |m: &BTreeMap<String, u64>| m.values().sum::<u64>();
    let secret_gets = |m: &BTreeMap<String, u64>| m.get("secrets GET").copied().unwrap_or(0);
    let kube_before = apiserver_requests();
    let calls_before = calls(&calls_map(&bed.mock.calls().await));
    let args: Vec<String> = if poll == "10m" {
        Vec::new()
    } else {
        vec!["--poll-interval".into(), poll.into()]
    };
    let t0 = Instant::now();
    let op = Op::start(&bed.ns, &bed.mock.url, &args);
    op.wait_ready().await;
    let readyz_secs = t0.elapsed().as_secs_f64();
    bed.op = Some(op);
    log(&format!("  /readyz after {readyz_secs:.2} s"));
    // Samples every tenth of the interval for two intervals.
    let step = interval / 10.0;
    let mut per_second = Vec::new();
    let mut first_minute = None;
    let mut last = calls_before;
    for i in 1..=20 {
        let at = t0 + Duration::from_secs_f64(step * i as f64);
        // The first minute's mark, if it falls between two samples.
        if first_minute.is_none() && at >= t0 + Duration::from_secs(60) {
            tokio::time::sleep_until((t0 + Duration::from_secs(60)).into()).await;
            let c = calls(&calls_map(&bed.mock.calls().await)) - calls_before;
            let g = secret_gets(&delta(&apiserver_requests(), &kube_before));
            first_minute = Some((c, g));
            log(&format!(
                "  first minute: {c} OneInbox calls, {g} Secret GETs"
            ));
        }
        tokio::time::sleep_until(at.into()).await;
        let now = calls(&calls_map(&bed.mock.calls().await));
        let rate = (now - last) as f64 / step;
        last = now;
        per_second.push((rate * 10.0).round() / 10.0);
        log(&format!(
            "  {:>5.0} s: {rate:.1} OneInbox calls/s in the last {step:.0} s",
            step * i as f64
        ));
    }
    let kube = delta(&apiserver_requests(), &kube_before);
    let calls_total = last - calls_before;
    let outs = outcomes(&bed.mock).await;
    let (first_calls, first_gets) = first_minute.unwrap_or((0, 0));
    let result = json!({"n": n, "poll": poll, "latency_ms": latency_ms, "readyz_secs": readyz_secs,
        "first_minute_calls": first_calls, "first_minute_secret_gets": first_gets,
        "calls_per_second_by_tenth": per_second, "calls_two_intervals": calls_total,
        "secret_gets_two_intervals": secret_gets(&kube), "kube_requests": kube, "outcomes": outs});
    record("restart", result.clone());
    delete_at_high_budget(bed, tracker).await;
    result
}

/// `n` Ready objects (made at a high budget), then the operator restarted at its defaults with
/// a 1-minute poll against a mock limited to 20 req/s: the restart spreads the `n` checks over
/// 12–60 s, far more than the budget (saturated). Meanwhile `new` objects are applied one after
/// another; each one's apply → Ready.
async fn lanes(n: usize, new: usize, latency_ms: u64) -> Value {
    log(&format!(
        "lanes: {n} Ready objects, their drift checks due after a restart at the defaults (poll 1m, server 20 req/s, latency {latency_ms} ms); {new} new objects applied one by one"
    ));
    // The measured phase: the operator at its defaults, the API at its limit.
    let (mut bed, tracker) = ready_then_stopped("lanes", "bg", n, false, latency_ms).await;
    let op = Op::start(
        &bed.ns,
        &bed.mock.url,
        &["--poll-interval".to_string(), "1m".to_string()],
    );
    op.wait_ready().await;
    bed.op = Some(op);
    // The first checks fall at 20 % of the interval.
    tokio::time::sleep(Duration::from_secs(15)).await;
    let gets_before = bed.mock.count(GET).await;
    let t_window = Instant::now();
    let mut samples = Vec::new();
    for i in 0..new {
        let name = format!("user-{i:03}");
        let t0 = Instant::now();
        Bed::apply_pn(
            &bed.pns,
            &name,
            &format!("+1{}", 7_000_000_000u64 + i as u64),
            false,
        )
        .await;
        let nm = name.clone();
        tracker
            .wait("Ready", Duration::from_secs(120), move |s| {
                s.ready.contains_key(&nm)
            })
            .await;
        let at = tracker.ready_at(&name).unwrap_or_else(Instant::now);
        samples.push((at - t0).as_secs_f64() * 1000.0);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let window = t_window.elapsed().as_secs_f64();
    let gets = bed.mock.count(GET).await - gets_before;
    let outs = outcomes(&bed.mock).await;
    let (p50, p99) = (percentile(&samples, 50.0), percentile(&samples, 99.0));
    log(&format!(
        "  new objects apply → Ready: p50 {p50:.1} ms, p99 {p99:.1} ms (goal: latency {latency_ms} ms + 200 ms); {gets} drift-check GETs in the {window:.1} s window ({:.1}/s, budget 20/s); outcomes {outs:?}",
        gets as f64 / window
    ));
    let result = json!({"n": n, "new": new, "latency_ms": latency_ms, "p50_ms": p50, "p99_ms": p99,
        "samples_ms": samples, "window_secs": window, "check_gets": gets, "outcomes": outs});
    record("lanes", result.clone());
    delete_at_high_budget(bed, tracker).await;
    result
}

// ------------------------------------------------------------------ 10: memory at scale

/// `/proc/<pid>/smaps_rollup`: anonymous memory (the heap, mostly) and the file-backed part
/// (the binary's text), in MiB.
fn smaps(pid: u32) -> (f64, f64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let kib = |key: &str| {
        text.lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    (kib("Anonymous:"), kib("Pss_File:"))
}

/// Issue 30's memory goals at `n` objects (each with its own Secret if `sip`, else a
/// `credentialId`): made Ready at a high budget (RSS at all Ready and after `idle`), then the
/// operator restarted at its defaults against a mock at 20 req/s, once per entry of `lists`
/// (`--initial-lists`, e.g. pages then stream): time to `/readyz`, the peak RSS of the new
/// process (VmHWM) while it lists and starts, its RSS after `watch`, OneInbox calls and Secret
/// GETs in that window (the first minute). The objects are not deleted one by one (at 100,000
/// that is hours): their finalizers are stripped and the namespace deleted.
async fn scale(n: usize, sip: bool, lists: &[String], idle: Duration, watch: Duration) -> Value {
    let args = high_budget_args();
    log(&format!(
        "scale: N={n} ({}), mock latency 0, no rate limit, operator {}; restarts {lists:?}",
        if sip { "a Secret each" } else { "credentialId" },
        args.join(" ")
    ));
    let mut bed = Bed::new("scale", json!({}), &args).await;
    let names = names("s", n);
    let t = Instant::now();
    if sip {
        bed.create_secrets(&names).await;
        log(&format!(
            "  {n} Secrets created in {:.1} s",
            t.elapsed().as_secs_f64()
        ));
    }
    let tracker = Tracker::start(bed.pns.clone()).await;
    let t0 = Instant::now();
    let created = tokio::select! {
        _ = bed.create_pns(&names, sip) => t0.elapsed(),
        _ = footprint_progress(&bed, &tracker, n, t0) => unreachable!(),
    };
    log(&format!(
        "  {n} PhoneNumbers created in {:.1} s",
        created.as_secs_f64()
    ));
    let t_ready = tokio::select! {
        t = tracker.wait("all Ready", Duration::from_secs(6 * 3600), |s| s.ready.len() >= n) => t,
        _ = footprint_progress(&bed, &tracker, n, t0) => unreachable!(),
    };
    let at_ready = bed.op().stats();
    let (anon_ready, file_ready) = smaps(bed.op().pid());
    log(&format!(
        "  all {n} Ready after {:.1} s; RSS {:.1} MiB (anonymous {anon_ready:.1}, file {file_ready:.1}), peak {:.1} MiB; idling {idle:?}",
        (t_ready - t0).as_secs_f64(),
        at_ready.rss_mib,
        at_ready.hwm_mib
    ));
    tokio::time::sleep(idle).await;
    let steady = bed.op().stats();
    let (anon_steady, _) = smaps(bed.op().pid());
    log(&format!(
        "  RSS {:.1} MiB after idling (anonymous {anon_steady:.1}), load {}",
        steady.rss_mib,
        loadavg()
    ));
    bed.op.take();
    bed.mock
        .config(json!({"latency_ms": 0, "rate_limit_rps": 20.0, "rate_limit_burst": 20}))
        .await;
    let calls = |m: &BTreeMap<String, u64>| m.values().sum::<u64>();
    let mut restarts = Vec::new();
    for mode in lists {
        let kube_before = apiserver_requests();
        let calls_before = calls(&calls_map(&bed.mock.calls().await));
        let load = loadavg();
        let t0 = Instant::now();
        let op = Op::start(
            &bed.ns,
            &bed.mock.url,
            &["--initial-lists".to_string(), mode.clone()],
        );
        op.wait_ready().await;
        let readyz = t0.elapsed().as_secs_f64();
        let at_readyz = op.stats();
        tokio::time::sleep_until((t0 + watch).into()).await;
        let after = op.stats();
        let (anon_after, _) = smaps(op.pid());
        let first_calls = calls(&calls_map(&bed.mock.calls().await)) - calls_before;
        let kube = delta(&apiserver_requests(), &kube_before);
        let secret_gets = kube.get("secrets GET").copied().unwrap_or(0);
        let lists_done = metric_sum(
            &op.metrics().await,
            "oneinbox_operator_phonenumber_watch_lists_total",
        );
        log(&format!(
            "  restart ({mode}, load {load}): /readyz after {readyz:.2} s (RSS then {:.1} MiB); peak RSS {:.1} MiB; RSS after {watch:?} {:.1} MiB (anonymous {anon_after:.1}); {first_calls} OneInbox calls, {secret_gets} Secret GETs; {lists_done} PhoneNumber lists; API requests {kube:?}",
            at_readyz.rss_mib, after.hwm_mib, after.rss_mib
        ));
        restarts.push(json!({"lists": mode, "load": load, "readyz_secs": readyz,
            "rss_mib_at_readyz": at_readyz.rss_mib, "hwm_mib": after.hwm_mib,
            "rss_mib_after": after.rss_mib, "anon_mib_after": anon_after,
            "watch_secs": watch.as_secs_f64(), "oneinbox_calls": first_calls,
            "secret_gets": secret_gets, "watch_lists": lists_done, "kube_requests": kube}));
        drop(op);
    }
    let result = json!({"n": n, "sip": sip, "create_secs": created.as_secs_f64(),
        "ready_secs": (t_ready - t0).as_secs_f64(), "rss_mib_at_ready": at_ready.rss_mib,
        "hwm_mib_at_ready": at_ready.hwm_mib, "anon_mib_at_ready": anon_ready,
        "file_mib_at_ready": file_ready, "rss_mib_steady": steady.rss_mib,
        "anon_mib_steady": anon_steady, "idle_secs": idle.as_secs_f64(),
        "cpu_secs_to_ready": at_ready.cpu_secs, "restarts": restarts});
    record("scale", result.clone());
    drop(tracker);
    let t = Instant::now();
    let (client, ns) = (bed.client.clone(), bed.ns.clone());
    bed.teardown().await;
    // The next N waits until the namespace is gone: kube-controller-manager deleting tens of
    // thousands of objects loads etcd and the API server (it slowed the 30,000 restarts of
    // 2026-12-08 to a minute).
    let nss: Api<Namespace> = Api::all(client);
    let deadline = Instant::now() + Duration::from_secs(1800);
    while matches!(nss.get_opt(&ns).await, Ok(Some(_))) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    log(&format!(
        "  finalizers stripped and namespace gone after {:.1} s",
        t.elapsed().as_secs_f64()
    ));
    result
}

// ------------------------------------------------------------------ 4: footprint at 10,000

/// Every 15 s until dropped: how many are Ready, and the operator's memory and CPU.
async fn footprint_progress(bed: &Bed, tracker: &Tracker, n: usize, t0: Instant) {
    loop {
        tokio::time::sleep(Duration::from_secs(15)).await;
        let s = bed.op().stats();
        log(&format!(
            "  {} / {n} Ready after {:.0} s; operator RSS {:.1} MiB (peak {:.1}), CPU {:.1} s",
            tracker.ready_count(),
            t0.elapsed().as_secs_f64(),
            s.rss_mib,
            s.hwm_mib,
            s.cpu_secs
        ));
    }
}

async fn footprint(n: usize, idle: Duration) -> Value {
    let args = high_budget_args();
    log(&format!(
        "footprint: N={n}, mock latency 0, no rate limit, operator {}",
        args.join(" ")
    ));
    let bed = Bed::new("footprint", json!({}), &args).await;
    let names = names("f", n);
    let t = Instant::now();
    bed.create_secrets(&names).await;
    log(&format!(
        "  {n} Secrets created in {:.1} s",
        t.elapsed().as_secs_f64()
    ));
    let tracker = Tracker::start(bed.pns.clone()).await;
    let before = bed.op().stats();
    // `BENCH_PROFILE=<file>`: the operator sampled by perf from the first apply to all Ready
    // (`make profile` turns it into a flame graph). Its figures are then not the benchmark's.
    let profiler = std::env::var("BENCH_PROFILE").ok().map(|out| {
        Command::new("perf")
            .args([
                "record",
                "-F",
                "99",
                "--call-graph",
                "dwarf,16384",
                "-o",
                &out,
                "-p",
            ])
            .arg(bed.op().pid().to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("perf record")
    });
    let t0 = Instant::now();
    let create = bed.create_pns(&names, true);
    let created = tokio::select! {
        _ = create => t0.elapsed(),
        _ = footprint_progress(&bed, &tracker, n, t0) => unreachable!(),
    };
    log(&format!(
        "  {n} PhoneNumbers created in {:.1} s",
        created.as_secs_f64()
    ));
    let t_ready = tokio::select! {
        t = tracker.wait("all Ready", Duration::from_secs(3600), |s| s.ready.len() >= n) => t,
        _ = footprint_progress(&bed, &tracker, n, t0) => unreachable!(),
    };
    let at_ready = bed.op().stats();
    let passes = metric_sum(
        &bed.op().metrics().await,
        "oneinbox_operator_reconcile_runs_total",
    );
    if let Some(mut perf) = profiler {
        // perf writes its file on SIGINT.
        let _ = Command::new("kill")
            .args(["-INT", &perf.id().to_string()])
            .status();
        let _ = perf.wait();
    }
    log(&format!(
        "  all {n} Ready after {:.1} s; RSS {:.1} MiB, peak {:.1} MiB, CPU {:.1} s; {:.2} reconcile passes per object; idling {idle:?}",
        (t_ready - t0).as_secs_f64(),
        at_ready.rss_mib,
        at_ready.hwm_mib,
        at_ready.cpu_secs - before.cpu_secs,
        passes / n as f64
    ));
    tokio::time::sleep(idle).await;
    let steady = bed.op().stats();
    let metrics = bed.op().metrics().await;
    let calls = calls_map(&bed.mock.calls().await);
    let gone = bed.delete_all(&tracker, Duration::from_secs(3600)).await;
    let end = bed.op().stats();
    log(&format!(
        "  steady RSS {:.1} MiB after {idle:?} idle (CPU in idle {:.2} s); deletion of {n}: {:.1} s; peak RSS {:.1} MiB; CPU total {:.1} s",
        steady.rss_mib,
        steady.cpu_secs - at_ready.cpu_secs,
        gone.as_secs_f64(),
        end.hwm_mib,
        end.cpu_secs
    ));
    let objects_line: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("oneinbox_operator_objects"))
        .collect();
    let result = json!({
        "n": n, "create_secs": created.as_secs_f64(), "ready_secs": (t_ready - t0).as_secs_f64(),
        "rss_mib_at_ready": at_ready.rss_mib, "hwm_mib_at_ready": at_ready.hwm_mib,
        "cpu_secs_to_ready": at_ready.cpu_secs - before.cpu_secs,
        "passes_per_object_to_ready": passes / n as f64,
        "idle_secs": idle.as_secs_f64(), "rss_mib_steady": steady.rss_mib,
        "cpu_secs_idle": steady.cpu_secs - at_ready.cpu_secs,
        "delete_secs": gone.as_secs_f64(), "hwm_mib_end": end.hwm_mib, "cpu_secs_end": end.cpu_secs,
        "calls_before_delete": calls, "objects_gauge": objects_line,
    });
    record("footprint", result.clone());
    drop(tracker);
    bed.teardown().await;
    result
}

/// Goal 6 without the load generator in the way: `n` PhoneNumbers (each with its Secret)
/// applied while the operator is stopped, then the operator started (high budget, mock without
/// limit or latency): the time from its start to all Ready and its CPU seconds are its own
/// throughput, not the pace at which the benchmark can create objects.
async fn backlog(n: usize) -> Value {
    let args = high_budget_args();
    log(&format!(
        "backlog: {n} PhoneNumbers applied with the operator stopped, then the operator started; mock latency 0, no rate limit, operator {}",
        args.join(" ")
    ));
    let mut bed = Bed::new("backlog", json!({}), &args).await;
    bed.op.take();
    let names = names("b", n);
    let tracker = Tracker::start(bed.pns.clone()).await;
    let t = Instant::now();
    bed.create_secrets(&names).await;
    bed.create_pns(&names, true).await;
    log(&format!(
        "  {n} Secrets and PhoneNumbers applied in {:.1} s",
        t.elapsed().as_secs_f64()
    ));
    let t0 = Instant::now();
    let op = Op::start(&bed.ns, &bed.mock.url, &args);
    op.wait_ready().await;
    let readyz = t0.elapsed().as_secs_f64();
    bed.op = Some(op);
    let t_ready = tokio::select! {
        t = tracker.wait("all Ready", Duration::from_secs(3600), |s| s.ready.len() >= n) => t,
        _ = footprint_progress(&bed, &tracker, n, t0) => unreachable!(),
    };
    let at_ready = bed.op().stats();
    let ready_secs = (t_ready - t0).as_secs_f64();
    log(&format!(
        "  /readyz after {readyz:.2} s; all {n} Ready {ready_secs:.1} s after the start; RSS {:.1} MiB, CPU {:.1} s",
        at_ready.rss_mib, at_ready.cpu_secs
    ));
    let result = json!({"n": n, "readyz_secs": readyz, "ready_secs": ready_secs,
        "cpu_secs_to_ready": at_ready.cpu_secs, "rss_mib_at_ready": at_ready.rss_mib,
        "calls": calls_map(&bed.mock.calls().await)});
    record("backlog", result.clone());
    bed.delete_all(&tracker, Duration::from_secs(3600)).await;
    drop(tracker);
    bed.teardown().await;
    result
}

/// The sum of a metric's samples (all label sets) in a `/metrics` text.
fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let value = match rest.strip_prefix('{') {
                Some(labelled) => labelled.split_once("} ")?.1,
                None => rest.strip_prefix(' ')?,
            };
            value.split_whitespace().next()?.parse::<f64>().ok()
        })
        .sum()
}

// ------------------------------------------------------------------ main

fn machine() -> String {
    let run = |cmd: &str, args: &[&str]| {
        Command::new(cmd)
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    format!(
        "nproc {}; free -g: {}; load {}; kernel {}",
        run("nproc", &[]),
        run("free", &["-g"])
            .lines()
            .nth(1)
            .unwrap_or_default()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" "),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim(),
        run("uname", &["-r"]),
    )
}

fn main() {
    let only: String = env(
        "BENCH_ONLY",
        "burst,nolimit,latency,fairness,footprint".to_string(),
    );
    let only: Vec<&str> = only.split(',').map(str::trim).collect();
    let n: usize = env("BENCH_N", 1000);
    let repeats: usize = env("BENCH_REPEATS", 3);
    let rate: u32 = env("BENCH_RATE", 50);
    let latency_ms: u64 = env("BENCH_LATENCY_MS", 100);
    let steady = Duration::from_secs(env("BENCH_STEADY_SECS", 600));
    let runs: usize = env("BENCH_LATENCY_RUNS", 50);
    let footprint_n: usize = env("BENCH_FOOTPRINT_N", 10_000);
    let idle = Duration::from_secs(env("BENCH_IDLE_SECS", 60));
    let over_budget: u8 = env("BENCH_OVER_BUDGET", 1);
    log(&format!("machine: {}", machine()));
    record(
        "machine",
        json!({"machine": machine(), "only": only, "n": n, "repeats": repeats}),
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        let mut summary = Vec::new();
        if only.contains(&"burst") {
            let cfg = BurstCfg {
                label: "rate-limited, client budget = server limit",
                n,
                latency_ms,
                rate: Some(rate),
                client_rps: rate,
                client_burst: rate,
                steady: Duration::ZERO,
                idle,
                defaults: false,
                server_burst: None,
                budget: None,
                hog: false,
            };
            let mut ready = Vec::new();
            let mut del = Vec::new();
            for rep in 0..repeats {
                // The steady-state window runs once, after the first burst.
                let c = BurstCfg {
                    steady: if rep == 0 { steady } else { Duration::ZERO },
                    ..cfg
                };
                let r = burst(&c, rep).await;
                ready.push(r["ready_secs"].as_f64().unwrap_or(f64::NAN));
                del.push(r["delete_secs"].as_f64().unwrap_or(f64::NAN));
            }
            summary.push(format!(
                "burst {n} at {rate} req/s (client {rate}/{rate}): median Ready {:.2} s (limit {:.1} s, ratio {:.3}); deletion median {:.2} s; runs {ready:?} / {del:?}",
                median(&mut ready.clone()),
                n as f64 / rate as f64,
                median(&mut ready.clone()) / (n as f64 / rate as f64),
                median(&mut del.clone())
            ));
            if over_budget == 1 {
                let c = BurstCfg {
                    label: "rate-limited, client budget above server limit",
                    n,
                    latency_ms,
                    rate: Some(rate),
                    client_rps: 1000,
                    client_burst: 1000,
                    steady: Duration::ZERO,
                    idle: Duration::ZERO,
                    defaults: false,
                    server_burst: None,
                    budget: None,
                    hog: false,
                };
                let r = burst(&c, 0).await;
                summary.push(format!(
                    "burst {n} at {rate} req/s (client 1000/1000): Ready {:.2} s; deletion {:.2} s",
                    r["ready_secs"].as_f64().unwrap_or(f64::NAN),
                    r["delete_secs"].as_f64().unwrap_or(f64::NAN)
                ));
            }
        }
        if only.contains(&"nolimit") {
            let mut ready = Vec::new();
            let mut del = Vec::new();
            for rep in 0..repeats {
                let c = BurstCfg {
                    label: "no rate limit",
                    n,
                    latency_ms,
                    rate: None,
                    client_rps: 1000,
                    client_burst: 1000,
                    steady: Duration::ZERO,
                    idle: if rep == 0 { idle } else { Duration::ZERO },
                    defaults: false,
                    server_burst: None,
                    budget: None,
                    hog: false,
                };
                let r = burst(&c, rep).await;
                ready.push(r["ready_secs"].as_f64().unwrap_or(f64::NAN));
                del.push(r["delete_secs"].as_f64().unwrap_or(f64::NAN));
            }
            summary.push(format!(
                "burst {n}, no rate limit (client 1000/1000): median Ready {:.2} s; deletion median {:.2} s; runs {ready:?} / {del:?}",
                median(&mut ready.clone()),
                median(&mut del.clone())
            ));
        }
        if only.contains(&"latency") {
            for l in [0u64, latency_ms] {
                let mut p50 = Vec::new();
                let mut p99 = Vec::new();
                for rep in 0..repeats {
                    let r = latency(l, runs, rep).await;
                    p50.push(r["p50_ms"].as_f64().unwrap_or(f64::NAN));
                    p99.push(r["p99_ms"].as_f64().unwrap_or(f64::NAN));
                }
                summary.push(format!(
                    "latency at {l} ms: median p50 {:.1} ms, median p99 {:.1} ms; runs p50 {p50:?} p99 {p99:?}",
                    median(&mut p50.clone()),
                    median(&mut p99.clone())
                ));
            }
        }
        if only.contains(&"defaults") {
            // The operator at its default flags (20 req/s, burst 40, 16 in flight, 16 passes)
            // against a mock limited to the same 20 req/s: time against N/R, and the 429s.
            let rate: u32 = env("BENCH_DEFAULTS_RATE", 20);
            let server_burst: u32 = env("BENCH_DEFAULTS_SERVER_BURST", rate);
            let hog = env("BENCH_HOG", 0u8) == 1;
            let mut ready = Vec::new();
            let mut throttled = Vec::new();
            let mut writes = Vec::new();
            for rep in 0..repeats {
                let c = BurstCfg {
                    label: "operator defaults",
                    n,
                    latency_ms,
                    rate: Some(rate),
                    client_rps: rate,
                    client_burst: if rate == 20 { 40 } else { rate },
                    steady: Duration::ZERO,
                    idle: Duration::ZERO,
                    defaults: true,
                    server_burst: Some(server_burst),
                    // The default budget is 20 req/s; another server rate gets a matched budget.
                    budget: (rate != 20).then_some(rate),
                    hog,
                };
                let r = burst(&c, rep).await;
                ready.push(r["ready_secs"].as_f64().unwrap_or(f64::NAN));
                writes.push(r["kube_writes_per_create"].as_f64().unwrap_or(f64::NAN));
                let t: u64 = r["outcomes"]
                    .as_object()
                    .map(|o| {
                        o.iter()
                            .filter(|(k, _)| k.ends_with(" 429"))
                            .filter_map(|(_, v)| v.as_u64())
                            .sum()
                    })
                    .unwrap_or(0);
                throttled.push(t as f64 * 1000.0 / n as f64);
            }
            summary.push(format!(
                "burst {n} at the defaults against a {rate} req/s server (burst {server_burst}){}: median Ready {:.2} s = {:.3} × N/R (goal ≤ 1.10); 429s per 1,000 creates {throttled:?} (goal ≤ 1); Kubernetes writes per create {writes:?} (goal ≤ 3); runs {ready:?}",
                if hog { ", one core busy" } else { "" },
                median(&mut ready.clone()),
                median(&mut ready.clone()) / (n as f64 / rate as f64)
            ));
        }
        if only.contains(&"fairness") {
            let backlog: usize = env("BENCH_FAIR_BACKLOG", 2000);
            let b: usize = env("BENCH_FAIR_B", 20);
            let mut ratios = Vec::new();
            let mut alone = Vec::new();
            let mut busy = Vec::new();
            for rep in 0..repeats {
                let r = fairness(backlog, b, 20, latency_ms, rep).await;
                ratios.push(r["ratio"].as_f64().unwrap_or(f64::NAN));
                alone.push(r["b_alone_secs"].as_f64().unwrap_or(f64::NAN));
                busy.push(r["b_busy_secs"].as_f64().unwrap_or(f64::NAN));
            }
            summary.push(format!(
                "fairness: B's {b} objects beside A's {backlog} creates at 20 req/s: median {:.2} s against {:.2} s alone, ratio {:.3} (goal ≤ 1.2); runs alone {alone:?} busy {busy:?}",
                median(&mut busy.clone()),
                median(&mut alone.clone()),
                median(&mut ratios.clone())
            ));
        }
        if only.contains(&"lanes") {
            let n: usize = env("BENCH_LANES_N", 10_000);
            let r = lanes(n, 20, latency_ms).await;
            summary.push(format!(
                "user work first: {n} drift checks due at once at the defaults (server 20 req/s): 20 new objects apply → Ready p50 {:.1} ms, p99 {:.1} ms (goal ≤ {} ms); {} check GETs in the window",
                r["p50_ms"].as_f64().unwrap_or(f64::NAN),
                r["p99_ms"].as_f64().unwrap_or(f64::NAN),
                latency_ms + 200,
                r["check_gets"]
            ));
        }
        if only.contains(&"restart") {
            let n: usize = env("BENCH_RESTART_N", 10_000);
            let poll = std::env::var("BENCH_RESTART_POLL").unwrap_or_else(|_| "10m".into());
            let r = restart(n, &poll, latency_ms).await;
            summary.push(format!(
                "restart with {n} Ready objects (poll {poll}): /readyz after {:.2} s; first minute {} OneInbox calls (goal 0), {} Secret GETs (goal 0); OneInbox calls/s by tenth of the first two intervals {} (even over the first, ≤ 20/s); Secret GETs over both intervals {} (goal 0: steady state)",
                r["readyz_secs"].as_f64().unwrap_or(f64::NAN),
                r["first_minute_calls"],
                r["first_minute_secret_gets"],
                r["calls_per_second_by_tenth"],
                r["secret_gets_two_intervals"]
            ));
        }
        if only.contains(&"backlog") {
            let r = backlog(footprint_n).await;
            summary.push(format!(
                "backlog {footprint_n} (applied with the operator stopped): all Ready {:.1} s after the start (goal at 10,000: ≤ 75 s); CPU {:.1} s (goal at 10,000: ≤ 17 s); /readyz after {:.2} s",
                r["ready_secs"].as_f64().unwrap_or(f64::NAN),
                r["cpu_secs_to_ready"].as_f64().unwrap_or(f64::NAN),
                r["readyz_secs"].as_f64().unwrap_or(f64::NAN)
            ));
        }
        if only.contains(&"sidebyside") {
            let cfg = sidebyside::Cfg {
                n: env("BENCH_SIDE_N", 3000),
                pairs: env("BENCH_SIDE_PAIRS", 2),
                hog: env("BENCH_SIDE_HOG", 0u8) == 1,
                concurrency: env("BENCH_SIDE_CONCURRENCY", 16),
                latency_ms: env("BENCH_SIDE_LATENCY_MS", 0),
            };
            let md = sidebyside::scenario(cfg).await;
            summary.push(format!("side by side with crbase:\n{md}"));
        }
        if only.contains(&"scale") {
            let ns: String = env("BENCH_SCALE_N", "10000".to_string());
            let sip = env("BENCH_SCALE_SECRETS", 1u8) == 1;
            let lists: String = env("BENCH_SCALE_LISTS", "pages,stream".to_string());
            let lists: Vec<String> = lists.split(',').map(|s| s.trim().to_string()).collect();
            let watch = Duration::from_secs(env("BENCH_SCALE_WATCH_SECS", 60));
            for n in ns.split(',').filter_map(|v| v.trim().parse::<usize>().ok()) {
                let r = scale(n, sip, &lists, idle, watch).await;
                summary.push(format!(
                    "scale {n}: RSS at all Ready {:.1} MiB, after idling {:.1} MiB; restarts {}",
                    r["rss_mib_at_ready"].as_f64().unwrap_or(f64::NAN),
                    r["rss_mib_steady"].as_f64().unwrap_or(f64::NAN),
                    r["restarts"]
                ));
            }
        }
        if only.contains(&"footprint") {
            let r = footprint(footprint_n, idle).await;
            summary.push(format!(
                "footprint {footprint_n}: Ready in {:.1} s (goal at 10,000: ≤ 75 s); peak RSS {:.1} MiB; steady RSS {:.1} MiB (goal at 10,000: < 40 MiB); CPU to Ready {:.1} s (goal at 10,000: ≤ 17 s); deletion {:.1} s",
                r["ready_secs"].as_f64().unwrap_or(f64::NAN),
                r["hwm_mib_end"].as_f64().unwrap_or(f64::NAN),
                r["rss_mib_steady"].as_f64().unwrap_or(f64::NAN),
                r["cpu_secs_to_ready"].as_f64().unwrap_or(f64::NAN),
                r["delete_secs"].as_f64().unwrap_or(f64::NAN)
            ));
        }
        println!("\n=== summary ===");
        for s in &summary {
            println!("{s}");
        }
        println!("raw results appended to {}", results_file().display());
    });
}
