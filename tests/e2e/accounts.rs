//! Accounts (docs/tenancy.md): each account its own mock workspace, key and budget; a cluster
//! account granted by namespace label; the in-use finalizer; key rotation; one account's 429s
//! never pausing another.

use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::{Value, json};

use crate::harness::*;

const KEY_A: &str = "oi_sk_account_a_5e1f_never_log";
const KEY_B: &str = "oi_sk_account_b_77c2_never_log";
const KEY_ROTATED: &str = "oi_sk_account_a_rotated_0d9e_never_log";

/// A world whose mock knows workspaces `a` (KEY_A) and `b` (KEY_B) besides the operator's
/// (`default`, which accepts only the operator's key).
async fn two_workspaces(name: &str, operator_args: &[&str]) -> World {
    let w = World::start_with(name, &["--api-key", API_KEY], operator_args).await;
    w.mock.create_workspace("a", &[KEY_A], Value::Null).await;
    w.mock.create_workspace("b", &[KEY_B], Value::Null).await;
    w
}

fn numbers_of(regs: &[Value]) -> Vec<String> {
    regs.iter()
        .map(|r| r["phone_number"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test]
async fn the_same_number_is_ready_in_two_accounts_each_in_its_own_workspace() {
    let w = two_workspaces("acct-two", &[]).await;
    w.account("a", KEY_A, json!({})).await;
    w.account("b", KEY_B, json!({})).await;
    let n = number();
    w.apply("in-a", with(credential_spec(&n), account_ref("a")))
        .await;
    w.apply("in-b", with(credential_spec(&n), account_ref("b")))
        .await;
    let a = w.wait_ready("in-a").await;
    let b = w.wait_ready("in-b").await;

    let (ra, rb) = (
        w.mock.workspace("a").registrations().await,
        w.mock.workspace("b").registrations().await,
    );
    assert_eq!(numbers_of(&ra), std::slice::from_ref(&n));
    assert_eq!(numbers_of(&rb), std::slice::from_ref(&n));
    assert!(
        w.mock.registrations().await.is_empty(),
        "nothing in the operator's workspace"
    );
    let id = |p: &oneinbox_operator::crd::PhoneNumber| {
        p.status.as_ref().and_then(|s| s.phone_number_id.clone())
    };
    assert_eq!(id(&a).as_deref(), ra[0]["id"].as_str());
    assert_eq!(id(&b).as_deref(), rb[0]["id"].as_str());
    // Each account is Ready (its key checked once) and counts its one PhoneNumber.
    for name in ["a", "b"] {
        let acct = w
            .wait_account(&w.accounts(), name, "Ready, 1 PhoneNumber", |v| {
                account_ready(v).0 == "True" && v["status"]["phoneNumbers"] == 1
            })
            .await;
        assert_eq!(acct["status"]["observedGeneration"], 1, "{acct:#}");
        assert_eq!(
            w.mock.workspace(name).count(LIST).await,
            1,
            "one authenticated check of the key"
        );
    }
    // The client's metrics are labelled by account.
    let (_, metrics) = w.operator.admin("/metrics").await;
    for name in ["a", "b"] {
        let line = format!(
            "oneinbox_operator_api_requests_total{{account=\"OneInboxAccount/{}/{name}\",op=\"register\",outcome=\"success\"}} 1",
            w.ns
        );
        assert!(metrics.contains(&line), "missing {line}:\n{metrics}");
    }
    w.assert_no_secrets(&[KEY_A, KEY_B]).await;
}

#[tokio::test]
async fn a_cluster_account_serves_only_the_namespaces_it_allows() {
    // The operator uses only this test's cluster account (labelled for it), so parallel tests
    // with their own cluster accounts never share one.
    let account = format!("voice-{}", &number()[5..]);
    let mut w = two_workspaces("acct-cluster", &[]).await;
    let shard = format!("oneinbox.ai/e2e={}", w.ns);
    w.restart_operator(&["--cluster-accounts=true", "--account-selector", &shard]);
    w.api_key_secret("voice-key", KEY_A).await;
    w.cluster_account(
        &account,
        "voice-key",
        json!({"selector": {"matchLabels": {"team": "voice"}}}),
    )
    .await;
    let clusters = cluster_accounts(&w.client);

    // The namespace is not labelled: Stalled, naming the account and its rule.
    w.apply(
        "v",
        with(credential_spec(&number()), cluster_account_ref(&account)),
    )
    .await;
    let pn = w.wait_reason("v", "Stalled", "AccountNotAllowed").await;
    let msg = &pn.condition("Stalled").expect("stalled").message;
    assert!(
        msg.contains(&format!("ClusterOneInboxAccount {account}"))
            && msg.contains("namespaces labelled team=voice"),
        "{msg}"
    );
    assert_eq!(
        w.mock.workspace("a").count(POST).await,
        0,
        "nothing registered"
    );

    // Labelled: Ready within seconds (the Namespace watch), registered in the account's
    // workspace.
    let namespaces: Api<Namespace> = Api::all(w.client.clone());
    namespaces
        .patch(
            &w.ns,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"team": "voice"}}})),
        )
        .await
        .expect("label namespace");
    w.wait_ready("v").await;
    assert_eq!(w.mock.workspace("a").count(POST).await, 1);
    let acct = w
        .wait_account(&clusters, &account, "Ready, 1 PhoneNumber", |v| {
            account_ready(v).0 == "True" && v["status"]["phoneNumbers"] == 1
        })
        .await;
    assert_eq!(
        acct["metadata"]["finalizers"],
        json!(["oneinbox.ai/account-in-use"])
    );

    w.delete("v").await;
    w.wait_gone("v", Duration::from_secs(20)).await;
    clusters
        .delete(&account, &DeleteParams::default())
        .await
        .expect("delete account");
    wait_absent(&clusters, &account).await;
}

