//! The docs are real.
//!
//! - Every `PhoneNumber` (and its Secret) and every Flux `Kustomization` or `GitRepository`
//!   shown in a ```yaml block of README.md or docs/*.md passes a server-side dry-run on the real
//!   control plane (against Flux's CRDs), and every Helm values block renders the chart.
//! - Every ```sh block of README.md and docs/*.md runs as written, in the order a reader follows
//!   them (quickstart, install with kubectl and with Helm, day-2, the credentials runbook,
//!   upgrade, both uninstall paths, the Argo CD patch), against a control plane of its own
//!   (install and uninstall create and delete cluster-wide objects), and what the docs say
//!   happens is checked: the numbers are Ready, kept or deregistered in the mock OneInbox API.
//!   The blocks that cannot run here are listed in `NOT_RUN`, each with the reason; a block that
//!   is neither run nor listed fails the test.

use std::collections::BTreeSet;

use std::process::Command;
use std::time::Duration;

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
            let flux = api.starts_with("kustomize.toolkit.fluxcd.io/")
                || api.starts_with("source.toolkit.fluxcd.io/");
            if flux {
                crate::flux::flux_crds();
            } else if !(api.starts_with("oneinbox.ai/") || (api == "v1" && kind == "Secret")) {
                continue; // Argo CD kinds: their CRDs are not installed here.
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

// ---------------------------------------------------------------------------------------------
// Shell blocks

/// Why the runbook commands of docs/production.md's Alerts section do not run here.
const ALERT_RUNBOOK: &str = "an alert's runbook: it inspects a failing operator or API, which this test does not produce, and NAMESPACE and NAME are placeholders; tests/monitoring.rs checks that every alert links to its section";

/// Shell lines of the docs that cannot run here: (file, line, why).
const NOT_RUN: &[(&str, &str, &str)] = &[
    (
        "README.md",
        "make test",
        "it is the suite this test is part of",
    ),
    (
        "README.md",
        "make node-e2e",
        "the node test is a suite of its own (root, a node of its own); it runs as tests/node/main.rs",
    ),
    (
        "docs/model-test.md",
        "make test",
        "it is the suite this test is part of",
    ),
    (
        "docs/model-test.md",
        "cargo test --all-features --test model",
        "the model test is a test target of its own, not a command to repeat inside the e2e suite",
    ),
    (
        "docs/model-test.md",
        "make model",
        "the long model campaign (about an hour at 1,000,000 cases)",
    ),
    (
        "docs/model-test.md",
        "MODEL_SEED=",
        "replays one model case: a test target of its own",
    ),
    (
        "docs/model-test.md",
        "make mutants",
        "the mutation table: the model gate once per defect, minutes each, not part of make test",
    ),
    (
        "docs/helm.md",
        "helm upgrade oneinbox-operator charts/oneinbox-operator -n oneinbox-system --take-ownership",
        "the upgrade from a chart whose CRDs Helm did not own: tests/e2e/helm_crds.rs runs it on CRDs applied by kubectl",
    ),
    (
        "docs/argocd.md",
        "argocd admin settings resource-overrides",
        "the argocd CLI is not installed here; tests/argocd runs the same scripts as Argo CD does",
    ),
    (
        "docs/argocd.md",
        "argocd app actions run",
        "needs a running Argo CD; tests/argocd runs the action scripts",
    ),
    (
        "docs/migrating.md",
        "export ONEINBOX_API_KEY=oi_sk_...",
        "the migration path (import, apply, switch to Full with a Secret) runs in tests/e2e/import.rs against the mock, with the counts the guide promises",
    ),
    (
        "docs/migrating.md",
        "oneinbox-operator import",
        "the migration path (import, apply, switch to Full with a Secret) runs in tests/e2e/import.rs against the mock, with the counts the guide promises",
    ),
    (
        "docs/migrating.md",
        "kubectl apply -f numbers/",
        "the migration path (import, apply, switch to Full with a Secret) runs in tests/e2e/import.rs against the mock, with the counts the guide promises",
    ),
    (
        "docs/migrating.md",
        "kubectl -n voice get pn",
        "the migration path (import, apply, switch to Full with a Secret) runs in tests/e2e/import.rs against the mock, with the counts the guide promises",
    ),
    (
        "docs/migrating.md",
        "kubectl -n voice create secret generic twilio-sip",
        "the migration path (import, apply, switch to Full with a Secret) runs in tests/e2e/import.rs against the mock, with the counts the guide promises",
    ),
    (
        "docs/production.md",
        "kubectl -n oneinbox-system get deploy,pods",
        ALERT_RUNBOOK,
    ),
    (
        "docs/production.md",
        "kubectl -n oneinbox-system describe pods",
        ALERT_RUNBOOK,
    ),
    (
        "docs/production.md",
        "kubectl -n oneinbox-system logs",
        ALERT_RUNBOOK,
    ),
    (
        "docs/production.md",
        "kubectl -n oneinbox-system get servicemonitor,podmonitor",
        ALERT_RUNBOOK,
    ),
    (
        "docs/production.md",
        "kubectl -n oneinbox-system get lease",
        ALERT_RUNBOOK,
    ),
    (
        "docs/production.md",
        "kubectl -n oneinbox-system get events --field-selector involvedObject.kind=Pod",
        ALERT_RUNBOOK,
    ),
    (
        "docs/production.md",
        "kubectl get phonenumbers -A",
        ALERT_RUNBOOK,
    ),
    ("docs/production.md", "kubectl -n NAMESPACE ", ALERT_RUNBOOK),
];

/// One ```sh block.
struct ShBlock {
    file: String,
    text: String,
}

/// The ```sh blocks of README.md and docs/*.md, in file order.
fn sh_blocks() -> Vec<ShBlock> {
    let mut files = vec!["README.md".to_string()];
    let mut docs: Vec<String> = std::fs::read_dir(repo().join("docs"))
        .expect("docs/")
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "md"))
        .map(|e| format!("docs/{}", e.file_name().to_string_lossy()))
        .collect();
    docs.sort();
    files.extend(docs);
    let mut blocks = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(repo().join(&f)).expect("read");
        let mut current: Option<(String, usize)> = None;
        for line in text.lines() {
            let trimmed = line.trim_start();
            match &mut current {
                None if trimmed.starts_with("```sh") => {
                    current = Some((String::new(), line.len() - trimmed.len()));
                }
                Some((b, _)) if trimmed.starts_with("```") => {
                    blocks.push(ShBlock {
                        file: f.clone(),
                        text: std::mem::take(b),
                    });
                    current = None;
                }
                Some((b, indent)) => {
                    b.push_str(line.get(*indent..).unwrap_or(line.trim_start()));
                    b.push('\n');
                }
                None => {}
            }
        }
    }
    blocks
}

