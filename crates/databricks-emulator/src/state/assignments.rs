//! Workspace permission assignments of principals (USER / ADMIN), in the workspaces the emulator serves.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::{State, string_list};
use crate::errors::ApiError;

impl State {
    pub(super) fn workspace(&self, workspace_id: i64) -> Result<&BTreeMap<String, Vec<String>>, ApiError> {
        self.assignments
            .get(&workspace_id)
            .ok_or_else(|| ApiError::not_found(format!("Workspace {workspace_id}")))
    }

    pub fn assignment_json(&self, principal_id: &str, permissions: &[String]) -> Value {
        let mut principal = json!({"principal_id": self.int64(principal_id)});
        if let Some(p) = self.principals.get(principal_id) {
            principal["display_name"] = json!(p.display_name);
            principal["service_principal_name"] = json!(p.application_id);
        }
        json!({"principal": principal, "permissions": permissions})
    }

    pub fn put_assignment(
        &mut self,
        workspace_id: i64,
        principal_id: &str,
        body: &Value,
    ) -> Result<Value, ApiError> {
        self.workspace(workspace_id)?;
        self.rest_principal(principal_id)?;
        let requested = string_list(body.get("permissions"));
        let permissions: Vec<String> = if requested.iter().any(|p| p == "ADMIN") {
            vec!["ADMIN".to_owned()]
        } else if requested.iter().any(|p| p == "USER") {
            vec!["USER".to_owned()]
        } else {
            Vec::new()
        };
        let workspace = self.assignments.entry(workspace_id).or_default();
        if permissions.is_empty() {
            workspace.remove(principal_id);
        } else {
            workspace.insert(principal_id.to_owned(), permissions.clone());
        }
        Ok(self.assignment_json(principal_id, &permissions))
    }

    pub fn delete_assignment(&mut self, workspace_id: i64, principal_id: &str) -> Result<(), ApiError> {
        self.workspace(workspace_id)?;
        let removed = self.assignments.entry(workspace_id).or_default().remove(principal_id);
        removed
            .map(drop)
            .ok_or_else(|| ApiError::not_found(format!("Permission assignment for principal {principal_id}")))
    }

    /// The workspaces of the account, as the Workspaces API lists them.
    pub fn list_workspaces(&self) -> Vec<Value> {
        let account = &self.config.account_id;
        self.config
            .workspaces
            .iter()
            .map(|ws| {
                json!({"workspace_id": ws, "account_id": account, "workspace_name": format!("workspace-{ws}"),
                       "workspace_status": "RUNNING", "deployment_name": format!("dbc-{ws}")})
            })
            .collect()
    }

    pub fn list_assignments(&self, workspace_id: i64) -> Result<Vec<Value>, ApiError> {
        let workspace = self.workspace(workspace_id)?;
        Ok(workspace
            .iter()
            .filter(|(id, _)| self.principals.get(*id).is_some_and(|p| self.visible(p.created)))
            .map(|(id, perms)| self.assignment_json(id, perms))
            .collect())
    }
}
