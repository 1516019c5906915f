//! Terraform as the measured peer: the same principals as the operator's runs (each with an OAuth secret and a
//! USER assignment to the workspace), applied by Terraform with the Databricks provider (`hack/clients.env`) at
//! its default `-parallelism` against a fresh emulator, then a `terraform plan` with nothing to change: what
//! checking them costs Terraform, beside the operator's resync pass and restart.
//!
//! The provider limits itself to 15 requests/s unless `rate_limit` says otherwise, while the operator runs here
//! with a budget of 1,000/s: so Terraform runs with `rate_limit = 1000` at every size (the comparison), and with
//! its default at the smallest size (what an unconfigured provider does).

use std::{net::SocketAddr, time::Instant};

use databricks_emulator::{Emulator, EmulatorConfig};
use serde::Serialize;

use crate::{ACCOUNT_ID, ADMIN_ID, BoxError, WORKSPACE, clients, report::RunReport};

#[derive(Serialize, Clone)]
#[serde(rename_all = "camelCase")]
pub struct PeerReport {
    pub principals: usize,
    /// With `rate_limit = 1000`, the operator's budget here.
    pub terraform: TerraformRun,
    /// With the provider's default rate limit (15 requests/s), at the smallest size only.
    pub terraform_default_rate: Option<TerraformRun>,
    /// The operator's run of the same principals (`make bench`'s own row).
    pub operator: OperatorRun,
}

#[derive(Serialize, Clone)]
#[serde(rename_all = "camelCase")]
pub struct TerraformRun {
    /// The provider's `rate_limit` (requests/s); `None`: its default.
    pub rate_limit: Option<u32>,
    pub apply_seconds: f64,
    pub apply_requests: u64,
    pub plan_seconds: f64,
    pub plan_requests: u64,
}

#[derive(Serialize, Clone)]
#[serde(rename_all = "camelCase")]
pub struct OperatorRun {
    pub seconds_to_ready: f64,
    pub requests: u64,
    pub resync_pass_requests: u64,
    pub restart_seconds: f64,
    pub restart_requests: u64,
}

impl OperatorRun {
    pub fn of(run: &RunReport) -> Self {
        let n = run.objects as f64;
        Self {
            seconds_to_ready: run.seconds_to_ready,
            requests: ((run.databricks_reads_per_object + run.databricks_writes_per_object) * n).round()
                as u64,
            resync_pass_requests: (run.steady_requests_per_object_per_pass * n).round() as u64,
            restart_seconds: run.restart_seconds_to_reconciled,
            restart_requests: run.restart_databricks_reads + run.restart_databricks_writes,
        }
    }
}

/// The rate the operator may use in the bench's runs (its account's `rateLimit`), given to Terraform too.
pub const RATE_LIMIT: u32 = 1000;

fn configuration(principals: usize, rate_limit: Option<u32>) -> String {
    let rate_limit = rate_limit.map(|r| format!("rate_limit = {r}")).unwrap_or_default();
    format!(
        r#"terraform {{
  required_providers {{
    databricks = {{ source = "databricks/databricks" }}
  }}
}}
provider "databricks" {{ {rate_limit} }}

resource "databricks_service_principal" "sp" {{
  count        = {principals}
  display_name = format("tf-sp-%05d", count.index)
}}
resource "databricks_service_principal_secret" "secret" {{
  count                = {principals}
  service_principal_id = databricks_service_principal.sp[count.index].id
  lifetime             = "7776000s"
}}
resource "databricks_mws_permission_assignment" "assignment" {{
  count        = {principals}
  workspace_id = {WORKSPACE}
  principal_id = databricks_service_principal.sp[count.index].id
  permissions  = ["USER"]
}}
"#
    )
}

