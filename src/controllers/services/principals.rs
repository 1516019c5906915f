//! Which ServicePrincipal stands for which remote principal, as every kind that acts on a principal must prove it:
//! the object whose UID a principal is tagged with, the principals' claims, and the principal a
//! ServicePrincipal's status names once Databricks confirms it is that object's own.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use kube::{
    Api, Client, ResourceExt,
    runtime::reflector::{ObjectRef, Store},
};

use super::{accounts::Access, assignments, claims::Claims};
use crate::{
    controllers::rules::{
        claims as claim_rules,
        error::{Error, Refusal},
        ownership::{self, AdoptionFacts, OtherOwner},
        reason::Reason,
        revocation,
    },
    crd::{ServicePrincipal, WorkspacePermission},
    databricks::{self, types::ServicePrincipal as RemotePrincipal},
};

/// The ServicePrincipal objects of the cluster, from the principal controller's store once it runs.
pub struct Principals {
    kube: Client,
    claims: Claims,
    /// The principal controller's store: which object created which principal (by UID). Set by the wiring once
    /// the controller exists; until then every look-up lists the objects.
    store: Mutex<Option<Store<ServicePrincipal>>>,
}

impl Principals {
    pub fn new(kube: Client, claims: Claims) -> Self {
        Self { kube, claims, store: Mutex::new(None) }
    }

    /// Reads objects from `store` from now on (the running principal controller's).
    pub fn use_store(&self, store: Store<ServicePrincipal>) {
        if let Ok(mut current) = self.store.lock() {
            *current = Some(store);
        }
    }

    /// The ServicePrincipal `namespace/name` as the principal controller's store holds it (trimmed: no conditions),
    /// read from the apiserver when the store does not hold it or holds it without an id yet: the store may lag
    /// behind the event that woke the caller (a create, the id recorded). For kinds that point at a principal: its
    /// status is a hint they confirm in Databricks, never proof.
    pub async fn object(&self, namespace: &str, name: &str) -> Result<Option<ServicePrincipal>, Error> {
        let store = self.store.lock().ok().and_then(|s| s.clone());
        let key = ObjectRef::new(name).within(namespace);
        let cached = store.and_then(|s| s.get(&key));
        if let Some(found) = cached.filter(|sp| sp.status.as_ref().is_some_and(|s| s.id.is_some())) {
            return Ok(Some(found.as_ref().clone()));
        }
        Api::<ServicePrincipal>::namespaced(self.kube.clone(), namespace)
            .get_opt(name)
            .await
            .map_err(|e| Error::kube(format!("reading ServicePrincipal {name}"), e))
    }

    /// The ServicePrincipal (other than `except`) whose UID is `uid`, as `namespace/name`: the object a tagged
    /// principal was created for.
    pub async fn owner_of(&self, uid: &str, except: &str) -> Result<Option<String>, Error> {
        if uid == except {
            return Ok(None);
        }
        let store = self.store.lock().ok().and_then(|s| s.clone());
        let objects: Vec<Arc<ServicePrincipal>> = match store {
            Some(store) => {
                // A store still loading could miss the owner: wait for it, and decide nothing without it.
                let ready = tokio::time::timeout(Duration::from_secs(30), store.wait_until_ready()).await;
                if !matches!(ready, Ok(Ok(()))) {
                    return Err(Error::Waiting {
                        reason: Reason::CacheNotReady,
                        message: "the operator's list of ServicePrincipals is still loading".to_owned(),
                    });
                }
                store.state()
            }
            None => Api::<ServicePrincipal>::all(self.kube.clone())
                .list(&Default::default())
                .await
                .map_err(|e| Error::kube("listing ServicePrincipals", e))?
                .items
                .into_iter()
                .map(Arc::new)
                .collect(),
        };
        Ok(objects
            .iter()
            .find(|sp| sp.uid().as_deref() == Some(uid))
            .map(|sp| format!("{}/{}", sp.namespace().unwrap_or_default(), sp.name_any())))
    }

    /// Why `sp` may not adopt `principal` (see [`ownership::adoption_refusal`]), if it may not.
    pub async fn adoption_refusal(
        &self,
        sp: &ServicePrincipal,
        access: &Access,
        principal: &RemotePrincipal,
        cache: &assignments::Cache,
    ) -> Result<Option<Refusal>, Error> {
        let uid = sp.uid().unwrap_or_default();
        // The grant first: an ungranted id tells a tenant nothing about the principal behind it.
        if let Some(refusal) = ownership::ungranted_adoption(&access.grants, &principal.application_id) {
            return Ok(Some(refusal));
        }
        let other_owner = match principal.external_id.as_deref().filter(|tag| !tag.is_empty()) {
            Some(tag) => self.owner_of(tag, &uid).await?.map(|object| OtherOwner { object, created: true }),
            None => None,
        };
        let excess = self.excess(sp, access, principal, cache).await?;
        let operator = access.client.application_id();
        let facts = AdoptionFacts {
            principal,
            operator_application_id: operator.as_deref(),
            other_owner: other_owner.as_ref(),
            excess: &excess,
        };
        Ok(ownership::adoption_refusal(&access.grants, facts))
    }

