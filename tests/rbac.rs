//! `deploy/` renders, is accepted by the real apiserver, and grants exactly enough: every controller runs a full
//! scenario as the operator's ServiceAccount (not as an admin), and the apiserver's audit log shows a request for
//! every verb granted.

mod support;

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use databricks_oauth_operator::{
    controllers::{self, Context, FailPoints},
    crd::{DatabricksAppConnection, TrustPolicy},
    metrics::Metrics,
};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::{Api, ResourceExt, api::PostParams};
use serde_json::{Value, json};
use support::{TestEnv, operator::OperatorOptions, wait_for};
use test_control_plane::ControlPlane;

const TIMEOUT: Duration = Duration::from_secs(60);

/// A client acting as the deployed operator: a token of its ServiceAccount, as in the pod.
async fn operator_client(env: &TestEnv, plane: &ControlPlane) -> kube::Client {
    let namespace = "databricks-oauth-operator";
    support::service_account_client(&env.client, plane, namespace, "databricks-oauth-operator").await
}

/// Every controller's full scenario in `env`'s namespace, run by an elected operator acting as `as_operator`:
/// a principal with a secret and an assignment, a confidential app, a verified trust policy, dropping the
/// credentials (the Secret is deleted), deleting the principal (finalizers), releasing the Lease.
async fn scenario(env: &TestEnv, as_operator: kube::Client, watch: Option<String>, credentials: &str) {
    // The emulator and account come from the harness; its own in-process operator is stopped at once. The
    // account selects namespaces by label, so reading a Namespace is part of the scenario.
    let selector = json!({"selector": {"matchLabels": {"kubernetes.io/metadata.name": env.namespace}}});
    let harness = env
        .operator(OperatorOptions {
            allowed_namespaces: Some(selector),
            credentials_namespace: Some(credentials.to_owned()),
            ..OperatorOptions::default()
        })
        .await;
    harness.stop();
    let config = controllers::Config {
        namespace: watch,
        credentials_namespace: credentials.to_owned(),
        token_dir: support::operator::token_dir(),
        ..controllers::Config::default()
    };
    let ctx =
        Arc::new(Context::new(as_operator, config, Arc::new(Metrics::default()), FailPoints::default()));
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

    // Consumers of the principal's Secret, rolled when it is published (no nodes here: only the patch matters).
    let container =
        json!({"name": "c", "image": "c", "envFrom": [{"secretRef": {"name": "rbac-sp-databricks"}}]});
    let template = json!({"metadata": {"labels": {"app": "c"}}, "spec": {"containers": [container]}});
    let workloads = [
        (
            "deployments",
            "Deployment",
            json!({"selector": {"matchLabels": {"app": "c"}}, "template": template}),
        ),
        (
            "statefulsets",
            "StatefulSet",
            json!({"selector": {"matchLabels": {"app": "c"}}, "template": template, "serviceName": "c"}),
        ),
        ("daemonsets", "DaemonSet", json!({"selector": {"matchLabels": {"app": "c"}}, "template": template})),
    ];
    let mut targets = Vec::new();
    for (plural, kind, spec) in &workloads {
        let resource = kube::api::ApiResource {
            group: "apps".into(),
            version: "v1".into(),
            api_version: "apps/v1".into(),
            kind: (*kind).into(),
            plural: (*plural).into(),
        };
        let api: Api<kube::api::DynamicObject> =
            Api::namespaced_with(env.client.clone(), &env.namespace, &resource);
        let object: kube::api::DynamicObject = serde_json::from_value(
            json!({"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": "consumer"}, "spec": spec}),
        )
        .expect("workload");
        api.create(&PostParams::default(), &object).await.expect("workload");
        targets.push(json!({"kind": kind, "name": "consumer"}));
    }
    env.create_principal(&harness, "rbac-sp", json!({
        "workspaceAssignments": [{"workspaceId": support::operator::WORKSPACES[0], "permissions": ["USER"]}],
        "credentials": {"rolloutRestartTargets": targets},
    }))
    .await;
    env.wait_condition("rbac-sp", "Ready", "True", TIMEOUT).await;
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(env.client.clone(), &env.namespace);
    wait_for(TIMEOUT, || async {
        let annotations = deployments.get("consumer").await.ok()?.spec.template.metadata?.annotations?;
        annotations.keys().any(|k| k.starts_with(controllers::rollout::ANNOTATION_PREFIX)).then_some(())
    })
    .await
    .unwrap_or_else(|e| {
        let sp = futures::executor::block_on(env.principals().get("rbac-sp")).ok().and_then(|s| s.status);
        panic!("the consumer is rolled as the operator's ServiceAccount: {e}: {sp:?}")
    });
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
    .unwrap_or_else(|_| {
        panic!(
            "policy: {:?}",
            futures::executor::block_on(policies.get("rbac-trust")).ok().and_then(|a| a.status)
        )
    });

    // An object naming an account that does not exist: the operator reads it (not only its watch cache) to tell.
    let stray: DatabricksAppConnection =
        serde_json::from_value(json!({"metadata": {"name": "rbac-stray"}, "spec": {
        "accountRef": {"name": "no-such-account"}, "redirectUrls": ["https://a.example.com/cb"]}}))
        .expect("app");
    apps.create(&PostParams::default(), &stray).await.expect("stray app");
    wait_for(TIMEOUT, || async {
        let app = apps.get("rbac-stray").await.ok()?;
        app.status?
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.reason == "AccountNotFound")
            .then_some(())
    })
    .await
    .expect("AccountNotFound as the operator's ServiceAccount");

    // Dropping the credentials deletes the published Secret.
    env.patch_principal("rbac-sp", json!({"spec": {"credentials": {"type": "None"}}})).await;
    wait_for(TIMEOUT, || async {
        env.secrets().get_opt("rbac-sp-databricks").await.ok()?.is_none().then_some(())
    })
    .await
    .expect("the Secret is deleted as the operator's ServiceAccount");

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

