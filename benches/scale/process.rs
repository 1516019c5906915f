//! The release operator as a process: started against the bench's control plane, measured (memory, CPU, its
//! metrics), stopped.

use std::{
    collections::BTreeMap,
    path::Path,
    time::{Duration, Instant},
};

use crate::{BoxError, CONCURRENCY, OPERATOR, bench_out, objects::Scenario};

pub struct Operator {
    child: tokio::process::Child,
    pid: u32,
    metrics: String,
    http: reqwest::Client,
}

fn free_port() -> Result<u16, BoxError> {
    Ok(test_control_plane::free_port()?)
}

impl Operator {
    pub async fn start(kubeconfig: &Path, namespace: &str, resync: Duration) -> Result<Self, BoxError> {
        Self::start_watching(kubeconfig, Some(namespace), namespace, resync).await
    }

    /// The operator watching `watch` (every namespace when `None`), reading account credentials from
    /// `credentials`.
    pub async fn start_watching(
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

    pub fn peak_rss_mib(&self) -> f64 {
        self.proc_status("VmHWM:").unwrap_or(0.0) / 1024.0
    }

    pub fn cpu_seconds(&self) -> f64 {
        pid_cpu_seconds(&self.pid.to_string())
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
    pub async fn metric_sum(&self, family: &str) -> f64 {
        let Ok(response) = self.http.get(&self.metrics).send().await else { return 0.0 };
        let text = response.text().await.unwrap_or_default();
        text.lines()
            .filter(|l| l.starts_with(family) && l[family.len()..].starts_with(['{', ' ']))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum()
    }

    /// Waits until every object has been reconciled at least once since the start.
    pub async fn wait_reconciled(&self, scenario: Scenario, timeout: Duration) -> Result<(), BoxError> {
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

    pub async fn stop(mut self) {
        let _ = std::process::Command::new("kill").args(["-TERM", &self.pid.to_string()]).status();
        if tokio::time::timeout(Duration::from_secs(20), self.child.wait()).await.is_err() {
            let _ = self.child.kill().await;
        }
    }
}

/// CPU seconds the whole machine has spent (every process: apiserver, etcd, emulator, operator, bench) since boot.
pub fn machine_cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else { return 0.0 };
    let first = stat.lines().next().unwrap_or_default();
    // cpu user nice system idle iowait irq softirq steal ...: all but idle and iowait.
    let fields: Vec<f64> = first.split_whitespace().skip(1).map(|f| f.parse().unwrap_or(0.0)).collect();
    let busy: f64 =
        fields.iter().enumerate().filter(|(i, _)| !matches!(i, 3 | 4)).take(8).map(|(_, v)| v).sum();
    busy / clock_ticks()
}

/// CPU seconds by process name (`comm`) of the machine's processes named in `names`, and of this process
/// (the bench, with its emulators) under `bench`.
pub fn cpu_by_process(names: &[&str]) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else { return out };
    let me = std::process::id().to_string();
    for entry in entries.flatten() {
        let pid = entry.file_name().to_string_lossy().to_string();
        if !pid.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        let name = if pid == me { "bench" } else { comm.trim() };
        if pid == me || names.contains(&name) {
            *out.entry(name.to_owned()).or_default() += pid_cpu_seconds(&pid);
        }
    }
    out
}

fn pid_cpu_seconds(pid: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0.0 };
    // Fields after the command name (which may hold spaces): utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<f64> = rest.split_whitespace().map(|f| f.parse().unwrap_or(0.0)).collect();
    let ticks = fields.get(11).copied().unwrap_or(0.0) + fields.get(12).copied().unwrap_or(0.0);
    ticks / clock_ticks()
}

fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}
