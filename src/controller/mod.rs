//! Controller wiring: watches, the shared context, error policy, result reporting, shutdown.

mod act;
pub mod backoff;
pub mod cache;
pub mod claims;
pub mod decide;
pub mod memory;
pub mod observe;
pub mod plan;
mod reconcile;
mod redact;
pub mod status;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PartialObjectMeta};
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::events::Reporter;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use tokio::sync::mpsc;
use tracing::{Instrument, debug, info, info_span, warn};

pub use reconcile::reconcile;

use k8s_openapi::api::core::v1::Namespace;

use crate::accounts::AccountId;
use crate::accounts::controller::{self as account_controller, AccountContext};
use crate::accounts::crd::{ClusterOneInboxAccount, OneInboxAccount};
use crate::accounts::registry::{AccountView, Registry, RegistrySettings};
use crate::crd::{ANNOTATION_PREFIX, ANNOTATION_REGISTRATION_ATTEMPT, PhoneNumber};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::oneinbox::OneInboxApi;
pub use cache::CachedPhoneNumber;

/// resourceVersion of each Secret (namespace, name), from the metadata-only Secret watch.
pub type SecretVersions = Arc<Mutex<HashMap<(String, String), String>>>;

/// The accounts and namespaces as the watches report them.
#[derive(Clone)]
pub struct AccountStores {
    pub namespaced: Store<OneInboxAccount>,
    pub cluster: Store<ClusterOneInboxAccount>,
    pub namespaces: Store<PartialObjectMeta<Namespace>>,
    /// ClusterOneInboxAccounts and Namespaces are watched.
    pub cluster_enabled: bool,
    /// Each watch (namespaced accounts, cluster accounts, Namespaces) has listed once.
    pub listed: [Arc<AtomicBool>; 3],
    /// Woken when one of them has.
    pub listed_changed: Arc<tokio::sync::Notify>,
}

impl AccountStores {
    /// Stores that no watch fills, ready at once: for a process (or test) that uses only the
    /// operator-wide key.
    pub fn unwatched() -> AccountStores {
        AccountStores {
            namespaced: reflector::store().0,
            cluster: reflector::store().0,
            namespaces: reflector::store().0,
            cluster_enabled: false,
            listed: std::array::from_fn(|_| Arc::new(AtomicBool::new(true))),
            listed_changed: Arc::default(),
        }
    }

    /// Every account of both kinds.
    pub fn views(&self) -> Vec<AccountView> {
        let mut out: Vec<AccountView> = self
            .namespaced
            .state()
            .iter()
            .map(|a| AccountView::namespaced(a))
            .collect();
        out.extend(self.cluster.state().iter().map(|a| AccountView::cluster(a)));
        out
    }

    /// Whether a ClusterOneInboxAccount allows namespace `ns` now, by the watched Namespace's
    /// labels (`Err`: the rule in words).
    pub fn grants(&self, account: &ClusterOneInboxAccount, ns: &str) -> Result<(), String> {
        let labels = self
            .namespaces
            .get(&ObjectRef::new(ns))
            .map(|n| n.metadata.labels.clone().unwrap_or_default());
        crate::accounts::allows(&account.spec.allowed_namespaces, ns, labels.as_ref())
    }

    /// Whether the account is one this process watches (its shard's).
    pub fn has(&self, id: &AccountId) -> bool {
        match id {
            AccountId::Operator => true,
            AccountId::Namespaced { namespace, name } => self
                .namespaced
                .get(&ObjectRef::new(name).within(namespace))
                .is_some(),
            AccountId::Cluster { name } => self.cluster.get(&ObjectRef::new(name)).is_some(),
        }
    }

    /// Until the watches have listed once, no account is known to be missing. From the
    /// watches' own flags: a kube store's readiness future wakes only its most recent waiter,
    /// and the controllers wait on it.
    async fn ready(&self) {
        let [namespaced, cluster, namespaces] = &self.listed;
        let is = |f: &AtomicBool| f.load(Ordering::Acquire);
        loop {
            // Registered before the check, so a flag set in between still wakes this waiter.
            let changed = self.listed_changed.notified();
            if is(namespaced) && (!self.cluster_enabled || (is(cluster) && is(namespaces))) {
                return;
            }
            changed.await;
        }
    }
}

