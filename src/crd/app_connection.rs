//! DatabricksAppConnection: a custom OAuth app integration for user-to-machine sign-in of an external app.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::shared::{AccountRef, OutputTemplate};

/// A custom OAuth app integration ("App connection" in the account console) for user-to-machine (U2M) sign-in
/// of an external application. Databricks generates the client id (and, for confidential apps, a client secret
/// shown once); the operator publishes them with the OAuth endpoints in a Secret.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "oauth.databricks-operator.io",
    version = "v1alpha1",
    kind = "DatabricksAppConnection",
    namespaced,
    doc = "A custom OAuth app integration for user-to-machine sign-in of an external application.",
    status = "DatabricksAppConnectionStatus",
    shortname = "dbxapp",
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
    printcolumn(name = "Client ID", type_ = "string", json_path = ".status.clientId"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.displayName) == has(oldSelf.displayName)")
    .message("displayName is immutable"))]
#[x_kube(validation = Rule::new("self.userAuthorizedScopes.all(s, s in self.scopes)")
    .message("userAuthorizedScopes must be a subset of scopes"))]
pub struct DatabricksAppConnectionSpec {
    /// The DatabricksAccount the integration is registered in. Immutable. The account must delegate app
    /// connections to this namespace (`spec.delegations[].appConnections`), else `reason=NotDelegated`.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self == oldSelf").message("accountRef is immutable"))]
    pub account_ref: AccountRef,

    /// Name of the app integration in Databricks. Defaults to `metadata.name`. Immutable (Databricks cannot
    /// rename an integration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("displayName is immutable"))]
    pub display_name: Option<String>,

    /// Redirect URLs the authorization server may send users back to. Each must be `https://`, or
    /// `http://localhost` / `http://127.0.0.1` (any port) for desktop apps.
    #[x_kube(merge_strategy = ListMerge::Set)]
    #[x_kube(validation = Rule::new("self.all(u, u.startsWith('https://') || u.matches('^http://(localhost|127\\\\.0\\\\.0\\\\.1)(:[0-9]+)?(/.*)?$'))")
        .message("redirectUrls must be https:// URLs, or http://localhost / http://127.0.0.1 for desktop apps"))]
    #[schemars(length(min = 1, max = 32), inner(length(min = 1, max = 2048)))]
    pub redirect_urls: Vec<String>,

    /// OAuth scopes the app may request, e.g. `all-apis`, `sql`, `offline_access` (needed for refresh tokens),
    /// `openid`, `email`, `profile`.
    #[serde(default = "default_scopes")]
    #[x_kube(merge_strategy = ListMerge::Set)]
    #[schemars(length(min = 1, max = 32), inner(length(min = 1, max = 128)))]
    pub scopes: Vec<String>,

    /// Scopes the signing-in user must consent to. Must be a subset of `scopes`.
    #[serde(default)]
    #[x_kube(merge_strategy = ListMerge::Set)]
    #[schemars(length(max = 32), inner(length(min = 1, max = 128)))]
    pub user_authorized_scopes: Vec<String>,

    /// A confidential app gets a client secret (for apps that can keep one, e.g. a web backend); a public app
    /// (desktop, single-page) has none and relies on PKCE. Immutable.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self == oldSelf").message("confidential is immutable"))]
    pub confidential: bool,

    /// Lifetimes of the tokens the app receives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_access_policy: Option<TokenAccessPolicy>,

    /// Name of the Secret the client id, secret and endpoints are written to. Defaults to
    /// `<metadata.name>-oauth-client`. The operator never overwrites a Secret it does not own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"))]
    pub secret_name: Option<String>,

    /// Labels and annotations added to the Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<OutputTemplate>,

    /// Workloads that consume the Secret and read it only at start. When the Secret gets new credentials (the
    /// integration was recreated, e.g. by the rotate annotation), those whose pods use the Secret are rolled (a pod
    /// template annotation). Same namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[x_kube(validation = Rule::new("self.all(t, self.exists_one(u, u.kind == t.kind && u.name == t.name))")
        .message("rolloutRestartTargets must not name the same workload twice"))]
    pub rollout_restart_targets: Vec<super::shared::RolloutTarget>,

    /// What happens to the integration in Databricks when this object is deleted: `Delete` (default; tokens it
    /// issued stop working) or `Orphan`.
    #[serde(default)]
    pub deletion_policy: AppDeletionPolicy,
}

fn default_scopes() -> Vec<String> {
    vec!["all-apis".to_owned()]
}

/// Token lifetimes of an app integration.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.refreshTokenTtlMinutes) || !has(self.accessTokenTtlMinutes) || self.refreshTokenTtlMinutes >= self.accessTokenTtlMinutes")
    .message("refreshTokenTtlMinutes must not be shorter than accessTokenTtlMinutes"))]
#[x_kube(validation = Rule::new("!has(self.absoluteSessionLifetimeMinutes) || (has(self.enableSingleUseRefreshTokens) && self.enableSingleUseRefreshTokens)")
    .message("absoluteSessionLifetimeMinutes requires enableSingleUseRefreshTokens: true"))]
pub struct TokenAccessPolicy {
    /// Access token lifetime in minutes, 5 to 1440. Databricks' default is 60.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 5, max = 1440))]
    pub access_token_ttl_minutes: Option<i32>,
    /// Refresh token lifetime in minutes, 5 to 129600 (90 days), not shorter than the access token lifetime.
    /// Databricks' default is 10080 (7 days).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 5, max = 129600))]
    pub refresh_token_ttl_minutes: Option<i32>,
    /// Refresh-token rotation: each refresh token can be used once (Databricks Beta).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_single_use_refresh_tokens: Option<bool>,
    /// Absolute cap on a sign-in session in minutes; only with single-use refresh tokens (Databricks Beta).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 5, max = 129600))]
    pub absolute_session_lifetime_minutes: Option<i32>,
}

/// What happens to an app integration in Databricks when its object is deleted.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
pub enum AppDeletionPolicy {
    // Delete the integration; tokens it issued stop working.
    #[default]
    Delete,
    // Leave the integration in Databricks.
    Orphan,
}

/// Observed state of a DatabricksAppConnection.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatabricksAppConnectionStatus {
    /// Databricks id of the app integration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub integration_id: Option<String>,
    /// The OAuth client id Databricks generated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// Name of the Secret the client credentials are published in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    /// The value of the `oauth.databricks-operator.io/rotate` annotation last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotate_request: Option<String>,
    /// The earliest time a new value of the rotate annotation recreates the integration again: its creation plus
    /// the operator's `--rotate-min-interval`. A request before then waits for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotate_allowed_after: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    /// `Ready`, `Synced` and `CredentialsReady`, each with a reason and a message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}
