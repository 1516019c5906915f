//! The principal's claim: one DatabricksClaim per principal of the account, named by its application id, held by
//! the object that created or adopted it. Creating the claim is what makes an object the principal's owner; a
//! claim whose object is gone lapses, and what was added under it is removed before anyone else holds it.

use kube::{Api, ResourceExt, runtime::events::EventType};

use crate::{
    controllers::{
        rules::{
            claims::{self, LABEL_OWNER_NAMESPACE, LABEL_PRINCIPAL},
            error::Error,
            limits::Counted,
            ownership,
            reason::Reason,
        },
        runtime::context::Context,
        services::{accounts::Access, release},
    },
    crd::{ClaimedKind, ClaimedObject, DatabricksClaim, ServicePrincipal, UsedBy},
    databricks::types::ServicePrincipal as RemotePrincipal,
};

/// The claim `principal` should have for `sp` (new: not yet written).
fn wanted(sp: &ServicePrincipal, access: &Access, principal: &RemotePrincipal) -> DatabricksClaim {
    let account_id = &access.account.spec.account_id;
    let remote = ClaimedObject {
        kind: ClaimedKind::ServicePrincipal,
        id: Some(principal.id.clone()),
        application_id: Some(principal.application_id.to_lowercase()),
        ..ClaimedObject::default()
    };
    let name = claims::principal_claim_name(account_id, &principal.application_id);
    let mut claim = claims::new_claim(
        &name,
        account_id,
        claims::owner_of(sp),
        remote,
        &[(LABEL_PRINCIPAL, &principal.id)],
    );
    claim.spec.adopted = sp.spec.adopt.is_some();
    claim
}

/// Makes this object the holder of `principal`'s claim, unless another object that still exists holds it. A
/// claim whose object is gone is taken over only after what was added under it is removed.
pub async fn claim(
    sp: &ServicePrincipal,
    ctx: &Context,
    access: &Access,
    principal: &RemotePrincipal,
) -> Result<DatabricksClaim, Error> {
    let wanted = wanted(sp, access, principal);
    let uid = sp.uid().unwrap_or_default();
    let existing = match ctx.claims.get(&wanted.name_any()).await? {
        // Already this object's: nothing to write (the common case, every full pass), unless it lacks the id (a
        // claim moved from an earlier version's ledger).
        Some(existing)
            if claims::held_by(&existing, &uid) && (!existing.spec.releasing || !existing.spec.adopted) =>
        {
            return fill_id(ctx, existing, principal).await;
        }
        Some(existing) => existing,
        None => match ctx.claims.create(&wanted).await? {
            Ok(created) => return Ok(created),
            Err(existing) if claims::held_by(&existing, &uid) => return Ok(existing),
            Err(existing) => existing,
        },
    };
    let app_id = &principal.application_id;
    if !existing.spec.releasing && owner_exists(ctx, &existing).await? {
        let owner = &existing.spec.owner;
        let other = format!("{}/{}", owner.namespace, owner.name);
        if sp.spec.adopt.is_none() {
            return Err(Error::Waiting {
                reason: Reason::IdentityMismatch,
                message: format!(
                    "Service principal {app_id}, tagged as this object's, is claimed by {other}; nothing was changed in Databricks"
                ),
            });
        }
        let how = if existing.spec.adopted { "is already adopted by" } else { "was created for" };
        return Err(ownership::adoption_refused(app_id, &format!("it {how} {other}")).into());
    }
    // Its object is gone (or it was being released): what it added goes first, then the claim is this object's.
    release::strip(&ctx.claims, &ctx.assignments, &access.client, &existing).await?;
    let mut taken = existing.clone();
    taken.spec = wanted.spec;
    taken.metadata.labels = wanted.metadata.labels;
    ctx.claims.replace(&taken).await?.ok_or_else(|| Error::Waiting {
        reason: Reason::AdoptionNotRecorded,
        message: format!("The claim on {app_id} changed while it was taken over; retrying"),
    })
}

/// The claim held, with the principal's id (a claim moved from an earlier version's ledger lacks it) and without a
/// revocation the grant's return ended.
async fn fill_id(
    ctx: &Context,
    claim: DatabricksClaim,
    principal: &RemotePrincipal,
) -> Result<DatabricksClaim, Error> {
    let revoked = claim.spec.revoked_since.is_some() || claim.spec.releasing;
    if claim.spec.remote.id.as_deref() == Some(principal.id.as_str()) && !revoked {
        return Ok(claim);
    }
    let mut filled = claim.clone();
    filled.spec.revoked_since = None;
    filled.spec.releasing = false;
    filled.spec.remote.id = Some(principal.id.clone());
    filled
        .metadata
        .labels
        .get_or_insert_default()
        .insert(LABEL_PRINCIPAL.to_owned(), claims::label_value(&principal.id));
    Ok(ctx.claims.replace(&filled).await?.unwrap_or(claim))
}