/// A watch's events, setting `listed` (and waking `changed`) once it has listed everything.
fn flag_listed<K, S>(
    events: S,
    listed: Arc<AtomicBool>,
    changed: Arc<tokio::sync::Notify>,
) -> impl futures::Stream<Item = S::Item>
where
    S: futures::Stream<Item = std::result::Result<watcher::Event<K>, watcher::Error>>,
{
    events.inspect_ok(move |e| {
        if matches!(e, watcher::Event::InitDone) {
            listed.store(true, Ordering::Release);
            changed.notify_waiters();
        }
    })
}

/// A watch event as the cache keeps its object: slimmed (`slim_for_cache`) and packed
/// (`cache`), as the watch decodes it. For tests that feed a cache by hand.
pub fn packed_event(
    e: watcher::Event<PhoneNumber>,
) -> serde_json::Result<watcher::Event<CachedPhoneNumber>> {
    use watcher::Event;
    let cached = |mut pn: PhoneNumber| {
        slim_for_cache(&mut pn);
        CachedPhoneNumber::pack(&pn)
    };
    Ok(match e {
        Event::Apply(o) => Event::Apply(cached(o)?),
        Event::Delete(o) => Event::Delete(cached(o)?),
        Event::Init => Event::Init,
        Event::InitApply(o) => Event::InitApply(cached(o)?),
        Event::InitDone => Event::InitDone,
    })
}

/// How referenced Secrets are followed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum SecretAccess {
    /// A metadata-only watch of Secrets (get, list, watch).
    #[default]
    Watch,
    /// Reads only (get): each check reads what it needs.
    Get,
}

/// Timing settings of the reconciler.
#[derive(Clone, Debug)]
pub struct Settings {
    pub poll_interval: Duration,
    pub min_poll_interval: Duration,
    pub secret_grace_period: Duration,
    pub provisioning_poll: Duration,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    pub kube_timeout: Duration,
    /// The key of `status.credentialsHash`.
    pub hash_key: plan::HashKey,
    pub secret_access: SecretAccess,
}

/// Shared state of all reconciles.
pub struct Context<C> {
    pub client: Client,
    pub oneinbox: C,
    /// Every account's client, key and gate.
    pub accounts: Arc<Registry<C>>,
    pub account_stores: AccountStores,
    /// Who publishes events (controller name and instance).
    pub reporter: Reporter,
    pub metrics: Metrics,
    pub settings: Settings,
    pub backoff: backoff::Backoff,
    /// What this process remembers of each object, by UID (shared with the watch, which
    /// skips the echoes of our own writes).
    pub memory: Arc<Mutex<memory::Memory>>,
    /// resourceVersion of each Secret (namespace, name), from the metadata-only Secret watch.
    pub secret_versions: SecretVersions,
    /// The Secret watch has listed every Secret once (`secret_versions` is complete).
    pub secrets_listed: Arc<AtomicBool>,
    /// Every watched PhoneNumber, packed (for Secret mapping and the drift-check sweep).
    pub store: Store<CachedPhoneNumber>,
    /// Who claims each number and id (the cache's objects, indexed from the watch).
    pub claims: Arc<claims::Claims>,
    /// When the sweep last forgot what left the watch (`HOUSEKEEPING_EVERY`).
    pub housekept: Mutex<Option<Instant>>,
    /// The PhoneNumber watch has listed once (never the store's readiness future: polling it
    /// here would take the controller's wake-up).
    pub pns_listed: Arc<AtomicBool>,
    /// Objects to reconcile now because a number they wait for was released.
    pub siblings: mpsc::UnboundedSender<ObjectRef<CachedPhoneNumber>>,
}

impl<C> Context<C> {
    /// The objects whose drift check is due, marked as handed out. Ready objects wait for
    /// this sweep instead of a requeue each: kube's scheduler holds ~750 bytes per queued
    /// object (memory at 10,000 objects), the sweep a flag in the existing record. The memory
    /// of objects that left the watch (deleted, or relabelled out of the selector) goes here.
    fn take_due_checks(&self, now: Instant) -> Vec<ObjectRef<CachedPhoneNumber>> {
        let objects = self.store.state();
        let housekeeping = {
            let mut last = lock(&self.housekept);
            let due = last.is_none_or(|t| now.saturating_duration_since(t) >= HOUSEKEEPING_EVERY);
            if due {
                *last = Some(now);
            }
            due
        };
        if housekeeping {
            self.forget_the_unwatched(&objects);
        }
        let mut memory = lock(&self.memory);
        objects
            .iter()
            .filter_map(|o| {
                let uid = o.uid()?;
                let mut due = false;
                memory.update_existing(uid, |m| {
                    if let Some(check) = m.check.as_mut()
                        && check.drift_check_due(now)
                    {
                        check.dispatched = true;
                        due = true;
                    }
                });
                due.then(|| ObjectRef::from_obj(o.as_ref()))
            })
            .collect()
    }

