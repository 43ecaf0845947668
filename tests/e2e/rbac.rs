//! Least privilege, proven verb by verb: the ClusterRole of deploy/rbac.yaml is enough for the
//! whole lifecycle without a single refusal, and without any one of its verbs the API server
//! refuses a call that the operator makes: its namespaced rules for an operator scoped to a
//! namespace (its PhoneNumber on a OneInboxAccount), all of them for one that uses cluster
//! accounts (its PhoneNumber on a ClusterOneInboxAccount).

use std::time::{Duration, Instant};

use futures::future::join_all;
use serde_json::Value;

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

/// Every (resource, verb) the rules grant, in order.
fn grants(rules: &[Value]) -> Vec<(String, String)> {
    rules
        .iter()
        .flat_map(|r| {
            let resources: Vec<String> = r["resources"]
                .as_array()
                .expect("resources")
                .iter()
                .map(|x| x.as_str().expect("resource").to_owned())
                .collect();
            let verbs: Vec<String> = r["verbs"]
                .as_array()
                .expect("verbs")
                .iter()
                .map(|x| x.as_str().expect("verb").to_owned())
                .collect();
            resources
                .into_iter()
                .flat_map(move |res| verbs.clone().into_iter().map(move |v| (res.clone(), v)))
        })
        .collect()
}

/// `rules` without `verb` on `resource` (a rule left with no verb is dropped).
fn without(rules: &[Value], resource: &str, verb: &str) -> Vec<Value> {
    rules
        .iter()
        .filter_map(|r| {
            let mut r = r.clone();
            let names: Vec<&str> = r["resources"]
                .as_array()
                .expect("resources")
                .iter()
                .filter_map(Value::as_str)
                .collect();
            if names == [resource] {
                let verbs: Vec<Value> = r["verbs"]
                    .as_array()
                    .expect("verbs")
                    .iter()
                    .filter(|v| v.as_str() != Some(verb))
                    .cloned()
                    .collect();
                if verbs.is_empty() {
                    return None;
                }
                r["verbs"] = Value::Array(verbs);
            }
            Some(r)
        })
        .collect()
}

/// The API server's refusal of `verb` on `resource`, as it appears in the operator's log once
/// quotes and escapes are dropped: `… cannot watch resource phonenumbers in API group …`.
fn refusal(verb: &str, resource: &str) -> String {
    format!("cannot {verb} resource {resource} in API group")
}

fn unquoted(log: &str) -> String {
    log.replace(['"', '\\'], "")
}

struct Run {
    ready: bool,
    event: bool,
    log: String,
}

/// Resources of the cluster (not of a namespace): only an operator that uses cluster accounts
/// needs them.
const CLUSTER_RESOURCES: [&str; 3] = [
    "clusteroneinboxaccounts",
    "clusteroneinboxaccounts/status",
    "namespaces",
];

/// The rule on the operator's CRDs (get, by name): its need is shown by tests/e2e/uninstall.rs,
/// whose operator runs under deploy/rbac.yaml and must read them to orphan instead of release.
fn on_the_crd(rule: &Value) -> bool {
    rule["resources"] == serde_json::json!(["customresourcedefinitions"])
        && rule["resourceNames"]
            == serde_json::json!([
                "phonenumbers.oneinbox.ai",
                "oneinboxaccounts.oneinbox.ai",
                "clusteroneinboxaccounts.oneinbox.ai"
            ])
        && rule["verbs"] == serde_json::json!(["get"])
}

/// The rules about namespaced resources, or (`cluster`) about cluster resources (the CRD's
/// rule in neither).
fn scoped(rules: &[Value], cluster: bool) -> Vec<Value> {
    rules
        .iter()
        .filter(|r| !on_the_crd(r))
        .filter(|r| {
            r["resources"]
                .as_array()
                .expect("resources")
                .iter()
                .all(|res| CLUSTER_RESOURCES.contains(&res.as_str().unwrap_or_default()) == cluster)
        })
        .cloned()
        .collect()
}

