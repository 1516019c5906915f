//! The single-namespace runs: N principals (or the mixed run) to Ready, repeated on a fresh namespace, emulator
//! and operator each time, then a restart and the steady state; and the rate-limited run.

use std::time::{Duration, Instant};

use databricks_emulator::{Emulator, RateLimit, Stats};
use serde_json::{Value, json};

use crate::{
    Bench, BoxError, DEFAULT_RESYNC, IN_FLIGHT,
    objects::{CALLS_PER_PRINCIPAL, Scenario, calls_per_new_principal, create_objects, objects},
    process::{Operator, cpu_by_process, machine_cpu_seconds},
    report::{LimitedReport, Repeat, RunReport, Spread},
    watch::{Readiness, Writes, apiserver_writes, wait_account_ready},
};

/// The operator's resync while objects are created: far longer than any run, so no resync pass is counted as
/// creation work.
pub const CREATION_RESYNC: Duration = Duration::from_secs(3600);

/// A budget far above what the runs send, so they measure the operator, not its pacing.
pub fn fast_rate() -> Value {
    let class = json!({"requestsPerSecond": 1000, "burst": 1000});
    json!({"reads": class, "writes": class, "patches": class, "maxConcurrency": IN_FLIGHT})
}

/// One creation: what it measured, and (the last repeat) what the restart and steady state go on with.
struct Creation {
    repeat: Repeat,
    timeline: Vec<f64>,
    converged: Stats,
    writes: Writes,
    floor_databricks: f64,
    floor_kubernetes: f64,
    cpu: f64,
    peak_rss: f64,
    namespace: String,
    emulator: Emulator,
}

/// What the restart and the steady state measured.
struct Afterwards {
    restart_seconds: f64,
    restarted: Stats,
    restart_writes: u64,
    steady: Stats,
    steady_writes: u64,
    per_pass: f64,
    peak_rss: f64,
    cpu: f64,
}

impl Bench {
    /// `scenario` created `repeats` times; the restart and steady state measured after the last.
    pub async fn scenario(&self, scenario: Scenario, repeats: usize) -> Result<RunReport, BoxError> {
        let repeats = repeats.max(1);
        self.log(&format!("== {} ({repeats} repeat(s))", scenario.name()));
        let (mut repeats_done, mut last): (Vec<Repeat>, Option<Creation>) = (Vec::new(), None);
        for k in 0..repeats {
            let creation = self.creation(scenario, k).await?;
            repeats_done.push(creation.repeat.clone());
            if let Some(previous) = last.replace(creation) {
                previous.emulator.shutdown().await;
            }
        }
        let last = last.ok_or("no repeat")?;
        let after = self.afterwards(scenario, &last.namespace, &last.emulator).await?;
        let report = report(scenario, &last, &after, repeats_done);
        last.emulator.shutdown().await;
        Ok(report)
    }

