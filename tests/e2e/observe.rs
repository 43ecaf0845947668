//! `managementPolicy: Observe`: the registration is mirrored into status with no OneInbox
//! write, drift is a condition naming the fields, deletion leaves the registration, and the
//! switches to Full (a takeover: finalizer, one PATCH only where the spec differs) and back
//! (writes stop, the finalizer goes). Each test asserts the mock's calls by endpoint.

use std::time::Duration;

use kube::ResourceExt;
use serde_json::{Value, json};

use crate::harness::*;

/// An Observe spec for `number` (no credentials), as the outside registration has it.
fn observe_spec(number: &str) -> Value {
    json!({"phoneNumber": number, "provider": "telnyx", "agentId": AGENT,
           "managementPolicy": "Observe"})
}

fn has_finalizer(p: &kube::api::ObjectMeta) -> bool {
    p.finalizers
        .as_ref()
        .is_some_and(|f| f.iter().any(|f| f == "oneinbox.ai/deregister"))
}

async fn writes(mock: &Mock) -> (u64, u64, u64) {
    (
        mock.count(POST).await,
        mock.count(PATCH).await,
        mock.count(DELETE).await,
    )
}

async fn count_events(w: &World, reason: &str) -> usize {
    w.events().await.iter().filter(|(r, _)| r == reason).count()
}

async fn wait_observed(w: &World, name: &str) -> kube::api::ObjectMeta {
    let pn = w
        .wait_for(name, "Ready=True Observed", Duration::from_secs(30), |p| {
            synced(p)
                && p.condition("Ready")
                    .is_some_and(|c| c.status == "True" && c.reason == "Observed")
        })
        .await;
    pn.metadata
}

#[tokio::test]
async fn observe_mirrors_status_with_no_writes_and_deleting_leaves_the_registration() {
    let w = World::start("observe").await;
    let (by_id, by_number) = (number(), number());
    let id = w.mock.register_outside(&by_id, None).await;
    let id2 = w.mock.register_outside(&by_number, None).await;
    w.apply_full(json!({
        "metadata": {"name": "by-id", "annotations": {"oneinbox.ai/phone-number-id": id}},
        "spec": observe_spec(&by_id)
    }))
    .await
    .expect("apply");
    w.apply("by-number", observe_spec(&by_number)).await;

    for (name, want) in [("by-id", &id), ("by-number", &id2)] {
        let meta = wait_observed(&w, name).await;
        let pn = w.pns.get(name).await.expect("get");
        let status = pn.status.clone().expect("status");
        assert_eq!(status.phone_number_id.as_ref(), Some(want), "{name}");
        assert_eq!(status.state.as_deref(), Some("active"));
        assert!(status.outbound_trunk_id.is_some(), "{status:?}");
        assert!(status.created_at.is_some(), "{status:?}");
        assert!(pn.condition("Drifted").is_none(), "{:?}", status.conditions);
        assert_eq!(
            pn.annotations().get("oneinbox.ai/phone-number-id"),
            Some(want),
            "the id is recorded in the annotation"
        );
        assert!(!has_finalizer(&meta), "{name}: {:?}", meta.finalizers);
        assert_eq!(w.kstatus(name).0, "Current");
    }
    assert_eq!(
        writes(&w.mock).await,
        (2, 0, 0),
        "only the two outside POSTs"
    );
    assert_eq!(w.mock.count(LIST).await, 1, "one look-up by number");

    w.delete("by-id").await;
    w.delete("by-number").await;
    w.wait_gone("by-id", Duration::from_secs(20)).await;
    w.wait_gone("by-number", Duration::from_secs(20)).await;
    assert_eq!(
        w.mock.registrations().await.len(),
        2,
        "both still registered"
    );
    assert_eq!(writes(&w.mock).await, (2, 0, 0));
}

