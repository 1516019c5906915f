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
    /// Labels to add to the generated object: keys and values as Kubernetes accepts them (a qualified name, a
    /// value of at most 63 characters), at most 64.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64, "additionalProperties" = {"type": "string", "maxLength": 63}))]
    #[x_kube(validation = Rule::new(CEL_QUALIFIED_KEYS).message("template label keys must be qualified names: an optional DNS-subdomain prefix and '/', then at most 63 characters of [A-Za-z0-9-_.] starting and ending alphanumeric"))]
    #[x_kube(validation = Rule::new(CEL_LABEL_VALUES).message("template label values must be empty or at most 63 characters of [A-Za-z0-9-_.] starting and ending alphanumeric"))]
    pub labels: BTreeMap<String, String>,
    /// Annotations to add to the generated object: qualified-name keys, values of at most 4096 characters, at
    /// most 50 (so the object always fits the apiserver's limit on annotations).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 50, "additionalProperties" = {"type": "string", "maxLength": 4096}))]
    #[x_kube(validation = Rule::new(CEL_QUALIFIED_KEYS).message("template annotation keys must be qualified names: an optional DNS-subdomain prefix and '/', then at most 63 characters of [A-Za-z0-9-_.] starting and ending alphanumeric"))]
    pub annotations: BTreeMap<String, String>,
}

/// CEL: every key of a map is a qualified name (label and annotation keys): `[prefix/]name`.
const CEL_QUALIFIED_KEYS: &str = r"self.all(k, k.matches('^([a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$') && (k.contains('/') ? (k.lastIndexOf('/') <= 253 && size(k) - k.lastIndexOf('/') - 1 <= 63) : size(k) <= 63))";

/// CEL: every value of a map is a label value.
const CEL_LABEL_VALUES: &str =
    r"self.all(k, self[k].matches('^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$'))";

/// CEL: a URL that is `https://`, or plain `http://` on a loopback host (a local emulator or a desktop app).
pub(crate) const CEL_HTTPS_OR_LOOPBACK: &str = r"self.startsWith('https://') || self.matches('^http://(localhost|127\\.[0-9]+\\.[0-9]+\\.[0-9]+|\\[::1\\])(:[0-9]+)?(/.*)?$')";

/// Go-style duration, as `kubectl` and cert-manager use: `2160h`, `90m`, `1h30m`.
pub(crate) const DURATION_PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$";
