//! Kubernetes Secrets the operator reads: how they are followed (`--secret-access`), the
//! resourceVersions of the metadata-only watch, a referenced value and what is wrong with it,
//! in words and with the command that fixes it. Never a value in any text.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PartialObjectMeta};
use kube::runtime::{WatchStreamExt, watcher};

use crate::oneinbox::SecretString;

/// How referenced Secrets are followed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum SecretAccess {
    /// A metadata-only watch of Secrets (get, list, watch).
    #[default]
    Watch,
    /// Reads only (get): each check reads what it needs.
    Get,
}

/// resourceVersion of each Secret (namespace, name), from the metadata-only Secret watch.
pub type SecretVersions = Arc<Mutex<HashMap<(String, String), String>>>;

/// The metadata-only Secret watch (in `namespace`, or all): learn that a referenced Secret changed without caching any
/// Secret data; `listed` is set once it has listed every Secret. With `--secret-access get`
/// there is no watch (and no list/watch permission): the stream is empty and every check reads
/// the Secrets it needs.
pub fn version_watch(
    client: &kube::Client,
    namespace: Option<&str>,
    access: SecretAccess,
    listed: Arc<AtomicBool>,
    lists: crate::watch_list::InitialLists,
) -> BoxStream<'static, Result<PartialObjectMeta<Secret>, watcher::Error>> {
    let api: Api<PartialObjectMeta<Secret>> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    match access {
        SecretAccess::Watch => {
            crate::watch_list::streaming_watcher(api, watcher::Config::default(), lists)
                .default_backoff()
                .inspect_ok(move |e| {
                    if matches!(e, watcher::Event::InitDone) {
                        listed.store(true, Ordering::Relaxed);
                    }
                })
                .touched_objects()
                .boxed()
        }
        SecretAccess::Get => futures::stream::pending().boxed(),
    }
}

/// Why a referenced Secret value cannot be used (never carries the value).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretProblem {
    pub kind: SecretProblemKind,
    pub namespace: String,
    pub name: String,
    pub key: String,
    /// The keys the Secret has (names only, sorted), when it lacks `key`: the reference may
    /// name the wrong one.
    pub keys: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretProblemKind {
    /// No Secret of that name.
    Absent,
    /// The Secret exists without the key.
    NoKey,
    /// The value is empty (or only white space).
    Empty,
    /// The value is not UTF-8 text.
    NotText,
}

/// The non-empty UTF-8 value of `key` in `secret` (as read from `namespace/name`), or what is
/// wrong with it (never the value).
pub fn secret_value_of(
    secret: Option<&Secret>,
    namespace: &str,
    name: &str,
    key: &str,
) -> std::result::Result<SecretString, SecretProblem> {
    let problem = |kind| SecretProblem {
        kind,
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        key: key.to_owned(),
        keys: Vec::new(),
    };
    match secret {
        None => Err(problem(SecretProblemKind::Absent)),
        Some(s) => match s.data.as_ref().and_then(|d| d.get(key)) {
            None => Err(SecretProblem {
                keys: s.data.iter().flatten().map(|(k, _)| k.clone()).collect(),
                ..problem(SecretProblemKind::NoKey)
            }),
            Some(bytes) => match std::str::from_utf8(&bytes.0) {
                Ok(v) if !v.trim().is_empty() => Ok(SecretString::new(
                    v.trim_end_matches(['\n', '\r']).to_owned(),
                )),
                Ok(_) => Err(problem(SecretProblemKind::Empty)),
                Err(_) => Err(problem(SecretProblemKind::NotText)),
            },
        },
    }
}

/// What is wrong with a Secret, in words (never the value).
pub fn problem_text(p: &SecretProblem) -> String {
    let SecretProblem {
        namespace: ns,
        name,
        key,
        ..
    } = p;
    match p.kind {
        SecretProblemKind::Absent => format!("Secret {ns}/{name} does not exist"),
        SecretProblemKind::NoKey => format!("Secret {ns}/{name} has no key {key:?}"),
        SecretProblemKind::Empty => format!("key {key:?} of Secret {ns}/{name} is empty"),
        SecretProblemKind::NotText => {
            format!("key {key:?} of Secret {ns}/{name} is not UTF-8 text")
        }
    }
}

/// The command that fixes it: create a missing Secret, or set the key of an existing one;
/// for a Secret without the key, also the reference `key_field` that may name another of the
/// keys it has.
pub fn problem_fix(p: &SecretProblem, key_field: &str) -> String {
    let SecretProblem {
        namespace: ns,
        name,
        key,
        keys,
        ..
    } = p;
    let set_key = format!(
        "kubectl -n {ns} patch secret {name} --type merge -p '{{\"stringData\":{{\"{key}\":\"<value>\"}}}}'"
    );
    match p.kind {
        SecretProblemKind::Absent => format!(
            "Create it, e.g. kubectl -n {ns} create secret generic {name} --from-literal={key}=<value>"
        ),
        SecretProblemKind::NoKey => {
            let has = if keys.is_empty() {
                "it has no keys".to_owned()
            } else {
                format!("it has {}", keys.join(", "))
            };
            format!(
                "Add the key, e.g. {set_key}, or set {key_field} to the key that holds it ({has})"
            )
        }
        _ => format!("Set the key, e.g. {set_key}"),
    }
}
