//! TrustPolicy: a service principal federation policy from an explicit OIDC source, or from a ServiceAccount of
//! this cluster (issuer and keys read from the apiserver, kept current), the ConfigMap a pod needs to use it, and
//! an optional proof that it works (TokenRequest, then token exchange).
//!
//! Policy ids are deterministic, so a create whose answer was lost is found by id: no search is needed.

use std::{collections::BTreeMap, sync::Arc};

use k8s_openapi::api::{
    authentication::v1::{TokenRequest, TokenRequestSpec},
    core::v1::{ConfigMap, ServiceAccount},
};
use kube::{
    Api, Resource, ResourceExt,
    api::{ObjectMeta, Patch, PatchParams, PostParams},
    runtime::{controller::Action, events::EventType},
};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{
    Context, Error, MANAGER, accounts::Access, conditions, lifecycle, patch_status, service_principal,
    tenancy::DelegatedKind,
};
use crate::{
    crd::{JwksMode, ServicePrincipal, TrustPolicy, TrustPolicyStatus},
    databricks::{
        AccountClient,
        types::{FederationPolicy, OidcPolicy},
    },
};

const VERIFIED: &str = "Verified";
/// Where the deploy snippet mounts the projected ServiceAccount token.
pub const TOKEN_PATH: &str = "/var/run/secrets/databricks/token";

pub async fn reconcile(policy: Arc<TrustPolicy>, ctx: Arc<Context>) -> Result<Action, Error> {
    let apply = async |policy: &TrustPolicy, ctx: &Context, status: &mut TrustPolicyStatus| {
        converge(policy, ctx, status).await?;
        let message = format!(
            "Federation policy {} on service principal {} is in sync; ConfigMap {} says how to use it",
            status.policy_id.as_deref().unwrap_or("?"),
            status.service_principal_id.as_deref().unwrap_or("?"),
            config_map_name(policy),
        );
        Ok((message, ctx.config.jittered_resync()))
    };
    lifecycle::reconcile(policy, ctx, apply, published_intact, cleanup).await
}

/// Whether the ConfigMap is still there and still ours (its content is rewritten at every full pass).
async fn published_intact(
    policy: &TrustPolicy,
    ctx: &Context,
    _status: &TrustPolicyStatus,
) -> Result<bool, Error> {
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &policy.namespace().unwrap_or_default());
    let name = config_map_name(policy);
    let existing =
        api.get_opt(&name).await.map_err(|e| Error::kube(format!("reading ConfigMap {name}"), e))?;
    let uid = policy.uid().unwrap_or_default();
    Ok(existing.is_some_and(|c| c.owner_references().iter().any(|r| r.uid == uid)))
}

/// `spec.policyId`, or one derived from namespace and name: `[a-z0-9-]`, at most 63 characters, stable.
pub fn policy_id(policy: &TrustPolicy) -> String {
    if let Some(id) = &policy.spec.policy_id {
        return id.clone();
    }
    let raw = format!("k8s-{}-{}", policy.namespace().unwrap_or_default(), policy.name_any());
    let clean: String =
        raw.to_lowercase().chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    if clean.len() <= 63 {
        return clean;
    }
    let digest: String = Sha256::digest(raw.as_bytes()).iter().take(4).map(|b| format!("{b:02x}")).collect();
    format!("{}-{digest}", clean[..54].trim_end_matches('-'))
}

fn config_map_name(policy: &TrustPolicy) -> String {
    format!("{}-databricks-federation", policy.name_any())
}

/// The referenced ServicePrincipal object (same namespace).
async fn principal_object(ctx: &Context, policy: &TrustPolicy) -> Result<ServicePrincipal, Error> {
    let name = &policy.spec.service_principal_ref.name;
    let api: Api<ServicePrincipal> =
        Api::namespaced(ctx.client.clone(), &policy.namespace().unwrap_or_default());
    api.get_opt(name)
        .await
        .map_err(|e| Error::kube(format!("reading ServicePrincipal {name}"), e))?
        .ok_or_else(|| Error::Waiting {
            reason: "ServicePrincipalNotFound",
            message: format!("ServicePrincipal {name} does not exist in this namespace"),
        })
}

