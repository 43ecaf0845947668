//! Updates, drift, controls (reconcile-requested-at, paused, poll-interval), counted in API calls.

use std::time::Duration;

use kube::ResourceExt;
use serde_json::json;

use crate::harness::*;

fn delta(before: &serde_json::Value, after: &serde_json::Value, key: &str) -> u64 {
    after.get(key).and_then(|v| v.as_u64()).unwrap_or(0)
        - before.get(key).and_then(|v| v.as_u64()).unwrap_or(0)
}

#[tokio::test]
async fn a_spec_update_is_one_patch_and_ready_stays_true() {
    let w = World::start("update").await;
    w.secret("sip", "pw-update-1").await;
    w.apply("sales", sip_spec(&number(), "sip")).await;
    let before_pn = w.wait_ready("sales").await;
    let ready_since = before_pn
        .condition("Ready")
        .expect("ready")
        .last_transition_time
        .clone();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = w.mock.calls().await;

    // New agent, new name, fallback removed (explicit null in the PATCH).
    let mut spec = sip_spec("", "sip");
    spec["phoneNumber"] = json!(before_pn.spec.phone_number);
    spec["agentId"] = json!(AGENT2);
    spec["friendlyName"] = json!("Sales line (EU)");
    spec["inboundRouting"] = json!({"voicemailMessage": "Sorry, we missed your call."});
    w.apply("sales", spec).await;
    let pn = w
        .wait_for(
            "sales",
            "the update to be observed",
            Duration::from_secs(20),
            |p| is_ready(p) && synced(p) && p.metadata.generation == Some(2),
        )
        .await;
    let after = w.mock.calls().await;
    assert_eq!(delta(&before, &after, PATCH), 1, "{before} → {after}");
    for k in [POST, GET, LIST, DELETE] {
        assert_eq!(delta(&before, &after, k), 0, "{k}: {before} → {after}");
    }
    assert_eq!(
        pn.condition("Ready").expect("ready").last_transition_time,
        ready_since,
        "Ready flipped during the update"
    );
    let r = &w.mock.registrations().await[0];
    assert_eq!(r["agent_id"], json!(AGENT2));
    assert_eq!(r["friendly_name"], json!("Sales line (EU)"));
    assert!(
        r["inbound_routing"]
            .get("fallback")
            .is_none_or(|f| f.is_null()),
        "{r}"
    );
    let events = w.events().await;
    assert!(events.iter().any(|(r, _)| r == "Updated"), "{events:?}");
}

