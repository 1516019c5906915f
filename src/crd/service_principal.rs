//! ServicePrincipal: an account service principal for machine-to-machine access, its OAuth secret published
//! into a Kubernetes Secret, and its workspace assignments.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::shared::{AccountRef, OutputTemplate};

/// An account-level Databricks service principal for machine-to-machine (M2M) OAuth. The operator creates (or
/// adopts) the principal, converges its workspace assignments, and keeps a valid OAuth secret in a Kubernetes
/// Secret, rotating it before it expires.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "oauth.databricks-operator.io",
    version = "v1alpha1",
    kind = "ServicePrincipal",
    namespaced,
    doc = "An account-level Databricks service principal for machine-to-machine OAuth, its secret and its workspace assignments.",
    status = "ServicePrincipalStatus",
    shortname = "dbxsp",
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
    printcolumn(name = "Application ID", type_ = "string", json_path = ".status.applicationId"),
    // A string, not a date: kubectl prints a future date as `<invalid>`.
    printcolumn(
        name = "Expires",
        type_ = "string",
        json_path = ".status.credentials.expireTime",
        priority = 1
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.adopt) == has(oldSelf.adopt)")
    .message("adopt cannot be added or removed after creation"))]
pub struct ServicePrincipalSpec {
    /// The DatabricksAccount this principal lives in. Immutable.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self == oldSelf").message("accountRef is immutable"))]
    pub account_ref: AccountRef,

    /// Display name of the principal in Databricks. Defaults to `metadata.name`. Display names are not unique
    /// in Databricks: the operator identifies the principal by the ids in `status`, never by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub display_name: Option<String>,

    /// Whether the principal is active. An inactive principal cannot authenticate.
    #[serde(default = "default_true")]
    pub active: bool,

    /// The exact set of workspaces the principal is assigned to. The operator adds, updates and removes
    /// assignments so that Databricks matches this list. Each workspace, and ADMIN, must be delegated to this
    /// namespace by the account (`spec.delegations[].workspaces`), else nothing is written
    /// (`reason=AssignmentNotAllowed`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["workspaceId".into()]))]
    #[schemars(length(max = 500))]
    pub workspace_assignments: Vec<WorkspaceAssignment>,

    /// The OAuth secret and the Kubernetes Secret it is published in. Omit it (or set `type: None`) for a
    /// principal used only through workload identity federation (see TrustPolicy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<Credentials>,

    /// Take over an existing principal instead of creating one. Immutable. The application id must be granted to
    /// this namespace by the account (`spec.delegations[].adopt`, or a `singleTenant` account); the operator's own
    /// identity, account admins and principals another object created or adopted are always refused
    /// (`reason=AdoptRefused`). An adopted principal keeps its display name unless `displayName` is set, and its
    /// name and active flag change only if the grant allows deactivation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("adopt is immutable"))]
    pub adopt: Option<Adopt>,

    /// What happens to the principal in Databricks when this object is deleted: `Delete` it (the default for
    /// principals the operator created), `Deactivate` it, or leave it (`Orphan`, the default for adopted
    /// principals). For an adopted principal it is lowered to what the adoption grant allows, and the secrets and
    /// federation policies the operator added to it are removed in any case. The annotation
    /// `oauth.databricks-operator.io/deletion-policy: orphan` overrides it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_policy: Option<PrincipalDeletionPolicy>,

    /// Account groups the principal is a direct member of, by display name (how Unity Catalog grants and
    /// workspace permissions are usually given). Each group must exist (the operator never creates or deletes
    /// groups: `reason=GroupNotFound`) and be delegated to this namespace (`spec.delegations[].groups`, or a
    /// `singleTenant` account), else nothing is written (`reason=GroupNotAllowed`). The operator adds and removes
    /// only this principal's own membership, never the group's other members; a membership removed outside the
    /// operator is added back at the next pass. On an adopted principal, memberships it had before are left as
    /// they are.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Set)]
    #[schemars(length(max = 100), inner(length(min = 1, max = 256)))]
    pub groups: Vec<String>,

