//! Real Flux: source-controller and kustomize-controller (built from Go modules by
//! `tests/cluster/build.sh`) run as local processes against the test control plane, and pull
//! PhoneNumbers and their Secrets from a git repository served over smart HTTP on loopback
//! (`gittestserver`, on Flux's own git test server). Each test has its own repository and its
//! own controller pair, limited to the test's namespace.
//!
//! What Flux does is read from the objects it writes (the Kustomization's status, the
//! PhoneNumbers' resourceVersions) and from the kustomize-controller's log, which names every
//! object of every apply with what the apply did to it (`created`, `configured`, `unchanged`, ...).

use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use kube::ResourceExt;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use oneinbox_operator::crd::PhoneNumber;
use serde_json::{Value, json};

use crate::harness::*;

const KS_NAME: &str = "numbers";
const REPO_NAME: &str = "numbers";
const PATH: &str = "numbers";

/// The Flux CRDs (from the controllers' module zips), once per test binary.
pub fn flux_crds() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        cluster();
        for dir in ["source-controller-crds", "kustomize-controller-crds"] {
            // bin/ links to the directory; kubectl does not follow a link to a directory.
            let dir = std::fs::canonicalize(bin(dir)).expect("Flux CRDs (tests/cluster/build.sh)");
            let dir = dir.to_str().expect("path");
            kubectl_ok(&["apply", "--server-side", "--force-conflicts", "-f", dir]);
            wait_established(&["-f", dir]);
        }
    });
}

/// How Flux should read a PhoneNumber's health (`spec.healthCheckExprs`): the same verdicts as
/// kstatus, except that a number without conditions (the operator has not written its status
/// yet) is not Current; its expressions fail to evaluate, so Flux reports it Unknown and waits.
fn health_check_exprs() -> Value {
    json!([{
        "apiVersion": "oneinbox.ai/v1alpha1",
        "kind": "PhoneNumber",
        "inProgress": "status.conditions.exists(c, c.type == 'Reconciling' && c.status == 'True')",
        "failed": "status.conditions.exists(c, c.type == 'Stalled' && c.status == 'True')",
        "current": "status.conditions.exists(c, c.type == 'Ready' && c.status == 'True')"
    }])
}

fn resource(group: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, "v1", kind), plural)
}

/// `git` with no user or system configuration of the machine, and no prompts.
fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=e2e",
            "-c",
            "user.email=e2e@example.invalid",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .unwrap_or_else(|e| panic!("git {args:?}: {e}"));
    assert!(
        out.status.success(),
        "git {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A PhoneNumber and the Secret with its SIP password, as one file of the repository.
fn number_file(name: &str, number: &str, agent: &str, deletion_policy: &str) -> String {
    number_file_with(name, number, agent, deletion_policy, json!({}))
}

/// The same, with `annotations` on both objects.
fn number_file_with(
    name: &str,
    number: &str,
    agent: &str,
    deletion_policy: &str,
    annotations: Value,
) -> String {
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": format!("{name}-sip"), "annotations": annotations},
        "type": "Opaque",
        "stringData": {"password": format!("pw-flux-{name}-3b9d")}
    });
    let mut spec = sip_spec(number, &format!("{name}-sip"));
    spec["agentId"] = json!(agent);
    spec["deletionPolicy"] = json!(deletion_policy);
    let pn = json!({
        "apiVersion": "oneinbox.ai/v1alpha1", "kind": "PhoneNumber",
        "metadata": {"name": name, "annotations": annotations},
        "spec": spec
    });
    format!(
        "{}---\n{}",
        yaml_serde::to_string(&secret).expect("yaml"),
        yaml_serde::to_string(&pn).expect("yaml")
    )
}

fn condition<'a>(obj: &'a Value, type_: &str) -> Option<&'a Value> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

fn condition_status(obj: &Value, type_: &str) -> String {
    condition(obj, type_)
        .and_then(|c| c["status"].as_str())
        .unwrap_or_default()
        .to_string()
}

/// Ready=True for `revision`, and the status is of the current generation.
fn ks_ready_at(ks: &Value, revision: &str) -> bool {
    condition_status(ks, "Ready") == "True"
        && ks["status"]["lastAppliedRevision"] == revision
        && ks["status"]["observedGeneration"] == ks["metadata"]["generation"]
}

/// One object of one apply, from the kustomize-controller's log.
#[derive(Debug, Clone, PartialEq)]
struct Applied {
    object: String,
    action: String,
}

