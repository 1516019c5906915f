//! Which remote principal a ServicePrincipal stands for, proven before any write: a principal it created (tagged
//! with its UID, found by the tag, created when absent) or one it adopted under a grant, claimed in the account's
//! ledger so no other object adopts it too. An id read from status is only a hint: it is used once Databricks
//! confirms the tag or the adoption target, and never for a deletion otherwise.

use std::sync::Arc;

use kube::{
    Api, ResourceExt,
    runtime::{controller::Action, events::EventType},
};

use super::super::{
    Context, Error,
    accounts::Access,
    ledger, lifecycle,
    tenancy::{self, AdoptionFacts, OtherOwner},
};
use crate::{
    crd::{ObjectRecord, PrincipalDeletionPolicy, ServicePrincipal, ServicePrincipalStatus},
    databricks::{
        AccountClient,
        types::{NewServicePrincipal, PatchOperation, ServicePrincipal as RemotePrincipal},
    },
};

/// The principal this object stands for: from status (once confirmed), by adoption, or found by its tag, or
/// created (then `true`: a principal made by this pass has no secrets and no assignments yet).
pub(super) async fn ensure_principal(
    sp: &ServicePrincipal,
    ctx: &Context,
    access: &Access,
    status: &mut ServicePrincipalStatus,
) -> Result<(RemotePrincipal, bool), Error> {
    let client = &access.client;
    let uid = sp.uid().unwrap_or_default();
    let adopt = sp.spec.adopt.as_ref().map(|a| a.application_id.as_str());
    if let Some(id) = status.id.clone() {
        match client.get_service_principal(&id).await {
            Ok(principal) if tenancy::stands_for(&principal, &uid, adopt) => {
                if adopt.is_some() {
                    check_adoption(sp, ctx, access, &principal).await?;
                }
                return Ok((principal, false));
            }
            Ok(_) | Err(crate::databricks::Error::InvalidId { .. }) => {
                let error = identity_mismatch(sp, ctx, status, &id).await;
                // Record the object's own principal at once (found by its tag), so a deletion right now still
                // finds what is really its own.
                if adopt.is_none()
                    && let Some(own) =
                        client.find_service_principals_by_external_id(&uid).await?.into_iter().next()
                {
                    status.id = Some(own.id);
                    status.application_id = Some(own.application_id);
                }
                return Err(error);
            }
            Err(err) if err.is_not_found() => {
                let message =
                    format!("Service principal {id} was deleted outside the operator; recreating it");
                ctx.event(sp, EventType::Warning, "RemoteDeleted", "Recreate", &message).await;
                status.id = None;
                status.application_id = None;
                // Its secrets went with it; the Secret is refreshed below.
                if let Some(credentials) = status.credentials.as_mut() {
                    credentials.secret_id = None;
                    credentials.retiring.clear();
                }
            }
            Err(err) => return Err(err.into()),
        }
    }
    let (principal, created) = match adopt {
        Some(application_id) => {
            // The grant first: whether an ungranted id exists is none of the namespace's business.
            if access.grants.adoption(application_id).is_none() {
                return Err(Error::NeedsAttention {
                    reason: "AdoptRefused",
                    message: format!(
                        "Adopting service principal {application_id} is refused: DatabricksAccount {} does not grant \
                         it to namespace {} (spec.delegations[].adopt). Nothing was changed in Databricks",
                        access.account.name_any(),
                        sp.namespace().unwrap_or_default()
                    ),
                });
            }
            let principal = client
                .find_service_principal_by_application_id(application_id)
                .await?
                .ok_or_else(|| Error::NeedsAttention {
                    reason: "AdoptTargetNotFound",
                    message: format!(
                        "No service principal has application id {application_id}; fix spec.adopt"
                    ),
                })?;
            check_adoption(sp, ctx, access, &principal).await?;
            (principal, false)
        }
        None => find_or_create(sp, ctx, client).await?,
    };
    // Not written at once: if the pass stops before its status write, the next one finds the principal by its
    // tag (or adoption target) again.
    status.id = Some(principal.id.clone());
    status.application_id = Some(principal.application_id.clone());
    Ok((principal, created))
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
    Error::Waiting { reason: "IdentityMismatch", message }
}

