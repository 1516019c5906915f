//! Wire types of the account API (snake_case REST, camelCase SCIM). Never used in CRD types.

use serde::{Deserialize, Deserializer, Serialize};

/// int64 values may arrive as JSON numbers or as quoted strings (proto3-JSON); read both.
pub fn lenient_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Int {
        Number(i64),
        Text(String),
    }
    match Option::<Int>::deserialize(d)? {
        None => Ok(None),
        Some(Int::Number(n)) => Ok(Some(n)),
        Some(Int::Text(s)) => s.parse().map(Some).map_err(serde::de::Error::custom),
    }
}

/// An account service principal (SCIM).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServicePrincipal {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub application_id: String,
    #[serde(default)]
    pub display_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    #[serde(default = "default_true")]
    pub active: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<ComplexValue>,
    /// The account groups it is a member of (`value`: group id, `display`: its name).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<ComplexValue>,
}

/// An account group (SCIM). `members` only in a get's answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Group {
    pub id: String,
    #[serde(default)]
    pub display_name: String,
    #[serde(default)]
    pub members: Vec<ComplexValue>,
}

/// One grant of an access-control rule set: a role and who holds it (`users/<email>`, `groups/<name>`,
/// `servicePrincipals/<application id>`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantRule {
    pub role: String,
    #[serde(default)]
    pub principals: Vec<String>,
}

/// An access-control rule set as read: replaced whole, with the etag it was read at.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct RuleSet {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub etag: String,
    #[serde(default)]
    pub grant_rules: Vec<GrantRule>,
}

fn default_true() -> bool {
    true
}

/// A SCIM multi-valued attribute entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComplexValue {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display: Option<String>,
}

/// What to create: Databricks generates `id` and `applicationId`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NewServicePrincipal {
    pub schemas: Vec<String>,
    pub display_name: String,
    pub active: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
}

impl NewServicePrincipal {
    pub fn new(display_name: &str, active: bool, external_id: Option<&str>) -> Self {
        Self {
            schemas: vec!["urn:ietf:params:scim:schemas:core:2.0:ServicePrincipal".to_owned()],
            display_name: display_name.to_owned(),
            active,
            external_id: external_id.map(str::to_owned),
        }
    }
}

/// One operation of a SCIM PatchOp.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PatchOperation {
    pub op: &'static str,
    pub path: String,
    pub value: serde_json::Value,
}

impl PatchOperation {
    pub fn replace(path: &str, value: impl Into<serde_json::Value>) -> Self {
        Self { op: "replace", path: path.to_owned(), value: value.into() }
    }
}

/// A SCIM list page.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ScimList<T> {
    #[serde(default, rename = "Resources")]
    pub resources: Vec<T>,
    #[serde(default)]
    pub total_results: Option<i64>,
}

/// A service principal OAuth secret as listed (never holds the value).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct SecretInfo {
    pub id: String,
    #[serde(default)]
    pub secret_hash: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub create_time: Option<String>,
    #[serde(default)]
    pub update_time: Option<String>,
    #[serde(default)]
    pub expire_time: Option<String>,
    /// The scopes bound to the secret, when the listing says (`None`: it did not).
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
}

/// A newly created secret: the only time Databricks shows its value. `Debug` never prints it.
#[derive(Clone, Deserialize)]
pub struct CreatedSecret {
    #[serde(flatten)]
    pub info: SecretInfo,
    secret: String,
}

impl CreatedSecret {
    /// The secret value. Write it to its destination and drop it; never log it.
    pub fn expose_secret(&self) -> &str {
        &self.secret
    }
}

impl std::fmt::Debug for CreatedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedSecret").field("info", &self.info).field("secret", &"<redacted>").finish()
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct SecretPage {
    #[serde(default)]
    pub secrets: Vec<SecretInfo>,
    #[serde(default)]
    pub next_page_token: Option<String>,
}

/// The OIDC part of a federation policy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OidcPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_claim: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_json: Option<String>,
}

