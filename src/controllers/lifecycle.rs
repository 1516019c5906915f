//! The reconcile skeleton every namespaced kind shares: the finalizer, the paused annotation, and turning the
//! outcome of a pass into the `Ready` condition (plus a Warning event when a person must act).

use std::{
    collections::HashMap,
    hash::{Hash, Hasher},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use k8s_openapi::{NamespaceResourceScope, apimachinery::pkg::apis::meta::v1::Condition};
use kube::{
    Api, Resource, ResourceExt,
    runtime::{
        controller::Action,
        events::EventType,
        finalizer::{Event as Finalizer, finalizer},
    },
};
use serde::{Serialize, de::DeserializeOwned};

use super::{ANNOTATION_PAUSED, Context, Error, conditions, patch_status};

/// A kind reconciled through [`reconcile`].
pub trait Managed:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + Serialize
    + DeserializeOwned
    + std::fmt::Debug
    + Send
    + Sync
    + 'static
{
    type Status: Default + Clone + Serialize + Send;
    const FINALIZER: &'static str;
    fn status(&self) -> Option<&Self::Status>;
    fn status_mut(&mut self) -> Option<&mut Self::Status>;
    fn conditions(status: &mut Self::Status) -> &mut Vec<Condition>;
    fn set_observed_generation(status: &mut Self::Status, generation: Option<i64>);
}

pub fn api<K: Managed>(ctx: &Context, obj: &K) -> Api<K> {
    Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default())
}

pub fn is_paused<K: Resource>(obj: &K) -> bool {
    obj.annotations().get(ANNOTATION_PAUSED).is_some_and(|v| v == "true")
}

/// What the last successful full pass of each object saw, by UID: a fingerprint of what the owner controls
/// (generation and the operator's annotations) and when the next full pass is due. Most watch events are the
/// operator's own status and Secret writes, or labels and other tools' annotations; an event that changes none of
/// it gets a quick pass that only checks what the object publishes in the cluster, so Databricks is read again at
/// the resync, not at every event.
#[derive(Debug, Default)]
pub struct Marks(Mutex<HashMap<String, Mark>>);

#[derive(Debug)]
struct Mark {
    seen: Fingerprint,
    due: Instant,
    /// When a change of the operator's annotations alone was first seen since the last full pass.
    annotations_changed: Option<Instant>,
}

/// What a full pass depends on that the object's owner controls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint {
    generation: Option<i64>,
    annotations: u64,
}

impl Fingerprint {
    /// The generation and the operator's own annotations; labels and other annotations change nothing.
    pub fn of<K: Resource>(obj: &K) -> Self {
        let mut hasher = std::hash::DefaultHasher::new();
        for key in super::OWN_ANNOTATIONS {
            obj.annotations().get(key).hash(&mut hasher);
        }
        Self { generation: obj.meta().generation, annotations: hasher.finish() }
    }

    /// A generation and anything else a pass depends on, hashed.
    pub(super) fn with(generation: Option<i64>, other: impl Hash) -> Self {
        let mut hasher = std::hash::DefaultHasher::new();
        other.hash(&mut hasher);
        Self { generation, annotations: hasher.finish() }
    }
}

impl Marks {
    /// Time left until the next full pass, when the object is unchanged since the last one.
    pub(super) fn fresh(&self, uid: &str, seen: Fingerprint) -> Option<Duration> {
        let mut marks = self.0.lock().ok()?;
        let mark = marks.get_mut(uid)?;
        if mark.seen != seen {
            return None;
        }
        // Changed and changed back: a later change waits its own debounce.
        mark.annotations_changed = None;
        mark.due.checked_duration_since(Instant::now())
    }

    /// When only the operator's annotations changed since the last full pass: how long the pass they ask for
    /// still waits (at most one such pass per `debounce`, however often they change).
    pub(super) fn debounce(&self, uid: &str, seen: Fingerprint, debounce: Duration) -> Option<Duration> {
        let mut marks = self.0.lock().ok()?;
        let mark = marks.get_mut(uid)?;
        if mark.seen.generation != seen.generation || mark.seen.annotations == seen.annotations {
            return None;
        }
        let since = *mark.annotations_changed.get_or_insert_with(Instant::now);
        (since + debounce).checked_duration_since(Instant::now()).filter(|d| !d.is_zero())
    }

    pub(super) fn record(&self, uid: &str, seen: Fingerprint, next: Duration) {
        if let Ok(mut marks) = self.0.lock() {
            let mark = Mark { seen, due: Instant::now() + next, annotations_changed: None };
            marks.insert(uid.to_owned(), mark);
        }
    }