/// A grant that changes with a namespace's labels is re-evaluated within seconds, for Ready
/// objects too (they do not wait for their next drift check, minutes away): revoked, every
/// object says Stalled AccountNotAllowed with no call made; restored, they are Ready again
/// without a POST.
#[tokio::test]
async fn a_revoked_grant_stalls_ready_objects_at_once_and_a_restored_one_readies_them_without_a_post()
 {
    let account = format!("grant-{}", &number()[5..]);
    let mut w = two_workspaces("acct-grant", &[]).await;
    let shard = format!("oneinbox.ai/e2e={}", w.ns);
    w.restart_operator(&["--cluster-accounts=true", "--account-selector", &shard]);
    w.api_key_secret("grant-key", KEY_A).await;
    w.cluster_account(
        &account,
        "grant-key",
        json!({"selector": {"matchLabels": {"team": "grant"}}}),
    )
    .await;
    let namespaces: Api<Namespace> = Api::all(w.client.clone());
    let label = |value: Value| {
        let namespaces = namespaces.clone();
        let ns = w.ns.clone();
        async move {
            namespaces
                .patch(
                    &ns,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"metadata": {"labels": {"team": value}}})),
                )
                .await
                .expect("label namespace");
        }
    };
    label(json!("grant")).await;
    let names = ["g0", "g1", "g2"];
    for name in names {
        w.apply(
            name,
            with(credential_spec(&number()), cluster_account_ref(&account)),
        )
        .await;
    }
    for name in names {
        w.wait_ready(name).await;
    }
    // The account has checked its key (its one authenticated call) and counts its users.
    w.wait_account(
        &cluster_accounts(&w.client),
        &account,
        "Ready, 3 PhoneNumbers",
        |v| account_ready(v).0 == "True" && v["status"]["phoneNumbers"] == 3,
    )
    .await;
    let workspace = w.mock.workspace("a");
    let calls = workspace.calls().await;
    assert_eq!(workspace.count(POST).await, 3);

    label(Value::Null).await;
    for name in names {
        w.wait_for(
            name,
            "Stalled AccountNotAllowed",
            Duration::from_secs(10),
            |p| {
                p.condition("Stalled")
                    .is_some_and(|c| c.status == "True" && c.reason == "AccountNotAllowed")
                    && p.condition("Ready").is_some_and(|c| c.status == "False")
            },
        )
        .await;
    }
    assert_eq!(
        workspace.calls().await,
        calls,
        "no call with the revoked account"
    );

    label(json!("grant")).await;
    for name in names {
        w.wait_for(name, "Ready again", Duration::from_secs(10), |p| {
            is_ready(p)
        })
        .await;
    }
    assert_eq!(workspace.count(POST).await, 3, "no POST to come back");
    for name in names {
        w.delete(name).await;
    }
    for name in names {
        w.wait_gone(name, Duration::from_secs(20)).await;
    }
    cluster_accounts(&w.client)
        .delete(&account, &DeleteParams::default())
        .await
        .expect("delete account");
}

