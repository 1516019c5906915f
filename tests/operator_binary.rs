//! The `databricks-oauth-operator run` binary: refuses to start without its CRDs (saying how to install them),
//! serves health and metrics, reconciles, and shuts down cleanly on SIGTERM.

mod support;

use std::{process::Stdio, time::Duration};

use serde_json::json;
use support::{TestEnv, operator::OperatorOptions, wait_for};
use test_control_plane::ControlPlane;

const BIN: &str = env!("CARGO_BIN_EXE_databricks-oauth-operator");

fn free_port() -> u16 {
    test_control_plane::free_port().expect("port")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_crds_the_operator_says_how_to_install_them() {
    let plane = ControlPlane::start().await.expect("a control plane without CRDs");
    let kubeconfig = plane.root().join("kubeconfig");
    plane.write_admin_kubeconfig(&kubeconfig).expect("kubeconfig");
    let output = tokio::process::Command::new(BIN)
        .args([
            "run",
            "--health-addr",
            &format!("127.0.0.1:{}", free_port()),
            "--metrics-addr",
            &format!("127.0.0.1:{}", free_port()),
        ])
        .env("KUBECONFIG", &kubeconfig)
        .output()
        .await
        .expect("run");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("kubectl apply --server-side -f crds/"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_health_and_metrics_reconciles_and_stops_on_sigterm() {
    let env = TestEnv::new().await;
    // The in-process operator only provides the emulator and account here; stop its controllers.
    let helper = env.operator(OperatorOptions::default()).await;
    helper.stop();
    let kubeconfig = env.kubeconfig_file();
    let (health, metrics) = (free_port(), free_port());
    let mut child = tokio::process::Command::new(BIN)
        .args([
            "run",
            "--namespace",
            &env.namespace,
            "--health-addr",
            &format!("127.0.0.1:{health}"),
            "--metrics-addr",
            &format!("127.0.0.1:{metrics}"),
            "--log-format",
            "json",
            "--leader-elect",
            "--lease-namespace",
            &env.namespace,
            "--credentials-namespace",
            &helper.credentials.0,
        ])
        .env("KUBECONFIG", &kubeconfig)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn");
    let http = reqwest::Client::new();
    wait_for(Duration::from_secs(30), || async {
        let r = http.get(format!("http://127.0.0.1:{health}/readyz")).send().await.ok()?;
        r.status().is_success().then_some(())
    })
    .await
    .expect("/readyz");
    let healthz = http.get(format!("http://127.0.0.1:{health}/healthz")).send().await.expect("healthz");
    assert!(healthz.status().is_success());

    env.create_principal(&helper, "from-binary", json!({"credentials": {}})).await;
    env.wait_condition("from-binary", "Ready", "True", Duration::from_secs(60)).await;
    let text = http
        .get(format!("http://127.0.0.1:{metrics}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    for metric in [
        "databricks_oauth_operator_reconciles_total{controller=\"serviceprincipal\"}",
        "databricks_oauth_operator_databricks_requests_total{operation=\"secrets.create\",status=\"200\"}",
        "databricks_oauth_operator_credential_expiry_timestamp_seconds{",
        "databricks_oauth_operator_reconcile_duration_seconds_bucket",
    ] {
        assert!(text.contains(metric), "/metrics lacks {metric}:\n{text}");
    }

    let pid = child.id().expect("pid");
    let killed = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().expect("kill");
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("stops in time")
        .expect("wait");
    assert!(status.success(), "graceful shutdown exits 0: {status}");
    let mut stdout = String::new();
    if let Some(mut out) = child.stdout.take() {
        use tokio::io::AsyncReadExt;
        out.read_to_string(&mut stdout).await.expect("read");
    }
    let first = stdout.lines().next().unwrap_or_default();
    assert!(serde_json::from_str::<serde_json::Value>(first).is_ok(), "JSON logs: {first}");
    let data = env.secret_data("from-binary-databricks").await.expect("secret");
    assert!(!stdout.contains(&data["DATABRICKS_CLIENT_SECRET"]), "no secret value in the logs");
}
