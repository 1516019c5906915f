//! DatabricksAccount: how the operator reaches and authenticates to one Databricks account.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How the operator reaches and authenticates to one Databricks account. Every ServicePrincipal,
/// DatabricksAppConnection and TrustPolicy references one through `spec.accountRef.name` (default `default`).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "oauth.databricks-operator.io",
    version = "v1alpha1",
    kind = "DatabricksAccount",
    doc = "How the operator reaches and authenticates to one Databricks account (cluster-scoped).",
    status = "DatabricksAccountStatus",
    shortname = "dbxaccount",
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
    printcolumn(name = "Account ID", type_ = "string", json_path = ".spec.accountId"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.singleTenant) || !self.singleTenant || !has(self.delegations) || size(self.delegations) == 0")
    .message("singleTenant trusts every allowed namespace with everything; remove it to use delegations"))]
pub struct DatabricksAccountSpec {
    /// The Databricks account ID (a UUID, shown in the account console). Immutable: create another
    /// DatabricksAccount to talk to another account.
    #[schemars(regex(
        pattern = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
    ))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("accountId is immutable"))]
    pub account_id: String,

    /// The cloud the account lives in. Selects the default `host`.
    #[serde(default)]
    pub cloud: Cloud,

    /// The account console host, e.g. `https://accounts.cloud.databricks.com`. Defaults by `cloud`: AWS
    /// `https://accounts.cloud.databricks.com`, Azure `https://accounts.azuredatabricks.net`, GCP
    /// `https://accounts.gcp.databricks.com`. Must be `https://`; plain `http://` is accepted only for loopback
    /// hosts (a local Databricks emulator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    #[x_kube(validation = Rule::new(super::shared::CEL_HTTPS_OR_LOOPBACK)
        .message("host must be an https:// URL (plain http:// is allowed only for localhost, 127.0.0.0/8 or [::1])"))]
    pub host: Option<String>,

    /// How the operator authenticates to the account. Set exactly one of `oauthM2M` and `workloadIdentity`.
    pub auth: AccountAuth,

    /// Namespaces whose objects may use this account. When unset, every namespace may. When set, a namespace may
    /// use the account if it is listed in `names` or matches `selector`; objects elsewhere get
    /// `Ready=False, reason=NamespaceNotAllowed` and no Databricks call is made for them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_namespaces: Option<AllowedNamespaces>,

    /// What namespaces may do with this account beyond creating service principals with OAuth secrets: which
    /// workspaces they may assign (and the highest permission on each), whether they may create app connections
    /// and trust policies, and which existing principals they may adopt. Rules add up: a namespace matched by
    /// several rules gets all their grants. Without rules (and without `singleTenant`), allowed namespaces may
    /// only create service principals with secrets and no workspace assignments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub delegations: Vec<Delegation>,

    /// `true` trusts every allowed namespace with everything the operator can do: any workspace with any
    /// permission, app connections, trust policies, and adopting any principal (never the operator's own identity,
    /// an account admin, or a principal another object owns). For a cluster whose every namespace belongs to the
    /// platform team; the account's Ready message says so. Cannot be combined with `delegations`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub single_tenant: bool,

    /// The API budget shared by every object that uses this account (and every other DatabricksAccount for the
    /// same `accountId`: they share one budget, with the tightest of their limits).
    #[serde(default)]
    pub rate_limit: RateLimit,

    /// What the operator does with what a grant produced once the grant goes: a delegation revoked or narrowed,
    /// a namespace no longer allowed (or deleted), an object that disappeared without cleanup.
    #[serde(default)]
    pub revocation: Revocation,
}

