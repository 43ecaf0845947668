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

/// `spec.deletionProtection: true`: the API server's admission policy (crds/, applied by the
/// harness with the CRDs) refuses `kubectl delete`; deleting the namespace leaves it
/// Terminating with a condition that says why; lifting the protection lets both go, and the
/// number is deregistered as its policy says.
#[tokio::test]
async fn a_protected_number_refuses_deletion_and_holds_its_namespace_until_lifted() {
    let w = World::start("protected").await;
    let mut spec = credential_spec(&number());
    spec["deletionProtection"] = json!(true);
    w.apply("p", spec).await;
    w.wait_ready("p").await;

    let refusal = "has spec.deletionProtection: true; set it to false to delete it";
    // The policy is in force once the API server has loaded it (it was applied with the CRDs).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let out = loop {
        let out = kubectl(&["-n", &w.ns, "delete", "pn", "p", "--dry-run=server"]);
        if !out.status.success() || std::time::Instant::now() > deadline {
            break out;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(refusal),
        "kubectl delete was not refused: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = kubectl(&["-n", &w.ns, "delete", "pn", "p", "--wait=false"]);
    assert!(!out.status.success(), "a protected number was deleted");
    assert!(String::from_utf8_lossy(&out.stderr).contains(refusal));

    kubectl_ok(&["delete", "namespace", &w.ns, "--wait=false"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let ns = kubectl_ok(&["get", "namespace", &w.ns, "-o", "json"]);
        let ns: serde_json::Value = serde_json::from_str(&ns).expect("namespace json");
        let says_why = ns["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| {
                c["type"] == "NamespaceDeletionContentFailure"
                    && c["status"] == "True"
                    && c["message"].as_str().is_some_and(|m| m.contains(refusal))
            });
        if says_why {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the namespace never said why it waits: {}",
            ns["status"]
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let pn = w
        .pns
        .get("p")
        .await
        .expect("the protected number is still there");
    assert!(pn.metadata.deletion_timestamp.is_none());
    assert_eq!(w.mock.count(DELETE).await, 0);

    w.merge_spec("p", json!({"deletionProtection": false}))
        .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while kubectl(&["get", "namespace", &w.ns]).status.success() {
        assert!(
            std::time::Instant::now() < deadline,
            "the namespace was not deleted once the protection was lifted"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(
        w.mock.count(DELETE).await,
        1,
        "deletionPolicy Delete applies"
    );
    assert!(w.mock.registrations().await.is_empty());
}
