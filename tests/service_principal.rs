//! The ServicePrincipal and DatabricksAccount controllers against the real control plane and the emulator.

mod support;

use std::time::Duration;

use databricks_oauth_operator::crd::DatabricksAccount;
use kube::{Api, ResourceExt, api::ListParams};
use serde_json::json;
use support::{
    TestEnv,
    operator::{OperatorOptions, WORKSPACES},
    wait_for,
};
use test_control_plane::ControlPlane;

const READY: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_principal_becomes_ready_and_its_secret_works_with_the_python_sdk() {
    let env = TestEnv::new().await;
    let operator = env.operator(OperatorOptions::default()).await;
    let sp = env
        .create_principal(
            &operator,
            "etl",
            json!({
                "displayName": "etl job",
                "workspaceAssignments": [
                    {"workspaceId": WORKSPACES[0], "permissions": ["USER"]},
                    {"workspaceId": WORKSPACES[1], "permissions": ["ADMIN"]},
                ],
                "credentials": {"lifetime": "24h", "template": {"labels": {"team": "data"}}},
            }),
        )
        .await;
    let ready = env.wait_condition("etl", "Ready", "True", READY).await;
    let status = ready.status.clone().expect("status");
    let app_id = status.application_id.clone().expect("applicationId");
    let creds = status.credentials.clone().expect("credentials");
    assert_eq!(creds.secret_name.as_deref(), Some("etl-databricks"));
    assert!(creds.secret_id.is_some() && creds.expire_time.is_some() && creds.renew_time.is_some());
    assert_eq!(operator.tagged(&sp).await, 1);

    // The Secret: owned, labelled, the SDK's keys, and the credentials work.
    let secret = env.secrets().get("etl-databricks").await.expect("secret");
    assert_eq!(secret.owner_references()[0].uid, sp.uid().expect("uid"));
    assert_eq!(secret.labels().get("team").map(String::as_str), Some("data"));
    assert_eq!(
        secret.labels().get("app.kubernetes.io/managed-by").map(String::as_str),
        Some("databricks-oauth-operator")
    );
    let data = env.secret_data("etl-databricks").await.expect("data");
    assert_eq!(data["DATABRICKS_CLIENT_ID"], app_id);
    assert_eq!(data["DATABRICKS_HOST"], operator.emulator.url());
    assert_eq!(data["DATABRICKS_ACCOUNT_ID"], support::operator::ACCOUNT_ID);
    assert!(operator.works(&app_id, &data["DATABRICKS_CLIENT_SECRET"]).await);

    // Workspace assignments are exactly the spec.
    let principal_id: i64 = status.id.clone().expect("id").parse().expect("numeric id");
    for (workspace, expected) in
        [(WORKSPACES[0], Some(vec!["USER"])), (WORKSPACES[1], Some(vec!["ADMIN"])), (WORKSPACES[2], None)]
    {
        let assigned = operator.admin.list_workspace_assignments(workspace).await.expect("list");
        let found = assigned
            .iter()
            .find(|a| a.principal.principal_id == Some(principal_id))
            .map(|a| a.permissions.clone());
        assert_eq!(
            found,
            expected.map(|v| v.into_iter().map(str::to_owned).collect()),
            "workspace {workspace}"
        );
    }

    // The Databricks SDK for Python, configured only by the Secret's keys, authenticates.
    let venv = support::python::venv().await;
    let mut command = tokio::process::Command::new(venv.join("bin/python"));
    command
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/secret_auth.py"))
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", std::env::temp_dir());
    for (key, value) in &data {
        command.env(key, value);
    }
    let output = command.output().await.expect("python");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("authenticated"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );

    // The account reports who the operator is.
    let account = operator.wait_account(&env, "True").await;
    assert!(account.message.contains(support::operator::ADMIN_ID), "{}", account.message);

    // No secret value anywhere in status or events.
    let value = &data["DATABRICKS_CLIENT_SECRET"];
    let status_json =
        serde_json::to_string(&env.principals().get("etl").await.expect("sp").status).expect("json");
    assert!(!status_json.contains(value.as_str()));
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(env.client.clone(), &env.namespace);
    let events = events.list(&ListParams::default()).await.expect("events");
    assert!(!events.items.is_empty(), "events were published");
    for event in events.items {
        assert!(!serde_json::to_string(&event).expect("json").contains(value.as_str()));
    }
}

