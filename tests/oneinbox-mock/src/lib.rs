//! The mock OneInbox phone-number API (docs/oneinbox-contract.md).
//!
//! It serves `/v1/phone-numbers` with the contract's check order and error bodies, plus the
//! unauthenticated `/_mock/` test-support endpoints (fault configuration, one-shot faults,
//! inspection, seeding, call counts). It runs its own accept loop on hyper so that a fault can
//! close a connection without writing a single byte, which a framework server cannot do.
//!
//! Endpoint keys are `"<METHOD> <route template>"`; a request whose path matches no route is
//! counted as `"<METHOD> <unmatched>"`. A request's bearer key selects its workspace
//! (`workspace`); without any workspace defined the mock is the one workspace `default`.

mod admin;
mod api;
pub mod faults;
mod persist;
pub mod state;
pub mod validate;
pub mod workspace;

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

pub use faults::{FaultConfig, ProvisioningOutcome, RetryAfterFormat};
pub use workspace::WorkspaceSpec;

use workspace::Registry;

/// Start-up options of the mock.
#[derive(Clone, Default)]
pub struct MockOptions {
    /// The `default` workspace's keys: when non-empty, only these bearer tokens (and the named
    /// workspaces' keys) are accepted; otherwise any `oi_sk_<non-empty>`.
    pub api_keys: Vec<String>,
    /// The `default` workspace's initial fault configuration; a reset returns to it.
    pub config: FaultConfig,
    /// Named workspaces that exist from the start (with the default fault configuration).
    pub workspaces: Vec<WorkspaceSpec>,
    /// Registrations are loaded from and saved to this JSON file (never with a password).
    pub state_file: Option<PathBuf>,
}

impl fmt::Debug for MockOptions {
    /// Keys are secrets: only their number is shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockOptions")
            .field(
                "api_keys",
                &format_args!("[{} redacted]", self.api_keys.len()),
            )
            .field("config", &self.config)
            .field("workspaces", &self.workspaces)
            .field("state_file", &self.state_file)
            .finish()
    }
}

/// Why the mock could not start.
#[derive(Debug, thiserror::Error)]
pub enum MockError {
    /// The state file exists but cannot be read.
    #[error("cannot read state file {path}: {source}")]
    ReadState {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The state file is not a state file.
    #[error("state file {path} is not valid: {source}")]
    ParseState {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: serde_json::Error,
    },
    /// The initial fault configuration is invalid.
    #[error("invalid fault configuration: {0}")]
    Config(String),
    /// A start-up workspace cannot be created (the text names no key).
    #[error("invalid workspace: {0}")]
    Workspace(String),
    /// The listen address cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
}

/// One outcome in `/_mock/calls/log`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogEntry {
    /// 1-based order of completion.
    pub seq: u64,
    /// Endpoint key.
    pub endpoint: String,
    /// Status answered, or (for `drop`) `null`; for `commit_then_drop` the status that would
    /// have been answered.
    pub status: Option<u16>,
    /// Whether the connection was closed instead of answering.
    pub dropped: bool,
    /// When the outcome was decided, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// Which of its workspace's keys the request carried (its position, never the key); for
    /// `default`, among the `--api-key` keys.
    pub caller: Option<usize>,
}

struct Inner {
    /// Every workspace; see `workspace` for the lock order.
    registry: Mutex<Registry>,
    state_file: Option<PathBuf>,
    /// Serialises state-file writes so that the last write is the newest state.
    persist_lock: tokio::sync::Mutex<()>,
}

/// The mock's state; cheap to clone (shared).
#[derive(Clone)]
pub struct MockState {
    inner: Arc<Inner>,
}

impl fmt::Debug for MockState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockState").finish_non_exhaustive()
    }
}

