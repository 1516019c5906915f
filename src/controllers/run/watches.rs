//! What wakes each controller: its own objects' (trimmed) watch, and mappers from the objects it depends on.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use kube::{
    Api, Client, Resource, ResourceExt,
    runtime::{
        Controller, WatchStreamExt,
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};

use crate::{
    controllers::{
        rules::conditions,
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

/// A controller whose store keeps its objects trimmed ([`lifecycle::trim`]).
pub fn trimmed_controller<K: Managed>(api: Api<K>) -> Controller<K> {
    let (reader, writer) = reflector::store();
    // Paged initial lists (not served whole from the watch cache): a restart with thousands of objects never
    // holds them all as one response.
    let stream = watcher(api, watcher::Config::default().page_size(100))
        .modify(lifecycle::trim)
        .reflect(writer)
        .applied_objects();
    Controller::for_stream(stream, reader)
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