/// A block without comments and blank lines: two copies of one command list compare equal.
fn normalized(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("  #") {
            Some(i) => l[..i].trim_end(),
            None => l.trim_end(),
        })
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The blocks, and which of them have run.
struct Docs {
    blocks: Vec<ShBlock>,
    ran: BTreeSet<String>,
}

impl Docs {
    fn new() -> Docs {
        let blocks = sh_blocks();
        assert!(blocks.len() >= 10, "only {} sh blocks found", blocks.len());
        Docs {
            blocks,
            ran: BTreeSet::new(),
        }
    }

    /// The one block of `file` that contains every needle; marked as run.
    fn take(&mut self, file: &str, needles: &[&str]) -> String {
        self.take_without(file, needles, &[])
    }

    /// The one block of `file` that contains every needle and none of `without`.
    fn take_without(&mut self, file: &str, needles: &[&str], without: &[&str]) -> String {
        let found: Vec<&ShBlock> = self
            .blocks
            .iter()
            .filter(|b| {
                b.file == file
                    && needles.iter().all(|n| b.text.contains(n))
                    && !without.iter().any(|n| b.text.contains(n))
            })
            .collect();
        assert_eq!(
            found.len(),
            1,
            "{file}: {} sh blocks contain {needles:?}",
            found.len()
        );
        let text = found[0].text.clone();
        self.ran.insert(normalized(&text));
        text
    }

