//! What a run reports (JSON), and the table and Markdown made of it.

use std::collections::BTreeMap;

use serde::Serialize;

/// The median and range of repeated measurements.
#[derive(Serialize, Default, Clone, Debug)]
#[serde(rename_all = "camelCase")]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

impl Spread {
    pub fn of(values: &[f64]) -> Self {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = match n {
            0 => 0.0,
            _ if n % 2 == 1 => sorted[n / 2],
            _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
        };
        Self {
            median,
            min: sorted.first().copied().unwrap_or(0.0),
            max: sorted.last().copied().unwrap_or(0.0),
            n,
        }
    }

    /// "48.3 (47.1-49.0)", or the value alone when measured once.
    pub fn text(&self, decimals: usize, unit: &str) -> String {
        let v = |x: f64| format!("{x:.decimals$}{unit}");
        match self.n {
            0 | 1 => v(self.median),
            _ => format!("{} ({}-{})", v(self.median), v(self.min), v(self.max)),
        }
    }
}

/// One measurement of a run's creation: fresh namespace, emulator and operator.
#[derive(Serialize, Default, Clone)]
#[serde(rename_all = "camelCase")]
pub struct Repeat {
    pub seconds_to_ready: f64,
    pub floor_seconds: f64,
    pub ratio_to_floor: f64,
    /// Writes the apiserver answered 409 (a write on a stale object).
    pub conflicts: u64,
    /// CPU seconds of the whole machine while the objects became Ready, and while the floor's writes ran.
    pub machine_cpu_seconds: f64,
    pub floor_machine_cpu_seconds: f64,
}

#[derive(Serialize, Default, Clone)]
#[serde(rename_all = "camelCase")]
pub struct RunReport {
    pub name: String,
    pub objects: usize,
    /// The median of the repeats (and their spread below).
    pub seconds_to_ready: f64,
    pub ready_per_second: f64,
    pub databricks_reads_per_object: f64,
    pub databricks_writes_per_object: f64,
    pub databricks_calls_per_new_principal: f64,
    pub kubernetes_writes_per_object: f64,
    /// The operator's writes by resource (the last repeat), DatabricksAccounts and DatabricksClaims among them.
    pub kubernetes_writes_by_resource: BTreeMap<String, u64>,
    /// The apiserver's reads of those resources by verb (the last repeat; the bench's own watches among them).
    pub kubernetes_reads: BTreeMap<String, u64>,
    pub floor_databricks_seconds: f64,
    pub floor_kubernetes_seconds: f64,
    /// The median of the repeats' ratios.
    pub ratio_to_floor: f64,
    pub ready_spread: Spread,
    pub ratio_spread: Spread,
    pub repeats: Vec<Repeat>,
    /// 409s over every repeat.
    pub conflicts: u64,
    pub steady_resync_seconds: f64,
    pub steady_requests_per_object_per_pass: f64,
    pub steady_requests_per_object_per_hour: f64,
    pub steady_databricks_writes: u64,
    pub steady_kubernetes_writes: u64,
    pub restart_seconds_to_reconciled: f64,
    pub restart_databricks_reads: u64,
    pub restart_databricks_writes: u64,
    pub restart_kubernetes_writes: u64,
    pub peak_rss_mib: f64,
    pub cpu_seconds: f64,
    pub throttled: u64,
    /// Seconds after the first create at which each object became Ready, sorted (the last repeat).
    pub ready_timeline: Vec<f64>,
}

#[derive(Serialize, Clone)]
#[serde(rename_all = "camelCase")]
pub struct LimitedReport {
    pub principals: usize,
    pub rate_per_second: f64,
    pub requests: u64,
    pub requests_needed: u64,
    pub throttled: u64,
    pub throttled_share: f64,
    /// The median of the repeats.
    pub seconds_to_ready: f64,
    pub floor_seconds: f64,
    pub ratio_to_floor: f64,
    pub ready_spread: Spread,
    pub ratio_spread: Spread,
}

#[derive(Serialize, Clone)]
#[serde(rename_all = "camelCase")]
pub struct TwoTenantReport {
    pub a_principals: usize,
    pub b_principals: usize,
    /// Databricks' limits the emulator enforces, per class (requests per second).
    pub limits: BTreeMap<String, f64>,
    /// A's principals Ready when B arrived and when B was all Ready.
    pub a_ready_at_b_arrival: usize,
    pub a_ready_at_b_ready: usize,
    pub b_seconds_to_ready: f64,
    /// B's requests by class, from the emulator's log.
    pub b_requests: BTreeMap<String, u64>,
    /// B's requests of the binding class at half that class's rate (two busy namespaces).
    pub b_floor_seconds: f64,
    pub b_ratio_to_floor: f64,
    pub requests: u64,
    pub throttled: u64,
    pub throttled_share: f64,
    pub deferred_passes: f64,
}

/// The largest object of a kind the operator writes.
#[derive(Serialize, Clone)]
#[serde(rename_all = "camelCase")]
pub struct Largest {
    pub kind: String,
    pub name: String,
    pub bytes: usize,
    pub count: usize,
}

#[derive(Serialize, Clone)]
#[serde(rename_all = "camelCase")]
pub struct OwnershipReport {
    pub namespaces: usize,
    pub app_connections: usize,
    pub seconds_to_ready: f64,
    pub floor_databricks_seconds: f64,
    pub floor_kubernetes_seconds: f64,
    pub ratio_to_floor: f64,
    pub largest: Vec<Largest>,
    pub conflicts: u64,
    pub conflicts_per_object: f64,
    pub kubernetes_writes_per_object: f64,
    pub kubernetes_writes_by_resource: BTreeMap<String, u64>,
    pub databricks_requests: u64,
}

