//! Deletion of a ServicePrincipal: act (per the deletion policy, lowered to the adoption grant) only on a
//! principal confirmed to be this object's own; a status id that is not is left alone. What the object added to
//! a principal it adopted goes with the object, whatever happens to the principal.

use std::sync::Arc;

use kube::{
    ResourceExt,
    runtime::{controller::Action, events::EventType},
};

use super::{adoption::release_claim, credentials::delete_recorded_secrets, revocation};
use crate::{
    controllers::{
        rules::{
            error::Error,
            meta::{is_paused, orphaned_by_annotation},
            ownership,
            reason::Reason,
        },
        runtime::{context::Context, deletion, lifecycle},
        services::{accounts::Access, federation},
    },
    crd::{PrincipalDeletionPolicy, ServicePrincipal},
    databricks::{
        self, AccountClient,
        types::{PatchOperation, ServicePrincipal as RemotePrincipal},
    },
};

/// The deletion policy the object asks for: the orphan annotation, then the spec, then the default (Delete for
/// created principals, Orphan for adopted ones). An adoption grant may lower it (see [`deletion_for`]).
pub fn deletion_policy(sp: &ServicePrincipal) -> PrincipalDeletionPolicy {
    if orphaned_by_annotation(sp) {
        return PrincipalDeletionPolicy::Orphan;
    }
    sp.spec.deletion_policy.unwrap_or(if sp.spec.adopt.is_some() {
        PrincipalDeletionPolicy::Orphan
    } else {
        PrincipalDeletionPolicy::Delete
    })
}

pub async fn cleanup(sp: Arc<ServicePrincipal>, ctx: &Context) -> Result<Action, Error> {
    // The cached object may lag the last pass's status (a secret just minted): read it fresh.
    let api = lifecycle::api(ctx, sp.as_ref());
    let sp = match api.get_opt(&sp.name_any()).await {
        Ok(Some(fresh)) if fresh.uid() == sp.uid() => Arc::new(fresh),
        _ => sp,
    };
    let namespace = sp.namespace().unwrap_or_default();
    let access = ctx.accounts.client_for(&sp.spec.account_ref.name, &namespace).await;
    // The account no longer allows the namespace: what it was granted is revoked, not abandoned.
    if access.as_ref().is_err_and(|e| e.reason() == Reason::NamespaceNotAllowed) {
        revocation::namespace_removed(&sp, ctx, true).await?;
        return Ok(Action::await_change());
    }
    let requested = requested_policy(&sp, ctx, access.as_ref().ok()).await;
    let id = sp.status.as_ref().and_then(|s| s.id.clone());
    let adopted = sp.spec.adopt.is_some();
    // Without a recorded id only a created principal can exist (a create whose status write was lost).
    if id.is_none() && (adopted || requested == PrincipalDeletionPolicy::Orphan) {
        release_claim(&sp, ctx, access.as_ref().ok()).await?;
        return Ok(Action::await_change());
    }
    let remote = format!("service principal {}", id.as_deref().unwrap_or("(found by its tag)"));
    // The orphan annotation is the escape hatch: no call on the principal itself. An adopted principal still loses
    // what this object added to it (now when the account can be reached, else before anyone holds it next).
    let escape = orphaned_by_annotation(sp.as_ref()) && requested == PrincipalDeletionPolicy::Orphan;
    let orphan = escape || (requested == PrincipalDeletionPolicy::Orphan && !adopted);
    let revoking = match access.as_ref() {
        Ok(access) => revoked_while_paused(&sp, ctx, access).await?,
        Err(_) => false,
    };
    if !deletion::may_delete_remote(sp.as_ref(), ctx, orphan, revoking, &remote).await? {
        release_claim(&sp, ctx, access.as_ref().ok()).await?;
        return Ok(Action::await_change());
    }
    let Some((access, principal)) = resolve(&sp, ctx, id.as_deref(), &remote, access).await? else {
        release_claim(&sp, ctx, None).await?;
        return Ok(Action::await_change());
    };
    let held = ctx.principals.holds_claim(&access, &sp).await?;
    let policy = deletion_for(&sp, ctx, &access, &principal, requested, held).await?;
    if held && policy != PrincipalDeletionPolicy::Delete {
        strip_additions(&sp, ctx, &access, &principal.id).await?;
    }
    apply_deletion(&sp, ctx, &access.client, &principal.id, policy).await?;
    release_claim(&sp, ctx, Some(&access)).await?;
    Ok(Action::await_change())
}

/// A pause holds a deletion back, never the platform's revocation: a paused object's assignments above the grant
/// are lowered now, and one whose adoption is no longer granted is released (`true`: the deletion goes on).
async fn revoked_while_paused(sp: &ServicePrincipal, ctx: &Context, access: &Access) -> Result<bool, Error> {
    if !is_paused(sp) {
        return Ok(false);
    }
    let status = sp.status.clone().unwrap_or_default();
    revocation::outside_grant(sp, ctx, access, &status).await?;
    Ok(sp
        .spec
        .adopt
        .as_ref()
        .is_some_and(|adopt| ownership::ungranted_adoption(&access.grants, &adopt.application_id).is_some()))
}

/// The deletion policy asked for, with orphaning a created principal lowered to deletion where the delegation
/// does not allow it (an adopted principal is left as always, without what this object added to it).
async fn requested_policy(
    sp: &ServicePrincipal,
    ctx: &Context,
    access: Option<&Access>,
) -> PrincipalDeletionPolicy {
    let requested = deletion_policy(sp);
    let forbidden = sp.spec.adopt.is_none() && access.is_some_and(|a| !a.grants.caps().allow_orphan);
    if requested != PrincipalDeletionPolicy::Orphan || !forbidden {
        return requested;
    }
    let note =
        "Orphaning is not allowed by the account's delegation (limits.allowOrphan: false): deleting instead";
    ctx.event(sp, EventType::Warning, "DeletionLimited", "Delete", note).await;
    PrincipalDeletionPolicy::Delete
}

