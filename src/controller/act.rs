//! Act: the one driver that carries out what `decide` chose. It alone writes: the finalizer,
//! the pending-create marker, status, the id annotation, events, OneInbox calls and this
//! process's per-object memory. Each effect is one `await`; the order of effects within a
//! step is fixed here and nowhere else.
//!
//! Crash safety of the create: the finalizer and the registration-attempt annotation go in one
//! metadata write with optimistic concurrency before the POST, and an object whose status does
//! not record that attempt's outcome is looked up by number and adopted before anything is
//! posted again. The status write after the POST records the ids and settles the attempt, so a
//! create costs three writes: that metadata write, that status write, and the event.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use std::sync::atomic::{AtomicBool, Ordering};

use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

use super::memory::{Checked, decision_inputs};
use super::observe::{ApiKey, Observation, Outcome, Reader};
use super::plan;
use super::status::{self, Phase, StatusData};
use super::step::{DEFINITION_DELETING, DoneAfter, Failure, Memo, Read, Step, Then};
use super::{Context, redact};
use super::{credentials, polling};
use crate::crd::{
    ANNOTATION_PHONE_NUMBER_ID, ANNOTATION_REGISTRATION_ATTEMPT, FIELD_MANAGER, FINALIZER,
    PhoneNumber, PhoneNumberStatus, RegistrationAttempt, WirePhoneNumber,
};
use crate::error::{Error, Result};
use crate::mutex::lock;
use crate::oneinbox::OneInboxApi;

/// What the pass does after a step.
pub enum Next {
    /// Decide again.
    Decide,
    /// Carry out this step now.
    Step(Box<Step>),
    /// The pass is over.
    End(Action),
}

/// The object's finalizers with ours added (for a merge patch guarded by the resourceVersion),
/// or `None` if it is there already.
fn finalizers_with_ours(obj: &PhoneNumber) -> Option<serde_json::Value> {
    if obj.has_finalizer() {
        return None;
    }
    let mut finalizers = obj.finalizers().to_vec();
    finalizers.push(FINALIZER.to_string());
    Some(json!(finalizers))
}

/// The CRD's deletion is logged once per process (each object gets its event).
static UNINSTALL_LOGGED: AtomicBool = AtomicBool::new(false);

pub struct Driver<'a, C> {
    pub ctx: &'a Context<C>,
    /// Writes' answers are decoded without their managed fields.
    api: Api<WirePhoneNumber>,
    /// The OneInbox client with the key this object uses (its tenant's, or the operator's).
    oneinbox: C,
}

impl<'a, C: OneInboxApi> Driver<'a, C> {
    pub fn new(ctx: &'a Context<C>, namespace: &str) -> Self {
        Driver {
            ctx,
            api: Api::namespaced(ctx.client.clone(), namespace),
            oneinbox: ctx.oneinbox.clone(),
        }
    }

    /// Carry out one step.
    pub async fn act(&mut self, obs: &mut Observation, step: Step) -> Result<Next> {
        match step {
            Step::Read(read) => self.read(obs, read).await?,
            Step::Report { data, phase, then } => {
                self.write_phase(obs, data, phase).await?;
                return self.then(obs, then).await;
            }
            Step::Done(DoneAfter::Failure(f)) => return Err(self.error(obs, &f)),
            Step::Done(DoneAfter::AwaitChange) => return Ok(Next::End(Action::await_change())),
            Step::Done(DoneAfter::Requeue(d)) => return Ok(Next::End(Action::requeue(d))),
            Step::Remember { memo, then } => {
                self.note(obs, memo);
                return Ok(Next::Step(then));
            }
            Step::Adopt { id, takeover } => self.adopt(obs, &id, takeover).await?,
            Step::ReportLost { id, unmirror } => self.report_lost(obs, id, unmirror).await?,
            Step::Replace { id } => self.replace(obs, &id).await,
            Step::Register {
                credentials,
                hash,
                marker_present,
                drop_old_ids,
            } => {
                self.register(obs, &credentials, hash, marker_present, drop_old_ids)
                    .await?
            }
            Step::Persist {
                registration,
                data,
                phase,
                event,
            } => self.persist(obs, registration, *data, phase, event).await?,
            Step::Patch { id, patch, event } => self.patch(obs, &id, &patch, event).await,
            Step::Annotate { id } => self.ensure_annotation(obs, &id).await?,
            Step::Disown => self.disown(obs).await?,
            Step::Orphan {
                what,
                because,
                unless_changed,
            } => return self.orphan(obs, &what, because, unless_changed).await,
            Step::Deregister { id } => {
                obs.last = Outcome::Deregistered(self.oneinbox.deregister(&id).await);
            }
            Step::Release { released, event } => return self.release(obs, released, event).await,
            Step::Blocked { cause, failure } => {
                return Err(self.blocked(obs, cause, failure).await);
            }
        }
        Ok(Next::Decide)
    }