impl MockState {
    /// Builds the state, loading registrations from the state file if it exists.
    pub fn new(options: MockOptions) -> Result<Self, MockError> {
        options.config.check().map_err(MockError::Config)?;
        let loaded = match &options.state_file {
            Some(path) => persist::load(path)?,
            None => persist::Snapshot::new(),
        };
        let registry = Registry::new(options.api_keys, options.config, options.workspaces, loaded)
            .map_err(MockError::Workspace)?;
        Ok(Self {
            inner: Arc::new(Inner {
                registry: Mutex::new(registry),
                state_file: options.state_file,
                persist_lock: tokio::sync::Mutex::new(()),
            }),
        })
    }

    /// The registry's lock. A poisoned lock is still usable: every mutation leaves the state
    /// consistent before it can panic.
    fn registry(&self) -> MutexGuard<'_, Registry> {
        self.inner
            .registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Writes every workspace's registrations to the state file, if one is configured.
    /// Failures are logged, not answered: the in-memory state stays authoritative.
    async fn persist(&self) {
        let Some(path) = &self.inner.state_file else {
            return;
        };
        let _order = self.inner.persist_lock.lock().await;
        let snapshot = self.registry().snapshot();
        if let Err(e) = persist::save(path, &snapshot).await {
            tracing::warn!(path = %path.display(), error = %e, "cannot write state file");
        }
    }
}

/// Serves the mock on `listener` until `shutdown` completes. Each connection runs on its own
/// task; in-flight connections are not waited for.
pub async fn serve_with_shutdown(
    listener: TcpListener,
    state: MockState,
    shutdown: impl Future<Output = ()>,
) {
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    tokio::spawn(serve_connection(stream, state.clone()));
                }
                Err(e) => {
                    // E.g. out of file descriptors: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}

/// Serves the mock on `listener` forever.
pub async fn serve(listener: TcpListener, state: MockState) {
    serve_with_shutdown(listener, state, std::future::pending()).await;
}

/// Starts a mock in-process on `addr` (port 0 picks one) and returns the bound address; for
/// tests that would rather not spawn the binary. The task serves until aborted.
pub async fn spawn(
    addr: SocketAddr,
    options: MockOptions,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), MockError> {
    let state = MockState::new(options)?;
    let bind_err = |source| MockError::Bind { addr, source };
    let listener = TcpListener::bind(addr).await.map_err(bind_err)?;
    let bound = listener.local_addr().map_err(bind_err)?;
    Ok((bound, tokio::spawn(serve(listener, state))))
}

/// One HTTP/1 connection. A handler that must drop the connection notifies `kill` and never
/// completes; dropping the connection future here then closes the socket with no response.
async fn serve_connection(stream: TcpStream, state: MockState) {
    // Best effort: only affects latency.
    stream.set_nodelay(true).ok();
    let kill = Arc::new(Notify::new());
    let handler_kill = Arc::clone(&kill);
    let service = service_fn(move |req| {
        let state = state.clone();
        let kill = Arc::clone(&handler_kill);
        async move { Ok::<_, Infallible>(api::handle(state, kill, req).await) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new());
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        result = conn => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        }
        () = kill.notified() => tracing::debug!("connection closed without a response (fault)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn spawn_serves_in_process() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (addr, task) = spawn(([127, 0, 0, 1], 0).into(), MockOptions::default())
            .await
            .unwrap();
        #[allow(clippy::disallowed_methods)] // a test client, not the operator's
        let client = reqwest::Client::new();
        let resp = client
            .get(format!("http://{addr}/v1/phone-numbers"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401);
        let resp = client
            .get(format!("http://{addr}/v1/phone-numbers"))
            .bearer_auth("oi_sk_unit")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        task.abort();
    }

    #[test]
    fn options_debug_hides_keys() {
        let opts = MockOptions {
            api_keys: vec!["oi_sk_secret".to_owned()],
            ..MockOptions::default()
        };
        let text = format!("{opts:?}");
        assert!(!text.contains("oi_sk_secret"));
        assert!(text.contains("1 redacted"));
        let opts = MockOptions {
            workspaces: vec!["team-a=oi_sk_ws_secret".parse().unwrap()],
            ..MockOptions::default()
        };
        let text = format!("{opts:?}");
        assert!(!text.contains("oi_sk_ws_secret"), "{text}");
        assert!(text.contains("team-a"));
    }
}
