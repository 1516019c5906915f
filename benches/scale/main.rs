//! `make bench`: the release operator against a real control plane and the Databricks emulator, at 100, 1,000 and
//! 10,000 ServicePrincipals, a mixed run, a rate-limited run, two tenants, and ownership at scale (thousands of
//! app connections over many namespaces), each beside the floors measured in the same run. Prints a table and
//! writes `target/bench/bench.{json,md}` (the plot is drawn by `hack/bench/plot.sh`).
//!
//! Settings (environment): `BENCH_SIZES` (default `100,1000,10000`), `BENCH_MIXED` (principals and trust
//! policies in the mixed run, half as many app connections, default 200; 0 skips it), `BENCH_LIMITED`
//! (principals in the rate-limited run, default 40; 0 skips), `BENCH_TWO_TENANTS` (principals of tenants A and B,
//! default `500,20`; `0` skips), `BENCH_OWNERSHIP` (app connections and namespaces of the ownership run, default
//! `2000,20`; `0` skips), `BENCH_REPEATS` (creations of each run of at most `BENCH_REPEAT_MAX` objects, default
//! 3 and 1000; larger runs are measured once), `BENCH_TERRAFORM` (sizes at which Terraform runs the same
//! principals beside the operator, default `100,1000`; `0` skips), `BENCH_OUT` (default `target/bench`).

#[path = "../../tests/support/clients.rs"]
mod clients;
mod floor;
mod objects;
mod ownership;
mod process;
mod report;
mod runs;
mod tenants;
mod terraform;
mod watch;

use std::{
    net::SocketAddr,
    path::PathBuf,
    time::{Duration, Instant},
};

use databricks_emulator::{Emulator, EmulatorConfig};
use databricks_oauth_operator::crd::DatabricksAccount;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};
use serde_json::{Value, json};
use test_control_plane::ControlPlane;

