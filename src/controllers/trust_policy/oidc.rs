//! The OIDC side of a trust policy: this cluster's ServiceAccount issuer and keys, and the OIDC policy a
//! TrustPolicy asks for.

use kube::ResourceExt;
use serde_json::Value;

use crate::{
    controllers::rules::{error::Error, reason::Reason},
    crd::{JwksMode, TrustPolicy},
    databricks::types::OidcPolicy,
};

/// The cluster's ServiceAccount issuer and signing keys, as the apiserver publishes them.
pub async fn cluster_issuer(client: &kube::Client) -> Result<(String, String), Error> {
    let get = |path: &'static str| async move {
        let request = http::Request::get(path).body(Vec::new()).map_err(|e| Error::Waiting {
            reason: Reason::ClusterIssuerUnavailable,
            message: e.to_string(),
        })?;
        client
            .request_text(request)
            .await
            .map_err(|e| Error::kube(format!("reading {path} from the apiserver"), e))
    };
    let discovery: Value =
        serde_json::from_str(&get("/.well-known/openid-configuration").await?).unwrap_or_default();
    let issuer = discovery.get("issuer").and_then(Value::as_str).map(str::to_owned).ok_or_else(|| {
        Error::NeedsAttention {
            reason: Reason::ClusterIssuerUnavailable,
            message: "the apiserver publishes no ServiceAccount issuer (/.well-known/openid-configuration)"
                .to_owned(),
        }
    })?;
    let jwks = get("/openid/v1/jwks").await?;
    Ok((issuer, jwks))
}

/// The OIDC policy `policy` asks for, and the audience its tokens carry (for the ConfigMap and verification).
pub async fn desired(
    client: &kube::Client,
    policy: &TrustPolicy,
    account_id: &str,
) -> Result<(OidcPolicy, Option<String>), Error> {
    if let Some(oidc) = &policy.spec.oidc {
        let spec = OidcPolicy {
            issuer: Some(oidc.issuer.clone()),
            audiences: oidc.audiences.clone(),
            subject: Some(oidc.subject.clone()),
            subject_claim: Some(oidc.subject_claim.clone()),
            jwks_uri: oidc.jwks_uri.clone(),
            jwks_json: oidc.jwks_json.clone(),
        };
        return Ok((spec, oidc.audiences.first().cloned()));
    }
    let Some(k8s) = &policy.spec.kubernetes else {
        return Err(Error::NeedsAttention {
            reason: Reason::InvalidSpec,
            message: "set spec.oidc or spec.kubernetes".to_owned(),
        });
    };
    let (issuer, jwks) = cluster_issuer(client).await?;
    let audience = k8s.audience.clone().unwrap_or_else(|| account_id.to_owned());
    let namespace = policy.namespace().unwrap_or_default();
    let jwks = (k8s.jwks == JwksMode::Inline).then_some(jwks);
    let spec = service_account_oidc(issuer, jwks, &namespace, &k8s.service_account_name, &audience);
    Ok((spec, Some(audience)))
}

/// The OIDC policy that trusts this cluster's tokens for one ServiceAccount (`issuer` and, inline, `jwks` as
/// `cluster_issuer` reads them) with one audience.
pub fn service_account_oidc(
    issuer: String,
    jwks: Option<String>,
    namespace: &str,
    service_account: &str,
    audience: &str,
) -> OidcPolicy {
    OidcPolicy {
        issuer: Some(issuer),
        audiences: vec![audience.to_owned()],
        subject: Some(format!("system:serviceaccount:{namespace}:{service_account}")),
        subject_claim: Some("sub".to_owned()),
        jwks_uri: None,
        jwks_json: jwks,
    }
}

/// Databricks may fill in defaults (subject claim); compare what the operator controls.
pub fn normalized(oidc: Option<&OidcPolicy>) -> OidcPolicy {
    let mut oidc = oidc.cloned().unwrap_or_default();
    if oidc.subject_claim.as_deref() == Some("sub") {
        oidc.subject_claim = None;
    }
    oidc
}
