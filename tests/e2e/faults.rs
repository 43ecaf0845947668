//! Transient API faults: Reconciling/APIUnavailable, then Ready, with a bounded number of calls.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::*;

#[tokio::test]
async fn server_errors_back_off_then_recover() {
    let w = World::start("fivexx").await;
    w.mock
        .config(json!({"endpoints": {POST: {"error_rate": 1.0, "error_status": 503}}}))
        .await;
    w.apply("flaky", credential_spec(&number())).await;
    let pn = w
        .wait_reason("flaky", "Reconciling", "APIUnavailable")
        .await;
    assert_eq!(
        pn.condition("Ready").map(|c| c.reason.as_str()),
        Some("APIUnavailable")
    );
    assert!(pn.condition("Stalled").is_none());
    tokio::time::sleep(Duration::from_secs(5)).await;
    let failed_posts = w.mock.count(POST).await;
    // Backoff 200ms doubling to a 2s cap: ~6 attempts in 6s; a hot loop would make hundreds.
    assert!(
        (2..=12).contains(&failed_posts),
        "POSTs while failing: {failed_posts}"
    );
    println!("POST attempts during 6s of 503s: {failed_posts}");

    w.mock.config(json!({})).await;
    w.wait_ready("flaky").await;
    assert_eq!(w.mock.registrations().await.len(), 1);
}

#[tokio::test]
async fn rate_limited_with_retry_after_waits_then_recovers() {
    let w = World::start("throttled").await;
    w.mock.fault(json!({"endpoint": POST, "kind": "status", "status": 429, "retry_after": "2", "count": 1})).await;
    let started = Instant::now();
    w.apply("throttled", credential_spec(&number())).await;
    w.wait_ready("throttled").await;
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "Retry-After not honoured"
    );
    // One throttled POST, then one look-up (the POST's outcome was a clean 429, but the
    // marker is kept) and one successful POST: no more.
    let calls = w.mock.calls().await;
    println!("calls with one 429: {calls}");
    assert_eq!(w.mock.count(POST).await, 2, "{calls}");
    assert!(w.mock.total_calls().await <= 4, "{calls}");
    assert_eq!(w.mock.registrations().await.len(), 1);
}

#[tokio::test]
async fn latency_is_tolerated() {
    let w = World::start("slow").await;
    w.mock
        .config(json!({"latency_ms": 700, "latency_jitter_ms": 300}))
        .await;
    w.apply("slow", credential_spec(&number())).await;
    w.wait_ready("slow").await;
    assert_eq!(w.mock.count(POST).await, 1);
    assert_eq!(w.mock.registrations().await.len(), 1);
}
