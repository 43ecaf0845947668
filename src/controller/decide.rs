//! Decide: the whole decision table of the reconciler, as one pure function of what a pass has
//! observed so far. `decide` returns the next `Step`: a read the pass still needs, an effect, or
//! the status to report and how the pass ends. The driver (`act`) carries the step out, adds
//! its result to the observation and asks again, until a step ends the pass.
//!
//! Guards of the form "don't repeat a request that was refused" are read here from the
//! observation (the Stalled condition, its generation, the credentials hash and the handled
//! reconcile request), never checked inside an effect.

use std::time::Duration;

use kube::ResourceExt;

use super::Settings;
use super::credentials::{self, Credentials};
use super::observe::{AccountProblem, ApiKey, Observation, Outcome};
use super::plan::{self, PatchableDigest};
use super::polling;
use super::status::{self, Phase, RemoteFacts, StatusData, reason};
use crate::crd::AccountId;
use crate::crd::{
    ANNOTATION_PHONE_NUMBER_ID, ANNOTATION_RECONCILE_REQUESTED_AT, PhoneNumber,
    RegistrationAttempt, ReplacementPolicy,
};
use crate::oneinbox::{ApiError, PatchRequest, Registration};
use crate::secrets::{SecretAccess, SecretProblem, SecretProblemKind, problem_fix, problem_text};
use apply::decide_apply;
use deletion::decide_deletion;

/// How often an object that waits on another (a duplicate claim) looks again, as a fallback to
/// the direct trigger when the owner goes away.
pub const DUPLICATE_RECHECK: Duration = Duration::from_secs(300);
/// How often an id that names another number's registration is looked at again: deleted
/// outside the cluster, it no longer holds the object back (the annotation then names nothing,
/// and the object registers its number).
const MISMATCH_RECHECK: Duration = Duration::from_secs(300);
/// After a restart, while the Secret watch has not listed the Secrets yet: look again soon.
const SECRETS_UNLISTED_RECHECK: Duration = Duration::from_secs(1);
/// After a PATCH found the registration gone: look again soon (the next pass GETs, sees the
/// 404 and registers again).
const GONE_RECHECK: Duration = Duration::from_millis(200);

/// A read the pass needs before it can decide.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Read {
    /// The tenant API key (or learn that the operator-wide one applies).
    ApiKey,
    /// The SIP password Secret, or the stored credential id.
    Credentials,
    /// `GET /v1/phone-numbers/{id}`.
    Registration(String),
    /// `GET /v1/phone-numbers?phone_number=`.
    LookupByNumber,
    /// The PhoneNumber CRD's metadata: whether it is being deleted (`Definition`).
    Definition,
}

/// Which OneInbox call failed (for the error and its metric label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Register,
    Get,
    Lookup,
    Update,
    Deregister,
}

/// A OneInbox failure the pass ends with (the controller's backoff retries it).
#[derive(Clone, Debug, PartialEq)]
pub struct Failure {
    pub op: Op,
    pub error: ApiError,
}

impl Failure {
    /// The error the pass ends with.
    pub fn to_error(&self) -> crate::error::Error {
        use crate::error::Error;
        let e = self.error.clone();
        match self.op {
            Op::Register => Error::RegisterNumber(e),
            Op::Get => Error::GetNumber(e),
            Op::Lookup => Error::LookupNumber(e),
            Op::Update => Error::UpdateNumber(e),
            Op::Deregister => Error::DeregisterNumber(e),
        }
    }
}

/// How a pass that reports a status ends.
#[derive(Clone, Debug, PartialEq)]
pub enum Then {
    /// Wait for a change (a watch event, a Secret, the drift sweep).
    AwaitChange,
    Requeue(Duration),
    /// Go on deciding (the report is a step on the way, e.g. `Deleting`).
    Continue,
    /// End with this failure: the controller's error policy backs off.
    Fail(Failure),
    /// The registration is checked and in line with the spec of `generation`: remember it,
    /// and let the drift sweep bring the object back.
    Checked {
        id: String,
        patchable: PatchableDigest,
        generation: Option<i64>,
        /// An invalid `oneinbox.ai/poll-interval` value not reported yet: say so in a Warning.
        warn_poll_interval: Option<String>,
    },
}

