//! 3.2: two replicas with leader election on the node. Exactly one pod acts (its
//! `oneinbox_operator_leader` metric, read on the pod IP, against the Lease's holder); deleting
//! the leader pod hands the Lease to the standby, which makes new PhoneNumbers Ready, and no
//! number is registered twice. Not checked here: the mock's call log per pod (both pods use the
//! same key, so the log cannot tell them apart); tests/e2e/fencing.rs checks that with processes.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, Patch, PatchParams};
use oneinbox_operator::crd::PhoneNumber;
use serde_json::json;

use crate::harness::*;
use crate::*;

/// The pod holding the Lease, once one does (the identity is `<pod name>-<8 hex digits>`).
pub(crate) async fn holder(leases: &Api<Lease>) -> Option<String> {
    leases
        .list(&Default::default())
        .await
        .ok()?
        .items
        .into_iter()
        .find_map(|l| l.spec.and_then(|s| s.holder_identity))
        .and_then(|h| h.rsplit_once('-').map(|(pod, _)| pod.to_string()))
        .filter(|h| !h.is_empty())
}

/// `oneinbox_operator_leader` of a pod, read on its pod IP (the host is on the pod network).
pub(crate) async fn leader_metric(pod: &k8s_openapi::api::core::v1::Pod) -> Option<u64> {
    let (_, text) = admin_get(pod, "/metrics").await?;
    text.lines()
        .find(|l| l.starts_with("oneinbox_operator_leader "))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// Running pods of the release, and those that report themselves leader.
async fn leaders(client: &kube::Client, ns: &str, release: &str) -> (usize, Vec<String>) {
    let mut running = 0;
    let mut acting = Vec::new();
    for p in pods_of(client, ns, release).await {
        // Readiness is not required: a new leader is briefly unready while its caches list.
        let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
        if p.metadata.deletion_timestamp.is_some() || phase != Some("Running") {
            continue;
        }
        running += 1;
        if leader_metric(&p).await == Some(1) {
            acting.push(p.metadata.name.clone().unwrap_or_default());
        }
    }
    (running, acting)
}

/// Wait until the release has no pod named `pod` (a deleted pod has terminated).
pub(crate) async fn wait_pod_gone(
    client: &kube::Client,
    ns: &str,
    release: &str,
    pod: &str,
    timeout: Duration,
) {
    wait(&format!("pod {pod} to be gone"), timeout, || async {
        let pods = pods_of(client, ns, release).await;
        (!pods.iter().any(|p| p.metadata.name.as_deref() == Some(pod))).then_some(())
    })
    .await;
}

pub(crate) async fn apply_numbers(pns: &Api<PhoneNumber>, names: &[String]) {
    for n in names {
        let body = json!({"apiVersion": "oneinbox.ai/v1alpha1", "kind": "PhoneNumber",
                          "metadata": {"name": n}, "spec": sip_spec(&number(), "sip")});
        pns.patch(n, &PatchParams::apply("e2e"), &Patch::Apply(&body))
            .await
            .expect("apply PhoneNumber");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standby_takes_over_when_the_leader_pod_is_deleted() {
    let node = node();
    let client = admin_client().await;
    let sip_password = "pw-failover-8d21c6e0";
    let ns = prepare_namespace(&client, "failover", sip_password).await;
    let mock = Mock::start_on(&format!("{}:0", node.ip), &["--api-key", API_KEY]);
    let release = format!("oi-{}", &ns[ns.len() - 6..]);
    let values = values(
        node,
        &ns,
        &mock.url,
        json!({"replicas": 2, "leaderElection": {"enabled": true}}),
    );
    // No --wait: a standby's readiness is not what this test is about.
    helm(&[
        "install",
        &release,
        repo().join("charts/oneinbox-operator").to_str().unwrap(),
        "-n",
        &ns,
        "-f",
        values.to_str().unwrap(),
    ]);
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    wait("a Lease holder", Duration::from_secs(120), || async {
        holder(&leases).await
    })
    .await;
    let pns: Api<PhoneNumber> = Api::namespaced(client.clone(), &ns);
    let before: Vec<String> = (0..3).map(|i| format!("before-{i}")).collect();
    apply_numbers(&pns, &before).await;
    wait_all_ready(&pns, &before).await;
    // Both pods run; exactly one acts, the Lease's holder.
    let (running, acting) = wait("two running pods", Duration::from_secs(120), || async {
        let (r, a) = leaders(&client, &ns, &release).await;
        (r == 2).then_some((r, a))
    })
    .await;
    assert_eq!(running, 2);
    let first = holder(&leases).await.expect("a Lease holder");
    let restarts: Vec<i32> = pods_of(&client, &ns, &release)
        .await
        .iter()
        .filter_map(|p| {
            p.status
                .as_ref()?
                .container_statuses
                .as_ref()?
                .first()
                .map(|c| c.restart_count)
        })
        .collect();
    assert_eq!(
        acting,
        vec![first.clone()],
        "only the Lease holder acts; restarts {restarts:?}"
    );

    // The leader pod is deleted (SIGTERM: it releases the Lease); the standby takes it.
    kubectl_ok(&["delete", "pod", "-n", &ns, &first, "--wait=false"]);
    let second = wait(
        "the standby to hold the Lease",
        Duration::from_secs(60),
        || async { holder(&leases).await.filter(|h| *h != first) },
    )
    .await;
    let after: Vec<String> = (0..2).map(|i| format!("after-{i}")).collect();
    apply_numbers(&pns, &after).await;
    wait_all_ready(&pns, &after).await;
    wait_all_ready(&pns, &before).await;
    // The deleted pod is gone; of the pods running now, only the new holder acts.
    wait_pod_gone(&client, &ns, &release, &first, Duration::from_secs(90)).await;
    let (_, acting) = leaders(&client, &ns, &release).await;
    assert_eq!(acting, vec![second], "only the new Lease holder acts");
    // Every number registered exactly once.
    assert_eq!(mock.registrations().await.len(), 5);
    assert_eq!(mock.count(POST).await, 5, "{}", mock.calls().await);
    let logs = kubectl_ok(&[
        "logs",
        "-n",
        &ns,
        "-l",
        &format!("app.kubernetes.io/instance={release}"),
    ]);
    for s in [API_KEY, sip_password] {
        assert!(!logs.contains(s), "secret {s:?} in a pod's log");
    }

    let all: Vec<String> = before.iter().chain(&after).cloned().collect();
    delete_all(&pns, &all).await;
    uninstall(&release, &ns);
}
