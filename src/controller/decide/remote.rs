//! What the pass knows of the registration the object names: read now, checked recently,
//! or answered by this pass's own call; and whether its credentials call for a replacement.

use super::*;

/// Whether the object yields its number to `obs.claims.number_owner`. An owner whose only claim is
/// an annotation naming another id holds the number only until this object's own id is read:
/// a number is registered once, so if the id this object names is a registration of its number,
/// the owner's id is not, and this object adopts it (a transient error is retried first).
pub(super) fn yields(obs: &Observation) -> bool {
    if !obs.claims.number_owner_names_another_id {
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
pub(super) fn remote(
    obs: &Observation,
    known_id: Option<&str>,
    hash: Option<&str>,
) -> Result<Option<Remote>, Box<Step>> {
    if let Some(known) = answered_in_pass(obs) {
        return known;
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
    read_now(obs, id, hash)
}

/// The registration as this pass's own last call answered it, if that says.
fn answered_in_pass(obs: &Observation) -> Option<Result<Option<Remote>, Box<Step>>> {
    match &obs.last {
        Outcome::Patched {
            answer: Ok(reg), ..
        }
        | Outcome::Persisted(reg) => Some(Ok(Some(Remote::of(reg)))),
        Outcome::Patched {
            registered: Some(reg),
            ..
        } => Some(Ok(Some(Remote::of(reg)))),
        // Registered in this pass because there was none (or a replacement released it).
        Outcome::Deregistered(Ok(_)) | Outcome::Posted { .. } => Some(Ok(None)),
        Outcome::Deregistered(Err(e)) => Some(Err(Box::new(api_failure(
            obs,
            Failure {
                op: Op::Deregister,
                error: e.clone(),
            },
        )))),
        _ => None,
    }
}

/// The registration `id` as a GET in this pass read it (or the GET to make).
fn read_now(obs: &Observation, id: &str, hash: Option<&str>) -> Result<Option<Remote>, Box<Step>> {
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
        Some(Ok(reg)) => held(obs, reg).map(Some),
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

/// The registration `reg` of this object's number, once the object holds it: adopted first
/// if it does not yet.
fn held(obs: &Observation, reg: &Registration) -> Result<Remote, Box<Step>> {
    let obj = &obs.obj;
    let holds = obj
        .status
        .as_ref()
        .and_then(|s| s.phone_number_id.as_deref())
        == Some(reg.id.as_str());
    // Held without the finalizer: mirrored under managementPolicy: Observe, and now taken
    // over. A PATCH in this pass came after this pass's adoption: its failure is reported,
    // never a second adoption (and PATCH) in a loop.
    let adopted_now = matches!(obs.last, Outcome::Adopted | Outcome::Patched { .. });
    if (!holds || !obj.has_finalizer()) && !adopted_now {
        return Err(Box::new(Step::Adopt {
            id: reg.id.clone(),
            takeover: holds,
        }));
    }
    Ok(Remote::of(reg))
}

/// Whether a GET now would be redundant: the same generation and credentials were checked
/// against the API within the interval, and the status says Ready with nothing pending.
pub(super) fn fresh(obs: &Observation, id: &str, current_hash: Option<&str>) -> bool {
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
pub(super) fn cached_remote(obs: &Observation, id: &str) -> Option<Remote> {
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
pub(super) enum Replacement {
    No,
    Report,
    Now,
}

/// Whether the credentials changed since `id` was registered, and what the policy says.
pub(super) fn replacement(obs: &Observation, id: &str, current_hash: Option<&str>) -> Replacement {
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
pub(super) struct Remote {
    pub(super) id: String,
    pub(super) facts: RemoteFacts,
    pub(super) patchable: PatchableDigest,
}

impl Remote {
    pub(super) fn of(reg: &Registration) -> Remote {
        Remote {
            id: reg.id.clone(),
            facts: RemoteFacts::from_registration(reg),
            patchable: PatchableDigest::of_registration(reg),
        }
    }
}

/// The answer of this pass's PATCH, if its last step was one.
pub(super) fn patched(obs: &Observation) -> Option<&std::result::Result<Registration, ApiError>> {
    match &obs.last {
        Outcome::Patched { answer, .. } => Some(answer),
        _ => None,
    }
}

/// The id of a registration this pass has just seen exist: the one it persisted or patched.
pub(super) fn alive_now(obs: &Observation) -> Option<&str> {
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
