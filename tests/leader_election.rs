//! Two operators against one control plane: only the Lease holder reconciles; when it stops, the other takes over.

mod support;

use std::{sync::Arc, time::Duration};

use databricks_oauth_operator::{
    controllers::{self, Context, FailPoints, LeaderElection, Stop},
    metrics::{ControllerLabels, Metrics},
};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use serde_json::json;
use support::{TestEnv, operator::OperatorOptions, wait_for};

const TIMEOUT: Duration = Duration::from_secs(60);

fn reconciles(metrics: &Metrics) -> u64 {
    metrics.reconciles.get_or_create(&ControllerLabels { controller: "serviceprincipal".into() }).get()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leader_writes_and_the_other_takes_over_when_it_stops() {
    let env = TestEnv::new().await;
    // The harness provides the emulator and the account; its own unelected operator is stopped at once.
    let harness = env.operator(OperatorOptions::default()).await;
    harness.stop();
    let election = |identity: &str| LeaderElection {
        lease_name: "databricks-oauth-operator".into(),
        namespace: env.namespace.clone(),
        identity: identity.into(),
        lease_duration: 6,
        grace: 2,
    };
    let config = controllers::Config {
        namespace: Some(env.namespace.clone()),
        credentials_namespace: harness.credentials.0.clone(),
        ..controllers::Config::default()
    };
    let start = |identity: &str| {
        let metrics = Arc::new(Metrics::default());
        let ctx = Arc::new(Context::new(
            env.client.clone(),
            config.clone(),
            metrics.clone(),
            FailPoints::default(),
        ));
        let stop = Stop::default();
        let task = tokio::spawn(controllers::run_elected(ctx, election(identity), stop.clone()));
        (metrics, stop, task)
    };
    let leases: Api<Lease> = Api::namespaced(env.client.clone(), &env.namespace);
    let holder = || async {
        leases.get_opt("databricks-oauth-operator").await.ok().flatten().and_then(|l| l.spec?.holder_identity)
    };

    let (metrics_a, stop_a, task_a) = start("operator-a");
    wait_for(TIMEOUT, || async { (holder().await.as_deref() == Some("operator-a")).then_some(()) })
        .await
        .expect("a leads");
    let (metrics_b, _stop_b, task_b) = start("operator-b");

    env.create_principal(&harness, "first", json!({"credentials": {}})).await;
    env.wait_condition("first", "Ready", "True", TIMEOUT).await;
    assert!(reconciles(&metrics_a) > 0, "the leader reconciled");
    assert_eq!(reconciles(&metrics_b), 0, "the follower made no call at all");
    assert_eq!(holder().await.as_deref(), Some("operator-a"));

    // The leader stops: it releases the lease and the follower takes over.
    stop_a.stop();
    tokio::time::timeout(TIMEOUT, task_a)
        .await
        .expect("a stops")
        .expect("join")
        .expect("a released the lease");
    wait_for(TIMEOUT, || async { (holder().await.as_deref() == Some("operator-b")).then_some(()) })
        .await
        .expect("b leads");
    let before = reconciles(&metrics_a);
    env.create_principal(&harness, "second", json!({"credentials": {}})).await;
    env.wait_condition("second", "Ready", "True", TIMEOUT).await;
    assert!(reconciles(&metrics_b) > 0, "the new leader reconciles");
    assert_eq!(reconciles(&metrics_a), before, "the stopped operator does nothing");
    task_b.abort();
}