/// What revocation removes, and when.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Revocation {
    /// How long a federation policy or an app integration whose kind is no longer delegated (or whose namespace
    /// is no longer allowed) lives on before the operator deletes it; the object's condition says when. Regranting
    /// within the period keeps it. Workspace assignments above a grant are lowered at once. Go duration, default
    /// `1m`.
    #[serde(default = "default_revocation_grace")]
    #[schemars(regex(pattern = super::shared::DURATION_PATTERN), length(max = 64))]
    pub grace_period: String,
    /// What happens to a principal the operator created for a namespace that may no longer use the account, or
    /// for an object that disappeared without its cleanup: `Deactivate` (default: it can no longer sign in, its
    /// OAuth secrets are deleted, and it is reactivated if the namespace is allowed again), `Delete`, or `Orphan`
    /// (left as it is: the only way to leave a revoked namespace's principals working).
    #[serde(default = "default_revoked_principals")]
    pub principals: super::service_principal::PrincipalDeletionPolicy,
}

impl Default for Revocation {
    fn default() -> Self {
        Self { grace_period: default_revocation_grace(), principals: default_revoked_principals() }
    }
}

fn default_revocation_grace() -> String {
    "1m".to_owned()
}

fn default_revoked_principals() -> super::service_principal::PrincipalDeletionPolicy {
    super::service_principal::PrincipalDeletionPolicy::Deactivate
}

/// The cloud a Databricks account lives in.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
pub enum Cloud {
    // Amazon Web Services (`https://accounts.cloud.databricks.com`).
    #[default]
    #[serde(rename = "AWS")]
    Aws,
    // Microsoft Azure (`https://accounts.azuredatabricks.net`).
    Azure,
    // Google Cloud (`https://accounts.gcp.databricks.com`).
    #[serde(rename = "GCP")]
    Gcp,
}

impl Cloud {
    /// The account console host of this cloud.
    pub fn default_host(self) -> &'static str {
        match self {
            Cloud::Aws => "https://accounts.cloud.databricks.com",
            Cloud::Azure => "https://accounts.azuredatabricks.net",
            Cloud::Gcp => "https://accounts.gcp.databricks.com",
        }
    }
}

impl DatabricksAccountSpec {
    /// The account host: `spec.host`, else the default of `spec.cloud`, without a trailing slash.
    pub fn effective_host(&self) -> String {
        self.host.as_deref().unwrap_or(self.cloud.default_host()).trim_end_matches('/').to_owned()
    }
}

/// How the operator authenticates to the Databricks account. Exactly one method is set.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.oauthM2M) != has(self.workloadIdentity)")
    .message("set exactly one of auth.oauthM2M and auth.workloadIdentity"))]
pub struct AccountAuth {
    /// OAuth machine-to-machine: the client id and secret of an account-admin service principal, read from a
    /// Kubernetes Secret.
    #[serde(rename = "oauthM2M", default, skip_serializing_if = "Option::is_none")]
    pub oauth_m2m: Option<OAuthM2MAuth>,

    /// Workload identity federation: the operator exchanges its own projected ServiceAccount token for a
    /// Databricks token (RFC 8693 token exchange). No secret exists anywhere. Preferred.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_identity: Option<WorkloadIdentityAuth>,
}

/// OAuth M2M credentials of an account-admin service principal, read from a Secret.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct OAuthM2MAuth {
    /// The Secret holding the client id and secret. It must be in the operator's namespace (or the namespace
    /// given by `--credentials-namespace`); the operator reads no other namespace's Secrets for credentials.
    pub secret_ref: NamespacedSecretRef,
    /// Key of the client id (the service principal's application id) in the Secret.
    #[serde(default = "default_client_id_key")]
    #[schemars(length(min = 1, max = 253))]
    pub client_id_key: String,
    /// Key of the OAuth client secret in the Secret.
    #[serde(default = "default_client_secret_key")]
    #[schemars(length(min = 1, max = 253))]
    pub client_secret_key: String,
}

fn default_client_id_key() -> String {
    "DATABRICKS_CLIENT_ID".to_owned()
}

fn default_client_secret_key() -> String {
    "DATABRICKS_CLIENT_SECRET".to_owned()
}

