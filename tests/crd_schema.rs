//! The committed CRD is exactly what the Rust types generate, and carries the promised schema.

// Test code: failing loudly is the point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use oneinbox_operator::crd::{MAX_RECONCILE_TOKEN, generated_crd};
use serde_json::{Value, json};

const COMMITTED: &str = include_str!("../crds/phonenumbers.oneinbox.ai.yaml");

#[test]
fn committed_crd_matches_the_types() {
    let generated = yaml_serde::to_string(&generated_crd()).expect("yaml");
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
    for rule in [
        "!(has(self.providerConfig) && has(self.credentialId))",
        "has(self.providerConfig) || has(self.credentialId)",
    ] {
        assert!(rules.contains(rule), "{rules}");
    }
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
            "Number", "Provider", "State", "Ready", "Stalled", "Reason", "ID", "Age"
        ]
    );
    let stalled = version["additionalPrinterColumns"]
        .as_array()
        .expect("columns")
        .iter()
        .find(|c| c["name"] == "Stalled")
        .expect("Stalled column");
    assert_eq!(
        stalled["jsonPath"],
        r#".status.conditions[?(@.type=="Stalled")].reason"#
    );
    assert!(
        stalled.get("priority").is_none(),
        "shown by plain kubectl get"
    );
}

fn committed() -> Value {
    yaml_serde::from_str(COMMITTED).expect("parse")
}

fn status_schema() -> Value {
    committed()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"].clone()
}

/// Every string in status has a maxLength (or is an enum), so CEL cost estimates and etcd
/// sizes stay bounded; the conditions carry metav1.Condition's bounds.
#[test]
fn every_status_string_is_bounded() {
    fn walk(path: &str, schema: &Value, unbounded: &mut Vec<String>, strings: &mut usize) {
        if schema["type"] == "string" {
            *strings += 1;
            // A date-time is parsed as a timestamp (metav1.Condition bounds it no further).
            if schema.get("maxLength").is_none()
                && schema.get("enum").is_none()
                && schema["format"] != "date-time"
            {
                unbounded.push(path.to_owned());
            }
        }
        if let Some(props) = schema["properties"].as_object() {
            for (name, p) in props {
                walk(&format!("{path}.{name}"), p, unbounded, strings);
            }
        }
        if schema["items"].is_object() {
            walk(&format!("{path}[]"), &schema["items"], unbounded, strings);
        }
    }
    let (mut unbounded, mut strings) = (Vec::new(), 0);
    walk("status", &status_schema(), &mut unbounded, &mut strings);
    assert!(
        unbounded.is_empty(),
        "status strings without maxLength: {unbounded:?}"
    );
    assert_eq!(strings, 15, "update this test when status fields change");

    let status = status_schema();
    let conditions = &status["properties"]["conditions"];
    assert_eq!(conditions["maxItems"], 8);
    let c = &conditions["items"]["properties"];
    assert_eq!(c["type"]["maxLength"], 316);
    assert_eq!(c["reason"]["maxLength"], 1024);
    assert_eq!(c["reason"]["minLength"], 1);
    assert_eq!(c["message"]["maxLength"], 32768);
    assert_eq!(c["status"]["enum"], json!(["True", "False", "Unknown"]));
    assert_eq!(
        status["properties"]["lastHandledReconcileAt"]["maxLength"],
        MAX_RECONCILE_TOKEN
    );
}

/// kubectl explain prints a description as it is: the generated text has whole paragraphs,
/// not the doc comments' line breaks.
#[test]
fn descriptions_are_reflowed_for_kubectl_explain() {
    fn walk(path: &str, v: &Value, out: &mut Vec<(String, String)>) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    match (k.as_str(), x) {
                        ("description", Value::String(d)) => out.push((path.to_owned(), d.clone())),
                        _ => walk(&format!("{path}.{k}"), x, out),
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|x| walk(path, x, out)),
            _ => {}
        }
    }
    let mut descriptions = Vec::new();
    walk("", &committed(), &mut descriptions);
    assert!(descriptions.len() > 40, "{}", descriptions.len());
    for (path, d) in &descriptions {
        for (i, line) in d.split('\n').enumerate().skip(1) {
            let previous = d.split('\n').nth(i - 1).unwrap_or_default();
            assert!(
                line.is_empty() || previous.is_empty() || line.starts_with("- "),
                "{path}: a line break inside a paragraph: {d:?}"
            );
        }
        assert_eq!(d.trim(), d, "{path}");
    }
    let props = &committed()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
        ["properties"];
    assert_eq!(
        props["replacementPolicy"]["description"],
        "What to do when the SIP credentials (providerConfig, the referenced Secret's password, \
         or credentialId) change, which OneInbox can only apply by registering the number \
         again: \"Manual\" (default) reports it with reason ReplacementRequired and keeps the \
         number working; \"Replace\" deregisters and registers the number again."
    );
}
