//! Account groups (account SCIM): create, read, filter by display name, patch members and name, delete. Members
//! are principals or other groups of the account, by id; a principal's own answer lists the groups it is a direct
//! member of.

use std::collections::BTreeSet;

use axum::http::StatusCode;
use jiff::Timestamp;
use serde_json::{Value, json};

use super::{
    State,
    scim::{Filter, filtered_value, scim_optional_string},
};
use crate::errors::ApiError;

#[derive(Debug, Clone)]
pub struct Group {
    pub id: String,
    pub display_name: String,
    pub external_id: Option<String>,
    /// Direct members' ids.
    pub members: BTreeSet<String>,
    pub created: Timestamp,
}

impl State {
    /// A group as SCIM answers it; `members` only when asked (a get, not a list: account SCIM lists leave members
    /// out, the SDKs read them with a get).
    pub fn group_json(&self, group: &Group, members: bool) -> Value {
        let mut body = json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
            "id": group.id,
            "displayName": group.display_name,
            "meta": {"resourceType": "Group"},
        });
        if let Some(external_id) = &group.external_id {
            body["externalId"] = json!(external_id);
        }
        if members && !group.members.is_empty() {
            body["members"] = group.members.iter().map(|id| self.member_json(id)).collect();
        }
        body
    }

    fn member_json(&self, id: &str) -> Value {
        match (self.principals.get(id), self.groups.get(id)) {
            (Some(p), _) => {
                json!({"value": id, "display": p.display_name, "$ref": format!("ServicePrincipals/{id}")})
            }
            (None, Some(g)) => {
                json!({"value": id, "display": g.display_name, "$ref": format!("Groups/{id}")})
            }
            (None, None) => json!({"value": id}),
        }
    }

    /// The groups `principal_id` is a direct member of, as a principal's `groups` attribute lists them.
    pub fn groups_of_json(&self, principal_id: &str) -> Vec<Value> {
        self.groups
            .values()
            .filter(|g| g.members.contains(principal_id))
            .map(|g| {
                json!({"value": g.id, "display": g.display_name, "type": "direct",
                       "$ref": format!("Groups/{}", g.id)})
            })
            .collect()
    }

    pub fn create_group(&mut self, body: &Value) -> Result<Group, ApiError> {
        let display_name =
            body.get("displayName").and_then(Value::as_str).filter(|s| !s.trim().is_empty()).ok_or_else(
                || ApiError::scim(StatusCode::BAD_REQUEST, Some("invalidValue"), "displayName is required."),
            )?;
        if self.groups.values().any(|g| g.display_name.eq_ignore_ascii_case(display_name)) {
            return Err(ApiError::scim(
                StatusCode::CONFLICT,
                Some("uniqueness"),
                format!("Group with name {display_name} already exists."),
            ));
        }
        let external_id = scim_optional_string(body, "externalId")?;
        let members = member_ids(body.get("members"))?;
        self.check_members(&members)?;
        let id = self.new_principal_id();
        let group = Group {
            id: id.clone(),
            display_name: display_name.to_owned(),
            external_id,
            members: members.into_iter().collect(),
            created: self.now(),
        };
        self.groups.insert(id, group.clone());
        Ok(group)
    }

    pub fn group(&self, id: &str) -> Result<&Group, ApiError> {
        self.groups.get(id).filter(|g| self.visible(g.created)).ok_or_else(|| group_not_found(id))
    }

    pub fn list_groups(&self, filter: Option<&str>) -> Result<Vec<&Group>, ApiError> {
        let filter = match filter.map(str::trim).filter(|f| !f.is_empty()) {
            Some(f) => Some(Filter::parse(f)?),
            None => None,
        };
        Ok(self
            .groups
            .values()
            .filter(|g| self.visible(g.created))
            .filter(|g| filter.as_ref().is_none_or(|f| f.matches(&self.group_json(g, false))))
            .collect())
    }

    /// SCIM PatchOp on a group: `add` members (by `path: members` or a value object holding `members`),
    /// `remove` with `members[value eq "<id>"]`, `replace` of `displayName`. All or nothing.
    pub fn patch_group(&mut self, id: &str, body: &Value) -> Result<Group, ApiError> {
        let mut group = self.group(id)?.clone();
        let operations = body.get("Operations").and_then(Value::as_array).ok_or_else(|| {
            ApiError::scim(StatusCode::BAD_REQUEST, Some("invalidSyntax"), "Operations is required.")
        })?;
        for op in operations {
            let kind = op.get("op").and_then(Value::as_str).unwrap_or_default().to_ascii_lowercase();
            let value = op.get("value").cloned().unwrap_or(Value::Null);
            let path = op.get("path").and_then(Value::as_str).unwrap_or_default();
            self.apply_group_patch(&mut group, &kind, path, &value)?;
        }
        self.groups.insert(id.to_owned(), group.clone());
        Ok(group)
    }

    fn apply_group_patch(
        &self,
        group: &mut Group,
        kind: &str,
        path: &str,
        value: &Value,
    ) -> Result<(), ApiError> {
        let attribute = path.split('[').next().unwrap_or_default();
        match (kind, attribute.to_ascii_lowercase().as_str()) {
            ("add", "members") => self.add_members(group, member_ids(Some(value))?),
            ("add" | "replace", "") => {
                if let Some(name) = value.get("displayName").and_then(Value::as_str) {
                    group.display_name = name.to_owned();
                }
                self.add_members(group, member_ids(value.get("members"))?)
            }
            ("replace", "displayname") => {
                group.display_name = value.as_str().map(str::to_owned).ok_or_else(|| invalid_path(path))?;
                Ok(())
            }
            ("replace", "members") => {
                let members = member_ids(Some(value))?;
                self.check_members(&members)?;
                group.members = members.into_iter().collect();
                Ok(())
            }
            ("remove", "members") => {
                match filtered_value(path) {
                    Some(member) => group.members.remove(&member),
                    None => {
                        // A remove without a filter takes the members its value lists.
                        let listed = member_ids(Some(value))?;
                        group.members.retain(|m| !listed.contains(m));
                        true
                    }
                };
                Ok(())
            }
            _ => Err(invalid_path(path)),
        }
    }

    fn add_members(&self, group: &mut Group, members: Vec<String>) -> Result<(), ApiError> {
        self.check_members(&members)?;
        group.members.extend(members);
        Ok(())
    }

    /// Every member must be a principal or a group of the account.
    fn check_members(&self, members: &[String]) -> Result<(), ApiError> {
        match members.iter().find(|m| !self.principals.contains_key(*m) && !self.groups.contains_key(*m)) {
            Some(unknown) => Err(ApiError::scim(
                StatusCode::NOT_FOUND,
                None,
                format!("Principal with id {unknown} not found in account."),
            )),
            None => Ok(()),
        }
    }

    pub fn delete_group(&mut self, id: &str) -> Result<(), ApiError> {
        self.group(id)?;
        self.groups.remove(id);
        for group in self.groups.values_mut() {
            group.members.remove(id);
        }
        Ok(())
    }

    /// A principal or group that goes leaves every group it was a member of.
    pub(super) fn leave_all_groups(&mut self, member: &str) {
        for group in self.groups.values_mut() {
            group.members.remove(member);
        }
    }
}

