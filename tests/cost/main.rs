//! Kubernetes cost on the real control plane: no Secret read while the Secrets are unchanged,
//! no burst of calls after a restart, three writes per create, and no relist of the
//! PhoneNumbers while they are created. Its own test binary: kube-apiserver counts Secret
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
use oneinbox_operator::crd::PhoneNumber;

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
                        && p.status.as_ref().and_then(|s| {
                            s.secret_versions
                                .get(&format!("sip-c{i}"))
                                .map(str::to_owned)
                        }) == rv
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
    let interval = Duration::from_secs(30);
    let mut w = World::start_with(
        "cost-restart",
        &[],
        &["--poll-interval", "30s", "--min-poll-interval", "30s"],
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
    // No first check falls before a fifth of the interval (6 s) after the restart. The count
    // at 5.5 s says something only if the operator was ready by then (its caches listed, so
    // every object had its first pass): that is a precondition of the test, with 5 s of slack
    // for a loaded machine, not a timing under test.
    let quiet = Duration::from_millis(5500);
    loop {
        if w.operator.admin("/readyz").await.0 == 200 {
            break;
        }
        assert!(
            restarted.elapsed() < quiet,
            "the operator was not ready within {quiet:?} of its restart: the quiet window cannot be observed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(quiet.saturating_sub(restarted.elapsed())).await;
    assert_eq!(
        w.mock.total_calls().await,
        calls,
        "no OneInbox call in the first {quiet:?}"
    );
    assert_eq!(
        apiserver_requests(&w.client, "secrets", "GET").await,
        secret_gets,
        "no Secret GET in the first {quiet:?}"
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

/// Writes to object `name` as the watch saw its versions (from its creation): (metadata
/// writes, status writes). A write changes `status` or
/// something else (the finalizer, annotations), never both: the status is a subresource.
fn writes_seen(versions: &[PhoneNumber], name: &str) -> (usize, usize) {
    let mut metadata = 0;
    let mut status = 0;
    let mine: Vec<&PhoneNumber> = versions.iter().filter(|p| p.name_any() == name).collect();
    for pair in mine.windows(2) {
        let (before, after) = (pair[0], pair[1]);
        if before.status != after.status {
            status += 1;
        } else {
            metadata += 1;
        }
    }
    (metadata, status)
}

#[tokio::test]
async fn a_create_is_three_kubernetes_writes_the_event_included() {
    use futures::StreamExt;
    use kube::api::{WatchEvent, WatchParams};
    let _serial = SERIAL.lock().await;
    let w = World::start("cost-writes").await;
    let api: Api<PhoneNumber> = Api::namespaced(w.client.clone(), &w.ns);
    let mut stream = api
        .watch(&WatchParams::default(), "0")
        .await
        .expect("watch")
        .boxed();
    let names: Vec<String> = (0..OBJECTS).map(|i| format!("w{i}")).collect();
    for name in &names {
        w.apply(name, credential_spec(&number())).await;
    }
    // Every version of every object until all are Ready, then a quiet window that would
    // show a write that follows the Ready one (nothing else touches these objects).
    let mut versions: Vec<PhoneNumber> = Vec::new();
    let mut quiet_from: Option<Instant> = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let wait = match quiet_from {
            Some(t) => (t + Duration::from_secs(3)).saturating_duration_since(Instant::now()),
            None => deadline.saturating_duration_since(Instant::now()),
        };
        match tokio::time::timeout(wait, stream.next()).await {
            Err(_) if quiet_from.is_some() => break,
            Err(_) => panic!(
                "not all Ready in 60 s\n{}",
                tail(&w.operator.log_text(), 40)
            ),
            Ok(None) => panic!("the watch ended"),
            Ok(Some(event)) => match event.expect("watch event") {
                WatchEvent::Added(p) | WatchEvent::Modified(p) => versions.push(p),
                WatchEvent::Deleted(p) => panic!("{} deleted", p.name_any()),
                WatchEvent::Bookmark(_) => {}
                WatchEvent::Error(e) => panic!("watch error: {e}"),
            },
        }
        if quiet_from.is_none() {
            let all_ready = names.iter().all(|n| {
                versions
                    .iter()
                    .rev()
                    .find(|p| p.name_any() == *n)
                    .is_some_and(|p| is_ready(p) && synced(p))
            });
            if all_ready {
                quiet_from = Some(Instant::now());
            }
        }
    }
    let events = w.events().await;
    for name in &names {
        let (metadata, status) = writes_seen(&versions, name);
        assert_eq!(
            (metadata, status),
            (1, 1),
            "{name}: one metadata write (finalizer and attempt) and one status write (the ids, Ready)"
        );
        let last = versions
            .iter()
            .rev()
            .find(|p| p.name_any() == *name)
            .unwrap();
        assert!(
            last.finalizers()
                .iter()
                .any(|f| f == "oneinbox.ai/deregister")
        );
        assert!(last.pending_create().is_none(), "the attempt is settled");
    }
    let registered = events
        .iter()
        .filter(|(reason, _)| reason == "Registered")
        .count();
    assert_eq!(
        registered, OBJECTS,
        "one Registered event per create: {events:?}"
    );
    assert_eq!(events.len(), OBJECTS, "no other event: {events:?}");
    assert_eq!(
        w.mock.count(POST).await,
        OBJECTS as u64,
        "one POST per create"
    );
}

#[tokio::test]
async fn the_phone_number_watch_lists_once_while_objects_are_created() {
    let _serial = SERIAL.lock().await;
    let w = World::start("cost-lists").await;
    // The first Ready object: the operator's watch has listed by then.
    w.apply("l0", credential_spec(&number())).await;
    w.wait_ready("l0").await;
    let lists = apiserver_requests(&w.client, "phonenumbers", "LIST").await;
    let names: Vec<String> = (1..20).map(|i| format!("l{i}")).collect();
    for name in &names {
        w.apply(name, credential_spec(&number())).await;
    }
    for name in &names {
        w.wait_for(name, "Ready", Duration::from_secs(60), |p| {
            is_ready(p) && synced(p)
        })
        .await;
    }
    // A watch that cannot resume from an event's resourceVersion lists everything again:
    // correct, but a LIST (and a pass per object) per event.
    assert_eq!(
        apiserver_requests(&w.client, "phonenumbers", "LIST").await,
        lists,
        "no PhoneNumber LIST while 19 objects are created and become Ready"
    );
}
