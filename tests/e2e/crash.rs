//! Crash safety of the create: an ambiguous POST and a killed operator both end with exactly
//! one registration and no second POST accepted.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::*;

#[tokio::test]
async fn commit_then_drop_on_post_ends_with_one_registration() {
    let w = World::start("dropped").await;
    w.mock
        .fault(json!({"endpoint": POST, "kind": "commit_then_drop", "count": 1}))
        .await;
    w.apply("dropped", credential_spec(&number())).await;
    let pn = w.wait_ready("dropped").await;
    assert_only_registration_is(&w.mock, &pn).await;
    // The lost answer was resolved by a look-up, not by posting again.
    assert_eq!(w.mock.count(POST).await, 1);
    assert!(w.mock.count(LIST).await >= 1);
}

#[tokio::test]
async fn operator_killed_right_after_its_post_ends_with_one_registration() {
    let mut w = World::start("killed").await;
    // The mock commits the registration, then holds the answer: the operator is killed while
    // the registration exists remotely but before it could write the id.
    w.mock
        .fault(json!({"endpoint": POST, "kind": "commit_then_delay", "delay_ms": 8000, "count": 1}))
        .await;
    w.apply("killed", credential_spec(&number())).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while w.mock.registrations().await.is_empty() {
        assert!(Instant::now() < deadline, "the POST never arrived");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    w.operator.kill();
    let pn = w.pns.get("killed").await.expect("get");
    assert!(
        pn.status
            .as_ref()
            .and_then(|s| s.phone_number_id.clone())
            .is_none(),
        "id written before the kill"
    );
    assert!(
        pn.pending_create().is_some(),
        "no registration attempt recorded before the POST"
    );

    w.operator.spawn();
    let pn = w.wait_ready("killed").await;
    assert_only_registration_is(&w.mock, &pn).await;
    assert_eq!(
        w.mock.count(POST).await,
        1,
        "the restarted operator posted again"
    );
}

#[tokio::test]
async fn deleting_during_an_interrupted_replacement_leaks_nothing() {
    let w = World::start("replacedrop").await;
    w.secret("sip", "pw-replace-a-19c4").await;
    w.apply(
        "r",
        with(
            sip_spec(&number(), "sip"),
            json!({"replacementPolicy": "Replace"}),
        ),
    )
    .await;
    w.wait_ready("r").await;
    // The new registration commits but its answer never arrives (client timeout 3 s).
    w.mock
        .fault(json!({"endpoint": POST, "kind": "commit_then_delay", "delay_ms": 6000, "count": 1}))
        .await;
    w.secret("sip", "pw-replace-b-77e0").await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while w.mock.count(POST).await < 2 {
        assert!(Instant::now() < deadline, "the replacement POST never came");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Deleted while the outcome of the replacement is unknown (the id annotation still names
    // the released registration).
    w.delete("r").await;
    w.wait_gone("r", Duration::from_secs(30)).await;
    let regs = w.mock.registrations().await;
    assert!(regs.is_empty(), "leaked: {regs:?}");
}
