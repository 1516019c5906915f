//! Errors of the Databricks client, by failure kind. Messages keep the server's own words and never hold a
//! secret value.

use std::time::Duration;

/// Error codes Databricks answers when a quota or per-object limit is reached.
const LIMIT_CODES: [&str; 3] = ["RESOURCE_LIMIT_EXCEEDED", "QUOTA_EXCEEDED", "RESOURCE_EXHAUSTED"];

/// What a token exchange's refusal says is wrong, read from the token endpoint's `error_description` (the OAuth
/// error code is `invalid_grant` for all of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExchangeRefusal {
    /// The policy's keys could not be fetched from its `jwks_uri` or issuer.
    KeysUnreachable,
    WrongAudience,
    WrongSubject,
    WrongIssuer,
    /// The signature does not verify with the policy's keys.
    WrongKey,
    TokenExpired,
    Other,
}

/// Why a Databricks call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Databricks answered with an error status (REST, SCIM or plain body).
    #[error("{operation}: Databricks answered {status} {code}: {message}")]
    Api { operation: &'static str, status: u16, code: String, message: String, retry_after: Option<Duration> },
    /// The OIDC token endpoint refused to issue a token.
    #[error("{operation}: the token endpoint answered {status} {error}: {description}")]
    OAuth { operation: &'static str, status: u16, error: String, description: String },
    /// The request did not complete: connect failure, timeout, or a response cut off.
    #[error("{operation}: {message}")]
    Transport { operation: &'static str, message: String, timeout: bool },
    /// Databricks answered 2xx with a body we could not read.
    #[error("{operation}: unexpected response: {message}")]
    Decode { operation: &'static str, message: String },
    /// The workload identity token file could not be read.
    #[error("reading the workload identity token {path}: {message}")]
    TokenFile { path: String, message: String },
    /// The client was configured wrongly (for example plain http to a remote host).
    #[error("invalid Databricks client configuration: {0}")]
    Config(String),
    /// The namespace already had the most requests it may queue for the account; nothing was sent.
    #[error(
        "deferred: this namespace already has the most Databricks requests waiting for the account that one \
         namespace may queue (rateLimit.maxQueuedPerNamespace); tried again shortly"
    )]
    Deferred { operation: &'static str, class: &'static str, queued: u32 },
    /// An id that is not a plain path segment; no request was sent.
    #[error("{what} {value:?} is not a valid Databricks id; no request was sent")]
    InvalidId { what: &'static str, value: String },
}

impl Error {
    /// The HTTP status Databricks answered with, if it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api { status, .. } | Self::OAuth { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The object does not exist (404).
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }

    /// The object already exists or the write conflicted (409).
    pub fn is_conflict(&self) -> bool {
        self.status() == Some(409)
    }

    /// Databricks throttled the call (429).
    pub fn is_throttled(&self) -> bool {
        self.status() == Some(429)
    }

    /// Trying again later may succeed: throttling, unavailability, server errors and transport failures.
    /// Everything else needs a person (bad input, missing permission, unknown object).
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Api { status, .. } | Self::OAuth { status, .. } => {
                matches!(status, 429 | 500 | 502 | 503 | 504)
            }
            Self::Transport { .. } | Self::Deferred { .. } => true,
            Self::Decode { .. } | Self::TokenFile { .. } | Self::Config(_) | Self::InvalidId { .. } => false,
        }
    }

    /// The request was not sent because the namespace's queue was full.
    pub fn is_deferred(&self) -> bool {
        matches!(self, Self::Deferred { .. })
    }

    /// The credentials were refused (401 / `invalid_client`).
    pub fn is_unauthenticated(&self) -> bool {
        matches!(self, Self::Api { status: 401, .. })
            || matches!(self, Self::OAuth { error, .. } if error == "invalid_client")
    }

    /// Databricks refused a create because a per-object limit is reached (e.g. the 20 federation policies of a
    /// principal): a quota code, or a 400 whose message names the maximum, as the account API words it.
    pub fn is_limit_reached(&self) -> bool {
        match self {
            Self::Api { code, .. } if LIMIT_CODES.contains(&code.as_str()) => true,
            Self::Api { status: 400, message, .. } => message.contains("maximum of"),
            _ => false,
        }
    }

    /// Why the token endpoint refused a token exchange, when it refused one (not when it was unreachable).
    pub fn exchange_refusal(&self) -> Option<ExchangeRefusal> {
        let Self::OAuth { status, description, .. } = self else { return None };
        if *status >= 500 || *status == 429 {
            return None;
        }
        let text = description.as_str();
        Some(if text.contains("cannot fetch") || text.contains("fetching") {
            ExchangeRefusal::KeysUnreachable
        } else if text.contains("audience") {
            ExchangeRefusal::WrongAudience
        } else if text.contains("subject") {
            ExchangeRefusal::WrongSubject
        } else if text.contains("issuer") {
            ExchangeRefusal::WrongIssuer
        } else if text.contains("signature") || text.contains("key") {
            ExchangeRefusal::WrongKey
        } else if text.contains("expired") {
            ExchangeRefusal::TokenExpired
        } else {
            ExchangeRefusal::Other
        })
    }

    /// The server asked us to wait this long before trying again.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Api { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oauth(status: u16, description: &str) -> Error {
        Error::OAuth {
            operation: "token_exchange",
            status,
            error: "invalid_grant".into(),
            description: description.into(),
        }
    }

    #[test]
    fn a_token_exchange_refusal_says_what_the_policy_rejected() {
        let refusal = |d: &str| oauth(400, d).exchange_refusal();
        assert_eq!(
            refusal("the token matches no federation policy (audience x not allowed)"),
            Some(ExchangeRefusal::WrongAudience)
        );
        assert_eq!(refusal("subject mismatch"), Some(ExchangeRefusal::WrongSubject));
        assert_eq!(refusal("issuer mismatch"), Some(ExchangeRefusal::WrongIssuer));
        assert_eq!(refusal("invalid signature"), Some(ExchangeRefusal::WrongKey));
        assert_eq!(refusal("cannot fetch jwks_uri"), Some(ExchangeRefusal::KeysUnreachable));
        assert_eq!(refusal("token expired"), Some(ExchangeRefusal::TokenExpired));
        assert_eq!(refusal("no federation policy applies"), Some(ExchangeRefusal::Other));
        assert_eq!(oauth(503, "audience").exchange_refusal(), None, "unreachable is not a refusal");
        assert_eq!(Error::Config("x".into()).exchange_refusal(), None);
    }

    #[test]
    fn a_reached_limit_is_known_by_its_code_or_its_words() {
        let api = |status: u16, code: &str, message: &str| Error::Api {
            operation: "sp_policies.create",
            status,
            code: code.into(),
            message: message.into(),
            retry_after: None,
        };
        let words = "Service principal 1 already has the maximum of 20 federation policies.";
        assert!(api(400, "INVALID_PARAMETER_VALUE", words).is_limit_reached());
        assert!(api(400, "RESOURCE_LIMIT_EXCEEDED", "too many").is_limit_reached());
        assert!(api(429, "QUOTA_EXCEEDED", "quota").is_limit_reached());
        assert!(!api(400, "INVALID_PARAMETER_VALUE", "policy_id is invalid").is_limit_reached());
        assert!(!api(409, "RESOURCE_ALREADY_EXISTS", words).is_limit_reached());
    }
}