/// The account access of the policy's namespace and the principal, confirmed in Databricks to be the referenced
/// object's own (its status alone proves nothing).
async fn principal(ctx: &Context, policy: &TrustPolicy) -> Result<(Access, String, String), Error> {
    let sp = principal_object(ctx, policy).await?;
    confirmed(ctx, policy, &sp).await
}

/// Like [`principal`], but not while the ServicePrincipal is being deleted: its cleanup removes the policies put
/// on it, and a policy created meanwhile would outlive it (its own deletion event wakes this controller).
async fn principal_to_write(ctx: &Context, policy: &TrustPolicy) -> Result<(Access, String, String), Error> {
    let sp = principal_object(ctx, policy).await?;
    if sp.metadata.deletion_timestamp.is_some() {
        return Err(Error::Waiting {
            reason: "ServicePrincipalDeleting",
            message: format!(
                "ServicePrincipal {} is being deleted; nothing is written for it",
                sp.name_any()
            ),
        });
    }
    confirmed(ctx, policy, &sp).await
}

async fn confirmed(
    ctx: &Context,
    policy: &TrustPolicy,
    sp: &ServicePrincipal,
) -> Result<(Access, String, String), Error> {
    let namespace = policy.namespace().unwrap_or_default();
    let access = ctx.accounts.client_for(ctx, &sp.spec.account_ref.name, &namespace).await?;
    let remote = service_principal::confirmed_principal(ctx, &access, sp).await?;
    Ok((access, remote.id, remote.application_id))
}

/// The cluster's ServiceAccount issuer and signing keys, as the apiserver publishes them.
pub async fn cluster_issuer(client: &kube::Client) -> Result<(String, String), Error> {
    let get = |path: &'static str| async move {
        let request = http::Request::get(path)
            .body(Vec::new())
            .map_err(|e| Error::Waiting { reason: "ClusterIssuerUnavailable", message: e.to_string() })?;
        client
            .request_text(request)
            .await
            .map_err(|e| Error::kube(format!("reading {path} from the apiserver"), e))
    };
    let discovery: Value =
        serde_json::from_str(&get("/.well-known/openid-configuration").await?).unwrap_or_default();
    let issuer = discovery.get("issuer").and_then(Value::as_str).map(str::to_owned).ok_or_else(|| {
        Error::NeedsAttention {
            reason: "ClusterIssuerUnavailable",
            message: "the apiserver publishes no ServiceAccount issuer (/.well-known/openid-configuration)"
                .to_owned(),
        }
    })?;
    let jwks = get("/openid/v1/jwks").await?;
    Ok((issuer, jwks))
}

async fn desired(
    ctx: &Context,
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
            reason: "InvalidSpec",
            message: "set spec.oidc or spec.kubernetes".to_owned(),
        });
    };
    let (issuer, jwks) = cluster_issuer(&ctx.client).await?;
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

