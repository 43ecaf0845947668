//! The rules of a pass over an object that is not being deleted. `decide::chain` runs them in
//! order of precedence; each decides (`Break`) or hands on what the next rules need.
//!
//! - `paused`: a paused object waits.
//! - `disowned`: switched to Observe, the finalizer goes before anything else.
//! - `id_held_elsewhere`, `number_held_elsewhere`: another object manages it: Stalled.
//! - `observed`: `managementPolicy: Observe` only mirrors (observe.rs).
//! - `resumed`, `fresh_enough`: after a restart, or checked recently: nothing to read or call.
//! - `key`, `credentials`: the account's key, then the credentials' hash.
//! - `registration`: the registration as OneInbox holds it: replaced, registered, adopted.
//! - `in_line`: one PATCH of the changed fields.
//! - `annotation`: an annotation naming another id is set right.
//! - `report_state`: the status, and when to look again.

use std::ops::ControlFlow::{Break, Continue};

use super::*;

/// Decide with `step` if there is one.
fn decided(step: Option<Step>) -> Rule {
    match step {
        Some(step) => Break(step),
        None => Continue(()),
    }
}

pub(super) fn paused(obs: &Observation) -> Rule {
    decided(obs.obj.is_paused().then(|| {
        report(
            StatusData::current(&obs.obj),
            Phase::Paused,
            Then::AwaitChange,
        )
    }))
}

/// Switched from Full to Observe: the finalizer goes before anything else, so that from now on
/// deleting the object never deregisters the number.
pub(super) fn disowned(obs: &Observation) -> Rule {
    decided((obs.obj.is_observe_only() && obs.obj.has_finalizer()).then_some(Step::Disown))
}

/// An id another object holds: the most specific reason, so it goes first.
pub(super) fn id_held_elsewhere(obs: &Observation) -> Rule {
    let (Some(id), Some(owner)) = (obs.obj.known_id(), &obs.claims.id_owner) else {
        return Continue(());
    };
    let msg = format!(
        "PhoneNumber {owner} already manages OneInbox registration {id}; this object will not adopt or change it, and deleting it leaves the registration alone. Remove the {ANNOTATION_PHONE_NUMBER_ID} annotation, or delete this object"
    );
    Break(stall(
        obs,
        reason::DUPLICATE_PHONE_NUMBER,
        msg,
        Then::Requeue(DUPLICATE_RECHECK),
    ))
}

/// Another object owns the number. With its own attempt in flight, the object looks its
/// registration up first: it may hold one already (a crash hid its id), and then no other
/// object owns the number.
pub(super) fn number_held_elsewhere(obs: &Observation) -> Rule {
    let attempt_in_flight = obs.obj.pending_create().is_some();
    let (Some(owner), false, true) = (&obs.claims.number_owner, attempt_in_flight, yields(obs))
    else {
        return Continue(());
    };
    let msg = format!(
        "PhoneNumber {owner} already manages {}; this object will not register it. Delete this object, or change its phoneNumber",
        obs.obj.spec.phone_number
    );
    Break(stall(
        obs,
        reason::DUPLICATE_PHONE_NUMBER,
        msg,
        Then::Requeue(DUPLICATE_RECHECK),
    ))
}

pub(super) fn observed(obs: &Observation, settings: &Settings) -> Rule {
    decided(
        obs.obj
            .is_observe_only()
            .then(|| decide_observe(obs, settings)),
    )
}

pub(super) fn resumed(obs: &Observation, settings: &Settings) -> Rule {
    decided(resume(obs, settings))
}

/// Checked recently and no referenced Secret changed since, and the account still allows the
/// namespace: nothing to read or call.
pub(super) fn fresh_enough(obs: &Observation) -> Rule {
    let known = obs.obj.known_id();
    let fresh = known.as_deref().is_some_and(|id| {
        obs.secrets.unchanged && !obs.account.grant_refused && fresh(obs, id, None)
    });
    decided(fresh.then_some(Step::Done(DoneAfter::AwaitChange)))
}

pub(super) fn key(obs: &Observation, settings: &Settings) -> Rule {
    decided(api_key_step(obs, settings))
}

/// The credentials' hash. The password Secret at the version the last check used: its hash is
/// the one status records, and it is read only if the number is to be registered.
pub(super) fn credentials(obs: &Observation, settings: &Settings) -> Rule<Option<String>> {
    Continue(match &obs.credentials {
        None if credentials_as_recorded(obs, settings) => obs
            .obj
            .status
            .as_ref()
            .and_then(|s| s.credentials_hash.clone()),
        None => return Break(Step::Read(Read::Credentials)),
        Some(c) => c
            .as_ref()
            .ok()
            .map(|c| credentials::credentials_hash(&settings.hash_key, &obs.uid(), c)),
    })
}

/// The registration as OneInbox holds it, with the hash to record: the one known (replaced
/// when its credentials changed and the policy says so), or a new one.
pub(super) fn registration(
    obs: &Observation,
    hash: Option<String>,
    settings: &Settings,
) -> Rule<(Remote, Option<String>)> {
    let known = obs.obj.known_id();
    let remote = match remote(obs, known.as_deref(), hash.as_deref()) {
        Ok(remote) => remote,
        Err(step) => return Break(*step),
    };
    Continue(match remote {
        Some(r) => match replacement(obs, &r.id, hash.as_deref()) {
            Replacement::No => (r, hash),
            Replacement::Report => {
                let registered = obs
                    .obj
                    .status
                    .as_ref()
                    .and_then(|s| s.credentials_hash.clone());
                (r, registered)
            }
            // Deregistered in this pass: `remote` is then `None`, see below.
            Replacement::Now => return Break(Step::Replace { id: r.id }),
        },
        None => {
            let Some(credentials) = &obs.credentials else {
                return Break(Step::Read(Read::Credentials));
            };
            match register(obs, credentials, hash.as_deref(), settings) {
                Ok(r) => (r, hash),
                Err(step) => return Break(*step),
            }
        }
    })
}