/// The next thing a pass does.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// Read something first.
    Read(Read),
    /// Write this status (only if it changed; a Warning when it becomes Stalled for a new
    /// reason), then end as `then` says.
    Report {
        data: StatusData,
        phase: Phase,
        then: Then,
    },
    /// End the pass with a failure and write nothing (a 429 says nothing about the object).
    Fail(Failure),
    /// End the pass and write nothing.
    Done(DoneAfter),
    /// Deliberate adoption of the registration the annotation names: finalizer first (guarded
    /// by the resourceVersion), then an `Adopted` event. `takeover`: the object already
    /// mirrored it under `managementPolicy: Observe` and is now switched to Full.
    Adopt { id: String, takeover: bool },
    /// The registration is gone from OneInbox: a `RegistrationLost` Warning, then register again.
    /// `unmirror`: the id annotation is the operator's mirror of the status id: it goes too,
    /// so no object keeps claiming the number with an id that no longer exists.
    ReportLost { id: String, unmirror: bool },
    /// The credentials changed and `replacementPolicy: Replace`: `Replacing` event, DELETE.
    Replace { id: String },
    /// Register: finalizer and pending marker (guarded) unless a marker is there, then POST.
    Register {
        credentials: Credentials,
        hash: String,
        marker_present: bool,
    },
    /// Write the new registration's ids right away, with an event.
    Persist {
        registration: Registration,
        data: Box<StatusData>,
        phase: Phase,
        event: (&'static str, String),
    },
    /// One PATCH with only the changed fields; once it succeeds, an `Updated`,
    /// `DriftCorrected` or `UpdatedOnAdoption` event (reason, note).
    Patch {
        id: String,
        patch: PatchRequest,
        event: (&'static str, String),
    },
    /// Mirror the id into the annotation (the durable copy).
    Annotate { id: String },
    /// `managementPolicy: Observe` on an object with the finalizer (switched from Full):
    /// remove it, so that deleting the object never deregisters, with an `ObserveOnly` event.
    Disown,
    /// Remember that a clean 429 refused this pending attempt (the next attempt posts without
    /// a look-up), then take `then`.
    RememberCleanRefusal { token: String, then: Box<Step> },
    /// After a restart, the status records this very input: trust it as the last check, with
    /// the first drift check in `first_check_in` (spread over the interval), and end the pass.
    Resume {
        id: String,
        generation: Option<i64>,
        first_check_in: Option<Duration>,
        remote: PatchableDigest,
    },
    /// Forget the last check (what the API holds is no longer known), then take `then`.
    ForgetCheck { then: Box<Step> },
    // ---- deletion
    /// `deletionPolicy: Orphan` (or `managementPolicy: Observe`, or the CRD being deleted,
    /// named in `because`): remove the finalizer, `Orphaned` event.
    Orphan {
        what: String,
        because: &'static str,
        /// The spec field and value this decision rests on, if one: the finalizer goes only
        /// while the object still says so.
        unless_changed: Option<(&'static str, &'static str)>,
    },
    /// `DELETE /v1/phone-numbers/{id}`.
    Deregister { id: String },
    /// Remove the finalizer, with an event if there is one. `released` is the registration
    /// this process deregistered (a retry then only removes the finalizer).
    Release {
        released: Option<String>,
        event: Option<(&'static str, String)>,
    },
    /// Deletion cannot finish: `DeletionBlocked`, and back off.
    Blocked {
        cause: String,
        failure: Option<Failure>,
    },
}

impl Step {
    /// The kind of step, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Step::Read(Read::ApiKey) => "read api key",
            Step::Read(Read::Credentials) => "read credentials",
            Step::Read(Read::Registration(_)) => "get registration",
            Step::Read(Read::LookupByNumber) => "look up number",
            Step::Read(Read::Definition) => "read the crd",
            Step::Report { .. } => "report",
            Step::Fail(_) => "fail",
            Step::Done(_) => "done",
            Step::Adopt { .. } => "adopt",
            Step::ReportLost { .. } => "report lost",
            Step::Replace { .. } => "replace",
            Step::Register { .. } => "register",
            Step::Persist { .. } => "persist",
            Step::Patch { .. } => "patch",
            Step::Annotate { .. } => "annotate",
            Step::Disown => "disown",
            Step::RememberCleanRefusal { .. } => "remember clean refusal",
            Step::ForgetCheck { .. } => "forget check",
            Step::Resume { .. } => "resume",
            Step::Orphan { .. } => "orphan",
            Step::Deregister { .. } => "deregister",
            Step::Release { .. } => "release",
            Step::Blocked { .. } => "blocked",
        }
    }
}

/// How a pass that writes nothing ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DoneAfter {
    AwaitChange,
    Requeue(Duration),
}

/// The next step of the pass.
pub fn decide(obs: &Observation, settings: &Settings) -> Step {
    let deleting = obs.obj.metadata.deletion_timestamp.is_some();
    // Deleted while this pass was applying (a write answered with the deleted object): what
    // the pass did so far (e.g. the DELETE of a replacement) says nothing about the deletion.
    // A new pass starts from a fresh observation.
    if deleting != obs.deleting_at_start {
        return Step::Done(DoneAfter::Requeue(Duration::ZERO));
    }
    if deleting {
        decide_deletion(obs)
    } else {
        decide_apply(obs, settings)
    }
}

/// The Secret versions this pass relied on: those read now, the recorded ones for the rest.
pub fn versions_used(obs: &Observation) -> crate::crd::SecretVersionMap {
    let recorded = obs.obj.status.as_ref().map(|s| &s.secret_versions);
    plan::secret_versions_used(
        &obs.obj,
        &recorded.cloned().unwrap_or_default(),
        &obs.secrets_read,
    )
}

/// Whether the password need not be read: the spec is the one status describes, nothing is
/// Stalled (a pending replacement compares the new credentials), the recorded hash is made
/// with the current key, and the Secret watch reports the very versions status records.
fn credentials_as_recorded(obs: &Observation, settings: &Settings) -> bool {
    let obj = &obs.obj;
    let Some(st) = obj.status.as_ref() else {
        return false;
    };
    obj.spec.provider_config.is_some()
        && settings.secret_access == SecretAccess::Watch
        && st.observed_generation == obj.metadata.generation
        && obj.condition(status::STALLED).is_none()
        && st
            .credentials_hash
            .as_deref()
            .and_then(credentials::hash_key_id)
            == Some(settings.hash_key.id())
        && obs.secret_versions.as_ref() == Some(&st.secret_versions)
}

/// After a restart (no check in memory), a Ready object whose status records this very input
/// (the generation, the id, a credentials hash made with the current key, the Secret versions
/// the watch reports) is not
/// checked at once: its first check is spread over the poll interval, so a restart costs no
/// burst of calls. `None`: decide as usual (reconciled now).
fn resume(obs: &Observation, settings: &Settings) -> Option<Step> {
    let obj = &obs.obj;
    // Only at the start of a pass: one that registered, adopted or wrote ends as a check.
    let acted = !matches!(obs.last, Outcome::None | Outcome::Continued) || obs.fetched.is_some();
    if acted {
        return None;
    }
    let id = settled_id(obs, reason::AVAILABLE)?;
    let st = obj.status.as_ref()?;
    let trusted = obj.has_finalizer()
        // Made with another key: the new baseline is written at once.
        && st.credentials_hash.as_deref().and_then(credentials::hash_key_id)
            == Some(settings.hash_key.id());
    if !trusted {
        return None;
    }
    // Without the watch a Secret change is seen at the next check anyway.
    if settings.secret_access == SecretAccess::Watch {
        match &obs.secret_versions {
            Some(v) if *v == st.secret_versions => {}
            None if !obs.secrets_listed => {
                return Some(Step::Done(DoneAfter::Requeue(SECRETS_UNLISTED_RECHECK)));
            }
            _ => return None,
        }
    }
    Some(resume_step(
        obs,
        id,
        settings,
        PatchableDigest::of_spec(obj),
    ))
}