/// Every verb `roles` grant appears in the audit log of the operator's identity.
fn assert_every_verb_used(plane: &ControlPlane, roles: &[&kube::api::DynamicObject]) {
    let used = audited(&plane.audit_log());
    let mut unused = Vec::new();
    for role in roles {
        let grants = granted(&role.data["rules"]);
        for (group, resource, verb) in &grants {
            // Needed by admission, not by a request: setting a blockOwnerDeletion owner reference where the
            // OwnerReferencesPermissionEnforcement plugin is on (it is off in this apiserver, on in many clusters).
            let admission_only = resource.ends_with("/finalizers") && verb == "update";
            // A server-side apply of an object that does not exist yet is audited as `patch` but authorized as
            // `create` too (the scenario's first Secret and ConfigMap writes need it).
            let applied = verb == "create"
                && used.contains(&(group.clone(), resource.clone(), "patch".to_owned()))
                && grants.contains(&(group.clone(), resource.clone(), "patch".to_owned()));
            if !admission_only && !applied && !used.contains(&(group.clone(), resource.clone(), verb.clone()))
            {
                unused.push(format!("{}: {group}/{resource} {verb}", role.name_any()));
            }
        }
    }
    assert!(unused.is_empty(), "granted but never used by the operator: {unused:#?}\nused: {used:#?}");
}