    /// Forget the memory of objects that left the watch and the versions of Secrets nothing
    /// references any more.
    fn forget_the_unwatched(&self, objects: &[Arc<CachedPhoneNumber>]) {
        let mut memory = lock(&self.memory);
        let watched: HashSet<&str> = objects.iter().filter_map(|o| o.uid()).collect();
        memory.retain_watched(&watched);
        drop(memory);
        let accounts = self.account_stores.views();
        let referenced: HashSet<(String, &str)> = objects
            .iter()
            .flat_map(|o| {
                let ns = o.namespace().unwrap_or_default();
                o.referenced_secrets().map(move |s| (ns.clone(), s))
            })
            .chain(
                accounts
                    .iter()
                    .flat_map(|a| a.secrets().map(|s| (s.namespace.clone(), s.name.as_str()))),
            )
            .collect();
        // Before the first list of PhoneNumbers nothing seems referenced: keep what the Secret
        // watch reported until then (a restart needs those versions to trust the status).
        if self.pns_listed.load(Ordering::Relaxed) {
            lock(&self.secret_versions)
                .retain(|(ns, name), _| referenced.contains(&(ns.clone(), name.as_str())));
        }
    }

    /// Bound a Kubernetes call in time (the client's own retries could stall it).
    pub async fn kube_call<T>(
        &self,
        fut: impl Future<Output = std::result::Result<T, kube::Error>>,
    ) -> Result<std::result::Result<T, kube::Error>> {
        let limit = self.settings.kube_timeout;
        tokio::time::timeout(limit, fut)
            .await
            .map_err(|_| Error::KubeTimeout(limit))
    }
}

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

/// A mutex guard even if another reconcile panicked while holding it (the maps stay usable).
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What the cache keeps of a watched object: everything but the metadata the operator never
/// reads (managedFields, labels, annotations other than `oneinbox.ai/*`, among them kubectl's
/// full last-applied copy). These are most of an object's size (memory at 10,000 objects);
/// metadata writes are patches of single keys, so nothing dropped here is ever written back.
pub fn slim_for_cache(pn: &mut PhoneNumber) {
    // A settled attempt's record says nothing the status does not: only one in flight is kept.
    let settled = pn.registration_attempt().is_some_and(|a| pn.settles(&a));
    let meta = &mut pn.metadata;
    meta.managed_fields = None;
    meta.labels = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.retain(|key, _| {
            key.starts_with(ANNOTATION_PREFIX)
                && !(settled && key == ANNOTATION_REGISTRATION_ATTEMPT)
        });
        if annotations.is_empty() {
            meta.annotations = None;
        }
    }
}