    /// Makes the next pass of `uid` a full one (something it depends on changed).
    pub fn forget(&self, uid: &str) {
        if let Ok(mut marks) = self.0.lock() {
            marks.remove(uid);
        }
    }
}

/// What a controller's store keeps of an object: not its managedFields and status conditions, which the
/// operator never reads from the store (a full pass reads the object fresh) and which are most of an object
/// written by several managers: at thousands of objects, most of the operator's memory.
pub fn trim<K: Managed>(obj: &mut K) {
    obj.managed_fields_mut().clear();
    if let Some(status) = obj.status_mut() {
        K::conditions(status).clear();
    }
}

/// Runs `apply` (or `cleanup` when the object is being deleted) behind the kind's finalizer. `apply` converges
/// and returns the Ready message and when to look again; errors become `Ready=False` with their reason.
/// `intact` says whether what the object publishes in the cluster (Secret, ConfigMap) is still as the last pass
/// left it; when it is and nothing else changed, the pass ends there.
pub async fn reconcile<K, A, I, C>(
    obj: Arc<K>,
    ctx: Arc<Context>,
    apply: A,
    intact: I,
    cleanup: C,
) -> Result<Action, Error>
where
    K: Managed,
    A: AsyncFnOnce(&K, &Context, &mut K::Status) -> Result<(String, Duration), Error>,
    I: AsyncFn(&K, &Context, &K::Status) -> Result<bool, Error>,
    C: AsyncFnOnce(Arc<K>, &Context) -> Result<Action, Error>,
{
    let api = api(&ctx, obj.as_ref());
    finalizer(&api, K::FINALIZER, obj, |event| async {
        match event {
            Finalizer::Apply(obj) => converge(obj, &ctx, apply, intact).await,
            Finalizer::Cleanup(obj) => {
                ctx.marks.forget(&obj.uid().unwrap_or_default());
                cleanup(obj, &ctx).await
            }
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)).unwrap_finalizer())
}

async fn converge<K, A, I>(obj: Arc<K>, ctx: &Context, apply: A, intact: I) -> Result<Action, Error>
where
    K: Managed,
    A: AsyncFnOnce(&K, &Context, &mut K::Status) -> Result<(String, Duration), Error>,
    I: AsyncFn(&K, &Context, &K::Status) -> Result<bool, Error>,
{
    let api = api(ctx, obj.as_ref());
    let uid = obj.uid().unwrap_or_default();
    // Nothing the owner controls changed since the last full pass: check only what the object publishes. The
    // cached object may lag (its status behind our last write): then look again at a fresh read below.
    if let Some(remaining) = quick_pass(&*obj, ctx, &uid, &intact).await {
        return Ok(Action::requeue(remaining));
    }
    // Only the operator's annotations changed: one full pass for a burst of changes, not one per change.
    if let Some(wait) = ctx.marks.debounce(&uid, Fingerprint::of(&*obj), ctx.config.annotation_debounce) {
        return Ok(Action::requeue(wait));
    }
    // The watch cache can lag behind our own last status write; acting on a stale status (an id not yet
    // recorded) could repeat a create or delete what the previous pass made. Read the object fresh.
    let name = obj.name_any();
    let cached_version = obj.resource_version();
    let Some(obj) =
        api.get_opt(&name).await.map_err(|e| Error::kube(format!("reading {} {name}", K::kind(&())), e))?
    else {
        return Ok(Action::await_change());
    };
    if obj.resource_version() != cached_version
        && let Some(remaining) = quick_pass(&obj, ctx, &uid, &intact).await
    {
        return Ok(Action::requeue(remaining));
    }
    // A pass that fails must not leave a mark that would turn its retry into a quick pass.
    ctx.marks.forget(&uid);
    let generation = obj.meta().generation;
    let mut status = obj.status().cloned().unwrap_or_default();
    if is_paused(&obj) {
        let message =
            format!("Paused by the {ANNOTATION_PAUSED} annotation: no Databricks writes until it is removed");
        conditions::set(K::conditions(&mut status), conditions::READY, false, "Paused", &message, generation);
        patch_status(&api, &obj, &status).await?;
        return Ok(Action::requeue(ctx.config.resync_interval));
    }
    let fingerprint = Fingerprint::of(&obj);
    let outcome = apply(&obj, ctx, &mut status).await;
    K::set_observed_generation(&mut status, generation);
    match outcome {
        Ok((message, next)) => {
            conditions::set(
                K::conditions(&mut status),
                conditions::READY,
                true,
                "Ready",
                &message,
                generation,
            );
            patch_status(&api, &obj, &status).await?;
            ctx.marks.record(&uid, fingerprint, next);
            Ok(Action::requeue(next))
        }
        Err(err) => {
            let message = err.to_string();
            // A deferred pass changed nothing and failed nothing: an object in sync stays Ready (what it did so
            // far is still recorded below); one that is not says why it waits.
            let in_sync = conditions::get(K::conditions(&mut status), conditions::READY)
                .is_some_and(|c| c.status == "True" && c.observed_generation == generation);
            if !(err.is_deferred() && in_sync) {
                conditions::set(
                    K::conditions(&mut status),
                    conditions::READY,
                    false,
                    err.reason(),
                    &message,
                    generation,
                );
            }
            // The error is what matters; a failed status write is retried with it.
            let _ = patch_status(&api, &obj, &status).await;
            if !err.is_transient() {
                ctx.event(&obj, EventType::Warning, err.reason(), "Reconcile", &message).await;
            }
            Err(err)
        }
    }
}

