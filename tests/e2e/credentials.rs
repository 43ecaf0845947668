//! Credentials OneInbox cannot PATCH (rotation, replacementPolicy) and accounts' API keys.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams};
use serde_json::json;

use crate::harness::*;

#[tokio::test]
async fn rotated_password_is_reported_then_replaced_on_request() {
    let w = World::start("rotate").await;
    let (old_pw, new_pw) = ("pw-rotate-old-81f2", "pw-rotate-new-c0d9");
    w.secret("sip", old_pw).await;
    w.apply("r", sip_spec(&number(), "sip")).await;
    let pn = w.wait_ready("r").await;
    let st = pn.status.clone().expect("status");
    let (old_id, old_hash) = (
        st.phone_number_id.expect("id"),
        st.credentials_hash.expect("hash"),
    );
    let calls = w.mock.calls().await;

    // Rotation is seen within seconds (Secret watch), not at the next poll (10 min).
    w.secret("sip", new_pw).await;
    let pn = w.wait_reason("r", "Stalled", "ReplacementRequired").await;
    assert_eq!(
        pn.condition("Ready").map(|c| c.status.as_str()),
        Some("True"),
        "the number keeps working"
    );
    assert!(
        pn.condition("Stalled")
            .expect("stalled")
            .message
            .contains("replacementPolicy: Replace")
    );
    assert_eq!(
        pn.status.as_ref().and_then(|s| s.credentials_hash.clone()),
        Some(old_hash.clone())
    );
    let after = w.mock.calls().await;
    for k in [POST, DELETE, PATCH] {
        assert_eq!(calls.get(k), after.get(k), "{k} under Manual");
    }
    let events = w.events().await;
    assert!(
        events.iter().any(|(r, _)| r == "ReplacementRequired"),
        "{events:?}"
    );

    w.merge_spec("r", json!({"replacementPolicy": "Replace"}))
        .await;
    let pn = w
        .wait_for("r", "re-registration", Duration::from_secs(20), |p| {
            is_ready(p)
                && synced(p)
                && p.condition("Stalled").is_none()
                && p.status
                    .as_ref()
                    .and_then(|s| s.phone_number_id.as_deref())
                    .is_some_and(|id| id != old_id)
        })
        .await;
    let st = pn.status.clone().expect("status");
    assert_ne!(st.credentials_hash.as_deref(), Some(old_hash.as_str()));
    assert_only_registration_is(&w.mock, &pn).await;
    let events = w.events().await;
    assert!(events.iter().any(|(r, _)| r == "Replacing"), "{events:?}");
    w.assert_no_secrets(&[old_pw, new_pw]).await;
}

const TENANT_KEY: &str = "oi_sk_tenant_workspace_b_93e1";

/// The tenant's key as Secret `tenant-key` (key `apiKey`, the default).
async fn create_tenant_secret(secrets: &Api<Secret>) {
    let s: Secret = serde_json::from_value(
        json!({"metadata": {"name": "tenant-key"}, "stringData": {"apiKey": TENANT_KEY}}),
    )
    .expect("secret");
    secrets
        .create(&Default::default(), &s)
        .await
        .expect("create tenant Secret");
}

/// The tenant's OneInboxAccount `tenant` (key Secret `tenant-key`, created by the caller).
async fn create_tenant_account(w: &World) {
    let body = json!({
        "apiVersion": "oneinbox.ai/v1alpha1", "kind": "OneInboxAccount",
        "metadata": {"name": "tenant"}, "spec": {"apiKeySecretRef": {"name": "tenant-key"}},
    });
    w.accounts()
        .patch(
            "tenant",
            &kube::api::PatchParams::apply("e2e").force(),
            &kube::api::Patch::Apply(&body),
        )
        .await
        .expect("apply OneInboxAccount");
}