/// Where and what to watch.
#[derive(Clone, Debug, Default)]
pub struct Scope {
    pub namespace: Option<String>,
    pub label_selector: Option<String>,
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
fn account_kind_controller<K, C>(
    accounts: impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static,
    store: Store<K>,
    pokes: mpsc::UnboundedReceiver<ObjectRef<K>>,
    ctx: Arc<AccountContext<C>>,
) -> impl Future<Output = ()>
where
    K: account_controller::AccountResource,
    C: OneInboxApi,
{
    Controller::for_stream(accounts, store)
        .with_config(ControllerConfig::default().debounce(Duration::from_millis(500)))
        .reconcile_on(tokio_stream_from(pokes))
        .run(
            account_controller::reconcile::<K, C>,
            account_error_policy,
            ctx,
        )
        .for_each(report_account_watch_error)
}

/// For a replica that uses accounts without managing them: each account the watch reports
/// wakes the PhoneNumbers of this replica that use it and are not Ready (they may wait on it).
fn wake_waiting_users<K, C>(
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
    let (pns, secrets): (Api<CachedPhoneNumber>, Api<PartialObjectMeta<Secret>>) =
        match &scope.namespace {
            Some(ns) => (
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client.clone(), ns),
            ),
            None => (Api::all(client.clone()), Api::all(client.clone())),
        };
    let mut wc = watcher::Config::default().any_semantic();
    if let Some(sel) = &scope.label_selector {
        wc = wc.labels(sel);
    }
    let (store, writer) = reflector::store();
    // Accounts count their PhoneNumbers: a new or deleted object asks its account to count.
    let (ns_account_tx, ns_account_rx) = mpsc::unbounded_channel::<ObjectRef<OneInboxAccount>>();
    let (cl_account_tx, cl_account_rx) =
        mpsc::unbounded_channel::<ObjectRef<ClusterOneInboxAccount>>();
    let poke_accounts = {
        let (ns_tx, cl_tx) = (ns_account_tx.clone(), cl_account_tx.clone());
        move |id: AccountId| match id {
            AccountId::Namespaced { namespace, name } => {
                let _ = ns_tx.send(ObjectRef::new(&name).within(&namespace));
            }
            AccountId::Cluster { name } => {
                let _ = cl_tx.send(ObjectRef::new(&name));
            }
            AccountId::Operator => {}
        }
    };
    let default_account = account_settings.default_account.clone();
    let namespace_default_account = default_account.clone();
    let known = store.clone();
    let poke = poke_accounts.clone();
    let pns_listed = Arc::new(AtomicBool::new(false));
    let claims = Arc::new(claims::Claims::new(default_account.clone()));
    let (claims_of, claims_store) = (claims.clone(), store.clone());
    let memory: Arc<Mutex<memory::Memory>> = Arc::default();
    let echoes = memory.clone();
    let lists = metrics.clone();
    let objects = reflector::reflector(
        writer,
        flag_listed(watcher(pns, wc), pns_listed.clone(), Arc::default())
            .default_backoff()
            .inspect_ok(move |event| {
                // A list that completed: the watcher announces Init before every attempt,
                // also those that fail while the API server is unreachable.
                if matches!(event, watcher::Event::InitDone) {
                    lists.phonenumber_watch_listed();
                }
                let (obj, new) = match event {
                    watcher::Event::Apply(o) | watcher::Event::InitApply(o) => {
                        (o, known.get(&ObjectRef::from_obj(o)).is_none())
                    }
                    watcher::Event::Delete(o) => (o, true),
                    _ => return,
                };
                if new {
                    poke(obj.account(default_account.as_deref()));
                }
            }),
    )
    .inspect_ok(move |event| claims_of.observe(event, &claims_store))
    .applied_objects()
    // The cache takes every event; the echoes of our own writes start no pass.
    .try_filter(move |obj| std::future::ready(!take_our_echo(&mut lock(&echoes), obj)));
    // Passes are bounded per account (its gate), not here: one account's backlog never
    // holds the places of another account's work.
    let controller = Controller::for_stream(objects, store.clone())
        .with_config(ControllerConfig::default().concurrency(0));
    let counted = store.clone();
    metrics.set_object_counts(move || {
        let objects = counted.state();
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
    });
    on_ready(Readiness {
        store: store.clone(),
    });

    let (siblings, sibling_rx) = mpsc::unbounded_channel();
    let secret_versions: SecretVersions = Arc::default();

    // The accounts: both kinds (cluster ones unless scoped to a namespace without them), and
    // Namespace labels for the cluster accounts' allowedNamespaces.
    let mut account_wc = watcher::Config::default().any_semantic();
    if let Some(sel) = &account_settings.account_selector {
        account_wc = account_wc.labels(sel);
    }
    let ns_accounts: Api<OneInboxAccount> = match &scope.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let (ns_account_store, ns_account_writer) = reflector::store();
    let account_listed: [Arc<AtomicBool>; 3] = Default::default();
    let listed_changed: Arc<tokio::sync::Notify> = Arc::default();
    let ns_account_objects = reflector::reflector(
        ns_account_writer,
        flag_listed(
            watcher(ns_accounts, account_wc.clone()),
            account_listed[0].clone(),
            listed_changed.clone(),
        )
        .default_backoff(),
    )
    .applied_objects();
    let cluster_enabled = account_settings.cluster_accounts;
    let (cl_account_store, cl_account_writer) = reflector::store();
    let (namespace_store, namespace_writer) = reflector::store();
    let (cl_account_objects, namespace_events) = if cluster_enabled {
        let cl: Api<ClusterOneInboxAccount> = Api::all(client.clone());
        let namespaces: Api<PartialObjectMeta<Namespace>> = Api::all(client.clone());
        (
            reflector::reflector(
                cl_account_writer,
                flag_listed(
                    watcher(cl, account_wc),
                    account_listed[1].clone(),
                    listed_changed.clone(),
                )
                .default_backoff(),
            )
            .applied_objects()
            .boxed(),
            reflector::reflector(
                namespace_writer,
                flag_listed(
                    watcher(namespaces, watcher::Config::default()),
                    account_listed[2].clone(),
                    listed_changed.clone(),
                )
                .default_backoff(),
            )
            .applied_objects()
            .boxed(),
        )
    } else {
        (
            futures::stream::pending().boxed(),
            futures::stream::pending().boxed(),
        )
    };
    let account_stores = AccountStores {
        namespaced: ns_account_store.clone(),
        cluster: cl_account_store.clone(),
        namespaces: namespace_store.clone(),
        cluster_enabled,
        listed: account_listed,
        listed_changed,
    };
    let manage_accounts =
        scope.label_selector.is_none() || account_settings.account_selector.is_some();
    let registry = Arc::new(Registry::new(oneinbox.clone(), account_settings));
    let reporter = Reporter {
        controller: "oneinbox-operator".into(),
        instance: Some(instance),
    };
    let ctx = Arc::new(Context {
        client: client.clone(),
        oneinbox,
        accounts: registry.clone(),
        account_stores: account_stores.clone(),
        reporter,
        metrics: metrics.clone(),
        settings,
        backoff: backoff::Backoff::default(),
        memory: memory.clone(),
        secret_versions: secret_versions.clone(),
        secrets_listed: Arc::default(),
        store: store.clone(),
        claims,
        housekept: Mutex::default(),
        pns_listed: pns_listed.clone(),
        siblings,
    });