async fn assignment_of(
    operator: &support::operator::Operator,
    workspace: i64,
    principal_id: i64,
) -> Option<Vec<String>> {
    let assigned = operator.admin.list_workspace_assignments(workspace).await.expect("list");
    assigned.iter().find(|a| a.principal.principal_id == Some(principal_id)).map(|a| a.permissions.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assignments_converge_exactly_and_deletion_follows_the_policy() {
    let env = TestEnv::new().await;
    let operator = env.operator(OperatorOptions::default()).await;
    env.create_principal(
        &operator,
        "assigned",
        json!({
            "workspaceAssignments": [{"workspaceId": WORKSPACES[0], "permissions": ["USER"]}],
        }),
    )
    .await;
    let sp = env.wait_condition("assigned", "Ready", "True", READY).await;
    let id: i64 = sp.status.as_ref().and_then(|s| s.id.clone()).expect("id").parse().expect("numeric");
    assert!(sp.status.as_ref().and_then(|s| s.credentials.as_ref()).is_none(), "no credentials requested");
    assert_eq!(assignment_of(&operator, WORKSPACES[0], id).await, Some(vec!["USER".to_owned()]));

    // Add one, change one: converged exactly.
    env.patch_principal(
        "assigned",
        json!({"spec": {"workspaceAssignments": [
            {"workspaceId": WORKSPACES[0], "permissions": ["ADMIN"]},
            {"workspaceId": WORKSPACES[2], "permissions": ["USER"]},
        ]}}),
    )
    .await;
    wait_for(READY, || async { (assignment_of(&operator, WORKSPACES[2], id).await.is_some()).then_some(()) })
        .await
        .expect("added");
    wait_for(READY, || async {
        (assignment_of(&operator, WORKSPACES[0], id).await == Some(vec!["ADMIN".to_owned()])).then_some(())
    })
    .await
    .expect("changed");
    // Remove one.
    env.patch_principal(
        "assigned",
        json!({"spec": {"workspaceAssignments": [{"workspaceId": WORKSPACES[2], "permissions": ["USER"]}]}}),
    )
    .await;
    wait_for(READY, || async { assignment_of(&operator, WORKSPACES[0], id).await.is_none().then_some(()) })
        .await
        .expect("removed");
    assert_eq!(assignment_of(&operator, WORKSPACES[2], id).await, Some(vec!["USER".to_owned()]));

    // Delete (default for created principals): nothing is left behind.
    env.delete_principal("assigned").await;
    env.wait_gone("assigned", READY).await;
    assert!(operator.admin.get_service_principal(&id.to_string()).await.expect_err("deleted").is_not_found());
    assert_eq!(assignment_of(&operator, WORKSPACES[2], id).await, None);

    // Deactivate keeps the principal, inactive, without secrets.
    env.create_principal(
        &operator,
        "deactivated",
        json!({"deletionPolicy": "Deactivate", "credentials": {}}),
    )
    .await;
    let sp = env.wait_condition("deactivated", "Ready", "True", READY).await;
    let id = sp.status.as_ref().and_then(|s| s.id.clone()).expect("id");
    env.delete_principal("deactivated").await;
    env.wait_gone("deactivated", READY).await;
    let remote = operator.admin.get_service_principal(&id).await.expect("kept");
    assert!(!remote.active);
    assert!(operator.admin.list_secrets(&id).await.expect("secrets").is_empty());

    // The orphan annotation wins over the spec.
    env.create_principal(&operator, "orphaned", json!({"deletionPolicy": "Delete"})).await;
    let sp = env.wait_condition("orphaned", "Ready", "True", READY).await;
    let id = sp.status.as_ref().and_then(|s| s.id.clone()).expect("id");
    env.patch_principal(
        "orphaned",
        json!({"metadata": {"annotations": {"oauth.databricks-operator.io/deletion-policy": "orphan"}}}),
    )
    .await;
    env.delete_principal("orphaned").await;
    env.wait_gone("orphaned", READY).await;
    assert!(operator.admin.get_service_principal(&id).await.expect("left alone").active);
}

/// Polls the Secret during `window`, checking that every value it ever holds authenticates.
async fn watch_secret_stays_valid(
    env: &TestEnv,
    operator: &support::operator::Operator,
    name: &str,
    window: Duration,
) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    let deadline = tokio::time::Instant::now() + window;
    while tokio::time::Instant::now() < deadline {
        if let Some(data) = env.secret_data(name).await {
            let value = data["DATABRICKS_CLIENT_SECRET"].clone();
            if seen.last() != Some(&value) {
                assert!(
                    operator.works(&data["DATABRICKS_CLIENT_ID"], &value).await,
                    "the Secret held a dead credential"
                );
                seen.push(value);
            } else {
                assert!(
                    operator.works(&data["DATABRICKS_CLIENT_ID"], &value).await,
                    "the published credential stopped working"
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    seen
}

async fn secret_id(env: &TestEnv, name: &str) -> String {
    let sp = env.principals().get(name).await.expect("sp");
    sp.status.and_then(|s| s.credentials).and_then(|c| c.secret_id).expect("secret id")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_manual_rotation_tampering_and_drift_keep_a_working_secret() {
    let env = TestEnv::new().await;
    let operator = env
        .operator(OperatorOptions {
            resync: Duration::from_secs(3),
            grace: Duration::from_secs(2),
            ..Default::default()
        })
        .await;
    // Renewal 10 s after minting.
    env.create_principal(
        &operator,
        "rotating",
        json!({"credentials": {"lifetime": "5m", "renewBefore": "4m50s"}}),
    )
    .await;
    let sp = env.wait_condition("rotating", "Ready", "True", READY).await;
    let id = sp.status.as_ref().and_then(|s| s.id.clone()).expect("id");
    let first = secret_id(&env, "rotating").await;

    // Scheduled rotation, with no moment where the Secret holds a dead credential.
    let seen =
        watch_secret_stays_valid(&env, &operator, "rotating-databricks", Duration::from_secs(16)).await;
    assert!(seen.len() >= 2, "rotated at renewTime: {} values seen", seen.len());
    assert_ne!(secret_id(&env, "rotating").await, first);
    // The old secret is deleted after the grace period; at most 5 ever exist.
    wait_for(READY, || async {
        let live = operator.admin.list_secrets(&id).await.ok()?;
        (!live.iter().any(|s| s.id == first)).then_some(())
    })
    .await
    .expect("old secret retired");

    // Manual rotation through the annotation.
    let before = secret_id(&env, "rotating").await;
    env.patch_principal(
        "rotating",
        json!({"metadata": {"annotations": {"oauth.databricks-operator.io/rotate": "now-1"}}}),
    )
    .await;
    wait_for(READY, || async { (secret_id(&env, "rotating").await != before).then_some(()) })
        .await
        .expect("manual rotation");

    // A Secret edited by hand is repaired with a new secret.
    let before = secret_id(&env, "rotating").await;
    let tampered: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({
        "metadata": {"name": "rotating-databricks"},
        "stringData": {"DATABRICKS_CLIENT_SECRET": "edited-by-hand"},
    }))
    .expect("secret");
    env.secrets()
        .patch("rotating-databricks", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&tampered))
        .await
        .expect("tamper");
    wait_for(READY, || async {
        let data = env.secret_data("rotating-databricks").await?;
        (data["DATABRICKS_CLIENT_SECRET"] != "edited-by-hand" && secret_id(&env, "rotating").await != before)
            .then_some(())
    })
    .await
    .expect("repaired");
    // A deleted Secret is recreated.
    env.secrets().delete("rotating-databricks", &Default::default()).await.expect("delete");
    wait_for(READY, || async { env.secret_data("rotating-databricks").await.map(drop) })
        .await
        .expect("recreated");
    let data = env.secret_data("rotating-databricks").await.expect("data");
    assert!(operator.works(&data["DATABRICKS_CLIENT_ID"], &data["DATABRICKS_CLIENT_SECRET"]).await);

    // Drift made in Databricks is reverted on the resync interval.
    operator
        .admin
        .patch_service_principal(
            &id,
            &[databricks_oauth_operator::databricks::types::PatchOperation::replace(
                "displayName",
                "renamed in the UI",
            )],
        )
        .await
        .expect("drift");
    wait_for(READY, || async {
        (operator.admin.get_service_principal(&id).await.ok()?.display_name == "rotating").then_some(())
    })
    .await
    .expect("drift reverted");
    let live = operator.admin.list_secrets(&id).await.expect("secrets");
    assert!(live.len() <= 5, "{} secrets", live.len());
}

async fn live_secret_ids(operator: &support::operator::Operator, id: &str) -> Vec<String> {
    operator.admin.list_secrets(id).await.expect("secrets").into_iter().map(|s| s.id).collect()
}

/// Exactly one principal carries this object's UID, and only the published secret is live; returns the Secret.
async fn assert_one_principal_one_secret(
    env: &TestEnv,
    operator: &support::operator::Operator,
    sp: &databricks_oauth_operator::crd::ServicePrincipal,
    name: &str,
) -> std::collections::BTreeMap<String, String> {
    assert_eq!(operator.tagged(sp).await, 1, "{name}: exactly one principal");
    let status = sp.status.clone().expect("status");
    let id = status.id.expect("id");
    let published = status.credentials.and_then(|c| c.secret_id).expect("published");
    wait_for(READY, || async {
        (live_secret_ids(operator, &id).await == vec![published.clone()]).then_some(())
    })
    .await
    .unwrap_or_else(|_| panic!("{name}: only the published secret remains"));
    env.secret_data(&format!("{name}-databricks")).await.expect("secret")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_reconcile_leaves_no_duplicate_and_no_orphaned_secret() {
    use databricks_emulator::FaultRule;
    let env = TestEnv::new().await;
    let operator =
        env.operator(OperatorOptions { grace: Duration::from_secs(1), ..Default::default() }).await;
    let cases: Vec<(&str, Option<&'static str>, Option<FaultRule>)> = vec![
        ("crash-after-create-principal", Some("after-create-principal"), None),
        ("crash-after-create-secret", Some("after-create-secret"), None),
        ("crash-after-write-secret", Some("after-write-secret"), None),
        ("lost-principal-answer", None, Some(FaultRule::drop_response("scim.sp.create").times(1))),
        ("lost-secret-answer", None, Some(FaultRule::drop_response("secrets.create").times(1))),
    ];
    for (name, fail_point, fault) in cases {
        if let Some(point) = fail_point {
            operator.ctx.fail_points.arm(point);
        }
        if let Some(fault) = fault {
            operator.emulator.add_fault(fault).await;
        }
        env.create_principal(&operator, name, json!({"credentials": {}})).await;
        let ready = env.wait_condition(name, "Ready", "True", READY).await;
        if let Some(point) = fail_point {
            assert!(!operator.ctx.fail_points.armed(point), "{name}: the fail point fired");
        }
        operator.emulator.clear_faults().await;
        let data = assert_one_principal_one_secret(&env, &operator, &ready, name).await;
        assert!(
            operator.works(&data["DATABRICKS_CLIENT_ID"], &data["DATABRICKS_CLIENT_SECRET"]).await,
            "{name}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_the_operator_does_not_own_is_never_overwritten() {
    let env = TestEnv::new().await;
    let operator = env.operator(OperatorOptions::default()).await;
    let foreign: k8s_openapi::api::core::v1::Secret =
        serde_json::from_value(json!({"metadata": {"name": "taken"}, "stringData": {"mine": "keep me"}}))
            .expect("secret");
    env.secrets().create(&kube::api::PostParams::default(), &foreign).await.expect("foreign secret");
    env.create_principal(&operator, "conflicting", json!({"credentials": {"secretName": "taken"}})).await;
    let sp = env.wait_condition("conflicting", "CredentialsReady", "False", READY).await;
    let condition = sp
        .status
        .as_ref()
        .expect("status")
        .conditions
        .iter()
        .find(|c| c.type_ == "CredentialsReady")
        .expect("c")
        .clone();
    assert_eq!(condition.reason, "SecretConflict");
    assert!(condition.message.contains("never overwrites a Secret it does not own"), "{}", condition.message);
    let ready = sp
        .status
        .as_ref()
        .expect("status")
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .expect("ready")
        .clone();
    assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "SecretConflict"));
    let data = env.secret_data("taken").await.expect("data");
    assert_eq!(data.get("mine").map(String::as_str), Some("keep me"));
    assert_eq!(data.len(), 1, "untouched");
    let id = sp.status.and_then(|s| s.id).expect("principal exists");
    assert!(live_secret_ids(&operator, &id).await.is_empty(), "nothing was minted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disallowed_namespaces_and_paused_objects_make_no_databricks_writes() {
    let env = TestEnv::new().await;
    let operator = env
        .operator(OperatorOptions {
            allowed_namespaces: Some(json!({"names": ["somewhere-else"]})),
            ..Default::default()
        })
        .await;
    env.create_principal(&operator, "refused", json!({"credentials": {}})).await;
    let sp = env.wait_condition("refused", "Ready", "False", READY).await;
    let ready =
        sp.status.expect("status").conditions.into_iter().find(|c| c.type_ == "Ready").expect("ready");
    assert_eq!(ready.reason, "NamespaceNotAllowed");
    assert!(ready.message.contains("allowedNamespaces"), "{}", ready.message);
    assert_eq!(operator.emulator.stats().await.writes, 0, "no Databricks call for a refused namespace");

    // Allow it by label; a paused object still makes no write until the annotation goes.
    env.patch_principal(
        "refused",
        json!({"metadata": {"annotations": {"oauth.databricks-operator.io/paused": "true"}}}),
    )
    .await;
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(env.client.clone());
    namespaces
        .patch(
            &env.namespace,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"metadata": {"labels": {"databricks": "yes"}}})),
        )
        .await
        .expect("label");
    let accounts: Api<DatabricksAccount> = Api::all(env.client.clone());
    accounts
        .patch(
            &operator.account,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(
                json!({"spec": {"allowedNamespaces": {"selector": {"matchLabels": {"databricks": "yes"}}}}}),
            ),
        )
        .await
        .expect("allow by selector");
    env.patch_principal(
        "refused",
        json!({"metadata": {"annotations": {"oauth.databricks-operator.io/paused": "true"}}}),
    )
    .await;
    let sp = env.wait_condition("refused", "Ready", "False", READY).await;
    let paused = wait_for(READY, || async {
        let sp = env.principals().get("refused").await.ok()?;
        sp.status?.conditions.into_iter().find(|c| c.type_ == "Ready" && c.reason == "Paused")
    })
    .await
    .expect("paused");
    assert!(paused.message.contains("paused"), "{}", paused.message);
    drop(sp);
    assert_eq!(operator.emulator.stats().await.writes, 0, "paused: still no write");
    env.patch_principal(
        "refused",
        json!({"metadata": {"annotations": {"oauth.databricks-operator.io/paused": null}}}),
    )
    .await;
    env.wait_condition("refused", "Ready", "True", READY).await;
}

/// Everything the operator logs in this test binary (to prove no secret value is ever logged).
fn captured_logs() -> &'static std::sync::Arc<std::sync::Mutex<Vec<u8>>> {
    static LOGS: std::sync::OnceLock<std::sync::Arc<std::sync::Mutex<Vec<u8>>>> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "debug,hyper=info,h2=info,tower=info,rustls=info",
            ))
            .with_writer(move || LogWriter(writer.clone()))
            .finish();
        let _ = tracing::subscriber::set_global_default(subscriber);
        buffer
    })
}