    /// Record `memo` in this process's memory of the object.
    fn note(&self, obs: &mut Observation, memo: Memo) {
        match memo {
            Memo::CleanRefusal { token } => self.remember(obs, |m| m.clean_refusal = Some(token)),
            Memo::ForgetCheck => self.remember(obs, |m| m.check = None),
            // The drift-check sweep brings it back at its point of the interval.
            Memo::Resumed {
                id,
                generation,
                first_check_in,
                remote,
            } => {
                let check = Checked {
                    generation,
                    id,
                    at: std::time::Instant::now(),
                    interval: first_check_in,
                    remote,
                    secrets: versions_digest(obs),
                    dispatched: false,
                };
                self.remember(obs, |m| m.check = Some(check));
            }
        }
    }

    /// Adopt registration `id`: the finalizer, then an `Adopted` event.
    async fn adopt(&mut self, obs: &mut Observation, id: &str, takeover: bool) -> Result<()> {
        self.add_finalizer(obs).await?;
        let note = if takeover {
            format!(
                "managementPolicy is Full: took over the OneInbox registration {id} (finalizer added; the operator now keeps it in line with the spec)"
            )
        } else {
            format!("Adopted the existing OneInbox registration {id}")
        };
        self.event(obs, EventType::Normal, "Adopted", note).await;
        obs.last = Outcome::Adopted;
        Ok(())
    }

    /// The registration `id` is gone: drop its mirror if asked, warn, and remember it lost.
    async fn report_lost(
        &mut self,
        obs: &mut Observation,
        id: String,
        unmirror: bool,
    ) -> Result<()> {
        if unmirror {
            self.patch_metadata(
                obs,
                json!({"annotations": {ANNOTATION_PHONE_NUMBER_ID: null}}),
            )
            .await?;
        }
        let note = format!(
            "OneInbox registration {id} no longer exists (removed outside the cluster); registering the number again"
        );
        self.event(obs, EventType::Warning, "RegistrationLost", note)
            .await;
        self.remember(obs, |m| m.lost = Some(id));
        Ok(())
    }

    /// Release registration `id` to register the number again with new credentials.
    async fn replace(&mut self, obs: &mut Observation, id: &str) {
        let note =
            format!("SIP credentials changed; deregistering {id} to register the number again");
        self.event(obs, EventType::Normal, "Replacing", note).await;
        obs.last = Outcome::Deregistered(self.oneinbox.deregister(id).await);
    }

    /// Record the attempt (or put the finalizer back), then POST.
    async fn register(
        &mut self,
        obs: &mut Observation,
        credentials: &credentials::Credentials,
        hash: String,
        marker_present: bool,
        drop_old_ids: Option<Box<(StatusData, Phase)>>,
    ) -> Result<()> {
        if !marker_present {
            self.record_attempt(obs, hash, drop_old_ids).await?;
        } else if !obs.obj.has_finalizer() {
            // A marker left from before a switch to Observe, which removed the finalizer: it
            // goes back on before the POST, as with a new marker.
            self.add_finalizer(obs).await?;
        }
        let req = plan::register_request(&obs.obj, credentials);
        let res = self.oneinbox.register(&req).await;
        if let Ok(reg) = &res {
            info!(id = %reg.id, "registered");
        }
        obs.last = Outcome::Posted(res);
        Ok(())
    }

