//! The operator binary.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use databricks_oauth_operator::crd;

/// Databricks OAuth connections as Kubernetes resources.
#[derive(Parser, Debug)]
#[command(name = "databricks-oauth-operator", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand, Debug)]
enum Commands {
    /// Print every CustomResourceDefinition as YAML (the source of `crds/`).
    Crds {
        /// Write one file per CRD into this directory instead of printing a single stream.
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
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
