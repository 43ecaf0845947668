//! The paths off the first tested road: adoption, a number registered elsewhere, a rejected
//! key, an id held by another namespace, uuid spelling, a rejected update, a Secret without its
//! key, and what status says while a deletion is under way. Each asserts counts and states.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;

use crate::harness::*;

/// Warning events of `reason` in the namespace.
async fn count_events(w: &World, reason: &str) -> usize {
    w.events().await.iter().filter(|(r, _)| r == reason).count()
}

#[tokio::test]
async fn an_adopted_registration_gets_the_finalizer_and_is_deregistered_on_delete() {
    let w = World::start("adopt").await;
    let num = number();
    let id = w.mock.register_outside(&num, None).await;
    let obj = json!({
        "apiVersion": "oneinbox.ai/v1alpha1", "kind": "PhoneNumber",
        "metadata": {"name": "adopted", "annotations": {"oneinbox.ai/phone-number-id": id}},
        "spec": credential_spec(&num)
    });
    w.apply_full(obj).await.expect("apply");
    let pn = w.wait_ready("adopted").await;
    assert_eq!(
        pn.status.as_ref().and_then(|s| s.phone_number_id.clone()),
        Some(id.clone())
    );
    assert!(
        pn.finalizers()
            .iter()
            .any(|f| f == "oneinbox.ai/deregister"),
        "{:?}",
        pn.metadata.finalizers
    );
    assert_eq!(w.mock.count(POST).await, 1, "only the outside registration");
    assert_eq!(count_events(&w, "Adopted").await, 1);

    w.delete("adopted").await;
    w.wait_gone("adopted", Duration::from_secs(20)).await;
    assert!(w.mock.registrations().await.is_empty());
    assert_eq!(w.mock.count(DELETE).await, 1);
}

