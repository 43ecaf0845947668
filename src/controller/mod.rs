//! The PhoneNumber controller: a pass per object (observe → decide → act, reconcile.rs) on the
//! streams of watches.rs, with the shared context of context.rs; here the wiring of the
//! controllers, the error policy and shutdown.

mod act;
pub mod backoff;
pub mod claims;
mod context;
pub mod credentials;
pub mod decide;
pub mod memory;
pub mod observe;
pub mod plan;
pub mod polling;
mod reconcile;
mod redact;
pub mod status;
pub mod step;
#[cfg(test)]
mod tests;
mod watches;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::PartialObjectMeta;
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::events::Reporter;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, ResourceExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tracing::{Instrument, debug, info, info_span, warn};

pub use context::{Context, Settings};
pub use reconcile::reconcile;

use crate::accounts::controller::account_controllers;
use crate::accounts::registry::{Registry, RegistrySettings};
use crate::accounts::stores::AccountStores;
use crate::crd::{AccountId, CachedPhoneNumber, PhoneNumber};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::mutex::lock;
use crate::oneinbox::OneInboxApi;
use crate::secrets;

/// Whether a watched object is an echo of this process's own writes, to skip
/// (`memory::ObjectMemory::take_echo`).
pub(crate) fn take_our_echo(memory: &mut memory::Memory, obj: &CachedPhoneNumber) -> bool {
    match (obj.uid(), obj.resource_version()) {
        (Some(uid), Some(rv)) => memory.take_echo(uid, rv),
        _ => false,
    }
}

/// The controller's key of an object (its name and namespace).
pub(crate) fn cache_key(obj: &PhoneNumber) -> ObjectRef<CachedPhoneNumber> {
    ObjectRef::from_obj(obj).into_kind_unchecked(())
}

/// Where and what to watch.
#[derive(Clone, Debug, Default)]
pub struct Scope {
    pub namespace: Option<String>,
    pub label_selector: Option<String>,
    /// How the PhoneNumber and Secret watches list.
    pub initial_lists: crate::watch_list::InitialLists,
}

/// How long to wait before retrying an object whose pass ended with `err` (pure but for
/// `failed`, which counts this failure in the object's backoff and is called only when the
/// backoff applies). `jitter` is in [0, 1).
///
/// A 429 is the API pacing everyone, not this object failing: wait what it asked (every caller
/// already waits that long before its next call), spread by a little jitter, and keep the
/// object's backoff where it was. A rejected key is retried at least every ten minutes (the key
/// is read again first).
pub fn retry_delay(
    err: &Error,
    failed: impl FnOnce() -> u32,
    s: &Settings,
    jitter: f64,
) -> Duration {
    if err
        .api_error()
        .is_some_and(crate::oneinbox::ApiError::is_throttled)
    {
        let base = err.retry_after().unwrap_or(Duration::from_secs(1));
        return base + Duration::from_millis((jitter.clamp(0.0, 1.0) * 999.0) as u64);
    }
    let mut wait = backoff::delay(failed(), s.backoff_base, s.backoff_max, 0.5 + jitter / 2.0);
    if let Some(ra) = err.retry_after() {
        wait = wait.max(ra);
    }
    if err
        .api_error()
        .is_some_and(|e| matches!(e, crate::oneinbox::ApiError::KeyRejected { .. }))
    {
        wait = wait.min(KEY_REJECTED_RETRY_MAX);
    }
    wait
}

/// Longest wait between retries of an object whose API key was rejected.
const KEY_REJECTED_RETRY_MAX: Duration = Duration::from_secs(600);

/// Requeue delay after a failed reconcile: per-object exponential backoff with jitter, never
/// shorter than what the API asked for.
fn error_policy<C: OneInboxApi>(
    obj: Arc<CachedPhoneNumber>,
    err: &Error,
    ctx: Arc<Context<C>>,
) -> Action {
    let uid = obj.uid().unwrap_or_default().to_owned();
    let mut failures = 0;
    let wait = retry_delay(
        err,
        || {
            failures = ctx.backoff.failed(&uid);
            failures
        },
        &ctx.settings,
        rand::random_range(0.0..1.0),
    );
    warn!(name = %obj.name_any(), namespace = obj.namespace().unwrap_or_default(), error = %err, failures, retry_in = ?wait, "reconcile failed");
    Action::requeue(wait)
}

