//! Service principals (account SCIM): create, read, filter, patch, replace, delete; deleting or deactivating one
//! revokes its tokens.

use axum::http::StatusCode;
use jiff::Timestamp;
use serde_json::{Value, json};

use super::{
    State, TokenSubject,
    scim::{Filter, active_of, filtered_value, scalar, scim_boolean, scim_optional_string},
};
use crate::errors::{ApiError, uuid};

#[derive(Debug, Clone)]
pub struct Principal {
    pub id: String,
    pub application_id: String,
    pub display_name: String,
    pub external_id: Option<String>,
    pub active: bool,
    pub roles: Vec<String>,
    pub created: Timestamp,
}

impl State {
    pub fn principal_json(&self, p: &Principal) -> Value {
        let mut body = json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServicePrincipal"],
            "id": p.id,
            "applicationId": p.application_id,
            "displayName": p.display_name,
            "active": p.active,
            "account_id": self.config.account_id,
        });
        if let Some(external_id) = &p.external_id {
            body["externalId"] = json!(external_id);
        }
        if !p.roles.is_empty() {
            body["roles"] = Value::Array(p.roles.iter().map(|r| json!({"value": r})).collect());
        }
        let groups = self.groups_of_json(&p.id);
        if !groups.is_empty() {
            body["groups"] = Value::Array(groups);
        }
        body
    }

    pub fn create_principal(&mut self, body: &Value) -> Result<Principal, ApiError> {
        if body.get("applicationId").is_some() {
            return Err(ApiError::scim(
                StatusCode::BAD_REQUEST,
                Some("invalidValue"),
                "Attribute applicationId cannot be specified for Databricks-managed service principals.",
            ));
        }
        let display_name =
            body.get("displayName").and_then(Value::as_str).filter(|s| !s.trim().is_empty()).ok_or_else(
                || ApiError::scim(StatusCode::BAD_REQUEST, Some("invalidValue"), "displayName is required."),
            )?;
        let external_id = scim_optional_string(body, "externalId")?;
        if external_id.as_ref().is_some_and(|e| e.chars().count() > 64) {
            return Err(ApiError::scim(
                StatusCode::BAD_REQUEST,
                Some("invalidValue"),
                "externalId is longer than 64 characters.",
            ));
        }
        refuse_named_entitlements(body)?;
        let id = self.new_principal_id();
        let principal = Principal {
            id: id.clone(),
            application_id: uuid(),
            display_name: display_name.to_owned(),
            external_id,
            active: active_of(body)?,
            roles: roles_of(body.get("roles")),
            created: self.now(),
        };
        self.principals.insert(id, principal.clone());
        Ok(principal)
    }

    pub fn principal(&self, id: &str) -> Result<&Principal, ApiError> {
        self.principals
            .get(id)
            .filter(|p| self.visible(p.created))
            .ok_or_else(|| ApiError::scim_not_found(id))
    }

    pub fn list_principals(&self, filter: Option<&str>) -> Result<Vec<&Principal>, ApiError> {
        let filter = match filter.map(str::trim).filter(|f| !f.is_empty()) {
            Some(f) => Some(Filter::parse(f)?),
            None => None,
        };
        Ok(self
            .principals
            .values()
            .filter(|p| self.visible(p.created))
            .filter(|p| filter.as_ref().is_none_or(|f| f.matches(&self.principal_json(p))))
            .collect())
    }

    pub fn patch_principal(&mut self, id: &str, body: &Value) -> Result<Principal, ApiError> {
        let mut principal = self.principal(id)?.clone();
        let operations = body.get("Operations").and_then(Value::as_array).ok_or_else(|| {
            ApiError::scim(StatusCode::BAD_REQUEST, Some("invalidSyntax"), "Operations is required.")
        })?;
        for op in operations {
            let kind = op.get("op").and_then(Value::as_str).unwrap_or_default().to_ascii_lowercase();
            let value = op.get("value").cloned().unwrap_or(Value::Null);
            let path = op.get("path").and_then(Value::as_str);
            let attributes: Vec<(String, Value)> = match path {
                Some(path) => vec![(path.to_owned(), value)],
                None => value.as_object().map(|m| m.clone().into_iter().collect()).unwrap_or_default(),
            };
            for (attribute, value) in attributes {
                apply_patch(&mut principal, &kind, &attribute, value)?;
            }
        }
        self.principals.insert(id.to_owned(), principal.clone());
        if !principal.active {
            self.revoke_principal_tokens(id);
        }
        Ok(principal)
    }

    pub(super) fn revoke_principal_tokens(&mut self, id: &str) {
        self.revoke_tokens(
            |s| matches!(s, TokenSubject::Principal { principal_id, .. } if principal_id == id),
        );
    }

    pub fn replace_principal(&mut self, id: &str, body: &Value) -> Result<Principal, ApiError> {
        let mut principal = self.principal(id)?.clone();
        if let Some(app_id) = body.get("applicationId").and_then(Value::as_str)
            && app_id != principal.application_id
        {
            return Err(ApiError::scim(
                StatusCode::BAD_REQUEST,
                Some("mutability"),
                "applicationId is immutable.",
            ));
        }
        principal.display_name = body
            .get("displayName")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                ApiError::scim(StatusCode::BAD_REQUEST, Some("invalidValue"), "displayName is required.")
            })?
            .to_owned();
        refuse_named_entitlements(body)?;
        principal.active = active_of(body)?;
        principal.external_id = scim_optional_string(body, "externalId")?;
        principal.roles = roles_of(body.get("roles"));
        self.principals.insert(id.to_owned(), principal.clone());
        // As with a PATCH: a deactivated principal's tokens stop working at once (Terraform updates with PUT).
        if !principal.active {
            self.revoke_principal_tokens(id);
        }
        Ok(principal)
    }

    pub fn delete_principal(&mut self, id: &str) -> Result<(), ApiError> {
        let gone = self.principals.remove(id).ok_or_else(|| ApiError::scim_not_found(id))?;
        self.rule_sets.remove(&gone.application_id.to_lowercase());
        self.secrets.remove(id);
        self.leave_all_groups(id);
        self.policies.retain(|(sp, _), _| sp != id);
        for assignments in self.assignments.values_mut() {
            assignments.remove(id);
        }
        self.revoke_tokens(
            |s| matches!(s, TokenSubject::Principal { principal_id, .. } if principal_id == id),
        );
        Ok(())
    }

    pub(super) fn revoke_tokens(&mut self, matches: impl Fn(&TokenSubject) -> bool) {
        self.tokens.retain(|_, t| !matches(&t.subject));
    }
}

