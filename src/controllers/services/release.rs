//! Releasing a claim on an adopted principal: what the operator added under it (the OAuth secrets it minted, the
//! federation policies put on the principal, the workspace assignments it made) is removed before anyone else may
//! hold the principal. Driven by the claims alone, never by an object's status.

use super::{assignments, claims::Claims};
use crate::{
    controllers::rules::{
        claims::{LABEL_PRINCIPAL, selector},
        error::Error,
        intent,
        reason::Reason,
    },
    crd::{ClaimedAssignment, ClaimedKind, DatabricksClaim, PrincipalDeletionPolicy, WorkspacePermission},
    databricks::{AccountClient, types::PatchOperation},
};

/// What a release removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stripped {
    pub secrets: usize,
    pub policies: usize,
    pub assignments: usize,
    pub groups: usize,
    pub used_by: usize,
}

impl Stripped {
    pub fn is_empty(&self) -> bool {
        *self == Stripped::default()
    }

    /// "2 OAuth secret(s), 1 federation policy(ies)", for events.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        for (n, what) in [
            (self.secrets, "OAuth secret(s)"),
            (self.policies, "federation policy(ies)"),
            (self.assignments, "workspace assignment(s)"),
            (self.groups, "group membership(s)"),
            (self.used_by, "rule set entry(ies)"),
        ] {
            if n > 0 {
                parts.push(format!("{n} {what}"));
            }
        }
        parts.join(", ")
    }
}

/// Marks `claim` as being released (nothing new is added under it from now on) and removes what was added under
/// it. The claim itself stays: the caller deletes it, or takes it over.
pub async fn strip(
    claims: &Claims,
    cache: &assignments::Cache,
    client: &AccountClient,
    claim: &DatabricksClaim,
) -> Result<Stripped, Error> {
    let Some(principal_id) = claim.spec.remote.id.clone() else { return Ok(Stripped::default()) };
    let claim = mark_releasing(claims, claim).await?;
    let mut stripped = Stripped::default();
    // A created principal's secrets are all the operator's (its claim lists none): every one goes.
    let secrets = match claim.spec.adopted {
        true => claim.spec.secrets.clone(),
        false => match client.list_secrets(&principal_id).await {
            Ok(listed) => listed.into_iter().map(|s| s.id).collect(),
            Err(err) if err.is_not_found() => Vec::new(),
            Err(err) => return Err(err.into()),
        },
    };
    for secret in &secrets {
        client.delete_secret(&principal_id, secret).await?;
        stripped.secrets += 1;
    }
    stripped.policies = remove_policies(claims, client, &claim.spec.account_id, &principal_id).await?;
    for assignment in &claim.spec.workspaces {
        restore(cache, client, &principal_id, assignment).await?;
        stripped.assignments += 1;
    }
    for group in &claim.spec.groups {
        // A group deleted meanwhile holds no membership to remove.
        client.remove_group_member(&group.id, &principal_id).await?;
        stripped.groups += 1;
    }
    let mut claim = claim;
    stripped.used_by =
        super::rule_sets::apply_uses(claims, client, &mut claim, &[], false).await?.removed.len();
    Ok(stripped)
}

async fn mark_releasing(claims: &Claims, claim: &DatabricksClaim) -> Result<DatabricksClaim, Error> {
    if claim.spec.releasing {
        return Ok(claim.clone());
    }
    let mut releasing = claim.clone();
    releasing.spec.releasing = true;
    claims.replace(&releasing).await?.ok_or_else(|| Error::Waiting {
        reason: Reason::AdoptionNotRecorded,
        message: format!(
            "the claim {} changed while it was released; retrying",
            claim.metadata.name.as_deref().unwrap_or("?")
        ),
    })
}

/// Deletes the federation policies whose claims put them on `principal_id` (the policy whose uid a claim
/// recorded, or one created within the window of a claim's intent), and those claims.
pub async fn remove_policies(
    claims: &Claims,
    client: &AccountClient,
    account_id: &str,
    principal_id: &str,
) -> Result<usize, Error> {
    let mut removed = 0;
    for claim in claims
        .list(&selector(ClaimedKind::FederationPolicy, account_id, &[(LABEL_PRINCIPAL, principal_id)]))
        .await?
    {
        let mut claim = claim;
        // A TrustPolicy pass may record the uid of a policy it just created meanwhile: then look again, so the
        // claim never goes while its policy stays.
        for attempt in 0.. {
            if remove_policy(client, &claim, principal_id).await? {
                removed += 1;
            }
            if claims.delete_exact(&claim).await? {
                break;
            }
            match claims.get(claim.metadata.name.as_deref().unwrap_or_default()).await? {
                Some(fresh) if attempt < 3 => claim = fresh,
                Some(_) => return Err(changing(&claim)),
                None => break,
            }
        }
    }
    Ok(removed)
}

