//! Which remote principal a ServicePrincipal stands for, proven before any write: a principal it created (tagged
//! with its UID, found by the tag, created when absent) or one it adopted under a grant, and in both cases held
//! by the object's DatabricksClaim, so no other object adopts it too. An id read from status is only a hint: it is used once Databricks
//! confirms the tag or the adoption target, and never for a deletion otherwise. Also the principal's own name and
//! active flag.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::{ResourceExt, runtime::events::EventType};

use super::adoption;
use crate::{
    controllers::{
        rules::{claims, error::Error, ownership, reason::Reason},
        runtime::context::Context,
        services::accounts::Access,
    },
    crd::{DatabricksClaim, ServicePrincipal, ServicePrincipalStatus},
    databricks::{
        self,
        types::{NewServicePrincipal, PatchOperation, ServicePrincipal as RemotePrincipal},
    },
};

/// The remote principal, and whether this pass created it (then it has no secrets and no assignments yet:
/// nothing to read back).
pub struct Principal {
    pub remote: RemotePrincipal,
    pub created: bool,
    /// This object's claim on it: the operator's record of what it did to the principal.
    pub claim: DatabricksClaim,
    /// When to look for a racing create's duplicate again (a created principal, while searches may lag).
    pub wake: Option<Duration>,
}

impl std::ops::Deref for Principal {
    type Target = RemotePrincipal;
    fn deref(&self) -> &RemotePrincipal {
        &self.remote
    }
}

/// The principal this object stands for: from status (once confirmed), by adoption, or found by its tag, or
/// created (a principal made by this pass has no secrets and no assignments yet).
pub async fn ensure_principal(
    sp: &ServicePrincipal,
    ctx: &Context,
    access: &Access,
    status: &mut ServicePrincipalStatus,
) -> Result<Principal, Error> {
    let (remote, created) = match recorded_principal(sp, ctx, access, status).await? {
        Some(remote) => (remote, false),
        None => {
            let found = adopt_or_create(sp, ctx, access).await?;
            // Not written at once: if the pass stops before its status write, the next one finds the principal
            // by its tag (or adoption target) again.
            status.id = Some(found.0.id.clone());
            status.application_id = Some(found.0.application_id.clone());
            found
        }
    };
    // Adopted: allowed (checked on every pass, before any write), then claimed. Created: claimed.
    if sp.spec.adopt.is_some()
        && let Some(refusal) = ctx.principals.adoption_refusal(sp, access, &remote, &ctx.assignments).await?
    {
        // A principal this object holds that no longer fits the grant: what it added goes, then the claim.
        return Err(super::revocation::adoption_revoked(sp, ctx, access, refusal).await?);
    }
    let claim = adoption::claim(sp, ctx, access, &remote).await?;
    let principal = Principal { remote, created, claim, wake: None };
    if sp.spec.adopt.is_some() || principal.claim.spec.adopted {
        return Ok(principal);
    }
    settle_duplicates(sp, ctx, access, status, principal).await
}

/// A principal this object created, while a search by tag may still miss a racing create: looked for again, the
/// one every replica keeps is held and the others are deleted (see [`ownership::duplicate_check`]).
async fn settle_duplicates(
    sp: &ServicePrincipal,
    ctx: &Context,
    access: &Access,
    status: &mut ServicePrincipalStatus,
    principal: Principal,
) -> Result<Principal, Error> {
    let now = Timestamp::now();
    let claimed = principal.claim.creation_timestamp().map_or(now, |t| t.0);
    let check = ownership::duplicate_check(claimed, now, ctx.config.search_lag);
    let principal = Principal { wake: check.wake, ..principal };
    // The pass that created it searched just before: a racing create shows only once the lag has passed.
    if !check.search || principal.created {
        return Ok(principal);
    }
    let uid = sp.uid().unwrap_or_default();
    let mut tagged = access.client.find_service_principals_by_external_id(&uid).await?;
    // A search that does not show this one yet still counts it.
    tagged.push(principal.remote.clone());
    let keep = keep_one(sp, ctx, access, tagged).await?;
    if keep.id == principal.id {
        return Ok(principal);
    }
    status.id = Some(keep.id.clone());
    status.application_id = Some(keep.application_id.clone());
    forget_secrets(status);
    let claim = adoption::claim(sp, ctx, access, &keep).await?;
    Ok(Principal { remote: keep, created: false, claim, wake: principal.wake })
}