struct LogWriter(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut logs) = self.0.lock() {
            logs.extend_from_slice(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_principals_converge_under_faults_without_duplicates_orphans_or_leaks() {
    use databricks_emulator::FaultRule;
    let logs = captured_logs();
    let env = TestEnv::new().await;
    let operator =
        env.operator(OperatorOptions { grace: Duration::from_secs(1), ..Default::default() }).await;
    let faults = [
        FaultRule { skip: 3, ..FaultRule::status("scim.sp.create", 429).retry_after("1").times(4) },
        FaultRule { skip: 10, empty_body: true, ..FaultRule::status("scim.sp.list", 429).times(3) },
        FaultRule { skip: 5, ..FaultRule::status("secrets.create", 503).times(4) },
        FaultRule { skip: 12, ..FaultRule::drop_response("scim.sp.create").times(3) },
        FaultRule { skip: 7, ..FaultRule::drop_response("secrets.create").times(3) },
        FaultRule { skip: 2, ..FaultRule::status("assignments.put", 500).times(3) },
        FaultRule { skip: 20, ..FaultRule::status("oidc.token", 503).times(2) },
    ];
    for fault in faults {
        operator.emulator.add_fault(fault).await;
    }
    let names: Vec<String> = (0..50).map(|i| format!("batch-{i:02}")).collect();
    for name in &names {
        env.create_principal(
            &operator,
            name,
            json!({
                "workspaceAssignments": [{"workspaceId": WORKSPACES[0], "permissions": ["USER"]}],
                "credentials": {},
            }),
        )
        .await;
    }
    // A confidential app connection alongside: its client secret is as sacred as a principal's.
    let apps: Api<databricks_oauth_operator::crd::DatabricksAppConnection> =
        Api::namespaced(env.client.clone(), &env.namespace);
    let app = serde_json::from_value(json!({"metadata": {"name": "leak-check"}, "spec": {
        "accountRef": {"name": operator.account}, "redirectUrls": ["https://leak.example.com/cb"],
        "confidential": true}}))
    .expect("app");
    apps.create(&Default::default(), &app).await.expect("app");
    for name in &names {
        env.wait_condition(name, "Ready", "True", Duration::from_secs(240)).await;
    }
    let app_secret = wait_for(Duration::from_secs(120), || async {
        env.secret_data("leak-check-oauth-client").await?.get("DATABRICKS_CLIENT_SECRET").cloned()
    })
    .await
    .expect("the app connection's client secret is published");
    let stats = operator.emulator.stats().await;
    eprintln!(
        "50 principals under faults: {} Databricks requests ({} reads, {} writes, {} throttled)",
        stats.requests, stats.reads, stats.writes, stats.throttled
    );
    assert!(
        stats.with_status(429) + stats.with_status(503) + stats.with_status(500) > 0,
        "faults were injected: {stats:?}"
    );
    // Without faults a new principal costs about a dozen calls; a retry storm would be far above this.
    assert!(stats.requests < 50 * 25, "{} requests for 50 principals: {stats:?}", stats.requests);

    let mut values = Vec::new();
    for name in &names {
        let sp = env.principals().get(name).await.expect("sp");
        let data = assert_one_principal_one_secret(&env, &operator, &sp, name).await;
        values.push(data["DATABRICKS_CLIENT_SECRET"].clone());
    }
    let summary = operator.emulator.summary().await;
    assert_eq!(summary["principals"].as_array().map(Vec::len), Some(51), "the admin and 50, no duplicates");

    // No secret value in logs, events or status.
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(env.client.clone(), &env.namespace);
    let events = serde_json::to_string(&events.list(&ListParams::default()).await.expect("events").items)
        .expect("json");
    let statuses = serde_json::to_string(
        &env.principals()
            .list(&ListParams::default())
            .await
            .expect("list")
            .items
            .iter()
            .map(|s| s.status.clone())
            .collect::<Vec<_>>(),
    )
    .expect("json");
    let logs = String::from_utf8_lossy(&logs.lock().expect("logs")).into_owned();
    assert!(logs.len() > 1000, "logs were captured ({} bytes)", logs.len());
    let app_status = serde_json::to_string(&apps.get("leak-check").await.expect("app").status).expect("json");
    assert!(!app_status.contains(app_secret.as_str()), "the app's client secret is in its status");
    values.push(app_secret);
    for value in values.iter().chain([&support::operator::ADMIN_SECRET.to_owned()]) {
        assert!(!logs.contains(value.as_str()), "a secret value was logged");
        assert!(!events.contains(value.as_str()), "a secret value is in an event");
        assert!(!statuses.contains(value.as_str()), "a secret value is in a status");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adoption_remote_deletion_and_account_errors() {
    use databricks_oauth_operator::databricks::types::NewServicePrincipal;
    let env = TestEnv::new().await;
    let operator = env.operator(OperatorOptions::default()).await;

    // Adopt an existing principal; by default it is left in place when the object goes.
    let existing = operator
        .admin
        .create_service_principal(&NewServicePrincipal::new("made by hand", true, None))
        .await
        .expect("sp");
    env.create_principal(
        &operator,
        "adopted",
        json!({"adopt": {"applicationId": existing.application_id}, "displayName": "made by hand"}),
    )
    .await;
    let sp = env.wait_condition("adopted", "Ready", "True", READY).await;
    assert_eq!(sp.status.as_ref().and_then(|s| s.id.clone()), Some(existing.id.clone()));
    env.delete_principal("adopted").await;
    env.wait_gone("adopted", READY).await;
    assert!(
        operator.admin.get_service_principal(&existing.id).await.is_ok(),
        "adopted principals are orphaned by default"
    );

    // A principal deleted by hand in Databricks is recreated, with a working secret.
    env.create_principal(&operator, "recreated", json!({"credentials": {}})).await;
    let sp = env.wait_condition("recreated", "Ready", "True", READY).await;
    let first = sp.status.as_ref().and_then(|s| s.id.clone()).expect("id");
    operator.admin.delete_service_principal(&first).await.expect("delete by hand");
    env.patch_principal(
        "recreated",
        json!({"metadata": {"annotations": {"oauth.databricks-operator.io/reconcile": "1"}}}),
    )
    .await;
    let recreated = wait_for(READY, || async {
        let sp = env.principals().get("recreated").await.ok()?;
        let id = sp.status.as_ref()?.id.clone()?;
        let ready = sp.status.as_ref()?.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True");
        (id != first && ready).then_some(sp)
    })
    .await
    .expect("recreated");
    assert_eq!(operator.tagged(&recreated).await, 1);
    let data = env.secret_data("recreated-databricks").await.expect("data");
    assert!(operator.works(&data["DATABRICKS_CLIENT_ID"], &data["DATABRICKS_CLIENT_SECRET"]).await);

    // Wrong account credentials: an actionable message on the account and on its principals.
    let wrong: k8s_openapi::api::core::v1::Secret =
        serde_json::from_value(json!({"stringData": {"DATABRICKS_CLIENT_SECRET": "wrong"}})).expect("secret");
    let (credentials_namespace, credentials) = &operator.credentials;
    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(env.client.clone(), credentials_namespace)
        .patch(credentials, &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&wrong))
        .await
        .expect("break credentials");
    let accounts: Api<DatabricksAccount> = Api::all(env.client.clone());
    accounts
        .patch(
            &operator.account,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"metadata": {"annotations": {"touch": "1"}}})),
        )
        .await
        .expect("touch");
    let condition = operator.wait_account(&env, "False").await;
    assert_eq!(condition.reason, "AuthenticationFailed");
    assert!(condition.message.contains("Check the client id and secret"), "{}", condition.message);
    assert!(!condition.message.contains("wrong"), "no secret in the message");
    env.create_principal(&operator, "blocked", json!({})).await;
    let sp = env.wait_condition("blocked", "Ready", "False", READY).await;
    let ready =
        sp.status.expect("status").conditions.into_iter().find(|c| c.type_ == "Ready").expect("ready");
    assert_eq!(ready.reason, "DatabricksAuthenticationFailed");
    assert!(ready.message.contains("invalid_client"), "{}", ready.message);
}

