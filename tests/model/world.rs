//! The simulated world one case runs in: an in-memory Kubernetes (`kube.rs`), an in-memory
//! OneInbox (`oneinbox.rs`), the simulated clock, the effect counter that places crashes, and
//! the records the invariants are checked against.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::Value;

use crate::oneinbox::ApiState;

/// Where the next crash happens: at effect number `at` (counted over Kubernetes writes and
/// OneInbox calls alike), before or after performing it.
#[derive(Clone, Copy, Debug)]
pub struct Crash {
    pub at: u64,
    pub after: bool,
}

/// What an in-memory server does with one request.
pub enum Gate {
    /// Perform it and answer.
    Go,
    /// Perform it, then never answer (crash after the effect).
    PerformThenHang,
    /// Never answer, perform nothing (crash before the effect).
    Hang,
}

/// One stored PhoneNumber: its JSON and, per field manager, the status fields it owns (SSA).
#[derive(Clone, Debug)]
pub struct StoredObject {
    pub obj: Value,
    pub managed: BTreeMap<String, BTreeSet<String>>,
}

/// What we remember of a PhoneNumber that is gone, for invariant (b).
#[derive(Clone, Debug)]
pub struct Removed {
    pub uid: String,
    pub key: (String, String),
    pub orphan: bool,
    /// Also: it said `managementPolicy: Observe` when it went (the registration stays).
    /// It carried the operator's finalizer when it went.
    pub finalized: bool,
    /// It held a registration at some time: its status named one, or the operator confirmed
    /// an adoption of it (an `Adopted` Event). Only an object that never did may go without
    /// deregistering what it owns: an adoption named only in its annotation, never carried
    /// out, left nothing to deregister.
    pub held: bool,
}

/// The accounts of a case besides the operator-wide key (docs/tenancy.md), each with its own
/// OneInbox workspace: a ClusterOneInboxAccount `voice` (its key in Secret `ops/voice-key`,
/// allowing the namespaces labelled `team=voice`) and a OneInboxAccount `b/sales` (its key in
/// Secret `b/sales-key`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Acct {
    Voice,
    Sales,
}

/// The workspace of the operator-wide key.
pub const OPERATOR_WS: &str = "operator";
/// The namespace of the cluster account's key Secret (never deleted).
pub const OPS_NS: &str = "ops";

impl Acct {
    pub const ALL: [Acct; 2] = [Acct::Voice, Acct::Sales];

    /// Its workspace (and the account's name).
    pub fn ws(self) -> &'static str {
        match self {
            Acct::Voice => "voice",
            Acct::Sales => "sales",
        }
    }

    /// Where its key is: (namespace, Secret name), key `apiKey`.
    pub fn key_secret(self) -> (&'static str, &'static str) {
        match self {
            Acct::Voice => (OPS_NS, "voice-key"),
            Acct::Sales => ("b", "sales-key"),
        }
    }
}

/// An account object as it stands.
#[derive(Clone, Debug)]
pub struct AccountObj {
    pub uid: String,
    /// Deleted while PhoneNumbers use it: the in-use finalizer holds it until they are gone.
    pub deleting: bool,
}

/// The account an object names: the operator-wide key, one of the case's accounts, or one that
/// never exists (a OneInboxAccount `sales` outside namespace `b`).
pub fn account_of(obj: &Value) -> Result<Option<Acct>, ()> {
    let r = &obj["spec"]["accountRef"];
    match (r["kind"].as_str(), r["name"].as_str()) {
        (None, _) => Ok(None),
        (Some("ClusterOneInboxAccount"), Some("voice")) => Ok(Some(Acct::Voice)),
        (Some("OneInboxAccount"), Some("sales")) if obj["metadata"]["namespace"] == "b" => {
            Ok(Some(Acct::Sales))
        }
        _ => Err(()),
    }
}

/// The object's deletion leaves its registration: its `deletionPolicy` is Orphan, or it sets
/// none and its account's default is Orphan (`sales`'s is; the operator's default is Delete).
pub fn orphans(obj: &Value) -> bool {
    match obj["spec"]["deletionPolicy"].as_str() {
        Some(p) => p == "Orphan",
        None => account_of(obj) == Ok(Some(Acct::Sales)),
    }
}