/// The principal's secrets went with it: the Secret is refreshed from the one kept.
fn forget_secrets(status: &mut ServicePrincipalStatus) {
    if let Some(credentials) = status.credentials.as_mut() {
        credentials.secret_id = None;
        credentials.retiring.clear();
    }
}

/// The principal status records, once Databricks confirms it is this object's own. `None`: nothing recorded, or
/// it was deleted outside the operator (then status forgets it and its secrets).
async fn recorded_principal(
    sp: &ServicePrincipal,
    ctx: &Context,
    access: &Access,
    status: &mut ServicePrincipalStatus,
) -> Result<Option<RemotePrincipal>, Error> {
    let Some(id) = status.id.clone() else { return Ok(None) };
    let client = &access.client;
    let uid = sp.uid().unwrap_or_default();
    let adopt = sp.spec.adopt.as_ref().map(|a| a.application_id.as_str());
    match client.get_service_principal(&id).await {
        Ok(principal) if ownership::stands_for(&principal, &uid, adopt) => Ok(Some(principal)),
        Ok(_) | Err(databricks::Error::InvalidId { .. }) => {
            let error = identity_mismatch(sp, ctx, status, &id).await;
            // Record the object's own principal at once (found by its tag), so a deletion right now still finds
            // what is really its own.
            if adopt.is_none()
                && let Some(own) =
                    client.find_service_principals_by_external_id(&uid).await?.into_iter().next()
            {
                status.id = Some(own.id);
                status.application_id = Some(own.application_id);
            }
            Err(error)
        }
        Err(err) if err.is_not_found() => {
            // The next step finds the object's own principal again (its tag, its adoption target) or recreates it.
            let message = format!(
                "Service principal {id} is gone (deleted outside the operator, or a duplicate another replica \
                 removed); finding or recreating this object's own"
            );
            ctx.event(sp, EventType::Warning, "RemoteDeleted", "Recreate", &message).await;
            status.id = None;
            status.application_id = None;
            forget_secrets(status);
            Ok(None)
        }
        Err(err) => Err(err.into()),
    }
}

/// The adoption target (granted and found), or the principal tagged with this object's UID, or a new one
/// (`true`).
async fn adopt_or_create(
    sp: &ServicePrincipal,
    ctx: &Context,
    access: &Access,
) -> Result<(RemotePrincipal, bool), Error> {
    let Some(adopt) = &sp.spec.adopt else {
        return find_or_create(sp, ctx, access).await;
    };
    let application_id = adopt.application_id.as_str();
    // The grant first: whether an ungranted id exists is none of the namespace's business.
    if let Some(refusal) = ownership::ungranted_adoption(&access.grants, application_id) {
        return Err(refusal.into());
    }
    let principal =
        access.client.find_service_principal_by_application_id(application_id).await?.ok_or_else(|| {
            Error::NeedsAttention {
                reason: Reason::AdoptTargetNotFound,
                message: format!("No service principal has application id {application_id}; fix spec.adopt"),
            }
        })?;
    // The namespace's cap counts the adoption once it is claimed.
    adoption::check_count(sp, ctx, access).await?;
    Ok((principal, false))
}

