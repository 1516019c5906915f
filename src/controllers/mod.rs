//! The controllers and what they share: the Context, status writes, events, per-object backoff, fail points.

pub mod accounts;
pub mod app_connection;
mod assignments;
pub mod conditions;
mod error;
mod ledger;
mod lifecycle;
pub mod rollout;
pub mod secrets;
pub mod service_principal;
pub mod tenancy;
pub mod trust_policy;

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{PartialObjectMeta, Patch, PatchParams},
    runtime::{
        Controller, WatchStreamExt,
        controller::Action,
        events::{Event, EventType, Recorder, Reporter},
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};
use serde::Serialize;
use serde_json::{Value, json};

pub use error::Error;

use crate::{
    crd::{DatabricksAccount, DatabricksAppConnection, ServicePrincipal, TrustPolicy},
    databricks::ClientOptions,
    metrics::{ControllerLabels, ErrorLabels, Metrics},
};

/// Field manager of every server-side apply, and the managed-by label value.
pub const MANAGER: &str = "databricks-oauth-operator";
/// A new value triggers a rotation.
pub const ANNOTATION_ROTATE: &str = "oauth.databricks-operator.io/rotate";
/// `"true"` stops all Databricks writes for the object.
pub const ANNOTATION_PAUSED: &str = "oauth.databricks-operator.io/paused";
/// `orphan` leaves the remote object behind on deletion, whatever the spec says.
pub const ANNOTATION_DELETION_POLICY: &str = "oauth.databricks-operator.io/deletion-policy";

/// A new value asks for a full pass now (compare with Databricks and revert drift) instead of at the resync.
pub const ANNOTATION_RECONCILE: &str = "oauth.databricks-operator.io/reconcile";

/// The annotations a full pass acts on; a change of any other annotation (or a label) costs no Databricks call.
pub const OWN_ANNOTATIONS: [&str; 4] =
    [ANNOTATION_ROTATE, ANNOTATION_PAUSED, ANNOTATION_DELETION_POLICY, ANNOTATION_RECONCILE];

/// The namespace the operator is installed in by default (deploy/ and the Helm chart).
pub const DEFAULT_NAMESPACE: &str = "databricks-oauth-operator";
/// Where the deployment mounts the operator's projected token for workload identity.
pub const DEFAULT_TOKEN_DIR: &str = "/var/run/secrets/databricks";

/// Operator settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// How often every object is compared with Databricks (jittered by ±10%).
    pub resync_interval: Duration,
    /// How long a replaced secret stays valid after rotation.
    pub rotation_grace: Duration,
    /// Watch only this namespace (all when unset).
    pub namespace: Option<String>,
    /// Client tuning (the budget is replaced per account).
    pub client_options: ClientOptions,
    /// Objects of one kind reconciled at once.
    pub concurrency: u16,
    /// The only namespace account credentials Secrets (`auth.oauthM2M.secretRef`) are read from.
    pub credentials_namespace: String,
    /// The only directory workload identity token files (`auth.workloadIdentity.tokenPath`) are read from.
    pub token_dir: std::path::PathBuf,
    /// How long a full pass asked for by a change of the operator's annotations (`rotate`, `paused`,
    /// `deletion-policy`) waits, so that a burst of changes costs one pass: at most one such pass per object per
    /// this interval.
    pub annotation_debounce: Duration,
    /// The least time between two secrets minted for the rotate annotation on one object.
    pub rotate_min_interval: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            resync_interval: Duration::from_secs(600),
            rotation_grace: Duration::from_secs(600),
            namespace: None,
            client_options: ClientOptions::default(),
            concurrency: 16,
            credentials_namespace: DEFAULT_NAMESPACE.to_owned(),
            token_dir: std::path::PathBuf::from(DEFAULT_TOKEN_DIR),
            annotation_debounce: Duration::from_secs(5),
            rotate_min_interval: Duration::from_secs(300),
        }
    }
}

impl Config {
    pub fn jittered_resync(&self) -> Duration {
        self.resync_interval.mul_f64(rand::random_range(0.9..1.1))
    }
}

