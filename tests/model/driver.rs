//! Drives the real reconcile the way the controller runtime would: an object is reconciled
//! when it changed (any write, by anyone, but the echo of the operator's own last write: the
//! watch), when a Secret it references changed, when its requeue is due, when its drift check
//! is due, or when another pass woke it; one pass at a time. A crash drops the pass in flight
//! and starts a fresh process, which lists every object.
//!
//! Simulated time moves by requeue delays, `Wait` steps, injected latency, and `PASS_MS` per
//! pass (the watch round trip), so a pass that triggers itself forever also burns simulated
//! time and shows up in the per-minute bound.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use kube::ResourceExt;
use oneinbox_operator::crd::PhoneNumber;
use serde_json::{Value, json};

use crate::operator::{self, Operator};
use crate::ops::{
    ACCOUNT_REFS, AccountAction, Agent, CREDENTIAL_IDS, Creds, Drift, Edit, NAMESPACES, NUMBERS,
    Op, SECRETS, SLOTS, Target, WORKSPACES,
};
use crate::world::{Acct, Crash, PassAccount, Shared, World, lock, ws_of};
use oneinbox_operator::oneinbox::RoutingFallback;

/// Simulated cost of one pass (watch event → reconcile).
pub const PASS_MS: u64 = 100;
/// Passes after one step before the run counts as not settling.
pub const MAX_PASSES_PER_STEP: usize = 80;
/// Passes in one case before the run counts as a hot loop.
pub const MAX_PASSES_PER_CASE: u64 = 3_000;
/// How long a healed world must stay without writes (two drift intervals).
pub const QUIET_MS: u64 = 25 * 60 * 1000;
/// The longest healing allowed.
pub const HEAL_CAP_MS: u64 = 6 * 3600 * 1000;

#[derive(Default, Clone, Debug)]
struct Sched {
    dirty: bool,
    due_ms: Option<u64>,
    /// The last pass failed (its requeue is the error backoff).
    failed: bool,
}

pub struct Sim {
    pub world: Shared,
    op: Operator,
    sched: BTreeMap<String, Sched>,
    seen_rv: BTreeMap<String, String>,
    rng: u64,
    pub passes: u64,
    pub restarts: u64,
    /// Display and Debug of every error a pass returned (scanned for secrets).
    pub error_texts: Vec<String>,
    last_write_ms: u64,
    effects_seen: usize,
    /// A hot loop was found: the case is decided, the rest is skipped.
    pub aborted: bool,
}

/// Set while the shrunk sequence of a failure is replayed with `MODEL_TRACE=shrunk`.
pub static TRACE_SHRUNK: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// `MODEL_TRACE=1`: print every step and pass (for replaying one seed).
pub fn trace() -> bool {
    TRACE_SHRUNK.load(std::sync::atomic::Ordering::Relaxed)
        || std::env::var("MODEL_TRACE").is_ok_and(|v| v == "1")
}

fn parse(obj: &Value) -> Option<PhoneNumber> {
    serde_json::from_value(obj.clone()).ok()
}

impl Sim {
    pub fn new(seed: u64) -> Sim {
        let world = std::sync::Arc::new(std::sync::Mutex::new(World::new()));
        {
            let mut w = lock(&world);
            w.api.api_key = format!("oi_sk_model_{seed:016x}");
            let key = w.api.api_key.clone();
            w.secret_values.insert(key);
            for ns in NAMESPACES {
                w.user_put_secret(ns, SECRETS[0], "password", &format!("pw-{ns}-0-{seed:x}"));
            }
            w.set_up_accounts();
            w.secret_events.clear();
            w.stimuli.clear();
        }
        let op = Operator::start(&world);
        let mut sim = Sim {
            world,
            op,
            sched: BTreeMap::new(),
            seen_rv: BTreeMap::new(),
            rng: seed | 1,
            passes: 0,
            restarts: 0,
            error_texts: Vec::new(),
            last_write_ms: 0,
            effects_seen: 0,
            aborted: false,
        };
        sim.feed_secret_versions(true);
        sim
    }

    fn rand(&mut self) -> f64 {
        // xorshift64*: the model's own randomness, seeded by the case.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        (self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn now(&self) -> u64 {
        lock(&self.world).now_ms
    }

    // ------------------------------------------------------------ feeds

