//! DatabricksClaim: the operator's own record that one remote Databricks object belongs to one object of this
//! cluster. Cluster-scoped, written only by the operator (no tenant role grants it), one per remote object.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::service_principal::{UsedBy, WorkspacePermission};

/// Which object of this cluster owns one remote Databricks object (a service principal, an OAuth app integration,
/// a federation policy), and what the operator did to it under that ownership. The name is derived from the
/// Databricks account id and the remote object, so the apiserver itself keeps one owner per remote object: a
/// second create is refused. Written only by the operator; `kubectl get dbxclaim` answers "who owns X?".
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "oauth.databricks-operator.io",
    version = "v1alpha1",
    kind = "DatabricksClaim",
    plural = "databricksclaims",
    doc = "The operator's record that a remote Databricks object belongs to one object of this cluster.",
    shortname = "dbxclaim",
    printcolumn(name = "Kind", type_ = "string", json_path = ".spec.remote.kind"),
    printcolumn(name = "Remote ID", type_ = "string", json_path = ".spec.remote.id"),
    printcolumn(
        name = "Application ID",
        type_ = "string",
        json_path = ".spec.remote.applicationId",
        priority = 1
    ),
    printcolumn(name = "Owner Namespace", type_ = "string", json_path = ".spec.owner.namespace"),
    printcolumn(name = "Owner", type_ = "string", json_path = ".spec.owner.name"),
    printcolumn(name = "Adopted", type_ = "boolean", json_path = ".spec.adopted", priority = 1),
    printcolumn(name = "Account", type_ = "string", json_path = ".spec.accountId", priority = 1),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct DatabricksClaimSpec {
    /// The Databricks account id (not the DatabricksAccount object's name: two objects for one account share
    /// their claims).
    #[x_kube(validation = Rule::new("self == oldSelf").message("accountId is immutable"))]
    #[schemars(length(min = 1, max = 64))]
    pub account_id: String,
    /// The remote object claimed.
    pub remote: ClaimedObject,
    /// The object that owns it.
    #[x_kube(validation = Rule::new("self == oldSelf").message("owner is immutable"))]
    pub owner: ClaimOwner,
    /// The owner adopted an existing principal (rather than creating it): what the operator added under the claim
    /// is removed when the claim is released, and the principal itself is left.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub adopted: bool,
    /// Set while the remote object is being created (or, on an adopted principal, an OAuth secret minted): a
    /// remote object that appears within the create window after it came from that create.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creating_since: Option<Time>,
    /// OAuth secrets the operator minted on an adopted principal under this claim (published and retiring).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 5))]
    pub secrets: Vec<String>,
    /// Workspace assignments the operator made for the principal under this claim, and what the principal had
    /// in that workspace before (adopted principals).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000))]
    pub workspaces: Vec<ClaimedAssignment>,
    /// Account groups the operator made the principal a member of under this claim (memberships an adopted
    /// principal had before are not the operator's, and are not listed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000))]
    pub groups: Vec<ClaimedGroup>,
    /// Entries the operator wrote into the principal's rule set under this claim (`spec.usedBy`); entries that were
    /// there before are not the operator's, and are not listed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000))]
    pub used_by: Vec<UsedBy>,
    /// When the grant the remote object depends on was revoked: the operator removes it after the account's
    /// `revocation.gracePeriod`, unless the grant comes back first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_since: Option<Time>,
    /// The claim is being released (an adoption): nothing new is added under it (no secret, no federation policy)
    /// while what was added is removed. On a created principal: it was revoked (deactivated or left) and stays its
    /// object's until the namespace is allowed again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub releasing: bool,
}

/// A remote Databricks object.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClaimedObject {
    /// `ServicePrincipal`, `AppIntegration` or `FederationPolicy`.
    #[x_kube(validation = Rule::new("self == oldSelf").message("remote.kind is immutable"))]
    pub kind: ClaimedKind,
    /// Its id: the principal's SCIM id, the integration id, or the federation policy id (unset while a create
    /// is in flight).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// A principal's application id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application_id: Option<String>,
    /// The principal a federation policy is on (its SCIM id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal_id: Option<String>,
    /// A federation policy's uid, which tells it apart from a policy created later under the same id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// An integration's display name (integrations carry no other mark).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
}

/// The kinds of remote object a claim can name.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, schemars::JsonSchema)]
pub enum ClaimedKind {
    #[default]
    ServicePrincipal,
    AppIntegration,
    FederationPolicy,
}

/// The object a claim belongs to.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClaimOwner {
    /// `ServicePrincipal`, `DatabricksAppConnection` or `TrustPolicy`.
    pub kind: String,
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its UID: a deleted and re-created object is another object.
    pub uid: String,
}

/// A group membership added under a claim.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClaimedGroup {
    /// The group's id.
    pub id: String,
    /// Its display name when it was joined.
    pub display_name: String,
}

/// A workspace assignment made under a claim.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClaimedAssignment {
    /// The numeric workspace id.
    pub workspace_id: i64,
    /// What the operator assigned.
    pub permission: WorkspacePermission,
    /// What the principal had in the workspace before (unset: nothing), restored when the claim is released.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<WorkspacePermission>,
}
