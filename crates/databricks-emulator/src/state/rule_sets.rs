//! Access-control rule sets (`/api/2.0/preview/accounts/{a}/access-control/rule-sets`): who may use or manage a
//! service principal (`roles/servicePrincipal.user`, `roles/servicePrincipal.manager`), read with an etag and
//! replaced whole with it. A stale etag is a 409 `RESOURCE_CONFLICT`, as the real API answers, so writers must read,
//! merge and write again. A principal's rule set starts with its creator as manager.

use axum::http::StatusCode;
use serde_json::{Value, json};

use super::State;
use crate::errors::ApiError;

pub const USER_ROLE: &str = "roles/servicePrincipal.user";
pub const MANAGER_ROLE: &str = "roles/servicePrincipal.manager";

/// One rule set: its version (the etag encodes it) and its grant rules, role → principals.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    pub version: u64,
    pub grant_rules: Vec<(String, Vec<String>)>,
}

fn etag(version: u64) -> String {
    // Opaque to clients; real etags are base64 of a version record.
    format!("RENUAAAB{version:016x}")
}

impl State {
    /// The application id of the principal a rule set name is for:
    /// `accounts/<account>/servicePrincipals/<application id>/ruleSets/default`.
    fn rule_set_principal(&self, name: &str) -> Result<String, ApiError> {
        let parts: Vec<&str> = name.split('/').collect();
        let ["accounts", account, "servicePrincipals", app, "ruleSets", "default"] = parts[..] else {
            return Err(ApiError::invalid(format!("Rule set name {name} is not a supported resource name.")));
        };
        if account != self.config.account_id {
            return Err(ApiError::invalid(format!("Rule set name {name} is not of this account.")));
        }
        match self.principals.values().any(|p| p.application_id.eq_ignore_ascii_case(app)) {
            true => Ok(app.to_lowercase()),
            false => Err(ApiError::Rest {
                status: StatusCode::NOT_FOUND,
                code: "RESOURCE_DOES_NOT_EXIST",
                message: format!("Service principal {app} does not exist."),
            }),
        }
    }

    /// The rule set a new principal starts with: its creator manages it.
    pub fn default_rule_set(&mut self, application_id: &str, creator: Option<&str>) {
        let grant_rules =
            creator.map(|c| vec![(MANAGER_ROLE.to_owned(), vec![c.to_owned()])]).unwrap_or_default();
        self.rule_sets.insert(application_id.to_lowercase(), RuleSet { version: 1, grant_rules });
    }

    pub fn rule_set_json(&self, name: &str) -> Result<Value, ApiError> {
        let app = self.rule_set_principal(name)?;
        let rule_set = self.rule_sets.get(&app).cloned().unwrap_or_default();
        let rules: Vec<Value> = rule_set
            .grant_rules
            .iter()
            .map(|(role, principals)| json!({"role": role, "principals": principals}))
            .collect();
        let mut body = json!({"name": name, "etag": etag(rule_set.version)});
        if !rules.is_empty() {
            body["grant_rules"] = Value::Array(rules);
        }
        Ok(body)
    }

    /// Replaces the rule set `body.name` names, if `body.rule_set.etag` is its current etag.
    pub fn put_rule_set(&mut self, body: &Value) -> Result<Value, ApiError> {
        let name =
            body.get("name").and_then(Value::as_str).ok_or_else(|| ApiError::invalid("name is required"))?;
        let rule_set = body.get("rule_set").ok_or_else(|| ApiError::invalid("rule_set is required"))?;
        if rule_set.get("name").and_then(Value::as_str).is_some_and(|n| n != name) {
            return Err(ApiError::invalid("rule_set.name must be the name of the rule set"));
        }
        let app = self.rule_set_principal(name)?;
        // A concurrent writer set up by a test lands first, after the caller read the rule set.
        let pending =
            self.rule_set_writes_before_write.iter().position(|(a, _, _)| a.eq_ignore_ascii_case(&app));
        if let Some(at) = pending {
            let (app, role, principal) = self.rule_set_writes_before_write.remove(at);
            self.write_rule_set_meanwhile(&app, &role, &principal);
        }
        let current = self.rule_sets.get(&app).cloned().unwrap_or_default();
        if rule_set.get("etag").and_then(Value::as_str) != Some(etag(current.version).as_str()) {
            return Err(ApiError::Rest {
                status: StatusCode::CONFLICT,
                code: "RESOURCE_CONFLICT",
                message: "Conflict with another request. Please retry.".to_owned(),
            });
        }
        let grant_rules = self.grant_rules(rule_set.get("grant_rules"))?;
        self.rule_sets.insert(app, RuleSet { version: current.version + 1, grant_rules });
        self.rule_set_json(name)
    }

