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
use deletion::decide_deletion;
use std::ops::ControlFlow::{Break, Continue};

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

/// The next step of the pass: what the first rule that decides yields.
pub fn decide(obs: &Observation, settings: &Settings) -> Step {
    match chain(obs, settings) {
        Break(step) | Continue(step) => step,
    }
}

/// The rules, in order of precedence: the first that decides ends the chain. Each rule either
/// decides (`Break`) or hands on what the rules after it need (`Continue`).
fn chain(obs: &Observation, settings: &Settings) -> Rule<Step> {
    // Deletion: a pass deleted while it applied starts again; a deletion has its own chain.
    deleted_during_pass(obs)?;
    deletion(obs)?;
    // Pause and Observe: a paused object waits; a switch to Observe drops the finalizer first.
    apply::paused(obs)?;
    apply::disowned(obs)?;
    // Ownership: another object manages the id or the number.
    apply::id_held_elsewhere(obs)?;
    apply::number_held_elsewhere(obs)?;
    // Observe only mirrors the registration (observe.rs).
    apply::observed(obs, settings)?;
    // Nothing to read or call: resumed after a restart, or checked recently.
    apply::resumed(obs, settings)?;
    apply::fresh_enough(obs)?;
    // Credentials: the account's key, then the credentials' hash.
    apply::key(obs, settings)?;
    let hash = apply::credentials(obs, settings)?;
    // Registration: the one OneInbox holds (replaced, adopted), or a new one.
    let (remote, hash) = apply::registration(obs, hash, settings)?;
    // Update and drift: one PATCH of the changed fields; the id annotation set right.
    apply::in_line(obs, &remote)?;
    apply::annotation(obs, &remote)?;
    // Done: the status, and when to look again.
    Continue(apply::report_state(obs, settings, remote, hash))
}

/// Deleted while this pass was applying (a write answered with the deleted object): what the
/// pass did so far (e.g. the DELETE of a replacement) says nothing about the deletion. A new
/// pass starts from a fresh observation.
fn deleted_during_pass(obs: &Observation) -> Rule {
    let deleting = obs.obj.metadata.deletion_timestamp.is_some();
    if deleting != obs.deleting_at_start {
        return Break(Step::Done(DoneAfter::Requeue(Duration::ZERO)));
    }
    Continue(())
}

fn deletion(obs: &Observation) -> Rule {
    if obs.deleting_at_start {
        return Break(decide_deletion(obs));
    }
    Continue(())
}

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
    /// End the pass and write nothing: wait, requeue, or fail (a 429 says nothing about the
    /// object).
    Done(DoneAfter),
    /// Update this process's memory of the object (no write), then take `then`.
    Remember { memo: Memo, then: Box<Step> },
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
            Step::Done(DoneAfter::Failure(_)) => "fail",
            Step::Done(_) => "done",
            Step::Adopt { .. } => "adopt",
            Step::ReportLost { .. } => "report lost",
            Step::Replace { .. } => "replace",
            Step::Register { .. } => "register",
            Step::Persist { .. } => "persist",
            Step::Patch { .. } => "patch",
            Step::Annotate { .. } => "annotate",
            Step::Disown => "disown",
            Step::Remember { memo, .. } => match memo {
                Memo::CleanRefusal { .. } => "remember clean refusal",
                Memo::ForgetCheck => "forget check",
                Memo::Resumed { .. } => "resume",
            },
            Step::Orphan { .. } => "orphan",
            Step::Deregister { .. } => "deregister",
            Step::Release { .. } => "release",
            Step::Blocked { .. } => "blocked",
        }
    }
}

/// How a pass that writes nothing ends.
#[derive(Clone, Debug, PartialEq)]
pub enum DoneAfter {
    AwaitChange,
    Requeue(Duration),
    /// With this failure: the controller's error policy backs off.
    Failure(Failure),
}

/// What a pass records in this process's memory of the object (never on the object).
#[derive(Clone, Debug, PartialEq)]
pub enum Memo {
    /// A clean 429 refused this pending attempt: the next attempt posts without a look-up.
    CleanRefusal { token: String },
    /// Forget the last check: what the API holds is no longer known.
    ForgetCheck,
    /// After a restart, the status records this very input: trust it as the last check, with
    /// the first drift check in `first_check_in` (spread over the interval).
    Resumed {
        id: String,
        generation: Option<i64>,
        first_check_in: Option<Duration>,
        remote: PatchableDigest,
    },
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

/// Why an object is orphaned while its CRD is being deleted (the event's and the log's words).
pub const DEFINITION_DELETING: &str = "the PhoneNumber CRD is being deleted";

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

mod apply;
mod deletion;
mod observe;
mod problems;
mod register;
mod remote;
mod resume;

use observe::decide_observe;
pub use problems::account_problem_text;
use problems::{api_failure, api_key_step, blocked_by, wait_for_secret};
use register::{made_before_attempt, register};
use remote::{Remote, Replacement, alive_now, fresh, patched, remote, replacement, yields};
use resume::{credentials_as_recorded, only_names, resume, resume_observed};

/// A rule of the chains here and in deletion.rs: `Break(step)` decides, `Continue(value)`
/// hands on what the next rules need.
type Rule<T = ()> = std::ops::ControlFlow<Step, T>;

#[cfg(test)]
#[path = "decide_table.rs"]
mod table;