    /// Who may use the principal (`User`: run jobs and pipelines as it, the Service Principal User role) or manage
    /// it (`Manager`), written into the principal's account rule set. The operator adds and removes only the
    /// entries it wrote, by read-modify-write with the rule set's etag, so entries others grant (in the console,
    /// with Terraform) and the operator's own stay. A principal of an object in this namespace may always be
    /// named; users and groups must be delegated (`spec.delegations[].usedBy`, or a `singleTenant` account), else
    /// nothing is written (`reason=UsedByNotAllowed`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["principal".into(), "role".into()]))]
    #[schemars(length(max = 100))]
    pub used_by: Vec<UsedBy>,
}

/// One principal that may use or manage a service principal.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsedBy {
    /// `users/<email>`, `groups/<group display name>` or `servicePrincipals/<application id>`.
    #[schemars(regex(
        pattern = r"^(users/[^/\s]+@[^/\s]+|groups/[^/]+|servicePrincipals/[0-9a-fA-F-]{36})$"
    ))]
    #[schemars(length(max = 300))]
    pub principal: String,
    /// `User` (the Service Principal User role) or `Manager` (the Service Principal Manager role). A manager is not
    /// a user: name both to do both.
    #[serde(default)]
    pub role: UsedByRole,
}

/// A role on a service principal.
#[derive(
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    schemars::JsonSchema,
)]
pub enum UsedByRole {
    #[default]
    User,
    Manager,
}

impl UsedByRole {
    /// The role's name in a rule set.
    pub fn rule_set_role(self) -> &'static str {
        match self {
            UsedByRole::User => "roles/servicePrincipal.user",
            UsedByRole::Manager => "roles/servicePrincipal.manager",
        }
    }
}

fn default_true() -> bool {
    true
}

/// One workspace the principal is assigned to.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceAssignment {
    /// The numeric workspace id.
    #[schemars(range(min = 1))]
    pub workspace_id: i64,
    /// Permissions in the workspace: `USER`, `ADMIN`, or both (ADMIN wins).
    #[x_kube(merge_strategy = ListMerge::Set)]
    #[schemars(length(min = 1, max = 2))]
    pub permissions: Vec<WorkspacePermission>,
}

/// A permission a principal can hold in a workspace.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, schemars::JsonSchema,
)]
#[serde(rename_all = "UPPERCASE")]
pub enum WorkspacePermission {
    // May use the workspace.
    User,
    // Workspace administrator.
    Admin,
}

/// The principal's OAuth secret and the Kubernetes Secret it is published in.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("duration(self.lifetime) >= duration('5m') && duration(self.lifetime) <= duration('17520h')")
    .message("credentials.lifetime must be between 5m and 17520h (730 days)"))]
#[x_kube(validation = Rule::new("!has(self.renewBefore) || duration(self.renewBefore) < duration(self.lifetime)")
    .message("credentials.renewBefore must be shorter than credentials.lifetime"))]
#[x_kube(validation = Rule::new("!has(self.renewBefore) || duration(self.renewBefore) >= duration('1m')")
    .message("credentials.renewBefore must be at least 1m"))]
pub struct Credentials {
    /// `OAuthSecret` (default) mints an OAuth secret and publishes it; `None` keeps no secret (federation only).
    #[serde(rename = "type", default)]
    pub type_: CredentialsType,

    /// Name of the Secret the credentials are written to, in this object's namespace. Defaults to
    /// `<metadata.name>-databricks`. The operator never overwrites a Secret it does not own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"))]
    pub secret_name: Option<String>,

    /// How long each OAuth secret is valid, as a duration (`2160h` = 90 days). Between `5m` and `17520h`
    /// (730 days, the Databricks maximum).
    #[serde(default = "default_lifetime")]
    #[schemars(regex(pattern = super::shared::DURATION_PATTERN), length(max = 64))]
    pub lifetime: String,

    /// How long before expiry the secret is rotated, as a duration. Defaults to one third of `lifetime`.
    /// Must be shorter than `lifetime`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = super::shared::DURATION_PATTERN), length(max = 64))]
    pub renew_before: Option<String>,

