//! What every kind runs inside: the Context, the reconcile skeleton, the deletion gate, the error policy and the
//! memory kept between passes. Built on the services and rules below it; never names a kind.

pub mod context;
pub mod deletion;
pub mod lifecycle;
pub mod memory;
pub mod policy;
pub mod workers;
