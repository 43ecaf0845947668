//! The e2e world: the real control plane from `tests/cluster/up.sh` (required: a missing cluster
//! fails, never skips), one `oneinbox-mock` and one `oneinbox-operator` process per test, and a
//! fresh namespace per test. The operator runs as `system:serviceaccount:oneinbox-system:
//! oneinbox-operator`, bound only by `deploy/rbac.yaml`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use oneinbox_operator::crd::PhoneNumber;
use serde_json::{Value, json};

pub const AGENT: &str = "3c90c3cc-0d44-4b50-8888-8dd25736052a";
pub const AGENT2: &str = "5f0c2f4e-6a1b-4c1d-9e2f-0a1b2c3d4e5f";
pub const CREDENTIAL: &str = "9b2d7c1e-3f4a-4b5c-8d6e-7f8a9b0c1d2e";
/// The API key every test operator uses; checked absent from logs and events.
pub const API_KEY: &str = "oi_sk_e2e_never_log_this_key_5d1c";

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn state_dir() -> PathBuf {
    std::env::var_os("TESTENV_STATE")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/testenv"))
}

pub fn bin(name: &str) -> PathBuf {
    state_dir().join("bin").join(name)
}

/// kubectl 1.36 from the test cache, as admin.
pub fn kubectl(args: &[&str]) -> std::process::Output {
    Command::new(bin("kubectl"))
        .arg("--kubeconfig")
        .arg(state_dir().join("kubeconfig"))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("kubectl {args:?}: {e}"))
}

/// `kubectl wait --for=condition=Established` on `targets`, tried up to three times: right
/// after an apply a CRD's status may have no conditions yet, and kubectl then fails at once
/// instead of waiting for its timeout.
pub fn wait_established(targets: &[&str]) {
    let mut args = vec!["wait", "--for=condition=Established", "--timeout=60s"];
    args.extend_from_slice(targets);
    for _ in 0..2 {
        if kubectl(&args).status.success() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
    kubectl_ok(&args);
}

pub fn kubectl_ok(args: &[&str]) -> String {
    let out = kubectl(args);
    assert!(
        out.status.success(),
        "kubectl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Once per test binary: the cluster is up, the CRD from crds/ is Established, RBAC applied.
pub fn cluster() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let kc = state_dir().join("kubeconfig");
        assert!(
            kc.exists(),
            "no test control plane at {} — run `make cluster-up` (or `make test`, which starts it)",
            kc.display()
        );
        let crds = repo().join("crds");
        kubectl_ok(&[
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            crds.to_str().unwrap_or_default(),
        ]);
        wait_established(&[
            "crd/phonenumbers.oneinbox.ai",
            "crd/oneinboxaccounts.oneinbox.ai",
            "crd/clusteroneinboxaccounts.oneinbox.ai",
        ]);
        for f in ["deploy/namespace.yaml", "deploy/rbac.yaml"] {
            kubectl_ok(&[
                "apply",
                "--server-side",
                "--force-conflicts",
                "-f",
                repo().join(f).to_str().unwrap_or_default(),
            ]);
        }
    });
}

pub async fn admin_client() -> Client {
    cluster();
    let kc = Kubeconfig::read_from(state_dir().join("kubeconfig")).expect("kubeconfig");
    let opts = KubeConfigOptions {
        context: Some("admin".into()),
        ..Default::default()
    };
    let mut cfg = Config::from_custom_kubeconfig(kc, &opts)
        .await
        .expect("kube config");
    cfg.default_retry = false;
    Client::try_from(cfg).expect("kube client")
}

/// A fresh namespace `e2e-<name>-<random>`.
pub async fn create_namespace(client: &Client, name: &str) -> String {
    let ns = format!(
        "e2e-{name}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..6]
    );
    let nss: Api<Namespace> = Api::all(client.clone());
    let obj: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}})).expect("ns");
    nss.create(&PostParams::default(), &obj)
        .await
        .expect("create namespace");
    ns
}

/// The mock holds exactly one registration, the one `pn`'s status names.
pub async fn assert_only_registration_is(mock: &Mock, pn: &PhoneNumber) -> Vec<Value> {
    let regs = mock.registrations().await;
    assert_eq!(regs.len(), 1, "{regs:?}");
    let id = pn.status.as_ref().and_then(|s| s.phone_number_id.clone());
    assert_eq!(regs[0]["id"].as_str().map(str::to_owned), id, "{regs:?}");
    regs
}

/// A spawned process, killed on drop.
pub struct Proc {
    pub child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `oneinbox-mock` binary of this build profile. The mock is its own crate, so cargo does
/// not build its binary for the operator's tests: build it (once per test binary) when it is
/// missing or older than its sources' last build, which costs nothing when it is up to date.
pub fn mock_bin() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            // target/<profile>/deps/<test binary>
            let exe = std::env::current_exe().expect("test binary path");
            let profile_dir = exe
                .parent()
                .and_then(|deps| deps.parent())
                .expect("target/<profile>")
                .to_path_buf();
            let release = profile_dir.file_name().is_some_and(|p| p == "release");
            let mut cargo = Command::new(env!("CARGO"));
            cargo
                .args([
                    "build",
                    "--quiet",
                    "--locked",
                    "-p",
                    "oneinbox-mock",
                    "--bin",
                    "oneinbox-mock",
                ])
                .arg("--manifest-path")
                .arg(repo().join("Cargo.toml"))
                .env(
                    "CARGO_TARGET_DIR",
                    profile_dir.parent().expect("target dir"),
                );
            if release {
                cargo.arg("--release");
            }
            let status = cargo.status().expect("run cargo build -p oneinbox-mock");
            assert!(status.success(), "cargo build -p oneinbox-mock failed");
            profile_dir.join("oneinbox-mock")
        })
        .clone()
}

