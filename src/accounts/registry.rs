//! What this process knows of each account: the account's OneInbox client (its own token
//! bucket, in-flight cap and 429 cooldown), the key it holds and the Secret version that key
//! came from, and the gate that bounds the account's passes at once. Reading a key is single
//! flight per account, and a key whose Secret version is unchanged is never read again.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::{Client, Resource};
use tokio::sync::{Semaphore, TryAcquireError};
use tracing::debug;

use crate::crd::AccountId;
use crate::crd::DEFAULT_API_KEY_KEY;
use crate::crd::accounts::{
    Budget as BudgetSpec, ClusterOneInboxAccount, DEFAULT_CA_KEY, OneInboxAccount,
};
use crate::mutex::lock;
use crate::oneinbox::{AccountEndpoint, Budget, KeyCell, OneInboxApi, SecretString};
use crate::secrets::{SecretProblem, problem_text, secret_value_of};

/// A Secret key by namespace, name and key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SecretKeyRef {
    pub namespace: String,
    pub name: String,
    pub key: String,
}

/// Both account kinds, as the operator uses them.
#[derive(Clone, Debug, PartialEq)]
pub struct AccountView {
    pub id: AccountId,
    pub generation: Option<i64>,
    pub api_key: SecretKeyRef,
    pub api_url: Option<String>,
    pub ca_bundle: Option<SecretKeyRef>,
    pub budget: Option<BudgetSpec>,
}

impl AccountView {
    pub fn namespaced(a: &OneInboxAccount) -> AccountView {
        let namespace = a.meta().namespace.clone().unwrap_or_default();
        let r = &a.spec.api_key_secret_ref;
        AccountView {
            id: AccountId::Namespaced {
                namespace: namespace.clone(),
                name: a.meta().name.clone().unwrap_or_default(),
            },
            generation: a.meta().generation,
            api_key: SecretKeyRef {
                namespace: namespace.clone(),
                name: r.name.clone(),
                key: r.key_or(DEFAULT_API_KEY_KEY).to_owned(),
            },
            api_url: a.spec.api_url.clone(),
            ca_bundle: a.spec.ca_bundle_secret_ref.as_ref().map(|c| SecretKeyRef {
                namespace,
                name: c.name.clone(),
                key: c.key_or(DEFAULT_CA_KEY).to_owned(),
            }),
            budget: a.spec.budget.clone(),
        }
    }

    pub fn cluster(a: &ClusterOneInboxAccount) -> AccountView {
        let r = &a.spec.api_key_secret_ref;
        AccountView {
            id: AccountId::Cluster {
                name: a.meta().name.clone().unwrap_or_default(),
            },
            generation: a.meta().generation,
            api_key: SecretKeyRef {
                namespace: r.namespace.clone(),
                name: r.name.clone(),
                key: r.key.clone().unwrap_or_else(|| DEFAULT_API_KEY_KEY.into()),
            },
            api_url: a.spec.api_url.clone(),
            ca_bundle: a.spec.ca_bundle_secret_ref.as_ref().map(|c| SecretKeyRef {
                namespace: c.namespace.clone(),
                name: c.name.clone(),
                key: c.key.clone().unwrap_or_else(|| DEFAULT_CA_KEY.into()),
            }),
            budget: a.spec.budget.clone(),
        }
    }

    /// The Secrets the account reads.
    pub fn secrets(&self) -> impl Iterator<Item = &SecretKeyRef> {
        std::iter::once(&self.api_key).chain(self.ca_bundle.as_ref())
    }
}

/// The budget of an account: its spec, each field defaulting to the operator's flags.
pub fn budget_of(spec: Option<&BudgetSpec>, defaults: &Budget) -> Budget {
    let nz = |v: Option<i32>, d: NonZeroU32| {
        v.and_then(|v| u32::try_from(v).ok())
            .and_then(NonZeroU32::new)
            .unwrap_or(d)
    };
    Budget {
        rate_per_second: nz(
            spec.and_then(|b| b.requests_per_second),
            defaults.rate_per_second,
        ),
        burst: nz(spec.and_then(|b| b.burst), defaults.burst),
        max_in_flight: spec
            .and_then(|b| b.max_in_flight)
            .and_then(|v| usize::try_from(v).ok())
            .filter(|v| *v > 0)
            .unwrap_or(defaults.max_in_flight),
    }
}

