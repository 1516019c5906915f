//! One authenticated client (and API budget) per DatabricksAccount, shared by every object that uses it, and what
//! each namespace may do with it.

use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::{
    Api, Client, ResourceExt,
    runtime::reflector::{ObjectRef, Store},
};
use tokio::sync::Mutex;

use crate::{
    controllers::rules::{
        error::Error,
        reason::Reason,
        tenancy::{self, Grants},
    },
    crd::DatabricksAccount,
    databricks::{AccountClient, Budget, ClientOptions, Credentials, Limits},
    metrics::Metrics,
};

/// How long a client is used without re-reading its credentials Secret (a spec change is seen at once).
const CREDENTIALS_RECHECK: Duration = Duration::from_secs(5);

/// What one namespace gets from an account: its client (and budget), and what the namespace may do with it.
pub struct Access {
    pub account: DatabricksAccount,
    pub client: AccountClient,
    pub grants: Grants,
}

/// Where the registry may read account credentials from, and how it builds clients.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The only namespace account credentials Secrets (`auth.oauthM2M.secretRef`) are read from.
    pub credentials_namespace: String,
    /// The only directory workload identity token files (`auth.workloadIdentity.tokenPath`) are read from.
    pub token_dir: PathBuf,
    /// Client tuning (the budget is replaced per account).
    pub client_options: ClientOptions,
    /// Objects of one kind reconciled at once (the default budget's concurrency follows it).
    pub concurrency: u16,
}

/// Clients by account name, rebuilt when the account's spec or credentials change; budgets by Databricks
/// account, shared by every object that names it.
pub struct Registry {
    kube: Client,
    settings: Settings,
    metrics: Arc<Metrics>,
    /// One slot per account object, locked while its credentials are read (so a slow older read never replaces
    /// a newer client), and only that account's callers wait for it.
    clients: std::sync::Mutex<HashMap<String, Arc<Mutex<Option<Entry>>>>>,
    /// One budget per Databricks account id: two DatabricksAccounts for one account share its rate limits.
    budgets: std::sync::Mutex<HashMap<String, (Limits, Budget)>>,
    /// The account controller's store, read instead of the apiserver on every pass.
    store: std::sync::Mutex<Option<Store<DatabricksAccount>>>,
    /// The newest generation of each account any watch has seen: a store that lags it (a grant just revoked)
    /// is not trusted.
    newest: std::sync::Mutex<HashMap<String, i64>>,
}

struct Entry {
    spec: String,
    fingerprint: String,
    checked: Instant,
    /// The budget the client was built with (a changed shared budget rebuilds it).
    budget: Budget,
    client: AccountClient,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Registry")
    }
}

impl Registry {
    pub fn new(kube: Client, settings: Settings, metrics: Arc<Metrics>) -> Self {
        Self {
            kube,
            settings,
            metrics,
            clients: std::sync::Mutex::default(),
            budgets: std::sync::Mutex::default(),
            store: std::sync::Mutex::default(),
            newest: std::sync::Mutex::default(),
        }
    }

    /// Reads accounts from `store` from now on (the running account controller's).
    pub fn use_store(&self, store: Store<DatabricksAccount>) {
        if let Ok(mut current) = self.store.lock() {
            *current = Some(store);
        }
    }

    /// The name of a DatabricksAccount for the Databricks account `account_id`, if one exists.
    pub fn name_of(&self, account_id: &str) -> Option<String> {
        let accounts = self.store.lock().ok().and_then(|s| s.as_ref().map(Store::state)).unwrap_or_default();
        let mut names: Vec<String> = accounts
            .iter()
            .filter(|a| a.spec.account_id.eq_ignore_ascii_case(account_id))
            .map(|a| a.name_any())
            .collect();
        names.sort();
        names.into_iter().next()
    }

    /// Notes that a watch saw `account` (see `newest`).
    pub fn saw(&self, account: &DatabricksAccount) {
        if let (Ok(mut newest), Some(generation)) = (self.newest.lock(), account.metadata.generation) {
            let entry = newest.entry(account.name_any()).or_insert(generation);
            *entry = (*entry).max(generation);
        }
    }