/// The principal tagged with this object's UID, or a new one (`true`).
async fn find_or_create(
    sp: &ServicePrincipal,
    ctx: &Context,
    client: &AccountClient,
) -> Result<(RemotePrincipal, bool), Error> {
    let uid = sp.uid().unwrap_or_default();
    let mut tagged = client.find_service_principals_by_external_id(&uid).await?;
    if tagged.is_empty() {
        let display_name = sp.spec.display_name.clone().unwrap_or_else(|| sp.name_any());
        let (created, fresh) = match client
            .create_service_principal(&NewServicePrincipal::new(&display_name, sp.spec.active, Some(&uid)))
            .await
        {
            Ok(created) => (created, true),
            // The answer was lost but the write may have happened: look again before trying anything else.
            Err(err) if matches!(err, crate::databricks::Error::Transport { .. }) => {
                let found = client.find_service_principals_by_external_id(&uid).await?;
                (found.into_iter().next().ok_or(err)?, false)
            }
            Err(err) => return Err(err.into()),
        };
        ctx.fail_point("after-create-principal")?;
        let message = format!("Created service principal {} ({})", created.id, created.application_id);
        ctx.event(sp, EventType::Normal, "Created", "Create", &message).await;
        return Ok((created, fresh));
    }
    // More than one tagged principal can only come from an interrupted create: keep the oldest.
    tagged.sort_by_key(|p| p.id.parse::<i64>().unwrap_or(i64::MAX));
    let keep = tagged.remove(0);
    for duplicate in tagged {
        client.delete_service_principal(&duplicate.id).await?;
        let message =
            format!("Deleted duplicate service principal {} left by an interrupted create", duplicate.id);
        ctx.event(sp, EventType::Warning, "DuplicateDeleted", "Delete", &message).await;
    }
    Ok((keep, false))
}

/// Adoption is allowed (see [`tenancy::adoption_refusal`]) and this object holds the principal's claim.
async fn check_adoption(
    sp: &ServicePrincipal,
    ctx: &Context,
    access: &Access,
    principal: &RemotePrincipal,
) -> Result<(), Error> {
    if let Some(refusal) = adoption_refusal(sp, ctx, access, principal).await? {
        return Err(refusal.into());
    }
    claim(sp, ctx, access, &principal.application_id).await
}

async fn adoption_refusal(
    sp: &ServicePrincipal,
    ctx: &Context,
    access: &Access,
    principal: &RemotePrincipal,
) -> Result<Option<tenancy::Refusal>, Error> {
    let uid = sp.uid().unwrap_or_default();
    let other_owner = match principal.external_id.as_deref().filter(|tag| !tag.is_empty()) {
        Some(tag) => {
            ctx.principal_with_uid(tag, &uid).await?.map(|object| OtherOwner { object, created: true })
        }
        None => None,
    };
    let operator = access.client.application_id();
    let facts = AdoptionFacts {
        principal,
        operator_application_id: operator.as_deref(),
        other_owner: other_owner.as_ref(),
    };
    Ok(tenancy::adoption_refusal(&access.grants, facts))
}

fn object_name(record: &ObjectRecord) -> String {
    format!("{}/{}", record.namespace, record.name)
}

