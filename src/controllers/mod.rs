//! The controllers, in five layers whose imports all point down (see docs/architecture.md):
//!
//! - `run`: the wiring (builds the controllers, their watches, leader election); nothing imports it;
//! - the kinds, side by side, never importing each other: `account`, `service_principal`, `app_connection`,
//!   `trust_policy`;
//! - `runtime`: the Context, the reconcile skeleton, the deletion gate, the memory between passes;
//! - `services`: what the kinds share (accounts, principals, federation policies, the ledger, Secrets,
//!   rollouts, events, status writes);
//! - `rules`: the vocabulary and the pure decisions.
//!
//! This file only declares them and re-exports what the binary, the tests and the sandbox use.

mod account;
mod app_connection;
mod rules;
mod run;
mod runtime;
mod service_principal;
mod services;
pub mod trust_policy;

pub use rules::{conditions, error::Error, reason::Reason};
pub use run::{LeaderElection, Stop, run, run_elected, run_until};
pub use runtime::context::{Config, Context, DEFAULT_NAMESPACE, DEFAULT_TOKEN_DIR, FailPoints};
pub use services::rollout;
