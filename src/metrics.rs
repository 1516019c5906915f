//! Prometheus metrics: reconciles, errors, durations, Databricks requests by operation and status, and the
//! expiry time of every published credential.

use std::sync::Arc;

use crate::databricks::{BudgetObserver, Class};
use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    pub controller: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub controller: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub operation: String,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ObjectLabels {
    pub namespace: String,
    pub name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BudgetLabels {
    pub account: String,
    pub class: String,
    pub namespace: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClassLabels {
    pub account: String,
    pub class: String,
}

/// Every metric the operator exports.
pub struct Metrics {
    registry: Registry,
    pub reconciles: Family<ControllerLabels, Counter>,
    pub reconcile_errors: Family<ErrorLabels, Counter>,
    pub reconcile_duration: Family<ControllerLabels, Histogram>,
    pub databricks_requests: Family<RequestLabels, Counter>,
    pub credential_expiry: Family<ObjectLabels, Gauge>,
    pub budget_queue_depth: Family<BudgetLabels, Gauge>,
    pub budget_wait: Family<BudgetLabels, Histogram>,
    pub budget_deferred: Family<BudgetLabels, Counter>,
    pub budget_throttled: Family<ClassLabels, Counter>,
    pub worker_waits: Family<ControllerLabels, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("databricks_oauth_operator");
        let reconciles = Family::<ControllerLabels, Counter>::default();
        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        let reconcile_duration = Family::<ControllerLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0])
        });
        let databricks_requests = Family::<RequestLabels, Counter>::default();
        let credential_expiry = Family::<ObjectLabels, Gauge>::default();
        let budget_queue_depth = Family::<BudgetLabels, Gauge>::default();
        let budget_wait = Family::<BudgetLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.005, 0.025, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0])
        });
        let budget_deferred = Family::<BudgetLabels, Counter>::default();
        let budget_throttled = Family::<ClassLabels, Counter>::default();
        let worker_waits = Family::<ControllerLabels, Counter>::default();
        registry.register("reconciles", "Reconciles run", reconciles.clone());
        registry.register("reconcile_errors", "Reconciles that failed, by reason", reconcile_errors.clone());
        registry.register("reconcile_duration_seconds", "Reconcile duration", reconcile_duration.clone());
        registry.register(
            "databricks_requests",
            "Databricks API requests by operation and HTTP status (0: no answer)",
            databricks_requests.clone(),
        );
        registry.register(
            "credential_expiry_timestamp_seconds",
            "When the published OAuth secret of a ServicePrincipal expires (Unix time)",
            credential_expiry.clone(),
        );
        registry.register(
            "budget_queue_depth",
            "Databricks requests waiting for their turn, by account, request class and namespace",
            budget_queue_depth.clone(),
        );
        registry.register(
            "budget_wait_seconds",
            "How long Databricks requests waited for their turn, by account, request class and namespace",
            budget_wait.clone(),
        );
        registry.register(
            "budget_deferred",
            "Passes deferred because the namespace already had the most requests it may queue",
            budget_deferred.clone(),
        );
        registry.register(
            "budget_throttled",
            "Requests Databricks answered 429, by account and request class (that class then waits)",
            budget_throttled.clone(),
        );
        registry.register(
            "worker_waits",
            "Passes put off because their namespace already held its share of the controller's workers",
            worker_waits.clone(),
        );
        Self {
            registry,
            reconciles,
            reconcile_errors,
            reconcile_duration,
            databricks_requests,
            credential_expiry,
            budget_queue_depth,
            budget_wait,
            budget_deferred,
            budget_throttled,
            worker_waits,
        }
    }
}

/// Every family the operator registers (without the `databricks_oauth_operator_` prefix and the `_total` suffix
/// of counters).
pub const FAMILIES: &[&str] = &[
    "reconciles",
    "reconcile_errors",
    "reconcile_duration_seconds",
    "databricks_requests",
    "credential_expiry_timestamp_seconds",
    "budget_queue_depth",
    "budget_wait_seconds",
    "budget_deferred",
    "budget_throttled",
    "worker_waits",
];

