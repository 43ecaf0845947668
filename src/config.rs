//! Command line and environment (`ONEINBOX_*`), validated once at start-up.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "oneinbox-operator",
    version,
    about = "Manages OneInbox phone numbers as PhoneNumber custom resources"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the controller.
    Run(Box<RunArgs>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Plain,
    Json,
}

/// Settings of `oneinbox-operator run`.
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Base URL of the OneInbox API.
    #[arg(
        long,
        env = "ONEINBOX_API_URL",
        default_value = "https://api.oneinbox.ai"
    )]
    pub api_url: reqwest::Url,

    /// Read the OneInbox API key from this file instead of ONEINBOX_API_KEY (e.g. a mounted Secret).
    #[arg(long, env = "ONEINBOX_API_KEY_FILE")]
    pub api_key_file: Option<PathBuf>,

    /// Key of status.credentialsHash, from this file (default: derived from the API key; a new
    /// key makes every hash a new baseline, never a replacement).
    #[arg(long, env = "ONEINBOX_CREDENTIALS_HASH_KEY_FILE")]
    pub credentials_hash_key_file: Option<PathBuf>,

    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "ONEINBOX_WATCH_NAMESPACE")]
    pub watch_namespace: Option<String>,

    /// How referenced Secrets are followed: "watch" (a metadata-only watch of Secrets; needs
    /// get, list and watch; rotations are picked up within seconds, no read while unchanged) or
    /// "get" (needs only get: each drift check reads the Secrets an object references, a
    /// rotation is picked up at the next check, and a missing Secret is looked for again every
    /// --min-poll-interval).
    #[arg(
        long,
        env = "ONEINBOX_SECRET_ACCESS",
        value_enum,
        default_value = "watch"
    )]
    pub secret_access: crate::controller::SecretAccess,

    /// Only manage PhoneNumbers matching this label selector (for sharding a large fleet).
    #[arg(long, env = "ONEINBOX_LABEL_SELECTOR")]
    pub label_selector: Option<String>,

    /// Default drift-check interval of a Ready object (jittered by ±20 %).
    #[arg(long, env = "ONEINBOX_POLL_INTERVAL", default_value = "10m", value_parser = parse_duration)]
    pub poll_interval: Duration,

    /// Smallest poll interval an object's annotation may ask for.
    #[arg(long, env = "ONEINBOX_MIN_POLL_INTERVAL", default_value = "30s", value_parser = parse_duration)]
    pub min_poll_interval: Duration,

    /// How long a missing password Secret is waited for before the object is Stalled.
    #[arg(long, env = "ONEINBOX_SECRET_GRACE_PERIOD", default_value = "2m", value_parser = parse_duration)]
    pub secret_grace_period: Duration,

    /// How often a registration that is not active yet is polled.
    #[arg(long, env = "ONEINBOX_PROVISIONING_POLL", default_value = "10s", value_parser = parse_duration)]
    pub provisioning_poll: Duration,

    /// Client-side OneInbox API budget: requests per second.
    #[arg(long, env = "ONEINBOX_API_RPS", default_value = "20")]
    pub api_rps: NonZeroU32,

    /// Client-side OneInbox API budget: burst.
    #[arg(long, env = "ONEINBOX_API_BURST", default_value = "40")]
    pub api_burst: NonZeroU32,

    /// Most OneInbox requests in flight at once.
    #[arg(long, env = "ONEINBOX_API_MAX_IN_FLIGHT", default_value = "16")]
    pub api_max_in_flight: usize,

    /// Timeout of each OneInbox request.
    #[arg(long, env = "ONEINBOX_API_TIMEOUT", default_value = "15s", value_parser = parse_duration)]
    pub api_timeout: Duration,

    /// Longest Retry-After that is honoured as given.
    #[arg(long, env = "ONEINBOX_MAX_RETRY_AFTER", default_value = "5m", value_parser = parse_duration)]
    pub max_retry_after: Duration,

    /// Most reconciles running at once.
    #[arg(long, env = "ONEINBOX_CONCURRENCY", default_value = "16")]
    pub concurrency: u16,

    /// First retry delay after an error (doubles per failure, with jitter).
    #[arg(long, env = "ONEINBOX_BACKOFF_BASE", default_value = "2s", value_parser = parse_duration)]
    pub backoff_base: Duration,

    /// Longest retry delay after repeated errors.
    #[arg(long, env = "ONEINBOX_BACKOFF_MAX", default_value = "30m", value_parser = parse_duration)]
    pub backoff_max: Duration,

    /// Timeout of each Kubernetes write.
    #[arg(long, env = "ONEINBOX_KUBE_TIMEOUT", default_value = "20s", value_parser = parse_duration)]
    pub kube_timeout: Duration,

    /// Address of the admin server (/livez, /readyz, /metrics).
    #[arg(long, env = "ONEINBOX_ADMIN_ADDR", default_value = "0.0.0.0:8080")]
    pub admin_addr: SocketAddr,

    /// Log format.
    #[arg(long, env = "ONEINBOX_LOG_FORMAT", value_enum, default_value = "plain")]
    pub log_format: LogFormat,

    /// Run only while holding the Lease (for more than one replica).
    #[arg(long, env = "ONEINBOX_LEADER_ELECTION")]
    pub leader_election: bool,

    /// Name of the leader-election Lease.
    #[arg(long, env = "ONEINBOX_LEASE_NAME", default_value = "oneinbox-operator")]
    pub lease_name: String,

    /// Namespace of the leader-election Lease (the operator's own).
    #[arg(long, env = "POD_NAMESPACE", default_value = "oneinbox-system")]
    pub lease_namespace: String,

    /// How long a Lease is held without renewal; a standby takes over after it expires.
    #[arg(long, env = "ONEINBOX_LEASE_DURATION", default_value = "15s", value_parser = parse_duration)]
    pub lease_duration: Duration,

    /// Renew the Lease this long before it expires.
    #[arg(long, env = "ONEINBOX_LEASE_GRACE", default_value = "5s", value_parser = parse_duration)]
    pub lease_grace: Duration,

    /// Event reporter instance (usually the pod name).
    #[arg(long, env = "POD_NAME", default_value = "oneinbox-operator")]
    pub instance: String,
}

/// `90s`, `10m`, `1h`, `500ms` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: expected e.g. 30s, 10m, 1h"))?;
    let d = match unit {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => return Err(format!("invalid duration unit in {s:?}: use ms, s, m or h")),
    };
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("5 minutes").is_err());
        assert!(parse_duration("m").is_err());
    }

    #[test]
    fn cli_parses_with_defaults() {
        let cli = Cli::try_parse_from([
            "oneinbox-operator",
            "run",
            "--api-url",
            "http://127.0.0.1:1",
        ])
        .unwrap();
        let Command::Run(args) = cli.command;
        assert_eq!(args.poll_interval, Duration::from_secs(600));
        assert_eq!(args.log_format, LogFormat::Plain);
    }
}
