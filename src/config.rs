//! Command line and environment (`ONEINBOX_*`), validated once at start-up.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::oneinbox::SecretString;

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
    /// Write a PhoneNumber manifest (managementPolicy: Observe) for every registration of the
    /// OneInbox workspace, to stdout or a directory (docs/migrating.md).
    Import(Box<ImportArgs>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Plain,
    Json,
}

/// Where the OneInbox API is and how to reach it: shared by `run` and `import`.
#[derive(Args, Debug, Clone)]
pub struct ApiArgs {
    /// Base URL of the OneInbox API.
    #[arg(
        long,
        env = "ONEINBOX_API_URL",
        default_value = "https://api.oneinbox.ai"
    )]
    pub api_url: reqwest::Url,

    /// Allow an `http://` API URL (the API key then crosses the network in clear text): for
    /// local mock servers and tests only.
    #[arg(long, env = "ONEINBOX_ALLOW_INSECURE_HTTP")]
    pub allow_insecure_http: bool,

    /// PEM file of CA certificates trusted for the OneInbox API, in addition to the built-in
    /// roots (a TLS-inspecting proxy, a private endpoint).
    #[arg(long, env = "ONEINBOX_API_CA_FILE")]
    pub api_ca_file: Option<PathBuf>,

    /// Read the OneInbox API key from this file instead of ONEINBOX_API_KEY (e.g. a mounted Secret).
    #[arg(long, env = "ONEINBOX_API_KEY_FILE")]
    pub api_key_file: Option<PathBuf>,
}

/// Settings of `oneinbox-operator run`.
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    #[command(flatten)]
    pub api: ApiArgs,

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
    pub secret_access: crate::secrets::SecretAccess,

    /// How the PhoneNumber and Secret watches list everything (at the start, and when a watch
    /// cannot resume): "stream" (the objects come as watch events, Kubernetes' WatchList; where
    /// the API server refuses it, pages) or "pages" (LIST requests of 500 objects).
    #[arg(
        long,
        env = "ONEINBOX_INITIAL_LISTS",
        value_enum,
        default_value = "stream"
    )]
    pub initial_lists: crate::watch_list::InitialLists,

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

    /// Reconciles running at once per account to start with (each account has its own places,
    /// so one account's backlog never delays another's work); an account whose passes, not its
    /// API budget, hold its work back gets more, up to 4 × this value.
    #[arg(long, env = "ONEINBOX_CONCURRENCY", default_value = "16")]
    pub concurrency: u16,

    /// Threads that run the operator's tasks. The work is waiting on two APIs: one thread
    /// keeps up with 10,000 creates and spares the wake-ups between threads (a quarter of the
    /// profile's samples with one thread per core; docs/benchmarks.md).
    #[arg(long, env = "ONEINBOX_WORKER_THREADS", default_value = "1", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub worker_threads: u16,

    /// The ClusterOneInboxAccount of PhoneNumbers without spec.accountRef (its
    /// allowedNamespaces decide who may use it). Without it they use the operator-wide key,
    /// which every watched namespace may use.
    #[arg(long, env = "ONEINBOX_DEFAULT_ACCOUNT")]
    pub default_account: Option<String>,

    /// Serve the operator-wide key only to namespaces whose labels match this selector (e.g.
    /// `oneinbox.ai/operator-key=allowed`, or `kubernetes.io/metadata.name in (a,b)`): a
    /// PhoneNumber elsewhere without spec.accountRef is Stalled AccountNotAllowed. Watches
    /// Namespace labels (cluster-wide list/watch). Default: every watched namespace.
    #[arg(long, env = "ONEINBOX_OPERATOR_KEY_NAMESPACES")]
    pub operator_key_namespaces: Option<String>,

    /// The deletionPolicy of PhoneNumbers that set none and whose account sets no
    /// spec.defaultDeletionPolicy (the operator-wide key's numbers among them).
    #[arg(
        long,
        env = "ONEINBOX_DEFAULT_DELETION_POLICY",
        value_enum,
        default_value = "Delete"
    )]
    pub default_deletion_policy: crate::crd::DeletionPolicy,

    /// Watch ClusterOneInboxAccounts and Namespace labels (needs cluster-wide list/watch of
    /// both). Default: on, unless --watch-namespace is given.
    #[arg(long, env = "ONEINBOX_CLUSTER_ACCOUNTS")]
    pub cluster_accounts: Option<bool>,

    /// Only use accounts (both kinds) matching this label selector: sharding by account, each
    /// account's budget enforced by exactly one process. PhoneNumbers of other accounts, and
    /// those on the operator-wide key, are left to other processes.
    #[arg(long, env = "ONEINBOX_ACCOUNT_SELECTOR")]
    pub account_selector: Option<String>,

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