/// When `obj` matches the mark of the last full pass and what it publishes is intact: the time until the next
/// full pass.
async fn quick_pass<K, I>(obj: &K, ctx: &Context, uid: &str, intact: &I) -> Option<Duration>
where
    K: Managed,
    I: AsyncFn(&K, &Context, &K::Status) -> Result<bool, Error>,
{
    let remaining = ctx.marks.fresh(uid, Fingerprint::of(obj))?;
    let status = obj.status().cloned().unwrap_or_default();
    matches!(intact(obj, ctx, &status).await, Ok(true)).then_some(remaining)
}

/// Whether a cleanup that failed this way should let the object go and leave its remote objects: the namespace may
/// no longer use the account, or the account is gone. Waiting would only block the object's (and its
/// namespace's) deletion forever, and acting is no longer allowed.
pub fn cleanup_abandons(err: &Error) -> bool {
    matches!(err, Error::Account { reason: "NamespaceNotAllowed" | "AccountNotFound", .. })
}

/// A cleanup that [`cleanup_abandons`]: says what is left in Databricks, and why, in a Warning event.
pub async fn abandon<K: Resource<DynamicType = ()>>(obj: &K, ctx: &Context, remote: &str, err: &Error) {
    let note = format!("Left {remote} in Databricks: {err}");
    ctx.event(obj, EventType::Warning, err.reason(), "Delete", &note).await;
}

/// Whether the `oauth.databricks-operator.io/deletion-policy: orphan` annotation is set: the escape hatch that
/// leaves everything in Databricks and makes no Databricks call.
pub fn orphaned_by_annotation<K: Resource>(obj: &K) -> bool {
    obj.annotations().get(super::ANNOTATION_DELETION_POLICY).is_some_and(|v| v.eq_ignore_ascii_case("orphan"))
}

/// Before a remote delete: an orphaned object only says so; a paused one waits (it makes no Databricks writes).
/// Returns whether the remote delete may go ahead.
pub async fn may_delete_remote<K: Managed>(
    obj: &K,
    ctx: &Context,
    orphan: bool,
    remote: &str,
) -> Result<bool, Error> {
    if orphan {
        ctx.event(obj, EventType::Normal, "Orphaned", "Delete", &format!("Left {remote} in Databricks"))
            .await;
        return Ok(false);
    }
    if is_paused(obj) {
        return Err(Error::NeedsAttention {
            reason: "Paused",
            message: format!(
                "Deletion waits: {ANNOTATION_PAUSED} is set. Remove it, or set {}: orphan",
                super::ANNOTATION_DELETION_POLICY
            ),
        });
    }
    Ok(true)
}

macro_rules! managed {
    ($kind:ty, $status:ty, $finalizer:expr) => {
        impl Managed for $kind {
            type Status = $status;
            const FINALIZER: &'static str = $finalizer;
            fn status(&self) -> Option<&Self::Status> {
                self.status.as_ref()
            }
            fn status_mut(&mut self) -> Option<&mut Self::Status> {
                self.status.as_mut()
            }
            fn conditions(status: &mut Self::Status) -> &mut Vec<Condition> {
                &mut status.conditions
            }
            fn set_observed_generation(status: &mut Self::Status, generation: Option<i64>) {
                status.observed_generation = generation;
            }
        }
    };
}

managed!(
    crate::crd::ServicePrincipal,
    crate::crd::ServicePrincipalStatus,
    "serviceprincipals.oauth.databricks-operator.io/cleanup"
);
managed!(
    crate::crd::DatabricksAppConnection,
    crate::crd::DatabricksAppConnectionStatus,
    "databricksappconnections.oauth.databricks-operator.io/cleanup"
);
managed!(
    crate::crd::TrustPolicy,
    crate::crd::TrustPolicyStatus,
    "trustpolicies.oauth.databricks-operator.io/cleanup"
);
