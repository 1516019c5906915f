//! What wraps every reconcile: counting and timing it, and deciding when a failed one runs again.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use kube::{Resource, ResourceExt, runtime::controller::Action};

use super::context::Context;
use crate::{
    controllers::rules::error::Error,
    metrics::{ControllerLabels, ErrorLabels},
};

/// When a failed pass of `controller` runs again: soon while waiting helps, in minutes when a person must act.
pub fn error_policy<K: Resource<DynamicType = ()>>(
    controller: &'static str,
) -> impl Fn(Arc<K>, &Error, Arc<Context>) -> Action {
    move |obj, err, ctx| {
        let key = format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any());
        ctx.metrics
            .reconcile_errors
            .get_or_create(&ErrorLabels {
                controller: controller.to_owned(),
                reason: err.reason().as_str().to_owned(),
            })
            .inc();
        if let Some(wake) = err.wake() {
            // A revocation's next step (or a paced repair) is due then, whatever the backoff says.
            tracing::info!(controller, object = %key, reason = err.reason().as_str(), error = %err, "due later");
            Action::requeue(wake)
        } else if err.is_deferred() {
            // Expected while namespaces share a busy account; the metric and the object's condition say so. Nothing
            // was sent, so no backoff: a short jittered retry, so the namespace's share of the budget never idles
            // while its only work sleeps.
            tracing::debug!(controller, object = %key, error = %err, "pass deferred");
            Action::requeue(Duration::from_millis(rand::random_range(500..1500)))
        } else if err.is_transient() {
            tracing::warn!(controller, object = %key, reason = err.reason().as_str(), error = %err, "reconcile failed; retrying");
            Action::requeue(ctx.backoff.next(&key))
        } else {
            // A person must act: the condition says what; changes to the object reconcile at once anyway.
            tracing::warn!(controller, object = %key, reason = err.reason().as_str(), error = %err, "reconcile needs attention");
            Action::requeue(Duration::from_secs(300).max(ctx.backoff.next(&key)))
        }
    }
}

/// Runs one reconcile of `controller`: logged, counted and timed, and its object's backoff reset on success.
pub async fn instrumented<K, F>(
    controller: &'static str,
    obj: Arc<K>,
    ctx: Arc<Context>,
    run: impl FnOnce(Arc<K>, Arc<Context>) -> F,
) -> Result<Action, Error>
where
    K: Resource<DynamicType = ()>,
    F: std::future::Future<Output = Result<Action, Error>>,
{
    let namespace = obj.namespace().unwrap_or_default();
    let key = format!("{namespace}/{}", obj.name_any());
    let Some(_worker) = ctx.workers.take(controller, &namespace) else {
        // The namespace holds its share of the workers; this pass runs when one is given back.
        tracing::debug!(controller, object = %key, "pass waits for a worker of its namespace");
        ctx.metrics.worker_waits.get_or_create(&labels_of(controller)).inc();
        return Ok(Action::requeue(Duration::from_millis(rand::random_range(200..700))));
    };
    let started = Instant::now();
    let labels = labels_of(controller);
    tracing::debug!(controller, object = %key, "reconcile started");
    let result = run(obj, ctx.clone()).await;
    tracing::debug!(controller, object = %key, elapsed_ms = started.elapsed().as_millis() as u64, ok = result.is_ok(), "reconcile finished");
    ctx.metrics.reconciles.get_or_create(&labels).inc();
    ctx.metrics.reconcile_duration.get_or_create(&labels).observe(started.elapsed().as_secs_f64());
    if result.is_ok() {
        ctx.backoff.reset(&key);
    }
    result
}

fn labels_of(controller: &'static str) -> ControllerLabels {
    ControllerLabels { controller: controller.to_owned() }
}
