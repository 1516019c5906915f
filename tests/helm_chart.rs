//! The Helm chart renders (with a helm built from Go modules), lints, is accepted by the real apiserver, and
//! grants exactly the RBAC rules that tests/rbac.rs proves sufficient for deploy/base.

mod support;

use std::process::Command;

use serde_json::Value;
use support::{TestEnv, manifests};

fn helm() -> String {
    let output = Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/hack/build-helm.sh"))
        .output()
        .expect("bash");
    assert!(output.status.success(), "building helm: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).lines().last().unwrap_or_default().to_owned()
}

/// The rules of the one `kind` whose name ends with `suffix` (the chart prefixes names with the release).
fn rules(objects: &[kube::api::DynamicObject], kind: &str, suffix: &str) -> Value {
    let found: Vec<&kube::api::DynamicObject> = objects
        .iter()
        .filter(|o| o.types.as_ref().is_some_and(|t| t.kind == kind))
        .filter(|o| o.metadata.name.as_deref().is_some_and(|n| n.ends_with(suffix)))
        .collect();
    assert_eq!(found.len(), 1, "one {kind} named *{suffix}");
    found[0].data["rules"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chart_renders_lints_applies_and_matches_the_kustomize_rbac() {
    let helm = helm();
    let chart = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/helm/databricks-oauth-operator");
    let lint = Command::new(&helm).args(["lint", chart]).output().expect("helm lint");
    assert!(
        lint.status.success(),
        "helm lint: {}{}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );
    let rendered = Command::new(&helm)
        .args(["template", "databricks-oauth-operator", chart, "--namespace", "databricks-oauth-operator"])
        .output()
        .expect("helm template");
    assert!(rendered.status.success(), "helm template: {}", String::from_utf8_lossy(&rendered.stderr));
    let objects = manifests::parse(&rendered.stdout);
    let kinds: Vec<String> =
        objects.iter().filter_map(|o| o.types.as_ref().map(|t| t.kind.clone())).collect();
    for kind in [
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Deployment",
        "Service",
    ] {
        assert!(kinds.iter().any(|k| k == kind), "the chart renders a {kind}: {kinds:?}");
    }
    let base = manifests::kustomize("deploy/base");
    assert_eq!(
        rules(&objects, "ClusterRole", "operator"),
        rules(&base, "ClusterRole", "operator"),
        "chart and kustomize grant the operator the same"
    );
    for tenant_role in ["-edit", "-view"] {
        assert_eq!(
            rules(&objects, "ClusterRole", tenant_role),
            rules(&base, "ClusterRole", tenant_role),
            "chart and kustomize grant tenants the same ({tenant_role})"
        );
        let labels = objects
            .iter()
            .find(|o| o.metadata.name.as_deref().is_some_and(|n| n.ends_with(tenant_role)))
            .and_then(|o| o.metadata.labels.clone())
            .unwrap_or_default();
        let aggregate = format!("rbac.authorization.k8s.io/aggregate-to{tenant_role}");
        assert_eq!(labels.get(&aggregate).map(String::as_str), Some("true"), "{tenant_role} aggregates");
    }
    assert_eq!(rules(&objects, "Role", "leader-election"), rules(&base, "Role", "leader-election"));

    // watchNamespace renders the namespaced install, as deploy/overlays/namespaced does.
    let namespaced = Command::new(&helm)
        .args(["template", "databricks-oauth-operator", chart, "--namespace", "databricks-oauth-operator"])
        .args(["--set", "watchNamespace=apps"])
        .output()
        .expect("helm template");
    assert!(namespaced.status.success(), "helm template: {}", String::from_utf8_lossy(&namespaced.stderr));
    let namespaced = manifests::parse(&namespaced.stdout);
    let overlay = manifests::kustomize("deploy/overlays/namespaced");
    assert!(
        !namespaced.iter().any(|o| o.types.as_ref().is_some_and(|t| t.kind == "ClusterRole")
            && o.metadata.name.as_deref() == Some("databricks-oauth-operator")),
        "no cluster-wide operator role"
    );
    for (kind, suffix) in [("ClusterRole", "-cluster"), ("Role", "operator"), ("Role", "-credentials")] {
        assert_eq!(rules(&namespaced, kind, suffix), rules(&overlay, kind, suffix), "{kind} *{suffix}");
    }
    let role_namespace = namespaced
        .iter()
        .find(|o| {
            o.types.as_ref().is_some_and(|t| t.kind == "Role")
                && o.metadata.name.as_deref() == Some("databricks-oauth-operator")
        })
        .and_then(|o| o.metadata.namespace.clone());
    assert_eq!(role_namespace.as_deref(), Some("apps"));
    let deployment = objects
        .iter()
        .find(|o| o.types.as_ref().is_some_and(|t| t.kind == "Deployment"))
        .expect("deployment");
    let args = deployment.data["spec"]["template"]["spec"]["containers"][0]["args"].to_string();
    assert!(args.contains("--leader-elect"), "{args}");

    let env = TestEnv::new().await;
    let namespace: k8s_openapi::api::core::v1::Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": "databricks-oauth-operator"}}))
            .expect("ns");
    let _ = kube::Api::<k8s_openapi::api::core::v1::Namespace>::all(env.client.clone())
        .create(&Default::default(), &namespace)
        .await;
    manifests::apply_all(&env.client, &objects).await;
}