impl RunArgs {
    /// Whether ClusterOneInboxAccounts are watched.
    pub fn cluster_accounts_enabled(&self) -> bool {
        self.cluster_accounts
            .unwrap_or(self.watch_namespace.is_none())
    }

    /// Refuse settings that cannot work, with the flag to change in the message.
    pub fn validate(&self) -> Result<(), String> {
        if self.concurrency == 0 {
            return Err("--concurrency must be at least 1 (0 would never reconcile)".into());
        }
        if self.default_account.is_some() && !self.cluster_accounts_enabled() {
            return Err(
                "--default-account names a ClusterOneInboxAccount, but cluster accounts are off (--watch-namespace without --cluster-accounts=true)".into(),
            );
        }
        if self.operator_key_namespaces.is_some() && self.watch_namespace.is_some() {
            return Err(
                "--operator-key-namespaces selects among namespaces, but --watch-namespace serves one: the install is the rule there, leave the flag out".into(),
            );
        }
        if self.backoff_base > self.backoff_max {
            return Err(format!(
                "--backoff-base ({}) must not exceed --backoff-max ({})",
                show(self.backoff_base),
                show(self.backoff_max)
            ));
        }
        if self.leader_election && self.lease_grace >= self.lease_duration {
            return Err(format!(
                "--lease-grace ({}) must be shorter than --lease-duration ({}): the Lease is \
                 renewed that long before it expires",
                show(self.lease_grace),
                show(self.lease_duration)
            ));
        }
        crate::oneinbox::http::check_api_url(&self.api.api_url, self.api.allow_insecure_http)
    }
}

/// The OneInbox API key: from `--api-key-file` if given, else `ONEINBOX_API_KEY`; trimmed,
/// never empty.
pub fn read_api_key(file: Option<&std::path::Path>) -> Result<SecretString, String> {
    let key = match file {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the API key file {}: {e}", path.display()))?,
        None => std::env::var("ONEINBOX_API_KEY")
            .map_err(|_| "set ONEINBOX_API_KEY or --api-key-file".to_string())?,
    };
    let key = key.trim().to_owned();
    if key.is_empty() {
        return Err("the OneInbox API key is empty".into());
    }
    Ok(SecretString::new(key))
}

/// Settings of `oneinbox-operator import`.
#[derive(Args, Debug, Clone)]
pub struct ImportArgs {
    #[command(flatten)]
    pub api: ApiArgs,

    /// Timeout of each OneInbox request.
    #[arg(long, env = "ONEINBOX_API_TIMEOUT", default_value = "15s", value_parser = parse_duration)]
    pub api_timeout: Duration,

    /// Registrations per list request (1–100).
    #[arg(long, default_value = "100", value_parser = clap::value_parser!(u32).range(1..=100))]
    pub page_size: u32,

    /// metadata.namespace of every manifest.
    #[arg(long, short = 'n', default_value = "default")]
    pub namespace: String,

    /// metadata.name of each manifest. Placeholders: {number} (the E.164 number without its
    /// "+", e.g. 15551234567), {id} (the OneInbox registration id), {provider} (twilio or
    /// telnyx). The result must be a valid Kubernetes name (lower case, digits, "-", ".").
    #[arg(long, default_value = "pn-{number}")]
    pub name_template: String,

    /// Write one file per number (<name>.yaml) into this directory instead of stdout. It must
    /// be empty or missing, unless --force.
    #[arg(long)]
    pub output_dir: Option<PathBuf>,

    /// Write into a non-empty --output-dir: files of the same name are replaced, others kept.
    #[arg(long)]
    pub force: bool,

    /// Skip numbers a PhoneNumber in this cluster already manages (by number or id), using
    /// this kubeconfig (its current context).
    #[arg(long, conflicts_with = "check_cluster")]
    pub kubeconfig: Option<PathBuf>,

