//! Helm owns the CRDs (`crds.enabled`, the default; templates/crds.yaml): `helm upgrade` to a
//! chart whose CRD has a new field serves that field, and `helm uninstall` with `crds.keep`
//! leaves the CRDs and every PhoneNumber. Each on a control plane of its own: the release owns
//! cluster-wide CRDs that every other e2e test applies from crds/ with kubectl.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::*;

pub(crate) const CHART: &str = "charts/oneinbox-operator";
pub(crate) const RELEASE: &str = "oneinbox-operator";
pub(crate) const NAMESPACE: &str = "oneinbox-system";
const CRDS: [&str; 3] = [
    "phonenumbers.oneinbox.ai",
    "oneinboxaccounts.oneinbox.ai",
    "clusteroneinboxaccounts.oneinbox.ai",
];

/// `kubectl get <what> -o json`, parsed.
fn get_json(plane: &OwnPlane, what: &str) -> Value {
    serde_json::from_str(&plane.kubectl(&format!("get {what} -o json"))).expect("kubectl json")
}

/// Installs the chart from the repository, with `set` values, and waits until its CRDs are
/// Established; checks that the release, not kubectl, owns them.
pub(crate) fn install(plane: &OwnPlane, set: &str) {
    plane.kubectl(&format!("create namespace {NAMESPACE}"));
    plane.sh(
        &repo(),
        &format!("helm install {RELEASE} {CHART} -n {NAMESPACE} {set}"),
        &[],
    );
    plane.wait_for(
        "the chart's CRDs to be established",
        &format!(
            "kubectl wait --for=condition=Established --timeout=5s {}",
            CRDS.map(|c| format!("crd/{c}")).join(" ")
        ),
        Duration::from_secs(60),
    );
    let manifest = plane.sh(
        &repo(),
        &format!("helm get manifest {RELEASE} -n {NAMESPACE}"),
        &[],
    );
    assert_eq!(
        manifest.matches("kind: CustomResourceDefinition").count(),
        CRDS.len(),
        "the release holds the CRDs"
    );
    for crd in CRDS {
        let annotations = &get_json(plane, &format!("crd/{crd}"))["metadata"]["annotations"];
        assert_eq!(annotations["meta.helm.sh/release-name"], RELEASE, "{crd}");
    }
}

/// A PhoneNumber of `namespace` (no operator runs here: only the API server's view matters).
fn phone_number(name: &str, namespace: &str, extra: Value) -> String {
    json!({"apiVersion": "oneinbox.ai/v1alpha1", "kind": "PhoneNumber",
        "metadata": {"name": name, "namespace": namespace},
        "spec": with(credential_spec(&number()), extra)})
    .to_string()
}