use crate::{
    objects::{Scenario, create_objects},
    report::{RunReport, Sections, markdown, print_table},
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const OPERATOR: &str = env!("CARGO_BIN_EXE_databricks-oauth-operator");
const ACCOUNT_ID: &str = "7a1e5c2b-0000-4000-8000-00000000be7c";
const ADMIN_ID: &str = "bench-account-admin";
const WORKSPACE: i64 = 1_111_222_233_334_444;
/// Reconciles at once per controller (the operator's --concurrency) and Databricks calls in flight (the
/// account's rateLimit.maxConcurrency): the floors use the same.
const CONCURRENCY: usize = 16;
const IN_FLIGHT: usize = 8;
/// The operator's default resync interval, to which steady-state rates are scaled.
const DEFAULT_RESYNC: Duration = Duration::from_secs(600);

#[tokio::main]
async fn main() {
    if let Err(err) = run().await {
        eprintln!("bench failed: {err}");
        std::process::exit(1);
    }
}

fn env_list(name: &str, default: &str) -> Vec<usize> {
    std::env::var(name)
        .unwrap_or_else(|_| default.to_owned())
        .split(',')
        .filter_map(|v| v.trim().replace('_', "").parse().ok())
        .collect()
}

fn env_one(name: &str, default: usize) -> usize {
    env_list(name, &default.to_string()).first().copied().unwrap_or(default)
}

fn log(started: Instant, what: &str) {
    eprintln!("[{:>7.1}s] {what}", started.elapsed().as_secs_f64());
}

/// How often a run of `objects` is created: `BENCH_REPEATS` up to `BENCH_REPEAT_MAX` objects, else once.
fn repeats(objects: usize) -> usize {
    if objects <= env_one("BENCH_REPEAT_MAX", 1000) { env_one("BENCH_REPEATS", 3) } else { 1 }
}

async fn run() -> Result<(), BoxError> {
    // `cargo test --all-targets` runs bench targets too, without `--bench`: that is a build check, not a bench.
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("the scale bench runs under `make bench` (cargo bench); skipped under cargo test");
        return Ok(());
    }
    let started = Instant::now();
    let out = bench_out();
    std::fs::create_dir_all(&out)?;
    let _ = std::fs::remove_file(out.join("operator.log"));
    log(started, "starting etcd and kube-apiserver");
    let (plane, bench) = Bench::on_new_plane(started).await?;
    bench.warm_up().await?;
    let mut runs = Vec::new();
    for n in env_list("BENCH_SIZES", "100,1000,10000") {
        runs.push(bench.scenario(Scenario::principals(n), repeats(n)).await?);
        print_table(&runs);
    }
    if let Some(&n) = env_list("BENCH_MIXED", "200").first().filter(|n| **n > 0) {
        let mixed = Scenario::mixed(n);
        runs.push(bench.scenario(mixed, repeats(mixed.objects())).await?);
        print_table(&runs);
    }
    let peers = bench.terraform_peers(&runs).await?;
    let limited = match env_list("BENCH_LIMITED", "40").first().filter(|n| **n > 0) {
        Some(&n) => Some(bench.rate_limited(n, repeats(n)).await?),
        None => None,
    };
    let two_tenants = match env_list("BENCH_TWO_TENANTS", "500,20").as_slice() {
        [a, b, ..] if *a > 0 && *b > 0 => Some(bench.two_tenants(*a, *b).await?),
        _ => None,
    };
    let ownership = match env_list("BENCH_OWNERSHIP", "2000,20").as_slice() {
        [apps, namespaces, ..] if *apps > 0 && *namespaces > 0 => {
            Some(bench.ownership(*apps, *namespaces).await?)
        }
        _ => None,
    };
    let report = json!({
        "machine": machine(),
        "settings": {"concurrency": CONCURRENCY, "inFlight": IN_FLIGHT, "workspace": WORKSPACE},
        "runs": runs,
        "rateLimited": limited,
        "twoTenants": two_tenants,
        "ownership": ownership,
        "terraform": peers,
    });
    std::fs::write(out.join("bench.json"), serde_json::to_string_pretty(&report)?)?;
    let sections = Sections {
        runs: &runs,
        limited: limited.as_ref(),
        two: two_tenants.as_ref(),
        ownership: ownership.as_ref(),
    };
    let mut markdown = markdown(&sections);
    if !peers.is_empty() {
        markdown += "\nTerraform beside the operator, the same principals on a fresh emulator each:\n\n";
        markdown += &terraform::markdown(&peers);
    }
    std::fs::write(out.join("bench.md"), &markdown)?;
    println!("\n{markdown}");
    println!("written: {0}/bench.json {0}/bench.md", out.display());
    plane.stop();
    Ok(())
}

fn bench_out() -> PathBuf {
    PathBuf::from(std::env::var("BENCH_OUT").unwrap_or_else(|_| "target/bench".to_owned()))
}

fn machine() -> Value {
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| c.lines().find(|l| l.starts_with("model name")).map(|l| l.to_owned()))
        .and_then(|l| l.split(':').nth(1).map(|m| m.trim().to_owned()));
    json!({"cpus": cpus, "cpu": model})
}

pub struct Bench {
    pub client: Client,
    pub kubeconfig: PathBuf,
    pub started: Instant,
}

impl Bench {
    /// A control plane of its own, with the CRDs installed, and the bench's client of it.
    pub async fn on_new_plane(started: Instant) -> Result<(ControlPlane, Bench), BoxError> {
        let plane = ControlPlane::start().await?;
        plane.install_crds(&databricks_oauth_operator::crd::all()).await?;
        let kubeconfig = plane.root().join("kubeconfig");
        plane.write_admin_kubeconfig(&kubeconfig)?;
        let client = plane.admin_client().await?;
        Ok((plane, Bench { client, kubeconfig, started }))
    }

    pub fn log(&self, what: &str) {
        log(self.started, what);
    }