/// The workspace of the account an object names (one no key reaches if the account cannot
/// exist).
pub fn ws_of(obj: &Value) -> String {
    match account_of(obj) {
        Ok(None) => OPERATOR_WS.to_owned(),
        Ok(Some(a)) => a.ws().to_owned(),
        Err(()) => format!(
            "(none: {}/{})",
            obj["metadata"]["namespace"].as_str().unwrap_or_default(),
            obj["spec"]["accountRef"]["name"]
                .as_str()
                .unwrap_or_default()
        ),
    }
}

/// The account of the pass in flight, as it stood when the pass began (invariant j).
#[derive(Clone, Debug, Default)]
pub struct PassAccount {
    /// The workspace of the object's account.
    pub ws: String,
    /// The account exists and allows the object's namespace.
    pub usable: bool,
    /// The object is being deleted (it may fall back to the operator-wide key).
    pub deleting: bool,
}

#[derive(Default)]
pub struct World {
    /// Simulated milliseconds since the case started.
    pub now_ms: u64,
    /// Simulated time that passed since the operator's memory was last shifted (see
    /// `operator::Operator::advance`).
    pub unshifted_ms: u64,
    /// Time that passed inside the pass in flight, not yet applied to the stored timestamps.
    pub deferred_ms: u64,
    /// etcd's revision: every write of any object takes the next one.
    pub rv: u64,
    pub objects: BTreeMap<(String, String), StoredObject>,
    /// (namespace, name) → (resourceVersion, key → value).
    pub secrets: BTreeMap<(String, String), (u64, BTreeMap<String, String>)>,
    /// Secrets whose watch event the operator has not been handed yet: (ns, name, rv).
    pub secret_events: Vec<(String, String, u64)>,
    pub terminating_namespaces: BTreeSet<String>,
    /// Namespaces whose Secrets go only after their PhoneNumbers are gone.
    pub secrets_after_objects: BTreeSet<String>,
    pub removed: Vec<Removed>,
    /// Per object UID: every registration id its status ever named (invariant b).
    pub status_named: BTreeMap<String, BTreeSet<String>>,
    /// UIDs of the objects the operator reported an adoption for (an `Adopted` Event).
    pub adoptions: BTreeSet<String>,
    /// UIDs of the objects switched from Observe to Full while their status names a
    /// registration, whose takeover (the finalizer) has not happened yet: until the operator
    /// has read the registration it cannot take it over, so these still only mirror it.
    pub takeover_pending: BTreeSet<String>,
    /// The healed world's final quiet window (simulated ms), in which only drift checks run.
    pub quiet_window: Option<(u64, u64)>,
    /// Kubernetes write faults armed: each hits the next write, `.1` times.
    pub kube_faults: Option<(crate::ops::KubeFaultKind, u8)>,
    /// Kubernetes read faults armed: each hits the next GET (a Secret, the CRD), `.1` times.
    pub kube_read_faults: Option<(crate::ops::KubeFaultKind, u8)>,
    /// UIDs of the objects a one-shot 400/422 refused (a human's retry is due when healing).
    pub refused_once: BTreeSet<String>,
    /// Every Event body posted.
    pub events: Vec<Value>,
    /// UIDs of the objects one of whose Events failed or was lost in a crash (best effort:
    /// the operator does not post it again).
    pub events_lost: BTreeSet<String>,
    /// Every Kubernetes write body the operator sent (for the secret scan).
    pub write_bodies: Vec<String>,
    pub api: ApiState,
    pub effects: u64,
    pub crash: Option<Crash>,
    /// A user edit of the object whose pass runs, landing just before effect number `.0`.
    pub concurrent: Option<(u64, crate::ops::Edit)>,
    pub crashed: bool,
    /// UID of the object whose pass is running (every effect is charged to it).
    pub current: Option<String>,
    /// That pass's object was being deleted with `deletionPolicy: Orphan` when the pass
    /// started (a change landing during the pass cannot be honoured by it).
    pub current_orphan_cleanup: bool,
    /// That pass's object said `managementPolicy: Observe` when the pass started: it may make
    /// no OneInbox write (a switch landing during the pass cannot be honoured by it).
    pub current_observe: bool,
    /// A user's write is being committed (invariant h is asked of the operator's writes).
    pub user_writing: bool,
    pub log: Vec<(u64, String, &'static str)>,
    /// Violations seen while running (invariants c and g, and model gaps).
    pub violations: Vec<String>,
    /// Every secret value the case created (passwords, the API key).
    pub secret_values: BTreeSet<String>,
    /// Per object UID: simulated times of user actions aimed at it (for the bound of f).
    pub stimuli: Vec<(u64, Option<String>)>,
    pub next_uid: u64,
    /// The accounts that exist (the operator-wide key always does).
    pub accounts: BTreeMap<Acct, AccountObj>,
    /// Namespaces labelled `team=voice` (the cluster account allows them).
    pub labelled: BTreeSet<String>,
    /// Bumped at every change of an account or a namespace's labels (the watches).
    pub accounts_rv: u64,
    /// Accounts the account controller would reconcile now (created, changed, key Secret
    /// changed): their key is read again and their users that are not Ready are woken.
    pub account_events: Vec<Acct>,
    /// Namespaces whose labels changed: their users of the cluster account are woken.
    pub namespace_events: Vec<String>,
    /// Accounts gone (the last user of a deleted one went): the operator forgets them.
    pub accounts_gone: Vec<Acct>,
    /// The account of the pass in flight.
    pub current_account: Option<PassAccount>,
    /// Each account's newest key (its workspace accepts it).
    pub account_keys: BTreeMap<Acct, String>,
}

pub type Shared = Arc<Mutex<World>>;

pub fn lock(w: &Shared) -> MutexGuard<'_, World> {
    w.lock().unwrap_or_else(|e| e.into_inner())
}