/// The id of a registration the status records for this very input, as a pass of this process
/// left it: nothing checked in memory yet, Ready with `ready_reason` for this generation, neither
/// Stalled nor Reconciling, the id uncontradicted (`only_names`) and active, no reconcile
/// request pending, and not known lost. The object's first check after a restart may then wait (`resume_step`).
fn settled_id<'a>(obs: &'a Observation, ready_reason: &str) -> Option<&'a str> {
    let obj = &obs.obj;
    if obs.memory.check.is_some() {
        return None;
    }
    let st = obj.status.as_ref()?;
    let id = st.phone_number_id.as_deref()?;
    let generation = obj.metadata.generation;
    let settled = obj.condition(status::READY).is_some_and(|c| {
        c.status == "True" && c.reason == ready_reason && c.observed_generation == generation
    }) && obj.condition(status::STALLED).is_none()
        && obj.condition(status::RECONCILING).is_none()
        && st.observed_generation == generation
        && only_names(obj, id)
        && st
            .state
            .as_deref()
            .is_some_and(crate::oneinbox::is_active_state)
        && reconcile_request_handled(obs)
        && obs.memory.lost.as_deref() != Some(id);
    settled.then_some(id)
}

/// Nothing on the object contradicts its status's id `id`: no other id in the annotation, no
/// registration attempt in flight.
fn only_names(obj: &PhoneNumber, id: &str) -> bool {
    obj.annotation(ANNOTATION_PHONE_NUMBER_ID)
        .is_none_or(|a| a == id)
        && obj.pending_create().is_none()
}

/// Remember `id` as checked now, with the first drift check spread over the poll interval.
fn resume_step(obs: &Observation, id: &str, settings: &Settings, remote: PatchableDigest) -> Step {
    Step::Resume {
        id: id.to_owned(),
        generation: obs.generation,
        first_check_in: polling::poll_interval(
            &obs.obj,
            settings.poll_interval,
            settings.min_poll_interval,
        )
        .map(|i| polling::first_check_in(&obs.uid(), i)),
        remote,
    }
}

/// After a restart, an observed object whose status mirrors an active registration for this
/// very generation is not looked at at once, as `resume` does for managed ones: its first
/// check is spread over the poll interval (no restart storm of GETs). It reads no Secret, so
/// only the status decides. `None`: decide as usual.
fn resume_observed(obs: &Observation, settings: &Settings) -> Option<Step> {
    if obs.fetched.is_some() || obs.lookup.is_some() {
        return None;
    }
    let id = settled_id(obs, reason::OBSERVED)?;
    // Observe compares the registration it reads at each check, never this.
    Some(resume_step(obs, id, settings, PatchableDigest::unread()))
}

/// `managementPolicy: Observe`: find the registration (by the id the object names, or else by
/// number), mirror it into status, and report where it differs from the spec. No OneInbox
/// write, and no Secret but a tenant API key is read.
fn decide_observe(obs: &Observation, settings: &Settings) -> Step {
    let obj = &obs.obj;
    if let Some(step) = resume_observed(obs, settings) {
        return step;
    }
    let known_id = obj.known_id();
    if let Some(id) = &known_id
        && fresh(obs, id, None)
    {
        return Step::Done(DoneAfter::AwaitChange);
    }
    if let Some(step) = api_key_step(obs, settings) {
        return step;
    }
    let fix = "managementPolicy is Observe, so the operator will not register it";
    let reg = match &known_id {
        Some(id) => match (&obs.fetched, &obs.lookup) {
            // Found by number earlier in this pass; the annotation names it since.
            (_, Some(Ok(Some(found)))) if &found.id == id => found,
            (None, _) => return Step::Read(Read::Registration(id.clone())),
            (Some(Ok(reg)), _) if reg.phone_number != obj.spec.phone_number => {
                let msg = format!(
                    "OneInbox registration {id} is for {}, not {}. Fix or remove the {ANNOTATION_PHONE_NUMBER_ID} annotation",
                    reg.phone_number, obj.spec.phone_number
                );
                return stall(
                    obs,
                    reason::ID_MISMATCH,
                    msg,
                    Then::Requeue(MISMATCH_RECHECK),
                );
            }
            (Some(Ok(reg)), _) => reg,
            (Some(Err(ApiError::NotFound)), _) => {
                let msg = format!(
                    "OneInbox has no registration {id} (named by the {ANNOTATION_PHONE_NUMBER_ID} annotation or the status); {fix}. Fix the annotation, or register the number outside the cluster and annotate this object with its id, or set managementPolicy: Full (with providerConfig or credentialId) to register it"
                );
                return stall(obs, reason::REGISTRATION_NOT_FOUND, msg, Then::AwaitChange);
            }
            (Some(Err(e)), _) => {
                return api_failure(
                    obs,
                    Failure {
                        op: Op::Get,
                        error: e.clone(),
                    },
                );
            }
        },
        None => match &obs.lookup {
            None => return Step::Read(Read::LookupByNumber),
            Some(Ok(Some(reg))) => reg,
            // It may be registered outside the cluster later: looked for again every interval.
            Some(Ok(None)) => {
                let msg = format!(
                    "{} is not registered in OneInbox; {fix}. Register it outside the cluster (it is looked for again every poll interval), or set managementPolicy: Full (with providerConfig or credentialId) to register it",
                    obj.spec.phone_number
                );
                let every =
                    polling::poll_interval(obj, settings.poll_interval, settings.min_poll_interval)
                        .unwrap_or(settings.poll_interval);
                return stall(
                    obs,
                    reason::REGISTRATION_NOT_FOUND,
                    msg,
                    Then::Requeue(every),
                );
            }
            Some(Err(e)) => {
                return api_failure(
                    obs,
                    Failure {
                        op: Op::Lookup,
                        error: e.clone(),
                    },
                );
            }
        },
    };
    if obj.annotation(ANNOTATION_PHONE_NUMBER_ID) != Some(reg.id.as_str()) {
        return Step::Annotate { id: reg.id.clone() };
    }
    let phase = if reg.status == "failed" {
        Phase::Stalled {
            reason: reason::REGISTRATION_FAILED,
            message: format!(
                "OneInbox reports provisioning of {} failed. Contact OneInbox support, or register the number again outside the cluster",
                reg.id
            ),
        }
    } else if !reg.is_active() {
        Phase::Progressing {
            reason: reason::PROVISIONING,
            message: format!(
                "OneInbox reports state {:?}; waiting for \"active\"",
                reg.status
            ),
        }
    } else {
        Phase::Observed {
            drift: plan::drifted_fields(obj, reg),
        }
    };
    let then = if reg.is_active() {
        checked(obs, &reg.id, PatchableDigest::of_registration(reg))
    } else {
        Then::Requeue(settings.provisioning_poll)
    };
    let data = StatusData {
        remote: RemoteFacts::from_registration(reg),
        pending_create: None,
        last_handled_reconcile_at: requested_reconcile(obj),
        ..StatusData::current(obj)
    };
    report(data, phase, then)
}