#[test]
fn helm_upgrade_with_a_crd_change_serves_the_new_field() {
    let plane = OwnPlane::up("testenv-helm-upgrade");
    install(&plane, "");

    // The next chart version: the PhoneNumber CRD gains spec.upgradeProbe.
    let next = tempfile::tempdir().expect("tempdir");
    let chart = next.path().join("oneinbox-operator");
    plane.sh(&repo(), &format!("cp -r {CHART} {}", chart.display()), &[]);
    let crds_file = chart.join("templates/crds.yaml");
    let crds = std::fs::read_to_string(&crds_file).expect("templates/crds.yaml");
    let pn = crds
        .find("  name: phonenumbers.oneinbox.ai\n")
        .expect("the PhoneNumber CRD");
    let spec = pn + crds[pn..].find("openAPIV3Schema").expect("schema");
    let props = spec
        + crds[spec..]
            .find("\n            properties:\n")
            .expect("spec")
        + 1;
    let at = props + "            properties:\n".len();
    let changed = format!(
        "{}              upgradeProbe:\n                description: A field of the next chart version.\n                type: string\n{}",
        &crds[..at],
        &crds[at..]
    );
    std::fs::write(&crds_file, changed).expect("write");
    let chart_yaml = chart.join("Chart.yaml");
    let meta = std::fs::read_to_string(&chart_yaml).expect("Chart.yaml");
    assert!(meta.contains("\nversion: 0.1.0\n"), "{meta}");
    std::fs::write(
        &chart_yaml,
        meta.replace("\nversion: 0.1.0\n", "\nversion: 0.1.1-upgrade-probe\n"),
    )
    .expect("write");

    plane.kubectl("create namespace upgrade");
    let file = plane.state.join("upgrade-probe.json");
    std::fs::write(
        &file,
        phone_number("probe", "upgrade", json!({"upgradeProbe": "served"})),
    )
    .expect("write");
    let apply = format!("kubectl apply --server-side -f {}", file.display());
    // Before the upgrade the API server does not know the field.
    let before = plane.sh(&repo(), &format!("! {apply} 2>&1"), &[]);
    assert!(
        before.contains(".spec.upgradeProbe: field not declared in schema"),
        "{before}"
    );

    plane.sh(
        &repo(),
        &format!("helm upgrade {RELEASE} {} -n {NAMESPACE}", chart.display()),
        &[],
    );
    let schema = &get_json(&plane, "crd/phonenumbers.oneinbox.ai")["spec"]["versions"][0]["schema"]
        ["openAPIV3Schema"]["properties"]["spec"]["properties"]["upgradeProbe"];
    assert_eq!(schema["type"], "string", "the upgrade updated the CRD");
    // The API server serves a new schema shortly after the CRD's update.
    plane.wait_for(
        "the new field to be accepted",
        &apply,
        Duration::from_secs(30),
    );
    let stored = get_json(&plane, "pn probe -n upgrade");
    assert_eq!(stored["spec"]["upgradeProbe"], "served", "{stored}");
    let revision = plane.sh(
        &repo(),
        &format!("helm history {RELEASE} -n {NAMESPACE} -o json"),
        &[],
    );
    let history: Value = serde_json::from_str(revision.trim()).expect("history");
    assert_eq!(history.as_array().map(Vec::len), Some(2), "{history}");
    assert_eq!(history[1]["chart"], "oneinbox-operator-0.1.1-upgrade-probe");
}

#[test]
fn helm_uninstall_with_crds_keep_leaves_the_crds_and_every_phonenumber() {
    const NUMBERS: usize = 5;
    let plane = OwnPlane::up("testenv-helm-keep");
    install(&plane, "--set crds.keep=true");
    let crd_uids: BTreeMap<&str, Value> = CRDS
        .iter()
        .map(|c| {
            let crd = get_json(&plane, &format!("crd/{c}"));
            assert_eq!(
                crd["metadata"]["annotations"]["helm.sh/resource-policy"], "keep",
                "{c}"
            );
            (*c, crd["metadata"]["uid"].clone())
        })
        .collect();

    plane.kubectl("create namespace keep");
    let items: Vec<Value> = (0..NUMBERS)
        .map(|i| {
            serde_json::from_str(&phone_number(&format!("n{i}"), "keep", json!({}))).expect("json")
        })
        .collect();
    let file = plane.state.join("keep-numbers.json");
    std::fs::write(
        &file,
        json!({"apiVersion": "v1", "kind": "List", "items": items}).to_string(),
    )
    .expect("write");
    plane.kubectl(&format!("apply -f {}", file.display()));
    let uids = |plane: &OwnPlane| -> BTreeMap<String, (Value, Value)> {
        get_json(plane, "pn -n keep")["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|p| {
                (
                    p["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    (
                        p["metadata"]["uid"].clone(),
                        p["metadata"]["deletionTimestamp"].clone(),
                    ),
                )
            })
            .collect()
    };
    let before = uids(&plane);
    assert_eq!(before.len(), NUMBERS);

    let out = plane.sh(
        &repo(),
        &format!("helm uninstall {RELEASE} -n {NAMESPACE} --wait"),
        &[],
    );
    for crd in CRDS {
        assert!(
            out.contains(&format!("[CustomResourceDefinition] {crd}")),
            "helm lists {crd} as kept:\n{out}"
        );
    }
    // The release is gone...
    plane.sh(
        &repo(),
        &format!(
            "! helm status {RELEASE} -n {NAMESPACE} && ! kubectl -n {NAMESPACE} get deployment/{RELEASE}"
        ),
        &[],
    );
    // ...its CRDs are not (the same objects, not deleted), nor is any PhoneNumber.
    for (crd, uid) in &crd_uids {
        let now = get_json(&plane, &format!("crd/{crd}"));
        assert_eq!(&now["metadata"]["uid"], uid, "{crd}");
        assert!(now["metadata"]["deletionTimestamp"].is_null(), "{crd}");
    }
    let after = uids(&plane);
    assert_eq!(after, before, "every PhoneNumber, none being deleted");
    assert!(after.values().all(|(_, deleting)| deleting.is_null()));
}

