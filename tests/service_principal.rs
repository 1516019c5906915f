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
    let accounts: Api<DatabricksAccount> = Api::all(env.client.clone());
    let account = wait_for(READY, || {
        let accounts = accounts.clone();
        let name = operator.account.clone();
        async move {
            let a = accounts.get(&name).await.ok()?;
            a.status.clone()?.conditions.into_iter().find(|c| c.type_ == "Ready" && c.status == "True")
        }
    })
    .await
    .expect("account Ready");
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
