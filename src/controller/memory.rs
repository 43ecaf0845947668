//! What this process remembers of each object between passes: one `ObjectMemory` per UID,
//! dropped when the object leaves the watch (deleted, or relabelled out of the selector).
//! Nothing here survives a restart; every decision that needs it also works without it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::plan::PatchableDigest;

/// The last successful check of a registration against the API.
#[derive(Clone, Debug)]
pub struct Checked {
    pub generation: Option<i64>,
    pub id: String,
    pub at: Instant,
    /// This object's jittered poll interval; `None` = no periodic checks.
    pub interval: Option<Duration>,
    /// The PATCHable fields as the API last returned them: a spec change is diffed against
    /// them, so an update costs one PATCH and no GET.
    pub remote: PatchableDigest,
    /// Digest of the (name, resourceVersion) of the Secrets read for this check: while they are
    /// unchanged a pass needs not read them again.
    pub secrets: u64,
    /// The next drift check was handed to the controller (reset by the next successful check;
    /// a failing check is retried by the error backoff, not by the sweep).
    pub dispatched: bool,
}

impl Checked {
    /// Whether the periodic drift check is due at `now` and not handed out yet.
    pub fn drift_check_due(&self, now: Instant) -> bool {
        !self.dispatched
            && self
                .interval
                .is_some_and(|i| now.saturating_duration_since(self.at) >= i)
    }
}

/// Everything this process remembers of one object.
#[derive(Clone, Debug, Default)]
pub struct ObjectMemory {
    /// The last successful check against the API.
    pub check: Option<Checked>,
    /// A registration this process deregistered, until the finalizer is gone: a retry's 404
    /// is then known to be ours.
    pub released: Option<String>,
    /// resourceVersion of this process's last write: a pass handed an older version is a
    /// stale echo, and the watch event of that write will follow.
    pub written: Option<u64>,
    /// Pending-create token whose POST was refused with a clean 429 (nothing registered): the
    /// next attempt posts without a look-up first.
    pub clean_refusal: Option<String>,
    /// Digest of (generation, PATCH body) of an update OneInbox rejected: not sent again until
    /// the spec changes or a reconcile is requested.
    pub refused_patch: Option<u64>,
    /// An invalid `oneinbox.ai/poll-interval` value already reported with a Warning.
    pub invalid_poll_interval: Option<String>,
    /// A registration this object named that OneInbox no longer holds, reported once with
    /// an Event (not fetched again: ids are never issued twice).
    pub lost: Option<String>,
}

/// Per-object memory by UID.
#[derive(Debug, Default)]
pub struct Memory {
    objects: HashMap<String, ObjectMemory>,
}

impl Memory {
    /// A copy of what is remembered of `uid` (empty if nothing).
    pub fn get(&self, uid: &str) -> ObjectMemory {
        self.objects.get(uid).cloned().unwrap_or_default()
    }

    pub fn update(&mut self, uid: &str, f: impl FnOnce(&mut ObjectMemory)) {
        f(self.objects.entry(uid.to_owned()).or_default());
    }

    /// Change what is remembered of `uid`, if anything is.
    pub fn update_existing(&mut self, uid: &str, f: impl FnOnce(&mut ObjectMemory)) {
        if let Some(m) = self.objects.get_mut(uid) {
            f(m);
        }
    }

    pub fn forget(&mut self, uid: &str) {
        self.objects.remove(uid);
    }

    /// Drop the memory of every object that is no longer watched.
    pub fn retain_watched(&mut self, watched: &std::collections::HashSet<&str>) {
        self.objects.retain(|uid, _| watched.contains(uid.as_str()));
    }

    /// Every remembered check, by UID (the model test moves its simulated clock through them).
    pub fn checks_mut(&mut self) -> impl Iterator<Item = (&String, &mut Checked)> {
        self.objects
            .iter_mut()
            .filter_map(|(uid, m)| m.check.as_mut().map(|c| (uid, c)))
    }

    pub fn len(&self) -> usize {
        self.objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_of_objects_that_left_the_watch_is_dropped() {
        let mut m = Memory::default();
        m.update("a", |o| o.released = Some("id-a".into()));
        m.update("b", |o| o.written = Some(7));
        let watched = ["b"].into_iter().collect();
        m.retain_watched(&watched);
        assert_eq!(m.len(), 1);
        assert_eq!(m.get("a").released, None);
        assert_eq!(m.get("b").written, Some(7));
    }
}