/// PhoneNumber `name` using the tenant's account, Ready.
async fn apply_tenant_object(w: &World, name: &str) {
    w.apply(
        name,
        with(credential_spec(&number()), account_ref("tenant")),
    )
    .await;
    w.wait_ready(name).await;
}

#[tokio::test]
async fn tenant_api_key_is_used_and_deletion_needs_a_key_that_can_see_the_number() {
    // The mock accepts only the tenant's key: the operator-wide key gets 401.
    let mut w = World::start_with("tenant", &["--api-key", TENANT_KEY], &[]).await;
    let secrets: Api<Secret> = Api::namespaced(w.client.clone(), &w.ns);
    create_tenant_secret(&secrets).await;
    create_tenant_account(&w).await;
    apply_tenant_object(&w, "t").await;
    // Without the tenant key the operator-wide key is refused: the key's fault, not the spec's.
    w.apply("no-tenant", credential_spec(&number())).await;
    let pn = w
        .wait_reason("no-tenant", "Stalled", "APIKeyRejected")
        .await;
    let msg = &pn.condition("Stalled").expect("stalled").message;
    assert!(
        msg.contains("401") && msg.contains("operator's API key"),
        "{msg}"
    );
    assert!(!msg.contains("Fix the spec"), "{msg}");

    // The tenant Secret goes first, then the object (as when the namespace is deleted): the
    // account says its key is gone, and the operator deregisters with the key it last read.
    secrets
        .delete("tenant-key", &DeleteParams::default())
        .await
        .expect("delete secret");
    let acct = w
        .wait_account(&w.accounts(), "tenant", "Ready=False SecretNotFound", |v| {
            account_ready(v) == ("False".to_string(), "SecretNotFound".to_string())
        })
        .await;
    let msg = acct["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Stalled"))
        .map(|c| c["message"].as_str().unwrap_or_default().to_owned())
        .unwrap_or_default();
    assert!(
        msg.contains("tenant-key") && msg.contains("last key"),
        "{msg}"
    );
    w.delete("t").await;
    w.wait_gone("t", Duration::from_secs(20)).await;
    assert!(w.mock.registrations().await.is_empty());

    // After a restart the operator never read the key: the operator-wide key's 404 proves
    // nothing, so the deletion is blocked with the fix named until the Secret is back.
    create_tenant_secret(&secrets).await;
    apply_tenant_object(&w, "t2").await;
    w.operator.kill();
    secrets
        .delete("tenant-key", &DeleteParams::default())
        .await
        .expect("delete secret");
    w.operator.spawn();
    w.delete("t2").await;
    let pn = w.wait_reason("t2", "Stalled", "DeletionBlocked").await;
    let msg = &pn.condition("Stalled").expect("stalled").message;
    assert!(
        msg.contains("tenant-key") && msg.contains("OneInboxAccount") && msg.contains("Orphan"),
        "{msg}"
    );
    assert_eq!(w.mock.registrations().await.len(), 1);

    create_tenant_secret(&secrets).await;
    w.wait_gone("t2", Duration::from_secs(20)).await;
    assert!(w.mock.registrations().await.is_empty());
    w.assert_no_secrets(&[TENANT_KEY]).await;
}

#[tokio::test]
async fn deletion_falls_back_to_the_operator_key_when_it_can_do_it() {
    // Both keys reach the same workspace.
    let w = World::start_with(
        "tenantfallback",
        &["--api-key", TENANT_KEY, "--api-key", API_KEY],
        &[],
    )
    .await;
    let secrets: Api<Secret> = Api::namespaced(w.client.clone(), &w.ns);
    create_tenant_secret(&secrets).await;
    create_tenant_account(&w).await;
    apply_tenant_object(&w, "t").await;
    secrets
        .delete("tenant-key", &DeleteParams::default())
        .await
        .expect("delete secret");
    w.delete("t").await;
    w.wait_gone("t", Duration::from_secs(20)).await;
    assert!(w.mock.registrations().await.is_empty());
}