#[tokio::test]
async fn drift_is_a_condition_naming_the_fields_and_full_corrects_it_with_one_patch() {
    let w = World::start("observe-drift").await;
    let num = number();
    let id = w.mock.register_outside(&num, Some("Named outside")).await;
    let spec = with(
        observe_spec(&num),
        json!({"agentId": AGENT2, "friendlyName": "Sales line"}),
    );
    w.apply_full(json!({
        "metadata": {"name": "drifted", "annotations": {"oneinbox.ai/phone-number-id": id}},
        "spec": spec
    }))
    .await
    .expect("apply");
    let pn = w.wait_reason("drifted", "Drifted", "SpecDrift").await;
    let msg = pn.condition("Drifted").expect("Drifted").message.clone();
    assert!(
        msg.starts_with("The registration differs from the spec in agentId, friendlyName."),
        "{msg}"
    );
    assert!(
        !msg.contains("Named outside") && !msg.contains(AGENT2),
        "names only: {msg}"
    );
    assert!(is_ready(&pn), "Observe reports Ready while active");
    assert_eq!(w.kstatus("drifted").0, "Current");
    assert_eq!(writes(&w.mock).await, (1, 0, 0), "drift is not corrected");

    // Observe → Full: a deliberate takeover, and the drift corrected with one PATCH.
    w.merge_spec(
        "drifted",
        json!({"managementPolicy": "Full", "credentialId": CREDENTIAL}),
    )
    .await;
    let pn = w
        .wait_for(
            "drifted",
            "Ready=True Available",
            Duration::from_secs(30),
            |p| {
                synced(p)
                    && p.condition("Ready")
                        .is_some_and(|c| c.status == "True" && c.reason == "Available")
            },
        )
        .await;
    assert!(has_finalizer(&pn.metadata), "{:?}", pn.metadata.finalizers);
    assert!(pn.condition("Drifted").is_none());
    assert_eq!(writes(&w.mock).await, (1, 1, 0), "exactly one PATCH");
    let reg = &w.mock.registrations().await[0];
    assert_eq!(reg["agent_id"], json!(AGENT2));
    assert_eq!(reg["friendly_name"], json!("Sales line"));
    assert_eq!(count_events(&w, "Adopted").await, 1);
    // The takeover's PATCH is the adoption's, not a user's update or drift.
    assert_eq!(count_events(&w, "UpdatedOnAdoption").await, 1);
    assert_eq!(count_events(&w, "Updated").await, 0);
    assert_eq!(count_events(&w, "DriftCorrected").await, 0);
    w.assert_no_secrets(&[]).await;
}

#[tokio::test]
async fn observe_to_full_in_line_sends_no_patch_and_back_to_observe_stops_writes() {
    let w = World::start("observe-switch").await;
    let num = number();
    let id = w.mock.register_outside(&num, None).await;
    w.apply_full(json!({
        "metadata": {"name": "switch", "annotations": {"oneinbox.ai/phone-number-id": id}},
        "spec": observe_spec(&num)
    }))
    .await
    .expect("apply");
    wait_observed(&w, "switch").await;

    w.merge_spec(
        "switch",
        json!({"managementPolicy": "Full", "credentialId": CREDENTIAL}),
    )
    .await;
    let pn = w
        .wait_for(
            "switch",
            "Ready=True Available",
            Duration::from_secs(30),
            |p| {
                synced(p)
                    && p.condition("Ready")
                        .is_some_and(|c| c.reason == "Available")
            },
        )
        .await;
    assert!(has_finalizer(&pn.metadata));
    assert_eq!(writes(&w.mock).await, (1, 0, 0), "in line: no PATCH");
    assert_eq!(count_events(&w, "Adopted").await, 1);
    assert_eq!(count_events(&w, "Updated").await, 0);

    // Full → Observe: the finalizer goes, and a spec change is reported, not applied.
    w.merge_spec("switch", json!({"managementPolicy": "Observe"}))
        .await;
    let meta = wait_observed(&w, "switch").await;
    assert!(!has_finalizer(&meta), "{:?}", meta.finalizers);
    assert_eq!(count_events(&w, "ObserveOnly").await, 1);
    w.merge_spec("switch", json!({"agentId": AGENT2})).await;
    let pn = w.wait_reason("switch", "Drifted", "SpecDrift").await;
    assert!(synced(&pn));
    assert!(
        pn.condition("Drifted")
            .is_some_and(|c| c.message.contains("in agentId.")),
        "{:?}",
        pn.condition("Drifted")
    );
    w.delete("switch").await;
    w.wait_gone("switch", Duration::from_secs(20)).await;
    assert_eq!(
        writes(&w.mock).await,
        (1, 0, 0),
        "no write after the switch"
    );
    assert_eq!(w.mock.registrations().await.len(), 1);
    assert_eq!(w.mock.registrations().await[0]["agent_id"], json!(AGENT));
}

