//! Chart values whose default depends on the release's history, checked with real `helm install`
//! and `helm upgrade` (a control plane of its own: the release owns cluster-wide objects).

use serde_json::Value;

use crate::harness::*;
use crate::helm_crds::{CHART, NAMESPACE, RELEASE, install};

/// The operator's arguments in the release's Deployment.
fn operator_args(plane: &OwnPlane) -> Vec<String> {
    let out = plane.kubectl(&format!("get deployment {RELEASE} -n {NAMESPACE} -o json"));
    let d: Value = serde_json::from_str(&out).expect("deployment json");
    d["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().unwrap_or_default().to_owned())
        .collect()
}

fn operator_key_flag(plane: &OwnPlane) -> Option<String> {
    operator_args(plane)
        .into_iter()
        .find(|a| a.starts_with("--operator-key-namespaces"))
}

/// `operatorKeyNamespaces: null` (the default): a new install denies by default; an upgrade
/// keeps what the running release was given, so a release from before the value (no flag)
/// keeps serving every namespace, and one installed with the default keeps denying.
#[test]
fn the_operator_key_denies_by_default_on_install_and_an_upgrade_keeps_what_ran() {
    let plane = OwnPlane::up("testenv-helm-opkey");
    install(&plane, "");
    let deny = Some("--operator-key-namespaces=oneinbox.ai/operator-key=allowed".to_owned());
    assert_eq!(
        operator_key_flag(&plane),
        deny,
        "a new install denies by default"
    );

    let upgrade = |set: &str| {
        plane.sh(
            &repo(),
            &format!("helm upgrade {RELEASE} {CHART} -n {NAMESPACE} {set}"),
            &[],
        );
    };
    // --reset-values: the chart's defaults (null), not the last release's values.
    upgrade("--reset-values");
    assert_eq!(operator_key_flag(&plane), deny, "kept by an upgrade");

    // "" serves every namespace; a release from before the value looks the same (no flag).
    upgrade("--set-string operatorKeyNamespaces=");
    assert_eq!(operator_key_flag(&plane), None, "\"\": every namespace");
    upgrade("--reset-values");
    assert_eq!(
        operator_key_flag(&plane),
        None,
        "an upgrade of a release without the flag keeps serving every namespace"
    );
}