    async fn account(&self, name: &str) -> Result<DatabricksAccount, Error> {
        let cached = self.store.lock().ok().and_then(|s| s.as_ref()?.get(&ObjectRef::new(name)));
        let newest = self.newest.lock().ok().and_then(|n| n.get(name).copied());
        if let Some(account) = cached
            && newest.is_none_or(|n| account.metadata.generation.is_some_and(|g| g >= n))
        {
            return Ok(account.as_ref().clone());
        }
        // Not in the store (yet): ask the apiserver, so a missing account is reported correctly.
        Api::<DatabricksAccount>::all(self.kube.clone())
            .get_opt(name)
            .await
            .map_err(|e| Error::kube(format!("reading DatabricksAccount {name}"), e))?
            .ok_or_else(|| Error::Account {
                reason: Reason::AccountNotFound,
                message: format!(
                    "DatabricksAccount {name} does not exist; create it or fix spec.accountRef.name"
                ),
            })
    }

    /// The client of `account` and what `namespace` may do with it; fails when the namespace may not use it.
    pub async fn client_for(&self, name: &str, namespace: &str) -> Result<Access, Error> {
        let account = self.account(name).await?;
        let labels = match tenancy::needs_labels(&account.spec) {
            true => namespace_labels(&self.kube, namespace).await?,
            false => BTreeMap::new(),
        };
        // Refused before any credentials are read.
        check_namespace(&account, namespace, &labels)?;
        let (account, client) = self.client(account, CREDENTIALS_RECHECK).await?;
        let grants = Grants::for_namespace(&account.name_any(), &account.spec, namespace, &labels);
        // Its requests take this namespace's turns in the account's budget.
        let client = client.for_namespace(namespace);
        Ok(Access { account, client, grants })
    }

    /// The client of `account` for removing what `namespace` was granted, whether or not the account still allows
    /// the namespace (revocation: the operator acts, never the namespace). Its grants are none.
    pub async fn revoking(&self, name: &str, namespace: &str) -> Result<Access, Error> {
        let account = self.account(name).await?;
        let (account, client) = self.client(account, CREDENTIALS_RECHECK).await?;
        let grants = Grants::none(&account.name_any(), namespace);
        Ok(Access { account, client: client.for_namespace(namespace), grants })
    }

    /// The client of `account` after reading its credentials again (the account controller, proving access).
    pub async fn checked_client(&self, name: &str) -> Result<(DatabricksAccount, AccountClient), Error> {
        let account = self.account(name).await?;
        self.client(account, Duration::ZERO).await
    }

    async fn client(
        &self,
        account: DatabricksAccount,
        max_age: Duration,
    ) -> Result<(DatabricksAccount, AccountClient), Error> {
        let name = account.name_any();
        let spec = serde_json::to_string(&account.spec).unwrap_or_default();
        let budget = self.budget(&account);
        let slot = match self.clients.lock() {
            Ok(mut clients) => clients.entry(name.clone()).or_default().clone(),
            Err(_) => Arc::default(),
        };
        let mut entry = slot.lock().await;
        if let Some(current) = entry.as_ref()
            && current.spec == spec
            && current.budget.same(&budget)
            && current.checked.elapsed() < max_age
        {
            return Ok((account, current.client.clone()));
        }
        let (credentials, fingerprint) = credentials(&self.kube, &self.settings, &account).await?;
        if let Some(current) = entry.as_mut()
            && current.fingerprint == fingerprint
            && current.budget.same(&budget)
        {
            current.spec = spec;
            current.checked = Instant::now();
            return Ok((account, current.client.clone()));
        }
        let options = ClientOptions {
            budget: budget.clone(),
            observer: Some(self.metrics.databricks_observer()),
            ..self.settings.client_options.clone()
        };
        let client = AccountClient::new(
            &account.spec.effective_host(),
            &account.spec.account_id,
            credentials,
            options,
        )
        .map_err(|e| Error::Account { reason: Reason::InvalidAccount, message: e.to_string() })?;
        *entry = Some(Entry { spec, fingerprint, checked: Instant::now(), budget, client: client.clone() });
        Ok((account, client))
    }

    /// The budget of `account`'s Databricks account: shared with every other DatabricksAccount for the same account
    /// id, with the tightest of their rate limits.
    fn budget(&self, account: &DatabricksAccount) -> Budget {
        let key = account.spec.account_id.to_lowercase();
        let concurrency = self.settings.concurrency;
        let mut limits = account.spec.rate_limit.limits(concurrency);
        let others = self.store.lock().ok().and_then(|s| s.as_ref().map(Store::state)).unwrap_or_default();
        for other in others
            .iter()
            .filter(|o| o.spec.account_id.eq_ignore_ascii_case(&key) && o.name_any() != account.name_any())
        {
            limits = limits.tightest(&other.spec.rate_limit.limits(concurrency));
        }
        let Ok(mut budgets) = self.budgets.lock() else {
            return Budget::new(limits);
        };
        match budgets.get(&key) {
            Some((current, budget)) if *current == limits => budget.clone(),
            _ => {
                let budget = Budget::with_observer(limits.clone(), Some(self.metrics.budget_observer(&key)));
                budgets.insert(key, (limits, budget.clone()));
                budget
            }
        }
    }
}