#[tokio::test]
async fn an_update_whose_answer_was_lost_is_checked_before_ready() {
    // Found by the chaos soak: a PATCH commits but its answer is lost; the spec then goes back
    // to the old value before a retry succeeds. Ready must still mean the registration matches.
    let w = World::start("lostpatch").await;
    w.apply("x", credential_spec(&number())).await;
    w.wait_ready("x").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    w.mock
        .fault(json!({"endpoint": PATCH, "kind": "commit_then_drop", "count": 1}))
        .await;
    // Retries fail without committing until the spec has gone back.
    w.mock
        .fault(json!({"endpoint": PATCH, "kind": "status", "status": 503, "count": 3}))
        .await;
    w.merge_spec("x", json!({"agentId": AGENT2})).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while w.mock.registrations().await[0]["agent_id"] != json!(AGENT2) {
        assert!(
            std::time::Instant::now() < deadline,
            "the first PATCH was not committed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    w.merge_spec("x", json!({"agentId": AGENT})).await;
    w.wait_for("x", "generation 3 Ready", Duration::from_secs(30), |p| {
        is_ready(p) && synced(p) && p.metadata.generation == Some(3)
    })
    .await;
    assert_eq!(
        w.mock.registrations().await[0]["agent_id"],
        json!(AGENT),
        "Ready while the registration still has the agent of the lost PATCH"
    );
}

#[tokio::test]
async fn drift_is_corrected_and_a_lost_registration_is_registered_again() {
    let w = World::start_with(
        "drift",
        &[],
        &["--poll-interval", "2s", "--min-poll-interval", "1s"],
    )
    .await;
    w.apply("d", credential_spec(&number())).await;
    let pn = w.wait_ready("d").await;
    let id = pn
        .status
        .clone()
        .and_then(|s| s.phone_number_id)
        .expect("id");
    let http = reqwest::Client::new();

    // Someone renames the number in OneInbox directly.
    let r = http
        .patch(format!("{}/v1/phone-numbers/{id}", w.mock.url))
        .bearer_auth("oi_sk_someone")
        .json(&json!({"friendly_name": "hijacked"}))
        .send()
        .await
        .expect("direct PATCH");
    assert!(r.status().is_success());
    w.wait_for("d", "drift corrected", Duration::from_secs(15), |_| true)
        .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let regs = w.mock.registrations().await;
        if regs[0]["friendly_name"].is_null() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "drift not corrected: {regs:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let events = w.events().await;
    assert!(
        events.iter().any(|(r, _)| r == "DriftCorrected"),
        "{events:?}"
    );

    // Someone deletes the registration outside the cluster.
    let r = http
        .delete(format!("{}/v1/phone-numbers/{id}", w.mock.url))
        .bearer_auth("oi_sk_someone")
        .send()
        .await
        .expect("direct DELETE");
    assert_eq!(r.status().as_u16(), 204);
    let pn = w
        .wait_for("d", "a new registration", Duration::from_secs(20), |p| {
            is_ready(p)
                && p.status
                    .as_ref()
                    .and_then(|s| s.phone_number_id.as_deref())
                    .is_some_and(|n| n != id)
        })
        .await;
    assert_only_registration_is(&w.mock, &pn).await;
    let events = w.events().await;
    assert!(
        events.iter().any(|(r, _)| r == "RegistrationLost"),
        "{events:?}"
    );
}

#[tokio::test]
async fn reconcile_requested_at_is_echoed_after_one_check() {
    let w = World::start("requested").await;
    w.apply("r", credential_spec(&number())).await;
    w.wait_ready("r").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let gets = w.mock.count(GET).await;
    w.annotate(
        "r",
        "oneinbox.ai/reconcile-requested-at",
        Some("2026-11-27T01:00:00Z"),
    )
    .await;
    w.wait_for(
        "r",
        "lastHandledReconcileAt",
        Duration::from_secs(10),
        |p| {
            p.status
                .as_ref()
                .and_then(|s| s.last_handled_reconcile_at.as_deref())
                == Some("2026-11-27T01:00:00Z")
        },
    )
    .await;
    assert_eq!(w.mock.count(GET).await, gets + 1, "one check per request");
}

#[tokio::test]
async fn paused_objects_make_no_calls_and_resume_with_every_change() {
    let w = World::start_with(
        "paused",
        &[],
        &["--poll-interval", "1s", "--min-poll-interval", "1s"],
    )
    .await;
    w.apply("p", credential_spec(&number())).await;
    w.wait_ready("p").await;
    w.annotate("p", "oneinbox.ai/paused", Some("true")).await;
    let pn = w.wait_reason("p", "Ready", "Paused").await;
    assert!(pn.condition("Reconciling").is_none() && pn.condition("Stalled").is_none());
    let calls = w.mock.total_calls().await;
    w.merge_spec(
        "p",
        json!({"agentId": AGENT2, "friendlyName": "while paused"}),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        w.mock.total_calls().await,
        calls,
        "a paused object called the API"
    );

    w.annotate("p", "oneinbox.ai/paused", None).await;
    w.wait_ready("p").await;
    let r = &w.mock.registrations().await[0];
    assert_eq!(r["agent_id"], json!(AGENT2));
    assert_eq!(r["friendly_name"], json!("while paused"));
}

#[tokio::test]
async fn poll_interval_zero_means_no_checks_once_ready() {
    let w = World::start_with(
        "nopoll",
        &[],
        &["--poll-interval", "1s", "--min-poll-interval", "1s"],
    )
    .await;
    w.apply_full(json!({
        "metadata": {"name": "quiet", "annotations": {"oneinbox.ai/poll-interval": "0"}},
        "spec": credential_spec(&number())
    }))
    .await
    .expect("apply");
    w.wait_ready("quiet").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let calls = w.mock.total_calls().await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(w.mock.total_calls().await, calls);
}

#[tokio::test]
async fn a_throttled_drift_check_leaves_a_ready_object_alone() {
    let w = World::start_with(
        "throttled",
        &[],
        &["--poll-interval", "1s", "--min-poll-interval", "1s"],
    )
    .await;
    w.apply("t", credential_spec(&number())).await;
    w.wait_ready("t").await;
    // Let the operator see its own last writes first.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = w.pns.get("t").await.expect("get");
    let gets = w.mock.count(GET).await;
    w.mock
        .fault(json!({"endpoint": GET, "kind": "status", "status": 429, "retry_after": "1", "count": 2}))
        .await;
    // Both 429s answered, then a check that went through.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while w.mock.count(GET).await < gets + 3 {
        assert!(std::time::Instant::now() < deadline, "drift checks stopped");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = w.pns.get("t").await.expect("get");
    assert_eq!(
        before.resource_version(),
        after.resource_version(),
        "a throttled drift check wrote the object: {:?}",
        after.status
    );
}
