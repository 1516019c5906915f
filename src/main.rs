//! The operator binary.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, sync::Arc, time::Duration};

use clap::{Parser, Subcommand};
use databricks_oauth_operator::{
    controllers::{self, Context, FailPoints},
    crd::{self, DatabricksAccount, DatabricksClaim, ServicePrincipal, parse_duration},
    http::{self, Readiness},
    metrics::Metrics,
};
use kube::{Api, Client, api::ListParams};

/// Databricks OAuth connections as Kubernetes resources.
#[derive(Parser, Debug)]
#[command(name = "databricks-oauth-operator", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand, Debug)]
enum Commands {
    /// Run the controllers (in-cluster, or with KUBECONFIG).
    Run(Box<RunArgs>),
    /// Print every CustomResourceDefinition as YAML (the source of `crds/`).
    Crds {
        /// Write one file per CRD into this directory instead of printing a single stream.
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Where /metrics is served.
    #[arg(long, default_value = "0.0.0.0:8080", value_parser = http::parse_listen_addr)]
    metrics_addr: SocketAddr,
    /// Where /healthz and /readyz are served.
    #[arg(long, default_value = "0.0.0.0:8081", value_parser = http::parse_listen_addr)]
    health_addr: SocketAddr,
    /// Watch only this namespace (default: all namespaces).
    #[arg(long)]
    namespace: Option<String>,
    /// How often every object is compared with Databricks (Go duration, jittered ±10%).
    #[arg(long, default_value = "10m", value_parser = duration)]
    resync_interval: Duration,
    /// How long a replaced OAuth secret stays valid after a rotation.
    #[arg(long, default_value = "10m", value_parser = duration)]
    rotation_grace_period: Duration,
    /// Objects of one kind reconciled at once (calls to one account are limited by its rateLimit anyway).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..))]
    concurrency: u16,
    /// How long a full pass asked for by a change of the rotate, paused, deletion-policy or reconcile annotation waits, so a
    /// burst of changes costs one pass (at most one such pass per object per interval).
    #[arg(long, default_value = "5s", value_parser = duration)]
    annotation_debounce: Duration,
    /// The least time between two secrets (or app recreations) the rotate annotation causes on one object.
    #[arg(long, default_value = "5m", value_parser = duration)]
    rotate_min_interval: Duration,
    /// The least time between two secrets minted to repair one object's Secret (deleted or edited by hand), so a
    /// Secret deleted in a loop mints at most once per interval.
    #[arg(long, default_value = "30s", value_parser = duration)]
    repair_min_interval: Duration,
    /// How long Databricks' search by tag may lag a create: a principal the operator created is searched for again
    /// (and a duplicate a racing create made is deleted) until this has long passed.
    #[arg(long, default_value = "30s", value_parser = duration)]
    search_lag: Duration,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Run the controllers only while holding a Lease, so several replicas never act at once.
    #[arg(long)]
    leader_elect: bool,
    /// Namespace of the Lease (default: the pod's namespace, POD_NAMESPACE).
    #[arg(long, env = "POD_NAMESPACE", default_value = controllers::DEFAULT_NAMESPACE)]
    lease_namespace: String,
    /// Name of the Lease.
    #[arg(long, default_value = "databricks-oauth-operator")]
    lease_name: String,
    /// The only namespace whose Secrets may hold account credentials (`auth.oauthM2M.secretRef`); default the
    /// pod's namespace.
    #[arg(long, env = "POD_NAMESPACE", default_value = controllers::DEFAULT_NAMESPACE)]
    credentials_namespace: String,
    /// The only directory workload identity token files may be read from (`auth.workloadIdentity.tokenPath`).
    #[arg(long, default_value = controllers::DEFAULT_TOKEN_DIR)]
    token_dir: std::path::PathBuf,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum LogFormat {
    Text,
    Json,
}

fn duration(text: &str) -> Result<Duration, String> {
    parse_duration(text).ok_or_else(|| format!("'{text}' is not a duration such as 30s, 10m or 1h"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Commands::Run(args) => match tokio::runtime::Runtime::new() {
            Ok(runtime) => runtime.block_on(run(*args)),
            Err(err) => Err(format!("starting the async runtime: {err}")),
        },
        Commands::Crds { out_dir: None } => {
            crd::to_yaml(&crd::all()).map(|yaml| print!("{yaml}")).map_err(|e| e.to_string())
        }
        Commands::Crds { out_dir: Some(dir) } => crd::write_dir(&dir).map_err(|e| e.to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: RunArgs) -> Result<(), String> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube=warn"));
    let subscriber = tracing_subscriber::fmt().with_env_filter(filter);
    match args.log_format {
        LogFormat::Json => subscriber.json().init(),
        LogFormat::Text => subscriber.init(),
    }
    let client = Client::try_default().await.map_err(|e| format!("connecting to Kubernetes: {e}"))?;
    check_crds(&client).await?;
    let metrics = Arc::new(Metrics::default());
    let ready = Readiness::default();
    // Bound before anything else runs: an operator nobody can probe or scrape is not started.
    let listeners = http::bind(args.health_addr, args.metrics_addr).await.map_err(|e| e.to_string())?;
    let server = tokio::spawn(http::serve(listeners, metrics.clone(), ready.clone()));
    let config = controllers::Config {
        resync_interval: args.resync_interval,
        rotation_grace: args.rotation_grace_period,
        namespace: args.namespace,
        concurrency: args.concurrency,
        credentials_namespace: args.credentials_namespace,
        token_dir: args.token_dir,
        annotation_debounce: args.annotation_debounce,
        rotate_min_interval: args.rotate_min_interval,
        repair_min_interval: args.repair_min_interval,
        search_lag: args.search_lag,
        ..controllers::Config::default()
    };
    tracing::info!(version = env!("CARGO_PKG_VERSION"), "starting");
    ready.set(true);
    let ctx = Arc::new(Context::new(client, config, metrics, FailPoints::default()));
    if args.leader_elect {
        let identity = std::env::var("POD_NAME")
            .unwrap_or_else(|_| format!("databricks-oauth-operator-{}", std::process::id()));
        let election = controllers::LeaderElection {
            lease_name: args.lease_name,
            namespace: args.lease_namespace,
            identity,
            lease_duration: 15,
            grace: 5,
        };
        let stop = controllers::Stop::default();
        let on_signal = {
            let stop = stop.clone();
            async move {
                let _ = tokio::signal::ctrl_c().await;
                stop.stop();
            }
        };
        let signals = tokio::spawn(on_signal);
        let terminate = {
            let stop = stop.clone();
            tokio::spawn(async move {
                if let Ok(mut term) =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                {
                    term.recv().await;
                    stop.stop();
                }
            })
        };
        let result = controllers::run_elected(ctx, election, stop.clone()).await;
        signals.abort();
        terminate.abort();
        server.abort();
        result.map_err(|e| format!("leader election: {e}"))?;
        if !stop.is_stopped() {
            return Err("lost leadership; exiting so the pod restarts".to_owned());
        }
        tracing::info!("stopped; lease released");
        return Ok(());
    }
    controllers::run(ctx).await;
    tracing::info!("controllers stopped; exiting");
    server.abort();
    Ok(())
}

/// The operator never installs its CRDs: check they are served and say how to install them if not.
async fn check_crds(client: &Client) -> Result<(), String> {
    let hint = "install them first: kubectl apply --server-side -f crds/ (or `databricks-oauth-operator crds | kubectl apply --server-side -f -`)";
    let accounts: Api<DatabricksAccount> = Api::all(client.clone());
    let principals: Api<ServicePrincipal> = Api::all(client.clone());
    let params = ListParams::default().limit(1);
    accounts
        .list_metadata(&params)
        .await
        .map_err(|e| format!("the DatabricksAccount CRD is not usable ({e}); {hint}"))?;
    principals
        .list_metadata(&params)
        .await
        .map_err(|e| format!("the ServicePrincipal CRD is not usable ({e}); {hint}"))?;
    Api::<DatabricksClaim>::all(client.clone())
        .list_metadata(&params)
        .await
        .map_err(|e| format!("the DatabricksClaim CRD is not usable ({e}); {hint}"))?;
    Ok(())
}