async fn wait_absent(api: &Api<kube::core::DynamicObject>, name: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while api.get_opt(name).await.expect("get").is_some() {
        assert!(std::time::Instant::now() < deadline, "{name} still there");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn an_account_in_use_stays_until_its_last_phone_number_is_deregistered() {
    let w = two_workspaces("acct-inuse", &[]).await;
    w.account("a", KEY_A, json!({})).await;
    for name in ["p1", "p2"] {
        w.apply(name, with(credential_spec(&number()), account_ref("a")))
            .await;
    }
    w.wait_ready("p1").await;
    w.wait_ready("p2").await;
    let accounts = w.accounts();
    w.wait_account(&accounts, "a", "Ready, in use by 2", |v| {
        account_ready(v).0 == "True" && v["status"]["phoneNumbers"] == 2
    })
    .await;
    accounts
        .delete("a", &DeleteParams::default())
        .await
        .expect("delete account");
    let acct = w
        .wait_account(&accounts, "a", "terminating, in use by 2", |v| {
            v["metadata"]["deletionTimestamp"].is_string()
                && v["status"]["conditions"]
                    .as_array()
                    .is_some_and(|cs| cs.iter().any(|c| c["reason"] == "InUse"))
        })
        .await;
    assert_eq!(acct["status"]["phoneNumbers"], 2, "{acct:#}");

    w.delete("p1").await;
    w.wait_gone("p1", Duration::from_secs(20)).await;
    w.wait_account(&accounts, "a", "in use by 1", |v| {
        v["status"]["phoneNumbers"] == 1
    })
    .await;
    assert_eq!(w.mock.workspace("a").registrations().await.len(), 1);

    // The last one is deregistered with the account's key, then the account goes.
    w.delete("p2").await;
    w.wait_gone("p2", Duration::from_secs(20)).await;
    wait_absent(&accounts, "a").await;
    assert!(w.mock.workspace("a").registrations().await.is_empty());
    assert_eq!(w.mock.workspace("a").count(DELETE).await, 2);
}

#[tokio::test]
async fn a_rotated_key_is_used_from_the_next_call_without_a_restart() {
    let w = two_workspaces("acct-rotate", &[]).await;
    w.account("a", KEY_A, json!({})).await;
    w.apply("r", with(credential_spec(&number()), account_ref("a")))
        .await;
    w.wait_ready("r").await;
    w.wait_account(&w.accounts(), "a", "Ready", |v| {
        account_ready(v).0 == "True"
    })
    .await;
    let ws = w.mock.workspace("a");
    assert_eq!(ws.count(LIST).await, 1, "the first key checked once");

    // The workspace accepts both keys while the Secret changes; the account checks the new
    // key once (the Secret watch), so from then on the operator holds it.
    w.mock.set_workspace_keys("a", &[KEY_A, KEY_ROTATED]).await;
    w.api_key_secret("a-key", KEY_ROTATED).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while ws.count(LIST).await < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the new key was never checked"
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    // From now on only the new key reaches the workspace.
    w.mock.set_workspace_keys("a", &[KEY_ROTATED]).await;
    let before = ws.get("/_mock/calls/log").await["entries"]
        .as_array()
        .map_or(0, Vec::len);
    w.merge_spec("r", json!({"agentId": AGENT2})).await;
    w.wait_for("r", "the new agent, Ready", Duration::from_secs(20), |p| {
        is_ready(p) && synced(p) && p.spec.agent_id == AGENT2
    })
    .await;
    let log = ws.get("/_mock/calls/log").await;
    let after: Vec<&Value> = log["entries"].as_array().expect("entries")[before..]
        .iter()
        .collect();
    assert_eq!(
        after
            .iter()
            .map(|e| (
                e["endpoint"].as_str().unwrap_or_default(),
                e["status"].as_u64()
            ))
            .collect::<Vec<_>>(),
        [(PATCH, Some(200))],
        "exactly one call after the rotation, a PATCH that succeeded: {log:#}"
    );
    assert_eq!(
        after[0]["caller"], 0,
        "the rotated key is the workspace's only key"
    );
    let pn = w.pns.get("r").await.expect("get");
    assert!(is_ready(&pn));
    let acct = w.accounts().get("a").await.expect("account");
    assert_eq!(
        account_ready(&serde_json::to_value(&acct).unwrap()).0,
        "True"
    );
    w.assert_no_secrets(&[KEY_A, KEY_ROTATED]).await;
}

#[tokio::test]
async fn one_accounts_429_pauses_only_that_account() {
    let w = two_workspaces("acct-429", &[]).await;
    // One call of A at a time: the calls queued behind the one that draws the 429 wait out
    // its Retry-After instead of following it.
    w.account("a", KEY_A, json!({"budget": {"maxInFlight": 1}}))
        .await;
    w.account("b", KEY_B, json!({})).await;
    for name in ["a", "b"] {
        w.wait_account(&w.accounts(), name, "Ready", |v| {
            account_ready(v).0 == "True"
        })
        .await;
    }
    // A's workspace answers every POST with 429 and Retry-After: 30.
    w.mock
        .workspace("a")
        .fault(json!({"endpoint": POST, "kind": "status", "status": 429, "retry_after": 30, "count": 100}))
        .await;
    for i in 0..3 {
        w.apply(
            &format!("a{i}"),
            with(credential_spec(&number()), account_ref("a")),
        )
        .await;
    }
    let ws_a = w.mock.workspace("a");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while ws_a.count(POST).await < 1 {
        assert!(std::time::Instant::now() < deadline, "A never posted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // B's objects are created while A waits out its Retry-After.
    for i in 0..3 {
        w.apply(
            &format!("b{i}"),
            with(credential_spec(&number()), account_ref("b")),
        )
        .await;
    }
    for i in 0..3 {
        w.wait_ready(&format!("b{i}")).await;
    }
    let ws_b = w.mock.workspace("b");
    assert_eq!(ws_b.count(POST).await, 3, "each B object posted once");
    assert_eq!(
        ws_a.count(POST).await,
        1,
        "A made no call after its 429 while B worked (its Retry-After is 30 s)"
    );
    for i in 0..3 {
        let pn = w.pns.get(&format!("a{i}")).await.expect("get");
        assert!(
            !is_ready(&pn),
            "a{i} cannot be Ready within A's Retry-After"
        );
    }
    let b_log = ws_b.get("/_mock/calls/log").await;
    assert!(
        b_log["entries"]
            .as_array()
            .expect("entries")
            .iter()
            .all(|e| e["status"] != 429),
        "B never saw a 429: {b_log:#}"
    );
}

#[tokio::test]
async fn a_replica_sharded_by_account_leaves_other_accounts_alone() {
    // This replica's accounts carry the label; account `b` does not.
    let mut w = two_workspaces("acct-shard", &[]).await;
    let shard = format!("oneinbox.ai/e2e={}", w.ns);
    w.restart_operator(&["--account-selector", &shard]);
    w.account("a", KEY_A, json!({})).await;
    w.accounts()
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"oneinbox.ai/e2e": w.ns}}})),
        )
        .await
        .expect("label account a");
    w.account("b", KEY_B, json!({})).await;
    w.apply("mine", with(credential_spec(&number()), account_ref("a")))
        .await;
    w.apply("theirs", with(credential_spec(&number()), account_ref("b")))
        .await;
    // Nor an object on the operator-wide key: that is a replica without a selector's work.
    w.apply("operator-wide", credential_spec(&number())).await;
    w.wait_ready("mine").await;
    // By the time this replica's object is Ready it has seen the others; it left them alone:
    // no status, no finalizer, no call in their workspaces, and account b untouched.
    for name in ["theirs", "operator-wide"] {
        let pn = w.pns.get(name).await.expect("get");
        assert!(pn.condition("Ready").is_none(), "{name}: {:?}", pn.status);
        assert!(pn.finalizers().is_empty(), "{name}");
    }
    assert_eq!(w.mock.workspace("b").total_calls().await, 0);
    assert_eq!(
        w.mock.total_calls().await,
        0,
        "nothing in the operator's workspace"
    );
    let b = w.accounts().get("b").await.expect("account b");
    let b = serde_json::to_value(&b).unwrap();
    assert!(b["metadata"]["finalizers"].is_null(), "{b:#}");
    assert_eq!(
        b["status"],
        json!({"observedGeneration": 0}),
        "never written: {b:#}"
    );
}