impl World {
    pub fn new() -> World {
        World {
            rv: 100,
            ..World::default()
        }
    }

    pub fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    /// Count one effect and decide, from the armed crash, whether it is performed and answered.
    pub fn gate(&mut self) -> Gate {
        if self.crashed {
            return Gate::Hang;
        }
        let n = self.effects;
        self.effects += 1;
        if let Some((at, edit)) = self.concurrent
            && at == n
        {
            self.concurrent = None;
            if let Some(key) = self.current.clone().and_then(|u| self.key_of_uid(&u)) {
                crate::driver::apply_edit(self, &key, edit);
            }
        }
        match self.crash {
            Some(c) if c.at == n => {
                self.crash = None;
                self.stimuli.push((self.now_ms, None));
                self.crashed = true;
                if c.after {
                    Gate::PerformThenHang
                } else {
                    Gate::Hang
                }
            }
            _ => Gate::Go,
        }
    }

    /// Charge one effect (`kube:...` for Kubernetes writes, else a OneInbox call) to the
    /// object whose pass is running.
    pub fn record(&mut self, kind: &'static str) {
        let uid = self.current.clone().unwrap_or_default();
        let at_ms = self.now_ms;
        self.log.push((at_ms, uid, kind));
    }

    /// Let `ms` of simulated time pass: the clock moves and every wall-clock timestamp stored
    /// in the objects moves back by as much (the operator reads the wall clock; moving the past
    /// is the same as moving now).
    pub fn pass_time(&mut self, ms: u64) {
        self.now_ms += ms;
        self.unshifted_ms += ms;
        self.shift_stored(ms);
    }

    /// Time that passes inside a call of a pass in flight (latency): the stored timestamps move
    /// only once the pass is over, since the pass holds copies of the objects it read and may
    /// write them back (a copy moved by nobody would undo the move).
    pub fn pass_time_in_call(&mut self, ms: u64) {
        self.now_ms += ms;
        self.unshifted_ms += ms;
        self.deferred_ms += ms;
    }

    /// Move the stored timestamps by the time that passed inside the pass just over.
    pub fn flush_deferred_time(&mut self) {
        let ms = std::mem::take(&mut self.deferred_ms);
        self.shift_stored(ms);
    }

    fn shift_stored(&mut self, ms: u64) {
        if ms == 0 {
            return;
        }
        let span = jiff::SignedDuration::from_millis(ms as i64);
        for stored in self.objects.values_mut() {
            shift_timestamps(&mut stored.obj, span);
        }
        for r in self.api.regs.values_mut() {
            for t in [&mut r.reg.created_at, &mut r.reg.updated_at] {
                let mut v = Value::String(std::mem::take(t));
                shift(&mut v, span);
                *t = v.as_str().unwrap_or_default().to_owned();
            }
        }
    }