/// Evidence: the Terraform provider (v1.126.0) sends `"entitlements":[{}]` on every account-level create and
/// replace (PUT), and the real API accepts it: it is how most customers create principals (the Terraform
/// conformance test runs both). A provider test fixture shows this 400 for real entitlement values. So only
/// entitlements that name something are refused (databricks-account-api.md, service principal fields).
fn refuse_named_entitlements(body: &Value) -> Result<(), ApiError> {
    let named = |e: &Value| e.get("value").is_some_and(|v| !v.is_null() && v.as_str() != Some(""));
    let entitlements = body.get("entitlements").and_then(Value::as_array);
    if entitlements.is_some_and(|list| list.iter().any(named)) {
        return Err(ApiError::scim(
            StatusCode::BAD_REQUEST,
            Some("invalidValue"),
            "entitlements cannot be managed at the account level.",
        ));
    }
    Ok(())
}

fn roles_of(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|r| r.get("value").and_then(Value::as_str)).map(str::to_owned).collect())
        .unwrap_or_default()
}

/// One PATCH operation. Attribute names are case-insensitive (RFC 7643 §2.1).
fn apply_patch(principal: &mut Principal, op: &str, attribute: &str, value: Value) -> Result<(), ApiError> {
    let bad = |detail: String| ApiError::scim(StatusCode::BAD_REQUEST, Some("invalidValue"), detail);
    let name = attribute.split('[').next().unwrap_or_default().to_ascii_lowercase();
    let filtered = attribute.contains('[');
    if filtered && !(op == "remove" && name == "roles") {
        return Err(ApiError::scim(
            StatusCode::BAD_REQUEST,
            Some("invalidPath"),
            format!("a filtered path is supported only to remove roles, not '{op}' on '{attribute}'"),
        ));
    }
    match (op, name.as_str()) {
        ("replace" | "add", "active") => {
            principal.active = match scalar(&value) {
                Value::Null => return Err(bad("replace of active needs a value".into())),
                other => scim_boolean(&other)
                    .ok_or_else(|| bad(format!("active must be a boolean, got {other}")))?,
            }
        }
        ("replace" | "add", "displayname") => {
            principal.display_name =
                scalar(&value).as_str().ok_or_else(|| bad("displayName must be a string".into()))?.to_owned()
        }
        ("replace" | "add", "externalid") => {
            principal.external_id = Some(
                scalar(&value).as_str().ok_or_else(|| bad("externalId must be a string".into()))?.to_owned(),
            )
        }
        ("remove", "externalid") => principal.external_id = None,
        ("replace", "roles") => principal.roles = roles_of(Some(&value)),
        ("add", "roles") => {
            for role in roles_of(Some(&value)) {
                if !principal.roles.contains(&role) {
                    principal.roles.push(role);
                }
            }
        }
        // `roles[value eq "X"]` removes X alone (what Terraform's databricks_service_principal_role sends on
        // delete, with no value), a value list removes those, and a bare `roles` removes every role.
        ("remove", "roles") => {
            let mut removed = roles_of(Some(&value));
            if filtered {
                let role = filtered_value(attribute).ok_or_else(|| {
                    ApiError::scim(
                        StatusCode::BAD_REQUEST,
                        Some("invalidFilter"),
                        format!("unsupported filter in '{attribute}': only roles[value eq \"...\"]"),
                    )
                })?;
                removed.push(role);
            } else if removed.is_empty() {
                principal.roles.clear();
            }
            principal.roles.retain(|r| !removed.contains(r));
        }
        ("replace" | "add" | "remove", "applicationid" | "id") => {
            return Err(ApiError::scim(
                StatusCode::BAD_REQUEST,
                Some("mutability"),
                format!("{attribute} is immutable"),
            ));
        }
        _ => return Err(bad(format!("unsupported patch: op '{op}' on '{attribute}'"))),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::state::test_state as state;
    use serde_json::json;

    #[test]
    fn entitlements_without_values_are_accepted_as_terraform_sends_them() {
        let mut s = state();
        s.create_principal(&json!({"displayName": "tf", "entitlements": [{}]})).expect("Terraform's body");
        s.create_principal(&json!({"displayName": "empty", "entitlements": []})).expect("an empty list");
        let refused =
            s.create_principal(&json!({"displayName": "x", "entitlements": [{"value": "workspace-access"}]}));
        assert!(refused.is_err(), "a real entitlement is refused at the account level");
        let id = s.create_principal(&json!({"displayName": "tf"})).expect("create").id;
        s.replace_principal(&id, &json!({"displayName": "tf2", "entitlements": [{}]}))
            .expect("Terraform's PUT");
        let refused =
            s.replace_principal(&id, &json!({"displayName": "x", "entitlements": [{"value": "sql"}]}));
        assert!(refused.is_err(), "and refused on a replace too");
    }

    #[test]
    fn a_filtered_role_removal_removes_that_role_alone() {
        let mut s = state();
        let body = json!({"displayName": "r", "roles": [{"value": "account_admin"}, {"value": "marketplace_admin"}]});
        let id = s.create_principal(&body).expect("create").id;
        let remove = |path: &str| json!({"Operations": [{"op": "remove", "path": path}]});
        let patched =
            s.patch_principal(&id, &remove(r#"roles[value eq "marketplace_admin"]"#)).expect("patch");
        assert_eq!(patched.roles, ["account_admin"], "Terraform's role delete keeps the other roles");
        let refused = s.patch_principal(&id, &remove(r#"roles[value ne "account_admin"]"#));
        assert!(refused.is_err(), "a filter it cannot read is refused, not a silent no-op");
        let replace =
            json!({"Operations": [{"op": "replace", "path": r#"roles[value eq "x"]"#, "value": "y"}]});
        assert!(s.patch_principal(&id, &replace).is_err(), "a filtered path only removes");
        let patched = s.patch_principal(&id, &remove("roles")).expect("patch");
        assert!(patched.roles.is_empty(), "a bare path removes every role");
    }

    #[test]
    fn patch_attribute_names_are_case_insensitive_and_active_must_be_a_boolean() {
        let mut s = state();
        let id = s.create_principal(&json!({"displayName": "c"})).expect("create").id;
        let patch = json!({"Operations": [{"op": "replace", "path": "Active", "value": false}]});
        assert!(!s.patch_principal(&id, &patch).expect("patch").active);
        for active in [json!("no"), json!(0)] {
            let refused = s.create_principal(&json!({"displayName": "x", "active": active}));
            assert!(refused.is_err(), "a create with active={active} is refused, not read as true");
        }
        let created = s.create_principal(&json!({"displayName": "y", "active": "false"})).expect("create");
        assert!(!created.active);
    }

    #[test]
    fn patch_accepts_bare_and_complex_values() {
        let mut s = state();
        let p = s.create_principal(&json!({"displayName": "x"})).expect("create");
        let patched = s
            .patch_principal(
                &p.id,
                &json!({"Operations": [{"op": "replace", "path": "active", "value": [{"value": "false"}]}]}),
            )
            .expect("patch");
        assert!(!patched.active);
        let patched = s
            .patch_principal(
                &p.id,
                &json!({"Operations": [{"op": "replace", "path": "active", "value": true}]}),
            )
            .expect("patch");
        assert!(patched.active);
    }
}
