//! Bad input is refused by the API server itself (schema + CEL), with the field named.

use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use oneinbox_operator::crd::PhoneNumber;
use serde_json::{Value, json};

use crate::harness::*;

fn valid() -> Value {
    sip_spec("+15551230000", "sip")
}

/// `v` with `path` set to `value` (`Value::Null` removes the key).
fn set(mut v: Value, path: &[&str], value: Value) -> Value {
    let (last, parents) = path.split_last().expect("path");
    let mut cur = &mut v;
    for p in parents {
        cur = cur.get_mut(*p).expect("path exists");
    }
    let obj = cur.as_object_mut().expect("object");
    match value {
        Value::Null => {
            obj.remove(*last);
        }
        v => {
            obj.insert((*last).to_string(), v);
        }
    }
    v
}

async fn create(
    api: &Api<DynamicObject>,
    name: &str,
    spec: &Value,
) -> Result<DynamicObject, kube::Error> {
    let obj: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "oneinbox.ai/v1alpha1", "kind": "PhoneNumber",
        "metadata": {"name": name}, "spec": spec
    }))
    .expect("object");
    api.create(&PostParams::default(), &obj).await
}

fn rejection(res: Result<DynamicObject, kube::Error>) -> String {
    match res {
        Err(kube::Error::Api(e)) => {
            assert_eq!(e.code, 422, "expected 422 Invalid, got {e:?}");
            e.message
        }
        Err(other) => panic!("unexpected error {other:?}"),
        Ok(o) => panic!(
            "accepted: {}",
            serde_json::to_string(&o).unwrap_or_default()
        ),
    }
}