/// Records this object as the adopter of `application_id`, unless another object that still exists holds it.
async fn claim(
    sp: &ServicePrincipal,
    ctx: &Context,
    access: &Access,
    application_id: &str,
) -> Result<(), Error> {
    let key = application_id.to_lowercase();
    let account = access.account.name_any();
    let mine = ObjectRecord {
        namespace: sp.namespace().unwrap_or_default(),
        name: sp.name_any(),
        uid: sp.uid().unwrap_or_default(),
    };
    let recorded = ledger::read(ctx, &account).await?.adoptions.get(&key).cloned();
    let alive = match &recorded {
        // Already this object's: nothing to write (the common case, every full pass).
        Some(record) if record.uid == mine.uid => return Ok(()),
        Some(record) => adopter_exists(ctx, record, application_id).await?,
        None => false,
    };
    let standing = tenancy::adoption_claim(recorded.as_ref(), alive, &mine);
    if standing.uid != mine.uid {
        return Err(adopted_elsewhere(application_id, &object_name(standing)));
    }
    let stale = recorded.as_ref().map(|r| r.uid.clone());
    let written = ledger::update(ctx, &account, |ledger| match ledger.adoptions.get(&key) {
        Some(record) if record.uid == mine.uid => false,
        // Someone else claimed it since the read: theirs stands.
        Some(record) if Some(&record.uid) != stale.as_ref() => false,
        _ => {
            ledger.adoptions.insert(key.clone(), mine.clone());
            true
        }
    })
    .await?;
    match written.adoptions.get(&key) {
        Some(record) if record.uid == mine.uid => Ok(()),
        Some(record) => Err(adopted_elsewhere(application_id, &object_name(record))),
        None => Err(Error::Waiting {
            reason: "AdoptionNotRecorded",
            message: format!("The adoption of {application_id} could not be recorded yet; retrying"),
        }),
    }
}

fn adopted_elsewhere(application_id: &str, object: &str) -> Error {
    Error::NeedsAttention {
        reason: "AdoptRefused",
        message: format!(
            "Adopting service principal {application_id} is refused: it is already adopted by {object}. Nothing \
             was changed in Databricks"
        ),
    }
}

/// Whether the object a claim names still exists as that object and still asks to adopt the principal.
async fn adopter_exists(ctx: &Context, record: &ObjectRecord, application_id: &str) -> Result<bool, Error> {
    let api: Api<ServicePrincipal> = Api::namespaced(ctx.client.clone(), &record.namespace);
    let found = api.get_opt(&record.name).await.map_err(|e| {
        Error::kube(format!("reading ServicePrincipal {}/{}", record.namespace, record.name), e)
    })?;
    Ok(found.is_some_and(|sp| {
        sp.uid().as_deref() == Some(record.uid.as_str())
            && sp.spec.adopt.is_some_and(|a| a.application_id.eq_ignore_ascii_case(application_id))
    }))
}

/// Drops this object's adoption claim (its object is going away).
async fn release_claim(sp: &ServicePrincipal, ctx: &Context) -> Result<(), Error> {
    let Some(adopt) = &sp.spec.adopt else { return Ok(()) };
    let key = adopt.application_id.to_lowercase();
    let uid = sp.uid().unwrap_or_default();
    match ledger::update(ctx, &sp.spec.account_ref.name, |ledger| {
        if ledger.adoptions.get(&key).is_some_and(|r| r.uid == uid) {
            ledger.adoptions.remove(&key);
            true
        } else {
            false
        }
    })
    .await
    {
        // Without its account there is no claim to drop.
        Err(Error::Account { reason: "AccountNotFound", .. }) => Ok(()),
        other => other.map(drop),
    }
}

