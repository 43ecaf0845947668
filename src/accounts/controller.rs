//! The accounts' reconciler: the in-use finalizer, the key's one authenticated check, and a
//! status that says whether the account works and how many PhoneNumbers use it.
//!
//! A pass reads nothing it already knows: the key Secret only when its version changed (the
//! registry), the API only when the key or endpoint is new, and it writes status only when
//! it differs.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::controller::{Config as ControllerConfig, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tracing::{debug, info, warn};

use super::registry::{AccountView, Registry, SecretKeyRef};
use super::stores::AccountStores;
use crate::conditions::{self, conditions_of};
use crate::crd::AccountId;
use crate::crd::CachedPhoneNumber;
use crate::crd::FIELD_MANAGER;
use crate::crd::accounts::{
    ACCOUNT_FINALIZER, AccountStatus, ClusterOneInboxAccount, OneInboxAccount,
};
use crate::mutex::lock;
use crate::oneinbox::{ApiError, OneInboxApi};
use crate::secrets::{SecretProblemKind, SecretVersions, problem_fix, problem_text};

/// Condition reasons of an account.
pub mod reason {
    pub const VERIFIED: &str = "Verified";
    pub const KEY_REJECTED: &str = "APIKeyRejected";
    pub const API_UNAVAILABLE: &str = "APIUnavailable";
    pub const SECRET_NOT_FOUND: &str = "SecretNotFound";
    pub const SECRET_KEY_INVALID: &str = "SecretKeyInvalid";
    pub const INVALID: &str = "InvalidEndpoint";
    pub const IN_USE: &str = "InUse";
}

/// Either account kind.
pub trait AccountResource:
    Resource<DynamicType = ()>
    + Clone
    + Debug
    + DeserializeOwned
    + serde::Serialize
    + Send
    + Sync
    + 'static
{
    const KIND: &'static str;
    fn view(&self) -> AccountView;
    /// The API of this object (its namespace's, for the namespaced kind).
    fn api(&self, client: Client) -> Api<Self>;
    fn account_status(&self) -> Option<&AccountStatus>;
}

impl AccountResource for OneInboxAccount {
    const KIND: &'static str = "OneInboxAccount";
    fn view(&self) -> AccountView {
        AccountView::namespaced(self)
    }
    fn api(&self, client: Client) -> Api<Self> {
        Api::namespaced(client, self.meta().namespace.as_deref().unwrap_or_default())
    }
    fn account_status(&self) -> Option<&AccountStatus> {
        self.status.as_ref()
    }
}

impl AccountResource for ClusterOneInboxAccount {
    const KIND: &'static str = "ClusterOneInboxAccount";
    fn view(&self) -> AccountView {
        AccountView::cluster(self)
    }
    fn api(&self, client: Client) -> Api<Self> {
        Api::all(client)
    }
    fn account_status(&self) -> Option<&AccountStatus> {
        self.status.as_ref()
    }
}

/// What the accounts' reconciler shares.
pub struct AccountContext<C> {
    pub client: Client,
    pub registry: Arc<Registry<C>>,
    pub phone_numbers: Store<CachedPhoneNumber>,
    pub secret_versions: SecretVersions,
    pub secrets_listed: Arc<std::sync::atomic::AtomicBool>,
    /// PhoneNumbers to reconcile now (their account changed).
    pub poke: mpsc::UnboundedSender<ObjectRef<CachedPhoneNumber>>,
}

impl<C> AccountContext<C> {
    /// The PhoneNumbers that use `id`.
    pub fn users(&self, id: &AccountId) -> Vec<Arc<CachedPhoneNumber>> {
        let default = self.registry.settings.default_account.as_deref();
        self.phone_numbers
            .state()
            .into_iter()
            .filter(|pn| pn.account(default) == *id)
            .collect()
    }
}

/// What one pass learned.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Verified,
    KeyProblem {
        reason: &'static str,
        message: String,
    },
    KeyRejected(String),
    Unavailable(String),
    Invalid(String),
}

