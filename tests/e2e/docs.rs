//! The manifests in the docs are real: every `PhoneNumber` (and its Secret) shown in a ```yaml
//! block of README.md or docs/*.md passes a server-side dry-run on the real control plane, and
//! every Helm values block renders the chart.

use std::process::Command;

use serde_json::Value;

use crate::harness::*;

/// (file, block text) of every ```yaml fenced block.
fn yaml_blocks() -> Vec<(String, String)> {
    let mut files = vec![repo().join("README.md")];
    for e in std::fs::read_dir(repo().join("docs"))
        .expect("docs/")
        .flatten()
    {
        if e.path().extension().is_some_and(|x| x == "md") {
            files.push(e.path());
        }
    }
    let mut blocks = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).expect("read");
        let mut current: Option<String> = None;
        for line in text.lines() {
            let trimmed = line.trim_start();
            match (&mut current, trimmed) {
                (None, t) if t.starts_with("```yaml") => current = Some(String::new()),
                (Some(b), t) if t.starts_with("```") => {
                    blocks.push((f.display().to_string(), std::mem::take(b)));
                    current = None;
                }
                (Some(b), _) => {
                    b.push_str(line);
                    b.push('\n');
                }
                _ => {}
            }
        }
    }
    blocks
}

#[test]
fn doc_manifests_pass_a_server_side_dry_run() {
    cluster();
    let ns = format!(
        "e2e-docs-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..6]
    );
    kubectl_ok(&["create", "namespace", &ns]);
    let mut applied = 0;
    let mut helm_values = 0;
    let mut failures = Vec::new();
    for (file, block) in yaml_blocks() {
        let docs: Vec<Value> = yaml_serde::Deserializer::from_str(&block)
            .filter_map(|d| serde::Deserialize::deserialize(d).ok())
            .collect();
        let is_object = |d: &Value| d.get("apiVersion").is_some() && d.get("kind").is_some();
        if file.ends_with("helm.md") && docs.len() == 1 && !is_object(&docs[0]) {
            // A Helm values block: it must render the chart.
            let values = std::env::temp_dir().join(format!("{ns}-values-{helm_values}.yaml"));
            std::fs::write(&values, &block).expect("write");
            let out = Command::new(bin("helm"))
                .args(["template", "docs-check"])
                .arg(repo().join("charts/oneinbox-operator"))
                .arg("-f")
                .arg(&values)
                .output()
                .expect("helm");
            if !out.status.success() {
                failures.push(format!(
                    "{file}: values block does not render: {}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            helm_values += 1;
            continue;
        }
        for mut doc in docs.into_iter().filter(is_object) {
            let api = doc["apiVersion"].as_str().unwrap_or_default().to_string();
            let kind = doc["kind"].as_str().unwrap_or_default().to_string();
            if !(api.starts_with("oneinbox.ai/") || (api == "v1" && kind == "Secret")) {
                continue; // Argo CD / Flux kinds: their CRDs are not installed here.
            }
            doc["metadata"]["namespace"] = Value::String(ns.clone());
            let path = std::env::temp_dir().join(format!("{ns}-{applied}.json"));
            std::fs::write(&path, doc.to_string()).expect("write");
            let out = kubectl(&[
                "apply",
                "--dry-run=server",
                "-f",
                path.to_str().unwrap_or_default(),
            ]);
            if !out.status.success() {
                failures.push(format!(
                    "{file}: {kind} {}: {}",
                    doc["metadata"]["name"],
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            if kind == "PhoneNumber" {
                applied += 1;
            }
        }
    }
    let _ = kubectl(&["delete", "namespace", &ns, "--wait=false"]);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(
        applied >= 4,
        "only {applied} PhoneNumber manifests found in the docs"
    );
    assert!(
        helm_values >= 1,
        "no Helm values block found in docs/helm.md"
    );
}
