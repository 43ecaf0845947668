//! Leader election on a `coordination.k8s.io` Lease (kube-lease-manager), so that two replicas
//! never reconcile at once. Used only with `--leader-election`.

use std::time::Duration;

use kube::Client;
use kube_lease_manager::LeaseManagerBuilder;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{error, info};

/// Settings of the Lease.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub name: String,
    pub namespace: String,
    pub identity: String,
    pub duration: Duration,
    pub grace: Duration,
}

/// The held Lease: `leading` stays `true` while held; dropping it releases the Lease, which
/// `task` finishes doing.
pub struct Held {
    pub leading: watch::Receiver<bool>,
    pub task: JoinHandle<kube_lease_manager::Result<kube_lease_manager::LeaseManager>>,
}

/// Wait until this process holds the Lease, or until `stop` says to give up (then `Ok(None)`).
pub async fn acquire(
    client: Client,
    cfg: &LeaseConfig,
    mut stop: watch::Receiver<bool>,
) -> Result<Option<Held>, String> {
    let manager = LeaseManagerBuilder::new(client, &cfg.name)
        .with_namespace(&cfg.namespace)
        .with_identity(&cfg.identity)
        .with_duration(cfg.duration.as_secs().max(2))
        .with_grace(cfg.grace.as_secs().max(1))
        .with_field_manager("oneinbox-operator")
        .build()
        .await
        .map_err(|e| format!("cannot set up leader election: {e}"))?;
    let (mut leading, task) = manager.watch().await;
    info!(lease = %cfg.name, namespace = %cfg.namespace, identity = %cfg.identity, "standing by for the lease");
    loop {
        if *leading.borrow_and_update() {
            info!(identity = %cfg.identity, "acquired the lease; leading");
            return Ok(Some(Held { leading, task }));
        }
        tokio::select! {
            changed = leading.changed() => {
                if changed.is_err() {
                    return Err("the leader-election task ended".into());
                }
            }
            _ = stop.wait_for(|s| *s) => return Ok(None),
        }
    }
}

/// Exit the process the moment the Lease is lost: another replica may already be acting, and
/// every reconcile is safe to abort (the create is guarded by the pending marker).
pub fn exit_on_loss(mut leading: watch::Receiver<bool>, mut stop: watch::Receiver<bool>) {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                changed = leading.changed() => {
                    if changed.is_err() || !*leading.borrow_and_update() {
                        error!("lost the lease; exiting so that only the new leader acts");
                        std::process::exit(2);
                    }
                }
                // Shutting down: dropping `leading` releases the Lease for a fast hand-over.
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    });
}
