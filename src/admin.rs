//! Admin server: `/livez` (the process serves), `/readyz` (the PhoneNumber cache has synced and
//! shutdown has not begun), `/metrics` (Prometheus text).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::metrics::Metrics;

/// Readiness flags shared with the controller.
#[derive(Clone, Default)]
pub struct Health {
    synced: Arc<AtomicBool>,
    standby: Arc<AtomicBool>,
    shutting_down: Arc<AtomicBool>,
}

impl Health {
    pub fn set_synced(&self) {
        self.synced.store(true, Ordering::SeqCst);
    }

    /// A replica waiting for the Lease is healthy (and ready) while it stands by.
    pub fn set_standby(&self, standby: bool) {
        self.standby.store(standby, Ordering::SeqCst);
    }

    pub fn set_shutting_down(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        let serving = self.synced.load(Ordering::SeqCst) || self.standby.load(Ordering::SeqCst);
        serving && !self.shutting_down.load(Ordering::SeqCst)
    }
}

#[derive(Clone)]
struct AdminState {
    health: Health,
    metrics: Metrics,
}

pub fn router(health: Health, metrics: Metrics) -> Router {
    Router::new()
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(AdminState { health, metrics })
}

async fn readyz(State(s): State<AdminState>) -> impl IntoResponse {
    if s.health.is_ready() {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

async fn metrics_text(State(s): State<AdminState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
}

/// Serve until `shutdown` resolves.
pub async fn serve(
    addr: SocketAddr,
    health: Health,
    metrics: Metrics,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "admin server listening");
    axum::serve(listener, router(health, metrics))
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_synced_and_not_stopping() {
        let h = Health::default();
        assert!(!h.is_ready());
        h.set_standby(true);
        assert!(h.is_ready(), "standing by correctly");
        h.set_standby(false);
        assert!(!h.is_ready(), "leading, cache not synced yet");
        h.set_synced();
        assert!(h.is_ready());
        h.set_shutting_down();
        assert!(!h.is_ready());
    }
}
