//! The principal's workspace assignments: exactly the set the spec lists, as far as the namespace may assign.

use std::collections::BTreeMap;

use kube::runtime::events::EventType;

use super::identity::Principal;
use crate::{
    controllers::{
        rules::{error::Error, reason::Reason},
        runtime::context::Context,
        services::accounts::Access,
    },
    crd::{ServicePrincipal, ServicePrincipalStatus, WorkspaceAssignment, WorkspacePermission},
    databricks,
};

fn permission_names(permissions: &[WorkspacePermission]) -> Vec<&'static str> {
    // Databricks keeps ADMIN when both are given.
    if permissions.contains(&WorkspacePermission::Admin) { vec!["ADMIN"] } else { vec!["USER"] }
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

/// Assigns what the spec lists, and removes what status says was applied before and the spec no longer lists.
pub async fn sync_assignments(
    sp: &ServicePrincipal,
    ctx: &Context,
    access: &Access,
    principal: &Principal,
    status: &mut ServicePrincipalStatus,
) -> Result<(), Error> {
    let desired: BTreeMap<i64, &[WorkspacePermission]> =
        sp.spec.workspace_assignments.iter().map(|a| (a.workspace_id, a.permissions.as_slice())).collect();
    for (workspace, permissions) in &desired {
        assign(sp, ctx, access, principal, *workspace, permissions).await?;
    }
    let client = &access.client;
    let principal_id: i64 = principal.id.parse().unwrap_or_default();
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

/// The principal has `permissions` in `workspace`, as read from the shared listing (or known empty when this pass
/// created the principal).
async fn assign(
    sp: &ServicePrincipal,
    ctx: &Context,
    access: &Access,
    principal: &Principal,
    workspace: i64,
    permissions: &[WorkspacePermission],
) -> Result<(), Error> {
    let client = &access.client;
    let principal_id: i64 = principal.id.parse().unwrap_or_default();
    let want: Vec<String> = permission_names(permissions).into_iter().map(str::to_owned).collect();
    let have = match principal.created {
        true => Vec::new(),
        false => {
            let listed = ctx.assignments.permissions(client, workspace, principal_id).await;
            listed.map_err(|e| not_found(workspace, e))?
        }
    };
    if have == want {
        return Ok(());
    }
    let names: Vec<&str> = want.iter().map(String::as_str).collect();
    let put = client.put_workspace_assignment(workspace, &principal.id, &names).await;
    put.map_err(|e| not_found(workspace, e))?;
    ctx.assignments.record(client, workspace, principal_id, Some(want.clone())).await;
    let message = format!("Assigned {} in workspace {workspace}", want.join(","));
    ctx.event(sp, EventType::Normal, "WorkspaceAssigned", "Assign", &message).await;
    Ok(())
}
