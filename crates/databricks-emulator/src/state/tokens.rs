//! Access tokens, refresh grants and authorization codes the emulator issued, and who they act as.

use jiff::{SignedDuration, Timestamp};

use super::State;
use crate::errors::random_hex;

/// Who a token acts as, and what must still exist for it to stay valid.
#[derive(Debug, Clone, PartialEq)]
pub enum TokenSubject {
    /// A service principal, through one of its secrets (`None` = the bootstrap admin's configured secret) or a
    /// federation policy.
    Principal { principal_id: String, secret_id: Option<String>, policy_uid: Option<String> },
    /// The emulator's test user, signed in to an app integration.
    AppUser { integration_id: String },
}

#[derive(Debug, Clone)]
pub struct IssuedToken {
    pub subject: TokenSubject,
    pub scopes: Vec<String>,
    pub expires_at: Timestamp,
}

#[derive(Debug, Clone)]
pub struct RefreshGrant {
    pub integration_id: String,
    pub scopes: Vec<String>,
    pub expires_at: Timestamp,
    pub session_expires_at: Option<Timestamp>,
}

#[derive(Debug, Clone)]
pub struct AuthCode {
    pub integration_id: String,
    pub redirect_uri: String,
    pub code_challenge: String,
    pub scopes: Vec<String>,
    pub expires_at: Timestamp,
}

impl State {
    pub fn issue_token(
        &mut self,
        subject: TokenSubject,
        scopes: Vec<String>,
        ttl: SignedDuration,
    ) -> (String, i64) {
        let token = format!("dapi{}", random_hex(24));
        let now = self.now();
        if self.tokens.len() % 4096 == 4095 {
            // Forget expired tokens now and then, so a long-running emulator under load stays small.
            self.tokens.retain(|_, t| t.expires_at > now);
        }
        let expires_at = now.saturating_add(ttl).unwrap_or(Timestamp::MAX);
        self.tokens.insert(token.clone(), IssuedToken { subject, scopes, expires_at });
        (token, ttl.as_secs())
    }

    /// The token, if it is known, unexpired, and what it stands on still exists.
    pub fn valid_token(&self, token: &str) -> Option<&IssuedToken> {
        let issued = self.tokens.get(token)?;
        if issued.expires_at <= self.now() {
            return None;
        }
        match &issued.subject {
            TokenSubject::Principal { principal_id, secret_id, .. } => {
                let principal = self.principals.get(principal_id).filter(|p| p.active)?;
                if let Some(secret_id) = secret_id {
                    self.live_secrets(&principal.id).find(|s| &s.id == secret_id)?;
                }
            }
            TokenSubject::AppUser { integration_id } => {
                self.apps.get(integration_id)?;
            }
        }
        Some(issued)
    }

    pub fn is_admin(&self, subject: &TokenSubject) -> bool {
        match subject {
            TokenSubject::Principal { principal_id, .. } => self
                .principals
                .get(principal_id)
                .is_some_and(|p| p.roles.iter().any(|r| r == "account_admin")),
            TokenSubject::AppUser { .. } => false,
        }
    }
}
