//! The wiring, on top of everything: builds the four controllers, what wakes each of them, and leader election,
//! and runs them until stopped. Only the facade (`controllers/mod.rs`) imports this module.

mod election;
mod watches;

use std::{fmt::Debug, future::Future, sync::Arc};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::PartialObjectMeta,
    runtime::{Controller, WatchStreamExt, controller::Action, watcher},
};
use serde::de::DeserializeOwned;

pub use election::{LeaderElection, Stop};
use watches::{account_dependents, controller_config, dependents, scoped, trimmed_controller};

use super::{
    account, app_connection,
    rules::{
        error::Error,
        meta::{MANAGED_BY, MANAGER},
    },
    runtime::{
        context::Context,
        policy::{error_policy, instrumented},
    },
    service_principal,
    services::ledger,
    trust_policy,
};
use crate::crd::{DatabricksAccount, DatabricksAppConnection, ServicePrincipal, TrustPolicy};

/// Runs every controller until shutdown (SIGTERM / Ctrl-C).
pub async fn run(ctx: Arc<Context>) {
    run_until(ctx, Stop::default()).await
}

/// Waits to hold the lease, runs the controllers while it is held, and releases it on stop so another replica
/// takes over at once. Returns when stopped, or when leadership is lost (the caller should then exit).
pub async fn run_elected(
    ctx: Arc<Context>,
    election: LeaderElection,
    stop: Stop,
) -> Result<(), kube_lease_manager::LeaseManagerError> {
    let client = ctx.client.clone();
    election::while_leader(client, election, stop, |inner| run_until(ctx, inner)).await
}

/// Runs every controller until shutdown (SIGTERM / Ctrl-C) or `stop`.
pub async fn run_until(ctx: Arc<Context>, stop: Stop) {
    // Before any pass: an app connection must never miss the record of an earlier version and create anew.
    if let Err(err) = ledger::migrate_all(&ctx.client, &ctx.claims).await {
        tracing::error!(error = %err, "could not move the ownership ledger into DatabricksClaims; retrying per account");
    }
    tokio::join!(
        principal_controller(&ctx, &stop),
        app_controller(&ctx, &stop),
        policy_controller(&ctx, &stop),
        account_controller(&ctx, &stop),
    );
}

/// Metadata only: the operator never receives a Secret's or ConfigMap's values through its watches, and a
/// tenant's object with our label only wakes the object that its ownerReference names (a controller ref to it).
fn published<K>(
    ctx: &Context,
) -> impl futures::Stream<Item = Result<PartialObjectMeta<K>, watcher::Error>> + use<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()> + Clone + DeserializeOwned,
    K: Debug + Send + 'static,
{
    let api: Api<PartialObjectMeta<K>> = scoped(&ctx.client, ctx.config.namespace.as_deref());
    let managed = watcher::Config::default().labels(&format!("{MANAGED_BY}={MANAGER}"));
    watcher(api, managed).touched_objects()
}

fn principal_controller(ctx: &Arc<Context>, stop: &Stop) -> impl Future<Output = ()> + use<> {
    let principals: Api<ServicePrincipal> = scoped(&ctx.client, ctx.config.namespace.as_deref());
    let controller = trimmed_controller(principals);
    let store = controller.store();
    ctx.principals.use_store(store.clone());
    let uses = |sp: &ServicePrincipal, account: &str| sp.spec.account_ref.name == account;
    let controller = controller
        .owns_stream(published::<Secret>(ctx))
        // An account change (credentials fixed, namespace allowed, delegations) re-checks every principal that
        // uses it.
        .watches(
            accounts(&ctx.client),
            watcher::Config::default(),
            account_dependents(ctx.clone(), store, uses),
        );
    drive(controller, ctx, stop, service_principal::CONTROLLER, service_principal::reconcile)
}

fn app_controller(ctx: &Arc<Context>, stop: &Stop) -> impl Future<Output = ()> + use<> {
    let apps: Api<DatabricksAppConnection> = scoped(&ctx.client, ctx.config.namespace.as_deref());
    let controller = trimmed_controller(apps);
    let store = controller.store();
    let uses = |app: &DatabricksAppConnection, account: &str| app.spec.account_ref.name == account;
    let controller = controller.owns_stream(published::<Secret>(ctx)).watches(
        accounts(&ctx.client),
        watcher::Config::default(),
        account_dependents(ctx.clone(), store, uses),
    );
    drive(controller, ctx, stop, app_connection::CONTROLLER, app_connection::reconcile)
}

fn policy_controller(ctx: &Arc<Context>, stop: &Stop) -> impl Future<Output = ()> + use<> {
    let namespace = ctx.config.namespace.as_deref();
    let controller = trimmed_controller(scoped::<TrustPolicy>(&ctx.client, namespace));
    let store = controller.store();
    // A principal getting its id (or changing) re-checks the policies that point at it. Only names matter here:
    // a metadata watch, not a second copy of every principal in flight.
    let principals = watcher(
        scoped::<PartialObjectMeta<ServicePrincipal>>(&ctx.client, namespace),
        watcher::Config::default().page_size(100),
    )
    .touched_objects();
    let pointing_at = {
        let (ctx, store) = (ctx.clone(), store.clone());
        move |sp: PartialObjectMeta<ServicePrincipal>| {
            let (name, namespace) = (sp.name_any(), sp.namespace());
            dependents(&ctx, &store, |p| {
                p.spec.service_principal_ref.name == name && p.namespace() == namespace
            })
        }
    };
    let controller = controller
        .owns_stream(published::<ConfigMap>(ctx))
        .watches_stream(principals, pointing_at)
        // A delegation change (trustPolicies granted or revoked) re-checks the policies; which account a policy
        // uses is its principal's, not in the policy, so every policy (account changes are rare).
        .watches(
            accounts(&ctx.client),
            watcher::Config::default(),
            account_dependents(ctx.clone(), store, |_, _| true),
        );
    drive(controller, ctx, stop, trust_policy::CONTROLLER, trust_policy::reconcile)
}

fn account_controller(ctx: &Arc<Context>, stop: &Stop) -> impl Future<Output = ()> + use<> {
    let controller = watches::account_controller(accounts(&ctx.client));
    ctx.accounts.use_store(controller.store());
    drive(controller, ctx, stop, account::CONTROLLER, account::reconcile)
}

fn accounts(client: &Client) -> Api<DatabricksAccount> {
    Api::all(client.clone())
}

/// Runs `controller` until shutdown with the settings every controller shares: its passes of `reconcile`
/// instrumented, and failed ones requeued by the error policy.
fn drive<K, F>(
    controller: Controller<K>,
    ctx: &Arc<Context>,
    stop: &Stop,
    name: &'static str,
    reconcile: fn(Arc<K>, Arc<Context>) -> F,
) -> impl Future<Output = ()> + use<K, F>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    F: Future<Output = Result<Action, Error>> + Send + 'static,
{
    controller
        .with_config(controller_config(ctx))
        .shutdown_on_signal()
        .graceful_shutdown_on(stop.clone().wait())
        .run(move |obj, ctx| instrumented(name, obj, ctx, reconcile), error_policy::<K>(name), ctx.clone())
        .for_each(|_| futures::future::ready(()))
}