    pub fn live_object(&self, key: &(String, String)) -> Option<&Value> {
        self.objects.get(key).map(|s| &s.obj)
    }

    pub fn uid_of(&self, key: &(String, String)) -> Option<String> {
        self.objects
            .get(key)
            .and_then(|s| s.obj["metadata"]["uid"].as_str().map(str::to_owned))
    }

    pub fn key_of_uid(&self, uid: &str) -> Option<(String, String)> {
        self.objects
            .iter()
            .find(|(_, s)| s.obj["metadata"]["uid"].as_str() == Some(uid))
            .map(|(k, _)| k.clone())
    }

    pub fn is_live_uid(&self, uid: &str) -> bool {
        self.key_of_uid(uid).is_some()
    }
}

/// The annotation in which the operator records a registration attempt before its POST.
const ATTEMPT: &str = "oneinbox.ai/registration-attempt";

/// The registration attempt `obj` records and its status does not settle (`settledAttempt`
/// names another token): its POST may have reached OneInbox.
pub fn attempt_in_flight(obj: &Value) -> Option<Value> {
    let recorded: Value =
        serde_json::from_str(obj["metadata"]["annotations"][ATTEMPT].as_str()?).ok()?;
    (recorded["token"] != obj["status"]["settledAttempt"]).then_some(recorded)
}

fn shift(v: &mut Value, span: jiff::SignedDuration) {
    if let Some(s) = v.as_str()
        && let Ok(t) = s.parse::<jiff::Timestamp>()
        && let Ok(t) = t.checked_sub(span)
    {
        *v = Value::String(t.to_string());
    }
}

fn shift_timestamps(obj: &mut Value, span: jiff::SignedDuration) {
    // `pointer_mut`, not indexing: indexing a `&mut Value` inserts nulls for missing keys.
    for p in [
        "/metadata/creationTimestamp",
        "/metadata/deletionTimestamp",
        "/status/createdAt",
        "/status/updatedAt",
    ] {
        if let Some(v) = obj.pointer_mut(p) {
            shift(v, span);
        }
    }
    let recorded = format!("/metadata/annotations/{}", ATTEMPT.replace('/', "~1"));
    if let Some(v) = obj.pointer_mut(&recorded)
        && let Some(mut attempt) = v
            .as_str()
            .and_then(|s| serde_json::from_str::<Value>(s).ok())
    {
        shift(&mut attempt["startedAt"], span);
        *v = Value::String(attempt.to_string());
    }
    if let Some(conds) = obj
        .pointer_mut("/status/conditions")
        .and_then(Value::as_array_mut)
    {
        for c in conds {
            if let Some(t) = c.get_mut("lastTransitionTime") {
                shift(t, span);
            }
        }
    }
}

// ------------------------------------------------------------ accounts

impl World {
    /// The key of account `a` numbered `n` (a secret value).
    fn account_key(&self, a: Acct, n: u64) -> String {
        let seed = self.api.api_key.trim_start_matches("oi_sk_model_");
        format!("oi_sk_{}_{n}_{seed}", a.ws())
    }

    /// The case's accounts at its start: both exist, with their keys in their Secrets, and the
    /// cluster account allows both namespaces (they are labelled).
    pub fn set_up_accounts(&mut self) {
        let key = self.api.api_key.clone();
        self.api.keys.insert(key, OPERATOR_WS.to_owned());
        for a in Acct::ALL {
            self.user_create_account(a);
            let key = self.account_key(a, 0);
            self.api.keys.insert(key.clone(), a.ws().to_owned());
            self.account_keys.insert(a, key.clone());
            let (ns, name) = a.key_secret();
            self.user_put_secret(ns, name, "apiKey", &key);
        }
        for ns in crate::ops::NAMESPACES {
            self.labelled.insert(ns.to_owned());
        }
        self.account_events.clear();
    }

    /// The objects (live or being deleted) that use account `a`.
    pub fn users_of(&self, a: Acct) -> usize {
        self.objects
            .values()
            .filter(|s| account_of(&s.obj) == Ok(Some(a)))
            .count()
    }