/// Whether the object yields its number to `obs.number_owner`. An owner whose only claim is
/// an annotation naming another id holds the number only until this object's own id is read:
/// a number is registered once, so if the id this object names is a registration of its number,
/// the owner's id is not, and this object adopts it (a transient error is retried first).
fn yields(obs: &Observation) -> bool {
    if !obs.number_owner_names_another_id {
        return true;
    }
    match &obs.fetched {
        // Read it first (below).
        None => false,
        Some(Ok(reg)) => reg.phone_number != obs.obj.spec.phone_number,
        Some(Err(e)) => matches!(e, ApiError::NotFound) || !e.is_retryable(),
    }
}

/// What the pass knows of the registration the object names, or `Ok(None)` when there is none
/// (never was, gone, or released by a replacement in this pass) and the number is to be
/// registered. `Err` is the step to take first.
fn remote(
    obs: &Observation,
    known_id: Option<&str>,
    hash: Option<&str>,
) -> Result<Option<Remote>, Box<Step>> {
    match &obs.last {
        Outcome::Patched {
            answer: Ok(reg), ..
        }
        | Outcome::Persisted(reg) => return Ok(Some(Remote::of(reg))),
        Outcome::Patched {
            registered: Some(reg),
            ..
        } => return Ok(Some(Remote::of(reg))),
        // Registered in this pass because there was none (or a replacement released it).
        Outcome::Deregistered(Ok(_)) | Outcome::Posted { .. } => return Ok(None),
        Outcome::Deregistered(Err(e)) => {
            return Err(Box::new(api_failure(
                obs,
                Failure {
                    op: Op::Deregister,
                    error: e.clone(),
                },
            )));
        }
        _ => {}
    }
    let Some(id) = known_id else {
        return Ok(None);
    };
    if fresh(obs, id, hash) {
        return Err(Box::new(Step::Done(DoneAfter::AwaitChange)));
    }
    // A spec change within the interval is diffed against the last check.
    if obs.fetched.is_none()
        && let Some(cached) = cached_remote(obs, id)
    {
        return Ok(Some(cached));
    }
    let obj = &obs.obj;
    match &obs.fetched {
        // Reported gone already by this process: ids are never issued again.
        None if obs.memory.lost.as_deref() == Some(id) => Ok(None),
        None => Err(Box::new(Step::Read(Read::Registration(id.to_owned())))),
        Some(Ok(reg)) if reg.phone_number != obj.spec.phone_number => {
            let msg = format!(
                "OneInbox registration {id} is for {}, not {}. Fix or remove the {ANNOTATION_PHONE_NUMBER_ID} annotation",
                reg.phone_number, obj.spec.phone_number
            );
            Err(Box::new(stall(
                obs,
                reason::ID_MISMATCH,
                msg,
                Then::Requeue(MISMATCH_RECHECK),
            )))
        }
        Some(Ok(reg)) => {
            let holds = obj
                .status
                .as_ref()
                .and_then(|s| s.phone_number_id.as_deref())
                == Some(reg.id.as_str());
            // Held without the finalizer: mirrored under managementPolicy: Observe, and now
            // taken over. A PATCH in this pass came after this pass's adoption: its failure
            // is reported, never a second adoption (and PATCH) in a loop.
            let adopted_now = matches!(obs.last, Outcome::Adopted | Outcome::Patched { .. });
            if (!holds || !obj.has_finalizer()) && !adopted_now {
                return Err(Box::new(Step::Adopt {
                    id: reg.id.clone(),
                    takeover: holds,
                }));
            }
            Ok(Some(Remote::of(reg)))
        }
        // Gone while a replacement is due: most likely released by that replacement itself
        // (its answer or the next write was lost), so not reported lost.
        Some(Err(ApiError::NotFound)) if matches!(replacement(obs, id, hash), Replacement::Now) => {
            Ok(None)
        }
        Some(Err(ApiError::NotFound)) if obs.memory.lost.as_deref() != Some(id) => {
            let status_id = obj
                .status
                .as_ref()
                .and_then(|s| s.phone_number_id.as_deref());
            Err(Box::new(Step::ReportLost {
                id: id.to_owned(),
                unmirror: status_id == Some(id)
                    && obj.annotation(ANNOTATION_PHONE_NUMBER_ID) == Some(id),
            }))
        }
        Some(Err(ApiError::NotFound)) => Ok(None),
        Some(Err(e)) => Err(Box::new(api_failure(
            obs,
            Failure {
                op: Op::Get,
                error: e.clone(),
            },
        ))),
    }
}

