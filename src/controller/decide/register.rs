//! Registering the number: settle an attempt in flight by a look-up, act on the POST's
//! answer, and never repeat a registration OneInbox refused for this input.

use super::*;

/// The registration once the number is registered (or found registered by an interrupted
/// attempt); `Err` is the step to take first.
pub(super) fn register(
    obs: &Observation,
    credentials: &Result<Credentials, SecretProblem>,
    hash: Option<&str>,
    settings: &Settings,
) -> Result<Remote, Box<Step>> {
    let marker = obs.obj.pending_create();
    let in_doubt = in_doubt(obs, marker.as_ref());
    let credentials = match credentials {
        Ok(c) => c,
        Err(problem) => {
            let step = without_credentials(obs, problem, marker.as_ref(), in_doubt, settings);
            return Err(Box::new(step));
        }
    };
    let hash = hash.map(str::to_owned).unwrap_or_default();
    if let Outcome::Posted(answer) = &obs.last {
        return Err(Box::new(after_post(obs, answer, marker.as_ref(), hash)));
    }
    // An earlier attempt may have registered it: look before posting again.
    if in_doubt && let Some(step) = settle_attempt(obs, marker.as_ref(), Some(hash.clone())) {
        return Err(Box::new(step));
    }
    if let Some(step) = refused_before(obs, &hash) {
        return Err(Box::new(step));
    }
    Err(Box::new(Step::Register {
        credentials: credentials.clone(),
        drop_old_ids: marker
            .is_none()
            .then(|| without_old_ids(obs, &hash))
            .flatten(),
        hash,
        marker_present: marker.is_some(),
    }))
}

/// A new attempt on an object whose status still names a registration (lost or replaced):
/// the status without its ids, Reconciling while the number registers again.
fn without_old_ids(obs: &Observation, hash: &str) -> Option<Box<(StatusData, Phase)>> {
    let holds_ids = obs
        .obj
        .status
        .as_ref()
        .is_some_and(|s| s.phone_number_id.is_some());
    holds_ids.then(|| {
        let data = StatusData {
            remote: RemoteFacts::default(),
            credentials_hash: Some(hash.to_owned()),
            pending_create: None,
            last_handled_reconcile_at: requested_reconcile(&obs.obj),
            secret_versions: obs.versions_used(),
        };
        let phase = Phase::Progressing {
            reason: reason::CREATING,
            message: "Registering the number with OneInbox".into(),
        };
        Box::new((data, phase))
    })
}

/// Whether an attempt is in flight whose POST may have landed. After a clean 429 nothing can
/// have been registered: the next attempt posts directly.
fn in_doubt(obs: &Observation, marker: Option<&RegistrationAttempt>) -> bool {
    let refused_cleanly =
        marker.is_some_and(|m| obs.memory.clean_refusal.as_deref() == Some(m.token.as_str()));
    marker.is_some() && !refused_cleanly
}

/// The credentials cannot be read. The look-up needs no Secret: an attempt in flight is
/// settled first, so that it neither hides a registration it made nor keeps claiming the
/// number (against an object annotated with the number's registration) while the Secret is
/// missing. Nothing is in flight (any more): the marker goes while the object waits.
fn without_credentials(
    obs: &Observation,
    problem: &SecretProblem,
    marker: Option<&RegistrationAttempt>,
    in_doubt: bool,
    settings: &Settings,
) -> Step {
    if in_doubt {
        let registered = marker
            .and_then(|m| m.credentials_hash_for(&obs.obj))
            .or_else(|| {
                obs.obj
                    .status
                    .as_ref()
                    .and_then(|s| s.credentials_hash.clone())
            });
        if let Some(step) = settle_attempt(obs, marker, registered) {
            return step;
        }
    }
    without_marker(wait_for_secret(obs, problem, None, settings))
}

/// What the POST of this pass answered: persist the new registration, or report why not.
fn after_post(
    obs: &Observation,
    answer: &std::result::Result<Registration, ApiError>,
    marker: Option<&RegistrationAttempt>,
    hash: String,
) -> Step {
    match answer {
        Ok(reg) => persist(
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
        ),
        Err(ApiError::AlreadyRegistered { phone_id, .. }) => {
            posted_but_taken(obs, phone_id, marker, hash)
        }
        Err(e @ (ApiError::Rejected { .. } | ApiError::NotFound)) => {
            let msg = format!(
                "OneInbox rejected the registration: {e}. Fix the spec or the referenced Secret"
            );
            let data = StatusData {
                pending_create: None,
                credentials_hash: Some(hash),
                last_handled_reconcile_at: requested_reconcile(&obs.obj),
                ..status_data(obs)
            };
            report(
                data,
                stalled(reason::REGISTRATION_REJECTED, msg),
                Then::AwaitChange,
            )
        }
        // Ambiguous or transient: the marker stays, so the next pass looks up first; after a
        // clean 429 nothing can have been registered, so the next pass posts directly.
        Err(e) => {
            let failure = Failure {
                op: Op::Register,
                error: e.clone(),
            };
            match marker {
                Some(m) if e.is_throttled() => Step::Remember {
                    memo: Memo::CleanRefusal {
                        token: m.token.clone(),
                    },
                    then: Box::new(api_failure(obs, failure)),
                },
                _ => api_failure(obs, failure),
            }
        }
    }
}

