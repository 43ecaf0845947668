//! Leader election on a `coordination.k8s.io` Lease (kube-lease-manager), so that two replicas
//! never reconcile at once. Used only with `--leader-election`.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};
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

/// The field manager of one replica's Lease writes. It must differ per replica: the library
/// claims a free Lease with a server-side apply, and only a different manager makes a second,
/// concurrent claim fail with a conflict. With one shared name, the last claim silently wins
/// while the first claimant still believes it leads (two leaders until its next renewal).
pub fn field_manager(identity: &str) -> String {
    format!("oneinbox-operator-lease-{identity}")
}

/// How long a fresh claim waits before acting: longer than the library's random pause (at most
/// 1 s) between a forced release of an expired Lease and its claim.
const CLAIM_SETTLE: Duration = Duration::from_millis(2000);

/// Wait until this process holds the Lease, or until `stop` says to give up (then `Ok(None)`).
pub async fn acquire(
    client: Client,
    cfg: &LeaseConfig,
    mut stop: watch::Receiver<bool>,
) -> Result<Option<Held>, String> {
    let manager = LeaseManagerBuilder::new(client.clone(), &cfg.name)
        .with_namespace(&cfg.namespace)
        .with_identity(&cfg.identity)
        .with_duration(cfg.duration.as_secs().max(2))
        .with_grace(cfg.grace.as_secs().max(1))
        .with_field_manager(field_manager(&cfg.identity))
        .build()
        .await
        .map_err(|e| format!("cannot set up leader election: {e}"))?;
    let (mut leading, task) = manager.watch().await;
    info!(lease = %cfg.name, namespace = %cfg.namespace, identity = %cfg.identity, "standing by for the lease");
    loop {
        if *leading.borrow_and_update() {
            // Two standbys can both take an expired Lease: the library releases it by force
            // and then claims it, and a late force release of one undoes the other's claim.
            // Look again once that window has passed; if the Lease went to another replica,
            // stand by until the library notices at its next renewal.
            tokio::time::sleep(CLAIM_SETTLE).await;
            let leases: Api<Lease> = Api::namespaced(client.clone(), &cfg.namespace);
            if let Renewal::Theirs(holder) = renewal_of(&leases, cfg).await {
                info!(%holder, "the lease went to another replica; standing by");
            } else {
                info!(identity = %cfg.identity, "acquired the lease; leading");
                return Ok(Some(Held { leading, task }));
            }
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

/// How long after the last renewal this process may still act: the library starts renewing at
/// `duration - grace`; a renewal that has not landed by `duration - grace / 2` means the
/// process may be cut off, and it stops while `grace / 2` is left before any standby may take
/// the Lease (which it can only do at `duration`).
pub fn fence_after(duration: Duration, grace: Duration) -> Duration {
    duration.saturating_sub(grace / 2)
}

/// What the fence decides from the last confirmed renewal (pure).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fence {
    /// Still safe: look at the Lease again after this long.
    LookAgainIn(Duration),
    /// Not renewed in time: stop acting now.
    Stop,
}

/// `since_renewal`: time since the last renewal this process saw confirmed by the API server.
pub fn fence(since_renewal: Duration, duration: Duration, grace: Duration) -> Fence {
    let limit = fence_after(duration, grace);
    if since_renewal >= limit {
        return Fence::Stop;
    }
    // The next renewal is due at duration - grace; look just after it, then often until the
    // limit, so that a renewal is seen promptly and a missing one stops the process in time.
    let renewal_due = duration.saturating_sub(grace) + Duration::from_millis(300);
    let wait = if since_renewal < renewal_due {
        renewal_due - since_renewal
    } else {
        Duration::from_millis(250)
    };
    Fence::LookAgainIn(wait.min(limit - since_renewal))
}

/// Guards the acting leader. The process exits (code 2) the moment the Lease is lost, or when
/// no renewal was confirmed in time (fencing: a leader cut off from the API server stops
/// before a standby can take over). The Lease is released only by `release`, after the
/// in-flight reconciles have ended.
pub struct Guard {
    release: tokio::sync::oneshot::Sender<()>,
    watcher: JoinHandle<()>,
}

impl Guard {
    pub fn start(client: Client, cfg: &LeaseConfig, mut leading: watch::Receiver<bool>) -> Guard {
        let (release, mut released) = tokio::sync::oneshot::channel::<()>();
        let leases: Api<Lease> = Api::namespaced(client, &cfg.namespace);
        let cfg = cfg.clone();
        let watcher = tokio::spawn(async move {
            // Just acquired: the renewal we know of is now at the latest.
            let mut confirmed = jiff::Timestamp::now();
            loop {
                let since = since(confirmed);
                let wait = match fence(since, cfg.duration, cfg.grace) {
                    Fence::Stop => stop(&cfg, since),
                    Fence::LookAgainIn(wait) => wait,
                };
                tokio::select! {
                    _ = &mut released => {
                        // Dropping `leading` makes the lease task release the Lease.
                        drop(leading);
                        return;
                    }
                    changed = leading.changed() => {
                        if changed.is_err() || !*leading.borrow_and_update() {
                            error!("lost the lease; exiting so that only the new leader acts");
                            std::process::exit(2);
                        }
                    }
                    _ = tokio::time::sleep(wait) => match renewal_of(&leases, &cfg).await {
                        Renewal::Ours(renewed) if renewed > confirmed => confirmed = renewed,
                        Renewal::Ours(_) | Renewal::Unknown => {}
                        Renewal::Theirs(holder) => {
                            error!(%holder, "another replica holds the lease; exiting so that only it acts");
                            std::process::exit(2);
                        }
                    },
                }
            }
        });
        Guard { release, watcher }
    }

    /// Let the Lease go (after draining): a standby takes over at once.
    pub async fn release(self) {
        let _ = self.release.send(());
        let _ = self.watcher.await;
    }
}

fn since(t: jiff::Timestamp) -> Duration {
    Duration::try_from(jiff::Timestamp::now().duration_since(t)).unwrap_or(Duration::ZERO)
}

fn stop(cfg: &LeaseConfig, since: Duration) -> ! {
    error!(
        since_renewal = ?since,
        lease_duration = ?cfg.duration,
        "the lease was not renewed in time (cut off from the API server?); exiting before a standby can take over"
    );
    std::process::exit(2);
}

/// What the API server says of the Lease now, as seen by the replica `identity`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Renewal {
    /// Held by this replica, renewed at this time.
    Ours(jiff::Timestamp),
    /// Held by another replica: this one must stop at once.
    Theirs(String),
    /// Not read, or released: nothing is confirmed (the fence decides).
    Unknown,
}

/// Classify a Lease's spec for the replica `identity` (pure).
pub fn renewal(
    spec: Option<&k8s_openapi::api::coordination::v1::LeaseSpec>,
    identity: &str,
) -> Renewal {
    let Some(spec) = spec else {
        return Renewal::Unknown;
    };
    match spec.holder_identity.as_deref() {
        Some(h) if h == identity => spec
            .renew_time
            .as_ref()
            .map_or(Renewal::Unknown, |t| Renewal::Ours(t.0)),
        Some(h) if !h.is_empty() => Renewal::Theirs(h.to_string()),
        _ => Renewal::Unknown,
    }
}

/// The Lease as the API server says now; a failed or slow read is `Unknown`.
async fn renewal_of(leases: &Api<Lease>, cfg: &LeaseConfig) -> Renewal {
    let read = tokio::time::timeout(Duration::from_millis(1000), leases.get_opt(&cfg.name));
    match read.await {
        Ok(Ok(Some(lease))) => renewal(lease.spec.as_ref(), &cfg.identity),
        _ => Renewal::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;
    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn the_fence_stops_before_a_standby_may_take_over() {
        // Defaults: 15 s lease, renewal from 10 s, stop at 12.5 s; a standby waits for 15 s.
        assert_eq!(fence_after(S(15), S(5)), MS(12_500));
        assert_eq!(fence(S(0), S(15), S(5)), Fence::LookAgainIn(MS(10_300)));
        assert_eq!(fence(S(10), S(15), S(5)), Fence::LookAgainIn(MS(300)));
        assert_eq!(fence(MS(11_000), S(15), S(5)), Fence::LookAgainIn(MS(250)));
        assert_eq!(fence(MS(12_400), S(15), S(5)), Fence::LookAgainIn(MS(100)));
        assert_eq!(fence(MS(12_500), S(15), S(5)), Fence::Stop);
        assert_eq!(fence(S(60), S(15), S(5)), Fence::Stop);
        // Short test leases: 4 s with 2 s grace stop at 3 s.
        assert_eq!(fence(S(3), S(4), S(2)), Fence::Stop);
        assert_eq!(fence(MS(2_900), S(4), S(2)), Fence::LookAgainIn(MS(100)));
    }

    #[test]
    fn each_replica_writes_the_lease_as_its_own_field_manager() {
        assert_ne!(
            field_manager("pod-a-1234abcd"),
            field_manager("pod-b-1234abcd")
        );
    }

    #[test]
    fn a_lease_held_by_another_replica_says_so() {
        use k8s_openapi::api::coordination::v1::LeaseSpec;
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
        let at: jiff::Timestamp = "2026-12-07T21:00:00Z".parse().unwrap();
        let spec = |holder: Option<&str>, renewed: bool| LeaseSpec {
            holder_identity: holder.map(str::to_string),
            renew_time: renewed.then_some(MicroTime(at)),
            ..Default::default()
        };
        let cases = [
            (Some(spec(Some("a"), true)), Renewal::Ours(at)),
            (Some(spec(Some("a"), false)), Renewal::Unknown),
            (Some(spec(Some("b"), true)), Renewal::Theirs("b".into())),
            (Some(spec(Some(""), true)), Renewal::Unknown),
            (Some(spec(None, false)), Renewal::Unknown),
            (None, Renewal::Unknown),
        ];
        for (s, want) in cases {
            assert_eq!(renewal(s.as_ref(), "a"), want, "{s:?}");
        }
    }
}
