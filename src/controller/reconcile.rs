//! The reconciler: the only code that orders side effects (Kubernetes writes, events, OneInbox
//! calls). Decisions come from `plan` and `status`, which are pure.
//!
//! Crash safety of the create (design §2): the finalizer and a `status.pendingCreate` marker are
//! written with optimistic concurrency before the POST, and an object that carries the marker
//! without an id is looked up by number and adopted before anything is posted again.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::{debug, info, warn};

use super::plan::{self, Credentials, PatchableDigest};
use super::status::{self, Phase, RemoteFacts, StatusData, reason};
use super::{Checked, Context, lock};
use crate::crd::{
    ANNOTATION_PHONE_NUMBER_ID, ANNOTATION_RECONCILE_REQUESTED_AT, DEFAULT_API_KEY_KEY,
    DEFAULT_PASSWORD_KEY, DeletionPolicy, FIELD_MANAGER, FINALIZER, PendingCreate, PhoneNumber,
    PhoneNumberStatus, ReplacementPolicy,
};
use crate::error::{Error, Result};
use crate::oneinbox::{ApiError, Deregistered, OneInboxApi, Registration, SecretString};

/// How often an object that waits on another (a duplicate claim) looks again, as a fallback to
/// the direct trigger when the owner goes away.
const DUPLICATE_RECHECK: Duration = Duration::from_secs(300);

/// Reconcile one PhoneNumber.
pub async fn reconcile<C: OneInboxApi>(
    obj: Arc<PhoneNumber>,
    ctx: Arc<Context<C>>,
) -> Result<Action> {
    let ns = obj
        .namespace()
        .ok_or(Error::InvalidObject("metadata.namespace"))?;
    let api: Api<PhoneNumber> = Api::namespaced(ctx.client.clone(), &ns);
    // A pass for an object older than our own last write of it is the echo of an earlier
    // event; the watch event of that write is on its way and brings the object back.
    let uid = obj.uid().unwrap_or_default();
    if let (Some(ours), Some(seen)) = (
        lock(&ctx.written).get(&uid).copied(),
        resource_version(&obj),
    ) && seen < ours
    {
        debug!(
            seen,
            ours, "stale view of the object; waiting for the watch to catch up"
        );
        return Ok(Action::await_change());
    }
    let oneinbox = ctx.oneinbox.clone();
    let mut r = Reconciler {
        oneinbox,
        ctx: &ctx,
        api,
        obj: (*obj).clone(),
        ns,
        secrets_seen: Vec::new(),
    };
    if obj.metadata.deletion_timestamp.is_some() {
        r.cleanup().await
    } else {
        r.apply().await
    }
}

/// An object's resourceVersion as a number (etcd revisions grow); `None` if it is not one.
fn resource_version(obj: &PhoneNumber) -> Option<u64> {
    obj.resource_version().and_then(|rv| rv.parse().ok())
}

/// Why the credentials could not be resolved (never contains the value).
struct MissingSecret {
    why: String,
    name: String,
    key: String,
}

struct Reconciler<'a, C> {
    ctx: &'a Context<C>,
    /// The OneInbox client with the key this object uses (its tenant's, or the operator's).
    oneinbox: C,
    /// (name, resourceVersion) of each Secret read in this pass.
    secrets_seen: Vec<(String, String)>,
    api: Api<PhoneNumber>,
    /// The object as last written or read: carries the latest resourceVersion and status.
    obj: PhoneNumber,
    ns: String,
}

