//! TrustPolicy: a workload identity federation policy on a service principal.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// A workload identity federation policy on a service principal: workloads that present a token from a trusted
/// identity provider (for example this cluster's ServiceAccount tokens) get a Databricks token acting as the
/// principal, with no long-lived secret anywhere.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "oauth.databricks-operator.io",
    version = "v1alpha1",
    kind = "TrustPolicy",
    namespaced,
    doc = "A workload identity federation policy that lets workloads act as a service principal without a secret.",
    status = "TrustPolicyStatus",
    shortname = "dbxtrust",
    category = "databricks",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
    ),
    printcolumn(name = "Policy ID", type_ = "string", json_path = ".status.policyId"),
    printcolumn(
        name = "Verified",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Verified\")].status",
        priority = 1
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.oidc) != has(self.kubernetes)")
    .message("set exactly one source: oidc or kubernetes"))]
#[x_kube(validation = Rule::new("has(self.policyId) == has(oldSelf.policyId)")
    .message("policyId is immutable"))]
pub struct TrustPolicySpec {
    /// The ServicePrincipal (in this namespace) the policy lets workloads act as. Immutable. Its account must
    /// delegate trust policies to this namespace (`spec.delegations[].trustPolicies`), else `reason=NotDelegated`.
    #[x_kube(validation = Rule::new("self == oldSelf").message("servicePrincipalRef is immutable"))]
    pub service_principal_ref: LocalObjectRef,

    /// Id of the federation policy in Databricks: 2 to 63 characters of `a-z`, `0-9` and `-`. Defaults to one
    /// derived from this object's namespace and name. Immutable. A policy of that id the object did not create
    /// is never taken over (`reason=PolicyConflict`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[a-z0-9-]{2,63}$"))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("policyId is immutable"))]
    pub policy_id: Option<String>,

    /// Free-text description stored with the policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub description: Option<String>,

    /// Trust tokens from any OIDC identity provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oidc: Option<OidcSource>,

    /// Trust tokens of a ServiceAccount of this cluster. The operator fills in the cluster's issuer and the
    /// subject `system:serviceaccount:<namespace>:<serviceAccountName>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<KubernetesSource>,

    /// When true, the operator proves the policy works: it requests a token for the ServiceAccount
    /// (TokenRequest), exchanges it at the Databricks token endpoint and reports the result in the `Verified`
    /// condition. Needs a `kubernetes` source.
    #[serde(default)]
    pub verify: bool,
}

/// A reference to an object in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalObjectRef {
    /// Name of the object.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// An OIDC identity provider whose tokens are trusted.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(has(self.jwksUri) && has(self.jwksJson))")
    .message("set at most one of jwksUri and jwksJson"))]
pub struct OidcSource {
    /// The token issuer (`iss` claim), an https:// URL.
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = Rule::new("self.startsWith('https://')").message("oidc.issuer must be an https:// URL"))]
    pub issuer: String,
    /// Accepted audiences (`aud` claim); a token must carry at least one. When empty, Databricks accepts the
    /// account id.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Set)]
    #[schemars(length(max = 32), inner(length(min = 1, max = 1024)))]
    pub audiences: Vec<String>,
    /// The value the subject claim must have, e.g. `repo:my-org/my-repo:environment:prod`.
    #[schemars(length(min = 1, max = 1024))]
    pub subject: String,
    /// The claim holding the subject. Defaults to `sub`.
    #[serde(default = "default_subject_claim")]
    #[schemars(length(min = 1, max = 256))]
    pub subject_claim: String,
    /// Where Databricks fetches the signing keys. Normally unset: keys are discovered from the issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = Rule::new("self.startsWith('https://')").message("oidc.jwksUri must be an https:// URL"))]
    pub jwks_uri: Option<String>,
    /// The signing keys as a JWKS JSON document, for issuers Databricks cannot reach.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 65536))]
    pub jwks_json: Option<String>,
}

fn default_subject_claim() -> String {
    "sub".to_owned()
}

/// A ServiceAccount of this cluster whose tokens are trusted.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct KubernetesSource {
    /// Name of the ServiceAccount (in this namespace) whose tokens are trusted.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"))]
    pub service_account_name: String,
    /// Audience the workload requests for its projected token. Defaults to the account id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub audience: Option<String>,
    /// `Inline` (default) copies the cluster's signing keys into the policy and keeps them current, which works
    /// for private clusters; `Discovery` lets Databricks fetch them from the issuer, which must then be
    /// publicly reachable.
    #[serde(default)]
    pub jwks: JwksMode,
}

/// How Databricks gets a cluster's signing keys.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
pub enum JwksMode {
    // The operator copies the cluster's JWKS into the policy and keeps it current.
    #[default]
    Inline,
    // Databricks discovers the keys from the issuer's OIDC discovery document.
    Discovery,
}

/// Observed state of a TrustPolicy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrustPolicyStatus {
    /// Id of the federation policy in Databricks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_id: Option<String>,
    /// Databricks' unique, immutable id of the policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// Databricks id of the service principal the policy belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_principal_id: Option<String>,
    /// Name of the ConfigMap with what a pod needs to use the federation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_name: Option<String>,
    /// `Ready`, `Synced` and `Verified`, each with a reason and a message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}