/// The mock OneInbox server on a free loopback port. `workspace(name)` is a view of one of its
/// workspaces: the same process, with every `/_mock/` call scoped to that workspace.
pub struct Mock {
    /// Shared by the views; the process ends with the last of them.
    process: std::sync::Arc<Proc>,
    pub url: String,
    http: reqwest::Client,
    /// `/_mock/workspaces/<name>` in a workspace view; empty for `default`.
    prefix: String,
}

impl Mock {
    pub fn start(extra: &[&str]) -> Mock {
        Self::start_on("127.0.0.1:0", extra)
    }

    /// On `listen` (an address the test world made, such as the test node's bridge).
    pub fn start_on(listen: &str, extra: &[&str]) -> Mock {
        let mut child = Command::new(mock_bin())
            .args(["--listen", listen])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn oneinbox-mock");
        let url = listen_address(&mut child, "oneinbox-mock");
        Mock {
            process: std::sync::Arc::new(Proc { child }),
            url,
            http: reqwest::Client::new(),
            prefix: String::new(),
        }
    }

    /// The workspace `name` of this mock (`"default"` is the unprefixed one): `get`, `send`,
    /// `registrations`, `calls`, `count`, `total_calls`, `fault` and `config` act on it.
    pub fn workspace(&self, name: &str) -> Mock {
        Mock {
            process: std::sync::Arc::clone(&self.process),
            url: self.url.clone(),
            http: self.http.clone(),
            prefix: format!("/_mock/workspaces/{name}"),
        }
    }

    /// `path` in this view: `/_mock/<x>` becomes `/_mock/workspaces/<name>/<x>`.
    fn scoped(&self, path: &str) -> String {
        match path.strip_prefix("/_mock") {
            Some(rest) if !self.prefix.is_empty() && rest.starts_with('/') => {
                format!("{}{rest}", self.prefix)
            }
            _ => path.to_owned(),
        }
    }

    pub async fn get(&self, path: &str) -> Value {
        let r = self
            .http
            .get(format!("{}{}", self.url, self.scoped(path)))
            .send()
            .await
            .expect("mock admin GET");
        r.json().await.expect("mock admin JSON")
    }

    pub async fn send(&self, method: reqwest::Method, path: &str, body: Value) {
        self.send_unscoped(method, &self.scoped(path), body).await;
    }

    async fn send_unscoped(&self, method: reqwest::Method, path: &str, body: Value) {
        let r = self
            .http
            .request(method, format!("{}{path}", self.url))
            .json(&body)
            .send()
            .await
            .expect("mock admin call");
        assert!(r.status().is_success(), "mock admin {path}: {}", r.status());
    }

    /// Creates workspace `name` reached by `api_keys`, with fault `config` (`Value::Null` or
    /// `{}`: none); global, whichever view it is called on.
    pub async fn create_workspace(&self, name: &str, api_keys: &[&str], config: Value) {
        self.send_unscoped(
            reqwest::Method::POST,
            "/_mock/workspaces",
            json!({"name": name, "api_keys": api_keys, "config": config}),
        )
        .await;
    }

    /// Replaces the keys of workspace `name` (rotation: an old key then reaches `default`).
    pub async fn set_workspace_keys(&self, name: &str, api_keys: &[&str]) {
        self.send_unscoped(
            reqwest::Method::PUT,
            &format!("/_mock/workspaces/{name}/api_keys"),
            json!({ "api_keys": api_keys }),
        )
        .await;
    }

    /// Stored registrations (internal view).
    pub async fn registrations(&self) -> Vec<Value> {
        let v = self.get("/_mock/phone-numbers").await;
        match v {
            Value::Array(a) => a,
            Value::Object(ref o) if o.contains_key("items") => {
                v["items"].as_array().cloned().unwrap_or_default()
            }
            other => panic!("unexpected /_mock/phone-numbers: {other}"),
        }
    }

    /// Requests received, by endpoint key.
    pub async fn calls(&self) -> Value {
        self.get("/_mock/calls").await
    }

    pub async fn count(&self, endpoint: &str) -> u64 {
        self.calls()
            .await
            .get(endpoint)
            .and_then(Value::as_u64)
            .unwrap_or(0)
    }

    pub async fn total_calls(&self) -> u64 {
        self.calls()
            .await
            .as_object()
            .map(|o| o.values().filter_map(Value::as_u64).sum())
            .unwrap_or(0)
    }

    /// Register `number` directly (outside the cluster, with the operator's key); its id.
    pub async fn register_outside(&self, number: &str, friendly_name: Option<&str>) -> String {
        self.register_outside_as(API_KEY, number, friendly_name)
            .await
    }