    // Metadata only: learn that a referenced Secret changed without caching any Secret data.
    // With `--secret-access get` there is no watch (and no list/watch permission): the stream
    // is empty and every check reads the Secrets it needs.
    let secret_store = store.clone();
    let seen_secrets = secret_versions.clone();
    let secrets_listed = ctx.secrets_listed.clone();
    let secret_events = match ctx.settings.secret_access {
        SecretAccess::Watch => watcher(secrets, watcher::Config::default())
            .default_backoff()
            .inspect_ok(move |e| {
                if matches!(e, watcher::Event::InitDone) {
                    secrets_listed.store(true, Ordering::Relaxed);
                }
            })
            .touched_objects()
            .boxed(),
        SecretAccess::Get => futures::stream::pending().boxed(),
    };
    let sibling_stream = tokio_stream_from(sibling_rx);
    let sweep_ctx = ctx.clone();
    let sweep_every = sweep_period(sweep_ctx.settings.min_poll_interval);
    let due_checks =
        futures::stream::unfold(tokio::time::interval(sweep_every), move |mut tick| {
            let ctx = sweep_ctx.clone();
            async move {
                tick.tick().await;
                let due = ctx.take_due_checks(Instant::now());
                Some((futures::stream::iter(due), tick))
            }
        })
        .flatten();

