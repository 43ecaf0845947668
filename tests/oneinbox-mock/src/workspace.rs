//! Workspaces (contract: Mock test support): each has its own registrations, fault
//! configuration, rate limiter, one-shot faults, call counts and call log, and is reached by its
//! API keys. `default` is the mock as it is without workspaces: its keys are `--api-key` (none:
//! any `oi_sk_<non-empty>`), and every key of no named workspace lands there.
//!
//! Lock order: the registry, then one workspace. A request resolves its workspace once and then
//! locks only that workspace, so it never takes the registry while holding a workspace.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime};

use serde::Serialize;

use super::LogEntry;
use super::faults::{FaultConfig, FaultQueue, RateLimiter};
use super::state::{Registration, Store};

/// Name of the workspace that exists without being defined.
pub const DEFAULT: &str = "default";

/// How many outcomes a workspace's call log keeps; the oldest go first.
const LOG_CAPACITY: usize = 10_000;

/// A workspace defined at start-up (`--workspace NAME=KEY[,KEY...]`).
#[derive(Clone, PartialEq, Eq)]
pub struct WorkspaceSpec {
    /// `^[a-z0-9][-a-z0-9]{0,62}$`, not `default`.
    pub name: String,
    /// Bearer tokens that reach it.
    pub api_keys: Vec<String>,
}

impl fmt::Debug for WorkspaceSpec {
    /// Keys are secrets: only their number is shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkspaceSpec")
            .field("name", &self.name)
            .field(
                "api_keys",
                &format_args!("[{} redacted]", self.api_keys.len()),
            )
            .finish()
    }
}

impl FromStr for WorkspaceSpec {
    type Err = String;

    /// `NAME=KEY[,KEY...]`. Errors never repeat the value: it holds keys.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let Some((name, keys)) = s.split_once('=') else {
            return Err("--workspace takes NAME=KEY[,KEY...]".to_owned());
        };
        check_name(name).map_err(|e| format!("--workspace: {e}"))?;
        if name == DEFAULT {
            return Err(
                "--workspace cannot define \"default\" (its keys are --api-key)".to_owned(),
            );
        }
        let api_keys: Vec<String> = keys.split(',').map(str::to_owned).collect();
        if api_keys.iter().any(String::is_empty) {
            return Err(format!(
                "--workspace {name}: every key must be non-empty (at least one is needed)"
            ));
        }
        Ok(Self {
            name: name.to_owned(),
            api_keys: dedup(api_keys),
        })
    }
}

/// `^[a-z0-9][-a-z0-9]{0,62}$`: safe in a URL path segment and a log line.
pub fn check_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if first_ok && rest_ok && name.len() <= 63 {
        Ok(())
    } else {
        Err("a workspace name must match ^[a-z0-9][-a-z0-9]{0,62}$".to_owned())
    }
}

/// Keeps the first occurrence of each key, in order (positions are what the call log shows).
fn dedup(keys: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(keys.len());
    for k in keys {
        if !out.contains(&k) {
            out.push(k);
        }
    }
    out
}

/// One workspace's mutable state, behind its own lock so that check-then-commit is atomic.
pub(crate) struct Workspace {
    pub(crate) store: Store,
    pub(crate) config: FaultConfig,
    pub(crate) limiter: Option<RateLimiter>,
    pub(crate) faults: FaultQueue,
    pub(crate) calls: BTreeMap<String, u64>,
    pub(crate) accepted: BTreeMap<String, u64>,
    pub(crate) log: VecDeque<LogEntry>,
    seq: u64,
    /// What a reset of this workspace returns to.
    initial_config: FaultConfig,
}

/// A shared workspace; a request keeps its handle even if a reset removes the workspace.
pub(crate) type Handle = Arc<Mutex<Workspace>>;

/// The workspace's lock, with provisioning delays that are over already settled. A poisoned
/// lock is still usable: every mutation leaves the state consistent before it can panic.
pub(crate) fn lock(ws: &Handle) -> MutexGuard<'_, Workspace> {
    let mut guard = ws.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    guard.store.settle(jiff::Timestamp::now());
    guard
}

impl Workspace {
    fn new(config: FaultConfig, records: Vec<Registration>) -> Self {
        Self {
            store: Store::with_records(records),
            limiter: config.limiter(Instant::now()),
            config: config.clone(),
            faults: FaultQueue::default(),
            calls: BTreeMap::new(),
            accepted: BTreeMap::new(),
            log: VecDeque::new(),
            seq: 0,
            initial_config: config,
        }
    }

    fn handle(config: FaultConfig, records: Vec<Registration>) -> Handle {
        Arc::new(Mutex::new(Self::new(config, records)))
    }

