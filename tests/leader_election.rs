//! Two operators against one control plane: only the Lease holder reconciles; when it stops, the other takes over.

mod support;

use std::{sync::Arc, time::Duration};

use databricks_oauth_operator::{
    controllers::{self, Context, FailPoints, LeaderElection, Stop},
    metrics::{ControllerLabels, Metrics},
};
use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, ResourceExt};
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

/// A lease that lapses (a holder too starved to renew in time) lets two replicas run for a moment: both may see an
/// object with no principal yet and both create one. Whatever the interleaving, each object ends with one principal,
/// the one its status names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_operators_running_at_once_leave_one_principal_per_object() {
    let env = TestEnv::new().await;
    let options = OperatorOptions { search_lag: Duration::from_secs(5), ..OperatorOptions::default() };
    let harness = env.operator(options).await;
    // A second, unelected operator over the same namespace and account: the overlap, held open.
    let twin = Arc::new(Context::new(
        env.client.clone(),
        harness.ctx.config.clone(),
        Arc::new(Metrics::default()),
        FailPoints::default(),
    ));
    // Searches lag creates by seconds, as Databricks' SCIM filter does: neither replica sees the other's create
    // before it makes its own.
    harness.emulator.set_consistency_delay(Duration::from_secs(3)).await;
    let twin_task = tokio::spawn(controllers::run(twin));
    let names: Vec<String> = (0..8).map(|i| format!("twin-{i}")).collect();
    for name in &names {
        env.create_principal(&harness, name, json!({})).await;
    }
    for name in &names {
        env.wait_condition(name, "Ready", "True", TIMEOUT).await;
        wait_for(TIMEOUT, || async {
            let sp = env.principals().get(name).await.ok()?;
            let uid = sp.uid()?;
            let tagged = harness.admin.find_service_principals_by_external_id(&uid).await.ok()?;
            let id = sp.status.as_ref()?.id.clone()?;
            (tagged.len() == 1 && tagged[0].id == id).then_some(())
        })
        .await
        .unwrap_or_else(|_| panic!("{name}: exactly one remote principal, the one its status names"));
    }
    twin_task.abort();
}