    /// Register `number` directly with `api_key` (which selects the workspace); its id.
    pub async fn register_outside_as(
        &self,
        api_key: &str,
        number: &str,
        friendly_name: Option<&str>,
    ) -> String {
        let reg: Value = reqwest::Client::new()
            .post(format!("{}/v1/phone-numbers", self.url))
            .bearer_auth(api_key)
            .json(
                &json!({"phone_number": number, "provider": "telnyx", "agent_id": AGENT,
                          "friendly_name": friendly_name, "credential_id": CREDENTIAL}),
            )
            .send()
            .await
            .expect("direct POST")
            .json()
            .await
            .expect("json");
        reg["id"].as_str().expect("id").to_string()
    }

    pub async fn fault(&self, fault: Value) {
        self.send(reqwest::Method::POST, "/_mock/faults", fault)
            .await;
    }

    pub async fn config(&self, config: Value) {
        self.send(reqwest::Method::PUT, "/_mock/config", config)
            .await;
    }
}

pub const POST: &str = "POST /v1/phone-numbers";
pub const LIST: &str = "GET /v1/phone-numbers";
pub const GET: &str = "GET /v1/phone-numbers/{phone_id}";
pub const PATCH: &str = "PATCH /v1/phone-numbers/{phone_id}";
pub const DELETE: &str = "DELETE /v1/phone-numbers/{phone_id}";

/// The operator under test, watching one namespace, with its log in a file.
pub struct Operator {
    pub proc: Option<Proc>,
    pub log: PathBuf,
    /// Port of /livez, /readyz, /metrics on 127.0.0.1.
    pub admin_port: u16,
    args: Vec<String>,
    /// Extra environment (POD_NAME, KUBECONFIG override, ...).
    pub env: Vec<(String, String)>,
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

impl Operator {
    pub fn start(ns: &str, mock_url: &str, extra: &[&str]) -> Operator {
        Self::start_as(ns, mock_url, extra, &[], "")
    }

