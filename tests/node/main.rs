//! The operator as users get it, on a real node: the image from the repository's Dockerfile
//! (tests/node/images.sh), installed by `helm install` of charts/oneinbox-operator, run by
//! kubelet, containerd and runc (tests/cluster/node-up.sh). `make node-e2e` runs it; the node is
//! started once per run and `make cluster-down` stops it.
//!
//! The pod reaches the mock on the node's bridge address and the API server as the `kubernetes`
//! Service (node-up.sh's DNAT): no hostNetwork. The API server's ServiceAccount admission plugin
//! mounts the token, as on any cluster.

// Test support code: failing loudly is the point.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods,
    dead_code
)]

#[path = "../e2e/harness.rs"]
mod harness;

mod burst;
mod failover;
mod probes;
mod scale;
mod upgrade;

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use harness::*;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use oneinbox_operator::crd::PhoneNumber;
use serde_json::{Value, json};

/// The node and the operator image on it.
struct Node {
    /// The bridge address: the node IP, and where pods reach the mock.
    ip: String,
    /// containerd's socket, for the host's view of a container.
    containerd: PathBuf,
    repository: String,
    tag: String,
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        tail(&String::from_utf8_lossy(&out.stderr), 60)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn last_line(s: &str) -> String {
    s.lines().last().unwrap_or_default().trim().to_string()
}

/// Once per test binary: the static binary, the image, the node with the image imported.
fn node() -> &'static Node {
    static NODE: OnceLock<Node> = OnceLock::new();
    NODE.get_or_init(|| {
        cluster();
        // A no-op when target/static-image is up to date.
        let built = run_ok(&mut Command::new(repo().join("tests/static-build.sh")));
        let binary = last_line(&built)
            .strip_prefix("static operator binary: ")
            .and_then(|s| s.split(',').next())
            .map(|p| repo().join(p))
            .unwrap_or_else(|| panic!("static-build.sh printed {built:?}"));
        let image = run_ok(
            Command::new(repo().join("tests/node/images.sh"))
                .arg("operator")
                .arg(&binary),
        );
        let image = last_line(&image);
        let (archive, name) = image.split_once(' ').expect("archive and image name");
        let (repository, tag) = name.rsplit_once(':').expect("image tag");
        run_ok(
            Command::new(repo().join("tests/cluster/node-up.sh"))
                .env("TESTENV_STATE", state_dir())
                .env("TESTENV_NODE_IMAGES", archive),
        );
        let env = std::fs::read_to_string(state_dir().join("node.env")).expect("node.env");
        let ip = env
            .lines()
            .find_map(|l| l.strip_prefix("node_ip="))
            .expect("node_ip in node.env")
            .to_string();
        Node {
            ip,
            containerd: state_dir().join("node/containerd.sock"),
            repository: repository.to_string(),
            tag: tag.to_string(),
        }
    })
}

fn helm(args: &[&str]) -> String {
    run_ok(
        Command::new(bin("helm"))
            .args(args)
            .env("KUBECONFIG", state_dir().join("kubeconfig")),
    )
}

/// Poll `f` until it returns Some, or fail naming `what`.
async fn wait<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The values a platform team would write, plus what this test world needs: the local image,
/// never pulled; the mock on the bridge over plain http.
fn values(node: &Node, ns: &str, mock_url: &str, extra: Value) -> PathBuf {
    let mut v = json!({
        "image": {"repository": node.repository, "tag": node.tag, "pullPolicy": "Never"},
        "apiUrl": mock_url,
        "allowInsecureHttp": true,
        "watchNamespace": ns,
        // The plane applied crds/ with kubectl (run.sh), and several releases share it.
        "crds": {"enabled": false},
        "logLevel": "debug,kube=info,hyper=info,h2=info,tower=info,rustls=info,reqwest=info"
    });
    if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
        for (k, x) in e {
            o.insert(k.clone(), x.clone());
        }
    }
    let path = std::env::temp_dir().join(format!("oneinbox-node-{ns}-values.json"));
    std::fs::write(&path, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    path
}

