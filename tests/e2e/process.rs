//! The operator as a process: probes, metrics, SIGTERM drain, JSON logs, leader election.

use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use serde_json::json;

use crate::harness::*;

async fn wait_admin(op: &Operator, path: &str, code: u16, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let (got, _) = op.admin(path).await;
        if got == code {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{path} never answered {code} (last {got})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn probes_and_metrics_without_per_object_labels() {
    let w = World::start("metrics").await;
    wait_admin(&w.operator, "/livez", 200, Duration::from_secs(10)).await;
    wait_admin(&w.operator, "/readyz", 200, Duration::from_secs(10)).await;
    w.apply("m-one", credential_spec(&number())).await;
    w.apply("m-two", sip_spec(&number(), "absent")).await;
    w.wait_ready("m-one").await;
    w.wait_reason("m-two", "Stalled", "SecretNotFound").await;

    let (code, text) = w.operator.admin("/metrics").await;
    assert_eq!(code, 200);
    let build_info = format!(
        "oneinbox_operator_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    for needle in [
        "oneinbox_operator_reconcile_runs_total",
        "oneinbox_operator_reconcile_duration_seconds_bucket",
        "oneinbox_operator_api_requests_total{account=\"operator\",op=\"register\",outcome=\"success\"} 1",
        "oneinbox_operator_api_request_duration_seconds_bucket{",
        "oneinbox_operator_api_rate_limiter_wait_seconds_count",
        "oneinbox_operator_reconcile_status_patches_total{outcome=\"success\"}",
        "oneinbox_operator_reconcile_places{account=\"operator\"} ",
        "oneinbox_operator_objects{condition=\"Ready\"} 1",
        "oneinbox_operator_objects{condition=\"Stalled\"} 1",
        "oneinbox_operator_watched_objects 2",
        "oneinbox_operator_leader 1",
        build_info.as_str(),
    ] {
        assert!(text.contains(needle), "missing {needle}:\n{text}");
    }
    assert!(
        !text.contains("condition=\"total\""),
        "the object total is its own gauge:\n{text}"
    );
    for object_label in ["m-one", "m-two", w.ns.as_str()] {
        assert!(
            !text.contains(object_label),
            "per-object label {object_label} in metrics"
        );
    }
}

#[tokio::test]
async fn sigterm_drops_readiness_and_finishes_the_reconcile_in_flight() {
    let mut w = World::start("sigterm").await;
    wait_admin(&w.operator, "/readyz", 200, Duration::from_secs(10)).await;
    // The POST takes 1.5 s (under the 3 s API timeout): SIGTERM arrives while it is in flight.
    w.mock
        .fault(json!({"endpoint": POST, "kind": "delay", "delay_ms": 1500, "count": 1}))
        .await;
    w.apply("t", credential_spec(&number())).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while w.mock.count(POST).await == 0 {
        assert!(Instant::now() < deadline, "POST never sent");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = Command::new("kill")
        .args(["-TERM", &w.operator.pid().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    // Readiness drops at once, while the reconcile is still running.
    let (code, _) = w.operator.admin("/readyz").await;
    assert!(code == 503 || code == 0, "readyz after SIGTERM: {code}");

    let started = Instant::now();
    let mut proc = w.operator.proc.take().expect("proc");
    let exit = loop {
        if let Some(s) = proc.child.try_wait().expect("wait") {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no exit within the grace period"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(exit.success(), "exit status {exit:?}");
    // The in-flight registration was completed and recorded, not abandoned.
    let pn = w.pns.get("t").await.expect("get");
    assert!(
        pn.status.and_then(|s| s.phone_number_id).is_some(),
        "id not written before exit"
    );
    assert_eq!(w.mock.registrations().await.len(), 1);
    assert!(w.operator.log_text().contains("shutdown requested"));
}

#[tokio::test]
async fn json_logs_have_one_span_per_reconcile() {
    let w = World::start_with("jsonlog", &[], &["--log-format", "json"]).await;
    w.apply("j", credential_spec(&number())).await;
    w.wait_ready("j").await;
    let log = w.operator.log_text();
    let mut saw_span = false;
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        if v["span"]["name"] == "reconcile" {
            assert_eq!(v["span"]["namespace"], json!(w.ns), "{line}");
            assert_eq!(v["span"]["name"], json!("reconcile"));
            saw_span = true;
        }
    }
    assert!(saw_span, "no reconcile span in:\n{}", tail(&log, 20));
}

#[tokio::test]
async fn only_the_leader_acts_and_a_standby_takes_over_after_kill() {
    let w = World::start("leader").await;
    grant_lease_rbac(&w.ns);

    // The World's own operator does not elect; stop it and run two electing replicas.
    let mut w = w;
    w.operator.kill();
    let args = [
        "--leader-election",
        "--lease-namespace",
        &w.ns,
        "--lease-duration",
        "4s",
        "--lease-grace",
        "2s",
    ];
    let mut a = Operator::start_as(
        &w.ns,
        &w.mock.url,
        &args,
        &[("POD_NAME", "replica-a")],
        "-a",
    );
    wait_admin(&a, "/readyz", 200, Duration::from_secs(15)).await;
    let mut b = Operator::start_as(
        &w.ns,
        &w.mock.url,
        &args,
        &[("POD_NAME", "replica-b")],
        "-b",
    );
    wait_admin(&b, "/readyz", 200, Duration::from_secs(15)).await;

    w.apply("l1", credential_spec(&number())).await;
    w.apply("l2", credential_spec(&number())).await;
    w.wait_ready("l1").await;
    w.wait_ready("l2").await;
    let leases: Api<Lease> = Api::namespaced(w.client.clone(), &w.ns);
    let holder = leases
        .get("oneinbox-operator")
        .await
        .expect("lease")
        .spec
        .and_then(|s| s.holder_identity)
        .unwrap_or_default();
    let (leader, standby) = if holder.starts_with("replica-a") {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    assert!(holder.starts_with("replica-"), "holder {holder}");
    assert!(
        !standby.log_text().contains("registered"),
        "the standby registered something"
    );

    let killed = Instant::now();
    leader.kill();
    w.apply("l3", credential_spec(&number())).await;
    w.wait_for("l3", "Ready after failover", Duration::from_secs(30), |p| {
        is_ready(p) && synced(p)
    })
    .await;
    let took = killed.elapsed();
    println!("failover: l3 Ready {took:?} after killing the leader (lease 4s)");
    let holder2 = leases
        .get("oneinbox-operator")
        .await
        .expect("lease")
        .spec
        .and_then(|s| s.holder_identity)
        .unwrap_or_default();
    assert_ne!(holder, holder2);
    assert!(standby.log_text().contains("acquired the lease"));
    // No duplicate registration during the hand-over.
    assert_eq!(w.mock.count(POST).await, 3);
    assert_eq!(w.mock.registrations().await.len(), 3);
    standby.kill();
}

/// The watch resumes from each event's resourceVersion: creating and reconciling objects (each
/// a few watch events, several of them echoes of the operator's own writes) never makes it
/// list again. A cache whose objects lost their resourceVersion relisted on every event, with
/// every object still Ready in the end.
#[tokio::test]
async fn the_phonenumber_watch_lists_once_while_objects_are_created() {
    let w = World::start("lists").await;
    wait_admin(&w.operator, "/readyz", 200, Duration::from_secs(10)).await;
    let names: Vec<String> = (0..20).map(|i| format!("l{i}")).collect();
    for name in &names {
        w.apply(name, credential_spec(&number())).await;
    }
    for name in &names {
        w.wait_ready(name).await;
    }
    let (code, text) = w.operator.admin("/metrics").await;
    assert_eq!(code, 200);
    assert!(
        text.lines()
            .any(|l| l == "oneinbox_operator_phonenumber_watch_lists_total 1"),
        "the PhoneNumber watch listed more than once:\n{}",
        text.lines()
            .filter(|l| l.contains("watch_lists"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
