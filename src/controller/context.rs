//! What every pass shares: the settings, the clients, the caches and indexes the watches fill,
//! and the sweep that hands out due drift checks.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::runtime::events::Reporter;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, ResourceExt};
use tokio::sync::mpsc;

use super::{backoff, claims, credentials, memory};
use crate::accounts::controller::AccountContext;
use crate::accounts::registry::Registry;
use crate::accounts::stores::AccountStores;
use crate::crd::CachedPhoneNumber;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::mutex::lock;
use crate::secrets::{SecretAccess, SecretVersions};

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
    pub hash_key: credentials::HashKey,
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
    pub(crate) fn take_due_checks(&self, now: Instant) -> Vec<ObjectRef<CachedPhoneNumber>> {
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

    /// What the account controllers share with this one: the client, the registry, the
    /// PhoneNumber cache, the Secret versions, and where to wake PhoneNumbers.
    pub fn account_context(&self) -> AccountContext<C> {
        AccountContext {
            client: self.client.clone(),
            registry: self.accounts.clone(),
            phone_numbers: self.store.clone(),
            secret_versions: self.secret_versions.clone(),
            secrets_listed: self.secrets_listed.clone(),
            poke: self.siblings.clone(),
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

/// How often the sweep forgets the memory of objects that left the watch and the versions of
/// Secrets no one references: an O(objects) pass of hashing, too dear for every sweep at 10,000
/// objects (what it forgets is harmless for that long).
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(30);
