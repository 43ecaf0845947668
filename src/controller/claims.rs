//! Which watched objects claim each number and each id, per account, kept from the watch, and
//! which of them owns it. A pass finds the other claimants of its number (`owner_of_number`,
//! `owner_of_id`) among a handful of objects instead of copying and scanning the whole cache, which made each
//! pass cost O(objects) (most of the CPU of 10,000 creates, docs/benchmarks.md). The decisions
//! are the same: every object the scan would have kept is a candidate here.
//!
//! The index holds the cache's own `Arc`s (the latest version of each object, nothing copied),
//! under hashes of (account, number) and (account, known id). An object's account and number
//! are immutable; its known id changes (registered, lost, adopted), so each update moves it.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;

use super::CachedPhoneNumber;
use crate::crd::AccountId;
use crate::crd::PhoneNumber;

type Buckets = HashMap<u64, Vec<Arc<CachedPhoneNumber>>>;

#[derive(Default)]
struct Index {
    by_number: Buckets,
    by_id: Buckets,
}

fn key(account: &AccountId, value: &str) -> u64 {
    let mut h = DefaultHasher::new();
    account.hash(&mut h);
    value.hash(&mut h);
    h.finish()
}

fn same_object(a: &impl kube::Resource, b: &impl kube::Resource) -> bool {
    a.meta().name == b.meta().name && a.meta().namespace == b.meta().namespace
}

/// A bucket for one object, as nearly all are: a first push would reserve four.
fn one() -> Vec<Arc<CachedPhoneNumber>> {
    Vec::with_capacity(1)
}

/// Take `obj`'s entry out of bucket `k`, if it is there.
fn take(buckets: &mut Buckets, k: u64, obj: &CachedPhoneNumber) -> Option<Arc<CachedPhoneNumber>> {
    let bucket = buckets.get_mut(&k)?;
    let at = bucket.iter().position(|o| same_object(o.as_ref(), obj))?;
    let old = bucket.swap_remove(at);
    if bucket.is_empty() {
        buckets.remove(&k);
    }
    Some(old)
}

impl Index {
    fn insert(&mut self, obj: Arc<CachedPhoneNumber>, default_account: Option<&str>) {
        let account = obj.account(default_account);
        self.remove(&obj, default_account);
        if let Some(id) = obj.known_id() {
            self.by_id
                .entry(key(&account, id))
                .or_insert_with(one)
                .push(obj.clone());
        }
        self.by_number
            .entry(key(&account, obj.phone_number()))
            .or_insert_with(one)
            .push(obj);
    }

    /// Remove the entries of the object `obj` is a version of (found by its number, which
    /// never changes; the id it was filed under is the old version's).
    fn remove(&mut self, obj: &CachedPhoneNumber, default_account: Option<&str>) {
        let account = obj.account(default_account);
        let Some(old) = take(&mut self.by_number, key(&account, obj.phone_number()), obj) else {
            return;
        };
        if let Some(id) = old.known_id() {
            take(&mut self.by_id, key(&account, id), obj);
        }
    }
}

/// The claims of the watched objects.
#[derive(Default)]
pub struct Claims {
    index: std::sync::Mutex<Index>,
    default_account: Option<String>,
}

impl Claims {
    pub fn new(default_account: Option<String>) -> Claims {
        Claims {
            default_account,
            ..Claims::default()
        }
    }

    /// Follow one event of the watch, after the cache (`store`) applied it. A relist is taken
    /// in whole once it is complete, as the cache swaps it in then.
    pub fn observe(
        &self,
        event: &watcher::Event<CachedPhoneNumber>,
        store: &Store<CachedPhoneNumber>,
    ) {
        let default_account = self.default_account.as_deref();
        let mut index = crate::mutex::lock(&self.index);
        match event {
            watcher::Event::Apply(o) => match store.get(&ObjectRef::from_obj(o)) {
                Some(cached) => index.insert(cached, default_account),
                None => index.remove(o, default_account),
            },
            watcher::Event::Delete(o) => index.remove(o, default_account),
            watcher::Event::Init | watcher::Event::InitApply(_) => {}
            watcher::Event::InitDone => {
                let mut fresh = Index::default();
                for o in store.state() {
                    fresh.insert(o, default_account);
                }
                *index = fresh;
            }
        }
    }