/// Named points where a test can make the next reconcile stop, as if the operator died there.
#[derive(Debug, Default, Clone)]
pub struct FailPoints(Arc<Mutex<HashSet<&'static str>>>);

impl FailPoints {
    /// Arms `name` for one firing.
    pub fn arm(&self, name: &'static str) {
        if let Ok(mut armed) = self.0.lock() {
            armed.insert(name);
        }
    }

    /// Whether `name` is still armed (not yet fired).
    pub fn armed(&self, name: &'static str) -> bool {
        self.0.lock().map(|a| a.contains(name)).unwrap_or(false)
    }

    fn fire(&self, name: &'static str) -> bool {
        self.0.lock().map(|mut a| a.remove(name)).unwrap_or(false)
    }
}

/// Per-object exponential backoff (kube has none), reset on success.
#[derive(Debug, Default)]
struct Backoff(Mutex<HashMap<String, (u32, Instant)>>);

impl Backoff {
    fn next(&self, key: &str) -> Duration {
        let Ok(mut map) = self.0.lock() else { return Duration::from_secs(30) };
        let entry = map.entry(key.to_owned()).or_insert((0, Instant::now()));
        entry.0 = (entry.0 + 1).min(10);
        let base = Duration::from_millis(500 << entry.0.min(9)).min(Duration::from_secs(300));
        base.mul_f64(rand::random_range(0.8..1.2))
    }

    fn reset(&self, key: &str) {
        if let Ok(mut map) = self.0.lock() {
            map.remove(key);
        }
    }
}

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub config: Config,
    pub accounts: accounts::Registry,
    pub metrics: Arc<Metrics>,
    pub fail_points: FailPoints,
    /// What the last full pass of each object saw (see [`lifecycle::Marks`]).
    pub marks: lifecycle::Marks,
    /// Workspace assignment listings shared by every principal.
    pub assignments: assignments::Cache,
    /// The principal controller's store: which object created which principal (by UID).
    principals: Mutex<Option<Store<ServicePrincipal>>>,
    reporter: Reporter,
    backoff: Backoff,
}

impl Context {
    pub fn new(client: Client, config: Config, metrics: Arc<Metrics>, fail_points: FailPoints) -> Self {
        let reporter = Reporter { controller: MANAGER.to_owned(), instance: std::env::var("POD_NAME").ok() };
        Self {
            reporter,
            client,
            assignments: assignments::Cache::new(config.resync_interval),
            config,
            accounts: accounts::Registry::default(),
            metrics,
            fail_points,
            marks: lifecycle::Marks::default(),
            backoff: Backoff::default(),
            principals: Mutex::new(None),
        }
    }

    /// The ServicePrincipal (other than `except`) whose UID is `uid`, as `namespace/name`: the object a tagged
    /// principal was created for.
    pub async fn principal_with_uid(&self, uid: &str, except: &str) -> Result<Option<String>, Error> {
        if uid == except {
            return Ok(None);
        }
        let store = self.principals.lock().ok().and_then(|s| s.clone());
        let objects: Vec<Arc<ServicePrincipal>> = match store {
            Some(store) => {
                // A store still loading could miss the owner: wait for it, and decide nothing without it.
                let ready = tokio::time::timeout(Duration::from_secs(30), store.wait_until_ready()).await;
                if !matches!(ready, Ok(Ok(()))) {
                    return Err(Error::Waiting {
                        reason: "CacheNotReady",
                        message: "the operator's list of ServicePrincipals is still loading".to_owned(),
                    });
                }
                store.state()
            }
            None => Api::<ServicePrincipal>::all(self.client.clone())
                .list(&Default::default())
                .await
                .map_err(|e| Error::kube("listing ServicePrincipals", e))?
                .items
                .into_iter()
                .map(Arc::new)
                .collect(),
        };
        Ok(objects
            .iter()
            .find(|sp| sp.uid().as_deref() == Some(uid))
            .map(|sp| format!("{}/{}", sp.namespace().unwrap_or_default(), sp.name_any())))
    }

    /// Stops this reconcile here if a test armed `name`.
    pub fn fail_point(&self, name: &'static str) -> Result<(), Error> {
        if self.fail_points.fire(name) { Err(Error::FailPoint(name)) } else { Ok(()) }
    }

    /// Publishes an event; failing to publish one never fails a reconcile. Notes never hold secret values.
    pub async fn event<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        type_: EventType,
        reason: &str,
        action: &str,
        note: &str,
    ) {
        let event = Event {
            type_,
            reason: reason.to_owned(),
            note: Some(note.chars().take(1000).collect()),
            action: action.to_owned(),
            secondary: None,
        };
        // A Recorder per event: a shared one keeps every event for six minutes (to count repeats into a series)
        // and scans all of them on each publish, which costs tens of MiB and CPU at thousands of objects. Our
        // events rarely repeat within minutes (failures back off), so a series is not worth that.
        let recorder = Recorder::new(self.client.clone(), self.reporter.clone());
        if let Err(err) = recorder.publish(&event, &obj.object_ref(&())).await {
            tracing::debug!(%err, "could not publish event");
        }
    }
}