/// One Flux world: a git repository on loopback, a work clone, and a source-controller and a
/// kustomize-controller watching only `ns`.
struct Flux {
    ns: String,
    work: tempfile::TempDir,
    url: String,
    kustomizations: Api<DynamicObject>,
    repos: Api<DynamicObject>,
    kustomize_log: PathBuf,
    // Killed on drop, before the namespace is cleaned up.
    kustomize: Option<Proc>,
    source: Option<Proc>,
    git_server: Option<(Proc, ChildStdin)>,
    _root: tempfile::TempDir,
}

impl Flux {
    async fn start(w: &World) -> Flux {
        flux_crds();
        let root = tempfile::tempdir().expect("tempdir");

        // The git server; it ends when its stdin closes.
        let mut child = Command::new(bin("gittestserver"))
            .arg("--root")
            .arg(root.path().join("repos"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn gittestserver");
        let stdin = child.stdin.take().expect("stdin");
        let base = listen_address(&mut child, "gittestserver");
        let url = format!("{base}/{}.git", w.ns);

        let work = tempfile::tempdir().expect("tempdir");
        git(work.path(), &["init", "-q", "-b", "main"]);
        git(work.path(), &["remote", "add", "origin", &url]);

        let logs = root.path().join("logs");
        std::fs::create_dir_all(&logs).expect("logs dir");
        let source_log = logs.join("source-controller.log");
        let kustomize_log = logs.join("kustomize-controller.log");
        let storage = root.path().join("storage");
        std::fs::create_dir_all(&storage).expect("storage dir");
        let storage_port = free_port();
        let (mut source, source_health) = spawn_controller(
            "source-controller",
            &w.ns,
            &source_log,
            &[
                format!("--storage-path={}", storage.display()),
                format!("--storage-addr=127.0.0.1:{storage_port}"),
                format!("--storage-adv-addr=127.0.0.1:{storage_port}"),
            ],
        );
        let (mut kustomize, kustomize_health) =
            spawn_controller("kustomize-controller", &w.ns, &kustomize_log, &[]);
        wait_controller_ready(&mut source, source_health, &source_log).await;
        wait_controller_ready(&mut kustomize, kustomize_health, &kustomize_log).await;

        let kustomizations = Api::namespaced_with(
            w.client.clone(),
            &w.ns,
            &resource(
                "kustomize.toolkit.fluxcd.io",
                "Kustomization",
                "kustomizations",
            ),
        );
        let repos = Api::namespaced_with(
            w.client.clone(),
            &w.ns,
            &resource(
                "source.toolkit.fluxcd.io",
                "GitRepository",
                "gitrepositories",
            ),
        );
        Flux {
            ns: w.ns.clone(),
            work,
            url,
            kustomizations,
            repos,
            kustomize_log,
            kustomize: Some(kustomize),
            source: Some(source),
            git_server: Some((Proc { child }, stdin)),
            _root: root,
        }
    }

    /// Write (Some) or remove (None) files under the Kustomization's path, commit, push, ask the
    /// source-controller to look now, and return the revision Flux will report.
    fn commit(&self, files: &[(&str, Option<String>)], message: &str) -> String {
        self.commit_at(PATH, files, message)
    }

    /// The same under `subdir` of the repository.
    fn commit_at(&self, subdir: &str, files: &[(&str, Option<String>)], message: &str) -> String {
        let dir = self.work.path().join(subdir);
        std::fs::create_dir_all(&dir).expect("mkdir");
        for (name, content) in files {
            let path = dir.join(format!("{name}.yaml"));
            match content {
                Some(text) => std::fs::write(&path, text).expect("write manifest"),
                None => std::fs::remove_file(&path).expect("remove manifest"),
            }
        }
        git(self.work.path(), &["add", "-A"]);
        git(self.work.path(), &["commit", "-q", "-m", message]);
        git(self.work.path(), &["push", "-q", "origin", "main"]);
        let sha = git(self.work.path(), &["rev-parse", "HEAD"]);
        kubectl(&[
            "-n",
            &self.ns,
            "annotate",
            "--overwrite",
            &format!("gitrepository/{REPO_NAME}"),
            &format!("reconcile.fluxcd.io/requestedAt={sha}"),
        ]);
        format!("main@sha1:{sha}")
    }

    /// The GitRepository and the Kustomization (prune and wait on, PhoneNumbers' health read
    /// with `HEALTH_CHECK_EXPRS`), with short intervals.
    async fn apply_sync(&self) {
        self.apply_sync_of(&[(KS_NAME, PATH, true)]).await;
    }

    /// The GitRepository and one Kustomization per (name, path, with HEALTH_CHECK_EXPRS).
    async fn apply_sync_of(&self, kustomizations: &[(&str, &str, bool)]) {
        let repo = json!({
            "apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
            "metadata": {"name": REPO_NAME},
            "spec": {"interval": "2s", "timeout": "30s", "url": self.url, "ref": {"branch": "main"}}
        });
        self.repos
            .patch(
                REPO_NAME,
                &PatchParams::apply("e2e").force(),
                &Patch::Apply(&repo),
            )
            .await
            .expect("apply GitRepository");
        for (name, path, exprs) in kustomizations {
            let mut ks = json!({
                "apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
                "metadata": {"name": name},
                "spec": {
                    "interval": "3s", "retryInterval": "2s", "timeout": "2m",
                    "prune": true, "wait": true,
                    "path": format!("./{path}"),
                    "targetNamespace": self.ns,
                    "sourceRef": {"kind": "GitRepository", "name": REPO_NAME}
                }
            });
            if *exprs {
                ks["spec"]["healthCheckExprs"] = health_check_exprs();
            }
            self.kustomizations
                .patch(name, &PatchParams::apply("e2e").force(), &Patch::Apply(&ks))
                .await
                .expect("apply Kustomization");
        }
    }

    async fn ks(&self) -> Value {
        serde_json::to_value(
            self.kustomizations
                .get(KS_NAME)
                .await
                .expect("get Kustomization"),
        )
        .expect("json")
    }

    /// Poll the Kustomization until `pred` holds, or fail with its last state and Flux's log.
    async fn wait_ks(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        self.wait_ks_named(KS_NAME, what, pred).await
    }

    async fn wait_ks_named(&self, name: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut last = Value::Null;
        while Instant::now() < deadline {
            if let Ok(Some(ks)) = self.kustomizations.get_opt(name).await {
                let ks = serde_json::to_value(ks).expect("json");
                if pred(&ks) {
                    return ks;
                }
                last = ks;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!(
            "timed out waiting for Kustomization {name} to be {what}; status: {}\n--- kustomize-controller log tail ---\n{}",
            serde_json::to_string_pretty(&last["status"]).unwrap_or_default(),
            tail(
                &std::fs::read_to_string(&self.kustomize_log).unwrap_or_default(),
                30
            )
        );
    }

    async fn wait_ready_at(&self, revision: &str) -> Value {
        self.wait_ks(&format!("Ready at {revision}"), |ks| {
            ks_ready_at(ks, revision)
        })
        .await
    }

    /// The kustomize-controller's log lines about our Kustomization, parsed.
    fn log_entries(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.kustomize_log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["name"] == KS_NAME && v["namespace"] == self.ns.as_str())
            .collect()
    }

    /// The objects of the first apply of `revision`.
    fn applied_at(&self, revision: &str) -> Vec<Applied> {
        self.log_entries()
            .iter()
            .find(|v| v["msg"] == "server-side apply completed" && v["revision"] == revision)
            .map(|v| {
                v["output"]
                    .as_object()
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(object, action)| Applied {
                        object,
                        action: action.as_str().unwrap_or_default().to_string(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Successful reconciles so far.
    fn reconciles(&self) -> usize {
        self.log_entries()
            .iter()
            .filter(|v| {
                v["msg"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("Reconciliation finished"))
            })
            .count()
    }

    /// Every object of every apply so far, in order.
    fn applied(&self) -> Vec<Applied> {
        self.log_entries()
            .iter()
            .filter(|v| v["msg"] == "server-side apply completed")
            .flat_map(|v| {
                v["output"]
                    .as_object()
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(object, action)| Applied {
                        object,
                        action: action.as_str().unwrap_or_default().to_string(),
                    })
            })
            .collect()
    }

    /// Wait until `n` more reconciles than `since` have finished successfully.
    async fn wait_reconciles(&self, since: usize, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(90);
        while self.reconciles() < since + n {
            assert!(
                Instant::now() < deadline,
                "{n} reconciles did not finish (so far {} since the mark); log tail:\n{}",
                self.reconciles() - since,
                tail(
                    &std::fs::read_to_string(&self.kustomize_log).unwrap_or_default(),
                    30
                )
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Flux {
    fn drop(&mut self) {
        self.kustomize.take();
        self.source.take();
        self.git_server.take();
        // With the controllers gone, nobody releases Flux's finalizers (test clean-up only).
        for kind in ["kustomizations", "gitrepositories"] {
            let out = kubectl(&["-n", &self.ns, "get", kind, "-o", "name"]);
            for obj in String::from_utf8_lossy(&out.stdout).lines() {
                let _ = kubectl(&[
                    "-n",
                    &self.ns,
                    "patch",
                    obj,
                    "--type=merge",
                    "-p",
                    r#"{"metadata":{"finalizers":null}}"#,
                ]);
            }
        }
    }
}

/// Start a Flux controller for `ns` with the admin kubeconfig, without leader election, its
/// metrics and health endpoints on free loopback ports; returns it and its health port.
fn spawn_controller(name: &str, ns: &str, log: &Path, extra: &[String]) -> (Proc, u16) {
    let health = free_port();
    let logf = std::fs::File::create(log).expect("controller log");
    let child = Command::new(bin(name))
        .args([
            "--watch-all-namespaces=false".to_string(),
            "--enable-leader-election=false".to_string(),
            format!("--metrics-addr=127.0.0.1:{}", free_port()),
            format!("--health-addr=127.0.0.1:{health}"),
            "--log-encoding=json".to_string(),
        ])
        .args(extra)
        .env("KUBECONFIG", state_dir().join("kubeconfig"))
        .env("RUNTIME_NAMESPACE", ns)
        .stdout(Stdio::from(logf.try_clone().expect("log")))
        .stderr(Stdio::from(logf))
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
    (Proc { child }, health)
}

async fn wait_controller_ready(proc: &mut Proc, port: u16, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(Some(status)) = proc.child.try_wait() {
            panic!(
                "{} exited ({status}):\n{}",
                log.display(),
                tail(&std::fs::read_to_string(log).unwrap_or_default(), 30)
            );
        }
        if let Ok(r) = reqwest::get(format!("http://127.0.0.1:{port}/readyz")).await
            && r.status().is_success()
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} did not become ready:\n{}",
            log.display(),
            tail(&std::fs::read_to_string(log).unwrap_or_default(), 30)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Snapshot of the PhoneNumbers in the namespace: name → (resourceVersion, Ready).
async fn snapshot(pns: &Api<PhoneNumber>) -> Vec<(String, String, bool)> {
    let mut out: Vec<_> = pns
        .list(&Default::default())
        .await
        .expect("list")
        .items
        .iter()
        .map(|p| {
            (
                p.name_any(),
                p.resource_version().unwrap_or_default(),
                is_ready(p),
            )
        })
        .collect();
    out.sort();
    out
}

/// Registrations deregistered so far: DELETEs that OneInbox carried out (a DELETE retried after
/// a lost answer finds nothing left and is not counted).
async fn deregistrations(mock: &Mock) -> u64 {
    mock.get("/_mock/calls/log").await["accepted"][DELETE]
        .as_u64()
        .unwrap_or(0)
}

/// Writes to OneInbox so far (POST, PATCH, DELETE).
async fn writes(mock: &Mock) -> (u64, u64, u64) {
    (
        mock.count(POST).await,
        mock.count(PATCH).await,
        mock.count(DELETE).await,
    )
}

fn ready_since(p: &PhoneNumber) -> jiff::Timestamp {
    p.condition("Ready").expect("Ready").last_transition_time.0
}

#[tokio::test]
async fn kustomization_waits_for_every_number_then_stays_quiet() {
    let w = World::start("flux-wait").await;
    let flux = Flux::start(&w).await;

    // New registrations stay `provisioning` until the test releases them one by one.
    w.mock.config(json!({"provisioning_ms": 600_000})).await;
    let names = ["alpha", "bravo", "charlie"];
    let files: Vec<_> = names
        .iter()
        .map(|n| (*n, Some(number_file(n, &number(), AGENT, "Delete"))))
        .collect();
    let rev = flux.commit(&files, "three numbers");
    flux.apply_sync().await;

    // Watch both sides from now on: the Kustomization first, then the numbers. The numbers only
    // move towards Ready here, so a number seen not Ready after a Ready Kustomization was not
    // Ready when the Kustomization was read either.
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (ks_api, pns, stop) = (flux.kustomizations.clone(), w.pns.clone(), stop.clone());
        let rev = rev.clone();
        tokio::spawn(async move {
            let mut samples = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                if let Ok(Some(ks)) = ks_api.get_opt(KS_NAME).await {
                    let ks = serde_json::to_value(ks).expect("json");
                    let ready = snapshot(&pns).await.iter().filter(|s| s.2).count();
                    samples.push((ks_ready_at(&ks, &rev), ready));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            samples
        })
    };

    // Flux applied all three and runs its health checks; every number is registered and
    // provisioning.
    let mut ids = Vec::new();
    for n in names {
        let pn = w.wait_reason(n, "Ready", "Provisioning").await;
        ids.push(pn.status.and_then(|s| s.phone_number_id).expect("id"));
    }
    let ks = flux
        .wait_ks("running its health checks", |ks| {
            condition(ks, "Healthy").is_some_and(|c| c["reason"] == "Progressing")
        })
        .await;
    assert_ne!(condition_status(&ks, "Ready"), "True", "{ks}");

    // Release two of three: both turn Ready, and the Kustomization is still waiting.
    for (n, id) in names.iter().zip(&ids).take(2) {
        w.mock
            .send(
                reqwest::Method::PUT,
                &format!("/_mock/phone-numbers/{id}/status"),
                json!({"status": "active"}),
            )
            .await;
        w.wait_ready(n).await;
    }
    // Give Flux time for more than one of its health-check polls (every 5 s) with two of three
    // Ready; the sampler records what it shows meanwhile, and it must not be Ready.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let ks = flux.ks().await;
    assert_ne!(condition_status(&ks, "Ready"), "True", "{ks}");
    assert_eq!(
        condition(&ks, "Healthy").map(|c| c["reason"].clone()),
        Some(json!("Progressing")),
        "{ks}"
    );

    // Release the third: now the Kustomization turns Ready.
    w.mock
        .send(
            reqwest::Method::PUT,
            &format!("/_mock/phone-numbers/{}/status", ids[2]),
            json!({"status": "active"}),
        )
        .await;
    let ks = flux.wait_ready_at(&rev).await;
    stop.store(true, Ordering::SeqCst);
    let samples = sampler.await.expect("sampler");
    w.mock.config(json!({})).await;

    let early: Vec<_> = samples
        .iter()
        .filter(|(ks, ready)| *ks && *ready < 3)
        .collect();
    assert!(
        early.is_empty(),
        "the Kustomization was Ready while numbers were not: {early:?}"
    );
    let waiting = samples
        .iter()
        .filter(|(ks, ready)| !*ks && *ready == 2)
        .count();
    assert!(
        waiting > 0,
        "never saw the Kustomization waiting on the last number: {samples:?}"
    );
    // The same in the recorded transition times: no number turned Ready after the Kustomization.
    let ks_since = condition(&ks, "Ready").expect("Ready")["lastTransitionTime"]
        .as_str()
        .expect("time")
        .parse::<jiff::Timestamp>()
        .expect("timestamp");
    for n in names {
        let pn = w.pns.get(n).await.expect("get");
        assert!(is_ready(&pn), "{n}");
        let since = ready_since(&pn);
        assert!(
            since <= ks_since,
            "{n} Ready since {since}, Kustomization since {ks_since}"
        );
    }
    // The first apply created the numbers (a later one, if any, found them unchanged).
    let first_apply = flux.applied_at(&rev);
    assert_eq!(
        first_apply
            .iter()
            .filter(|a| a.object.starts_with("PhoneNumber/"))
            .map(|a| a.action.as_str())
            .collect::<Vec<_>>(),
        ["created", "created", "created"],
        "{first_apply:?}"
    );
    let inventory = ks["status"]["inventory"]["entries"]
        .as_array()
        .map(Vec::len)
        .unwrap_or(0);
    assert_eq!(inventory, 6, "three PhoneNumbers and three Secrets: {ks}");

    // The steady window: one reconcile to let anything still in flight land, then several
    // reconciles of the Kustomization (interval 3s). Nothing may be applied again, no number
    // may change, and the operator may not write anything, to Kubernetes or to OneInbox.
    let mark = flux.reconciles();
    flux.wait_reconciles(mark, 1).await;
    let mark = flux.reconciles();
    let applied_before = flux.applied().len();
    let numbers_before = snapshot(&w.pns).await;
    let writes_before = writes(&w.mock).await;
    let ks_before = flux.ks().await;
    flux.wait_reconciles(mark, 4).await;
    let window: Vec<_> = flux.applied()[applied_before..].to_vec();
    let changed: Vec<_> = window.iter().filter(|a| a.action != "unchanged").collect();
    assert!(changed.is_empty(), "Flux re-applied: {changed:?}");
    // Each reconcile compares all six objects; a reconcile under way at either end of the
    // window may have its apply outside it.
    assert!(
        window.len() >= 3 * 6 && window.len() % 6 == 0,
        "each reconcile compares all six objects: {window:?}"
    );
    assert_eq!(
        snapshot(&w.pns).await,
        numbers_before,
        "a PhoneNumber changed"
    );
    assert_eq!(writes(&w.mock).await, writes_before, "OneInbox writes");
    let ks_after = flux.ks().await;
    assert_eq!(
        ks_after["status"]["lastAppliedRevision"],
        ks_before["status"]["lastAppliedRevision"]
    );
    assert_eq!(
        ks_after["status"]["inventory"],
        ks_before["status"]["inventory"]
    );
    assert!(ks_ready_at(&ks_after, &rev), "{ks_after}");
}

#[tokio::test]
async fn commits_update_fail_and_prune_phone_numbers() {
    let w = World::start("flux-git").await;
    let flux = Flux::start(&w).await;
    let (na, nb, nc, nd) = (number(), number(), number(), number());
    // delta asks Flux never to prune it (and its Secret).
    let keep = json!({"kustomize.toolkit.fluxcd.io/prune": "disabled"});
    let rev = flux.commit(
        &[
            ("alpha", Some(number_file("alpha", &na, AGENT, "Delete"))),
            ("bravo", Some(number_file("bravo", &nb, AGENT, "Delete"))),
            (
                "charlie",
                Some(number_file("charlie", &nc, AGENT, "Orphan")),
            ),
            (
                "delta",
                Some(number_file_with("delta", &nd, AGENT, "Delete", keep)),
            ),
        ],
        "four numbers",
    );
    flux.apply_sync().await;
    flux.wait_ready_at(&rev).await;
    for n in ["alpha", "bravo", "charlie", "delta"] {
        assert!(is_ready(&w.pns.get(n).await.expect("get")), "{n}");
    }
    assert_eq!(w.mock.registrations().await.len(), 4);

    // An agentId changed in git: one PATCH, nothing else; Ready again at the new revision.
    let calls_before = w.mock.calls().await;
    let rev = flux.commit(
        &[("alpha", Some(number_file("alpha", &na, AGENT2, "Delete")))],
        "alpha: new agent",
    );
    flux.wait_ready_at(&rev).await;
    let apply = flux.applied_at(&rev);
    let configured: Vec<_> = apply
        .iter()
        .filter(|a| a.action != "unchanged")
        .map(|a| a.object.clone())
        .collect();
    assert_eq!(
        configured,
        [format!("PhoneNumber/{}/alpha", w.ns)],
        "{apply:?}"
    );
    assert_eq!(apply.len(), 8, "{apply:?}");
    w.wait_for("alpha", "the new agent", Duration::from_secs(30), |p| {
        p.spec.agent_id == AGENT2 && is_ready(p) && synced(p)
    })
    .await;
    let mark = flux.reconciles();
    flux.wait_reconciles(mark, 1).await;
    let calls_after = w.mock.calls().await;
    let delta = |k: &str| {
        calls_after.get(k).and_then(Value::as_u64).unwrap_or(0)
            - calls_before.get(k).and_then(Value::as_u64).unwrap_or(0)
    };
    assert_eq!(delta(PATCH), 1, "{calls_before} → {calls_after}");
    assert_eq!(
        (delta(POST), delta(DELETE)),
        (0, 0),
        "{calls_before} → {calls_after}"
    );
    let alpha_id = w
        .pns
        .get("alpha")
        .await
        .expect("get")
        .status
        .and_then(|s| s.phone_number_id);
    let regs = w.mock.registrations().await;
    let alpha_reg = regs
        .iter()
        .find(|r| r["id"].as_str().map(str::to_owned) == alpha_id)
        .expect("alpha's registration");
    assert_eq!(alpha_reg["agent_id"], json!(AGENT2));

    // An invalid number in git: the Kustomization fails with the API server's message naming
    // the field; nothing is applied, no number changes, OneInbox sees no write.
    let numbers_before = snapshot(&w.pns).await;
    let writes_before = writes(&w.mock).await;
    let applied_before = flux.applied().len();
    let good_rev = rev;
    let bad = json!({
        "apiVersion": "oneinbox.ai/v1alpha1", "kind": "PhoneNumber",
        "metadata": {"name": "invalid"},
        "spec": {"phoneNumber": "0800-not-e164", "provider": "telnyx", "agentId": AGENT,
                 "credentialId": CREDENTIAL}
    });
    let bad_rev = flux.commit(
        &[("invalid", Some(yaml_serde::to_string(&bad).expect("yaml")))],
        "an invalid number",
    );
    let ks = flux
        .wait_ks("failed at the invalid revision", |ks| {
            ks["status"]["lastAttemptedRevision"] == bad_rev.as_str()
                && condition_status(ks, "Ready") == "False"
        })
        .await;
    let ready = condition(&ks, "Ready").expect("Ready");
    let message = ready["message"].as_str().unwrap_or_default();
    assert_eq!(ready["reason"], "ReconciliationFailed", "{ks}");
    assert!(
        message.contains("PhoneNumber")
            && message.contains("invalid")
            && message.contains("spec.phoneNumber"),
        "the message names the object and the field: {message}"
    );
    assert_eq!(
        ks["status"]["lastAppliedRevision"],
        good_rev.as_str(),
        "{ks}"
    );
    // It keeps failing (retryInterval 2s) and still touches nothing.
    let failed_before = failures(&flux);
    let deadline = Instant::now() + Duration::from_secs(60);
    while failures(&flux) < failed_before + 2 {
        assert!(Instant::now() < deadline, "no further failed reconciles");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(w.pns.get_opt("invalid").await.expect("get").is_none());
    assert_eq!(
        snapshot(&w.pns).await,
        numbers_before,
        "a PhoneNumber changed"
    );
    assert_eq!(writes(&w.mock).await, writes_before, "OneInbox writes");
    assert_eq!(flux.applied().len(), applied_before, "nothing was applied");

    // The invalid number removed again: Ready, and still nothing changed.
    let rev = flux.commit(&[("invalid", None)], "remove the invalid number");
    flux.wait_ready_at(&rev).await;
    assert_eq!(
        snapshot(&w.pns).await,
        numbers_before,
        "a PhoneNumber changed"
    );
    assert_eq!(writes(&w.mock).await, writes_before, "OneInbox writes");

    // bravo (deletionPolicy Delete) removed from git: pruned and deregistered.
    let bravo_id = w
        .pns
        .get("bravo")
        .await
        .expect("get")
        .status
        .and_then(|s| s.phone_number_id)
        .expect("id");
    let deletes_before = deregistrations(&w.mock).await;
    let rev = flux.commit(&[("bravo", None)], "remove bravo");
    flux.wait_ready_at(&rev).await;
    w.wait_gone("bravo", Duration::from_secs(30)).await;
    assert_eq!(
        deregistrations(&w.mock).await,
        deletes_before + 1,
        "{}",
        w.mock.get("/_mock/calls/log").await
    );
    let regs = w.mock.registrations().await;
    assert!(
        regs.iter().all(|r| r["id"] != bravo_id.as_str()),
        "bravo's registration is still there: {regs:?}"
    );
    assert_eq!(regs.len(), 3, "{regs:?}");

    // charlie (deletionPolicy Orphan) removed from git: pruned, its registration kept.
    let charlie_id = w
        .pns
        .get("charlie")
        .await
        .expect("get")
        .status
        .and_then(|s| s.phone_number_id)
        .expect("id");
    let writes_before = writes(&w.mock).await;
    let rev = flux.commit(&[("charlie", None)], "remove charlie");
    flux.wait_ready_at(&rev).await;
    w.wait_gone("charlie", Duration::from_secs(30)).await;
    assert_eq!(
        writes(&w.mock).await,
        writes_before,
        "no DELETE (nor any write) for an orphan"
    );
    let regs = w.mock.registrations().await;
    assert!(
        regs.iter().any(|r| r["id"] == charlie_id.as_str()),
        "charlie's registration is gone: {regs:?}"
    );
    assert_eq!(regs.len(), 3, "{regs:?}");

    // delta (prune disabled) removed from git: Flux lets go of it and leaves it alone.
    let delta_before = w.pns.get("delta").await.expect("get");
    let writes_before = writes(&w.mock).await;
    let rev = flux.commit(&[("delta", None)], "remove delta");
    flux.wait_ready_at(&rev).await;
    let mark = flux.reconciles();
    flux.wait_reconciles(mark, 1).await;
    let delta = w.pns.get("delta").await.expect("delta is kept");
    assert!(delta.metadata.deletion_timestamp.is_none());
    assert_eq!(delta.resource_version(), delta_before.resource_version());
    assert!(is_ready(&delta));
    assert_eq!(
        writes(&w.mock).await,
        writes_before,
        "no DELETE (nor any write) for a number Flux must not prune"
    );
    assert_eq!(w.mock.registrations().await.len(), 3);
    let gc: Vec<_> = flux
        .log_entries()
        .iter()
        .filter_map(|v| {
            v["msg"]
                .as_str()
                .filter(|m| m.starts_with("garbage collection completed"))
                .map(str::to_owned)
        })
        .collect();
    assert!(gc.len() >= 2, "{gc:?}");
    assert!(
        gc[0].contains(&format!("PhoneNumber/{}/bravo deleted", w.ns)),
        "{gc:?}"
    );
    assert!(
        gc[1].contains(&format!("PhoneNumber/{}/charlie deleted", w.ns)),
        "{gc:?}"
    );
    assert!(gc.iter().all(|m| !m.contains("delta deleted")), "{gc:?}");
    let ks = flux.ks().await;
    let inventory: Vec<_> = ks["status"]["inventory"]["entries"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|e| e["id"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(inventory.len(), 2, "alpha and its Secret: {inventory:?}");
    assert!(
        inventory.iter().all(|id| !id.contains("delta")),
        "{inventory:?}"
    );
    assert!(w.pns.get("alpha").await.is_ok());
}

#[tokio::test]
async fn wait_alone_waits_for_numbers_the_operator_has_not_seen() {
    let mut w = World::start("flux-kstatus").await;
    // No operator: nothing is registered and no status is written until it starts again.
    w.operator.kill();
    let flux = Flux::start(&w).await;
    flux.commit_at(
        "plain",
        &[(
            "plain",
            Some(number_file("plain", &number(), AGENT, "Delete")),
        )],
        "a number for a Kustomization without healthCheckExprs",
    );
    let rev = flux.commit_at(
        "cel",
        &[("cel", Some(number_file("cel", &number(), AGENT, "Delete")))],
        "a number for a Kustomization with healthCheckExprs",
    );
    flux.apply_sync_of(&[("plain", "plain", false), ("cel", "cel", true)])
        .await;

    // Before the operator's first write the number reads as generation 1 not yet observed
    // (the CRD's status default), which kstatus calls InProgress: both Kustomizations wait,
    // over more than one of Flux's health-check polls (every 5 s).
    for name in ["plain", "cel"] {
        flux.wait_ks_named(name, "running its health checks", |ks| {
            condition(ks, "Healthy").is_some_and(|c| c["reason"] == "Progressing")
        })
        .await;
    }
    tokio::time::sleep(Duration::from_secs(8)).await;
    for name in ["plain", "cel"] {
        let ks = flux.wait_ks_named(name, "read", |_| true).await;
        assert_ne!(condition_status(&ks, "Ready"), "True", "{name}: {ks}");
        let pn = w.pns.get(name).await.expect("get");
        let status = pn.status.expect("the defaulted status");
        assert_eq!(status.observed_generation, Some(0), "{name}");
        assert!(
            status.conditions.is_empty(),
            "{name}: {:?}",
            status.conditions
        );
    }
    assert_eq!(w.mock.total_calls().await, 0);

    // The operator registers both numbers; both Kustomizations turn Ready.
    w.operator.spawn();
    for name in ["plain", "cel"] {
        flux.wait_ks_named(name, "Ready", |ks| ks_ready_at(ks, &rev))
            .await;
        assert!(is_ready(&w.pns.get(name).await.expect("get")));
    }
}

#[test]
fn the_docs_show_the_health_check_exprs_the_tests_use() {
    let text = std::fs::read_to_string(repo().join("docs/flux.md")).expect("docs/flux.md");
    let shown: Vec<Value> = text
        .split("```yaml\n")
        .skip(1)
        .filter_map(|b| b.split("```").next())
        .filter_map(|b| yaml_serde::from_str::<Value>(b).ok())
        .filter(|d| d["kind"] == "Kustomization")
        .map(|d| d["spec"]["healthCheckExprs"].clone())
        .collect();
    assert_eq!(shown, [health_check_exprs()]);
}

/// Failed reconciles so far.
fn failures(flux: &Flux) -> usize {
    flux.log_entries()
        .iter()
        .filter(|v| {
            v["msg"]
                .as_str()
                .is_some_and(|m| m.starts_with("Reconciliation failed"))
        })
        .count()
}
