//! What the kinds share, below them: one Kubernetes or Databricks concern per module, each built from explicit
//! parts (a client, settings, `Events`), never from the Context, and never naming a kind's module.

pub mod accounts;
pub mod assignments;
pub mod claims;
pub mod events;
pub mod federation;
pub mod ledger;
pub mod principals;
pub mod release;
pub mod rollout;
pub mod rule_sets;
pub mod secrets;
pub mod status;