/// Replaces the whole status, only when it changed (every write is a watch event). A replacement, not a
/// server-side apply: a field someone else wrote into status (an edited `status.id`) must disappear when the
/// operator's status has no such field, and an apply leaves fields other managers own in place.
pub async fn patch_status<K>(api: &Api<K>, obj: &K, status: &impl Serialize) -> Result<(), Error>
where
    K: Resource<DynamicType = ()> + Clone + Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let desired = serde_json::to_value(status).unwrap_or_default();
    let current = serde_json::to_value(obj).ok().and_then(|v| v.get("status").cloned()).unwrap_or_default();
    if current == desired {
        return Ok(());
    }
    // Only onto the object the status was computed for, never onto a namesake created meanwhile.
    let mut operations = Vec::new();
    if let Some(uid) = obj.uid() {
        operations.push(json!({"op": "test", "path": "/metadata/uid", "value": uid}));
    }
    operations.push(json!({"op": "add", "path": "/status", "value": desired}));
    let patch: json_patch::Patch = serde_json::from_value(Value::Array(operations)).unwrap_or_default();
    let params = PatchParams { field_manager: Some(MANAGER.to_owned()), ..PatchParams::default() };
    api.patch_status(&obj.name_any(), &params, &Patch::<()>::Json(patch))
        .await
        .map(drop)
        .map_err(|e| Error::kube(format!("writing the status of {} {}", K::kind(&()), obj.name_any()), e))
}

fn error_policy<K: Resource<DynamicType = ()>>(
    controller: &'static str,
) -> impl Fn(Arc<K>, &Error, Arc<Context>) -> Action {
    move |obj, err, ctx| {
        let key = format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any());
        ctx.metrics
            .reconcile_errors
            .get_or_create(&ErrorLabels {
                controller: controller.to_owned(),
                reason: err.reason().to_owned(),
            })
            .inc();
        if err.is_deferred() {
            // Expected while a namespace churns; the metric and the object's condition say so.
            tracing::debug!(controller, object = %key, error = %err, "pass deferred");
            // Backoff spreads a churning namespace's retries out; the cap keeps a deferred object of a namespace
            // that is merely busy from waiting long after its queue has room again.
            Action::requeue(ctx.backoff.next(&key).min(Duration::from_secs(30)))
        } else if err.is_transient() {
            tracing::warn!(controller, object = %key, reason = err.reason(), error = %err, "reconcile failed; retrying");
            Action::requeue(ctx.backoff.next(&key))
        } else {
            // A person must act: the condition says what; changes to the object reconcile at once anyway.
            tracing::warn!(controller, object = %key, reason = err.reason(), error = %err, "reconcile needs attention");
            Action::requeue(Duration::from_secs(300).max(ctx.backoff.next(&key)))
        }
    }
}

async fn timed<K, F>(
    controller: &'static str,
    obj: Arc<K>,
    ctx: Arc<Context>,
    run: impl FnOnce(Arc<K>, Arc<Context>) -> F,
) -> Result<Action, Error>
where
    K: Resource<DynamicType = ()>,
    F: std::future::Future<Output = Result<Action, Error>>,
{
    let key = format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any());
    let started = Instant::now();
    let labels = ControllerLabels { controller: controller.to_owned() };
    tracing::debug!(controller, object = %key, "reconcile started");
    let result = run(obj, ctx.clone()).await;
    tracing::debug!(controller, object = %key, elapsed_ms = started.elapsed().as_millis() as u64, ok = result.is_ok(), "reconcile finished");
    ctx.metrics.reconciles.get_or_create(&labels).inc();
    ctx.metrics.reconcile_duration.get_or_create(&labels).observe(started.elapsed().as_secs_f64());
    if result.is_ok() {
        ctx.backoff.reset(&key);
    }
    result
}

/// Stops the controllers from within the process (signals stop them too).
#[derive(Clone, Default)]
pub struct Stop(Arc<(tokio::sync::Notify, std::sync::atomic::AtomicBool)>);

impl Stop {
    pub fn stop(&self) {
        self.0.1.store(true, std::sync::atomic::Ordering::SeqCst);
        self.0.0.notify_waiters();
    }

