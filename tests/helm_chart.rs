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

fn rules(objects: &[kube::api::DynamicObject], kind: &str) -> Value {
    let found: Vec<&kube::api::DynamicObject> =
        objects.iter().filter(|o| o.types.as_ref().is_some_and(|t| t.kind == kind)).collect();
    assert_eq!(found.len(), 1, "one {kind}");
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
        rules(&objects, "ClusterRole"),
        rules(&base, "ClusterRole"),
        "chart and kustomize grant the same"
    );
    assert_eq!(rules(&objects, "Role"), rules(&base, "Role"));
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
