//! The bottom layer: the operator's vocabulary (errors and reasons, conditions, the names it writes) and its pure
//! decisions (what a namespace may do, what a principal belongs to, when a rotation may happen, whether a remote
//! object came from a recorded intent). No async, no client: every function here is a unit test.

pub mod claims;
pub mod conditions;
pub mod error;
pub mod intent;
pub mod limits;
pub mod membership;
pub mod meta;
pub mod ownership;
pub mod reason;
pub mod revocation;
pub mod rotate_request;
pub mod tenancy;
pub mod used_by;
