//! DatabricksClaims: the operator's ownership records, one small cluster-scoped object per remote object, written
//! only by the operator. A create of a name that exists is refused by the apiserver: that refusal is what keeps
//! one owner per remote object. Every write touches one claim; reads are quorum reads (never a lagging cache).

use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, PostParams, Preconditions},
};

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};

use crate::{
    controllers::rules::{
        claims::{LABEL_OWNER_UID, label_value},
        error::Error,
        meta::MANAGER,
        reason::Reason,
    },
    crd::DatabricksClaim,
};

/// Reads and writes claims.
#[derive(Clone)]
pub struct Claims {
    api: Api<DatabricksClaim>,
}

impl Claims {
    pub fn new(kube: Client) -> Self {
        Self { api: Api::all(kube) }
    }

    pub async fn get(&self, name: &str) -> Result<Option<DatabricksClaim>, Error> {
        self.api.get_opt(name).await.map_err(|e| Error::kube(format!("reading DatabricksClaim {name}"), e))
    }

    /// Creates `claim`: `Ok(Ok(created))`, or `Ok(Err(existing))` when a claim of that name exists.
    pub async fn create(
        &self,
        claim: &DatabricksClaim,
    ) -> Result<Result<DatabricksClaim, DatabricksClaim>, Error> {
        let name = claim.name_any();
        let params = PostParams { field_manager: Some(MANAGER.to_owned()), ..PostParams::default() };
        match self.api.create(&params, claim).await {
            Ok(created) => Ok(Ok(created)),
            Err(kube::Error::Api(status)) if status.code == 409 => match self.get(&name).await? {
                Some(existing) => Ok(Err(existing)),
                // Deleted meanwhile: whoever asks next creates it.
                None => {
                    Err(Error::kube(format!("creating DatabricksClaim {name}"), kube::Error::Api(status)))
                }
            },
            Err(err) => Err(Error::kube(format!("creating DatabricksClaim {name}"), err)),
        }
    }

    /// Replaces `claim`, guarded by its resourceVersion: `Ok(None)` when it changed or was deleted since it was
    /// read (the caller must read again and decide again).
    pub async fn replace(&self, claim: &DatabricksClaim) -> Result<Option<DatabricksClaim>, Error> {
        let name = claim.name_any();
        let params = PostParams { field_manager: Some(MANAGER.to_owned()), ..PostParams::default() };
        match self.api.replace(&name, &params, claim).await {
            Ok(replaced) => Ok(Some(replaced)),
            Err(kube::Error::Api(status)) if matches!(status.code, 404 | 409) => Ok(None),
            Err(err) => Err(Error::kube(format!("writing DatabricksClaim {name}"), err)),
        }
    }

    /// Deletes `claim` when it is still the claim that was read (same UID); a claim already gone is fine.
    pub async fn delete(&self, claim: &DatabricksClaim) -> Result<(), Error> {
        let name = claim.name_any();
        let preconditions = Preconditions { uid: claim.uid(), resource_version: None };
        let params = DeleteParams { preconditions: Some(preconditions), ..DeleteParams::default() };
        match self.api.delete(&name, &params).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if matches!(status.code, 404 | 409) => Ok(()),
            Err(err) => Err(Error::kube(format!("deleting DatabricksClaim {name}"), err)),
        }
    }

    /// Deletes `claim` only as it was read (same UID and resourceVersion): `Ok(false)` when it changed meanwhile
    /// (the caller reads it again and decides again); a claim already gone counts as deleted.
    pub async fn delete_exact(&self, claim: &DatabricksClaim) -> Result<bool, Error> {
        let name = claim.name_any();
        let preconditions = Preconditions { uid: claim.uid(), resource_version: claim.resource_version() };
        let params = DeleteParams { preconditions: Some(preconditions), ..DeleteParams::default() };
        match self.api.delete(&name, &params).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(err) => Err(Error::kube(format!("deleting DatabricksClaim {name}"), err)),
        }
    }

    /// Deletes the claim `claim` names if it is still held by the same owner (read again first): a claim another
    /// object took over meanwhile stays. Returns whether it is gone.
    pub async fn delete_if_still_held(&self, claim: &DatabricksClaim) -> Result<bool, Error> {
        let Some(current) = self.get(&claim.name_any()).await? else { return Ok(true) };
        if current.uid() != claim.uid() || current.spec.owner.uid != claim.spec.owner.uid {
            return Ok(false);
        }
        self.delete_exact(&current).await
    }

    /// Records (once) that `claim`'s grant was revoked now; returns the claim as it stands.
    pub async fn mark_revoked(&self, claim: &DatabricksClaim) -> Result<DatabricksClaim, Error> {
        if claim.spec.revoked_since.is_some() {
            return Ok(claim.clone());
        }
        let mut marked = claim.clone();
        marked.spec.revoked_since = Some(Time(Timestamp::now()));
        self.written(&marked).await
    }

    /// Ends a revocation the grant's return made moot.
    pub async fn clear_revoked(&self, claim: &DatabricksClaim) -> Result<DatabricksClaim, Error> {
        if claim.spec.revoked_since.is_none() {
            return Ok(claim.clone());
        }
        let mut cleared = claim.clone();
        cleared.spec.revoked_since = None;
        self.written(&cleared).await
    }

    /// Replaces `claim`, or fails with a retry when it changed meanwhile.
    pub async fn written(&self, claim: &DatabricksClaim) -> Result<DatabricksClaim, Error> {
        self.replace(claim).await?.ok_or_else(|| Error::Waiting {
            reason: Reason::CreateInProgress,
            message: format!("the claim {} changed while it was written; looking again", claim.name_any()),
        })
    }

    /// The claims the object with UID `uid` holds (whichever account they are in).
    pub async fn held_by(&self, uid: &str) -> Result<Vec<DatabricksClaim>, Error> {
        let selector = format!("{LABEL_OWNER_UID}={}", label_value(uid));
        Ok(self
            .list(&selector)
            .await?
            .into_iter()
            .filter(|c| c.spec.owner.uid == uid && !uid.is_empty())
            .collect())
    }

    /// Every claim matching the label `selector`, read from the apiserver (not a cache).
    pub async fn list(&self, selector: &str) -> Result<Vec<DatabricksClaim>, Error> {
        let params = ListParams::default().labels(selector);
        let listed = self.api.list(&params).await.map_err(|e| Error::kube("listing DatabricksClaims", e))?;
        Ok(listed.items)
    }
}