/// The registration once the number is registered (or found registered by an interrupted
/// attempt); `Err` is the step to take first.
fn register(
    obs: &Observation,
    credentials: &Result<Credentials, SecretProblem>,
    hash: Option<&str>,
    settings: &Settings,
) -> Result<Remote, Box<Step>> {
    let obj = &obs.obj;
    let marker = obj.pending_create();
    // After a clean 429 nothing can have been registered: the next attempt posts directly.
    let refused_cleanly = marker
        .as_ref()
        .is_some_and(|m| obs.memory.clean_refusal.as_deref() == Some(m.token.as_str()));
    let in_doubt = marker.is_some() && !refused_cleanly;
    let credentials = match credentials {
        Ok(c) => c,
        Err(problem) => {
            // The look-up needs no Secret: an attempt in flight is settled first, so that it
            // neither hides a registration it made nor keeps claiming the number (against an
            // object annotated with the number's registration) while the Secret is missing.
            if in_doubt {
                let registered = marker
                    .as_ref()
                    .and_then(|m| m.credentials_hash_for(obj))
                    .or_else(|| obj.status.as_ref().and_then(|s| s.credentials_hash.clone()));
                if let Some(step) = settle_attempt(obs, marker.as_ref(), registered) {
                    return Err(Box::new(step));
                }
            }
            // Nothing is in flight (any more): the marker goes while the object waits.
            return Err(Box::new(without_marker(wait_for_secret(
                obs, problem, None, settings,
            ))));
        }
    };
    let hash = hash.map(str::to_owned).unwrap_or_default();
    let posted = match &obs.last {
        Outcome::Posted(answer) => Some(answer),
        _ => None,
    };
    match posted {
        None => {}
        Some(Ok(reg)) => {
            return Err(Box::new(persist(
                obs,
                reg.clone(),
                Some(hash),
                (
                    "Registered",
                    format!(
                        "Registered {} with OneInbox as {}",
                        reg.phone_number, reg.id
                    ),
                ),
            )));
        }
        // The number is registered, but maybe by this attempt: a repeated POST after an
        // ambiguous outcome, or another process (a replaced pod still draining) that posted
        // under the same marker. A registration made since the attempt started is its own; one
        // made before it is someone else's. A first POST had no look-up before it, so a
        // registration made just before the marker is not given the clock-skew allowance:
        // it is someone else's (made outside moments earlier), never adopted by chance.
        Some(Err(ApiError::AlreadyRegistered { phone_id, .. })) => {
            let allowance = if obs.lookup.is_some() {
                CLOCK_SKEW_ALLOWANCE
            } else {
                jiff::SignedDuration::ZERO
            };
            return Err(Box::new(match &obs.fetched {
                None => Step::Read(Read::Registration(phone_id.clone())),
                Some(Ok(reg)) if made_before(reg, marker.as_ref(), allowance) => {
                    already_registered(obs, &reg.id, PatchableDigest::of_registration(reg))
                }
                Some(Ok(reg)) => persist(
                    obs,
                    reg.clone(),
                    Some(hash),
                    (
                        "Adopted",
                        format!(
                            "Adopted {phone_id}, registered under this object's pending attempt"
                        ),
                    ),
                ),
                Some(Err(e)) => api_failure(
                    obs,
                    Failure {
                        op: Op::Get,
                        error: e.clone(),
                    },
                ),
            }));
        }
        Some(Err(e @ (ApiError::Rejected { .. } | ApiError::NotFound))) => {
            let msg = format!(
                "OneInbox rejected the registration: {e}. Fix the spec or the referenced Secret"
            );
            let data = StatusData {
                pending_create: None,
                credentials_hash: Some(hash),
                last_handled_reconcile_at: requested_reconcile(&obs.obj),
                ..status_data(obs)
            };
            return Err(Box::new(report(
                data,
                stalled(reason::REGISTRATION_REJECTED, msg),
                Then::AwaitChange,
            )));
        }
        // Ambiguous or transient: the marker stays, so the next pass looks up first; after a
        // clean 429 nothing can have been registered, so the next pass posts directly.
        Some(Err(e)) => {
            let failure = Failure {
                op: Op::Register,
                error: e.clone(),
            };
            if let (true, Some(m)) = (e.is_throttled(), &marker) {
                return Err(Box::new(Step::RememberCleanRefusal {
                    token: m.token.clone(),
                    then: Box::new(api_failure(obs, failure)),
                }));
            }
            return Err(Box::new(api_failure(obs, failure)));
        }
    }

    // An earlier attempt may have registered it: look before posting again.
    if in_doubt && let Some(step) = settle_attempt(obs, marker.as_ref(), Some(hash.clone())) {
        return Err(Box::new(step));
    }

    // A request OneInbox refused is not repeated until the spec, the credentials or the
    // reconcile request change.
    let refused_for_this_input = |why: &str| {
        refused(obs, why)
            && obj
                .status
                .as_ref()
                .and_then(|s| s.credentials_hash.as_deref())
                == Some(hash.as_str())
    };
    if refused_for_this_input(reason::REGISTRATION_REJECTED) {
        return Err(Box::new(Step::Done(DoneAfter::AwaitChange)));
    }
    // The registration in the way may be removed outside the cluster: look the number up once
    // per poll interval (a GET, never a POST), and register only once it is free.
    if refused_for_this_input(reason::ALREADY_REGISTERED) {
        let looked_recently = obs.memory.check.as_ref().is_some_and(|c| {
            c.generation == obs.generation
                && c.interval
                    .is_none_or(|i| obs.now.saturating_duration_since(c.at) < i)
        });
        if looked_recently {
            return Err(Box::new(Step::Done(DoneAfter::AwaitChange)));
        }
        match &obs.lookup {
            None => return Err(Box::new(Step::Read(Read::LookupByNumber))),
            Some(Err(e)) => {
                return Err(Box::new(Step::Fail(Failure {
                    op: Op::Lookup,
                    error: e.clone(),
                })));
            }
            Some(Ok(Some(reg))) => {
                return Err(Box::new(already_registered(
                    obs,
                    &reg.id,
                    PatchableDigest::of_registration(reg),
                )));
            }
            Some(Ok(None)) => {}
        }
    }
    Err(Box::new(Step::Register {
        credentials: credentials.clone(),
        hash,
        marker_present: marker.is_some(),
    }))
}

/// The look-up that settles an attempt in flight (its POST may have landed): the step to take,
/// or `None` when the number is not registered (nothing of the attempt exists). `hash` is the
/// credentials hash a registration it made is recorded with.
fn settle_attempt(
    obs: &Observation,
    marker: Option<&RegistrationAttempt>,
    hash: Option<String>,
) -> Option<Step> {
    match &obs.lookup {
        None => Some(Step::Read(Read::LookupByNumber)),
        Some(Err(e)) => Some(api_failure(
            obs,
            Failure {
                op: Op::Lookup,
                error: e.clone(),
            },
        )),
        // Registered before this attempt started: someone else's (made outside the
        // cluster, or left by an object deleted with Orphan), not ours to adopt.
        Some(Ok(Some(reg))) if made_before_attempt(reg, marker) => Some(already_registered(
            obs,
            &reg.id,
            PatchableDigest::of_registration(reg),
        )),
        Some(Ok(Some(reg))) => Some(persist(
            obs,
            reg.clone(),
            hash,
            (
                "Adopted",
                format!(
                    "Found registration {} from an interrupted attempt and adopted it",
                    reg.id
                ),
            ),
        )),
        Some(Ok(None)) => None,
    }
}

/// `step`, reporting no pending-create marker.
fn without_marker(step: Step) -> Step {
    match step {
        Step::Report {
            mut data,
            phase,
            then,
        } => {
            data.pending_create = None;
            Step::Report { data, phase, then }
        }
        other => other,
    }
}

