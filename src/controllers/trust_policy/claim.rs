//! The policy's claim: which TrustPolicy owns the federation policy under one id on one principal. The intent to
//! create is the claim's creation, and the policy's uid is recorded in it right after the create; the
//! TrustPolicy's own status (which whoever may write `/status` can edit) is never the proof.

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::ResourceExt;

use super::target::Target;
use crate::{
    controllers::{
        rules::{
            claims::{self, LABEL_PRINCIPAL},
            error::Error,
            intent,
            reason::Reason,
        },
        runtime::context::Context,
        services::federation,
    },
    crd::{ClaimedKind, ClaimedObject, DatabricksClaim, TrustPolicy, TrustPolicyStatus},
    databricks::types::FederationPolicy,
};

fn name(target: &Target, policy_id: &str) -> String {
    claims::policy_claim_name(&target.access.account.spec.account_id, &target.principal_id, policy_id)
}

/// The claim on the policy id `policy_id` of the target principal, whoever holds it.
pub async fn read(ctx: &Context, target: &Target, policy_id: &str) -> Result<Option<DatabricksClaim>, Error> {
    ctx.claims.get(&name(target, policy_id)).await
}

/// Whether `found` (the policy under the id) is this object's: the one whose uid its claim records, or one made
/// within the window of its claim's intent (a create whose answer was lost). Without a claim, an earlier
/// version's record in status (the uid) still counts, once.
pub fn is_ours(
    claim: Option<&DatabricksClaim>,
    uid: &str,
    found: &FederationPolicy,
    status: &TrustPolicyStatus,
) -> bool {
    match claim {
        Some(claim) if !claims::held_by(claim, uid) => false,
        Some(claim) => match (&claim.spec.remote.uid, &claim.spec.creating_since) {
            (Some(recorded), _) => found.uid.as_ref() == Some(recorded),
            (None, Some(since)) => intent::within(intent::parse_time(found.create_time.as_deref()), since.0),
            (None, None) => false,
        },
        None => status.uid.is_some() && status.uid == found.uid,
    }
}

/// The intent to create the policy: this object's claim, created (or its intent renewed); `PolicyConflict` when
/// another object holds it.
pub async fn record_intent(
    ctx: &Context,
    target: &Target,
    policy: &TrustPolicy,
    policy_id: &str,
    claim: Option<DatabricksClaim>,
) -> Result<DatabricksClaim, Error> {
    let since = Some(Time(Timestamp::now()));
    let uid = policy.uid().unwrap_or_default();
    let mut claim = match claim {
        Some(claim) if claims::held_by(&claim, &uid) => claim,
        Some(_) => return Err(policy_conflict(policy_id, &target.principal_id)),
        None => {
            let remote = ClaimedObject {
                kind: ClaimedKind::FederationPolicy,
                id: Some(policy_id.to_owned()),
                principal_id: Some(target.principal_id.clone()),
                application_id: Some(target.application_id.to_lowercase()),
                ..ClaimedObject::default()
            };
            let account_id = &target.access.account.spec.account_id;
            let extra = [(LABEL_PRINCIPAL, target.principal_id.as_str())];
            let mut new = claims::new_claim(
                &name(target, policy_id),
                account_id,
                claims::owner_of(policy),
                remote,
                &extra,
            );
            new.spec.creating_since = since;
            return match ctx.claims.create(&new).await? {
                Ok(created) => Ok(created),
                Err(_) => Err(policy_conflict(policy_id, &target.principal_id)),
            };
        }
    };
    claim.spec.creating_since = since;
    claim.spec.remote.uid = None;
    ctx.claims.replace(&claim).await?.ok_or_else(|| changed(&claim))
}

/// Records the created (or found) policy's uid in the claim, creating the claim for a policy an earlier version
/// recorded only in status, and clearing a revocation the grant came back from. `None`: the claim is gone (released
/// meanwhile): the caller removes the policy.
pub async fn record(
    ctx: &Context,
    target: &Target,
    policy: &TrustPolicy,
    claim: Option<DatabricksClaim>,
    stored: &FederationPolicy,
) -> Result<Option<DatabricksClaim>, Error> {
    let policy_id = federation::policy_id(policy);
    let mut claim = match claim {
        Some(claim) => claim,
        None => record_intent(ctx, target, policy, &policy_id, None).await?,
    };
    // A pass that got here is granted: a revocation still in its grace is taken back, so a later one waits again.
    if claim.spec.remote.uid == stored.uid
        && claim.spec.creating_since.is_none()
        && claim.spec.revoked_since.is_none()
    {
        return Ok(Some(claim));
    }
    claim.spec.remote.uid.clone_from(&stored.uid);
    claim.spec.creating_since = None;
    claim.spec.revoked_since = None;
    ctx.claims.replace(&claim).await
}

pub fn policy_conflict(id: &str, sp_id: &str) -> Error {
    Error::NeedsAttention {
        reason: Reason::PolicyConflict,
        message: format!(
            "Service principal {sp_id} already has a federation policy {id} that this TrustPolicy did not create; \
             it was left untouched. Choose another spec.policyId (or delete that policy in Databricks)"
        ),
    }
}

fn changed(claim: &DatabricksClaim) -> Error {
    Error::Waiting {
        reason: Reason::CreateInProgress,
        message: format!("the claim {} changed while it was written; looking again", claim.name_any()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::ClaimOwner;

    fn policy(uid: &str, created: &str) -> FederationPolicy {
        FederationPolicy {
            uid: Some(uid.into()),
            create_time: Some(created.into()),
            ..FederationPolicy::default()
        }
    }

    fn claim(owner: &str, uid: Option<&str>, since: Option<&str>) -> DatabricksClaim {
        let owner = ClaimOwner { uid: owner.into(), ..ClaimOwner::default() };
        let remote = ClaimedObject {
            kind: ClaimedKind::FederationPolicy,
            uid: uid.map(str::to_owned),
            ..ClaimedObject::default()
        };
        let mut claim = claims::new_claim("fp.a.1.p", "a", owner, remote, &[]);
        claim.spec.creating_since = since.map(|s| Time(s.parse().expect("time")));
        claim
    }

    #[test]
    fn a_policy_is_ours_by_its_claim_never_by_status_alone_when_a_claim_exists() {
        let found = policy("u-1", "2026-11-30T12:00:02Z");
        let status = TrustPolicyStatus { uid: Some("u-1".into()), ..TrustPolicyStatus::default() };
        let empty = TrustPolicyStatus::default();
        assert!(is_ours(Some(&claim("me", Some("u-1"), None)), "me", &found, &empty));
        assert!(
            !is_ours(Some(&claim("me", Some("u-2"), None)), "me", &found, &status),
            "status cannot override"
        );
        assert!(!is_ours(Some(&claim("them", Some("u-1"), None)), "me", &found, &status), "another's claim");
        assert!(
            is_ours(Some(&claim("me", None, Some("2026-11-30T12:00:00Z"))), "me", &found, &empty),
            "a lost answer"
        );
        assert!(
            !is_ours(Some(&claim("me", None, Some("2026-11-30T11:00:00Z"))), "me", &found, &empty),
            "made long after"
        );
        assert!(is_ours(None, "me", &found, &status), "an earlier version's record, once");
        assert!(!is_ours(None, "me", &found, &empty));
    }
}
