//! Revocation for a ServicePrincipal: its workspace assignments brought back within a grant that was lowered, and
//! what it holds removed when its namespace may no longer use the account. Driven by the object's claims (the
//! operator's records), never by its status alone.

use k8s_openapi::jiff::Timestamp;
use kube::{ResourceExt, runtime::events::EventType};

use super::adoption::own_claims;
use crate::{
    controllers::{
        rules::{
            claims,
            error::{Error, Refusal},
            revocation::{self, Outcome},
        },
        runtime::context::Context,
        services::{accounts::Access, release, rule_sets},
    },
    crd::{
        ClaimedAssignment, DatabricksClaim, ServicePrincipal, ServicePrincipalStatus, UsedBy,
        WorkspacePermission,
    },
};

/// The refusal of an account error (the namespace may no longer use it).
pub fn refusal_of(err: &Error) -> Option<Refusal> {
    match err {
        Error::Account { reason, message } => Some(Refusal { reason: *reason, message: message.clone() }),
        _ => None,
    }
}

/// Lowers (ADMIN to USER) or removes every assignment of this object's principals that is above the grant (those
/// its claims record, and those an earlier version recorded in status), and leaves the groups its claims record
/// that the grant no longer lets it join. Returns what it did.
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
        // An earlier version's record: status, for the workspaces the claim does not know, on a principal this
        // object created (lowering its own principal is never an escalation; an adopted principal's other
        // assignments are the platform's, and only the claim names what this object added).
        let legacy = if claim.spec.adopted { &[][..] } else { &status.workspace_assignments[..] };
        for legacy in legacy {
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
        let (kept, mut done) = lower_or_remove(ctx, access, &id, held).await?;
        let (joined, outside): (Vec<_>, Vec<_>) =
            claim.spec.groups.iter().cloned().partition(|g| access.grants.group_allowed(&g.display_name));
        for group in &outside {
            access.client.remove_group_member(&group.id, &id).await?;
            done.push(format!("left group {}", group.display_name));
        }
        let mut claim = claim;
        if !done.is_empty() {
            let mut written = claim.clone();
            written.spec.workspaces = kept;
            written.spec.groups = joined;
            claim = ctx.claims.written(&written).await?;
        }
        let own = super::adoption::own_applications(sp, ctx, access, &claim.spec.used_by).await?;
        let allowed: Vec<UsedBy> = claim
            .spec
            .used_by
            .iter()
            .filter(|u| access.grants.used_by_allowed(&u.principal, &own))
            .cloned()
            .collect();
        if allowed.len() < claim.spec.used_by.len() {
            let applied =
                rule_sets::apply_uses(&ctx.claims, &access.client, &mut claim, &allowed, false).await?;
            if !applied.removed.is_empty() {
                done.push(format!(
                    "removed usedBy {}",
                    crate::controllers::rules::used_by::describe(&applied.removed)
                ));
            }
        }
        notes.extend(done);
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
        let change =
            revocation::assignment_change(assignment.permission, access.grants.permission(workspace));
        // Within the grant: no read needed (a paused object's gate checks this at every pass).
        let Some(change) = change else {
            kept.push(assignment);
            continue;
        };
        let now = ctx.assignments.permissions(client, workspace, numeric).await?;
        match change {
            _ if now.is_empty() => {} // gone already
            Some(lower) => {
                let name = release::permission_name(lower);
                client.put_workspace_assignment(workspace, principal_id, &[name]).await?;
                ctx.assignments.record(client, workspace, numeric, Some(vec![name.to_owned()])).await;
                done.push(format!("lowered to {name} in workspace {workspace}"));
                assignment.permission = lower;
                kept.push(assignment);
            }
            None => {
                // What was there before this object's assignment is put back (the platform's), else removed.
                release::restore(&ctx.assignments, client, principal_id, &assignment).await?;
                done.push(match assignment.previous {
                    Some(previous) => {
                        format!("put back to {} in workspace {workspace}", release::permission_name(previous))
                    }
                    None => format!("removed from workspace {workspace}"),
                });
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

/// An adoption this object holds that the grant no longer allows (or whose principal now holds more than the
/// grant): after the account's grace, what the object added to the principal is removed and the claim goes, so
/// the principal may pass to another holder with nothing of this namespace's on it.
pub async fn adoption_revoked(
    sp: &ServicePrincipal,
    ctx: &Context,
    access: &Access,
    refusal: Refusal,
) -> Result<Error, Error> {
    let account_id = &access.account.spec.account_id;
    let held = own_claims(sp, ctx).await?.into_iter().find(|c| {
        c.spec.adopted
            && c.spec.account_id.eq_ignore_ascii_case(account_id)
            && claims::held_by(c, &sp.uid().unwrap_or_default())
    });
    let Some(claim) = held else { return Ok(refusal.into()) };
    let app = claim.spec.remote.application_id.clone().unwrap_or_default();
    let claim = ctx.claims.mark_revoked(&claim).await?;
    let (at, grace) = (Timestamp::now(), revocation::grace(&access.account.spec));
    if let Some(due) = revocation::due(claim.spec.revoked_since.as_ref().map(|t| t.0), at, grace) {
        let note = format!(
            "What this object added to {app} is removed at {due} (spec.revocation.gracePeriod) unless it is granted \
             again"
        );
        return Ok(Error::revoked(refusal, &note, Some(revocation::until(due, at))));
    }
    let stripped = release::strip(&ctx.claims, &ctx.assignments, &access.client, &claim).await?;
    ctx.claims.delete_if_still_held(&claim).await?;
    let removed = if stripped.is_empty() { "nothing".to_owned() } else { stripped.describe() };
    let note = format!("Released adopted principal {app}: removed {removed}");
    ctx.event(sp, EventType::Warning, "Revoked", "Revoke", &note).await;
    Ok(Error::revoked(refusal, &note, None))
}