/// What a pass or the account's reconcile may use of an account now.
#[derive(Clone)]
pub struct AccountState<C> {
    /// The account's client with the newest key read, or the last known key when the Secret
    /// cannot be used now.
    pub client: Option<C>,
    /// Why the key Secret cannot be used now.
    pub problem: Option<SecretProblem>,
    /// The account cannot be used at all (an invalid API URL or CA bundle).
    pub invalid: Option<String>,
}

struct Loaded<C> {
    client: C,
    key: KeyCell,
    /// What the client was built from (URL, budget, CA bundle version).
    endpoint: String,
    key_ref: SecretKeyRef,
    /// resourceVersion of the key's Secret when the key was read.
    key_version: Option<String>,
    read_at: Instant,
}

struct Entry<C> {
    loaded: Option<Loaded<C>>,
    problem: Option<(SecretProblem, Option<String>)>,
    invalid: Option<String>,
    /// The (key version, endpoint) last verified with an authenticated call.
    verified: Option<(Option<String>, String)>,
}

impl<C> Default for Entry<C> {
    fn default() -> Self {
        Entry {
            loaded: None,
            problem: None,
            invalid: None,
            verified: None,
        }
    }
}

/// Settings of the registry.
#[derive(Clone, Debug)]
pub struct RegistrySettings {
    /// The ClusterOneInboxAccount of objects without an `accountRef`; else the operator-wide
    /// key.
    pub default_account: Option<String>,
    /// The budget of an account that does not set one (the --api-* flags).
    pub default_budget: Budget,
    /// Passes at once per account (--concurrency).
    pub passes_per_account: usize,
    /// Without a Secret watch a key is read again after this long.
    pub reread_after: Option<Duration>,
    /// ClusterOneInboxAccounts are watched (not with --watch-namespace unless asked).
    pub cluster_accounts: bool,
    /// The deletionPolicy of objects that set none, when their account sets no default.
    pub default_deletion_policy: crate::crd::DeletionPolicy,
    /// The namespaces the operator-wide key serves (a label selector, applied by the API
    /// server to a Namespace watch); `None`: every one.
    pub operator_key_namespaces: Option<String>,
    /// Only accounts with these labels are this process's (sharding by account).
    pub account_selector: Option<String>,
    /// An account's `http://` apiUrl is accepted (--allow-insecure-http).
    pub allow_insecure_http: bool,
}

impl RegistrySettings {
    /// No default account, no cluster accounts, no sharding: only the operator-wide key (and
    /// namespaced accounts, if any are watched).
    pub fn operator_only(default_budget: Budget, passes_per_account: usize) -> RegistrySettings {
        RegistrySettings {
            default_account: None,
            default_budget,
            passes_per_account,
            reread_after: None,
            cluster_accounts: false,
            default_deletion_policy: Default::default(),
            operator_key_namespaces: None,
            account_selector: None,
            allow_insecure_http: false,
        }
    }
}

/// Every account this process uses.
pub struct Registry<C> {
    operator: C,
    pub settings: RegistrySettings,
    entries: Mutex<HashMap<AccountId, Arc<tokio::sync::Mutex<Entry<C>>>>>,
    gates: Mutex<HashMap<AccountId, AccountGate>>,
}

/// The places of one account's passes: any pass takes one of `all`; a background drift check
/// first takes one of `background` (half of them), so user work always finds places free.
///
/// `all` starts at `--concurrency` and grows, one place at a time, when a pass finds every
/// place taken while the account's API budget is not used up (no call waited for it in the
/// last second): then the passes' own
/// Kubernetes writes, not the budget, limit the work (a loaded API server), and the budget
/// needs more passes at once than the flag gave (about rate × pass time). At most one place
/// per `GROW_EVERY`, so a burst's first second (the bucket still full, every call free) adds
/// a few, and only a need that lasts adds many. Never beyond `GROWTH` × the flag; the places
/// stay until the account is forgotten.
#[derive(Clone)]
pub struct AccountGate {
    all: Arc<Semaphore>,
    background: Arc<Semaphore>,
    growth: Arc<Mutex<Growth>>,
    most: usize,
}

/// The places of `all` now, and when the last one was added.
struct Growth {
    places: usize,
    at: Option<tokio::time::Instant>,
}

/// How far an account's places may grow beyond `--concurrency`.
pub const GROWTH: usize = 4;

/// The shortest time between two places added.
pub const GROW_EVERY: Duration = Duration::from_millis(100);