    fn grant_rules(&self, value: Option<&Value>) -> Result<Vec<(String, Vec<String>)>, ApiError> {
        let Some(rules) = value.filter(|v| !v.is_null()) else { return Ok(Vec::new()) };
        let rules = rules.as_array().ok_or_else(|| ApiError::invalid("grant_rules must be a list"))?;
        let mut parsed: Vec<(String, Vec<String>)> = Vec::new();
        for rule in rules {
            let role = rule
                .get("role")
                .and_then(Value::as_str)
                .ok_or_else(|| ApiError::invalid("role is required"))?;
            if role != USER_ROLE && role != MANAGER_ROLE {
                return Err(ApiError::invalid(format!(
                    "Role {role} is not assignable on a service principal."
                )));
            }
            let principals = rule.get("principals").and_then(Value::as_array).cloned().unwrap_or_default();
            let mut names = Vec::new();
            for principal in &principals {
                let principal =
                    principal.as_str().ok_or_else(|| ApiError::invalid("principals must be strings"))?;
                self.check_rule_principal(principal)?;
                names.push(principal.to_owned());
            }
            match parsed.iter_mut().find(|(r, _)| r == role) {
                Some((_, existing)) => existing.extend(names),
                None => parsed.push((role.to_owned(), names)),
            }
        }
        Ok(parsed)
    }

    /// `users/<email>`, `groups/<display name>` of an existing group, `servicePrincipals/<application id>` of an
    /// existing principal.
    fn check_rule_principal(&self, principal: &str) -> Result<(), ApiError> {
        let known = match principal.split_once('/') {
            Some(("users", email)) => email.contains('@'),
            Some(("groups", name)) => self.groups.values().any(|g| g.display_name == name),
            Some(("servicePrincipals", app)) => self.principals.values().any(|p| p.application_id == app),
            _ => false,
        };
        match known {
            true => Ok(()),
            false => Err(ApiError::invalid(format!("Principal {principal} does not exist."))),
        }
    }

    /// Another writer's change, landing between a reader's GET and its PUT (tests): `principal` gets `role`, and
    /// the etag moves on.
    pub fn write_rule_set_meanwhile(&mut self, application_id: &str, role: &str, principal: &str) {
        if !self.principals.values().any(|p| p.application_id.eq_ignore_ascii_case(application_id)) {
            return;
        }
        let rule_set = self.rule_sets.entry(application_id.to_lowercase()).or_default();
        match rule_set.grant_rules.iter_mut().find(|(r, _)| r == role) {
            Some((_, principals)) => principals.push(principal.to_owned()),
            None => rule_set.grant_rules.push((role.to_owned(), vec![principal.to_owned()])),
        }
        rule_set.version += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::test_state as state;

    #[test]
    fn a_rule_set_is_replaced_only_with_its_current_etag() {
        let mut s = state();
        let p = s.create_principal(&json!({"displayName": "p"})).expect("create");
        s.default_rule_set(&p.application_id, Some("servicePrincipals/creator"));
        let name = format!(
            "accounts/{}/servicePrincipals/{}/ruleSets/default",
            s.config.account_id, p.application_id
        );
        let read = s.rule_set_json(&name).expect("get");
        assert_eq!(read["grant_rules"][0]["role"], MANAGER_ROLE, "the creator manages it");
        let put = |etag: &Value| {
            json!({"name": name, "rule_set": {"name": name, "etag": etag,
                   "grant_rules": [{"role": USER_ROLE, "principals": ["users/a@example.com"]}]}})
        };
        let written = s.put_rule_set(&put(&read["etag"])).expect("put");
        assert_ne!(written["etag"], read["etag"]);
        let stale = s.put_rule_set(&put(&read["etag"])).expect_err("stale etag");
        assert!(matches!(
            stale,
            ApiError::Rest { status: StatusCode::CONFLICT, code: "RESOURCE_CONFLICT", .. }
        ));
        let unknown = json!({"name": name, "rule_set": {"name": name, "etag": written["etag"],
                             "grant_rules": [{"role": USER_ROLE, "principals": ["groups/nobody"]}]}});
        assert!(s.put_rule_set(&unknown).is_err(), "principals must exist");
        let missing = format!("accounts/{}/servicePrincipals/nope/ruleSets/default", s.config.account_id);
        assert!(s.rule_set_json(&missing).is_err());
    }
}