    /// Creates the scenario's objects on a fresh namespace, emulator and operator, and watches them become Ready.
    async fn creation(&self, scenario: Scenario, k: usize) -> Result<Creation, BoxError> {
        let n = scenario.objects();
        let tag = format!("{}-{}-{}-r{k}", scenario.principals, scenario.apps, scenario.policies);
        let floor_databricks = self.floor_databricks(scenario).await?;
        let namespace = format!("bench-{tag}");
        self.namespace(&namespace).await?;
        let emulator = self.account(&namespace, fast_rate()).await?;
        let operator = Operator::start(&self.kubeconfig, &namespace, CREATION_RESYNC).await?;
        wait_account_ready(&self.client, &namespace).await?;
        emulator.reset_stats().await;
        let before = apiserver_writes(&self.client).await?;
        let ready = Readiness::watch(&self.client, &namespace);
        let (start, cpu_start, by_process) = (Instant::now(), machine_cpu_seconds(), cpu_by_process(PLANE));
        create_objects(&self.client, &namespace, scenario).await?;
        ready.wait_for(n, start, Duration::from_secs(3600)).await?;
        let seconds = start.elapsed().as_secs_f64();
        let machine_cpu = machine_cpu_seconds() - cpu_start;
        let by_process = cpu_since(&by_process);
        let converged = emulator.stats().await;
        let writes = apiserver_writes(&self.client).await?.since(&before);
        let (cpu, peak_rss) = (operator.cpu_seconds(), operator.peak_rss_mib());
        operator.stop().await;
        // The operator's writes: all but the bench's own creates.
        let per_object = writes.total.saturating_sub(n as u64) as f64 / n as f64;
        let floor_namespace = format!("floor-{tag}");
        let (floor_cpu_start, floor_by_process) = (machine_cpu_seconds(), cpu_by_process(PLANE));
        let floor_kubernetes = self
            .floor_kubernetes(
                std::slice::from_ref(&floor_namespace),
                objects(&floor_namespace, scenario),
                per_object,
            )
            .await?;
        let floor_cpu = machine_cpu_seconds() - floor_cpu_start;
        let floor_by_process = cpu_since(&floor_by_process);
        let floor = floor_databricks.max(floor_kubernetes);
        self.log(&format!(
            "repeat {k}: {n} Ready in {seconds:.1}s (floor {floor:.1}s: Databricks {floor_databricks:.1}s, \
             Kubernetes {floor_kubernetes:.1}s), {} Databricks requests, {} Kubernetes writes, {} conflicts; \
             machine CPU {machine_cpu:.1}s (operator {cpu:.1}s, {by_process}), the floor's writes {floor_cpu:.1}s \
             ({floor_by_process})",
            converged.requests,
            writes.total,
            writes.conflicts,
        ));
        Ok(Creation {
            repeat: Repeat {
                seconds_to_ready: seconds,
                floor_seconds: floor,
                ratio_to_floor: seconds / floor,
                conflicts: writes.conflicts,
                machine_cpu_seconds: machine_cpu,
                floor_machine_cpu_seconds: floor_cpu,
            },
            timeline: ready.timeline(start),
            converged,
            writes,
            floor_databricks,
            floor_kubernetes,
            cpu,
            peak_rss,
            namespace,
            emulator,
        })
    }

    /// A restart with everything converged, then two resync intervals with nothing to do.
    async fn afterwards(
        &self,
        scenario: Scenario,
        namespace: &str,
        emulator: &Emulator,
    ) -> Result<Afterwards, BoxError> {
        let resync = scenario.resync();
        emulator.reset_stats().await;
        let before = apiserver_writes(&self.client).await?;
        let start = Instant::now();
        let operator = Operator::start(&self.kubeconfig, namespace, resync).await?;
        operator.wait_reconciled(scenario, Duration::from_secs(3600)).await?;
        let restart_seconds = start.elapsed().as_secs_f64();
        let restarted = emulator.stats().await;
        let restart_writes = apiserver_writes(&self.client).await?.since(&before).total;
        self.log(&format!(
            "restart: every object reconciled in {restart_seconds:.1}s with {} Databricks writes",
            restarted.writes
        ));
        emulator.reset_stats().await;
        let before = apiserver_writes(&self.client).await?;
        let window = resync * 2;
        self.log(&format!("steady state for {}s", window.as_secs()));
        tokio::time::sleep(window).await;
        let steady = emulator.stats().await;
        let steady_writes = apiserver_writes(&self.client).await?.since(&before).total;
        let per_pass = steady.requests as f64 / scenario.objects() as f64 / 2.0;
        let (peak_rss, cpu) = (operator.peak_rss_mib(), operator.cpu_seconds());
        operator.stop().await;
        Ok(Afterwards {
            restart_seconds,
            restarted,
            restart_writes,
            steady,
            steady_writes,
            per_pass,
            peak_rss,
            cpu,
        })
    }

    /// A small account whose API allows 5 requests per second, and an operator configured to match; `repeats`
    /// times.
    pub async fn rate_limited(&self, principals: usize, repeats: usize) -> Result<LimitedReport, BoxError> {
        let rate = 5.0;
        self.log(&format!(
            "== rate-limited: {principals} principals at {rate} requests/s ({repeats} repeat(s))"
        ));
        let needed = (principals * CALLS_PER_PRINCIPAL) as u64;
        let floor = needed as f64 / rate;
        let (mut seconds, mut last) = (Vec::new(), Stats::default());
        for k in 0..repeats.max(1) {
            let (s, stats) = self.limited_once(principals, rate, k).await?;
            self.log(&format!(
                "repeat {k}: {principals} Ready in {s:.1}s (floor {floor:.1}s), {} throttled",
                stats.throttled
            ));
            seconds.push(s);
            last = stats;
        }
        let ratios: Vec<f64> = seconds.iter().map(|s| s / floor).collect();
        let ready_spread = Spread::of(&seconds);
        Ok(LimitedReport {
            principals,
            rate_per_second: rate,
            requests: last.requests,
            requests_needed: needed,
            throttled: last.throttled,
            throttled_share: last.throttled as f64 / last.requests.max(1) as f64,
            seconds_to_ready: ready_spread.median,
            floor_seconds: floor,
            ratio_to_floor: Spread::of(&ratios).median,
            ready_spread,
            ratio_spread: Spread::of(&ratios),
        })
    }

