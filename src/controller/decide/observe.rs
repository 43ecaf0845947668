//! `managementPolicy: Observe`: find the registration, mirror it into status, and report
//! where it differs from the spec. No OneInbox write.

use std::ops::ControlFlow::{Break, Continue};

use super::*;

/// Why Observe does not register a number it cannot find (the start of each such message).
const NOT_REGISTERING: &str = "managementPolicy is Observe, so the operator will not register it";

/// `managementPolicy: Observe`: find the registration (by the id the object names, or else by
/// number), mirror it into status, and report where it differs from the spec. No OneInbox
/// write, and no Secret but a tenant API key is read.
pub(super) fn decide_observe(obs: &Observation, settings: &Settings) -> Step {
    match observe(obs, settings) {
        Break(step) | Continue(step) => step,
    }
}

fn observe(obs: &Observation, settings: &Settings) -> Rule<Step> {
    if let Some(step) = resume_observed(obs, settings) {
        return Break(step);
    }
    let known_id = obs.obj.known_id();
    if let Some(id) = &known_id
        && fresh(obs, id, None)
    {
        return Break(Step::Done(DoneAfter::AwaitChange));
    }
    if let Some(step) = api_key_step(obs, settings) {
        return Break(step);
    }
    let reg = match &known_id {
        Some(id) => by_id(obs, id)?,
        None => by_number(obs, settings)?,
    };
    Continue(mirror(obs, settings, reg))
}

/// The registration the object names (annotation or status), read by id.
fn by_id<'a>(obs: &'a Observation, id: &str) -> Rule<&'a Registration> {
    let obj = &obs.obj;
    match (&obs.fetched, &obs.lookup) {
        // Found by number earlier in this pass; the annotation names it since.
        (_, Some(Ok(Some(found)))) if found.id == id => Continue(found),
        (None, _) => Break(Step::Read(Read::Registration(id.to_owned()))),
        (Some(Ok(reg)), _) if reg.phone_number != obj.spec.phone_number => {
            let msg = format!(
                "OneInbox registration {id} is for {}, not {}. Fix or remove the {ANNOTATION_PHONE_NUMBER_ID} annotation",
                reg.phone_number, obj.spec.phone_number
            );
            Break(stall(
                obs,
                reason::ID_MISMATCH,
                msg,
                Then::Requeue(MISMATCH_RECHECK),
            ))
        }
        (Some(Ok(reg)), _) => Continue(reg),
        (Some(Err(ApiError::NotFound)), _) => {
            let msg = format!(
                "OneInbox has no registration {id} (named by the {ANNOTATION_PHONE_NUMBER_ID} annotation or the status); {NOT_REGISTERING}. Fix the annotation, or register the number outside the cluster and annotate this object with its id, or set managementPolicy: Full (with providerConfig or credentialId) to register it"
            );
            Break(stall(
                obs,
                reason::REGISTRATION_NOT_FOUND,
                msg,
                Then::AwaitChange,
            ))
        }
        (Some(Err(e)), _) => Break(api_failure(
            obs,
            Failure {
                op: Op::Get,
                error: e.clone(),
            },
        )),
    }
}

/// The registration of the object's number, looked up by number.
fn by_number<'a>(obs: &'a Observation, settings: &Settings) -> Rule<&'a Registration> {
    let obj = &obs.obj;
    match &obs.lookup {
        None => Break(Step::Read(Read::LookupByNumber)),
        Some(Ok(Some(reg))) => Continue(reg),
        // It may be registered outside the cluster later: looked for again every interval.
        Some(Ok(None)) => {
            let msg = format!(
                "{} is not registered in OneInbox; {NOT_REGISTERING}. Register it outside the cluster (it is looked for again every poll interval), or set managementPolicy: Full (with providerConfig or credentialId) to register it",
                obj.spec.phone_number
            );
            let every =
                polling::poll_interval(obj, settings.poll_interval, settings.min_poll_interval)
                    .unwrap_or(settings.poll_interval);
            Break(stall(
                obs,
                reason::REGISTRATION_NOT_FOUND,
                msg,
                Then::Requeue(every),
            ))
        }
        Some(Err(e)) => Break(api_failure(
            obs,
            Failure {
                op: Op::Lookup,
                error: e.clone(),
            },
        )),
    }
}

/// Mirror `reg` into the annotation, then into status, with where it differs from the spec.
fn mirror(obs: &Observation, settings: &Settings, reg: &Registration) -> Step {
    let obj = &obs.obj;
    if obj.annotation(ANNOTATION_PHONE_NUMBER_ID) != Some(reg.id.as_str()) {
        return Step::Annotate { id: reg.id.clone() };
    }
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
    report(data, observed_phase(obj, reg), then)
}

/// The phase of an observed registration: failed, provisioning, or mirrored with its drift.
fn observed_phase(obj: &PhoneNumber, reg: &Registration) -> Phase {
    if reg.status == "failed" {
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
    }
}
