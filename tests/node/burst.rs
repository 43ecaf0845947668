//! 3.4: the operator pod deleted in the middle of a burst of creates. One replica: the pod is
//! deleted once it has sent the first few of 20 registrations, while the mock still holds them in
//! flight; 20 more are applied while it terminates. The new pod finishes the work: every
//! PhoneNumber Ready with its finalizer and the id of its number's only registration, exactly
//! one registration committed per number, and every object can be deleted again (nothing stuck
//! behind a finalizer).
//!
//! A deleted pod's ReplicaSet creates the replacement at once, whatever the Deployment's
//! strategy. With leader election (the chart's default) the replacement stands by until the old
//! pod has drained and released the Lease: exactly one POST per number. Without it
//! (`leaderElection.enabled: false`) the new pod lists and acts while the old one drains, and
//! POSTs again numbers whose first POST is still in flight under the old pod's marker: the API's
//! 409 keeps them single, and the 409's registration, made since that marker's attempt started,
//! is adopted as the attempt's own (not taken for one made outside the cluster, which once left
//! an object Stalled `AlreadyRegistered` on its own registration in 2 of 5 runs).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use kube::api::Api;
use oneinbox_operator::crd::{FINALIZER, PhoneNumber};
use serde_json::json;

use crate::failover::{apply_numbers, wait_pod_gone};
use crate::harness::*;
use crate::*;

const NUMBERS: usize = 40;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_lease_a_pod_deleted_in_a_burst_leaves_no_duplicate_and_nothing_stuck() {
    burst("burst", json!({"leaderElection": {"enabled": false}})).await;
}

/// The chart's defaults (one replica, leader election on).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_a_pod_deleted_in_a_burst_leaves_one_post_per_number() {
    burst("burst-lease", json!({})).await;
}

/// Counts of `endpoint`'s calls in the mock's call log by status.
async fn calls_by_status(mock: &Mock, endpoint: &str) -> BTreeMap<u64, u64> {
    let log = mock.get("/_mock/calls/log").await;
    let mut by_status = BTreeMap::new();
    for e in log["entries"].as_array().expect("log entries") {
        if e["endpoint"] == endpoint {
            *by_status
                .entry(e["status"].as_u64().unwrap_or(0))
                .or_default() += 1;
        }
    }
    by_status
}

