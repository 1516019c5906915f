//! Account groups (SCIM): found by display name, and one member added or removed at a time, so a change never
//! touches the group's other members. The operator never creates or deletes a group; tests and the sandbox do.

use reqwest::Method;
use serde_json::json;

use super::{
    Error,
    client::{AccountClient, gone_is_ok, scim_string, segment},
    types::{Group, ScimList},
};

const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

impl AccountClient {
    /// The group named `display_name` (SCIM compares names case-insensitively; an exact match wins).
    pub async fn find_group_by_display_name(&self, display_name: &str) -> Result<Option<Group>, Error> {
        let query =
            [("filter", format!("displayName eq {}", scim_string(display_name))), ("count", "100".into())];
        let page: ScimList<Group> =
            self.call::<_, ()>("scim.groups.list", Method::GET, "scim/v2/Groups", &query, None, true).await?;
        let mut named: Vec<Group> = page
            .resources
            .into_iter()
            .filter(|g| g.display_name.eq_ignore_ascii_case(display_name))
            .collect();
        let exact = named.iter().position(|g| g.display_name == display_name).unwrap_or(0);
        Ok((!named.is_empty()).then(|| named.swap_remove(exact)))
    }

    pub async fn get_group(&self, id: &str) -> Result<Group, Error> {
        let id = segment("group id", id)?;
        self.call::<_, ()>("scim.groups.get", Method::GET, &format!("scim/v2/Groups/{id}"), &[], None, true)
            .await
    }

    /// Adds one member (a principal's or group's id); adding a member twice changes nothing.
    pub async fn add_group_member(&self, group_id: &str, member_id: &str) -> Result<(), Error> {
        let operation = json!({"op": "add", "path": "members", "value": [{"value": member_id}]});
        self.patch_group(group_id, operation).await
    }

    /// Removes one member, by a filtered path, so the group's other members stay; `Ok(false)` when the group is gone.
    pub async fn remove_group_member(&self, group_id: &str, member_id: &str) -> Result<bool, Error> {
        let path = format!("members[value eq {}]", scim_string(member_id));
        gone_is_ok(self.patch_group(group_id, json!({"op": "remove", "path": path})).await)
    }

    async fn patch_group(&self, group_id: &str, operation: serde_json::Value) -> Result<(), Error> {
        let id = segment("group id", group_id)?;
        let body = json!({"schemas": [PATCH_OP], "Operations": [operation]});
        // One member added or removed is idempotent: a lost answer may be retried.
        self.call_empty(
            "scim.groups.patch",
            Method::PATCH,
            &format!("scim/v2/Groups/{id}"),
            &[],
            Some(&body),
            true,
        )
        .await
    }

    /// Creates a group (tests and the sandbox: the operator itself never does).
    pub async fn create_group(&self, display_name: &str) -> Result<Group, Error> {
        let body =
            json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": display_name});
        self.call("scim.groups.create", Method::POST, "scim/v2/Groups", &[], Some(&body), false).await
    }
}