    let reconcile_metrics = metrics.clone();
    let secret_accounts = account_stores.clone();
    let secret_pns_listed = pns_listed.clone();
    let poke = poke_accounts.clone();
    let account_ctx = Arc::new(AccountContext {
        client: client.clone(),
        registry: registry.clone(),
        phone_numbers: store.clone(),
        secret_versions: secret_versions.clone(),
        secrets_listed: ctx.secrets_listed.clone(),
        poke: ctx.siblings.clone(),
    });
    // An account's manager (in-use finalizer, status) must see every PhoneNumber that uses
    // it: a process sharded by PhoneNumber label does not, so it only uses the accounts, and
    // wakes its own waiting objects when one changes (docs/tenancy.md).
    let accounts_task: futures::future::BoxFuture<'static, ()> = if manage_accounts {
        let ns_account_controller = account_kind_controller(
            ns_account_objects,
            ns_account_store,
            ns_account_rx,
            account_ctx.clone(),
        );
        let cl_account_controller = account_kind_controller(
            cl_account_objects,
            cl_account_store,
            cl_account_rx,
            account_ctx,
        );
        futures::future::join(ns_account_controller, cl_account_controller)
            .map(|_| ())
            .boxed()
    } else {
        drop((ns_account_rx, cl_account_rx));
        let ns = wake_waiting_users(
            ns_account_objects,
            AccountView::namespaced,
            account_ctx.clone(),
        );
        let cl = wake_waiting_users(cl_account_objects, AccountView::cluster, account_ctx);
        futures::future::join(ns, cl).map(|_| ()).boxed()
    };
    let namespace_store_pns = store.clone();
    let pn_controller = controller
        .watches_stream(
            namespace_events,
            move |ns: PartialObjectMeta<Namespace>| {
                // A namespace's labels may grant or revoke a cluster account: the objects
                // there that use one look again, Ready or not (a pass that finds its grant
                // unchanged and its check fresh ends without a call).
                let name = ns.name_any();
                namespace_store_pns
                    .state()
                    .into_iter()
                    .filter(|pn| {
                        pn.namespace().as_deref() == Some(name.as_str())
                            && matches!(
                                pn.account(namespace_default_account.as_deref()),
                                AccountId::Cluster { .. }
                            )
                    })
                    .map(|pn| ObjectRef::from_obj(pn.as_ref()))
                    .collect::<Vec<_>>()
            },
        )
        .watches_stream(secret_events, move |secret: PartialObjectMeta<Secret>| {
            let ns = secret.namespace();
            let name = secret.name_any();
            let users = secret_store
                .state()
                .into_iter()
                .filter(|pn| pn.namespace() == ns && pn.referenced_secrets().any(|s| s == name))
                .map(|pn| ObjectRef::from_obj(pn.as_ref()))
                .collect::<Vec<_>>();
            let accounts = account_controller::accounts_of_secret(
                ns.as_deref().unwrap_or_default(),
                &name,
                &secret_accounts.views(),
            );
            let account_secret = !accounts.is_empty();
            accounts.into_iter().for_each(&poke);
            // Only the Secrets some object or account references are tracked (a read records
            // the others when an object starts to use them); all of them until the
            // PhoneNumbers are listed.
            if let (Some(ns), Some(rv)) = (ns, secret.resource_version()) {
                let mut versions = lock(&seen_secrets);
                if users.is_empty() && !account_secret && secret_pns_listed.load(Ordering::Relaxed) {
                    versions.remove(&(ns, name));
                } else {
                    versions.insert((ns, name), rv);
                }
            }
            users
        })
        .reconcile_on(sibling_stream)
        .reconcile_on(due_checks)
        .graceful_shutdown_on(shutdown)
        .run(
            move |obj, ctx: Arc<Context<C>>| {
                let span = info_span!("reconcile", namespace = obj.namespace().unwrap_or_default(), object = %obj.name_any());
                let metrics = reconcile_metrics.clone();
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
                    let _pass = gate
                        .enter(background, || ctx.accounts.budget_used_up(&account))
                        .await;
                    metrics.set_pass_places(&account.label(), gate.places());
                    metrics.reconcile_started();
                    let started = Instant::now();
                    let uid = obj.uid().unwrap_or_default().to_owned();
                    // Boxed: a pass is ~11 KiB of state, allocated only once it has its place
                    // (a restart queues a pass per object at the gates). The object is
                    // unpacked only then too.
                    let res = match obj.object() {
                        Ok(pn) => Box::pin(reconcile(Arc::new(pn), ctx.clone())).await,
                        Err(e) => Err(e),
                    };
                    metrics.reconcile_finished(started.elapsed(), res.as_ref().err().map(Error::metric_label));
                    if res.is_ok() {
                        ctx.backoff.reset(&uid);
                    }
                    res
                }
                .instrument(span)
                .boxed()
            },
            error_policy,
            ctx,
        )
        .for_each(|res| async move {
            match res {
                Ok((obj, action)) => debug!(name = %obj.name, namespace = obj.namespace.as_deref().unwrap_or(""), ?action, "reconciled"),
                Err(e) => debug!(error = %e, "reconcile did not complete"),
            }
        });
    // The account controllers stop with the PhoneNumber controller (its shutdown).
    futures::future::select(Box::pin(pn_controller), accounts_task).await;
    info!("controller stopped");
}

/// How often the sweep forgets the memory of objects that left the watch and the versions of
/// Secrets no one references: an O(objects) pass of hashing, too dear for every sweep at 10,000
/// objects (what it forgets is harmless for that long).
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(30);

/// How often due drift checks are looked for: a tenth of the shortest poll interval an object
/// may have, between 100 ms and 1 s. A check is at most that late, and one sweep hands out
/// about a second's worth of the fleet's checks: coarser sweeps sent bursts that drained the
/// API's token bucket (429s in the steady-state benchmark at 3 s).
fn sweep_period(min_poll_interval: Duration) -> Duration {
    (min_poll_interval / 10).clamp(Duration::from_millis(100), Duration::from_secs(1))
}

/// An unbounded receiver as a stream.
fn tokio_stream_from<T: Send + 'static>(
    rx: mpsc::UnboundedReceiver<T>,
) -> impl futures::Stream<Item = T> + Send {
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|v| (v, rx)) })
}
