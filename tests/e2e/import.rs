//! `oneinbox-operator import` round trip: registrations made directly in the mock, imported as
//! manifests, applied with kubectl, Ready under Observe with no OneInbox write; then three of
//! them switched to Full with credentials, one PATCH each only where the spec differs. Also the
//! refusals that write nothing (a wrong key, a non-empty output directory) and the skip of
//! numbers the cluster already manages.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::*;

const PASSWORD: &str = "import-sip-password-7c41";

fn import(mock: &Mock, ns: &str, key: &str, extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_oneinbox-operator"))
        .args(["import", "--api-url", &mock.url, "--allow-insecure-http"])
        .args(["--namespace", ns, "--page-size", "10"])
        .args(extra)
        .env("ONEINBOX_API_KEY", key)
        .env_remove("ONEINBOX_API_KEY_FILE")
        .env_remove("KUBECONFIG")
        .output()
        .expect("run import")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[tokio::test]
async fn imported_numbers_are_observed_with_no_writes_and_full_patches_only_what_differs() {
    let w = World::start("import").await;
    // 25 registrations made outside the cluster, with varied fields.
    let mut regs: Vec<(String, String)> = Vec::new();
    let http = reqwest::Client::new();
    for i in 0..25 {
        let num = number();
        let mut body = json!({
            "phone_number": num, "provider": if i % 2 == 0 { "twilio" } else { "telnyx" },
            "agent_id": AGENT, "credential_id": CREDENTIAL,
        });
        if i % 2 == 0 {
            body["friendly_name"] = json!(format!("Line {i}"));
        }
        if i % 3 == 0 {
            body["inbound_routing"] =
                json!({"fallback": {"agent_id": AGENT2}, "voicemail_message": "Call back later"});
        }
        let reg: Value = http
            .post(format!("{}/v1/phone-numbers", w.mock.url))
            .bearer_auth(API_KEY)
            .json(&body)
            .send()
            .await
            .expect("POST")
            .json()
            .await
            .expect("json");
        regs.push((num, reg["id"].as_str().expect("id").to_string()));
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let out = tmp.path().join("numbers");

    // Refused, nothing written: a wrong key, then a non-empty directory without --force.
    let bad = import(
        &w.mock,
        &w.ns,
        "wrong-key",
        &["--output-dir", out.to_str().unwrap()],
    );
    assert_eq!(bad.status.code(), Some(1), "{}", text(&bad.stderr));
    assert!(
        text(&bad.stderr).contains("HTTP 401"),
        "{}",
        text(&bad.stderr)
    );
    assert!(!out.exists(), "nothing written after a 401");
    // An API nobody answers at (a loopback port that was free a moment ago).
    let unreachable = Command::new(env!("CARGO_BIN_EXE_oneinbox-operator"))
        .args(["import", "--allow-insecure-http", "--api-timeout", "2s"])
        .args(["--api-url", &format!("http://127.0.0.1:{}", free_port())])
        .args(["--namespace", &w.ns, "--output-dir", out.to_str().unwrap()])
        .env("ONEINBOX_API_KEY", API_KEY)
        .env_remove("ONEINBOX_API_KEY_FILE")
        .env_remove("KUBECONFIG")
        .output()
        .expect("run import");
    assert_eq!(
        unreachable.status.code(),
        Some(1),
        "{}",
        text(&unreachable.stderr)
    );
    let said = text(&unreachable.stderr);
    assert!(
        said.contains("check --api-url") && said.contains("Nothing was written"),
        "{said}"
    );
    assert!(!said.contains(API_KEY), "{said}");
    assert!(!out.exists(), "nothing written when the API is unreachable");
    let full_dir = tmp.path().join("full");
    std::fs::create_dir(&full_dir).expect("mkdir");
    std::fs::write(full_dir.join("README"), "kept").expect("write");
    let busy = import(
        &w.mock,
        &w.ns,
        API_KEY,
        &["--output-dir", full_dir.to_str().unwrap()],
    );
    assert_eq!(busy.status.code(), Some(2), "{}", text(&busy.stderr));
    assert!(
        text(&busy.stderr).contains("--force"),
        "{}",
        text(&busy.stderr)
    );
    assert_eq!(files_in(&full_dir), ["README"]);
    assert_eq!(
        w.mock.count(LIST).await,
        1,
        "the 401; the busy directory is refused first"
    );

    // The import: 3 pages of 10.
    let kubeconfig = state_dir().join("kubeconfig");
    let ok = import(
        &w.mock,
        &w.ns,
        API_KEY,
        &[
            "--output-dir",
            out.to_str().unwrap(),
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
        ],
    );
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    assert!(ok.stdout.is_empty());
    assert!(
        text(&ok.stderr).contains("wrote 25 manifests"),
        "{}",
        text(&ok.stderr)
    );
    assert_eq!(w.mock.count(LIST).await, 1 + 3);
    let files = files_in(&out);
    assert_eq!(files.len(), 25, "{files:?}");
    for (num, _) in &regs {
        assert!(
            files.contains(&format!("pn-{}.yaml", &num[1..])),
            "{num}: {files:?}"
        );
    }
    let sample = std::fs::read_to_string(out.join(&files[0])).expect("read");
    assert!(
        sample.contains("# To let the operator manage it"),
        "{sample}"
    );
    assert!(!sample.contains(API_KEY));

    kubectl_ok(&["apply", "-f", out.to_str().unwrap()]);
    for (num, id) in &regs {
        let name = format!("pn-{}", &num[1..]);
        let pn = w
            .wait_for(&name, "Ready=True Observed", Duration::from_secs(60), |p| {
                synced(p)
                    && p.condition("Ready")
                        .is_some_and(|c| c.status == "True" && c.reason == "Observed")
            })
            .await;
        assert_eq!(
            pn.status.as_ref().and_then(|s| s.phone_number_id.as_ref()),
            Some(id)
        );
        assert!(pn.condition("Drifted").is_none(), "{name}: no drift");
        assert!(pn.metadata.finalizers.as_ref().is_none_or(|f| f.is_empty()));
    }
    let writes = (
        w.mock.count(POST).await,
        w.mock.count(PATCH).await,
        w.mock.count(DELETE).await,
    );
    assert_eq!(writes, (25, 0, 0), "only the 25 direct POSTs");
    assert_eq!(w.mock.count(LIST).await, 4, "found by id, not looked up");

    // Imported again against the cluster: every number is managed now, nothing to write.
    let again = import(
        &w.mock,
        &w.ns,
        API_KEY,
        &["--kubeconfig", kubeconfig.to_str().unwrap()],
    );
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert!(again.stdout.is_empty(), "{}", text(&again.stdout));
    assert_eq!(text(&again.stderr).matches("skipping +").count(), 25);

    // Three to Full with SIP credentials: two differ from the registration, one matches.
    w.secret("sip", PASSWORD).await;
    let creds = json!({"trunkAddress": "example.pstn.twilio.com", "authUsername": "oneinbox",
                       "authPasswordSecretRef": {"name": "sip"}});
    let name = |i: usize| format!("pn-{}", &regs[i].0[1..]);
    w.merge_spec(
        &name(1),
        json!({"managementPolicy": "Full", "providerConfig": creds, "friendlyName": "Renamed"}),
    )
    .await;
    w.merge_spec(
        &name(2),
        json!({"managementPolicy": "Full", "providerConfig": creds, "agentId": AGENT2}),
    )
    .await;
    w.merge_spec(
        &name(3),
        json!({"managementPolicy": "Full", "providerConfig": creds}),
    )
    .await;
    for i in 1..=3 {
        let pn = w
            .wait_for(
                &name(i),
                "Ready=True Available",
                Duration::from_secs(30),
                |p| {
                    synced(p)
                        && p.condition("Ready")
                            .is_some_and(|c| c.reason == "Available")
                },
            )
            .await;
        assert!(
            pn.metadata
                .finalizers
                .as_ref()
                .is_some_and(|f| f.iter().any(|f| f == "oneinbox.ai/deregister")),
            "{:?}",
            pn.metadata.finalizers
        );
        assert!(
            pn.status
                .as_ref()
                .is_some_and(|s| s.credentials_hash.is_some())
        );
    }
    let writes = (
        w.mock.count(POST).await,
        w.mock.count(PATCH).await,
        w.mock.count(DELETE).await,
    );
    assert_eq!(
        writes,
        (25, 2, 0),
        "one PATCH for each of the two that differ"
    );
    let by_id = |id: &str| {
        let id = id.to_string();
        move |r: &&Value| r["id"].as_str() == Some(id.as_str())
    };
    let stored = w.mock.registrations().await;
    let one = stored.iter().find(by_id(&regs[1].1)).expect("reg 1");
    assert_eq!(one["friendly_name"], json!("Renamed"));
    let two = stored.iter().find(by_id(&regs[2].1)).expect("reg 2");
    assert_eq!(two["agent_id"], json!(AGENT2));
    let events = w.events().await;
    assert_eq!(events.iter().filter(|(r, _)| r == "Adopted").count(), 3);
    let count = |reason: &str| events.iter().filter(|(r, _)| r == reason).count();
    assert_eq!(count("UpdatedOnAdoption"), 2, "{events:?}");
    assert_eq!(count("Updated") + count("DriftCorrected"), 0, "{events:?}");
    w.assert_no_secrets(&[PASSWORD]).await;
}
