//! The reconcile skeleton every namespaced kind runs through: the finalizer, the quick pass of an unchanged
//! object, the paused annotation, and turning the outcome of a full pass into the `Ready` condition (plus a
//! Warning event when a person must act).

use std::{sync::Arc, time::Duration};

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

use super::{context::Context, memory::Fingerprint};
use crate::controllers::{
    rules::{
        conditions,
        error::Error,
        meta::{ANNOTATION_PAUSED, is_paused},
        reason::Reason,
    },
    services::status,
};

/// A kind reconciled through [`reconcile`] (each kind declares itself with [`managed!`]).
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

/// Declares a kind [`Managed`], with the name of its finalizer.
macro_rules! managed {
    ($kind:ty, $status:ty, $finalizer:expr) => {
        impl $crate::controllers::runtime::lifecycle::Managed for $kind {
            type Status = $status;
            const FINALIZER: &'static str = $finalizer;
            fn status(&self) -> Option<&Self::Status> {
                self.status.as_ref()
            }
            fn status_mut(&mut self) -> Option<&mut Self::Status> {
                self.status.as_mut()
            }
            fn conditions(
                status: &mut Self::Status,
            ) -> &mut Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
                &mut status.conditions
            }
            fn set_observed_generation(status: &mut Self::Status, generation: Option<i64>) {
                status.observed_generation = generation;
            }
        }
    };
}

pub(crate) use managed;

pub fn api<K: Managed>(ctx: &Context, obj: &K) -> Api<K> {
    Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default())
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

/// Runs `apply` (or `cleanup` when the object is being deleted) behind the kind's finalizer. `apply` brings
/// Databricks and the cluster in line and returns the Ready message and when to look again; errors become
/// `Ready=False` with their reason. `intact` says whether what the object publishes in the cluster (Secret,
/// ConfigMap) is still as the last pass left it; when it is and nothing else changed, the pass ends there.
/// `gate` checks the grant (the first steps of `apply`): a paused object still runs it, so what a revoked grant
/// produced goes even while the object is paused.
pub async fn reconcile<K, A, I, G, C>(
    obj: Arc<K>,
    ctx: Arc<Context>,
    hooks: Hooks<A, I, G>,
    cleanup: C,
) -> Result<Action, Error>
where
    K: Managed,
    A: AsyncFnOnce(&K, &Context, &mut K::Status) -> Result<(String, Duration), Error>,
    I: AsyncFn(&K, &Context, &K::Status) -> Result<bool, Error>,
    G: AsyncFnOnce(&K, &Context, &mut K::Status) -> Result<(), Error>,
    C: AsyncFnOnce(Arc<K>, &Context) -> Result<Action, Error>,
{
    let api = api(&ctx, obj.as_ref());
    finalizer(&api, K::FINALIZER, obj, |event| async {
        match event {
            Finalizer::Apply(obj) => full_pass(obj, &ctx, hooks).await,
            Finalizer::Cleanup(obj) => {
                ctx.marks.forget(&obj.uid().unwrap_or_default());
                cleanup(obj, &ctx).await
            }
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)).unwrap_finalizer())
}

/// A kind's parts of a pass: `apply`, `intact` and `gate` (see [`reconcile`]).
pub struct Hooks<A, I, G> {
    pub apply: A,
    pub intact: I,
    pub gate: G,
}

