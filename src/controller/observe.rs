//! Observe: what one pass knows. `Observation` holds the object, this process's memory of it,
//! the claims of other watched objects, and the result of every read and effect of the pass so
//! far; `decide` looks only at it. The reads themselves (Secrets, the registration, the
//! look-up by number) are here; which of them a pass needs is decided by `decide`.

use std::ops::ControlFlow;
use std::sync::atomic::Ordering;
use std::time::Instant;

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::{Resource, ResourceExt};

use super::Context;
use super::credentials::Credentials;
use super::memory::ObjectMemory;
use super::{claims, plan};
use crate::mutex::lock;
use kube::runtime::reflector::ObjectRef;

use crate::accounts::registry::{AccountView, SecretKeyRef};
use crate::crd::AccountId;
use crate::crd::{DEFAULT_PASSWORD_KEY, DeletionPolicy, PhoneNumber, SecretVersionMap};
use crate::definition::{self, Definition};
use crate::error::{Error, Result};
use crate::oneinbox::{ApiError, Deregistered, OneInboxApi, Registration, SecretString};
use crate::secrets::{SecretAccess, SecretProblem, secret_value_of};

/// `namespace/name` of another watched object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectName {
    pub namespace: String,
    pub name: String,
    pub uid: Option<String>,
}

impl ObjectName {
    pub fn of(o: &PhoneNumber) -> ObjectName {
        ObjectName {
            namespace: o.namespace().unwrap_or_default(),
            name: o.name_any(),
            uid: o.uid(),
        }
    }

    /// As the `related` object of an event.
    pub fn reference(&self) -> k8s_openapi::api::core::v1::ObjectReference {
        k8s_openapi::api::core::v1::ObjectReference {
            api_version: Some("oneinbox.ai/v1alpha1".into()),
            kind: Some("PhoneNumber".into()),
            namespace: Some(self.namespace.clone()),
            name: Some(self.name.clone()),
            uid: self.uid.clone(),
            ..Default::default()
        }
    }
}

impl std::fmt::Display for ObjectName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// The API key an object uses: its account's.
#[derive(Clone, Debug, PartialEq)]
pub enum ApiKey {
    /// No account: the operator-wide key.
    OperatorWide,
    /// The account's key, known to this process.
    Account(AccountId),
    /// The account's key Secret cannot be used; `last_known` if this process still holds the
    /// key it read before (deletions go on with it).
    Missing {
        account: AccountId,
        problem: SecretProblem,
        last_known: bool,
    },
    /// The account cannot be used by this object.
    Unusable(AccountProblem),
}

/// What the watches say of an object's account (no read).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct AccountFacts {
    /// The object's ClusterOneInboxAccount (or the operator-wide key) does not allow its
    /// namespace now: a check however fresh does not stand for it.
    pub grant_refused: bool,
    /// The deletionPolicy of the object if it sets none: its account's default, else the
    /// operator's.
    pub default_deletion_policy: DeletionPolicy,
}

/// Why an object cannot use the account it names.
#[derive(Clone, Debug, PartialEq)]
pub enum AccountProblem {
    /// No account of that kind and name (yet).
    NotFound(AccountId),
    /// A ClusterOneInboxAccount that does not allow the object's namespace.
    NotAllowed { account: AccountId, rule: String },
    /// This operator does not watch ClusterOneInboxAccounts (it watches one namespace).
    ClusterAccountsOff(AccountId),
    /// The account's API URL or CA bundle is unusable.
    Invalid { account: AccountId, why: String },
}

/// What the metadata-only Secret watch says of the Secrets an object references (no read).
#[derive(Clone, Debug, PartialEq)]
pub struct SecretFacts {
    /// Every referenced Secret is at the resourceVersion the last check read.
    pub unchanged: bool,
    /// The resourceVersion of every referenced Secret (by name) as the watch reports it;
    /// `None` while one of them is not known to it.
    pub versions: Option<SecretVersionMap>,
    /// The watch has listed every Secret once: a referenced Secret it does not know is then
    /// absent (or unreadable), not merely not seen yet.
    pub listed: bool,
}

