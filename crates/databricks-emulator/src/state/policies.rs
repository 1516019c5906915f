//! Federation policies: per service principal (at most 20 each) and account-wide.

use jiff::Timestamp;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{MAX_POLICIES, State, TokenSubject, optional_string, rfc3339};
use crate::errors::{ApiError, random_hex, uuid};

#[derive(Debug, Clone, Default, Deserialize, serde::Serialize, PartialEq)]
pub struct OidcPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_claim: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_json: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Policy {
    pub policy_id: String,
    /// `None` for account-wide policies.
    pub service_principal_id: Option<String>,
    pub uid: String,
    pub description: Option<String>,
    pub oidc: OidcPolicy,
    pub create_time: Timestamp,
    pub update_time: Timestamp,
}

impl State {
    pub fn policy_json(&self, p: &Policy) -> Value {
        let account = &self.config.account_id;
        let name = match &p.service_principal_id {
            Some(sp) => {
                format!("accounts/{account}/servicePrincipals/{sp}/federationPolicies/{}", p.policy_id)
            }
            None => format!("accounts/{account}/federationPolicies/{}", p.policy_id),
        };
        let mut body = json!({
            "name": name,
            "policy_id": p.policy_id,
            "uid": p.uid,
            "oidc_policy": p.oidc,
            "create_time": rfc3339(p.create_time),
            "update_time": rfc3339(p.update_time),
        });
        if let Some(description) = &p.description {
            body["description"] = json!(description);
        }
        if let Some(sp) = &p.service_principal_id {
            body["service_principal_id"] = self.int64(sp);
        }
        body
    }

    pub fn create_policy(
        &mut self,
        sp_id: Option<&str>,
        policy_id: Option<&str>,
        body: &Value,
    ) -> Result<Policy, ApiError> {
        if let Some(sp) = sp_id {
            self.rest_principal(sp)?;
        }
        let owner = sp_id.unwrap_or_default().to_owned();
        let policy_id = match policy_id {
            Some(id) => {
                validate_policy_id(id)?;
                id.to_owned()
            }
            None => format!("policy-{}", &random_hex(6)),
        };
        if self.policies.contains_key(&(owner.clone(), policy_id.clone())) {
            return Err(ApiError::already_exists(format!("Federation policy {policy_id} already exists.")));
        }
        if sp_id.is_some() && self.policies.keys().filter(|(sp, _)| *sp == owner).count() >= MAX_POLICIES {
            return Err(ApiError::invalid(format!(
                "Service principal {owner} already has the maximum of {MAX_POLICIES} federation policies."
            )));
        }
        self.check_policy_name(body, sp_id, &policy_id)?;
        let oidc: OidcPolicy = parse_oidc(body.get("oidc_policy"))?;
        validate_oidc(&oidc, sp_id.is_some())?;
        let now = self.now();
        let policy = Policy {
            policy_id: policy_id.clone(),
            service_principal_id: sp_id.map(str::to_owned),
            uid: uuid(),
            description: optional_string(body, "description")?,
            oidc,
            create_time: now,
            update_time: now,
        };
        self.policies.insert((owner, policy_id), policy.clone());
        Ok(policy)
    }

    pub(super) fn check_policy_name(
        &self,
        body: &Value,
        sp_id: Option<&str>,
        policy_id: &str,
    ) -> Result<(), ApiError> {
        let Some(name) = body.get("name").and_then(Value::as_str).filter(|n| !n.is_empty()) else {
            return Ok(());
        };
        let account = &self.config.account_id;
        let expected = match sp_id {
            Some(sp) => format!("accounts/{account}/servicePrincipals/{sp}/federationPolicies/{policy_id}"),
            None => format!("accounts/{account}/federationPolicies/{policy_id}"),
        };
        if name != expected {
            return Err(ApiError::invalid(format!(
                "name '{name}' does not match the request path ('{expected}')."
            )));
        }
        Ok(())
    }

    pub fn policy(&self, sp_id: Option<&str>, policy_id: &str) -> Result<&Policy, ApiError> {
        if let Some(sp) = sp_id {
            self.rest_principal(sp)?;
        }
        self.policies
            .get(&(sp_id.unwrap_or_default().to_owned(), policy_id.to_owned()))
            .ok_or_else(|| ApiError::not_found(format!("Federation policy {policy_id}")))
    }

    pub fn list_policies(&self, sp_id: Option<&str>) -> Result<Vec<Value>, ApiError> {
        if let Some(sp) = sp_id {
            self.rest_principal(sp)?;
        }
        let owner = sp_id.unwrap_or_default();
        Ok(self
            .policies
            .iter()
            .filter(|((sp, _), _)| sp == owner)
            .map(|(_, p)| self.policy_json(p))
            .collect())
    }