    /// Replaces the fault configuration; a new configuration starts a new budget.
    pub(crate) fn set_config(&mut self, config: FaultConfig) {
        self.limiter = config.limiter(Instant::now());
        self.config = config;
    }

    /// Back to how the workspace started: no registrations, seeds, faults, counts or log, and
    /// its initial fault configuration.
    pub(crate) fn reset(&mut self) {
        *self = Self::new(self.initial_config.clone(), Vec::new());
    }

    /// Appends an outcome to the log (and counts it as accepted, for a committed write).
    pub(crate) fn record(
        &mut self,
        endpoint: &str,
        status: Option<u16>,
        dropped: bool,
        accepted: bool,
        caller: Option<usize>,
    ) {
        self.seq += 1;
        if self.log.len() >= LOG_CAPACITY {
            self.log.pop_front();
        }
        let at_ms = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        self.log.push_back(LogEntry {
            seq: self.seq,
            endpoint: endpoint.to_owned(),
            status,
            dropped,
            at_ms,
            caller,
        });
        if accepted {
            *self.accepted.entry(endpoint.to_owned()).or_insert(0) += 1;
        }
    }
}

/// Where a request's bearer key leads.
pub(crate) struct Resolved {
    pub(crate) ws: Handle,
    /// The key's position among its workspace's keys (never the key).
    pub(crate) caller: Option<usize>,
    /// Whether the key passes auth (a named workspace's key always does).
    pub(crate) authorized: bool,
}

/// One line of `GET /_mock/workspaces`: counts only, never a key.
#[derive(Debug, Serialize)]
pub(crate) struct Summary {
    name: String,
    keys: usize,
    registrations: usize,
}

/// Why a workspace could not be created or given keys.
#[derive(Debug)]
pub(crate) enum RegistryError {
    /// 404: no such workspace.
    NotFound(String),
    /// 400 with this text.
    Invalid(String),
}

struct Named {
    keys: Vec<String>,
    ws: Handle,
}

/// Every workspace, by name.
pub(crate) struct Registry {
    default: Handle,
    /// `--api-key` in the order given; empty accepts any `oi_sk_<non-empty>`.
    default_keys: Vec<String>,
    named: BTreeMap<String, Named>,
    /// Registrations from the state file for a workspace not defined yet: a workspace of that
    /// name created later starts with them, and they are saved again meanwhile.
    held: BTreeMap<String, Vec<Registration>>,
    /// What a reset of everything returns to.
    startup: Vec<WorkspaceSpec>,
}

impl Registry {
    /// `default` with `default_config`, the start-up workspaces with the default fault
    /// configuration, and the registrations loaded from the state file.
    pub(crate) fn new(
        default_keys: Vec<String>,
        default_config: FaultConfig,
        startup: Vec<WorkspaceSpec>,
        mut loaded: BTreeMap<String, Vec<Registration>>,
    ) -> Result<Self, String> {
        let default_records = loaded.remove(DEFAULT).unwrap_or_default();
        let mut reg = Self {
            default: Workspace::handle(default_config, default_records),
            default_keys: default_keys.into_iter().filter(|k| !k.is_empty()).collect(),
            named: BTreeMap::new(),
            held: loaded,
            startup: startup.clone(),
        };
        for spec in startup {
            reg.create(&spec.name, spec.api_keys, FaultConfig::default())?;
        }
        Ok(reg)
    }

    /// The workspace `token` selects, and whether it is accepted there.
    pub(crate) fn resolve(&self, token: Option<&str>) -> Resolved {
        if let Some(token) = token {
            for named in self.named.values() {
                if let Some(pos) = named.keys.iter().position(|k| k == token) {
                    return Resolved {
                        ws: Arc::clone(&named.ws),
                        caller: Some(pos),
                        authorized: true,
                    };
                }
            }
        }
        let caller = token.and_then(|t| self.default_keys.iter().position(|k| k == t));
        let authorized = match token {
            None => false,
            Some(_) if !self.default_keys.is_empty() => caller.is_some(),
            Some(t) => t
                .strip_prefix("oi_sk_")
                .is_some_and(|rest| !rest.is_empty()),
        };
        Resolved {
            ws: Arc::clone(&self.default),
            caller,
            authorized,
        }
    }

    /// The workspace called `name` (`default` included).
    pub(crate) fn get(&self, name: &str) -> Option<Handle> {
        if name == DEFAULT {
            return Some(Arc::clone(&self.default));
        }
        self.named.get(name).map(|n| Arc::clone(&n.ws))
    }

