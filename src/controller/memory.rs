//! What this process remembers of each object between passes: one `ObjectMemory` per UID,
//! dropped when the object leaves the watch (deleted, or relabelled out of the selector).
//! Nothing here survives a restart; every decision that needs it also works without it.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

use crate::crd::{ANNOTATION_PREFIX, PhoneNumber};

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
    /// A registration this process deregistered: a retry of the finalizer removal (or a pass
    /// on an older version of the object) then makes no second DELETE.
    pub released: Option<String>,
    /// resourceVersion of this process's last write: a pass handed an older version is a
    /// stale echo, and the watch event of that write will follow.
    pub written: Option<u64>,
    /// The answer to that write held nothing new to decide on (see `decision_inputs`).
    pub quiet_answer: bool,
    /// The watch event of `written` needs no pass (see `take_echo`): set by a pass that ends
    /// Ready with its check recorded after a quiet answer; cleared by the next write and by a
    /// pass that ended on an older view, relying on that event.
    pub settled: bool,
    /// A pass for this object is running: the watch events of its own writes are skipped
    /// (it carries on from their answers) and counted in `skipped`.
    pub in_pass: bool,
    /// Watch events skipped while the pass ran; if it does not end settled, it asks for one
    /// more pass in their place.
    pub skipped: bool,
    /// Pending-create token whose POST was refused with a clean 429 (nothing registered): the
    /// next attempt posts without a look-up first.
    pub clean_refusal: Option<String>,
    /// An invalid `oneinbox.ai/poll-interval` value already reported with a Warning.
    pub invalid_poll_interval: Option<String>,
    /// A registration this object named that OneInbox no longer holds, reported once with
    /// an Event (not fetched again: ids are never issued twice).
    pub lost: Option<String>,
}

impl ObjectMemory {
    /// Whether the watch event of the object at resourceVersion `rv` needs no pass, and if so
    /// skip it. It needs none when it is older than this process's last write (the pass that
    /// made the write saw the newer object); when it is that write and the pass that made it
    /// is still running, carrying on from the answer (it asks for a pass at its end if it does
    /// not end settled, see `end_pass`); and when it is that write and the pass ended Ready
    /// with a fresh check: a pass for it would find the check fresh and end. Skipping keeps
    /// what the pass scheduled (a requeue, the error backoff), which a pass for the echo would
    /// replace.
    pub fn take_echo(&mut self, rv: u64) -> bool {
        let Some(written) = self.written else {
            return false;
        };
        let skip =
            rv < written || (rv == written && (self.settled || self.in_pass && self.quiet_answer));
        if skip && self.in_pass {
            self.skipped = true;
        }
        skip
    }

    /// A pass ended Ready with its check recorded: the watch event of its last write, if that
    /// answer held nothing new, would start a pass that finds the check fresh and ends.
    pub fn settle_echo(&mut self) {
        self.settled = self.written.is_some() && self.quiet_answer;
    }

    /// A pass handed the object at resourceVersion `seen` starts. `Err(written)` when that
    /// view is older than this process's last write: the pass ends at once, and the watch
    /// event of that write must come through (this pass replaced what the writing pass
    /// scheduled).
    pub fn begin_pass(&mut self, seen: Option<u64>) -> Result<(), u64> {
        if let (Some(ours), Some(seen)) = (self.written, seen)
            && seen < ours
        {
            self.settled = false;
            return Err(ours);
        }
        self.in_pass = true;
        Ok(())
    }

    /// A pass ended; whether it must be followed by another in place of the watch events it
    /// skipped (it did not end settled).
    pub fn end_pass(&mut self) -> bool {
        let again = self.skipped && !self.settled;
        self.in_pass = false;
        self.skipped = false;
        again
    }
}