async fn converge(policy: &TrustPolicy, ctx: &Context, status: &mut TrustPolicyStatus) -> Result<(), Error> {
    let generation = policy.metadata.generation;
    let (access, sp_id, app_id) = principal_to_write(ctx, policy).await?;
    access.grants.check_kind(DelegatedKind::TrustPolicy)?;
    let Access { account, client, .. } = &access;
    let (oidc, audience) = desired(ctx, policy, &account.spec.account_id).await?;
    let id = policy_id(policy);
    let want = FederationPolicy {
        description: policy.spec.description.clone(),
        oidc_policy: Some(oidc.clone()),
        ..FederationPolicy::default()
    };
    let current = match client.get_federation_policy(&sp_id, &id).await {
        Ok(found) => Some(found),
        Err(err) if err.is_not_found() => None,
        Err(err) => return Err(err.into()),
    };
    // Ours: the policy whose uid this object recorded, or, when it recorded the id but not yet the uid (a create
    // whose answer was lost), the one found under that id. Anything else under the id is someone else's.
    if let Some(found) = &current {
        let recorded = status.uid.is_some() && status.uid == found.uid;
        let interrupted = status.uid.is_none() && status.policy_id.as_deref() == Some(id.as_str());
        if !recorded && !interrupted {
            return Err(policy_conflict(&id, &sp_id));
        }
    }
    let stored = match current {
        Some(found) => {
            let drifted = found.description != want.description
                || normalized(found.oidc_policy.as_ref()) != normalized(Some(&oidc));
            if drifted {
                let updated =
                    client.update_federation_policy(&sp_id, &id, "description,oidc_policy", &want).await?;
                ctx.event(
                    policy,
                    EventType::Normal,
                    "Updated",
                    "Update",
                    &format!("Updated federation policy {id}"),
                )
                .await;
                updated
            } else {
                found
            }
        }
        None => {
            // The intent, recorded before the create: a create whose answer is lost is recognised by it.
            status.policy_id = Some(id.clone());
            status.uid = None;
            status.service_principal_id = Some(sp_id.clone());
            patch_status(&lifecycle::api(ctx, policy), policy, status).await?;
            let created = match client.create_federation_policy(&sp_id, Some(&id), &want).await {
                Ok(created) => created,
                Err(err) => {
                    // Databricks said no (4xx): nothing was created under the id, so the intent must not stand
                    // (on a conflict the policy there is someone else's). A lost answer or a 5xx keeps it.
                    if err.status().is_some_and(|s| (400..500).contains(&s)) {
                        status.policy_id = None;
                    }
                    return Err(if err.is_conflict() {
                        policy_conflict(&id, &sp_id)
                    } else if err.status() == Some(400) && err.to_string().contains("maximum of 20") {
                        Error::NeedsAttention {
                            reason: "PolicyLimitReached",
                            message: format!(
                                "Service principal {sp_id} already has the Databricks maximum of 20 federation policies; delete one: {err}"
                            ),
                        }
                    } else {
                        err.into()
                    });
                }
            };
            ctx.event(
                policy,
                EventType::Normal,
                "Created",
                "Create",
                &format!("Created federation policy {id} on service principal {sp_id}"),
            )
            .await;
            created
        }
    };
    status.policy_id = Some(id);
    status.uid = stored.uid.clone();
    status.service_principal_id = Some(sp_id);
    conditions::synced(&mut status.conditions, generation);

    let name = config_map_name(policy);
    write_config_map(
        ctx,
        policy,
        &name,
        &account.spec.effective_host(),
        &account.spec.account_id,
        &app_id,
        audience.as_deref(),
    )
    .await?;
    status.config_map_name = Some(name);

    match (&policy.spec.kubernetes, policy.spec.verify) {
        (Some(k8s), true) => {
            let audience = audience.unwrap_or_else(|| account.spec.account_id.clone());
            let (ok, reason, message) =
                verify(ctx, policy, client, &k8s.service_account_name, &audience, &app_id).await?;
            conditions::set(&mut status.conditions, VERIFIED, ok, reason, &message, generation);
        }
        _ => status.conditions.retain(|c| c.type_ != VERIFIED),
    }
    Ok(())
}

/// Deletes the federation policies that TrustPolicies of `sp`'s namespace created on `principal_id` (the policy
/// under each one's id whose uid it recorded): an adopted principal keeps none of them when its object goes.
pub async fn remove_policies_on(
    ctx: &Context,
    client: &AccountClient,
    sp: &ServicePrincipal,
    principal_id: &str,
) -> Result<(), Error> {
    let namespace = sp.namespace().unwrap_or_default();
    let api: Api<TrustPolicy> = Api::namespaced(ctx.client.clone(), &namespace);
    let policies = api
        .list(&Default::default())
        .await
        .map_err(|e| Error::kube(format!("listing TrustPolicies in {namespace}"), e))?;
    for policy in policies.items.iter().filter(|p| p.spec.service_principal_ref.name == sp.name_any()) {
        delete_recorded(ctx, client, policy, principal_id, ": its adopted principal was released").await?;
    }
    Ok(())
}

