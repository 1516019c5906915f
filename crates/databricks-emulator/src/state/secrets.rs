//! OAuth secrets of service principals: at most five each, expiring, shown once; and the client credentials
//! they authenticate.

use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

use axum::http::StatusCode;

use super::{
    MAX_SECRET_LIFETIME_SECS, MAX_SECRETS, Principal, State, TokenSubject, hash, rfc3339, string_list,
};
use crate::errors::{ApiError, random_hex};

#[derive(Clone)]
pub struct Secret {
    pub id: String,
    pub value_hash: String,
    pub create_time: Timestamp,
    pub expire_time: Option<Timestamp>,
    pub scopes: Vec<String>,
}

impl State {
    pub(super) fn live_secrets(&self, sp_id: &str) -> impl Iterator<Item = &Secret> {
        let now = self.now();
        self.secrets.get(sp_id).into_iter().flatten().filter(move |s| s.expire_time.is_none_or(|e| e > now))
    }

    pub fn create_secret(&mut self, sp_id: &str, body: &Value) -> Result<Value, ApiError> {
        self.rest_principal(sp_id)?;
        let lifetime = match body.get("lifetime") {
            None | Some(Value::Null) => MAX_SECRET_LIFETIME_SECS as f64,
            Some(Value::String(s)) => parse_proto_duration(s).ok_or_else(|| {
                ApiError::invalid(format!(
                    "Invalid lifetime '{s}': expected seconds with an 's' suffix, e.g. '3600s'."
                ))
            })?,
            Some(_) => return Err(ApiError::invalid("lifetime must be a duration string such as '3600s'.")),
        };
        if lifetime <= 0.0 || lifetime > MAX_SECRET_LIFETIME_SECS as f64 {
            return Err(ApiError::invalid(format!(
                "lifetime must be positive and at most {MAX_SECRET_LIFETIME_SECS}s (730 days)."
            )));
        }
        if self.live_secrets(sp_id).count() >= MAX_SECRETS {
            return Err(ApiError::Rest {
                status: self.config.secret_limit_status,
                code: if self.config.secret_limit_status == StatusCode::TOO_MANY_REQUESTS {
                    "RESOURCE_EXHAUSTED"
                } else {
                    "INVALID_PARAMETER_VALUE"
                },
                message: format!(
                    "Service principal {sp_id} already has the maximum of {MAX_SECRETS} OAuth secrets."
                ),
            });
        }
        let now = self.now();
        let value = format!("dose{}", random_hex(32));
        let secret = Secret {
            id: random_hex(32),
            value_hash: hash(&value),
            create_time: now,
            expire_time: now.checked_add(SignedDuration::from_secs_f64(lifetime)).ok(),
            scopes: string_list(body.get("scopes")),
        };
        let mut body = self.secret_json(&secret);
        body["secret"] = json!(value);
        self.secrets.entry(sp_id.to_owned()).or_default().push(secret);
        Ok(body)
    }

    pub fn secret_json(&self, s: &Secret) -> Value {
        let mut body = json!({
            "id": s.id,
            "secret_hash": &s.value_hash[..16],
            "status": "ACTIVE",
            "create_time": rfc3339(s.create_time),
            "update_time": rfc3339(s.create_time),
        });
        if let Some(expire) = s.expire_time {
            body["expire_time"] = json!(rfc3339(expire));
        }
        if !s.scopes.is_empty() {
            body["scopes"] = json!(s.scopes);
        }
        body
    }

    pub fn list_secrets(&self, sp_id: &str) -> Result<Vec<Value>, ApiError> {
        self.rest_principal(sp_id)?;
        Ok(self.live_secrets(sp_id).map(|s| self.secret_json(s)).collect())
    }