    /// Write a new registration's ids, then its event. The event follows the write: a process
    /// killed in between leaves the ids written and no event, never a Registered event for ids
    /// that a restart then adopts (and reports again as Adopted).
    async fn persist(
        &mut self,
        obs: &mut Observation,
        registration: crate::oneinbox::Registration,
        data: StatusData,
        phase: Phase,
        (reason, note): (&'static str, String),
    ) -> Result<()> {
        self.write_phase(obs, data, phase).await?;
        self.event(obs, EventType::Normal, reason, note).await;
        obs.last = Outcome::Persisted(registration);
        Ok(())
    }

    /// PATCH the changed fields; the event only once OneInbox took it.
    async fn patch(
        &mut self,
        obs: &mut Observation,
        id: &str,
        patch: &crate::oneinbox::PatchRequest,
        (reason, note): (&'static str, String),
    ) {
        let res = self.oneinbox.patch(id, patch).await;
        if res.is_ok() {
            self.event(obs, EventType::Normal, reason, note).await;
        }
        let registered = match std::mem::take(&mut obs.last) {
            Outcome::Persisted(reg) => Some(Box::new(reg)),
            Outcome::Patched { registered, .. } => registered,
            _ => None,
        };
        obs.last = Outcome::Patched {
            answer: res,
            registered,
        };
    }

    /// Switched to Observe: the finalizer goes, with an `ObserveOnly` event.
    async fn disown(&mut self, obs: &mut Observation) -> Result<()> {
        self.remove_finalizer(obs, None).await?;
        let what = obs
            .obj
            .known_id()
            .map(|id| format!("registration {id}"))
            .unwrap_or_else(|| "the number".into());
        let note = format!(
            "managementPolicy is Observe: removed the finalizer {FINALIZER}; the operator makes no OneInbox writes, and deleting this object leaves {what} registered"
        );
        self.event(obs, EventType::Normal, "ObserveOnly", note)
            .await;
        Ok(())
    }

    /// Leave the registration and let the object go.
    async fn orphan(
        &mut self,
        obs: &mut Observation,
        what: &str,
        because: &'static str,
        unless_changed: Option<(&'static str, &'static str)>,
    ) -> Result<Next> {
        self.remove_finalizer(obs, unless_changed).await?;
        if because == DEFINITION_DELETING && !UNINSTALL_LOGGED.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "the PhoneNumber CRD is being deleted: every PhoneNumber being deleted with it is orphaned (its registration left in OneInbox, whatever its deletionPolicy)"
            );
        }
        let note = format!("{because}: left {what} registered in OneInbox");
        self.event(obs, EventType::Normal, "Orphaned", note).await;
        self.finish(obs);
        Ok(Next::End(Action::await_change()))
    }

