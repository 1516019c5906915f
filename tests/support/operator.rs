//! An operator running in-process against the test control plane, talking to an in-process emulator.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use databricks_emulator::{Emulator, EmulatorConfig};
use databricks_oauth_operator::{
    controllers::{self, Context, FailPoints},
    crd::{DatabricksAccount, ServicePrincipal},
    databricks::{AccountClient, Budget, ClientOptions, Credentials, Limits},
    metrics::Metrics,
};
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};

use super::{TestEnv, wait_for};

pub const ACCOUNT_ID: &str = "0d3c8a0e-6f1b-4c2a-9a57-3f2b1e4d5c6a";
pub const ADMIN_ID: &str = "5e2b7c1d-9a3f-4e8b-b6c2-1f0a9d8e7c6b";
pub const ADMIN_SECRET: &str = "admin-secret-value";
pub const WORKSPACES: [i64; 3] = [1001, 1002, 1003];

pub struct Operator {
    pub emulator: Emulator,
    pub ctx: Arc<Context>,
    pub account: String,
    /// The account credentials Secret: (namespace, name).
    pub credentials: (String, String),
    /// A client of the emulator acting as the account admin, for assertions.
    pub admin: AccountClient,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub struct OperatorOptions {
    pub resync: Duration,
    pub grace: Duration,
    pub allowed_namespaces: Option<Value>,
    /// Replaces the account's `spec.auth` (default: OAuth M2M with the emulator's admin secret).
    pub auth: Option<Value>,
    /// Set up the emulator before the account is created (for example a federation policy).
    pub emulator: Option<Emulator>,
    /// Fields merged into the account's spec to say what namespaces may do (default: `singleTenant: true`, the
    /// test's own namespace being the platform team's).
    pub tenancy: Value,
    /// Watch only the test's namespace (default); `false` watches every namespace (tests with their own control
    /// plane).
    pub own_namespace_only: bool,
    /// Where the account credentials Secret lives (default: [`CREDENTIALS_NAMESPACE`]).
    pub credentials_namespace: Option<String>,
    /// The account's `spec.rateLimit` (default: far above what tests send, so they are not paced).
    pub rate_limit: Value,
    /// The operator's `--annotation-debounce` (default 1 s).
    pub annotation_debounce: Duration,
    /// The operator's `--rotate-min-interval` (default 0: every new rotate value mints).
    pub rotate_min_interval: Duration,
    /// The operator's `--repair-min-interval` (default 0: every lost Secret is repaired at once).
    pub repair_min_interval: Duration,
    /// The operator's `--search-lag` (default 30 s, as the binary's).
    pub search_lag: Duration,
}

/// A `spec.rateLimit` with the same bucket for every class.
pub fn uniform_rate_limit(rate: u32, burst: u32, max_concurrency: u32) -> Value {
    let class = json!({"requestsPerSecond": rate, "burst": burst});
    json!({"reads": class, "writes": class, "patches": class, "maxConcurrency": max_concurrency})
}

impl Default for OperatorOptions {
    fn default() -> Self {
        Self {
            resync: Duration::from_secs(600),
            grace: Duration::from_secs(2),
            allowed_namespaces: None,
            auth: None,
            emulator: None,
            tenancy: json!({"singleTenant": true}),
            own_namespace_only: true,
            credentials_namespace: None,
            rate_limit: uniform_rate_limit(200, 200, 16),
            annotation_debounce: Duration::from_secs(1),
            rotate_min_interval: Duration::ZERO,
            repair_min_interval: Duration::ZERO,
            search_lag: Duration::from_secs(30),
        }
    }
}

/// Where the account credentials Secrets of tests live (the operators' `--credentials-namespace`). One for all:
/// every in-process operator on the shared control plane reconciles every DatabricksAccount (they are
/// cluster-scoped), so all must agree on where credentials may be read.
pub const CREDENTIALS_NAMESPACE: &str = "doo-credentials";

/// Where tests put workload identity token files (the operator's `--token-dir` in tests).
pub fn token_dir() -> std::path::PathBuf {
    std::env::temp_dir()
}

/// A client of `emulator` acting as the account admin (for setting up and asserting).
pub fn admin_client(emulator: &Emulator) -> AccountClient {
    let credentials =
        Credentials::ClientCredentials { client_id: ADMIN_ID.into(), client_secret: ADMIN_SECRET.into() };
    let options =
        ClientOptions { budget: Budget::new(Limits::uniform(1000.0, 1000, 8)), ..ClientOptions::default() };
    AccountClient::new(&emulator.url(), ACCOUNT_ID, credentials, options).expect("client")
}

/// An emulator with the standard account, admin and workspaces.
pub async fn emulator() -> Emulator {
    let mut config = EmulatorConfig::new(ACCOUNT_ID, ADMIN_ID, ADMIN_SECRET);
    config.workspaces = WORKSPACES.to_vec();
    Emulator::start(config, SocketAddr::from(([127, 0, 0, 1], 0))).await.expect("emulator")
}

impl TestEnv {
    /// An emulator, a DatabricksAccount pointing at it, and the operator watching this test's namespace.
    pub async fn operator(&self, mut options: OperatorOptions) -> Operator {
        let emulator = match options.emulator.take() {
            Some(emulator) => emulator,
            None => emulator().await,
        };
        let credentials_namespace =
            options.credentials_namespace.clone().unwrap_or_else(|| CREDENTIALS_NAMESPACE.to_owned());
        let namespace: k8s_openapi::api::core::v1::Namespace =
            serde_json::from_value(json!({"metadata": {"name": credentials_namespace}})).expect("namespace");
        let _ = Api::<k8s_openapi::api::core::v1::Namespace>::all(self.client.clone())
            .create(&PostParams::default(), &namespace)
            .await; // exists already for every test but the first
        let secret_name = format!("admin-{}", self.namespace);
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &credentials_namespace);
        let admin_secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": secret_name},
            "stringData": {"DATABRICKS_CLIENT_ID": ADMIN_ID, "DATABRICKS_CLIENT_SECRET": ADMIN_SECRET},
        }))
        .expect("secret");
        secrets.create(&PostParams::default(), &admin_secret).await.expect("admin secret");
        let account = format!("{}-account", self.namespace);
        let mut spec = json!({
            "accountId": ACCOUNT_ID,
            "host": emulator.url(),
            "auth": {"oauthM2M": {"secretRef": {"namespace": credentials_namespace, "name": secret_name}}},
            "rateLimit": options.rate_limit,
        });
        if let Some(allowed) = options.allowed_namespaces {
            spec["allowedNamespaces"] = allowed;
        }
        if let Some(auth) = options.auth {
            spec["auth"] = auth;
        }
        for (key, value) in options.tenancy.as_object().into_iter().flatten() {
            spec[key] = value.clone();
        }
        let object: DatabricksAccount =
            serde_json::from_value(json!({"metadata": {"name": account}, "spec": spec})).expect("account");
        Api::<DatabricksAccount>::all(self.client.clone())
            .create(&PostParams::default(), &object)
            .await
            .expect("account");
        let config = controllers::Config {
            resync_interval: options.resync,
            rotation_grace: options.grace,
            namespace: options.own_namespace_only.then(|| self.namespace.clone()),
            credentials_namespace: credentials_namespace.clone(),
            token_dir: token_dir(),
            annotation_debounce: options.annotation_debounce,
            rotate_min_interval: options.rotate_min_interval,
            repair_min_interval: options.repair_min_interval,
            search_lag: options.search_lag,
            ..controllers::Config::default()
        };
        let ctx = Arc::new(Context::new(
            self.client.clone(),
            config,
            Arc::new(Metrics::default()),
            FailPoints::default(),
        ));
        let task = tokio::spawn(controllers::run(ctx.clone()));
        let admin = admin_client(&emulator);
        Operator { emulator, ctx, account, credentials: (credentials_namespace, secret_name), admin, task }
    }

    pub fn principals(&self) -> Api<ServicePrincipal> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    pub fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Creates a ServicePrincipal from a spec, pointing at the operator's account.
    pub async fn create_principal(
        &self,
        operator: &Operator,
        name: &str,
        mut spec: Value,
    ) -> ServicePrincipal {
        spec["accountRef"] = json!({"name": operator.account});
        let object: ServicePrincipal =
            serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).expect("sp");
        self.principals().create(&PostParams::default(), &object).await.expect("create sp")
    }

    pub async fn patch_principal(&self, name: &str, patch: Value) {
        self.principals()
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("patch sp");
    }

    pub async fn delete_principal(&self, name: &str) {
        self.principals().delete(name, &DeleteParams::default()).await.expect("delete sp");
    }

    /// Waits until the condition `type_` of `name` has `status` (and returns the object).
    pub async fn wait_condition(
        &self,
        name: &str,
        type_: &str,
        status: &str,
        timeout: Duration,
    ) -> ServicePrincipal {
        let api = self.principals();
        let result = wait_for(timeout, || {
            let api = api.clone();
            async move {
                let sp = api.get(name).await.ok()?;
                let ok =
                    sp.status.as_ref()?.conditions.iter().any(|c| c.type_ == type_ && c.status == status);
                ok.then_some(sp)
            }
        })
        .await;
        match result {
            Ok(sp) => sp,
            Err(_) => {
                let sp = api.get(name).await.ok();
                panic!(
                    "{name}: {type_} did not become {status} in {timeout:?}; status: {}",
                    serde_json::to_string_pretty(&sp.and_then(|s| s.status)).unwrap_or_default()
                )
            }
        }
    }

    /// Waits until the object is gone (its finalizer ran).
    pub async fn wait_gone(&self, name: &str, timeout: Duration) {
        let api = self.principals();
        wait_for(timeout, || {
            let api = api.clone();
            async move { api.get_opt(name).await.ok().and_then(|o| o.is_none().then_some(())) }
        })
        .await
        .unwrap_or_else(|_| panic!("{name} was not deleted within {timeout:?}"));
    }

    /// The data of a Secret as strings.
    pub async fn secret_data(&self, name: &str) -> Option<std::collections::BTreeMap<String, String>> {
        let secret = self.secrets().get_opt(name).await.ok()??;
        Some(secret.data?.into_iter().map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned())).collect())
    }
}

