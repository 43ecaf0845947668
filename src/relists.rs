//! A controller hears of an object only once its store holds that version.
//!
//! A reflector keeps a relist's objects in a side buffer and swaps it into the store at the
//! end (`InitDone`), while `applied_objects()` hands each object to the controller as it
//! arrives (`InitApply`). On the first list that is harmless: a controller's runner waits
//! for the store to be ready. On a relist (a watch that could not resume: the API server
//! restarted, or its window expired) the store is ready, so the pass runs at once, against
//! the store, which still holds the old list: an object created while the watch was away is
//! not found (the pass is dropped), and one changed meanwhile is read in its old version.
//! Nothing triggers it again after the swap, so both waited for the next event or drift check.
//!
//! A watch that cannot resume (410 Expired) relists at once: the watcher has already moved to
//! a new list, and the error would only make the stream's backoff wait first (up to a minute,
//! after the errors of an API server's restart), with the controller deaf meanwhile. Only the
//! resumed watch's expiry is taken so: a list that fails (an expired continue token of a long
//! paged list) keeps its backoff, as it could otherwise fail again at once.
//!
//! Here, during a relist, an object whose version the store already holds passes on at once
//! (as before); one the store does not hold in that version is passed on after the swap.
//! With `vanished`, the objects the relist no longer lists pass on too (their last version),
//! as a watch's deletions would: the Namespace watches, whose leaving objects matter.

use std::sync::Arc;

use futures::{Stream, StreamExt, stream};
use kube::Resource;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;

/// What a relist in progress holds back.
struct Relist<K: Resource<DynamicType = ()>> {
    /// Listed in a version the store does not hold yet.
    changed: Vec<ObjectRef<K>>,
    /// The store's objects when the relist began (only with `vanished`).
    before: Vec<Arc<K>>,
}

/// The objects a reflector's events apply (`applied_objects()`), or also those deleted
/// (`touched_objects()`, with `vanished`), each passed on only once `store` (the reflector's
/// own) holds that version.
pub fn when_stored<K, S>(
    events: S,
    store: Store<K>,
    vanished: bool,
) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static
where
    K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
{
    let mut listed = false;
    let mut relist: Option<Relist<K>> = None;
    events.flat_map(move |event| {
        let now = |o: K| stream::iter([Ok(o)]).boxed();
        let none = || stream::empty().boxed();
        match event {
            Err(e) => stream::iter([Err(e)]).boxed(),
            Ok(watcher::Event::Apply(o)) => now(o),
            Ok(watcher::Event::Delete(o)) if vanished => now(o),
            Ok(watcher::Event::Delete(_)) => none(),
            Ok(watcher::Event::Init) => {
                relist = listed.then(|| Relist {
                    changed: Vec::new(),
                    before: if vanished { store.state() } else { Vec::new() },
                });
                none()
            }
            Ok(watcher::Event::InitApply(o)) => match &mut relist {
                Some(r) if !stored(&store, &o) => {
                    r.changed.push(ObjectRef::from_obj(&o));
                    none()
                }
                _ => now(o),
            },
            Ok(watcher::Event::InitDone) => {
                listed = true;
                match relist.take() {
                    Some(r) => after_swap(r, store.clone()),
                    None => none(),
                }
            }
        }
    })
}

/// A controller's backoff on its merged triggers: none. Each watch backs off on its own errors
/// (`default_backoff`); kube-runtime's default here would, after any one watch's error, also
/// stop every other trigger (the other watches, the due drift checks) for up to a minute, and
/// add that to the watch's own backoff.
#[derive(Clone, Copy, Debug, Default)]
pub struct EachWatchBacksOff;

impl Iterator for EachWatchBacksOff {
    type Item = std::time::Duration;
    fn next(&mut self) -> Option<std::time::Duration> {
        Some(std::time::Duration::ZERO)
    }
}

impl kube::runtime::utils::Backoff for EachWatchBacksOff {
    fn reset(&mut self) {}
}

