//! A deletion pass, as an ordered chain of rules: the first that decides ends the chain.
//!
//! 1. `not_ours`: without our finalizer there is nothing to do.
//! 2. `orphaned`: Observe, Orphan, or the CRD being deleted (an uninstall) leave the
//!    registration as it is.
//! 3. `paused`: a paused object waits.
//! 4. `say_deleting`: the object says Deleting before anything is sent.
//! 5. `tenant`: the account's key is read; without it a 404 proves nothing.
//! 6. `target`: the registration this object made or holds, if any (a look-up by number after
//!    an interrupted attempt).
//! 7. `held_elsewhere`: another object manages it: left registered.
//! 8. `named_only`: named only in the annotation: deregistered only if it is this number's.
//! 9. `deregister`: DELETE, then release the finalizer with what OneInbox answered.

use std::ops::ControlFlow::{Break, Continue};

use super::{
    DEFINITION_DELETING, DoneAfter, Op, Read, Rule, Step, Then, account_problem_text, blocked_by,
    made_before_attempt, report,
};
use crate::controller::observe::{ApiKey, Observation, Outcome};
use crate::controller::status::{self, Phase, StatusData, reason};
use crate::crd::{ANNOTATION_PHONE_NUMBER_ID, DeletionPolicy};
use crate::definition::Definition;
use crate::oneinbox::{ApiError, Deregistered};
use crate::secrets::problem_text;

/// The registration a deletion is about.
struct Target {
    id: String,
    /// The status names it (the object registered or adopted it).
    holds: bool,
    /// The object names it (status or annotation), not only a look-up by number.
    named: bool,
}

pub(super) fn decide_deletion(obs: &Observation) -> Step {
    match chain(obs) {
        Break(step) | Continue(step) => step,
    }
}

fn chain(obs: &Observation) -> Rule<Step> {
    not_ours(obs)?;
    orphaned(obs)?;
    paused(obs)?;
    say_deleting(obs)?;
    let tenant_missing = tenant(obs)?;
    let target = target(obs, tenant_missing.as_deref())?;
    held_elsewhere(obs, &target)?;
    named_only(obs, &target)?;
    Continue(deregister(obs, target, tenant_missing))
}

fn not_ours(obs: &Observation) -> Rule {
    if obs.obj.has_finalizer() {
        Continue(())
    } else {
        Break(Step::Done(DoneAfter::AwaitChange))
    }
}

/// Observe, Orphan, or the CRD being deleted: the finalizer goes, the registration stays.
/// Deleting the CRD deletes every PhoneNumber: an uninstall, never a user's wish to release
/// each number (a released number may go to someone else for good).
fn orphaned(obs: &Observation) -> Rule {
    let obj = &obs.obj;
    let (because, unless_changed) = if obj.is_observe_only() {
        (
            "managementPolicy is Observe",
            Some(("/spec/managementPolicy", "Observe")),
        )
    } else if obj.spec.deletion_policy == Some(DeletionPolicy::Orphan) {
        (
            "deletionPolicy is Orphan",
            Some(("/spec/deletionPolicy", "Orphan")),
        )
    } else if obj.spec.deletion_policy.is_none()
        && obs.account.default_deletion_policy == DeletionPolicy::Orphan
    {
        // No guard: a patch cannot test that a field is absent. A policy set during this pass
        // is seen by the next one only if the finalizer is still there.
        (
            "deletionPolicy is unset and its account's (or the operator's) default is Orphan",
            None,
        )
    } else {
        match obs.definition {
            None => return Break(Step::Read(Read::Definition)),
            Some(Definition::Deleting) => (DEFINITION_DELETING, None),
            Some(Definition::Served | Definition::Unreadable) => return Continue(()),
        }
    };
    let what = obj
        .known_id()
        .map(|id| format!("registration {id}"))
        .unwrap_or_else(|| "the number".into());
    Break(Step::Orphan {
        what,
        because,
        unless_changed,
    })
}

