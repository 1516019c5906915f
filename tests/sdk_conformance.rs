//! The emulator, checked against the official Databricks SDKs for Python and Go: `AccountClient` with OAuth M2M
//! runs every account operation the operator uses and reads back what it wrote; a principal's new secret works
//! with the SDK and stops working once deleted. The Python SDK is installed (once, cached) into a virtualenv; the
//! Go program (hack/go/conformance) is built once per change into the cache (hack/build-go-clients.sh).

mod support;

use std::{net::SocketAddr, path::PathBuf};

use databricks_emulator::{Emulator, EmulatorConfig};
use databricks_oauth_operator::databricks::{AccountClient, ClientOptions, Credentials};
use serde_json::{Value, json};
use support::clients;

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
    assert!(stdout.contains("ok - a scoped secret is listed with its scopes"), "{stdout}");
    assert!(stdout.contains("ok - a token of the secret's scopes cannot use the account APIs"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_go_sdk_runs_every_operation_against_the_emulator() {
    let dir = clients::built("sdk");
    let (emulator, _) = emulator().await;
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

/// An emulator with one workspace and the account admin's sign-in.
async fn emulator() -> (Emulator, clients::Account) {
    let mut config = EmulatorConfig::new(ACCOUNT_ID, "emulator-admin", "admin-secret-value");
    config.workspaces = vec![WORKSPACE_ID];
    let emulator = Emulator::start(config, SocketAddr::from(([127, 0, 0, 1], 0))).await.expect("emulator");
    let account = clients::Account {
        host: emulator.url(),
        account_id: ACCOUNT_ID.to_owned(),
        client_id: "emulator-admin".to_owned(),
        client_secret: "admin-secret-value".to_owned(),
    };
    (emulator, account)
}

fn str_at<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value.pointer(pointer).and_then(Value::as_str).unwrap_or_default()
}

/// Counts the checks a conformance run makes; each one fails the test at once.
#[derive(Default)]
struct Checks(usize);

impl Checks {
    fn check(&mut self, ok: bool, what: &str) {
        assert!(ok, "{what}");
        self.0 += 1;
    }
}

/// Every account operation the operator uses, through `databricks account ...` commands, each checked by reading
/// back what it wrote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_databricks_cli_runs_every_operation_against_the_emulator() {
    let (emulator, admin) = emulator().await;
    let cli = clients::Cli::new();
    let mut c = Checks::default();
    let ws = WORKSPACE_ID.to_string();

    // Service principals (SCIM).
    let sp = cli
        .ok(&admin, &["service-principals", "create", "--display-name", "cli-sp", "--external-id", "uid-cli"])
        .await;
    let (sp_id, app_id) = (str_at(&sp, "/id").to_owned(), str_at(&sp, "/applicationId").to_owned());
    c.check(
        !sp_id.is_empty() && !app_id.is_empty() && sp["active"] == true,
        "create returns an active principal",
    );
    let sp_number: i64 = sp_id.parse().expect("principal ids are int64s");
    let got = cli.ok(&admin, &["service-principals", "get", &sp_id]).await;
    c.check(
        got["displayName"] == "cli-sp" && got["externalId"] == "uid-cli",
        "get reads back what was created",
    );
    let named =
        cli.ok(&admin, &["service-principals", "list", "--filter", r#"displayName eq "cli-sp""#]).await;
    c.check(named.as_array().is_some_and(|l| l.len() == 1 && l[0]["id"] == sp_id.as_str()), "list by filter");
    let deactivate = r#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations":[{"op":"replace","path":"active","value":false}]}"#;
    cli.ok(&admin, &["service-principals", "patch", &sp_id, "--json", deactivate]).await;
    let got = cli.ok(&admin, &["service-principals", "get", &sp_id]).await;
    c.check(got["active"] == false, "patch active=false deactivates");
    let replace = r#"{"displayName":"cli-sp-renamed","externalId":"uid-cli","active":true}"#;
    cli.ok(&admin, &["service-principals", "update", &sp_id, "--json", replace]).await;
    let got = cli.ok(&admin, &["service-principals", "get", &sp_id]).await;
    c.check(
        got["displayName"] == "cli-sp-renamed" && got["active"] == true,
        "update (PUT) replaces the principal",
    );

    // OAuth secrets.
    let secret =
        cli.ok(&admin, &["service-principal-secrets", "create", &sp_id, "--lifetime", "3600s"]).await;
    let (secret_id, value) = (str_at(&secret, "/id").to_owned(), str_at(&secret, "/secret").to_owned());
    c.check(
        !secret_id.is_empty() && !value.is_empty() && !str_at(&secret, "/expire_time").is_empty(),
        "create secret shows the value once, with its expiry",
    );
    let listed = cli.ok(&admin, &["service-principal-secrets", "list", &sp_id]).await;
    c.check(
        listed.as_array().is_some_and(|l| {
            l.len() == 1 && l[0]["id"] == secret_id.as_str() && l[0].get("secret").is_none()
        }),
        "list secrets: the id, never the value",
    );
    let as_sp = admin.as_principal(&app_id, &value);
    let denied =
        cli.account(&as_sp, &["service-principals", "list"]).await.expect_err("not an account admin");
    c.check(denied.contains("account admin"), "the new secret signs the CLI in (then: not an account admin)");

    // Workspace assignments.
    let assigned = || async {
        let listed = cli.ok(&admin, &["workspace-assignment", "list", &ws]).await;
        let mine =
            listed.as_array().into_iter().flatten().filter(|a| a["principal"]["principal_id"] == sp_number);
        mine.map(|a| a["permissions"].to_string()).collect::<Vec<_>>()
    };
    cli.ok(&admin, &["workspace-assignment", "update", &ws, &sp_id, "--json", r#"{"permissions":["USER"]}"#])
        .await;
    c.check(assigned().await == [r#"["USER"]"#], "assign USER and list it");
    cli.ok(
        &admin,
        &["workspace-assignment", "update", &ws, &sp_id, "--json", r#"{"permissions":["ADMIN"]}"#],
    )
    .await;
    c.check(assigned().await == [r#"["ADMIN"]"#], "upsert to ADMIN");
    cli.ok(&admin, &["workspace-assignment", "delete", &ws, &sp_id]).await;
    c.check(assigned().await.is_empty(), "delete assignment");

    // A principal's federation policy.
    let oidc = r#"{"oidc_policy":{"issuer":"https://token.actions.githubusercontent.com","audiences":["cli-aud"],
        "subject":"repo:org/repo:ref:refs/heads/main"}}"#;
    let policy = "service-principal-federation-policy";
    let made = cli.ok(&admin, &[policy, "create", &sp_id, "--policy-id", "cli-policy", "--json", oidc]).await;
    c.check(
        made["policy_id"] == "cli-policy"
            && made["service_principal_id"] == sp_number
            && !str_at(&made, "/uid").is_empty(),
        "create a principal's federation policy",
    );
    let description = r#"{"description":"changed"}"#;
    cli.ok(
        &admin,
        &[policy, "update", &sp_id, "cli-policy", "--update-mask", "description", "--json", description],
    )
    .await;
    let fetched = cli.ok(&admin, &[policy, "get", &sp_id, "cli-policy"]).await;
    c.check(
        fetched["description"] == "changed"
            && str_at(&fetched, "/oidc_policy/subject") == "repo:org/repo:ref:refs/heads/main",
        "update_mask changes only the named field",
    );
    c.check(
        cli.ok(&admin, &[policy, "list", &sp_id]).await.as_array().is_some_and(|l| l.len() == 1),
        "list policies",
    );
    cli.ok(&admin, &[policy, "delete", &sp_id, "cli-policy"]).await;
    let gone = cli.account(&admin, &[policy, "get", &sp_id, "cli-policy"]).await;
    c.check(gone.is_err_and(|e| e.contains("does not exist")), "a deleted policy is gone");

    // The account's federation policy.
    let account_oidc = r#"{"oidc_policy":{"issuer":"https://idp.example.com","audiences":["cli-aud"],"subject_claim":"sub"}}"#;
    let made = cli
        .ok(&admin, &["federation-policy", "create", "--policy-id", "cli-account", "--json", account_oidc])
        .await;
    c.check(
        made["policy_id"] == "cli-account" && str_at(&made, "/oidc_policy/subject_claim") == "sub",
        "create an account federation policy",
    );
    cli.ok(
        &admin,
        &[
            "federation-policy",
            "update",
            "cli-account",
            "--update-mask",
            "description",
            "--json",
            description,
        ],
    )
    .await;
    let fetched = cli.ok(&admin, &["federation-policy", "get", "cli-account"]).await;
    c.check(fetched["description"] == "changed", "update an account federation policy");
    let listed = cli.ok(&admin, &["federation-policy", "list"]).await;
    c.check(listed.as_array().is_some_and(|l| l.len() == 1), "list account federation policies");
    cli.ok(&admin, &["federation-policy", "delete", "cli-account"]).await;
    let listed = cli.ok(&admin, &["federation-policy", "list"]).await;
    c.check(listed.as_array().is_none_or(Vec::is_empty), "delete an account federation policy");

    // Custom OAuth app integrations.
    let apps = "custom-app-integration";
    let confidential = r#"{"name":"cli-app","redirect_urls":["https://app.example.com/cb"],"confidential":true,
        "scopes":["all-apis"],"token_access_policy":{"access_token_ttl_in_minutes":30}}"#;
    let app = cli.ok(&admin, &[apps, "create", "--json", confidential]).await;
    let app_id = str_at(&app, "/integration_id").to_owned();
    c.check(
        !app_id.is_empty()
            && !str_at(&app, "/client_id").is_empty()
            && !str_at(&app, "/client_secret").is_empty(),
        "a confidential app shows its secret on create",
    );
    let read = cli.ok(&admin, &[apps, "get", &app_id]).await;
    c.check(
        read["name"] == "cli-app"
            && read["confidential"] == true
            && read["token_access_policy"]["access_token_ttl_in_minutes"] == 30
            && read.get("client_secret").is_none(),
        "get reads back the app, never its secret",
    );
    cli.ok(
        &admin,
        &[apps, "update", &app_id, "--json", r#"{"redirect_urls":["https://app.example.com/cb2"]}"#],
    )
    .await;
    let read = cli.ok(&admin, &[apps, "get", &app_id]).await;
    c.check(
        read["redirect_urls"] == json!(["https://app.example.com/cb2"]),
        "update replaces the redirect URLs",
    );
    let public = r#"{"name":"cli-public","redirect_urls":["http://localhost:8020"],"confidential":false}"#;
    let public = cli.ok(&admin, &[apps, "create", "--json", public]).await;
    c.check(
        public.get("client_secret").is_none() && !str_at(&public, "/client_id").is_empty(),
        "a public app has no secret",
    );
    c.check(cli.ok(&admin, &[apps, "list"]).await.as_array().is_some_and(|l| l.len() == 2), "list apps");
    cli.ok(&admin, &[apps, "delete", &app_id]).await;
    cli.ok(&admin, &[apps, "delete", str_at(&public, "/integration_id")]).await;
    let gone = cli.account(&admin, &[apps, "get", &app_id]).await;
    c.check(gone.is_err_and(|e| e.contains("does not exist")), "a deleted app is gone");

    // The secret's end, then the principal's.
    cli.ok(&admin, &["service-principal-secrets", "delete", &sp_id, &secret_id]).await;
    let listed = cli.ok(&admin, &["service-principal-secrets", "list", &sp_id]).await;
    c.check(listed.as_array().is_none_or(Vec::is_empty), "delete secret");
    let refused = cli.account(&as_sp, &["service-principals", "list"]).await.expect_err("a deleted secret");
    c.check(refused.contains("invalid_client"), &format!("a deleted secret no longer signs in: {refused}"));
    cli.ok(&admin, &["service-principals", "delete", &sp_id]).await;
    let gone = cli.account(&admin, &["service-principals", "get", &sp_id]).await;
    c.check(gone.is_err_and(|e| e.contains("not found")), "a deleted principal is gone");

    // The CLI learned the host type from /.well-known/databricks-config and cached it on disk.
    c.check(
        cli.cached_host_metadata().is_some_and(|m| m.contains("ACCOUNT_HOST")),
        "the CLI cached the emulator's host metadata (ACCOUNT_HOST)",
    );
    let stats = emulator.stats().await;
    assert!(
        stats.count("oidc.host_metadata") >= 1 && stats.count("oidc.token") >= 1,
        "the CLI discovered and signed in"
    );
    emulator.shutdown().await;
}

/// Everything the operator manages, as a Terraform user would write it.
const TERRAFORM_CONFIGURATION: &str = r#"
terraform {
  required_providers {
    databricks = { source = "databricks/databricks" }
  }
}
provider "databricks" {}

variable "name" { type = string }
variable "description" { type = string }
variable "redirect_url" { type = string }
variable "workspace_id" { type = number }
variable "account_id" { type = string }

resource "databricks_service_principal" "sp" {
  display_name = var.name
  external_id  = "uid-tf"
}
resource "databricks_service_principal_secret" "secret" {
  service_principal_id = databricks_service_principal.sp.id
  lifetime             = "3600s"
}
resource "databricks_mws_permission_assignment" "assignment" {
  workspace_id = var.workspace_id
  principal_id = databricks_service_principal.sp.id
  permissions  = ["USER"]
}
resource "databricks_service_principal_federation_policy" "policy" {
  service_principal_id = databricks_service_principal.sp.id
  policy_id            = "tf-policy"
  description          = var.description
  oidc_policy = {
    issuer    = "https://token.actions.githubusercontent.com"
    audiences = ["tf-aud"]
    subject   = "repo:org/repo:ref:refs/heads/main"
  }
}
resource "databricks_account_federation_policy" "account" {
  policy_id   = "tf-account"
  description = var.description
  oidc_policy = {
    issuer        = "https://idp.example.com"
    audiences     = ["tf-aud"]
    subject_claim = "sub"
  }
}
resource "databricks_custom_app_integration" "app" {
  name          = "tf-app"
  confidential  = true
  redirect_urls = [var.redirect_url]
  scopes        = ["all-apis"]
  token_access_policy {
    access_token_ttl_in_minutes = 30
  }
}

resource "databricks_group" "team" {
  display_name = "tf-team"
}
resource "databricks_group_member" "member" {
  group_id  = databricks_group.team.id
  member_id = databricks_service_principal.sp.id
}
resource "databricks_access_control_rule_set" "uses" {
  name = "accounts/${var.account_id}/servicePrincipals/${databricks_service_principal.sp.application_id}/ruleSets/default"
  grant_rules {
    principals = ["groups/${databricks_group.team.display_name}"]
    role       = "roles/servicePrincipal.user"
  }
}

output "application_id" { value = databricks_service_principal.sp.application_id }
output "secret" {
  value     = databricks_service_principal_secret.secret.secret
  sensitive = true
}
"#;

fn tf_vars(name: &str, description: &str, redirect_url: &str) -> Vec<String> {
    vec![
        format!("-var=name={name}"),
        format!("-var=description={description}"),
        format!("-var=redirect_url={redirect_url}"),
        format!("-var=workspace_id={WORKSPACE_ID}"),
        format!("-var=account_id={ACCOUNT_ID}"),
    ]
}

async fn terraform(tf: &clients::Terraform, command: &[&str], vars: &[String]) -> std::process::Output {
    let mut args: Vec<&str> = command.to_vec();
    args.extend(vars.iter().map(String::as_str));
    tf.run(&args).await
}

/// `terraform plan -detailed-exitcode`: 0 means no changes, 2 changes.
async fn plan_changes(tf: &clients::Terraform, vars: &[String]) -> bool {
    let plan = terraform(tf, &["plan", "-detailed-exitcode", "-no-color"], vars).await;
    match plan.status.code() {
        Some(0) => false,
        Some(2) => {
            eprintln!("{}", clients::printed(&plan));
            true
        }
        _ => panic!("terraform plan failed:\n{}", clients::printed(&plan)),
    }
}

/// Whether `terraform apply` reported changes made in place only: `Resources: 0 added, N changed, 0 destroyed.`
/// with N above 0.
fn updated_in_place(printed: &str) -> bool {
    let Some(summary) = printed.split("Resources: ").nth(1) else { return false };
    let counts: Vec<&str> = summary.split(['.', '\n']).next().unwrap_or_default().split(", ").collect();
    match counts.as_slice() {
        [added, changed, destroyed] => {
            *added == "0 added"
                && *destroyed == "0 destroyed"
                && changed.strip_suffix(" changed").and_then(|n| n.parse::<u32>().ok()).is_some_and(|n| n > 0)
        }
        _ => false,
    }
}

/// Whether the emulator issues a client-credentials token to this principal (the operator's own check).
async fn signs_in(host: &str, client_id: &str, client_secret: &str) -> bool {
    let admin = Credentials::ClientCredentials {
        client_id: "emulator-admin".into(),
        client_secret: "admin-secret-value".into(),
    };
    let client = AccountClient::new(host, ACCOUNT_ID, admin, ClientOptions::default()).expect("client");
    client.verify_client_credentials(client_id, client_secret).await.is_ok()
}

/// The Databricks Terraform provider's life cycle of everything the operator manages: apply, a re-plan with no
/// changes, an update in place, a re-plan, and destroy, which by the provider's account-level default deactivates
/// the principal rather than deleting it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terraform_applies_updates_and_destroys_against_the_emulator() {
    let (emulator, admin) = emulator().await;
    let tf = clients::Terraform::new(admin.clone());
    tf.configure(TERRAFORM_CONFIGURATION);
    let first = tf_vars("tf-sp", "first", "https://app.example.com/cb");

    let applied = terraform(&tf, &["apply", "-auto-approve", "-no-color"], &first).await;
    assert!(applied.status.success(), "terraform apply:\n{}", clients::printed(&applied));
    let summary = emulator.summary().await;
    let mine: Vec<&Value> = summary["principals"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["externalId"] == "uid-tf")
        .collect();
    assert_eq!(mine.len(), 1, "one principal: {summary}");
    let principal = mine[0];
    assert!(principal["displayName"] == "tf-sp" && principal["active"] == true, "{principal}");
    assert!(principal["secrets"] == 1 && principal["policies"] == 1, "{principal}");
    assert!(summary["apps"] == 1 && summary["account_policies"] == 1, "{summary}");
    assert_eq!(summary["assignments"][WORKSPACE_ID.to_string()], 1, "{summary}");
    assert_eq!(principal["groups"], json!(["tf-team"]), "databricks_group_member: {principal}");
    // databricks_access_control_rule_set owns the whole rule set: the creator's manager grant is gone.
    assert_eq!(principal["usedBy"], json!(["roles/servicePrincipal.user groups/tf-team"]), "{principal}");
    let output = |name: &'static str| {
        let tf = &tf;
        async move {
            let out = tf.run(&["output", "-raw", name]).await;
            assert!(out.status.success(), "terraform output {name}: {}", clients::printed(&out));
            String::from_utf8_lossy(&out.stdout).into_owned()
        }
    };
    let (application_id, secret) = (output("application_id").await, output("secret").await);
    assert_eq!(application_id, principal["applicationId"].as_str().unwrap_or_default());
    assert!(signs_in(&admin.host, &application_id, &secret).await, "the secret Terraform created signs in");

    assert!(
        !plan_changes(&tf, &first).await,
        "a re-plan after apply finds no changes (the emulator reads back what it stored)"
    );

    let second = tf_vars("tf-sp-renamed", "second", "https://app.example.com/cb2");
    let updated = terraform(&tf, &["apply", "-auto-approve", "-no-color"], &second).await;
    assert!(updated.status.success(), "terraform apply (update):\n{}", clients::printed(&updated));
    let printed = clients::printed(&updated);
    assert!(updated_in_place(&printed), "updated in place (nothing added or destroyed):\n{printed}");
    let summary = emulator.summary().await;
    let renamed =
        summary["principals"].as_array().into_iter().flatten().find(|p| p["externalId"] == "uid-tf");
    assert!(
        renamed.is_some_and(|p| p["displayName"] == "tf-sp-renamed" && p["id"] == principal["id"]),
        "{summary}"
    );
    assert!(!plan_changes(&tf, &second).await, "a re-plan after the update finds no changes");

    let destroyed = terraform(&tf, &["destroy", "-auto-approve", "-no-color"], &second).await;
    assert!(destroyed.status.success(), "terraform destroy:\n{}", clients::printed(&destroyed));
    let summary = emulator.summary().await;
    let left = summary["principals"].as_array().into_iter().flatten().find(|p| p["externalId"] == "uid-tf");
    assert!(
        left.is_some_and(|p| p["active"] == false && p["secrets"] == 0 && p["policies"] == 0),
        "destroy deactivates the principal (disable_as_user_deletion defaults to true at the account level) and \
         deletes its secret and policy: {summary}"
    );
    assert!(summary["apps"] == 0 && summary["account_policies"] == 0, "{summary}");
    assert!(summary["groups"] == 0 && left.is_some_and(|p| p["groups"] == json!([])), "{summary}");
    let assignments = summary["assignments"][WORKSPACE_ID.to_string()].as_u64().unwrap_or_default();
    assert_eq!(assignments, 0, "{summary}");
    assert!(
        !signs_in(&admin.host, &application_id, &secret).await,
        "the destroyed secret no longer signs in"
    );
    emulator.shutdown().await;
}