/// What a pass decides on in an object's metadata and spec: the generation (the spec), the
/// deletion, the finalizers and the operator's own annotations (reconcile-now, pause, poll
/// interval, the attempt). A write whose answer has the same digest as the view it was made
/// from brought nothing new, whoever else wrote in between: the status is the operator's own.
pub fn decision_inputs(obj: &PhoneNumber) -> u64 {
    let meta = &obj.metadata;
    let mut h = std::hash::DefaultHasher::new();
    meta.generation.hash(&mut h);
    meta.deletion_timestamp.as_ref().map(|t| t.0).hash(&mut h);
    meta.finalizers.hash(&mut h);
    if let Some(annotations) = &meta.annotations {
        annotations
            .iter()
            .filter(|(k, _)| k.starts_with(ANNOTATION_PREFIX))
            .for_each(|kv| kv.hash(&mut h));
    }
    h.finish()
}

/// Per-object memory by UID. Boxed: a table slot is then a pointer, not the ~250 bytes of an
/// `ObjectMemory`, of which a hash table keeps up to twice as many slots as objects
/// (docs/benchmarks.md, "Memory at scale").
#[derive(Debug, Default)]
pub struct Memory {
    objects: HashMap<String, Box<ObjectMemory>>,
}

impl Memory {
    /// A copy of what is remembered of `uid` (empty if nothing).
    pub fn get(&self, uid: &str) -> ObjectMemory {
        self.objects
            .get(uid)
            .map(|m| ObjectMemory::clone(m))
            .unwrap_or_default()
    }

    /// Whether the watch event of `uid` at `rv` is an echo of our own writes to skip
    /// (`ObjectMemory::take_echo`).
    pub fn take_echo(&mut self, uid: &str, rv: u64) -> bool {
        self.objects.get_mut(uid).is_some_and(|m| m.take_echo(rv))
    }

    /// A pass of `uid` starts (`ObjectMemory::begin_pass`).
    pub fn begin_pass(&mut self, uid: &str, seen: Option<u64>) -> Result<(), u64> {
        self.objects
            .entry(uid.to_owned())
            .or_default()
            .begin_pass(seen)
    }