    /// Whether an object's account exists and allows its namespace now.
    pub fn account_usable(&self, obj: &Value) -> bool {
        match account_of(obj) {
            Ok(None) => true,
            Ok(Some(a)) => {
                self.accounts.contains_key(&a)
                    && (a != Acct::Voice
                        || obj["metadata"]["namespace"]
                            .as_str()
                            .is_some_and(|ns| self.labelled.contains(ns)))
            }
            Err(()) => false,
        }
    }

    /// An administrator creates the account (if it does not exist and its namespace is not
    /// being deleted).
    pub fn user_create_account(&mut self, a: Acct) -> bool {
        if self.accounts.contains_key(&a)
            || (a == Acct::Sales && self.terminating_namespaces.contains(a.key_secret().0))
        {
            return false;
        }
        self.next_uid += 1;
        let uid = format!("uid-account-{}", self.next_uid);
        self.accounts.insert(
            a,
            AccountObj {
                uid,
                deleting: false,
            },
        );
        self.account_changed(a);
        true
    }

    fn account_changed(&mut self, a: Acct) {
        self.accounts_rv += 1;
        self.account_events.push(a);
        self.stimuli.push((self.now_ms, None));
    }

    /// An administrator deletes the account: while PhoneNumbers use it, its in-use finalizer
    /// keeps it (Terminating, still usable) until the last of them is gone.
    pub fn user_delete_account(&mut self, a: Acct) {
        if let Some(obj) = self.accounts.get_mut(&a)
            && !obj.deleting
        {
            obj.deleting = true;
            self.accounts_rv += 1;
            self.stimuli.push((self.now_ms, None));
        }
        self.finish_accounts();
    }

    /// Deleted accounts no PhoneNumber uses any more go.
    pub fn finish_accounts(&mut self) {
        let gone: Vec<Acct> = self
            .accounts
            .iter()
            .filter(|(a, o)| o.deleting && self.users_of(**a) == 0)
            .map(|(a, _)| *a)
            .collect();
        for a in gone {
            self.accounts.remove(&a);
            self.accounts_rv += 1;
            self.accounts_gone.push(a);
        }
    }

    /// A key rotation: the workspace gets a new key and the account's Secret holds it; the old
    /// key keeps working unless `revoke_old` (then calls with it are 401 until the operator
    /// reads the new one).
    pub fn rotate_account_key(&mut self, a: Acct, revoke_old: bool) {
        let (ns, name) = a.key_secret();
        if self.terminating_namespaces.contains(ns) {
            return;
        }
        let key = self.account_key(a, self.rv);
        if revoke_old {
            self.api.keys.retain(|_, ws| ws != a.ws());
        }
        self.api.keys.insert(key.clone(), a.ws().to_owned());
        self.account_keys.insert(a, key.clone());
        self.user_put_secret(ns, name, "apiKey", &key);
    }

    /// The workspace's key is revoked outside and replaced by one the Secret does not hold:
    /// every call of the account is 401 until someone puts the new key in the Secret.
    pub fn revoke_account_key(&mut self, a: Acct) {
        let key = self.account_key(a, self.rv);
        self.api.keys.retain(|_, ws| ws != a.ws());
        self.api.keys.insert(key.clone(), a.ws().to_owned());
        self.account_keys.insert(a, key.clone());
        self.secret_values.insert(key);
        self.stimuli.push((self.now_ms, None));
    }

    /// The account's key Secret holds a key its workspace accepts (an administrator's repair
    /// when the world heals), unless its namespace is being deleted.
    pub fn restore_account_key(&mut self, a: Acct) {
        let (ns, name) = a.key_secret();
        let Some(key) = self.account_keys.get(&a).cloned() else {
            return;
        };
        let holds = self
            .secrets
            .get(&(ns.to_owned(), name.to_owned()))
            .and_then(|(_, d)| d.get("apiKey"))
            .is_some_and(|k| self.api.keys.contains_key(k));
        if !holds {
            self.user_put_secret(ns, name, "apiKey", &key);
        }
    }

    /// Label or unlabel a namespace `team=voice`: the cluster account's grant given or revoked.
    pub fn set_grant(&mut self, ns: &str, allowed: bool) {
        let changed = if allowed {
            self.labelled.insert(ns.to_owned())
        } else {
            self.labelled.remove(ns)
        };
        if changed {
            self.accounts_rv += 1;
            self.namespace_events.push(ns.to_owned());
            self.stimuli.push((self.now_ms, None));
        }
    }
}
