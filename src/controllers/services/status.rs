//! Status writes of the namespaced kinds.

use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams},
};
use serde::Serialize;
use serde_json::{Value, json};

use crate::controllers::rules::{error::Error, meta::MANAGER};

/// Replaces the whole status, only when it changed (every write is a watch event). A replacement, not a
/// server-side apply: a field someone else wrote into status (an edited `status.id`) must disappear when the
/// operator's status has no such field, and an apply leaves fields other managers own in place.
pub async fn replace<K>(api: &Api<K>, obj: &K, status: &impl Serialize) -> Result<(), Error>
where
    K: Resource<DynamicType = ()> + Clone + Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let desired = serde_json::to_value(status).unwrap_or_default();
    let current = serde_json::to_value(obj).ok().and_then(|v| v.get("status").cloned()).unwrap_or_default();
    if current == desired {
        return Ok(());
    }
    // Only onto the object the status was computed for, never onto a namesake created meanwhile.
    let mut operations = Vec::new();
    if let Some(uid) = obj.uid() {
        operations.push(json!({"op": "test", "path": "/metadata/uid", "value": uid}));
    }
    operations.push(json!({"op": "add", "path": "/status", "value": desired}));
    let patch: json_patch::Patch = serde_json::from_value(Value::Array(operations)).unwrap_or_default();
    let params = PatchParams { field_manager: Some(MANAGER.to_owned()), ..PatchParams::default() };
    api.patch_status(&obj.name_any(), &params, &Patch::<()>::Json(patch))
        .await
        .map(drop)
        .map_err(|e| Error::kube(format!("writing the status of {} {}", K::kind(&()), obj.name_any()), e))
}
