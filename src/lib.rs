//! databricks-oauth-operator: Databricks OAuth connections as Kubernetes resources.

pub mod controllers;
pub mod crd;
pub mod databricks;
pub mod http;
pub mod metrics;
