//! The Argo CD health check (deploy/argocd/health.lua) evaluated by gopher-lua, the interpreter Argo CD embeds,
//! and the argocd-cm snippet kept identical to it.

use std::{path::PathBuf, process::Command};

use serde_json::{Value, json};
use sha2::Digest as _;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Builds hack/argocd-health (gopher-lua) once into the cache.
fn evaluator() -> PathBuf {
    let cache = std::env::var_os("DOO_CACHE_DIR").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/databricks-oauth-operator")
    });
    // Keyed by the evaluator's source, so a change rebuilds it.
    let mut source = std::fs::read(root().join("hack/argocd-health/main.go")).expect("main.go");
    source.extend(std::fs::read(root().join("hack/argocd-health/go.sum")).expect("go.sum"));
    let digest: String = sha2::Sha256::digest(&source).iter().take(6).map(|b| format!("{b:02x}")).collect();
    let binary = cache.join("tools").join(format!("argocd-health-{digest}"));
    if !binary.exists() {
        let status = Command::new("go")
            .args(["build", "-o"])
            .arg(&binary)
            .arg(".")
            .current_dir(root().join("hack/argocd-health"))
            .env("GOFLAGS", "-mod=mod")
            .status()
            .expect("Go is needed to build the Argo CD health evaluator");
        assert!(status.success(), "building hack/argocd-health failed");
    }
    binary
}

fn health(object: Value) -> (String, String) {
    let mut child = Command::new(evaluator())
        .arg(root().join("deploy/argocd/health.lua"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run the evaluator");
    serde_json::to_writer(child.stdin.take().expect("stdin"), &object).expect("write");
    let output = child.wait_with_output().expect("wait");
    assert!(output.status.success(), "the Lua script failed for {object}");
    let result: Value = serde_json::from_slice(&output.stdout).expect("json");
    (
        result["status"].as_str().unwrap_or_default().to_owned(),
        result["message"].as_str().unwrap_or_default().to_owned(),
    )
}

fn object(generation: i64, observed: i64, ready: Option<(&str, &str)>) -> Value {
    let mut conditions =
        vec![json!({"type": "Synced", "status": "True", "reason": "Synced", "message": "in sync"})];
    if let Some((status, reason)) = ready {
        conditions.push(json!({"type": "Ready", "status": status, "reason": reason, "message": format!("ready: {reason}")}));
    }
    json!({"metadata": {"generation": generation}, "status": {"observedGeneration": observed, "conditions": conditions}})
}

#[test]
fn argo_cd_sees_the_health_of_every_state() {
    assert_eq!(health(object(2, 2, Some(("True", "Ready")))), ("Healthy".into(), "ready: Ready".into()));
    assert_eq!(health(object(2, 2, Some(("False", "SecretConflict")))).0, "Degraded");
    assert_eq!(health(object(2, 2, Some(("False", "NamespaceNotAllowed")))).0, "Degraded");
    assert_eq!(health(object(2, 2, Some(("False", "Paused")))).0, "Suspended");
    assert_eq!(health(object(2, 2, Some(("False", "DatabricksThrottled")))).0, "Progressing");
    assert_eq!(
        health(object(3, 2, Some(("True", "Ready")))).0,
        "Progressing",
        "a newer generation is not seen yet"
    );
    assert_eq!(health(object(1, 1, None)).0, "Progressing");
    assert_eq!(health(json!({"metadata": {"generation": 1}})).0, "Progressing");
    let deleting =
        json!({"metadata": {"generation": 1, "deletionTimestamp": "2026-01-01T00:00:00Z"}, "status": {}});
    assert_eq!(health(deleting), ("Progressing".into(), "Deleting".into()));
}

#[test]
fn the_argocd_cm_snippet_embeds_the_script_for_every_kind() {
    let script = std::fs::read_to_string(root().join("deploy/argocd/health.lua")).expect("script");
    let config: Value = serde_yaml::from_str(
        &std::fs::read_to_string(root().join("deploy/argocd/argocd-cm.yaml")).expect("cm"),
    )
    .expect("yaml");
    for kind in ["DatabricksAccount", "ServicePrincipal", "DatabricksAppConnection", "TrustPolicy"] {
        let key = format!("resource.customizations.health.oauth.databricks-operator.io_{kind}");
        assert_eq!(config["data"][&key].as_str(), Some(script.as_str()), "{key} matches health.lua");
    }
}