    /// The other objects in `obj`'s account that claim its number or name the id it knows:
    /// the only ones the ownership rules can pick (unpacked: a pass decides with them).
    pub fn rivals(&self, obj: &PhoneNumber) -> Vec<Arc<PhoneNumber>> {
        let default_account = self.default_account.as_deref();
        let account = AccountId::of(obj, default_account);
        let known_id = obj.known_id();
        let index = crate::mutex::lock(&self.index);
        let by_number = index
            .by_number
            .get(&key(&account, &obj.spec.phone_number))
            .into_iter()
            .flatten()
            .filter(|o| o.phone_number() == obj.spec.phone_number);
        let by_id = known_id
            .as_deref()
            .and_then(|id| index.by_id.get(&key(&account, id)))
            .into_iter()
            .flatten()
            .filter(|o| o.known_id() == known_id.as_deref());
        let mut rivals: Vec<&Arc<CachedPhoneNumber>> = Vec::new();
        for o in by_number.chain(by_id) {
            let mine = o.uid() == obj.metadata.uid.as_deref() && obj.metadata.uid.is_some();
            let account_matches = o.account(default_account) == account;
            if !mine
                && account_matches
                && !rivals.iter().any(|r| same_object(r.as_ref(), o.as_ref()))
            {
                rivals.push(o);
            }
        }
        // Unpacking cannot fail for what the cache packed; were it to, the rival is not seen.
        rivals
            .into_iter()
            .filter_map(|o| o.object().ok().map(Arc::new))
            .collect()
    }
}

// Who owns a number or an id that several objects claim (pure; the index above finds the
// claimants).

/// Sort key of a claim on a number: the oldest object owns it.
fn claim_key(o: &PhoneNumber) -> (Option<jiff::Timestamp>, String, String) {
    (
        o.metadata.creation_timestamp.as_ref().map(|t| t.0),
        o.namespace().unwrap_or_default(),
        o.name_any(),
    )
}

/// The object that owns `obj`'s number, if it is another one: the oldest object claiming the
/// same number, where one that holds a registration (its id in status) wins over one that names
/// an id only in the annotation or has an attempt to register it in flight (a pending-create
/// marker: its registration may exist), and those win over one that has neither. The order is
/// total, so two claimants never both yield (or both win).
pub fn owner_of_number<'a>(
    obj: &PhoneNumber,
    others: impl IntoIterator<Item = &'a PhoneNumber>,
) -> Option<&'a PhoneNumber> {
    let uid = obj.uid();
    let rank = |o: &PhoneNumber| {
        let claim = if holds_id(o) {
            0
        } else if o.known_id().is_some() || has_pending_create(o) {
            1
        } else {
            2
        };
        (claim, claim_key(o))
    };
    let mine = rank(obj);
    others
        .into_iter()
        .filter(|o| o.uid() != uid && o.spec.phone_number == obj.spec.phone_number)
        .filter(|o| rank(o) < mine)
        .min_by_key(|o| rank(o))
}

/// The object's status names its registration (it registered or adopted it).
pub fn holds_id(o: &PhoneNumber) -> bool {
    o.status
        .as_ref()
        .is_some_and(|s| s.phone_number_id.is_some())
}

/// The object claims its number only by naming an id in the annotation: it holds no
/// registration and has no attempt to register it in flight.
pub fn claims_only_by_naming(o: &PhoneNumber) -> bool {
    !holds_id(o) && !has_pending_create(o) && o.known_id().is_some()
}

fn has_pending_create(o: &PhoneNumber) -> bool {
    o.pending_create().is_some()
}

