//! ServicePrincipal: create or adopt the principal, converge its name, active flag and workspace assignments, and
//! keep a working OAuth secret published in an owned Secret, rotated before expiry with a grace period.
//!
//! Crash safety: the principal is tagged with `externalId` = the object's UID and searched for before creating;
//! the intent to mint is recorded (`mintingSince`) before a secret is created, the Secret is written right after,
//! and on every pass the remote secret list is reconciled against what is published and retiring, so an
//! interruption at any step leaves no duplicate principal and no orphaned secret.

mod credentials;
mod ownership;
pub(super) mod rotation;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, ResourceExt,
    runtime::{controller::Action, events::EventType},
};

pub use credentials::parse_duration;
pub use ownership::confirmed_principal;

use super::{Context, Error, accounts::Access, conditions, lifecycle, secrets, tenancy};
use crate::{
    crd::{
        CredentialsType, PrincipalDeletionPolicy, ServicePrincipal, ServicePrincipalStatus,
        WorkspaceAssignment, WorkspacePermission,
    },
    databricks::types::{PatchOperation, ServicePrincipal as RemotePrincipal},
};

pub async fn reconcile(sp: Arc<ServicePrincipal>, ctx: Arc<Context>) -> Result<Action, Error> {
    let apply = async |sp: &ServicePrincipal, ctx: &Context, status: &mut ServicePrincipalStatus| {
        let next = converge(sp, ctx, status).await?;
        Ok((ready_message(status), next))
    };
    lifecycle::reconcile(sp, ctx, apply, published_intact, ownership::cleanup).await
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

/// Brings Databricks and the Secret in line; returns when to look again.
async fn converge(
    sp: &ServicePrincipal,
    ctx: &Context,
    status: &mut ServicePrincipalStatus,
) -> Result<Duration, Error> {
    let generation = sp.metadata.generation;
    let namespace = sp.namespace().unwrap_or_default();
    let access = ctx.accounts.client_for(ctx, &sp.spec.account_ref.name, &namespace).await?;
    // Everything the spec asks for must be delegated before anything is written.
    access.grants.check_assignments(&sp.spec.workspace_assignments)?;
    let (remote, created) = ownership::ensure_principal(sp, ctx, &access, status).await?;
    let Access { account, client, .. } = &access;
    let principal = Principal { remote, created };
    converge_identity(sp, ctx, &access, &principal).await?;
    converge_assignments(sp, ctx, &access, &principal, status).await?;
    conditions::synced(&mut status.conditions, generation);
    let next = match sp.spec.credentials.as_ref().filter(|c| c.type_ == CredentialsType::OAuthSecret) {
        Some(spec) => {
            credentials::converge_credentials(sp, ctx, client, account, &principal, spec, status).await?
        }
        None => {
            credentials::drop_credentials(sp, ctx, client, &principal, status).await?;
            None
        }
    };
    let resync = ctx.config.jittered_resync();
    Ok(next.map_or(resync, |n| n.min(resync)).max(Duration::from_secs(1)))
}

/// The remote principal, and whether this pass created it (then it has no secrets and no assignments yet:
/// nothing to read back).
struct Principal {
    remote: RemotePrincipal,
    created: bool,
}

impl std::ops::Deref for Principal {
    type Target = RemotePrincipal;
    fn deref(&self) -> &RemotePrincipal {
        &self.remote
    }
}

/// Display name and active flag as the spec says, as far as the object may change them (see
/// [`tenancy::identity_changes`]).
async fn converge_identity(
    sp: &ServicePrincipal,
    ctx: &Context,
    access: &Access,
    principal: &RemotePrincipal,
) -> Result<(), Error> {
    let adoption = sp.spec.adopt.as_ref().map(|a| access.grants.adoption(&a.application_id));
    let changes = tenancy::identity_changes(
        principal,
        sp.spec.display_name.as_deref(),
        &sp.name_any(),
        sp.spec.active,
        adoption,
    )?;
    let mut operations = Vec::new();
    if let Some(name) = &changes.display_name {
        operations.push(PatchOperation::replace("displayName", name.clone()));
    }
    if let Some(active) = changes.active {
        operations.push(PatchOperation::replace("active", active));
    }
    if operations.is_empty() {
        return Ok(());
    }
    access.client.patch_service_principal(&principal.id, &operations).await?;
    let message = format!(
        "Set {}{} on service principal {}",
        changes.display_name.as_ref().map(|n| format!("display name {n:?} ")).unwrap_or_default(),
        changes.active.map(|a| format!("active={a}")).unwrap_or_default(),
        principal.id
    );
    ctx.event(sp, EventType::Normal, "Updated", "Update", &message).await;
    Ok(())
}

fn permission_names(permissions: &[WorkspacePermission]) -> Vec<&'static str> {
    // Databricks keeps ADMIN when both are given.
    if permissions.contains(&WorkspacePermission::Admin) { vec!["ADMIN"] } else { vec!["USER"] }
}

