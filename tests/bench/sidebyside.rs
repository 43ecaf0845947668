//! Side by side with crbase (issue 30): the controller-runtime operator for the same CRD, built
//! from its source outside the repository by `tests/cluster/build.sh crbase`, run on the same
//! control plane and the same mock as ours, with no OneInbox rate limit.
//!
//! The two operators alternate, one at a time (ours, crbase, ours, crbase, … for
//! `BENCH_SIDE_PAIRS` pairs). Each run gets a fresh namespace with N Secrets made before the
//! timed window, a reset mock, and its operator started and `/readyz` before the first apply;
//! then N PhoneNumbers are applied (32 concurrent server-side applies, as in the other
//! scenarios) and the run ends when all are Ready (`Ready=True` and
//! `observedGeneration == generation`, first seen on a watch). Measured per run:
//!
//! - time from the first apply to all Ready, and the load generator's time for its own applies;
//! - kube-apiserver + etcd CPU (utime + stime from `/proc/<pid>/stat` of their pids) and the
//!   operator's CPU, from right before the first apply to 2 s after all Ready (trailing writes
//!   count), divided by N;
//! - the operator's RSS at all Ready;
//! - OneInbox calls per create (the mock's counters, reset before the run);
//! - the 1-minute load average right before the first apply and at all Ready;
//! - the API server's request counts for the resources the operators touch (cluster-wide).
//!
//! Then every PhoneNumber is deleted while the operator that owns it still runs (each removes its
//! own finalizer: ours `oneinbox.ai/finalizer`, crbase `oneinbox.ai/crbase`); finalizers are only
//! stripped, and said so, if that does not finish in time. The operator is stopped, the
//! namespace deleted and waited for, so that the next run starts equal.
//!
//! Guards (goal 5) per pair, reported, never failing the bench: kube-apiserver + etcd CPU per
//! create ≤ crbase's; operator CPU per create ≤ 0.5 × crbase's; exactly 1.00 OneInbox call per
//! create. Also goal 2 (RSS at 10,000 ≤ 0.33 × crbase's) when N ≥ 10,000, and goal 4 (all Ready
//! within crbase's time) when `BENCH_SIDE_HOG=1` keeps one core busy during both operators' runs.
//!
//! Environment: `BENCH_SIDE_N` (3000), `BENCH_SIDE_PAIRS` (2), `BENCH_SIDE_HOG` (0),
//! `BENCH_SIDE_CONCURRENCY` (16: ours `--concurrency` and `--api-max-in-flight`, crbase
//! `--concurrency`; both get a 1000/1000 OneInbox budget, all else at their defaults),
//! `BENCH_SIDE_LATENCY_MS` (0, the mock's latency). The table is written to
//! `target/bench/sidebyside-<N>[-hog].md` (the source of docs/benchmarks.md's section).

use super::*;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Which {
    Ours,
    Crbase,
}

impl Which {
    fn name(self) -> &'static str {
        match self {
            Which::Ours => "ours",
            Which::Crbase => "crbase",
        }
    }
}

/// crbase, killed on drop.
struct Peer {
    child: Child,
    health_port: u16,
    log: PathBuf,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

enum Running {
    Ours(Op),
    Crbase(Peer),
}

impl Running {
    fn start(which: Which, ns: &str, mock_url: &str, crbase: &std::path::Path, c: usize) -> Self {
        match which {
            Which::Ours => {
                let args: Vec<String> = [
                    "--api-rps",
                    "1000",
                    "--api-burst",
                    "1000",
                    "--api-max-in-flight",
                    &c.to_string(),
                    "--concurrency",
                    &c.to_string(),
                ]
                .iter()
                .map(|s| s.to_string())
                .collect();
                Running::Ours(Op::start(ns, mock_url, &args))
            }
            Which::Crbase => {
                let health_port = free_port();
                let log = std::env::temp_dir().join(format!("crbase-bench-{ns}.log"));
                let logf = std::fs::File::create(&log).expect("crbase log");
                let child = Command::new(crbase)
                    .arg("--kubeconfig")
                    .arg(state_dir().join("kubeconfig"))
                    .args([
                        "--api-url",
                        mock_url,
                        "--watch-namespace",
                        ns,
                        "--concurrency",
                        &c.to_string(),
                        "--api-rps",
                        "1000",
                        "--api-burst",
                        "1000",
                        "--metrics-addr",
                        "0",
                        "--health-addr",
                        &format!("127.0.0.1:{health_port}"),
                    ])
                    .env("ONEINBOX_API_KEY", API_KEY)
                    .stdout(Stdio::null())
                    .stderr(Stdio::from(logf))
                    .spawn()
                    .expect("spawn crbase");
                Running::Crbase(Peer {
                    child,
                    health_port,
                    log,
                })
            }
        }
    }