    pub fn delete_secret(&mut self, sp_id: &str, secret_id: &str) -> Result<(), ApiError> {
        self.rest_principal(sp_id)?;
        let secrets = self.secrets.entry(sp_id.to_owned()).or_default();
        let before = secrets.len();
        secrets.retain(|s| s.id != secret_id);
        if secrets.len() == before {
            return Err(ApiError::not_found(format!("Secret {secret_id}")));
        }
        self.revoke_tokens(
            |s| matches!(s, TokenSubject::Principal { secret_id: Some(id), .. } if id == secret_id),
        );
        Ok(())
    }

    /// A principal for the REST (non-SCIM) APIs, with a REST-shaped 404.
    pub(super) fn rest_principal(&self, sp_id: &str) -> Result<&Principal, ApiError> {
        self.principals
            .get(sp_id)
            .filter(|p| self.visible(p.created))
            .ok_or_else(|| ApiError::not_found(format!("Service principal {sp_id}")))
    }

    /// Checks a client id and secret of a service principal; returns (principal id, secret id).
    pub fn authenticate_principal(&self, client_id: &str, secret: &str) -> Option<(String, Option<String>)> {
        let principal = self.principals.values().find(|p| p.application_id == client_id && p.active)?;
        let presented = hash(secret);
        if principal.application_id == self.config.admin_client_id && presented == self.admin_secret_hash {
            return Some((principal.id.clone(), None));
        }
        let secret = self
            .live_secrets(&principal.id)
            .find(|s| s.value_hash == presented && self.visible(s.create_time))?;
        Some((principal.id.clone(), Some(secret.id.clone())))
    }

    /// The scopes `secret_id` of principal `sp_id` is bound to (empty: unrestricted).
    pub fn secret_scopes(&self, sp_id: &str, secret_id: Option<&str>) -> Vec<String> {
        let Some(secret_id) = secret_id else { return Vec::new() };
        self.live_secrets(sp_id).find(|s| s.id == secret_id).map(|s| s.scopes.clone()).unwrap_or_default()
    }
}

/// The requested scopes a secret bound to `bound` may not grant (none when it is unrestricted): a scoped secret
/// never mints a token beyond its scopes, and a request for more is refused, not narrowed.
pub fn beyond_secret_scopes<'a>(requested: &'a [String], bound: &[String]) -> Vec<&'a str> {
    if bound.is_empty() {
        return Vec::new();
    }
    requested.iter().filter(|s| !bound.contains(s)).map(String::as_str).collect()
}

/// `"3600s"` → 3600.0
fn parse_proto_duration(s: &str) -> Option<f64> {
    s.strip_suffix('s')?.parse::<f64>().ok().filter(|v| v.is_finite())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::test_state as state;
    use serde_json::json;

    #[test]
    fn a_scoped_secret_grants_nothing_beyond_its_scopes() {
        let v = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(beyond_secret_scopes(&v(&["all-apis"]), &[]).is_empty(), "unrestricted");
        assert!(beyond_secret_scopes(&v(&["sql"]), &v(&["sql", "iam.groups:read"])).is_empty());
        assert_eq!(beyond_secret_scopes(&v(&["all-apis", "sql"]), &v(&["sql"])), vec!["all-apis"]);
    }

    #[test]
    fn secrets_are_limited_and_expire() {
        let mut s = state();
        let p = s.create_principal(&json!({"displayName": "x"})).expect("create");
        for _ in 0..MAX_SECRETS {
            s.create_secret(&p.id, &json!({"lifetime": "600s"})).expect("secret");
        }
        let sixth = s.create_secret(&p.id, &json!({})).expect_err("6th secret");
        assert_eq!(sixth.status(), StatusCode::BAD_REQUEST);
        s.clock_offset = SignedDuration::from_secs(601);
        assert!(s.list_secrets(&p.id).expect("list").is_empty(), "expired secrets are not listed");
        s.create_secret(&p.id, &json!({})).expect("expired secrets do not count");
        assert!(s.create_secret(&p.id, &json!({"lifetime": "63072001s"})).is_err());
        assert!(s.create_secret(&p.id, &json!({"lifetime": "10m"})).is_err());
    }
}
