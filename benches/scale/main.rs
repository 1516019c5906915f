//! `make bench`: the release operator against a real control plane and the Databricks emulator, at 100, 1,000 and
//! 10,000 ServicePrincipals, a mixed run, and a rate-limited run, each beside the floors measured in the same
//! run. Prints a table and writes `target/bench/bench.{json,md}` (the plot is drawn by `hack/plot-bench.py`).
//!
//! Settings (environment): `BENCH_SIZES` (default `100,1000,10000`), `BENCH_MIXED` (objects of each kind in the
//! mixed run, app connections at most 100, default 200; 0 skips it), `BENCH_LIMITED` (principals in the rate-limited run, default 40; 0 skips),
//! `BENCH_TWO_TENANTS` (principals of tenants A and B in the two-tenant run, default `500,20`; `0` skips),
//! `BENCH_TERRAFORM` (sizes at which Terraform runs the same principals beside the operator, default `100,1000`;
//! `0` skips), `BENCH_OUT` (default `target/bench`).

#[path = "../../tests/support/clients.rs"]
mod clients;
mod terraform;

use std::{
    collections::{BTreeMap, HashMap},
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use databricks_emulator::{Emulator, EmulatorConfig, RateLimit, Stats};
use databricks_oauth_operator::crd::{
    DatabricksAccount, DatabricksAppConnection, ServicePrincipal, TrustPolicy,
};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Event, Namespace, Secret};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{Patch, PatchParams, PostParams},
    runtime::{WatchStreamExt, watcher},
};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::{Value, json};
use test_control_plane::ControlPlane;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const OPERATOR: &str = env!("CARGO_BIN_EXE_databricks-oauth-operator");
const ACCOUNT_ID: &str = "7a1e5c2b-0000-4000-8000-00000000be7c";
const ADMIN_ID: &str = "bench-account-admin";
const WORKSPACE: i64 = 1_111_222_233_334_444;
/// Reconciles at once per controller (the operator's --concurrency) and Databricks calls in flight (the
/// account's rateLimit.maxConcurrency): the floors use the same.
const CONCURRENCY: usize = 16;
const IN_FLIGHT: usize = 8;
/// App connections one namespace may have on one account (the operator's limit).
const MAX_APPS_PER_NAMESPACE: usize = 100;
/// The operator's default resync interval, to which steady-state rates are scaled.
const DEFAULT_RESYNC: Duration = Duration::from_secs(600);
/// Resources the operator writes, for counting apiserver writes.
const RESOURCES: [&str; 6] =
    ["serviceprincipals", "databricksappconnections", "trustpolicies", "secrets", "configmaps", "events"];

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