/// The object that holds registration `id`, which `obj` names too, if it is another one. An
/// object that has the id in its status (it registered or adopted it) wins over one that only
/// names it in the annotation; between equals, the oldest claim wins. The loser never touches
/// the registration. One that only names it for another number is no claim on it: a
/// registration is for one number, and `phoneNumber` is immutable, so at most one of the two
/// can be right, and each finds out by reading it (the other one's is an id mismatch).
pub fn owner_of_id<'a>(
    obj: &PhoneNumber,
    id: &str,
    others: impl IntoIterator<Item = &'a PhoneNumber>,
) -> Option<&'a PhoneNumber> {
    let holds =
        |o: &PhoneNumber| o.status.as_ref().and_then(|s| s.phone_number_id.as_deref()) == Some(id);
    let uid = obj.uid();
    let mine = (!holds(obj), claim_key(obj));
    others
        .into_iter()
        .filter(|o| o.uid() != uid && o.known_id().as_deref() == Some(id))
        .filter(|o| holds(o) || o.spec.phone_number == obj.spec.phone_number)
        .filter(|o| (!holds(o), claim_key(o)) < mine)
        .min_by_key(|o| (!holds(o), claim_key(o)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::ResourceExt;
    use kube::runtime::reflector;

    fn pn(
        name: &str,
        number: &str,
        annotated_id: Option<&str>,
        held_id: Option<&str>,
    ) -> PhoneNumber {
        let mut o: PhoneNumber = serde_json::from_value(serde_json::json!({
            "apiVersion": "oneinbox.ai/v1alpha1", "kind": "PhoneNumber",
            "metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}")},
            "spec": {"phoneNumber": number, "provider": "twilio",
                     "agentId": "3c90c3cc-0d44-4b50-8888-8dd25736052a",
                     "credentialId": "3c90c3cc-0d44-4b50-8888-8dd25736052a"}
        }))
        .expect("object");
        if let Some(id) = annotated_id {
            o.annotations_mut()
                .insert(crate::crd::ANNOTATION_PHONE_NUMBER_ID.into(), id.into());
        }
        if let Some(id) = held_id {
            o.status = Some(crate::crd::PhoneNumberStatus {
                phone_number_id: Some(id.into()),
                ..Default::default()
            });
        }
        o
    }

    /// A cache and the claims, fed the same events.
    struct World {
        store: Store<CachedPhoneNumber>,
        writer: reflector::store::Writer<CachedPhoneNumber>,
        claims: Claims,
    }

    impl World {
        fn new() -> World {
            let (store, writer) = reflector::store();
            World {
                store,
                writer,
                claims: Claims::new(None),
            }
        }

        fn send(&mut self, event: watcher::Event<PhoneNumber>) {
            let event = crate::crd::packed_event(event).unwrap();
            self.writer.apply_watcher_event(&event);
            self.claims.observe(&event, &self.store);
        }

        fn rivals(&self, o: &PhoneNumber) -> Vec<String> {
            let mut names: Vec<String> =
                self.claims.rivals(o).iter().map(|r| r.name_any()).collect();
            names.sort();
            names
        }
    }

    #[test]
    fn rivals_are_the_objects_of_the_same_number_or_id_and_follow_every_update() {
        let mut w = World::new();
        let a = pn("a", "+15550000001", None, None);
        let b = pn("b", "+15550000001", None, None);
        let c = pn("c", "+15550000002", None, None);
        for o in [&a, &b, &c] {
            w.send(watcher::Event::Apply(o.clone()));
        }
        assert_eq!(w.rivals(&a), ["b"]);
        assert_eq!(w.rivals(&c), Vec::<String>::new());
        // c comes to name the id a holds: a rival of a by id, although its number differs.
        let a_holds = pn("a", "+15550000001", None, Some("id1"));
        w.send(watcher::Event::Apply(a_holds.clone()));
        let c_names = pn("c", "+15550000002", Some("id1"), None);
        w.send(watcher::Event::Apply(c_names.clone()));
        assert_eq!(w.rivals(&c_names), ["a"]);
        assert_eq!(w.rivals(&a_holds), ["b", "c"]);
        // c names another id: no longer filed under id1.
        let c_other = pn("c", "+15550000002", Some("id2"), None);
        w.send(watcher::Event::Apply(c_other.clone()));
        assert_eq!(w.rivals(&a_holds), ["b"]);
        // Deleted: gone from both.
        w.send(watcher::Event::Delete(b.clone()));
        assert_eq!(w.rivals(&a_holds), Vec::<String>::new());
        // The entry is the cache's latest version.
        let latest = w.claims.rivals(&c_other);
        assert!(latest.is_empty());
        let d = pn("d", "+15550000001", None, None);
        w.send(watcher::Event::Apply(d.clone()));
        let seen = w.claims.rivals(&d);
        assert_eq!(seen.len(), 1);
        assert_eq!(
            seen[0]
                .status
                .as_ref()
                .and_then(|s| s.phone_number_id.clone()),
            Some("id1".into())
        );
    }

    #[test]
    fn a_relist_replaces_the_index_when_it_is_complete() {
        let mut w = World::new();
        let a = pn("a", "+15550000001", None, None);
        let b = pn("b", "+15550000001", None, None);
        w.send(watcher::Event::Apply(a.clone()));
        w.send(watcher::Event::Apply(b.clone()));
        // Relisted without b (deleted while the watch was down).
        w.send(watcher::Event::Init);
        w.send(watcher::Event::InitApply(a.clone()));
        assert_eq!(
            w.rivals(&a),
            ["b"],
            "the old index until the list is complete"
        );
        w.send(watcher::Event::InitDone);
        assert_eq!(w.rivals(&a), Vec::<String>::new());
    }

    #[test]
    fn claims_are_per_account() {
        let mut w = World::new();
        let a = pn("a", "+15550000001", None, None);
        let mut b = pn("b", "+15550000001", None, None);
        b.spec.account_ref = Some(crate::crd::AccountRef {
            kind: crate::crd::AccountKind::OneInboxAccount,
            name: "team".into(),
        });
        w.send(watcher::Event::Apply(a.clone()));
        w.send(watcher::Event::Apply(b.clone()));
        assert_eq!(w.rivals(&a), Vec::<String>::new());
        assert_eq!(w.rivals(&b), Vec::<String>::new());
    }
}

