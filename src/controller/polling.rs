//! When an object is looked at again: its drift-check interval (`oneinbox.ai/poll-interval`),
//! the jitter that spreads a fleet's checks, where the first check after a restart falls, and
//! whether a pass is background work that goes behind user work.

use sha2::{Digest, Sha256};
use std::time::Duration;

use crate::config::parse_duration;
use crate::crd::{ANNOTATION_POLL_INTERVAL, PhoneNumber};

/// After a restart, when the first drift check of an object whose status this process trusts
/// is due: a fixed point of `(FIRST_CHECK_QUIET, 1]` of its interval, by a stable hash of its
/// UID. The fleet's first checks spread evenly over one interval (at most 1.25 × the steady
/// rate), and none falls in the first fifth of it: a restart, or a crash loop, costs no call
/// at once. The same object gets the same point after every restart.
pub fn first_check_in(uid: &str, interval: Duration) -> Duration {
    let h = Sha256::digest(uid.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&h[..8]);
    // 53 bits are all an f64 holds: a point of [0, 1).
    let point = (u64::from_be_bytes(first) >> 11) as f64 / (1u64 << 53) as f64;
    interval.mul_f64(FIRST_CHECK_QUIET + (1.0 - FIRST_CHECK_QUIET) * point)
}

/// The part of the interval after a restart in which no first check falls.
pub const FIRST_CHECK_QUIET: f64 = 0.2;

/// The drift-check interval of a Ready object: the annotation (clamped to `floor`) or the
/// default; `None` means never (annotation `0`).
pub fn poll_interval(obj: &PhoneNumber, default: Duration, floor: Duration) -> Option<Duration> {
    match obj.annotation(ANNOTATION_POLL_INTERVAL).map(parse_duration) {
        Some(Ok(d)) if d.is_zero() => None,
        Some(Ok(d)) => Some(d.max(floor)),
        _ => Some(default),
    }
}

/// The `oneinbox.ai/poll-interval` value, if it is set and not a duration (then the default
/// interval applies).
pub fn invalid_poll_interval(obj: &PhoneNumber) -> Option<&str> {
    obj.annotation(ANNOTATION_POLL_INTERVAL)
        .filter(|v| parse_duration(v).is_err())
}

/// `d` scaled by `factor` in [0.8, 1.2]: spreads a fleet's polls over time.
pub fn jittered(d: Duration, factor: f64) -> Duration {
    d.mul_f64(factor.clamp(0.8, 1.2))
}

/// Whether a pass is a periodic drift check of an object that asks for nothing else: it goes
/// behind user work (creates, spec changes, deletions, reconcile-now, anything not Ready) for
/// the account's places and request budget.
pub fn is_background_check(obj: &PhoneNumber, check_dispatched: bool) -> bool {
    let ready = obj
        .condition(crate::controller::status::READY)
        .is_some_and(|c| c.status == "True");
    let settled = obj.status.as_ref().is_some_and(|s| {
        s.observed_generation == obj.metadata.generation
            && s.last_handled_reconcile_at.as_deref()
                == obj.annotation(crate::crd::ANNOTATION_RECONCILE_REQUESTED_AT)
    });
    check_dispatched && ready && settled && obj.metadata.deletion_timestamp.is_none()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::plan::tests::pn;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    #[test]
    fn only_a_due_check_of_a_settled_ready_object_is_background_work() {
        let ready = |generation: i64, observed: i64| {
            let mut p = pn("x");
            p.metadata.generation = Some(generation);
            p.status = Some(crate::crd::PhoneNumberStatus {
                observed_generation: Some(observed),
                conditions: vec![k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    reason: "Available".into(),
                    message: String::new(),
                    last_transition_time: Time(jiff::Timestamp::UNIX_EPOCH),
                    observed_generation: Some(observed),
                }],
                ..Default::default()
            });
            p
        };
        let requested = {
            let mut p = ready(1, 1);
            p.metadata.annotations = Some(
                [(
                    crate::crd::ANNOTATION_RECONCILE_REQUESTED_AT.to_string(),
                    "now".to_string(),
                )]
                .into(),
            );
            p
        };
        let deleting = {
            let mut p = ready(1, 1);
            p.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::UNIX_EPOCH));
            p
        };
        let rows: Vec<(&str, PhoneNumber, bool, bool)> = vec![
            ("due check, settled and Ready", ready(1, 1), true, true),
            (
                "not a due check (a watch event, a create)",
                ready(1, 1),
                false,
                false,
            ),
            ("spec changed since", ready(2, 1), true, false),
            ("reconcile requested", requested, true, false),
            ("being deleted", deleting, true, false),
            ("not Ready", pn("x"), true, false),
        ];
        for (what, obj, dispatched, want) in rows {
            assert_eq!(is_background_check(&obj, dispatched), want, "{what}");
        }
    }

    #[test]
    fn first_checks_after_a_restart_spread_evenly_past_a_quiet_fifth() {
        let interval = Duration::from_secs(600);
        // Stable: the same object gets the same point after every restart.
        assert_eq!(
            first_check_in("uid-1", interval),
            first_check_in("uid-1", interval)
        );
        assert_ne!(
            first_check_in("uid-1", interval),
            first_check_in("uid-2", interval)
        );
        // 1,000 objects: none in the first 2 minutes, all within the interval, and each of the
        // eight minutes after the quiet part holds about an eighth of them.
        let mut per_minute = [0u32; 10];
        for i in 0..1000 {
            let d = first_check_in(&format!("0b9c2f3e-uid-{i}"), interval);
            assert!(d >= Duration::from_secs(120) && d < interval, "{d:?}");
            per_minute[(d.as_secs() / 60) as usize] += 1;
        }
        assert_eq!(per_minute[..2], [0, 0]);
        for (minute, n) in per_minute.iter().enumerate().skip(2) {
            assert!((95..=155).contains(n), "minute {minute}: {n} of 1000");
        }
        // Scales with the interval (a per-object poll-interval annotation).
        let short = first_check_in("uid-1", Duration::from_secs(20));
        assert!(short >= Duration::from_secs(4) && short < Duration::from_secs(20));
    }

    #[test]
    fn poll_interval_annotation_is_clamped_and_zero_disables() {
        let mut p = pn("a");
        let d = Duration::from_secs(600);
        let floor = Duration::from_secs(30);
        assert_eq!(poll_interval(&p, d, floor), Some(d));
        p.metadata.annotations =
            Some([(ANNOTATION_POLL_INTERVAL.to_string(), "5s".to_string())].into());
        assert_eq!(poll_interval(&p, d, floor), Some(floor));
        p.metadata.annotations =
            Some([(ANNOTATION_POLL_INTERVAL.to_string(), "2m".to_string())].into());
        assert_eq!(poll_interval(&p, d, floor), Some(Duration::from_secs(120)));
        p.metadata.annotations =
            Some([(ANNOTATION_POLL_INTERVAL.to_string(), "0".to_string())].into());
        assert_eq!(poll_interval(&p, d, floor), None);
        p.metadata.annotations =
            Some([(ANNOTATION_POLL_INTERVAL.to_string(), "soon".to_string())].into());
        assert_eq!(poll_interval(&p, d, floor), Some(d));
    }

    #[test]
    fn jitter_stays_within_twenty_percent() {
        let d = Duration::from_secs(100);
        assert_eq!(jittered(d, 0.5), Duration::from_secs(80));
        assert_eq!(jittered(d, 1.5), Duration::from_secs(120));
    }
}
