//! ServicePrincipal: create or adopt the principal, bring its name, active flag and workspace assignments in line
//! with the spec, and keep a working OAuth secret published in an owned Secret, rotated before expiry with a grace
//! period. Crash safety: the principal is tagged with `externalId` = the object's UID and searched for before
//! creating (`identity`); the OAuth secret's steps are each safe to interrupt (`credentials`).

mod adoption;
mod assignments;
mod cleanup;
mod credentials;
mod groups;
mod identity;
mod revocation;
mod rotation;
mod used_by;

use std::{sync::Arc, time::Duration};

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, ResourceExt, runtime::controller::Action};

use crate::{
    controllers::{
        rules::{
            conditions,
            error::{Error, Refusal},
            meta, ownership,
            reason::Reason,
        },
        runtime::{
            context::Context,
            lifecycle::{self, Hooks, managed},
        },
        services::{accounts::Access, secrets},
    },
    crd::{CredentialsType, ServicePrincipal, ServicePrincipalStatus},
};

/// The controller's name in metrics and logs.
pub const CONTROLLER: &str = "serviceprincipal";

managed!(ServicePrincipal, ServicePrincipalStatus, "serviceprincipals.oauth.databricks-operator.io/cleanup");

pub async fn reconcile(sp: Arc<ServicePrincipal>, ctx: Arc<Context>) -> Result<Action, Error> {
    let apply = async |sp: &ServicePrincipal, ctx: &Context, status: &mut ServicePrincipalStatus| {
        let next = apply(sp, ctx, status).await?;
        Ok((ready_message(status), next))
    };
    let gate = async |sp: &ServicePrincipal, ctx: &Context, status: &mut ServicePrincipalStatus| {
        gate(sp, ctx, status).await.map(drop)
    };
    let hooks = Hooks { apply, intact: published_intact, gate };
    lifecycle::reconcile(sp, ctx, hooks, cleanup::cleanup).await
}

/// Whether the Secret still publishes the secret the status records, unedited (or no Secret is wanted).
async fn published_intact(
    sp: &ServicePrincipal,
    ctx: &Context,
    status: &ServicePrincipalStatus,
) -> Result<bool, Error> {
    let wanted = sp.spec.credentials.as_ref().is_some_and(|c| c.type_ == CredentialsType::OAuthSecret);
    let Some(creds) = status.credentials.as_ref() else { return Ok(!wanted) };
    let Some(name) = creds.secret_name.as_deref() else { return Ok(false) };
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &sp.namespace().unwrap_or_default());
    let published = secrets::read_owned(&api, name, &sp.uid().unwrap_or_default()).await?;
    Ok(wanted
        && published
            .is_some_and(|p| p.checksum_ok && p.secret_id.is_some() && p.secret_id == creds.secret_id))
}

fn ready_message(status: &ServicePrincipalStatus) -> String {
    let app = status.application_id.as_deref().unwrap_or("?");
    match status.credentials.as_ref().and_then(|c| c.secret_name.as_ref().zip(c.expire_time.as_ref())) {
        Some((name, expire)) => format!(
            "Service principal {app} is in sync; Secret {name} holds a secret valid until {}",
            expire.0
        ),
        None => format!("Service principal {app} is in sync"),
    }
}

/// The grant, before anything is written (and while paused): what the object holds beyond it is revoked (a
/// namespace no longer allowed, assignments above a lowered grant, an adoption no longer granted).
async fn gate(
    sp: &ServicePrincipal,
    ctx: &Context,
    status: &ServicePrincipalStatus,
) -> Result<Access, Error> {
    let namespace = sp.namespace().unwrap_or_default();
    let access = match ctx.accounts.client_for(&sp.spec.account_ref.name, &namespace).await {
        Ok(access) => access,
        Err(err) if err.reason() == Reason::NamespaceNotAllowed => {
            return Err(namespace_revoked(sp, ctx, err).await?);
        }
        Err(err) => return Err(err),
    };
    let own = adoption::own_applications(sp, ctx, &access, &sp.spec.used_by).await?;
    let refused = access
        .grants
        .check_assignments(&sp.spec.workspace_assignments)
        .and_then(|()| access.grants.check_groups(&sp.spec.groups))
        .and_then(|()| access.grants.check_used_by(&sp.spec.used_by, &own))
        .err();
    // A paused object's spec may have changed since it was applied: its claims say what Databricks holds.
    if refused.is_some() || meta::is_paused(sp) {
        let note = revocation::outside_grant(sp, ctx, &access, status).await?;
        if let Some(refusal) = refused {
            return Err(Error::revoked(refusal, &note, None));
        }
        if !note.is_empty() {
            let message = "The grant no longer covers what this paused object was assigned".to_owned();
            let refusal = Refusal { reason: Reason::AssignmentNotAllowed, message };
            return Err(Error::revoked(refusal, &note, None));
        }
    }
    if let Some(adopt) = &sp.spec.adopt
        && let Some(refusal) = ownership::ungranted_adoption(&access.grants, &adopt.application_id)
    {
        return Err(revocation::adoption_revoked(sp, ctx, &access, refusal).await?);
    }
    Ok(access)
}

/// A full pass: the grant checked, the principal found (or created), its identity and assignments brought in
/// line, and its credentials kept published. Returns when to look again.
async fn apply(
    sp: &ServicePrincipal,
    ctx: &Context,
    status: &mut ServicePrincipalStatus,
) -> Result<Duration, Error> {
    let access = gate(sp, ctx, status).await?;
    let mut principal = identity::ensure_principal(sp, ctx, &access, status).await?;
    identity::sync_identity(sp, ctx, &access, &principal).await?;
    assignments::sync_assignments(sp, ctx, &access, &mut principal, status).await?;
    groups::sync_groups(sp, ctx, &access, &mut principal).await?;
    used_by::sync_used_by(sp, ctx, &access, &mut principal).await?;
    conditions::synced(&mut status.conditions, sp.metadata.generation);
    let next = match sp.spec.credentials.as_ref().filter(|c| c.type_ == CredentialsType::OAuthSecret) {
        Some(spec) => credentials::sync_credentials(sp, ctx, &access, &principal, spec, status).await?,
        None => {
            credentials::drop_credentials(sp, ctx, &access.client, &mut principal, status).await?;
            None
        }
    };
    let resync = ctx.config.jittered_resync();
    let next = [next, principal.wake].into_iter().flatten().min();
    Ok(next.map_or(resync, |n| n.min(resync)).max(Duration::from_secs(1)))
}

/// The error of a pass on an account that no longer allows the namespace, with what revocation did (or will do).
async fn namespace_revoked(sp: &ServicePrincipal, ctx: &Context, err: Error) -> Result<Error, Error> {
    let Some(refusal) = revocation::refusal_of(&err) else { return Ok(err) };
    let outcome = revocation::namespace_removed(sp, ctx, false).await?;
    let wake = outcome.wake(k8s_openapi::jiff::Timestamp::now());
    Ok(Error::revoked(refusal, &outcome.message(), wake))
}