fn row(run: &RunReport) -> Vec<String> {
    vec![
        run.name.clone(),
        run.ready_spread.text(1, ""),
        format!("{:.0}", run.ready_per_second),
        format!("{:.2} / {:.2}", run.databricks_reads_per_object, run.databricks_writes_per_object),
        format!("{:.2}", run.databricks_calls_per_new_principal),
        format!("{:.1}", run.kubernetes_writes_per_object),
        format!("{:.1} / {:.1}", run.floor_databricks_seconds, run.floor_kubernetes_seconds),
        run.ratio_spread.text(2, "x"),
        format!("{}", run.conflicts),
        format!("{:.2} ({} w)", run.steady_requests_per_object_per_hour, run.steady_databricks_writes),
        format!("{:.1}s, {} w", run.restart_seconds_to_reconciled, run.restart_databricks_writes),
        format!("{:.0}", run.peak_rss_mib),
        format!("{:.1}", run.cpu_seconds),
    ]
}

const HEADER: [&str; 13] = [
    "run",
    "s to Ready",
    "Ready/s",
    "DBX reads/writes per obj",
    "DBX calls per new SP",
    "K8s writes per obj",
    "floor s (DBX / K8s)",
    "vs floor",
    "409s",
    "steady req/obj/h (writes)",
    "restart",
    "RSS MiB",
    "CPU s",
];

pub fn print_table(runs: &[RunReport]) {
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

/// "serviceprincipals 2.0, databricksclaims 1.0, ...": writes per object by resource.
fn per_object(writes: &BTreeMap<String, u64>, objects: usize) -> String {
    let n = objects.max(1) as f64;
    writes.iter().map(|(r, w)| format!("{r} {:.2}", *w as f64 / n)).collect::<Vec<_>>().join(", ")
}

pub struct Sections<'a> {
    pub runs: &'a [RunReport],
    pub limited: Option<&'a LimitedReport>,
    pub two: Option<&'a TwoTenantReport>,
    pub ownership: Option<&'a OwnershipReport>,
}

pub fn markdown(sections: &Sections<'_>) -> String {
    let mut out = String::from("| ");
    out += &HEADER.join(" | ");
    out += " |\n|";
    out += &"---|".repeat(HEADER.len());
    out += "\n";
    for run in sections.runs {
        out += &format!("| {} |\n", row(run).join(" | "));
    }
    out += "\nSeconds to Ready and the ratio to the floor are the median of the repeats (range in brackets); the \
            operator's resync is an hour while objects are created, so no resync pass is counted as creation work. \
            Steady state is measured over two resync intervals after a restart and scaled to the default 10-minute \
            resync. 409s: the apiserver's conflicts on the operator's writes, over every repeat.\n\n";
    out += "Kubernetes writes per object by resource (the bench's own creates included):\n\n";
    for run in sections.runs {
        out += &format!("- {}: {}\n", run.name, per_object(&run.kubernetes_writes_by_resource, run.objects));
    }
    out += "\nKubernetes reads per object by verb and resource (the bench's own watches included):\n\n";
    for run in sections.runs {
        out += &format!("- {}: {}\n", run.name, per_object(&run.kubernetes_reads, run.objects));
    }
    if let Some(l) = sections.limited {
        out += &limited(l);
    }
    if let Some(t) = sections.two {
        out += &two_tenants(t);
    }
    if let Some(o) = sections.ownership {
        out += &ownership(o);
    }
    out
}

fn limited(l: &LimitedReport) -> String {
    format!(
        "\nRate-limited ({} principals, Databricks allowing {} requests/s): Ready in {}s against a floor of {:.1}s \
         ({} requests needed / rate) = {}; {} of {} requests answered 429 ({:.2}%) in the last repeat.\n",
        l.principals,
        l.rate_per_second,
        l.ready_spread.text(1, ""),
        l.floor_seconds,
        l.requests_needed,
        l.ratio_spread.text(2, "x"),
        l.throttled,
        l.requests,
        l.throttled_share * 100.0
    )
}

fn two_tenants(t: &TwoTenantReport) -> String {
    let requests = t.b_requests.iter().map(|(c, n)| format!("{n} {c}")).collect::<Vec<_>>().join(", ");
    format!(
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
    )
}

fn ownership(o: &OwnershipReport) -> String {
    let largest = o
        .largest
        .iter()
        .map(|l| format!("{} {} bytes ({}, of {})", l.kind, l.bytes, l.name, l.count))
        .collect::<Vec<_>>()
        .join("; ");
    format!(
        "\nOwnership at scale ({} app connections over {} namespaces, one account): Ready in {:.1}s against a floor \
         of {:.1}s (Databricks {:.1}s, Kubernetes {:.1}s) = {:.2}x; {} Databricks requests; {:.1} Kubernetes writes \
         per object ({}); {} conflicts ({:.3} per object). Largest object the operator writes, by kind: {largest}.\n",
        o.app_connections,
        o.namespaces,
        o.seconds_to_ready,
        o.floor_databricks_seconds.max(o.floor_kubernetes_seconds),
        o.floor_databricks_seconds,
        o.floor_kubernetes_seconds,
        o.ratio_to_floor,
        o.databricks_requests,
        o.kubernetes_writes_per_object,
        per_object(&o.kubernetes_writes_by_resource, o.app_connections),
        o.conflicts,
        o.conflicts_per_object,
    )
}