impl Operator {
    /// Stops the in-process controllers (keeping the emulator and the account).
    pub fn stop(&self) {
        self.task.abort();
    }

    /// Waits until the account's Ready condition has `status` (and returns the condition).
    pub async fn wait_account(
        &self,
        env: &TestEnv,
        status: &str,
    ) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
        let accounts: Api<DatabricksAccount> = Api::all(env.client.clone());
        wait_for(Duration::from_secs(60), || {
            let accounts = accounts.clone();
            async move {
                let account = accounts.get(&self.account).await.ok()?;
                account.status?.conditions.into_iter().find(|c| c.type_ == "Ready" && c.status == status)
            }
        })
        .await
        .unwrap_or_else(|_| panic!("account {}: Ready did not become {status}", self.account))
    }

    /// Principals in the emulator tagged with this object's UID.
    pub async fn tagged(&self, sp: &ServicePrincipal) -> usize {
        let uid = sp.uid().unwrap_or_default();
        self.admin.find_service_principals_by_external_id(&uid).await.expect("find").len()
    }

    /// Whether client credentials work against the emulator.
    pub async fn works(&self, client_id: &str, secret: &str) -> bool {
        self.admin.verify_client_credentials(client_id, secret).await.is_ok()
    }
}

/// Name of a ServicePrincipal's metadata as a convenience.
pub fn name_of(meta: &ObjectMeta) -> String {
    meta.name.clone().unwrap_or_default()
}
