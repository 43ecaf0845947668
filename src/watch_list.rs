//! Watches of many objects list by streaming (`sendInitialEvents`, Kubernetes' WatchList): the
//! API server sends the objects as watch events on the watch itself, one at a time, instead of
//! LIST responses of 500 objects each (a page's JSON and its decoded objects held at once; 20
//! requests at 10,000 objects). A restart's peak memory at 10,000 objects was 4–11 MiB lower
//! streamed (docs/benchmarks.md, "Memory at scale"). Where the API server does not serve it (the
//! WatchList feature gate off: it refuses the first watch as invalid), the watch falls back to
//! paged lists for the rest of the process, with one log line.

use std::fmt::Debug;

use futures::StreamExt;
use kube::Resource;
use kube::api::Api;
use kube::runtime::watcher;
use serde::de::DeserializeOwned;

/// How the large watches (PhoneNumbers, Secrets' metadata) list.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum InitialLists {
    /// Streamed as watch events (paged where the API server does not serve it).
    #[default]
    Stream,
    /// Paged lists (the watcher's 500 per page).
    Pages,
}

/// `watcher(api, wc)` with its initial lists streamed (`InitialLists::Stream`), falling back to
/// paged lists where the API server refuses streaming ones.
pub fn streaming_watcher<K>(
    api: Api<K>,
    wc: watcher::Config,
    lists: InitialLists,
) -> futures::stream::BoxStream<'static, watcher::Result<watcher::Event<K>>>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + 'static,
{
    if lists == InitialLists::Pages {
        return crate::relists::relist_when_expired(watcher(api, wc)).boxed();
    }
    let streaming =
        crate::relists::relist_when_expired(watcher(api.clone(), wc.clone().streaming_lists()))
            .boxed();
    futures::stream::unfold(
        (streaming, Some((api, wc))),
        |(mut events, mut fallback)| async move {
            loop {
                let event = events.next().await?;
                if let (Err(e), Some((api, wc))) = (&event, &fallback)
                    && not_served(e)
                {
                    tracing::info!(
                        kind = K::kind(&()).as_ref(),
                        "the API server does not stream initial lists (WatchList); listing in pages"
                    );
                    events = crate::relists::relist_when_expired(watcher(api.clone(), wc.clone()))
                        .boxed();
                    fallback = None;
                    continue;
                }
                return Some((event, (events, fallback)));
            }
        },
    )
    .boxed()
}

/// The API server refused a streaming list as a request it does not serve: 422 (Invalid:
/// "sendInitialEvents is forbidden for watch unless the WatchList feature gate is enabled") or
/// 400. Not 403 (RBAC refuses a paged list too) nor anything transient.
fn not_served(e: &watcher::Error) -> bool {
    matches!(e, watcher::Error::WatchStartFailed(kube::Error::Api(s)) if s.code == 422 || s.code == 400)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use futures::TryStreamExt;
    use http::{Request, Response, StatusCode};
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::Client;
    use kube::client::Body;
    use serde_json::json;
    use std::sync::{Arc, Mutex};

    fn cm(name: &str, rv: &str) -> serde_json::Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": name, "namespace": "ns", "resourceVersion": rv}})
    }

    /// A fake API server for ConfigMaps in `ns`: `watch_list` says whether it streams initial
    /// lists. Records each request's query.
    fn server(watch_list: bool) -> (Client, Arc<Mutex<Vec<String>>>) {
        let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let log = seen.clone();
        tokio::spawn(async move {
            while let Some((req, send)) = handle.next_request().await {
                let query = req.uri().query().unwrap_or_default().to_string();
                log.lock().unwrap().push(query.clone());
                let watch = query.contains("watch=true");
                let initial = query.contains("sendInitialEvents=true");
                let (status, body) = if watch && initial && !watch_list {
                    let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                        "reason": "Invalid", "code": 422,
                        "message": "ListOptions.meta.k8s.io \"\" is invalid: sendInitialEvents: Forbidden: sendInitialEvents is forbidden for watch unless the WatchList feature gate is enabled"});
                    (StatusCode::UNPROCESSABLE_ENTITY, status.to_string())
                } else if watch && initial {
                    let lines = [
                        json!({"type": "ADDED", "object": cm("a", "5")}),
                        json!({"type": "ADDED", "object": cm("b", "6")}),
                        json!({"type": "BOOKMARK", "object": {"apiVersion": "v1", "kind": "ConfigMap",
                            "metadata": {"resourceVersion": "7",
                                         "annotations": {"k8s.io/initial-events-end": "true"}}}}),
                    ];
                    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
                    (StatusCode::OK, text)
                } else if watch {
                    // A resumed watch: nothing more happens (ends at once; the watcher resumes).
                    (StatusCode::OK, String::new())
                } else {
                    let list = json!({"apiVersion": "v1", "kind": "ConfigMapList",
                        "metadata": {"resourceVersion": "7"}, "items": [cm("a", "5"), cm("b", "6")]});
                    (StatusCode::OK, list.to_string())
                };
                let resp = Response::builder()
                    .status(status)
                    .body(Body::from(body.into_bytes()))
                    .unwrap();
                send.send_response(resp);
            }
        });
        (Client::new(svc, "ns"), seen)
    }

    /// The events up to the end of the initial list, as names.
    async fn initial_list(client: Client) -> Vec<String> {
        let api: Api<ConfigMap> = Api::namespaced(client, "ns");
        let events = streaming_watcher(api, watcher::Config::default(), InitialLists::Stream);
        let mut events = std::pin::pin!(events);
        let mut seen = Vec::new();
        let deadline = std::time::Duration::from_secs(10);
        loop {
            let event = tokio::time::timeout(deadline, events.try_next())
                .await
                .expect("the initial list ends")
                .expect("no error reaches the caller")
                .expect("the stream goes on");
            match event {
                watcher::Event::Init => seen.push("init".into()),
                watcher::Event::InitApply(o) => seen.push(o.metadata.name.unwrap()),
                watcher::Event::InitDone => {
                    seen.push("done".into());
                    return seen;
                }
                other => panic!("{other:?} before the list ended"),
            }
        }
    }

    #[tokio::test]
    async fn the_initial_list_streams_where_the_server_serves_it() {
        let (client, seen) = server(true);
        assert_eq!(initial_list(client).await, ["init", "a", "b", "done"]);
        let seen = seen.lock().unwrap();
        assert!(seen[0].contains("sendInitialEvents=true"), "{seen:?}");
        assert!(
            seen.iter().all(|q| q.contains("watch=true")),
            "no LIST: {seen:?}"
        );
    }

    #[tokio::test]
    async fn a_server_that_refuses_streaming_lists_is_listed_in_pages() {
        let (client, seen) = server(false);
        assert_eq!(initial_list(client).await, ["init", "a", "b", "done"]);
        let seen = seen.lock().unwrap();
        assert!(seen[0].contains("sendInitialEvents=true"), "{seen:?}");
        assert!(
            seen[1].contains("limit=500") && !seen[1].contains("watch=true"),
            "{seen:?}"
        );
    }
}