/// A successful check of registration `id`: remembered, so the next one comes after the poll
/// interval; an invalid poll-interval annotation is reported once.
fn checked(obs: &Observation, id: &str, patchable: PatchableDigest) -> Then {
    Then::Checked {
        id: id.to_owned(),
        patchable,
        generation: obs.generation,
        warn_poll_interval: polling::invalid_poll_interval(&obs.obj)
            .filter(|v| obs.memory.invalid_poll_interval.as_deref() != Some(*v))
            .map(str::to_owned),
    }
}

/// The API key still to read, an account's key Secret to wait for, or an account the object
/// cannot use; `None` once a key is known.
fn api_key_step(obs: &Observation, settings: &Settings) -> Option<Step> {
    match &obs.api_key {
        None => Some(Step::Read(Read::ApiKey)),
        Some(ApiKey::Missing {
            account, problem, ..
        }) => Some(wait_for_secret(obs, problem, Some(account), settings)),
        Some(ApiKey::Unusable(problem)) => Some(account_unusable(obs, problem, settings)),
        Some(_) => None,
    }
}

/// The account cannot be used: a missing account is waited for like a missing Secret (it
/// may be applied with the object), a refused one is Stalled at once. The account and
/// Namespace watches bring the object back when that changes.
fn account_unusable(obs: &Observation, problem: &AccountProblem, settings: &Settings) -> Step {
    let data = StatusData {
        last_handled_reconcile_at: requested_reconcile(&obs.obj),
        ..status_data(obs)
    };
    let message = account_problem_text(problem);
    match problem {
        AccountProblem::NotFound(_) => {
            let waited = not_ready_for(obs);
            let grace = settings.secret_grace_period;
            if waited >= grace {
                report(
                    data,
                    stalled(reason::ACCOUNT_NOT_FOUND, message),
                    Then::AwaitChange,
                )
            } else {
                let phase = Phase::Progressing {
                    reason: reason::ACCOUNT_NOT_FOUND,
                    message: format!("{message}; waiting up to {}s for it", grace.as_secs()),
                };
                report(
                    data,
                    phase,
                    Then::Requeue(grace - waited + Duration::from_millis(500)),
                )
            }
        }
        AccountProblem::NotAllowed { .. } => report(
            data,
            stalled(reason::ACCOUNT_NOT_ALLOWED, message),
            Then::AwaitChange,
        ),
        AccountProblem::ClusterAccountsOff(_) | AccountProblem::Invalid { .. } => report(
            data,
            stalled(reason::ACCOUNT_NOT_READY, message),
            Then::AwaitChange,
        ),
    }
}

/// Why the account cannot be used, with the fix.
pub fn account_problem_text(p: &AccountProblem) -> String {
    match p {
        AccountProblem::NotFound(account) => format!(
            "{account} does not exist. Create it (docs/tenancy.md), or name an existing account in spec.accountRef of a new PhoneNumber"
        ),
        AccountProblem::NotAllowed {
            account: AccountId::Operator,
            rule,
        } => format!(
            "The operator-wide API key does not serve this namespace: it serves {rule} (the chart's operatorKey.namespaces, flag --operator-key-namespaces). Label the namespace to match (kubectl label namespace), or create the PhoneNumber with spec.accountRef naming an account this namespace may use"
        ),
        AccountProblem::NotAllowed { account, rule } => format!(
            "{account} does not allow this namespace: it allows {rule}. Ask the cluster administrator to allow the namespace in its spec.allowedNamespaces (or to label the namespace to match), or use another account"
        ),
        AccountProblem::ClusterAccountsOff(account) => format!(
            "{account} cannot be used: this operator watches one namespace and not ClusterOneInboxAccounts. Ask its administrator to turn cluster accounts on (the chart's clusterAccounts: true, or --cluster-accounts=true), or create a new PhoneNumber whose spec.accountRef names a OneInboxAccount of this namespace (accountRef cannot be changed)"
        ),
        AccountProblem::Invalid { account, why } => {
            format!("{account} cannot be used: {why}. Fix the account's spec")
        }
    }
}

/// The status data to keep: what status carries now, less a registration known to be gone
/// (removed outside the cluster), so status never names an id OneInbox no longer holds.
fn status_data(obs: &Observation) -> StatusData {
    let mut data = StatusData::current(&obs.obj);
    // A 404 read earlier in the pass was for the id named then, not for one this pass has
    // registered since.
    let gone = |id: &str| {
        obs.memory.lost.as_deref() == Some(id)
            || (matches!(obs.fetched, Some(Err(ApiError::NotFound)))
                && obs.obj.known_id().as_deref() == Some(id)
                && alive_now(obs) != Some(id))
    };
    if data.remote.phone_number_id.as_deref().is_some_and(gone) {
        data.remote = Default::default();
    }
    data
}

/// The number is registered as `phone_id` by someone else: Stalled, with the command that
/// adopts it deliberately; the pending marker goes (nothing of ours is in flight).
fn already_registered(obs: &Observation, phone_id: &str, patchable: PatchableDigest) -> Step {
    let obj = &obs.obj;
    let msg = format!(
        "{} is already registered in OneInbox as {phone_id}, outside this cluster. To manage that registration with this object, run: kubectl -n {} annotate phonenumber {} {ANNOTATION_PHONE_NUMBER_ID}={phone_id}",
        obj.spec.phone_number,
        obs.namespace(),
        obj.name_any()
    );
    let data = StatusData {
        pending_create: None,
        last_handled_reconcile_at: requested_reconcile(&obs.obj),
        ..status_data(obs)
    };
    // Remembered as a check of the number: the drift sweep brings the object back after one
    // poll interval, to see whether the number is free by then.
    report(
        data,
        stalled(reason::ALREADY_REGISTERED, msg),
        Then::Checked {
            id: phone_id.to_owned(),
            patchable,
            generation: obs.generation,
            warn_poll_interval: None,
        },
    )
}

/// How much the OneInbox server's clock may lag ours: a registration made by our own POST
/// carries a `created_at` after the pending marker's `startedAt`, less at most this.
const CLOCK_SKEW_ALLOWANCE: jiff::SignedDuration = jiff::SignedDuration::from_secs(1);