/// Watch PhoneNumber `r` and the operator's log until `done` says so, or for 20 s.
async fn watch_run(w: &World, done: &impl Fn(&Run) -> bool) -> Run {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut run = Run {
        ready: false,
        event: false,
        log: String::new(),
    };
    while Instant::now() < deadline {
        run.ready = w.pns.get("r").await.map(|p| is_ready(&p)).unwrap_or(false);
        run.event = w.events().await.iter().any(|(r, _)| r == "Registered");
        run.log = w.operator.log_text();
        if done(&run) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    run
}

/// Run the operator as `nobody`, bound (in a fresh namespace) to `rules`, apply a PhoneNumber
/// that needs every permission (a SIP password Secret, events, status, the finalizer, a
/// OneInboxAccount with its key Secret), and watch until `done` says so or the deadline
/// passes.
async fn run_with(
    rules: Vec<Value>,
    args: &[&str],
    label: String,
    done: impl Fn(&Run) -> bool,
) -> Run {
    let mut w = World::start(&format!("rbac-{label}")).await;
    let role = operator_as_nobody(&mut w, rules, args, "-nobody");
    w.secret("sip", "pw-rbac-0c1e").await;
    w.account("acct", API_KEY, serde_json::json!({})).await;
    w.apply("r", with(sip_spec(&number(), "sip"), account_ref("acct")))
        .await;

    let run = watch_run(&w, &done).await;
    let _ = kubectl(&["delete", "clusterrole", &role]);
    run
}

#[tokio::test]
async fn deployed_rbac_is_sufficient_and_every_verb_is_needed() {
    cluster();
    assert_eq!(
        deployed_rules().iter().filter(|r| on_the_crd(r)).count(),
        1,
        "deploy/rbac.yaml lets the operator get its own CRDs, and nothing more of CRDs"
    );
    let rules = scoped(&deployed_rules(), false);
    let grants = grants(&rules);
    assert_eq!(
        grants,
        [
            ("phonenumbers", "list"),
            ("phonenumbers", "watch"),
            ("phonenumbers", "patch"),
            ("phonenumbers/status", "patch"),
            ("oneinboxaccounts", "list"),
            ("oneinboxaccounts", "watch"),
            ("oneinboxaccounts", "patch"),
            ("oneinboxaccounts/status", "patch"),
            ("secrets", "get"),
            ("secrets", "list"),
            ("secrets", "watch"),
            ("events", "create"),
        ]
        .map(|(r, v)| (r.to_owned(), v.to_owned())),
        "update this test when the rules change"
    );

    let mut runs = vec![run_with(rules.clone(), &[], "all".into(), |r| r.ready && r.event).await];
    // One run per verb, each without it, side by side. The PhoneNumber and Secret watches list
    // by streaming (the watch verb) where the API server serves it; `list` on them is what the
    // paged lists need, the fallback on an API server without WatchList: shown in that mode.
    let reduced = grants.iter().enumerate().map(|(i, (resource, verb))| {
        let wanted = refusal(verb, resource);
        let paged = verb == "list" && (resource == "phonenumbers" || resource == "secrets");
        let args: &[&str] = if paged {
            &["--initial-lists", "pages"]
        } else {
            &[]
        };
        run_with(
            without(&rules, resource, verb),
            args,
            format!("no{i}"),
            move |r| unquoted(&r.log).contains(&wanted),
        )
    });
    runs.extend(join_all(reduced).await);

    let all = &runs[0];
    assert!(
        all.ready && all.event,
        "the deployed rules are not enough (ready {}, event {}):\n{}",
        all.ready,
        all.event,
        tail(&all.log, 10)
    );
    assert!(
        !unquoted(&all.log).contains("cannot "),
        "a call was refused under the deployed rules:\n{}",
        all.log
    );
    for ((resource, verb), run) in grants.iter().zip(&runs[1..]) {
        assert!(
            unquoted(&run.log).contains(&refusal(verb, resource)),
            "without {verb} on {resource} the operator made no call that was refused, so the \
             verb is not needed (ready {}, event {}):\n{}",
            run.ready,
            run.event,
            tail(&run.log, 10)
        );
    }
}

/// As `run_with`, for an operator that uses cluster accounts: bound cluster-wide (as user
/// `user`, so that parallel runs never share a binding) to `rules`, its PhoneNumber using a
/// ClusterOneInboxAccount of its own that allows its namespace by name.
async fn run_cluster_with(rules: Vec<Value>, label: String, done: impl Fn(&Run) -> bool) -> Run {
    let mut w = World::start(&format!("rbac-{label}")).await;
    w.operator.kill();
    let user = format!("e2e-{}", w.ns);
    let objects = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": user}, "rules": rules},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": user},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": user},
         "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]}
    ]});
    let file = std::env::temp_dir().join(format!("{}-rbac.json", w.ns));
    std::fs::write(&file, objects.to_string()).expect("write");
    kubectl_ok(&["apply", "-f", file.to_str().expect("path")]);
    let kc = kubeconfig_impersonating(&user);
    let shard = format!("oneinbox.ai/e2e={}", w.ns);
    w.operator = Operator::start_as(
        &w.ns,
        &w.mock.url,
        &["--cluster-accounts=true", "--account-selector", &shard],
        &[("KUBECONFIG", kc.to_str().expect("path"))],
        "-impersonated",
    );
    w.secret("sip", "pw-rbac-0c1e").await;
    w.api_key_secret("cluster-key", API_KEY).await;
    let account = format!("rbac-{}", w.ns);
    w.cluster_account(
        &account,
        "cluster-key",
        serde_json::json!({"names": [w.ns]}),
    )
    .await;
    w.apply(
        "r",
        with(sip_spec(&number(), "sip"), cluster_account_ref(&account)),
    )
    .await;

    let run = watch_run(&w, &done).await;
    w.operator.kill();
    // The account's finalizer goes with the test (nobody would release it now).
    let _ = kubectl(&[
        "patch",
        "clusteroneinboxaccount",
        &account,
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ]);
    let _ = kubectl(&["delete", "clusteroneinboxaccount", &account, "--wait=false"]);
    let _ = kubectl(&["delete", "clusterrolebinding", &user]);
    let _ = kubectl(&["delete", "clusterrole", &user]);
    run
}

