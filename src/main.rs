//! Wiring only: TLS provider, configuration, telemetry, clients, admin server, controller,
//! shutdown.

use oneinbox_operator::accounts::registry::RegistrySettings;
use oneinbox_operator::oneinbox::Budget;
use std::process::ExitCode;

use clap::Parser;
use oneinbox_operator::admin::{self, Health};
use oneinbox_operator::config::{self, Cli, Command, ImportArgs, RunArgs};
use oneinbox_operator::controller::credentials::HashKey;
use oneinbox_operator::controller::{self, Scope, Settings};
use oneinbox_operator::leader;
use oneinbox_operator::metrics::Metrics;
use oneinbox_operator::oneinbox::SecretString;
use oneinbox_operator::oneinbox::http::{self, HttpClient, HttpClientConfig};
use oneinbox_operator::telemetry;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tracing::{error, info};

/// Memory at 10,000 objects: glibc malloc keeps per-thread arenas that a multi-threaded runtime
/// fills and seldom returns; musl's allocator is slow under contention (the image is musl).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // Both kube and reqwest use rustls; pick the provider once, before any client exists.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let args = match cli.command {
        Command::Run(args) => args,
        Command::Import(args) => return import(*args),
    };
    telemetry::init(args.log_format);
    if let Err(msg) = args.validate() {
        error!("{msg}");
        eprintln!("oneinbox-operator: {msg}");
        return ExitCode::from(2);
    }
    // One thread: a current-thread runtime (no hand-offs between threads at all).
    let mut builder = if args.worker_threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(usize::from(args.worker_threads));
        b
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(*args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            error!("{msg}");
            ExitCode::FAILURE
        }
    }
}

/// `oneinbox-operator import`: progress and errors on stderr, manifests on stdout or in files.
fn import(args: ImportArgs) -> ExitCode {
    if let Err(msg) = oneinbox_operator::import::check_args(&args) {
        eprintln!("oneinbox-operator import: {msg}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("oneinbox-operator import: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(oneinbox_operator::import::run(&args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("oneinbox-operator import: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// The key of the credentials hash: its own file, or derived from the operator's API key.
fn hash_key(args: &RunArgs, api_key: &SecretString) -> Result<HashKey, String> {
    match &args.credentials_hash_key_file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                format!(
                    "cannot read the credentials hash key file {}: {e}",
                    path.display()
                )
            })?;
            if text.trim().is_empty() {
                return Err("the credentials hash key file is empty".into());
            }
            Ok(HashKey::derive(text.trim().as_bytes()))
        }
        None => Ok(HashKey::derive(api_key.expose().as_bytes())),
    }
}

/// Run the operator until it is told to stop: clients, admin server, Lease, controller.
async fn run(args: RunArgs) -> Result<(), String> {
    let metrics = Metrics::new();
    let operator_key = operator_key(&args)?;
    let hash_key = hash_key(&args, &operator_key)?;
    let oneinbox = oneinbox_client(&args, operator_key, &metrics)?;
    let client = kube_client().await?;
    let health = Health::default();
    let stop_rx = on_signals(health.clone())?;
    let admin_task = tokio::spawn(admin::serve(
        args.admin_addr,
        health.clone(),
        metrics.clone(),
        wait_stop(stop_rx.clone()),
    ));
    let options = controller::Options {
        settings: settings(&args, hash_key),
        scope: scope(&args),
        instance: args.instance.clone(),
        accounts: account_settings(&args),
    };
    info!(api_url = %args.api.api_url, namespace = ?options.scope.namespace, "starting oneinbox-operator");

    let lease = match lead(&args, &client, &health, stop_rx.clone()).await? {
        Role::Stopped => return Ok(()),
        Role::Alone => None,
        Role::Leader(guard, task) => Some((guard, task)),
    };
    // From here on this process reconciles: it holds the Lease, or runs alone.
    metrics.set_leader(true);
    let leader_metrics = metrics.clone();
    controller::run(
        client,
        oneinbox,
        metrics,
        options,
        report_ready(health.clone()),
        wait_stop(stop_rx),
    )
    .await;
    health.set_shutting_down();
    leader_metrics.set_leader(false);
    if let Some((guard, task)) = lease {
        // The in-flight reconciles have ended: only now release the Lease, so that a standby
        // takes over at once and never acts beside them.
        guard.release().await;
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), task).await;
    }
    admin_task.abort();
    Ok(())
}

/// The operator-wide API key. With a default account and a hash key of its own, it is not
/// needed: no object uses it.
fn operator_key(args: &RunArgs) -> Result<SecretString, String> {
    match config::read_api_key(args.api.api_key_file.as_deref()) {
        Ok(key) => Ok(key),
        Err(_) if args.default_account.is_some() && args.credentials_hash_key_file.is_some() => {
            Ok(SecretString::new(String::new()))
        }
        Err(e) => Err(e),
    }
}

