//! `deploy/` renders, is accepted by the real apiserver, and grants exactly enough: every controller runs a full
//! scenario as the operator's ServiceAccount (not as an admin).

mod support;

use std::{sync::Arc, time::Duration};

use databricks_oauth_operator::{
    control_plane::client_from,
    controllers::{self, Context, FailPoints},
    crd::{DatabricksAppConnection, TrustPolicy},
    metrics::Metrics,
};
use k8s_openapi::api::{
    authentication::v1::{TokenRequest, TokenRequestSpec},
    core::v1::ServiceAccount,
};
use kube::{Api, api::PostParams};
use serde_json::json;
use support::{TestEnv, operator::OperatorOptions, wait_for};

const TIMEOUT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deployed_identity_is_exactly_sufficient() {
    let env = TestEnv::new().await;
    let base = support::manifests::kustomize("deploy/base");
    let dev = support::manifests::kustomize("deploy/overlays/dev");
    assert!(dev.iter().any(|o| o.types.as_ref().is_some_and(|t| t.kind == "Deployment")));
    support::manifests::apply_all(&env.client, &base).await;
    support::manifests::apply_all(&env.client, &dev).await;

    // The operator's identity: a token of its ServiceAccount, as in the pod.
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: None,
            expiration_seconds: Some(3600),
            ..TokenRequestSpec::default()
        }),
        ..TokenRequest::default()
    };
    let accounts: Api<ServiceAccount> = Api::namespaced(env.client.clone(), "databricks-oauth-operator");
    let token = accounts
        .create_token_request("databricks-oauth-operator", &PostParams::default(), &request)
        .await
        .expect("token")
        .status
        .and_then(|s| s.token)
        .expect("token");
    let kubeconfig = support::control_plane().await.token_kubeconfig(&token);
    let as_operator = client_from(kubeconfig).await.expect("client");

    // The emulator and account come from the harness; its own in-process operator is stopped at once.
    let harness = env.operator(OperatorOptions::default()).await;
    harness.stop();
    let ctx = Arc::new(Context::new(
        as_operator,
        controllers::Config::default(),
        Arc::new(Metrics::default()),
        FailPoints::default(),
    ));
    // As deployed: leader election through a Lease in the operator's namespace.
    let election = controllers::LeaderElection {
        lease_name: "databricks-oauth-operator".into(),
        namespace: "databricks-oauth-operator".into(),
        identity: "rbac-test".into(),
        lease_duration: 15,
        grace: 5,
    };
    let stop = controllers::Stop::default();
    let operator = tokio::spawn(controllers::run_elected(ctx, election, stop.clone()));

    env.create_principal(&harness, "rbac-sp", json!({
        "workspaceAssignments": [{"workspaceId": support::operator::WORKSPACES[0], "permissions": ["USER"]}],
        "credentials": {},
    }))
    .await;
    env.wait_condition("rbac-sp", "Ready", "True", TIMEOUT).await;
    let apps: Api<DatabricksAppConnection> = Api::namespaced(env.client.clone(), &env.namespace);
    let app: DatabricksAppConnection = serde_json::from_value(json!({"metadata": {"name": "rbac-app"}, "spec": {
        "accountRef": {"name": harness.account}, "redirectUrls": ["https://a.example.com/cb"], "confidential": true}}))
    .expect("app");
    apps.create(&PostParams::default(), &app).await.expect("app");
    let sa: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": "workload"}})).expect("sa");
    Api::<ServiceAccount>::namespaced(env.client.clone(), &env.namespace)
        .create(&PostParams::default(), &sa)
        .await
        .expect("sa");
    let policies: Api<TrustPolicy> = Api::namespaced(env.client.clone(), &env.namespace);
    let policy: TrustPolicy = serde_json::from_value(json!({"metadata": {"name": "rbac-trust"}, "spec": {
        "servicePrincipalRef": {"name": "rbac-sp"}, "kubernetes": {"serviceAccountName": "workload"}, "verify": true}}))
    .expect("policy");
    policies.create(&PostParams::default(), &policy).await.expect("policy");
    wait_for(TIMEOUT, || async {
        let app = apps.get("rbac-app").await.ok()?;
        app.status?.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True").then_some(())
    })
    .await
    .unwrap_or_else(|_| {
        panic!("app: {:?}", futures::executor::block_on(apps.get("rbac-app")).ok().and_then(|a| a.status))
    });
    wait_for(TIMEOUT, || async {
        let p = policies.get("rbac-trust").await.ok()?;
        p.status?.conditions.iter().any(|c| c.type_ == "Verified" && c.status == "True").then_some(())
    })
    .await
    .expect("trust policy verified as the operator's ServiceAccount");

    // Deletion (finalizers) works with the same identity.
    env.delete_principal("rbac-sp").await;
    env.wait_gone("rbac-sp", TIMEOUT).await;
    stop.stop();
    tokio::time::timeout(TIMEOUT, operator)
        .await
        .expect("stops")
        .expect("join")
        .expect("the lease is released with the granted verbs");
}