/// A namespace with the API key Secret and a SIP password Secret, once kube-root-ca.crt is
/// published in it (the node's controller manager does that).
async fn prepare_namespace(client: &kube::Client, name: &str, sip_password: &str) -> String {
    let ns = create_namespace(client, name).await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    for (sname, data) in [
        ("oneinbox-api-key", json!({"apiKey": API_KEY})),
        ("sip", json!({"password": sip_password})),
    ] {
        let body = json!({"apiVersion": "v1", "kind": "Secret",
                          "metadata": {"name": sname}, "stringData": data});
        secrets
            .patch(sname, &PatchParams::apply("e2e"), &Patch::Apply(&body))
            .await
            .expect("apply Secret");
    }
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    wait(
        "kube-root-ca.crt in the namespace",
        Duration::from_secs(60),
        || async { cms.get_opt("kube-root-ca.crt").await.ok().flatten() },
    )
    .await;
    ns
}

async fn pods_of(client: &kube::Client, ns: &str, release: &str) -> Vec<Pod> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    pods.list(&ListParams::default().labels(&format!("app.kubernetes.io/instance={release}")))
        .await
        .expect("list pods")
        .items
}

fn pod_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The container's main process as the host sees it, through containerd.
fn container_pid(node: &Node, pod: &Pod) -> u32 {
    let id = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.first())
        .and_then(|c| c.container_id.as_deref())
        .and_then(|id| id.strip_prefix("containerd://"))
        .expect("containerd container id")
        .to_string();
    let tasks = run_ok(
        Command::new("ctr")
            .arg("--address")
            .arg(&node.containerd)
            .args(["-n", "k8s.io", "tasks", "ls"]),
    );
    tasks
        .lines()
        .find_map(|l| {
            let mut f = l.split_whitespace();
            (f.next() == Some(id.as_str())).then(|| f.next().and_then(|p| p.parse().ok()))?
        })
        .unwrap_or_else(|| panic!("no task {id} in {tasks}"))
}

/// `path` on the pod's admin port, from the host (on the pod network): status and body.
async fn admin_get(pod: &Pod, path: &str) -> Option<(u16, String)> {
    let ip = pod.status.as_ref()?.pod_ip.clone()?;
    let r = reqwest::Client::new()
        .get(format!("http://{ip}:8080{path}"))
        .timeout(Duration::from_secs(3))
        .send()
        .await
        .ok()?;
    Some((r.status().as_u16(), r.text().await.ok()?))
}