fn log(started: Instant, what: &str) {
    eprintln!("[{:>7.1}s] {what}", started.elapsed().as_secs_f64());
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
    let plane = ControlPlane::start().await?;
    plane.install_crds(&databricks_oauth_operator::crd::all()).await?;
    let kubeconfig = plane.root().join("kubeconfig");
    plane.write_admin_kubeconfig(&kubeconfig)?;
    let client = plane.admin_client().await?;
    let bench = Bench { client, kubeconfig, started };
    // The apiserver compiles a CRD's validation rules on first use (about 2 s here): pay that before measuring,
    // as a running cluster would have.
    let start = Instant::now();
    bench.namespace("warm-up").await?;
    create_objects(&bench.client, "warm-up", Scenario::mixed(1)).await?;
    log(
        started,
        &format!(
            "apiserver warmed up: first objects of each kind created in {:.1}s",
            start.elapsed().as_secs_f64()
        ),
    );

    let mut runs = Vec::new();
    for n in env_list("BENCH_SIZES", "100,1000,10000") {
        runs.push(bench.scenario(Scenario::principals(n)).await?);
        print_table(&runs);
    }
    if let Some(&n) = env_list("BENCH_MIXED", "200").first().filter(|n| **n > 0) {
        runs.push(bench.scenario(Scenario::mixed(n)).await?);
        print_table(&runs);
    }
    let mut peers = Vec::new();
    let peer_sizes: Vec<usize> =
        env_list("BENCH_TERRAFORM", "100,1000").into_iter().filter(|n| *n > 0).collect();
    for &n in &peer_sizes {
        let operator = match runs.iter().find(|r| r.name == Scenario::principals(n).name()) {
            Some(run) => run.clone(),
            None => bench.scenario(Scenario::principals(n)).await?,
        };
        log(started, &format!("== Terraform: {n} principals"));
        let mut runs_of_n = Vec::new();
        let smallest = peer_sizes.iter().min() == Some(&n);
        for rate_limit in [Some(terraform::RATE_LIMIT), None].into_iter().filter(|r| r.is_some() || smallest)
        {
            let run = terraform::run(n, rate_limit).await?;
            log(
                started,
                &format!(
                    "Terraform (rate_limit {rate_limit:?}): apply {:.1}s with {} requests, then plan {:.1}s with {} \
                     requests",
                    run.apply_seconds, run.apply_requests, run.plan_seconds, run.plan_requests
                ),
            );
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
    let limited = match env_list("BENCH_LIMITED", "40").first().filter(|n| **n > 0) {
        Some(&n) => Some(bench.rate_limited(n).await?),
        None => None,
    };
    let tenants = env_list("BENCH_TWO_TENANTS", "500,20");
    let two_tenants = match tenants.as_slice() {
        [a, b, ..] if *a > 0 && *b > 0 => Some(bench.two_tenants(*a, *b).await?),
        _ => None,
    };
    let report = json!({
        "machine": machine(),
        "settings": {"concurrency": CONCURRENCY, "inFlight": IN_FLIGHT, "workspace": WORKSPACE},
        "runs": runs,
        "rateLimited": limited,
        "twoTenants": two_tenants,
        "terraform": peers,
    });
    std::fs::write(out.join("bench.json"), serde_json::to_string_pretty(&report)?)?;
    let mut markdown = markdown(&runs, limited.as_ref(), two_tenants.as_ref());
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

/// What one scenario creates.
#[derive(Clone, Copy)]
struct Scenario {
    principals: usize,
    apps: usize,
    policies: usize,
}

impl Scenario {
    fn principals(n: usize) -> Self {
        Self { principals: n, apps: 0, policies: 0 }
    }

    /// `n` principals and trust policies, and as many app connections as one namespace may have (at most 100
    /// per namespace and account: beyond that the operator refuses with AppConnectionLimitReached).
    fn mixed(n: usize) -> Self {
        Self { principals: n, apps: n.min(MAX_APPS_PER_NAMESPACE), policies: n }
    }

    fn objects(&self) -> usize {
        self.principals + self.apps + self.policies
    }

    fn name(&self) -> String {
        match self.apps + self.policies {
            0 => format!("{} principals", self.principals),
            _ => format!("mixed {}+{}+{}", self.principals, self.apps, self.policies),
        }
    }

    /// The operator's resync interval here: longer than convergence takes (so the creation numbers hold no
    /// resync passes), short enough to watch two of them.
    fn resync(&self) -> Duration {
        Duration::from_secs((self.objects() as u64 * 3 / 100).clamp(20, 300))
    }
}

#[derive(Serialize, Default, Clone)]
#[serde(rename_all = "camelCase")]
struct RunReport {
    name: String,
    objects: usize,
    seconds_to_ready: f64,
    ready_per_second: f64,
    databricks_reads_per_object: f64,
    databricks_writes_per_object: f64,
    databricks_calls_per_new_principal: f64,
    kubernetes_writes_per_object: f64,
    floor_databricks_seconds: f64,
    floor_kubernetes_seconds: f64,
    ratio_to_floor: f64,
    steady_resync_seconds: f64,
    steady_requests_per_object_per_pass: f64,
    steady_requests_per_object_per_hour: f64,
    steady_databricks_writes: u64,
    steady_kubernetes_writes: u64,
    restart_seconds_to_reconciled: f64,
    restart_databricks_reads: u64,
    restart_databricks_writes: u64,
    restart_kubernetes_writes: u64,
    peak_rss_mib: f64,
    cpu_seconds: f64,
    throttled: u64,
    /// Seconds after the first create at which each object became Ready, sorted.
    ready_timeline: Vec<f64>,
}

#[derive(Serialize, Clone)]
#[serde(rename_all = "camelCase")]
struct LimitedReport {
    principals: usize,
    rate_per_second: f64,
    requests: u64,
    requests_needed: u64,
    throttled: u64,
    throttled_share: f64,
    seconds_to_ready: f64,
    floor_seconds: f64,
    ratio_to_floor: f64,
}

#[derive(Serialize, Clone)]
#[serde(rename_all = "camelCase")]
struct TwoTenantReport {
    a_principals: usize,
    b_principals: usize,
    /// Databricks' limits the emulator enforces, per class (requests per second).
    limits: BTreeMap<String, f64>,
    /// A's principals Ready when B arrived and when B was all Ready.
    a_ready_at_b_arrival: usize,
    a_ready_at_b_ready: usize,
    b_seconds_to_ready: f64,
    /// B's requests by class, from the emulator's log.
    b_requests: BTreeMap<String, u64>,
    /// B's requests of the binding class at half that class's rate (two busy namespaces).
    b_floor_seconds: f64,
    b_ratio_to_floor: f64,
    requests: u64,
    throttled: u64,
    throttled_share: f64,
    deferred_passes: f64,
}

struct Bench {
    client: Client,
    kubeconfig: PathBuf,
    started: Instant,
}

impl Bench {
    fn log(&self, what: &str) {
        log(self.started, what);
    }

    async fn namespace(&self, name: &str) -> Result<(), BoxError> {
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}}))?;
        Api::<Namespace>::all(self.client.clone())
            .patch(name, &PatchParams::apply("bench").force(), &Patch::Apply(&ns))
            .await?;
        Ok(())
    }

    /// A fresh emulator and a DatabricksAccount (named like the namespace) pointing at it.
    async fn account(&self, namespace: &str, rate_limit: Value) -> Result<Emulator, BoxError> {
        self.shared_account(namespace, &[namespace], Some(rate_limit)).await
    }

    /// A fresh emulator and a DatabricksAccount named `name`, its credentials in the namespace `name`, delegated
    /// to `tenants`; `rate_limit` unset keeps the defaults (Databricks' documented limits).
    async fn shared_account(
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

    async fn scenario(&self, scenario: Scenario) -> Result<RunReport, BoxError> {
        let n = scenario.objects();
        let tag = format!("{}-{}-{}", scenario.principals, scenario.apps, scenario.policies);
        self.log(&format!("== {}", scenario.name()));
        let floor_databricks = self.floor_databricks(scenario).await?;
        self.log(&format!("floor: Databricks calls alone {floor_databricks:.2}s"));

        let namespace = format!("bench-{tag}");
        self.namespace(&namespace).await?;
        let class = json!({"requestsPerSecond": 1000, "burst": 1000});
        let rate = json!({"reads": class, "writes": class, "patches": class, "maxConcurrency": IN_FLIGHT});
        let emulator = self.account(&namespace, rate).await?;
        let resync = scenario.resync();
        let operator = Operator::start(&self.kubeconfig, &namespace, resync).await?;
        wait_account_ready(&self.client, &namespace).await?;
        emulator.reset_stats().await;

        // Apply everything and watch it become Ready.
        let writes_before = apiserver_writes(&self.client).await?;
        let cpu_before = operator.cpu_seconds();
        let ready = Readiness::watch(&self.client, &namespace);
        let start = Instant::now();
        let bench_writes = create_objects(&self.client, &namespace, scenario).await?;
        self.log(&format!("created {n} objects in {:.2}s", start.elapsed().as_secs_f64()));
        ready.wait_for(n, start, Duration::from_secs(3600)).await?;
        let seconds = start.elapsed().as_secs_f64();
        let timeline = ready.timeline(start);
        let converged = emulator.stats().await;
        let writes = apiserver_writes(&self.client).await?.saturating_sub(writes_before + bench_writes);
        let cpu = operator.cpu_seconds() - cpu_before;
        self.log(&format!(
            "operator memory at convergence: {:.0} MiB now, {:.0} MiB peak",
            operator.rss_mib(),
            operator.peak_rss_mib()
        ));
        self.log(&format!(
            "{n} Ready in {seconds:.1}s; {} Databricks requests ({} reads, {} writes), {writes} Kubernetes writes, \
             {cpu:.1} CPU s",
            converged.requests, converged.reads, converged.writes
        ));

        let floor_kubernetes =
            self.floor_kubernetes(scenario, &format!("floor-{tag}"), writes as f64 / n as f64).await?;
        self.log(&format!("floor: apiserver absorbing the same writes {floor_kubernetes:.2}s"));

        // Steady state: two resync intervals with nothing to do.
        emulator.reset_stats().await;
        let steady_before = apiserver_writes(&self.client).await?;
        let steady_window = resync * 2;
        self.log(&format!("steady state for {}s", steady_window.as_secs()));
        tokio::time::sleep(steady_window).await;
        let steady = emulator.stats().await;
        let steady_writes = apiserver_writes(&self.client).await?.saturating_sub(steady_before);
        let passes = steady_window.as_secs_f64() / resync.as_secs_f64();
        let per_pass = steady.requests as f64 / n as f64 / passes;

        // Restart with everything converged.
        let peak_rss = operator.peak_rss_mib();
        let cpu_total = operator.cpu_seconds();
        operator.stop().await;
        emulator.reset_stats().await;
        let restart_before = apiserver_writes(&self.client).await?;
        let restart_start = Instant::now();
        let operator = Operator::start(&self.kubeconfig, &namespace, resync).await?;
        operator.wait_reconciled(scenario, Duration::from_secs(3600)).await?;
        let restart_seconds = restart_start.elapsed().as_secs_f64();
        let restarted = emulator.stats().await;
        let restart_writes = apiserver_writes(&self.client).await?.saturating_sub(restart_before);
        self.log(&format!(
            "restarted operator: {:.0} MiB now, {:.0} MiB peak (first process: {peak_rss:.0} MiB peak)",
            operator.rss_mib(),
            operator.peak_rss_mib()
        ));
        let peak_rss = peak_rss.max(operator.peak_rss_mib());
        operator.stop().await;
        emulator.shutdown().await;
        self.log(&format!(
            "restart: every object reconciled in {restart_seconds:.1}s with {} Databricks writes",
            restarted.writes
        ));

        let floor = floor_databricks.max(floor_kubernetes);
        Ok(RunReport {
            name: scenario.name(),
            objects: n,
            seconds_to_ready: seconds,
            ready_per_second: n as f64 / seconds,
            databricks_reads_per_object: converged.reads as f64 / n as f64,
            databricks_writes_per_object: converged.writes as f64 / n as f64,
            databricks_calls_per_new_principal: calls_per_new_principal(&converged, scenario),
            kubernetes_writes_per_object: writes as f64 / n as f64,
            floor_databricks_seconds: floor_databricks,
            floor_kubernetes_seconds: floor_kubernetes,
            ratio_to_floor: seconds / floor,
            steady_resync_seconds: resync.as_secs_f64(),
            steady_requests_per_object_per_pass: per_pass,
            steady_requests_per_object_per_hour: per_pass * 3600.0 / DEFAULT_RESYNC.as_secs_f64(),
            steady_databricks_writes: steady.writes,
            steady_kubernetes_writes: steady_writes,
            restart_seconds_to_reconciled: restart_seconds,
            restart_databricks_reads: restarted.reads,
            restart_databricks_writes: restarted.writes,
            restart_kubernetes_writes: restart_writes,
            peak_rss_mib: peak_rss,
            cpu_seconds: cpu_total,
            throttled: converged.throttled,
            ready_timeline: timeline,
        })
    }

    /// The same Databricks calls an ideal operator makes per object, straight at a fresh emulator with the same
    /// number of calls in flight: seconds.
    async fn floor_databricks(&self, scenario: Scenario) -> Result<f64, BoxError> {
        let secret = format!("floor-{}", rand::random::<u64>());
        let mut config = EmulatorConfig::new(ACCOUNT_ID, ADMIN_ID, &secret);
        config.workspaces = vec![WORKSPACE];
        let emulator = Emulator::start(config, SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let client = MinimalClient::new(&emulator.url(), ADMIN_ID, &secret).await?;
        let start = Instant::now();
        minimal_calls(&client, scenario, IN_FLIGHT).await?;
        let seconds = start.elapsed().as_secs_f64();
        emulator.shutdown().await;
        Ok(seconds)
    }

    /// The apiserver absorbing the same Kubernetes writes the operator made (create, finalizer, status, Secret
    /// or ConfigMap, events), with the same concurrency and no operator: seconds.
    async fn floor_kubernetes(
        &self,
        scenario: Scenario,
        namespace: &str,
        writes_per_object: f64,
    ) -> Result<f64, BoxError> {
        self.namespace(namespace).await?;
        let client = self.client.clone();
        // Beyond create, finalizer, status and the published object, the rest are events.
        let events = (writes_per_object.round() as usize).saturating_sub(3);
        let start = Instant::now();
        futures::stream::iter(objects(namespace, scenario))
            .map(|object| {
                let client = client.clone();
                async move { replay_writes(client, object, events).await }
            })
            .buffer_unordered(CONCURRENCY)
            .try_collect::<Vec<_>>()
            .await?;
        Ok(start.elapsed().as_secs_f64())
    }

    /// A small account whose API allows `rate` requests per second, and an operator configured to match.
    async fn rate_limited(&self, principals: usize) -> Result<LimitedReport, BoxError> {
        let rate = 5.0;
        self.log(&format!("== rate-limited: {principals} principals at {rate} requests/s"));
        let namespace = format!("bench-limited-{principals}");
        self.namespace(&namespace).await?;
        // The total cap over every class, as for an account whose limit is one number.
        let limit = json!({"requestsPerSecond": rate as i32, "burst": rate as i32, "maxConcurrency": 4});
        let emulator = self.account(&namespace, limit).await?;
        let operator = Operator::start(&self.kubeconfig, &namespace, Duration::from_secs(600)).await?;
        wait_account_ready(&self.client, &namespace).await?;
        // Databricks' bucket holds a little more than the operator's burst: the operator must pace itself.
        emulator.set_rate_limit(Some(RateLimit::all(rate, rate * 2.0))).await;
        emulator.reset_stats().await;
        let scenario = Scenario::principals(principals);
        let ready = Readiness::watch(&self.client, &namespace);
        let start = Instant::now();
        create_objects(&self.client, &namespace, scenario).await?;
        ready.wait_for(principals, start, Duration::from_secs(3600)).await?;
        let seconds = start.elapsed().as_secs_f64();
        let stats = emulator.stats().await;
        operator.stop().await;
        emulator.shutdown().await;
        let needed = (principals * CALLS_PER_PRINCIPAL) as u64;
        let floor = needed as f64 / rate;
        self.log(&format!(
            "{principals} Ready in {seconds:.1}s (floor {floor:.1}s), {} throttled",
            stats.throttled
        ));
        Ok(LimitedReport {
            principals,
            rate_per_second: rate,
            requests: stats.requests,
            requests_needed: needed,
            throttled: stats.throttled,
            throttled_share: stats.throttled as f64 / stats.requests.max(1) as f64,
            seconds_to_ready: seconds,
            floor_seconds: floor,
            ratio_to_floor: seconds / floor,
        })
    }

    /// Two tenants on one account with Databricks' documented per-class limits: A creates `a` principals, and
    /// once A's work is in full flow B creates `b`. B's time to Ready against its own floor: its requests at
    /// half of each class's rate. On a control plane of its own (the operator watches every namespace).
    async fn two_tenants(&self, a: usize, b: usize) -> Result<TwoTenantReport, BoxError> {
        self.log(&format!("== two tenants: A {a} principals, then B {b}, at Databricks' documented limits"));
        let plane = ControlPlane::start().await?;
        plane.install_crds(&databricks_oauth_operator::crd::all()).await?;
        let kubeconfig = plane.root().join("kubeconfig");
        plane.write_admin_kubeconfig(&kubeconfig)?;
        let client = plane.admin_client().await?;
        let bench = Bench { client: client.clone(), kubeconfig: kubeconfig.clone(), started: self.started };
        let (platform, ns_a, ns_b) = ("platform", "tenant-a", "tenant-b");
        for ns in [platform, ns_a, ns_b] {
            bench.namespace(ns).await?;
        }
        let emulator = bench.shared_account(platform, &[ns_a, ns_b], None).await?;
        let operator =
            Operator::start_watching(&kubeconfig, None, platform, Duration::from_secs(600)).await?;
        wait_account_ready(&client, platform).await?;
        let limit = RateLimit::documented();
        emulator.set_rate_limit(Some(limit.clone())).await;
        emulator.reset_stats().await;
        let (ready_a, ready_b) = (Readiness::watch(&client, ns_a), Readiness::watch(&client, ns_b));
        let start = Instant::now();
        create_all(&client, objects_of(ns_a, platform, Scenario::principals(a))).await?;
        ready_a.wait_for(a / 10, start, Duration::from_secs(1800)).await?;
        let a_at_arrival = ready_a.count();
        let b_start = Instant::now();
        let b_start_ms = now_ms();
        create_all(&client, objects_of(ns_b, platform, Scenario::principals(b))).await?;
        ready_b.wait_for(b, b_start, Duration::from_secs(1800)).await?;
        let b_seconds = b_start.elapsed().as_secs_f64();
        let a_at_ready = ready_a.count();
        let b_ready_ms = now_ms();
        let stats = emulator.stats().await;
        let deferred = operator.metric_sum("databricks_oauth_operator_budget_deferred_total").await;
        // B's requests: those naming one of B's principals (UID, id or application id).
        let b_objects =
            Api::<ServicePrincipal>::namespaced(client.clone(), ns_b).list(&Default::default()).await?;
        let marks: std::collections::BTreeSet<String> = b_objects
            .items
            .iter()
            .flat_map(|sp| {
                let status = sp.status.clone().unwrap_or_default();
                [sp.uid(), status.id, status.application_id]
            })
            .flatten()
            .collect();
        let mut b_requests: BTreeMap<String, u64> = BTreeMap::new();
        for r in stats.log.iter().filter(|r| r.at_ms >= b_start_ms && r.at_ms <= b_ready_ms) {
            if r.names_any(&marks) {
                *b_requests.entry(r.class.clone()).or_default() += 1;
            }
        }
        // A create names its object in its body, not its path: one per principal, counted here.
        *b_requests.entry("writes".to_owned()).or_default() += b as u64;
        let rate = |class: &str| match class {
            "reads" => limit.reads.map(|b| b.requests_per_second),
            "writes" => limit.writes.map(|b| b.requests_per_second),
            _ => limit.patches.map(|b| b.requests_per_second),
        };
        let floor = b_requests
            .iter()
            .map(|(class, n)| *n as f64 / (rate(class).unwrap_or(f64::INFINITY) / 2.0))
            .fold(0.0, f64::max);
        operator.stop().await;
        emulator.shutdown().await;
        plane.stop();
        let limits = [("reads", limit.reads), ("writes", limit.writes), ("patches", limit.patches)]
            .into_iter()
            .filter_map(|(class, b)| Some((class.to_owned(), b?.requests_per_second)))
            .collect();
        self.log(&format!(
            "B's {b} Ready in {b_seconds:.1}s (floor {floor:.1}s, {:.2}x), A {a_at_ready}/{a} Ready by then, \
             {} of {} requests throttled, {deferred} passes deferred",
            b_seconds / floor,
            stats.throttled,
            stats.requests
        ));
        Ok(TwoTenantReport {
            a_principals: a,
            b_principals: b,
            limits,
            a_ready_at_b_arrival: a_at_arrival,
            a_ready_at_b_ready: a_at_ready,
            b_seconds_to_ready: b_seconds,
            b_requests,
            b_floor_seconds: floor,
            b_ratio_to_floor: b_seconds / floor,
            requests: stats.requests,
            throttled: stats.throttled,
            throttled_share: stats.throttled as f64 / stats.requests.max(1) as f64,
            deferred_passes: deferred,
        })
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// What a new principal needs: search by tag, create, assign, mint, verify.
const CALLS_PER_PRINCIPAL: usize = 5;

/// Databricks requests per new principal, counting only principal operations (the mixed run has others).
fn calls_per_new_principal(stats: &Stats, scenario: Scenario) -> f64 {
    let principal_ops = ["scim.sp.", "assignments.", "secrets.", "oidc.token"];
    let calls: u64 = stats
        .operations
        .iter()
        .filter(|(op, _)| principal_ops.iter().any(|p| op.starts_with(p)))
        .map(|(_, o)| o.count)
        .sum();
    // The operator's own token and the policies' and apps' token calls are not the principals'.
    calls as f64 / scenario.principals.max(1) as f64
}

// ---- objects ----

fn objects(namespace: &str, scenario: Scenario) -> Vec<Value> {
    // The account is named like the namespace (the floor's objects are never reconciled).
    objects_of(namespace, namespace, scenario)
}

fn objects_of(namespace: &str, account: &str, scenario: Scenario) -> Vec<Value> {
    let mut out = Vec::new();
    for i in 0..scenario.principals {
        out.push(json!({
            "apiVersion": "oauth.databricks-operator.io/v1alpha1", "kind": "ServicePrincipal",
            "metadata": {"name": format!("sp-{i:05}"), "namespace": namespace},
            "spec": {"accountRef": {"name": account},
                     "workspaceAssignments": [{"workspaceId": WORKSPACE, "permissions": ["USER"]}],
                     "credentials": {"lifetime": "2160h"}},
        }));
    }
    for i in 0..scenario.apps {
        out.push(json!({
            "apiVersion": "oauth.databricks-operator.io/v1alpha1", "kind": "DatabricksAppConnection",
            "metadata": {"name": format!("app-{i:05}"), "namespace": namespace},
            "spec": {"accountRef": {"name": account},
                     "redirectUrls": [format!("https://app-{i}.example.com/callback")],
                     "scopes": ["all-apis", "offline_access"], "confidential": i % 2 == 0},
        }));
    }
    for i in 0..scenario.policies {
        out.push(json!({
            "apiVersion": "oauth.databricks-operator.io/v1alpha1", "kind": "TrustPolicy",
            "metadata": {"name": format!("tp-{i:05}"), "namespace": namespace},
            "spec": {"servicePrincipalRef": {"name": format!("sp-{:05}", i % scenario.principals.max(1))},
                     "oidc": {"issuer": "https://token.actions.githubusercontent.com",
                              "audiences": [ACCOUNT_ID],
                              "subject": format!("repo:example/app-{i}:ref:refs/heads/main")}},
        }));
    }
    out
}

async fn create(client: &Client, object: &Value) -> Result<(), BoxError> {
    let namespace = object["metadata"]["namespace"].as_str().unwrap_or_default();
    let pp = PostParams::default();
    match object["kind"].as_str() {
        Some("ServicePrincipal") => {
            let obj: ServicePrincipal = serde_json::from_value(object.clone())?;
            Api::<ServicePrincipal>::namespaced(client.clone(), namespace).create(&pp, &obj).await?;
        }
        Some("DatabricksAppConnection") => {
            let obj: DatabricksAppConnection = serde_json::from_value(object.clone())?;
            Api::<DatabricksAppConnection>::namespaced(client.clone(), namespace).create(&pp, &obj).await?;
        }
        _ => {
            let obj: TrustPolicy = serde_json::from_value(object.clone())?;
            Api::<TrustPolicy>::namespaced(client.clone(), namespace).create(&pp, &obj).await?;
        }
    }
    Ok(())
}

/// Creates the scenario's objects as a GitOps sync would (many at once); returns the writes made.
async fn create_objects(client: &Client, namespace: &str, scenario: Scenario) -> Result<u64, BoxError> {
    create_all(client, objects(namespace, scenario)).await
}

async fn create_all(client: &Client, objects: Vec<Value>) -> Result<u64, BoxError> {
    let count = objects.len() as u64;
    futures::stream::iter(objects)
        .map(|object| async move { create(client, &object).await })
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(count)
}

/// One object's writes without an operator: create, finalizer, published Secret/ConfigMap, status, events.
async fn replay_writes(client: Client, object: Value, events: usize) -> Result<(), BoxError> {
    create(&client, &object).await?;
    let namespace = object["metadata"]["namespace"].as_str().unwrap_or_default().to_owned();
    let name = object["metadata"]["name"].as_str().unwrap_or_default().to_owned();
    let kind = object["kind"].as_str().unwrap_or_default().to_owned();
    let finalizer = json!({"metadata": {"finalizers": ["bench/floor"]}});
    let status = json!({"apiVersion": "oauth.databricks-operator.io/v1alpha1", "kind": kind,
        "status": {"observedGeneration": 1, "conditions": [{"type": "Ready", "status": "True", "reason": "Ready",
            "message": "floor", "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 1}]}});
    let ssa = PatchParams::apply("bench-floor").force();
    match kind.as_str() {
        "ServicePrincipal" => {
            write_steps::<ServicePrincipal>(&client, &namespace, &name, &finalizer, &status).await?
        }
        "DatabricksAppConnection" => {
            write_steps::<DatabricksAppConnection>(&client, &namespace, &name, &finalizer, &status).await?
        }
        _ => write_steps::<TrustPolicy>(&client, &namespace, &name, &finalizer, &status).await?,
    }
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": format!("{name}-out"), "namespace": namespace,
                     "labels": {"app.kubernetes.io/managed-by": "bench-floor"}},
        "stringData": {"DATABRICKS_HOST": "http://127.0.0.1", "DATABRICKS_CLIENT_ID": name,
                       "DATABRICKS_CLIENT_SECRET": "x".repeat(40), "DATABRICKS_ACCOUNT_ID": ACCOUNT_ID},
    }))?;
    Api::<Secret>::namespaced(client.clone(), &namespace)
        .patch(&format!("{name}-out"), &ssa, &Patch::Apply(&secret))
        .await?;
    let events_api = Api::<Event>::namespaced(client.clone(), &namespace);
    for i in 0..events {
        let event: Event = serde_json::from_value(json!({
            "metadata": {"generateName": format!("{name}-")},
            "involvedObject": {"kind": kind, "name": name, "namespace": namespace},
            "reason": format!("Floor{i}"), "message": "floor", "type": "Normal",
            "reportingComponent": "bench-floor", "reportingInstance": "bench",
            "action": "Floor", "eventTime": "2026-01-01T00:00:00.000000Z",
        }))?;
        events_api.create(&PostParams::default(), &event).await?;
    }
    Ok(())
}

async fn write_steps<K>(
    client: &Client,
    namespace: &str,
    name: &str,
    finalizer: &Value,
    status: &Value,
) -> Result<(), BoxError>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api = Api::<K>::namespaced(client.clone(), namespace);
    api.patch(name, &PatchParams::default(), &Patch::Merge(finalizer)).await?;
    api.patch_status(name, &PatchParams::apply("bench-floor").force(), &Patch::Apply(status)).await?;
    Ok(())
}

// ---- watching readiness ----

/// When each object first reported Ready=True.
#[derive(Clone)]
struct Readiness(Arc<Mutex<HashMap<String, Instant>>>);

impl Readiness {
    fn watch(client: &Client, namespace: &str) -> Self {
        let ready = Self(Arc::default());
        ready.spawn::<ServicePrincipal>(client, namespace);
        ready.spawn::<DatabricksAppConnection>(client, namespace);
        ready.spawn::<TrustPolicy>(client, namespace);
        ready
    }

    fn spawn<K>(&self, client: &Client, namespace: &str)
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + Serialize
            + std::fmt::Debug
            + Send
            + 'static,
    {
        let api = Api::<K>::namespaced(client.clone(), namespace);
        let seen = self.0.clone();
        tokio::spawn(async move {
            let mut stream =
                watcher(api, watcher::Config::default()).default_backoff().applied_objects().boxed();
            while let Some(Ok(obj)) = stream.next().await {
                let value = serde_json::to_value(&obj).unwrap_or_default();
                let ready = value["status"]["conditions"]
                    .as_array()
                    .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"));
                if ready && let Ok(mut seen) = seen.lock() {
                    seen.entry(format!("{}/{}", K::kind(&()), obj.name_any())).or_insert_with(Instant::now);
                }
            }
        });
    }

    fn count(&self) -> usize {
        self.0.lock().map(|s| s.len()).unwrap_or(0)
    }

    async fn wait_for(&self, n: usize, start: Instant, timeout: Duration) -> Result<(), BoxError> {
        let mut last_report = Instant::now();
        loop {
            let count = self.count();
            if count >= n {
                return Ok(());
            }
            if start.elapsed() > timeout {
                return Err(format!("only {count} of {n} objects Ready after {timeout:?}").into());
            }
            if last_report.elapsed() > Duration::from_secs(10) {
                eprintln!("           {count}/{n} Ready after {:.0}s", start.elapsed().as_secs_f64());
                last_report = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn timeline(&self, start: Instant) -> Vec<f64> {
        let mut times: Vec<f64> = self
            .0
            .lock()
            .map(|s| s.values().map(|t| t.saturating_duration_since(start).as_secs_f64()).collect())
            .unwrap_or_default();
        times.sort_by(f64::total_cmp);
        times
    }
}

async fn wait_account_ready(client: &Client, name: &str) -> Result<(), BoxError> {
    let api = Api::<DatabricksAccount>::all(client.clone());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let account = api.get(name).await?;
        let ready = account
            .status
            .as_ref()
            .is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        if ready {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("DatabricksAccount {name} not Ready: {:?}", account.status).into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Writes the apiserver has served to the resources the operator writes.
async fn apiserver_writes(client: &Client) -> Result<u64, BoxError> {
    let request = http::Request::get("/metrics").body(Vec::new())?;
    let text = client.request_text(request).await?;
    let mut total = 0.0;
    for line in text.lines().filter(|l| l.starts_with("apiserver_request_total{")) {
        let Some((labels, value)) = line.rsplit_once(' ') else { continue };
        let label = |name: &str| {
            labels.split(&format!("{name}=\"")).nth(1).and_then(|rest| rest.split('"').next()).unwrap_or("")
        };
        let write =
            matches!(label("verb"), "POST" | "PUT" | "PATCH" | "APPLY" | "DELETE" | "DELETECOLLECTION");
        if write && RESOURCES.contains(&label("resource")) {
            total += value.parse::<f64>().unwrap_or(0.0);
        }
    }
    Ok(total as u64)
}

// ---- the operator process ----

struct Operator {
    child: tokio::process::Child,
    pid: u32,
    metrics: String,
    http: reqwest::Client,
}

fn free_port() -> Result<u16, BoxError> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Operator {
    async fn start(kubeconfig: &Path, namespace: &str, resync: Duration) -> Result<Self, BoxError> {
        Self::start_watching(kubeconfig, Some(namespace), namespace, resync).await
    }

    /// The operator watching `watch` (every namespace when `None`), reading account credentials from
    /// `credentials`.
    async fn start_watching(
        kubeconfig: &Path,
        watch: Option<&str>,
        credentials: &str,
        resync: Duration,
    ) -> Result<Self, BoxError> {
        let (metrics_port, health_port) = (free_port()?, free_port()?);
        // The operator's own log, for a look when a number surprises.
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(bench_out().join("operator.log"))?;
        let child = tokio::process::Command::new(OPERATOR)
            .args(["run", "--credentials-namespace", credentials, "--log-format", "json"])
            .args(watch.map(|w| ["--namespace", w]).into_iter().flatten())
            .args(["--resync-interval", &format!("{}s", resync.as_secs())])
            .args(["--concurrency", &CONCURRENCY.to_string()])
            .args(["--metrics-addr", &format!("127.0.0.1:{metrics_port}")])
            .args(["--health-addr", &format!("127.0.0.1:{health_port}")])
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", std::env::var("BENCH_OPERATOR_LOG").unwrap_or_else(|_| "warn".to_owned()))
            .stdout(log)
            .stderr(std::process::Stdio::inherit())
            .kill_on_drop(true)
            .spawn()?;
        let pid = child.id().ok_or("the operator exited at once")?;
        let operator = Self {
            child,
            pid,
            metrics: format!("http://127.0.0.1:{metrics_port}/metrics"),
            http: reqwest::Client::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        let health = format!("http://127.0.0.1:{health_port}/readyz");
        while !operator.http.get(&health).send().await.is_ok_and(|r| r.status().is_success()) {
            if Instant::now() > deadline {
                return Err("the operator did not become ready".into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(operator)
    }

    fn proc_status(&self, field: &str) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        let line = status.lines().find(|l| l.starts_with(field))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    fn rss_mib(&self) -> f64 {
        self.proc_status("VmRSS:").unwrap_or(0.0) / 1024.0
    }

    fn peak_rss_mib(&self) -> f64 {
        self.proc_status("VmHWM:").unwrap_or(0.0) / 1024.0
    }

    fn cpu_seconds(&self) -> f64 {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)) else { return 0.0 };
        // Fields after the command name (which may hold spaces): utime and stime are the 12th and 13th.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let fields: Vec<f64> = rest.split_whitespace().map(|f| f.parse().unwrap_or(0.0)).collect();
        let ticks = fields.get(11).copied().unwrap_or(0.0) + fields.get(12).copied().unwrap_or(0.0);
        ticks / clock_ticks()
    }

    /// Reconciles finished, by controller, from /metrics.
    async fn reconciles(&self) -> BTreeMap<String, f64> {
        let Ok(response) = self.http.get(&self.metrics).send().await else { return BTreeMap::new() };
        let text = response.text().await.unwrap_or_default();
        text.lines()
            .filter(|l| l.starts_with("databricks_oauth_operator_reconciles_total{"))
            .filter_map(|l| {
                let controller = l.split("controller=\"").nth(1)?.split('"').next()?.to_owned();
                Some((controller, l.rsplit_once(' ')?.1.parse().ok()?))
            })
            .collect()
    }

    /// The sum of a family's samples in /metrics (0 when none).
    async fn metric_sum(&self, family: &str) -> f64 {
        let Ok(response) = self.http.get(&self.metrics).send().await else { return 0.0 };
        let text = response.text().await.unwrap_or_default();
        text.lines()
            .filter(|l| l.starts_with(family) && l[family.len()..].starts_with(['{', ' ']))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum()
    }

    /// Waits until every object has been reconciled at least once since the start.
    async fn wait_reconciled(&self, scenario: Scenario, timeout: Duration) -> Result<(), BoxError> {
        let want = [
            ("serviceprincipal", scenario.principals),
            ("databricksappconnection", scenario.apps),
            ("trustpolicy", scenario.policies),
        ];
        let deadline = Instant::now() + timeout;
        loop {
            let done = self.reconciles().await;
            if want.iter().all(|(c, n)| done.get(*c).copied().unwrap_or(0.0) >= *n as f64) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("not every object was reconciled after the restart: {done:?}").into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn stop(mut self) {
        let _ = std::process::Command::new("kill").args(["-TERM", &self.pid.to_string()]).status();
        if tokio::time::timeout(Duration::from_secs(20), self.child.wait()).await.is_err() {
            let _ = self.child.kill().await;
        }
    }
}

fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

// ---- the minimal Databricks client of the floor ----

struct MinimalClient {
    http: reqwest::Client,
    base: String,
    token_url: String,
    token: String,
}

impl MinimalClient {
    async fn new(host: &str, client_id: &str, secret: &str) -> Result<Self, BoxError> {
        let http = reqwest::Client::new();
        let token_url = format!("{host}/oidc/accounts/{ACCOUNT_ID}/v1/token");
        let token = Self::token(&http, &token_url, client_id, secret).await?;
        Ok(Self { http, base: format!("{host}/api/2.0/accounts/{ACCOUNT_ID}"), token_url, token })
    }

    async fn token(http: &reqwest::Client, url: &str, id: &str, secret: &str) -> Result<String, BoxError> {
        let response: Value = http
            .post(url)
            .basic_auth(id, Some(secret))
            .form(&[("grant_type", "client_credentials"), ("scope", "all-apis")])
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        Ok(response["access_token"].as_str().unwrap_or_default().to_owned())
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, BoxError> {
        let mut request = self.http.request(method, format!("{}/{path}", self.base)).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        Ok(request.send().await?.error_for_status()?.json().await?)
    }
}

/// Per principal: search by tag, create, assign, mint, verify; per app: create; per policy: create.
async fn minimal_calls(client: &MinimalClient, scenario: Scenario, in_flight: usize) -> Result<(), BoxError> {
    use reqwest::Method;
    let principals: Vec<(String, String)> = futures::stream::iter(0..scenario.principals)
        .map(|i| async move {
            let tag = format!("floor-{i}");
            client
                .call(
                    Method::GET,
                    &format!("scim/v2/ServicePrincipals?filter=externalId%20eq%20%22{tag}%22"),
                    None,
                )
                .await?;
            let sp = client
                .call(
                    Method::POST,
                    "scim/v2/ServicePrincipals",
                    Some(json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServicePrincipal"],
                                "displayName": format!("sp-{i}"), "active": true, "externalId": tag})),
                )
                .await?;
            let id = sp["id"].as_str().unwrap_or_default().to_owned();
            let app = sp["applicationId"].as_str().unwrap_or_default().to_owned();
            client
                .call(
                    Method::PUT,
                    &format!("workspaces/{WORKSPACE}/permissionassignments/principals/{id}"),
                    Some(json!({"permissions": ["USER"]})),
                )
                .await?;
            let secret = client
                .call(
                    Method::POST,
                    &format!("servicePrincipals/{id}/credentials/secrets"),
                    Some(json!({"lifetime": "7776000s"})),
                )
                .await?;
            let value = secret["secret"].as_str().unwrap_or_default();
            MinimalClient::token(&client.http, &client.token_url, &app, value).await?;
            Ok::<_, BoxError>((id, app))
        })
        .buffer_unordered(in_flight)
        .try_collect()
        .await?;
    futures::stream::iter(0..scenario.apps)
        .map(|i| async move {
            client
                .call(
                    Method::POST,
                    "oauth2/custom-app-integrations",
                    Some(json!({"name": format!("app-{i}"), "redirect_urls": [format!("https://app-{i}.example.com/callback")],
                                "scopes": ["all-apis", "offline_access"], "confidential": i % 2 == 0})),
                )
                .await
        })
        .buffer_unordered(in_flight)
        .try_collect::<Vec<_>>()
        .await?;
    futures::stream::iter(0..scenario.policies)
        .map(|i| {
            let id = principals.get(i % principals.len().max(1)).map(|p| p.0.clone()).unwrap_or_default();
            async move {
                client
                    .call(
                        Method::POST,
                        &format!("servicePrincipals/{id}/federationPolicies?policy_id=floor-{i}"),
                        Some(json!({"oidc_policy": {"issuer": "https://token.actions.githubusercontent.com",
                                    "audiences": [ACCOUNT_ID], "subject": format!("repo:example/app-{i}:ref:refs/heads/main")}})),
                    )
                    .await
            }
        })
        .buffer_unordered(in_flight)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

// ---- output ----

fn row(run: &RunReport) -> Vec<String> {
    vec![
        run.name.clone(),
        format!("{:.1}", run.seconds_to_ready),
        format!("{:.0}", run.ready_per_second),
        format!("{:.2} / {:.2}", run.databricks_reads_per_object, run.databricks_writes_per_object),
        format!("{:.2}", run.databricks_calls_per_new_principal),
        format!("{:.1}", run.kubernetes_writes_per_object),
        format!("{:.1} / {:.1}", run.floor_databricks_seconds, run.floor_kubernetes_seconds),
        format!("{:.2}x", run.ratio_to_floor),
        format!("{:.2} ({} w)", run.steady_requests_per_object_per_hour, run.steady_databricks_writes),
        format!("{:.1}s, {} w", run.restart_seconds_to_reconciled, run.restart_databricks_writes),
        format!("{:.0}", run.peak_rss_mib),
        format!("{:.1}", run.cpu_seconds),
    ]
}

const HEADER: [&str; 12] = [
    "run",
    "s to Ready",
    "Ready/s",
    "DBX reads/writes per obj",
    "DBX calls per new SP",
    "K8s writes per obj",
    "floor s (DBX / K8s)",
    "vs floor",
    "steady req/obj/h (writes)",
    "restart",
    "RSS MiB",
    "CPU s",
];

fn print_table(runs: &[RunReport]) {
    let rows: Vec<Vec<String>> = runs.iter().map(row).collect();
    let widths: Vec<usize> = (0..HEADER.len())
        .map(|i| rows.iter().map(|r| r[i].len()).chain([HEADER[i].len()]).max().unwrap_or(0))
        .collect();
    let line = |cells: Vec<String>| {
        cells.iter().zip(&widths).map(|(c, w)| format!("{c:>w$}")).collect::<Vec<_>>().join("  ")
    };
    eprintln!("{}", line(HEADER.iter().map(|h| (*h).to_owned()).collect()));
    for row in rows {
        eprintln!("{}", line(row));
    }
}

fn markdown(runs: &[RunReport], limited: Option<&LimitedReport>, two: Option<&TwoTenantReport>) -> String {
    let mut out = String::from("| ");
    out += &HEADER.join(" | ");
    out += " |\n|";
    out += &"---|".repeat(HEADER.len());
    out += "\n";
    for run in runs {
        out += &format!("| {} |\n", row(run).join(" | "));
    }
    out +=
        "\nSteady state is measured over two resync intervals and scaled to the default 10-minute resync.\n";
    if let Some(l) = limited {
        out += &format!(
            "\nRate-limited ({} principals, Databricks allowing {} requests/s): Ready in {:.1}s against a floor of \
             {:.1}s ({} requests needed / rate) = {:.2}x; {} of {} requests answered 429 ({:.2}%).\n",
            l.principals,
            l.rate_per_second,
            l.seconds_to_ready,
            l.floor_seconds,
            l.requests_needed,
            l.ratio_to_floor,
            l.throttled,
            l.requests,
            l.throttled_share * 100.0
        );
    }
    if let Some(t) = two {
        let requests = t.b_requests.iter().map(|(c, n)| format!("{n} {c}")).collect::<Vec<_>>().join(", ");
        out += &format!(
            "\nTwo tenants (Databricks allowing {}): tenant B's {} new principals, arriving while tenant A's {} were \
             being created ({} of A's Ready), were Ready in {:.1}s against B's own floor of {:.1}s (B's requests \
             {requests} at half of each class's rate) = {:.2}x; {} of A's were Ready by then; {} of {} requests \
             answered 429 ({:.2}%); {} passes deferred.\n",
            t.limits.iter().map(|(c, r)| format!("{r} {c}/s")).collect::<Vec<_>>().join(", "),
            t.b_principals,
            t.a_principals,
            t.a_ready_at_b_arrival,
            t.b_seconds_to_ready,
            t.b_floor_seconds,
            t.b_ratio_to_floor,
            t.a_ready_at_b_ready,
            t.throttled,
            t.requests,
            t.throttled_share * 100.0,
            t.deferred_passes
        );
    }
    out
}