async fn burst(name: &str, extra: serde_json::Value) {
    let leader_election = extra["leaderElection"]["enabled"] != false;
    let node = node();
    let client = admin_client().await;
    let sip_password = "pw-burst-41c9e2d7";
    let ns = prepare_namespace(&client, name, sip_password).await;
    let mock = Mock::start_on(&format!("{}:0", node.ip), &["--api-key", API_KEY]);
    // Each registration takes the mock a second, and the operator makes at most 4 calls a
    // second: 40 registrations take at least 10 s, so the deletion below lands mid-burst, with
    // POSTs in flight that the terminating pod must finish (or leave to the new one) exactly once.
    mock.config(json!({"endpoints": {POST: {"latency_ms": 1000}}}))
        .await;
    let release = format!("oi-{}", &ns[ns.len() - 6..]);
    let values = values(
        node,
        &ns,
        &mock.url,
        with(json!({"apiRateLimit": {"rps": 4, "burst": 4}}), extra),
    );
    helm(&[
        "install",
        &release,
        repo().join("charts/oneinbox-operator").to_str().unwrap(),
        "-n",
        &ns,
        "-f",
        values.to_str().unwrap(),
        "--wait",
        "--timeout",
        "180s",
    ]);
    let pods = pods_of(&client, &ns, &release).await;
    assert_eq!(pods.len(), 1, "one replica");
    let first = pods[0].metadata.name.clone().unwrap();

    let pns: Api<PhoneNumber> = Api::namespaced(client.clone(), &ns);
    let names: Vec<String> = (0..NUMBERS).map(|i| format!("burst-{i:02}")).collect();
    let (early, late) = names.split_at(NUMBERS / 2);
    apply_numbers(&pns, early).await;
    wait(
        "the first registrations",
        Duration::from_secs(60),
        || async { (mock.count(POST).await >= 4).then_some(()) },
    )
    .await;
    kubectl_ok(&["delete", "pod", "-n", &ns, &first, "--wait=false"]);
    // The first 20 take the operator at least 4 s at 4 calls a second: the pod is deleted in
    // the middle of them.
    let at_deletion = mock.registrations().await.len();
    assert!(
        at_deletion < early.len(),
        "the pod was deleted in the middle of the burst: {at_deletion} of {} registered",
        early.len()
    );
    // More creates while the pod terminates and its replacement (which the ReplicaSet creates
    // at once, whatever the Deployment's strategy) starts.
    apply_numbers(&pns, late).await;
    wait_pod_gone(&client, &ns, &release, &first, Duration::from_secs(120)).await;

    let new_pod = wait("the new pod Ready", Duration::from_secs(120), || async {
        pods_of(&client, &ns, &release)
            .await
            .into_iter()
            .find(|p| p.metadata.name.as_deref() != Some(first.as_str()) && pod_ready(p))
    })
    .await;
    let all_ready = tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            let list = pns.list(&Default::default()).await.expect("list");
            if list.items.len() == NUMBERS && list.items.iter().all(|p| is_ready(p) && synced(p)) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
    .await;
    if all_ready.is_err() {
        let stuck: Vec<String> = pns
            .list(&Default::default())
            .await
            .expect("list")
            .items
            .iter()
            .filter(|p| !(is_ready(p) && synced(p)))
            .map(|p| {
                format!(
                    "{}: {:?}",
                    p.metadata.name.as_deref().unwrap_or(""),
                    p.status
                )
            })
            .collect();
        panic!(
            "not Ready after the new pod started:\n{}\nPOSTs by status: {:?}",
            stuck.join("\n"),
            calls_by_status(&mock, POST).await
        );
    }

    // Exactly one registration per number, each the one its PhoneNumber names.
    let registrations = mock.registrations().await;
    let by_number: BTreeMap<String, String> = registrations
        .iter()
        .map(|r| {
            (
                r["phone_number"].as_str().unwrap().to_string(),
                r["id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(registrations.len(), NUMBERS, "{registrations:?}");
    assert_eq!(by_number.len(), NUMBERS, "one registration per number");
    let calls = mock.calls().await;
    let log = mock.get("/_mock/calls/log").await;
    assert_eq!(log["accepted"][POST], NUMBERS as u64, "committed POSTs");
    let posts = calls_by_status(&mock, POST).await;
    assert_eq!(posts.get(&201), Some(&(NUMBERS as u64)), "{posts:?}");
    if leader_election {
        assert_eq!(mock.count(POST).await, NUMBERS as u64, "{calls}");
    } else {
        // Any other POST was the replacement's, for a number the draining pod was registering:
        // refused as a duplicate, never a second registration.
        let repeated: u64 = posts
            .iter()
            .filter(|(s, _)| **s != 201)
            .map(|(_, n)| n)
            .sum();
        assert_eq!(posts.get(&409).copied().unwrap_or(0), repeated, "{posts:?}");
        assert_eq!(mock.count(POST).await, NUMBERS as u64 + repeated, "{calls}");
    }
    let mut ids = BTreeSet::new();
    for name in &names {
        let pn = pns.get(name).await.unwrap();
        assert!(is_ready(&pn) && synced(&pn), "{name}: {:?}", pn.status);
        assert_eq!(
            pn.metadata.finalizers.as_deref(),
            Some(&[FINALIZER.to_string()][..]),
            "{name}"
        );
        let id = pn
            .status
            .as_ref()
            .and_then(|s| s.phone_number_id.clone())
            .unwrap_or_else(|| panic!("{name} has no registration id"));
        assert_eq!(
            by_number.get(&pn.spec.phone_number),
            Some(&id),
            "{name} names its number's registration"
        );
        ids.insert(id);
    }
    assert_eq!(ids.len(), NUMBERS, "no two objects share a registration");
    let restarts = new_pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.first())
        .map(|c| c.restart_count);
    assert_eq!(restarts, Some(0), "the new pod started once");
    let logs = kubectl_ok(&["logs", "-n", &ns, new_pod.metadata.name.as_deref().unwrap()]);
    for s in [API_KEY, sip_password] {
        assert!(!logs.contains(s), "secret {s:?} in the pod's log");
    }

    // Nothing stuck: every object goes, each registration released once.
    delete_all(&pns, &names).await;
    assert_eq!(mock.registrations().await.len(), 0, "deregistered");
    let log = mock.get("/_mock/calls/log").await;
    let deletes = calls_by_status(&mock, DELETE).await;
    assert_eq!(log["accepted"][DELETE], NUMBERS as u64, "{deletes:?}");
    assert_eq!(deletes.get(&204), Some(&(NUMBERS as u64)), "{deletes:?}");
    // A DELETE repeated after its registration went (a pass retried after the finalizer's
    // removal failed) finds nothing: 404, nothing released twice.
    let repeated: u64 = deletes
        .iter()
        .filter(|(s, _)| **s != 204)
        .map(|(_, n)| n)
        .sum();
    assert_eq!(
        deletes.get(&404).copied().unwrap_or(0),
        repeated,
        "{deletes:?}"
    );
    uninstall(&release, &ns);
}