#[cfg(test)]
mod ownership_tests {
    use super::*;
    use crate::controller::plan::tests::pn;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    #[test]
    fn oldest_claim_owns_the_number() {
        let mut old = pn("old");
        old.metadata.creation_timestamp = Some(Time(jiff::Timestamp::from_second(100).unwrap()));
        let mut new = pn("new");
        new.metadata.creation_timestamp = Some(Time(jiff::Timestamp::from_second(200).unwrap()));
        let all = [old.clone(), new.clone()];
        assert_eq!(
            owner_of_number(&new, all.iter()).map(|o| o.name_any()),
            Some("old".into())
        );
        assert!(owner_of_number(&old, all.iter()).is_none());
    }

    #[test]
    fn a_registered_claim_wins_even_if_newer() {
        let mut old = pn("old");
        old.metadata.creation_timestamp = Some(Time(jiff::Timestamp::from_second(100).unwrap()));
        let mut new = pn("new");
        new.metadata.creation_timestamp = Some(Time(jiff::Timestamp::from_second(200).unwrap()));
        new.status = Some(crate::crd::PhoneNumberStatus {
            phone_number_id: Some("id".into()),
            ..Default::default()
        });
        let all = [old.clone(), new.clone()];
        assert_eq!(
            owner_of_number(&old, all.iter()).map(|o| o.name_any()),
            Some("new".into())
        );
    }

    /// An attempt in flight, as the annotation records it before the POST.
    fn record_attempt(o: &mut PhoneNumber) {
        let attempt = crate::crd::RegistrationAttempt {
            token: "t".into(),
            started_at: "2026-01-01T00:00:00Z".into(),
            credentials_hash: None,
            uid: o.metadata.uid.clone(),
        };
        o.annotations_mut().insert(
            crate::crd::ANNOTATION_REGISTRATION_ATTEMPT.into(),
            serde_json::to_string(&attempt).expect("json"),
        );
    }

    #[test]
    fn a_claim_with_an_attempt_in_flight_wins_over_an_older_one() {
        let mut old = pn("old");
        old.metadata.creation_timestamp = Some(Time(jiff::Timestamp::from_second(100).unwrap()));
        let mut new = pn("new");
        new.metadata.creation_timestamp = Some(Time(jiff::Timestamp::from_second(200).unwrap()));
        record_attempt(&mut new);
        let all = [old.clone(), new.clone()];
        assert_eq!(
            owner_of_number(&old, all.iter()).map(|o| o.name_any()),
            Some("new".into())
        );
    }

    #[test]
    fn two_claimants_never_both_yield_or_both_win() {
        #[derive(Clone, Copy, Debug)]
        enum Claim {
            Nothing,
            Annotation,
            Attempt,
            Holds,
        }
        let make = |name: &str, secs: i64, claim: Claim| {
            let mut o = pn(name);
            o.metadata.creation_timestamp = Some(Time(jiff::Timestamp::from_second(secs).unwrap()));
            let mut status = crate::crd::PhoneNumberStatus::default();
            match claim {
                Claim::Nothing => {}
                Claim::Annotation => {
                    o.metadata.annotations = Some(
                        [(
                            crate::crd::ANNOTATION_PHONE_NUMBER_ID.to_string(),
                            "id".to_string(),
                        )]
                        .into(),
                    )
                }
                Claim::Attempt => record_attempt(&mut o),
                Claim::Holds => status.phone_number_id = Some("id".into()),
            }
            o.status = Some(status);
            o
        };
        use Claim::*;
        // (older's claim, newer's claim, the owner)
        let cases = [
            (Nothing, Nothing, "older"),
            (Attempt, Annotation, "older"),
            (Annotation, Attempt, "older"),
            (Nothing, Attempt, "newer"),
            (Nothing, Annotation, "newer"),
            (Nothing, Holds, "newer"),
            (Attempt, Holds, "newer"),
            (Annotation, Holds, "newer"),
            (Holds, Attempt, "older"),
        ];
        for (a, b, owner) in cases {
            let older = make("older", 100, a);
            let newer = make("newer", 200, b);
            let all = [older.clone(), newer.clone()];
            let got = (
                owner_of_number(&older, all.iter()).map(|o| o.name_any()),
                owner_of_number(&newer, all.iter()).map(|o| o.name_any()),
            );
            let want = if owner == "older" {
                (None, Some("older".to_string()))
            } else {
                (Some("newer".to_string()), None)
            };
            assert_eq!(got, want, "older {a:?}, newer {b:?}");
        }
    }