#[tokio::test]
async fn cluster_account_rbac_is_sufficient_and_every_verb_is_needed() {
    cluster();
    let all = deployed_rules();
    let cluster_rules = scoped(&all, true);
    let grants = grants(&cluster_rules);
    assert_eq!(
        grants,
        [
            ("clusteroneinboxaccounts", "list"),
            ("clusteroneinboxaccounts", "watch"),
            ("clusteroneinboxaccounts", "patch"),
            ("clusteroneinboxaccounts/status", "patch"),
            ("namespaces", "list"),
            ("namespaces", "watch"),
        ]
        .map(|(r, v)| (r.to_owned(), v.to_owned())),
        "update this test when the rules change"
    );
    let mut runs = vec![run_cluster_with(all.clone(), "call".into(), |r| r.ready && r.event).await];
    let reduced = grants.iter().enumerate().map(|(i, (resource, verb))| {
        let wanted = refusal(verb, resource);
        run_cluster_with(without(&all, resource, verb), format!("cno{i}"), move |r| {
            unquoted(&r.log).contains(&wanted)
        })
    });
    runs.extend(join_all(reduced).await);
    let first = &runs[0];
    assert!(
        first.ready && first.event,
        "the deployed rules are not enough for cluster accounts (ready {}, event {}):\n{}",
        first.ready,
        first.event,
        tail(&first.log, 10)
    );
    assert!(
        !unquoted(&first.log).contains("cannot "),
        "a call was refused under the deployed rules:\n{}",
        first.log
    );
    for ((resource, verb), run) in grants.iter().zip(&runs[1..]) {
        assert!(
            unquoted(&run.log).contains(&refusal(verb, resource)),
            "without {verb} on {resource} the operator made no call that was refused, so the \
             verb is not needed (ready {}, event {}):\n{}",
            run.ready,
            run.event,
            tail(&run.log, 10)
        );
    }
}