    /// With extra environment variables, and a log file name suffix (for several operators).
    pub fn start_as(
        ns: &str,
        mock_url: &str,
        extra: &[&str],
        env: &[(&str, &str)],
        suffix: &str,
    ) -> Operator {
        let log = std::env::temp_dir().join(format!("oneinbox-e2e-{ns}{suffix}.log"));
        let admin_port = free_port();
        let admin_addr = format!("127.0.0.1:{admin_port}");
        let mut args: Vec<String> = [
            "run",
            "--api-url",
            mock_url,
            // The mock speaks plain http on loopback.
            "--allow-insecure-http",
            "--admin-addr",
            &admin_addr,
            "--secret-grace-period",
            "4s",
            "--backoff-base",
            "200ms",
            "--backoff-max",
            "2s",
            "--provisioning-poll",
            "500ms",
            "--api-timeout",
            "3s",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // Scoped to the test's namespace, unless it selects its objects by label (then it
        // watches every namespace, as a cross-namespace test needs).
        if !extra.contains(&"--label-selector") {
            args.extend(["--watch-namespace".to_string(), ns.to_string()]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut op = Operator {
            proc: None,
            log,
            admin_port,
            args,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        let _ = std::fs::remove_file(&op.log);
        op.spawn();
        op
    }

    pub fn spawn(&mut self) {
        let logf = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("operator log");
        let child = Command::new(env!("CARGO_BIN_EXE_oneinbox-operator"))
            .args(&self.args)
            .env("KUBECONFIG", state_dir().join("kubeconfig-operator"))
            .env("ONEINBOX_API_KEY", API_KEY)
            .env(
                "ONEINBOX_LOG",
                "debug,kube=info,hyper=info,h2=info,tower=info,rustls=info,reqwest=info",
            )
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(Stdio::from(logf))
            .spawn()
            .expect("spawn oneinbox-operator");
        self.proc = Some(Proc { child });
    }

    /// Whether the process ended on its own (it was started and has not been killed).
    pub fn exited(&mut self) -> bool {
        self.proc
            .as_mut()
            .is_some_and(|p| p.child.try_wait().ok().flatten().is_some())
    }

    /// SIGKILL, no goodbye.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }

    pub fn pid(&self) -> u32 {
        self.proc
            .as_ref()
            .map(|p| p.child.id())
            .expect("operator running")
    }

    /// GET an admin path: (status, body); status 0 when nothing answers.
    pub async fn admin(&self, path: &str) -> (u16, String) {
        match reqwest::get(format!("http://127.0.0.1:{}{path}", self.admin_port)).await {
            Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
            Err(_) => (0, String::new()),
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// One test's world: namespace, mock, operator, admin client.
pub struct World {
    pub ns: String,
    pub client: Client,
    pub pns: Api<PhoneNumber>,
    pub mock: Mock,
    pub operator: Operator,
}

impl World {
    pub async fn start(name: &str) -> World {
        Self::start_with(name, &[], &[]).await
    }

    pub async fn start_with(name: &str, mock_args: &[&str], operator_args: &[&str]) -> World {
        let client = admin_client().await;
        let ns = create_namespace(&client, name).await;
        let mock = Mock::start(mock_args);
        let operator = Operator::start(&ns, &mock.url, operator_args);
        let pns = Api::namespaced(client.clone(), &ns);
        World {
            ns,
            client,
            pns,
            mock,
            operator,
        }
    }

    /// Create or replace an Opaque Secret holding `password` under the key "password".
    pub async fn secret(&self, name: &str, password: &str) {
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &self.ns);
        let body = json!({
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
            "stringData": {"password": password}
        });
        secrets
            .patch(
                name,
                &PatchParams::apply("e2e").force(),
                &Patch::Apply(&body),
            )
            .await
            .expect("apply Secret");
    }

    /// Assert that none of `secrets` (and not the API key) appears in the operator's log, the
    /// namespace's Events, or any PhoneNumber's status.
    pub async fn assert_no_secrets(&self, secrets: &[&str]) {
        let log = self.operator.log_text();
        assert!(!log.is_empty(), "operator log is empty");
        let events = format!("{:?}", self.events().await);
        let statuses = serde_json::to_string(
            &self
                .pns
                .list(&Default::default())
                .await
                .expect("list")
                .items
                .iter()
                .map(|p| &p.status)
                .collect::<Vec<_>>(),
        )
        .unwrap_or_default();
        for s in secrets.iter().chain([&API_KEY]) {
            assert!(!log.contains(s), "secret {s:?} found in the operator log");
            assert!(!events.contains(s), "secret {s:?} found in events");
            assert!(!statuses.contains(s), "secret {s:?} found in a status");
        }
    }

    /// Create or update a PhoneNumber from JSON (server-side apply as the user "e2e").
    pub async fn apply(&self, name: &str, spec: Value) -> PhoneNumber {
        self.apply_full(json!({"metadata": {"name": name}, "spec": spec}))
            .await
            .expect("apply PhoneNumber")
    }

    pub async fn apply_full(&self, mut obj: Value) -> Result<PhoneNumber, kube::Error> {
        obj["apiVersion"] = json!("oneinbox.ai/v1alpha1");
        obj["kind"] = json!("PhoneNumber");
        let name = obj["metadata"]["name"].as_str().expect("name").to_string();
        self.pns
            .patch(
                &name,
                &PatchParams::apply("e2e").force(),
                &Patch::Apply(&obj),
            )
            .await
    }

    pub async fn annotate(&self, name: &str, key: &str, value: Option<&str>) {
        let body = json!({"metadata": {"annotations": {key: value}}});
        self.pns
            .patch(name, &PatchParams::default(), &Patch::Merge(&body))
            .await
            .expect("annotate");
    }

    pub async fn merge_spec(&self, name: &str, spec: Value) {
        let body = json!({"spec": spec});
        self.pns
            .patch(name, &PatchParams::default(), &Patch::Merge(&body))
            .await
            .expect("patch spec");
    }

    pub async fn delete(&self, name: &str) {
        self.pns
            .delete(name, &DeleteParams::default())
            .await
            .expect("delete");
    }

    /// Poll until `pred` holds for the object, or fail with its last state.
    pub async fn wait_for(
        &self,
        name: &str,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&PhoneNumber) -> bool,
    ) -> PhoneNumber {
        let deadline = Instant::now() + timeout;
        let mut last = None;
        while Instant::now() < deadline {
            if let Ok(Some(pn)) = self.pns.get_opt(name).await {
                if pred(&pn) {
                    return pn;
                }
                last = Some(pn);
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        panic!(
            "timed out after {timeout:?} waiting for {what} on {}/{name}; last: {}\n--- operator log tail ---\n{}",
            self.ns,
            serde_json::to_string_pretty(
                &last.map(|p| serde_json::to_value(p).unwrap_or_default())
            )
            .unwrap_or_default(),
            tail(&self.operator.log_text(), 40)
        );
    }

    pub async fn wait_ready(&self, name: &str) -> PhoneNumber {
        self.wait_for(name, "Ready=True", Duration::from_secs(30), |p| {
            is_ready(p) && synced(p)
        })
        .await
    }

    pub async fn wait_reason(&self, name: &str, type_: &str, reason: &str) -> PhoneNumber {
        self.wait_for(
            name,
            &format!("{type_} reason {reason}"),
            Duration::from_secs(30),
            |p| {
                p.condition(type_)
                    .is_some_and(|c| c.reason == reason && (c.status == "True" || type_ == "Ready"))
            },
        )
        .await
    }

    pub async fn wait_gone(&self, name: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.pns.get_opt(name).await.expect("get").is_none() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        let last = self.pns.get_opt(name).await.ok().flatten();
        panic!(
            "{}/{name} still exists after {timeout:?}: {}\n--- operator log tail ---\n{}",
            self.ns,
            serde_json::to_string_pretty(&serde_json::to_value(last).unwrap_or_default())
                .unwrap_or_default(),
            tail(&self.operator.log_text(), 40)
        );
    }

    /// Events of the namespace as (reason, note) pairs.
    pub async fn events(&self) -> Vec<(String, String)> {
        let api: Api<k8s_openapi::api::events::v1::Event> =
            Api::namespaced(self.client.clone(), &self.ns);
        api.list(&Default::default())
            .await
            .expect("events")
            .items
            .into_iter()
            .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
            .collect()
    }

    /// `kubectl get pn NAME -o json | kstatus` → (status word, exit code).
    pub fn kstatus(&self, name: &str) -> (String, i32) {
        self.kstatus_of_kind("phonenumber", name)
    }

    /// kstatus of an object of `kind` (e.g. `oneinboxaccount`) in the test namespace.
    pub fn kstatus_of_kind(&self, kind: &str, name: &str) -> (String, i32) {
        let json = kubectl_ok(&["-n", &self.ns, "get", kind, name, "-o", "json"]);
        kstatus_of(&json)
    }
}

impl Drop for World {
    fn drop(&mut self) {
        self.operator.kill();
        // With the operator gone nobody would release the finalizers, and the namespace would
        // stay Terminating: release them (test clean-up only), then let KCM remove the rest.
        let out = kubectl(&[
            "-n",
            &self.ns,
            "get",
            "phonenumbers,oneinboxaccounts",
            "-o",
            "name",
        ]);
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
        let _ = kubectl(&["delete", "namespace", &self.ns, "--wait=false"]);
    }
}

pub fn kstatus_of(json: &str) -> (String, i32) {
    use std::io::Write;
    let mut child = Command::new(bin("kstatus"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn kstatus");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(json.as_bytes())
        .expect("write kstatus stdin");
    let out = child.wait_with_output().expect("kstatus");
    let text = String::from_utf8_lossy(&out.stdout);
    (
        text.split('\t')
            .next()
            .unwrap_or_default()
            .trim()
            .to_string(),
        out.status.code().unwrap_or(-1),
    )
}

pub fn is_ready(p: &PhoneNumber) -> bool {
    p.condition("Ready").is_some_and(|c| c.status == "True")
}

/// status.observedGeneration == metadata.generation.
pub fn synced(p: &PhoneNumber) -> bool {
    p.status.as_ref().and_then(|s| s.observed_generation) == p.metadata.generation
}

pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A spec with SIP credentials from Secret `secret`.
pub fn sip_spec(number: &str, secret: &str) -> Value {
    json!({
        "phoneNumber": number,
        "provider": "twilio",
        "agentId": AGENT,
        "friendlyName": "Sales line",
        "providerConfig": {
            "trunkAddress": "example.pstn.twilio.com",
            "authUsername": "oneinbox",
            "authPasswordSecretRef": {"name": secret}
        },
        "inboundRouting": {"fallback": {"agentId": AGENT}, "voicemailMessage": "Sorry, we missed your call."}
    })
}

/// `base` with the keys of `extra` set (shallow merge).
pub fn with(mut base: Value, extra: Value) -> Value {
    if let (Some(b), Some(e)) = (base.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            b.insert(k.clone(), v.clone());
        }
    }
    base
}

/// A spec with a stored credential id (no Secret needed).
pub fn credential_spec(number: &str) -> Value {
    json!({"phoneNumber": number, "provider": "telnyx", "agentId": AGENT, "credentialId": CREDENTIAL})
}

/// A random E.164 number, so tests never collide.
pub fn number() -> String {
    let n: u64 = rand_u64() % 9_000_000_000 + 1_000_000_000;
    format!("+1{n}")
}

fn rand_u64() -> u64 {
    let u = uuid::Uuid::new_v4();
    let b = u.as_bytes();
    u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

/// A parameter of the soak and bench commands from the environment, or `default` when unset or
/// blank; an unparsable value stops the command.
#[allow(dead_code)] // the e2e tests take no parameters
pub fn env<T: std::str::FromStr>(key: &str, default: T) -> T {
    match std::env::var(key) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{key}={v:?} is not valid")),
        _ => default,
    }
}

/// The Lease RBAC of the chart (get, create, update, patch) for the operator identity, in `ns`.
pub fn grant_lease_rbac(ns: &str) {
    let rbac = json!({
        "apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
             "metadata": {"name": "oneinbox-operator-leases", "namespace": ns},
             "rules": [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create", "update", "patch"]}]},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
             "metadata": {"name": "oneinbox-operator-leases", "namespace": ns},
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "oneinbox-operator-leases"},
             "subjects": [{"kind": "ServiceAccount", "name": "oneinbox-operator", "namespace": "oneinbox-system"}]}
        ]
    });
    let file = std::env::temp_dir().join(format!("{ns}-lease-rbac.json"));
    std::fs::write(&file, rbac.to_string()).expect("write lease RBAC");
    kubectl_ok(&["apply", "-f", file.to_str().expect("path")]);
}

/// Replace `w`'s operator by one running as the `nobody` user, bound in `w`'s namespace to a
/// ClusterRole with exactly `rules`; returns that ClusterRole's name (delete it when done).
pub fn operator_as_nobody(w: &mut World, rules: Vec<Value>, args: &[&str], suffix: &str) -> String {
    w.operator.kill();
    let role = format!("e2e-{}", w.ns);
    let objects = json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": role}, "rules": rules},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "nobody", "namespace": w.ns},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
         "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "nobody"}]}
    ]});
    let file = std::env::temp_dir().join(format!("{}-rbac.json", w.ns));
    std::fs::write(&file, objects.to_string()).expect("write");
    kubectl_ok(&["apply", "-f", file.to_str().expect("path")]);
    let kc = kubeconfig_as_nobody();
    let kc = kc.to_str().expect("path").to_string();
    w.operator = Operator::start_as(
        &w.ns,
        &w.mock.url,
        args,
        &[("KUBECONFIG", kc.as_str())],
        suffix,
    );
    role
}

/// A kubeconfig whose current context is the `nobody` user (no bindings of its own).
pub fn kubeconfig_as_nobody() -> PathBuf {
    let text = std::fs::read_to_string(state_dir().join("kubeconfig")).expect("kubeconfig");
    let path = state_dir().join("kubeconfig-nobody");
    std::fs::write(
        &path,
        text.replace("current-context: admin", "current-context: nobody"),
    )
    .expect("write");
    path
}

/// A kubeconfig that authenticates as the admin but acts as `user` (impersonation): a user of
/// its own per test, with only the bindings the test gives it.
pub fn kubeconfig_impersonating(user: &str) -> PathBuf {
    let text = std::fs::read_to_string(state_dir().join("kubeconfig")).expect("kubeconfig");
    let mut kc: Value = yaml_serde::from_str(&text).expect("kubeconfig yaml");
    let current = kc["current-context"].as_str().expect("context").to_owned();
    let contexts = kc["contexts"].as_array_mut().expect("contexts");
    let ctx = contexts
        .iter_mut()
        .find(|c| c["name"] == current.as_str())
        .expect("current context");
    let admin_user = ctx["context"]["user"].as_str().expect("user").to_owned();
    ctx["context"]["user"] = json!(user);
    let users = kc["users"].as_array_mut().expect("users");
    let mut admin = users
        .iter()
        .find(|u| u["name"] == admin_user.as_str())
        .cloned()
        .expect("admin user");
    admin["name"] = json!(user);
    admin["user"]["as"] = json!(user);
    users.push(admin);
    let path = state_dir().join(format!("kubeconfig-{user}"));
    std::fs::write(&path, kc.to_string()).expect("write");
    path
}

/// A TCP proxy on loopback; `stop` closes the listener and every connection through it, and
/// `restart` listens on the same port again (a network partition that heals).
pub struct Proxy {
    pub port: u16,
    target: String,
    tasks: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Proxy {
    pub async fn start(target: String) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let proxy = Proxy {
            port,
            target,
            tasks: Default::default(),
        };
        proxy.serve(listener);
        proxy
    }

    fn serve(&self, listener: tokio::net::TcpListener) {
        let conns = self.tasks.clone();
        let target = self.target.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let target = target.clone();
                let conn = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                conns.lock().unwrap().push(conn.abort_handle());
            }
        });
        self.tasks.lock().unwrap().push(accept.abort_handle());
    }