impl<C: OneInboxApi> Reconciler<'_, C> {
    fn uid(&self) -> String {
        self.obj.uid().unwrap_or_default()
    }

    fn now(&self) -> Time {
        Time(jiff::Timestamp::now())
    }

    // ---------------------------------------------------------------- apply

    async fn apply(&mut self) -> Result<Action> {
        if self.obj.is_paused() {
            self.write_phase(StatusData::current(&self.obj), Phase::Paused)
                .await?;
            return Ok(Action::await_change());
        }

        let known_id = self.obj.known_id();
        if known_id.is_none() {
            let state = self.ctx.store.state();
            if let Some(owner) = plan::owner_of_number(&self.obj, state.iter().map(|o| o.as_ref()))
            {
                let msg = format!(
                    "PhoneNumber {}/{} already manages {}; this object will not register it. Delete this object, or change its phoneNumber",
                    owner.namespace().unwrap_or_default(),
                    owner.name_any(),
                    self.obj.spec.phone_number
                );
                let phase = Phase::Stalled {
                    reason: reason::DUPLICATE_PHONE_NUMBER,
                    message: msg,
                };
                self.write_phase(StatusData::current(&self.obj), phase)
                    .await?;
                return Ok(Action::requeue(DUPLICATE_RECHECK));
            }
        }

        // Checked recently, and no referenced Secret changed since: nothing to read or call.
        if let Some(id) = &known_id
            && self.secrets_unchanged()
            && let Some(wait) = self.fresh_for(id, None)
        {
            debug!(remaining = ?wait, "registration checked recently; no API call");
            return Ok(Action::await_change());
        }

        match self.tenant_api_key().await? {
            TenantKey::OperatorWide => {}
            TenantKey::Found(key) => self.oneinbox = self.ctx.oneinbox.with_api_key(key),
            TenantKey::Missing(why) => return self.wait_for_secret(why).await,
        }

        let creds = self.resolve_credentials().await?;
        let current_hash = creds
            .as_ref()
            .ok()
            .map(|c| plan::credentials_hash(&self.uid(), c));

        let remote = match known_id {
            Some(id) => {
                if let Some(wait) = self.fresh_for(&id, current_hash.as_deref()) {
                    debug!(remaining = ?wait, "registration checked recently; no API call");
                    return Ok(Action::await_change());
                }
                // A spec change within the interval is diffed against the last check.
                if let Some(cached) = self.cached_remote(&id) {
                    Some(cached)
                } else {
                    match self.oneinbox.get(&id).await {
                        Ok(reg) if reg.phone_number != self.obj.spec.phone_number => {
                            let msg = format!(
                                "OneInbox registration {id} is for {}, not {}. Fix or remove the {ANNOTATION_PHONE_NUMBER_ID} annotation",
                                reg.phone_number, self.obj.spec.phone_number
                            );
                            self.stall(reason::ID_MISMATCH, msg).await?;
                            return Ok(Action::await_change());
                        }
                        Ok(reg) => {
                            let adopting = self
                                .obj
                                .status
                                .as_ref()
                                .and_then(|s| s.phone_number_id.as_deref())
                                != Some(reg.id.as_str());
                            if adopting {
                                self.event(
                                    EventType::Normal,
                                    "Adopted",
                                    format!(
                                        "Adopted the existing OneInbox registration {}",
                                        reg.id
                                    ),
                                )
                                .await;
                            }
                            Some(Remote::of(&reg))
                        }
                        // Gone while a replacement is due: most likely released by that
                        // replacement itself (its answer or the next write was lost, or the
                        // process was killed in between), so not reported lost.
                        Err(ApiError::NotFound)
                            if matches!(
                                self.replacement(&id, current_hash.as_deref()),
                                Replacement::Now
                            ) =>
                        {
                            None
                        }
                        Err(ApiError::NotFound) => {
                            self.event(
                            EventType::Warning,
                            "RegistrationLost",
                            format!("OneInbox registration {id} no longer exists (removed outside the cluster); registering the number again"),
                        )
                        .await;
                            None
                        }
                        Err(e) => return self.api_failure(Error::GetNumber(e)).await,
                    }
                }
            }
            None => None,
        };

        let (remote, hash) = match remote {
            Some(reg) => match self.replacement(&reg.id, current_hash.as_deref()) {
                Replacement::No => (reg, current_hash.clone()),
                Replacement::Report => {
                    let registered_hash = self
                        .obj
                        .status
                        .as_ref()
                        .and_then(|s| s.credentials_hash.clone());
                    (reg, registered_hash)
                }
                Replacement::Now => {
                    self.event(EventType::Normal, "Replacing", format!("SIP credentials changed; deregistering {} to register the number again", reg.id)).await;
                    match self.oneinbox.deregister(&reg.id).await {
                        Ok(_) => {}
                        Err(e) => return self.api_failure(Error::DeregisterNumber(e)).await,
                    }
                    let c = match creds {
                        Ok(c) => c,
                        Err(missing) => return self.wait_for_secret(missing).await,
                    };
                    match self.create(&c, false).await? {
                        Created::Registered(reg) => (Remote::of(&reg), current_hash.clone()),
                        Created::Done(action) => return Ok(action),
                    }
                }
            },
            None => {
                let creds = match creds {
                    Ok(c) => c,
                    Err(missing) => return self.wait_for_secret(missing).await,
                };
                let marker = self
                    .obj
                    .status
                    .as_ref()
                    .and_then(|s| s.pending_create.clone());
                let refused_cleanly = marker.as_ref().is_some_and(|m| {
                    lock(&self.ctx.clean_refusals)
                        .remove(&self.uid())
                        .as_deref()
                        == Some(m.token.as_str())
                });
                let found = if marker.is_some() && !refused_cleanly {
                    // An earlier attempt may have registered it: look before posting again.
                    match self
                        .oneinbox
                        .find_by_number(&self.obj.spec.phone_number)
                        .await
                    {
                        Ok(mut found) => found.pop(),
                        Err(e) => return self.api_failure(Error::LookupNumber(e)).await,
                    }
                } else {
                    None
                };
                match found {
                    Some(reg) => {
                        self.event(
                            EventType::Normal,
                            "Adopted",
                            format!(
                                "Found registration {} from an interrupted attempt and adopted it",
                                reg.id
                            ),
                        )
                        .await;
                        self.persist_registration(&reg, current_hash.clone())
                            .await?;
                        (Remote::of(&reg), current_hash.clone())
                    }
                    None => match self.create(&creds, marker.is_some()).await? {
                        Created::Registered(reg) => (Remote::of(&reg), current_hash.clone()),
                        Created::Done(action) => return Ok(action),
                    },
                }
            }
        };

        // Bring the PATCHable fields in line with the spec (one PATCH, changed fields only).
        // The generation of that spec: a status write below answers with the newest object,
        // which may carry a later spec this pass has not applied.
        let in_line_with = self.obj.metadata.generation;
        let patch = plan::patch_for(&self.obj, &remote.patchable);
        let remote = if patch.is_empty() {
            remote
        } else {
            // Drift only if this spec was already in line at the last check; after a restart
            // (no record) a difference is reported as an update.
            let spec_changed = self
                .last_check()
                .is_none_or(|c| c.generation != in_line_with);
            match self.oneinbox.patch(&remote.id, &patch).await {
                Ok(updated) => {
                    let fields = patch_fields(&patch);
                    if spec_changed {
                        let note = format!("Updated {fields} of registration {}", updated.id);
                        self.event(EventType::Normal, "Updated", note).await;
                    } else {
                        let note = format!(
                            "Corrected drift of {fields} in registration {} (changed outside the cluster)",
                            updated.id
                        );
                        self.event(EventType::Normal, "DriftCorrected", note).await;
                    }
                    Remote::of(&updated)
                }
                Err(ApiError::NotFound) => {
                    // Gone since we last looked: forget it; the next pass GETs, sees the 404
                    // and registers again.
                    self.forget_check();
                    return Ok(Action::requeue(Duration::from_millis(200)));
                }
                Err(e @ ApiError::Rejected { .. }) => {
                    let msg = format!("OneInbox rejected the update: {e}. Fix the spec");
                    self.stall(reason::UPDATE_REJECTED, msg).await?;
                    return Ok(Action::await_change());
                }
                Err(e) => {
                    // Without an answer (timeout, dropped connection, 5xx) the PATCH may still
                    // have been applied, and the digest no longer says what the API holds: the
                    // next pass GETs. A 429 changed nothing (§6 f).
                    if !e.is_throttled() {
                        self.forget_check();
                    }
                    return self.api_failure(Error::UpdateNumber(e)).await;
                }
            }
        };

        self.ensure_annotation(&remote.id).await?;

        let data = StatusData {
            remote: remote.facts.clone(),
            credentials_hash: hash,
            pending_create: None,
            last_handled_reconcile_at: self.requested_reconcile(),
        };
        let replacement_pending = matches!(
            self.replacement(&remote.id, current_hash.as_deref()),
            Replacement::Report
        );
        let phase = if remote.state() == "failed" {
            Phase::Stalled {
                reason: reason::REGISTRATION_FAILED,
                message: format!(
                    "OneInbox reports provisioning of {} failed. Delete and re-create the PhoneNumber, or contact OneInbox support",
                    remote.id
                ),
            }
        } else if !remote.is_active() {
            Phase::Progressing {
                reason: reason::PROVISIONING,
                message: format!(
                    "OneInbox reports state {:?}; waiting for \"active\"",
                    remote.state()
                ),
            }
        } else if replacement_pending {
            Phase::AvailableButStalled {
                reason: reason::REPLACEMENT_REQUIRED,
                message: "The SIP credentials changed, and OneInbox can only apply them by registering the number again. The number keeps working with the old credentials. Set spec.replacementPolicy: Replace to re-register, or restore the old credentials".into(),
            }
        } else {
            Phase::Available
        };
        let active = matches!(phase, Phase::Available | Phase::AvailableButStalled { .. });
        self.write_phase(data, phase).await?;

        if !active {
            return Ok(Action::requeue(self.ctx.settings.provisioning_poll));
        }
        self.remember_check(&remote, in_line_with);
        // The drift-check sweep brings it back when its interval is over.
        Ok(Action::await_change())
    }

    /// The API key this object must use: its `apiKeySecretRef`, or the operator-wide key.
    async fn tenant_api_key(&mut self) -> Result<TenantKey> {
        let Some(r) = self.obj.spec.api_key_secret_ref.clone() else {
            return Ok(TenantKey::OperatorWide);
        };
        match self
            .read_secret_key(&r.name, r.key_or(DEFAULT_API_KEY_KEY))
            .await?
        {
            Ok(key) => Ok(TenantKey::Found(key)),
            Err(missing) => Ok(TenantKey::Missing(missing)),
        }
    }

    /// One non-empty UTF-8 value of a Secret in the object's namespace.
    async fn read_secret_key(
        &mut self,
        name: &str,
        key: &str,
    ) -> Result<std::result::Result<SecretString, MissingSecret>> {
        let secrets: Api<Secret> = Api::namespaced(self.ctx.client.clone(), &self.ns);
        let secret = self
            .ctx
            .kube_call(secrets.get_opt(name))
            .await?
            .map_err(|source| Error::ReadSecret {
                name: name.to_owned(),
                source,
            })?;
        if let Some(rv) = secret.as_ref().and_then(|s| s.resource_version()) {
            self.secrets_seen.push((name.to_owned(), rv));
        }
        let why = match secret {
            None => format!("Secret {}/{name} does not exist", self.ns),
            Some(s) => match s.data.as_ref().and_then(|d| d.get(key)) {
                None => format!("Secret {}/{name} has no key {key:?}", self.ns),
                Some(bytes) => match String::from_utf8(bytes.0.clone()) {
                    Ok(v) if !v.trim().is_empty() => {
                        return Ok(Ok(SecretString::new(
                            v.trim_end_matches(['\n', '\r']).to_owned(),
                        )));
                    }
                    Ok(_) => format!("key {key:?} of Secret {}/{name} is empty", self.ns),
                    Err(_) => format!("key {key:?} of Secret {}/{name} is not UTF-8 text", self.ns),
                },
            },
        };
        Ok(Err(MissingSecret {
            why,
            name: name.to_owned(),
            key: key.to_owned(),
        }))
    }

    /// Resolve `providerConfig`'s Secret or `credentialId`.
    async fn resolve_credentials(
        &mut self,
    ) -> Result<std::result::Result<Credentials, MissingSecret>> {
        if let Some(id) = &self.obj.spec.credential_id {
            return Ok(Ok(Credentials::Stored {
                credential_id: id.clone(),
            }));
        }
        let Some(pc) = self.obj.spec.provider_config.clone() else {
            return Err(Error::InvalidObject(
                "spec.providerConfig or spec.credentialId",
            ));
        };
        let sref = &pc.auth_password_secret_ref;
        Ok(self
            .read_secret_key(&sref.name, sref.key_or(DEFAULT_PASSWORD_KEY))
            .await?
            .map(|password| Credentials::Sip {
                trunk_address: pc.trunk_address,
                auth_username: pc.auth_username,
                auth_password: password,
            }))
    }

    /// Report a missing Secret: Reconciling during the grace period, Stalled after it.
    async fn wait_for_secret(&mut self, missing: MissingSecret) -> Result<Action> {
        let MissingSecret { why, name, key } = missing;
        let grace = self.ctx.settings.secret_grace_period;
        let not_ready_since = self
            .obj
            .condition(status::READY)
            .filter(|c| c.status == "False")
            .map(|c| c.last_transition_time.0)
            .unwrap_or_else(jiff::Timestamp::now);
        let waited = jiff::Timestamp::now().duration_since(not_ready_since);
        let waited = Duration::try_from(waited).unwrap_or(Duration::ZERO);
        let fix = format!(
            "Create it, e.g. kubectl -n {} create secret generic {name} --from-literal={key}=<value>",
            self.ns
        );
        let data = StatusData {
            last_handled_reconcile_at: self.requested_reconcile(),
            ..StatusData::current(&self.obj)
        };
        if waited >= grace {
            let phase = Phase::Stalled {
                reason: reason::SECRET_NOT_FOUND,
                message: format!("{why}. {fix}"),
            };
            self.write_phase(data, phase).await?;
            // The Secret watch brings the object back when the Secret appears.
            Ok(Action::await_change())
        } else {
            let phase = Phase::Progressing {
                reason: reason::SECRET_NOT_FOUND,
                message: format!("{why}; waiting up to {}s for it. {fix}", grace.as_secs()),
            };
            self.write_phase(data, phase).await?;
            Ok(Action::requeue(grace - waited + Duration::from_millis(500)))
        }
    }

    /// Register the number: finalizer and marker first (optimistic concurrency), then POST,
    /// then persist the id at once.
    async fn create(&mut self, creds: &Credentials, marker_present: bool) -> Result<Created> {
        let hash = plan::credentials_hash(&self.uid(), creds);
        // A request OneInbox already rejected is not repeated until the spec or the credentials change.
        if let Some(stalled) = self.obj.condition(status::STALLED)
            && stalled.reason == reason::REGISTRATION_REJECTED
            && stalled.observed_generation == self.obj.metadata.generation
            && self
                .obj
                .status
                .as_ref()
                .and_then(|s| s.credentials_hash.as_deref())
                == Some(hash.as_str())
        {
            debug!(
                "registration was rejected for this spec and these credentials; waiting for a change"
            );
            return Ok(Created::Done(Action::await_change()));
        }

        if !marker_present {
            self.add_finalizer().await?;
            let marker = PendingCreate {
                token: uuid::Uuid::new_v4().to_string(),
                started_at: jiff::Timestamp::now().to_string(),
            };
            let data = StatusData {
                remote: RemoteFacts::default(),
                credentials_hash: Some(hash.clone()),
                pending_create: Some(marker),
                last_handled_reconcile_at: self.requested_reconcile(),
            };
            let phase = Phase::Progressing {
                reason: reason::CREATING,
                message: "Registering the number with OneInbox".into(),
            };
            let desired = status::desired_status(&self.obj, data, &phase, self.now());
            // With the resourceVersion: a stale view of the object (another pass, another
            // replica) fails here with a conflict instead of posting twice.
            self.patch_status(&desired, true).await?;
        }

        let req = plan::register_request(&self.obj, creds);
        match self.oneinbox.register(&req).await {
            Ok(reg) => {
                info!(id = %reg.id, "registered");
                self.event(
                    EventType::Normal,
                    "Registered",
                    format!(
                        "Registered {} with OneInbox as {}",
                        reg.phone_number, reg.id
                    ),
                )
                .await;
                self.persist_registration(&reg, Some(hash)).await?;
                Ok(Created::Registered(Box::new(reg)))
            }
            Err(ApiError::AlreadyRegistered { phone_id, .. }) if marker_present => {
                // A repeated POST after an ambiguous outcome: the registration is ours (§6 i).
                let reg = match self.oneinbox.get(&phone_id).await {
                    Ok(reg) => reg,
                    Err(e) => {
                        return self
                            .api_failure(Error::GetNumber(e))
                            .await
                            .map(Created::Done);
                    }
                };
                self.event(
                    EventType::Normal,
                    "Adopted",
                    format!("Adopted {phone_id}, registered by an interrupted attempt"),
                )
                .await;
                self.persist_registration(&reg, Some(hash)).await?;
                Ok(Created::Registered(Box::new(reg)))
            }
            Err(ApiError::AlreadyRegistered { phone_id, .. }) => {
                let msg = format!(
                    "{} is already registered in OneInbox as {phone_id}, outside this cluster. To manage that registration with this object, run: kubectl -n {} annotate phonenumber {} {ANNOTATION_PHONE_NUMBER_ID}={phone_id}",
                    self.obj.spec.phone_number,
                    self.ns,
                    self.obj.name_any()
                );
                let data = StatusData {
                    pending_create: None,
                    ..StatusData::current(&self.obj)
                };
                self.write_stalled(data, reason::ALREADY_REGISTERED, msg)
                    .await?;
                Ok(Created::Done(Action::await_change()))
            }
            Err(e @ (ApiError::Rejected { .. } | ApiError::NotFound)) => {
                let msg = format!(
                    "OneInbox rejected the registration: {e}. Fix the spec or the referenced Secret"
                );
                let data = StatusData {
                    pending_create: None,
                    credentials_hash: Some(hash),
                    ..StatusData::current(&self.obj)
                };
                self.write_stalled(data, reason::REGISTRATION_REJECTED, msg)
                    .await?;
                Ok(Created::Done(Action::await_change()))
            }
            // Ambiguous or transient: the marker stays, so the next pass looks up first; after
            // a clean 429 nothing can have been registered, so the next pass posts directly.
            Err(e) => {
                let token = self
                    .obj
                    .status
                    .as_ref()
                    .and_then(|s| s.pending_create.as_ref())
                    .map(|m| m.token.clone());
                if let (true, Some(token)) = (e.is_throttled(), token) {
                    lock(&self.ctx.clean_refusals).insert(self.uid(), token);
                }
                self.api_failure(Error::RegisterNumber(e))
                    .await
                    .map(Created::Done)
            }
        }
    }

    /// Write the new registration's id and SIP ids right after the API returned them.
    async fn persist_registration(
        &mut self,
        reg: &Registration,
        hash: Option<String>,
    ) -> Result<()> {
        let data = StatusData {
            remote: RemoteFacts::from_registration(reg),
            credentials_hash: hash,
            pending_create: None,
            last_handled_reconcile_at: self.requested_reconcile(),
        };
        let phase = if reg.is_active() {
            Phase::Available
        } else {
            Phase::Progressing {
                reason: reason::PROVISIONING,
                message: format!(
                    "OneInbox reports state {:?}; waiting for \"active\"",
                    reg.status
                ),
            }
        };
        self.write_phase(data, phase).await?;
        self.ensure_annotation(&reg.id).await
    }

    fn replacement(&self, id: &str, current_hash: Option<&str>) -> Replacement {
        let registered = self
            .obj
            .status
            .as_ref()
            .and_then(|s| s.credentials_hash.as_deref());
        let (Some(registered), Some(current)) = (registered, current_hash) else {
            return Replacement::No;
        };
        if registered == current
            || self
                .obj
                .status
                .as_ref()
                .and_then(|s| s.phone_number_id.as_deref())
                != Some(id)
        {
            return Replacement::No;
        }
        match self.obj.spec.replacement_policy {
            ReplacementPolicy::Manual => Replacement::Report,
            ReplacementPolicy::Replace => Replacement::Now,
        }
    }

    /// Time left before the next drift check, when a GET now would be redundant: the same
    /// generation and credentials were checked against the API recently and status says Ready.
    fn fresh_for(&self, id: &str, current_hash: Option<&str>) -> Option<Duration> {
        let status = self.obj.status.as_ref()?;
        let ready = self
            .obj
            .condition(status::READY)
            .is_some_and(|c| c.status == "True");
        let in_sync = status.phone_number_id.as_deref() == Some(id)
            && status.observed_generation == self.obj.metadata.generation
            && self.obj.annotation(ANNOTATION_PHONE_NUMBER_ID) == Some(id)
            && status.last_handled_reconcile_at.as_deref()
                == self.obj.annotation(ANNOTATION_RECONCILE_REQUESTED_AT)
            && (current_hash.is_none() || status.credentials_hash.as_deref() == current_hash)
            && self.obj.condition(status::STALLED).is_none();
        if !ready || !in_sync {
            return None;
        }
        let checked = self.last_check()?;
        if checked.generation != self.obj.metadata.generation || checked.id != id {
            return None;
        }
        let interval = checked.interval?;
        interval
            .checked_sub(checked.at.elapsed())
            .filter(|d| !d.is_zero())
    }

    /// This process's last check of the object against the API.
    fn last_check(&self) -> Option<Checked> {
        lock(&self.ctx.checked).get(&self.uid()).cloned()
    }

    /// The registration as the last check saw it, when that is good enough to diff a spec
    /// change against (no reconcile was requested since, same id, within the interval). Its
    /// facts are the ones the status was written with at that check.
    fn cached_remote(&self, id: &str) -> Option<Remote> {
        let status = self.obj.status.as_ref()?;
        if status.phone_number_id.as_deref() != Some(id)
            || status.last_handled_reconcile_at.as_deref()
                != self.obj.annotation(ANNOTATION_RECONCILE_REQUESTED_AT)
            || status.state.is_none()
        {
            return None;
        }
        let checked = self.last_check()?;
        let within = checked.interval.is_none_or(|i| checked.at.elapsed() < i);
        (checked.id == id && within).then(|| Remote {
            id: id.to_owned(),
            facts: RemoteFacts::from_status(status),
            patchable: checked.remote,
        })
    }

    /// Whether every Secret this object references is at the resourceVersion read at the last
    /// check (as the metadata-only Secret watch reports it).
    fn secrets_unchanged(&self) -> bool {
        let Some(check) = self.last_check() else {
            return false;
        };
        let versions = lock(&self.ctx.secret_versions);
        let mut current = Vec::new();
        for name in self.obj.referenced_secrets() {
            match versions.get(&(self.ns.clone(), name.to_owned())) {
                Some(rv) => current.push((name, rv.as_str())),
                None => return false,
            }
        }
        plan::secret_versions_digest(current) == check.secrets
    }

    fn forget_check(&self) {
        lock(&self.ctx.checked).remove(&self.uid());
    }

    /// Record a successful check: `remote` is in line with the spec of `generation`.
    fn remember_check(&self, remote: &Remote, generation: Option<i64>) {
        let interval = plan::poll_interval(
            &self.obj,
            self.ctx.settings.poll_interval,
            self.ctx.settings.min_poll_interval,
        )
        .map(|d| plan::jittered(d, rand::random_range(0.8..=1.2)));
        let check = Checked {
            generation,
            id: remote.id.clone(),
            at: std::time::Instant::now(),
            interval,
            remote: remote.patchable,
            secrets: plan::secret_versions_digest(
                self.secrets_seen
                    .iter()
                    .map(|(n, rv)| (n.as_str(), rv.as_str())),
            ),
            dispatched: false,
        };
        lock(&self.ctx.checked).insert(self.uid(), check);
    }

    fn requested_reconcile(&self) -> Option<String> {
        self.obj
            .annotation(ANNOTATION_RECONCILE_REQUESTED_AT)
            .map(str::to_owned)
            .or_else(|| {
                self.obj
                    .status
                    .as_ref()
                    .and_then(|s| s.last_handled_reconcile_at.clone())
            })
    }

    /// A retryable (or unexpected) OneInbox failure: say so in status, then back off.
    async fn api_failure(&mut self, err: Error) -> Result<Action> {
        // A 429 says nothing about the registration: a Ready object stays Ready (no write; a
        // fleet's throttled drift checks would otherwise flip Ready twice each), and the
        // controller retries after Retry-After.
        let throttled = err
            .api_error()
            .is_some_and(crate::oneinbox::ApiError::is_throttled);
        if throttled
            && self
                .obj
                .condition(status::READY)
                .is_some_and(|c| c.status == "True")
        {
            return Err(err);
        }
        let permanent = err.api_error().is_some_and(|e| !e.is_retryable());
        let message = err.to_string();
        let data = StatusData {
            last_handled_reconcile_at: self.requested_reconcile(),
            ..StatusData::current(&self.obj)
        };
        if permanent {
            self.write_stalled(
                data,
                reason::REGISTRATION_REJECTED,
                format!("{message}. Fix the spec"),
            )
            .await?;
            return Ok(Action::await_change());
        }
        let phase = Phase::Progressing {
            reason: reason::API_UNAVAILABLE,
            message,
        };
        self.write_phase(data, phase).await?;
        Err(err)
    }

    async fn stall(&mut self, why: &'static str, message: String) -> Result<()> {
        let data = StatusData {
            last_handled_reconcile_at: self.requested_reconcile(),
            ..StatusData::current(&self.obj)
        };
        self.write_stalled(data, why, message).await
    }

    async fn write_stalled(
        &mut self,
        data: StatusData,
        why: &'static str,
        message: String,
    ) -> Result<()> {
        self.write_phase(
            data,
            Phase::Stalled {
                reason: why,
                message,
            },
        )
        .await
    }

    // ---------------------------------------------------------------- cleanup

    async fn cleanup(&mut self) -> Result<Action> {
        if !self.obj.has_finalizer() {
            return Ok(Action::await_change());
        }
        if self.obj.spec.deletion_policy == DeletionPolicy::Orphan {
            self.remove_finalizer().await?;
            let what = self
                .obj
                .known_id()
                .map(|id| format!("registration {id}"))
                .unwrap_or_else(|| "the number".into());
            self.event(
                EventType::Normal,
                "Orphaned",
                format!("deletionPolicy is Orphan: left {what} registered in OneInbox"),
            )
            .await;
            self.finish();
            return Ok(Action::await_change());
        }
        if self.obj.is_paused() {
            self.write_phase(StatusData::current(&self.obj), Phase::Paused)
                .await?;
            return Ok(Action::await_change());
        }

        // The tenant's key if it is still there; else the operator-wide key, whose 404 then
        // proves nothing (another workspace's number is a 404 too).
        let tenant_missing = match self.tenant_api_key().await? {
            TenantKey::OperatorWide => None,
            TenantKey::Found(key) => {
                self.oneinbox = self.ctx.oneinbox.with_api_key(key);
                None
            }
            TenantKey::Missing(m) => Some(m.why),
        };
        let unverifiable = |what: &str| {
            tenant_missing.as_ref().map(|why| {
                format!("{why}, and with the operator-wide API key OneInbox reports {what}, which cannot prove the registration is gone from the tenant's workspace. Restore the Secret")
            })
        };

        let pending = self
            .obj
            .status
            .as_ref()
            .is_some_and(|s| s.pending_create.is_some());
        let id = match self.obj.known_id() {
            Some(id) => Some(id),
            // The POST may have landed before the id was written.
            None if pending => match self
                .oneinbox
                .find_by_number(&self.obj.spec.phone_number)
                .await
            {
                Ok(mut found) => match (found.pop(), unverifiable("no registration of the number"))
                {
                    (None, Some(msg)) => return self.deletion_blocked_because(msg).await,
                    (found, _) => found.map(|r| r.id),
                },
                Err(e) => return self.deletion_blocked(Error::LookupNumber(e)).await,
            },
            None => None,
        };
        let Some(id) = id else {
            // Nothing remote was ever made by this object.
            self.remove_finalizer().await?;
            self.finish();
            return Ok(Action::await_change());
        };
        match self.oneinbox.deregister(&id).await {
            Ok(Deregistered::AlreadyGone)
                if tenant_missing.is_some() && !self.released_here(&id) =>
            {
                let msg = unverifiable(&format!("{id} not found")).unwrap_or_default();
                self.deletion_blocked_because(msg).await
            }
            Ok(outcome) => {
                // If removing the finalizer fails now, the retry's 404 is known to be ours.
                lock(&self.ctx.released).insert(self.uid(), id.clone());
                let note = match outcome {
                    Deregistered::Released => format!("Deregistered {id} from OneInbox"),
                    Deregistered::AlreadyGone => {
                        format!("Registration {id} was already gone from OneInbox")
                    }
                };
                self.remove_finalizer().await?;
                self.event(EventType::Normal, "Deregistered", note).await;
                self.finish();
                Ok(Action::await_change())
            }
            Err(e) if tenant_missing.is_some() => {
                let why = tenant_missing.unwrap_or_default();
                self.deletion_blocked_because(format!("{why}, and the operator-wide API key could not deregister {id}: {e}. Restore the Secret")).await
            }
            Err(e) => self.deletion_blocked(Error::DeregisterNumber(e)).await,
        }
    }

    async fn deletion_blocked(&mut self, err: Error) -> Result<Action> {
        self.report_deletion_blocked(err.to_string()).await?;
        Err(err)
    }

    async fn deletion_blocked_because(&mut self, cause: String) -> Result<Action> {
        self.report_deletion_blocked(cause.clone()).await?;
        Err(Error::DeletionBlocked(cause))
    }

    /// Say DeletionBlocked, with the escape hatch; the caller's error brings the backoff.
    async fn report_deletion_blocked(&mut self, cause: String) -> Result<()> {
        let message = format!(
            "{cause}. The finalizer {FINALIZER} stays until OneInbox confirms; to keep the registration and finish deleting now, set spec.deletionPolicy: Orphan"
        );
        let before = self
            .obj
            .condition(status::STALLED)
            .map(|c| c.reason.clone());
        self.write_phase(
            StatusData::current(&self.obj),
            Phase::DeletionBlocked {
                message: message.clone(),
            },
        )
        .await?;
        if before.as_deref() != Some(reason::DELETION_BLOCKED) {
            self.event(EventType::Warning, "DeletionBlocked", message)
                .await;
        }
        Ok(())
    }

    /// Remember the resourceVersion of the write just made (see `reconcile`).
    fn note_written(&self) {
        if let Some(rv) = resource_version(&self.obj) {
            lock(&self.ctx.written).insert(self.uid(), rv);
        }
    }

    /// Whether this process already released registration `id` of this object.
    fn released_here(&self, id: &str) -> bool {
        lock(&self.ctx.released)
            .get(&self.uid())
            .is_some_and(|r| r == id)
    }

    /// Forget in-memory state and wake objects that waited for this number.
    fn finish(&self) {
        let uid = self.uid();
        lock(&self.ctx.released).remove(&uid);
        lock(&self.ctx.written).remove(&uid);
        lock(&self.ctx.clean_refusals).remove(&uid);
        lock(&self.ctx.checked).remove(&uid);
        self.ctx.backoff.reset(&uid);
        for other in self.ctx.store.state() {
            if other.spec.phone_number == self.obj.spec.phone_number
                && other.uid().as_deref() != Some(uid.as_str())
            {
                let _ = self
                    .ctx
                    .siblings
                    .send(kube::runtime::reflector::ObjectRef::from_obj(
                        other.as_ref(),
                    ));
            }
        }
    }

    // ---------------------------------------------------------------- kube writes

    /// Compute the desired status for `phase` and write it if anything changed. Publishes a
    /// Warning when the object becomes Stalled for a new reason.
    async fn write_phase(&mut self, data: StatusData, phase: Phase) -> Result<()> {
        let desired = status::desired_status(&self.obj, data, &phase, self.now());
        if !status::needs_write(self.obj.status.as_ref(), &desired) {
            return Ok(());
        }
        let before = self
            .obj
            .condition(status::STALLED)
            .map(|c| c.reason.clone());
        self.patch_status(&desired, false).await?;
        if let Phase::Stalled { reason, message } | Phase::AvailableButStalled { reason, message } =
            &phase
            && before.as_deref() != Some(*reason)
        {
            self.event(EventType::Warning, reason, message.clone())
                .await;
        }
        Ok(())
    }

    /// Server-side apply of the full status, forced, as `oneinbox-operator`; with
    /// `precondition`, only if the object is still at the resourceVersion we read.
    async fn patch_status(
        &mut self,
        desired: &PhoneNumberStatus,
        precondition: bool,
    ) -> Result<()> {
        let mut body = json!({
            "apiVersion": "oneinbox.ai/v1alpha1",
            "kind": "PhoneNumber",
            "status": desired,
        });
        if precondition {
            body["metadata"] = json!({ "resourceVersion": self.obj.resource_version() });
        }
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let name = self.obj.name_any();
        let res = self
            .ctx
            .kube_call(self.api.patch_status(&name, &params, &Patch::Apply(&body)))
            .await?;
        self.ctx.metrics.status_patched(res.is_ok());
        self.obj = res.map_err(Error::PatchStatus)?;
        self.note_written();
        Ok(())
    }

    async fn add_finalizer(&mut self) -> Result<()> {
        if self.obj.has_finalizer() {
            return Ok(());
        }
        let mut finalizers = self.obj.finalizers().to_vec();
        finalizers.push(FINALIZER.to_string());
        self.patch_metadata(json!({ "finalizers": finalizers }))
            .await
    }

    /// Remove our finalizer with a JSON patch that tests it is still at its index: no
    /// resourceVersion precondition, so unrelated changes to the object cannot make it fail.
    async fn remove_finalizer(&mut self) -> Result<()> {
        let Some(index) = self.obj.finalizers().iter().position(|f| f == FINALIZER) else {
            return Ok(());
        };
        let path = format!("/metadata/finalizers/{index}");
        let patch: json_patch::Patch = serde_json::from_value(json!([
            { "op": "test", "path": path, "value": FINALIZER },
            { "op": "remove", "path": path },
        ]))
        .map_err(|_| Error::InvalidObject("finalizer patch"))?;
        let name = self.obj.name_any();
        let res = self
            .ctx
            .kube_call(
                self.api
                    .patch(&name, &PatchParams::default(), &Patch::Json::<()>(patch)),
            )
            .await?;
        match res {
            Ok(updated) => {
                self.obj = updated;
                self.note_written();
                Ok(())
            }
            // Already gone: nothing left to release.
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(Error::PatchMetadata(e)),
        }
    }

    async fn ensure_annotation(&mut self, id: &str) -> Result<()> {
        if self.obj.annotation(ANNOTATION_PHONE_NUMBER_ID) == Some(id) {
            return Ok(());
        }
        self.patch_metadata(json!({ "annotations": { ANNOTATION_PHONE_NUMBER_ID: id } }))
            .await
    }

    /// Merge patch of metadata, guarded by the resourceVersion we read.
    async fn patch_metadata(&mut self, mut metadata: serde_json::Value) -> Result<()> {
        metadata["resourceVersion"] = json!(self.obj.resource_version());
        let name = self.obj.name_any();
        let body = json!({ "metadata": metadata });
        let res = self
            .ctx
            .kube_call(
                self.api
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&body)),
            )
            .await?;
        let updated = res.map_err(Error::PatchMetadata)?;
        // Keep our status view: the main resource returns the stored status too.
        self.obj = updated;
        self.note_written();
        Ok(())
    }

    async fn event(&self, type_: EventType, reason: &str, note: String) {
        let mut note = note;
        if note.len() > 1000 {
            let mut end = 1000;
            while !note.is_char_boundary(end) {
                end -= 1;
            }
            note.truncate(end);
        }
        let ev = Event {
            type_,
            reason: reason.to_string(),
            note: Some(note),
            action: "Reconcile".into(),
            secondary: None,
        };
        // Events are published on transitions only, so the recorder's 6-minute series cache
        // (one Event kept per publish) buys nothing and at 10,000 objects costs tens of MiB:
        // each publish gets a fresh recorder.
        let recorder = Recorder::new(self.ctx.client.clone(), self.ctx.reporter.clone());
        if let Err(e) = recorder.publish(&ev, &self.obj.object_ref(&())).await {
            warn!(error = %e, reason, "publishing an event failed");
        }
    }
}