    fn pid(&self) -> u32 {
        match self {
            Running::Ours(op) => op.pid(),
            Running::Crbase(p) => p.child.id(),
        }
    }

    async fn wait_ready(&self) {
        match self {
            Running::Ours(op) => op.wait_ready().await,
            Running::Crbase(p) => {
                let deadline = Instant::now() + Duration::from_secs(60);
                while Instant::now() < deadline {
                    if let Ok(r) =
                        reqwest::get(format!("http://127.0.0.1:{}/readyz", p.health_port)).await
                        && r.status().is_success()
                    {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                panic!(
                    "crbase never ready; log:\n{}",
                    tail(&std::fs::read_to_string(&p.log).unwrap_or_default(), 30)
                );
            }
        }
    }
}

/// utime + stime of a process, in seconds (0 if it is gone).
fn cpu_of(pid: u32) -> f64 {
    proc_stats(pid).cpu_secs
}

/// The pid that `up.sh` recorded for `name` (etcd, kube-apiserver).
fn plane_pid(name: &str) -> u32 {
    std::fs::read_to_string(state_dir().join(format!("{name}.pid")))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name}.pid in {}", state_dir().display()))
}

fn load1() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

/// Builds (or takes from the cache) crbase; its path.
fn crbase_bin() -> PathBuf {
    let out = Command::new(repo().join("tests/cluster/build.sh"))
        .arg("crbase")
        .stderr(Stdio::inherit())
        .output()
        .expect("run tests/cluster/build.sh crbase");
    assert!(out.status.success(), "tests/cluster/build.sh crbase failed");
    let dir = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_string();
    let bin = PathBuf::from(dir).join("crbase");
    assert!(bin.exists(), "no crbase at {}", bin.display());
    bin
}

async fn reset_mock(mock: &Mock, latency_ms: u64) {
    mock.send(reqwest::Method::POST, "/_mock/reset", json!({}))
        .await;
    mock.config(json!({ "latency_ms": latency_ms })).await;
    let left = mock.total_calls().await + mock.registrations().await.len() as u64;
    assert_eq!(
        left, 0,
        "the mock kept calls or registrations after a reset"
    );
}

/// PhoneNumbers of the namespace still present after `timeout` lose their finalizers (the
/// number is returned; 0 when their operator released them all).
async fn delete_with_owner(
    pns: &Api<PhoneNumber>,
    tracker: &Tracker,
    timeout: Duration,
) -> (f64, usize) {
    let t0 = Instant::now();
    for attempt in 1..=3 {
        match pns
            .delete_collection(&DeleteParams::default(), &ListParams::default())
            .await
        {
            Ok(_) => break,
            Err(e) => log(&format!("  delete collection, attempt {attempt}: {e}")),
        }
    }
    // Any not marked by a cut-off answer: one by one.
    if let Ok(list) = pns.list_metadata(&ListParams::default()).await {
        let left: Vec<String> = list
            .items
            .into_iter()
            .filter(|o| o.metadata.deletion_timestamp.is_none())
            .map(|o| o.name_any())
            .collect();
        futures::stream::iter(left)
            .map(|name| {
                let pns = pns.clone();
                async move {
                    let _ = pns.delete(&name, &DeleteParams::default()).await;
                }
            })
            .buffer_unordered(32)
            .collect::<Vec<()>>()
            .await;
    }
    let deadline = Instant::now() + timeout;
    loop {
        if tracker.state.lock().unwrap().present.is_empty() {
            return (t0.elapsed().as_secs_f64(), 0);
        }
        if Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stuck: Vec<String> = tracker
        .state
        .lock()
        .unwrap()
        .present
        .iter()
        .cloned()
        .collect();
    log(&format!(
        "  {} PhoneNumbers not released by their operator in {timeout:?}: stripping their finalizers",
        stuck.len()
    ));
    futures::stream::iter(stuck.clone())
        .map(|name| {
            let pns = pns.clone();
            async move {
                let _ = pns
                    .patch(
                        &name,
                        &PatchParams::default(),
                        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
                    )
                    .await;
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<()>>()
        .await;
    (t0.elapsed().as_secs_f64(), stuck.len())
}

/// API server request counts that matter per create, by "resource VERB".
fn per_create(kube: &BTreeMap<String, u64>, n: usize) -> BTreeMap<String, f64> {
    kube.iter()
        .map(|(k, v)| (k.clone(), (*v as f64 / n as f64 * 1000.0).round() / 1000.0))
        .collect()
}

/// The scenario's parameters.
#[derive(Clone, Copy, Debug)]
pub struct Cfg {
    pub n: usize,
    pub pairs: usize,
    pub hog: bool,
    pub concurrency: usize,
    pub latency_ms: u64,
}

/// One operator's run of `n` creates; see the module's comment.
async fn run(which: Which, pair: usize, mock: &Mock, crbase: &std::path::Path, cfg: Cfg) -> Value {
    let Cfg {
        n,
        hog,
        concurrency,
        latency_ms,
        ..
    } = cfg;
    let client = admin_client().await;
    let ns = format!(
        "bench-side-{}-{}",
        which.name(),
        &uuid::Uuid::new_v4().simple().to_string()[..6]
    );
    let nss: Api<Namespace> = Api::all(client.clone());
    nss.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap(),
    )
    .await
    .expect("create namespace");
    let pns: Api<PhoneNumber> = Api::namespaced(client.clone(), &ns);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    reset_mock(mock, latency_ms).await;
    log(&format!(
        "sidebyside pair {pair} {}: N={n} in {ns}{}",
        which.name(),
        if hog { ", one core busy" } else { "" }
    ));
    let names = names("s", n);
    let t = Instant::now();
    create_secrets(&secrets, &names).await;
    log(&format!(
        "  {n} Secrets in {:.1} s",
        t.elapsed().as_secs_f64()
    ));
    let op = Running::start(which, &ns, &mock.url, crbase, concurrency);
    op.wait_ready().await;
    let tracker = Tracker::start(pns.clone()).await;
    // Let the operator's start (its lists, its first passes over nothing) settle.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (etcd, apiserver) = (plane_pid("etcd"), plane_pid("kube-apiserver"));
    let load_start = load1();
    let kube0 = apiserver_requests();
    let (op0, etcd0, api0) = (cpu_of(op.pid()), cpu_of(etcd), cpu_of(apiserver));
    let hog_flag = hog.then(cpu_hog);

    let t0 = Instant::now();
    let progress = async {
        loop {
            tokio::time::sleep(Duration::from_secs(10)).await;
            let s = proc_stats(op.pid());
            log(&format!(
                "  {} / {n} Ready after {:.0} s; operator RSS {:.1} MiB, CPU {:.1} s; load {:.2}",
                tracker.ready_count(),
                t0.elapsed().as_secs_f64(),
                s.rss_mib,
                s.cpu_secs - op0,
                load1()
            ));
        }
    };
    let work = async {
        futures::stream::iter(names.iter().enumerate())
            .map(|(i, name)| {
                let pns = pns.clone();
                async move {
                    let number = format!("+1{}", 2_000_000_000u64 + i as u64);
                    Bed::apply_pn(&pns, name, &number, true).await;
                }
            })
            .buffer_unordered(32)
            .collect::<Vec<()>>()
            .await;
        let created = t0.elapsed();
        let t_ready = tracker
            .wait("all Ready", Duration::from_secs(3600), |s| {
                s.ready.len() >= n
            })
            .await;
        (created, t_ready)
    };
    let (created, t_ready) = tokio::select! {
        r = work => r,
        _ = progress => unreachable!(),
    };
    let ready_secs = (t_ready - t0).as_secs_f64();
    let at_ready = proc_stats(op.pid());
    let load_end = load1();
    if let Some(h) = hog_flag {
        h.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (op1, etcd1, api1) = (cpu_of(op.pid()), cpu_of(etcd), cpu_of(apiserver));
    let kube = delta(&apiserver_requests(), &kube0);
    let calls = calls_map(&mock.calls().await);
    let total_calls: u64 = calls.values().sum();
    let registrations = mock.registrations().await.len();
    let plane_cpu = (api1 - api0) + (etcd1 - etcd0);
    let result = json!({
        "which": which.name(), "pair": pair, "n": n, "hog": hog, "namespace": ns,
        "concurrency": concurrency, "latency_ms": latency_ms,
        "ready_secs": ready_secs, "create_secs": created.as_secs_f64(),
        "apiserver_cpu_secs": api1 - api0, "etcd_cpu_secs": etcd1 - etcd0,
        "plane_cpu_ms_per_create": plane_cpu * 1000.0 / n as f64,
        "operator_cpu_secs": op1 - op0,
        "operator_cpu_ms_per_create": (op1 - op0) * 1000.0 / n as f64,
        "rss_mib_at_ready": at_ready.rss_mib, "hwm_mib_at_ready": at_ready.hwm_mib,
        "calls": calls, "calls_total": total_calls,
        "calls_per_create": total_calls as f64 / n as f64,
        "registrations": registrations,
        "load1_start": load_start, "load1_end": load_end,
        "apiserver_requests_per_create": per_create(&kube, n),
    });
    log(&format!(
        "  all {n} Ready in {ready_secs:.1} s (applied in {:.1} s); apiserver+etcd CPU {:.2} ms/create, operator CPU {:.2} ms/create, RSS {:.1} MiB, calls/create {:.3}, load {load_start:.2} → {load_end:.2}; API server requests per create {}",
        created.as_secs_f64(),
        plane_cpu * 1000.0 / n as f64,
        (op1 - op0) * 1000.0 / n as f64,
        at_ready.rss_mib,
        total_calls as f64 / n as f64,
        result["apiserver_requests_per_create"]
    ));

    // Kept before the clean-up, which is long at 10,000 (a cap that ends the run there loses
    // nothing measured).
    record("sidebyside", result.clone());

    // Clean up with the owner still running, then the namespace.
    let (delete_secs, stripped) = delete_with_owner(&pns, &tracker, Duration::from_secs(900)).await;
    let left = mock.registrations().await.len();
    log(&format!(
        "  deleted in {delete_secs:.1} s by {}; {stripped} finalizers stripped; {left} registrations left in the mock",
        which.name()
    ));
    drop(tracker);
    drop(op);
    let _ = nss.delete(&ns, &DeleteParams::default()).await;
    let deadline = Instant::now() + Duration::from_secs(900);
    while nss.get_opt(&ns).await.ok().flatten().is_some() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut result = result;
    result["delete_secs"] = json!(delete_secs);
    result["finalizers_stripped"] = json!(stripped);
    result["registrations_left_after_delete"] = json!(left);
    record(
        "sidebyside_cleanup",
        json!({"which": which.name(), "pair": pair, "n": n, "delete_secs": delete_secs,
            "finalizers_stripped": stripped, "registrations_left_after_delete": left}),
    );
    result
}

fn f(v: &Value, k: &str) -> f64 {
    v[k].as_f64().unwrap_or(f64::NAN)
}

fn pass(ok: bool) -> &'static str {
    if ok { "PASS" } else { "FAIL" }
}

/// The markdown section for docs/benchmarks.md: every run, the ratios and the guards per pair.
fn table(pairs: &[(Value, Value)], cfg: Cfg) -> String {
    let Cfg {
        n,
        hog,
        concurrency,
        ..
    } = cfg;
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(repo())
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    let commit = git(&["rev-parse", "--short", "HEAD"]);
    let dirty = !git(&["status", "--porcelain", "--", "src", "tests", "Cargo.toml"]).is_empty();
    let mut s = String::new();
    let mut w = |line: String| {
        s.push_str(&line);
        s.push('\n');
    };
    w(format!(
        "#### {n} creates side by side{}: commit `{commit}`{}, {}",
        if hog { ", one core kept busy" } else { "" },
        if dirty {
            " (with uncommitted changes)"
        } else {
            ""
        },
        jiff::Timestamp::now().strftime("%Y-%m-%d %H:%M UTC")
    ));
    w(String::new());
    w(format!(
        "No OneInbox rate limit; both operators at a 1000/1000 OneInbox budget and concurrency {concurrency}, other flags at their defaults; run in the order listed. Load = 1-minute load average at the first apply → at all Ready ({}).",
        machine()
    ));
    w(String::new());
    w("| pair | operator | load | all Ready | the load generator's applies | kube-apiserver + etcd CPU per create | operator CPU per create | RSS at all Ready | OneInbox calls per create | deletion |".into());
    w("|---|---|---|---|---|---|---|---|---|---|".into());
    for (i, (o, c)) in pairs.iter().enumerate() {
        for r in [o, c] {
            w(format!(
                "| {} | {} | {:.2} → {:.2} | {:.1} s | {:.1} s | {:.2} ms | {:.3} ms | {:.1} MiB | {:.3} | {:.1} s{} |",
                i + 1,
                r["which"].as_str().unwrap_or_default(),
                f(r, "load1_start"),
                f(r, "load1_end"),
                f(r, "ready_secs"),
                f(r, "create_secs"),
                f(r, "plane_cpu_ms_per_create"),
                f(r, "operator_cpu_ms_per_create"),
                f(r, "rss_mib_at_ready"),
                f(r, "calls_per_create"),
                f(r, "delete_secs"),
                match r["finalizers_stripped"].as_u64().unwrap_or(0) {
                    0 => String::new(),
                    k => format!(" ({k} finalizers stripped)"),
                }
            ));
        }
        w(format!(
            "| {} | **ours / crbase** | | **{:.2}** | **{:.2}** | **{:.2}** | **{:.2}** | **{:.2}** | | |",
            i + 1,
            f(o, "ready_secs") / f(c, "ready_secs"),
            f(o, "create_secs") / f(c, "create_secs"),
            f(o, "plane_cpu_ms_per_create") / f(c, "plane_cpu_ms_per_create"),
            f(o, "operator_cpu_ms_per_create") / f(c, "operator_cpu_ms_per_create"),
            f(o, "rss_mib_at_ready") / f(c, "rss_mib_at_ready"),
        ));
    }
    w(String::new());
    let mut head = "| pair | apiserver + etcd CPU per create ≤ crbase's | operator CPU per create ≤ 0.5 × crbase's | 1.00 OneInbox call per create".to_string();
    let mut rule = "|---|---|---|---".to_string();
    if n >= 10_000 {
        head.push_str(" | RSS ≤ 0.33 × crbase's (goal 2)");
        rule.push_str("|---");
    }
    if hog {
        head.push_str(" | all Ready ≤ crbase's time (goal 4) | the load generator's applies ≤ 1.1 × beside crbase (goal 4)");
        rule.push_str("|---|---");
    }
    w(format!("{head} |"));
    w(format!("{rule}|"));
    for (i, (o, c)) in pairs.iter().enumerate() {
        let mut line = format!(
            "| {} | {} ({:.2} ≤ {:.2} ms) | {} ({:.3} ≤ {:.3} ms) | {} ({} calls for {n})",
            i + 1,
            pass(f(o, "plane_cpu_ms_per_create") <= f(c, "plane_cpu_ms_per_create")),
            f(o, "plane_cpu_ms_per_create"),
            f(c, "plane_cpu_ms_per_create"),
            pass(f(o, "operator_cpu_ms_per_create") <= 0.5 * f(c, "operator_cpu_ms_per_create")),
            f(o, "operator_cpu_ms_per_create"),
            0.5 * f(c, "operator_cpu_ms_per_create"),
            pass(o["calls_total"].as_u64() == Some(n as u64)),
            o["calls_total"]
        );
        if n >= 10_000 {
            line.push_str(&format!(
                " | {} ({:.1} ≤ {:.1} MiB)",
                pass(f(o, "rss_mib_at_ready") <= 0.33 * f(c, "rss_mib_at_ready")),
                f(o, "rss_mib_at_ready"),
                0.33 * f(c, "rss_mib_at_ready")
            ));
        }
        if hog {
            line.push_str(&format!(
                " | {} ({:.1} ≤ {:.1} s)",
                pass(f(o, "ready_secs") <= f(c, "ready_secs")),
                f(o, "ready_secs"),
                f(c, "ready_secs")
            ));
            line.push_str(&format!(
                " | {} ({:.1} ≤ {:.1} s)",
                pass(f(o, "create_secs") <= 1.1 * f(c, "create_secs")),
                f(o, "create_secs"),
                1.1 * f(c, "create_secs")
            ));
        }
        w(format!("{line} |"));
    }
    w(String::new());
    w("API server requests per create (cluster-wide counters of phonenumbers, events, secrets, leases; the load generator's own apply and the watch included):".into());
    w(String::new());
    for (i, (o, c)) in pairs.iter().enumerate() {
        for r in [o, c] {
            w(format!(
                "- pair {} {}: {}",
                i + 1,
                r["which"].as_str().unwrap_or_default(),
                r["apiserver_requests_per_create"]
            ));
        }
    }
    s
}

/// The scenario: build crbase, alternate the operators for `pairs` pairs; the table.
pub async fn scenario(cfg: Cfg) -> String {
    // The CRDs and RBAC applied, the TLS provider installed.
    cluster();
    let crbase = crbase_bin();
    log(&format!("sidebyside: {cfg:?}, crbase {}", crbase.display()));
    let mock = Mock::start(&[]);
    let mut results = Vec::new();
    for pair in 1..=cfg.pairs {
        let o = run(Which::Ours, pair, &mock, &crbase, cfg).await;
        let c = run(Which::Crbase, pair, &mock, &crbase, cfg).await;
        results.push((o, c));
    }
    let md = table(&results, cfg);
    let out = repo().join(format!(
        "target/bench/sidebyside-{}{}.md",
        cfg.n,
        if cfg.hog { "-hog" } else { "" }
    ));
    let _ = std::fs::write(&out, &md);
    println!("\n{md}");
    log(&format!("table written to {}", out.display()));
    md
}