/// Status names a principal this object does not stand for (edited by hand, or by someone who may write
/// `/status`): touch nothing, forget the id, and say so. The next pass finds the object's own principal by its
/// tag or adoption target.
async fn identity_mismatch(
    sp: &ServicePrincipal,
    ctx: &Context,
    status: &mut ServicePrincipalStatus,
    id: &str,
) -> Error {
    let message = format!(
        "status.id {id:?} names a service principal this object does not own (not tagged with its UID, not its \
         adoption target); it was not touched. The operator goes back to its own principal"
    );
    ctx.event(sp, EventType::Warning, "IdentityMismatch", "Verify", &message).await;
    status.id = None;
    status.application_id = None;
    Error::Waiting { reason: Reason::IdentityMismatch, message }
}

/// The principal tagged with this object's UID, or a new one (`true`).
async fn find_or_create(
    sp: &ServicePrincipal,
    ctx: &Context,
    access: &Access,
) -> Result<(RemotePrincipal, bool), Error> {
    let client = &access.client;
    let uid = sp.uid().unwrap_or_default();
    let tagged = client.find_service_principals_by_external_id(&uid).await?;
    if !tagged.is_empty() {
        return Ok((keep_one(sp, ctx, access, tagged).await?, false));
    }
    adoption::check_count(sp, ctx, access).await?;
    let display_name = sp.spec.display_name.clone().unwrap_or_else(|| sp.name_any());
    let (created, fresh) = match client
        .create_service_principal(&NewServicePrincipal::new(&display_name, sp.spec.active, Some(&uid)))
        .await
    {
        Ok(created) => (created, true),
        // The answer was lost but the write may have happened: look again before trying anything else.
        Err(err) if matches!(err, databricks::Error::Transport { .. }) => {
            let found = client.find_service_principals_by_external_id(&uid).await?;
            (found.into_iter().next().ok_or(err)?, false)
        }
        Err(err) => return Err(err.into()),
    };
    ctx.fail_point("after-create-principal")?;
    let message = format!("Created service principal {} ({})", created.id, created.application_id);
    ctx.event(sp, EventType::Normal, "Created", "Create", &message).await;
    Ok((created, fresh))
}

/// Keeps one of the principals tagged with this object's UID (see [`ownership::keep_one`]) and deletes the rest.
async fn keep_one(
    sp: &ServicePrincipal,
    ctx: &Context,
    access: &Access,
    tagged: Vec<RemotePrincipal>,
) -> Result<RemotePrincipal, Error> {
    let (keep, duplicates) = ownership::keep_one(tagged).ok_or_else(|| Error::Waiting {
        reason: Reason::ServicePrincipalNotReady,
        message: "no service principal is tagged with this object yet".to_owned(),
    })?;
    let uid = sp.uid().unwrap_or_default();
    for duplicate in duplicates {
        // `false`: another replica deleting the same duplicate got there first.
        let deleted = access.client.delete_service_principal(&duplicate.id).await?;
        // This object's claim on it, if a pass got that far: the principal is gone, so is what it held.
        let name = claims::principal_claim_name(&access.account.spec.account_id, &duplicate.application_id);
        if let Some(claim) = ctx.claims.get(&name).await?
            && claims::held_by(&claim, &uid)
        {
            ctx.claims.delete(&claim).await?;
        }
        if !deleted {
            continue;
        }
        let message = format!(
            "Deleted duplicate service principal {} (a create that raced this object's own {}; kept the lowest id)",
            duplicate.id, keep.id
        );
        ctx.event(sp, EventType::Warning, "DuplicateDeleted", "Delete", &message).await;
    }
    Ok(keep)
}

/// Display name and active flag as the spec says, as far as the object may change them (see
/// [`ownership::identity_changes`]).
pub async fn sync_identity(
    sp: &ServicePrincipal,
    ctx: &Context,
    access: &Access,
    principal: &RemotePrincipal,
) -> Result<(), Error> {
    let adoption = sp.spec.adopt.as_ref().map(|a| access.grants.adoption(&a.application_id));
    let changes = ownership::identity_changes(
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