    /// Skip numbers a PhoneNumber in the cluster already manages, using the ambient
    /// Kubernetes configuration (KUBECONFIG, ~/.kube/config, or the in-cluster service
    /// account).
    #[arg(long)]
    pub check_cluster: bool,
}

fn show(d: Duration) -> String {
    format!("{d:?}")
}

/// A duration in Go's `time.ParseDuration` syntax, as Kubernetes and Helm values spell them:
/// `90s`, `1m30s`, `1.5h`, `250ms`, `0`. Units `ns`, `us` (`µs`, `μs`), `ms`, `s`, `m`, `h`;
/// every number needs a unit except a lone `0`; negative durations are refused.
///
/// Parsed by `go-parse-duration` (a port of Go's function). Around it: the micro sign is
/// spelled `us` first (the port slices the text by bytes and would panic on it), and a negative
/// result is refused.
pub fn parse_duration(input: &str) -> Result<Duration, String> {
    let ascii = input.replace(['µ', 'μ'], "u");
    if !ascii.is_ascii() {
        return Err(format!(
            "invalid duration {input:?}: expected e.g. 30s, 1m30s, 1.5h, 250ms"
        ));
    }
    let nanos = go_parse_duration::parse_duration(&ascii).map_err(|e| {
        let go_parse_duration::Error::ParseError(why) = e;
        format!("invalid duration {input:?}: {why}; expected e.g. 30s, 1m30s, 1.5h, 250ms")
    })?;
    u64::try_from(nanos)
        .map(Duration::from_nanos)
        .map_err(|_| format!("invalid duration {input:?}: negative"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Go's own examples and edge cases (`time.ParseDuration`'s test table).
    #[test]
    fn durations_in_go_syntax() {
        let ms = Duration::from_millis;
        let ok = [
            ("0", Duration::ZERO),
            ("+0", Duration::ZERO),
            ("-0", Duration::ZERO),
            ("5s", Duration::from_secs(5)),
            ("30s", Duration::from_secs(30)),
            ("1478s", Duration::from_secs(1478)),
            ("+5s", Duration::from_secs(5)),
            ("5.0s", Duration::from_secs(5)),
            ("5.6s", ms(5600)),
            ("5.s", Duration::from_secs(5)),
            (".5s", ms(500)),
            ("1.0s", Duration::from_secs(1)),
            ("1.00s", Duration::from_secs(1)),
            ("1.004s", ms(1004)),
            ("1.0040s", ms(1004)),
            ("100.00100s", Duration::from_micros(100_001_000)),
            ("10ns", Duration::from_nanos(10)),
            ("11us", Duration::from_micros(11)),
            ("12µs", Duration::from_micros(12)),
            ("12μs", Duration::from_micros(12)),
            ("13ms", ms(13)),
            ("14s", Duration::from_secs(14)),
            ("15m", Duration::from_secs(15 * 60)),
            ("16h", Duration::from_secs(16 * 3600)),
            ("3h30m", Duration::from_secs(3 * 3600 + 30 * 60)),
            ("1m30s", Duration::from_secs(90)),
            ("10.5s4m", Duration::from_millis(4 * 60_000 + 10_500)),
            ("1h2m3s4ms5us6ns", Duration::new(3723, 4_005_006)),
            ("39h9m14.425s", Duration::from_millis(140_954_425)),
            ("52763797000ns", Duration::from_nanos(52_763_797_000)),
            ("0.3333333333333333333h", Duration::from_secs(20 * 60)),
            ("1.5h", Duration::from_secs(5400)),
            // Far beyond any flag: a century.
            ("876000h", Duration::from_secs(876_000 * 3600)),
        ];
        for (text, want) in ok {
            assert_eq!(parse_duration(text), Ok(want), "{text}");
        }
        for bad in [
            "",
            "3",
            "-",
            "s",
            ".",
            "-.",
            ".s",
            "+.s",
            "1d",
            "1 s",
            " 1s",
            "1s ",
            "1m 30s",
            "2 weeks",
            "1min",
            "30 seconds",
            "10",
            "-5s",
            "-1.5h",
            "1.5.s",
            "9223372036854775808ns",
            "9223372036854775.808us",
            "3000000h",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} must be refused");
        }
    }

    fn run_args(extra: &[&str]) -> Result<RunArgs, String> {
        let mut argv = vec!["oneinbox-operator", "run"];
        argv.extend_from_slice(extra);
        let Command::Run(args) = Cli::try_parse_from(argv)
            .map_err(|e| e.to_string())?
            .command
        else {
            return Err("not run".into());
        };
        args.validate()?;
        Ok(*args)
    }

    #[test]
    fn https_and_the_defaults_are_valid() {
        let args = run_args(&[]).unwrap();
        assert_eq!(args.api.api_url.as_str(), "https://api.oneinbox.ai/");
        assert!(!args.api.allow_insecure_http);
        assert!(run_args(&["--api-url", "https://10.0.0.1:8443"]).is_ok());
        assert!(run_args(&["--leader-election", "--lease-duration", "1m30s"]).is_ok());
    }

    #[test]
    fn plain_http_needs_allow_insecure_http() {
        let err = run_args(&["--api-url", "http://127.0.0.1:1"]).unwrap_err();
        assert!(err.contains("--allow-insecure-http"), "{err}");
        assert!(err.contains("http://127.0.0.1:1/"), "{err}");
        assert!(run_args(&["--api-url", "http://127.0.0.1:1", "--allow-insecure-http"]).is_ok());
        let err = run_args(&["--api-url", "http://user:s3cret@127.0.0.1:1"]).unwrap_err();
        assert!(!err.contains("s3cret") && !err.contains("user"), "{err}");
        let err = run_args(&["--api-url", "ftp://example.com"]).unwrap_err();
        assert!(err.contains("unsupported scheme"), "{err}");
    }

    #[test]
    fn the_operator_key_s_namespaces_are_not_for_one_watched_namespace() {
        let sel = "oneinbox.ai/operator-key=allowed";
        let err = run_args(&[
            "--watch-namespace",
            "voice",
            "--operator-key-namespaces",
            sel,
        ])
        .unwrap_err();
        assert!(err.contains("--operator-key-namespaces") && err.contains("--watch-namespace"));
        let args = run_args(&["--operator-key-namespaces", sel]).unwrap();
        assert_eq!(args.operator_key_namespaces.as_deref(), Some(sel));
    }

    #[test]
    fn zero_concurrency_is_refused() {
        let err = run_args(&["--concurrency", "0"]).unwrap_err();
        assert!(err.contains("--concurrency must be at least 1"), "{err}");
        assert!(run_args(&["--concurrency", "1"]).is_ok());
    }

    #[test]
    fn backoff_base_above_max_is_refused() {
        let err = run_args(&["--backoff-base", "2m", "--backoff-max", "1m30s"]).unwrap_err();
        assert_eq!(
            err,
            "--backoff-base (120s) must not exceed --backoff-max (90s)"
        );
        assert!(run_args(&["--backoff-base", "90s", "--backoff-max", "1m30s"]).is_ok());
    }

    #[test]
    fn lease_grace_not_below_the_duration_is_refused() {
        for grace in ["15s", "20s"] {
            let err = run_args(&["--leader-election", "--lease-grace", grace]).unwrap_err();
            assert!(
                err.starts_with("--lease-grace (") && err.contains("--lease-duration (15s)"),
                "{err}"
            );
        }
        assert!(run_args(&["--leader-election", "--lease-grace", "14s"]).is_ok());
        // Without leader election the lease settings are unused.
        assert!(run_args(&["--lease-grace", "20s"]).is_ok());
    }

    #[test]
    fn duration_flags_take_go_syntax() {
        let args = run_args(&["--poll-interval", "1m30s", "--api-timeout", "1.5s"]).unwrap();
        assert_eq!(args.poll_interval, Duration::from_secs(90));
        assert_eq!(args.api_timeout, Duration::from_millis(1500));
        let err = run_args(&["--poll-interval", "90"]).unwrap_err();
        assert!(err.contains("missing unit"), "{err}");
    }

    #[test]
    fn cli_parses_with_defaults() {
        let cli = Cli::try_parse_from([
            "oneinbox-operator",
            "run",
            "--api-url",
            "http://127.0.0.1:1",
            "--allow-insecure-http",
        ])
        .unwrap();
        let Command::Run(args) = cli.command else {
            panic!("not run")
        };
        assert_eq!(args.poll_interval, Duration::from_secs(600));
        assert_eq!(args.log_format, LogFormat::Plain);
    }
}
