//! The one place that knows the operator's internals: how a process is started (its
//! `Context`, `Settings`, the reflector `Store`, the Secret versions of the metadata watch), how
//! a failed pass is requeued (a copy of the controller's error policy), how an `Action` is
//! read, how the passing of simulated time reaches the operator's memory, and how a HTTP answer
//! becomes an `ApiError`. After a change of the controller's shape, adapt this file only.

use k8s_openapi::api::core::v1::Namespace;
use kube::api::PartialObjectMeta;
use oneinbox_operator::accounts::registry::{
    AccountView, Registry, RegistrySettings, SecretKeyRef,
};
use oneinbox_operator::accounts::stores::AccountStores;
use oneinbox_operator::oneinbox::Budget;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use kube::runtime::controller::Action;
use kube::runtime::events::Reporter;
use kube::runtime::reflector::{self, ObjectRef, store::Writer};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use oneinbox_operator::controller::{self, Context, Settings, backoff};
use oneinbox_operator::crd::PhoneNumber;
use oneinbox_operator::crd::accounts::{AccountId, ClusterOneInboxAccount, OneInboxAccount};
use oneinbox_operator::crd::{CachedPhoneNumber, packed_event, slim_for_cache};
use oneinbox_operator::error::Error;
use oneinbox_operator::metrics::Metrics;
use oneinbox_operator::oneinbox::ApiError;
use tokio::sync::mpsc;

use crate::kube::KubeService;
use crate::oneinbox::ModelApi;
use crate::world::{Acct, Shared, World};

/// The operator's defaults (src/config.rs).
pub fn settings() -> Settings {
    Settings {
        poll_interval: Duration::from_secs(600),
        min_poll_interval: Duration::from_secs(30),
        secret_grace_period: Duration::from_secs(120),
        provisioning_poll: Duration::from_secs(10),
        backoff_base: Duration::from_secs(2),
        backoff_max: Duration::from_secs(1800),
        kube_timeout: Duration::from_secs(20),
        hash_key: controller::credentials::HashKey::derive(b"oi_sk_model_operator_key"),
        secret_access: oneinbox_operator::secrets::SecretAccess::Watch,
    }
}

/// A classified non-success answer, as the HTTP client classifies it.
pub fn api_error(
    endpoint: oneinbox_operator::oneinbox::Endpoint,
    status: u16,
    retry_after: Option<Duration>,
    body: &str,
) -> ApiError {
    ApiError::from_response(endpoint, status, retry_after, body)
}

/// A classified answer whose body may echo the API key `key`, as the HTTP client classifies
/// it (the client scrubs the key it sent).
pub fn api_answer(
    endpoint: oneinbox_operator::oneinbox::Endpoint,
    status: u16,
    retry_after: Option<Duration>,
    body: &str,
    key: &str,
) -> ApiError {
    let key = oneinbox_operator::oneinbox::SecretString::new(key.to_owned());
    ApiError::from_answer(endpoint, status, retry_after, body, &key)
}

/// A connection closed before the answer.
pub fn connection_error() -> ApiError {
    ApiError::Unavailable {
        what: "connection".into(),
        detail: "connection closed before message completed".into(),
        retry_after: None,
    }
}

/// The client's timeout.
pub fn timeout_error() -> ApiError {
    ApiError::Unavailable {
        what: "timeout".into(),
        detail: "the request timed out".into(),
        retry_after: None,
    }
}

/// One operator process: its context and the feeds the controller runtime would give it.
pub struct Operator {
    pub ctx: Arc<Context<ModelApi>>,
    writer: Writer<CachedPhoneNumber>,
    siblings: mpsc::UnboundedReceiver<ObjectRef<CachedPhoneNumber>>,
    /// The check records whose jitter was already replaced (uid → time of the check).
    reseeded: HashMap<String, std::time::Instant>,
    /// The account and Namespace watches.
    namespaced: Writer<OneInboxAccount>,
    cluster: Writer<ClusterOneInboxAccount>,
    namespaces: Writer<PartialObjectMeta<Namespace>>,
    /// `World::accounts_rv` the account stores were last filled from.
    accounts_synced: Option<u64>,
}

/// The operator's id of a model account.
pub fn account_id(a: Acct) -> AccountId {
    match a {
        Acct::Voice => AccountId::Cluster {
            name: a.ws().to_owned(),
        },
        Acct::Sales => AccountId::Namespaced {
            namespace: a.key_secret().0.to_owned(),
            name: a.ws().to_owned(),
        },
    }
}

