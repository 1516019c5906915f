//! The principal a TrustPolicy's federation policy is put on: the referenced ServicePrincipal, confirmed in
//! Databricks to be that object's own, and the account access of the policy's namespace.

use kube::{Api, ResourceExt};

use crate::{
    controllers::{
        rules::{error::Error, reason::Reason},
        runtime::context::Context,
        services::accounts::Access,
    },
    crd::{ServicePrincipal, TrustPolicy},
};

/// The principal a policy is put on: the account access of the policy's namespace, and the principal confirmed
/// in Databricks to be the referenced object's own (its status alone proves nothing).
pub struct Target {
    pub access: Access,
    /// The referenced object.
    pub sp: ServicePrincipal,
    pub principal_id: String,
    pub application_id: String,
}

/// The referenced ServicePrincipal object (same namespace), from the principal controller's store when it holds
/// it: a pass of every policy need not read its principal again, as all it takes from it is the spec and a status
/// id that [`Principals::confirmed`](crate::controllers::services::principals::Principals::confirmed) checks in
/// Databricks.
pub async fn referenced_object(ctx: &Context, policy: &TrustPolicy) -> Result<ServicePrincipal, Error> {
    let name = &policy.spec.service_principal_ref.name;
    ctx.principals.object(&policy.namespace().unwrap_or_default(), name).await?.ok_or_else(|| {
        Error::Waiting {
            reason: Reason::ServicePrincipalNotFound,
            message: format!("ServicePrincipal {name} does not exist in this namespace"),
        }
    })
}

/// The principal of the referenced ServicePrincipal, to delete a policy from.
pub async fn referenced_principal(ctx: &Context, policy: &TrustPolicy) -> Result<Target, Error> {
    let sp = referenced_object(ctx, policy).await?;
    confirmed(ctx, policy, &sp).await
}

/// The principal of `sp` to write a policy on, with `access` (the namespace's), but not while the
/// ServicePrincipal is being deleted: its cleanup removes the policies put on it, and a policy created meanwhile
/// would outlive it (its own deletion event wakes this controller).
pub async fn writable_principal(
    ctx: &Context,
    sp: ServicePrincipal,
    access: Access,
) -> Result<Target, Error> {
    writable_now(&sp)?;
    let remote = ctx.principals.confirmed(&access, &sp, &ctx.assignments).await?;
    Ok(Target { access, sp, principal_id: remote.id, application_id: remote.application_id })
}

/// Before a policy is created: the referenced object, read fresh (the store it came from may lag behind its
/// deletion), is still the same object and is not being deleted.
pub async fn still_writable(ctx: &Context, sp: &ServicePrincipal) -> Result<(), Error> {
    let name = sp.name_any();
    let api: Api<ServicePrincipal> = Api::namespaced(ctx.client.clone(), &sp.namespace().unwrap_or_default());
    let fresh =
        api.get_opt(&name).await.map_err(|e| Error::kube(format!("reading ServicePrincipal {name}"), e))?;
    match fresh.filter(|f| f.uid() == sp.uid()) {
        Some(fresh) => writable_now(&fresh),
        None => Err(Error::Waiting {
            reason: Reason::ServicePrincipalNotFound,
            message: format!("ServicePrincipal {name} was deleted or replaced; nothing is written for it"),
        }),
    }
}

fn writable_now(sp: &ServicePrincipal) -> Result<(), Error> {
    if sp.metadata.deletion_timestamp.is_none() {
        return Ok(());
    }
    Err(Error::Waiting {
        reason: Reason::ServicePrincipalDeleting,
        message: format!("ServicePrincipal {} is being deleted; nothing is written for it", sp.name_any()),
    })
}

async fn confirmed(ctx: &Context, policy: &TrustPolicy, sp: &ServicePrincipal) -> Result<Target, Error> {
    let namespace = policy.namespace().unwrap_or_default();
    let access = ctx.accounts.client_for(&sp.spec.account_ref.name, &namespace).await?;
    let remote = ctx.principals.confirmed(&access, sp, &ctx.assignments).await?;
    Ok(Target { access, sp: sp.clone(), principal_id: remote.id, application_id: remote.application_id })
}
