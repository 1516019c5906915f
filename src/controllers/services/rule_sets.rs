//! A principal's access-control rule set brought to what a ServicePrincipal's `usedBy` wants, by read-merge-write
//! with the rule set's etag: a write that lost to another writer (409) reads and merges again, so no one else's
//! entry is ever overwritten. The principal's claim records the entries the operator wrote, before each write (so a
//! pass that stops after it still knows) and after.

use super::claims::Claims;
use crate::{
    controllers::rules::{error::Error, reason::Reason, used_by},
    crd::{DatabricksClaim, UsedBy},
    databricks::AccountClient,
};

/// Writes that lose to another writer before one lands, at most, in one pass.
const ATTEMPTS: usize = 5;

/// What a pass changed in the rule set.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Applied {
    pub added: Vec<UsedBy>,
    pub removed: Vec<UsedBy>,
    /// Writes refused for a stale etag before one landed.
    pub conflicts: usize,
}

/// Brings the rule set of `claim`'s principal to `wanted` (see [`used_by::merge`]); `wanted` empty removes every
/// entry the claim records. `adding` false only removes (a revocation, also of a paused object): a wanted entry
/// missing is not written again. A principal gone has no rule set left: nothing is recorded then.
pub async fn apply_uses(
    claims: &Claims,
    client: &AccountClient,
    claim: &mut DatabricksClaim,
    wanted: &[UsedBy],
    adding: bool,
) -> Result<Applied, Error> {
    let Some(app) = claim.spec.remote.application_id.clone() else { return Ok(Applied::default()) };
    let name = client.principal_rule_set_name(&app);
    let mut conflicts = 0;
    while conflicts < ATTEMPTS {
        let current = match client.get_rule_set(&name).await {
            Ok(current) => current,
            Err(err) if err.is_not_found() => {
                record(claims, claim, Vec::new()).await?;
                return Ok(Applied::default());
            }
            Err(err) => return Err(err.into()),
        };
        let present;
        let wanted = match adding {
            true => wanted,
            false => {
                present = used_by::present(&current.grant_rules, wanted);
                &present[..]
            }
        };
        let Some(change) = used_by::merge(&current.grant_rules, wanted, &claim.spec.used_by) else {
            let kept = used_by::recorded_after(&claim.spec.used_by, wanted, &current.grant_rules, None);
            record(claims, claim, kept).await?;
            return Ok(Applied { conflicts, ..Applied::default() });
        };
        let mut before = claim.spec.used_by.clone();
        before.extend(change.added.iter().cloned());
        record(claims, claim, before).await?;
        match client.put_rule_set(&name, &current.etag, &change.rules).await {
            Ok(_) => {
                let kept =
                    used_by::recorded_after(&claim.spec.used_by, wanted, &current.grant_rules, Some(&change));
                record(claims, claim, kept).await?;
                return Ok(Applied { added: change.added, removed: change.removed, conflicts });
            }
            Err(err) if err.is_conflict() => conflicts += 1,
            Err(err) => return Err(err.into()),
        }
    }
    Err(Error::Waiting {
        reason: Reason::RuleSetConflict,
        message: format!("The rule set of {app} changed {ATTEMPTS} times while it was written; trying again"),
    })
}

/// Writes `used_by` into the claim when it differs.
async fn record(claims: &Claims, claim: &mut DatabricksClaim, used_by: Vec<UsedBy>) -> Result<(), Error> {
    let used_by = used_by::normalized(used_by);
    if used_by != claim.spec.used_by {
        let mut written = claim.clone();
        written.spec.used_by = used_by;
        *claim = claims.written(&written).await?;
    }
    Ok(())
}