#[tokio::test]
async fn a_number_registered_elsewhere_is_stalled_once_and_not_posted_again_until_asked() {
    let w = World::start("conflict409").await;
    let num = number();
    w.mock.register_outside(&num, None).await;
    w.apply("claim", credential_spec(&num)).await;
    let pn = w.wait_reason("claim", "Stalled", "AlreadyRegistered").await;
    let rv = pn.metadata.resource_version.clone();
    // A window in which a hot loop would post hundreds of times.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(w.mock.count(POST).await, 2, "the outside POST and one 409");
    assert_eq!(count_events(&w, "AlreadyRegistered").await, 1);
    let now = w.pns.get("claim").await.expect("get");
    assert_eq!(now.metadata.resource_version, rv, "no write while stalled");

    // Reconcile-now lifts the guard: exactly one more attempt, still the same answer.
    w.annotate("claim", "oneinbox.ai/reconcile-requested-at", Some("t1"))
        .await;
    w.wait_for(
        "claim",
        "the request handled",
        Duration::from_secs(20),
        |p| {
            p.status
                .as_ref()
                .and_then(|s| s.last_handled_reconcile_at.as_deref())
                == Some("t1")
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(w.mock.count(POST).await, 3);
}

#[tokio::test]
async fn a_number_freed_outside_is_registered_after_one_look_up_and_no_blind_post() {
    // One look-up per poll interval while stalled (3 s here).
    let w = World::start_with(
        "freed409",
        &[],
        &["--poll-interval", "3s", "--min-poll-interval", "1s"],
    )
    .await;
    let num = number();
    let outside = w.mock.register_outside(&num, None).await;
    w.apply("claim", credential_spec(&num)).await;
    w.wait_reason("claim", "Stalled", "AlreadyRegistered").await;
    tokio::time::sleep(Duration::from_secs(7)).await;
    // Looked up meanwhile (a GET by number), never posted blindly.
    assert_eq!(w.mock.count(POST).await, 2, "the outside POST and one 409");
    assert!(w.mock.count(LIST).await >= 1, "the number was looked up");

    // The outside registration goes: the next look-up finds the number free, one POST.
    let status = reqwest::Client::new()
        .delete(format!("{}/v1/phone-numbers/{outside}", w.mock.url))
        .bearer_auth(API_KEY)
        .send()
        .await
        .expect("direct DELETE")
        .status();
    assert!(status.is_success(), "{status}");
    let pn = w.wait_ready("claim").await;
    assert_eq!(w.mock.count(POST).await, 3, "exactly one more POST");
    let regs = assert_only_registration_is(&w.mock, &pn).await;
    assert_ne!(regs[0]["id"].as_str(), Some(outside.as_str()));
    assert_eq!(count_events(&w, "AlreadyRegistered").await, 1);
}

#[tokio::test]
async fn a_rejected_key_is_retried_and_a_rotated_key_file_is_used_without_a_restart() {
    const GOOD: &str = "oi_sk_rotated_good_key_71ab";
    let dir = tempfile::tempdir().expect("tempdir");
    let key_file = dir.path().join("api-key");
    std::fs::write(&key_file, "oi_sk_revoked_key_0000\n").expect("key file");
    let key_path = key_file.to_str().expect("path").to_string();
    let w = World::start_with(
        "keyrotate",
        &["--api-key", GOOD],
        &["--api-key-file", &key_path],
    )
    .await;
    w.apply("k", credential_spec(&number())).await;
    let pn = w.wait_reason("k", "Stalled", "APIKeyRejected").await;
    let msg = &pn.condition("Stalled").expect("stalled").message;
    assert!(
        msg.contains("401") && !msg.contains("Fix the spec"),
        "{msg}"
    );
    assert_eq!(
        pn.condition("Ready").expect("ready").reason,
        "APIKeyRejected"
    );
    let before = w.mock.count(POST).await;
    assert!(before >= 1, "tried at least once");

    // The mounted Secret is rotated: the next retry reads the file again and succeeds.
    std::fs::write(&key_file, format!("{GOOD}\n")).expect("rotate");
    let pn = w.wait_ready("k").await;
    assert!(pn.condition("Stalled").is_none());
    assert_eq!(w.mock.registrations().await.len(), 1);
    w.assert_no_secrets(&[GOOD, "oi_sk_revoked_key_0000"]).await;
}

#[tokio::test]
async fn an_id_held_by_another_object_is_never_adopted_patched_or_deregistered() {
    let w = World::start("idowner").await;
    let num = number();
    w.apply("owner", credential_spec(&num)).await;
    let owner = w.wait_ready("owner").await;
    let id = owner
        .status
        .as_ref()
        .and_then(|s| s.phone_number_id.clone())
        .expect("id");

    // A newcomer names the owner's id, with another agent.
    let mut spec = credential_spec(&num);
    spec["agentId"] = json!(AGENT2);
    let obj = json!({
        "apiVersion": "oneinbox.ai/v1alpha1", "kind": "PhoneNumber",
        "metadata": {"name": "newcomer", "annotations": {"oneinbox.ai/phone-number-id": id}},
        "spec": spec
    });
    w.apply_full(obj).await.expect("apply");
    let pn = w
        .wait_reason("newcomer", "Stalled", "DuplicatePhoneNumber")
        .await;
    let msg = &pn.condition("Stalled").expect("stalled").message;
    assert!(msg.contains("owner") && msg.contains(&id), "{msg}");
    assert!(pn.finalizers().is_empty());
    // Events say what was done, and the duplicate claim names the owner as the related object.
    // The Warning follows the status write that stalls the object: wait for it to be listed.
    let api: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(w.client.clone(), &w.ns);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let events = loop {
        let items = api.list(&Default::default()).await.expect("events").items;
        let has = |r: &str| items.iter().any(|e| e.reason.as_deref() == Some(r));
        if (has("Registered") && has("DuplicatePhoneNumber"))
            || std::time::Instant::now() > deadline
        {
            break items;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let of = |reason: &str| {
        events
            .iter()
            .find(|e| e.reason.as_deref() == Some(reason))
            .unwrap_or_else(|| panic!("no {reason} event"))
    };
    assert_eq!(of("Registered").action.as_deref(), Some("Register"));
    let claim = of("DuplicatePhoneNumber");
    assert_eq!(claim.action.as_deref(), Some("Claim"));
    let related = claim.related.as_ref().expect("related");
    assert_eq!(
        (related.name.as_deref(), related.kind.as_deref()),
        (Some("owner"), Some("PhoneNumber"))
    );
    assert_eq!(related.uid, owner.metadata.uid);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(w.mock.count(PATCH).await, 0);
    assert_eq!(
        w.mock.count(GET).await,
        0,
        "the newcomer never looked at it"
    );

    w.delete("newcomer").await;
    w.wait_gone("newcomer", Duration::from_secs(10)).await;
    assert_eq!(w.mock.count(DELETE).await, 0);
    let regs = assert_only_registration_is(&w.mock, &owner).await;
    assert_eq!(regs[0]["agent_id"], json!(AGENT));
}

#[tokio::test]
async fn an_upper_case_agent_id_is_not_patched_at_every_drift_check() {
    let w = World::start_with(
        "uuidcase",
        &[],
        &["--poll-interval", "1s", "--min-poll-interval", "1s"],
    )
    .await;
    let mut spec = credential_spec(&number());
    spec["agentId"] = json!(AGENT.to_ascii_uppercase());
    w.apply("upper", spec).await;
    w.wait_ready("upper").await;
    let gets = w.mock.count(GET).await;
    // Several drift checks.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(w.mock.count(GET).await >= gets + 2, "drift checks ran");
    assert_eq!(w.mock.count(PATCH).await, 0);
    assert_eq!(count_events(&w, "DriftCorrected").await, 0);
}

#[tokio::test]
async fn a_rejected_update_is_sent_once() {
    let w = World::start("patchrejected").await;
    w.apply("p", credential_spec(&number())).await;
    w.wait_ready("p").await;
    // From now on the workspace knows only AGENT: AGENT2 is `agent_id not found`.
    w.mock
        .send(
            reqwest::Method::PUT,
            "/_mock/agents",
            json!({"ids": [AGENT]}),
        )
        .await;
    w.merge_spec("p", json!({"agentId": AGENT2})).await;
    let pn = w.wait_reason("p", "Stalled", "UpdateRejected").await;
    assert!(
        pn.condition("Stalled")
            .expect("stalled")
            .message
            .contains("agent_id not found")
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        w.mock.count(PATCH).await,
        1,
        "no second PATCH after the rejection"
    );
    // Still registered: a rejected update never loses the number.
    assert_eq!(w.mock.registrations().await.len(), 1);
}

#[tokio::test]
async fn a_secret_without_its_key_gets_a_reason_and_fix_that_fit() {
    let w = World::start("secretkey").await;
    let secrets: Api<Secret> = Api::namespaced(w.client.clone(), &w.ns);
    let s: Secret = serde_json::from_value(
        json!({"metadata": {"name": "sip"}, "stringData": {"pass": "hunter2-not-this-key"}}),
    )
    .expect("secret");
    secrets
        .create(&PostParams::default(), &s)
        .await
        .expect("create secret");
    w.apply("s", sip_spec(&number(), "sip")).await;
    let pn = w.wait_reason("s", "Reconciling", "SecretKeyInvalid").await;
    let msg = &pn.condition("Ready").expect("ready").message;
    assert!(msg.contains("has no key \"password\""), "{msg}");
    assert!(
        msg.contains("patch secret sip") && !msg.contains("create secret"),
        "{msg}"
    );
    // The other way out: the reference may name the wrong key (names only, never a value).
    assert!(
        msg.contains("or set spec.providerConfig.authPasswordSecretRef.key to the key that holds it (it has pass)"),
        "{msg}"
    );
    // The fix the message names works (the Secret watch brings the object back).
    w.secret("sip", "hunter2-now-right").await;
    w.wait_ready("s").await;
    w.assert_no_secrets(&["hunter2-not-this-key", "hunter2-now-right"])
        .await;
}

#[tokio::test]
async fn ready_is_false_deleting_while_the_delete_is_in_flight() {
    let w = World::start("deleting").await;
    w.apply("d", credential_spec(&number())).await;
    w.wait_ready("d").await;
    // The DELETE answers after 2 s (within the operator's API timeout).
    w.mock
        .fault(json!({"endpoint": DELETE, "kind": "delay", "delay_ms": 2000, "count": 1}))
        .await;
    w.delete("d").await;
    let pn = w
        .wait_for("d", "Ready=False Deleting", Duration::from_secs(10), |p| {
            p.condition("Ready")
                .is_some_and(|c| c.status == "False" && c.reason == "Deleting")
        })
        .await;
    assert!(pn.metadata.deletion_timestamp.is_some());
    assert_eq!(
        w.mock.registrations().await.len(),
        1,
        "the DELETE is still in flight"
    );
    w.wait_gone("d", Duration::from_secs(20)).await;
    assert!(w.mock.registrations().await.is_empty());
}

#[tokio::test]
async fn a_namespace_deleted_with_its_tenant_key_does_not_block() {
    let w = World::start("nsdelete").await;
    let secrets: Api<Secret> = Api::namespaced(w.client.clone(), &w.ns);
    let s: Secret = serde_json::from_value(
        json!({"metadata": {"name": "tenant-key"}, "stringData": {"apiKey": API_KEY}}),
    )
    .expect("secret");
    secrets
        .create(&PostParams::default(), &s)
        .await
        .expect("create secret");
    w.accounts()
        .patch(
            "tenant",
            &kube::api::PatchParams::apply("e2e").force(),
            &kube::api::Patch::Apply(&json!({
                "apiVersion": "oneinbox.ai/v1alpha1", "kind": "OneInboxAccount",
                "metadata": {"name": "tenant"}, "spec": {"apiKeySecretRef": {"name": "tenant-key"}},
            })),
        )
        .await
        .expect("apply OneInboxAccount");
    for name in ["n1", "n2", "n3"] {
        w.apply(
            name,
            with(credential_spec(&number()), account_ref("tenant")),
        )
        .await;
    }
    for name in ["n1", "n2", "n3"] {
        w.wait_ready(name).await;
    }
    // The namespace controller deletes Secrets and PhoneNumbers in whatever order it likes.
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(w.client.clone());
    namespaces
        .delete(&w.ns, &DeleteParams::default())
        .await
        .expect("delete namespace");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while namespaces.get_opt(&w.ns).await.expect("get ns").is_some() {
        assert!(
            std::time::Instant::now() < deadline,
            "namespace still there: {:?}",
            w.pns.list(&Default::default()).await.map(|l| l
                .items
                .iter()
                .map(|p| p.status.clone())
                .collect::<Vec<_>>())
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(w.mock.registrations().await.is_empty());
}

#[tokio::test]
async fn a_404_is_read_by_endpoint_and_code_not_by_its_wording() {
    let w = World::start_with(
        "notfound",
        &[],
        &["--poll-interval", "1s", "--min-poll-interval", "1s"],
    )
    .await;
    w.apply("n", credential_spec(&number())).await;
    let first = w.wait_ready("n").await;
    let old = first.status.and_then(|s| s.phone_number_id).expect("id");
    // The registration is gone, and the API says so in other words than today.
    let gone = reqwest::Client::new()
        .delete(format!("{}/v1/phone-numbers/{old}", w.mock.url))
        .bearer_auth(API_KEY)
        .send()
        .await
        .expect("direct DELETE");
    assert_eq!(gone.status().as_u16(), 204);
    w.mock
        .fault(json!({"endpoint": GET, "kind": "status", "status": 404, "detail": "No such registration", "count": 1}))
        .await;
    let pn = w
        .wait_for("n", "registered again", Duration::from_secs(20), |p| {
            is_ready(p)
                && p.status
                    .as_ref()
                    .and_then(|s| s.phone_number_id.as_deref())
                    .is_some_and(|id| id != old)
        })
        .await;
    assert_only_registration_is(&w.mock, &pn).await;
    assert_eq!(count_events(&w, "RegistrationLost").await, 1);
}

#[tokio::test]
async fn an_api_error_echoing_the_password_is_scrubbed_from_status_and_events() {
    let w = World::start("scrub").await;
    let password = "hunter2-echoed-back-9f3";
    w.secret("sip", password).await;
    // OneInbox answers with a detail that echoes the submitted password.
    w.mock
        .fault(json!({"endpoint": POST, "kind": "status", "status": 400,
                      "detail": format!("trunk refused credentials oneinbox:{password}"), "count": 1}))
        .await;
    w.apply("s", sip_spec(&number(), "sip")).await;
    let pn = w.wait_reason("s", "Stalled", "RegistrationRejected").await;
    let msg = &pn.condition("Stalled").expect("stalled").message;
    assert!(
        msg.contains("trunk refused credentials oneinbox:[redacted]"),
        "{msg}"
    );
    w.assert_no_secrets(&[password]).await;
}

#[tokio::test]
async fn a_new_credentials_hash_key_is_a_new_baseline_not_a_replacement() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key_file = dir.path().join("hash-key");
    std::fs::write(&key_file, "first hash key").expect("key");
    let key_path = key_file.to_str().expect("path").to_string();
    let mut w =
        World::start_with("hashkey", &[], &["--credentials-hash-key-file", &key_path]).await;
    w.secret("sip", "pw-stays-the-same").await;
    w.apply(
        "h",
        with(
            sip_spec(&number(), "sip"),
            json!({"replacementPolicy": "Replace"}),
        ),
    )
    .await;
    let pn = w.wait_ready("h").await;
    let hash = pn
        .status
        .as_ref()
        .and_then(|s| s.credentials_hash.clone())
        .expect("hash");
    let id = pn.status.and_then(|s| s.phone_number_id);

    // Restarted with another key: every hash differs, and none of it is a credentials change.
    w.operator.kill();
    std::fs::write(&key_file, "second hash key").expect("key");
    w.operator.spawn();
    let pn = w
        .wait_for("h", "a new baseline", Duration::from_secs(20), |p| {
            p.status
                .as_ref()
                .and_then(|s| s.credentials_hash.as_deref())
                .is_some_and(|h| h != hash)
        })
        .await;
    assert!(is_ready(&pn));
    assert_eq!(
        pn.status.and_then(|s| s.phone_number_id),
        id,
        "not re-registered"
    );
    assert_eq!(w.mock.count(POST).await, 1);
    assert_eq!(w.mock.count(DELETE).await, 0);
    assert_eq!(count_events(&w, "Replacing").await, 0);
}

#[tokio::test]
async fn an_invalid_poll_interval_gets_one_warning_naming_the_value() {
    let w = World::start("pollwarn").await;
    let obj = json!({
        "apiVersion": "oneinbox.ai/v1alpha1", "kind": "PhoneNumber",
        "metadata": {"name": "p", "annotations": {"oneinbox.ai/poll-interval": "often"}},
        "spec": credential_spec(&number())
    });
    w.apply_full(obj).await.expect("apply");
    w.wait_ready("p").await;
    // Reconciles that change nothing do not repeat it.
    w.annotate("p", "oneinbox.ai/reconcile-requested-at", Some("again"))
        .await;
    w.wait_for("p", "the request handled", Duration::from_secs(20), |p| {
        p.status
            .as_ref()
            .and_then(|s| s.last_handled_reconcile_at.as_deref())
            == Some("again")
    })
    .await;
    let warnings: Vec<String> = w
        .events()
        .await
        .into_iter()
        .filter(|(r, _)| r == "InvalidPollInterval")
        .map(|(_, n)| n)
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("\"often\""), "{warnings:?}");
}