/// A Secret in a given namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct NamespacedSecretRef {
    /// Namespace of the Secret.
    #[schemars(length(min = 1, max = 63))]
    pub namespace: String,
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Workload identity federation for the operator itself.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadIdentityAuth {
    /// Application id of the service principal to act as (service-principal federation). Leave unset for
    /// account-wide federation, where an account federation policy maps the token's subject to an identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub client_id: Option<String>,
    /// Audience of the token the operator presents. Defaults to the account id, which is what a federation
    /// policy without explicit audiences accepts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub audience: Option<String>,
    /// Path of the projected ServiceAccount token file inside the operator's pod. It is re-read on every token
    /// refresh, so the kubelet's rotation is picked up. Must lie in the operator's projected-token directory
    /// (`--token-dir`, default `/var/run/secrets/databricks`): no other file of the pod is ever sent anywhere.
    #[serde(default = "default_token_path")]
    #[schemars(length(min = 1, max = 4096))]
    #[x_kube(validation = Rule::new("self.startsWith('/') && !self.contains('/../') && !self.endsWith('/..')")
        .message("tokenPath must be an absolute path without '..'"))]
    pub token_path: String,
}

fn default_token_path() -> String {
    "/var/run/secrets/databricks/token".to_owned()
}

/// A set of namespaces: listed by name and/or matched by a label selector.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("size(self.names) > 0 || has(self.selector)")
    .message("a namespace set (allowedNamespaces, delegations[].namespaces) needs names, a selector, or both"))]
pub struct AllowedNamespaces {
    /// Namespace names.
    #[serde(default)]
    #[x_kube(merge_strategy = ListMerge::Set)]
    #[schemars(inner(length(min = 1, max = 63)))]
    pub names: Vec<String>,
    /// Namespaces whose labels match this selector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
}

/// What a set of namespaces may do with the account.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Delegation {
    /// The namespaces this rule grants to: listed by name and/or matched by a label selector.
    pub namespaces: AllowedNamespaces,
    /// Workspaces these namespaces may assign their principals to, and the highest permission on each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["workspaceId".into()]))]
    #[schemars(length(max = 1000))]
    pub workspaces: Vec<WorkspaceGrant>,
    /// Whether these namespaces may create DatabricksAppConnections (OAuth apps any account user can sign in to).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub app_connections: bool,
    /// Whether these namespaces may create TrustPolicies (federation policies on their own principals).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub trust_policies: bool,
    /// Existing principals these namespaces may adopt (`spec.adopt` of a ServicePrincipal). One principal is
    /// adopted by at most one object: the oldest that asks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["applicationId".into()]))]
    #[schemars(length(max = 1000))]
    pub adopt: Vec<AdoptGrant>,
    /// Account groups these namespaces' principals may join (`spec.groups` of a ServicePrincipal), by display
    /// name, compared without case; `*` matches any run of characters (`team-a-*`). None by default: joining a
    /// group is gaining what it is granted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Set)]
    #[schemars(length(max = 1000), inner(length(min = 1, max = 256)))]
    pub groups: Vec<String>,
    /// Users and groups these namespaces may name in `spec.usedBy` of a ServicePrincipal (who may use or manage
    /// it): `users/<email>` and `groups/<name>` patterns, compared without case, `*` matching any run of characters
    /// (`users/*@analytics.example.com`, `groups/analytics-*`). Principals of the namespace's own objects are
    /// always allowed; nothing else by default.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Set)]
    #[schemars(length(max = 1000), inner(length(min = 1, max = 300)))]
    pub used_by: Vec<String>,
    /// Caps on what these namespaces may ask for. Unset caps impose nothing. A namespace matched by several rules
    /// gets the most any of them allows (a rule without a cap allows without limit); the app connection caps
    /// come from the rules that grant `appConnections`, the trust policy cap from those that grant
    /// `trustPolicies`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<DelegationLimits>,
}

