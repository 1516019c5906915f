//! The Helm chart renders (with a helm built from Go modules), lints, is accepted by the real apiserver, and
//! grants exactly the RBAC rules that tests/rbac.rs proves sufficient for deploy/base.

mod support;

use std::process::Command;

use serde_json::Value;
use support::{
    TestEnv,
    manifests::{self, helm},
};

fn numbers_as_floats(value: Value) -> Value {
    match value {
        Value::Number(n) => n.as_f64().map_or(Value::Number(n), |f| serde_json::json!(f)),
        Value::Array(items) => Value::Array(items.into_iter().map(numbers_as_floats).collect()),
        Value::Object(map) => {
            Value::Object(map.into_iter().map(|(k, v)| (k, numbers_as_floats(v))).collect())
        }
        other => other,
    }
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

    // Everything behind values: CRDs (the same as crds/, kept on uninstall), PDB, ServiceMonitor, host network.
    let full = Command::new(&helm)
        .args(["template", "databricks-oauth-operator", chart, "--namespace", "databricks-oauth-operator"])
        .args(["--set", "crds.install=true,podDisruptionBudget.enabled=true,serviceMonitor.enabled=true"])
        .args(["--set", "hostNetwork=true,podAnnotations.a=b,extraArgs[0]=--concurrency=4"])
        .args(["--set", "imagePullSecrets[0].name=regcred"])
        .output()
        .expect("helm template");
    assert!(full.status.success(), "helm template: {}", String::from_utf8_lossy(&full.stderr));
    let full = manifests::parse(&full.stdout);
    let of_kind = |kind: &str| -> Vec<&kube::api::DynamicObject> {
        full.iter().filter(|o| o.types.as_ref().is_some_and(|t| t.kind == kind)).collect()
    };
    let crds = of_kind("CustomResourceDefinition");
    let generated = databricks_oauth_operator::crd::all();
    assert_eq!(crds.len(), generated.len(), "every CRD");
    for crd in &generated {
        let name = kube::ResourceExt::name_any(crd);
        let rendered =
            crds.iter().find(|o| o.metadata.name.as_deref() == Some(name.as_str())).expect("rendered");
        // Helm's fromYaml/toYaml reads every number as a float and prints 1.0 as 1: compare numbers as numbers.
        assert_eq!(
            numbers_as_floats(rendered.data["spec"].clone()),
            numbers_as_floats(serde_json::to_value(&crd.spec).expect("json")),
            "{name}: same as crds/"
        );
        let annotations = rendered.metadata.annotations.clone().unwrap_or_default();
        assert_eq!(annotations.get("helm.sh/resource-policy").map(String::as_str), Some("keep"), "{name}");
    }
    assert_eq!(of_kind("PodDisruptionBudget").len(), 1);
    assert_eq!(of_kind("ServiceMonitor").len(), 1);
    let pod = &of_kind("Deployment")[0].data["spec"]["template"];
    assert_eq!(pod["spec"]["hostNetwork"], true);
    assert_eq!(pod["spec"]["imagePullSecrets"][0]["name"], "regcred");
    assert_eq!(pod["metadata"]["annotations"]["a"], "b");
    let args = pod["spec"]["containers"][0]["args"].to_string();
    assert!(args.contains("--health-addr=[$(POD_IP)]:8081") && args.contains("--concurrency=4"), "{args}");
    // values.schema.json: a misspelt value is an error, not silently ignored.
    let typo = Command::new(&helm)
        .args(["template", "databricks-oauth-operator", chart, "--set", "replicaCont=3"])
        .output()
        .expect("helm template");
    let stderr = String::from_utf8_lossy(&typo.stderr);
    assert!(!typo.status.success() && stderr.contains("replicaCont"), "{stderr}");

    let env = TestEnv::new().await;
    let namespace: k8s_openapi::api::core::v1::Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": "databricks-oauth-operator"}}))
            .expect("ns");
    let _ = kube::Api::<k8s_openapi::api::core::v1::Namespace>::all(env.client.clone())
        .create(&Default::default(), &namespace)
        .await;
    manifests::apply_all(&env.client, &objects).await;
}
