//! `--secret-access get`: no cluster-wide Secret list or watch. The operator runs as `nobody`
//! bound to the deployed rules with Secrets reduced to `get`; rotations are picked up at the next
//! drift check and a missing Secret is looked for again every --min-poll-interval.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::*;

/// The ClusterRole rules of deploy/rbac.yaml, with Secrets reduced to `get`.
fn get_only_rules() -> Vec<Value> {
    let text = std::fs::read_to_string(repo().join("deploy/rbac.yaml")).expect("rbac.yaml");
    let role = text
        .split("\n---")
        .find(|doc| doc.contains("kind: ClusterRole\n"))
        .expect("ClusterRole");
    let role: Value = yaml_to_json(role);
    role["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .map(|r| {
            let mut r = r.clone();
            if r["resources"] == json!(["secrets"]) {
                r["verbs"] = json!(["get"]);
            }
            r
        })
        .collect()
}

fn yaml_to_json(text: &str) -> Value {
    yaml_serde::from_str(text).expect("yaml")
}

#[tokio::test]
async fn with_get_only_secret_access_rotations_and_late_secrets_are_picked_up() {
    let mut w = World::start("secretget").await;
    let role = operator_as_nobody(
        &mut w,
        get_only_rules(),
        &[
            "--secret-access",
            "get",
            "--poll-interval",
            "1s",
            "--min-poll-interval",
            "1s",
        ],
        "-get",
    );

    // A rotation is picked up at the next drift check.
    w.secret("sip", "pw-get-only-1").await;
    w.apply(
        "g",
        with(
            sip_spec(&number(), "sip"),
            json!({"replacementPolicy": "Replace"}),
        ),
    )
    .await;
    let first = w.wait_ready("g").await;
    let old = first.status.and_then(|s| s.phone_number_id).expect("id");
    w.secret("sip", "pw-get-only-2").await;
    w.wait_for(
        "g",
        "re-registered with the new password",
        Duration::from_secs(20),
        |p| {
            is_ready(p)
                && p.status
                    .as_ref()
                    .and_then(|s| s.phone_number_id.as_deref())
                    .is_some_and(|id| id != old)
        },
    )
    .await;

    // A Secret that comes after its object, past the grace period: found by looking again.
    w.apply("late", sip_spec(&number(), "late-sip")).await;
    w.wait_reason("late", "Stalled", "SecretNotFound").await;
    w.secret("late-sip", "pw-get-only-3").await;
    w.wait_ready("late").await;

    // Nothing was refused: the operator never asked to list or watch Secrets.
    let log = w.operator.log_text();
    assert!(!log.contains("forbidden"), "{}", tail(&log, 20));
    assert_eq!(w.mock.registrations().await.len(), 2);
    w.assert_no_secrets(&["pw-get-only-1", "pw-get-only-2", "pw-get-only-3"])
        .await;
    let _ = kubectl(&["delete", "clusterrole", &role]);
}