    pub async fn namespace(&self, name: &str) -> Result<(), BoxError> {
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}}))?;
        Api::<Namespace>::all(self.client.clone())
            .patch(name, &PatchParams::apply("bench").force(), &Patch::Apply(&ns))
            .await?;
        Ok(())
    }

    /// A fresh emulator and a DatabricksAccount (named like the namespace) pointing at it.
    pub async fn account(&self, namespace: &str, rate_limit: Value) -> Result<Emulator, BoxError> {
        self.shared_account(namespace, &[namespace], Some(rate_limit)).await
    }

    /// A fresh emulator and a DatabricksAccount named `name`, its credentials in the namespace `name`, delegated
    /// to `tenants`; `rate_limit` unset keeps the defaults (Databricks' documented limits).
    pub async fn shared_account(
        &self,
        name: &str,
        tenants: &[&str],
        rate_limit: Option<Value>,
    ) -> Result<Emulator, BoxError> {
        let namespace = name;
        let secret = format!("bench-{}", rand::random::<u64>());
        let mut config = EmulatorConfig::new(ACCOUNT_ID, ADMIN_ID, &secret);
        config.workspaces = vec![WORKSPACE];
        let emulator = Emulator::start(config, SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let credentials: Secret = serde_json::from_value(json!({
            "metadata": {"name": "account-admin", "namespace": namespace},
            "stringData": {"DATABRICKS_CLIENT_ID": ADMIN_ID, "DATABRICKS_CLIENT_SECRET": secret},
        }))?;
        Api::<Secret>::namespaced(self.client.clone(), namespace)
            .patch("account-admin", &PatchParams::apply("bench").force(), &Patch::Apply(&credentials))
            .await?;
        let account: DatabricksAccount = serde_json::from_value(json!({
            "apiVersion": "oauth.databricks-operator.io/v1alpha1", "kind": "DatabricksAccount",
            "metadata": {"name": namespace},
            "spec": {"accountId": ACCOUNT_ID, "host": emulator.url(),
                     "auth": {"oauthM2M": {"secretRef": {"namespace": namespace, "name": "account-admin"}}},
                     "delegations": [{"namespaces": {"names": tenants},
                                      "workspaces": [{"workspaceId": WORKSPACE}],
                                      "appConnections": true, "trustPolicies": true}]},
        }))?;
        let mut account = account;
        if let Some(limit) = rate_limit {
            account.spec.rate_limit = serde_json::from_value(limit)?;
        }
        Api::<DatabricksAccount>::all(self.client.clone())
            .patch(namespace, &PatchParams::apply("bench").force(), &Patch::Apply(&account))
            .await?;
        Ok(emulator)
    }
}

impl Bench {
    /// The apiserver compiles a CRD's validation rules on first use (about 2 s here): paid before measuring, as a
    /// running cluster would have.
    async fn warm_up(&self) -> Result<(), BoxError> {
        let start = Instant::now();
        self.namespace("warm-up").await?;
        create_objects(&self.client, "warm-up", Scenario::mixed(2)).await?;
        self.log(&format!(
            "apiserver warmed up: first objects of each kind created in {:.1}s",
            start.elapsed().as_secs_f64()
        ));
        Ok(())
    }

    /// Terraform creating the same principals as the operator's runs of those sizes (run here when missing).
    async fn terraform_peers(&self, runs: &[RunReport]) -> Result<Vec<terraform::PeerReport>, BoxError> {
        let sizes: Vec<usize> =
            env_list("BENCH_TERRAFORM", "100,1000").into_iter().filter(|n| *n > 0).collect();
        let mut peers = Vec::new();
        for &n in &sizes {
            let operator = match runs.iter().find(|r| r.name == Scenario::principals(n).name()) {
                Some(run) => run.clone(),
                None => self.scenario(Scenario::principals(n), 1).await?,
            };
            self.log(&format!("== Terraform: {n} principals"));
            let mut runs_of_n = Vec::new();
            let smallest = sizes.iter().min() == Some(&n);
            for rate_limit in
                [Some(terraform::RATE_LIMIT), None].into_iter().filter(|r| r.is_some() || smallest)
            {
                let run = terraform::run(n, rate_limit).await?;
                self.log(&format!(
                    "Terraform (rate_limit {rate_limit:?}): apply {:.1}s with {} requests, then plan {:.1}s with {} \
                     requests",
                    run.apply_seconds, run.apply_requests, run.plan_seconds, run.plan_requests
                ));
                runs_of_n.push(run);
            }
            let run = runs_of_n.remove(0);
            let default_rate = runs_of_n.pop();
            peers.push(terraform::PeerReport {
                principals: n,
                terraform: run,
                terraform_default_rate: default_rate,
                operator: terraform::OperatorRun::of(&operator),
            });
        }
        Ok(peers)
    }
}