fn paused(obs: &Observation) -> Rule {
    if obs.obj.is_paused() {
        Break(report(
            StatusData::current(&obs.obj),
            Phase::Paused,
            Then::AwaitChange,
        ))
    } else {
        Continue(())
    }
}

/// From the moment deregistration starts, the object no longer says Ready. A deregistration
/// follows the Deleting report of the same pass.
fn say_deleting(obs: &Observation) -> Rule {
    let says_deleting = obs
        .obj
        .condition(status::READY)
        .is_some_and(|c| c.status == "False" && c.reason == reason::DELETING);
    let reported = matches!(obs.last, Outcome::Continued | Outcome::Deregistered(_));
    if says_deleting || reported {
        return Continue(());
    }
    let phase = Phase::Progressing {
        reason: reason::DELETING,
        message: "The number is being deregistered from OneInbox".into(),
    };
    Break(report(StatusData::current(&obs.obj), phase, Then::Continue))
}

/// Why the account's own key cannot be used, if it cannot: the tenant Secret is gone and this
/// process never read it (the operator-wide key's 404 then proves nothing: another workspace's
/// number is a 404 too), or the account cannot be used.
fn tenant(obs: &Observation) -> Rule<Option<String>> {
    Continue(match &obs.api_key {
        None => return Break(Step::Read(Read::ApiKey)),
        Some(ApiKey::Missing {
            account,
            problem,
            last_known: false,
        }) => Some(format!(
            "the API key of {account} cannot be read ({}) and this process never read it",
            problem_text(problem)
        )),
        Some(ApiKey::Unusable(p)) => Some(account_problem_text(p)),
        Some(_) => None,
    })
}

/// The cause of a block when OneInbox's answer `what` cannot be trusted for want of the key.
fn unverifiable(tenant_missing: Option<&str>, what: &str) -> Option<String> {
    tenant_missing.map(|why| {
        format!("{why}, and with the operator-wide API key OneInbox reports {what}, which cannot prove the registration is gone from the account's workspace. Make the account usable again (or set deletionPolicy: Orphan)")
    })
}

/// The registration this object made or holds. The id comes from the object (status or
/// annotation); only an interrupted attempt looks the number up (its POST may have landed
/// before the id was written). Nothing remote made by this object: the finalizer goes.
fn target(obs: &Observation, tenant_missing: Option<&str>) -> Rule<Target> {
    let obj = &obs.obj;
    let known = obj.known_id();
    let named = known.is_some();
    let id = match known {
        Some(id) => Some(id),
        None if obj.pending_create().is_some() => found_by_number(obs, tenant_missing)?,
        None => None,
    };
    let Some(id) = id else {
        return Break(Step::Release {
            released: None,
            event: None,
        });
    };
    let holds = obj
        .status
        .as_ref()
        .and_then(|s| s.phone_number_id.as_deref())
        == Some(id.as_str());
    Continue(Target { id, holds, named })
}

/// After an interrupted attempt: the registration of the number made by that attempt, if any.
/// One registered before the attempt started is not this object's, unless the user named it in
/// the id annotation meanwhile (a deliberate adoption, which the attempt only held back: the
/// annotation of an id the object released itself never names a registration that still
/// exists).
fn found_by_number(obs: &Observation, tenant_missing: Option<&str>) -> Rule<Option<String>> {
    let obj = &obs.obj;
    let found = match &obs.lookup {
        None => return Break(Step::Read(Read::LookupByNumber)),
        Some(Err(e)) => return Break(blocked_by(Op::Lookup, e)),
        Some(Ok(found)) => found,
    };
    if found.is_none()
        && let Some(cause) = unverifiable(tenant_missing, "no registration of the number")
    {
        return Break(Step::Blocked {
            cause,
            failure: None,
        });
    }
    Continue(
        found
            .as_ref()
            .filter(|r| {
                obj.annotation(ANNOTATION_PHONE_NUMBER_ID) == Some(r.id.as_str())
                    || !made_before_attempt(r, obj.pending_create().as_ref())
            })
            .map(|r| r.id.clone()),
    )
}