    /// The watches: objects whose resourceVersion moved are queued; Secret events are recorded
    /// and queue the objects that reference the Secret.
    fn observe(&mut self) {
        let w = lock(&self.world);
        let mut live = BTreeMap::new();
        for s in w.objects.values() {
            let uid = s.obj["metadata"]["uid"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let rv = s.obj["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            live.insert(uid, rv);
        }
        let log_len = w.log.len();
        if log_len > self.effects_seen {
            if w.log[self.effects_seen..].iter().any(|(_, _, k)| {
                matches!(*k, "register" | "patch" | "deregister") || k.starts_with("kube:")
            }) {
                self.last_write_ms = w.now_ms;
            }
            self.effects_seen = log_len;
        }
        drop(w);
        self.sched.retain(|uid, _| live.contains_key(uid));
        self.seen_rv.retain(|uid, _| live.contains_key(uid));
        for (uid, rv) in live {
            if self.seen_rv.get(&uid) != Some(&rv) {
                // As the controller's watch does: the echoes of the operator's own writes
                // start no pass.
                if !self.op.take_echo(&uid, &rv) {
                    self.sched.entry(uid.clone()).or_default().dirty = true;
                }
                self.seen_rv.insert(uid, rv);
            }
        }
        self.feed_secret_versions(false);
    }

    fn feed_secret_versions(&mut self, initial_list: bool) {
        let mut w = lock(&self.world);
        let events: Vec<(String, String, u64)> = if initial_list {
            w.secret_events.clear();
            w.secrets
                .iter()
                .map(|((ns, n), (rv, _))| (ns.clone(), n.clone(), *rv))
                .collect()
        } else {
            std::mem::take(&mut w.secret_events)
        };
        let mut wake = Vec::new();
        for (ns, name, rv) in &events {
            self.op.secret_seen(ns, name, *rv);
            // The account whose key it holds is reconciled (`users_of_secret` pokes it).
            for a in Acct::ALL {
                if a.key_secret() == (ns.as_str(), name.as_str())
                    && w.accounts.contains_key(&a)
                    && !initial_list
                {
                    w.account_events.push(a);
                }
            }
            for s in w.objects.values() {
                if let Some(pn) = parse(&s.obj)
                    && pn.namespace().as_deref() == Some(ns.as_str())
                    && pn.referenced_secrets().any(|r| r == name)
                {
                    wake.push(pn.uid().unwrap_or_default());
                }
            }
        }
        w.secret_events.clear();
        drop(w);
        for uid in wake {
            self.sched.entry(uid).or_default().dirty = true;
        }
    }

    /// The account and Namespace watches: a namespace's new labels wake its users of the
    /// cluster account (`users_in_namespace`); a changed account (or key Secret) is
    /// reconciled, which reads its key again and wakes its users that are not Ready; a gone
    /// account is forgotten.
    async fn account_watches(&mut self) {
        let (namespaces, accounts, gone, all) = {
            let mut w = lock(&self.world);
            let namespaces = std::mem::take(&mut w.namespace_events);
            let accounts = std::mem::take(&mut w.account_events);
            let gone = std::mem::take(&mut w.accounts_gone);
            if namespaces.is_empty() && accounts.is_empty() && gone.is_empty() {
                return;
            }
            let all: Vec<PhoneNumber> = w.objects.values().filter_map(|s| parse(&s.obj)).collect();
            self.op.sync_accounts(&w);
            (namespaces, accounts, gone, all)
        };
        self.op.sync_store(all);
        for a in gone {
            self.op.account_gone(a);
        }
        let mut wake: Vec<(String, String)> = Vec::new();
        {
            let w = lock(&self.world);
            for ns in &namespaces {
                for (k, s) in &w.objects {
                    if k.0 == *ns && crate::world::account_of(&s.obj) == Ok(Some(Acct::Voice)) {
                        wake.push(k.clone());
                    }
                }
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for a in accounts {
            if seen.insert(a) {
                wake.extend(self.op.account_changed(a).await);
            }
        }
        for key in wake {
            if let Some(uid) = lock(&self.world).uid_of(&key) {
                self.sched.entry(uid).or_default().dirty = true;
            }
        }
    }

    /// Bring the operator's memory up to the simulated clock.
    fn flush_time(&mut self) {
        let ms = std::mem::take(&mut lock(&self.world).unshifted_ms);
        if ms > 0 {
            self.op.advance(Duration::from_millis(ms));
        }
    }

    fn restart(&mut self) {
        self.restarts += 1;
        lock(&self.world).crashed = false;
        self.op = Operator::start(&self.world);
        // The new process lists everything: every object gets a pass.
        for s in self.sched.values_mut() {
            *s = Sched {
                dirty: true,
                ..Sched::default()
            };
        }
        self.feed_secret_versions(true);
    }

    // ------------------------------------------------------------ passes

    /// The next object to reconcile at the current time, if any.
    fn next_due(&mut self) -> Option<String> {
        let now = self.now();
        if let Some((uid, _)) = self.sched.iter().find(|(_, s)| s.dirty) {
            return Some(uid.clone());
        }
        let due = self
            .sched
            .iter()
            .filter_map(|(uid, s)| s.due_ms.filter(|d| *d <= now).map(|d| (d, uid.clone())))
            .min();
        if let Some((_, uid)) = due {
            return Some(uid);
        }
        self.flush_time();
        let uids: Vec<String> = self.sched.keys().cloned().collect();
        uids.into_iter()
            .find(|uid| {
                self.op
                    .drift_check_in(uid)
                    .is_some_and(|d| d < Duration::from_millis(1))
            })
            .inspect(|uid| self.op.take_drift_check(uid))
    }

    /// When the next timed pass is due (requeue or drift check).
    fn next_timed(&mut self) -> Option<u64> {
        self.flush_time();
        let now = self.now();
        let requeue = self.sched.values().filter_map(|s| s.due_ms).min();
        let drift = self
            .sched
            .keys()
            .filter_map(|uid| self.op.drift_check_in(uid))
            .map(|d| now + d.as_micros().div_ceil(1000) as u64)
            .min();
        match (requeue, drift) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    async fn pass(&mut self, uid: &str) {
        self.flush_time();
        let (obj, all) = {
            let mut w = lock(&self.world);
            let Some(key) = w.key_of_uid(uid) else {
                return;
            };
            let obj = w.objects.get(&key).and_then(|s| parse(&s.obj));
            w.current_orphan_cleanup = w.objects.get(&key).is_some_and(|s| {
                !s.obj["metadata"]["deletionTimestamp"].is_null()
                    && (crate::world::orphans(&s.obj) || observed(&s.obj))
            });
            w.current_observe = w.objects.get(&key).is_some_and(|s| observed(&s.obj));
            w.current_account = w.objects.get(&key).map(|s| PassAccount {
                ws: ws_of(&s.obj),
                usable: w.account_usable(&s.obj),
                deleting: !s.obj["metadata"]["deletionTimestamp"].is_null(),
            });
            self.op.sync_accounts(&w);
            let all: Vec<PhoneNumber> = w.objects.values().filter_map(|s| parse(&s.obj)).collect();
            w.current = Some(uid.to_owned());
            (obj, all)
        };
        let Some(obj) = obj else {
            let mut w = lock(&self.world);
            let why = w
                .key_of_uid(uid)
                .and_then(|k| w.objects.get(&k))
                .map(|s| {
                    let e = serde_json::from_value::<PhoneNumber>(s.obj.clone()).err();
                    format!("{e:?} in {}", s.obj)
                })
                .unwrap_or_default();
            w.violations
                .push(format!("model gap: object {uid} does not parse: {why}"));
            return;
        };
        if let Some(s) = self.sched.get_mut(uid) {
            s.dirty = false;
            s.due_ms = None;
        }
        if trace() {
            eprintln!(
                "  (pass of rv {:?}: deletionPolicy {:?}, deleting {}, annotations {:?})",
                obj.metadata.resource_version,
                obj.spec.deletion_policy,
                obj.metadata.deletion_timestamp.is_some(),
                obj.metadata.annotations
            );
        }
        self.op.sync_store(all);
        self.passes += 1;
        let world = self.world.clone();
        let outcome = {
            let fut = self.op.reconcile(obj.clone());
            let crashed = async {
                let mut spins: u64 = 0;
                loop {
                    if lock(&world).crashed {
                        return true;
                    }
                    spins += 1;
                    if spins > 200_000 {
                        return false;
                    }
                    tokio::task::yield_now().await;
                }
            };
            tokio::select! {
                biased;
                r = fut => Some(Ok(r)),
                c = crashed => Some(Err(c)),
            }
        };
        {
            let mut w = lock(&self.world);
            w.current = None;
            w.current_account = None;
            w.flush_deferred_time();
            w.pass_time(PASS_MS);
        }
        let now = self.now();
        if trace() {
            let w = lock(&self.world);
            let calls: Vec<&str> = w.log[self.effects_seen..]
                .iter()
                .map(|(_, _, k)| *k)
                .collect();
            let res = match &outcome {
                Some(Ok(Ok(a))) => format!("{a:?}"),
                Some(Ok(Err(e))) => format!("error: {e}"),
                Some(Err(true)) => "crashed".into(),
                _ => "hung".into(),
            };
            let name = w
                .key_of_uid(uid)
                .map(|(ns, n)| format!("{ns}/{n}"))
                .unwrap_or(uid.to_owned());
            eprintln!(
                "  t={:.1}s pass {name}: {calls:?} → {res}",
                now as f64 / 1000.0
            );
        }
        match outcome {
            Some(Ok(Ok(action))) => {
                self.op.succeeded(&obj);
                let due = operator::requeue_after(&action).map(|d| now + d.as_millis() as u64);
                if let Some(s) = self.sched.get_mut(uid) {
                    s.due_ms = due;
                    s.failed = false;
                }
            }
            Some(Ok(Err(e))) => {
                self.error_texts.push(format!("{e} {e:?}"));
                let jitter = self.rand();
                let wait = self.op.error_policy(&obj, &e, jitter);
                if let Some(s) = self.sched.get_mut(uid) {
                    s.due_ms = Some(now + wait.as_millis() as u64);
                    s.failed = true;
                }
            }
            Some(Err(true)) => self.restart(),
            Some(Err(false)) | None => {
                lock(&self.world)
                    .violations
                    .push(format!("model gap: a pass of {uid} hung without a crash"));
                self.restart();
            }
        }
        let mut rng = self.rng;
        let objects: Vec<PhoneNumber> = lock(&self.world)
            .objects
            .values()
            .filter_map(|s| parse(&s.obj))
            .collect();
        self.op.reseed_checks(&objects, || {
            rng ^= rng >> 12;
            rng ^= rng << 25;
            rng ^= rng >> 27;
            (rng.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
        });
        self.rng = rng;
        for key in self.op.woken() {
            if let Some(uid) = lock(&self.world).uid_of(&key) {
                self.sched.entry(uid).or_default().dirty = true;
            }
        }
        self.observe();
    }

    /// Run every pass due now (watch events, due requeues and drift checks).
    pub async fn settle(&mut self) {
        if self.aborted {
            return;
        }
        self.observe();
        self.account_watches().await;
        let mut n = 0;
        while let Some(uid) = self.next_due() {
            n += 1;
            if n > MAX_PASSES_PER_STEP {
                let name = lock(&self.world)
                    .key_of_uid(&uid)
                    .map(|(ns, n)| format!("{ns}/{n}"))
                    .unwrap_or(uid.clone());
                lock(&self.world).violations.push(format!(
                    "(f) no quiet after {MAX_PASSES_PER_STEP} passes without a new stimulus (last: {name}): a hot loop"
                ));
                self.aborted = true;
                return;
            }
            self.pass(&uid).await;
            self.account_watches().await;
        }
    }

    fn advance_to(&mut self, t: u64) {
        let now = self.now();
        if t > now {
            lock(&self.world).pass_time(t - now);
        }
    }

    /// Let `ms` of simulated time pass, running every timed pass in order.
    pub async fn wait(&mut self, ms: u64) {
        let target = self.now() + ms;
        self.settle().await;
        while let Some(next) = self.next_timed() {
            if next > target || self.aborted {
                break;
            }
            // At least a millisecond per round, so nothing due can stall the clock.
            self.advance_to(next.max(self.now() + 1));
            self.settle().await;
        }
        self.advance_to(target);
        self.settle().await;
    }

    // ------------------------------------------------------------ steps

    pub async fn step(&mut self, op: &Op) {
        if trace() {
            eprintln!("step {op:?}");
        }
        {
            let mut w = lock(&self.world);
            apply(&mut w, op, self.rng);
        }
        if let Op::Wait { secs } = op {
            self.wait(u64::from(*secs) * 1000).await;
        } else {
            self.settle().await;
        }
    }

    /// The API becomes healthy, paused objects are resumed, and time runs until the world has
    /// been quiet (no Kubernetes write, no OneInbox change) for `QUIET_MS` with no retry
    /// pending. Returns false if that never happens within `HEAL_CAP_MS`.
    pub async fn heal(&mut self) -> bool {
        {
            let mut w = lock(&self.world);
            w.api.faults.clear();
            w.kube_faults = None;
            w.kube_read_faults = None;
            // OneInbox finishes what it was provisioning (a failed one stays failed).
            for r in w.api.regs.values_mut() {
                if r.reg.status == "provisioning" {
                    r.reg.status = "active".into();
                    r.reg.updated_at = jiff::Timestamp::now().to_string();
                }
            }
            w.crash = None;
            w.concurrent = None;
            let paused: Vec<_> = w
                .objects
                .iter()
                .filter(|(_, s)| !s.obj["metadata"]["annotations"]["oneinbox.ai/paused"].is_null())
                .map(|(k, _)| k.clone())
                .collect();
            for key in paused {
                w.user_edit(&key, |o| {
                    if let Some(a) = o["metadata"]["annotations"].as_object_mut() {
                        a.remove("oneinbox.ai/paused");
                    }
                });
            }
            // A request refused for its content is not sent again for the same input: a human
            // who sees the Stalled reason asks for a retry, where the refusal was a one-shot
            // 400/422 (any other refusal, e.g. a 401 taken for one, is the operator's to fix).
            // One that names an agent OneInbox does not know stays refused.
            let refused: Vec<_> = w
                .objects
                .iter()
                .filter(|(_, s)| {
                    s.obj["metadata"]["uid"]
                        .as_str()
                        .is_some_and(|u| w.refused_once.contains(u))
                })
                .filter(|(_, s)| {
                    let stalled = s.obj["status"]["conditions"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|c| {
                            c["type"] == "Stalled"
                                && c["status"] == "True"
                                && matches!(
                                    c["reason"].as_str(),
                                    Some("RegistrationRejected" | "UpdateRejected")
                                )
                        });
                    stalled && !names_unknown_agent(&s.obj["spec"])
                })
                .map(|(k, _)| k.clone())
                .collect();
            for key in refused {
                apply_edit(&mut w, &key, Edit::ReconcileNow);
            }
            // An administrator puts each account's key back in its Secret (deleted, or
            // revoked outside): the account's objects must then recover.
            for a in Acct::ALL {
                if w.accounts.contains_key(&a) {
                    w.restore_account_key(a);
                }
            }
        }
        // (k) One workspace still answers 429 (or 401) to everything: the other accounts'
        // objects converge on their own first, then the storm ends.
        let storm = lock(&self.world).api.storm.clone();
        if let Some((ws, code)) = storm {
            match self.run_until_quiet(Some(&ws)).await {
                Some(None) => {}
                Some(Some(_)) => {
                    let mut w = lock(&self.world);
                    let v = w.isolation_checks(&ws, code);
                    w.violations.extend(v);
                }
                None => lock(&self.world).violations.push(format!(
                    "(k) while workspace {ws} answered {code}, the other accounts' objects never went quiet"
                )),
            }
            if self.aborted {
                return true;
            }
            let mut w = lock(&self.world);
            w.api.storm = None;
            let now = w.now_ms;
            w.stimuli.push((now, None));
        }
        match self.run_until_quiet(None).await {
            Some(window) => {
                lock(&self.world).quiet_window = window;
                true
            }
            None => false,
        }
    }

    /// Run time until every object (all but those of workspace `storming`) has been quiet for
    /// `QUIET_MS` with no retry pending: `Some(quiet window)` (`Some(None)` if the case
    /// aborted), or `None` if that never happens within `HEAL_CAP_MS`.
    async fn run_until_quiet(&mut self, storming: Option<&str>) -> Option<Option<(u64, u64)>> {
        let start = self.now();
        self.settle().await;
        let mut rounds = 0u32;
        loop {
            if self.aborted {
                return Some(None);
            }
            rounds += 1;
            if rounds > 5_000 || self.passes > MAX_PASSES_PER_CASE {
                lock(&self.world).violations.push(format!(
                    "(f) healing did not end: {rounds} rounds, {} passes in the case",
                    self.passes
                ));
                return Some(None);
            }
            let now = self.now();
            let (storming_uids, blocked): (BTreeSet<String>, BTreeSet<String>) = {
                let w = lock(&self.world);
                let uids = |f: &dyn Fn(&Value) -> bool| {
                    w.objects
                        .values()
                        .filter(|s| f(&s.obj))
                        .filter_map(|s| s.obj["metadata"]["uid"].as_str().map(str::to_owned))
                        .collect()
                };
                (
                    uids(&|o| storming.is_some_and(|ws| ws_of(o) == ws)),
                    uids(&|o| w.blocked_for_good(o)),
                )
            };
            // A deletion only a human can unblock retries for good: not waited for.
            let retrying = self.sched.iter().any(|(uid, s)| {
                s.failed
                    && s.due_ms.is_some()
                    && !storming_uids.contains(uid)
                    && !blocked.contains(uid)
            });
            // Neither the storming workspace's objects nor a deletion blocked for good (whose
            // retries DELETE with the operator-wide key, which cannot see the registration)
            // keep the world from being quiet.
            let last_write = if storming_uids.is_empty() && blocked.is_empty() {
                self.last_write_ms
            } else {
                lock(&self.world)
                    .log
                    .iter()
                    .filter(|(_, uid, k)| {
                        !storming_uids.contains(uid)
                            && !blocked.contains(uid)
                            && (matches!(*k, "register" | "patch" | "deregister")
                                || k.starts_with("kube:"))
                    })
                    .map(|(at, _, _)| *at)
                    .max()
                    .unwrap_or(0)
            };
            // Quiet since the healing began too: changes made outside the cluster (drift, a
            // deletion) write nothing, and every object must have had a drift check after them.
            let quiet_since = last_write.max(start);
            if !retrying && now >= quiet_since + QUIET_MS {
                return Some(Some((quiet_since, now)));
            }
            if now >= start + HEAL_CAP_MS {
                return None;
            }
            let horizon = quiet_since.max(now) + QUIET_MS;
            let next = self
                .next_timed()
                .unwrap_or(horizon)
                .min(horizon.max(now + 1));
            self.advance_to(next.max(now + 1));
            self.settle().await;
        }
    }
}

/// The spec names an agent OneInbox does not know, in any uuid field.
pub fn names_unknown_agent(spec: &Value) -> bool {
    let r = &spec["inboundRouting"];
    [&spec["agentId"], &r["agentId"], &r["fallback"]["agentId"]]
        .iter()
        .any(|a| {
            a.as_str()
                .is_some_and(|a| a.eq_ignore_ascii_case(crate::oneinbox::UNKNOWN_AGENT))
        })
}

/// The object says `managementPolicy: Observe`.
pub fn observed(obj: &Value) -> bool {
    obj["spec"]["managementPolicy"].as_str() == Some("Observe")
}

fn slot_key(slot: u8) -> (String, String) {
    let (ns, name) = SLOTS[slot as usize % SLOTS.len()];
    (ns.to_owned(), name.to_owned())
}

/// The routing of a spec; `agent` spells the routing's uuids (the fallback is the next agent,
/// in the same case), so every uuid field of the spec comes in both spellings.
fn routing(r: u8, agent: Agent) -> Value {
    let next = Agent {
        idx: (agent.idx + 1) % 3,
        upper: agent.upper,
    };
    match r % 4 {
        0 => Value::Null,
        1 => json!({"fallback": {"agentId": agent.uuid()}}),
        2 => json!({"voicemailMessage": VOICEMAIL}),
        _ => json!({"agentId": agent.uuid(), "fallback": {"agentId": next.uuid()},
                    "voicemailMessage": VOICEMAIL}),
    }
}

const VOICEMAIL: &str = "Sorry, we missed your call.";

/// A change made outside the cluster to registration `id`, as the API would store it (uuids in
/// canonical lower case, `updated_at` moved).
fn drift(w: &mut World, id: &str, drift: Drift) {
    let now = jiff::Timestamp::now().to_string();
    let Some(r) = w.api.regs.get_mut(id) else {
        return;
    };
    let reg = &mut r.reg;
    let lower = |a: Agent| a.uuid().to_ascii_lowercase();
    let mut routing = reg.inbound_routing.clone().unwrap_or_default();
    match drift {
        Drift::Agent(a) => reg.agent_id = lower(a),
        Drift::FriendlyName(n) => reg.friendly_name = friendly(n).as_str().map(str::to_owned),
        Drift::RoutingAgent(a) => routing.agent_id = a.map(lower),
        Drift::Fallback(a) => routing.fallback = a.map(|a| RoutingFallback { agent_id: lower(a) }),
        Drift::Voicemail(on) => {
            routing.voicemail_message = on.then(|| "Left outside the cluster.".to_owned())
        }
        Drift::NoRouting => {}
        Drift::State { failed } => {
            reg.status = if failed { "failed" } else { "provisioning" }.to_owned();
        }
        Drift::Trunks => {
            let n = w.rv;
            reg.inbound_trunk_id = reg.inbound_trunk_id.as_ref().map(|_| format!("ST_in_x{n}"));
            reg.outbound_trunk_id = Some(format!("ST_out_x{n}"));
            reg.dispatch_rule_id = reg.dispatch_rule_id.as_ref().map(|_| format!("SDR_x{n}"));
        }
    }
    if matches!(
        drift,
        Drift::RoutingAgent(_) | Drift::Fallback(_) | Drift::Voicemail(_)
    ) {
        if reg.inbound_routing.is_none() {
            reg.inbound_trunk_id = Some(format!("ST_in_{id}"));
            reg.dispatch_rule_id = Some(format!("SDR_{id}"));
        }
        reg.inbound_routing = Some(routing);
    }
    if matches!(drift, Drift::NoRouting) {
        reg.inbound_routing = None;
    }
    reg.updated_at = now;
}

fn set_creds(spec: &mut Value, creds: Creds) {
    let o = spec.as_object_mut();
    let Some(o) = o else { return };
    o.remove("providerConfig");
    o.remove("credentialId");
    match creds {
        Creds::Secret(i) => {
            o.insert(
                "providerConfig".into(),
                json!({"trunkAddress": "example.pstn.twilio.com", "authUsername": "oneinbox",
                       "authPasswordSecretRef": {"name": SECRETS[i as usize % 2]}}),
            );
        }
        Creds::Stored(i) => {
            o.insert("credentialId".into(), json!(CREDENTIAL_IDS[i as usize % 2]));
        }
    }
}

fn set_or_remove(o: &mut Value, key: &str, v: Value) {
    if v.is_null() {
        if let Some(m) = o.as_object_mut() {
            m.remove(key);
        }
    } else {
        o[key] = v;
    }
}

fn friendly(name: Option<u8>) -> Value {
    match name {
        None => Value::Null,
        Some(0) => json!("Sales line"),
        Some(_) => json!("Support line"),
    }
}

fn set_annotation(o: &mut Value, key: &str, value: Option<String>) {
    if !o["metadata"]["annotations"].is_object() {
        o["metadata"]["annotations"] = json!({});
    }
    match value {
        Some(v) => o["metadata"]["annotations"][key] = json!(v),
        None => {
            if let Some(a) = o["metadata"]["annotations"].as_object_mut() {
                a.remove(key);
            }
        }
    }
}

/// A user's edit of one object (also used for edits that land during a pass).
pub fn apply_edit(w: &mut World, key: &(String, String), edit: Edit) {
    match edit {
        Edit::Agent(agent) => {
            w.user_edit(key, |o| o["spec"]["agentId"] = json!(agent.uuid()));
        }
        Edit::FriendlyName(name) => {
            w.user_edit(key, |o| {
                set_or_remove(&mut o["spec"], "friendlyName", friendly(name))
            });
        }
        Edit::DeletionPolicy { orphan } => {
            w.user_edit(key, |o| {
                o["spec"]["deletionPolicy"] = json!(if orphan { "Orphan" } else { "Delete" })
            });
        }
        Edit::Observe => {
            w.user_edit(key, |o| o["spec"]["managementPolicy"] = json!("Observe"));
        }
        Edit::ReconcileNow => {
            let token = format!("t{}", w.rv);
            w.user_edit(key, |o| {
                set_annotation(o, "oneinbox.ai/reconcile-requested-at", Some(token))
            });
        }
        Edit::Delete => {
            w.user_delete(key);
        }
    }
}

/// A user sets the id annotation: a deliberate adoption, unless another live object holds that
/// registration or it is for another number.
fn annotate(w: &mut World, key: &(String, String), id: String) {
    let Some(uid) = w.uid_of(key) else { return };
    // A deliberate adoption, unless another live object holds that registration (or
    // it is for another number).
    let number = w.live_object(key).map(|o| o["spec"]["phoneNumber"].clone());
    // Pointing the annotation elsewhere withdraws an adoption by annotation that the operator
    // never took over (the status does not name it): the operator acts on the annotation as it
    // is now, and leaves the registration the old one named alone.
    let named_before = w.live_object(key).and_then(|o| {
        o["metadata"]["annotations"]["oneinbox.ai/phone-number-id"]
            .as_str()
            .map(str::to_owned)
    });
    let status_names = w
        .live_object(key)
        .and_then(|o| o["status"]["phoneNumberId"].as_str().map(str::to_owned));
    if let Some(before) = named_before
        && before != id
        && status_names.as_deref() != Some(before.as_str())
        && let Some(r) = w.api.regs.get_mut(&before)
        && r.owner.as_deref() == Some(uid.as_str())
        && r.by_annotation
    {
        r.owner = None;
        r.by_annotation = false;
    }
    let ws = w.live_object(key).map(ws_of).unwrap_or_default();
    if let Some(reg) = w.api.get_in(&ws, &id)
        && number.as_ref().and_then(Value::as_str) == Some(reg.reg.phone_number.as_str())
    {
        // An adoption by annotation that no status confirms yet is a claim like this one: of
        // two such claims the operator gives the id to the older object (creation time, then
        // namespace and name), as it cannot know which annotation came first.
        let older_than = |o: &str| {
            let key_of = |u: &str| {
                let k = w.key_of_uid(u)?;
                let t = w.live_object(&k)?["metadata"]["creationTimestamp"]
                    .as_str()
                    .and_then(|t| t.parse::<jiff::Timestamp>().ok());
                Some((t, k))
            };
            key_of(&uid) < key_of(o) && key_of(&uid).is_some()
        };
        let unconfirmed = |o: &str| {
            reg.by_annotation
                && w.key_of_uid(o)
                    .and_then(|k| w.live_object(&k))
                    .is_some_and(|obj| obj["status"]["phoneNumberId"].as_str() != Some(id.as_str()))
        };
        let held_by_other_live =
            reg.owner.as_ref().is_some_and(|o| {
                *o != uid && w.is_live_uid(o) && !(unconfirmed(o) && older_than(o))
            }) || w.objects.values().any(|s| {
                s.obj["metadata"]["uid"].as_str() != Some(uid.as_str())
                    && s.obj["status"]["phoneNumberId"].as_str() == Some(id.as_str())
            });
        if !held_by_other_live && let Some(r) = w.api.regs.get_mut(&id) {
            r.by_annotation = r.owner.as_deref() != Some(uid.as_str()) || r.by_annotation;
            r.owner = Some(uid.clone());
        }
    }
    w.user_edit(key, |o| {
        set_annotation(o, "oneinbox.ai/phone-number-id", Some(id))
    });
}

/// Apply one step to the world (everything but the passes it causes).
fn apply(w: &mut World, op: &Op, seed: u64) {
    match op {
        Op::Create {
            slot,
            number,
            creds,
            agent,
            friendly_name,
            routing: r,
            routing_agent,
            orphan,
            replace,
            import,
            observe,
            account,
        } => {
            let (ns, name) = slot_key(*slot);
            let mut spec = json!({
                "phoneNumber": NUMBERS[*number as usize % 2],
                "provider": "twilio",
                "agentId": agent.uuid(),
                "deletionPolicy": if *orphan { "Orphan" } else { "Delete" },
                "replacementPolicy": if *replace { "Replace" } else { "Manual" },
            });
            set_or_remove(&mut spec, "friendlyName", friendly(*friendly_name));
            set_or_remove(&mut spec, "inboundRouting", routing(*r, *routing_agent));
            set_creds(&mut spec, *creds);
            if *observe {
                spec["managementPolicy"] = json!("Observe");
            }
            if let Some((kind, name)) = ACCOUNT_REFS[*account as usize % ACCOUNT_REFS.len()] {
                spec["accountRef"] = json!({"kind": kind, "name": name});
            }
            let number = NUMBERS[*number as usize % 2];
            let key = (ns.clone(), name.clone());
            if w.user_create(&ns, &name, spec)
                && *import
                && let Some(ws) = w.live_object(&key).map(ws_of)
                && let Some(id) = w
                    .api
                    .of_number(&ws, number)
                    .first()
                    .map(|r| r.reg.id.clone())
            {
                annotate(w, &key, id);
            }
        }
        Op::Account { acct, action } => {
            let a = Acct::ALL[*acct as usize % Acct::ALL.len()];
            match action {
                AccountAction::Delete => w.user_delete_account(a),
                AccountAction::Create => {
                    if w.user_create_account(a) {
                        w.restore_account_key(a);
                    }
                }
                AccountAction::Rotate { revoke_old } => w.rotate_account_key(a, *revoke_old),
                AccountAction::Revoke => w.revoke_account_key(a),
                AccountAction::DeleteKeySecret => {
                    let (ns, name) = a.key_secret();
                    w.user_delete_secret(ns, name);
                }
            }
        }
        Op::Grant { ns, allowed } => {
            w.set_grant(NAMESPACES[*ns as usize % 2], *allowed);
        }
        Op::Storm { ws, code } => {
            w.api.storm = Some((
                WORKSPACES[*ws as usize % WORKSPACES.len()].to_owned(),
                *code,
            ));
            w.stimuli.push((w.now_ms, None));
        }
        Op::SetAgent { slot, agent } => {
            w.user_edit(&slot_key(*slot), |o| {
                o["spec"]["agentId"] = json!(agent.uuid())
            });
        }
        Op::SetFriendlyName { slot, name } => {
            w.user_edit(&slot_key(*slot), |o| {
                set_or_remove(&mut o["spec"], "friendlyName", friendly(*name))
            });
        }
        Op::SetRouting {
            slot,
            routing: r,
            agent,
        } => {
            w.user_edit(&slot_key(*slot), |o| {
                set_or_remove(&mut o["spec"], "inboundRouting", routing(*r, *agent))
            });
        }
        Op::SetCreds { slot, creds } => {
            w.user_edit(&slot_key(*slot), |o| set_creds(&mut o["spec"], *creds));
        }
        Op::RotateSecret { ns, secret } => {
            let ns = NAMESPACES[*ns as usize % 2];
            let n = w.rv;
            w.user_put_secret(
                ns,
                SECRETS[*secret as usize % 2],
                "password",
                &format!("pw-{ns}-{secret}-{n}-{seed:x}"),
            );
        }
        Op::BreakSecret { ns, secret, how } => {
            let (ns, name) = (NAMESPACES[*ns as usize % 2], SECRETS[*secret as usize % 2]);
            match how {
                0 => w.user_put_secret_without(ns, name, "username", "oneinbox", "password"),
                1 => w.user_put_secret(ns, name, "password", ""),
                _ => w.user_put_secret(ns, name, "password", " \n"),
            };
        }
        Op::DeleteSecret { ns, secret } => {
            w.user_delete_secret(NAMESPACES[*ns as usize % 2], SECRETS[*secret as usize % 2]);
        }
        Op::Annotate { slot, target } => {
            let key = slot_key(*slot);
            let held = |w: &World, k: &(String, String)| -> Option<String> {
                let o = w.live_object(k)?;
                o["status"]["phoneNumberId"]
                    .as_str()
                    .or(o["metadata"]["annotations"]["oneinbox.ai/phone-number-id"].as_str())
                    .map(str::to_owned)
            };
            let id = match target {
                Target::Own => held(w, &key),
                Target::Other(s) => held(w, &slot_key(*s)),
                Target::Unknown => Some(format!("deadbeef-0000-4000-8000-{:012x}", w.rv)),
                Target::Existing(i) => w.api.regs.keys().nth(*i as usize).cloned(),
            };
            let Some(id) = id else { return };
            annotate(w, &key, id);
        }
        Op::Pause { slot } => {
            w.user_edit(&slot_key(*slot), |o| {
                set_annotation(o, "oneinbox.ai/paused", Some("true".into()))
            });
        }
        Op::Resume { slot } => {
            w.user_edit(&slot_key(*slot), |o| {
                set_annotation(o, "oneinbox.ai/paused", None)
            });
        }
        Op::SetPollInterval { slot, value } => {
            let v = crate::ops::POLL_INTERVALS[*value as usize % crate::ops::POLL_INTERVALS.len()];
            w.user_edit(&slot_key(*slot), |o| {
                set_annotation(o, "oneinbox.ai/poll-interval", v.map(str::to_owned))
            });
        }
        Op::SetManagement { slot, observe } => {
            let key = slot_key(*slot);
            if *observe {
                apply_edit(w, &key, Edit::Observe);
            } else {
                // Back to Full: the operator takes over the registration the object names (it
                // mirrored it, or the user named it), a deliberate adoption like an annotation.
                let named = w.live_object(&key).and_then(|o| {
                    o["status"]["phoneNumberId"]
                        .as_str()
                        .or(o["metadata"]["annotations"]["oneinbox.ai/phone-number-id"].as_str())
                        .map(str::to_owned)
                });
                if let Some(id) = named
                    && w.live_object(&key).is_some_and(observed)
                {
                    // After the annotation is written: that write still says Observe, which
                    // ends a pending takeover.
                    annotate(w, &key, id);
                    if let Some(uid) = w.uid_of(&key)
                        && w.live_object(&key)
                            .is_some_and(|o| o["status"]["phoneNumberId"].is_string())
                    {
                        w.takeover_pending.insert(uid);
                    }
                }
                w.user_edit(&key, |o| {
                    if let Some(spec) = o["spec"].as_object_mut() {
                        spec.remove("managementPolicy");
                    }
                });
            }
        }
        Op::ReconcileNow { slot } => apply_edit(w, &slot_key(*slot), Edit::ReconcileNow),
        Op::ClearDeletionPolicy { slot } => {
            w.user_edit(&slot_key(*slot), |o| {
                if let Some(spec) = o["spec"].as_object_mut() {
                    spec.remove("deletionPolicy");
                }
            });
        }
        Op::SetDeletionPolicy { slot, orphan } => apply_edit(
            w,
            &slot_key(*slot),
            Edit::DeletionPolicy { orphan: *orphan },
        ),
        Op::Concurrent { in_effects, edit } => {
            w.concurrent = Some((w.effects + u64::from(*in_effects), *edit));
        }
        Op::Delete { slot } => {
            w.user_delete(&slot_key(*slot));
        }
        Op::DeleteNamespace { ns, secrets_first } => {
            w.user_delete_namespace(NAMESPACES[*ns as usize % 2], *secrets_first);
        }
        Op::KubeFault { kind, count } => {
            w.kube_faults = Some((*kind, *count));
        }
        Op::KubeReadFault { kind, count } => {
            w.kube_read_faults = Some((*kind, *count));
        }
        Op::Fault { call, kind, count } => {
            w.api.faults.push_back(crate::oneinbox::Fault {
                call: *call,
                kind: kind.clone(),
                count: u32::from(*count),
            });
            w.stimuli.push((w.now_ms, None));
        }
        Op::DeleteOutside { pick } => {
            let id = w.api.regs.keys().nth(*pick as usize).cloned();
            if let Some(id) = id {
                w.api.regs.remove(&id);
                w.api.deleted.push((id, None, false));
                w.stimuli.push((w.now_ms, None));
            }
        }
        Op::RegisterOutside { number, ws } => {
            let number = NUMBERS[*number as usize % 2];
            let ws = WORKSPACES[*ws as usize % WORKSPACES.len()];
            if w.api.of_number(ws, number).is_empty() {
                w.new_registration(
                    ws,
                    number,
                    crate::ops::AGENTS[2],
                    Some("outside".into()),
                    None,
                    None,
                );
                w.stimuli.push((w.now_ms, None));
            }
        }
        Op::DriftOutside { pick, drift: d } => {
            let id = w.api.regs.keys().nth(*pick as usize).cloned();
            if let Some(id) = id {
                drift(w, &id, *d);
                w.stimuli.push((w.now_ms, None));
            }
        }
        Op::Crash { in_effects, after } => {
            w.crash = Some(Crash {
                at: w.effects + u64::from(*in_effects),
                after: *after,
            });
            w.stimuli.push((w.now_ms, None));
        }
        Op::Wait { .. } => {}
    }
}
