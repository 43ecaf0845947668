//! Least privilege, proven: the ClusterRole of deploy/rbac.yaml is enough for the whole
//! lifecycle, and without any one of its rules something visibly breaks.

use std::time::{Duration, Instant};

use futures::future::join_all;
use serde_json::{Value, json};

use crate::harness::*;

/// The ClusterRole's rules from deploy/rbac.yaml.
fn deployed_rules() -> Vec<Value> {
    let text = std::fs::read_to_string(repo().join("deploy/rbac.yaml")).expect("rbac.yaml");
    for doc in yaml_serde::Deserializer::from_str(&text) {
        let v: Value = serde::Deserialize::deserialize(doc).expect("yaml");
        if v["kind"] == "ClusterRole" {
            return v["rules"].as_array().cloned().expect("rules");
        }
    }
    panic!("no ClusterRole in deploy/rbac.yaml");
}

/// A kubeconfig whose current context is the `nobody` user (no bindings of its own).
fn nobody_kubeconfig() -> std::path::PathBuf {
    let text = std::fs::read_to_string(state_dir().join("kubeconfig")).expect("kubeconfig");
    let path = state_dir().join("kubeconfig-nobody");
    std::fs::write(
        &path,
        text.replace("current-context: admin", "current-context: nobody"),
    )
    .expect("write");
    path
}

/// Run the operator as `nobody`, bound (in a fresh namespace) to `rules`; apply a PhoneNumber
/// that needs every permission; report (Ready, Registered event seen) after a while.
async fn run_with(rules: Vec<Value>, label: String) -> (bool, bool, String) {
    let mut w = World::start(&format!("rbac-{label}")).await;
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

    let kc = nobody_kubeconfig();
    let kc = kc.to_str().expect("path").to_string();
    w.operator = Operator::start_as(
        &w.ns,
        &w.mock.url,
        &[],
        &[("KUBECONFIG", kc.as_str())],
        "-nobody",
    );
    w.secret("sip", "pw-rbac-0c1e").await;
    w.apply("r", sip_spec(&number(), "sip")).await;

    let deadline = Instant::now() + Duration::from_secs(12);
    let (mut ready, mut event) = (false, false);
    while Instant::now() < deadline && !(ready && event) {
        ready = w.pns.get("r").await.map(|p| is_ready(&p)).unwrap_or(false);
        event = w.events().await.iter().any(|(r, _)| r == "Registered");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let log = tail(&w.operator.log_text(), 5);
    let _ = kubectl(&["delete", "clusterrole", &role]);
    (ready, event, log)
}

#[tokio::test]
async fn deployed_rbac_is_sufficient_and_every_rule_is_needed() {
    cluster();
    let rules = deployed_rules();
    assert_eq!(
        rules.len(),
        4,
        "update this test when rules change: {rules:?}"
    );
    let mut runs = vec![run_with(rules.clone(), "all".into())];
    for i in 0..rules.len() {
        let mut without = rules.clone();
        without.remove(i);
        runs.push(run_with(without, format!("no{i}")));
    }
    let results = join_all(runs).await;
    let (ready, event, log) = &results[0];
    assert!(
        *ready && *event,
        "the deployed rules are not enough (ready {ready}, event {event}):\n{log}"
    );
    for (i, (ready, event, log)) in results[1..].iter().enumerate() {
        assert!(
            !(*ready && *event),
            "rule {i} ({}) is not needed: everything worked without it\n{log}",
            rules[i]
        );
    }
}
