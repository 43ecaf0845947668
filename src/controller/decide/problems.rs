//! What status says when something is in the way: a key, Secret or account the object
//! cannot use (waited for, then Stalled), or a failed OneInbox call.

use super::*;

/// The API key still to read, an account's key Secret to wait for, or an account the object
/// cannot use; `None` once a key is known.
pub(super) fn api_key_step(obs: &Observation, settings: &Settings) -> Option<Step> {
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
pub(super) fn account_unusable(
    obs: &Observation,
    problem: &AccountProblem,
    settings: &Settings,
) -> Step {
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

/// How long the object has been not Ready (zero if it is Ready now).
pub(super) fn not_ready_for(obs: &Observation) -> Duration {
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
pub(super) fn wait_for_secret(
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

pub(super) fn blocked_by(op: Op, e: &ApiError) -> Step {
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
pub(super) fn api_failure(obs: &Observation, failure: Failure) -> Step {
    let obj = &obs.obj;
    let ready = obj
        .condition(status::READY)
        .is_some_and(|c| c.status == "True");
    // A 429 says nothing about the registration: a Ready object stays Ready (no write).
    if failure.error.is_throttled() && ready {
        return Step::Done(DoneAfter::Failure(failure));
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