/// At most the delegation's cap of principals per namespace (created and adopted), before a new one is made or
/// adopted.
pub async fn check_count(sp: &ServicePrincipal, ctx: &Context, access: &Access) -> Result<(), Error> {
    if access.grants.caps().cap(Counted::ServicePrincipals).is_none() {
        return Ok(());
    }
    let namespace = sp.namespace().unwrap_or_default();
    let account_id = &access.account.spec.account_id;
    let selector =
        claims::selector(ClaimedKind::ServicePrincipal, account_id, &[(LABEL_OWNER_NAMESPACE, &namespace)]);
    let uid = sp.uid().unwrap_or_default();
    let have = ctx.claims.list(&selector).await?.iter().filter(|c| c.spec.owner.uid != uid).count();
    access.grants.check_count(Counted::ServicePrincipals, have).map_err(Error::from)
}

/// The application ids of the principals this object's namespace holds on the account (created or adopted): those
/// `usedBy` may always name. Read only when an entry names a principal the delegation does not already allow.
pub async fn own_applications(
    sp: &ServicePrincipal,
    ctx: &Context,
    access: &Access,
    entries: &[UsedBy],
) -> Result<Vec<String>, Error> {
    let needed = entries.iter().any(|e| !access.grants.used_by_allowed(&e.principal, &[]));
    if !needed {
        return Ok(Vec::new());
    }
    let namespace = sp.namespace().unwrap_or_default();
    let account_id = &access.account.spec.account_id;
    let selector =
        claims::selector(ClaimedKind::ServicePrincipal, account_id, &[(LABEL_OWNER_NAMESPACE, &namespace)]);
    let held = ctx.claims.list(&selector).await?;
    Ok(held
        .into_iter()
        .filter(|c| c.spec.owner.namespace == namespace)
        .filter_map(|c| c.spec.remote.application_id)
        .collect())
}

/// Whether the object a claim names still exists as that object (and, for an adoption, still asks to adopt the
/// principal). Read from the apiserver, never from a cache that may lag.
pub async fn owner_exists(ctx: &Context, claim: &DatabricksClaim) -> Result<bool, Error> {
    let owner = &claim.spec.owner;
    let api: Api<ServicePrincipal> = Api::namespaced(ctx.client.clone(), &owner.namespace);
    let found = api.get_opt(&owner.name).await.map_err(|e| {
        Error::kube(format!("reading ServicePrincipal {}/{}", owner.namespace, owner.name), e)
    })?;
    let app_id = claim.spec.remote.application_id.as_deref().unwrap_or_default();
    Ok(found.is_some_and(|sp| {
        sp.uid().as_deref() == Some(owner.uid.as_str())
            && (!claim.spec.adopted
                || sp.spec.adopt.is_some_and(|a| a.application_id.eq_ignore_ascii_case(app_id)))
    }))
}

/// This object's claims on principals (by its UID; whichever account they are in).
pub async fn own_claims(sp: &ServicePrincipal, ctx: &Context) -> Result<Vec<DatabricksClaim>, Error> {
    let uid = sp.uid().unwrap_or_default();
    let selector = format!("{}={}", claims::LABEL_OWNER_UID, claims::label_value(&uid));
    let owned = ctx.claims.list(&selector).await?;
    Ok(owned
        .into_iter()
        .filter(|c| c.spec.remote.kind == ClaimedKind::ServicePrincipal && claims::held_by(c, &uid))
        .collect())
}

/// Drops this object's claims (its object is going away), removing first what was added under an adoption.
/// Without the account's client (`access`), an adoption's claim is left in place: nothing added under it may pass
/// to another object, so whoever holds the principal next (or the sweep of lapsed claims) removes it first.
pub async fn release_claim(
    sp: &ServicePrincipal,
    ctx: &Context,
    access: Option<&Access>,
) -> Result<(), Error> {
    for claim in own_claims(sp, ctx).await? {
        match access {
            Some(access) if claim.spec.adopted => {
                let stripped = release::strip(&ctx.claims, &ctx.assignments, &access.client, &claim).await?;
                if !stripped.is_empty() {
                    let app_id = claim.spec.remote.application_id.as_deref().unwrap_or("?");
                    let note =
                        format!("Released adopted principal {app_id}: removed {}", stripped.describe());
                    ctx.event(sp, EventType::Normal, "Released", "Release", &note).await;
                }
            }
            None if claim.spec.adopted => continue,
            _ => {}
        }
        ctx.claims.delete(&claim).await?;
    }
    Ok(())
}