/// A pass of an object that is not being deleted: skipped while nothing changed, else `apply` on a fresh read.
async fn full_pass<K, A, I, G>(obj: Arc<K>, ctx: &Context, hooks: Hooks<A, I, G>) -> Result<Action, Error>
where
    K: Managed,
    A: AsyncFnOnce(&K, &Context, &mut K::Status) -> Result<(String, Duration), Error>,
    I: AsyncFn(&K, &Context, &K::Status) -> Result<bool, Error>,
    G: AsyncFnOnce(&K, &Context, &mut K::Status) -> Result<(), Error>,
{
    let Hooks { apply, intact, gate } = hooks;
    let obj = match skip_if_unchanged(obj, ctx, &intact).await? {
        Ok(fresh) => fresh,
        Err(action) => return Ok(action),
    };
    let uid = obj.uid().unwrap_or_default();
    // A pass that fails must not leave a mark that would turn its retry into a quick pass.
    ctx.marks.forget(&uid);
    let api = api(ctx, &obj);
    let generation = obj.meta().generation;
    let mut status = obj.status().cloned().unwrap_or_default();
    // A pause stops the writes the object asks for, never the platform's revocation.
    let revoked = match is_paused(&obj) {
        true => gate(&obj, ctx, &mut status).await.err().filter(|e| matches!(e, Error::Revoked { .. })),
        false => None,
    };
    if is_paused(&obj) && revoked.is_none() {
        let message =
            format!("Paused by the {ANNOTATION_PAUSED} annotation: no Databricks writes until it is removed");
        conditions::set(
            K::conditions(&mut status),
            conditions::READY,
            false,
            Reason::Paused,
            &message,
            generation,
        );
        status::replace(&api, &obj, &status).await?;
        return Ok(Action::requeue(ctx.config.resync_interval));
    }
    let fingerprint = Fingerprint::of(&obj);
    let outcome = match revoked {
        Some(err) => Err(err),
        None => apply(&obj, ctx, &mut status).await,
    };
    K::set_observed_generation(&mut status, generation);
    let next = report(&obj, ctx, &mut status, outcome).await?;
    ctx.marks.record(&uid, fingerprint, next);
    Ok(Action::requeue(next))
}

/// The object read fresh when a full pass is due (`Ok`), or the action that ends the pass here (`Err`): nothing
/// the owner controls changed since the last full pass and what it publishes is intact, only the operator's
/// annotations changed and their debounce still runs, or the object is gone.
async fn skip_if_unchanged<K, I>(obj: Arc<K>, ctx: &Context, intact: &I) -> Result<Result<K, Action>, Error>
where
    K: Managed,
    I: AsyncFn(&K, &Context, &K::Status) -> Result<bool, Error>,
{
    let uid = obj.uid().unwrap_or_default();
    // The cached object may lag (its status behind our last write): then look again at a fresh read below.
    if let Some(remaining) = quick_pass(&*obj, ctx, &uid, intact).await {
        return Ok(Err(Action::requeue(remaining)));
    }
    // Only the operator's annotations changed: one full pass for a burst of changes, not one per change.
    if let Some(wait) = ctx.marks.debounce(&uid, Fingerprint::of(&*obj), ctx.config.annotation_debounce) {
        return Ok(Err(Action::requeue(wait)));
    }
    // The watch cache can lag behind our own last status write; acting on a stale status (an id not yet
    // recorded) could repeat a create or delete what the previous pass made. Read the object fresh.
    let name = obj.name_any();
    let cached_version = obj.resource_version();
    let read = api(ctx, obj.as_ref()).get_opt(&name).await;
    let Some(fresh) = read.map_err(|e| Error::kube(format!("reading {} {name}", K::kind(&())), e))? else {
        return Ok(Err(Action::await_change()));
    };
    if fresh.resource_version() != cached_version
        && let Some(remaining) = quick_pass(&fresh, ctx, &uid, intact).await
    {
        return Ok(Err(Action::requeue(remaining)));
    }
    Ok(Ok(fresh))
}

/// Writes the outcome of `apply` into `Ready` and the status; a failure also becomes a Warning event when a
/// person must act. Returns when to look again.
async fn report<K: Managed>(
    obj: &K,
    ctx: &Context,
    status: &mut K::Status,
    outcome: Result<(String, Duration), Error>,
) -> Result<Duration, Error> {
    let api = api(ctx, obj);
    let generation = obj.meta().generation;
    let err = match outcome {
        Ok((message, next)) => {
            conditions::set(
                K::conditions(status),
                conditions::READY,
                true,
                Reason::Ready,
                &message,
                generation,
            );
            status::replace(&api, obj, status).await?;
            return Ok(next);
        }
        Err(err) => err,
    };
    let message = err.to_string();
    // A deferred pass changed nothing and failed nothing: an object in sync stays Ready (what it did so far is
    // still recorded below); one that is not says why it waits.
    let in_sync = conditions::get(K::conditions(status), conditions::READY)
        .is_some_and(|c| c.status == "True" && c.observed_generation == generation);
    if !(err.is_deferred() && in_sync) {
        conditions::set(K::conditions(status), conditions::READY, false, err.reason(), &message, generation);
    }
    // The error is what matters; a failed status write is retried with it.
    let _ = status::replace(&api, obj, status).await;
    if !err.is_transient() {
        ctx.event(obj, EventType::Warning, err.reason().as_str(), "Reconcile", &message).await;
    }
    Err(err)
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