/// The claims of other watched objects on an object's number and id.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClaimFacts {
    /// The older object that manages this object's number, if another one.
    pub number_owner: Option<ObjectName>,
    /// That owner's only claim is an id annotation naming another id than this object names
    /// (it holds no registration and has no attempt in flight).
    pub number_owner_names_another_id: bool,
    /// Another watched object that holds the id this object names.
    pub id_owner: Option<ObjectName>,
}

/// Everything one pass knows so far.
#[derive(Clone, Debug)]
pub struct Observation {
    /// The object as last read or written in this pass.
    pub obj: PhoneNumber,
    /// The generation this pass started from: what a successful pass brought the API in line
    /// with (a status write answers with the newest object, which may carry a later spec).
    pub generation: Option<i64>,
    /// Whether the object was being deleted when the pass started: the results of one kind
    /// of pass never feed a decision of the other.
    pub deleting_at_start: bool,
    pub now: Instant,
    pub wall: jiff::Timestamp,
    pub memory: ObjectMemory,
    /// What the Secret watch says of the referenced Secrets, with no read.
    pub secrets: SecretFacts,
    /// The claims of other watched objects on this object's number and id.
    pub claims: ClaimFacts,
    /// What the watches say of the object's account, with no read.
    pub account: AccountFacts,
    /// (name, resourceVersion) of each Secret read in this pass.
    pub secrets_read: Vec<(String, String)>,
    pub api_key: Option<ApiKey>,
    pub credentials: Option<std::result::Result<Credentials, SecretProblem>>,
    /// `GET` of the id the object names, or of the id a 409 named.
    pub fetched: Option<std::result::Result<Registration, ApiError>>,
    /// Look-up by number after an interrupted attempt.
    pub lookup: Option<std::result::Result<Option<Registration>, ApiError>>,
    /// The PhoneNumber CRD, read before a deletion would deregister.
    pub definition: Option<Definition>,
    /// What this pass did last (act sets it): the one effect the next decision reads.
    pub last: Outcome,
}

/// The last effect of a pass, as far as the next decision needs it. Reads do not change it,
/// nor do writes that only record what is decided (the id annotation, a lost registration in
/// the object's memory).
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Outcome {
    /// Nothing yet.
    #[default]
    None,
    /// A `Deleting` report said to go on.
    Continued,
    /// The registration the object names was adopted (finalizer, event).
    Adopted,
    /// The answer of `DELETE` (a deregistration, or a replacement's release).
    Deregistered(std::result::Result<Deregistered, ApiError>),
    /// The POST's answer.
    Posted(std::result::Result<Registration, ApiError>),
    /// A new registration's ids were written to the status.
    Persisted(Registration),
    /// The answer of the PATCH, and the registration persisted before it in this pass (what
    /// the registration is known to hold when the PATCH failed).
    Patched {
        answer: std::result::Result<Registration, ApiError>,
        registered: Option<Box<Registration>>,
    },
}

