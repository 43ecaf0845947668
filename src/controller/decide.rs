//! Decide: the whole decision table of the reconciler, as one pure function of what a pass has
//! observed so far. `decide` returns the next `Step`: a read the pass still needs, an effect, or
//! the status to report and how the pass ends. The driver (`act`) carries the step out, adds
//! its result to the observation and asks again, until a step ends the pass.
//!
//! `chain` below lists the rules in order of precedence: deletion, pause and Observe,
//! ownership, credentials, registration, update, drift, done. The rules live in decide/: the
//! live object's in apply.rs and the deletion's in deletion.rs, with what they share in
//! observe.rs (Observe only), remote.rs (the registration as known), register.rs, resume.rs
//! (after a restart) and problems.rs (what status says when something is in the way).
//!
//! Guards of the form "don't repeat a request that was refused" are read here from the
//! observation (the Stalled condition, its generation, the credentials hash and the handled
//! reconcile request), never checked inside an effect.

use std::ops::ControlFlow::{Break, Continue};
use std::time::Duration;

use kube::ResourceExt;

use super::Settings;
use super::credentials::{self, Credentials};
use super::observe::{AccountProblem, ApiKey, Observation, Outcome};
use super::plan::{self, PatchableDigest};
use super::polling;
use super::status::{
    self, Phase, RemoteFacts, StatusData, reason, reconcile_token, requested_reconcile,
};
use super::step::{DEFINITION_DELETING, DoneAfter, Failure, Memo, Op, Read, Step, Then};
use crate::crd::AccountId;
use crate::crd::{ANNOTATION_PHONE_NUMBER_ID, PhoneNumber, RegistrationAttempt, ReplacementPolicy};
use crate::oneinbox::{ApiError, PatchRequest, Registration};
use crate::secrets::{SecretAccess, SecretProblem, SecretProblemKind, problem_fix, problem_text};
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