    /// Remove the finalizer after a deregistration (or with nothing to deregister).
    async fn release(
        &mut self,
        obs: &mut Observation,
        released: Option<String>,
        event: Option<(&'static str, String)>,
    ) -> Result<Next> {
        if let Some(id) = released {
            // If removing the finalizer fails now, the retry only removes it (no second
            // DELETE).
            self.remember(obs, |m| m.released = Some(id));
        }
        self.remove_finalizer(obs, None).await?;
        if let Some((reason, note)) = event {
            self.event(obs, EventType::Normal, reason, note).await;
        }
        self.finish(obs);
        Ok(Next::End(Action::await_change()))
    }

    /// Say the deletion is blocked; the error the pass ends with.
    async fn blocked(
        &mut self,
        obs: &mut Observation,
        cause: String,
        failure: Option<Failure>,
    ) -> Error {
        if let Err(e) = self.report_deletion_blocked(obs, cause.clone()).await {
            return e;
        }
        match failure {
            Some(f) => self.error(obs, &f),
            None => Error::DeletionBlocked(redact::text(
                &cause,
                &secrets_of(obs),
                redact::MAX_CONDITION_MESSAGE,
            )),
        }
    }

    async fn read(&mut self, obs: &mut Observation, read: Read) -> Result<()> {
        let reader = Reader { ctx: self.ctx };
        match read {
            Read::ApiKey => {
                let (key, client) = reader.api_key(obs).await?;
                match (&key, client) {
                    (ApiKey::Account(_), Some(c)) => self.oneinbox = c,
                    // Deleting after the account's key Secret went: the key this process
                    // last read.
                    (ApiKey::Missing { .. }, Some(c))
                        if obs.obj.metadata.deletion_timestamp.is_some() =>
                    {
                        self.oneinbox = c
                    }
                    _ => {}
                }
                // A drift check that asks for nothing else goes behind user work for the
                // account's budget.
                if polling::is_background_check(
                    &obs.obj,
                    obs.memory.check.as_ref().is_some_and(|c| c.dispatched),
                ) {
                    self.oneinbox = self.oneinbox.in_background();
                }
                obs.api_key = Some(key);
            }
            Read::Credentials => obs.credentials = Some(reader.credentials(obs).await?),
            Read::Definition => obs.definition = Some(reader.definition().await?),
            Read::Registration(id) => obs.fetched = Some(self.oneinbox.get(&id).await),
            Read::LookupByNumber => {
                let found = self
                    .oneinbox
                    .find_by_number(&obs.obj.spec.phone_number)
                    .await;
                obs.lookup = Some(found.map(|mut all| all.pop()));
            }
        }
        Ok(())
    }

    async fn then(&mut self, obs: &mut Observation, then: Then) -> Result<Next> {
        Ok(match then {
            Then::AwaitChange => Next::End(Action::await_change()),
            Then::Requeue(d) => Next::End(Action::requeue(d)),
            Then::Continue => {
                obs.last = Outcome::Continued;
                Next::Decide
            }
            Then::Fail(f) => return Err(self.error(obs, &f)),
            Then::Checked {
                id,
                patchable,
                generation,
                warn_poll_interval,
            } => {
                if let Some(value) = warn_poll_interval {
                    let note = format!(
                        "Annotation oneinbox.ai/poll-interval={value:?} is not a duration (e.g. 90s, 5m, 1h30m, or 0 for no checks); using the default interval {:?}",
                        self.ctx.settings.poll_interval
                    );
                    self.event(obs, EventType::Warning, "InvalidPollInterval", note)
                        .await;
                    self.remember(obs, |m| m.invalid_poll_interval = Some(value));
                }
                let interval = polling::poll_interval(
                    &obs.obj,
                    self.ctx.settings.poll_interval,
                    self.ctx.settings.min_poll_interval,
                )
                .map(|d| polling::jittered(d, rand::random_range(0.8..=1.2)));
                let check = Checked {
                    generation,
                    id,
                    at: std::time::Instant::now(),
                    interval,
                    remote: patchable,
                    secrets: versions_digest(obs),
                    dispatched: false,
                };
                self.remember(obs, |m| {
                    m.check = Some(check);
                    m.settle_echo();
                });
                // The drift-check sweep brings it back when its interval is over.
                Next::End(Action::await_change())
            }
        })
    }

    /// The error a pass ends with, scrubbed of the secrets in hand (it is logged).
    fn error(&self, obs: &Observation, f: &Failure) -> Error {
        Failure {
            op: f.op,
            error: redact::api_error(f.error.clone(), &secrets_of(obs)),
        }
        .to_error()
    }

    fn remember(&self, obs: &mut Observation, f: impl FnOnce(&mut super::memory::ObjectMemory)) {
        let uid = obs.uid();
        let mut memory = lock(&self.ctx.memory);
        memory.update(&uid, f);
        obs.memory = memory.get(&uid);
    }

    /// Forget this object and wake the objects that waited for its number or its id.
    fn finish(&self, obs: &Observation) {
        let uid = obs.uid();
        // The memory stays until the object leaves the watch (the sweep's housekeeping): the
        // events of this pass's earlier writes may still come, and a pass on such an older
        // version must be known as stale, not DELETE the registration again.
        self.ctx.backoff.reset(&uid);
        let id = obs.obj.known_id();
        for other in self.ctx.store.state() {
            let waits = other.phone_number() == obs.obj.spec.phone_number
                || (id.is_some() && other.known_id() == id.as_deref());
            if waits && other.uid() != Some(uid.as_str()) {
                let _ = self.ctx.siblings.send(ObjectRef::from_obj(other.as_ref()));
            }
        }
    }

    /// Say DeletionBlocked, with the escape hatch.
    async fn report_deletion_blocked(
        &mut self,
        obs: &mut Observation,
        cause: String,
    ) -> Result<()> {
        let message = format!(
            "{cause}. The finalizer {FINALIZER} stays until OneInbox confirms; to keep the registration and finish deleting now, set spec.deletionPolicy: Orphan"
        );
        let before = obs.obj.condition(status::STALLED).map(|c| c.reason.clone());
        let phase = Phase::DeletionBlocked {
            message: message.clone(),
        };
        self.write_phase(obs, StatusData::current(&obs.obj), phase)
            .await?;
        if before.as_deref() != Some(status::reason::DELETION_BLOCKED) {
            self.event(obs, EventType::Warning, "DeletionBlocked", message)
                .await;
        }
        Ok(())
    }

    // ---------------------------------------------------------------- kube writes

    /// Write the desired status for `phase` if anything changed. Publishes a Warning when the
    /// object becomes Stalled for a new reason.
    async fn write_phase(
        &mut self,
        obs: &mut Observation,
        data: StatusData,
        phase: Phase,
    ) -> Result<()> {
        let phase = redact::phase(phase, &secrets_of(obs));
        let desired = status::desired_status(&obs.obj, data, &phase, now());
        if !status::needs_write(obs.obj.status.as_ref(), &desired) {
            return Ok(());
        }
        let before = obs.obj.condition(status::STALLED).map(|c| c.reason.clone());
        self.patch_status(obs, &desired, false).await?;
        if let Phase::Stalled { reason, message } | Phase::AvailableButStalled { reason, message } =
            &phase
            && before.as_deref() != Some(*reason)
        {
            self.event(obs, EventType::Warning, reason, message.clone())
                .await;
        }
        Ok(())
    }

    /// Record a registration attempt before its POST, only if the object is still at the
    /// resourceVersion we read: a stale view (another pass, another replica) fails here with a
    /// conflict instead of posting twice. The finalizer goes in the same write. With
    /// `drop_old_ids`, that status goes first, also guarded.
    async fn record_attempt(
        &mut self,
        obs: &mut Observation,
        hash: String,
        drop_old_ids: Option<Box<(StatusData, Phase)>>,
    ) -> Result<()> {
        if let Some(reset) = drop_old_ids {
            let (data, phase) = *reset;
            let desired = status::desired_status(&obs.obj, data, &phase, now());
            self.patch_status(obs, &desired, true).await?;
        }
        let attempt = RegistrationAttempt {
            token: uuid::Uuid::new_v4().to_string(),
            started_at: jiff::Timestamp::now().to_string(),
            credentials_hash: Some(hash),
            uid: obs.obj.metadata.uid.clone(),
        };
        let recorded =
            serde_json::to_string(&attempt).map_err(|_| Error::InvalidObject("attempt"))?;
        let mut metadata = json!({ "annotations": { ANNOTATION_REGISTRATION_ATTEMPT: recorded } });
        if let Some(finalizers) = finalizers_with_ours(&obs.obj) {
            metadata["finalizers"] = finalizers;
        }
        self.patch_metadata(obs, metadata).await
    }

    /// Server-side apply of the full status, forced, as `oneinbox-operator`; with
    /// `precondition`, only if the object is still at the resourceVersion we read.
    async fn patch_status(
        &mut self,
        obs: &mut Observation,
        desired: &PhoneNumberStatus,
        precondition: bool,
    ) -> Result<()> {
        let mut body = json!({
            "apiVersion": "oneinbox.ai/v1alpha1",
            "kind": "PhoneNumber",
            "status": desired,
        });
        if precondition {
            body["metadata"] = json!({ "resourceVersion": obs.obj.resource_version() });
        }
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let name = obs.obj.name_any();
        // Unguarded, the answer may hold another writer's change: the echo shows whether.
        let view = (!precondition).then(|| decision_inputs(&obs.obj));
        let res = self
            .ctx
            .kube_call(self.api.patch_status(&name, &params, &Patch::Apply(&body)))
            .await?;
        self.ctx.metrics.status_patched(res.is_ok());
        obs.obj = res.map_err(Error::PatchStatus)?.0;
        self.note_written(obs, view);
        Ok(())
    }

    async fn add_finalizer(&mut self, obs: &mut Observation) -> Result<()> {
        let Some(finalizers) = finalizers_with_ours(&obs.obj) else {
            return Ok(());
        };
        self.patch_metadata(obs, json!({ "finalizers": finalizers }))
            .await
    }

    /// Remove our finalizer with a JSON patch that tests it is still at its index: no
    /// resourceVersion precondition, so unrelated changes to the object cannot make it fail.
    /// Remove the finalizer; with `unless_changed` (a spec field and the value the decision
    /// read), only while the object still says so: a user may switch the policy during the
    /// pass, and then the next pass decides again.
    async fn remove_finalizer(
        &mut self,
        obs: &mut Observation,
        unless_changed: Option<(&str, &str)>,
    ) -> Result<()> {
        let Some(index) = obs.obj.finalizers().iter().position(|f| f == FINALIZER) else {
            return Ok(());
        };
        let path = format!("/metadata/finalizers/{index}");
        let mut ops = vec![json!({ "op": "test", "path": path, "value": FINALIZER })];
        if let Some((field, value)) = unless_changed {
            ops.push(json!({ "op": "test", "path": field, "value": value }));
        }
        ops.push(json!({ "op": "remove", "path": path }));
        let patch: json_patch::Patch = serde_json::from_value(serde_json::Value::Array(ops))
            .map_err(|_| Error::InvalidObject("finalizer patch"))?;
        let name = obs.obj.name_any();
        let view = decision_inputs(&obs.obj);
        let res = self
            .ctx
            .kube_call(
                self.api
                    .patch(&name, &PatchParams::default(), &Patch::Json::<()>(patch)),
            )
            .await?;
        match res {
            Ok(updated) => {
                obs.obj = updated.0;
                // Our finalizer is gone from the answer: never an echo to skip.
                self.note_written(obs, Some(view));
                Ok(())
            }
            // Already gone: nothing left to release.
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(Error::PatchMetadata(e)),
        }
    }

    async fn ensure_annotation(&mut self, obs: &mut Observation, id: &str) -> Result<()> {
        if obs.obj.annotation(ANNOTATION_PHONE_NUMBER_ID) == Some(id) {
            return Ok(());
        }
        self.patch_metadata(
            obs,
            json!({ "annotations": { ANNOTATION_PHONE_NUMBER_ID: id } }),
        )
        .await
    }

    /// Merge patch of metadata, guarded by the resourceVersion we read.
    async fn patch_metadata(
        &mut self,
        obs: &mut Observation,
        mut metadata: serde_json::Value,
    ) -> Result<()> {
        metadata["resourceVersion"] = json!(obs.obj.resource_version());
        let name = obs.obj.name_any();
        let body = json!({ "metadata": metadata });
        let res = self
            .ctx
            .kube_call(
                self.api
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&body)),
            )
            .await?;
        obs.obj = res.map_err(Error::PatchMetadata)?.0;
        self.note_written(obs, None);
        Ok(())
    }

    /// Remember the resourceVersion of the write just made (see `reconcile`), and whether the
    /// answer held nothing new against `view`, the digest of the object the write was made
    /// from (`None`: a guarded write, made from the object at its resourceVersion, so the
    /// answer is that object and our change).
    fn note_written(&self, obs: &mut Observation, view: Option<u64>) {
        if let Some(rv) = obs.obj.resource_version().and_then(|rv| rv.parse().ok()) {
            let news = view.is_some_and(|v| v != decision_inputs(&obs.obj));
            self.remember(obs, |m| {
                m.written = Some(rv);
                m.quiet_answer = !news;
                m.settled = false;
            });
        }
    }

    async fn event(&self, obs: &Observation, type_: EventType, reason: &str, note: String) {
        let note = redact::text(&note, &secrets_of(obs), redact::MAX_EVENT_NOTE);
        // The other object, where there is one: the owner in a duplicate claim.
        let related = match reason {
            status::reason::DUPLICATE_PHONE_NUMBER | "NotDeregistered" => obs
                .claims
                .number_owner
                .as_ref()
                .or(obs.claims.id_owner.as_ref()),
            _ => None,
        };
        let ev = Event {
            type_,
            reason: reason.to_string(),
            note: Some(note),
            action: status::event_action(reason).into(),
            secondary: related.map(|o| o.reference()),
        };
        // Events are published on transitions only, so the recorder's 6-minute series cache
        // (one Event kept per publish) buys nothing and at 10,000 objects costs tens of MiB:
        // each publish gets a fresh recorder.
        let recorder = Recorder::new(self.ctx.client.clone(), self.ctx.reporter.clone());
        if let Err(e) = recorder.publish(&ev, &obs.obj.object_ref(&())).await {
            warn!(error = %e, reason, "publishing an event failed");
        }
    }
}

fn now() -> Time {
    Time(jiff::Timestamp::now())
}

/// The secret values this pass has in hand: scrubbed from every text it writes.
fn secrets_of(obs: &Observation) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(Ok(credentials::Credentials::Sip { auth_password, .. })) = &obs.credentials {
        out.push(auth_password.expose().to_owned());
    }
    out
}

fn versions_digest(obs: &Observation) -> u64 {
    plan::secret_versions_digest(obs.versions_used().iter())
}