/// The OneInbox client with the operator-wide key.
fn oneinbox_client(
    args: &RunArgs,
    api_key: SecretString,
    metrics: &Metrics,
) -> Result<HttpClient, String> {
    let extra_roots = match &args.api.api_ca_file {
        Some(path) => http::load_ca_file(path)?,
        None => Vec::new(),
    };
    HttpClient::new(
        HttpClientConfig {
            base_url: args.api.api_url.clone(),
            api_key,
            api_key_file: args.api.api_key_file.clone(),
            timeout: args.api_timeout,
            connect_timeout: args.api_timeout.min(std::time::Duration::from_secs(5)),
            rate_per_second: args.api_rps,
            burst: args.api_burst,
            max_in_flight: args.api_max_in_flight,
            max_retry_after: args.max_retry_after,
            extra_roots,
        },
        metrics.clone(),
    )
    .map_err(|e| format!("cannot build the OneInbox client: {e}"))
}

async fn kube_client() -> Result<kube::Client, String> {
    let mut kube_config = kube::Config::infer()
        .await
        .map_err(|e| format!("no Kubernetes configuration: {e}"))?;
    // Retries are ours (per-object backoff); the client's own could stall a reconcile.
    kube_config.default_retry = false;
    kube::Client::try_from(kube_config)
        .map_err(|e| format!("cannot build the Kubernetes client: {e}"))
}

/// First SIGTERM/SIGINT: not ready, drain (the receiver turns true). Second: exit at once.
fn on_signals(health: Health) -> Result<watch::Receiver<bool>, String> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut sigterm = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        tokio::select! { _ = sigterm.recv() => {}, _ = sigint.recv() => {} }
        info!("shutdown requested; draining in-flight reconciles");
        health.set_shutting_down();
        let _ = stop_tx.send(true);
        tokio::select! { _ = sigterm.recv() => {}, _ = sigint.recv() => {} }
        error!("second signal; exiting now");
        std::process::exit(130);
    });
    Ok(stop_rx)
}

async fn wait_stop(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

fn settings(args: &RunArgs, hash_key: HashKey) -> Settings {
    Settings {
        poll_interval: args.poll_interval,
        min_poll_interval: args.min_poll_interval,
        secret_grace_period: args.secret_grace_period,
        provisioning_poll: args.provisioning_poll,
        backoff_base: args.backoff_base,
        backoff_max: args.backoff_max,
        kube_timeout: args.kube_timeout,
        hash_key,
        secret_access: args.secret_access,
    }
}

fn scope(args: &RunArgs) -> Scope {
    Scope {
        namespace: args.watch_namespace.clone(),
        label_selector: args.label_selector.clone(),
        initial_lists: args.initial_lists,
    }
}

fn account_settings(args: &RunArgs) -> RegistrySettings {
    RegistrySettings {
        default_account: args.default_account.clone(),
        default_budget: Budget {
            rate_per_second: args.api_rps,
            burst: args.api_burst,
            max_in_flight: args.api_max_in_flight,
        },
        passes_per_account: usize::from(args.concurrency),
        reread_after: (args.secret_access == oneinbox_operator::secrets::SecretAccess::Get)
            .then_some(args.min_poll_interval),
        cluster_accounts: args.cluster_accounts_enabled(),
        default_deletion_policy: args.default_deletion_policy,
        operator_key_namespaces: args.operator_key_namespaces.clone(),
        account_selector: args.account_selector.clone(),
        allow_insecure_http: args.api.allow_insecure_http,
    }
}

/// Whether this process reconciles: alone, as the Lease holder, or not at all (stopped while
/// standing by).
enum Role {
    Alone,
    Leader(leader::Guard, tokio::task::JoinHandle<LeaseTaskResult>),
    Stopped,
}

type LeaseTaskResult = kube_lease_manager::Result<kube_lease_manager::LeaseManager>;

/// With leader election, stand by until this process holds the Lease.
async fn lead(
    args: &RunArgs,
    client: &kube::Client,
    health: &Health,
    stop_rx: watch::Receiver<bool>,
) -> Result<Role, String> {
    if !args.leader_election {
        return Ok(Role::Alone);
    }
    let cfg = leader::LeaseConfig {
        name: args.lease_name.clone(),
        namespace: args.lease_namespace.clone(),
        identity: format!(
            "{}-{}",
            args.instance,
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        ),
        duration: args.lease_duration,
        grace: args.lease_grace,
    };
    health.set_standby(true);
    let Some(held) = leader::acquire(client.clone(), &cfg, stop_rx).await? else {
        info!("stopped while standing by");
        return Ok(Role::Stopped);
    };
    health.set_standby(false);
    let guard = leader::Guard::start(client.clone(), &cfg, held.leading);
    Ok(Role::Leader(guard, held.task))
}

/// Mark the process ready once the PhoneNumber cache has synced.
fn report_ready(health: Health) -> impl FnOnce(controller::Readiness) + Send {
    move |readiness| {
        tokio::spawn(async move {
            // kube's store readiness wakes only its most recent waiter (the controller's own),
            // so poll it again until it answers.
            loop {
                let wait = readiness.store.wait_until_ready();
                match tokio::time::timeout(std::time::Duration::from_millis(200), wait).await {
                    Ok(Ok(())) => {
                        info!("PhoneNumber cache synced; ready");
                        health.set_synced();
                        break;
                    }
                    Ok(Err(_)) => break,
                    Err(_) => continue,
                }
            }
        });
    }
}
