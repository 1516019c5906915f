//! Revocation for a ServicePrincipal: its workspace assignments brought back within a grant that was lowered, and
//! what it holds removed when its namespace may no longer use the account. Driven by the object's claims (the
//! operator's records), never by its status alone.

use k8s_openapi::jiff::Timestamp;
use kube::{ResourceExt, runtime::events::EventType};

use super::adoption::own_claims;
use crate::{
    controllers::{
        rules::{
            error::{Error, Refusal},
            revocation::{self, Outcome},
        },
        runtime::context::Context,
        services::{accounts::Access, release},
    },
    crd::{
        ClaimedAssignment, DatabricksClaim, ServicePrincipal, ServicePrincipalStatus, WorkspacePermission,
    },
};

/// The refusal of an account error (the namespace may no longer use it).
pub fn refusal_of(err: &Error) -> Option<Refusal> {
    match err {
        Error::Account { reason, message } => Some(Refusal { reason: *reason, message: message.clone() }),
        _ => None,
    }
}

/// Lowers (ADMIN to USER) or removes every assignment of this object's principals that is above the grant:
/// those its claims record, and those an earlier version recorded in status. Returns what it did.
pub async fn outside_grant(
    sp: &ServicePrincipal,
    ctx: &Context,
    access: &Access,
    status: &ServicePrincipalStatus,
) -> Result<String, Error> {
    let account_id = &access.account.spec.account_id;
    let mut notes = Vec::new();
    for claim in
        own_claims(sp, ctx).await?.into_iter().filter(|c| c.spec.account_id.eq_ignore_ascii_case(account_id))
    {
        let Some(id) = claim.spec.remote.id.clone() else { continue };
        let mut held = claim.spec.workspaces.clone();
        // An earlier version's record: status, for the workspaces the claim does not know (lowering is never an
        // escalation, and the principal is this object's own: its claim says so).
        for legacy in &status.workspace_assignments {
            if !held.iter().any(|h| h.workspace_id == legacy.workspace_id) {
                let permission =
                    legacy.permissions.iter().copied().max().unwrap_or(WorkspacePermission::User);
                held.push(ClaimedAssignment {
                    workspace_id: legacy.workspace_id,
                    permission,
                    previous: None,
                });
            }
        }
        let (kept, done) = lower_or_remove(ctx, access, &id, held).await?;
        if !done.is_empty() {
            notes.extend(done);
            let mut written = claim.clone();
            written.spec.workspaces = kept;
            ctx.claims.written(&written).await?;
        }
    }
    if !notes.is_empty() {
        let note = format!("Revoked what the grant no longer allows: {}", notes.join(", "));
        ctx.event(sp, EventType::Warning, "AssignmentRevoked", "Revoke", &note).await;
    }
    Ok(notes.join(", "))
}

/// The assignments that stay within the grant, and what was lowered or removed.
async fn lower_or_remove(
    ctx: &Context,
    access: &Access,
    principal_id: &str,
    held: Vec<ClaimedAssignment>,
) -> Result<(Vec<ClaimedAssignment>, Vec<String>), Error> {
    let client = &access.client;
    let numeric: i64 = principal_id.parse().unwrap_or_default();
    let (mut kept, mut done) = (Vec::new(), Vec::new());
    for mut assignment in held {
        let workspace = assignment.workspace_id;
        let now = ctx.assignments.permissions(client, workspace, numeric).await?;
        match revocation::assignment_change(assignment.permission, access.grants.permission(workspace)) {
            _ if now.is_empty() => {} // gone already
            None => kept.push(assignment),
            Some(Some(lower)) => {
                let name = release::permission_name(lower);
                client.put_workspace_assignment(workspace, principal_id, &[name]).await?;
                ctx.assignments.record(client, workspace, numeric, Some(vec![name.to_owned()])).await;
                done.push(format!("lowered to {name} in workspace {workspace}"));
                assignment.permission = lower;
                kept.push(assignment);
            }
            Some(None) => {
                client.delete_workspace_assignment(workspace, principal_id).await?;
                ctx.assignments.record(client, workspace, numeric, None).await;
                done.push(format!("removed from workspace {workspace}"));
            }
        }
    }
    Ok((kept, done))
}

/// Revokes what this object holds on an account that no longer allows its namespace: after the account's grace
/// (none when `now`, its object going away), per `revocation.principals` for a principal it created; an adopted
/// principal loses what was added under its claim, and the claim goes.
pub async fn namespace_removed(sp: &ServicePrincipal, ctx: &Context, now: bool) -> Result<Outcome, Error> {
    let namespace = sp.namespace().unwrap_or_default();
    let access = ctx.accounts.revoking(&sp.spec.account_ref.name, &namespace).await?;
    let spec = &access.account.spec;
    let grace = if now { std::time::Duration::ZERO } else { revocation::grace(spec) };
    let at = Timestamp::now();
    let mut outcome = Outcome::default();
    for claim in own_claims(sp, ctx)
        .await?
        .into_iter()
        .filter(|c| c.spec.account_id.eq_ignore_ascii_case(&spec.account_id))
    {
        let claim = ctx.claims.mark_revoked(&claim).await?;
        let app = claim.spec.remote.application_id.clone().unwrap_or_default();
        if let Some(due) = revocation::due(claim.spec.revoked_since.as_ref().map(|t| t.0), at, grace) {
            outcome.later(due, format!("service principal {app} is revoked at {due} (spec.revocation)"));
            continue;
        }
        if already_revoked(&claim) {
            let policy = spec.revocation.principals;
            outcome.done(format!(
                "service principal {app} stays revoked (spec.revocation.principals: {policy:?}) until the namespace \
                 is allowed again"
            ));
            continue;
        }
        let cache = &ctx.assignments;
        let note = release::revoke_principal(
            &ctx.claims,
            cache,
            &access.client,
            &claim,
            spec.revocation.principals,
            !now,
        )
        .await?;
        if !note.is_empty() {
            ctx.event(
                sp,
                EventType::Warning,
                "Revoked",
                "Revoke",
                &format!("Namespace {namespace} may no longer use the account: {note}"),
            )
            .await;
            outcome.done(note);
        }
    }
    Ok(outcome)
}

/// A created principal's claim kept after its revocation (deactivated or left): nothing more to do until the
/// namespace is allowed again.
fn already_revoked(claim: &DatabricksClaim) -> bool {
    !claim.spec.adopted && claim.spec.releasing
}
