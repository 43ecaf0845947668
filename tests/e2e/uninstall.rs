//! An uninstall that deletes the CRDs while the operator runs. Deleting the OneInboxAccount CRD
//! releases an account that numbers still use (its in-use finalizer would hold the CRD's
//! deletion forever otherwise). Deleting the PhoneNumber CRD deletes every PhoneNumber, and the
//! operator orphans each one (its registration stays in OneInbox, whatever its
//! `deletionPolicy`), so the CRD goes and no number is released. On a control plane of its
//! own: deleting a CRD would take every other test's objects with it.

use std::time::Duration;

use serde_json::json;

use crate::harness::*;

const NUMBERS: usize = 5;

// Multi-threaded: the body blocks on the shell while the mock's client runs on the other worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_crd_orphans_every_number_and_releases_none() {
    let _ = rustls::crypto::ring::default_provider().install_default(); // the mock's client
    let plane = OwnPlane::up("testenv-uninstall");
    plane.kubectl("apply --server-side -f crds/");
    plane.wait_for(
        "the CRDs to be established",
        "kubectl wait --for=condition=Established --timeout=5s crd/phonenumbers.oneinbox.ai \
         crd/oneinboxaccounts.oneinbox.ai crd/clusteroneinboxaccounts.oneinbox.ai",
        Duration::from_secs(60),
    );
    plane.kubectl("apply -f deploy/namespace.yaml -f deploy/rbac.yaml");
    plane.kubectl(&format!(
        "-n oneinbox-system create secret generic oneinbox-api-key --from-literal=apiKey={API_KEY}"
    ));
    let mock = Mock::start(&[]);
    let operator = plane.operator(&mock);

    plane.kubectl("create namespace uninstall");
    plane.kubectl(
        "-n uninstall create secret generic sip --from-literal=password=pw-uninstall-7d2e",
    );
    // Two of the numbers use an account (on the same key, so that the mock's one workspace
    // holds every registration).
    plane.kubectl(&format!(
        "-n uninstall create secret generic acct-key --from-literal=apiKey={API_KEY}"
    ));
    let account = json!({"apiVersion": "oneinbox.ai/v1alpha1", "kind": "OneInboxAccount",
        "metadata": {"name": "acct", "namespace": "uninstall"},
        "spec": {"apiKeySecretRef": {"name": "acct-key"}}});
    let items: Vec<_> = (0..NUMBERS)
        .map(|i| {
            let mut spec = sip_spec(&number(), "sip");
            spec["deletionPolicy"] = json!("Delete");
            if i < 2 {
                spec["accountRef"] = json!({"kind": "OneInboxAccount", "name": "acct"});
            }
            json!({"apiVersion": "oneinbox.ai/v1alpha1", "kind": "PhoneNumber",
                "metadata": {"name": format!("n{i}"), "namespace": "uninstall"}, "spec": spec})
        })
        .collect();
    let list = json!({"apiVersion": "v1", "kind": "List",
        "items": std::iter::once(account).chain(items).collect::<Vec<_>>()});
    let file = plane.state.join("uninstall-numbers.json");
    std::fs::write(&file, list.to_string()).expect("write the numbers");
    plane.kubectl(&format!("apply -f {}", file.display()));
    plane.wait_for(
        "every number Ready",
        "kubectl -n uninstall wait --for=condition=Ready pn --all --timeout=5s",
        Duration::from_secs(120),
    );
    assert_eq!(mock.registrations().await.len(), NUMBERS);
    plane.wait_for(
        "the account to count its users",
        "test \"$(kubectl -n uninstall get oneinboxaccount acct -o jsonpath={.status.phoneNumbers})\" = 2",
        Duration::from_secs(60),
    );

    // The account CRD first, its account in use by two numbers.
    plane.kubectl("delete crd oneinboxaccounts.oneinbox.ai --wait=false");
    plane.wait_for(
        "the account CRD's deletion",
        "! kubectl get crd oneinboxaccounts.oneinbox.ai",
        Duration::from_secs(120),
    );
    plane.kubectl("delete crd phonenumbers.oneinbox.ai --wait=false");
    plane.wait_for(
        "the CRD's deletion",
        "! kubectl get crd phonenumbers.oneinbox.ai",
        Duration::from_secs(120),
    );

    assert_eq!(
        mock.count(DELETE).await,
        0,
        "an uninstall released a number"
    );
    assert_eq!(mock.registrations().await.len(), NUMBERS);
    let reasons = plane.kubectl(
        "-n uninstall get events.events.k8s.io --no-headers -o custom-columns=REASON:.reason",
    );
    assert_eq!(
        reasons.lines().filter(|r| r.trim() == "Orphaned").count(),
        NUMBERS,
        "one Orphaned event per number:\n{reasons}"
    );
    let log = std::fs::read_to_string(plane.state.join("logs/operator.log")).expect("log");
    assert_eq!(
        log.matches("every PhoneNumber being deleted with it is orphaned")
            .count(),
        1,
        "one log line for the uninstall:\n{}",
        tail(&log, 20)
    );
    assert!(!log.contains(API_KEY) && !log.contains("pw-uninstall-7d2e"));
    drop(operator);
}
