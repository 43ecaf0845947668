//! Kubernetes cost on the real control plane: no Secret read while the Secrets are unchanged,
//! and no burst of calls after a restart. Its own test binary: kube-apiserver counts Secret
//! reads cluster-wide, so these tests run when no other e2e test's operator is reading
//! (cargo runs test binaries one after another), and one after the other (`SERIAL`).

// Test support code: failing loudly is the point.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

#[path = "../e2e/harness.rs"]
#[allow(dead_code)]
mod harness;

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::Api;

use harness::*;

/// The tests of this binary one at a time (each counts the API server's Secret reads).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const OBJECTS: usize = 3;

/// `OBJECTS` Ready SIP objects `c0..`, each with its own password Secret `sip-c0..`; their
/// status records the Secret's resourceVersion.
async fn ready_fleet(w: &World) {
    for i in 0..OBJECTS {
        w.secret(&format!("sip-c{i}"), &format!("pw-cost-{i}-7e1a"))
            .await;
        w.apply(&format!("c{i}"), sip_spec(&number(), &format!("sip-c{i}")))
            .await;
    }
    let secrets: Api<Secret> = Api::namespaced(w.client.clone(), &w.ns);
    for i in 0..OBJECTS {
        let name = format!("c{i}");
        let rv = secrets
            .get(&format!("sip-c{i}"))
            .await
            .expect("secret")
            .resource_version();
        let pn = w
            .wait_for(
                &name,
                "Ready with the Secret's version recorded",
                Duration::from_secs(30),
                |p| {
                    is_ready(p)
                        && synced(p)
                        && p.status
                            .as_ref()
                            .and_then(|s| s.secret_versions.get(&format!("sip-c{i}")).cloned())
                            == rv
                },
            )
            .await;
        assert_eq!(
            pn.status.map(|s| s.secret_versions.len()),
            Some(1),
            "only the referenced Secret"
        );
    }
}

/// Drift checks (`get registration` steps) of object `name` in the operator's log.
fn checks_of(w: &World, name: &str) -> usize {
    let tag = format!("object={name}}}");
    plain(&w.operator.log_text())
        .lines()
        .filter(|l| l.contains(&tag) && l.contains("step=\"get registration\""))
        .count()
}

/// The log without its terminal colours (`ESC [ … m`).
fn plain(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[tokio::test]
async fn drift_checks_read_no_secret_while_the_secrets_are_unchanged() {
    let _serial = SERIAL.lock().await;
    let w = World::start_with(
        "cost-steady",
        &[],
        &["--poll-interval", "3s", "--min-poll-interval", "3s"],
    )
    .await;
    ready_fleet(&w).await;
    // Past the first check of each object (at most 1.2 × 3 s after it became Ready).
    tokio::time::sleep(Duration::from_secs(5)).await;
    let gets = w.mock.count(GET).await;
    let secret_gets = apiserver_requests(&w.client, "secrets", "GET").await;
    let patches = apiserver_requests(&w.client, "phonenumbers", "APPLY").await;
    // 12 s: at least three checks of each object (every 2.4–3.6 s).
    tokio::time::sleep(Duration::from_secs(12)).await;
    let gets_after = w.mock.count(GET).await;
    assert!(
        gets_after >= gets + 3 * OBJECTS as u64,
        "drift checks happened: {gets} → {gets_after} OneInbox GETs"
    );
    assert_eq!(
        apiserver_requests(&w.client, "secrets", "GET").await,
        secret_gets,
        "no Secret GET in the steady window"
    );
    assert_eq!(
        apiserver_requests(&w.client, "phonenumbers", "APPLY").await,
        patches,
        "no status write in the steady window"
    );

    // A rotation is still read and acted on at once.
    w.secret("sip-c0", "pw-cost-0-rotated-55b2").await;
    w.wait_reason("c0", "Stalled", "ReplacementRequired").await;
    assert!(apiserver_requests(&w.client, "secrets", "GET").await > secret_gets);
    w.assert_no_secrets(&["pw-cost-0-7e1a", "pw-cost-0-rotated-55b2"])
        .await;
}

#[tokio::test]
async fn a_restart_costs_no_call_at_once_and_every_object_is_checked_within_an_interval() {
    let _serial = SERIAL.lock().await;
    let interval = Duration::from_secs(20);
    let mut w = World::start_with(
        "cost-restart",
        &[],
        &["--poll-interval", "20s", "--min-poll-interval", "20s"],
    )
    .await;
    ready_fleet(&w).await;
    w.operator.kill();
    let calls = w.mock.total_calls().await;
    let secret_gets = apiserver_requests(&w.client, "secrets", "GET").await;
    let checks: Vec<usize> = (0..OBJECTS)
        .map(|i| checks_of(&w, &format!("c{i}")))
        .collect();
    let restarted = Instant::now();
    w.operator.spawn();
    // Ready (its caches listed, so every object had its first pass) well inside the quiet
    // fifth of the interval (4 s).
    loop {
        if w.operator.admin("/readyz").await.0 == 200 {
            break;
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(2),
            "not ready in 2 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(restarted.elapsed())).await;
    assert_eq!(
        w.mock.total_calls().await,
        calls,
        "no OneInbox call in the first 3 s"
    );
    assert_eq!(
        apiserver_requests(&w.client, "secrets", "GET").await,
        secret_gets,
        "no Secret GET in the first 3 s"
    );
    // Every object is checked within one interval (plus slack for the loaded machine).
    let deadline = restarted + interval + Duration::from_secs(10);
    for (i, before) in checks.iter().enumerate() {
        let name = format!("c{i}");
        while checks_of(&w, &name) <= *before {
            assert!(
                Instant::now() < deadline,
                "{name} not checked within the interval after the restart\n{}",
                tail(&w.operator.log_text(), 40)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    assert!(w.mock.count(GET).await >= OBJECTS as u64);
    // Those checks read no Secret either.
    assert_eq!(
        apiserver_requests(&w.client, "secrets", "GET").await,
        secret_gets
    );
}
