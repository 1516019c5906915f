//! The Kubernetes Secrets the operator publishes: built by a pure function, written only when the operator owns
//! them (or they do not exist), applied server-side with `data` (never `stringData`).

use std::collections::BTreeMap;

use k8s_openapi::{
    ByteString,
    api::core::v1::Secret,
    apimachinery::pkg::apis::meta::v1::{Condition, OwnerReference},
};
use kube::{
    Api, Resource, ResourceExt,
    api::{ObjectMeta, Patch, PatchParams},
};
use sha2::{Digest, Sha256};

use crate::{
    controllers::rules::{
        conditions,
        error::Error,
        meta::{
            ANNOTATION_CHECKSUM, ANNOTATION_SECRET_ID, ANNOTATION_SOURCE, INSTANCE, MANAGED_BY, MANAGER, keys,
        },
        reason::Reason,
    },
    crd::OutputTemplate,
};

/// The keys every published Secret and ConfigMap starts with: where to sign in, and as whom.
pub fn connection_data(host: &str, account_id: Option<&str>, client_id: &str) -> BTreeMap<String, String> {
    let mut data = BTreeMap::new();
    data.insert(keys::HOST.to_owned(), host.to_owned());
    if let Some(account_id) = account_id {
        data.insert(keys::ACCOUNT_ID.to_owned(), account_id.to_owned());
    }
    data.insert(keys::CLIENT_ID.to_owned(), client_id.to_owned());
    data
}

/// What a published Secret says (no values are kept here but the checksum).
pub struct Published {
    pub secret_id: Option<String>,
    pub checksum_ok: bool,
    pub data: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

/// Whether every label and annotation the operator wants is already on the Secret (extra ones are left alone).
pub fn metadata_current(published: &Published, desired: &Secret) -> bool {
    let subset = |want: Option<&BTreeMap<String, String>>, have: &BTreeMap<String, String>| {
        want.into_iter().flatten().all(|(k, v)| have.get(k) == Some(v))
    };
    subset(desired.metadata.labels.as_ref(), &published.labels)
        && subset(desired.metadata.annotations.as_ref(), &published.annotations)
}

/// A checksum over the data, recorded in an annotation, so a hand edit is noticed without reading Databricks.
pub fn checksum(data: &BTreeMap<String, String>) -> String {
    let mut hasher = Sha256::new();
    for (key, value) in data {
        hasher.update(key.as_bytes());
        hasher.update([0]);
        hasher.update(value.as_bytes());
        hasher.update([0]);
    }
    hasher.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The Secret for `owner`: operator keys win over the template; the owner's own labels are never copied.
pub fn build<K: Resource<DynamicType = ()>>(
    owner: &K,
    name: &str,
    data: BTreeMap<String, String>,
    extra_annotations: BTreeMap<String, String>,
    template: Option<&OutputTemplate>,
) -> Secret {
    let mut labels = template.map(|t| t.labels.clone()).unwrap_or_default();
    labels.insert(MANAGED_BY.to_owned(), MANAGER.to_owned());
    labels.insert(INSTANCE.to_owned(), owner.name_any());
    let mut annotations = template.map(|t| t.annotations.clone()).unwrap_or_default();
    annotations.extend(extra_annotations);
    annotations.insert(ANNOTATION_CHECKSUM.to_owned(), checksum(&data));
    annotations.insert(ANNOTATION_SOURCE.to_owned(), format!("{}/{}", K::kind(&()), owner.name_any()));
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: owner.namespace(),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: owner.controller_owner_ref(&()).map(|r| vec![r]),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".to_owned()),
        data: Some(data.into_iter().map(|(k, v)| (k, ByteString(v.into_bytes()))).collect()),
        ..Secret::default()
    }
}

fn owned_by(secret: &Secret, uid: &str) -> bool {
    secret.owner_references().iter().any(|r: &OwnerReference| r.uid == uid && r.controller == Some(true))
}

/// Reads the Secret `name`: `Ok(None)` when absent, an error when it exists but belongs to someone else.
pub async fn read_owned(api: &Api<Secret>, name: &str, owner_uid: &str) -> Result<Option<Published>, Error> {
    let Some(secret) =
        api.get_opt(name).await.map_err(|e| Error::kube(format!("reading Secret {name}"), e))?
    else {
        return Ok(None);
    };
    if !owned_by(&secret, owner_uid) {
        let owner = secret
            .owner_references()
            .iter()
            .find(|r| r.controller == Some(true))
            .map(|r| format!("{} {}", r.kind, r.name))
            .unwrap_or_else(|| "nobody (created outside the operator)".to_owned());
        return Err(Error::NeedsAttention {
            reason: Reason::SecretConflict,
            message: format!(
                "Secret {name} exists and is owned by {owner}; the operator never overwrites a Secret it does not own. \
                 Delete it, or choose another name in the secret name field."
            ),
        });
    }
    let data: BTreeMap<String, String> = secret
        .data
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
        .collect();
    let annotations = secret.annotations().clone();
    Ok(Some(Published {
        secret_id: annotations.get(ANNOTATION_SECRET_ID).cloned(),
        checksum_ok: annotations.get(ANNOTATION_CHECKSUM) == Some(&checksum(&data)),
        data,
        labels: secret.labels().clone(),
        annotations,
    }))
}

/// [`read_owned`], noting a failure (a Secret owned by someone else) on `CredentialsReady` too.
pub async fn read_owned_noting(
    api: &Api<Secret>,
    name: &str,
    owner_uid: &str,
    list: &mut Vec<Condition>,
    generation: Option<i64>,
) -> Result<Option<Published>, Error> {
    let read = read_owned(api, name, owner_uid).await;
    if let Err(err) = &read {
        conditions::set(
            list,
            conditions::CREDENTIALS_READY,
            false,
            err.reason(),
            &err.to_string(),
            generation,
        );
    }
    read
}

/// Applies the Secret server-side (force: the operator is the only writer of the keys it sets).
pub async fn apply(api: &Api<Secret>, secret: &Secret) -> Result<(), Error> {
    write(api, secret, PatchParams::apply(MANAGER).force()).await
}

/// Whether the apiserver would take `secret` (a dry run: nothing is stored, admission and quotas run), so nothing is
/// minted for a Secret that cannot be written. Called with a placeholder value.
pub async fn check_admissible(api: &Api<Secret>, secret: &Secret) -> Result<(), Error> {
    write(api, secret, PatchParams::apply(MANAGER).force().dry_run()).await
}

async fn write(api: &Api<Secret>, secret: &Secret, params: PatchParams) -> Result<(), Error> {
    let name = secret.name_any();
    match api.patch(&name, &params, &Patch::Apply(secret)).await {
        Ok(_) => Ok(()),
        // Invalid, too large, over a quota, refused by an admission policy or RBAC: a person must act.
        Err(kube::Error::Api(status)) if matches!(status.code, 400 | 403 | 413 | 422) => {
            Err(Error::NeedsAttention {
                reason: Reason::SecretRejected,
                message: format!(
                    "The apiserver refuses Secret {name}: {}; nothing is minted until it would accept it",
                    status.message
                ),
            })
        }
        Err(e) => Err(Error::kube(format!("writing Secret {name}"), e)),
    }
}