/// The places a pass holds until it ends.
pub struct GatePass {
    _background: Option<tokio::sync::OwnedSemaphorePermit>,
    _place: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// The gate's places after a pass found all `now` of them taken: one more, unless the
/// account's API budget is used up (more passes would wait for it too), `most` is reached,
/// or the last place was added less than `GROW_EVERY` ago (`since_grown`).
pub fn more_places(
    now: usize,
    most: usize,
    budget_used_up: bool,
    since_grown: Option<Duration>,
) -> Option<usize> {
    let due = since_grown.is_none_or(|d| d >= GROW_EVERY);
    (!budget_used_up && now < most && due).then_some(now + 1)
}

impl AccountGate {
    fn new(places: usize) -> AccountGate {
        let places = places.max(1);
        AccountGate {
            all: Arc::new(Semaphore::new(places)),
            background: Arc::new(Semaphore::new((places / 2).max(1))),
            growth: Arc::new(Mutex::new(Growth { places, at: None })),
            most: places * GROWTH,
        }
    }

    /// Wait for a place (a background check also for one of its own). `budget_used_up` is
    /// asked only when every place is taken.
    pub async fn enter(&self, background: bool, budget_used_up: impl FnOnce() -> bool) -> GatePass {
        let first = if background {
            self.background.clone().acquire_owned().await.ok()
        } else {
            None
        };
        let place = match self.all.clone().try_acquire_owned() {
            Ok(place) => Some(place),
            Err(TryAcquireError::Closed) => None,
            Err(TryAcquireError::NoPermits) => {
                self.grow(budget_used_up());
                self.all.clone().acquire_owned().await.ok()
            }
        };
        GatePass {
            _background: first,
            _place: place,
        }
    }

    /// Places now (`--concurrency`, or more after growing).
    pub fn places(&self) -> usize {
        lock(&self.growth).places
    }

    fn grow(&self, budget_used_up: bool) {
        let mut growth = lock(&self.growth);
        let at = tokio::time::Instant::now();
        let now = growth.places;
        if let Some(next) = more_places(
            now,
            self.most,
            budget_used_up,
            growth.at.map(|t| at.duration_since(t)),
        ) {
            *growth = Growth {
                places: next,
                at: Some(at),
            };
            self.all.add_permits(next - now);
            debug!(
                places = next,
                "every pass place taken and the API budget idle: one more"
            );
        }
    }
}

impl<C: OneInboxApi> Registry<C> {
    pub fn new(operator: C, settings: RegistrySettings) -> Registry<C> {
        Registry {
            operator,
            settings,
            entries: Mutex::default(),
            gates: Mutex::default(),
        }
    }

    /// The operator-wide client.
    pub fn operator(&self) -> &C {
        &self.operator
    }

    /// The account's gate: a pass holds one of its places, so one account's backlog never
    /// takes the places of another account's work, and drift checks never all of them.
    pub fn gate(&self, id: &AccountId) -> AccountGate {
        lock(&self.gates)
            .entry(id.clone())
            .or_insert_with(|| AccountGate::new(self.settings.passes_per_account))
            .clone()
    }

    /// Whether the account's API budget is used up (`OneInboxApi::budget_used_up`); also `true`
    /// while its client is not known here (nothing then says more passes would help).
    pub fn budget_used_up(&self, id: &AccountId) -> bool {
        if *id == AccountId::Operator {
            return self.operator.budget_used_up();
        }
        let Some(entry) = lock(&self.entries).get(id).cloned() else {
            return true;
        };
        entry
            .try_lock()
            .ok()
            .and_then(|e| e.loaded.as_ref().map(|l| l.client.budget_used_up()))
            .unwrap_or(true)
    }

    /// Forget an account (deleted): its key and client go.
    pub fn forget(&self, id: &AccountId) {
        lock(&self.entries).remove(id);
        lock(&self.gates).remove(id);
    }

    fn entry(&self, id: &AccountId) -> Arc<tokio::sync::Mutex<Entry<C>>> {
        lock(&self.entries).entry(id.clone()).or_default().clone()
    }