    pub fn is_stopped(&self) -> bool {
        self.0.1.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Resolves once `stop` was called.
    pub async fn wait(self) {
        loop {
            let notified = self.0.0.notified();
            if self.is_stopped() {
                return;
            }
            notified.await;
        }
    }
}

/// Leader election through a Lease: only the holder runs the controllers.
#[derive(Debug, Clone)]
pub struct LeaderElection {
    pub lease_name: String,
    pub namespace: String,
    pub identity: String,
    /// Seconds a holder keeps the lease without renewing it.
    pub lease_duration: u64,
    /// Seconds before expiry at which the holder renews.
    pub grace: u64,
}

/// Waits to hold the lease, runs the controllers while it is held, and releases it on stop so another replica
/// takes over at once. Returns when stopped, or when leadership is lost (the caller should then exit).
pub async fn run_elected(
    ctx: Arc<Context>,
    election: LeaderElection,
    stop: Stop,
) -> Result<(), kube_lease_manager::LeaseManagerError> {
    let manager = kube_lease_manager::LeaseManagerBuilder::new(ctx.client.clone(), &election.lease_name)
        .with_namespace(&election.namespace)
        .with_identity(&election.identity)
        .with_duration(election.lease_duration)
        .with_grace(election.grace)
        .with_field_manager(MANAGER)
        .build()
        .await?;
    let (mut leader, task) = manager.watch().await;
    tracing::info!(lease = %election.lease_name, identity = %election.identity, "waiting for leadership");
    let became_leader = async {
        while !*leader.borrow_and_update() {
            if leader.changed().await.is_err() {
                return false;
            }
        }
        true
    };
    let acquired = tokio::select! {
        acquired = became_leader => acquired,
        () = stop.clone().wait() => false,
    };
    if acquired {
        tracing::info!(identity = %election.identity, "acquired leadership; starting controllers");
        let inner = Stop::default();
        let lost = {
            let inner = inner.clone();
            let mut leader = leader.clone();
            let stop = stop.clone();
            async move {
                tokio::select! {
                    _ = leader.wait_for(|held| !*held) => tracing::error!("lost leadership; stopping controllers"),
                    () = stop.wait() => {}
                }
                inner.stop();
            }
        };
        tokio::join!(run_until(ctx, inner), lost);
    }
    drop(leader);
    match task.await {
        Ok(Ok(manager)) => manager.release().await,
        Ok(Err(err)) => Err(err),
        Err(_) => Ok(()),
    }
}

/// A controller whose store keeps its objects trimmed ([`lifecycle::trim`]).
fn trimmed_controller<K: lifecycle::Managed>(api: Api<K>) -> Controller<K> {
    let (reader, writer) = reflector::store();
    // Paged initial lists (not served whole from the watch cache): a restart with thousands of objects never
    // holds them all as one response.
    let stream = watcher(api, watcher::Config::default().page_size(100))
        .modify(lifecycle::trim)
        .reflect(writer)
        .applied_objects();
    Controller::for_stream(stream, reader)
}

fn controller_config(ctx: &Context) -> kube::runtime::controller::Config {
    kube::runtime::controller::Config::default().concurrency(ctx.config.concurrency)
}

/// Remembers what of each account its dependents care about (generation and the Ready condition), so that
/// status writes that change neither (the ownership ledger, a re-proof) do not re-check every dependent.
#[derive(Default)]
struct AccountChanges(Mutex<HashMap<String, AccountSeen>>);

/// An account's generation and its Ready condition (status, reason, message).
type AccountSeen = (Option<i64>, Option<String>);

impl AccountChanges {
    fn changed(&self, account: &DatabricksAccount) -> bool {
        let ready = account
            .status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == conditions::READY))
            .map(|c| format!("{}/{}/{}", c.status, c.reason, c.message));
        let seen = (account.metadata.generation, ready);
        let Ok(mut known) = self.0.lock() else { return true };
        known.insert(account.name_any(), seen.clone()) != Some(seen)
    }
}

/// Reconcile requests for the objects in `store` that `depends` on something that changed: their next pass is a
/// full one.
fn dependents<K>(ctx: &Context, store: &Store<K>, depends: impl Fn(&K) -> bool) -> Vec<ObjectRef<K>>
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

