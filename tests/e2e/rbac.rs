//! Least privilege, proven verb by verb: the ClusterRole of deploy/rbac.yaml is enough for the
//! whole lifecycle without a single refusal, and without any one of its verbs the API server
//! refuses a call that the operator makes.

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

/// Run the operator as `nobody`, bound (in a fresh namespace) to `rules`, apply a PhoneNumber
/// that needs every permission (a SIP password Secret, events, status, the finalizer), and
/// watch until `done` says so or the deadline passes.
async fn run_with(rules: Vec<Value>, label: String, done: impl Fn(&Run) -> bool) -> Run {
    let mut w = World::start(&format!("rbac-{label}")).await;
    let role = operator_as_nobody(&mut w, rules, &[], "-nobody");
    w.secret("sip", "pw-rbac-0c1e").await;
    w.apply("r", sip_spec(&number(), "sip")).await;

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
    let _ = kubectl(&["delete", "clusterrole", &role]);
    run
}

#[tokio::test]
async fn deployed_rbac_is_sufficient_and_every_verb_is_needed() {
    cluster();
    let rules = deployed_rules();
    let grants = grants(&rules);
    assert_eq!(
        grants,
        [
            ("phonenumbers", "list"),
            ("phonenumbers", "watch"),
            ("phonenumbers", "patch"),
            ("phonenumbers/status", "patch"),
            ("secrets", "get"),
            ("secrets", "list"),
            ("secrets", "watch"),
            ("events", "create"),
        ]
        .map(|(r, v)| (r.to_owned(), v.to_owned())),
        "update this test when the rules change"
    );

    let mut runs = vec![run_with(rules.clone(), "all".into(), |r| r.ready && r.event).await];
    // One run per verb, each without it, side by side.
    let reduced = grants.iter().enumerate().map(|(i, (resource, verb))| {
        let wanted = refusal(verb, resource);
        run_with(
            without(&rules, resource, verb),
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
