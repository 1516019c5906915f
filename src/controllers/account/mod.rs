//! DatabricksAccount: proves the operator can act on the account (a token, then an authenticated read) and says
//! in `Ready` who the operator is there, what the account delegates, or what is wrong; and sweeps the claims
//! whose objects are gone (`sweep`).

mod sweep;

use std::{sync::Arc, time::Duration};

use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::controller::Action,
};

use super::{
    rules::{
        conditions,
        error::Error,
        meta::{ANNOTATION_RECONCILE, MANAGER},
        reason::Reason,
    },
    runtime::{context::Context, memory::Fingerprint},
    services::ledger,
};
use crate::{
    crd::{DatabricksAccount, DatabricksAccountSpec, DatabricksAccountStatus},
    databricks::{self, AccountClient},
};

/// The controller's name in metrics and logs.
pub const CONTROLLER: &str = "databricksaccount";

/// Proves access: a token, then an authenticated read; `Ready` says who the operator is or what is wrong.
pub async fn reconcile(account: Arc<DatabricksAccount>, ctx: Arc<Context>) -> Result<Action, Error> {
    let generation = account.metadata.generation;
    let uid = account.uid().unwrap_or_default();
    // An earlier version's ledger left on the account (a migration at start that failed halfway).
    ledger::migrate(&ctx.client, &ctx.claims, &account).await?;
    let client = ctx.accounts.checked_client(&account.name_any()).await;
    // Proven with this spec and these credentials (same client) since the last resync: nothing to call.
    // A new value of the reconcile annotation asks for a full pass now, as on every kind.
    let poke = account.annotations().get(ANNOTATION_RECONCILE).cloned();
    let fingerprint =
        client.as_ref().ok().map(|(_, c)| Fingerprint::with(generation, (c.instance_id(), &poke)));
    if let Some(remaining) = fingerprint.and_then(|f| ctx.marks.fresh(&uid, f)) {
        return Ok(Action::requeue(remaining));
    }
    ctx.marks.forget(&uid);
    let outcome = match client {
        Err(err) => Err(err),
        Ok((_, client)) => verify(&client).await.map(|who| (who, client)),
    };
    if let Ok((_, client)) = &outcome {
        match sweep::lapsed_claims(&ctx, &account, client).await {
            Ok(0) => {}
            Ok(swept) => {
                tracing::info!(account = %account.name_any(), swept, "revoked the claims of objects gone without cleanup")
            }
            Err(err) => {
                tracing::warn!(account = %account.name_any(), error = %err, "could not sweep lapsed claims; retrying at the next resync")
            }
        }
    }
    let mut status = account.status.clone().unwrap_or_default();
    let action = match &outcome {
        Ok((who, client)) => {
            let message = format!(
                "Authenticated to account {} at {} as {who}; {}",
                client.account_id(),
                client.host(),
                tenancy_summary(&account.spec)
            );
            let ready = Reason::Authenticated;
            conditions::set(&mut status.conditions, conditions::READY, true, ready, &message, generation);
            Action::requeue(ctx.config.resync_interval)
        }
        Err(err) => {
            let message = err.to_string();
            conditions::set(
                &mut status.conditions,
                conditions::READY,
                false,
                err.reason(),
                &message,
                generation,
            );
            let wait = if err.is_transient() { 15 } else { 120 };
            Action::requeue(Duration::from_secs(wait))
        }
    };
    status.observed_generation = generation;
    write_own_status(&ctx, &account, status).await?;
    if let (Ok(_), Some(fingerprint)) = (&outcome, fingerprint) {
        ctx.marks.record(&uid, fingerprint, ctx.config.resync_interval);
    }
    Ok(action)
}

/// Applies the fields of the status this controller owns, when they changed (an earlier version's ownership
/// ledger beside them is moved into claims and cleared by `services::ledger`).
async fn write_own_status(
    ctx: &Context,
    account: &DatabricksAccount,
    status: DatabricksAccountStatus,
) -> Result<(), Error> {
    let current = account.status.clone().unwrap_or_default();
    if (&current.conditions, current.observed_generation) == (&status.conditions, status.observed_generation)
    {
        return Ok(());
    }
    let name = account.name_any();
    let own = DatabricksAccountStatus {
        conditions: status.conditions,
        observed_generation: status.observed_generation,
        ..DatabricksAccountStatus::default()
    };
    let kind = DatabricksAccount::kind(&());
    let patch =
        serde_json::json!({"apiVersion": DatabricksAccount::api_version(&()), "kind": kind, "status": own});
    Api::<DatabricksAccount>::all(ctx.client.clone())
        .patch_status(&name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&patch))
        .await
        .map(drop)
        .map_err(|e| Error::kube(format!("writing the status of DatabricksAccount {name}"), e))
}

/// What the account delegates, in one sentence of its Ready message.
fn tenancy_summary(spec: &DatabricksAccountSpec) -> String {
    let who = if spec.allowed_namespaces.is_some() { "every allowed namespace" } else { "every namespace" };
    if spec.single_tenant {
        format!(
            "single tenant: {who} may assign any workspace (ADMIN too), adopt principals, and create app \
             connections and trust policies"
        )
    } else if spec.delegations.is_empty() {
        format!(
            "no delegations: {who} may create service principals with secrets only (no workspace assignments, \
             adoption, app connections or trust policies)"
        )
    } else {
        format!(
            "{} delegation rule(s) decide what namespaces may do beyond service principals with secrets",
            spec.delegations.len()
        )
    }
}

async fn verify(client: &AccountClient) -> Result<String, Error> {
    client
        .authenticate()
        .await
        .map_err(|e| Error::Account { reason: reason_for(&e), message: explain(&e, client) })?;
    let identity = client.identity();
    let read = match client.application_id() {
        Some(app_id) => client.find_service_principal_by_application_id(&app_id).await.map(|sp| match sp {
            Some(sp) => {
                format!("service principal {} ({app_id}) via {}", sp.display_name, client.auth_method())
            }
            None => identity.clone(),
        }),
        None => client.list_custom_apps().await.map(|_| identity.clone()),
    };
    read.map_err(|e| Error::Account { reason: reason_for(&e), message: explain(&e, client) })
}

fn reason_for(err: &databricks::Error) -> Reason {
    if matches!(err, databricks::Error::TokenFile { .. }) {
        Reason::TokenFileUnreadable
    } else if err.is_unauthenticated() {
        Reason::AuthenticationFailed
    } else if err.status() == Some(403) {
        Reason::NotAccountAdmin
    } else if err.is_retryable() {
        Reason::AccountUnreachable
    } else {
        Reason::AccountRequestRejected
    }
}

fn explain(err: &databricks::Error, client: &AccountClient) -> String {
    let who = client.identity();
    if matches!(err, databricks::Error::TokenFile { .. }) {
        format!("{who}: {err}. Mount a projected ServiceAccount token there (see the README).")
    } else if err.is_unauthenticated() {
        format!(
            "{who} could not authenticate: {err}. Check the client id and secret (or the federation policy)."
        )
    } else if err.status() == Some(403) {
        format!("{who} authenticated but is not an account admin: {err}. Grant it the account admin role.")
    } else {
        format!("{who}: {err}")
    }
}