impl Observation {
    /// The start of a pass: the object, this process's memory of it, and the claims of the
    /// other watched objects.
    pub fn start<C>(ctx: &Context<C>, obj: PhoneNumber) -> Observation {
        let uid = obj.uid().unwrap_or_default();
        let memory = lock(&ctx.memory).get(&uid);
        // Numbers and ids are claimed within one account's workspace: the same number may be
        // registered in two workspaces, by two objects on two accounts.
        let others = ctx.claims.rivals(&obj);
        let known_id = obj.known_id();
        // An object that holds its registration keeps it; one that only names an id yields
        // the number to an older claim (an attempt in flight may have made that registration).
        let owner = (!claims::holds_id(&obj))
            .then(|| claims::owner_of_number(&obj, others.iter().map(|o| o.as_ref())))
            .flatten();
        let number_owner_names_another_id = owner.is_some_and(|o| {
            claims::claims_only_by_naming(o) && known_id.is_some() && o.known_id() != known_id
        });
        let number_owner = owner.map(ObjectName::of);
        let id_owner = known_id
            .as_deref()
            .and_then(|id| claims::owner_of_id(&obj, id, others.iter().map(|o| o.as_ref())))
            .map(ObjectName::of);
        let secrets_unchanged = secrets_unchanged(ctx, &obj, &memory);
        let account = account_facts(ctx, &obj);
        let secret_versions = watched_secret_versions(ctx, &obj);
        let secrets_listed = ctx.secrets_listed.load(Ordering::Relaxed);
        Observation {
            secrets: SecretFacts {
                unchanged: secrets_unchanged,
                versions: secret_versions,
                listed: secrets_listed,
            },
            claims: ClaimFacts {
                number_owner,
                number_owner_names_another_id,
                id_owner,
            },
            account,
            ..Observation::of(obj, memory, Instant::now(), jiff::Timestamp::now())
        }
    }

    /// An observation of `obj` with nothing read or done yet in the pass, no claim of another
    /// object, and Secrets as after a change (the start of a pass fills in the rest).
    pub fn of(
        obj: PhoneNumber,
        memory: ObjectMemory,
        now: Instant,
        wall: jiff::Timestamp,
    ) -> Observation {
        Observation {
            generation: obj.metadata.generation,
            deleting_at_start: obj.metadata.deletion_timestamp.is_some(),
            obj,
            now,
            wall,
            memory,
            secrets: SecretFacts {
                unchanged: false,
                versions: None,
                listed: true,
            },
            claims: ClaimFacts::default(),
            account: AccountFacts::default(),
            secrets_read: Vec::new(),
            api_key: None,
            credentials: None,
            fetched: None,
            lookup: None,
            definition: None,
            last: Outcome::None,
        }
    }

    /// The Secret versions this pass relied on: those read now, the recorded ones for the rest.
    pub fn versions_used(&self) -> SecretVersionMap {
        let recorded = self.obj.status.as_ref().map(|s| &s.secret_versions);
        plan::secret_versions_used(
            &self.obj,
            &recorded.cloned().unwrap_or_default(),
            &self.secrets_read,
        )
    }

    pub fn uid(&self) -> String {
        self.obj.uid().unwrap_or_default()
    }

    pub fn namespace(&self) -> String {
        self.obj.namespace().unwrap_or_default()
    }
}

/// Whether every Secret the object references is at the resourceVersion read at the last
/// check (as the metadata-only Secret watch reports it).
fn secrets_unchanged<C>(ctx: &Context<C>, obj: &PhoneNumber, memory: &ObjectMemory) -> bool {
    let Some(check) = &memory.check else {
        return false;
    };
    let ns = obj.namespace().unwrap_or_default();
    let versions = lock(&ctx.secret_versions);
    let mut current = Vec::new();
    for name in obj.referenced_secrets() {
        match versions.get(&(ns.clone(), name.to_owned())) {
            Some(rv) => current.push((name, rv.as_str())),
            None => return false,
        }
    }
    plan::secret_versions_digest(current) == check.secrets
}

