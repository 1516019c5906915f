//! The ownership ledger of earlier versions, kept in the status of each DatabricksAccount (`appConnections`,
//! `adoptions`): moved into DatabricksClaims once, before the controllers start, and then cleared. Nothing else
//! reads or writes it.

use kube::{
    Api, Client, ResourceExt,
    api::{Patch, PatchParams},
};
use serde_json::json;

use super::claims::Claims;
use crate::{
    controllers::rules::{
        claims::{self, LABEL_DISPLAY_NAME, LABEL_REMOTE_ID},
        error::Error,
    },
    crd::{
        AppConnectionRecord, ClaimOwner, ClaimedKind, ClaimedObject, DatabricksAccount, DatabricksClaim,
        ObjectRecord, ServicePrincipal,
    },
};

/// Field manager of the ledger's writes (the same as before, so the clearing patch owns the fields it clears).
const LEDGER_MANAGER: &str = "databricks-oauth-operator-ledger";

/// Moves every account's ledger into claims, then clears it. Returns how many records were moved.
pub async fn migrate_all(kube: &Client, claims: &Claims) -> Result<usize, Error> {
    let api: Api<DatabricksAccount> = Api::all(kube.clone());
    let accounts =
        api.list(&Default::default()).await.map_err(|e| Error::kube("listing DatabricksAccounts", e))?;
    let mut moved = 0;
    for account in &accounts.items {
        moved += migrate(kube, claims, account).await?;
    }
    Ok(moved)
}

/// Moves `account`'s ledger (if it still has one) into claims, then clears it.
pub async fn migrate(kube: &Client, claims: &Claims, account: &DatabricksAccount) -> Result<usize, Error> {
    let Some(status) = &account.status else { return Ok(0) };
    if status.app_connections.is_empty() && status.adoptions.is_empty() {
        return Ok(0);
    }
    let account_id = &account.spec.account_id;
    for (uid, record) in &status.app_connections {
        create(claims, app_claim(account_id, uid, record)).await?;
    }
    for (application_id, record) in &status.adoptions {
        let mut claim = adoption_claim(account_id, application_id, record);
        claim.spec.secrets = recorded_secrets(kube, record).await?;
        create(claims, claim).await?;
    }
    clear(&Api::all(kube.clone()), account).await?;
    let moved = status.app_connections.len() + status.adoptions.len();
    tracing::info!(account = %account.name_any(), moved, "moved the ownership ledger into DatabricksClaims");
    Ok(moved)
}

/// Creates `claim` unless a claim of its name exists (a migration that stopped halfway, or a newer claim).
async fn create(claims: &Claims, claim: DatabricksClaim) -> Result<(), Error> {
    claims.create(&claim).await.map(drop)
}

fn owner(kind: &str, namespace: &str, name: &str, uid: &str) -> ClaimOwner {
    ClaimOwner {
        kind: kind.to_owned(),
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        uid: uid.to_owned(),
    }
}

/// The claim of an app connection's ledger record.
pub fn app_claim(account_id: &str, uid: &str, record: &AppConnectionRecord) -> DatabricksClaim {
    let owner = owner("DatabricksAppConnection", &record.namespace, &record.name, uid);
    let remote = ClaimedObject {
        kind: ClaimedKind::AppIntegration,
        id: record.integration_id.clone(),
        display_name: Some(record.display_name.clone()),
        ..ClaimedObject::default()
    };
    let mut extra = vec![(LABEL_DISPLAY_NAME, record.display_name.as_str())];
    if let Some(id) = &record.integration_id {
        extra.push((LABEL_REMOTE_ID, id.as_str()));
    }
    let name = claims::app_claim_name(account_id, uid);
    let mut claim = claims::new_claim(&name, account_id, owner, remote, &extra);
    claim.spec.creating_since = record.creating_since.clone();
    claim
}

/// The claim of an adoption's ledger record (the principal's id is filled in by its object's next pass).
pub fn adoption_claim(account_id: &str, application_id: &str, record: &ObjectRecord) -> DatabricksClaim {
    let owner = owner("ServicePrincipal", &record.namespace, &record.name, &record.uid);
    let remote = ClaimedObject {
        kind: ClaimedKind::ServicePrincipal,
        application_id: Some(application_id.to_lowercase()),
        ..ClaimedObject::default()
    };
    let name = claims::principal_claim_name(account_id, application_id);
    let mut claim = claims::new_claim(&name, account_id, owner, remote, &[]);
    claim.spec.adopted = true;
    claim
}

/// The OAuth secrets an adopting object's status names (published and retiring), so a release removes them. Read
/// once, at the upgrade, as the earlier version trusted them; from then on only the claim names them.
async fn recorded_secrets(kube: &Client, record: &ObjectRecord) -> Result<Vec<String>, Error> {
    let api: Api<ServicePrincipal> = Api::namespaced(kube.clone(), &record.namespace);
    let found = api.get_opt(&record.name).await.map_err(|e| {
        Error::kube(format!("reading ServicePrincipal {}/{}", record.namespace, record.name), e)
    })?;
    let creds = found
        .filter(|sp| sp.uid().as_deref() == Some(record.uid.as_str()))
        .and_then(|sp| sp.status)
        .and_then(|status| status.credentials);
    Ok(creds
        .map(|c| c.secret_id.into_iter().chain(c.retiring.into_iter().map(|r| r.secret_id)).collect())
        .unwrap_or_default())
}

/// Clears the ledger, only from the object that was read (a concurrent change makes it fail and run again at the
/// next start; the claims it made stay and are not made twice).
async fn clear(api: &Api<DatabricksAccount>, account: &DatabricksAccount) -> Result<(), Error> {
    let name = account.name_any();
    let patch = json!({
        "metadata": {"resourceVersion": account.resource_version()},
        "status": {"appConnections": null, "adoptions": null},
    });
    let params = PatchParams { field_manager: Some(LEDGER_MANAGER.to_owned()), ..PatchParams::default() };
    api.patch_status(&name, &params, &Patch::Merge(&patch))
        .await
        .map(drop)
        .map_err(|e| Error::kube(format!("clearing the ownership ledger of DatabricksAccount {name}"), e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    #[test]
    fn ledger_records_become_claims_of_the_account_not_the_object() {
        let record = AppConnectionRecord {
            namespace: "ns".into(),
            name: "portal".into(),
            display_name: "Portal".into(),
            integration_id: Some("i-1".into()),
            creating_since: Some(Time("2026-11-30T12:00:00Z".parse().expect("time"))),
        };
        let claim = app_claim("ACCT", "uid-1", &record);
        assert_eq!(claim.name_any(), "app.acct.uid-1");
        assert_eq!(
            (claim.spec.remote.id.as_deref(), claim.spec.owner.name.as_str()),
            (Some("i-1"), "portal")
        );
        assert_eq!(claim.spec.creating_since, record.creating_since);
        let labels = claim.metadata.labels.clone().unwrap_or_default();
        assert_eq!(labels.get(LABEL_REMOTE_ID).map(String::as_str), Some("i-1"));
        let adopted = ObjectRecord { namespace: "ns".into(), name: "legacy".into(), uid: "uid-2".into() };
        let claim = adoption_claim("acct", "6A1F2C3D-0000-4000-8000-000000000001", &adopted);
        assert!(claim.spec.adopted);
        assert_eq!(claim.spec.remote.application_id.as_deref(), Some("6a1f2c3d-0000-4000-8000-000000000001"));
    }
}