#[tokio::test]
async fn invalid_manifests_are_rejected_with_the_field_named() {
    let client = admin_client().await;
    let ns = create_namespace(&client, "validation").await;
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &ns, &ApiResource::erase::<PhoneNumber>(&()));

    let long = "x".repeat(2000);
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "number without +",
            set(valid(), &["phoneNumber"], json!("15551230000")),
            "spec.phoneNumber",
        ),
        (
            "number with letters",
            set(valid(), &["phoneNumber"], json!("+1555CALLNOW")),
            "spec.phoneNumber",
        ),
        (
            "number starting with 0",
            set(valid(), &["phoneNumber"], json!("+05551230000")),
            "spec.phoneNumber",
        ),
        (
            "number too long",
            set(valid(), &["phoneNumber"], json!("+1234567890123456")),
            "spec.phoneNumber",
        ),
        (
            "number too short",
            set(valid(), &["phoneNumber"], json!("+1")),
            "spec.phoneNumber",
        ),
        (
            "number missing",
            set(valid(), &["phoneNumber"], Value::Null),
            "spec.phoneNumber",
        ),
        (
            "unknown provider",
            set(valid(), &["provider"], json!("vonage")),
            "spec.provider",
        ),
        (
            "provider missing",
            set(valid(), &["provider"], Value::Null),
            "spec.provider",
        ),
        (
            "agentId not a uuid",
            set(valid(), &["agentId"], json!("agt_abc123")),
            "spec.agentId",
        ),
        (
            "agentId missing",
            set(valid(), &["agentId"], Value::Null),
            "spec.agentId",
        ),
        (
            "credentialId not a uuid",
            set(
                set(valid(), &["providerConfig"], Value::Null),
                &["credentialId"],
                json!("cred-1"),
            ),
            "spec.credentialId",
        ),
        (
            "both providerConfig and credentialId",
            set(valid(), &["credentialId"], json!(CREDENTIAL)),
            "are both set: keep only one of them",
        ),
        (
            "neither providerConfig nor credentialId",
            set(valid(), &["providerConfig"], Value::Null),
            "set spec.providerConfig (SIP credentials) or spec.credentialId",
        ),
        (
            "routing agentId not a uuid",
            set(valid(), &["inboundRouting", "agentId"], json!("nope")),
            "spec.inboundRouting.agentId",
        ),
        (
            "fallback agentId not a uuid",
            set(
                valid(),
                &["inboundRouting", "fallback"],
                json!({"agentId": "nope"}),
            ),
            "spec.inboundRouting.fallback.agentId",
        ),
        (
            "fallback without agentId",
            set(valid(), &["inboundRouting", "fallback"], json!({})),
            "spec.inboundRouting.fallback.agentId",
        ),
        (
            "voicemail message too long",
            set(
                valid(),
                &["inboundRouting", "voicemailMessage"],
                json!(long),
            ),
            "spec.inboundRouting.voicemailMessage",
        ),
        (
            "friendlyName too long",
            set(valid(), &["friendlyName"], json!("n".repeat(200))),
            "spec.friendlyName",
        ),
        (
            "friendlyName empty",
            set(valid(), &["friendlyName"], json!("")),
            "spec.friendlyName",
        ),
        (
            "trunk address not a host",
            set(
                valid(),
                &["providerConfig", "trunkAddress"],
                json!("sip://bad host"),
            ),
            "spec.providerConfig.trunkAddress",
        ),
        (
            "username too long",
            set(
                valid(),
                &["providerConfig", "authUsername"],
                json!("u".repeat(300)),
            ),
            "spec.providerConfig.authUsername",
        ),
        (
            "username missing",
            set(valid(), &["providerConfig", "authUsername"], Value::Null),
            "spec.providerConfig.authUsername",
        ),
        (
            "secret ref without name",
            set(
                valid(),
                &["providerConfig", "authPasswordSecretRef"],
                json!({"key": "password"}),
            ),
            "spec.providerConfig.authPasswordSecretRef.name",
        ),
        (
            "secret name invalid",
            set(
                valid(),
                &["providerConfig", "authPasswordSecretRef", "name"],
                json!("Bad_Name"),
            ),
            "spec.providerConfig.authPasswordSecretRef.name",
        ),
        (
            "unknown deletionPolicy",
            set(valid(), &["deletionPolicy"], json!("Keep")),
            "spec.deletionPolicy",
        ),
        (
            "unknown replacementPolicy",
            set(valid(), &["replacementPolicy"], json!("Auto")),
            "spec.replacementPolicy",
        ),
    ];
    assert!(cases.len() >= 20);
    let mut failures = Vec::new();
    for (i, (what, spec, field)) in cases.iter().enumerate() {
        let res = create(&api, &format!("bad-{i}"), spec).await;
        match res {
            Ok(_) => failures.push(format!("{what}: accepted")),
            Err(kube::Error::Api(e)) if e.code == 422 && e.message.contains(field) => {}
            Err(e) => failures.push(format!("{what}: expected 422 naming {field}, got {e}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // Immutable fields: changing phoneNumber or provider after creation is refused.
    create(&api, "fixed", &valid()).await.expect("valid object");
    for (path, value, field) in [
        (
            "phoneNumber",
            json!("+15559990000"),
            "phoneNumber is immutable",
        ),
        ("provider", json!("telnyx"), "provider is immutable"),
    ] {
        let patch = json!({"spec": {path: value}});
        let res = api
            .patch("fixed", &PatchParams::default(), &Patch::Merge(&patch))
            .await;
        let msg = rejection(res);
        assert!(
            msg.contains(&format!("spec.{path}")) && msg.contains(field),
            "{msg}"
        );
    }
    // accountRef cannot be added, changed or removed: that could move the object to another
    // workspace.
    let mut tenant = valid();
    tenant["accountRef"] = json!({"kind": "OneInboxAccount", "name": "tenant-a"});
    create(&api, "tenant", &tenant).await.expect("valid object");
    for (name, patch) in [
        (
            "fixed",
            json!({"spec": {"accountRef": {"kind": "OneInboxAccount", "name": "tenant-b"}}}),
        ),
        (
            "tenant",
            json!({"spec": {"accountRef": {"kind": "OneInboxAccount", "name": "tenant-b"}}}),
        ),
        (
            "tenant",
            json!({"spec": {"accountRef": {"kind": "ClusterOneInboxAccount", "name": "tenant-a"}}}),
        ),
        ("tenant", json!({"spec": {"accountRef": null}})),
    ] {
        let res = api
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await;
        let msg = rejection(res);
        assert!(
            msg.contains("accountRef is immutable"),
            "{name} {patch}: {msg}"
        );
    }
    // The kind is one of the two account kinds.
    let mut other = valid();
    other["accountRef"] = json!({"kind": "Secret", "name": "x"});
    let msg = rejection(create(&api, "other-kind", &other).await);
    assert!(msg.contains("spec.accountRef.kind"), "{msg}");
    // Unrelated changes still pass.
    api.patch(
        "tenant",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"friendlyName": "renamed"}})),
    )
    .await
    .expect("a PATCHable field can change");

    // The design's own example, with `credentialId: null`, is valid.
    let mut example = valid();
    example["credentialId"] = Value::Null;
    create(&api, "example", &example)
        .await
        .expect("design example is valid");
    let _ = kubectl(&["delete", "namespace", &ns, "--wait=false"]);
}
