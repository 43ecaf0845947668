//! One Prometheus registry (prefix `oneinbox_operator`) for reconcile and OneInbox metrics.
//! Every label comes from a closed set: no per-object labels.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::Gauge;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpOutcome {
    account: String,
    op: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Op {
    account: String,
    op: &'static str,
}

/// An account's budget: `operator`, `OneInboxAccount/<ns>/<name>` or
/// `ClusterOneInboxAccount/<name>`. Accounts are made by administrators, so the set stays small.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AccountLabel {
    account: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabel {
    error: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabel {
    version: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConditionLabel {
    condition: &'static str,
}

/// Counts of watched objects per condition type that is True, read at scrape time. An entry
/// named [`ALL_OBJECTS`] is the number of watched objects; it goes to a gauge of its own
/// (`oneinbox_operator_watched_objects`), so that `sum(oneinbox_operator_objects)` never counts
/// an object twice over a "total" series.
type ObjectCounts = Box<dyn Fn() -> Vec<(&'static str, i64)> + Send + Sync>;

/// The key of the object count in [`Metrics::set_object_counts`]: every watched object.
pub const ALL_OBJECTS: &str = "total";
/// The key of the count of objects whose deletion the API refuses (Stalled `DeletionBlocked`);
/// it goes to `oneinbox_operator_deletion_blocked_objects`, not to the condition gauge.
pub const DELETION_BLOCKED: &str = "DeletionBlocked";

/// Scrape-time gauge of objects by condition (from the controller's cache, so it is exact
/// after deletions too).
#[derive(Default)]
struct ObjectsCollector {
    source: Mutex<Option<ObjectCounts>>,
}

impl std::fmt::Debug for ObjectsCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ObjectsCollector")
    }
}

impl Collector for ObjectsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let counts = match self
            .source
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            Some(f) => f(),
            None => return Ok(()),
        };
        let family = Family::<ConditionLabel, Gauge>::default();
        let watched = Gauge::<i64>::default();
        let deletion_blocked = Gauge::<i64>::default();
        for (condition, n) in counts {
            match condition {
                ALL_OBJECTS => {
                    watched.set(n);
                }
                DELETION_BLOCKED => {
                    deletion_blocked.set(n);
                }
                _ => {
                    family.get_or_create(&ConditionLabel { condition }).set(n);
                }
            }
        }
        let metric = encoder.encode_descriptor(
            "objects",
            "Watched PhoneNumbers whose condition of this type is True",
            None,
            family.metric_type(),
        )?;
        family.encode(metric)?;
        let metric = encoder.encode_descriptor(
            "watched_objects",
            "Watched PhoneNumbers (in this operator's namespace and label scope)",
            None,
            watched.metric_type(),
        )?;
        watched.encode(metric)?;
        let metric = encoder.encode_descriptor(
            "deletion_blocked_objects",
            "Watched PhoneNumbers being deleted whose deregistration the OneInbox API refuses",
            None,
            deletion_blocked.metric_type(),
        )?;
        deletion_blocked.encode(metric)
    }
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

/// Handles to every metric; cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    objects: Arc<ObjectsCollector>,
    reconcile_runs: Counter,
    reconcile_failures: Family<ErrorLabel, Counter>,
    reconcile_duration: Histogram,
    api_requests: Family<OpOutcome, Counter>,
    api_duration: HistogramFamily<Op>,
    rate_limit_wait: HistogramFamily<AccountLabel>,
    status_patches: Family<Outcome, Counter>,
    pass_places: Family<AccountLabel, Gauge>,
    leader: Gauge,
    watch_lists: Counter,
}

impl Inner {
    /// The process's own series: objects, watch lists, build, leadership.
    fn register_process(&mut self) {
        self.registry
            .register_collector(Box::new(self.objects.clone()));
        self.registry.register(
            "phonenumber_watch_lists",
            "Full lists of the PhoneNumber watch: the first, and one for each time the watch could not resume (a steady count says the watch resumes from each event's resourceVersion)",
            self.watch_lists.clone(),
        );
        self.registry.register(
            "build",
            "Build of this operator (value 1)",
            Info::new(VersionLabel {
                version: env!("CARGO_PKG_VERSION"),
            }),
        );
        self.registry.register(
            "leader",
            "1 while this process may reconcile: it holds the Lease, or runs without leader election",
            self.leader.clone(),
        );
    }

    fn register_reconcile(&mut self) {
        let r = self.registry.sub_registry_with_prefix("reconcile");
        r.register("runs", "Reconciles started", self.reconcile_runs.clone());
        r.register(
            "failures",
            "Reconciles that failed, by error",
            self.reconcile_failures.clone(),
        );
        r.register_with_unit(
            "duration",
            "Reconcile duration",
            prometheus_client::registry::Unit::Seconds,
            self.reconcile_duration.clone(),
        );
        r.register(
            "status_patches",
            "Status writes by outcome",
            self.status_patches.clone(),
        );
        r.register(
            "places",
            "Reconciles that may run at once for the account: --concurrency, more while the passes and not the API budget limit its work",
            self.pass_places.clone(),
        );
    }