/// Caps a delegation puts on what its namespaces ask for. Refusals are conditions with a reason; nothing is
/// written in Databricks for a refused object.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct DelegationLimits {
    /// The longest lifetime of an OAuth secret (Go duration, e.g. `720h`): a longer `credentials.lifetime` is
    /// lowered to it, and the condition says so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = super::shared::DURATION_PATTERN), length(max = 64))]
    pub max_secret_lifetime: Option<String>,
    /// `true`: these namespaces' objects may leave what they created behind in Databricks (`deletionPolicy:
    /// Orphan`, or the orphan annotation): nothing records it afterwards, so no later revocation reaches it.
    /// Default `false`: deletion deletes (an adopted principal is left as always, without what was added to it).
    /// Accounts without delegations are not capped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_orphan: Option<bool>,
    /// The most service principals one namespace may have on the account (created and adopted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100000))]
    pub max_service_principals: Option<i32>,
    /// The most app connections one namespace may have on the account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100000))]
    pub max_app_connections: Option<i32>,
    /// The most trust policies one namespace may have on the account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100000))]
    pub max_trust_policies: Option<i32>,
    /// Hosts app connections may redirect to: a host (`app.example.com`), every subdomain (`*.example.com`), or
    /// `localhost` (also 127.0.0.1 and [::1], any port). Empty: any host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100), inner(length(min = 1, max = 253)))]
    pub app_redirect_hosts: Vec<String>,
    /// Scopes app connections may ask for (`sql`, `openid`, `offline_access`, ...). Empty: any scope.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 50), inner(length(min = 1, max = 100)))]
    pub app_scopes: Vec<String>,
}

/// A workspace a delegation lets namespaces assign principals to.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceGrant {
    /// The numeric workspace id.
    #[schemars(range(min = 1))]
    pub workspace_id: i64,
    /// The highest permission granted: `USER` (default) or `ADMIN` (workspace administrator).
    #[serde(default = "default_grant_permission")]
    pub permission: super::service_principal::WorkspacePermission,
}

fn default_grant_permission() -> super::service_principal::WorkspacePermission {
    super::service_principal::WorkspacePermission::User
}

/// An existing principal a delegation lets namespaces adopt.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdoptGrant {
    /// Application id (OAuth client id, a UUID) of the principal.
    #[schemars(regex(
        pattern = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
    ))]
    pub application_id: String,
    /// The most the adopting object's deletion may do to the principal: `Orphan` (default: leave it),
    /// `Deactivate`, or `Delete`. A stronger `deletionPolicy` on the object is lowered to this.
    #[serde(default = "default_adopt_deletion")]
    pub deletion_policy: super::service_principal::PrincipalDeletionPolicy,
}

fn default_adopt_deletion() -> super::service_principal::PrincipalDeletionPolicy {
    super::service_principal::PrincipalDeletionPolicy::Orphan
}

/// Client-side limits on calls to the Databricks account API, shared by every object that uses the account.
/// Databricks limits reads, writes and PATCHes separately (about 20, 5 and 2 requests per second), so each class
/// has a bucket of its own: a 429 slows only its class, and reads go on while writes wait. Within a class,
/// namespaces take turns (each gets an equal share when several are busy), and one namespace may queue only
/// `maxQueuedPerNamespace` requests; further passes of its objects are deferred and retried.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.burst) || has(self.requestsPerSecond)")
    .message("rateLimit.burst caps the total and needs rateLimit.requestsPerSecond"))]
#[x_kube(validation = Rule::new("!has(self.burst) || self.burst >= self.requestsPerSecond")
    .message("rateLimit.burst must be at least rateLimit.requestsPerSecond"))]
pub struct RateLimit {
    /// GET requests (and the token requests that prove a new secret works). Default 20 per second, burst 10.
    #[serde(default = "default_reads")]
    pub reads: ClassRateLimit,
    /// POST, PUT and DELETE requests. Default 5 per second, burst 2.
    #[serde(default = "default_writes")]
    pub writes: ClassRateLimit,
    /// PATCH requests. Default 2 per second, burst 1.
    #[serde(default = "default_patches")]
    pub patches: ClassRateLimit,
    /// Optional cap on all classes together, in requests per second (for an account whose limits are shared
    /// with other tools). Unset: no cap beyond the classes'.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub requests_per_second: Option<i32>,
    /// Burst of the total cap (default: `requestsPerSecond`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub burst: Option<i32>,
    /// Requests in flight at once, all classes together.
    #[serde(default = "default_max_concurrency")]
    #[schemars(range(min = 1, max = 64))]
    pub max_concurrency: i32,
    /// Requests one namespace may have waiting for this account, all classes together. A pass whose first
    /// request would queue more is deferred before it does anything (`Ready=False, reason=Deferred` on an object
    /// that is not Ready yet) and retried with backoff, so a namespace that churns cannot hold every reconcile
    /// worker. The operator lowers it to half its `--concurrency` when that is smaller.
    #[serde(default = "default_max_queued")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_queued_per_namespace: i32,
}

