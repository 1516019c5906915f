//! The principal's account groups: it joins the groups the spec lists and leaves those the spec no longer lists,
//! one membership at a time (never touching the group's other members). Each membership is recorded in the
//! principal's claim before it is added, so a release or a revocation knows what to undo.

use kube::runtime::events::EventType;

use super::identity::Principal;
use crate::{
    controllers::{
        rules::{error::Error, membership, reason::Reason},
        runtime::context::Context,
        services::accounts::Access,
    },
    crd::{ClaimedGroup, ServicePrincipal},
};

/// Joins and leaves groups as the spec lists them (see [`membership::plan_groups`]); a membership removed outside
/// the operator is added back, with an event.
pub async fn sync_groups(
    sp: &ServicePrincipal,
    ctx: &Context,
    access: &Access,
    principal: &mut Principal,
) -> Result<(), Error> {
    let current = if principal.created { &[][..] } else { &principal.remote.groups[..] };
    let plan = membership::plan_groups(
        &sp.spec.groups,
        current,
        &principal.claim.spec.groups,
        principal.claim.spec.adopted,
    );
    let mut keep = plan.keep;
    let mut joins = Vec::new();
    for (name, id, rejoin) in plan.join {
        let id = match id {
            Some(id) => id,
            None => resolve(access, &name).await?,
        };
        if !keep.iter().any(|k| k.id == id) {
            keep.push(ClaimedGroup { id: id.clone(), display_name: name.clone() });
        }
        joins.push((name, id, rejoin));
    }
    // Recorded before it is added (with what is still to leave), so a pass that stops midway leaves nothing
    // no release knows of.
    record(ctx, principal, keep.iter().chain(&plan.leave).cloned().collect()).await?;
    for (name, id, rejoin) in joins {
        let joined = join(access, principal, &name, &id).await?;
        if joined != id {
            // The recorded group was deleted and another of that name made: the new one is recorded instead.
            keep.retain(|k| k.id != id);
            keep.push(ClaimedGroup { id: joined, display_name: name.clone() });
            record(ctx, principal, keep.iter().chain(&plan.leave).cloned().collect()).await?;
        }
        let message = match rejoin {
            true => format!("Added back to group {name} (the membership was removed outside the operator)"),
            false => format!("Joined group {name}"),
        };
        ctx.event(sp, EventType::Normal, "GroupJoined", "Join", &message).await;
    }
    for left in &plan.leave {
        // A group deleted meanwhile has no membership left to remove.
        access.client.remove_group_member(&left.id, &principal.id).await?;
        let message = format!("Left group {}", left.display_name);
        ctx.event(sp, EventType::Normal, "GroupLeft", "Leave", &message).await;
    }
    record(ctx, principal, keep).await
}

/// Adds the principal to group `id` (named `name`); a recorded group gone meanwhile is looked up by name again.
/// Returns the id of the group joined.
async fn join(access: &Access, principal: &Principal, name: &str, id: &str) -> Result<String, Error> {
    match access.client.add_group_member(id, &principal.id).await {
        Ok(()) => Ok(id.to_owned()),
        Err(err) if err.is_not_found() => {
            let found = resolve(access, name).await?;
            if found == id {
                return Err(not_found(name));
            }
            access.client.add_group_member(&found, &principal.id).await.map_err(|e| gone(name, e))?;
            Ok(found)
        }
        Err(err) => Err(err.into()),
    }
}

/// The id of the group named `name`.
async fn resolve(access: &Access, name: &str) -> Result<String, Error> {
    let found = access.client.find_group_by_display_name(name).await?.ok_or_else(|| not_found(name))?;
    // The name the group really has must be granted too, not only the name the spec wrote.
    access.grants.check_groups(std::slice::from_ref(&found.display_name))?;
    Ok(found.id)
}

fn not_found(name: &str) -> Error {
    Error::NeedsAttention {
        reason: Reason::GroupNotFound,
        message: format!(
            "No account group is named {name:?}; create it (the operator never creates groups) or fix spec.groups"
        ),
    }
}

fn gone(name: &str, err: crate::databricks::Error) -> Error {
    if err.is_not_found() { not_found(name) } else { err.into() }
}

/// Writes `groups` into the principal's claim when it differs.
async fn record(
    ctx: &Context,
    principal: &mut Principal,
    mut groups: Vec<ClaimedGroup>,
) -> Result<(), Error> {
    groups.sort_by(|a, b| a.id.cmp(&b.id));
    groups.dedup_by(|a, b| a.id == b.id);
    if groups != principal.claim.spec.groups {
        let mut claim = principal.claim.clone();
        claim.spec.groups = groups;
        principal.claim = ctx.claims.written(&claim).await?;
    }
    Ok(())
}