/// The call budget `make bench` reports, held as a test: a new principal costs the five calls it cannot do
/// without (search by tag, create, assign, mint, verify), and an event that changes nothing the owner controls
/// costs none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_principal_costs_five_calls_and_unrelated_events_none() {
    // A control plane of its own: DatabricksAccounts are cluster-wide, so the operators of concurrent tests on
    // the shared plane would verify this test's account too, and every call to its emulator is counted here.
    let plane = ControlPlane::start().await.expect("a control plane of its own");
    plane.install_crds(&databricks_oauth_operator::crd::all()).await.expect("crds");
    let env = TestEnv::on(&plane).await;
    let operator = env.operator(OperatorOptions::default()).await;
    operator.wait_account(&env, "True").await;
    operator.emulator.reset_stats().await;
    env.create_principal(
        &operator,
        "lean",
        json!({"workspaceAssignments": [{"workspaceId": WORKSPACES[0], "permissions": ["USER"]}],
               "credentials": {"lifetime": "24h"}}),
    )
    .await;
    env.wait_condition("lean", "Ready", "True", READY).await;
    let created = operator.emulator.stats().await;
    let calls: Vec<(&str, u64)> = created.operations.iter().map(|(op, s)| (op.as_str(), s.count)).collect();
    assert_eq!(
        calls,
        [
            ("assignments.put", 1),
            ("oidc.token", 1),
            ("scim.sp.create", 1),
            ("scim.sp.list", 1),
            ("secrets.create", 1)
        ],
        "{created:?}"
    );

    // A label is not the operator's business: it wakes no pass. Changing the spec is: one full pass reads the
    // principal back and converges it. The rename comes after the label in the same watch, so once it is done the
    // label was seen too, and every call since the principal was Ready is the rename's.
    env.patch_principal("lean", json!({"metadata": {"labels": {"team": "data"}}})).await;
    env.patch_principal("lean", json!({"spec": {"displayName": "lean (renamed)"}})).await;
    let found = wait_for(READY, || {
        let admin = operator.admin.clone();
        async move {
            let all = admin.list_service_principals(None).await.ok()?;
            all.into_iter().find(|p| p.display_name == "lean (renamed)")
        }
    })
    .await
    .expect("renamed in Databricks");
    assert!(found.external_id.is_some());
    let generation = env.principals().get("lean").await.expect("sp").metadata.generation;
    wait_for(READY, || async {
        let sp = env.principals().get("lean").await.ok()?;
        (sp.status?.observed_generation == generation).then_some(())
    })
    .await
    .expect("the rename's pass finished");
    let after = operator.emulator.stats().await;
    let since = |op: &str| after.count(op) - created.count(op);
    // The admin's own look-up above is the only list; the pass reads the principal once and patches it once.
    assert_eq!((since("scim.sp.get"), since("scim.sp.patch")), (1, 1), "{after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_secret_waits_for_the_rollout_of_the_named_consumers() {
    use k8s_openapi::api::apps::v1::Deployment;
    use kube::api::{Patch, PatchParams, PostParams};
    let env = TestEnv::new().await;
    let operator =
        env.operator(OperatorOptions { grace: Duration::from_secs(1), ..Default::default() }).await;
    // A consumer of the Secret (no nodes here: the test plays the Deployment controller by writing its status).
    let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), &env.namespace);
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "api"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "api"}}, "template": {
            "metadata": {"labels": {"app": "api"}},
            "spec": {"containers": [{"name": "api", "image": "api", "envFrom": [{"secretRef": {"name": "rolled-databricks"}}]}]}}},
    }))
    .expect("deployment");
    deployments.create(&PostParams::default(), &deployment).await.expect("deployment");
    let rolled_for = || async {
        let template = deployments.get("api").await.expect("deployment").spec.template;
        let annotations = template.metadata.and_then(|m| m.annotations).unwrap_or_default();
        annotations
            .keys()
            .find(|k| k.starts_with(databricks_oauth_operator::controllers::rollout::ANNOTATION_PREFIX))
            .and_then(|k| annotations.get(k))
            .cloned()
    };
    let finish_rollout = || async {
        let generation = deployments.get("api").await.expect("deployment").metadata.generation;
        let status = json!({"status": {"observedGeneration": generation, "replicas": 1, "updatedReplicas": 1,
            "readyReplicas": 1, "availableReplicas": 1}});
        deployments
            .patch_status("api", &PatchParams::default(), &Patch::Merge(&status))
            .await
            .expect("status");
    };

    env.create_principal(
        &operator,
        "rolled",
        json!({"credentials": {"rolloutRestartTargets": [
        {"kind": "Deployment", "name": "api"}, {"kind": "StatefulSet", "name": "absent"}]}}),
    )
    .await;
    let sp = env.wait_condition("rolled", "Ready", "True", READY).await;
    let id = sp.status.as_ref().and_then(|s| s.id.clone()).expect("id");
    let first = secret_id(&env, "rolled").await;
    // The consumer is rolled onto the published secret; a target that does not exist holds nothing back.
    let rolled = wait_for(READY, || async { rolled_for().await.filter(|s| *s == first) }).await;
    assert!(rolled.is_ok(), "the consumer is rolled onto {first}: {:?}", rolled_for().await);
    let message = env.wait_condition("rolled", "CredentialsReady", "True", READY).await;
    let message =
        message.status.expect("status").conditions.into_iter().find(|c| c.type_ == "CredentialsReady");
    let message = message.map(|c| c.message).unwrap_or_default();
    assert!(message.contains("rollout targets not found: StatefulSet/absent"), "{message}");
    finish_rollout().await;

    // Rotate: the consumer is rolled onto the new secret, and the replaced one outlives its 1 s grace period
    // for as long as the rollout is going.
    env.patch_principal(
        "rolled",
        json!({"metadata": {"annotations": {"oauth.databricks-operator.io/rotate": "1"}}}),
    )
    .await;
    let second = wait_for(READY, || async {
        let id = env.principals().get("rolled").await.ok()?.status?.credentials?.secret_id?;
        (id != first).then_some(id)
    })
    .await
    .expect("a new secret is published");
    let rolled = wait_for(READY, || async { rolled_for().await.filter(|s| *s == second) }).await;
    assert!(rolled.is_ok(), "the consumer is rolled onto {second}");
    let delete_after = env
        .principals()
        .get("rolled")
        .await
        .expect("sp")
        .status
        .and_then(|s| s.credentials)
        .and_then(|c| c.retiring.first().map(|r| r.delete_after.0))
        .expect("the replaced secret is retiring");
    // A pass that listed the principal's secrets after the grace period ended, and still kept the old one.
    let after_grace = (delete_after.as_millisecond() as u64) + 1;
    let path = format!("servicePrincipals/{id}/credentials/secrets");
    wait_for(READY, || async {
        let log = operator.emulator.stats().await.log;
        log.iter()
            .any(|r| r.method == "GET" && r.target.contains(&path) && r.at_ms > after_grace + 1000)
            .then_some(())
    })
    .await
    .expect("the principal is looked at again while the rollout is going");
    // ...and not again at once: the passes that only wait for the rollout are seconds apart (no hot loop).
    let looks = || async {
        let log = operator.emulator.stats().await.log;
        let at: Vec<u64> = log
            .iter()
            .filter(|r| r.method == "GET" && r.target.contains(&path) && r.at_ms > after_grace)
            .map(|r| r.at_ms)
            .collect();
        at
    };
    let two = wait_for(READY, || async { Some(looks().await).filter(|at| at.len() >= 2) })
        .await
        .expect("looked at twice while the rollout is going");
    assert!(two[1] - two[0] >= 4000, "passes waiting for a rollout {} ms apart", two[1] - two[0]);
    let live = live_secret_ids(&operator, &id).await;
    assert!(live.contains(&first), "the replaced secret waits for the rollout: {live:?}");
    let sp = env.principals().get("rolled").await.expect("sp");
    let waiting = sp.status.expect("status").conditions.into_iter().find(|c| c.type_ == "CredentialsReady");
    let waiting = waiting.map(|c| c.message).unwrap_or_default();
    assert!(waiting.contains("waiting for the rollout of: Deployment/api"), "{waiting}");

    // The rollout finishes: the replaced secret goes.
    finish_rollout().await;
    wait_for(READY, || async {
        (live_secret_ids(&operator, &id).await == vec![second.clone()]).then_some(())
    })
    .await
    .expect("the replaced secret is deleted once the rollout finished");
    // The first publication rolled it once, the rotation once: never again for the same secret.
    let generation = deployments.get("api").await.expect("deployment").metadata.generation;
    assert_eq!(generation, Some(3), "rolled exactly twice");
}