/// Member ids of a `members` value: `[{"value": "<id>"}]` (anything else is a SCIM 400).
fn member_ids(value: Option<&Value>) -> Result<Vec<String>, ApiError> {
    let Some(value) = value.filter(|v| !v.is_null()) else { return Ok(Vec::new()) };
    let invalid = || {
        ApiError::scim(
            StatusCode::BAD_REQUEST,
            Some("invalidValue"),
            "members must be a list of {value: id}.",
        )
    };
    value
        .as_array()
        .ok_or_else(invalid)?
        .iter()
        .map(|m| m.get("value").and_then(Value::as_str).map(str::to_owned).ok_or_else(invalid))
        .collect()
}

fn invalid_path(path: &str) -> ApiError {
    ApiError::scim(StatusCode::BAD_REQUEST, Some("invalidPath"), format!("Unsupported patch path '{path}'."))
}

fn group_not_found(id: &str) -> ApiError {
    ApiError::scim(StatusCode::NOT_FOUND, None, format!("Group with id {id} not found."))
}

#[cfg(test)]
mod tests {
    use crate::state::test_state as state;
    use serde_json::json;

    #[test]
    fn members_are_added_and_removed_one_by_one_and_leave_with_their_principal() {
        let mut s = state();
        let a = s.create_principal(&json!({"displayName": "a"})).expect("a");
        let b = s.create_principal(&json!({"displayName": "b"})).expect("b");
        let group =
            s.create_group(&json!({"displayName": "team", "members": [{"value": b.id}]})).expect("group");
        assert!(s.create_group(&json!({"displayName": "TEAM"})).is_err(), "display names are unique");
        let add = json!({"Operations": [{"op": "add", "path": "members", "value": [{"value": a.id}]}]});
        assert_eq!(s.patch_group(&group.id, &add).expect("add").members.len(), 2);
        assert_eq!(s.groups_of_json(&a.id)[0]["display"], "team");
        let unknown = json!({"Operations": [{"op": "add", "path": "members", "value": [{"value": "404"}]}]});
        assert!(s.patch_group(&group.id, &unknown).is_err(), "members must exist");
        let path = format!("members[value eq \"{}\"]", a.id);
        let remove = json!({"Operations": [{"op": "remove", "path": path}]});
        let left = s.patch_group(&group.id, &remove).expect("remove");
        assert_eq!(left.members.iter().collect::<Vec<_>>(), [&b.id], "only the named member leaves");
        s.delete_principal(&b.id).expect("delete");
        assert!(s.group(&group.id).expect("group").members.is_empty());
        assert_eq!(s.list_groups(Some("displayName eq \"team\"")).expect("list").len(), 1);
    }
}
