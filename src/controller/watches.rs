//! The streams the PhoneNumber controller runs on: the PhoneNumber watch (cached packed, its
//! echoes skipped, the claims index and account pokes fed from it), the account and Namespace
//! watches, which objects a Namespace or Secret change concerns, and the drift-check sweep.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, PartialObjectMeta};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use tokio::sync::mpsc;

use super::context::Context;
use super::{Scope, claims, memory, take_our_echo};
use crate::accounts::controller::accounts_of_secret;
use crate::accounts::registry::RegistrySettings;
use crate::accounts::stores::AccountStores;
use crate::crd::accounts::{ClusterOneInboxAccount, OneInboxAccount};
use crate::crd::{AccountId, CachedPhoneNumber};
use crate::metrics::Metrics;
use crate::mutex::lock;
use crate::secrets::SecretVersions;

/// A watch's events, setting `listed` (and waking `changed`) once it has listed everything.
pub(crate) fn flag_listed<K, S>(
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

/// A watch's objects, as a controller takes them.
pub(crate) type Objects<K> = BoxStream<'static, Result<K, watcher::Error>>;

/// The requests that an account of kind `K` count its users again.
pub(crate) type Poked<K> = mpsc::UnboundedReceiver<ObjectRef<K>>;

/// Where a new or deleted PhoneNumber asks its account to count its users again.
#[derive(Clone)]
pub(crate) struct AccountPokes {
    pub namespaced: mpsc::UnboundedSender<ObjectRef<OneInboxAccount>>,
    pub cluster: mpsc::UnboundedSender<ObjectRef<ClusterOneInboxAccount>>,
}

impl AccountPokes {
    /// The senders, and the receivers of each account kind's controller.
    pub fn channel() -> (
        AccountPokes,
        (Poked<OneInboxAccount>, Poked<ClusterOneInboxAccount>),
    ) {
        let (namespaced, ns_poked) = mpsc::unbounded_channel();
        let (cluster, cl_poked) = mpsc::unbounded_channel();
        (
            AccountPokes {
                namespaced,
                cluster,
            },
            (ns_poked, cl_poked),
        )
    }

    pub fn poke(&self, id: AccountId) {
        match id {
            AccountId::Namespaced { namespace, name } => {
                let _ = self
                    .namespaced
                    .send(ObjectRef::new(&name).within(&namespace));
            }
            AccountId::Cluster { name } => {
                let _ = self.cluster.send(ObjectRef::new(&name));
            }
            AccountId::Operator => {}
        }
    }
}

/// The PhoneNumber watch and what it feeds.
pub(crate) struct PhoneNumberWatch {
    pub store: Store<CachedPhoneNumber>,
    /// The objects that start a pass: every change but the echoes of our own writes.
    pub objects: Objects<CachedPhoneNumber>,
    /// The watch has listed once.
    pub listed: Arc<AtomicBool>,
    pub claims: Arc<claims::Claims>,
    pub memory: Arc<Mutex<memory::Memory>>,
}

/// Watch the PhoneNumbers in `scope` into a packed cache. A new or deleted object pokes its
/// account; the claims index sees every event; an echo of our own write starts no pass.
pub(crate) fn phone_numbers(
    client: &Client,
    scope: &Scope,
    default_account: Option<String>,
    pokes: AccountPokes,
    metrics: Metrics,
) -> PhoneNumberWatch {
    let api: Api<CachedPhoneNumber> = match &scope.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let mut wc = watcher::Config::default().any_semantic();
    if let Some(sel) = &scope.label_selector {
        wc = wc.labels(sel);
    }
    let (store, writer) = reflector::store();
    let listed = Arc::new(AtomicBool::new(false));
    let claims = Arc::new(claims::Claims::new(default_account.clone()));
    let memory: Arc<Mutex<memory::Memory>> = Arc::default();
    let (known, claims_of, claims_store, echoes) =
        (store.clone(), claims.clone(), store.clone(), memory.clone());
    let objects = crate::relists::when_stored(
        reflector::reflector(
            writer,
            flag_listed(
                crate::watch_list::streaming_watcher(api, wc, scope.initial_lists),
                listed.clone(),
                Arc::default(),
            )
            .default_backoff()
            .inspect_ok(move |event| {
                // A list that completed: the watcher announces Init before every attempt,
                // also those that fail while the API server is unreachable.
                if matches!(event, watcher::Event::InitDone) {
                    metrics.phonenumber_watch_listed();
                }
                let (obj, new) = match event {
                    watcher::Event::Apply(o) | watcher::Event::InitApply(o) => {
                        (o, known.get(&ObjectRef::from_obj(o)).is_none())
                    }
                    watcher::Event::Delete(o) => (o, true),
                    _ => return,
                };
                if new {
                    pokes.poke(obj.account(default_account.as_deref()));
                }
            }),
        )
        .inspect_ok(move |event| claims_of.observe(event, &claims_store)),
        store.clone(),
        false,
    )
    // The cache takes every event; the echoes of our own writes start no pass.
    .try_filter(move |obj| std::future::ready(!take_our_echo(&mut lock(&echoes), obj)))
    .boxed();
    PhoneNumberWatch {
        store,
        objects,
        listed,
        claims,
        memory,
    }
}

/// The account and Namespace watches and their stores.
pub(crate) struct AccountWatches {
    pub namespaced: Objects<OneInboxAccount>,
    pub cluster: Objects<ClusterOneInboxAccount>,
    pub namespaces: Objects<PartialObjectMeta<Namespace>>,
    pub stores: AccountStores,
}

/// Watch both account kinds (cluster ones unless they are off), and Namespace labels for the
/// cluster accounts' allowedNamespaces.
pub(crate) fn accounts(
    client: &Client,
    scope: &Scope,
    settings: &RegistrySettings,
) -> AccountWatches {
    let mut wc = watcher::Config::default().any_semantic();
    if let Some(sel) = &settings.account_selector {
        wc = wc.labels(sel);
    }
    let listed: [Arc<AtomicBool>; 4] = Default::default();
    let listed_changed: Arc<tokio::sync::Notify> = Arc::default();
    let ns_api: Api<OneInboxAccount> = match &scope.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let (ns_store, ns_writer) = reflector::store();
    let namespaced = reflected(
        ns_api,
        wc.clone(),
        ns_writer,
        (listed[0].clone(), listed_changed.clone()),
        false,
    );
    let (cl_store, cl_writer) = reflector::store();
    let (namespace_store, namespace_writer) = reflector::store();
    let (cluster, namespaces) = if settings.cluster_accounts {
        let cl: Api<ClusterOneInboxAccount> = Api::all(client.clone());
        (
            reflected(
                cl,
                wc,
                cl_writer,
                (listed[1].clone(), listed_changed.clone()),
                false,
            ),
            namespace_watch(
                client,
                namespace_writer,
                watcher::Config::default(),
                (listed[2].clone(), listed_changed.clone()),
                false,
            ),
        )
    } else {
        (
            futures::stream::pending().boxed(),
            futures::stream::pending().boxed(),
        )
    };
    let (namespaces, served) = match &settings.operator_key_namespaces {
        Some(selector) => {
            let (served, store) =
                served_namespaces(client, selector, listed[3].clone(), listed_changed.clone());
            (
                futures::stream::select(namespaces, served).boxed(),
                Some((selector.clone(), store)),
            )
        }
        None => (namespaces, None),
    };
    AccountWatches {
        namespaced,
        cluster,
        namespaces,
        stores: AccountStores {
            namespaced: ns_store,
            cluster: cl_store,
            namespaces: namespace_store,
            cluster_enabled: settings.cluster_accounts,
            served,
            listed,
            listed_changed,
        },
    }
}

/// A reflector of `api` into `writer`, setting `listed` once it has listed: the objects it
/// applies (with `vanished`, also those it deletes or a relist no longer lists), each once the
/// store holds that version.
fn reflected<K>(
    api: Api<K>,
    config: watcher::Config,
    writer: reflector::store::Writer<K>,
    (listed, changed): (Arc<AtomicBool>, Arc<tokio::sync::Notify>),
    vanished: bool,
) -> Objects<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let store = writer.as_reader();
    crate::relists::when_stored(
        reflector::reflector(
            writer,
            flag_listed(
                crate::relists::relist_when_expired(watcher(api, config)),
                listed,
                changed,
            )
            .default_backoff(),
        ),
        store,
        vanished,
    )
    .boxed()
}