    pub fn update_policy(
        &mut self,
        sp_id: Option<&str>,
        policy_id: &str,
        update_mask: Option<&str>,
        body: &Value,
    ) -> Result<Policy, ApiError> {
        let mut policy = self.policy(sp_id, policy_id)?.clone();
        self.check_policy_name(body, sp_id, policy_id)?;
        let incoming: OidcPolicy = parse_oidc(body.get("oidc_policy"))?;
        let fields: Vec<String> = match update_mask.map(str::trim).filter(|m| !m.is_empty()) {
            Some("*") => vec!["description".into(), "oidc_policy".into()],
            Some(mask) => mask.split(',').map(|f| f.trim().to_owned()).collect(),
            None => {
                let mut present = Vec::new();
                if body.get("description").is_some() {
                    present.push("description".to_owned());
                }
                if body.get("oidc_policy").is_some() {
                    present.push("oidc_policy".to_owned());
                }
                present
            }
        };
        for field in fields {
            match field.as_str() {
                "description" => policy.description = optional_string(body, "description")?,
                "oidc_policy" => policy.oidc = incoming.clone(),
                "oidc_policy.issuer" => policy.oidc.issuer = incoming.issuer.clone(),
                "oidc_policy.audiences" => policy.oidc.audiences = incoming.audiences.clone(),
                "oidc_policy.subject" => policy.oidc.subject = incoming.subject.clone(),
                "oidc_policy.subject_claim" => policy.oidc.subject_claim = incoming.subject_claim.clone(),
                "oidc_policy.jwks_uri" => policy.oidc.jwks_uri = incoming.jwks_uri.clone(),
                "oidc_policy.jwks_json" => policy.oidc.jwks_json = incoming.jwks_json.clone(),
                other => return Err(ApiError::invalid(format!("update_mask: unknown field '{other}'."))),
            }
        }
        validate_oidc(&policy.oidc, sp_id.is_some())?;
        policy.update_time = self.now();
        self.policies.insert((sp_id.unwrap_or_default().to_owned(), policy_id.to_owned()), policy.clone());
        Ok(policy)
    }

    pub fn delete_policy(&mut self, sp_id: Option<&str>, policy_id: &str) -> Result<(), ApiError> {
        let uid = self.policy(sp_id, policy_id)?.uid.clone();
        self.policies.remove(&(sp_id.unwrap_or_default().to_owned(), policy_id.to_owned()));
        self.revoke_tokens(|s| matches!(s, TokenSubject::Principal { policy_uid: Some(u), .. } if *u == uid));
        Ok(())
    }
}

fn validate_policy_id(id: &str) -> Result<(), ApiError> {
    let valid_chars = id.chars().all(|c| c.is_ascii_digit() || c.is_ascii_lowercase() || c == '-');
    if !(2..=63).contains(&id.len()) || !valid_chars {
        return Err(ApiError::invalid(format!(
            "Invalid policy_id '{id}': Must contain only 0-9, a-z, and hyphen, 2 to 63 characters."
        )));
    }
    Ok(())
}

fn parse_oidc(value: Option<&Value>) -> Result<OidcPolicy, ApiError> {
    match value {
        None | Some(Value::Null) => Ok(OidcPolicy::default()),
        Some(v) => {
            serde_json::from_value(v.clone()).map_err(|e| ApiError::invalid(format!("oidc_policy: {e}")))
        }
    }
}

fn validate_oidc(oidc: &OidcPolicy, service_principal: bool) -> Result<(), ApiError> {
    let issuer = oidc
        .issuer
        .as_deref()
        .filter(|i| !i.is_empty())
        .ok_or_else(|| ApiError::invalid("oidc_policy.issuer is required."))?;
    if !issuer.starts_with("https://") && !crate::is_loopback_http_url(issuer) {
        return Err(ApiError::invalid("oidc_policy.issuer must be an HTTPS URL."));
    }
    match (&oidc.subject, service_principal) {
        (None, true) => {
            return Err(ApiError::invalid(
                "oidc_policy.subject is required for service principal federation policies.",
            ));
        }
        (Some(_), false) => {
            return Err(ApiError::invalid(
                "oidc_policy.subject must not be set for account federation policies.",
            ));
        }
        _ => {}
    }
    if let Some(uri) = &oidc.jwks_uri
        && !uri.starts_with("https://")
        && !crate::is_loopback_http_url(uri)
    {
        return Err(ApiError::invalid("oidc_policy.jwks_uri must be an HTTPS URL."));
    }
    if let Some(jwks) = &oidc.jwks_json {
        serde_json::from_str::<jsonwebtoken::jwk::JwkSet>(jwks).map_err(|e| {
            ApiError::invalid(format!("oidc_policy.jwks_json is not a valid JWKS document: {e}"))
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;

    use super::MAX_POLICIES;
    use crate::state::test_state as state;
    use serde_json::json;

    #[test]
    fn policy_ids_follow_the_documented_rule() {
        let mut s = state();
        let p = s.create_principal(&json!({"displayName": "x"})).expect("create");
        let body = json!({"oidc_policy": {"issuer": "https://issuer", "subject": "sub"}});
        assert!(s.create_policy(Some(&p.id), Some("UPPER"), &body).is_err());
        assert!(s.create_policy(Some(&p.id), Some("a"), &body).is_err());
        s.create_policy(Some(&p.id), Some("ok-1"), &body).expect("valid");
        let again = s.create_policy(Some(&p.id), Some("ok-1"), &body).expect_err("duplicate");
        assert_eq!(again.status(), StatusCode::CONFLICT);
        let no_subject = json!({"oidc_policy": {"issuer": "https://issuer"}});
        assert!(s.create_policy(Some(&p.id), None, &no_subject).is_err());
        assert!(s.create_policy(None, None, &body).is_err(), "account policies take no subject");
        for i in 1..MAX_POLICIES {
            s.create_policy(Some(&p.id), Some(&format!("p-{i}")), &body).expect("under the limit");
        }
        assert!(s.create_policy(Some(&p.id), Some("one-too-many"), &body).is_err());
    }
}
