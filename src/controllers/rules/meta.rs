//! The names the operator reads and writes in ObjectMeta (field manager, labels, annotations) and in what it
//! publishes (the keys workloads read), and what the annotations on an object say.

use kube::Resource;

/// Field manager of every server-side apply, and the managed-by label value.
pub const MANAGER: &str = "databricks-oauth-operator";

/// A new value triggers a rotation.
pub const ANNOTATION_ROTATE: &str = "oauth.databricks-operator.io/rotate";
/// `"true"` stops all Databricks writes for the object.
pub const ANNOTATION_PAUSED: &str = "oauth.databricks-operator.io/paused";
/// `orphan` leaves the remote object behind on deletion, whatever the spec says.
pub const ANNOTATION_DELETION_POLICY: &str = "oauth.databricks-operator.io/deletion-policy";
/// A new value asks for a full pass now (compare with Databricks and revert drift) instead of at the resync.
pub const ANNOTATION_RECONCILE: &str = "oauth.databricks-operator.io/reconcile";

/// The annotations a full pass acts on; a change of any other annotation (or a label) costs no Databricks call.
pub const OWN_ANNOTATIONS: [&str; 4] =
    [ANNOTATION_ROTATE, ANNOTATION_PAUSED, ANNOTATION_DELETION_POLICY, ANNOTATION_RECONCILE];

/// The labels on everything the operator publishes (Secrets, ConfigMaps).
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const INSTANCE: &str = "app.kubernetes.io/instance";

/// Annotations of a published Secret: the OAuth secret it holds and when that expires, a checksum of its data (a
/// hand edit is noticed without reading Databricks), and the object it was published for.
pub const ANNOTATION_SECRET_ID: &str = "oauth.databricks-operator.io/secret-id";
pub const ANNOTATION_EXPIRE_TIME: &str = "oauth.databricks-operator.io/expire-time";
pub const ANNOTATION_CHECKSUM: &str = "oauth.databricks-operator.io/checksum";
pub const ANNOTATION_SOURCE: &str = "oauth.databricks-operator.io/source";

/// The keys of published Secrets and ConfigMaps: the Databricks SDKs' own environment variable names.
pub mod keys {
    pub const HOST: &str = "DATABRICKS_HOST";
    pub const ACCOUNT_ID: &str = "DATABRICKS_ACCOUNT_ID";
    pub const CLIENT_ID: &str = "DATABRICKS_CLIENT_ID";
    pub const CLIENT_SECRET: &str = "DATABRICKS_CLIENT_SECRET";
    pub const AUTHORIZATION_ENDPOINT: &str = "DATABRICKS_AUTHORIZATION_ENDPOINT";
    pub const TOKEN_ENDPOINT: &str = "DATABRICKS_TOKEN_ENDPOINT";
    pub const AUTH_TYPE: &str = "DATABRICKS_AUTH_TYPE";
    pub const OIDC_TOKEN_FILEPATH: &str = "DATABRICKS_OIDC_TOKEN_FILEPATH";
    pub const TOKEN_AUDIENCE: &str = "DATABRICKS_TOKEN_AUDIENCE";
    /// The scopes a scoped OAuth secret may ask for, space-separated.
    pub const SCOPES: &str = "DATABRICKS_SCOPES";
}

/// Whether the paused annotation stops Databricks writes for `obj`.
pub fn is_paused<K: Resource>(obj: &K) -> bool {
    obj.meta().annotations.as_ref().and_then(|a| a.get(ANNOTATION_PAUSED)).is_some_and(|v| v == "true")
}

/// Whether the `oauth.databricks-operator.io/deletion-policy: orphan` annotation is set: the escape hatch that
/// leaves everything in Databricks and makes no Databricks call.
pub fn orphaned_by_annotation<K: Resource>(obj: &K) -> bool {
    obj.meta()
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_DELETION_POLICY))
        .is_some_and(|v| v.eq_ignore_ascii_case("orphan"))
}
