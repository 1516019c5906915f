//! The operator's settings and the Context every reconcile receives: a bag of independent parts, each built once
//! before the controllers start and none needing the Context to work.

use std::{
    collections::HashSet,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use kube::{Client, Resource, runtime::events::EventType};

use super::{
    memory::{Backoff, Marks},
    workers::Workers,
};
use crate::{
    controllers::{
        rules::error::Error,
        services::{accounts, assignments, claims::Claims, events::Events, principals::Principals},
    },
    databricks::ClientOptions,
    metrics::Metrics,
};

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
    pub token_dir: PathBuf,
    /// How long a full pass asked for by a change of the operator's annotations (`rotate`, `paused`,
    /// `deletion-policy`, `reconcile`) waits, so that a burst of changes costs one pass: at most one such pass per
    /// object per this interval.
    pub annotation_debounce: Duration,
    /// The least time between two secrets minted for the rotate annotation on one object.
    pub rotate_min_interval: Duration,
    /// The least time between two secrets minted to repair one object's published Secret.
    pub repair_min_interval: Duration,
    /// How long a search by tag may lag a create: a principal an object created is searched for again (a racing
    /// create's duplicate is deleted) until this has long passed.
    pub search_lag: Duration,
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
            token_dir: PathBuf::from(DEFAULT_TOKEN_DIR),
            annotation_debounce: Duration::from_secs(5),
            rotate_min_interval: Duration::from_secs(300),
            repair_min_interval: Duration::from_secs(30),
            search_lag: Duration::from_secs(30),
        }
    }
}

impl Config {
    pub fn jittered_resync(&self) -> Duration {
        self.resync_interval.mul_f64(rand::random_range(0.9..1.1))
    }

    fn account_settings(&self) -> accounts::Settings {
        accounts::Settings {
            credentials_namespace: self.credentials_namespace.clone(),
            token_dir: self.token_dir.clone(),
            client_options: self.client_options.clone(),
            concurrency: self.concurrency,
        }
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

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub config: Config,
    pub metrics: Arc<Metrics>,
    pub fail_points: FailPoints,
    pub events: Events,
    /// What the last full pass of each object saw (see [`Marks`]).
    pub marks: Marks,
    /// Per-object exponential backoff of failed passes.
    pub backoff: Backoff,
    /// One client and budget per DatabricksAccount, and what each namespace may do with it.
    pub accounts: accounts::Registry,
    /// The operator's ownership records (DatabricksClaims).
    pub claims: Claims,
    /// Which ServicePrincipal stands for which remote principal.
    pub principals: Principals,
    /// Workspace assignment listings shared by every principal.
    pub assignments: Arc<assignments::Cache>,
    /// How many workers each namespace holds (see [`Workers`]).
    pub workers: Workers,
}

impl Context {
    pub fn new(client: Client, config: Config, metrics: Arc<Metrics>, fail_points: FailPoints) -> Self {
        Self {
            events: Events::new(client.clone()),
            accounts: accounts::Registry::new(client.clone(), config.account_settings(), metrics.clone()),
            claims: Claims::new(client.clone()),
            principals: Principals::new(client.clone(), Claims::new(client.clone())),
            assignments: Arc::new(assignments::Cache::new(config.resync_interval)),
            marks: Marks::default(),
            backoff: Backoff::default(),
            workers: Workers::new(config.concurrency),
            client,
            config,
            metrics,
            fail_points,
        }
    }

    /// Stops this reconcile here if a test armed `name`.
    pub fn fail_point(&self, name: &'static str) -> Result<(), Error> {
        if self.fail_points.fire(name) { Err(Error::FailPoint(name)) } else { Ok(()) }
    }

    /// Publishes an event (see [`Events::publish`]).
    pub async fn event<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        type_: EventType,
        reason: &str,
        action: &str,
        note: &str,
    ) {
        self.events.publish(obj, type_, reason, action, note).await;
    }
}