/// Deletes `policy`'s federation policy under `principal_id` when it is the one whose uid the object recorded.
/// `None`: nothing recorded or nothing there; `Some(false)`: another policy holds the id (left untouched).
async fn delete_recorded(
    ctx: &Context,
    client: &AccountClient,
    policy: &TrustPolicy,
    principal_id: &str,
    why: &str,
) -> Result<Option<bool>, Error> {
    let Some(uid) = policy.status.as_ref().and_then(|s| s.uid.as_deref()) else { return Ok(None) };
    let id = policy_id(policy);
    match client.get_federation_policy(principal_id, &id).await {
        Ok(found) if found.uid.as_deref() == Some(uid) => {
            client.delete_federation_policy(principal_id, &id).await?;
            let message = format!("Deleted federation policy {id}{why}");
            ctx.event(policy, EventType::Normal, "Deleted", "Delete", &message).await;
            Ok(Some(true))
        }
        Ok(_) => Ok(Some(false)),
        Err(err) if err.is_not_found() => Ok(None),
        Err(err) => Err(err.into()),
    }
}

fn policy_conflict(id: &str, sp_id: &str) -> Error {
    Error::NeedsAttention {
        reason: "PolicyConflict",
        message: format!(
            "Service principal {sp_id} already has a federation policy {id} that this TrustPolicy did not create; \
             it was left untouched. Choose another spec.policyId (or delete that policy in Databricks)"
        ),
    }
}

/// Databricks may fill in defaults (subject claim); compare what the operator controls.
fn normalized(oidc: Option<&OidcPolicy>) -> OidcPolicy {
    let mut oidc = oidc.cloned().unwrap_or_default();
    if oidc.subject_claim.as_deref() == Some("sub") {
        oidc.subject_claim = None;
    }
    oidc
}

async fn write_config_map(
    ctx: &Context,
    policy: &TrustPolicy,
    name: &str,
    host: &str,
    account_id: &str,
    client_id: &str,
    audience: Option<&str>,
) -> Result<(), Error> {
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &policy.namespace().unwrap_or_default());
    let mut data = BTreeMap::new();
    data.insert("DATABRICKS_HOST".to_owned(), host.to_owned());
    data.insert("DATABRICKS_ACCOUNT_ID".to_owned(), account_id.to_owned());
    data.insert("DATABRICKS_CLIENT_ID".to_owned(), client_id.to_owned());
    data.insert("DATABRICKS_AUTH_TYPE".to_owned(), "file-oidc".to_owned());
    data.insert("DATABRICKS_OIDC_TOKEN_FILEPATH".to_owned(), TOKEN_PATH.to_owned());
    if let Some(audience) = audience {
        data.insert("DATABRICKS_TOKEN_AUDIENCE".to_owned(), audience.to_owned());
    }
    let existing =
        api.get_opt(name).await.map_err(|e| Error::kube(format!("reading ConfigMap {name}"), e))?;
    let uid = policy.uid().unwrap_or_default();
    if let Some(existing) = &existing {
        if !existing.owner_references().iter().any(|r| r.uid == uid) {
            return Err(Error::NeedsAttention {
                reason: "ConfigMapConflict",
                message: format!(
                    "ConfigMap {name} exists and is not owned by this TrustPolicy; the operator will not overwrite it"
                ),
            });
        }
        if existing.data.as_ref() == Some(&data) {
            return Ok(());
        }
    }
    let mut labels = BTreeMap::new();
    labels.insert(super::secrets::MANAGED_BY.to_owned(), MANAGER.to_owned());
    labels.insert(super::secrets::INSTANCE.to_owned(), policy.name_any());
    let config_map = ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(labels),
            owner_references: policy.controller_owner_ref(&()).map(|r| vec![r]),
            ..ObjectMeta::default()
        },
        data: Some(data),
        ..ConfigMap::default()
    };
    api.patch(name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&config_map))
        .await
        .map(drop)
        .map_err(|e| Error::kube(format!("writing ConfigMap {name}"), e))
}