/// The account's conditions: Ready, and Reconciling or Stalled while it is not (pure).
pub fn account_conditions(
    previous: &[Condition],
    outcome: &Outcome,
    users_while_deleting: Option<usize>,
    generation: Option<i64>,
    now: Time,
) -> Vec<Condition> {
    use conditions::{READY, RECONCILING, STALLED};
    let mut wanted = match outcome {
        Outcome::Verified => vec![(
            READY,
            true,
            reason::VERIFIED,
            "The API key was accepted by OneInbox".to_owned(),
        )],
        Outcome::KeyProblem { reason, message } => vec![
            (READY, false, *reason, message.clone()),
            (STALLED, true, *reason, message.clone()),
        ],
        Outcome::Invalid(message) => vec![
            (READY, false, reason::INVALID, message.clone()),
            (STALLED, true, reason::INVALID, message.clone()),
        ],
        Outcome::KeyRejected(message) => vec![
            (READY, false, reason::KEY_REJECTED, message.clone()),
            (STALLED, true, reason::KEY_REJECTED, message.clone()),
        ],
        Outcome::Unavailable(message) => vec![
            (READY, false, reason::API_UNAVAILABLE, message.clone()),
            (RECONCILING, true, reason::API_UNAVAILABLE, message.clone()),
        ],
    };
    if let Some(n) = users_while_deleting {
        // Terminating: kstatus and Argo CD show it in progress until the last user is gone.
        wanted.retain(|(t, ..)| *t != RECONCILING);
        wanted.push((
            RECONCILING,
            true,
            reason::IN_USE,
            format!("Deletion waits until the {n} PhoneNumber(s) that use the account are deleted"),
        ));
    }
    conditions_of(previous, wanted, generation, now)
}

/// Reconcile one account.
pub async fn reconcile<K: AccountResource, C: OneInboxApi>(
    account: Arc<K>,
    ctx: Arc<AccountContext<C>>,
) -> Result<Action, kube::Error> {
    let view = account.view();
    let api = account.api(ctx.client.clone());
    let users = ctx.users(&view.id);
    let deleting = account.meta().deletion_timestamp.is_some();
    let has_finalizer = account.finalizers().iter().any(|f| f == ACCOUNT_FINALIZER);

    if deleting {
        if release(account.as_ref(), &api, &ctx, &view, users.len()).await? {
            return Ok(Action::await_change());
        }
    } else if !has_finalizer {
        let mut finalizers = account.finalizers().to_vec();
        finalizers.push(ACCOUNT_FINALIZER.to_owned());
        api.patch(
            &account.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": finalizers}})),
        )
        .await?;
    }

    let outcome = check(&ctx, &view).await?;
    let retry = match &outcome {
        Outcome::Unavailable(_) => Some(Duration::from_secs(10)),
        _ => None,
    };
    let in_use = deleting.then_some(users.len());
    write_status(account.as_ref(), &api, &view, users.len(), &outcome, in_use).await?;
    // Objects waiting for the account (not Ready) try again now.
    for pn in users.iter().filter(|pn| !pn.is_ready()) {
        let _ = ctx.poke.send(ObjectRef::from_obj(pn.as_ref()));
    }
    Ok(retry.map_or_else(Action::await_change, Action::requeue))
}