/// Not held, and another object manages it (the holder of the id, or an older claim on the
/// number whose attempt may have made it): left registered. An owner that only names another
/// id does not hold this number's registration (a number is registered once).
fn held_elsewhere(obs: &Observation, target: &Target) -> Rule {
    let number_owner = obs
        .claims
        .number_owner
        .as_ref()
        .filter(|_| !obs.claims.number_owner_names_another_id);
    match (obs.claims.id_owner.as_ref().or(number_owner), target.holds) {
        (Some(owner), false) => Break(Step::Release {
            released: None,
            event: Some((
                "NotDeregistered",
                format!(
                    "Left registration {} registered: PhoneNumber {owner} manages it",
                    target.id
                ),
            )),
        }),
        _ => Continue(()),
    }
}

/// Named only in the annotation, never held (an adoption that never happened, e.g. a stalled
/// IdMismatch): deregistered only if it is this number's registration.
fn named_only(obs: &Observation, target: &Target) -> Rule {
    let deregistering = matches!(obs.last, Outcome::Deregistered(_));
    if target.holds || !target.named || deregistering {
        return Continue(());
    }
    let id = &target.id;
    match &obs.fetched {
        None => Break(Step::Read(Read::Registration(id.clone()))),
        Some(Ok(reg)) if reg.phone_number != obs.obj.spec.phone_number => {
            let note = format!(
                "Left registration {id} registered: it is for {}, not {} (named by the {ANNOTATION_PHONE_NUMBER_ID} annotation only)",
                reg.phone_number, obs.obj.spec.phone_number
            );
            Break(Step::Release {
                released: None,
                event: Some(("NotDeregistered", note)),
            })
        }
        Some(Ok(_)) => Continue(()),
        // Gone, or not this workspace's: nothing of this object's to deregister.
        Some(Err(ApiError::NotFound)) => Break(Step::Release {
            released: None,
            event: None,
        }),
        Some(Err(e)) => Break(blocked_by(Op::Get, e)),
    }
}

/// DELETE it; then release the finalizer with what OneInbox answered. Without the account's
/// key, "already gone" proves nothing unless this process released it itself.
fn deregister(obs: &Observation, target: Target, tenant_missing: Option<String>) -> Step {
    let id = target.id;
    let answer = match &obs.last {
        Outcome::Deregistered(answer) => answer,
        // This process deregistered it already (its finalizer removal did not land): no
        // second DELETE.
        _ if obs.memory.released.as_deref() == Some(id.as_str()) => {
            return Step::Release {
                released: Some(id),
                event: None,
            };
        }
        _ => return Step::Deregister { id },
    };
    match answer {
        Ok(Deregistered::AlreadyGone)
            if tenant_missing.is_some() && obs.memory.released.as_deref() != Some(id.as_str()) =>
        {
            Step::Blocked {
                cause: unverifiable(tenant_missing.as_deref(), &format!("{id} not found"))
                    .unwrap_or_default(),
                failure: None,
            }
        }
        Ok(outcome) => Step::Release {
            released: Some(id.clone()),
            event: Some((
                "Deregistered",
                match outcome {
                    Deregistered::Released => format!("Deregistered {id} from OneInbox"),
                    Deregistered::AlreadyGone => {
                        format!("Registration {id} was already gone from OneInbox")
                    }
                },
            )),
        },
        Err(e) => match tenant_missing {
            Some(why) => Step::Blocked {
                cause: format!(
                    "{why}, and the operator-wide API key could not deregister {id}: {e}. Make the account usable again (or set deletionPolicy: Orphan)"
                ),
                failure: None,
            },
            None => blocked_by(Op::Deregister, e),
        },
    }
}