/// A mapper from account events to the objects in `store` that use the account (`account_of`), for changes that
/// matter to them only (see [`AccountChanges`]).
fn account_dependents<K>(
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

/// Runs every controller until shutdown (SIGTERM / Ctrl-C).
pub async fn run(ctx: Arc<Context>) {
    run_until(ctx, Stop::default()).await
}

/// Runs every controller until shutdown (SIGTERM / Ctrl-C) or `stop`.
pub async fn run_until(ctx: Arc<Context>, stop: Stop) {
    let client = ctx.client.clone();
    fn scoped<K>(client: &Client, namespace: Option<&str>) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        match namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    let namespace = ctx.config.namespace.as_deref();
    let principals: Api<ServicePrincipal> = scoped(&client, namespace);
    let apps: Api<DatabricksAppConnection> = scoped(&client, namespace);
    let policies: Api<TrustPolicy> = scoped(&client, namespace);
    let secret_meta: Api<PartialObjectMeta<Secret>> = scoped(&client, namespace);
    let accounts: Api<DatabricksAccount> = Api::all(client.clone());
    let managed = watcher::Config::default().labels(&format!("{}={MANAGER}", secrets::MANAGED_BY));

    let principal_controller = trimmed_controller(principals.clone());
    let store = principal_controller.store();
    if let Ok(mut principals) = ctx.principals.lock() {
        *principals = Some(store.clone());
    }
    let marks = ctx.clone();
    let principal_controller = principal_controller
        // Metadata only: the operator never receives a Secret's values through its watches, and a tenant's
        // Secret with our label only wakes the object that its ownerReference names (a controller ref to it).
        .owns_stream(watcher(secret_meta.clone(), managed.clone()).touched_objects())
        // An account change (credentials fixed, namespace allowed, delegations) re-checks every principal that
        // uses it.
        .watches(
            accounts.clone(),
            watcher::Config::default(),
            account_dependents(marks, store, |sp, account| sp.spec.account_ref.name == account),
        )
        .with_config(controller_config(&ctx))
        .shutdown_on_signal()
        .graceful_shutdown_on(stop.clone().wait())
        .run(
            |obj, ctx| timed("serviceprincipal", obj, ctx, service_principal::reconcile),
            error_policy::<ServicePrincipal>("serviceprincipal"),
            ctx.clone(),
        )
        .for_each(|_| futures::future::ready(()));
    let app_controller = trimmed_controller(apps);
    let app_store = app_controller.store();
    let policy_controller = trimmed_controller(policies);
    let policy_store = policy_controller.store();
    let marks = ctx.clone();
    let policy_controller = policy_controller
        .owns_stream(
            watcher(scoped::<PartialObjectMeta<ConfigMap>>(&client, namespace), managed.clone())
                .touched_objects(),
        )
        // A principal getting its id (or changing) re-checks the policies that point at it.
        // Only names matter here: a metadata watch, not a second copy of every principal in flight.
        .watches_stream(
            watcher(
                scoped::<PartialObjectMeta<ServicePrincipal>>(&client, namespace),
                watcher::Config::default().page_size(100),
            )
            .touched_objects(),
            {
                let (marks, policy_store) = (marks.clone(), policy_store.clone());
                move |sp: PartialObjectMeta<ServicePrincipal>| {
                    let (name, namespace) = (sp.name_any(), sp.namespace());
                    dependents(&marks, &policy_store, |p| {
                        p.spec.service_principal_ref.name == name && p.namespace() == namespace
                    })
                }
            },
        )
        // A delegation change (trustPolicies granted or revoked) re-checks the policies; which account a policy
        // uses is its principal's, not in the policy, so every policy (account changes are rare).
        .watches(
            accounts.clone(),
            watcher::Config::default(),
            account_dependents(marks, policy_store, |_, _| true),
        )
        .with_config(controller_config(&ctx))
        .shutdown_on_signal()
        .graceful_shutdown_on(stop.clone().wait())
        .run(
            |obj, ctx| timed("trustpolicy", obj, ctx, trust_policy::reconcile),
            error_policy::<TrustPolicy>("trustpolicy"),
            ctx.clone(),
        )
        .for_each(|_| futures::future::ready(()));
    let marks = ctx.clone();
    let app_controller = app_controller
        .owns_stream(watcher(secret_meta, managed).touched_objects())
        .watches(
            accounts.clone(),
            watcher::Config::default(),
            account_dependents(marks, app_store, |app, account| app.spec.account_ref.name == account),
        )
        .with_config(controller_config(&ctx))
        .shutdown_on_signal()
        .graceful_shutdown_on(stop.clone().wait())
        .run(
            |obj, ctx| timed("databricksappconnection", obj, ctx, app_connection::reconcile),
            error_policy::<DatabricksAppConnection>("databricksappconnection"),
            ctx.clone(),
        )
        .for_each(|_| futures::future::ready(()));
    let account_controller = Controller::new(accounts, watcher::Config::default().any_semantic());
    ctx.accounts.use_store(account_controller.store());
    let account_controller = account_controller
        .with_config(controller_config(&ctx))
        .shutdown_on_signal()
        .graceful_shutdown_on(stop.clone().wait())
        .run(
            |obj, ctx| timed("databricksaccount", obj, ctx, accounts::reconcile),
            error_policy::<DatabricksAccount>("databricksaccount"),
            ctx.clone(),
        )
        .for_each(|_| futures::future::ready(()));
    tokio::join!(principal_controller, app_controller, policy_controller, account_controller);
}
