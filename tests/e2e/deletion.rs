//! Deletion while the API is down: DeletionBlocked with the finalizer kept, completes when the
//! API recovers; switching to Orphan completes it at once.

use std::time::Duration;

use kube::ResourceExt;
use serde_json::json;

use crate::harness::*;

#[tokio::test]
async fn deletion_waits_for_the_api_then_completes() {
    let w = World::start("blocked").await;
    w.apply("blocked", credential_spec(&number())).await;
    w.wait_ready("blocked").await;
    w.mock
        .config(json!({"endpoints": {DELETE: {"error_rate": 1.0, "error_status": 503}}}))
        .await;
    w.delete("blocked").await;
    let pn = w.wait_reason("blocked", "Stalled", "DeletionBlocked").await;
    assert!(
        pn.finalizers()
            .contains(&"oneinbox.ai/deregister".to_string())
    );
    assert!(
        pn.condition("Stalled")
            .expect("stalled")
            .message
            .contains("deletionPolicy: Orphan")
    );
    assert_eq!(
        pn.condition("Ready").map(|c| c.reason.as_str()),
        Some("Deleting")
    );
    let (ks, _) = w.kstatus("blocked");
    assert_eq!(ks, "Terminating");

    w.mock.config(json!({})).await;
    w.wait_gone("blocked", Duration::from_secs(20)).await;
    assert!(w.mock.registrations().await.is_empty());
}

#[tokio::test]
async fn switching_a_blocked_deletion_to_orphan_completes_it() {
    let w = World::start("escape").await;
    w.apply("escape", credential_spec(&number())).await;
    w.wait_ready("escape").await;
    w.mock
        .config(json!({"endpoints": {DELETE: {"error_rate": 1.0, "error_status": 503}}}))
        .await;
    w.delete("escape").await;
    w.wait_reason("escape", "Stalled", "DeletionBlocked").await;

    w.merge_spec("escape", json!({"deletionPolicy": "Orphan"}))
        .await;
    w.wait_gone("escape", Duration::from_secs(10)).await;
    assert_eq!(
        w.mock.registrations().await.len(),
        1,
        "Orphan keeps the registration"
    );
}
