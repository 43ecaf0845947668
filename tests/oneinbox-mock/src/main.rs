//! `oneinbox-mock`: the mock OneInbox phone-number API for tests and demos. Thin wrapper over
//! the `oneinbox_mock` library; prints `listening on http://<addr>` once bound so that a
//! caller can pass `--listen 127.0.0.1:0` and learn the port.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use oneinbox_mock::{
    FaultConfig, MockOptions, MockState, ProvisioningOutcome, RetryAfterFormat, WorkspaceSpec,
    serve_with_shutdown,
};
use tracing_subscriber::EnvFilter;

/// Mock OneInbox phone-number API. Every flag but --workspace has an ONEINBOX_MOCK_* environment
/// fallback.
#[derive(Debug, Parser)]
#[command(name = "oneinbox-mock", version)]
struct Cli {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "ONEINBOX_MOCK_LISTEN", default_value = "127.0.0.1:18080")]
    listen: SocketAddr,

    /// Accept only this bearer token (repeatable; the env form is comma-separated). Without
    /// any, every `oi_sk_<non-empty>` token is accepted.
    #[arg(
        long = "api-key",
        env = "ONEINBOX_MOCK_API_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    api_keys: Vec<String>,

    /// A workspace NAME reached by the keys KEY,... (repeatable): its own registrations,
    /// configuration, rate limit and counts under /_mock/workspaces/NAME/. The fault flags below
    /// configure only the default workspace.
    #[arg(long = "workspace", value_name = "NAME=KEY[,KEY...]")]
    workspaces: Vec<String>,

    /// Added delay per request, in milliseconds.
    #[arg(long, env = "ONEINBOX_MOCK_LATENCY_MS", default_value_t = 0)]
    latency_ms: u64,

    /// Upper bound of a uniform extra delay, in milliseconds.
    #[arg(long, env = "ONEINBOX_MOCK_LATENCY_JITTER_MS", default_value_t = 0)]
    latency_jitter_ms: u64,

    /// Probability (0.0-1.0) of answering --error-status instead of acting.
    #[arg(long, env = "ONEINBOX_MOCK_ERROR_RATE", default_value_t = 0.0)]
    error_rate: f64,

    /// Status of a random error.
    #[arg(long, env = "ONEINBOX_MOCK_ERROR_STATUS", default_value_t = 503)]
    error_status: u16,

    /// Requests per second before 429 (token bucket); unset or 0 means unlimited.
    #[arg(long, env = "ONEINBOX_MOCK_RATE_LIMIT_RPS")]
    rate_limit_rps: Option<f64>,

    /// Token bucket size (default: ceil(rps)).
    #[arg(long, env = "ONEINBOX_MOCK_RATE_LIMIT_BURST")]
    rate_limit_burst: Option<u32>,

    /// Form of Retry-After on a 429: seconds or http-date.
    #[arg(long, env = "ONEINBOX_MOCK_RETRY_AFTER_FORMAT", default_value_t = RetryAfterFormat::Seconds)]
    retry_after_format: RetryAfterFormat,

    /// When > 0, new registrations are `provisioning` for this many milliseconds.
    #[arg(long, env = "ONEINBOX_MOCK_PROVISIONING_MS", default_value_t = 0)]
    provisioning_ms: u64,

    /// Status after provisioning: active or failed.
    #[arg(long, env = "ONEINBOX_MOCK_PROVISIONING_OUTCOME", default_value_t = ProvisioningOutcome::Active)]
    provisioning_outcome: ProvisioningOutcome,

    /// Persist registrations to this JSON file (never the SIP password) and load it at start.
    #[arg(long, env = "ONEINBOX_MOCK_STATE_FILE")]
    state_file: Option<PathBuf>,
}

impl Cli {
    /// The library's options. Parsed here rather than by clap, whose error would repeat the
    /// value, keys included.
    fn options(self) -> Result<MockOptions, String> {
        let workspaces = self
            .workspaces
            .iter()
            .map(|s| s.parse::<WorkspaceSpec>())
            .collect::<Result<Vec<_>, _>>()?;
        Ok(MockOptions {
            api_keys: self.api_keys,
            config: FaultConfig {
                latency_ms: self.latency_ms,
                latency_jitter_ms: self.latency_jitter_ms,
                error_rate: self.error_rate,
                error_status: self.error_status,
                endpoints: Default::default(),
                rate_limit_rps: self.rate_limit_rps,
                rate_limit_burst: self.rate_limit_burst,
                retry_after_format: self.retry_after_format,
                provisioning_ms: self.provisioning_ms,
                provisioning_outcome: self.provisioning_outcome,
            },
            workspaces,
            state_file: self.state_file,
        })
    }
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                tokio::signal::ctrl_c().await.ok();
            }
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await.ok();
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();

    let cli = Cli::parse();
    let listen = cli.listen;
    let options = match cli.options() {
        Ok(options) => options,
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            return ExitCode::FAILURE;
        }
    };
    let state = match MockState::new(options) {
        Ok(state) => state,
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            return ExitCode::FAILURE;
        }
    };
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(%listen, error = %e, "cannot listen");
            return ExitCode::FAILURE;
        }
    };
    let addr = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the bound address");
            return ExitCode::FAILURE;
        }
    };
    {
        let mut out = std::io::stdout().lock();
        if writeln!(out, "listening on http://{addr}")
            .and_then(|()| out.flush())
            .is_err()
        {
            // Nobody reads stdout; keep serving.
            tracing::debug!("stdout is closed");
        }
    }
    tracing::info!(%addr, "oneinbox-mock started");
    serve_with_shutdown(listener, state, shutdown_signal()).await;
    tracing::info!("oneinbox-mock stopped");
    ExitCode::SUCCESS
}
