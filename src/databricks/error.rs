//! Errors of the Databricks client, by failure kind. Messages keep the server's own words and never hold a
//! secret value.

use std::time::Duration;

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

    /// The server asked us to wait this long before trying again.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Api { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}
