//! Errors that need a human: each ends Stalled with the fix in the message, and recovers once
//! the fix is made.

use std::time::Duration;

use kube::ResourceExt;
use serde_json::json;

use crate::harness::*;

#[tokio::test]
async fn api_rejection_stalls_with_the_api_message_and_is_not_retried() {
    let w = World::start("rejected").await;
    // Only AGENT2 exists: registering with AGENT is a reference error (404 agent_id not found).
    w.mock
        .send(
            reqwest::Method::PUT,
            "/_mock/agents",
            json!({"ids": [AGENT2]}),
        )
        .await;
    w.apply("bad-agent", credential_spec(&number())).await;
    let pn = w
        .wait_reason("bad-agent", "Stalled", "RegistrationRejected")
        .await;
    let msg = &pn.condition("Stalled").expect("stalled").message;
    assert!(msg.contains("agent_id not found"), "{msg}");
    assert_eq!(
        pn.condition("Ready").map(|c| c.status.as_str()),
        Some("False")
    );
    assert!(pn.condition("Reconciling").is_none());
    let (ks, _) = w.kstatus("bad-agent");
    assert_eq!(ks, "Failed");

    // Permanent: the same request is not repeated while nothing changes.
    let posts = w.mock.count(POST).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        w.mock.count(POST).await,
        posts,
        "a rejected registration was retried"
    );

    // The fix (a known agent) is picked up at once.
    w.merge_spec("bad-agent", json!({"agentId": AGENT2})).await;
    w.wait_ready("bad-agent").await;
    assert_eq!(w.mock.registrations().await.len(), 1);

    // A 400 from the API (one-shot) is reported the same way, with its code and message.
    w.mock
        .fault(json!({"endpoint": POST, "kind": "status", "status": 400, "count": 1}))
        .await;
    w.apply(
        "bad-400",
        with(credential_spec(&number()), json!({"agentId": AGENT2})),
    )
    .await;
    let pn = w
        .wait_reason("bad-400", "Stalled", "RegistrationRejected")
        .await;
    assert!(
        pn.condition("Stalled")
            .expect("stalled")
            .message
            .contains("HTTP 400"),
        "{:?}",
        pn.status
    );
}

#[tokio::test]
async fn missing_secret_waits_then_stalls_then_recovers_within_seconds() {
    let w = World::start("secret").await;
    let pw = "pw-late-secret-44aa09";
    w.apply("late", sip_spec(&number(), "late-sip")).await;
    let pn = w.wait_reason("late", "Reconciling", "SecretNotFound").await;
    assert!(pn.condition("Stalled").is_none());
    let pn = w.wait_reason("late", "Stalled", "SecretNotFound").await;
    let msg = &pn.condition("Stalled").expect("stalled").message;
    assert!(msg.contains("late-sip") && msg.contains("kubectl"), "{msg}");
    assert_eq!(
        w.mock.total_calls().await,
        0,
        "no API call without credentials"
    );

    w.secret("late-sip", pw).await;
    // Picked up by the Secret watch, well before any periodic retry.
    w.wait_for(
        "late",
        "Ready after the Secret appeared",
        Duration::from_secs(10),
        |p| is_ready(p) && synced(p),
    )
    .await;
    assert_eq!(w.mock.registrations().await.len(), 1);
    w.assert_no_secrets(&[pw]).await;
}

#[tokio::test]
async fn number_registered_outside_the_cluster_stalls_until_adopted() {
    let w = World::start("conflict").await;
    let num = number();
    // Someone registers the number directly.
    let outside: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/v1/phone-numbers", w.mock.url))
        .bearer_auth("oi_sk_someone_else")
        .json(&json!({"phone_number": num, "provider": "telnyx", "agent_id": AGENT, "credential_id": CREDENTIAL}))
        .send()
        .await
        .expect("direct POST")
        .json()
        .await
        .expect("json");
    let outside_id = outside["id"].as_str().expect("id").to_string();

    w.apply("claim", credential_spec(&num)).await;
    let pn = w.wait_reason("claim", "Stalled", "AlreadyRegistered").await;
    let msg = &pn.condition("Stalled").expect("stalled").message;
    assert!(
        msg.contains(&outside_id) && msg.contains("oneinbox.ai/phone-number-id"),
        "{msg}"
    );
    assert!(pn.pending_create().is_none(), "the attempt is settled");

    // Adopt deliberately.
    w.annotate("claim", "oneinbox.ai/phone-number-id", Some(&outside_id))
        .await;
    let pn = w.wait_ready("claim").await;
    assert_eq!(pn.status.and_then(|s| s.phone_number_id), Some(outside_id));
    assert_eq!(w.mock.registrations().await.len(), 1);
}

#[tokio::test]
async fn the_newer_of_two_claims_is_stalled_and_its_deletion_keeps_the_number() {
    let w = World::start("duplicate").await;
    let num = number();
    w.apply("first", credential_spec(&num)).await;
    let first = w.wait_ready("first").await;
    w.apply("second", credential_spec(&num)).await;
    let pn = w
        .wait_reason("second", "Stalled", "DuplicatePhoneNumber")
        .await;
    assert!(
        pn.condition("Stalled")
            .expect("stalled")
            .message
            .contains("first")
    );
    assert!(pn.finalizers().is_empty());

    w.delete("second").await;
    w.wait_gone("second", Duration::from_secs(10)).await;
    assert_only_registration_is(&w.mock, &first).await;
    assert_eq!(w.mock.count(DELETE).await, 0);
    assert_eq!(w.mock.count(POST).await, 1);
}

#[tokio::test]
async fn when_the_owner_of_a_number_goes_the_waiting_claim_takes_over() {
    let w = World::start("handover").await;
    let num = number();
    w.apply("owner", credential_spec(&num)).await;
    w.wait_ready("owner").await;
    w.apply("waiting", credential_spec(&num)).await;
    w.wait_reason("waiting", "Stalled", "DuplicatePhoneNumber")
        .await;
    w.delete("owner").await;
    w.wait_gone("owner", Duration::from_secs(20)).await;
    // Woken by the owner's release, not by the 5-minute re-check.
    let pn = w
        .wait_for(
            "waiting",
            "Ready after the owner left",
            Duration::from_secs(20),
            |p| is_ready(p) && synced(p),
        )
        .await;
    assert_only_registration_is(&w.mock, &pn).await;
}

#[tokio::test]
async fn provisioning_is_progress_and_a_failed_provisioning_needs_a_human() {
    let w = World::start_with("provisioning", &["--provisioning-ms", "1500"], &[]).await;
    w.apply("slow", credential_spec(&number())).await;
    let pn = w.wait_reason("slow", "Reconciling", "Provisioning").await;
    assert_eq!(
        pn.status.as_ref().and_then(|s| s.state.as_deref()),
        Some("provisioning")
    );
    assert!(
        pn.status
            .as_ref()
            .and_then(|s| s.phone_number_id.clone())
            .is_some(),
        "id recorded while provisioning"
    );
    w.wait_ready("slow").await;

    w.mock
        .config(json!({"provisioning_ms": 500, "provisioning_outcome": "failed"}))
        .await;
    w.apply("doomed", credential_spec(&number())).await;
    let pn = w
        .wait_reason("doomed", "Stalled", "RegistrationFailed")
        .await;
    assert_eq!(
        pn.status.as_ref().and_then(|s| s.state.as_deref()),
        Some("failed")
    );
}