fn status_field(status: &str, key: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .unwrap_or_else(|| panic!("no {key} in /proc/<pid>/status"))
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

async fn wait_all_ready(pns: &Api<PhoneNumber>, names: &[String]) {
    for name in names {
        wait(
            &format!("PhoneNumber {name} Ready"),
            Duration::from_secs(90),
            || async {
                pns.get_opt(name)
                    .await
                    .ok()
                    .flatten()
                    .filter(|p| is_ready(p) && synced(p))
            },
        )
        .await;
    }
}

async fn delete_all(pns: &Api<PhoneNumber>, names: &[String]) {
    for name in names {
        let _ = pns.delete(name, &DeleteParams::default()).await;
    }
    for name in names {
        wait(
            &format!("PhoneNumber {name} deleted"),
            Duration::from_secs(60),
            || async {
                pns.get_opt(name)
                    .await
                    .ok()
                    .flatten()
                    .is_none()
                    .then_some(())
            },
        )
        .await;
    }
}

/// 3.1: `helm install` of the chart with the image; the pod is Ready as non-root with a
/// read-only root filesystem and RuntimeDefault seccomp, reads the API key from its volume,
/// and makes PhoneNumbers Ready; its log holds no secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chart_runs_the_image_on_a_node() {
    let node = node();
    let client = admin_client().await;
    let sip_password = "pw-node-2b7e4f19c0";
    let ns = prepare_namespace(&client, "node", sip_password).await;
    let mock = Mock::start_on(&format!("{}:0", node.ip), &["--api-key", API_KEY]);
    let release = format!("oi-{}", &ns[ns.len() - 6..]);
    let values = values(node, &ns, &mock.url, json!({}));
    helm(&[
        "install",
        &release,
        repo().join("charts/oneinbox-operator").to_str().unwrap(),
        "-n",
        &ns,
        "-f",
        values.to_str().unwrap(),
        "--wait",
        "--timeout",
        "180s",
    ]);

    let pods = pods_of(&client, &ns, &release).await;
    assert_eq!(pods.len(), 1, "one replica");
    let pod = &pods[0];
    let pod_name = pod.metadata.name.clone().unwrap();
    assert!(pod_ready(pod), "Ready after helm --wait: {:?}", pod.status);
    let cs = &pod
        .status
        .as_ref()
        .unwrap()
        .container_statuses
        .as_ref()
        .unwrap()[0];
    assert_eq!(cs.restart_count, 0);
    assert_eq!(
        cs.image,
        format!("{}:{}", node.repository, node.tag),
        "the image built from the Dockerfile"
    );

    // What the pod asked for...
    let spec = pod.spec.as_ref().unwrap();
    let psc = spec.security_context.as_ref().unwrap();
    assert_eq!(psc.run_as_non_root, Some(true));
    assert_eq!(psc.run_as_user, Some(65532));
    assert_eq!(
        psc.seccomp_profile.as_ref().map(|s| s.type_.as_str()),
        Some("RuntimeDefault")
    );
    let csc = spec.containers[0].security_context.as_ref().unwrap();
    assert_eq!(csc.read_only_root_filesystem, Some(true));
    assert_eq!(csc.allow_privilege_escalation, Some(false));
    // ...and what the process got, seen from the host.
    let pid = container_pid(node, pod);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert_eq!(status_field(&status, "Uid"), "65532 65532 65532 65532");
    assert_eq!(status_field(&status, "Gid"), "65532 65532 65532 65532");
    assert_eq!(status_field(&status, "Seccomp"), "2", "a seccomp filter");
    assert_eq!(status_field(&status, "NoNewPrivs"), "1");
    assert_eq!(status_field(&status, "CapEff"), "0000000000000000");
    let mountinfo = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    let root = mountinfo
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.get(4) == Some(&"/"))
        .expect("root mount");
    assert!(
        root[5].split(',').any(|o| o == "ro"),
        "root filesystem mounted {}",
        root[5]
    );
    // The API key as a file of mode 0440, group 65532 (fsGroup), readable by the process.
    let key_file = format!("/proc/{pid}/root/var/run/secrets/oneinbox/api-key");
    let meta = std::fs::metadata(&key_file).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o440, "{key_file}");
    assert_eq!(meta.gid(), 65532);

    // PhoneNumbers become Ready through the pod; the mock accepts only the key in the volume.
    let pns: Api<PhoneNumber> = Api::namespaced(client.clone(), &ns);
    let names: Vec<String> = (0..3).map(|i| format!("line-{i}")).collect();
    for n in &names {
        let body = json!({"apiVersion": "oneinbox.ai/v1alpha1", "kind": "PhoneNumber",
                          "metadata": {"name": n}, "spec": sip_spec(&number(), "sip")});
        pns.patch(n, &PatchParams::apply("e2e"), &Patch::Apply(&body))
            .await
            .expect("apply PhoneNumber");
    }
    wait_all_ready(&pns, &names).await;
    assert_eq!(mock.registrations().await.len(), 3);
    assert_eq!(mock.count(POST).await, 3, "{}", mock.calls().await);

    // The pod's log: the operator's own lines, and no secret.
    let logs = kubectl_ok(&["logs", "-n", &ns, &pod_name]);
    assert!(logs.lines().count() > 3, "{logs}");
    for s in [API_KEY, sip_password] {
        assert!(!logs.contains(s), "secret {s:?} in the pod's log");
    }
    let events = kubectl_ok(&["get", "events", "-n", &ns, "-o", "json"]);
    for s in [API_KEY, sip_password] {
        assert!(!events.contains(s), "secret {s:?} in an event");
    }

    delete_all(&pns, &names).await;
    assert_eq!(mock.registrations().await.len(), 0, "deregistered");
    uninstall(&release, &ns);
}

/// `helm uninstall` of a test's release (waiting for its pods), then its namespace.
fn uninstall(release: &str, ns: &str) {
    helm(&[
        "uninstall",
        release,
        "-n",
        ns,
        "--wait",
        "--timeout",
        "120s",
    ]);
    kubectl_ok(&["delete", "namespace", ns, "--wait=false"]);
}