/// Handle to the running controller's readiness: ready once the PhoneNumber cache has synced.
#[derive(Clone)]
pub struct Readiness {
    pub store: Store<CachedPhoneNumber>,
}

/// How the controller runs.
#[derive(Clone, Debug)]
pub struct Options {
    pub settings: Settings,
    pub scope: Scope,
    /// Event reporter instance (the pod name).
    pub instance: String,
    /// The accounts: default account, budgets, passes at once per account, sharding.
    pub accounts: RegistrySettings,
}

/// Run the controller until `shutdown` resolves, then drain in-flight reconciles.
pub async fn run<C: OneInboxApi>(
    client: Client,
    oneinbox: C,
    metrics: Metrics,
    options: Options,
    on_ready: impl FnOnce(Readiness) + Send,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let Options {
        settings,
        scope,
        instance,
        accounts: account_settings,
    } = options;
    let default_account = account_settings.default_account.clone();
    let (pokes, poked) = watches::AccountPokes::channel();
    let phone_numbers = watches::phone_numbers(
        &client,
        &scope,
        default_account.clone(),
        pokes.clone(),
        metrics.clone(),
    );
    let store = phone_numbers.store.clone();
    metrics.set_object_counts(object_counts(store.clone()));
    on_ready(Readiness {
        store: store.clone(),
    });
    let accounts = watches::accounts(&client, &scope, &account_settings);
    let manage_accounts =
        scope.label_selector.is_none() || account_settings.account_selector.is_some();
    let registry = Arc::new(Registry::new(oneinbox.clone(), account_settings));
    let (siblings, sibling_rx) = mpsc::unbounded_channel();
    let ctx = Arc::new(Context {
        client: client.clone(),
        oneinbox,
        accounts: registry,
        account_stores: accounts.stores.clone(),
        reporter: Reporter {
            controller: "oneinbox-operator".into(),
            instance: Some(instance),
        },
        metrics,
        settings,
        backoff: backoff::Backoff::default(),
        memory: phone_numbers.memory,
        secret_versions: Arc::default(),
        secrets_listed: Arc::default(),
        store: store.clone(),
        claims: phone_numbers.claims,
        housekept: Default::default(),
        pns_listed: phone_numbers.listed,
        siblings,
    });
    let secret_events = secrets::version_watch(
        &client,
        scope.namespace.as_deref(),
        ctx.settings.secret_access,
        ctx.secrets_listed.clone(),
        scope.initial_lists,
    );
    let accounts_task = account_controllers(
        manage_accounts,
        (accounts.namespaced, accounts.cluster),
        &accounts.stores,
        poked,
        Arc::new(ctx.account_context()),
    );
    let pn_controller = phone_number_controller(
        phone_numbers.objects,
        (accounts.namespaces, secret_events, sibling_rx),
        (accounts.stores, pokes, default_account),
        ctx,
        shutdown,
    );
    // The account controllers stop with the PhoneNumber controller (its shutdown).
    futures::future::select(Box::pin(pn_controller), accounts_task).await;
    info!("controller stopped");
}