#[tokio::test]
async fn a_replica_sharded_by_phone_number_label_uses_accounts_without_managing_them() {
    let mut w = two_workspaces("acct-pnshard", &[]).await;
    let selector = format!("oneinbox.ai/e2e-shard={}", w.ns);
    w.restart_operator(&["--label-selector", &selector]);
    w.account("a", KEY_A, json!({})).await;
    w.apply_full(json!({
        "metadata": {"name": "mine", "labels": {"oneinbox.ai/e2e-shard": w.ns}},
        "spec": with(credential_spec(&number()), account_ref("a")),
    }))
    .await
    .expect("apply");
    w.wait_ready("mine").await;
    assert_eq!(
        w.mock.workspace("a").count(POST).await,
        1,
        "registered with the account's key"
    );
    // It sees only its share of the account's PhoneNumbers: no finalizer, no status.
    let a = serde_json::to_value(w.accounts().get("a").await.expect("account")).unwrap();
    assert!(a["metadata"]["finalizers"].is_null(), "{a:#}");
    assert_eq!(a["status"], json!({"observedGeneration": 0}), "{a:#}");
}

#[tokio::test]
async fn objects_without_an_account_use_the_default_cluster_account() {
    // The default account's allowedNamespaces, not the watch scope, decide who may use it.
    let account = format!("default-{}", &number()[5..]);
    let mut w = two_workspaces("acct-default", &[]).await;
    let shard = format!("oneinbox.ai/e2e={}", w.ns);
    w.restart_operator(&[
        "--cluster-accounts=true",
        "--account-selector",
        &shard,
        "--default-account",
        &account,
    ]);
    w.api_key_secret("default-key", KEY_A).await;
    w.cluster_account(&account, "default-key", json!({"names": [w.ns]}))
        .await;
    let clusters = cluster_accounts(&w.client);
    w.apply("plain", credential_spec(&number())).await;
    w.wait_ready("plain").await;
    assert_eq!(
        w.mock.workspace("a").count(POST).await,
        1,
        "in the default account's workspace"
    );
    assert_eq!(
        w.mock.total_calls().await,
        0,
        "never with the operator-wide key"
    );
    w.wait_account(&clusters, &account, "in use by 1", |v| {
        v["status"]["phoneNumbers"] == 1
    })
    .await;
    w.delete("plain").await;
    w.wait_gone("plain", Duration::from_secs(20)).await;
    clusters
        .delete(&account, &DeleteParams::default())
        .await
        .expect("delete account");
    wait_absent(&clusters, &account).await;
}