/// Bring the PATCHable fields in line (one PATCH, changed fields only), or act on its answer.
pub(super) fn in_line(obs: &Observation, remote: &Remote) -> Rule {
    let patch = plan::patch_for(&obs.obj, &remote.patchable);
    if patch.is_empty() {
        return Continue(());
    }
    match patched(obs) {
        None if refused(obs, reason::UPDATE_REJECTED) => Break(Step::Done(DoneAfter::AwaitChange)),
        None => Break(Step::Patch {
            event: patch_event(obs, &remote.id, &patch),
            id: remote.id.clone(),
            patch,
        }),
        // `remote` already is the PATCH's answer when it succeeded.
        Some(Ok(_)) => Continue(()),
        Some(Err(ApiError::NotFound)) => Break(Step::Remember {
            memo: Memo::ForgetCheck,
            then: Box::new(Step::Done(DoneAfter::Requeue(GONE_RECHECK))),
        }),
        Some(Err(e @ ApiError::Rejected { .. })) => {
            let msg = format!("OneInbox rejected the update: {e}. Fix the spec");
            Break(stall(obs, reason::UPDATE_REJECTED, msg, Then::AwaitChange))
        }
        Some(Err(e)) => {
            let failure = Failure {
                op: Op::Update,
                error: e.clone(),
            };
            // A 429 changed nothing. Without an answer the PATCH may have been applied, and
            // the last check no longer says what the API holds: the next pass GETs.
            if e.is_throttled() {
                return Break(api_failure(obs, failure));
            }
            Break(Step::Remember {
                memo: Memo::ForgetCheck,
                then: Box::new(api_failure(obs, failure)),
            })
        }
    }
}

/// The event of a PATCH. Drift only if this spec was already in line at the last check; after
/// a restart (no record) a difference is reported as an update, and so is a spec edited while
/// this pass ran (its writes brought the newer generation back). A registration adopted in
/// this pass was never in line with this spec: its first PATCH is the adoption's.
fn patch_event(obs: &Observation, id: &str, patch: &PatchRequest) -> (&'static str, String) {
    let spec_changed = obs.memory.check.as_ref().is_none_or(|c| {
        c.generation != obs.generation || c.generation != obs.obj.metadata.generation
    });
    let fields = patch_fields(patch);
    if obs.last == Outcome::Adopted {
        (
            "UpdatedOnAdoption",
            format!("Brought {fields} of adopted registration {id} in line with the spec"),
        )
    } else if spec_changed {
        ("Updated", format!("Updated {fields} of registration {id}"))
    } else {
        (
            "DriftCorrected",
            format!(
                "Corrected drift of {fields} in registration {id} (changed outside the cluster)"
            ),
        )
    }
}

/// The names of the fields a PATCH changes, as the API spells them.
fn patch_fields(p: &PatchRequest) -> String {
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

/// The annotation is input (an adoption, a restore): one naming another id is set right, and
/// none is written on a create (the status holds the id).
pub(super) fn annotation(obs: &Observation, remote: &Remote) -> Rule {
    let other = obs
        .obj
        .annotation(ANNOTATION_PHONE_NUMBER_ID)
        .is_some_and(|a| a != remote.id);
    decided(other.then(|| Step::Annotate {
        id: remote.id.clone(),
    }))
}

/// The status of the registration OneInbox holds, and when to look again: at the next drift
/// check when it is active, at the provisioning poll while it is not.
pub(super) fn report_state(
    obs: &Observation,
    settings: &Settings,
    remote: Remote,
    hash: Option<String>,
) -> Step {
    let phase = phase_of(obs, settings, &remote);
    let active = matches!(phase, Phase::Available | Phase::AvailableButStalled { .. });
    let then = if active {
        checked(obs, &remote.id, remote.patchable)
    } else {
        Then::Requeue(settings.provisioning_poll)
    };
    let data = StatusData {
        remote: remote.facts,
        credentials_hash: hash,
        pending_create: None,
        last_handled_reconcile_at: requested_reconcile(&obs.obj),
        secret_versions: obs.versions_used(),
    };
    report(data, phase, then)
}

fn phase_of(obs: &Observation, settings: &Settings, remote: &Remote) -> Phase {
    let replacement_pending = matches!(
        replacement(obs, &remote.id, hash_now(obs, settings).as_deref()),
        Replacement::Report
    );
    let state = remote.facts.state.clone().unwrap_or_default();
    if state == "failed" {
        Phase::Stalled {
            reason: reason::REGISTRATION_FAILED,
            message: format!(
                "OneInbox reports provisioning of {} failed. Delete and re-create the PhoneNumber, or contact OneInbox support",
                remote.id
            ),
        }
    } else if !crate::oneinbox::is_active_state(&state) {
        Phase::Progressing {
            reason: reason::PROVISIONING,
            message: format!("OneInbox reports state {state:?}; waiting for \"active\""),
        }
    } else if replacement_pending {
        Phase::AvailableButStalled {
            reason: reason::REPLACEMENT_REQUIRED,
            message: "The SIP credentials changed, and OneInbox can only apply them by registering the number again. The number keeps working with the old credentials. Set spec.replacementPolicy: Replace to re-register, or restore the old credentials".into(),
        }
    } else {
        Phase::Available
    }
}