/// docs/helm.md's upgrade from a chart that shipped `crds/` (CRDs installed outside the
/// release, as `kubectl apply -f crds/` does): `--take-ownership` makes the release own them,
/// and no object of theirs is touched.
#[test]
fn helm_upgrade_take_ownership_adopts_crds_applied_by_kubectl() {
    let upgrade = format!("helm upgrade {RELEASE} {CHART} -n {NAMESPACE} --take-ownership");
    let doc = std::fs::read_to_string(repo().join("docs/helm.md")).expect("docs/helm.md");
    assert!(doc.contains(&upgrade), "docs/helm.md gives {upgrade:?}");
    let plane = OwnPlane::up("testenv-helm-adopt");
    plane.kubectl("apply --server-side -f crds/");
    plane.wait_for(
        "the CRDs to be established",
        &format!(
            "kubectl wait --for=condition=Established --timeout=5s {}",
            CRDS.map(|c| format!("crd/{c}")).join(" ")
        ),
        Duration::from_secs(60),
    );
    plane.kubectl(&format!("create namespace {NAMESPACE}"));
    // The release as the earlier chart left it, without user values: a chart without the CRD
    // template (its CRDs were in crds/, applied above as Helm did).
    let earlier = tempfile::tempdir().expect("tempdir");
    let chart = earlier.path().join("oneinbox-operator");
    plane.sh(
        &repo(),
        &format!(
            "cp -r {CHART} {c} && rm {c}/templates/crds.yaml && helm install {RELEASE} {c} -n {NAMESPACE}",
            c = chart.display()
        ),
        &[],
    );
    plane.kubectl("create namespace adopt");
    let file = plane.state.join("adopt-number.json");
    std::fs::write(&file, phone_number("kept", "adopt", json!({}))).expect("write");
    plane.kubectl(&format!("apply -f {}", file.display()));
    let uid = get_json(&plane, "pn kept -n adopt")["metadata"]["uid"].clone();
    let crd_uid = get_json(&plane, "crd/phonenumbers.oneinbox.ai")["metadata"]["uid"].clone();

    plane.sh(&repo(), &upgrade, &[]);
    let manifest = plane.sh(
        &repo(),
        &format!("helm get manifest {RELEASE} -n {NAMESPACE}"),
        &[],
    );
    assert_eq!(
        manifest.matches("kind: CustomResourceDefinition").count(),
        CRDS.len()
    );
    for crd in CRDS {
        let meta = &get_json(&plane, &format!("crd/{crd}"))["metadata"];
        assert_eq!(
            meta["annotations"]["meta.helm.sh/release-name"], RELEASE,
            "{crd}"
        );
        assert_eq!(
            meta["annotations"]["helm.sh/resource-policy"], "keep",
            "{crd}"
        );
        assert_eq!(
            meta["labels"]["app.kubernetes.io/managed-by"], "Helm",
            "{crd}"
        );
    }
    assert_eq!(
        get_json(&plane, "crd/phonenumbers.oneinbox.ai")["metadata"]["uid"],
        crd_uid,
        "the same CRD, adopted, not replaced"
    );
    let number = get_json(&plane, "pn kept -n adopt");
    assert_eq!(number["metadata"]["uid"], uid);
    assert!(number["metadata"]["deletionTimestamp"].is_null());
}