    /// The account's client, reading its key Secret only if the key's Secret changed since
    /// the last read (`watched` is the version the Secret watch reports; `None` without a
    /// watch, or while it does not know the Secret).
    pub async fn state(
        &self,
        client: &Client,
        account: &AccountView,
        watched: impl Fn(&SecretKeyRef) -> Option<String>,
        secrets_listed: bool,
    ) -> Result<AccountState<C>, kube::Error> {
        let entry = self.entry(&account.id);
        let mut e = entry.lock().await;
        let budget = budget_of(account.budget.as_ref(), &self.settings.default_budget);
        let ca_version = account.ca_bundle.as_ref().map(&watched);
        let endpoint = format!(
            "{:?}|{:?}|{:?}|{:?}",
            account.api_url, budget, account.ca_bundle, ca_version
        );
        let key_version = watched(&account.api_key);
        let fresh = |l: &Loaded<C>| {
            l.endpoint == endpoint
                && l.key_ref == account.api_key
                && match (&key_version, self.settings.reread_after) {
                    (Some(v), _) => l.key_version.as_ref() == Some(v),
                    (None, Some(after)) => l.read_at.elapsed() < after,
                    (None, None) => false,
                }
        };
        let problem_current = |p: &(SecretProblem, Option<String>)| {
            // A Secret known absent stays absent until the watch reports it.
            p.1 == key_version && (key_version.is_some() || secrets_listed)
        };
        let up_to_date = e.loaded.as_ref().is_some_and(fresh)
            || (e.problem.as_ref().is_some_and(problem_current) && e.invalid.is_none());
        if !up_to_date {
            self.load(client, account, &budget, endpoint, &mut e)
                .await?;
        }
        Ok(AccountState {
            client: e.loaded.as_ref().map(|l| l.client.clone()),
            problem: e.problem.as_ref().map(|p| p.0.clone()),
            invalid: e.invalid.clone(),
        })
    }

    async fn load(
        &self,
        client: &Client,
        account: &AccountView,
        budget: &Budget,
        endpoint: String,
        e: &mut Entry<C>,
    ) -> Result<(), kube::Error> {
        let (value, version) = read_secret_value(client, &account.api_key).await?;
        tracing::debug!(account = %account.id, ok = value.is_ok(), had_key = e.loaded.is_some(), "account key read");
        let key = match value {
            Ok(key) => key,
            Err(problem) => {
                e.problem = Some((problem, version));
                return Ok(());
            }
        };
        e.problem = None;
        if let Some(l) = e.loaded.as_mut().filter(|l| l.endpoint == endpoint) {
            // A rotation: every client of the account sees the new key at its next call.
            l.key.set(key);
            l.key_ref = account.api_key.clone();
            l.key_version = version;
            l.read_at = Instant::now();
            return Ok(());
        }
        let mut extra_roots = Vec::new();
        if let Some(ca) = &account.ca_bundle {
            let (pem, _) = read_secret_value(client, ca).await?;
            match pem.map(|p| reqwest::Certificate::from_pem_bundle(p.expose().as_bytes())) {
                Ok(Ok(certs)) if !certs.is_empty() => extra_roots = certs,
                Ok(_) => {
                    e.invalid = Some(format!(
                        "the CA bundle in Secret {}/{} (key {}) holds no PEM certificate",
                        ca.namespace, ca.name, ca.key
                    ));
                    return Ok(());
                }
                Err(p) => {
                    e.invalid = Some(format!(
                        "the CA bundle cannot be read: {}",
                        problem_text(&p)
                    ));
                    return Ok(());
                }
            }
        }
        if let Some(url) = &account.api_url
            && let Err(why) = endpoint_allowed(url, self.settings.allow_insecure_http)
        {
            e.invalid = Some(why);
            return Ok(());
        }
        let cell = KeyCell::new(key);
        let built = self.operator.for_account(&AccountEndpoint {
            label: account.id.label(),
            base_url: account.api_url.clone(),
            extra_roots,
            budget: budget.clone(),
            key: cell.clone(),
        });
        match built {
            Ok(c) => {
                e.invalid = None;
                e.loaded = Some(Loaded {
                    client: c,
                    key: cell,
                    endpoint,
                    key_ref: account.api_key.clone(),
                    key_version: version,
                    read_at: Instant::now(),
                });
            }
            Err(why) => e.invalid = Some(why),
        }
        Ok(())
    }

    /// Whether the account's key, as loaded now, still needs its authenticated check.
    pub async fn needs_verification(&self, id: &AccountId) -> bool {
        let entry = self.entry(id);
        let e = entry.lock().await;
        match &e.loaded {
            Some(l) => e.verified != Some((l.key_version.clone(), l.endpoint.clone())),
            None => false,
        }
    }

    /// The loaded key passed (or failed: `ok` false) its authenticated check.
    pub async fn verified(&self, id: &AccountId, ok: bool) {
        let entry = self.entry(id);
        let mut e = entry.lock().await;
        e.verified = match (&e.loaded, ok) {
            (Some(l), true) => Some((l.key_version.clone(), l.endpoint.clone())),
            _ => None,
        };
    }
}

/// An account's `apiUrl` the key may be sent to: https, or http only with
/// --allow-insecure-http (the key would cross the network in clear text).
fn endpoint_allowed(url: &str, allow_insecure_http: bool) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("apiUrl is not a URL: {e}"))?;
    crate::oneinbox::http::check_api_url(&parsed, allow_insecure_http)
        .map_err(|e| e.replace("--api-url", "apiUrl"))
}

