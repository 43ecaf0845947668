//! Per-object exponential backoff with jitter, keyed by UID, reset on success.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// Delay after `failures` consecutive failures: `base * 2^(failures-1)` capped at `max`, then
/// scaled by `jitter` in [0.5, 1.0] so a fleet that failed together does not retry together.
pub fn delay(failures: u32, base: Duration, max: Duration, jitter: f64) -> Duration {
    let exp = failures.saturating_sub(1).min(30);
    let raw = base.saturating_mul(1u32 << exp).min(max);
    raw.mul_f64(jitter.clamp(0.5, 1.0))
        .max(Duration::from_millis(100))
}

/// Failure counts by object UID.
#[derive(Default)]
pub struct Backoff {
    failures: Mutex<HashMap<String, u32>>,
}

impl Backoff {
    /// Record one more failure and return the count.
    pub fn failed(&self, uid: &str) -> u32 {
        let mut map = crate::mutex::lock(&self.failures);
        let n = map.entry(uid.to_owned()).or_insert(0);
        *n = n.saturating_add(1);
        *n
    }

    /// Forget the failures of an object that reconciled fine (or is gone).
    pub fn reset(&self, uid: &str) {
        crate::mutex::lock(&self.failures).remove(uid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap() {
        let b = Duration::from_secs(2);
        let m = Duration::from_secs(60);
        assert_eq!(delay(1, b, m, 1.0), Duration::from_secs(2));
        assert_eq!(delay(2, b, m, 1.0), Duration::from_secs(4));
        assert_eq!(delay(4, b, m, 1.0), Duration::from_secs(16));
        assert_eq!(delay(10, b, m, 1.0), m);
        assert_eq!(delay(u32::MAX, b, m, 1.0), m);
    }

    #[test]
    fn jitter_shortens_by_at_most_half() {
        let b = Duration::from_secs(10);
        let m = Duration::from_secs(600);
        assert_eq!(delay(1, b, m, 0.5), Duration::from_secs(5));
        assert_eq!(delay(1, b, m, 0.0), Duration::from_secs(5));
    }

    #[test]
    fn counts_per_uid_and_resets() {
        let b = Backoff::default();
        assert_eq!(b.failed("a"), 1);
        assert_eq!(b.failed("a"), 2);
        assert_eq!(b.failed("b"), 1);
        b.reset("a");
        assert_eq!(b.failed("a"), 1);
    }
}
