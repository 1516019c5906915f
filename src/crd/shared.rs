//! What the kinds' specs share: the account reference, rollout targets, output templates, and the patterns their
//! schemas validate with.

use std::collections::BTreeMap;

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// A reference to the cluster-scoped DatabricksAccount an object uses.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccountRef {
    /// Name of the DatabricksAccount (cluster-scoped) that says how to reach and authenticate to the Databricks
    /// account. The account may restrict which namespaces can use it (`spec.allowedNamespaces`).
    #[serde(default = "default_account_name")]
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

impl Default for AccountRef {
    fn default() -> Self {
        Self { name: default_account_name() }
    }
}

fn default_account_name() -> String {
    "default".to_owned()
}

/// A workload that reads a generated Secret once at start (`envFrom`, `env.valueFrom`) and must be restarted to
/// pick up a new value. The operator rolls it (a pod template annotation, as `kubectl rollout restart` does) when
/// it publishes a new secret, and deletes the replaced secret only once the rollout finished and the grace period
/// ended, whichever is later. Same namespace as the object.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutTarget {
    /// `Deployment`, `StatefulSet` or `DaemonSet` (apps/v1).
    pub kind: RolloutKind,
    /// Name of the workload in this object's namespace.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"))]
    pub name: String,
}

/// The kinds of workload a rollout restart applies to.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, schemars::JsonSchema,
)]
pub enum RolloutKind {
    Deployment,
    StatefulSet,
    DaemonSet,
}

/// Labels and annotations added to a Secret or ConfigMap the operator generates. The object's own labels are
/// never copied; keys the operator sets itself win over the template.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutputTemplate {
    /// Labels to add to the generated object.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations to add to the generated object.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// CEL: a URL that is `https://`, or plain `http://` on a loopback host (a local emulator or a desktop app).
pub(crate) const CEL_HTTPS_OR_LOOPBACK: &str = r"self.startsWith('https://') || self.matches('^http://(localhost|127\\.[0-9]+\\.[0-9]+\\.[0-9]+|\\[::1\\])(:[0-9]+)?(/.*)?$')";

/// Go-style duration, as `kubectl` and cert-manager use: `2160h`, `90m`, `1h30m`.
pub(crate) const DURATION_PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$";