/// A token for the ServiceAccount (TokenRequest), exchanged at the Databricks token endpoint.
async fn verify(
    ctx: &Context,
    policy: &TrustPolicy,
    client: &AccountClient,
    service_account: &str,
    audience: &str,
    app_id: &str,
) -> Result<(bool, &'static str, String), Error> {
    let api: Api<ServiceAccount> =
        Api::namespaced(ctx.client.clone(), &policy.namespace().unwrap_or_default());
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: Some(vec![audience.to_owned()]),
            expiration_seconds: Some(600),
            ..TokenRequestSpec::default()
        }),
        ..TokenRequest::default()
    };
    let token = match api.create_token_request(service_account, &PostParams::default(), &request).await {
        Ok(response) => response.status.and_then(|s| s.token).unwrap_or_default(),
        Err(kube::Error::Api(status)) if status.is_not_found() => {
            return Ok((
                false,
                "ServiceAccountNotFound",
                format!("ServiceAccount {service_account} does not exist in this namespace"),
            ));
        }
        Err(err) => {
            return Err(Error::kube(format!("requesting a token for ServiceAccount {service_account}"), err));
        }
    };
    match client.exchange_token(&token, Some(app_id)).await {
        Ok(_) => Ok((
            true,
            "TokenExchanged",
            format!(
                "A token of ServiceAccount {service_account} (audience {audience}) was exchanged for a Databricks token"
            ),
        )),
        Err(err) if err.is_retryable() => Err(err.into()),
        Err(err) => {
            let text = err.to_string();
            let reason = if text.contains("cannot fetch") || text.contains("fetching") {
                "KeysUnreachable"
            } else if text.contains("audience") {
                "WrongAudience"
            } else if text.contains("subject") {
                "WrongSubject"
            } else if text.contains("issuer") {
                "WrongIssuer"
            } else if text.contains("signature") || text.contains("key") {
                "WrongKey"
            } else if text.contains("expired") {
                "TokenExpired"
            } else {
                "ExchangeFailed"
            };
            Ok((
                false,
                reason,
                format!("Databricks refused a token of ServiceAccount {service_account}: {text}"),
            ))
        }
    }
}

async fn cleanup(policy: Arc<TrustPolicy>, ctx: &Context) -> Result<Action, Error> {
    // Only a policy whose uid this object recorded is deleted, under the principal's confirmed id.
    if policy.status.as_ref().and_then(|s| s.uid.as_ref()).is_none() {
        return Ok(Action::await_change());
    }
    let id = policy_id(&policy);
    let remote = format!("federation policy {id}");
    let orphan = lifecycle::orphaned_by_annotation(policy.as_ref());
    if !lifecycle::may_delete_remote(policy.as_ref(), ctx, orphan, &remote).await? {
        return Ok(Action::await_change());
    }
    // Without its principal (object or remote) there is nothing to delete: the policy went with the principal.
    let (access, sp_id, _) = match principal(ctx, &policy).await {
        Ok(found) => found,
        Err(Error::Waiting { .. }) => return Ok(Action::await_change()),
        Err(err) if lifecycle::cleanup_abandons(&err) => {
            lifecycle::abandon(policy.as_ref(), ctx, &remote, &err).await;
            return Ok(Action::await_change());
        }
        Err(err) => return Err(err),
    };
    if delete_recorded(ctx, &access.client, &policy, &sp_id, "").await? == Some(false) {
        let message = format!("Federation policy {id} is not the one this object created; left untouched");
        ctx.event(policy.as_ref(), EventType::Warning, "IdentityMismatch", "Delete", &message).await;
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(namespace: &str, name: &str) -> TrustPolicy {
        let mut policy: TrustPolicy = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"servicePrincipalRef": {"name": "x"}, "kubernetes": {"serviceAccountName": "sa"}},
        }))
        .expect("policy");
        policy.metadata.namespace = Some(namespace.to_owned());
        policy
    }

    #[test]
    fn derived_policy_ids_are_valid_and_stable() {
        assert_eq!(policy_id(&policy("analytics", "reporting.k8s")), "k8s-analytics-reporting-k8s");
        let long = policy_id(&policy(&"n".repeat(60), &"p".repeat(60)));
        assert!(long.len() <= 63 && long.len() >= 2, "{long}");
        assert!(long.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'));
        assert_eq!(long, policy_id(&policy(&"n".repeat(60), &"p".repeat(60))));
        assert_ne!(long, policy_id(&policy(&"n".repeat(60), &"q".repeat(60))));
    }
}