#[tokio::test]
async fn an_id_held_by_another_object_is_never_mirrored_in_observe() {
    let w = World::start("observe-owner").await;
    let num = number();
    w.apply("holder", credential_spec(&num)).await;
    let holder = w.wait_ready("holder").await;
    let id = holder
        .status
        .as_ref()
        .and_then(|s| s.phone_number_id.clone())
        .expect("id");
    w.apply_full(json!({
        "metadata": {"name": "newcomer", "annotations": {"oneinbox.ai/phone-number-id": id}},
        "spec": with(observe_spec(&num), json!({"agentId": AGENT2}))
    }))
    .await
    .expect("apply");
    let pn = w
        .wait_reason("newcomer", "Stalled", "DuplicatePhoneNumber")
        .await;
    assert!(
        pn.status
            .as_ref()
            .is_some_and(|s| s.phone_number_id.is_none()),
        "{:?}",
        pn.status
    );
    assert!(!has_finalizer(&pn.metadata));
    // A number held by another object is not looked up either.
    w.apply("by-number", observe_spec(&num)).await;
    w.wait_reason("by-number", "Stalled", "DuplicatePhoneNumber")
        .await;

    w.delete("newcomer").await;
    w.delete("by-number").await;
    w.wait_gone("newcomer", Duration::from_secs(20)).await;
    w.wait_gone("by-number", Duration::from_secs(20)).await;
    assert_eq!(writes(&w.mock).await, (1, 0, 0), "only the holder's POST");
    assert_eq!(w.mock.count(LIST).await, 0);
    let holder = w.wait_ready("holder").await;
    assert_only_registration_is(&w.mock, &holder).await;
}

#[tokio::test]
async fn credentials_are_optional_under_observe_only() {
    let w = World::start("observe-schema").await;
    let num = number();
    w.apply("observed", observe_spec(&num)).await;
    let full = w
        .apply_full(json!({"metadata": {"name": "full"},
                           "spec": with(observe_spec(&num), json!({"managementPolicy": "Full"}))}))
        .await
        .expect_err("Full without credentials is refused");
    assert!(
        full.to_string()
            .contains("one of them is required when managementPolicy is Full"),
        "{full}"
    );
    let defaulted = w
        .apply_full(json!({"metadata": {"name": "defaulted"},
                           "spec": {"phoneNumber": num, "provider": "telnyx", "agentId": AGENT}}))
        .await
        .expect_err("the default is Full");
    assert!(
        defaulted
            .to_string()
            .contains("one of them is required when managementPolicy is Full"),
        "{defaulted}"
    );
    let both = w
        .apply_full(json!({"metadata": {"name": "both"},
            "spec": with(observe_spec(&num), json!({"credentialId": CREDENTIAL,
                "providerConfig": {"trunkAddress": "sip.telnyx.com", "authUsername": "u",
                                   "authPasswordSecretRef": {"name": "s"}}}))}))
        .await
        .expect_err("both are refused under Observe too");
    assert!(
        both.to_string()
            .contains("are both set: keep only one of them"),
        "{both}"
    );
    // Switching to Full without adding credentials is refused too.
    let err = w
        .pns
        .patch(
            "observed",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {"managementPolicy": "Full"}})),
        )
        .await
        .expect_err("switch without credentials");
    assert!(
        err.to_string().contains("managementPolicy is Full"),
        "{err}"
    );
    let pn = w
        .wait_reason("observed", "Stalled", "RegistrationNotFound")
        .await;
    assert_eq!(
        pn.spec.management_policy,
        oneinbox_operator::crd::ManagementPolicy::Observe
    );
    assert_eq!(writes(&w.mock).await, (0, 0, 0));
}