/// One class's token bucket.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClassRateLimit {
    /// Sustained requests per second.
    #[schemars(range(min = 1, max = 1000))]
    pub requests_per_second: i32,
    /// Requests that may be sent at once after an idle period.
    #[schemars(range(min = 1, max = 1000))]
    pub burst: i32,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self {
            reads: default_reads(),
            writes: default_writes(),
            patches: default_patches(),
            requests_per_second: None,
            burst: None,
            max_concurrency: default_max_concurrency(),
            max_queued_per_namespace: default_max_queued(),
        }
    }
}

impl RateLimit {
    /// The client's budget limits; `concurrency` is the operator's reconcile workers per kind.
    pub fn limits(&self, concurrency: u16) -> crate::databricks::Limits {
        use crate::databricks::{Limits, Rate};
        let rate =
            |c: &ClassRateLimit| Rate::new(f64::from(c.requests_per_second.max(1)), c.burst.max(1) as u32);
        Limits {
            reads: rate(&self.reads),
            writes: rate(&self.writes),
            patches: rate(&self.patches),
            total: self
                .requests_per_second
                .map(|rps| Rate::new(f64::from(rps.max(1)), self.burst.unwrap_or(rps).max(1) as u32)),
            max_concurrency: self.max_concurrency.max(1) as u32,
            max_queued_per_namespace: (self.max_queued_per_namespace.max(1) as u32)
                .min(u32::from(concurrency / 2).max(1)),
        }
    }
}

fn class_default(rate: crate::databricks::Rate) -> ClassRateLimit {
    ClassRateLimit { requests_per_second: rate.per_second as i32, burst: rate.burst as i32 }
}

fn default_reads() -> ClassRateLimit {
    class_default(crate::databricks::Limits::DOCUMENTED.reads)
}

fn default_writes() -> ClassRateLimit {
    class_default(crate::databricks::Limits::DOCUMENTED.writes)
}

fn default_patches() -> ClassRateLimit {
    class_default(crate::databricks::Limits::DOCUMENTED.patches)
}

fn default_max_concurrency() -> i32 {
    crate::databricks::Limits::DOCUMENTED.max_concurrency as i32
}

fn default_max_queued() -> i32 {
    crate::databricks::Limits::DOCUMENTED.max_queued_per_namespace as i32
}

/// Observed state of a DatabricksAccount.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatabricksAccountStatus {
    /// `Ready` is True when a token was obtained and an authenticated read succeeded; its message says which
    /// identity the operator acts as, or what is wrong.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Which object owns which OAuth app integration, by the object's UID. App integrations carry no tag in
    /// Databricks, so this record (written only by the operator, on an object tenants cannot write) is what
    /// proves an integration belongs to an object; the object's own status is never trusted for it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub app_connections: BTreeMap<String, AppConnectionRecord>,
    /// Which object adopted which existing principal, by application id (lowercase): one principal is adopted by
    /// at most one object, the first whose adoption was granted. Written only by the operator.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub adoptions: BTreeMap<String, ObjectRecord>,
}

/// An object that holds a claim recorded by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectRecord {
    /// Namespace of the object.
    pub namespace: String,
    /// Name of the object.
    pub name: String,
    /// UID of the object (a deleted and recreated object is another object).
    pub uid: String,
}

/// The operator's record of one DatabricksAppConnection's integration.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppConnectionRecord {
    /// Namespace of the object.
    pub namespace: String,
    /// Name of the object.
    pub name: String,
    /// The integration's display name in Databricks.
    pub display_name: String,
    /// The integration the object owns, once created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub integration_id: Option<String>,
    /// Set while an integration is being created: an unrecorded integration of this display name created after
    /// it is a leftover of this object's interrupted create.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creating_since: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
}
