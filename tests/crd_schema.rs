//! The committed CRD is exactly what the Rust types generate, and carries the promised schema.

use kube::CustomResourceExt;
use oneinbox_operator::crd::PhoneNumber;

const COMMITTED: &str = include_str!("../crds/phonenumbers.oneinbox.ai.yaml");

#[test]
fn committed_crd_matches_the_types() {
    let generated = yaml_serde::to_string(&PhoneNumber::crd()).expect("yaml");
    assert!(
        generated == COMMITTED,
        "crds/phonenumbers.oneinbox.ai.yaml is stale: run `make crds` and commit the result"
    );
}

#[test]
fn schema_has_the_admission_rules() {
    let crd: serde_json::Value = yaml_serde::from_str(COMMITTED).expect("parse");
    let version = &crd["spec"]["versions"][0];
    let spec = &version["schema"]["openAPIV3Schema"]["properties"]["spec"];
    let props = &spec["properties"];
    assert_eq!(props["phoneNumber"]["pattern"], r"^\+[1-9][0-9]{1,14}$");
    assert_eq!(
        props["provider"]["enum"],
        serde_json::json!(["twilio", "telnyx"])
    );
    let rules = spec["x-kubernetes-validations"].to_string();
    assert!(
        rules.contains("has(self.providerConfig) != has(self.credentialId)"),
        "{rules}"
    );
    for immutable in ["phoneNumber", "provider"] {
        assert!(
            props[immutable]["x-kubernetes-validations"]
                .to_string()
                .contains("self == oldSelf")
        );
    }
    // Every spec field is documented (kubectl explain).
    for (name, p) in props.as_object().expect("props") {
        assert!(
            p["description"].as_str().is_some_and(|d| !d.is_empty()),
            "{name} has no description"
        );
    }
    assert_eq!(version["subresources"]["status"], serde_json::json!({}));
    let conditions =
        &version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]["conditions"];
    assert_eq!(conditions["x-kubernetes-list-type"], "map");
    let columns: Vec<&str> = version["additionalPrinterColumns"]
        .as_array()
        .expect("columns")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(
        columns,
        [
            "Number", "Provider", "State", "Ready", "Reason", "ID", "Age"
        ]
    );
}