/// Whether `reg` was made before the attempt that `marker` records started (so it cannot be
/// the attempt's own). A time that does not parse proves nothing: then it may be ours.
fn made_before_attempt(reg: &Registration, marker: Option<&RegistrationAttempt>) -> bool {
    made_before(reg, marker, CLOCK_SKEW_ALLOWANCE)
}

/// Whether `reg` was made more than `allowance` before the attempt `marker` records started.
fn made_before(
    reg: &Registration,
    marker: Option<&RegistrationAttempt>,
    allowance: jiff::SignedDuration,
) -> bool {
    let (Some(marker), Ok(created)) = (marker, reg.created_at.parse::<jiff::Timestamp>()) else {
        return false;
    };
    let Ok(started) = marker.started_at.parse::<jiff::Timestamp>() else {
        return false;
    };
    started
        .checked_sub(allowance)
        .is_ok_and(|earliest| created < earliest)
}

/// Why an object is orphaned while its CRD is being deleted (the event's and the log's words).
pub const DEFINITION_DELETING: &str = "the PhoneNumber CRD is being deleted";

fn blocked_by(op: Op, e: &ApiError) -> Step {
    let failure = Failure {
        op,
        error: e.clone(),
    };
    Step::Blocked {
        cause: failure.to_error().to_string(),
        failure: Some(failure),
    }
}

/// A failed OneInbox call: what status says, and how the pass ends.
fn api_failure(obs: &Observation, failure: Failure) -> Step {
    let obj = &obs.obj;
    let ready = obj
        .condition(status::READY)
        .is_some_and(|c| c.status == "True");
    // A 429 says nothing about the registration: a Ready object stays Ready (no write).
    if failure.error.is_throttled() && ready {
        return Step::Fail(failure);
    }
    let data = StatusData {
        last_handled_reconcile_at: requested_reconcile(&obs.obj),
        ..status_data(obs)
    };
    let message = failure.to_error().to_string();
    match &failure.error {
        ApiError::KeyRejected { .. } => {
            let whose = match &obs.api_key {
                Some(ApiKey::Account(account) | ApiKey::Missing { account, .. }) => {
                    format!("the API key of {account} (its status says more)")
                }
                _ => "the operator's API key (Helm value apiKey.existingSecret, or ONEINBOX_API_KEY / --api-key-file)".into(),
            };
            let phase = stalled(
                reason::API_KEY_REJECTED,
                format!(
                    "{message}. Nothing in this object's spec can fix it: check {whose}. Retried with backoff (at most every 10 minutes), reading the key again first"
                ),
            );
            report(data, phase, Then::Fail(failure))
        }
        e if !e.is_retryable() => report(
            data,
            stalled(
                reason::REGISTRATION_REJECTED,
                format!("{message}. Fix the spec"),
            ),
            Then::AwaitChange,
        ),
        _ => report(
            data,
            Phase::Progressing {
                reason: reason::API_UNAVAILABLE,
                message,
            },
            Then::Fail(failure),
        ),
    }
}

/// How long the object has been not Ready (zero if it is Ready now).
fn not_ready_for(obs: &Observation) -> Duration {
    let not_ready_since = obs
        .obj
        .condition(status::READY)
        .filter(|c| c.status == "False")
        .map(|c| c.last_transition_time.0)
        .unwrap_or(obs.wall);
    Duration::try_from(obs.wall.duration_since(not_ready_since)).unwrap_or(Duration::ZERO)
}

/// A Secret the object needs is missing or unusable: Reconciling during the grace period,
/// Stalled after it.
fn wait_for_secret(
    obs: &Observation,
    problem: &SecretProblem,
    account: Option<&AccountId>,
    settings: &Settings,
) -> Step {
    let waited = not_ready_for(obs);
    let grace = settings.secret_grace_period;
    let (why, fix) = match account {
        // The account's Secret, not one this object names: whose it is, for a reader who
        // cannot read the account's spec.
        Some(account) => (
            format!(
                "the API key of {account} (the account's apiKeySecretRef): {}",
                problem_text(problem)
            ),
            problem_fix(problem, &format!("spec.apiKeySecretRef.key of {account}")),
        ),
        None => (
            problem_text(problem),
            problem_fix(problem, "spec.providerConfig.authPasswordSecretRef.key"),
        ),
    };
    let reason = match problem.kind {
        SecretProblemKind::Absent => reason::SECRET_NOT_FOUND,
        _ => reason::SECRET_KEY_INVALID,
    };
    let data = StatusData {
        last_handled_reconcile_at: requested_reconcile(&obs.obj),
        ..status_data(obs)
    };
    if waited >= grace {
        // The Secret watch brings the object back when the Secret changes; without it, look
        // again every shortest poll interval.
        let then = match settings.secret_access {
            SecretAccess::Watch => Then::AwaitChange,
            SecretAccess::Get => Then::Requeue(settings.min_poll_interval),
        };
        report(data, stalled(reason, format!("{why}. {fix}")), then)
    } else {
        let phase = Phase::Progressing {
            reason,
            message: format!("{why}; waiting up to {}s for it. {fix}", grace.as_secs()),
        };
        report(
            data,
            phase,
            Then::Requeue(grace - waited + Duration::from_millis(500)),
        )
    }
}