    /// Refuses an empty key and a key that already reaches another workspace (`default`'s
    /// `--api-key` included), so that a key always selects one workspace.
    fn check_keys(&self, name: &str, keys: &[String]) -> Result<(), String> {
        if keys.iter().any(String::is_empty) {
            return Err("an API key must be non-empty".to_owned());
        }
        let taken_by_default = keys.iter().any(|k| self.default_keys.contains(k));
        let taken_by_other = self
            .named
            .iter()
            .filter(|(other, _)| other.as_str() != name)
            .any(|(_, n)| n.keys.iter().any(|k| keys.contains(k)));
        if taken_by_default || taken_by_other {
            return Err("an API key already belongs to another workspace".to_owned());
        }
        Ok(())
    }

    /// A new workspace with `keys` and `config`.
    pub(crate) fn create(
        &mut self,
        name: &str,
        keys: Vec<String>,
        config: FaultConfig,
    ) -> Result<Summary, String> {
        check_name(name)?;
        if name == DEFAULT || self.named.contains_key(name) {
            return Err(format!("workspace {name} already exists"));
        }
        config.check()?;
        let keys = dedup(keys);
        self.check_keys(name, &keys)?;
        let records = self.held.remove(name).unwrap_or_default();
        let registrations = records.len();
        let ws = Workspace::handle(config, records);
        let summary = Summary {
            name: name.to_owned(),
            keys: keys.len(),
            registrations,
        };
        self.named.insert(name.to_owned(), Named { keys, ws });
        Ok(summary)
    }

    /// Replaces a named workspace's keys (rotation): an old key then reaches `default`.
    pub(crate) fn set_keys(
        &mut self,
        name: &str,
        keys: Vec<String>,
    ) -> Result<usize, RegistryError> {
        if name == DEFAULT {
            return Err(RegistryError::Invalid(
                "the default workspace's keys are --api-key".to_owned(),
            ));
        }
        if !self.named.contains_key(name) {
            return Err(RegistryError::NotFound(name.to_owned()));
        }
        let keys = dedup(keys);
        self.check_keys(name, &keys)
            .map_err(RegistryError::Invalid)?;
        let count = keys.len();
        if let Some(named) = self.named.get_mut(name) {
            named.keys = keys;
        }
        Ok(count)
    }

    /// `default` first, then the named workspaces by name.
    pub(crate) fn summaries(&self) -> Vec<Summary> {
        let default = Summary {
            name: DEFAULT.to_owned(),
            keys: self.default_keys.len(),
            registrations: lock(&self.default).store.ordered().len(),
        };
        let named = self.named.iter().map(|(name, n)| Summary {
            name: name.clone(),
            keys: n.keys.len(),
            registrations: lock(&n.ws).store.ordered().len(),
        });
        std::iter::once(default).chain(named).collect()
    }

    /// Every workspace's registrations (and those held), for the state file.
    pub(crate) fn snapshot(&self) -> BTreeMap<String, Vec<Registration>> {
        let mut out = self.held.clone();
        let records = |ws: &Handle| lock(ws).store.ordered().into_iter().cloned().collect();
        out.insert(DEFAULT.to_owned(), records(&self.default));
        for (name, n) in &self.named {
            out.insert(name.clone(), records(&n.ws));
        }
        out
    }