/// The namespaces the operator-wide key serves: the API server applies the selector, and a
/// namespace whose labels stop matching leaves the store (a touched object either way).
fn served_namespaces(
    client: &Client,
    selector: &str,
    listed: Arc<AtomicBool>,
    changed: Arc<tokio::sync::Notify>,
) -> (
    Objects<PartialObjectMeta<Namespace>>,
    Store<PartialObjectMeta<Namespace>>,
) {
    let (store, writer) = reflector::store();
    let served = namespace_watch(
        client,
        writer,
        watcher::Config::default().labels(selector),
        (listed, changed),
        true,
    );
    (served, store)
}

/// A metadata-only reflector of the Namespaces `config` selects into `writer` (see `reflected`).
fn namespace_watch(
    client: &Client,
    writer: reflector::store::Writer<PartialObjectMeta<Namespace>>,
    config: watcher::Config,
    listed: (Arc<AtomicBool>, Arc<tokio::sync::Notify>),
    vanished: bool,
) -> Objects<PartialObjectMeta<Namespace>> {
    reflected(Api::all(client.clone()), config, writer, listed, vanished)
}

/// The objects a Namespace change concerns: a namespace's labels may grant or revoke a cluster
/// account (or, with `operator_key_limited`, the operator-wide key), so the objects there that
/// use one look again, Ready or not (a pass that finds its grant unchanged and its check fresh
/// ends without a call).
pub(crate) fn users_in_namespace(
    store: Store<CachedPhoneNumber>,
    default_account: Option<String>,
    operator_key_limited: bool,
) -> impl Fn(PartialObjectMeta<Namespace>) -> Vec<ObjectRef<CachedPhoneNumber>> {
    move |ns| {
        let name = ns.name_any();
        store
            .state()
            .into_iter()
            .filter(|pn| {
                pn.namespace().as_deref() == Some(name.as_str())
                    && match pn.account(default_account.as_deref()) {
                        AccountId::Cluster { .. } => true,
                        AccountId::Operator => operator_key_limited,
                        AccountId::Namespaced { .. } => false,
                    }
            })
            .map(|pn| ObjectRef::from_obj(pn.as_ref()))
            .collect()
    }
}