    /// Every block ran (or a copy of it did), apart from the lines in NOT_RUN.
    fn assert_all_ran(&self) {
        let mut missing = Vec::new();
        for b in &self.blocks {
            let norm = normalized(&b.text);
            if self.ran.contains(&norm) {
                continue;
            }
            let rest: Vec<&str> = norm
                .lines()
                .filter(|l| {
                    !NOT_RUN
                        .iter()
                        .any(|(f, line, _)| *f == b.file && l.trim_start().starts_with(line))
                })
                .collect();
            if !rest.is_empty() {
                missing.push(format!("{}:\n{}", b.file, rest.join("\n")));
            }
        }
        assert!(
            missing.is_empty(),
            "sh blocks neither run by this test nor listed in NOT_RUN:\n{}",
            missing.join("\n---\n")
        );
    }
}

/// The lines of `block` that may run here: NOT_RUN lines are dropped.
fn runnable(file: &str, block: &str) -> String {
    block
        .lines()
        .filter(|l| {
            !NOT_RUN
                .iter()
                .any(|(f, line, _)| *f == file && l.trim_start().starts_with(line))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The first ```yaml block of `file` that contains `needle`.
fn yaml_block(file: &str, needle: &str) -> String {
    yaml_blocks()
        .into_iter()
        .find(|(f, b)| f.ends_with(file) && b.contains(needle))
        .map(|(_, b)| b)
        .unwrap_or_else(|| panic!("{file}: no yaml block with {needle:?}"))
}

/// Columns of a `kubectl get -o wide` table, without the ones that differ on every run.
fn stable_columns(table: &str) -> Vec<Vec<String>> {
    let mut lines = table.lines().filter(|l| !l.trim().is_empty());
    let header = lines.next().unwrap_or_default();
    // kubectl aligns every cell under its header, and a cell may be empty (STALLED while
    // nothing is stalled): cut rows at the header's column starts, not at white space.
    let mut starts = Vec::new();
    let mut prev_space = true;
    for (i, c) in header.char_indices() {
        if !c.is_whitespace() && prev_space {
            starts.push(i);
        }
        prev_space = c.is_whitespace();
    }
    let cell = |line: &str, k: usize| -> String {
        let from = starts[k].min(line.len());
        let to = starts
            .get(k + 1)
            .copied()
            .unwrap_or(line.len())
            .min(line.len());
        line.get(from..to).unwrap_or_default().trim().to_string()
    };
    let names: Vec<String> = (0..starts.len()).map(|k| cell(header, k)).collect();
    let keep: Vec<usize> = (0..names.len())
        .filter(|&k| !matches!(names[k].as_str(), "ID" | "AGE"))
        .collect();
    std::iter::once(keep.iter().map(|&k| names[k].clone()).collect::<Vec<_>>())
        .chain(lines.map(|l| keep.iter().map(|&k| cell(l, k)).collect()))
        .collect()
}

/// The README's demo table: the un-tagged ``` block right after the quickstart.
fn readme_demo_table() -> String {
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README");
    let start = readme
        .find("\n```\nNAME ")
        .expect("README: demo output block")
        + 5;
    let end = readme[start..].find("```").expect("end of the demo block") + start;
    readme[start..end].to_string()
}

// Multi-threaded: the body blocks on the shell while the mock's client runs on the other worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doc_shell_commands_run_as_written() {
    let _ = rustls::crypto::ring::default_provider().install_default(); // the mock's client
    // Install and uninstall create and delete cluster-wide objects the other e2e tests rely on.
    let plane = OwnPlane::up("testenv-docs");
    let mut docs = Docs::new();
    let work = tempfile::tempdir().expect("tempdir");
    let oneinbox_system_gone = "! kubectl get namespace oneinbox-system";

    // docs/tenancy.md: a cluster account's key Secret, then its rotation, as written.
    plane.sh(&repo(), "kubectl create namespace oneinbox-system", &[]);
    plane.sh(
        &repo(),
        &docs.take_without(
            "docs/tenancy.md",
            &["create secret generic voice-oneinbox"],
            &["oi_sk_new"],
        ),
        &[],
    );
    plane.sh(&repo(), &docs.take("docs/tenancy.md", &["oi_sk_new"]), &[]);
    let key =
        plane.kubectl("-n oneinbox-system get secret voice-oneinbox -o jsonpath={.data.apiKey}");
    assert_eq!(
        key.trim(),
        "b2lfc2tfbmV3",
        "the rotated key (oi_sk_new, base64)"
    );
    plane.sh(
        &repo(),
        "kubectl delete namespace oneinbox-system --wait --timeout=60s",
        &[],
    );

    // Argo CD: the argocd-cm patch merges its keys into an existing argocd-cm.
    plane.sh(
        &repo(),
        "kubectl create namespace argocd && kubectl -n argocd create configmap argocd-cm --from-literal=url=https://argocd.example.com",
        &[],
    );
    plane.sh(
        &repo(),
        &docs.take("docs/argocd.md", &["--patch-file"]),
        &[],
    );
    let cm: Value =
        serde_json::from_str(&plane.kubectl("-n argocd get configmap argocd-cm -o json"))
            .expect("argocd-cm");
    let health = std::fs::read_to_string(repo().join(
        "charts/oneinbox-operator/files/argocd/resource_customizations/oneinbox.ai/PhoneNumber/health.lua",
    ))
    .expect("health.lua");
    assert_eq!(cm["data"]["url"], "https://argocd.example.com", "{cm}");
    assert_eq!(
        cm["data"]["resource.customizations.health.oneinbox.ai_PhoneNumber"].as_str(),
        Some(health.as_str())
    );
    for kind in ["OneInboxAccount", "ClusterOneInboxAccount"] {
        let script = std::fs::read_to_string(repo().join(format!(
            "charts/oneinbox-operator/files/argocd/resource_customizations/oneinbox.ai/{kind}/health.lua"
        )))
        .expect("health.lua");
        assert_eq!(
            cm["data"][format!("resource.customizations.health.oneinbox.ai_{kind}")].as_str(),
            Some(script.as_str()),
            "{kind}"
        );
    }
    assert!(
        cm["data"]["resource.customizations.actions.oneinbox.ai_PhoneNumber"]
            .as_str()
            .is_some_and(|a| a.contains("reconcile-now") && a.contains("discovery.lua")),
        "{cm}"
    );

    // kubectl install (docs/kubectl.md; the README's copy is the same commands).
    plane.sh(
        &repo(),
        &docs.take(
            "docs/kubectl.md",
            &["create secret generic oneinbox-api-key"],
        ),
        &[],
    );
    plane.kubectl("-n oneinbox-system get deployment/oneinbox-operator serviceaccount/oneinbox-operator service/oneinbox-operator");
    plane.kubectl("get clusterrole/oneinbox-operator clusterrolebinding/oneinbox-operator crd/phonenumbers.oneinbox.ai");
    let mock = Mock::start(&[]);
    let operator = plane.operator(&mock);

    // A phone number, then day-2 operations, in the default namespace as written.
    std::fs::write(
        work.path().join("sales-line.yaml"),
        yaml_block("docs/kubectl.md", "name: sales-line"),
    )
    .expect("write");
    let out = plane.sh(
        work.path(),
        &docs.take("docs/kubectl.md", &["kubectl apply -f sales-line.yaml"]),
        &[],
    );
    assert!(
        out.contains("condition met") && out.contains("Available"),
        "{out}"
    );
    assert!(
        out.contains("phoneNumber"),
        "kubectl explain printed no fields: {out}"
    );
    assert_eq!(mock.registrations().await.len(), 1);
    let id = plane.kubectl("get pn sales-line -o jsonpath={.status.phoneNumberId}");
    let day2 = docs
        .take("docs/kubectl.md", &["oneinbox.ai/paused-"])
        .replace("<id>", id.trim());
    plane.sh(&repo(), &day2, &[]);
    let pn: Value = serde_json::from_str(&plane.kubectl("get pn sales-line -o json")).expect("pn");
    assert_eq!(pn["spec"]["deletionPolicy"], "Orphan");
    assert_eq!(
        pn["metadata"]["annotations"]["oneinbox.ai/poll-interval"],
        "2m"
    );
    assert!(
        pn["metadata"]["annotations"]
            .get("oneinbox.ai/paused")
            .is_none()
    );
    plane.kubectl("wait --for=condition=Ready pn/sales-line --timeout=60s");

    // Upgrade, then uninstall keeping the registrations.
    plane.sh(
        &repo(),
        &docs.take_without(
            "docs/kubectl.md",
            &["kubectl apply -k deploy/"],
            &["create secret"],
        ),
        &[],
    );
    plane.sh(
        &repo(),
        &docs.take("docs/kubectl.md", &["while read -r ns name"]),
        &[],
    );
    assert_eq!(
        mock.registrations().await.len(),
        1,
        "the keep-registered uninstall deregistered a number"
    );
    plane.wait_for(
        "CRD deletion",
        "! kubectl get crd phonenumbers.oneinbox.ai",
        Duration::from_secs(60),
    );
    drop(operator);
    plane.wait_for(
        "oneinbox-system deletion",
        oneinbox_system_gone,
        Duration::from_secs(120),
    );

    // kubectl install again, from the README, and uninstall deregistering everything.
    plane.sh(
        &repo(),
        &docs.take("README.md", &["kubectl apply -k deploy/"]),
        &[],
    );
    let mock = Mock::start(&[]);
    let operator = plane.operator(&mock);
    plane.sh(
        work.path(),
        "kubectl apply -f sales-line.yaml && kubectl wait --for=condition=Ready pn/sales-line --timeout=2m",
        &[],
    );
    assert_eq!(mock.registrations().await.len(), 1);
    let deregister = docs.take_without(
        "docs/kubectl.md",
        &["kubectl delete pn -A --all", "kubectl delete -k deploy/"],
        &["while read"],
    );
    assert!(!deregister.contains("Orphan"));
    plane.sh(&repo(), &deregister, &[]);
    assert!(
        mock.registrations().await.is_empty(),
        "the deregistering uninstall left {:?}",
        mock.registrations().await
    );
    drop(operator);
    plane.wait_for(
        "oneinbox-system deletion",
        oneinbox_system_gone,
        Duration::from_secs(120),
    );

    // Helm install (docs/helm.md; the README's copy is the same commands).
    plane.sh(&repo(), &docs.take("docs/helm.md", &["helm install"]), &[]);
    plane.kubectl(
        "-n oneinbox-system get deployment/oneinbox-operator crd/phonenumbers.oneinbox.ai",
    );
    let mock = Mock::start(&[]);
    let operator = plane.operator(&mock);

    // The README's resource, in namespace voice; then Flux's commands and the runbook.
    plane.sh(
        &repo(),
        "kubectl create namespace voice && kubectl -n voice create secret generic twilio-sip --from-literal=password=first-password",
        &[],
    );
    std::fs::write(
        work.path().join("voice.yaml"),
        yaml_block("README.md", "replacementPolicy: Manual"),
    )
    .expect("write");
    plane.sh(work.path(), "kubectl apply -f voice.yaml", &[]);
    plane.sh(&repo(), &docs.take("docs/flux.md", &["kubectl wait"]), &[]);
    let before = plane.kubectl("-n voice get pn sales-line -o jsonpath={.status.phoneNumberId}");
    plane.sh(
        &repo(),
        "kubectl -n voice create secret generic twilio-sip --from-literal=password=second-password --dry-run=client -o yaml | kubectl apply -f -",
        &[],
    );
    plane.wait_for(
        "ReplacementRequired",
        r#"kubectl -n voice get pn sales-line -o jsonpath='{.status.conditions[?(@.type=="Stalled")].reason}' | grep -qx ReplacementRequired"#,
        Duration::from_secs(60),
    );
    let list = plane.sh(
        &repo(),
        &docs.take("docs/production.md", &["custom-columns"]),
        &[],
    );
    assert!(
        list.lines()
            .any(|l| l.contains("sales-line") && l.contains("ReplacementRequired")),
        "{list}"
    );
    let runbook = plane.sh(
        &repo(),
        &docs.take("docs/production.md", &["replacementPolicy\":\"Replace"]),
        &[],
    );
    assert!(
        runbook.contains("Replacing") && runbook.contains("Registered"),
        "{runbook}"
    );
    let after = plane.kubectl("-n voice get pn sales-line -o jsonpath={.status.phoneNumberId}");
    assert_ne!(before.trim(), after.trim(), "no new registration");
    let regs = mock.registrations().await;
    assert_eq!(regs.len(), 1, "{regs:?}");
    assert_eq!(regs[0]["id"].as_str(), Some(after.trim()));

    // Helm upgrade, then uninstall deregistering every number; Helm keeps the CRD.
    plane.sh(
        &repo(),
        &docs.take_without("docs/helm.md", &["helm upgrade"], &["--take-ownership"]),
        &[],
    );
    let uninstall = docs.take("docs/helm.md", &["helm uninstall"]);
    let (crd_delete, rest): (Vec<&str>, Vec<&str>) = uninstall
        .lines()
        .partition(|l| l.contains("kubectl delete crd"));
    plane.sh(&repo(), &rest.join("\n"), &[]);
    assert!(
        mock.registrations().await.is_empty(),
        "{:?}",
        mock.registrations().await
    );
    // Kept by helm uninstall (crds.keep).
    plane.kubectl("get crd phonenumbers.oneinbox.ai oneinboxaccounts.oneinbox.ai clusteroneinboxaccounts.oneinbox.ai");
    assert_eq!(crd_delete.len(), 1, "{uninstall}");
    plane.sh(&repo(), crd_delete[0], &[]);
    plane.wait_for(
        "CRD deletion",
        "! kubectl get crd phonenumbers.oneinbox.ai",
        Duration::from_secs(60),
    );
    drop(operator);
    plane.wait_for(
        "oneinbox-system deletion",
        oneinbox_system_gone,
        Duration::from_secs(120),
    );

    // Quickstart last: `make demo`, whose table must be the README's, then `make demo-down`
    // (which stops this control plane too).
    let quickstart = runnable("README.md", &docs.take("README.md", &["make demo"]));
    let demo_env = [
        ("DEMO_MOCK_PORT", free_port().to_string()),
        ("DEMO_ADMIN_PORT", free_port().to_string()),
    ];
    let demo_env: Vec<(&str, &str)> = demo_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let out = plane.sh(&repo(), &quickstart, &demo_env);
    let table_start = out.find("NAME ").expect("make demo printed no table");
    let printed: String = out[table_start..]
        .lines()
        .take_while(|l| {
            !l.trim().is_empty() && !l.starts_with("Demo running") && !l.starts_with("make")
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(
        stable_columns(&printed),
        stable_columns(&readme_demo_table()),
        "README's demo output differs from what make demo prints:\n{printed}"
    );
    plane.sh(&repo(), "make demo-down", &demo_env);

    docs.assert_all_ran();
}
