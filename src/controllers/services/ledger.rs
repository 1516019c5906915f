//! The operator's ownership records, kept in the status of the (cluster-scoped) DatabricksAccount: which object
//! owns which app integration, and which object adopted which existing principal. Tenants can write their own
//! objects, status included, but not accounts; so these records, not an object's status, prove ownership where
//! Databricks carries no tag.
//!
//! Written only with JSON merge patches of these two maps, guarded by the account's resourceVersion (a
//! concurrent writer makes the patch fail and it is retried on a fresh read), so writers never lose each other's
//! entries and the account controller's own status writes (conditions) never touch them.

use std::collections::BTreeMap;

use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::{
    controllers::rules::{error::Error, reason::Reason},
    crd::{DatabricksAccount, DatabricksAccountStatus},
};

/// Field manager of the ledger's writes.
const LEDGER_MANAGER: &str = "databricks-oauth-operator-ledger";

/// The account's records as they are now (a fresh read, never the watch cache).
pub async fn read(client: &Client, account: &str) -> Result<DatabricksAccountStatus, Error> {
    Ok(fetch(client, account).await?.1)
}

async fn fetch(client: &Client, account: &str) -> Result<(String, DatabricksAccountStatus), Error> {
    let api: Api<DatabricksAccount> = Api::all(client.clone());
    let found = api
        .get_opt(account)
        .await
        .map_err(|e| Error::kube(format!("reading DatabricksAccount {account}"), e))?
        .ok_or_else(|| Error::Account {
            reason: Reason::AccountNotFound,
            message: format!("DatabricksAccount {account} does not exist"),
        })?;
    Ok((found.metadata.resource_version.unwrap_or_default(), found.status.unwrap_or_default()))
}

/// Applies `change` to the account's records and writes the result when `change` says it changed something.
/// Returns the records as written (or as read, when nothing changed).
pub async fn update(
    client: &Client,
    account: &str,
    mut change: impl FnMut(&mut DatabricksAccountStatus) -> bool,
) -> Result<DatabricksAccountStatus, Error> {
    let api: Api<DatabricksAccount> = Api::all(client.clone());
    let mut attempts = 0;
    loop {
        attempts += 1;
        let (version, before) = fetch(client, account).await?;
        let mut after = before.clone();
        if !change(&mut after) {
            return Ok(before);
        }
        let patch = json!({
            "metadata": {"resourceVersion": version},
            "status": {
                "appConnections": diff(&before.app_connections, &after.app_connections),
                "adoptions": diff(&before.adoptions, &after.adoptions),
            },
        });
        let params = PatchParams { field_manager: Some(LEDGER_MANAGER.to_owned()), ..PatchParams::default() };
        match api.patch_status(account, &params, &Patch::Merge(&patch)).await {
            Ok(_) => return Ok(after),
            Err(kube::Error::Api(status)) if status.code == 409 && attempts < 10 => continue,
            Err(err) => {
                return Err(Error::kube(format!("recording ownership in DatabricksAccount {account}"), err));
            }
        }
    }
}

/// A JSON merge patch turning `before` into `after`: removed keys, and fields a changed record no longer has
/// (records skip empty fields when serialized), become `null`, or the merge would keep them.
fn diff<T: Serialize + PartialEq>(before: &BTreeMap<String, T>, after: &BTreeMap<String, T>) -> Value {
    let mut patch = Map::new();
    for key in before.keys().filter(|k| !after.contains_key(*k)) {
        patch.insert(key.clone(), Value::Null);
    }
    for (key, value) in after.iter().filter(|(k, v)| before.get(*k) != Some(*v)) {
        let mut value = serde_json::to_value(value).unwrap_or_default();
        if let (Some(old), Some(new)) =
            (before.get(key).and_then(|b| serde_json::to_value(b).ok()), value.as_object_mut())
        {
            for field in old.as_object().into_iter().flat_map(|o| o.keys()) {
                new.entry(field.clone()).or_insert(Value::Null);
            }
        }
        patch.insert(key.clone(), value);
    }
    Value::Object(patch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_patch_carries_only_what_changed() {
        let before: BTreeMap<String, u8> = [("a".into(), 1), ("b".into(), 2), ("c".into(), 3)].into();
        let after: BTreeMap<String, u8> = [("a".into(), 1), ("b".into(), 5), ("d".into(), 4)].into();
        assert_eq!(diff(&before, &after), json!({"b": 5, "c": null, "d": 4}));
        assert_eq!(diff(&before, &before), json!({}));
    }

    #[test]
    fn a_field_a_record_drops_is_cleared() {
        use crate::crd::AppConnectionRecord;
        let pending = AppConnectionRecord {
            namespace: "ns".into(),
            name: "app".into(),
            display_name: "app".into(),
            integration_id: None,
            creating_since: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                "2026-11-30T12:00:00Z".parse().expect("time"),
            )),
        };
        let done = AppConnectionRecord {
            creating_since: None,
            integration_id: Some("i-1".into()),
            ..pending.clone()
        };
        let patch = diff(&[("uid".to_owned(), pending)].into(), &[("uid".to_owned(), done)].into());
        assert_eq!(patch["uid"]["creatingSince"], Value::Null, "{patch}");
        assert!(patch["uid"].as_object().expect("record").contains_key("creatingSince"), "{patch}");
        assert_eq!(patch["uid"]["integrationId"], "i-1");
    }
}