/// The objects a Secret change concerns (those that reference it), after poking the accounts
/// whose key it holds. Only the Secrets some object or account references keep a version (a
/// read records the others when an object starts to use them); all of them until the
/// PhoneNumbers are listed.
pub(crate) fn users_of_secret(
    store: Store<CachedPhoneNumber>,
    accounts: AccountStores,
    versions: SecretVersions,
    pns_listed: Arc<AtomicBool>,
    pokes: AccountPokes,
) -> impl Fn(PartialObjectMeta<Secret>) -> Vec<ObjectRef<CachedPhoneNumber>> {
    move |secret| {
        let ns = secret.namespace();
        let name = secret.name_any();
        let users = store
            .state()
            .into_iter()
            .filter(|pn| pn.namespace() == ns && pn.referenced_secrets().any(|s| s == name))
            .map(|pn| ObjectRef::from_obj(pn.as_ref()))
            .collect::<Vec<_>>();
        let of_accounts =
            accounts_of_secret(ns.as_deref().unwrap_or_default(), &name, &accounts.views());
        let account_secret = !of_accounts.is_empty();
        of_accounts.into_iter().for_each(|id| pokes.poke(id));
        if let (Some(ns), Some(rv)) = (ns, secret.resource_version()) {
            let mut versions = lock(&versions);
            if users.is_empty() && !account_secret && pns_listed.load(Ordering::Relaxed) {
                versions.remove(&(ns, name));
            } else {
                versions.insert((ns, name), rv);
            }
        }
        users
    }
}

/// The objects whose drift check is due, looked for every `sweep_period`.
pub(crate) fn due_checks<C: Send + Sync + 'static>(
    ctx: Arc<Context<C>>,
) -> impl futures::Stream<Item = ObjectRef<CachedPhoneNumber>> + Send {
    let every = sweep_period(ctx.settings.min_poll_interval);
    futures::stream::unfold(tokio::time::interval(every), move |mut tick| {
        let ctx = ctx.clone();
        async move {
            tick.tick().await;
            let due = ctx.take_due_checks(Instant::now());
            Some((futures::stream::iter(due), tick))
        }
    })
    .flatten()
}

/// How often due drift checks are looked for: a tenth of the shortest poll interval an object
/// may have, between 100 ms and 1 s. A check is at most that late, and one sweep hands out
/// about a second's worth of the fleet's checks: coarser sweeps sent bursts that drained the
/// API's token bucket (429s in the steady-state benchmark at 3 s).
pub(crate) fn sweep_period(min_poll_interval: Duration) -> Duration {
    (min_poll_interval / 10).clamp(Duration::from_millis(100), Duration::from_secs(1))
}