    fn register_api(&mut self) {
        let r = self.registry.sub_registry_with_prefix("api");
        r.register(
            "requests",
            "OneInbox API requests by endpoint and outcome",
            self.api_requests.clone(),
        );
        r.register_with_unit(
            "request_duration",
            "OneInbox API request duration by endpoint",
            prometheus_client::registry::Unit::Seconds,
            self.api_duration.clone(),
        );
        r.register_with_unit(
            "rate_limiter_wait",
            "Time spent waiting for the client-side API budget",
            prometheus_client::registry::Unit::Seconds,
            self.rate_limit_wait.clone(),
        );
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut inner = Inner {
            registry: Registry::with_prefix("oneinbox_operator"),
            objects: Arc::new(ObjectsCollector::default()),
            reconcile_runs: Counter::default(),
            reconcile_failures: Family::<ErrorLabel, Counter>::default(),
            reconcile_duration: latency_histogram(),
            api_requests: Family::<OpOutcome, Counter>::default(),
            api_duration: Family::new_with_constructor(latency_histogram),
            rate_limit_wait: Family::new_with_constructor(latency_histogram),
            status_patches: Family::<Outcome, Counter>::default(),
            pass_places: Family::<AccountLabel, Gauge>::default(),
            leader: Gauge::default(),
            watch_lists: Counter::default(),
        };
        inner.register_process();
        inner.register_reconcile();
        inner.register_api();
        Metrics {
            inner: Arc::new(inner),
        }
    }

    pub fn observe_api_request(
        &self,
        account: &str,
        op: &'static str,
        outcome: &'static str,
        took: Duration,
    ) {
        self.inner
            .api_requests
            .get_or_create(&OpOutcome {
                account: account.to_owned(),
                op,
                outcome,
            })
            .inc();
        self.inner
            .api_duration
            .get_or_create(&Op {
                account: account.to_owned(),
                op,
            })
            .observe(took.as_secs_f64());
    }

    pub fn observe_rate_limit_wait(&self, account: &str, waited: Duration) {
        self.inner
            .rate_limit_wait
            .get_or_create(&AccountLabel {
                account: account.to_owned(),
            })
            .observe(waited.as_secs_f64());
    }

    pub fn set_pass_places(&self, account: &str, places: usize) {
        self.inner
            .pass_places
            .get_or_create(&AccountLabel {
                account: account.to_owned(),
            })
            .set(places as i64);
    }

    pub fn phonenumber_watch_listed(&self) {
        self.inner.watch_lists.inc();
    }

    pub fn reconcile_started(&self) {
        self.inner.reconcile_runs.inc();
    }

    pub fn reconcile_finished(&self, took: Duration, error: Option<&'static str>) {
        self.inner.reconcile_duration.observe(took.as_secs_f64());
        if let Some(error) = error {
            self.inner
                .reconcile_failures
                .get_or_create(&ErrorLabel { error })
                .inc();
        }
    }

    pub fn status_patched(&self, ok: bool) {
        let outcome = if ok { "success" } else { "failure" };
        self.inner
            .status_patches
            .get_or_create(&Outcome { outcome })
            .inc();
    }

    /// Whether this process is the one that reconciles (holds the Lease, or runs alone).
    pub fn set_leader(&self, leading: bool) {
        self.inner.leader.set(i64::from(leading));
    }

    /// Where the objects-by-condition gauge reads its counts at scrape time.
    pub fn set_object_counts(
        &self,
        f: impl Fn() -> Vec<(&'static str, i64)> + Send + Sync + 'static,
    ) {
        *self
            .inner
            .objects
            .source
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(Box::new(f));
    }

    /// The text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.inner.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_prefixed_names_without_object_labels() {
        let m = Metrics::new();
        m.observe_api_request("operator", "register", "success", Duration::from_millis(5));
        m.reconcile_started();
        m.reconcile_finished(Duration::from_millis(2), Some("register_number"));
        let text = m.encode();
        assert!(
            text.contains(
                "oneinbox_operator_api_requests_total{account=\"operator\",op=\"register\",outcome=\"success\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "oneinbox_operator_reconcile_failures_total{error=\"register_number\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("oneinbox_operator_reconcile_runs_total 1"),
            "{text}"
        );
    }

    #[test]
    fn build_info_carries_the_crate_version() {
        let text = Metrics::new().encode();
        assert!(
            text.contains("# TYPE oneinbox_operator_build info"),
            "{text}"
        );
        let line = format!(
            "oneinbox_operator_build_info{{version=\"{}\"}} 1\n",
            env!("CARGO_PKG_VERSION")
        );
        assert!(text.contains(&line), "{text}");
    }

    #[test]
    fn leader_gauge_follows_set_leader() {
        let m = Metrics::new();
        assert!(m.encode().contains("\noneinbox_operator_leader 0\n"));
        m.set_leader(true);
        assert!(m.encode().contains("\noneinbox_operator_leader 1\n"));
        m.set_leader(false);
        assert!(m.encode().contains("\noneinbox_operator_leader 0\n"));
    }

    /// `sum(oneinbox_operator_objects)` adds up conditions only; the number of watched
    /// objects is its own gauge.
    #[test]
    fn object_total_is_its_own_gauge() {
        let m = Metrics::new();
        m.set_object_counts(|| {
            vec![
                ("Ready", 3),
                ("Reconciling", 1),
                ("Stalled", 2),
                (DELETION_BLOCKED, 1),
                (ALL_OBJECTS, 6),
            ]
        });
        let text = m.encode();
        let mut objects: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("oneinbox_operator_objects{"))
            .collect();
        objects.sort_unstable();
        assert_eq!(
            objects,
            [
                "oneinbox_operator_objects{condition=\"Ready\"} 3",
                "oneinbox_operator_objects{condition=\"Reconciling\"} 1",
                "oneinbox_operator_objects{condition=\"Stalled\"} 2",
            ],
            "{text}"
        );
        let watched: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("oneinbox_operator_watched_objects"))
            .collect();
        assert_eq!(watched, ["oneinbox_operator_watched_objects 6"], "{text}");
        let blocked: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("oneinbox_operator_deletion_blocked_objects"))
            .collect();
        assert_eq!(
            blocked,
            ["oneinbox_operator_deletion_blocked_objects 1"],
            "{text}"
        );
    }
}