async fn converge_assignments(
    sp: &ServicePrincipal,
    ctx: &Context,
    access: &Access,
    principal: &Principal,
    status: &mut ServicePrincipalStatus,
) -> Result<(), Error> {
    let client = &access.client;
    let desired: BTreeMap<i64, &[WorkspacePermission]> =
        sp.spec.workspace_assignments.iter().map(|a| (a.workspace_id, a.permissions.as_slice())).collect();
    let principal_id: i64 = principal.id.parse().unwrap_or_default();
    let not_found = |workspace: i64, e: crate::databricks::Error| match e.is_not_found() {
        true => Error::NeedsAttention {
            reason: "WorkspaceNotFound",
            message: format!(
                "Workspace {workspace} does not exist or does not accept permission assignments: {e}"
            ),
        },
        false => e.into(),
    };
    for (workspace, permissions) in &desired {
        let want: Vec<String> = permission_names(permissions).into_iter().map(str::to_owned).collect();
        let have = match principal.created {
            true => Vec::new(),
            false => ctx
                .assignments
                .permissions(client, *workspace, principal_id)
                .await
                .map_err(|e| not_found(*workspace, e))?,
        };
        if have != want {
            let names: Vec<&str> = want.iter().map(String::as_str).collect();
            client
                .put_workspace_assignment(*workspace, &principal.id, &names)
                .await
                .map_err(|e| not_found(*workspace, e))?;
            ctx.assignments.record(client, *workspace, principal_id, Some(want.clone())).await;
            let message = format!("Assigned {} in workspace {workspace}", want.join(","));
            ctx.event(sp, EventType::Normal, "WorkspaceAssigned", "Assign", &message).await;
        }
    }
    // Removals follow what status says was applied, which whoever may write status could extend: remove only
    // from workspaces this namespace may assign.
    for previous in &status.workspace_assignments {
        let any = WorkspaceAssignment {
            workspace_id: previous.workspace_id,
            permissions: vec![WorkspacePermission::User],
        };
        let delegated = access.grants.check_assignments(&[any]).is_ok();
        if !desired.contains_key(&previous.workspace_id) && delegated {
            client.delete_workspace_assignment(previous.workspace_id, &principal.id).await?;
            ctx.assignments.record(client, previous.workspace_id, principal_id, None).await;
            let message = format!("Removed from workspace {}", previous.workspace_id);
            ctx.event(sp, EventType::Normal, "WorkspaceUnassigned", "Unassign", &message).await;
        }
    }
    let mut applied: Vec<WorkspaceAssignment> = sp.spec.workspace_assignments.clone();
    applied.sort_by_key(|a| a.workspace_id);
    status.workspace_assignments = applied;
    Ok(())
}

/// The deletion policy the object asks for: the orphan annotation, then the spec, then the default (Delete for
/// created principals, Orphan for adopted ones). An adoption grant may lower it (see `ownership::cleanup`).
pub fn deletion_policy(sp: &ServicePrincipal) -> PrincipalDeletionPolicy {
    if lifecycle::orphaned_by_annotation(sp) {
        return PrincipalDeletionPolicy::Orphan;
    }
    sp.spec.deletion_policy.unwrap_or(if sp.spec.adopt.is_some() {
        PrincipalDeletionPolicy::Orphan
    } else {
        PrincipalDeletionPolicy::Delete
    })
}
