//! The operator's only view of Databricks: a typed client for the account API.

mod auth;
mod budget;
mod client;
mod error;
mod groups;
mod response;
mod rule_sets;
pub mod types;

pub use auth::{Credentials, TokenProvider};
pub use budget::{Budget, BudgetObserver, Class, Deferred, Limits, Permit, Rate};
pub use client::{AccountClient, ClientOptions, Observer};
pub use error::{Error, ExchangeRefusal};

/// Databricks allows at most this many OAuth secrets per service principal.
pub const MAX_SECRETS_PER_PRINCIPAL: usize = 5;