/// `credentials.scopes`: the minted secret is bound to them (Databricks refuses more, and its tokens cannot reach
/// the account APIs), the Secret says which to ask for, and a change of scopes mints and rotates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scoped_secret_grants_only_its_scopes_and_a_change_of_scopes_rotates() {
    let env = TestEnv::new().await;
    let options = OperatorOptions {
        grace: Duration::from_secs(2),
        rotate_min_interval: Duration::from_secs(1),
        ..Default::default()
    };
    let operator = env.operator(options).await;
    env.create_principal(&operator, "bi-tool", json!({"credentials": {"scopes": ["sql"]}})).await;
    let sp = env.wait_condition("bi-tool", "Ready", "True", READY).await;
    let id = sp.status.as_ref().and_then(|s| s.id.clone()).expect("id");
    let creds = sp.status.as_ref().and_then(|s| s.credentials.clone()).expect("credentials");
    assert_eq!(creds.scopes, vec!["sql".to_owned()]);
    let data = env.secret_data("bi-tool-databricks").await.expect("data");
    assert_eq!(data["DATABRICKS_SCOPES"], "sql");
    let (client_id, secret) = (&data["DATABRICKS_CLIENT_ID"], &data["DATABRICKS_CLIENT_SECRET"]);
    let listed = operator.admin.list_secrets(&id).await.expect("secrets");
    assert_eq!(
        listed.iter().find(|s| Some(&s.id) == creds.secret_id.as_ref()).and_then(|s| s.scopes.clone()),
        Some(vec!["sql".to_owned()])
    );

    // A token within the scopes is minted; a request for all-apis is refused; the sql token cannot use SCIM.
    let sql = ["sql".to_owned()];
    let token = operator.admin.verify_scoped_credentials(client_id, secret, &sql).await.expect("sql token");
    let refused = operator.admin.verify_client_credentials(client_id, secret).await.expect_err("all-apis");
    assert!(refused.to_string().contains("access_denied"), "{refused}");
    let scim = format!(
        "{}/api/2.0/accounts/{}/scim/v2/ServicePrincipals",
        operator.emulator.url(),
        support::operator::ACCOUNT_ID
    );
    let answer =
        reqwest::Client::new().get(scim).bearer_auth(token.expose_access_token()).send().await.expect("scim");
    assert_eq!(answer.status(), 403);
    assert!(answer.text().await.unwrap_or_default().contains("required scopes"));

    // Unrestricted again: a new secret is minted and published, the scoped one retired after the grace.
    let first = creds.secret_id.clone().expect("secret id");
    env.patch_principal("bi-tool", json!({"spec": {"credentials": {"scopes": null}}})).await;
    wait_for(READY, || async { (secret_id(&env, "bi-tool").await != first).then_some(()) })
        .await
        .expect("a change of scopes mints a new secret");
    let data = env.secret_data("bi-tool-databricks").await.expect("data");
    assert!(!data.contains_key("DATABRICKS_SCOPES"));
    assert!(operator.works(&data["DATABRICKS_CLIENT_ID"], &data["DATABRICKS_CLIENT_SECRET"]).await);
    wait_for(READY, || async { (!live_secret_ids(&operator, &id).await.contains(&first)).then_some(()) })
        .await
        .expect("the scoped secret is retired");
    let sp = env.principals().get("bi-tool").await.expect("sp");
    assert!(sp.status.and_then(|s| s.credentials).is_some_and(|c| c.scopes.is_empty()));
}
