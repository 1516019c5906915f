//! Custom OAuth app integrations (U2M): public or confidential (a secret shown once), with token policies.

use jiff::Timestamp;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{State, TokenSubject, hash, rfc3339, string_list};
use crate::errors::{ApiError, random_hex, uuid};

#[derive(Debug, Clone, Default, Deserialize, serde::Serialize, PartialEq)]
pub struct TokenAccessPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token_ttl_in_minutes: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token_ttl_in_minutes: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_single_use_refresh_tokens: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub absolute_session_lifetime_in_minutes: Option<i64>,
}

#[derive(Clone)]
pub struct App {
    pub integration_id: String,
    pub client_id: String,
    pub client_secret_hash: Option<String>,
    pub name: String,
    pub redirect_urls: Vec<String>,
    pub confidential: bool,
    pub scopes: Vec<String>,
    pub user_authorized_scopes: Vec<String>,
    pub token_access_policy: Option<TokenAccessPolicy>,
    pub create_time: Timestamp,
}

impl State {
    pub fn app_json(&self, app: &App) -> Value {
        let mut body = json!({
            "integration_id": app.integration_id,
            "client_id": app.client_id,
            "name": app.name,
            "redirect_urls": app.redirect_urls,
            "scopes": app.scopes,
            "create_time": rfc3339(app.create_time),
            "created_by": self.int64("7340000000001009"),
        });
        if app.confidential {
            body["confidential"] = json!(true);
        }
        if !app.user_authorized_scopes.is_empty() {
            body["user_authorized_scopes"] = json!(app.user_authorized_scopes);
        }
        if let Some(policy) = &app.token_access_policy {
            body["token_access_policy"] = json!(policy);
        }
        body
    }

    pub fn create_app(&mut self, body: &Value) -> Result<Value, ApiError> {
        let name = body
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.trim().is_empty())
            .ok_or_else(|| ApiError::invalid("name is required."))?;
        let confidential = body.get("confidential").and_then(Value::as_bool).unwrap_or(false);
        let mut app = App {
            integration_id: uuid(),
            client_id: uuid(),
            client_secret_hash: None,
            name: name.to_owned(),
            redirect_urls: string_list(body.get("redirect_urls")),
            confidential,
            scopes: string_list(body.get("scopes")),
            user_authorized_scopes: string_list(body.get("user_authorized_scopes")),
            token_access_policy: parse_token_policy(body.get("token_access_policy"))?,
            create_time: self.now(),
        };
        validate_app(&app)?;
        let mut response = json!({"integration_id": app.integration_id, "client_id": app.client_id});
        if confidential {
            let secret = format!("dose{}", random_hex(32));
            app.client_secret_hash = Some(hash(&secret));
            response["client_secret"] = json!(secret);
        }
        self.apps.insert(app.integration_id.clone(), app);
        Ok(response)
    }

    pub fn app(&self, integration_id: &str) -> Result<&App, ApiError> {
        self.apps
            .get(integration_id)
            .filter(|a| self.visible(a.create_time))
            .ok_or_else(|| ApiError::not_found(format!("Custom app integration {integration_id}")))
    }

    pub fn update_app(&mut self, integration_id: &str, body: &Value) -> Result<(), ApiError> {
        let mut app = self.app(integration_id)?.clone();
        if let Some(name) = body.get("name").and_then(Value::as_str)
            && name != app.name
        {
            return Err(ApiError::invalid("name cannot be updated."));
        }
        if let Some(confidential) = body.get("confidential").and_then(Value::as_bool)
            && confidential != app.confidential
        {
            return Err(ApiError::invalid("confidential cannot be updated."));
        }
        if body.get("redirect_urls").is_some() {
            app.redirect_urls = string_list(body.get("redirect_urls"));
        }
        if body.get("scopes").is_some() {
            app.scopes = string_list(body.get("scopes"));
        }
        if body.get("user_authorized_scopes").is_some() {
            app.user_authorized_scopes = string_list(body.get("user_authorized_scopes"));
        }
        if body.get("token_access_policy").is_some() {
            app.token_access_policy = parse_token_policy(body.get("token_access_policy"))?;
        }
        validate_app(&app)?;
        self.apps.insert(integration_id.to_owned(), app);
        Ok(())
    }

    pub fn delete_app(&mut self, integration_id: &str) -> Result<(), ApiError> {
        self.app(integration_id)?;
        self.apps.remove(integration_id);
        self.revoke_tokens(
            |s| matches!(s, TokenSubject::AppUser { integration_id: id } if id == integration_id),
        );
        self.refresh_tokens.retain(|_, r| r.integration_id != integration_id);
        self.codes.retain(|_, c| c.integration_id != integration_id);
        Ok(())
    }
}

fn parse_token_policy(value: Option<&Value>) -> Result<Option<TokenAccessPolicy>, ApiError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(v) => serde_json::from_value(v.clone())
            .map(Some)
            .map_err(|e| ApiError::invalid(format!("token_access_policy: {e}"))),
    }
}

fn validate_app(app: &App) -> Result<(), ApiError> {
    if let Some(scope) = app.user_authorized_scopes.iter().find(|s| !app.scopes.contains(s)) {
        return Err(ApiError::invalid(format!(
            "user_authorized_scopes must be a subset of scopes: '{scope}' is not in scopes."
        )));
    }
    for url in &app.redirect_urls {
        if url::Url::parse(url).is_err() {
            return Err(ApiError::invalid(format!("redirect_urls: '{url}' is not a valid URL.")));
        }
    }
    if let Some(policy) = &app.token_access_policy {
        if let Some(access) = policy.access_token_ttl_in_minutes
            && !(5..=1440).contains(&access)
        {
            return Err(ApiError::invalid("access_token_ttl_in_minutes must be between 5 and 1440."));
        }
        if let Some(refresh) = policy.refresh_token_ttl_in_minutes
            && !(5..=129_600).contains(&refresh)
        {
            return Err(ApiError::invalid("refresh_token_ttl_in_minutes must be between 5 and 129600."));
        }
        if let (Some(access), Some(refresh)) =
            (policy.access_token_ttl_in_minutes, policy.refresh_token_ttl_in_minutes)
            && refresh < access
        {
            return Err(ApiError::invalid(
                "refresh_token_ttl_in_minutes must not be shorter than access_token_ttl_in_minutes.",
            ));
        }
        if policy.absolute_session_lifetime_in_minutes.is_some()
            && policy.enable_single_use_refresh_tokens != Some(true)
        {
            return Err(ApiError::invalid(
                "absolute_session_lifetime_in_minutes is only valid when enable_single_use_refresh_tokens is true.",
            ));
        }
    }
    Ok(())
}