    /// Back to the start-up state: the workspaces created since are gone, the start-up ones have
    /// their start-up keys again, and every one is reset; held registrations are dropped.
    pub(crate) fn reset_all(&mut self) {
        self.held.clear();
        lock(&self.default).reset();
        self.named
            .retain(|name, _| self.startup.iter().any(|s| &s.name == name));
        for spec in &self.startup {
            if let Some(named) = self.named.get_mut(&spec.name) {
                named.keys = spec.api_keys.clone();
                lock(&named.ws).reset();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(default_keys: &[&str], startup: &[(&str, &[&str])]) -> Registry {
        let startup = startup
            .iter()
            .map(|(name, keys)| WorkspaceSpec {
                name: (*name).to_owned(),
                api_keys: keys.iter().map(|k| (*k).to_owned()).collect(),
            })
            .collect();
        Registry::new(
            default_keys.iter().map(|k| (*k).to_owned()).collect(),
            FaultConfig::default(),
            startup,
            BTreeMap::new(),
        )
        .unwrap()
    }

    fn is(a: &Handle, b: &Handle) -> bool {
        Arc::ptr_eq(a, b)
    }

    #[test]
    fn names() {
        for ok in ["a", "team-a", "0", &"a".repeat(63)] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "Team", "a_b", "a/b", &"a".repeat(64), "ä"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn spec_parses_and_never_echoes_keys() {
        let spec: WorkspaceSpec = "team-a=oi_sk_1,oi_sk_2,oi_sk_1".parse().unwrap();
        assert_eq!(spec.name, "team-a");
        assert_eq!(spec.api_keys, ["oi_sk_1", "oi_sk_2"]);
        assert!(!format!("{spec:?}").contains("oi_sk_"));
        for bad in [
            "oi_sk_secret",
            "Team=oi_sk_secret",
            "default=oi_sk_secret",
            "a=",
            "a=oi_sk_secret,",
        ] {
            let err = bad.parse::<WorkspaceSpec>().unwrap_err();
            assert!(!err.contains("oi_sk_secret"), "{err}");
        }
    }

    #[test]
    fn keys_select_workspaces_and_others_fall_to_default_rules() {
        let reg = registry(&[], &[("team-a", &["ka1", "ka2"])]);
        let a = reg.get("team-a").unwrap();
        let r = reg.resolve(Some("ka2"));
        assert!(is(&r.ws, &a) && r.authorized && r.caller == Some(1));
        let r = reg.resolve(Some("oi_sk_other"));
        assert!(is(&r.ws, &reg.default) && r.authorized && r.caller.is_none());
        let r = reg.resolve(Some("other"));
        assert!(is(&r.ws, &reg.default) && !r.authorized);
        assert!(!reg.resolve(None).authorized);

        let reg = registry(&["kd"], &[("team-a", &["ka1"])]);
        assert!(!reg.resolve(Some("oi_sk_other")).authorized);
        let r = reg.resolve(Some("kd"));
        assert!(r.authorized && r.caller == Some(0));
    }

    #[test]
    fn a_key_belongs_to_one_workspace() {
        let mut reg = registry(&["kd"], &[("team-a", &["ka"])]);
        let cfg = FaultConfig::default;
        assert!(reg.create("team-b", vec!["ka".into()], cfg()).is_err());
        assert!(reg.create("team-b", vec!["kd".into()], cfg()).is_err());
        assert!(reg.create("team-b", vec![String::new()], cfg()).is_err());
        assert!(reg.create("team-a", vec!["kb".into()], cfg()).is_err());
        assert!(reg.create("default", vec!["kb".into()], cfg()).is_err());
        assert!(reg.create("team-b", vec!["kb".into()], cfg()).is_ok());
        assert!(matches!(
            reg.set_keys("team-b", vec!["ka".into()]),
            Err(RegistryError::Invalid(_))
        ));
        assert!(matches!(
            reg.set_keys("nope", vec![]),
            Err(RegistryError::NotFound(_))
        ));
        assert!(matches!(
            reg.set_keys(DEFAULT, vec![]),
            Err(RegistryError::Invalid(_))
        ));
        // Keeping its own key is no conflict.
        assert_eq!(
            reg.set_keys("team-a", vec!["ka".into(), "kc".into()])
                .unwrap(),
            2
        );
    }

    #[test]
    fn reset_all_returns_to_the_startup_workspaces() {
        let mut reg = registry(&[], &[("team-a", &["ka"])]);
        reg.create("team-b", vec!["kb".into()], FaultConfig::default())
            .unwrap();
        reg.set_keys("team-a", vec!["kz".into()]).unwrap();
        reg.reset_all();
        assert!(reg.get("team-b").is_none());
        let a = reg.get("team-a").unwrap();
        assert!(is(&reg.resolve(Some("ka")).ws, &a));
        assert!(!is(&reg.resolve(Some("kz")).ws, &a));
    }

    #[test]
    fn held_registrations_go_to_the_workspace_created_later() {
        let mut s = Store::default();
        s.create(
            crate::validate::CreateInput {
                phone_number: "+15550001".to_owned(),
                provider: crate::validate::Provider::Twilio,
                agent_id: uuid::Uuid::new_v4(),
                friendly_name: None,
                provider_config: None,
                inbound_routing: None,
                credential_id: Some(uuid::Uuid::new_v4()),
            },
            jiff::Timestamp::now(),
            None,
        )
        .unwrap();
        let records: Vec<Registration> = s.ordered().into_iter().cloned().collect();
        let loaded = BTreeMap::from([("later".to_owned(), records.clone())]);
        let mut reg = Registry::new(vec![], FaultConfig::default(), vec![], loaded).unwrap();
        assert_eq!(reg.snapshot()["later"], records);
        assert_eq!(reg.summaries().len(), 1);
        let summary = reg
            .create("later", vec!["kl".into()], FaultConfig::default())
            .unwrap();
        assert_eq!(summary.registrations, 1);
        assert_eq!(reg.snapshot()["later"], records);
    }
}