/// Terraform creates `principals` principals with a secret and an assignment each, then plans with nothing to do.
pub async fn run(principals: usize, rate_limit: Option<u32>) -> Result<TerraformRun, BoxError> {
    let secret = format!("bench-{}", rand::random::<u64>());
    let mut config = EmulatorConfig::new(ACCOUNT_ID, ADMIN_ID, &secret);
    config.workspaces = vec![WORKSPACE];
    let emulator = Emulator::start(config, SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let account = clients::Account {
        host: emulator.url(),
        account_id: ACCOUNT_ID.to_owned(),
        client_id: ADMIN_ID.to_owned(),
        client_secret: secret,
    };
    let tf = clients::Terraform::new(account);
    tf.configure(&configuration(principals, rate_limit));

    let start = Instant::now();
    let applied = tf.run(&["apply", "-auto-approve", "-no-color"]).await;
    let apply_seconds = start.elapsed().as_secs_f64();
    if !applied.status.success() {
        return Err(format!("terraform apply failed:\n{}", tail(&clients::printed(&applied))).into());
    }
    let apply = emulator.stats().await;
    let summary = emulator.summary().await;
    let created =
        summary["principals"].as_array().map_or(0, |p| p.iter().filter(|p| p["secrets"] == 1).count());
    if created != principals {
        return Err(
            format!("terraform apply left {created} principals with a secret, not {principals}").into()
        );
    }
    emulator.reset_stats().await;

    let start = Instant::now();
    let planned = tf.run(&["plan", "-detailed-exitcode", "-no-color"]).await;
    let plan_seconds = start.elapsed().as_secs_f64();
    if planned.status.code() != Some(0) {
        return Err(format!(
            "terraform plan found changes or failed:\n{}",
            tail(&clients::printed(&planned))
        )
        .into());
    }
    let plan = emulator.stats().await;
    emulator.shutdown().await;
    Ok(TerraformRun {
        rate_limit,
        apply_seconds,
        apply_requests: apply.requests,
        plan_seconds,
        plan_requests: plan.requests,
    })
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

fn terraform_row(n: usize, t: &TerraformRun) -> String {
    let per = |requests: u64| requests as f64 / n as f64;
    let label = match t.rate_limit {
        Some(rate) => format!("Terraform, `rate_limit = {rate}` (`apply`, then `plan`)"),
        None => "Terraform, provider defaults (15 requests/s)".to_owned(),
    };
    format!(
        "| {n} | {label} | {:.1} | {} ({:.2}) | {:.1} | {} ({:.2}) |\n",
        t.apply_seconds,
        t.apply_requests,
        per(t.apply_requests),
        t.plan_seconds,
        t.plan_requests,
        per(t.plan_requests)
    )
}

pub fn markdown(peers: &[PeerReport]) -> String {
    let mut out = String::from(
        "| principals | tool | create: s | create: requests (per principal) | check all: s | check all: requests (per \
         principal) |\n|---|---|---|---|---|---|\n",
    );
    for p in peers {
        let n = p.principals;
        let per = |requests: u64| requests as f64 / n as f64;
        let (t, o) = (&p.terraform, &p.operator);
        if let Some(default) = &p.terraform_default_rate {
            out += &terraform_row(n, default);
        }
        out += &terraform_row(n, t);
        out += &format!(
            "| {n} | operator (to Ready, then a restart) | {:.1} | {} ({:.2}) | {:.1} | {} ({:.2}); a resync pass: {} \
             ({:.2}) |\n",
            o.seconds_to_ready,
            o.requests,
            per(o.requests),
            o.restart_seconds,
            o.restart_requests,
            per(o.restart_requests),
            o.resync_pass_requests,
            per(o.resync_pass_requests)
        );
        out += &format!(
            "| {n} | Terraform (`rate_limit = {}`) ÷ operator | {:.1}x | {:.2}x | {:.1}x | {:.2}x |\n",
            t.rate_limit.unwrap_or_default(),
            t.apply_seconds / o.seconds_to_ready,
            t.apply_requests as f64 / o.requests.max(1) as f64,
            t.plan_seconds / o.restart_seconds,
            t.plan_requests as f64 / o.restart_requests.max(1) as f64
        );
    }
    out
}