impl Metrics {
    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }

    /// An observer of one account's budget: queue depth, wait time, deferrals and throttling.
    pub fn budget_observer(self: &Arc<Self>, account: &str) -> Arc<dyn BudgetObserver> {
        Arc::new(BudgetMetrics { metrics: Arc::clone(self), account: account.to_owned() })
    }

    /// An observer for the Databricks client that counts requests.
    pub fn databricks_observer(self: &Arc<Self>) -> crate::databricks::Observer {
        let metrics = Arc::clone(self);
        crate::databricks::Observer(Arc::new(move |operation, status| {
            metrics
                .databricks_requests
                .get_or_create(&RequestLabels { operation: operation.to_owned(), status: status.to_string() })
                .inc();
        }))
    }
}

/// Reports one account's budget into the metrics.
struct BudgetMetrics {
    metrics: Arc<Metrics>,
    account: String,
}

impl BudgetMetrics {
    fn labels(&self, class: Class, namespace: &str) -> BudgetLabels {
        BudgetLabels {
            account: self.account.clone(),
            class: class.name().to_owned(),
            namespace: namespace.to_owned(),
        }
    }
}

impl BudgetObserver for BudgetMetrics {
    fn queue_depth(&self, class: Class, namespace: &str, depth: usize) {
        self.metrics.budget_queue_depth.get_or_create(&self.labels(class, namespace)).set(depth as i64);
    }

    fn granted(&self, class: Class, namespace: &str, waited: std::time::Duration) {
        self.metrics.budget_wait.get_or_create(&self.labels(class, namespace)).observe(waited.as_secs_f64());
    }

    fn deferred(&self, class: Class, namespace: &str) {
        self.metrics.budget_deferred.get_or_create(&self.labels(class, namespace)).inc();
    }

    fn throttled(&self, class: Class) {
        let labels = ClassLabels { account: self.account.clone(), class: class.name().to_owned() };
        self.metrics.budget_throttled.get_or_create(&labels).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_alerts_use_only_exported_metrics() {
        let rules = include_str!("../deploy/prometheus/rules.yaml");
        let mut used = 0;
        for word in rules.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if let Some(name) = word.strip_prefix("databricks_oauth_operator_") {
                let family = name.strip_suffix("_total").unwrap_or(name);
                assert!(FAMILIES.contains(&family), "the alerts use {word}, which is not exported");
                used += 1;
            }
        }
        assert!(used >= 3);
        // And FAMILIES is what is registered: after one observation each, every family renders.
        let metrics = Arc::new(Metrics::default());
        let labels = ControllerLabels { controller: "x".into() };
        metrics.reconciles.get_or_create(&labels).inc();
        metrics
            .reconcile_errors
            .get_or_create(&ErrorLabels { controller: "x".into(), reason: "y".into() })
            .inc();
        metrics.reconcile_duration.get_or_create(&labels).observe(0.1);
        metrics
            .databricks_requests
            .get_or_create(&RequestLabels { operation: "o".into(), status: "200".into() })
            .inc();
        metrics
            .credential_expiry
            .get_or_create(&ObjectLabels { namespace: "n".into(), name: "m".into() })
            .set(1);
        let observer = metrics.budget_observer("a");
        observer.queue_depth(Class::Read, "n", 1);
        observer.granted(Class::Read, "n", std::time::Duration::from_millis(5));
        observer.deferred(Class::Write, "n");
        observer.throttled(Class::Patch);
        metrics.worker_waits.get_or_create(&labels).inc();
        let text = metrics.render();
        for family in FAMILIES {
            assert!(
                text.contains(&format!("# TYPE databricks_oauth_operator_{family} ")),
                "{family} in:\n{text}"
            );
        }
    }
}