    /// What `principal` holds beyond `access`'s grant and not under `sp`'s own claim: account roles (other than
    /// admin, refused on its own), and workspace assignments above the grant in any workspace of the account.
    async fn excess(
        &self,
        sp: &ServicePrincipal,
        access: &Access,
        principal: &RemotePrincipal,
        cache: &assignments::Cache,
    ) -> Result<Vec<String>, Error> {
        let grants = &access.grants;
        let mut excess: Vec<String> = Vec::new();
        if !grants.is_single_tenant() {
            let roles = principal.roles.iter().filter_map(|r| r.value.as_deref());
            excess.extend(
                roles
                    .filter(|r| *r != ownership::ACCOUNT_ADMIN_ROLE)
                    .map(|r| format!("the account role {r}")),
            );
        }
        let name =
            claim_rules::principal_claim_name(&access.account.spec.account_id, &principal.application_id);
        let uid = sp.uid().unwrap_or_default();
        let own = self
            .claims
            .get(&name)
            .await?
            .filter(|c| claim_rules::held_by(c, &uid))
            .map(|c| c.spec.workspaces)
            .unwrap_or_default();
        let client = &access.client;
        let workspaces = match cache.workspaces(client).await {
            Ok(workspaces) => workspaces,
            // No workspace listing (an account API without it): the delegated workspaces at least.
            Err(err) if !err.is_retryable() => grants.workspaces(),
            Err(err) => return Err(err.into()),
        };
        let id: i64 = principal.id.parse().unwrap_or_default();
        for workspace in workspaces.into_iter().filter(|w| !own.iter().any(|o| o.workspace_id == *w)) {
            let held = cache.permissions(client, workspace, id).await?;
            let Some(held) = strongest(&held) else { continue };
            let granted = grants.permission(workspace);
            if revocation::assignment_change(held, granted).is_some() {
                let granted = granted
                    .map_or("nothing", |g| if g == WorkspacePermission::Admin { "ADMIN" } else { "USER" });
                excess.push(format!(
                    "{} in workspace {workspace} (granted: {granted})",
                    if held == WorkspacePermission::Admin { "ADMIN" } else { "USER" }
                ));
            }
        }
        Ok(excess)
    }

    /// Whether `sp` holds the claim on the principal it adopts (and the claim is not being released).
    pub async fn holds_claim(&self, access: &Access, sp: &ServicePrincipal) -> Result<bool, Error> {
        let Some(adopt) = &sp.spec.adopt else { return Ok(false) };
        let name = claim_rules::principal_claim_name(&access.account.spec.account_id, &adopt.application_id);
        let uid = sp.uid().unwrap_or_default();
        Ok(self.claims.get(&name).await?.is_some_and(|c| claim_rules::held_by(&c, &uid) && !c.spec.releasing))
    }

    /// The principal a ServicePrincipal's status names, once Databricks confirms it is that object's own (its tag,
    /// or its adoption target with the claim held and still granted to `access`'s namespace). For objects that act
    /// on another object's principal (TrustPolicy), which must not trust that object's status either.
    pub async fn confirmed(
        &self,
        access: &Access,
        sp: &ServicePrincipal,
        cache: &assignments::Cache,
    ) -> Result<RemotePrincipal, Error> {
        let name = sp.name_any();
        let not_ready = || Error::Waiting {
            reason: Reason::ServicePrincipalNotReady,
            message: format!("ServicePrincipal {name} has no confirmed Databricks id yet; waiting for it"),
        };
        let Some(id) = sp.status.as_ref().and_then(|s| s.id.clone()) else { return Err(not_ready()) };
        let principal = match access.client.get_service_principal(&id).await {
            Ok(principal) => principal,
            Err(err) if err.is_not_found() => return Err(not_ready()),
            Err(databricks::Error::InvalidId { .. }) => return Err(not_ready()),
            Err(err) => return Err(err.into()),
        };
        let uid = sp.uid().unwrap_or_default();
        let adopt = sp.spec.adopt.as_ref().map(|a| a.application_id.as_str());
        let confirmed = ownership::stands_for(&principal, &uid, adopt)
            && match adopt {
                None => true,
                // Still a principal it may adopt (not since made an admin or the operator's identity), and its
                // claim.
                Some(_) => {
                    self.adoption_refusal(sp, access, &principal, cache).await?.is_none()
                        && self.holds_claim(access, sp).await?
                }
            };
        if !confirmed {
            return Err(Error::Waiting {
                reason: Reason::ServicePrincipalMismatch,
                message: format!(
                    "ServicePrincipal {name}'s status names principal {id:?}, which is not that object's own; \
                     nothing was changed in Databricks. Waiting for the ServicePrincipal to find its own principal"
                ),
            });
        }
        Ok(principal)
    }
}

/// The strongest of the permissions a listing shows.
fn strongest(held: &[String]) -> Option<WorkspacePermission> {
    if held.iter().any(|p| p == "ADMIN") {
        Some(WorkspacePermission::Admin)
    } else if held.is_empty() {
        None
    } else {
        Some(WorkspacePermission::User)
    }
}