/// The POST found the number registered as `phone_id`, but maybe by this attempt: a repeated
/// POST after an ambiguous outcome, or another process (a replaced pod still draining) that
/// posted under the same marker. A registration made since the attempt started is its own; one
/// made before it is someone else's. A first POST had no look-up before it, so a registration
/// made just before the marker is not given the clock-skew allowance: it is someone else's
/// (made outside moments earlier), never adopted by chance.
fn posted_but_taken(
    obs: &Observation,
    phone_id: &str,
    marker: Option<&RegistrationAttempt>,
    hash: String,
) -> Step {
    let allowance = if obs.lookup.is_some() {
        CLOCK_SKEW_ALLOWANCE
    } else {
        jiff::SignedDuration::ZERO
    };
    match &obs.fetched {
        None => Step::Read(Read::Registration(phone_id.to_owned())),
        Some(Ok(reg)) if made_before(reg, marker, allowance) => {
            already_registered(obs, &reg.id, PatchableDigest::of_registration(reg))
        }
        Some(Ok(reg)) => persist(
            obs,
            reg.clone(),
            Some(hash),
            (
                "Adopted",
                format!("Adopted {phone_id}, registered under this object's pending attempt"),
            ),
        ),
        Some(Err(e)) => api_failure(
            obs,
            Failure {
                op: Op::Get,
                error: e.clone(),
            },
        ),
    }
}

/// A request OneInbox refused is not repeated until the spec, the credentials or the reconcile
/// request change. The registration in the way of an AlreadyRegistered may be removed outside
/// the cluster: the number is looked up once per poll interval (a GET, never a POST), and
/// registered only once it is free. `None`: post.
fn refused_before(obs: &Observation, hash: &str) -> Option<Step> {
    let refused_for_this_input = |why: &str| {
        refused(obs, why)
            && obs
                .obj
                .status
                .as_ref()
                .and_then(|s| s.credentials_hash.as_deref())
                == Some(hash)
    };
    if refused_for_this_input(reason::REGISTRATION_REJECTED) {
        return Some(Step::Done(DoneAfter::AwaitChange));
    }
    if !refused_for_this_input(reason::ALREADY_REGISTERED) {
        return None;
    }
    let looked_recently = obs.memory.check.as_ref().is_some_and(|c| {
        c.generation == obs.generation
            && c.interval
                .is_none_or(|i| obs.now.saturating_duration_since(c.at) < i)
    });
    if looked_recently {
        return Some(Step::Done(DoneAfter::AwaitChange));
    }
    match &obs.lookup {
        None => Some(Step::Read(Read::LookupByNumber)),
        Some(Err(e)) => Some(Step::Done(DoneAfter::Failure(Failure {
            op: Op::Lookup,
            error: e.clone(),
        }))),
        Some(Ok(Some(reg))) => Some(already_registered(
            obs,
            &reg.id,
            PatchableDigest::of_registration(reg),
        )),
        Some(Ok(None)) => None,
    }
}

/// The look-up that settles an attempt in flight (its POST may have landed): the step to take,
/// or `None` when the number is not registered (nothing of the attempt exists). `hash` is the
/// credentials hash a registration it made is recorded with.
pub(super) fn settle_attempt(
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
pub(super) fn without_marker(step: Step) -> Step {
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

/// The number is registered as `phone_id` by someone else: Stalled, with the command that
/// adopts it deliberately; the pending marker goes (nothing of ours is in flight).
pub(super) fn already_registered(
    obs: &Observation,
    phone_id: &str,
    patchable: PatchableDigest,
) -> Step {
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
pub(super) const CLOCK_SKEW_ALLOWANCE: jiff::SignedDuration = jiff::SignedDuration::from_secs(1);

/// Whether `reg` was made before the attempt that `marker` records started (so it cannot be
/// the attempt's own). A time that does not parse proves nothing: then it may be ours.
pub(super) fn made_before_attempt(
    reg: &Registration,
    marker: Option<&RegistrationAttempt>,
) -> bool {
    made_before(reg, marker, CLOCK_SKEW_ALLOWANCE)
}

/// Whether `reg` was made more than `allowance` before the attempt `marker` records started.
pub(super) fn made_before(
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

/// Write a new registration's ids right away, with `event`: the status and phase decided here
/// (Available, or Provisioning while OneInbox has not activated it).
pub(super) fn persist(
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
        secret_versions: obs.versions_used(),
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
