//! Leader fencing on the real control plane: a leader cut off from the API server (a loopback
//! proxy in front of it, then stopped) stops acting before the standby may take the Lease, and
//! no OneInbox call of the old leader comes after the take-over (the mock's timestamped call
//! log says which key, so which replica, made each call). On SIGTERM the Lease is held until
//! the in-flight reconcile has ended.

use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use serde_json::{Value, json};

use crate::harness::*;

const KEY_A: &str = "oi_sk_replica_a_key_1111";
const KEY_B: &str = "oi_sk_replica_b_key_2222";

async fn lease(w: &World) -> Option<Lease> {
    let leases: Api<Lease> = Api::namespaced(w.client.clone(), &w.ns);
    leases.get_opt("oneinbox-operator").await.expect("lease")
}

async fn holder(w: &World) -> String {
    lease(w)
        .await
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
        .unwrap_or_default()
}

async fn wait_holder(w: &World, prefix: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while !holder(w).await.starts_with(prefix) {
        assert!(
            Instant::now() < deadline,
            "{prefix} never held the lease; holder {:?}",
            holder(w).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Wait for the operator process to exit; its exit code and when it was seen gone (ms).
async fn wait_exit(op: &mut Operator, timeout: Duration) -> (Option<i32>, u64) {
    let started = Instant::now();
    let proc = op.proc.as_mut().expect("running");
    loop {
        if let Some(status) = proc.child.try_wait().expect("try_wait") {
            return (status.code(), now_ms());
        }
        assert!(
            started.elapsed() < timeout,
            "the operator did not exit within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64
}

/// The mock's call log: (at_ms, caller) of every answered OneInbox call.
async fn calls_by(w: &World) -> Vec<(u64, Option<u64>)> {
    let log = w.mock.get("/_mock/calls/log").await;
    log["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| (e["at_ms"].as_u64().expect("at_ms"), e["caller"].as_u64()))
        .collect()
}

fn electing(ns: &str) -> Vec<String> {
    [
        "--leader-election",
        "--lease-namespace",
        ns,
        "--lease-duration",
        "4s",
        "--lease-grace",
        "2s",
        "--poll-interval",
        "1s",
        "--min-poll-interval",
        "1s",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[tokio::test]
async fn a_leader_cut_off_from_the_api_server_stops_before_the_standby_acts() {
    let mut w = World::start_with("fence", &["--api-key", KEY_A, "--api-key", KEY_B], &[]).await;
    grant_lease_rbac(&w.ns);
    w.operator.kill();
    let args = electing(&w.ns);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();

    let (_, server) = kubeconfig_through(0, &w.ns);
    let proxy = Proxy::start(server).await;
    let (kubeconfig_a, _) = kubeconfig_through(proxy.port, &w.ns);
    let kubeconfig_a = kubeconfig_a.to_str().expect("path").to_string();
    let mut a = Operator::start_as(
        &w.ns,
        &w.mock.url,
        &args,
        &[
            ("POD_NAME", "replica-a"),
            ("ONEINBOX_API_KEY", KEY_A),
            ("KUBECONFIG", &kubeconfig_a),
        ],
        "-a",
    );
    wait_holder(&w, "replica-a", Duration::from_secs(20)).await;
    let mut b = Operator::start_as(
        &w.ns,
        &w.mock.url,
        &args,
        &[("POD_NAME", "replica-b"), ("ONEINBOX_API_KEY", KEY_B)],
        "-b",
    );
    w.apply("f1", credential_spec(&number())).await;
    w.apply("f2", credential_spec(&number())).await;
    w.wait_ready("f1").await;
    w.wait_ready("f2").await;
    let before = calls_by(&w).await;
    assert!(
        before.iter().all(|(_, c)| *c == Some(0)),
        "only the leader called OneInbox: {before:?}"
    );

    // Cut the leader off the API server. Its drift checks (every second) need no Kubernetes
    // read, so only the fence stops them.
    let cut = now_ms();
    proxy.stop();
    let (code, exited) = wait_exit(&mut a, Duration::from_secs(15)).await;
    assert_eq!(code, Some(2), "the fenced leader exits with 2");
    assert!(
        a.log_text().contains("not renewed in time"),
        "{}",
        tail(&a.log_text(), 20)
    );
    wait_holder(&w, "replica-b", Duration::from_secs(20)).await;
    let taken = lease(&w)
        .await
        .and_then(|l| l.spec)
        .and_then(|s| s.acquire_time)
        .map(|t| t.0.as_millisecond() as u64)
        .expect("acquireTime");

    // The new leader acts.
    w.apply("f3", credential_spec(&number())).await;
    w.wait_ready("f3").await;
    let calls = calls_by(&w).await;
    let a_after_cut = calls
        .iter()
        .filter(|(at, c)| *c == Some(0) && *at > cut)
        .count();
    let a_last = calls
        .iter()
        .filter(|(_, c)| *c == Some(0))
        .map(|(at, _)| *at)
        .max()
        .expect("a called");
    let b_first = calls
        .iter()
        .filter(|(_, c)| *c == Some(1))
        .map(|(at, _)| *at)
        .min()
        .expect("b called");
    println!(
        "fencing: cut {cut}, old leader's last call {a_last} ({a_after_cut} after the cut), exit seen {exited}, take-over {taken}, new leader's first call {b_first}"
    );
    assert!(
        a_last < taken,
        "an old-leader call at {a_last} after the take-over at {taken}"
    );
    assert!(a_last < b_first, "the calls of the two leaders overlap");
    assert!(
        exited <= b_first,
        "the standby acted at {b_first}, before the old leader stopped at {exited}"
    );
    assert_eq!(w.mock.registrations().await.len(), 3);
    b.kill();
}

#[tokio::test]
async fn on_sigterm_the_lease_is_held_until_the_reconcile_in_flight_ends() {
    let mut w = World::start("leasedrain").await;
    grant_lease_rbac(&w.ns);
    w.operator.kill();
    let args = electing(&w.ns);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut a = Operator::start_as(
        &w.ns,
        &w.mock.url,
        &args,
        &[("POD_NAME", "replica-a")],
        "-a",
    );
    wait_holder(&w, "replica-a", Duration::from_secs(20)).await;

    // The POST takes 2 s (under the 3 s API timeout): SIGTERM arrives while it is in flight.
    w.mock
        .fault(json!({"endpoint": POST, "kind": "delay", "delay_ms": 2000, "count": 1}))
        .await;
    w.apply("d", credential_spec(&number())).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while w.mock.count(POST).await == 0 {
        assert!(Instant::now() < deadline, "POST never sent");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pid = a.pid().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill")
            .success()
    );
    // Draining: the Lease is still held.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        a.proc
            .as_mut()
            .expect("proc")
            .child
            .try_wait()
            .expect("wait")
            .is_none(),
        "exited before the reconcile ended"
    );
    assert!(
        holder(&w).await.starts_with("replica-a"),
        "released while draining"
    );
    let (code, _) = wait_exit(&mut a, Duration::from_secs(20)).await;
    assert_eq!(code, Some(0));
    // Released after the drain, and the in-flight registration was recorded.
    let released: Value = serde_json::to_value(lease(&w).await.and_then(|l| l.spec)).expect("json");
    assert!(
        released["holderIdentity"].is_null() || released["holderIdentity"] == json!(""),
        "{released}"
    );
    let pn = w.pns.get("d").await.expect("get");
    assert!(
        pn.status.and_then(|s| s.phone_number_id).is_some(),
        "id not written before exit"
    );
    assert_eq!(w.mock.registrations().await.len(), 1);
}

/// Two standbys see the same released Lease and claim it at once, as the lease library does
/// (a server-side apply of holderIdentity, not forced, each replica as its own field manager):
/// the API server refuses the second claim, so only one replica leads. With one field manager
/// shared by both, the second claim silently overwrote the first while its claimant led on.
#[tokio::test]
async fn a_second_concurrent_claim_on_a_released_lease_is_refused() {
    use kube::api::{Patch, PatchParams};
    use oneinbox_operator::leader::field_manager;
    cluster();
    let client = admin_client().await;
    let ns = create_namespace(&client, "leaseclaim").await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    // A Lease left released by the leader before (its holder fields cleared).
    leases
        .create(
            &Default::default(),
            &serde_json::from_value(json!({"metadata": {"name": "oneinbox-operator"}, "spec": {}}))
                .expect("lease"),
        )
        .await
        .expect("create the released lease");
    let claim = |identity: &str| {
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
               "spec": {"holderIdentity": identity, "leaseDurationSeconds": 15}})
    };
    let apply = |identity: &'static str| {
        let leases = leases.clone();
        async move {
            let pp = PatchParams {
                field_manager: Some(field_manager(identity)),
                ..Default::default()
            };
            leases
                .patch("oneinbox-operator", &pp, &Patch::Apply(claim(identity)))
                .await
        }
    };
    apply("replica-a-0000000a")
        .await
        .expect("the first claim lands");
    let second = apply("replica-b-0000000b").await;
    match second {
        Err(kube::Error::Api(e)) => assert_eq!(e.code, 409, "{e:?}"),
        other => panic!("the second claim was not refused: {other:?}"),
    }
    assert_eq!(holder_in(&leases).await, "replica-a-0000000a");
    kubectl_ok(&["delete", "namespace", &ns, "--wait=false"]);
}

async fn holder_in(leases: &Api<Lease>) -> String {
    leases
        .get("oneinbox-operator")
        .await
        .expect("lease")
        .spec
        .and_then(|s| s.holder_identity)
        .unwrap_or_default()
}