/// The credentials of an account, and a fingerprint that changes when they (or the spec) change.
async fn credentials(
    kube: &Client,
    settings: &Settings,
    account: &DatabricksAccount,
) -> Result<(Credentials, String), Error> {
    let spec_fingerprint = serde_json::to_string(&account.spec).unwrap_or_default();
    if let Some(m2m) = &account.spec.auth.oauth_m2m {
        let reference = &m2m.secret_ref;
        if reference.namespace != settings.credentials_namespace {
            return Err(Error::Account {
                reason: Reason::CredentialsNamespaceNotAllowed,
                message: format!(
                    "auth.oauthM2M.secretRef names a Secret in namespace {}; the operator reads account credentials \
                     only from namespace {} (its --credentials-namespace). Move the Secret there",
                    reference.namespace, settings.credentials_namespace
                ),
            });
        }
        let secrets: Api<Secret> = Api::namespaced(kube.clone(), &reference.namespace);
        let secret = secrets
            .get_opt(&reference.name)
            .await
            .map_err(|e| {
                Error::kube(format!("reading Secret {}/{}", reference.namespace, reference.name), e)
            })?
            .ok_or_else(|| Error::Account {
                reason: Reason::CredentialsSecretNotFound,
                message: format!(
                    "Secret {}/{} with the account credentials does not exist",
                    reference.namespace, reference.name
                ),
            })?;
        let data = secret.data.unwrap_or_default();
        let value = |key: &str| {
            data.get(key)
                .map(|v| String::from_utf8_lossy(&v.0).trim().to_owned())
                .filter(|v| !v.is_empty())
                .ok_or_else(|| Error::Account {
                    reason: Reason::CredentialsSecretInvalid,
                    message: format!("Secret {}/{} has no key {key}", reference.namespace, reference.name),
                })
        };
        let credentials = Credentials::ClientCredentials {
            client_id: value(&m2m.client_id_key)?,
            client_secret: value(&m2m.client_secret_key)?,
        };
        let version = secret.metadata.resource_version.unwrap_or_default();
        return Ok((credentials, format!("{spec_fingerprint}/{version}")));
    }
    match &account.spec.auth.workload_identity {
        Some(wi) if !token_path_allowed(&wi.token_path, &settings.token_dir) => Err(Error::Account {
            reason: Reason::TokenPathNotAllowed,
            message: format!(
                "auth.workloadIdentity.tokenPath {} is outside {}, the only directory the operator sends tokens \
                 from (its --token-dir). Mount the projected token there",
                wi.token_path,
                settings.token_dir.display()
            ),
        }),
        Some(wi) => Ok((
            Credentials::TokenExchange {
                token_path: PathBuf::from(&wi.token_path),
                client_id: wi.client_id.clone(),
            },
            spec_fingerprint,
        )),
        None => Err(Error::Account {
            reason: Reason::InvalidAccount,
            message: "spec.auth sets no method".to_owned(),
        }),
    }
}

/// `allowedNamespaces`: listed names, or namespaces whose labels match the selector.
fn check_namespace(
    account: &DatabricksAccount,
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> Result<(), Error> {
    match &account.spec.allowed_namespaces {
        Some(allowed) if !tenancy::namespace_in(allowed, namespace, labels) => Err(Error::Account {
            reason: Reason::NamespaceNotAllowed,
            message: format!(
                "DatabricksAccount {} does not allow namespace {namespace} (spec.allowedNamespaces)",
                account.name_any()
            ),
        }),
        _ => Ok(()),
    }
}

async fn namespace_labels(kube: &Client, namespace: &str) -> Result<BTreeMap<String, String>, Error> {
    let ns = Api::<Namespace>::all(kube.clone())
        .get(namespace)
        .await
        .map_err(|e| Error::kube(format!("reading Namespace {namespace}"), e))?;
    Ok(ns.metadata.labels.unwrap_or_default())
}

/// Whether `path` lies inside `dir`, lexically (no `..`, no relative path).
fn token_path_allowed(path: &str, dir: &std::path::Path) -> bool {
    use std::path::Component;
    let path = std::path::Path::new(path);
    path.is_absolute()
        && path.components().all(|c| !matches!(c, Component::ParentDir | Component::CurDir))
        && path.starts_with(dir)
        && path != dir
}