    #[test]
    fn only_an_annotation_without_a_registration_or_an_attempt_is_a_claim_by_naming() {
        let mut o = pn("a");
        assert!(!claims_only_by_naming(&o));
        o.metadata.annotations = Some(
            [(
                crate::crd::ANNOTATION_PHONE_NUMBER_ID.to_string(),
                "id1".to_string(),
            )]
            .into(),
        );
        assert!(claims_only_by_naming(&o));
        record_attempt(&mut o);
        assert!(!claims_only_by_naming(&o), "an attempt in flight");
        o.status = Some(crate::crd::PhoneNumberStatus {
            settled_attempt: Some("t".into()),
            ..Default::default()
        });
        assert!(
            claims_only_by_naming(&o),
            "the attempt settled without a registration"
        );
        o.status = Some(crate::crd::PhoneNumberStatus {
            phone_number_id: Some("id1".into()),
            ..Default::default()
        });
        assert!(!claims_only_by_naming(&o), "holds it");
    }

    #[test]
    fn the_holder_of_an_id_owns_it_against_a_newcomer_naming_it() {
        let mut holder = pn("holder");
        holder.metadata.creation_timestamp =
            Some(Time("2026-01-02T00:00:00Z".parse().expect("ts")));
        holder.status = Some(crate::crd::PhoneNumberStatus {
            phone_number_id: Some("id1".into()),
            ..Default::default()
        });
        // Older, but only annotated: still the newcomer.
        let mut newcomer = pn("newcomer");
        newcomer.metadata.namespace = Some("other".into());
        newcomer.metadata.creation_timestamp =
            Some(Time("2026-01-01T00:00:00Z".parse().expect("ts")));
        newcomer.metadata.annotations = Some(
            [(
                crate::crd::ANNOTATION_PHONE_NUMBER_ID.to_string(),
                "id1".to_string(),
            )]
            .into(),
        );
        let all = [holder.clone(), newcomer.clone()];
        assert_eq!(
            owner_of_id(&newcomer, "id1", &all).map(|o| o.name_any()),
            Some("holder".into())
        );
        assert!(owner_of_id(&holder, "id1", &all).is_none());
        // Two that only annotate: the older claim owns it.
        let mut younger = newcomer.clone();
        younger.metadata.uid = Some("uid-younger".into());
        younger.metadata.name = Some("younger".into());
        younger.metadata.creation_timestamp =
            Some(Time("2026-01-03T00:00:00Z".parse().expect("ts")));
        let all = [newcomer.clone(), younger.clone()];
        assert_eq!(
            owner_of_id(&younger, "id1", &all).map(|o| o.name_any()),
            Some("newcomer".into())
        );
        assert!(owner_of_id(&newcomer, "id1", &all).is_none());
        // An older one that only names it for another number is no claim on it; one that
        // holds it is, whatever the number.
        let mut elsewhere = newcomer.clone();
        elsewhere.metadata.uid = Some("uid-elsewhere".into());
        elsewhere.metadata.name = Some("elsewhere".into());
        elsewhere.spec.phone_number = "+15550000000".into();
        let all = [elsewhere.clone(), younger.clone()];
        assert!(owner_of_id(&younger, "id1", &all).is_none());
        elsewhere.status = Some(crate::crd::PhoneNumberStatus {
            phone_number_id: Some("id1".into()),
            ..Default::default()
        });
        let all = [elsewhere.clone(), younger.clone()];
        assert_eq!(
            owner_of_id(&younger, "id1", &all).map(|o| o.name_any()),
            Some("elsewhere".into())
        );
    }
}
