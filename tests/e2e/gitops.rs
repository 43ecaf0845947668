//! What GitOps tools see: every status state through Flux's kstatus library, plus
//! `kubectl explain` and `kubectl get -o wide`.

use std::time::Duration;

use serde_json::json;

use crate::harness::*;

#[tokio::test]
async fn kstatus_reads_every_state_correctly() {
    let mut w = World::start("kstatus").await;

    // Creating → InProgress (the POST is held by the mock for a few seconds).
    w.mock
        .fault(json!({"endpoint": POST, "kind": "delay", "delay_ms": 2000, "count": 1}))
        .await;
    w.apply("k", credential_spec(&number())).await;
    let pn = w.wait_reason("k", "Reconciling", "Creating").await;
    assert_eq!(
        pn.condition("Ready").map(|c| c.status.as_str()),
        Some("False")
    );
    assert_eq!(w.kstatus("k"), ("InProgress".to_string(), 1));

    // Ready → Current.
    w.wait_ready("k").await;
    assert_eq!(w.kstatus("k"), ("Current".to_string(), 0));

    // observedGeneration lagging (operator stopped, spec changed) → InProgress.
    w.operator.kill();
    w.merge_spec(
        "k",
        json!({"friendlyName": "changed while the operator is down"}),
    )
    .await;
    assert_eq!(w.kstatus("k").0, "InProgress");
    w.operator.spawn();
    w.wait_ready("k").await;
    assert_eq!(w.kstatus("k").0, "Current");

    // Stalled → Failed.
    w.apply("s", sip_spec(&number(), "never-created")).await;
    w.wait_reason("s", "Stalled", "SecretNotFound").await;
    assert_eq!(w.kstatus("s").0, "Failed");

    // Deleting → Terminating.
    w.mock
        .config(json!({"endpoints": {DELETE: {"error_rate": 1.0}}}))
        .await;
    w.delete("k").await;
    w.wait_reason("k", "Stalled", "DeletionBlocked").await;
    assert_eq!(w.kstatus("k").0, "Terminating");
    w.mock.config(json!({})).await;
    w.wait_gone("k", Duration::from_secs(20)).await;
}

#[test]
fn kubectl_explain_documents_the_spec() {
    cluster();
    let out = kubectl_ok(&["explain", "phonenumber.spec"]);
    for field in [
        "phoneNumber",
        "provider",
        "agentId",
        "providerConfig",
        "credentialId",
        "inboundRouting",
        "deletionPolicy",
        "replacementPolicy",
        "accountRef",
    ] {
        assert!(
            out.contains(field),
            "{field} missing from kubectl explain:\n{out}"
        );
    }
    assert!(out.contains("E.164"), "{out}");
    let out = kubectl_ok(&["explain", "phonenumber.spec.deletionPolicy"]);
    assert!(out.contains("Orphan"), "{out}");
}