/// The resourceVersion of every Secret the object references, as the Secret watch reports it;
/// `None` if one is not known to it.
/// The account facts of `obj` from the watches: whether its namespace may use the account now,
/// and the deletionPolicy it inherits.
fn account_facts<C>(ctx: &Context<C>, obj: &PhoneNumber) -> AccountFacts {
    let settings = &ctx.accounts.settings;
    let stores = &ctx.account_stores;
    let ns = obj.namespace().unwrap_or_default();
    let mut facts = AccountFacts {
        grant_refused: false,
        default_deletion_policy: settings.default_deletion_policy,
    };
    let account_default = match AccountId::of(obj, settings.default_account.as_deref()) {
        AccountId::Cluster { name } if settings.cluster_accounts => {
            let account = stores.cluster.get(&ObjectRef::new(&name));
            facts.grant_refused = account
                .as_ref()
                .is_some_and(|a| stores.grants(a, &ns).is_err());
            account.and_then(|a| a.spec.default_deletion_policy)
        }
        AccountId::Cluster { .. } => None,
        AccountId::Namespaced { namespace, name } => stores
            .namespaced
            .get(&ObjectRef::new(&name).within(&namespace))
            .and_then(|a| a.spec.default_deletion_policy),
        AccountId::Operator => {
            facts.grant_refused = obj.metadata.deletion_timestamp.is_none()
                && stores.operator_key_serves(&ns).is_err();
            None
        }
    };
    if let Some(policy) = account_default {
        facts.default_deletion_policy = policy;
    }
    facts
}

fn watched_secret_versions<C>(ctx: &Context<C>, obj: &PhoneNumber) -> Option<SecretVersionMap> {
    let ns = obj.namespace().unwrap_or_default();
    let versions = lock(&ctx.secret_versions);
    obj.referenced_secrets()
        .map(|name| {
            versions
                .get(&(ns.clone(), name.to_owned()))
                .map(|rv| (name.to_owned(), rv.clone()))
        })
        .collect()
}

/// The reads a pass can make.
pub struct Reader<'a, C> {
    pub ctx: &'a Context<C>,
}

