//! The deletion gate every kind's cleanup passes: the orphan annotation, the paused annotation, and letting an
//! object go when its namespace may no longer act on its account.

use kube::{Resource, runtime::events::EventType};

use super::{context::Context, lifecycle::Managed};
use crate::controllers::rules::{
    error::Error,
    meta::{ANNOTATION_DELETION_POLICY, ANNOTATION_PAUSED, is_paused},
    reason::Reason,
};

/// Whether a cleanup that failed this way should let the object go and leave its remote objects: the namespace may
/// no longer use the account, or the account is gone. Waiting would only block the object's (and its
/// namespace's) deletion forever, and acting is no longer allowed.
pub fn cleanup_abandons(err: &Error) -> bool {
    matches!(err, Error::Account { reason: Reason::NamespaceNotAllowed | Reason::AccountNotFound, .. })
}

/// A cleanup that [`cleanup_abandons`]: says what is left in Databricks, and why, in a Warning event.
pub async fn abandon<K: Resource<DynamicType = ()>>(obj: &K, ctx: &Context, remote: &str, err: &Error) {
    let note = format!("Left {remote} in Databricks: {err}");
    ctx.event(obj, EventType::Warning, err.reason().as_str(), "Delete", &note).await;
}

/// What a cleanup looked up (the account's client, the principal), or `None` when the cleanup lets the object go
/// instead: the look-up failed in a way that [`cleanup_abandons`] (or `also` says so), which [`abandon`] reports.
pub async fn or_abandon<K, T>(
    obj: &K,
    ctx: &Context,
    remote: &str,
    looked_up: Result<T, Error>,
    also: bool,
) -> Result<Option<T>, Error>
where
    K: Resource<DynamicType = ()>,
{
    match looked_up {
        Ok(found) => Ok(Some(found)),
        Err(err) if also || cleanup_abandons(&err) => {
            abandon(obj, ctx, remote, &err).await;
            Ok(None)
        }
        Err(err) => Err(err),
    }
}

/// Before a remote delete: an orphaned object only says so; a paused one waits (it makes no Databricks writes).
/// A revoked object's remote objects go regardless (revocation is the platform's, not the object's to stop).
/// Returns whether the remote delete may go ahead.
pub async fn may_delete_remote<K: Managed>(
    obj: &K,
    ctx: &Context,
    orphan: bool,
    revoking: bool,
    remote: &str,
) -> Result<bool, Error> {
    if revoking {
        return Ok(true);
    }
    if orphan {
        ctx.event(obj, EventType::Normal, "Orphaned", "Delete", &format!("Left {remote} in Databricks"))
            .await;
        return Ok(false);
    }
    if is_paused(obj) {
        return Err(Error::NeedsAttention {
            reason: Reason::Paused,
            message: format!(
                "Deletion waits: {ANNOTATION_PAUSED} is set. Remove it, or set {ANNOTATION_DELETION_POLICY}: orphan"
            ),
        });
    }
    Ok(true)
}