/// A federation policy (service principal or account).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FederationPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "lenient_i64")]
    pub service_principal_id: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oidc_policy: Option<OidcPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_time: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct PolicyPage {
    #[serde(default)]
    pub policies: Vec<FederationPolicy>,
    #[serde(default)]
    pub next_page_token: Option<String>,
}

/// Token lifetimes of a custom app integration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenAccessPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token_ttl_in_minutes: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token_ttl_in_minutes: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_single_use_refresh_tokens: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub absolute_session_lifetime_in_minutes: Option<i64>,
}

/// A custom OAuth app integration as Databricks returns it (never holds the client secret).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomApp {
    #[serde(default)]
    pub integration_id: String,
    #[serde(default)]
    pub client_id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub redirect_urls: Vec<String>,
    #[serde(default)]
    pub confidential: bool,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub user_authorized_scopes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_access_policy: Option<TokenAccessPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "lenient_i64")]
    pub created_by: Option<i64>,
}

/// What to register.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NewCustomApp {
    pub name: String,
    pub redirect_urls: Vec<String>,
    pub confidential: bool,
    pub scopes: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub user_authorized_scopes: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_access_policy: Option<TokenAccessPolicy>,
}

/// What may change in place (lists replace the stored ones).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CustomAppUpdate {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redirect_urls: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_authorized_scopes: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_access_policy: Option<TokenAccessPolicy>,
}

/// The create answer: the only time a confidential app's secret is shown. `Debug` never prints it.
#[derive(Clone, Deserialize)]
pub struct CreatedCustomApp {
    pub integration_id: String,
    pub client_id: String,
    #[serde(default)]
    client_secret: Option<String>,
}

impl CreatedCustomApp {
    /// The client secret of a confidential app. Write it to its destination and drop it; never log it.
    pub fn expose_client_secret(&self) -> Option<&str> {
        self.client_secret.as_deref()
    }
}

impl std::fmt::Debug for CreatedCustomApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedCustomApp")
            .field("integration_id", &self.integration_id)
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct AppPage {
    #[serde(default)]
    pub apps: Vec<CustomApp>,
    #[serde(default)]
    pub next_page_token: Option<String>,
}

/// The principal of a workspace permission assignment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssignedPrincipal {
    #[serde(default, deserialize_with = "lenient_i64")]
    pub principal_id: Option<i64>,
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub service_principal_name: Option<String>,
    #[serde(default)]
    pub user_name: Option<String>,
    #[serde(default)]
    pub group_name: Option<String>,
}

/// A principal's permissions in one workspace.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PermissionAssignment {
    #[serde(default)]
    pub principal: AssignedPrincipal,
    #[serde(default)]
    pub permissions: Vec<String>,
    #[serde(default)]
    pub error: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct AssignmentList {
    #[serde(default)]
    pub permission_assignments: Vec<PermissionAssignment>,
}

/// A token endpoint answer. `Debug` never prints the token.
#[derive(Clone, Deserialize)]
pub struct TokenResponse {
    access_token: String,
    #[serde(default)]
    pub token_type: Option<String>,
    #[serde(default, deserialize_with = "lenient_i64")]
    pub expires_in: Option<i64>,
    #[serde(default)]
    pub scope: Option<String>,
    #[serde(default)]
    refresh_token: Option<String>,
}

impl TokenResponse {
    pub fn expose_access_token(&self) -> &str {
        &self.access_token
    }

    pub fn expose_refresh_token(&self) -> Option<&str> {
        self.refresh_token.as_deref()
    }
}

impl std::fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenResponse")
            .field("access_token", &"<redacted>")
            .field("expires_in", &self.expires_in)
            .field("scope", &self.scope)
            .field("refresh_token", &self.refresh_token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// A workspace of the account (the Workspaces API), as far as the operator reads it.
#[derive(Debug, Clone, Deserialize)]
pub struct Workspace {
    #[serde(default, deserialize_with = "lenient_i64")]
    pub workspace_id: Option<i64>,
}