impl<C: OneInboxApi> Reader<'_, C> {
    /// The PhoneNumber CRD, read now (`crate::definition`).
    pub async fn definition(&self) -> Result<Definition> {
        let name = definition::name_of::<PhoneNumber>();
        self.ctx
            .kube_call(definition::read(self.ctx.client.clone(), &name))
            .await?
            .map_err(Error::ReadDefinition)
    }

    /// The account the object uses, and its client when the account may be used now (the
    /// last known key's while its Secret is missing). Reads the key Secret only if its
    /// version changed since this process last read it.
    pub async fn api_key(&self, obs: &Observation) -> Result<(ApiKey, Option<C>)> {
        let accounts = &self.ctx.accounts;
        let id = AccountId::of(&obs.obj, accounts.settings.default_account.as_deref());
        let view = match self.account_view(obs, &id) {
            ControlFlow::Continue(view) => view,
            ControlFlow::Break(key) => return Ok((key, None)),
        };
        let versions = self.ctx.secret_versions.clone();
        let watched = |r: &SecretKeyRef| {
            lock(&versions)
                .get(&(r.namespace.clone(), r.name.clone()))
                .cloned()
        };
        let listed = self.ctx.secrets_listed.load(Ordering::Relaxed);
        let state = self
            .ctx
            .kube_call(accounts.state(&self.ctx.client, &view, watched, listed))
            .await?
            .map_err(|source| Error::ReadSecret {
                name: view.api_key.name.clone(),
                source,
            })?;
        if let Some(why) = state.invalid {
            return Ok((
                ApiKey::Unusable(AccountProblem::Invalid { account: id, why }),
                None,
            ));
        }
        Ok(match state.problem {
            Some(problem) => (
                ApiKey::Missing {
                    account: id,
                    problem,
                    last_known: state.client.is_some(),
                },
                state.client,
            ),
            None => match state.client {
                Some(c) => (ApiKey::Account(id), Some(c)),
                None => (ApiKey::Unusable(AccountProblem::NotFound(id)), None),
            },
        })
    }

    /// The account the object uses, as the watches know it; `Break` with the key when that
    /// decides without a read (the operator-wide key, or an account the object cannot use).
    fn account_view(&self, obs: &Observation, id: &AccountId) -> ControlFlow<ApiKey, AccountView> {
        let unusable = |p| ControlFlow::Break(ApiKey::Unusable(p));
        let stores = &self.ctx.account_stores;
        match id {
            // A deletion goes on with the key that registered the number.
            AccountId::Operator => {
                let deleting = obs.obj.metadata.deletion_timestamp.is_some();
                match (deleting, stores.operator_key_serves(&obs.namespace())) {
                    (false, Err(rule)) => unusable(AccountProblem::NotAllowed {
                        account: id.clone(),
                        rule,
                    }),
                    _ => ControlFlow::Break(ApiKey::OperatorWide),
                }
            }
            AccountId::Cluster { .. } if !self.ctx.accounts.settings.cluster_accounts => {
                unusable(AccountProblem::ClusterAccountsOff(id.clone()))
            }
            AccountId::Cluster { name } => {
                let Some(account) = stores.cluster.get(&ObjectRef::new(name)) else {
                    return unusable(AccountProblem::NotFound(id.clone()));
                };
                if let Err(rule) = stores.grants(&account, &obs.namespace()) {
                    return unusable(AccountProblem::NotAllowed {
                        account: id.clone(),
                        rule,
                    });
                }
                ControlFlow::Continue(AccountView::cluster(&account))
            }
            AccountId::Namespaced { namespace, name } => {
                match stores
                    .namespaced
                    .get(&ObjectRef::new(name).within(namespace))
                {
                    Some(account) => ControlFlow::Continue(AccountView::namespaced(&account)),
                    None => unusable(AccountProblem::NotFound(id.clone())),
                }
            }
        }
    }

    /// `providerConfig` with its password, or `credentialId`.
    pub async fn credentials(
        &self,
        obs: &mut Observation,
    ) -> Result<std::result::Result<Credentials, SecretProblem>> {
        if let Some(id) = &obs.obj.spec.credential_id {
            return Ok(Ok(Credentials::Stored {
                credential_id: id.clone(),
            }));
        }
        let Some(pc) = obs.obj.spec.provider_config.clone() else {
            return Err(Error::InvalidObject(
                "spec.providerConfig or spec.credentialId",
            ));
        };
        let sref = &pc.auth_password_secret_ref;
        Ok(self
            .secret_value(obs, &sref.name, sref.key_or(DEFAULT_PASSWORD_KEY))
            .await?
            .map(|password| Credentials::Sip {
                trunk_address: pc.trunk_address,
                auth_username: pc.auth_username,
                auth_password: password,
            }))
    }

    /// One non-empty UTF-8 value of a Secret in the object's namespace.
    async fn secret_value(
        &self,
        obs: &mut Observation,
        name: &str,
        key: &str,
    ) -> Result<std::result::Result<SecretString, SecretProblem>> {
        let namespace = obs.namespace();
        let secrets: Api<Secret> = Api::namespaced(self.ctx.client.clone(), &namespace);
        let secret = self
            .ctx
            .kube_call(secrets.get_opt(name))
            .await?
            .map_err(|source| Error::ReadSecret {
                name: name.to_owned(),
                source,
            })?;
        if let Some(rv) = secret
            .as_ref()
            .and_then(|s| s.meta().resource_version.clone())
        {
            // Track it from now on, unless the watch already knows a newer version. Without the
            // watch nothing would tell of a change: nothing is tracked.
            let mut versions = lock(&self.ctx.secret_versions);
            if self.ctx.settings.secret_access == SecretAccess::Get {
                versions.clear();
            }
            let key = (namespace.clone(), name.to_owned());
            let newer = |a: &str, b: &str| a.parse::<u64>().ok() > b.parse::<u64>().ok();
            if self.ctx.settings.secret_access == SecretAccess::Watch
                && versions.get(&key).is_none_or(|known| newer(&rv, known))
            {
                versions.insert(key, rv.clone());
            }
            drop(versions);
            obs.secrets_read.push((name.to_owned(), rv));
        }
        Ok(secret_value_of(secret.as_ref(), &namespace, name, key))
    }
}
