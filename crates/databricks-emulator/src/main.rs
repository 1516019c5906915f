//! `databricks-emulator`: a local Databricks account API for tests, demos and CI.

use std::{net::SocketAddr, process::ExitCode};

use clap::Parser;
use databricks_emulator::{Emulator, EmulatorConfig};

/// A faithful local Databricks account API (REST, SCIM, OIDC) with fault injection under /_emulator/.
///
/// Every option can also come from the environment (for containers, e.g. CI service containers, which cannot be
/// given arguments).
#[derive(Parser)]
#[command(name = "databricks-emulator", version, about)]
struct Args {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, env = "DATABRICKS_EMULATOR_LISTEN", default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// The account id served.
    #[arg(long, env = "DATABRICKS_EMULATOR_ACCOUNT_ID")]
    account_id: String,
    /// Application id (client id) of the bootstrap account-admin service principal.
    #[arg(long, env = "DATABRICKS_EMULATOR_ADMIN_CLIENT_ID")]
    admin_client_id: String,
    /// OAuth secret of the bootstrap admin.
    #[arg(long, env = "DATABRICKS_EMULATOR_ADMIN_SECRET", hide_env_values = true)]
    admin_client_secret: String,
    /// A workspace id that accepts permission assignments (repeatable; comma-separated in the environment).
    #[arg(long = "workspace", env = "DATABRICKS_EMULATOR_WORKSPACES", value_delimiter = ',')]
    workspaces: Vec<i64>,
    /// Emit int64 ids as JSON strings, to exercise lenient clients. The Python SDK and the Go SDK from v0.175
    /// accept them; older Go SDKs, and so the CLI v1.12.1 and the Terraform provider v1.126.0, do not.
    #[arg(long, env = "DATABRICKS_EMULATOR_INT64_AS_STRINGS")]
    int64_as_strings: bool,
}

/// Ctrl-C, or SIGTERM (how a container runtime stops its first process, which has no default handler).
async fn stop_requested() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let mut config = EmulatorConfig::new(&args.account_id, &args.admin_client_id, &args.admin_client_secret);
    config.workspaces = args.workspaces;
    config.int64_as_strings = args.int64_as_strings;
    let emulator = match Emulator::start(config, args.listen).await {
        Ok(emulator) => emulator,
        Err(err) => {
            eprintln!("error: cannot listen on {}: {err}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    println!("listening on {}", emulator.url());
    stop_requested().await;
    emulator.shutdown().await;
    ExitCode::SUCCESS
}