    /// Value written as `DATABRICKS_HOST`. Defaults to the account host (then `DATABRICKS_ACCOUNT_ID` is written
    /// too); set a workspace URL to give workloads a workspace client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    #[x_kube(validation = Rule::new(super::shared::CEL_HTTPS_OR_LOOPBACK)
        .message("credentials.host must be an https:// URL (plain http:// is allowed only for loopback hosts)"))]
    pub host: Option<String>,

    /// OAuth scopes bound to each minted secret (Databricks Beta): a token minted with it cannot exceed them, so a
    /// leaked secret can do no more (e.g. `[sql]` for a BI tool). Empty (the default): unrestricted. A change
    /// mints a new secret and rotates as usual. Consumers must ask for these scopes when they request a token (an
    /// SDK's `scopes` setting); a request for `all-apis` with a scoped secret is refused. The Secret carries
    /// them, space-separated, as `DATABRICKS_SCOPES`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 20),
        inner(length(min = 1, max = 64), regex(pattern = r"^[a-z0-9][a-z0-9._:-]*$"))
    )]
    #[x_kube(validation = Rule::new("self.all(s, self.exists_one(t, t == s))")
        .message("credentials.scopes must not name a scope twice"))]
    pub scopes: Vec<String>,

    /// Labels and annotations added to the Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<OutputTemplate>,

    /// Workloads that consume the Secret and read it only at start. When a new secret is published, those whose
    /// pods use the Secret are rolled (a pod template annotation), and the replaced secret is deleted only after
    /// their rollouts finished and the grace period ended, whichever is later (or when a sixth secret needs its
    /// room). Consumers not named here keep the old value until they restart on their own, and it stops working
    /// when the grace period ends.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[x_kube(validation = Rule::new("self.all(t, self.exists_one(u, u.kind == t.kind && u.name == t.name))")
        .message("rolloutRestartTargets must not name the same workload twice"))]
    pub rollout_restart_targets: Vec<super::shared::RolloutTarget>,
}

fn default_lifetime() -> String {
    "2160h".to_owned()
}

/// Whether a principal gets an OAuth secret.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
pub enum CredentialsType {
    // Mint an OAuth secret, publish it in a Secret and rotate it before expiry.
    #[default]
    OAuthSecret,
    // No secret: the principal is used through workload identity federation only.
    None,
}

/// An existing principal to take over.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Adopt {
    /// Application id (OAuth client id, a UUID) of the existing service principal.
    #[schemars(regex(
        pattern = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
    ))]
    pub application_id: String,
}

/// What happens to a service principal in Databricks when its object is deleted.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum PrincipalDeletionPolicy {
    // Delete the principal (and with it its secrets and federation policies).
    Delete,
    // Keep the principal but set it inactive, so it can no longer authenticate.
    Deactivate,
    // Leave the principal as it is.
    Orphan,
}

/// Observed state of a ServicePrincipal.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServicePrincipalStatus {
    /// The principal's Databricks id (SCIM id; the `principal_id` of workspace assignments).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The principal's application id: its OAuth client id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application_id: Option<String>,
    /// The OAuth secret currently published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<CredentialsStatus>,
    /// Workspace assignments as last applied.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["workspaceId".into()]))]
    pub workspace_assignments: Vec<WorkspaceAssignment>,
    /// `Ready`, `Synced` and `CredentialsReady`, each with a reason and a message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// The OAuth secret currently published in the Secret. Never holds the secret value.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct CredentialsStatus {
    /// Name of the Secret the credentials are published in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    /// Databricks id of the published OAuth secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_id: Option<String>,
    /// When the published secret was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_time: Option<Time>,
    /// When the published secret expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expire_time: Option<Time>,
    /// The OAuth scopes the published secret was minted with (empty: unrestricted).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    /// When the operator will rotate it (`expireTime - renewBefore`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renew_time: Option<Time>,
    /// Earlier secrets still valid during the rotation grace period, and when each is deleted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retiring: Vec<RetiringSecret>,
    /// Set while a new secret is being minted: any unpublished secret created after it is a leftover of an
    /// interrupted mint and is deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minting_since: Option<Time>,
    /// The value of the `oauth.databricks-operator.io/rotate` annotation last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotate_request: Option<String>,
    /// The earliest time a new value of the rotate annotation mints again: the last mint plus the operator's
    /// `--rotate-min-interval`. A request before then waits for it (the CredentialsReady condition says so).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotate_allowed_after: Option<Time>,
}

/// A replaced OAuth secret kept valid for the rotation grace period, so workloads can pick up the new one.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetiringSecret {
    /// Databricks id of the replaced secret.
    pub secret_id: String,
    /// When the operator deletes it.
    pub delete_after: Time,
}