fn changing(claim: &DatabricksClaim) -> Error {
    Error::Waiting {
        reason: Reason::CreateInProgress,
        message: format!(
            "the claim {} keeps changing while it is released; retrying",
            claim.metadata.name.as_deref().unwrap_or("?")
        ),
    }
}

/// Deletes the federation policy `claim` names on `principal_id`, when it is the claimed one. Returns whether one
/// was deleted.
pub async fn remove_policy(
    client: &AccountClient,
    claim: &DatabricksClaim,
    principal_id: &str,
) -> Result<bool, Error> {
    let Some(id) = claim.spec.remote.id.as_deref() else { return Ok(false) };
    let found = match client.get_federation_policy(principal_id, id).await {
        Ok(found) => found,
        Err(err) if err.is_not_found() => return Ok(false),
        Err(err) => return Err(err.into()),
    };
    let claimed = match (&claim.spec.remote.uid, &claim.spec.creating_since) {
        (Some(uid), _) => found.uid.as_ref() == Some(uid),
        // A create whose answer was lost: the policy there came from it when it was made within the window.
        (None, Some(since)) => intent::within(intent::parse_time(found.create_time.as_deref()), since.0),
        (None, None) => false,
    };
    if claimed {
        client.delete_federation_policy(principal_id, id).await?;
    }
    Ok(claimed)
}

/// Puts back what the principal had in a workspace before the claim's assignment (or removes it).
pub async fn restore(
    cache: &assignments::Cache,
    client: &AccountClient,
    principal_id: &str,
    assignment: &ClaimedAssignment,
) -> Result<(), Error> {
    let workspace = assignment.workspace_id;
    let numeric: i64 = principal_id.parse().unwrap_or_default();
    match assignment.previous {
        None => {
            client.delete_workspace_assignment(workspace, principal_id).await?;
            cache.record(client, workspace, numeric, None).await;
        }
        Some(previous) => {
            let name = permission_name(previous);
            client.put_workspace_assignment(workspace, principal_id, &[name]).await?;
            cache.record(client, workspace, numeric, Some(vec![name.to_owned()])).await;
        }
    }
    Ok(())
}

/// Revokes a principal's claim (its grant is gone: the namespace may no longer use the account, or its object
/// disappeared without cleanup). An adopted principal loses what was added under the claim and the claim goes. A
/// created principal is deleted, deactivated (its OAuth secrets deleted too) or left, per `policy`; the claim goes
/// unless `keep` (its object still exists: deactivated or left, the principal stays its own). Returns what it did.
pub async fn revoke_principal(
    claims: &Claims,
    cache: &assignments::Cache,
    client: &AccountClient,
    claim: &DatabricksClaim,
    policy: PrincipalDeletionPolicy,
    keep: bool,
) -> Result<String, Error> {
    let Some(id) = claim.spec.remote.id.clone() else {
        claims.delete(claim).await?;
        return Ok(String::new());
    };
    let app = claim.spec.remote.application_id.clone().unwrap_or_else(|| id.clone());
    if claim.spec.adopted {
        let stripped = strip(claims, cache, client, claim).await?;
        // Taken over meanwhile (the new holder stripped it too): the claim is the new holder's.
        claims.delete_if_still_held(claim).await?;
        return Ok(format!(
            "released adopted principal {app} (removed {})",
            if stripped.is_empty() { "nothing".to_owned() } else { stripped.describe() }
        ));
    }
    let note = match policy {
        PrincipalDeletionPolicy::Delete => {
            client.delete_service_principal(&id).await?;
            format!("deleted service principal {app}")
        }
        PrincipalDeletionPolicy::Deactivate => {
            match client.patch_service_principal(&id, &[PatchOperation::replace("active", false)]).await {
                Err(err) if !err.is_not_found() => return Err(err.into()),
                _ => {}
            }
            let secrets = match client.list_secrets(&id).await {
                Ok(secrets) => secrets,
                Err(err) if err.is_not_found() => Vec::new(),
                Err(err) => return Err(err.into()),
            };
            for secret in &secrets {
                client.delete_secret(&id, &secret.id).await?;
            }
            format!("deactivated service principal {app} and deleted its {} OAuth secret(s)", secrets.len())
        }
        PrincipalDeletionPolicy::Orphan => {
            format!("left service principal {app} as it is (spec.revocation.principals: Orphan)")
        }
    };
    if !keep || policy == PrincipalDeletionPolicy::Delete {
        claims.delete_if_still_held(claim).await?;
    } else {
        // Kept as revoked: the principal is still its object's, and nothing more is done until the namespace is
        // allowed again.
        let mut revoked = claim.clone();
        revoked.spec.releasing = true;
        claims.written(&revoked).await?;
    }
    Ok(note)
}

/// The wire name of a workspace permission.
pub fn permission_name(permission: WorkspacePermission) -> &'static str {
    match permission {
        WorkspacePermission::Admin => "ADMIN",
        WorkspacePermission::User => "USER",
    }
}
