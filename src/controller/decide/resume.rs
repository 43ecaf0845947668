//! What status records, trusted without a read: after a restart a settled object's first
//! check is spread over the poll interval (no burst of calls), and the credentials' hash
//! status records stands for the password while the Secret watch reports the same versions.

use super::*;

/// Whether the password need not be read: the spec is the one status describes, nothing is
/// Stalled (a pending replacement compares the new credentials), the recorded hash is made
/// with the current key, and the Secret watch reports the very versions status records.
pub(super) fn credentials_as_recorded(obs: &Observation, settings: &Settings) -> bool {
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
        && obs.secrets.versions.as_ref() == Some(&st.secret_versions)
}

/// After a restart (no check in memory), a Ready object whose status records this very input
/// (the generation, the id, a credentials hash made with the current key, the Secret versions
/// the watch reports) is not
/// checked at once: its first check is spread over the poll interval, so a restart costs no
/// burst of calls. `None`: decide as usual (reconciled now).
pub(super) fn resume(obs: &Observation, settings: &Settings) -> Option<Step> {
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
        match &obs.secrets.versions {
            Some(v) if *v == st.secret_versions => {}
            None if !obs.secrets.listed => {
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
pub(super) fn settled_id<'a>(obs: &'a Observation, ready_reason: &str) -> Option<&'a str> {
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
pub(super) fn only_names(obj: &PhoneNumber, id: &str) -> bool {
    obj.annotation(ANNOTATION_PHONE_NUMBER_ID)
        .is_none_or(|a| a == id)
        && obj.pending_create().is_none()
}

/// Remember `id` as checked now, with the first drift check spread over the poll interval.
pub(super) fn resume_step(
    obs: &Observation,
    id: &str,
    settings: &Settings,
    remote: PatchableDigest,
) -> Step {
    let memo = Memo::Resumed {
        id: id.to_owned(),
        generation: obs.generation,
        first_check_in: polling::poll_interval(
            &obs.obj,
            settings.poll_interval,
            settings.min_poll_interval,
        )
        .map(|i| polling::first_check_in(&obs.uid(), i)),
        remote,
    };
    Step::Remember {
        memo,
        then: Box::new(Step::Done(DoneAfter::AwaitChange)),
    }
}

/// After a restart, an observed object whose status mirrors an active registration for this
/// very generation is not looked at at once, as `resume` does for managed ones: its first
/// check is spread over the poll interval (no restart storm of GETs). It reads no Secret, so
/// only the status decides. `None`: decide as usual.
pub(super) fn resume_observed(obs: &Observation, settings: &Settings) -> Option<Step> {
    if obs.fetched.is_some() || obs.lookup.is_some() {
        return None;
    }
    let id = settled_id(obs, reason::OBSERVED)?;
    // Observe compares the registration it reads at each check, never this.
    Some(resume_step(obs, id, settings, PatchableDigest::unread()))
}
