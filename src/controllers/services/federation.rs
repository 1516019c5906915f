//! The federation policies TrustPolicies put on principals: under which id, and removing the ones an object
//! created (its own deletion, or the release of the adopted principal they were put on).

use kube::{Api, Client, ResourceExt, runtime::events::EventType};
use sha2::{Digest, Sha256};

use super::events::Events;
use crate::{
    controllers::rules::error::Error,
    crd::{ServicePrincipal, TrustPolicy},
    databricks::AccountClient,
};

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

/// What a deletion of a recorded policy found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removed {
    /// Nothing recorded, or nothing there.
    Nothing,
    /// The recorded policy was deleted.
    Deleted,
    /// Another policy holds the id; it was left untouched.
    NotOurs,
}

/// Deletes `policy`'s federation policy under `principal_id` when it is the one whose uid the object recorded.
pub async fn delete_recorded(
    events: &Events,
    client: &AccountClient,
    policy: &TrustPolicy,
    principal_id: &str,
    why: &str,
) -> Result<Removed, Error> {
    let Some(uid) = policy.status.as_ref().and_then(|s| s.uid.as_deref()) else {
        return Ok(Removed::Nothing);
    };
    let id = policy_id(policy);
    match client.get_federation_policy(principal_id, &id).await {
        Ok(found) if found.uid.as_deref() == Some(uid) => {
            client.delete_federation_policy(principal_id, &id).await?;
            let message = format!("Deleted federation policy {id}{why}");
            events.publish(policy, EventType::Normal, "Deleted", "Delete", &message).await;
            Ok(Removed::Deleted)
        }
        Ok(_) => Ok(Removed::NotOurs),
        Err(err) if err.is_not_found() => Ok(Removed::Nothing),
        Err(err) => Err(err.into()),
    }
}

/// Deletes the federation policies that TrustPolicies of `sp`'s namespace created on `principal_id` (the policy
/// under each one's id whose uid it recorded): an adopted principal keeps none of them when its object goes.
pub async fn remove_policies_on(
    kube: &Client,
    events: &Events,
    client: &AccountClient,
    sp: &ServicePrincipal,
    principal_id: &str,
) -> Result<(), Error> {
    let namespace = sp.namespace().unwrap_or_default();
    let api: Api<TrustPolicy> = Api::namespaced(kube.clone(), &namespace);
    let policies = api
        .list(&Default::default())
        .await
        .map_err(|e| Error::kube(format!("listing TrustPolicies in {namespace}"), e))?;
    for policy in policies.items.iter().filter(|p| p.spec.service_principal_ref.name == sp.name_any()) {
        let why = ": its adopted principal was released";
        delete_recorded(events, client, policy, principal_id, why).await?;
    }
    Ok(())
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
