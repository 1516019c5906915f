//! What wakes each controller: its own objects' (trimmed) watch, and mappers from the objects it depends on.

use std::{
    collections::HashMap,
    hash::{DefaultHasher, Hash, Hasher},
    sync::{Arc, Mutex},
};

use kube::{
    Api, Client, Resource, ResourceExt,
    runtime::{
        Controller, PredicateConfig, WatchStreamExt,
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};

use crate::{
    controllers::{
        rules::{
            conditions,
            meta::{ANNOTATION_RECONCILE, OWN_ANNOTATIONS},
        },
        runtime::{
            context::Context,
            lifecycle::{self, Managed},
        },
    },
    crd::DatabricksAccount,
};

/// All objects of a namespaced kind, or those of the one namespace the operator watches.
pub fn scoped<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// A controller whose store keeps its objects trimmed ([`lifecycle::trim`]), woken only by changes a pass
/// depends on ([`pass_inputs`]).
pub fn trimmed_controller<K: Managed>(api: Api<K>) -> Controller<K> {
    let (reader, writer) = reflector::store();
    // Paged initial lists (not served whole from the watch cache): a restart with thousands of objects never
    // holds them all as one response.
    let stream = watcher(api, watcher::Config::default().page_size(100))
        .modify(lifecycle::trim)
        .reflect(writer)
        .applied_objects()
        .predicate_filter(pass_inputs, PredicateConfig::default());
    Controller::for_stream(stream, reader)
}

/// What of an object its passes depend on: the generation (spec), the operator's annotations, the finalizers and
/// whether it is being deleted. An event that changes none of it wakes no pass: above all the operator's own
/// status write, whose echo would otherwise re-run a failed pass at once and skip its backoff. (The store still
/// sees every event: the filter comes after it.)
fn pass_inputs<K: Resource>(obj: &K) -> Option<u64> {
    let meta = obj.meta();
    let mut hasher = DefaultHasher::new();
    meta.generation.hash(&mut hasher);
    for key in OWN_ANNOTATIONS {
        meta.annotations.as_ref().and_then(|a| a.get(key)).hash(&mut hasher);
    }
    meta.finalizers.hash(&mut hasher);
    meta.deletion_timestamp.is_some().hash(&mut hasher);
    Some(hasher.finish())
}

/// The account controller, woken by spec changes and by an earlier version's ledger to move (not by its own
/// condition writes, nor anyone's status writes).
pub fn account_controller(api: Api<DatabricksAccount>) -> Controller<DatabricksAccount> {
    let (reader, writer) = reflector::store();
    let stream = watcher(api, watcher::Config::default().any_semantic())
        .reflect(writer)
        .applied_objects()
        .predicate_filter(account_inputs, PredicateConfig::default());
    Controller::for_stream(stream, reader)
}

fn account_inputs(account: &DatabricksAccount) -> Option<u64> {
    let mut hasher = DefaultHasher::new();
    account.metadata.generation.hash(&mut hasher);
    account.metadata.annotations.as_ref().and_then(|a| a.get(ANNOTATION_RECONCILE)).hash(&mut hasher);
    let ledger =
        account.status.as_ref().is_some_and(|s| !s.app_connections.is_empty() || !s.adoptions.is_empty());
    ledger.hash(&mut hasher);
    Some(hasher.finish())
}

pub fn controller_config(ctx: &Context) -> kube::runtime::controller::Config {
    kube::runtime::controller::Config::default().concurrency(ctx.config.concurrency)
}

/// What of an account its dependents care about: its generation and its Ready condition (status, reason, message).
#[derive(Debug, Clone, PartialEq, Eq)]
struct AccountSeen {
    generation: Option<i64>,
    ready: Option<String>,
}

/// Remembers what each account's dependents last saw of it, so that status writes that change neither (the
/// ownership ledger, a re-proof) do not re-check every dependent.
#[derive(Default)]
struct AccountChanges(Mutex<HashMap<String, AccountSeen>>);

impl AccountChanges {
    fn changed(&self, account: &DatabricksAccount) -> bool {
        let ready = account
            .status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == conditions::READY))
            .map(|c| format!("{}/{}/{}", c.status, c.reason, c.message));
        let seen = AccountSeen { generation: account.metadata.generation, ready };
        let Ok(mut known) = self.0.lock() else { return true };
        known.insert(account.name_any(), seen.clone()) != Some(seen)
    }
}

/// Reconcile requests for the objects in `store` that `depends` on something that changed: their next pass is a
/// full one.
pub fn dependents<K>(ctx: &Context, store: &Store<K>, depends: impl Fn(&K) -> bool) -> Vec<ObjectRef<K>>
where
    K: Resource<DynamicType = ()> + Clone,
{
    let objects = store.state().into_iter().filter(|obj| depends(obj));
    objects
        .map(|obj| {
            ctx.marks.forget(&obj.uid().unwrap_or_default());
            ObjectRef::from_obj(obj.as_ref())
        })
        .collect()
}

/// A mapper from account events to the objects in `store` that use the account (`uses`), for changes that matter
/// to them only (see [`AccountChanges`]).
pub fn account_dependents<K>(
    ctx: Arc<Context>,
    store: Store<K>,
    uses: fn(&K, &str) -> bool,
) -> impl Fn(DatabricksAccount) -> Vec<ObjectRef<K>> + Send + Sync + 'static
where
    K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
{
    let changes = AccountChanges::default();
    move |account: DatabricksAccount| {
        ctx.accounts.saw(&account);
        if !changes.changed(&account) {
            return Vec::new();
        }
        let name = account.name_any();
        dependents(&ctx, &store, |obj| uses(obj, &name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::ServicePrincipal;

    #[test]
    fn only_what_a_pass_depends_on_wakes_one() {
        let sp = |patch: serde_json::Value| -> ServicePrincipal {
            let mut base = serde_json::json!({"metadata": {"name": "x", "generation": 1}, "spec": {}});
            json_patch::merge(&mut base, &patch);
            serde_json::from_value(base).expect("sp")
        };
        let base = pass_inputs(&sp(serde_json::json!({})));
        let same = |patch| pass_inputs(&sp(patch)) == base;
        assert!(same(serde_json::json!({"metadata": {"labels": {"team": "a"}}})), "labels");
        assert!(
            same(serde_json::json!({"metadata": {"annotations": {"example.com/build": "1"}}})),
            "foreign annotations"
        );
        assert!(same(serde_json::json!({"status": {"id": "123", "observedGeneration": 1}})), "status");
        assert!(!same(serde_json::json!({"metadata": {"generation": 2}})), "spec");
        assert!(!same(
            serde_json::json!({"metadata": {"annotations": {"oauth.databricks-operator.io/rotate": "1"}}})
        ));
        assert!(!same(serde_json::json!({"metadata": {"finalizers": ["f"]}})), "finalizers");
        assert!(
            !same(serde_json::json!({"metadata": {"deletionTimestamp": "2026-11-30T12:00:00Z"}})),
            "deletion"
        );
    }
}