/// Deny by default (`--operator-key-namespaces`, the chart's default on a new install): the
/// operator-wide key serves only namespaces whose labels match. Unlabelled, an object without
/// an account is Stalled AccountNotAllowed with no call made; labelled, it registers; the label
/// removed, a Ready object is Stalled again at once with no call; its deletion still
/// deregisters the number it holds.
#[tokio::test]
async fn the_operator_key_serves_only_the_namespaces_its_selector_allows() {
    let mut w = World::start_with("opkey", &["--api-key", API_KEY], &[]).await;
    let shard = format!("oneinbox.ai/e2e-shard={}", w.ns);
    w.restart_operator(&[
        "--label-selector",
        &shard,
        "--operator-key-namespaces",
        "oneinbox.ai/operator-key=allowed",
    ]);
    let namespaces: Api<Namespace> = Api::all(w.client.clone());
    let label = |value: Value| {
        let namespaces = namespaces.clone();
        let ns = w.ns.clone();
        async move {
            let body = json!({"metadata": {"labels": {"oneinbox.ai/operator-key": value}}});
            namespaces
                .patch(&ns, &PatchParams::default(), &Patch::Merge(body))
                .await
                .expect("label namespace");
        }
    };
    w.apply_full(json!({
        "metadata": {"name": "plain", "labels": {"oneinbox.ai/e2e-shard": w.ns}},
        "spec": credential_spec(&number()),
    }))
    .await
    .expect("apply");
    let refused = w.wait_reason("plain", "Stalled", "AccountNotAllowed").await;
    let message = refused
        .condition("Stalled")
        .expect("Stalled")
        .message
        .clone();
    assert!(
        message.contains("namespaces labelled oneinbox.ai/operator-key=allowed")
            && message.contains("kubectl label namespace"),
        "{message}"
    );
    assert_eq!(
        w.mock.total_calls().await,
        0,
        "no call for a refused namespace"
    );

    label(json!("allowed")).await;
    w.wait_for(
        "plain",
        "Ready once labelled",
        Duration::from_secs(10),
        |p| is_ready(p) && synced(p),
    )
    .await;
    assert_eq!(w.mock.count(POST).await, 1);
    let calls = w.mock.total_calls().await;

    label(Value::Null).await;
    w.wait_for(
        "plain",
        "Stalled AccountNotAllowed once unlabelled",
        Duration::from_secs(10),
        |p| {
            p.condition("Stalled")
                .is_some_and(|c| c.status == "True" && c.reason == "AccountNotAllowed")
        },
    )
    .await;
    assert_eq!(w.mock.total_calls().await, calls, "no call once refused");

    w.delete("plain").await;
    w.wait_gone("plain", Duration::from_secs(20)).await;
    assert_eq!(
        w.mock.count(DELETE).await,
        1,
        "a deletion deregisters what the object holds"
    );
    assert!(w.mock.registrations().await.is_empty());
}