impl Operator {
    /// A fresh process (nothing in memory) against the world.
    pub fn start(world: &Shared) -> Operator {
        let client = Client::new(
            KubeService {
                world: world.clone(),
            },
            "default",
        );
        let (store, writer) = reflector::store::<CachedPhoneNumber>();
        let (tx, rx) = mpsc::unbounded_channel();
        let oneinbox = ModelApi {
            world: world.clone(),
            key: None,
        };
        let accounts = Arc::new(Registry::new(
            oneinbox.clone(),
            RegistrySettings {
                cluster_accounts: true,
                ..RegistrySettings::operator_only(
                    Budget {
                        rate_per_second: std::num::NonZeroU32::MAX,
                        burst: std::num::NonZeroU32::MAX,
                        max_in_flight: 1024,
                    },
                    1024,
                )
            },
        ));
        let (namespaced_store, namespaced) = reflector::store();
        let (cluster_store, cluster) = reflector::store();
        let (namespaces_store, namespaces) = reflector::store();
        let account_stores = AccountStores {
            namespaced: namespaced_store,
            cluster: cluster_store,
            namespaces: namespaces_store,
            cluster_enabled: true,
            ..AccountStores::unwatched()
        };
        let ctx = Arc::new(Context {
            client,
            oneinbox,
            accounts,
            account_stores,
            pns_listed: Arc::new(std::sync::atomic::AtomicBool::new(true)),
            reporter: Reporter {
                controller: "oneinbox-operator".into(),
                instance: Some("model".into()),
            },
            metrics: Metrics::new(),
            settings: settings(),
            backoff: backoff::Backoff::default(),
            memory: Default::default(),
            secret_versions: Arc::default(),
            // The driver feeds the initial list of Secrets before the first pass.
            secrets_listed: Arc::new(std::sync::atomic::AtomicBool::new(true)),
            store,
            claims: Default::default(),
            housekept: Default::default(),
            siblings: tx,
        });
        Operator {
            ctx,
            writer,
            siblings: rx,
            reseeded: HashMap::new(),
            namespaced,
            cluster,
            namespaces,
            accounts_synced: None,
        }
    }

    /// The account and Namespace watches' view of the world (listed again when it changed).
    pub fn sync_accounts(&mut self, w: &World) {
        if self.accounts_synced == Some(w.accounts_rv) {
            return;
        }
        self.accounts_synced = Some(w.accounts_rv);
        let meta = |name: &str, ns: Option<&str>, a: &crate::world::AccountObj| {
            let mut m = serde_json::json!({
                "name": name, "uid": a.uid, "generation": 1,
                "resourceVersion": w.accounts_rv.to_string(),
                "finalizers": [oneinbox_operator::crd::accounts::ACCOUNT_FINALIZER],
            });
            if let Some(ns) = ns {
                m["namespace"] = ns.into();
            }
            if a.deleting {
                m["deletionTimestamp"] = jiff::Timestamp::now()
                    .strftime("%Y-%m-%dT%H:%M:%SZ")
                    .to_string()
                    .into();
            }
            m
        };
        let mut namespaced = Vec::new();
        let mut cluster = Vec::new();
        for (a, obj) in &w.accounts {
            let (key_ns, key_name) = a.key_secret();
            match a {
                Acct::Voice => cluster.push(serde_json::json!({
                    "apiVersion": "oneinbox.ai/v1alpha1", "kind": "ClusterOneInboxAccount",
                    "metadata": meta(a.ws(), None, obj),
                    "spec": {
                        "apiKeySecretRef": {"namespace": key_ns, "name": key_name},
                        "allowedNamespaces": {"selector": {"matchLabels": {"team": "voice"}}},
                    },
                })),
                Acct::Sales => namespaced.push(serde_json::json!({
                    "apiVersion": "oneinbox.ai/v1alpha1", "kind": "OneInboxAccount",
                    "metadata": meta(a.ws(), Some(key_ns), obj),
                    "spec": {"apiKeySecretRef": {"name": key_name}, "defaultDeletionPolicy": "Orphan"},
                })),
            }
        }
        let namespaces: Vec<serde_json::Value> = crate::ops::NAMESPACES
            .iter()
            .chain([&crate::world::OPS_NS])
            .map(|ns| {
                let labels = if w.labelled.contains(*ns) {
                    serde_json::json!({"team": "voice", "kubernetes.io/metadata.name": ns})
                } else {
                    serde_json::json!({"kubernetes.io/metadata.name": ns})
                };
                serde_json::json!({
                    "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
                    "metadata": {"name": ns, "labels": labels},
                })
            })
            .collect();
        fn relist<K>(writer: &mut Writer<K>, objects: Vec<serde_json::Value>)
        where
            K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned,
        {
            writer.apply_watcher_event(&watcher::Event::Init);
            for o in objects {
                #[allow(clippy::expect_used)] // built above in the resource's own shape
                let o: K = serde_json::from_value(o).expect("an account or Namespace parses");
                writer.apply_watcher_event(&watcher::Event::InitApply(o));
            }
            writer.apply_watcher_event(&watcher::Event::InitDone);
        }
        relist(&mut self.namespaced, namespaced);
        relist(&mut self.cluster, cluster);
        relist(&mut self.namespaces, namespaces);
    }