/// `events` without the resumed watch's 410 (Expired) errors: the watcher lists again after
/// them, and a backoff after them would only delay the list.
pub fn relist_when_expired<K, S>(
    events: S,
) -> impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static
where
    K: Send + 'static,
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
{
    events.filter(|event| {
        let expired = matches!(event, Err(watcher::Error::WatchError(s)) if s.code == 410);
        if expired {
            tracing::debug!("the watch expired; listing again");
        }
        std::future::ready(!expired)
    })
}

/// Whether `store` holds `o` in this version.
fn stored<K: Resource<DynamicType = ()> + Clone>(store: &Store<K>, o: &K) -> bool {
    store
        .get(&ObjectRef::from_obj(o))
        .is_some_and(|held| held.meta().resource_version == o.meta().resource_version)
}

/// After the swap: the changed objects as the store now holds them, then the vanished ones.
/// Lazy, so a relist of every object clones one at a time.
fn after_swap<K>(
    r: Relist<K>,
    store: Store<K>,
) -> stream::BoxStream<'static, Result<K, watcher::Error>>
where
    K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
{
    let listed = store.clone();
    let changed = r
        .changed
        .into_iter()
        .filter_map(move |key| listed.get(&key).map(|o| Ok(K::clone(&o))));
    let vanished = r
        .before
        .into_iter()
        .filter(move |o| store.get(&ObjectRef::from_obj(o.as_ref())).is_none())
        .map(|o| Ok(K::clone(&o)));
    stream::iter(changed.chain(vanished)).boxed()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use futures::TryStreamExt;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::ObjectMeta;
    use kube::runtime::reflector;
    use tokio::sync::mpsc;
    use tokio_stream::wrappers::UnboundedReceiverStream;

    fn cm(name: &str, rv: &str, data: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                resource_version: Some(rv.into()),
                ..Default::default()
            },
            data: Some([("v".to_string(), data.to_string())].into()),
            ..Default::default()
        }
    }

    type Events = mpsc::UnboundedSender<Result<watcher::Event<ConfigMap>, watcher::Error>>;

    /// A reflector fed by hand, and what `when_stored` passes on: each object with the
    /// version the store held for it at that moment (the pass would read that one).
    fn controller_view(
        vanished: bool,
    ) -> (
        Events,
        impl Stream<Item = (String, String, Option<String>)> + Unpin,
    ) {
        let (tx, rx) = mpsc::unbounded_channel();
        let (store, writer) = reflector::store();
        let objects = when_stored(
            reflector::reflector(writer, UnboundedReceiverStream::new(rx)),
            store.clone(),
            vanished,
        );
        let seen = objects.map_ok(move |o: ConfigMap| {
            let stored = store
                .get(&ObjectRef::from_obj(&o))
                .and_then(|s| s.data.as_ref().and_then(|d| d.get("v").cloned()));
            let name = o.metadata.name.clone().unwrap();
            let data = o.data.as_ref().and_then(|d| d.get("v").cloned()).unwrap();
            (name, data, stored)
        });
        (tx, Box::pin(seen.map(|r| r.expect("no error"))))
    }

    async fn next(
        seen: &mut (impl Stream<Item = (String, String, Option<String>)> + Unpin),
    ) -> (String, String, Option<String>) {
        tokio::time::timeout(std::time::Duration::from_secs(5), seen.next())
            .await
            .expect("an object")
            .expect("the stream goes on")
    }

    fn obj(name: &str, data: &str, stored: Option<&str>) -> (String, String, Option<String>) {
        (name.into(), data.into(), stored.map(String::from))
    }

    /// The first list, `a` and `b`: passed on as listed (a controller's runner waits for the
    /// store to be ready).
    async fn first_list(
        tx: &Events,
        seen: &mut (impl Stream<Item = (String, String, Option<String>)> + Unpin),
    ) {
        use watcher::Event::*;
        tx.send(Ok(Init)).unwrap();
        tx.send(Ok(InitApply(cm("a", "1", "a1")))).unwrap();
        tx.send(Ok(InitApply(cm("b", "2", "b1")))).unwrap();
        tx.send(Ok(InitDone)).unwrap();
        assert_eq!(next(seen).await, obj("a", "a1", None));
        assert_eq!(next(seen).await, obj("b", "b1", None));
    }

    #[tokio::test]
    async fn a_relist_passes_on_new_and_changed_objects_once_the_store_holds_them() {
        use watcher::Event::*;
        let (tx, mut seen) = controller_view(false);
        first_list(&tx, &mut seen).await;
        // The watch could not resume: a relist. `a` unchanged, `b` changed, `c` new.
        tx.send(Ok(Init)).unwrap();
        tx.send(Ok(InitApply(cm("a", "1", "a1")))).unwrap();
        tx.send(Ok(InitApply(cm("b", "5", "b2")))).unwrap();
        tx.send(Ok(InitApply(cm("c", "6", "c1")))).unwrap();
        assert_eq!(next(&mut seen).await, obj("a", "a1", Some("a1")));
        tx.send(Ok(InitDone)).unwrap();
        // Only after the swap, and then the store holds what the relist listed.
        assert_eq!(next(&mut seen).await, obj("b", "b2", Some("b2")));
        assert_eq!(next(&mut seen).await, obj("c", "c1", Some("c1")));
        // Afterwards, watch events pass on as before; a deletion does not.
        tx.send(Ok(Delete(cm("a", "7", "a1")))).unwrap();
        tx.send(Ok(Apply(cm("c", "8", "c2")))).unwrap();
        assert_eq!(next(&mut seen).await, obj("c", "c2", Some("c2")));
    }

    fn watch_error(code: u16) -> watcher::Error {
        let status: kube::core::Status = serde_json::from_value(serde_json::json!({
            "status": "Failure", "code": code, "reason": "Expired",
            "message": "too old resource version: 1 (2)"}))
        .unwrap();
        watcher::Error::WatchError(Box::new(status))
    }

    #[tokio::test]
    async fn only_a_resumed_watch_that_expired_passes_on_no_error() {
        let events: Vec<Result<watcher::Event<ConfigMap>, watcher::Error>> = vec![
            Ok(watcher::Event::Init),
            Err(watch_error(410)),
            Err(watch_error(500)),
            Err(watcher::Error::NoResourceVersion),
            Ok(watcher::Event::InitDone),
        ];
        let seen: Vec<String> = relist_when_expired(stream::iter(events))
            .map(|e| match e {
                Ok(watcher::Event::Init) => "init".to_string(),
                Ok(watcher::Event::InitDone) => "done".to_string(),
                Ok(_) => "object".to_string(),
                Err(watcher::Error::WatchError(s)) => format!("watch error {}", s.code),
                Err(e) => e.to_string(),
            })
            .collect()
            .await;
        assert_eq!(
            seen,
            [
                "init",
                "watch error 500",
                "no metadata.resourceVersion in watch result (does resource support watch?)",
                "done"
            ]
        );
    }

    #[tokio::test]
    async fn with_vanished_a_relist_passes_on_what_it_no_longer_lists() {
        use watcher::Event::*;
        let (tx, mut seen) = controller_view(true);
        first_list(&tx, &mut seen).await;
        tx.send(Ok(Init)).unwrap();
        tx.send(Ok(InitApply(cm("b", "2", "b1")))).unwrap();
        assert_eq!(next(&mut seen).await, obj("b", "b1", Some("b1")));
        tx.send(Ok(InitDone)).unwrap();
        // `a` is gone from the store: passed on in its last version, as a deletion would be.
        assert_eq!(next(&mut seen).await, obj("a", "a1", None));
        tx.send(Ok(Delete(cm("b", "9", "b1")))).unwrap();
        assert_eq!(next(&mut seen).await, obj("b", "b1", None));
    }
}
