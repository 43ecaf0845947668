//! What GitOps tools see: every status state through Flux's kstatus library, plus
//! `kubectl explain` and `kubectl get -o wide`.

use std::time::Duration;

use serde_json::json;

use crate::harness::*;

#[tokio::test]
async fn kstatus_reads_every_state_correctly() {
    let mut w = World::start("kstatus").await;

    // Registering → InProgress (the POST is held by the mock for a few seconds). Nothing is
    // written to the status before the POST: the schema's `observedGeneration: 0` says it.
    w.mock
        .fault(json!({"endpoint": POST, "kind": "delay", "delay_ms": 2000, "count": 1}))
        .await;
    w.apply("k", credential_spec(&number())).await;
    let pn = w
        .wait_for("k", "the attempt recorded", Duration::from_secs(30), |p| {
            p.pending_create().is_some()
        })
        .await;
    assert_eq!(
        pn.condition("Ready"),
        None,
        "no status written before the POST"
    );
    assert_eq!(
        pn.status.as_ref().and_then(|s| s.observed_generation),
        Some(0)
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

#[tokio::test]
async fn kstatus_reads_every_account_state_correctly() {
    const KEY: &str = "oi_sk_kstatus_account_2b7e_never_log";
    // The operator's workspace accepts only its own key, so an unknown key is refused.
    let mut w = World::start_with("kstatus-acct", &["--api-key", API_KEY], &[]).await;
    w.mock
        .create_workspace("a", &[KEY], serde_json::Value::Null)
        .await;
    let accounts = w.accounts();
    let reason_is = |reason: &'static str| {
        move |v: &serde_json::Value| {
            v["status"]["conditions"].as_array().is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["reason"] == reason && c["status"] == "True")
            })
        }
    };

    // Verified → Current.
    w.account("good", KEY, json!({})).await;
    w.wait_account(&accounts, "good", "Ready", |v| account_ready(v).0 == "True")
        .await;
    assert_eq!(
        w.kstatus_of_kind("oneinboxaccount", "good"),
        ("Current".to_string(), 0)
    );

    // A key Secret that does not exist → Stalled → Failed.
    let body = json!({
        "apiVersion": "oneinbox.ai/v1alpha1", "kind": "OneInboxAccount",
        "metadata": {"name": "nokey"}, "spec": {"apiKeySecretRef": {"name": "never-created"}},
    });
    accounts
        .patch(
            "nokey",
            &kube::api::PatchParams::apply("e2e").force(),
            &kube::api::Patch::Apply(&body),
        )
        .await
        .expect("apply account");
    w.wait_account(
        &accounts,
        "nokey",
        "Stalled SecretNotFound",
        reason_is("SecretNotFound"),
    )
    .await;
    assert_eq!(w.kstatus_of_kind("oneinboxaccount", "nokey").0, "Failed");

    // A key OneInbox refuses → Stalled → Failed.
    w.account("refused", "oi_sk_no_such_workspace_key", json!({}))
        .await;
    w.wait_account(
        &accounts,
        "refused",
        "Stalled APIKeyRejected",
        reason_is("APIKeyRejected"),
    )
    .await;
    assert_eq!(w.kstatus_of_kind("oneinboxaccount", "refused").0, "Failed");

    // observedGeneration lagging (operator stopped, spec changed) → InProgress.
    w.operator.kill();
    w.account("good", KEY, json!({"budget": {"requestsPerSecond": 5}}))
        .await;
    assert_eq!(w.kstatus_of_kind("oneinboxaccount", "good").0, "InProgress");
    w.operator.spawn();
    w.wait_account(&accounts, "good", "Ready at generation 2", |v| {
        account_ready(v).0 == "True" && v["status"]["observedGeneration"] == 2
    })
    .await;
    assert_eq!(w.kstatus_of_kind("oneinboxaccount", "good").0, "Current");

    // Deleting while a PhoneNumber uses it → Terminating, until the PhoneNumber is gone.
    w.apply(
        "user",
        with(credential_spec(&number()), account_ref("good")),
    )
    .await;
    w.wait_ready("user").await;
    accounts
        .delete("good", &Default::default())
        .await
        .expect("delete account");
    w.wait_account(
        &accounts,
        "good",
        "in use while deleting",
        reason_is("InUse"),
    )
    .await;
    assert_eq!(
        w.kstatus_of_kind("oneinboxaccount", "good").0,
        "Terminating"
    );
    w.delete("user").await;
    w.wait_gone("user", Duration::from_secs(20)).await;
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
    // The account kinds document their specs too.
    let out = kubectl_ok(&["explain", "clusteroneinboxaccount.spec"]);
    for field in [
        "apiKeySecretRef",
        "apiUrl",
        "caBundleSecretRef",
        "budget",
        "allowedNamespaces",
    ] {
        assert!(out.contains(field), "{field} missing:\n{out}");
    }
    let out = kubectl_ok(&["explain", "oneinboxaccount.spec.budget"]);
    for field in ["requestsPerSecond", "burst", "maxInFlight"] {
        assert!(out.contains(field), "{field} missing:\n{out}");
    }
}