/// The account access and the principal to act on; `None` when there is nothing known to act on, or the
/// account is gone, which never blocks the object's (or its namespace's) deletion.
async fn resolve(
    sp: &ServicePrincipal,
    ctx: &Context,
    id: Option<&str>,
    remote: &str,
    access: Result<Access, Error>,
) -> Result<Option<(Access, RemotePrincipal)>, Error> {
    let Some(access) = deletion::or_abandon(sp, ctx, remote, access, id.is_none()).await? else {
        return Ok(None);
    };
    match own_principal(sp, ctx, &access, id).await {
        Ok(Some(principal)) => Ok(Some((access, principal))),
        Ok(None) => Ok(None),
        // Nothing was recorded and Databricks refuses the look-up: there is nothing known to act on.
        Err(Error::Databricks(err)) if id.is_none() && !err.is_retryable() => Ok(None),
        Err(err) => Err(err),
    }
}

/// The policy that applies: an adoption no longer allowed, or held by another object, deletes nothing, and an
/// allowed one does at most what its grant allows (said in a Warning event when that is less than asked for).
async fn deletion_for(
    sp: &ServicePrincipal,
    ctx: &Context,
    access: &Access,
    principal: &RemotePrincipal,
    requested: PrincipalDeletionPolicy,
    held: bool,
) -> Result<PrincipalDeletionPolicy, Error> {
    let Some(adopt) = &sp.spec.adopt else { return Ok(requested) };
    let allowed = match ctx.principals.adoption_refusal(sp, access, principal, &ctx.assignments).await? {
        None if held => access.grants.adoption(&adopt.application_id),
        _ => None,
    };
    let policy = ownership::adopted_deletion(requested, allowed);
    if policy != requested {
        let message = format!(
            "deletionPolicy {requested:?} lowered to {policy:?}: the adoption grant of {} allows no more",
            adopt.application_id
        );
        ctx.event(sp, EventType::Warning, "DeletionLimited", "Delete", &message).await;
    }
    Ok(policy)
}

/// Removes what this object added to the principal it adopted: what its claim records (the secrets it minted,
/// the assignments it made, the federation policies claimed on it; never what the object's status names), then
/// the claim; and the policies an earlier version's TrustPolicies recorded, each proved by the uid Databricks
/// gave it.
async fn strip_additions(
    sp: &ServicePrincipal,
    ctx: &Context,
    access: &Access,
    id: &str,
) -> Result<(), Error> {
    release_claim(sp, ctx, Some(access)).await?;
    federation::remove_policies_on(&ctx.client, &ctx.events, &access.client, sp, id).await
}

/// Carries out `policy` on principal `id`, and says so in an event.
async fn apply_deletion(
    sp: &ServicePrincipal,
    ctx: &Context,
    client: &AccountClient,
    id: &str,
    policy: PrincipalDeletionPolicy,
) -> Result<(), Error> {
    let (reason, message) = match policy {
        PrincipalDeletionPolicy::Delete => {
            client.delete_service_principal(id).await?;
            ("Deleted", format!("Deleted service principal {id}"))
        }
        PrincipalDeletionPolicy::Deactivate => {
            match client.patch_service_principal(id, &[PatchOperation::replace("active", false)]).await {
                Err(err) if !err.is_not_found() => return Err(err.into()),
                _ => {}
            }
            if sp.spec.adopt.is_none() {
                let recorded = sp.status.as_ref().and_then(|s| s.credentials.as_ref());
                delete_recorded_secrets(client, id, recorded).await?;
            }
            ("Deactivated", format!("Deactivated service principal {id}"))
        }
        PrincipalDeletionPolicy::Orphan => ("Orphaned", format!("Left service principal {id} in Databricks")),
    };
    ctx.event(sp, EventType::Normal, reason, "Delete", &message).await;
    Ok(())
}

/// The principal `id` names when it is this object's own; else (edited status) the object's own principal found
/// by its tag or adoption target, if there is one. `None`: nothing of this object's is left to act on.
async fn own_principal(
    sp: &ServicePrincipal,
    ctx: &Context,
    access: &Access,
    id: Option<&str>,
) -> Result<Option<RemotePrincipal>, Error> {
    let client = &access.client;
    let uid = sp.uid().unwrap_or_default();
    let adopt = sp.spec.adopt.as_ref().map(|a| a.application_id.as_str());
    let Some(id) = id else {
        return Ok(client.find_service_principals_by_external_id(&uid).await?.into_iter().next());
    };
    match client.get_service_principal(id).await {
        Ok(principal) if ownership::stands_for(&principal, &uid, adopt) => return Ok(Some(principal)),
        Err(err) if err.is_not_found() => return Ok(None),
        Ok(_) | Err(databricks::Error::InvalidId { .. }) => {
            let message = format!(
                "status.id {id:?} names a service principal this object does not own; it was left untouched"
            );
            ctx.event(sp, EventType::Warning, "IdentityMismatch", "Delete", &message).await;
        }
        Err(err) => return Err(err.into()),
    }
    Ok(match adopt {
        Some(application_id) => client.find_service_principal_by_application_id(application_id).await?,
        None => client.find_service_principals_by_external_id(&uid).await?.into_iter().next(),
    })
}
