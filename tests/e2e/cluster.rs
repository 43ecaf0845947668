//! The test world itself: a v1.36 server, a working namespace controller, RBAC that denies a
//! user with no bindings.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::*;

#[test]
fn server_is_kubernetes_1_36() {
    cluster();
    let out = kubectl_ok(&["version", "-o", "json"]);
    let v: Value = serde_json::from_str(&out).expect("json");
    let server = v["serverVersion"]["gitVersion"]
        .as_str()
        .unwrap_or_default();
    assert!(server.starts_with("v1.36."), "server version {server}");
}

#[test]
fn namespace_deletion_completes() {
    cluster();
    let ns = format!(
        "e2e-nsdel-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..6]
    );
    kubectl_ok(&["create", "namespace", &ns]);
    kubectl_ok(&["-n", &ns, "create", "configmap", "x", "--from-literal=a=b"]);
    kubectl_ok(&["delete", "namespace", &ns, "--wait=false"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while kubectl(&["get", "namespace", &ns]).status.success() {
        assert!(
            Instant::now() < deadline,
            "namespace {ns} still exists: is the namespace controller running?"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn a_user_without_bindings_is_denied() {
    cluster();
    let out = kubectl(&["--context", "nobody", "get", "phonenumbers", "-A"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("forbidden"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The operator identity can list PhoneNumbers but not, say, ConfigMaps.
    let out = kubectl(&[
        "--context",
        "operator",
        "auth",
        "can-i",
        "list",
        "phonenumbers.oneinbox.ai",
        "-A",
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "yes");
    let out = kubectl(&[
        "--context",
        "operator",
        "auth",
        "can-i",
        "list",
        "configmaps",
        "-A",
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "no");
}