/// A deleted account goes once no PhoneNumber uses it, or with its CRD (an uninstall: the
/// users go with theirs, or are orphaned). Whether it was released.
async fn release<K: AccountResource, C: OneInboxApi>(
    account: &K,
    api: &Api<K>,
    ctx: &AccountContext<C>,
    view: &AccountView,
    users: usize,
) -> Result<bool, kube::Error> {
    let uninstall = users > 0
        && crate::definition::read(ctx.client.clone(), &crate::definition::name_of::<K>()).await?
            == crate::definition::Definition::Deleting;
    if uninstall {
        info!(account = %view.id, users, "the account's CRD is being deleted: releasing the account although PhoneNumbers use it");
    }
    if users > 0 && !uninstall {
        return Ok(false);
    }
    if let Some(index) = account
        .finalizers()
        .iter()
        .position(|f| f == ACCOUNT_FINALIZER)
    {
        let path = format!("/metadata/finalizers/{index}");
        let patch: json_patch::Patch = serde_json::from_value(json!([
            {"op": "test", "path": path, "value": ACCOUNT_FINALIZER},
            {"op": "remove", "path": path},
        ]))
        .map_err(kube::Error::SerdeError)?;
        match api
            .patch(
                &account.name_any(),
                &PatchParams::default(),
                &Patch::Json::<()>(patch),
            )
            .await
        {
            Ok(_) => info!(account = %view.id, "account released: no PhoneNumber uses it"),
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    ctx.registry.forget(&view.id);
    Ok(true)
}

/// Write the account's status if it changed: its check, its users, and (while it is being
/// deleted) the `in_use` count that holds it.
async fn write_status<K: AccountResource>(
    account: &K,
    api: &Api<K>,
    view: &AccountView,
    users: usize,
    outcome: &Outcome,
    in_use: Option<usize>,
) -> Result<(), kube::Error> {
    let previous = account
        .account_status()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    let desired = AccountStatus {
        observed_generation: view.generation,
        phone_numbers: Some(i32::try_from(users).unwrap_or(i32::MAX)),
        conditions: account_conditions(
            &previous,
            outcome,
            in_use,
            view.generation,
            Time(jiff::Timestamp::now()),
        ),
    };
    if account.account_status() == Some(&desired) {
        return Ok(());
    }
    let body = json!({
        "apiVersion": "oneinbox.ai/v1alpha1",
        "kind": K::KIND,
        "status": desired,
    });
    api.patch_status(
        &account.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await?;
    debug!(account = %view.id, ?outcome, "account status written");
    Ok(())
}

/// The key as the registry holds it, checked once with an authenticated call.
async fn check<C: OneInboxApi>(
    ctx: &AccountContext<C>,
    view: &AccountView,
) -> Result<Outcome, kube::Error> {
    let versions = ctx.secret_versions.clone();
    let watched = |r: &SecretKeyRef| {
        lock(&versions)
            .get(&(r.namespace.clone(), r.name.clone()))
            .cloned()
    };
    let listed = ctx
        .secrets_listed
        .load(std::sync::atomic::Ordering::Relaxed);
    let state = ctx
        .registry
        .state(&ctx.client, view, watched, listed)
        .await?;
    if let Some(why) = state.invalid {
        return Ok(Outcome::Invalid(format!("{why}. Fix the account's spec")));
    }
    if let Some(p) = &state.problem {
        let reason = match p.kind {
            SecretProblemKind::Absent => reason::SECRET_NOT_FOUND,
            _ => reason::SECRET_KEY_INVALID,
        };
        let last = if state.client.is_some() {
            " (PhoneNumbers being deleted still use the last key this operator read)"
        } else {
            ""
        };
        return Ok(Outcome::KeyProblem {
            reason,
            message: format!(
                "The API key cannot be read: {}{last}. {}",
                problem_text(p),
                problem_fix(p, "spec.apiKeySecretRef.key")
            ),
        });
    }
    let Some(client) = state.client else {
        return Ok(Outcome::Unavailable("the API key is not read yet".into()));
    };
    if !ctx.registry.needs_verification(&view.id).await {
        return Ok(Outcome::Verified);
    }
    match client.verify().await {
        Ok(()) => {
            ctx.registry.verified(&view.id, true).await;
            Ok(Outcome::Verified)
        }
        Err(ApiError::KeyRejected { status, .. }) => {
            ctx.registry.verified(&view.id, false).await;
            let r = &view.api_key;
            Ok(Outcome::KeyRejected(format!(
                "OneInbox rejected the API key in Secret {}/{} (key {:?}) with HTTP {status}: put a valid key of the workspace there; it is checked again within seconds of the change",
                r.namespace, r.name, r.key
            )))
        }
        Err(e) => {
            warn!(account = %view.id, error = %e, "account check failed");
            Ok(Outcome::Unavailable(format!(
                "The API key could not be checked yet: {e}"
            )))
        }
    }
}

/// The accounts whose key or CA Secret is `namespace/name`.
pub fn accounts_of_secret<'a>(
    namespace: &str,
    name: &str,
    views: impl IntoIterator<Item = &'a AccountView>,
) -> Vec<AccountId> {
    views
        .into_iter()
        .filter(|v| {
            v.secrets()
                .any(|s| s.namespace == namespace && s.name == name)
        })
        .map(|v| v.id.clone())
        .collect()
}

/// Labels by namespace, from the metadata-only Namespace watch.
pub type NamespaceLabels = BTreeMap<String, BTreeMap<String, String>>;

/// A failed account watch stops every PhoneNumber on an account (they wait for the accounts to
/// be listed): say so, with the likely fix.
async fn report_account_watch_error<T, E: std::fmt::Display>(
    res: std::result::Result<T, kube::runtime::controller::Error<E, watcher::Error>>,
) {
    if let Err(kube::runtime::controller::Error::QueueError(e)) = res {
        warn_account_watch(&e);
    }
}

/// The controller of one account kind: its watch, and the PhoneNumbers' requests that an
/// account count its users again (`pokes`).
pub fn account_kind_controller<K, C>(
    accounts: impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static,
    store: Store<K>,
    pokes: mpsc::UnboundedReceiver<ObjectRef<K>>,
    ctx: Arc<AccountContext<C>>,
) -> impl Future<Output = ()>
where
    K: AccountResource,
    C: OneInboxApi,
{
    Controller::for_stream(accounts, store)
        .with_config(ControllerConfig::default().debounce(Duration::from_millis(500)))
        .trigger_backoff(crate::relists::EachWatchBacksOff)
        .reconcile_on(UnboundedReceiverStream::new(pokes))
        .run(reconcile::<K, C>, account_error_policy, ctx)
        .for_each(report_account_watch_error)
}

/// The controllers of both account kinds, or, when `manage` is false, only the waking of
/// waiting users. An account's manager (in-use finalizer, status) must see every PhoneNumber
/// that uses it: a process sharded by PhoneNumber label does not, so it only uses the
/// accounts, and wakes its own waiting objects when one changes (docs/tenancy.md).
pub fn account_controllers<C: OneInboxApi>(
    manage: bool,
    (namespaced, cluster): (
        impl futures::Stream<Item = Result<OneInboxAccount, watcher::Error>> + Send + 'static,
        impl futures::Stream<Item = Result<ClusterOneInboxAccount, watcher::Error>> + Send + 'static,
    ),
    stores: &AccountStores,
    (ns_pokes, cl_pokes): (
        mpsc::UnboundedReceiver<ObjectRef<OneInboxAccount>>,
        mpsc::UnboundedReceiver<ObjectRef<ClusterOneInboxAccount>>,
    ),
    ctx: Arc<AccountContext<C>>,
) -> futures::future::BoxFuture<'static, ()> {
    use futures::FutureExt;
    if manage {
        let ns =
            account_kind_controller(namespaced, stores.namespaced.clone(), ns_pokes, ctx.clone());
        let cl = account_kind_controller(cluster, stores.cluster.clone(), cl_pokes, ctx);
        futures::future::join(ns, cl).map(|_| ()).boxed()
    } else {
        drop((ns_pokes, cl_pokes));
        let ns = wake_waiting_users(namespaced, AccountView::namespaced, ctx.clone());
        let cl = wake_waiting_users(cluster, AccountView::cluster, ctx);
        futures::future::join(ns, cl).map(|_| ()).boxed()
    }
}

/// For a replica that uses accounts without managing them: each account the watch reports
/// wakes the PhoneNumbers of this replica that use it and are not Ready (they may wait on it).
pub fn wake_waiting_users<K, C>(
    accounts: impl futures::Stream<Item = Result<K, watcher::Error>>,
    view_of: fn(&K) -> AccountView,
    ctx: Arc<AccountContext<C>>,
) -> impl Future<Output = ()> {
    accounts.for_each(move |r| {
        match r {
            Ok(account) => {
                for pn in ctx.users(&view_of(&account).id) {
                    if !pn.is_ready() {
                        let _ = ctx.poke.send(ObjectRef::from_obj(pn.as_ref()));
                    }
                }
            }
            Err(e) => warn_account_watch(&e),
        }
        futures::future::ready(())
    })
}

fn warn_account_watch(e: &watcher::Error) {
    warn!(error = %e, "cannot watch accounts; PhoneNumbers wait until they are listed (are the account CRDs installed? kubectl apply --server-side -f crds/)");
}

/// Requeue delay after a failed account pass (a Kubernetes call failed).
fn account_error_policy<K, C>(obj: Arc<K>, err: &kube::Error, _: Arc<AccountContext<C>>) -> Action
where
    K: kube::Resource,
{
    warn!(account = obj.meta().name.as_deref().unwrap_or_default(), error = %err, "account reconcile failed");
    Action::requeue(Duration::from_secs(5) + Duration::from_millis(rand::random_range(0..1000)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn time(s: i64) -> Time {
        Time(jiff::Timestamp::from_second(s).unwrap())
    }

    /// (type, status, reason) of each condition.
    type Summary = Vec<(String, String, String)>;

    fn summary(cs: &[Condition]) -> Summary {
        cs.iter()
            .map(|c| (c.type_.clone(), c.status.clone(), c.reason.clone()))
            .collect()
    }

    fn row(t: &str, s: &str, r: &str) -> (String, String, String) {
        (t.into(), s.into(), r.into())
    }

    #[test]
    fn account_conditions_by_outcome() {
        let key_missing = Outcome::KeyProblem {
            reason: reason::SECRET_NOT_FOUND,
            message: "gone".into(),
        };
        let rows: Vec<(&str, Outcome, Option<usize>, Summary)> = vec![
            (
                "verified",
                Outcome::Verified,
                None,
                vec![row("Ready", "True", "Verified")],
            ),
            (
                "key Secret missing",
                key_missing.clone(),
                None,
                vec![
                    row("Ready", "False", "SecretNotFound"),
                    row("Stalled", "True", "SecretNotFound"),
                ],
            ),
            (
                "key rejected",
                Outcome::KeyRejected("401".into()),
                None,
                vec![
                    row("Ready", "False", "APIKeyRejected"),
                    row("Stalled", "True", "APIKeyRejected"),
                ],
            ),
            (
                "API unavailable",
                Outcome::Unavailable("503".into()),
                None,
                vec![
                    row("Ready", "False", "APIUnavailable"),
                    row("Reconciling", "True", "APIUnavailable"),
                ],
            ),
            (
                "invalid endpoint",
                Outcome::Invalid("bad".into()),
                None,
                vec![
                    row("Ready", "False", "InvalidEndpoint"),
                    row("Stalled", "True", "InvalidEndpoint"),
                ],
            ),
            (
                "deleting while in use: Ready stays, Reconciling InUse",
                Outcome::Verified,
                Some(2),
                vec![
                    row("Ready", "True", "Verified"),
                    row("Reconciling", "True", "InUse"),
                ],
            ),
            (
                "deleting while in use and unavailable: one Reconciling, InUse",
                Outcome::Unavailable("503".into()),
                Some(1),
                vec![
                    row("Ready", "False", "APIUnavailable"),
                    row("Reconciling", "True", "InUse"),
                ],
            ),
        ];
        for (what, outcome, users, want) in rows {
            let got = account_conditions(&[], &outcome, users, Some(3), time(10));
            assert_eq!(summary(&got), want, "{what}");
            assert!(
                got.iter().all(|c| c.observed_generation == Some(3)),
                "{what}"
            );
        }
        let deleting = account_conditions(&[], &Outcome::Verified, Some(2), Some(3), time(10));
        assert!(
            deleting[1].message.contains("the 2 PhoneNumber(s)"),
            "{deleting:?}"
        );
    }

    #[test]
    fn a_condition_keeps_its_transition_time_while_its_status_stays() {
        let first = account_conditions(&[], &Outcome::Verified, None, Some(1), time(10));
        let again = account_conditions(&first, &Outcome::Verified, None, Some(2), time(20));
        assert_eq!(again[0].last_transition_time, time(10));
        let rejected = account_conditions(
            &again,
            &Outcome::KeyRejected("x".into()),
            None,
            Some(2),
            time(30),
        );
        assert_eq!(rejected[0].last_transition_time, time(30), "Ready flipped");
    }

    #[test]
    fn a_secret_maps_to_the_accounts_that_read_it() {
        let view = |name: &str, key_ns: &str, key: &str, ca: Option<&str>| AccountView {
            id: AccountId::Cluster { name: name.into() },
            generation: Some(1),
            api_key: SecretKeyRef {
                namespace: key_ns.into(),
                name: key.into(),
                key: "apiKey".into(),
            },
            api_url: None,
            ca_bundle: ca.map(|c| SecretKeyRef {
                namespace: key_ns.into(),
                name: c.into(),
                key: "ca.crt".into(),
            }),
            budget: None,
        };
        let views = [
            view("a", "sys", "key-a", Some("ca")),
            view("b", "sys", "key-b", Some("ca")),
            view("c", "other", "key-a", None),
        ];
        let names = |ids: Vec<AccountId>| ids.iter().map(|i| i.to_string()).collect::<Vec<_>>();
        assert_eq!(
            names(accounts_of_secret("sys", "key-a", &views)),
            ["ClusterOneInboxAccount a"]
        );
        assert_eq!(
            names(accounts_of_secret("sys", "ca", &views)),
            ["ClusterOneInboxAccount a", "ClusterOneInboxAccount b"]
        );
        assert!(accounts_of_secret("sys", "unrelated", &views).is_empty());
    }
}