/// Deletion: act (per the deletion policy, lowered to the adoption grant) only on a principal confirmed to be
/// this object's own; a status id that is not is left alone.
pub(super) async fn cleanup(sp: Arc<ServicePrincipal>, ctx: &Context) -> Result<Action, Error> {
    // The cached object may lag the last pass's status (a secret just minted): read it fresh.
    let api = lifecycle::api(ctx, sp.as_ref());
    let sp = match api.get_opt(&sp.name_any()).await {
        Ok(Some(fresh)) if fresh.uid() == sp.uid() => Arc::new(fresh),
        _ => sp,
    };
    let requested = super::deletion_policy(&sp);
    let id = sp.status.as_ref().and_then(|s| s.id.clone());
    let adopted = sp.spec.adopt.is_some();
    // Without a recorded id only a created principal can exist (a create whose status write was lost).
    if id.is_none() && (adopted || requested == PrincipalDeletionPolicy::Orphan) {
        release_claim(&sp, ctx).await?;
        return Ok(Action::await_change());
    }
    let remote = format!("service principal {}", id.as_deref().unwrap_or("(found by its tag)"));
    // The orphan annotation is the escape hatch: no Databricks call at all. An adopted principal left by its
    // policy still loses what this object added to it (below).
    let escape = lifecycle::orphaned_by_annotation(sp.as_ref());
    let orphan = escape || (requested == PrincipalDeletionPolicy::Orphan && !adopted);
    if !lifecycle::may_delete_remote(sp.as_ref(), ctx, orphan, &remote).await? {
        release_claim(&sp, ctx).await?;
        return Ok(Action::await_change());
    }
    let namespace = sp.namespace().unwrap_or_default();
    let access = match ctx.accounts.client_for(ctx, &sp.spec.account_ref.name, &namespace).await {
        Ok(access) => access,
        // The namespace may no longer use the account (or it is gone): act on nothing, and never block the
        // object's (or its namespace's) deletion.
        Err(err) if id.is_none() || lifecycle::cleanup_abandons(&err) => {
            lifecycle::abandon(sp.as_ref(), ctx, &remote, &err).await;
            release_claim(&sp, ctx).await?;
            return Ok(Action::await_change());
        }
        Err(err) => return Err(err),
    };
    let principal = match own_principal(&sp, ctx, &access, id.as_deref()).await {
        Ok(Some(principal)) => principal,
        Ok(None) => {
            release_claim(&sp, ctx).await?;
            return Ok(Action::await_change());
        }
        // Nothing was recorded and Databricks refuses the look-up: there is nothing known to act on.
        Err(Error::Databricks(err)) if id.is_none() && !err.is_retryable() => {
            return Ok(Action::await_change());
        }
        Err(err) => return Err(err),
    };
    let held = holds_claim(&sp, ctx).await?;
    let policy = match &sp.spec.adopt {
        None => requested,
        Some(adopt) => {
            // An adoption no longer allowed, or held by another object, deletes nothing.
            let allowed = match adoption_refusal(&sp, ctx, &access, &principal).await? {
                None if held => access.grants.adoption(&adopt.application_id),
                _ => None,
            };
            let policy = tenancy::adopted_deletion(requested, allowed);
            if policy != requested {
                let message = format!(
                    "deletionPolicy {requested:?} lowered to {policy:?}: the adoption grant of {} allows no more",
                    adopt.application_id
                );
                ctx.event(sp.as_ref(), EventType::Warning, "DeletionLimited", "Delete", &message).await;
            }
            policy
        }
    };
    let client = &access.client;
    let id = principal.id;
    // What this object added to a principal it adopted goes when the object goes, whatever happens to the
    // principal: the secrets it minted and the federation policies its namespace's TrustPolicies put on it.
    if held && policy != PrincipalDeletionPolicy::Delete {
        let creds = sp.status.as_ref().and_then(|s| s.credentials.clone()).unwrap_or_default();
        for secret in creds.secret_id.iter().chain(creds.retiring.iter().map(|r| &r.secret_id)) {
            client.delete_secret(&id, secret).await?;
        }
        super::super::trust_policy::remove_policies_on(ctx, client, &sp, &id).await?;
        // Without the claim no TrustPolicy pass confirms the principal any more; one that did just before may
        // have created a policy since the removal above, so look once more.
        release_claim(&sp, ctx).await?;
        super::super::trust_policy::remove_policies_on(ctx, client, &sp, &id).await?;
    }
    match policy {
        PrincipalDeletionPolicy::Delete => {
            client.delete_service_principal(&id).await?;
            let message = format!("Deleted service principal {id}");
            ctx.event(sp.as_ref(), EventType::Normal, "Deleted", "Delete", &message).await;
        }
        PrincipalDeletionPolicy::Deactivate => {
            match client.patch_service_principal(&id, &[PatchOperation::replace("active", false)]).await {
                Err(err) if !err.is_not_found() => return Err(err.into()),
                _ => {}
            }
            if sp.spec.adopt.is_none() {
                let creds = sp.status.as_ref().and_then(|s| s.credentials.clone()).unwrap_or_default();
                for secret in creds.secret_id.iter().chain(creds.retiring.iter().map(|r| &r.secret_id)) {
                    client.delete_secret(&id, secret).await?;
                }
            }
            let message = format!("Deactivated service principal {id}");
            ctx.event(sp.as_ref(), EventType::Normal, "Deactivated", "Delete", &message).await;
        }
        PrincipalDeletionPolicy::Orphan => {
            let message = format!("Left service principal {id} in Databricks");
            ctx.event(sp.as_ref(), EventType::Normal, "Orphaned", "Delete", &message).await;
        }
    }
    release_claim(&sp, ctx).await?;
    Ok(Action::await_change())
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
        Ok(principal) if tenancy::stands_for(&principal, &uid, adopt) => return Ok(Some(principal)),
        Err(err) if err.is_not_found() => return Ok(None),
        Ok(_) | Err(crate::databricks::Error::InvalidId { .. }) => {
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

/// Whether the account's ledger names this object as the adopter of its principal.
async fn holds_claim(sp: &ServicePrincipal, ctx: &Context) -> Result<bool, Error> {
    let Some(adopt) = &sp.spec.adopt else { return Ok(false) };
    let ledger = ledger::read(ctx, &sp.spec.account_ref.name).await?;
    let uid = sp.uid().unwrap_or_default();
    Ok(ledger.adoptions.get(&adopt.application_id.to_lowercase()).is_some_and(|r| r.uid == uid))
}

/// The principal a ServicePrincipal's status names, once Databricks confirms it is that object's own (its tag, or
/// its adoption target with the claim held and still granted to `access`'s namespace). For objects that act on
/// another object's principal (TrustPolicy), which must not trust that object's status either.
pub async fn confirmed_principal(
    ctx: &Context,
    access: &Access,
    sp: &ServicePrincipal,
) -> Result<RemotePrincipal, Error> {
    let name = sp.name_any();
    let not_ready = || Error::Waiting {
        reason: "ServicePrincipalNotReady",
        message: format!("ServicePrincipal {name} has no confirmed Databricks id yet; waiting for it"),
    };
    let Some(id) = sp.status.as_ref().and_then(|s| s.id.clone()) else { return Err(not_ready()) };
    let principal = match access.client.get_service_principal(&id).await {
        Ok(principal) => principal,
        Err(err) if err.is_not_found() => return Err(not_ready()),
        Err(crate::databricks::Error::InvalidId { .. }) => return Err(not_ready()),
        Err(err) => return Err(err.into()),
    };
    let uid = sp.uid().unwrap_or_default();
    let adopt = sp.spec.adopt.as_ref().map(|a| a.application_id.as_str());
    let confirmed = tenancy::stands_for(&principal, &uid, adopt)
        && match adopt {
            None => true,
            // Still a principal it may adopt (not since made an admin or the operator's identity), and its claim.
            Some(_) => {
                adoption_refusal(sp, ctx, access, &principal).await?.is_none() && holds_claim(sp, ctx).await?
            }
        };
    if !confirmed {
        return Err(Error::Waiting {
            reason: "ServicePrincipalMismatch",
            message: format!(
                "ServicePrincipal {name}'s status names principal {id:?}, which is not that object's own; nothing \
                 was changed in Databricks. Waiting for the ServicePrincipal to find its own principal"
            ),
        });
    }
    Ok(principal)
}