/// The operator's own roles among rendered manifests (not the tenant roles).
fn operator_roles(objects: &[kube::api::DynamicObject]) -> Vec<&kube::api::DynamicObject> {
    objects
        .iter()
        .filter(|o| o.types.as_ref().is_some_and(|t| t.kind == "ClusterRole" || t.kind == "Role"))
        .filter(|o| !o.name_any().ends_with("-edit") && !o.name_any().ends_with("-view"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deployed_identity_is_exactly_sufficient() {
    // A control plane of its own: its audit log then holds only this scenario's requests.
    let plane = ControlPlane::start().await.expect("control plane");
    plane.install_crds(&databricks_oauth_operator::crd::all()).await.expect("crds");
    let env = TestEnv::on(&plane).await;
    let base = support::manifests::kustomize("deploy/base");
    let dev = support::manifests::kustomize("deploy/overlays/dev");
    assert!(dev.iter().any(|o| o.types.as_ref().is_some_and(|t| t.kind == "Deployment")));
    support::manifests::apply_all(&env.client, &base).await;
    support::manifests::apply_all(&env.client, &dev).await;
    let as_operator = operator_client(&env, &plane).await;
    scenario(&env, as_operator, None, &env.namespace).await;
    assert_every_verb_used(&plane, &operator_roles(&base));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_namespaced_install_needs_no_cluster_wide_secrets() {
    let plane = ControlPlane::start().await.expect("control plane");
    plane.install_crds(&databricks_oauth_operator::crd::all()).await.expect("crds");
    let env = TestEnv::named(&plane, "apps").await;
    let namespaced = support::manifests::kustomize("deploy/overlays/namespaced");
    let args = namespaced
        .iter()
        .find(|o| o.types.as_ref().is_some_and(|t| t.kind == "Deployment"))
        .map(|d| d.data["spec"]["template"]["spec"]["containers"][0]["args"].to_string())
        .expect("deployment");
    assert!(args.contains("--namespace=apps"), "{args}");
    support::manifests::apply_all(&env.client, &namespaced).await;
    let as_operator = operator_client(&env, &plane).await;
    // No Secret, ConfigMap or token outside the watched namespace.
    for denied in [
        Api::<k8s_openapi::api::core::v1::Secret>::all(as_operator.clone())
            .list(&Default::default())
            .await
            .err(),
        Api::<k8s_openapi::api::core::v1::Secret>::namespaced(as_operator.clone(), "kube-system")
            .list(&Default::default())
            .await
            .err(),
    ] {
        assert!(matches!(denied, Some(kube::Error::Api(ref s)) if s.code == 403), "{denied:?}");
    }
    scenario(&env, as_operator, Some("apps".to_owned()), "databricks-oauth-operator").await;
    assert_every_verb_used(&plane, &operator_roles(&namespaced));
}

/// (apiGroup, resource[/subresource] or a non-resource URL, verb) of every request the apiserver allowed the
/// operator's ServiceAccount.
fn audited(log: &std::path::Path) -> BTreeSet<(String, String, String)> {
    let text = std::fs::read_to_string(log).expect("the control plane writes an audit log");
    text.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|e| {
            e["user"]["username"]
                == "system:serviceaccount:databricks-oauth-operator:databricks-oauth-operator"
        })
        .filter(|e| e["responseStatus"]["code"].as_u64().is_some_and(|c| c < 400 || c == 404 || c == 409))
        .map(|e| {
            let verb = e["verb"].as_str().unwrap_or_default().to_owned();
            match e["objectRef"].as_object() {
                Some(object) => {
                    let group = object.get("apiGroup").and_then(Value::as_str).unwrap_or_default().to_owned();
                    let mut resource =
                        object.get("resource").and_then(Value::as_str).unwrap_or_default().to_owned();
                    if let Some(sub) = object.get("subresource").and_then(Value::as_str) {
                        resource = format!("{resource}/{sub}");
                    }
                    (group, resource, verb)
                }
                None => {
                    let uri = e["requestURI"].as_str().unwrap_or_default();
                    ("nonResource".to_owned(), uri.split('?').next().unwrap_or_default().to_owned(), verb)
                }
            }
        })
        .collect()
}

/// Every (apiGroup, resource, verb) a list of RBAC rules grants.
fn granted(rules: &Value) -> Vec<(String, String, String)> {
    let strings = |v: &Value| -> Vec<String> {
        v.as_array().into_iter().flatten().filter_map(|s| s.as_str().map(str::to_owned)).collect()
    };
    let mut out = Vec::new();
    for rule in rules.as_array().into_iter().flatten() {
        for verb in strings(&rule["verbs"]) {
            for url in strings(&rule["nonResourceURLs"]) {
                out.push(("nonResource".to_owned(), url, verb.clone()));
            }
            for group in strings(&rule["apiGroups"]) {
                for resource in strings(&rule["resources"]) {
                    out.push((group.clone(), resource, verb.clone()));
                }
            }
        }
    }
    out
}
