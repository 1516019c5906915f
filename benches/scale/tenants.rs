//! Two tenants on one account at Databricks' documented limits: how long the small tenant waits behind the big one.

use std::{collections::BTreeMap, time::Duration, time::Instant};

use databricks_emulator::RateLimit;
use databricks_oauth_operator::crd::ServicePrincipal;
use kube::{Api, ResourceExt};

use crate::{
    Bench, BoxError,
    objects::{Scenario, create_all, objects_of},
    process::Operator,
    report::TwoTenantReport,
    watch::{Readiness, wait_account_ready},
};

impl Bench {
    /// Two tenants on one account with Databricks' documented per-class limits: A creates `a` principals, and
    /// once A's work is in full flow B creates `b`. B's time to Ready against its own floor: its requests at
    /// half of each class's rate. On a control plane of its own (the operator watches every namespace).
    pub async fn two_tenants(&self, a: usize, b: usize) -> Result<TwoTenantReport, BoxError> {
        self.log(&format!("== two tenants: A {a} principals, then B {b}, at Databricks' documented limits"));
        let (plane, bench) = Bench::on_new_plane(self.started).await?;
        let (client, kubeconfig) = (bench.client.clone(), bench.kubeconfig.clone());
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
        // abs: an empty sum is -0.0.
        let deferred = operator.metric_sum("databricks_oauth_operator_budget_deferred_total").await.abs();
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