/// Write a new registration's ids right away, with `event`: the status and phase decided here
/// (Available, or Provisioning while OneInbox has not activated it).
fn persist(
    obs: &Observation,
    registration: Registration,
    hash: Option<String>,
    event: (&'static str, String),
) -> Step {
    let data = StatusData {
        remote: RemoteFacts::from_registration(&registration),
        credentials_hash: hash,
        pending_create: None,
        last_handled_reconcile_at: requested_reconcile(&obs.obj),
        secret_versions: versions_used(obs),
    };
    let phase = if registration.is_active() {
        Phase::Available
    } else {
        Phase::Progressing {
            reason: reason::PROVISIONING,
            message: format!(
                "OneInbox reports state {:?}; waiting for \"active\"",
                registration.status
            ),
        }
    };
    Step::Persist {
        registration,
        data: Box::new(data),
        phase,
        event,
    }
}

/// The answer of this pass's PATCH, if its last step was one.
fn patched(obs: &Observation) -> Option<&std::result::Result<Registration, ApiError>> {
    match &obs.last {
        Outcome::Patched { answer, .. } => Some(answer),
        _ => None,
    }
}

/// The id of a registration this pass has just seen exist: the one it persisted or patched.
fn alive_now(obs: &Observation) -> Option<&str> {
    match &obs.last {
        Outcome::Persisted(reg)
        | Outcome::Patched {
            answer: Ok(reg), ..
        } => Some(reg.id.as_str()),
        Outcome::Patched {
            registered: Some(reg),
            ..
        } => Some(reg.id.as_str()),
        _ => None,
    }
}

/// The object is Stalled for `why` with this status data kept as it is.
fn stall(obs: &Observation, why: &'static str, message: String, then: Then) -> Step {
    let data = StatusData {
        last_handled_reconcile_at: requested_reconcile(&obs.obj),
        ..StatusData::current(&obs.obj)
    };
    report(data, stalled(why, message), then)
}

fn stalled(reason: &'static str, message: String) -> Phase {
    Phase::Stalled { reason, message }
}

fn report(data: StatusData, phase: Phase, then: Then) -> Step {
    Step::Report { data, phase, then }
}

/// Whether the object is Stalled for `why` for this very input: the same generation, and no
/// reconcile was requested since. The request that failed is then not repeated.
fn refused(obs: &Observation, why: &str) -> bool {
    let obj = &obs.obj;
    obj.condition(status::STALLED)
        .is_some_and(|c| c.reason == why && c.observed_generation == obj.metadata.generation)
        && reconcile_request_handled(obs)
}

fn reconcile_request_handled(obs: &Observation) -> bool {
    let obj = &obs.obj;
    obj.status
        .as_ref()
        .and_then(|s| s.last_handled_reconcile_at.as_deref())
        == reconcile_token(obj)
}

/// The reconcile-now token as status can hold it (the CRD bounds the field).
fn reconcile_token(obj: &crate::crd::PhoneNumber) -> Option<&str> {
    obj.annotation(ANNOTATION_RECONCILE_REQUESTED_AT).map(|t| {
        let mut end = t.len().min(crate::crd::MAX_RECONCILE_TOKEN);
        while !t.is_char_boundary(end) {
            end -= 1;
        }
        &t[..end]
    })
}

/// The reconcile request this pass handles (echoed in status).
pub fn requested_reconcile(obj: &crate::crd::PhoneNumber) -> Option<String> {
    reconcile_token(obj).map(str::to_owned).or_else(|| {
        obj.status
            .as_ref()
            .and_then(|s| s.last_handled_reconcile_at.clone())
    })
}

fn hash_now(obs: &Observation, settings: &Settings) -> Option<String> {
    obs.credentials
        .as_ref()?
        .as_ref()
        .ok()
        .map(|c| credentials::credentials_hash(&settings.hash_key, &obs.uid(), c))
}

/// Whether a GET now would be redundant: the same generation and credentials were checked
/// against the API within the interval, and the status says Ready with nothing pending.
fn fresh(obs: &Observation, id: &str, current_hash: Option<&str>) -> bool {
    let obj = &obs.obj;
    let Some(status) = obj.status.as_ref() else {
        return false;
    };
    let ready = obj
        .condition(status::READY)
        .is_some_and(|c| c.status == "True");
    let in_sync = status.phone_number_id.as_deref() == Some(id)
        && status.observed_generation == obj.metadata.generation
        && only_names(obj, id)
        && reconcile_request_handled(obs)
        && (current_hash.is_none() || status.credentials_hash.as_deref() == current_hash)
        && obj.condition(status::STALLED).is_none();
    if !ready || !in_sync {
        return false;
    }
    let Some(checked) = &obs.memory.check else {
        return false;
    };
    if checked.generation != obj.metadata.generation || checked.id != id {
        return false;
    }
    checked
        .interval
        .is_some_and(|interval| obs.now.saturating_duration_since(checked.at) < interval)
}

/// The registration as the last check saw it, when that is good enough to diff a spec change
/// against (no reconcile was requested since, same id, within the interval).
fn cached_remote(obs: &Observation, id: &str) -> Option<Remote> {
    let status = obs.obj.status.as_ref()?;
    // Without the finalizer the registration is not taken over yet (an object switched from
    // Observe): it is read and adopted first. An annotation naming another id is set right only
    // after a read shows the status's id still exists (else the user's id is the one to adopt).
    if status.phone_number_id.as_deref() != Some(id)
        || !obs.obj.has_finalizer()
        || obs
            .obj
            .annotation(ANNOTATION_PHONE_NUMBER_ID)
            .is_some_and(|a| a != id)
        || !reconcile_request_handled(obs)
        || status.state.is_none()
    {
        return None;
    }
    let checked = obs.memory.check.as_ref()?;
    let within = checked
        .interval
        .is_none_or(|i| obs.now.saturating_duration_since(checked.at) < i);
    (checked.id == id && within).then(|| Remote {
        id: id.to_owned(),
        facts: RemoteFacts::from_status(status),
        patchable: checked.remote,
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Replacement {
    No,
    Report,
    Now,
}

/// Whether the credentials changed since `id` was registered, and what the policy says.
fn replacement(obs: &Observation, id: &str, current_hash: Option<&str>) -> Replacement {
    let status = obs.obj.status.as_ref();
    let registered = status.and_then(|s| s.credentials_hash.as_deref());
    let (Some(registered), Some(current)) = (registered, current_hash) else {
        return Replacement::No;
    };
    // Made with another key (or before hashes had key ids): a new baseline, not a change.
    let same_key = credentials::hash_key_id(registered)
        .is_some_and(|k| Some(k) == credentials::hash_key_id(current));
    if registered == current
        || !same_key
        || status.and_then(|s| s.phone_number_id.as_deref()) != Some(id)
    {
        return Replacement::No;
    }
    match obs.obj.spec.replacement_policy {
        ReplacementPolicy::Manual => Replacement::Report,
        ReplacementPolicy::Replace => Replacement::Now,
    }
}

/// What a pass knows of the registration: the facts the status shows, and the digest of the
/// fields a PATCH can change.
#[derive(Clone, Debug)]
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
}

mod apply;
mod deletion;

/// A rule of the chains in apply.rs and deletion.rs: `Break(step)` decides, `Continue(value)`
/// hands on what the next rules need.
type Rule<T = ()> = std::ops::ControlFlow<Step, T>;

#[cfg(test)]
#[path = "decide_table.rs"]
mod table;
