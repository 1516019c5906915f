//! The emulator, checked against the official Databricks SDKs for Python and Go: `AccountClient` with OAuth M2M
//! runs every account operation the operator uses and reads back what it wrote; a principal's new secret works
//! with the SDK and stops working once deleted. The Python SDK is installed (once, cached) into a virtualenv; the
//! Go program (hack/go/conformance) is built once per change into the cache (hack/build-go-clients.sh).

mod support;

use std::{net::SocketAddr, path::PathBuf};

use databricks_oauth_operator::emulator::{Emulator, EmulatorConfig};

const ACCOUNT_ID: &str = "0d3c8a0e-6f1b-4c2a-9a57-3f2b1e4d5c6a";
const WORKSPACE_ID: i64 = 1_234_567_890_123_456;

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}
async fn run_sdk(mode: &str) -> String {
    let venv = support::python::venv().await;
    let mut config = EmulatorConfig::new(ACCOUNT_ID, "emulator-admin", "admin-secret-value");
    config.workspaces = vec![WORKSPACE_ID];
    // The SDK must cope with int64 ids as strings too, as real answers sometimes carry them.
    config.int64_as_strings = mode == "operations";
    let emulator = Emulator::start(config, SocketAddr::from(([127, 0, 0, 1], 0))).await.expect("emulator");
    let mut command = tokio::process::Command::new(venv.join("bin/python"));
    command
        .arg(manifest_dir().join("tests/python/sdk_conformance.py"))
        .env("EMU_HOST", emulator.url())
        .env("EMU_ACCOUNT_ID", ACCOUNT_ID)
        .env("EMU_CLIENT_ID", "emulator-admin")
        .env("EMU_CLIENT_SECRET", "admin-secret-value")
        .env("EMU_WORKSPACE_ID", WORKSPACE_ID.to_string())
        .env("EMU_MODE", mode)
        .env_remove("DATABRICKS_CONFIG_PROFILE")
        .env("HOME", std::env::temp_dir());
    let output = command.output().await.expect("running python");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "the Databricks SDK failed against the emulator:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stats = emulator.stats().await;
    assert!(
        stats.count("oidc.host_metadata") >= 1 && stats.count("oidc.token") >= 1,
        "the SDK discovered and authenticated"
    );
    emulator.shutdown().await;
    stdout
}

/// The number in a conformance program's last line, `OK <n> checks`.
fn checks_run(stdout: &str) -> usize {
    stdout
        .lines()
        .last()
        .and_then(|l| l.strip_prefix("OK "))
        .and_then(|l| l.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no summary line in:\n{stdout}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_runs_every_operation_against_the_emulator() {
    let stdout = run_sdk("operations").await;
    let checks = checks_run(&stdout);
    assert!(checks >= 25, "{checks} checks ran:\n{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_secret_works_with_the_sdk_until_deleted() {
    let stdout = run_sdk("secret").await;
    assert!(stdout.contains("ok - the new secret authenticates the SDK"), "{stdout}");
    assert!(stdout.contains("ok - a deleted secret no longer authenticates"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_go_sdk_runs_every_operation_against_the_emulator() {
    let built = std::process::Command::new("bash")
        .arg(manifest_dir().join("hack/build-go-clients.sh"))
        .output()
        .expect("bash");
    assert!(
        built.status.success(),
        "building the Go SDK programs: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    let dir = PathBuf::from(String::from_utf8_lossy(&built.stdout).lines().last().unwrap_or_default().trim());
    let mut config = EmulatorConfig::new(ACCOUNT_ID, "emulator-admin", "admin-secret-value");
    config.workspaces = vec![WORKSPACE_ID];
    let emulator = Emulator::start(config, SocketAddr::from(([127, 0, 0, 1], 0))).await.expect("emulator");
    let output = tokio::process::Command::new(dir.join("conformance"))
        .env("EMU_HOST", emulator.url())
        .env("EMU_ACCOUNT_ID", ACCOUNT_ID)
        .env("EMU_CLIENT_ID", "emulator-admin")
        .env("EMU_CLIENT_SECRET", "admin-secret-value")
        .env("EMU_WORKSPACE_ID", WORKSPACE_ID.to_string())
        .env("HOME", std::env::temp_dir())
        .output()
        .await
        .expect("running the Go program");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "the Databricks SDK for Go failed against the emulator:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let checks = checks_run(&stdout);
    assert!(checks >= 25, "{checks} checks ran:\n{stdout}");
    let stats = emulator.stats().await;
    assert!(stats.count("oidc.token") >= 1, "the SDK authenticated with OAuth M2M");
    emulator.shutdown().await;
}