/// A PhoneNumber without `deletionPolicy` inherits its account's `defaultDeletionPolicy`, else
/// the operator's (`--default-deletion-policy`); a number's own field wins over both.
#[tokio::test]
async fn an_unset_deletion_policy_follows_the_account_then_the_operator() {
    let mut w = two_workspaces("acct-dp", &[]).await;
    w.restart_operator(&["--default-deletion-policy", "Orphan"]);
    w.account("a", KEY_A, json!({"defaultDeletionPolicy": "Delete"}))
        .await;
    // The operator's default (Orphan), the account's (Delete), and a number's own (Delete).
    let (plain, in_a, own) = (number(), number(), number());
    w.apply("plain", credential_spec(&plain)).await;
    w.apply("in-a", with(credential_spec(&in_a), account_ref("a")))
        .await;
    w.apply(
        "own",
        with(credential_spec(&own), json!({"deletionPolicy": "Delete"})),
    )
    .await;
    for name in ["plain", "in-a", "own"] {
        w.wait_ready(name).await;
    }
    for name in ["plain", "in-a", "own"] {
        w.delete(name).await;
    }
    for name in ["plain", "in-a", "own"] {
        w.wait_gone(name, Duration::from_secs(20)).await;
    }
    assert_eq!(
        numbers_of(&w.mock.registrations().await),
        [plain],
        "the operator's default Orphan kept the number without a policy; its own Delete won"
    );
    assert_eq!(
        w.mock.count(DELETE).await,
        1,
        "only the number set to Delete"
    );
    let a = w.mock.workspace("a");
    assert_eq!(a.count(DELETE).await, 1, "the account's default Delete");
    assert!(a.registrations().await.is_empty());
}
