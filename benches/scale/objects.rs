//! What a scenario creates, how it is created (as a GitOps sync would: many at once), and the same writes without
//! an operator (the Kubernetes floor).

use std::time::Duration;

use databricks_emulator::Stats;
use databricks_oauth_operator::crd::{DatabricksAppConnection, ServicePrincipal, TrustPolicy};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Event, Secret};
use kube::{
    Api, Client, Resource,
    api::{Patch, PatchParams, PostParams},
};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::{ACCOUNT_ID, BoxError, CONCURRENCY, WORKSPACE};

/// What one scenario creates.
#[derive(Clone, Copy)]
pub struct Scenario {
    pub principals: usize,
    pub apps: usize,
    pub policies: usize,
}

impl Scenario {
    pub fn principals(n: usize) -> Self {
        Self { principals: n, apps: 0, policies: 0 }
    }

    /// `n` principals and trust policies, and half as many app connections (as in the runs recorded before
    /// app connections were capped per namespace only by the delegation).
    pub fn mixed(n: usize) -> Self {
        Self { principals: n, apps: n / 2, policies: n }
    }

    pub fn apps(n: usize) -> Self {
        Self { principals: 0, apps: n, policies: 0 }
    }

    pub fn objects(&self) -> usize {
        self.principals + self.apps + self.policies
    }

    pub fn name(&self) -> String {
        match (self.principals, self.apps + self.policies) {
            (_, 0) => format!("{} principals", self.principals),
            (0, _) if self.policies == 0 => format!("{} app connections", self.apps),
            _ => format!("mixed {}+{}+{}", self.principals, self.apps, self.policies),
        }
    }

    /// The operator's resync interval here: longer than convergence takes (so the creation numbers hold no
    /// resync passes), short enough to watch two of them.
    pub fn resync(&self) -> Duration {
        Duration::from_secs((self.objects() as u64 * 3 / 100).clamp(20, 300))
    }
}

/// What a new principal needs: search by tag, create, assign, mint, verify.
pub const CALLS_PER_PRINCIPAL: usize = 5;

/// Databricks requests per new principal, counting only principal operations (the mixed run has others).
pub fn calls_per_new_principal(stats: &Stats, scenario: Scenario) -> f64 {
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

pub fn objects(namespace: &str, scenario: Scenario) -> Vec<Value> {
    // The account is named like the namespace (the floor's objects are never reconciled).
    objects_of(namespace, namespace, scenario)
}

pub fn objects_of(namespace: &str, account: &str, scenario: Scenario) -> Vec<Value> {
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

pub async fn create(client: &Client, object: &Value) -> Result<(), BoxError> {
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
pub async fn create_objects(client: &Client, namespace: &str, scenario: Scenario) -> Result<u64, BoxError> {
    create_all(client, objects(namespace, scenario)).await
}

pub async fn create_all(client: &Client, objects: Vec<Value>) -> Result<u64, BoxError> {
    let count = objects.len() as u64;
    futures::stream::iter(objects)
        .map(|object| async move { create(client, &object).await })
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(count)
}

/// One object's writes without an operator: create, finalizer, published Secret/ConfigMap, status, events.
pub async fn replay_writes(client: Client, object: Value, events: usize) -> Result<(), BoxError> {
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

pub async fn write_steps<K>(
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
