//! The principal's workspace assignments: exactly the set the spec lists, as far as the namespace may assign,
//! recorded in the principal's claim (with what an adopted principal had before), so that a release or a
//! revocation knows what to undo.

use std::collections::BTreeMap;

use kube::runtime::events::EventType;

use super::identity::Principal;
use crate::{
    controllers::{
        rules::{error::Error, reason::Reason},
        runtime::context::Context,
        services::{accounts::Access, release::permission_name},
    },
    crd::{
        ClaimedAssignment, ServicePrincipal, ServicePrincipalStatus, WorkspaceAssignment, WorkspacePermission,
    },
    databricks,
};

fn strongest(permissions: &[WorkspacePermission]) -> WorkspacePermission {
    // Databricks keeps ADMIN when both are given.
    permissions.iter().copied().max().unwrap_or(WorkspacePermission::User)
}

fn held(listed: &[String]) -> Option<WorkspacePermission> {
    match listed {
        [] => None,
        _ if listed.iter().any(|p| p == "ADMIN") => Some(WorkspacePermission::Admin),
        _ => Some(WorkspacePermission::User),
    }
}

fn not_found(workspace: i64, e: databricks::Error) -> Error {
    match e.is_not_found() {
        true => Error::NeedsAttention {
            reason: Reason::WorkspaceNotFound,
            message: format!(
                "Workspace {workspace} does not exist or does not accept permission assignments: {e}"
            ),
        },
        false => e.into(),
    }
}

/// Assigns what the spec lists, and undoes what the claim (or, for a created principal, an earlier version's
/// status) records and the spec no longer lists. The claim records an assignment before it is made (with what an
/// adopted principal had before), so a pass that stops midway never leaves one that no release or revocation
/// knows of.
pub async fn sync_assignments(
    sp: &ServicePrincipal,
    ctx: &Context,
    access: &Access,
    principal: &mut Principal,
    status: &mut ServicePrincipalStatus,
) -> Result<(), Error> {
    let desired: BTreeMap<i64, WorkspacePermission> =
        sp.spec.workspace_assignments.iter().map(|a| (a.workspace_id, strongest(&a.permissions))).collect();
    let mut recorded = principal.claim.spec.workspaces.clone();
    let mut to_assign = Vec::new();
    for (workspace, want) in &desired {
        let have = current(ctx, access, principal, *workspace).await?;
        let previous = if principal.claim.spec.adopted { held(&have) } else { None };
        match recorded.iter_mut().find(|r| r.workspace_id == *workspace) {
            Some(entry) => entry.permission = entry.permission.max(*want),
            None => {
                recorded.push(ClaimedAssignment { workspace_id: *workspace, permission: *want, previous })
            }
        }
        if have != [permission_name(*want)] {
            to_assign.push((*workspace, *want));
        }
    }
    record(ctx, principal, &recorded).await?;
    for (workspace, want) in to_assign {
        assign(sp, ctx, access, principal, workspace, want).await?;
        if let Some(entry) = recorded.iter_mut().find(|r| r.workspace_id == workspace) {
            entry.permission = want;
        }
    }
    let created = sp.spec.adopt.is_none();
    let legacy = status.workspace_assignments.iter().filter(|_| created).map(|a| (a.workspace_id, None));
    let undo: Vec<(i64, Option<WorkspacePermission>)> = recorded
        .iter()
        .map(|r| (r.workspace_id, r.previous))
        .chain(legacy)
        .filter(|(workspace, _)| !desired.contains_key(workspace))
        .collect();
    for (workspace, previous) in undo {
        if unassign(sp, ctx, access, principal, workspace, previous).await? {
            recorded.retain(|r| r.workspace_id != workspace);
        }
    }
    record(ctx, principal, &recorded).await?;
    let mut applied: Vec<WorkspaceAssignment> = sp.spec.workspace_assignments.clone();
    applied.sort_by_key(|a| a.workspace_id);
    status.workspace_assignments = applied;
    Ok(())
}

/// Writes `recorded` into the principal's claim when it differs.
async fn record(
    ctx: &Context,
    principal: &mut Principal,
    recorded: &[ClaimedAssignment],
) -> Result<(), Error> {
    let mut sorted = recorded.to_vec();
    sorted.sort_by_key(|r| r.workspace_id);
    if sorted != principal.claim.spec.workspaces {
        let mut claim = principal.claim.clone();
        claim.spec.workspaces = sorted;
        principal.claim = ctx.claims.written(&claim).await?;
    }
    Ok(())
}

/// What the principal has in `workspace`, from the shared listing (known empty when this pass created it).
async fn current(
    ctx: &Context,
    access: &Access,
    principal: &Principal,
    workspace: i64,
) -> Result<Vec<String>, Error> {
    if principal.created {
        return Ok(Vec::new());
    }
    let principal_id: i64 = principal.id.parse().unwrap_or_default();
    let listed = ctx.assignments.permissions(&access.client, workspace, principal_id).await;
    listed.map_err(|e| not_found(workspace, e))
}

/// Gives the principal `want` in `workspace`.
async fn assign(
    sp: &ServicePrincipal,
    ctx: &Context,
    access: &Access,
    principal: &Principal,
    workspace: i64,
    want: WorkspacePermission,
) -> Result<(), Error> {
    let client = &access.client;
    let principal_id: i64 = principal.id.parse().unwrap_or_default();
    let name = permission_name(want);
    let put = client.put_workspace_assignment(workspace, &principal.id, &[name]).await;
    put.map_err(|e| not_found(workspace, e))?;
    ctx.assignments.record(client, workspace, principal_id, Some(vec![name.to_owned()])).await;
    let message = format!("Assigned {name} in workspace {workspace}");
    ctx.event(sp, EventType::Normal, "WorkspaceAssigned", "Assign", &message).await;
    Ok(())
}

/// Undoes an assignment the claim recorded: back to what an adopted principal had before, or removed. Returns
/// whether it is undone (a workspace the principal is no longer in counts).
async fn unassign(
    sp: &ServicePrincipal,
    ctx: &Context,
    access: &Access,
    principal: &Principal,
    workspace: i64,
    previous: Option<WorkspacePermission>,
) -> Result<bool, Error> {
    let client = &access.client;
    let principal_id: i64 = principal.id.parse().unwrap_or_default();
    let have = ctx
        .assignments
        .permissions(client, workspace, principal_id)
        .await
        .map_err(|e| not_found(workspace, e))?;
    match previous {
        Some(previous) => {
            let name = permission_name(previous);
            if have != [name] {
                client.put_workspace_assignment(workspace, &principal.id, &[name]).await?;
                ctx.assignments.record(client, workspace, principal_id, Some(vec![name.to_owned()])).await;
            }
        }
        None if have.is_empty() => return Ok(true),
        None => {
            client.delete_workspace_assignment(workspace, &principal.id).await?;
            ctx.assignments.record(client, workspace, principal_id, None).await;
        }
    }
    let message = format!("Removed from workspace {workspace}");
    ctx.event(sp, EventType::Normal, "WorkspaceUnassigned", "Unassign", &message).await;
    Ok(true)
}