/// The PhoneNumber controller on its streams: the watched objects, the objects a Namespace or
/// Secret change concerns, the siblings a released number wakes, and the due drift checks.
fn phone_number_controller<C: OneInboxApi>(
    objects: watches::Objects<CachedPhoneNumber>,
    (namespaces, secret_events, siblings): (
        watches::Objects<PartialObjectMeta<Namespace>>,
        watches::Objects<PartialObjectMeta<Secret>>,
        watches::Poked<CachedPhoneNumber>,
    ),
    (account_stores, pokes, default_account): (
        AccountStores,
        watches::AccountPokes,
        Option<String>,
    ),
    ctx: Arc<Context<C>>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> impl Future<Output = ()> {
    let store = ctx.store.clone();
    // Passes are bounded per account (its gate), not here: one account's backlog never
    // holds the places of another account's work.
    Controller::for_stream(objects, store.clone())
        .with_config(ControllerConfig::default().concurrency(0))
        .trigger_backoff(crate::relists::EachWatchBacksOff)
        .watches_stream(
            namespaces,
            watches::users_in_namespace(
                store.clone(),
                default_account,
                ctx.accounts.settings.operator_key_namespaces.is_some(),
            ),
        )
        .watches_stream(
            secret_events,
            watches::users_of_secret(
                store,
                account_stores,
                ctx.secret_versions.clone(),
                ctx.pns_listed.clone(),
                pokes,
            ),
        )
        .reconcile_on(UnboundedReceiverStream::new(siblings))
        .reconcile_on(watches::due_checks(ctx.clone()))
        .graceful_shutdown_on(shutdown)
        .run(pass, error_policy, ctx)
        .for_each(|res| async move {
            match res {
                Ok((obj, action)) => debug!(name = %obj.name, namespace = obj.namespace.as_deref().unwrap_or(""), ?action, "reconciled"),
                Err(e) => debug!(error = %e, "reconcile did not complete"),
            }
        })
}

/// The objects per state, for the metrics.
fn object_counts(store: Store<CachedPhoneNumber>) -> impl Fn() -> Vec<(&'static str, i64)> {
    move || {
        let objects = store.state();
        let count =
            |is: fn(&CachedPhoneNumber) -> bool| objects.iter().filter(|o| is(o)).count() as i64;
        vec![
            ("Ready", count(CachedPhoneNumber::is_ready)),
            ("Reconciling", count(CachedPhoneNumber::is_reconciling)),
            ("Stalled", count(CachedPhoneNumber::is_stalled)),
            (
                crate::metrics::DELETION_BLOCKED,
                count(CachedPhoneNumber::is_deletion_blocked),
            ),
            ("total", objects.len() as i64),
        ]
    }
}

/// One pass over `obj`, once its account's gate gives it a place. A restart hands every
/// object to the controller at once, so up to one waiting pass per object: while it waits it
/// holds only the object, the context and its place in the queue (its span and the rest of
/// its state are made once it has a place: at 10,000 objects the waiting passes were most of
/// a restart's peak memory, docs/benchmarks.md "Memory at scale").
fn pass<C: OneInboxApi>(
    obj: Arc<CachedPhoneNumber>,
    ctx: Arc<Context<C>>,
) -> BoxFuture<'static, Result<Action>> {
    async move {
        ctx.account_stores.ready().await;
        let account = obj.account(ctx.accounts.settings.default_account.as_deref());
        // Sharded by account: another process's account is not this one's work.
        if ctx.accounts.settings.account_selector.is_some()
            && (account == AccountId::Operator || !ctx.account_stores.has(&account))
        {
            return Ok(Action::await_change());
        }
        let dispatched = obj
            .uid()
            .and_then(|uid| lock(&ctx.memory).get(uid).check)
            .is_some_and(|c| c.dispatched);
        let background = obj.is_background_check(dispatched);
        let gate = ctx.accounts.gate(&account);
        let place = gate
            .enter(background, || ctx.accounts.budget_used_up(&account))
            .await;
        ctx.metrics.set_pass_places(&account.label(), gate.places());
        drop((account, gate));
        Box::pin(placed_pass(obj, ctx, place)).await
    }
    .boxed()
}

/// A pass that has its place (`_place`, held until it ends).
async fn placed_pass<C: OneInboxApi>(
    obj: Arc<CachedPhoneNumber>,
    ctx: Arc<Context<C>>,
    _place: crate::accounts::registry::GatePass,
) -> Result<Action> {
    let span = info_span!("reconcile", namespace = obj.namespace().unwrap_or_default(), object = %obj.name_any());
    async move {
        let metrics = &ctx.metrics;
        metrics.reconcile_started();
        let started = Instant::now();
        let uid = obj.uid().unwrap_or_default().to_owned();
        // Boxed: a pass is ~11 KiB of state. The object is unpacked only now too.
        let res = match obj.object() {
            Ok(pn) => Box::pin(reconcile(Arc::new(pn), ctx.clone())).await,
            Err(e) => Err(e),
        };
        metrics.reconcile_finished(
            started.elapsed(),
            res.as_ref().err().map(Error::metric_label),
        );
        if res.is_ok() {
            ctx.backoff.reset(&uid);
        }
        res
    }
    .instrument(span)
    .await
}