/// One non-empty UTF-8 value of a Secret, and the Secret's resourceVersion.
pub async fn read_secret_value(
    client: &Client,
    r: &SecretKeyRef,
) -> Result<(Result<SecretString, SecretProblem>, Option<String>), kube::Error> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &r.namespace);
    let secret = secrets.get_opt(&r.name).await?;
    let version = secret
        .as_ref()
        .and_then(|s| s.meta().resource_version.clone());
    let value = secret_value_of(secret.as_ref(), &r.namespace, &r.name, &r.key);
    Ok((value, version))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    #[test]
    fn places_grow_by_one_while_the_budget_is_idle_up_to_the_most() {
        let ms = Duration::from_millis;
        // (places now, most, the budget used up, since the last place) -> after
        let table = [
            ((16, 64, false, None), Some(17)),
            ((16, 64, true, None), None),
            ((16, 64, false, Some(ms(100))), Some(17)),
            ((16, 64, false, Some(ms(99))), None),
            ((63, 64, false, Some(ms(500))), Some(64)),
            ((64, 64, false, None), None),
            ((64, 64, true, None), None),
            ((1, 4, false, None), Some(2)),
        ];
        for ((now, most, waiting, since), want) in table {
            assert_eq!(
                more_places(now, most, waiting, since),
                want,
                "{now} {most} {waiting} {since:?}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_gate_gets_a_place_more_only_when_the_budget_is_idle() {
        let gate = AccountGate::new(2);
        let held = [
            gate.enter(false, || panic!("asked with places free"))
                .now_or_never()
                .expect("a free place"),
            gate.enter(false, || panic!("asked with places free"))
                .now_or_never()
                .expect("a free place"),
        ];
        // The budget used up: the pass waits for a place, the gate stays at 2.
        assert!(gate.enter(false, || true).now_or_never().is_none());
        assert_eq!(gate.places(), 2);
        // The budget idle: one place more, taken at once.
        let third = gate.enter(false, || false).now_or_never();
        assert!(third.is_some());
        assert_eq!(gate.places(), 3);
        // Not again within GROW_EVERY.
        assert!(gate.enter(false, || false).now_or_never().is_none());
        assert_eq!(gate.places(), 3);
        // Never beyond GROWTH × the flag.
        let mut more = Vec::new();
        loop {
            tokio::time::advance(GROW_EVERY).await;
            let Some(p) = gate.enter(false, || false).now_or_never() else {
                break;
            };
            more.push(p);
        }
        assert_eq!(gate.places(), 2 * GROWTH);
        assert_eq!(held.len() + 1 + more.len(), 2 * GROWTH);
        // Background checks keep to their own half of the flag's places.
        drop(more);
        let bg = gate
            .enter(true, || false)
            .now_or_never()
            .expect("a background place");
        assert!(gate.enter(true, || false).now_or_never().is_none());
        drop((bg, held, third));
    }

    #[test]
    fn an_account_url_must_be_https_unless_http_is_allowed() {
        assert!(endpoint_allowed("https://api.example", false).is_ok());
        let err = endpoint_allowed("http://api.example", false).unwrap_err();
        assert!(
            err.contains("apiUrl") && err.contains("plain http"),
            "{err}"
        );
        assert!(endpoint_allowed("http://127.0.0.1:1", true).is_ok());
        assert!(endpoint_allowed("ftp://x", true).is_err());
    }

    #[test]
    fn a_budget_defaults_field_by_field_to_the_flags() {
        let flags = Budget {
            rate_per_second: NonZeroU32::new(20).unwrap(),
            burst: NonZeroU32::new(20).unwrap(),
            max_in_flight: 16,
        };
        assert_eq!(budget_of(None, &flags), flags);
        let spec = BudgetSpec {
            requests_per_second: Some(5),
            burst: None,
            max_in_flight: Some(2),
        };
        assert_eq!(
            budget_of(Some(&spec), &flags),
            Budget {
                rate_per_second: NonZeroU32::new(5).unwrap(),
                burst: NonZeroU32::new(20).unwrap(),
                max_in_flight: 2,
            }
        );
    }
}
