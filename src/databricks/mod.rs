//! The operator's only view of Databricks: a typed client for the account API.

mod auth;
mod budget;
mod client;
mod error;
pub mod types;

pub use auth::{Credentials, TokenProvider};
pub use budget::{Budget, BudgetObserver, Class, Deferred, Limits, Permit, Rate};
pub use client::{AccountClient, ClientOptions, Observer};
pub use error::Error;

/// Databricks allows at most this many OAuth secrets per service principal.
pub const MAX_SECRETS_PER_PRINCIPAL: usize = 5;

/// Whether `url` is plain `http://` to a loopback host (localhost, 127.0.0.0/8, ::1): the only place plain HTTP
/// is allowed (a local emulator).
pub fn is_loopback_http_url(url: &str) -> bool {
    url::Url::parse(url).ok().is_some_and(|u| {
        u.scheme() == "http"
            && match u.host() {
                Some(url::Host::Domain(d)) => d == "localhost",
                Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                None => false,
            }
    })
}
