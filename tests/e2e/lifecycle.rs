//! Apply → Ready, delete → deregistered, Orphan, and the cost of a steady object.

use std::time::Duration;

use kube::ResourceExt;
use serde_json::json;

use crate::harness::*;

#[tokio::test]
async fn apply_registers_once_and_reports_ready() {
    let w = World::start("apply").await;
    let pw = "pw-apply-7f3a91c2";
    w.secret("twilio-sip", pw).await;
    let num = number();
    w.apply("sales", sip_spec(&num, "twilio-sip")).await;

    let pn = w
        .wait_for("sales", "Ready", Duration::from_secs(30), |p| {
            is_ready(p) && synced(p)
        })
        .await;
    let st = pn.status.clone().expect("status");
    let id = st.phone_number_id.clone().expect("phoneNumberId");
    assert_eq!(st.state.as_deref(), Some("active"));
    assert!(
        st.outbound_trunk_id
            .as_deref()
            .is_some_and(|t| t.starts_with("ST_")),
        "{st:?}"
    );
    assert!(
        st.inbound_trunk_id
            .as_deref()
            .is_some_and(|t| t.starts_with("ST_")),
        "{st:?}"
    );
    assert!(
        st.dispatch_rule_id
            .as_deref()
            .is_some_and(|t| t.starts_with("SDR_")),
        "{st:?}"
    );
    assert!(st.created_at.is_some() && st.updated_at.is_some());
    assert!(pn.pending_create().is_none(), "the attempt is settled");
    assert!(
        st.credentials_hash
            .as_deref()
            .is_some_and(|h| h.starts_with("hmac-sha256:"))
    );
    // The status alone holds the id: a create writes no id annotation.
    assert_eq!(pn.annotations().get("oneinbox.ai/phone-number-id"), None);
    assert!(
        pn.finalizers()
            .contains(&"oneinbox.ai/deregister".to_string())
    );
    assert!(pn.condition("Reconciling").is_none() && pn.condition("Stalled").is_none());

    // Exactly one registration, with the spec's fields and the Secret's password.
    let regs = w.mock.registrations().await;
    assert_eq!(regs.len(), 1, "{regs:?}");
    let r = &regs[0];
    assert_eq!(r["id"], json!(id));
    assert_eq!(r["phone_number"], json!(num));
    assert_eq!(r["provider"], json!("twilio"));
    assert_eq!(r["agent_id"], json!(AGENT));
    assert_eq!(r["friendly_name"], json!("Sales line"));
    assert_eq!(r["trunk_address"], json!("example.pstn.twilio.com"));
    assert_eq!(r["auth_username"], json!("oneinbox"));
    assert_eq!(r["auth_password_set"], json!(true));
    assert_eq!(r["inbound_routing"]["fallback"]["agent_id"], json!(AGENT));
    assert_eq!(w.mock.count(POST).await, 1);

    // What users and GitOps tools see.
    kubectl_ok(&[
        "-n",
        &w.ns,
        "wait",
        "--for=condition=Ready",
        "phonenumber/sales",
        "--timeout=10s",
    ]);
    let (ks, code) = w.kstatus("sales");
    assert_eq!((ks.as_str(), code), ("Current", 0));
    let wide = kubectl_ok(&["-n", &w.ns, "get", "pn", "sales", "-o", "wide"]);
    assert!(wide.contains("Available") && wide.contains(&id), "{wide}");
    let events = w.events().await;
    assert!(events.iter().any(|(r, _)| r == "Registered"), "{events:?}");
    w.assert_no_secrets(&[pw]).await;
}

#[tokio::test]
async fn delete_deregisters_and_orphan_keeps_the_registration() {
    let w = World::start("delete").await;
    w.apply("gone", credential_spec(&number())).await;
    let kept_num = number();
    w.apply(
        "kept",
        with(
            credential_spec(&kept_num),
            json!({"deletionPolicy": "Orphan"}),
        ),
    )
    .await;
    w.wait_ready("gone").await;
    let kept = w.wait_ready("kept").await;
    let kept_id = kept.status.and_then(|s| s.phone_number_id).expect("id");
    assert_eq!(w.mock.registrations().await.len(), 2);

    w.delete("gone").await;
    w.wait_gone("gone", Duration::from_secs(20)).await;
    w.delete("kept").await;
    w.wait_gone("kept", Duration::from_secs(20)).await;

    let regs = w.mock.registrations().await;
    assert_eq!(
        regs.len(),
        1,
        "only the orphaned registration stays: {regs:?}"
    );
    assert_eq!(regs[0]["id"], json!(kept_id));
    assert_eq!(regs[0]["phone_number"], json!(kept_num));
    assert_eq!(
        w.mock.count(DELETE).await,
        1,
        "one DELETE, for the Delete-policy object only"
    );
    let events = w.events().await;
    assert!(
        events.iter().any(|(r, _)| r == "Deregistered"),
        "{events:?}"
    );
    assert!(events.iter().any(|(r, _)| r == "Orphaned"), "{events:?}");
}

#[tokio::test]
async fn an_object_that_never_reached_the_api_deletes_at_once() {
    let w = World::start("nofinalizer").await;
    // The Secret never exists: nothing is registered, so no finalizer is added.
    w.apply("waiting", sip_spec(&number(), "missing")).await;
    let pn = w.wait_reason("waiting", "Ready", "SecretNotFound").await;
    assert!(pn.finalizers().is_empty(), "{:?}", pn.finalizers());
    w.delete("waiting").await;
    w.wait_gone("waiting", Duration::from_secs(10)).await;
    assert_eq!(w.mock.total_calls().await, 0);
}

#[tokio::test]
async fn a_steady_ready_object_costs_no_writes_between_polls() {
    // Poll every 4s (floor lowered for the test), so a 9s window holds about two polls.
    let w = World::start_with(
        "steady",
        &[],
        &["--poll-interval", "4s", "--min-poll-interval", "1s"],
    )
    .await;
    w.apply("steady", credential_spec(&number())).await;
    let pn = w.wait_ready("steady").await;
    // Let the operator see its own last writes (annotation, status) first.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = w.pns.get("steady").await.expect("get");
    assert_eq!(before.status, pn.status);
    let calls_before = w.mock.calls().await;

    tokio::time::sleep(Duration::from_secs(9)).await;

    let after = w.pns.get("steady").await.expect("get");
    let calls_after = w.mock.calls().await;
    assert_eq!(
        before.resource_version(),
        after.resource_version(),
        "the object was written while steady"
    );
    for write in [POST, PATCH, DELETE] {
        assert_eq!(
            calls_before.get(write),
            calls_after.get(write),
            "{write} while steady"
        );
    }
    let gets = calls_after.get(GET).and_then(|v| v.as_u64()).unwrap_or(0)
        - calls_before.get(GET).and_then(|v| v.as_u64()).unwrap_or(0);
    // 9s / (4s ±20%) → 2 polls, at most 3; never a hot loop.
    assert!((1..=3).contains(&gets), "drift GETs in 9s: {gets}");
    assert_eq!(calls_before.get(LIST), calls_after.get(LIST));
}