    async fn limited_once(&self, principals: usize, rate: f64, k: usize) -> Result<(f64, Stats), BoxError> {
        let namespace = format!("bench-limited-{principals}-r{k}");
        self.namespace(&namespace).await?;
        // The total cap over every class, as for an account whose limit is one number.
        let limit = json!({"requestsPerSecond": rate as i32, "burst": rate as i32, "maxConcurrency": 4});
        let emulator = self.account(&namespace, limit).await?;
        let operator = Operator::start(&self.kubeconfig, &namespace, CREATION_RESYNC).await?;
        wait_account_ready(&self.client, &namespace).await?;
        // Databricks' bucket holds a little more than the operator's burst: the operator must pace itself.
        emulator.set_rate_limit(Some(RateLimit::all(rate, rate * 2.0))).await;
        emulator.reset_stats().await;
        let ready = Readiness::watch(&self.client, &namespace);
        let start = Instant::now();
        create_objects(&self.client, &namespace, Scenario::principals(principals)).await?;
        ready.wait_for(principals, start, Duration::from_secs(3600)).await?;
        let seconds = start.elapsed().as_secs_f64();
        let stats = emulator.stats().await;
        operator.stop().await;
        emulator.shutdown().await;
        Ok((seconds, stats))
    }
}

fn report(scenario: Scenario, last: &Creation, after: &Afterwards, repeats: Vec<Repeat>) -> RunReport {
    let n = scenario.objects();
    let ready: Vec<f64> = repeats.iter().map(|r| r.seconds_to_ready).collect();
    let ratios: Vec<f64> = repeats.iter().map(|r| r.ratio_to_floor).collect();
    let (ready_spread, ratio_spread) = (Spread::of(&ready), Spread::of(&ratios));
    let converged = &last.converged;
    RunReport {
        name: scenario.name(),
        objects: n,
        seconds_to_ready: ready_spread.median,
        ready_per_second: n as f64 / ready_spread.median,
        databricks_reads_per_object: converged.reads as f64 / n as f64,
        databricks_writes_per_object: converged.writes as f64 / n as f64,
        databricks_calls_per_new_principal: calls_per_new_principal(converged, scenario),
        kubernetes_writes_per_object: last.writes.total.saturating_sub(n as u64) as f64 / n as f64,
        kubernetes_writes_by_resource: last.writes.by_resource.clone(),
        kubernetes_reads: last.writes.reads.clone(),
        floor_databricks_seconds: last.floor_databricks,
        floor_kubernetes_seconds: last.floor_kubernetes,
        ratio_to_floor: ratio_spread.median,
        conflicts: repeats.iter().map(|r| r.conflicts).sum(),
        ready_spread,
        ratio_spread,
        repeats,
        steady_resync_seconds: scenario.resync().as_secs_f64(),
        steady_requests_per_object_per_pass: after.per_pass,
        steady_requests_per_object_per_hour: after.per_pass * 3600.0 / DEFAULT_RESYNC.as_secs_f64(),
        steady_databricks_writes: after.steady.writes,
        steady_kubernetes_writes: after.steady_writes,
        restart_seconds_to_reconciled: after.restart_seconds,
        restart_databricks_reads: after.restarted.reads,
        restart_databricks_writes: after.restarted.writes,
        restart_kubernetes_writes: after.restart_writes,
        peak_rss_mib: last.peak_rss.max(after.peak_rss),
        cpu_seconds: last.cpu + after.cpu,
        throttled: converged.throttled,
        ready_timeline: last.timeline.clone(),
    }
}

/// The control plane's processes, whose CPU the bench reports apart.
const PLANE: &[&str] = &["kube-apiserver", "etcd"];

/// CPU seconds by process since `before`, as `name 1.2s, ...`.
fn cpu_since(before: &std::collections::BTreeMap<String, f64>) -> String {
    let now = cpu_by_process(PLANE);
    let spent = |(name, total): (&String, &f64)| {
        format!("{name} {:.1}s", total - before.get(name).copied().unwrap_or(0.0))
    };
    now.iter().map(spent).collect::<Vec<_>>().join(", ")
}
