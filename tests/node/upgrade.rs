//! 3.3: `helm upgrade` with changed args, two replicas: the rolling update completes, no two pods
//! act at once (sampled on every pod, terminating ones included, throughout the rollout), the
//! numbers stay Ready, and the upgrade itself POSTs, PATCHes and DELETEs nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use oneinbox_operator::crd::PhoneNumber;
use serde_json::json;

use crate::failover::{apply_numbers, holder, leader_metric};
use crate::harness::*;
use crate::*;

/// Pods of the release that report themselves leader, terminating ones included.
async fn acting_now(client: &kube::Client, ns: &str, release: &str) -> usize {
    let mut n = 0;
    for p in pods_of(client, ns, release).await {
        if leader_metric(&p).await == Some(1) {
            n += 1;
        }
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_upgrade_never_has_two_leaders_and_writes_nothing() {
    let node = node();
    let client = admin_client().await;
    let ns = prepare_namespace(&client, "upgrade", "pw-upgrade-3e9a7c51").await;
    let mock = Mock::start_on(&format!("{}:0", node.ip), &["--api-key", API_KEY]);
    let release = format!("oi-{}", &ns[ns.len() - 6..]);
    let chart = repo().join("charts/oneinbox-operator");
    let base = json!({"replicas": 2, "leaderElection": {"enabled": true}});
    let values_v1 = values(node, &ns, &mock.url, base.clone());
    helm(&[
        "install",
        &release,
        chart.to_str().unwrap(),
        "-n",
        &ns,
        "-f",
        values_v1.to_str().unwrap(),
        "--wait",
        "--timeout",
        "180s",
    ]);
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    wait("a Lease holder", Duration::from_secs(120), || async {
        holder(&leases).await
    })
    .await;
    let pns: Api<PhoneNumber> = Api::namespaced(client.clone(), &ns);
    let names: Vec<String> = (0..3).map(|i| format!("line-{i}")).collect();
    apply_numbers(&pns, &names).await;
    wait_all_ready(&pns, &names).await;
    let writes = |calls: serde_json::Value| {
        [POST, PATCH, DELETE].map(|e| calls.get(e).and_then(|v| v.as_u64()).unwrap_or(0))
    };
    let before = writes(mock.calls().await);

    // Sample every pod throughout the rollout.
    let done = Arc::new(AtomicBool::new(false));
    let max_acting = Arc::new(AtomicUsize::new(0));
    let samples = Arc::new(AtomicUsize::new(0));
    let monitor = {
        let (done, max_acting, samples) = (done.clone(), max_acting.clone(), samples.clone());
        let (client, ns, release) = (client.clone(), ns.clone(), release.clone());
        tokio::spawn(async move {
            while !done.load(Ordering::SeqCst) {
                let n = acting_now(&client, &ns, &release).await;
                max_acting.fetch_max(n, Ordering::SeqCst);
                samples.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    // Changed args: a new ReplicaSet, rolled out one surge pod at a time.
    let mut v2 = base;
    v2["pollInterval"] = json!("9m");
    let values_v2 = values(node, &ns, &mock.url, v2);
    let (rel, ns2, chart2) = (release.clone(), ns.clone(), chart.clone());
    tokio::task::spawn_blocking(move || {
        helm(&[
            "upgrade",
            &rel,
            chart2.to_str().unwrap(),
            "-n",
            &ns2,
            "-f",
            values_v2.to_str().unwrap(),
            "--wait",
            "--timeout",
            "240s",
        ])
    })
    .await
    .unwrap();
    kubectl_ok(&[
        "rollout",
        "status",
        "-n",
        &ns,
        &format!("deployment/{release}-oneinbox-operator"),
        "--timeout=240s",
    ]);
    // Until the old pods are gone and a new leader acts.
    wait(
        "the old pods gone and one new leader",
        Duration::from_secs(120),
        || async {
            let pods = pods_of(&client, &ns, &release).await;
            let all_new = pods.len() == 2
                && pods.iter().all(|p| {
                    p.spec.as_ref().is_some_and(|s| {
                        s.containers[0]
                            .args
                            .as_ref()
                            .is_some_and(|a| a.iter().any(|x| x == "--poll-interval=9m"))
                    })
                });
            (all_new && acting_now(&client, &ns, &release).await == 1).then_some(())
        },
    )
    .await;
    done.store(true, Ordering::SeqCst);
    monitor.await.unwrap();
    eprintln!(
        "rollout: {} samples of every pod, at most {} acting at once",
        samples.load(Ordering::SeqCst),
        max_acting.load(Ordering::SeqCst)
    );
    assert!(samples.load(Ordering::SeqCst) > 0);
    assert_eq!(
        max_acting.load(Ordering::SeqCst),
        1,
        "pods acting at once, at most, over {} samples",
        samples.load(Ordering::SeqCst)
    );
    wait_all_ready(&pns, &names).await;
    assert_eq!(
        writes(mock.calls().await),
        before,
        "no write by the upgrade"
    );
    assert_eq!(mock.registrations().await.len(), 3);

    delete_all(&pns, &names).await;
    uninstall(&release, &ns);
}