    /// A pass of `uid` ended: whether another must follow (`ObjectMemory::end_pass`).
    pub fn end_pass(&mut self, uid: &str) -> bool {
        self.objects.get_mut(uid).is_some_and(|m| m.end_pass())
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

    #[test]
    fn echoes_of_our_own_writes_are_skipped_and_counted_while_the_pass_runs() {
        // (what, written, quiet answer, settled, in pass, event rv, skip, counted)
        let cases = [
            (
                "nothing written by this process",
                None,
                true,
                false,
                false,
                7,
                false,
                false,
            ),
            (
                "someone else's later write",
                Some(7),
                true,
                true,
                false,
                8,
                false,
                false,
            ),
            (
                "older than our last write",
                Some(7),
                false,
                false,
                false,
                6,
                true,
                false,
            ),
            (
                "older, while the pass runs",
                Some(7),
                false,
                false,
                true,
                6,
                true,
                true,
            ),
            (
                "our write, the pass runs on",
                Some(7),
                true,
                false,
                true,
                7,
                true,
                true,
            ),
            (
                "our write with news in the answer",
                Some(7),
                false,
                false,
                true,
                7,
                false,
                false,
            ),
            (
                "our write, the pass ended settled",
                Some(7),
                true,
                true,
                false,
                7,
                true,
                false,
            ),
            (
                "our write, the pass ended unsettled",
                Some(7),
                true,
                false,
                false,
                7,
                false,
                false,
            ),
        ];
        for (what, written, quiet_answer, settled, in_pass, rv, skip, counted) in cases {
            let mut m = ObjectMemory {
                written,
                quiet_answer,
                settled,
                in_pass,
                ..ObjectMemory::default()
            };
            assert_eq!(m.take_echo(rv), skip, "{what}");
            assert_eq!(m.skipped, counted, "{what}: counted");
        }
        let mut m = Memory::default();
        m.update("a", |o| o.written = Some(7));
        assert!(m.take_echo("a", 6));
        assert!(!m.take_echo("b", 6), "an object with no memory");
    }

    #[test]
    fn a_pass_that_skipped_echoes_asks_for_another_unless_it_ended_settled() {
        let ended = |skipped, quiet_answer, settled| {
            let mut m = ObjectMemory {
                written: Some(7),
                quiet_answer,
                in_pass: true,
                skipped,
                ..ObjectMemory::default()
            };
            if settled {
                m.settle_echo();
            }
            let again = m.end_pass();
            assert!(!m.in_pass && !m.skipped);
            (again, m.settled)
        };
        assert_eq!(ended(true, true, true), (false, true), "settled");
        assert_eq!(ended(true, true, false), (true, false), "ended otherwise");
        assert_eq!(ended(true, false, true), (true, false), "settled, but news");
        assert_eq!(ended(false, true, false), (false, false), "skipped nothing");
    }

    #[test]
    fn a_pass_handed_a_view_older_than_our_last_write_does_not_start() {
        let mut m = ObjectMemory {
            written: Some(7),
            settled: true,
            ..ObjectMemory::default()
        };
        assert_eq!(m.begin_pass(Some(6)), Err(7));
        assert!(
            !m.in_pass && !m.settled,
            "the event of our write must come through"
        );
        assert_eq!(m.begin_pass(None), Ok(()), "no version to compare");
        let mut m = ObjectMemory {
            written: Some(7),
            ..ObjectMemory::default()
        };
        assert_eq!(m.begin_pass(Some(7)), Ok(()));
        assert!(m.in_pass);
        let mut fresh = Memory::default();
        assert_eq!(
            fresh.begin_pass("a", Some(1)),
            Ok(()),
            "nothing written yet"
        );
    }

    #[test]
    fn decision_inputs_change_with_what_a_pass_reads_and_not_with_the_rest() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
        let base: PhoneNumber = serde_json::from_value(serde_json::json!({
            "apiVersion": "oneinbox.ai/v1alpha1", "kind": "PhoneNumber",
            "metadata": {"name": "pn", "namespace": "ns", "generation": 1, "resourceVersion": "5",
                         "finalizers": ["oneinbox.ai/deregister"],
                         "annotations": {"oneinbox.ai/poll-interval": "5m", "other.io/note": "x"}},
            "spec": {"phoneNumber": "+15551234567", "provider": "telnyx",
                     "agentId": "3c90c3cc-0d44-4b50-8888-8dd25736052a"}
        }))
        .expect("object");
        let changed = |f: fn(&mut PhoneNumber)| {
            let mut o = base.clone();
            f(&mut o);
            decision_inputs(&o) != decision_inputs(&base)
        };
        fn annotate(o: &mut PhoneNumber, k: &str, v: &str) {
            o.metadata
                .annotations
                .get_or_insert_default()
                .insert(k.into(), v.into());
        }
        type Edit = fn(&mut PhoneNumber);
        let cases: [(&str, Edit, bool); 8] = [
            (
                "the spec (generation)",
                |o| o.metadata.generation = Some(2),
                true,
            ),
            (
                "deletion",
                |o| o.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::UNIX_EPOCH)),
                true,
            ),
            ("the finalizers", |o| o.metadata.finalizers = None, true),
            (
                "reconcile now",
                |o| annotate(o, "oneinbox.ai/reconcile-requested-at", "t1"),
                true,
            ),
            (
                "our annotation's value",
                |o| annotate(o, "oneinbox.ai/poll-interval", "1m"),
                true,
            ),
            (
                "another tool's annotation",
                |o| annotate(o, "other.io/note", "y"),
                false,
            ),
            (
                "the resourceVersion",
                |o| o.metadata.resource_version = Some("9".into()),
                false,
            ),
            ("the status", |o| o.status = Some(Default::default()), false),
        ];
        for (what, f, expected) in cases {
            assert_eq!(changed(f), expected, "{what}");
        }
    }
}
