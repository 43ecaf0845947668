//! The accounts and Namespaces as the watches report them: which accounts exist, which
//! namespaces a cluster account grants, and whether the watches have listed once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store};

use super::registry::AccountView;
use crate::crd::AccountId;
use crate::crd::accounts::{ClusterOneInboxAccount, OneInboxAccount};

/// The accounts and namespaces as the watches report them.
#[derive(Clone)]
pub struct AccountStores {
    pub namespaced: Store<OneInboxAccount>,
    pub cluster: Store<ClusterOneInboxAccount>,
    pub namespaces: Store<PartialObjectMeta<Namespace>>,
    /// ClusterOneInboxAccounts are watched.
    pub cluster_enabled: bool,
    /// With a limit on the operator-wide key: its label selector, and the Namespaces it selects
    /// (a watch filtered by the API server).
    pub served: Option<(String, Store<PartialObjectMeta<Namespace>>)>,
    /// Each watch (namespaced accounts, cluster accounts, Namespaces, the Namespaces the
    /// operator-wide key serves) has listed once.
    pub listed: [Arc<AtomicBool>; 4],
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
            served: None,
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

    /// Whether the operator-wide key serves namespace `ns` now: whether the Namespace watch
    /// filtered by its selector holds it (`Err`: the rule in words). `Ok` without a selector.
    pub fn operator_key_serves(&self, ns: &str) -> Result<(), String> {
        match &self.served {
            None => Ok(()),
            Some((_, store)) if store.get(&ObjectRef::new(ns)).is_some() => Ok(()),
            Some((selector, _)) => Err(format!("namespaces labelled {selector}")),
        }
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
    pub async fn ready(&self) {
        let [namespaced, cluster, namespaces, served] = &self.listed;
        let is = |f: &AtomicBool| f.load(Ordering::Acquire);
        loop {
            // Registered before the check, so a flag set in between still wakes this waiter.
            let changed = self.listed_changed.notified();
            if is(namespaced)
                && (!self.cluster_enabled || (is(cluster) && is(namespaces)))
                && (self.served.is_none() || is(served))
            {
                return;
            }
            changed.await;
        }
    }
}
