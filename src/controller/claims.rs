//! Which watched objects claim each number and each id, per account, kept from the watch: a
//! pass finds the other claimants of its number (`plan::owner_of_number`, `plan::owner_of_id`)
//! among a handful of objects instead of copying and scanning the whole cache, which made each
//! pass cost O(objects) (most of the CPU of 10,000 creates, docs/benchmarks.md). The decisions
//! are the same: every object the scan would have kept is a candidate here.
//!
//! The index holds the cache's own `Arc`s (the latest version of each object, nothing copied),
//! under hashes of (account, number) and (account, known id). An object's account and number
//! are immutable; its known id changes (registered, lost, adopted), so each update moves it.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

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
                .or_default()
                .push(obj.clone());
        }
        self.by_number
            .entry(key(&account, obj.phone_number()))
            .or_default()
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
