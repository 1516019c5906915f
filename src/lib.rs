//! databricks-oauth-operator: Databricks OAuth connections as Kubernetes resources.

pub mod control_plane;
pub mod controllers;
pub mod crd;
pub mod databricks;
pub mod emulator;
pub mod http;
pub mod metrics;