/// What a pass knows of the registration: the facts the status shows, and the digest of the
/// fields a PATCH can change.
struct Remote {
    id: String,
    facts: RemoteFacts,
    patchable: PatchableDigest,
}

impl Remote {
    fn of(reg: &Registration) -> Remote {
        Remote {
            id: reg.id.clone(),
            facts: RemoteFacts::from_registration(reg),
            patchable: PatchableDigest::of_registration(reg),
        }
    }

    fn state(&self) -> &str {
        self.facts.state.as_deref().unwrap_or_default()
    }

    fn is_active(&self) -> bool {
        crate::oneinbox::is_active_state(self.state())
    }
}

enum Created {
    Registered(Box<Registration>),
    Done(Action),
}

enum TenantKey {
    OperatorWide,
    Found(SecretString),
    Missing(MissingSecret),
}

/// "agent_id and inbound_routing", for events.
fn patch_fields(p: &crate::oneinbox::PatchRequest) -> String {
    let mut names = Vec::new();
    if p.friendly_name.is_some() {
        names.push("friendly_name");
    }
    if p.agent_id.is_some() {
        names.push("agent_id");
    }
    if p.inbound_routing.is_some() {
        names.push("inbound_routing");
    }
    names.join(", ")
}

enum Replacement {
    No,
    Report,
    Now,
}