    pub fn stop(&self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }

    /// Listen on the same port again (retried while the old listener's port is released).
    pub async fn restart(&self) {
        for _ in 0..50 {
            if let Ok(l) = tokio::net::TcpListener::bind(("127.0.0.1", self.port)).await {
                self.serve(l);
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("proxy: port {} not free again", self.port);
    }
}

/// The operator's kubeconfig with the API server reached through `port`, written under a
/// name of `tag`; its path, and the API server's real `host:port`.
pub fn kubeconfig_through(port: u16, tag: &str) -> (PathBuf, String) {
    let text =
        std::fs::read_to_string(state_dir().join("kubeconfig-operator")).expect("kubeconfig");
    let server = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: https://"))
        .expect("server line")
        .to_string();
    let path = std::env::temp_dir().join(format!("{tag}-kubeconfig-proxied"));
    std::fs::write(&path, text.replace(&server, &format!("127.0.0.1:{port}")))
        .expect("write kubeconfig");
    (path, server)
}

/// kube-apiserver's `apiserver_request_total` for one resource and verb (e.g. `secrets`,
/// `GET`), summed over its other labels: read from `/metrics` with the admin client. It counts
/// every client of the API server, cluster-wide.
#[allow(dead_code)] // used by tests/cost, which shares this harness
pub async fn apiserver_requests(client: &Client, resource: &str, verb: &str) -> u64 {
    let req = http::Request::get("/metrics")
        .body(Vec::new())
        .expect("request");
    let text = client
        .request_text(req)
        .await
        .expect("kube-apiserver /metrics");
    let (want_resource, want_verb) = (
        format!("resource=\"{resource}\""),
        format!("verb=\"{verb}\""),
    );
    text.lines()
        .filter_map(|l| l.strip_prefix("apiserver_request_total{"))
        .filter_map(|rest| rest.split_once("} "))
        .filter(|(labels, _)| {
            let labels: Vec<&str> = labels.split(',').collect();
            labels.contains(&want_resource.as_str()) && labels.contains(&want_verb.as_str())
        })
        .map(|(_, value)| value.trim().parse::<f64>().unwrap_or(0.0) as u64)
        .sum()
}

/// The address a test server prints first on stdout (`listening on <address>`).
pub fn listen_address(child: &mut Child, what: &str) -> String {
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .unwrap_or_else(|e| panic!("{what} listen line: {e}"));
    line.trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected {what} output {line:?}"))
        .to_string()
}

/// `spec.accountRef` of a PhoneNumber using the OneInboxAccount `name`.
pub fn account_ref(name: &str) -> Value {
    json!({"accountRef": {"kind": "OneInboxAccount", "name": name}})
}

/// `spec.accountRef` of a PhoneNumber using the ClusterOneInboxAccount `name`.
pub fn cluster_account_ref(name: &str) -> Value {
    json!({"accountRef": {"kind": "ClusterOneInboxAccount", "name": name}})
}

/// The Ready condition's (status, reason) of an account object, as JSON.
pub fn account_ready(account: &Value) -> (String, String) {
    account["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .map(|c| {
            (
                c["status"].as_str().unwrap_or_default().to_owned(),
                c["reason"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .unwrap_or_default()
}

impl World {
    /// Create or replace Secret `name` holding `key` under "apiKey".
    pub async fn api_key_secret(&self, name: &str, key: &str) {
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &self.ns);
        let body = json!({
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
            "stringData": {"apiKey": key}
        });
        secrets
            .patch(
                name,
                &PatchParams::apply("e2e").force(),
                &Patch::Apply(&body),
            )
            .await
            .expect("apply key Secret");
    }

    /// A OneInboxAccount `name` in the test namespace whose key is Secret `<name>-key`
    /// (created with `key`); `extra` is merged into its spec.
    pub async fn account(&self, name: &str, key: &str, extra: Value) {
        self.api_key_secret(&format!("{name}-key"), key).await;
        let spec = with(
            json!({"apiKeySecretRef": {"name": format!("{name}-key")}}),
            extra,
        );
        let body = json!({
            "apiVersion": "oneinbox.ai/v1alpha1", "kind": "OneInboxAccount",
            "metadata": {"name": name}, "spec": spec,
        });
        self.accounts()
            .patch(
                name,
                &PatchParams::apply("e2e").force(),
                &Patch::Apply(&body),
            )
            .await
            .expect("apply OneInboxAccount");
    }

    /// A ClusterOneInboxAccount `name` labelled for this test's namespace (the operators of
    /// the account tests select theirs by that label), its key in Secret `key_secret` of the
    /// test namespace, allowing `allowed` (`allowedNamespaces`).
    pub async fn cluster_account(&self, name: &str, key_secret: &str, allowed: Value) {
        let body = json!({
            "apiVersion": "oneinbox.ai/v1alpha1", "kind": "ClusterOneInboxAccount",
            "metadata": {"name": name, "labels": {"oneinbox.ai/e2e": self.ns}},
            "spec": {
                "apiKeySecretRef": {"namespace": self.ns, "name": key_secret},
                "allowedNamespaces": allowed,
            },
        });
        cluster_accounts(&self.client)
            .patch(
                name,
                &PatchParams::apply("e2e").force(),
                &Patch::Apply(&body),
            )
            .await
            .expect("apply ClusterOneInboxAccount");
    }

    /// Stop this world's operator, then start another on its namespace and mock with `args`
    /// (never two at once).
    pub fn restart_operator(&mut self, args: &[&str]) {
        self.operator.kill();
        self.operator = Operator::start(&self.ns, &self.mock.url, args);
    }

    /// The OneInboxAccounts of the test namespace (as JSON).
    pub fn accounts(&self) -> Api<kube::core::DynamicObject> {
        Api::namespaced_with(
            self.client.clone(),
            &self.ns,
            &account_resource("OneInboxAccount"),
        )
    }

    /// Poll until the account's JSON satisfies `pred`.
    pub async fn wait_account(
        &self,
        api: &Api<kube::core::DynamicObject>,
        name: &str,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut last = Value::Null;
        while Instant::now() < deadline {
            if let Ok(Some(a)) = api.get_opt(name).await {
                let v = serde_json::to_value(&a).unwrap_or_default();
                if pred(&v) {
                    return v;
                }
                last = v;
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        panic!(
            "timed out waiting for {what} on account {name}; last: {last:#}\n--- operator log tail ---\n{}",
            tail(&self.operator.log_text(), 40)
        );
    }
}

/// The API resource of an account kind.
pub fn account_resource(kind: &str) -> kube::core::ApiResource {
    let plural = format!("{}s", kind.to_lowercase());
    kube::core::ApiResource {
        group: "oneinbox.ai".into(),
        version: "v1alpha1".into(),
        api_version: "oneinbox.ai/v1alpha1".into(),
        kind: kind.into(),
        plural,
    }
}

/// The ClusterOneInboxAccounts (as JSON).
pub fn cluster_accounts(client: &Client) -> Api<kube::core::DynamicObject> {
    Api::all_with(client.clone(), &account_resource("ClusterOneInboxAccount"))
}

/// A control plane of a test's own, in target/<dir>: for a test that creates or deletes
/// cluster-wide objects (CRDs, the operator's namespace) that the other e2e tests rely on.
pub struct OwnPlane {
    pub state: PathBuf,
}

impl OwnPlane {
    pub fn up(dir: &str) -> OwnPlane {
        let state = repo().join("target").join(dir);
        let plane = OwnPlane { state };
        plane.down(); // a plane left over by an interrupted run
        // Planes started at the same moment (the tests run in parallel) may pick the same free
        // port: up.sh checks a port, then its server binds it. The loser fails at once; start it
        // again (up.sh stops the half-started plane first).
        let mut attempts = 0;
        loop {
            attempts += 1;
            let out = Command::new(repo().join("tests/cluster/up.sh"))
                .env("TESTENV_STATE", &plane.state)
                .env_remove("TESTENV_ETCD_PORT")
                .env_remove("TESTENV_ETCD_PEER_PORT")
                .env_remove("TESTENV_APISERVER_PORT")
                .stdin(Stdio::null())
                .output()
                .expect("up.sh");
            if out.status.success() {
                return plane;
            }
            let stderr = String::from_utf8_lossy(&out.stderr);
            let lost_a_port =
                stderr.contains("address already in use") || stderr.contains("a port was taken");
            assert!(
                lost_a_port && attempts < 3,
                "control plane {} (attempt {attempts}): {stderr}",
                plane.state.display(),
            );
        }
    }

    /// `tests/demo.sh down`: the demo's operator and mock (left running when a check after
    /// `make demo` failed), then the control plane.
    pub fn down(&self) {
        let _ = Command::new(repo().join("tests/demo.sh"))
            .arg("down")
            .env("TESTENV_STATE", &self.state)
            .stdin(Stdio::null())
            .output();
    }

    /// Run a script with bash -euo pipefail in `dir`, with this plane's kubectl and helm first
    /// on PATH and its admin kubeconfig; stdout and stderr together.
    /// PATH with this plane's kubectl and helm first.
    fn path(&self) -> String {
        format!(
            "{}:{}",
            self.state.join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        )
    }

    pub fn sh(&self, dir: &Path, script: &str, env: &[(&str, &str)]) -> String {
        // Ten minutes at most for any block (the runbook waits in a loop of its own).
        let out = Command::new("timeout")
            .args(["600", "bash", "-euo", "pipefail", "-c", script])
            .current_dir(dir)
            .env("PATH", self.path())
            .env("KUBECONFIG", self.state.join("kubeconfig"))
            .env("TESTENV_STATE", &self.state)
            // As a reader runs them: not a sub-make of `make test` (no "Entering directory").
            .env_remove("MAKEFLAGS")
            .env_remove("MAKELEVEL")
            .env_remove("MFLAGS")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .output()
            .expect("bash");
        let text = format!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "script failed ({}):\n{script}\n--- output:\n{}",
            out.status,
            tail(&text, 60)
        );
        text
    }

    pub fn kubectl(&self, args: &str) -> String {
        self.sh(&repo(), &format!("kubectl {args}"), &[])
    }

    /// Poll a shell condition until it holds.
    pub fn wait_for(&self, what: &str, script: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let ok = Command::new("bash")
                .args(["-c", script])
                .current_dir(repo())
                .env("PATH", self.path())
                .env("KUBECONFIG", self.state.join("kubeconfig"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return;
            }
            if Instant::now() > deadline {
                let diag = Command::new("bash")
                    .args([
                        "-c",
                        "kubectl get namespaces -o yaml; kubectl get crd; tail -n 30 \"$TESTENV_STATE\"/logs/kube-controller-manager.log",
                    ])
                    .env("PATH", self.path())
                    .env("KUBECONFIG", self.state.join("kubeconfig"))
                    .env("TESTENV_STATE", &self.state)
                    .output()
                    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                    .unwrap_or_default();
                panic!("timed out waiting for {what}:\n{}", tail(&diag, 80));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// The operator as the Deployment would run it, but as a local process: this control plane
    /// has no kubelet. Same identity (the ServiceAccount, bound by the RBAC being tested), and
    /// the API key from Secret `oneinbox-system/oneinbox-api-key` (key `apiKey`).
    pub fn operator(&self, mock: &Mock) -> Proc {
        let key = self
            .kubectl("-n oneinbox-system get secret oneinbox-api-key -o jsonpath={.data.apiKey}");
        let key = String::from_utf8(
            Command::new("base64")
                .arg("-d")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .and_then(|mut c| {
                    use std::io::Write;
                    c.stdin
                        .take()
                        .expect("stdin")
                        .write_all(key.trim().as_bytes())?;
                    c.wait_with_output()
                })
                .expect("base64")
                .stdout,
        )
        .expect("utf-8 key");
        let bin = env!("CARGO_BIN_EXE_oneinbox-operator");
        let help = Command::new(bin)
            .args(["run", "--help"])
            .output()
            .expect("operator --help");
        let mut args: Vec<String> = [
            "run",
            "--api-url",
            &mock.url,
            "--admin-addr",
            &format!("127.0.0.1:{}", free_port()),
            "--secret-grace-period",
            "20s",
            "--backoff-base",
            "200ms",
            "--backoff-max",
            "2s",
            "--provisioning-poll",
            "500ms",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if String::from_utf8_lossy(&help.stdout).contains("--allow-insecure-http") {
            args.push("--allow-insecure-http".into()); // the mock speaks plain HTTP
        }
        let log = std::fs::File::create(self.state.join("logs/operator.log")).expect("log");
        let child = Command::new(bin)
            .args(&args)
            .env("KUBECONFIG", self.state.join("kubeconfig-operator"))
            .env("ONEINBOX_API_KEY", key.trim())
            .env("ONEINBOX_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn oneinbox-operator");
        Proc { child }
    }
}

impl Drop for OwnPlane {
    fn drop(&mut self) {
        self.down();
    }
}

/// The password Secret `<name>-sip` of each name, 32 applies at a time.
#[allow(dead_code)] // the bench and the node tests
pub async fn create_secrets(secrets: &Api<Secret>, names: &[String]) {
    use futures::{StreamExt, TryStreamExt};
    futures::stream::iter(names.iter().cloned())
        .map(|name| {
            let secrets = secrets.clone();
            async move {
                let body = json!({"apiVersion": "v1", "kind": "Secret",
                    "metadata": {"name": format!("{name}-sip")},
                    "stringData": {"password": format!("pw-{name}")}});
                secrets
                    .patch(
                        &format!("{name}-sip"),
                        &PatchParams::apply("bench").force(),
                        &Patch::Apply(&body),
                    )
                    .await
                    .map(|_| ())
            }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<()>>()
        .await
        .expect("create Secrets");
}

/// The load average (1, 5, 15 minutes) as /proc/loadavg gives it.
#[allow(dead_code)] // the bench and the node tests
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}