    /// What the accounts' reconciler does for PhoneNumbers when an account or its key Secret
    /// changed (`accounts::controller::reconcile`): the key is read again if its Secret
    /// changed, and the account's users that are not Ready are woken. The account's own
    /// finalizer and status are not modelled (the world keeps a deleted account while it is
    /// used, as its finalizer does).
    pub async fn account_changed(&self, a: Acct) -> Vec<(String, String)> {
        let id = account_id(a);
        let view = match &id {
            AccountId::Cluster { name } => self
                .ctx
                .account_stores
                .cluster
                .get(&ObjectRef::new(name))
                .map(|c| AccountView::cluster(&c)),
            AccountId::Namespaced { namespace, name } => self
                .ctx
                .account_stores
                .namespaced
                .get(&ObjectRef::new(name).within(namespace))
                .map(|n| AccountView::namespaced(&n)),
            AccountId::Operator => None,
        };
        let Some(view) = view else {
            return Vec::new();
        };
        let versions = self.ctx.secret_versions.clone();
        let watched = |r: &SecretKeyRef| {
            versions
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&(r.namespace.clone(), r.name.clone()))
                .cloned()
        };
        let _ = self
            .ctx
            .accounts
            .state(&self.ctx.client, &view, watched, true)
            .await;
        self.ctx
            .account_context()
            .users(&id)
            .into_iter()
            .filter(|pn| !pn.is_ready())
            .map(|pn| (pn.namespace().unwrap_or_default(), pn.name_any()))
            .collect()
    }

    /// The account is gone (its last user went): this process forgets its key and client.
    pub fn account_gone(&self, a: Acct) {
        self.ctx.accounts.forget(&account_id(a));
    }

    /// The reflector's view: every PhoneNumber, as the cache keeps it.
    pub fn sync_store(&mut self, objects: Vec<PhoneNumber>) {
        self.writer.apply_watcher_event(&watcher::Event::Init);
        for o in objects {
            #[allow(clippy::expect_used)] // a PhoneNumber's JSON has only string keys
            let event = packed_event(watcher::Event::InitApply(o)).expect("packs");
            self.writer.apply_watcher_event(&event);
        }
        self.writer.apply_watcher_event(&watcher::Event::InitDone);
        // The claims index follows the cache, as the watch feeds both.
        self.ctx
            .claims
            .observe(&watcher::Event::InitDone, &self.ctx.store);
    }

    /// What the metadata-only Secret watch records for a Secret event.
    pub fn secret_seen(&self, ns: &str, name: &str, rv: u64) {
        self.ctx
            .secret_versions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((ns.to_owned(), name.to_owned()), rv.to_string());
    }

    /// One reconcile pass, on the object as the cache gives it (slimmed, packed, unpacked).
    pub async fn reconcile(&self, obj: PhoneNumber) -> oneinbox_operator::error::Result<Action> {
        let mut obj = obj;
        slim_for_cache(&mut obj);
        let cached = CachedPhoneNumber::pack(&obj).map_err(|_| Error::Unpack)?;
        controller::reconcile(Arc::new(cached.object()?), self.ctx.clone()).await
    }

    /// The controller's bookkeeping after a pass that succeeded.
    pub fn succeeded(&self, obj: &PhoneNumber) {
        self.ctx.backoff.reset(&obj.uid().unwrap_or_default());
    }

    /// The requeue the controller's error policy gives a failed pass (a copy of
    /// `controller::error_policy`, with the jitter drawn by the model so a seed replays).
    pub fn error_policy(&self, obj: &PhoneNumber, err: &Error, jitter: f64) -> Duration {
        let uid = obj.uid().unwrap_or_default();
        controller::retry_delay(
            err,
            || self.ctx.backoff.failed(&uid),
            &self.ctx.settings,
            jitter,
        )
    }

    pub fn woken(&mut self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        while let Ok(r) = self.siblings.try_recv() {
            out.push((r.namespace.unwrap_or_default(), r.name));
        }
        out
    }

    /// Simulated time passed: the operator's record of each check is that much older. The
    /// record holds a std `Instant`, which cannot be moved back far on a freshly booted machine,
    /// so what is left of its interval shrinks instead (the same thing to every reader of it).
    pub fn advance(&self, by: Duration) {
        let mut memory = self.ctx.memory.lock().unwrap_or_else(|e| e.into_inner());
        for (_, check) in memory.checks_mut() {
            if let Some(i) = check.interval.as_mut() {
                *i = i.saturating_sub(by);
            }
        }
    }

    /// Replace the jitter of each new check record's interval with one drawn by the model.
    /// `objects` are the live objects: the interval is each one's own (its
    /// `oneinbox.ai/poll-interval`, as the operator reads it), jittered in the same range.
    pub fn reseed_checks(&mut self, objects: &[PhoneNumber], mut factor: impl FnMut() -> f64) {
        let settings = &self.ctx.settings;
        let base = |uid: &str| {
            objects
                .iter()
                .find(|o| o.metadata.uid.as_deref() == Some(uid))
                .and_then(|o| {
                    controller::polling::poll_interval(
                        o,
                        settings.poll_interval,
                        settings.min_poll_interval,
                    )
                })
                .unwrap_or(settings.poll_interval)
        };
        let mut memory = self.ctx.memory.lock().unwrap_or_else(|e| e.into_inner());
        let checked: Vec<(String, &mut controller::memory::Checked)> = memory
            .checks_mut()
            .map(|(uid, c)| (uid.clone(), c))
            .collect();
        self.reseeded
            .retain(|uid, _| checked.iter().any(|(u, _)| u == uid));
        for (uid, check) in checked {
            if self.reseeded.get(&uid) == Some(&check.at) {
                continue;
            }
            self.reseeded.insert(uid.clone(), check.at);
            if check.interval.is_some() {
                check.interval = Some(base(&uid).mul_f64(0.8 + 0.4 * factor()));
            }
        }
    }

    pub fn drift_check_in(&self, uid: &str) -> Option<Duration> {
        let memory = self.ctx.memory.lock().unwrap_or_else(|e| e.into_inner());
        let c = memory.get(uid).check?;
        if c.dispatched {
            return None;
        }
        let interval = c.interval?;
        Some(interval.saturating_sub(c.at.elapsed()))
    }

    /// Whether the object's new version is an echo of this process's own writes, which the
    /// controller's watch skips (`controller::memory::ObjectMemory::take_echo`).
    pub fn take_echo(&self, uid: &str, rv: &str) -> bool {
        let mut memory = self.ctx.memory.lock().unwrap_or_else(|e| e.into_inner());
        rv.parse().is_ok_and(|rv| memory.take_echo(uid, rv))
    }

    pub fn take_drift_check(&self, uid: &str) {
        let mut memory = self.ctx.memory.lock().unwrap_or_else(|e| e.into_inner());
        memory.update_existing(uid, |m| {
            if let Some(c) = m.check.as_mut() {
                c.dispatched = true;
            }
        });
    }
}

pub fn requeue_after(action: &Action) -> Option<Duration> {
    let text = format!("{action:?}");
    let inner = text.split("Some(").nth(1)?.split(')').next()?;
    parse_debug_duration(inner)
}

fn parse_debug_duration(s: &str) -> Option<Duration> {
    let split = s.find(|c: char| c.is_ascii_alphabetic() || c == 'µ')?;
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let secs = match unit {
        "ns" => n / 1e9,
        "µs" => n / 1e6,
        "ms" => n / 1e3,
        "s" => n,
        _ => return None,
    };
    Some(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_requeue_of_an_action() {
        assert_eq!(requeue_after(&Action::await_change()), None);
        for d in [
            Duration::from_millis(200),
            Duration::from_secs(300),
            Duration::from_millis(1500),
            Duration::from_micros(15),
        ] {
            let got = requeue_after(&Action::requeue(d)).unwrap();
            assert!(
                got.abs_diff(d) < Duration::from_micros(1),
                "{d:?} → {got:?}"
            );
        }
    }
}
