//! Lapsed claims: a claim whose object is gone without its cleanup (a stripped finalizer, a namespace deleted by
//! force) is revoked, so nothing a grant produced outlives the object it was granted to: an adopted principal
//! loses what was added under the claim, a created one is handled per `spec.revocation.principals`, an app
//! integration or a federation policy is deleted. Then the claim goes.

use std::collections::HashSet;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Api, Client, ResourceExt, api::ListParams, runtime::events::EventType};

use crate::{
    controllers::{
        rules::{
            claims::{LABEL_ACCOUNT, LABEL_OWNER_UID, label_value},
            error::Error,
        },
        runtime::context::Context,
        services::release,
    },
    crd::{
        ClaimOwner, ClaimedKind, DatabricksAccount, DatabricksAppConnection, DatabricksClaim,
        ServicePrincipal, TrustPolicy,
    },
    databricks::AccountClient,
};

/// Revokes every claim of `account`'s Databricks account whose object is gone. Returns how many were swept.
pub async fn lapsed_claims(
    ctx: &Context,
    account: &DatabricksAccount,
    client: &AccountClient,
) -> Result<usize, Error> {
    let selector = format!("{LABEL_ACCOUNT}={}", label_value(&account.spec.account_id.to_lowercase()));
    // Metadata pages first (owner UIDs are labels): a sweep of an account with thousands of claims holds UIDs,
    // not every claim; only those whose owner looks gone are read whole.
    let owners = claim_owners(&ctx.client, &selector).await?;
    if owners.is_empty() {
        return Ok(0);
    }
    let alive: HashSet<String> = live_uids(&ctx.client).await?.iter().map(|u| label_value(u)).collect();
    let mut candidates = Vec::new();
    for name in owners.into_iter().filter(|(_, owner)| !alive.contains(owner)).map(|(name, _)| name) {
        candidates.extend(ctx.claims.get(&name).await?);
    }
    let alive_whole = |claim: &&DatabricksClaim| alive.contains(&label_value(&claim.spec.owner.uid));
    let mut swept = 0;
    for claim in candidates.iter().filter(|c| !alive_whole(c)) {
        // Listings can lag: a quorum read of the object confirms it is gone (a claim is written only by a pass of
        // its object, so the object exists in etcd before its claim does).
        if owner_exists(&ctx.client, &claim.spec.owner).await? {
            continue;
        }
        let note = revoke(ctx, account, client, claim).await?;
        let owner = &claim.spec.owner;
        let message =
            format!("{} {}/{} is gone without its cleanup: {note}", owner.kind, owner.namespace, owner.name);
        tracing::info!(account = %account.name_any(), claim = %claim.name_any(), "{message}");
        ctx.event(account, EventType::Warning, "Revoked", "Revoke", &message).await;
        swept += 1;
    }
    Ok(swept)
}

/// What a lapsed claim's grant produced, removed (and the claim deleted).
async fn revoke(
    ctx: &Context,
    account: &DatabricksAccount,
    client: &AccountClient,
    claim: &DatabricksClaim,
) -> Result<String, Error> {
    let remote = &claim.spec.remote;
    let id = remote.id.clone().unwrap_or_default();
    let note = match remote.kind {
        ClaimedKind::ServicePrincipal => {
            let policy = account.spec.revocation.principals;
            return release::revoke_principal(&ctx.claims, &ctx.assignments, client, claim, policy, false)
                .await;
        }
        ClaimedKind::AppIntegration if !id.is_empty() => {
            client.delete_custom_app(&id).await?;
            format!("deleted app integration {id}")
        }
        ClaimedKind::FederationPolicy => match &remote.principal_id {
            Some(principal) if release::remove_policy(client, claim, principal).await? => {
                format!("deleted federation policy {id}")
            }
            _ => "its federation policy was already gone".to_owned(),
        },
        ClaimedKind::AppIntegration => "its create never completed".to_owned(),
    };
    ctx.claims.delete_if_still_held(claim).await?;
    Ok(note)
}

/// Each claim matching `selector` as (name, its owner-uid label), metadata only.
async fn claim_owners(client: &Client, selector: &str) -> Result<Vec<(String, String)>, Error> {
    let api: Api<DatabricksClaim> = Api::all(client.clone());
    let listed = metadata_pages(api, ListParams::default().labels(selector))
        .await
        .map_err(|e| Error::kube("listing DatabricksClaims", e))?;
    let owner = |m: &ObjectMeta| m.labels.as_ref().and_then(|l| l.get(LABEL_OWNER_UID)).cloned();
    Ok(listed.iter().map(|m| (m.name.clone().unwrap_or_default(), owner(m).unwrap_or_default())).collect())
}

/// The UIDs of every object that can hold a claim (a failed listing counts as empty: every claim is then
/// confirmed one by one).
async fn live_uids(client: &Client) -> Result<HashSet<String>, Error> {
    let (sps, apps, policies) = tokio::join!(
        uids(Api::<ServicePrincipal>::all(client.clone())),
        uids(Api::<DatabricksAppConnection>::all(client.clone())),
        uids(Api::<TrustPolicy>::all(client.clone())),
    );
    Ok([sps, apps, policies].into_iter().flat_map(|u| u.unwrap_or_default()).collect())
}

/// Every UID of a kind (metadata only).
async fn uids<K>(api: Api<K>) -> Result<Vec<String>, kube::Error>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let listed = metadata_pages(api, ListParams::default()).await?;
    Ok(listed.into_iter().filter_map(|m| m.uid).collect())
}

/// The metadata of every object `params` selects, listed 500 at a time: never the whole list as one response.
async fn metadata_pages<K>(api: Api<K>, params: ListParams) -> Result<Vec<ObjectMeta>, kube::Error>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut params = params.limit(500);
    let mut listed = Vec::new();
    loop {
        let page = api.list_metadata(&params).await?;
        listed.extend(page.items.into_iter().map(|o| o.metadata));
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(listed),
        }
    }
}

/// Whether the object a claim names still exists as that object.
async fn owner_exists(client: &Client, owner: &ClaimOwner) -> Result<bool, Error> {
    let found = match owner.kind.as_str() {
        "ServicePrincipal" => uid_of::<ServicePrincipal>(client, owner).await?,
        "DatabricksAppConnection" => uid_of::<DatabricksAppConnection>(client, owner).await?,
        "TrustPolicy" => uid_of::<TrustPolicy>(client, owner).await?,
        // An owner of an unknown kind is never swept.
        _ => return Ok(true),
    };
    Ok(found.as_deref() == Some(owner.uid.as_str()))
}

async fn uid_of<K>(client: &Client, owner: &ClaimOwner) -> Result<Option<String>, Error>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), &owner.namespace);
    match api.get_metadata_opt(&owner.name).await {
        Ok(found) => Ok(found.and_then(|o| o.metadata.uid)),
        // A namespace this operator may not read (another release's): never swept from here.
        Err(kube::Error::Api(status)) if status.code == 403 => Ok(Some(owner.uid.clone())),
        Err(e) => Err(Error::kube(format!("reading {} {}/{}", owner.kind, owner.namespace, owner.name), e)),
    }
}
