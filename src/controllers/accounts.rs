//! DatabricksAccount: one authenticated client (and API budget) per account, shared by every object that uses it,
//! and the account's own controller, which proves access and reports who the operator is.

use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{
        controller::Action,
        reflector::{ObjectRef, Store},
    },
};
use tokio::sync::Mutex;

use super::{
    Context, Error, conditions,
    tenancy::{self, Grants},
};
use crate::{
    crd::{DatabricksAccount, DatabricksAccountStatus},
    databricks::{AccountClient, Budget, ClientOptions, Credentials},
};

/// How long a client is used without re-reading its credentials Secret (a spec change is seen at once).
const CREDENTIALS_RECHECK: Duration = Duration::from_secs(5);

/// What one namespace gets from an account: its client (and budget), and what the namespace may do with it.
pub struct Access {
    pub account: DatabricksAccount,
    pub client: AccountClient,
    pub grants: Grants,
}

/// Clients by account name, rebuilt when the account's spec or credentials change.
#[derive(Default)]
pub struct Registry {
    clients: Mutex<HashMap<String, Entry>>,
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
    client: AccountClient,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Registry")
    }
}

impl Registry {
    /// Reads accounts from `store` from now on (the running account controller's).
    pub fn use_store(&self, store: Store<DatabricksAccount>) {
        if let Ok(mut current) = self.store.lock() {
            *current = Some(store);
        }
    }

    /// Notes that a watch saw `account` (see `newest`).
    pub fn saw(&self, account: &DatabricksAccount) {
        if let (Ok(mut newest), Some(generation)) = (self.newest.lock(), account.metadata.generation) {
            let entry = newest.entry(account.name_any()).or_insert(generation);
            *entry = (*entry).max(generation);
        }
    }

    async fn account(&self, ctx: &Context, name: &str) -> Result<DatabricksAccount, Error> {
        let cached = self.store.lock().ok().and_then(|s| s.as_ref()?.get(&ObjectRef::new(name)));
        let newest = self.newest.lock().ok().and_then(|n| n.get(name).copied());
        if let Some(account) = cached
            && newest.is_none_or(|n| account.metadata.generation.is_some_and(|g| g >= n))
        {
            return Ok(account.as_ref().clone());
        }
        // Not in the store (yet): ask the apiserver, so a missing account is reported correctly.
        Api::<DatabricksAccount>::all(ctx.client.clone())
            .get_opt(name)
            .await
            .map_err(|e| Error::kube(format!("reading DatabricksAccount {name}"), e))?
            .ok_or_else(|| Error::Account {
                reason: "AccountNotFound",
                message: format!(
                    "DatabricksAccount {name} does not exist; create it or fix spec.accountRef.name"
                ),
            })
    }

    /// The client of `account` and what `namespace` may do with it; fails when the namespace may not use it.
    pub async fn client_for(&self, ctx: &Context, name: &str, namespace: &str) -> Result<Access, Error> {
        let account = self.account(ctx, name).await?;
        let labels = match tenancy::needs_labels(&account.spec) {
            true => namespace_labels(ctx, namespace).await?,
            false => BTreeMap::new(),
        };
        // Refused before any credentials are read.
        check_namespace(&account, namespace, &labels)?;
        let (account, client) = self.client(ctx, account, CREDENTIALS_RECHECK).await?;
        let grants = Grants::for_namespace(&account.name_any(), &account.spec, namespace, &labels);
        // Its requests take this namespace's turns in the account's budget.
        let client = client.for_namespace(namespace);
        Ok(Access { account, client, grants })
    }

    /// The client of `account` after reading its credentials again (the account controller, proving access).
    async fn checked_client(
        &self,
        ctx: &Context,
        name: &str,
    ) -> Result<(DatabricksAccount, AccountClient), Error> {
        let account = self.account(ctx, name).await?;
        self.client(ctx, account, Duration::ZERO).await
    }

    async fn client(
        &self,
        ctx: &Context,
        account: DatabricksAccount,
        max_age: Duration,
    ) -> Result<(DatabricksAccount, AccountClient), Error> {
        let name = account.name_any();
        let name = name.as_str();
        let spec = serde_json::to_string(&account.spec).unwrap_or_default();
        // Held while the credentials are read, so a slow older read never replaces a newer client.
        let mut clients = self.clients.lock().await;
        if let Some(entry) = clients.get(name)
            && entry.spec == spec
            && entry.checked.elapsed() < max_age
        {
            return Ok((account, entry.client.clone()));
        }
        let (credentials, fingerprint) = credentials(ctx, &account).await?;
        if let Some(entry) = clients.get_mut(name)
            && entry.fingerprint == fingerprint
        {
            entry.spec = spec;
            entry.checked = Instant::now();
            return Ok((account, entry.client.clone()));
        }
        let limits = account.spec.rate_limit.limits(ctx.config.concurrency);
        let options = ClientOptions {
            budget: Budget::with_observer(limits, Some(ctx.metrics.budget_observer(name))),
            observer: Some(ctx.metrics.databricks_observer()),
            ..ctx.config.client_options.clone()
        };
        let client = AccountClient::new(
            &account.spec.effective_host(),
            &account.spec.account_id,
            credentials,
            options,
        )
        .map_err(|e| Error::Account { reason: "InvalidAccount", message: e.to_string() })?;
        clients.insert(
            name.to_owned(),
            Entry { spec, fingerprint, checked: Instant::now(), client: client.clone() },
        );
        Ok((account, client))
    }
}

/// The credentials of an account, and a fingerprint that changes when they (or the spec) change.
async fn credentials(ctx: &Context, account: &DatabricksAccount) -> Result<(Credentials, String), Error> {
    let spec_fingerprint = serde_json::to_string(&account.spec).unwrap_or_default();
    if let Some(m2m) = &account.spec.auth.oauth_m2m {
        let reference = &m2m.secret_ref;
        if reference.namespace != ctx.config.credentials_namespace {
            return Err(Error::Account {
                reason: "CredentialsNamespaceNotAllowed",
                message: format!(
                    "auth.oauthM2M.secretRef names a Secret in namespace {}; the operator reads account credentials \
                     only from namespace {} (its --credentials-namespace). Move the Secret there",
                    reference.namespace, ctx.config.credentials_namespace
                ),
            });
        }
        let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &reference.namespace);
        let secret = secrets
            .get_opt(&reference.name)
            .await
            .map_err(|e| {
                Error::kube(format!("reading Secret {}/{}", reference.namespace, reference.name), e)
            })?
            .ok_or_else(|| Error::Account {
                reason: "CredentialsSecretNotFound",
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
                    reason: "CredentialsSecretInvalid",
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
        Some(wi) if !token_path_allowed(&wi.token_path, &ctx.config.token_dir) => Err(Error::Account {
            reason: "TokenPathNotAllowed",
            message: format!(
                "auth.workloadIdentity.tokenPath {} is outside {}, the only directory the operator sends tokens \
                 from (its --token-dir). Mount the projected token there",
                wi.token_path,
                ctx.config.token_dir.display()
            ),
        }),
        Some(wi) => Ok((
            Credentials::TokenExchange {
                token_path: PathBuf::from(&wi.token_path),
                client_id: wi.client_id.clone(),
            },
            spec_fingerprint,
        )),
        None => {
            Err(Error::Account { reason: "InvalidAccount", message: "spec.auth sets no method".to_owned() })
        }
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
            reason: "NamespaceNotAllowed",
            message: format!(
                "DatabricksAccount {} does not allow namespace {namespace} (spec.allowedNamespaces)",
                account.name_any()
            ),
        }),
        _ => Ok(()),
    }
}

async fn namespace_labels(ctx: &Context, namespace: &str) -> Result<BTreeMap<String, String>, Error> {
    let ns = Api::<Namespace>::all(ctx.client.clone())
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

/// Label selector semantics (matchLabels and matchExpressions: In, NotIn, Exists, DoesNotExist).
pub fn selector_matches(
    selector: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
    labels: &std::collections::BTreeMap<String, String>,
) -> bool {
    let labels_ok = selector.match_labels.iter().flatten().all(|(k, v)| labels.get(k) == Some(v));
    let expressions_ok = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.clone().unwrap_or_default();
        match e.operator.as_str() {
            "In" => labels.get(&e.key).is_some_and(|v| values.contains(v)),
            "NotIn" => labels.get(&e.key).is_none_or(|v| !values.contains(v)),
            "Exists" => labels.contains_key(&e.key),
            "DoesNotExist" => !labels.contains_key(&e.key),
            _ => false,
        }
    });
    labels_ok && expressions_ok
}

/// Proves access: a token, then an authenticated read; `Ready` says who the operator is or what is wrong.
pub async fn reconcile(account: Arc<DatabricksAccount>, ctx: Arc<Context>) -> Result<Action, Error> {
    let name = account.name_any();
    let generation = account.metadata.generation;
    let mut status = account.status.clone().unwrap_or_default();
    let uid = account.uid().unwrap_or_default();
    let client = ctx.accounts.checked_client(&ctx, &name).await;
    // Proven with this spec and these credentials (same client) since the last resync: nothing to call.
    let fingerprint =
        client.as_ref().ok().map(|(_, c)| super::lifecycle::Fingerprint::with(generation, c.instance_id()));
    if let Some(remaining) = fingerprint.and_then(|f| ctx.marks.fresh(&uid, f)) {
        return Ok(Action::requeue(remaining));
    }
    ctx.marks.forget(&uid);
    let outcome = match client {
        Err(err) => Err(err),
        Ok((_, client)) => verify(&client).await.map(|who| (who, client)),
    };
    let action = match &outcome {
        Ok((who, client)) => {
            let message = format!(
                "Authenticated to account {} at {} as {who}; {}",
                client.account_id(),
                client.host(),
                tenancy_summary(&account.spec)
            );
            conditions::set(
                &mut status.conditions,
                conditions::READY,
                true,
                "Authenticated",
                &message,
                generation,
            );
            Action::requeue(ctx.config.resync_interval)
        }
        Err(err) => {
            conditions::set(
                &mut status.conditions,
                conditions::READY,
                false,
                err.reason(),
                &err.to_string(),
                generation,
            );
            Action::requeue(if err.is_transient() {
                Duration::from_secs(15)
            } else {
                Duration::from_secs(120)
            })
        }
    };
    status.observed_generation = generation;
    // Only the fields this controller owns: the ownership records beside them are the ledger's (see ledger.rs).
    let current = account.status.clone().unwrap_or_default();
    if (&current.conditions, current.observed_generation) != (&status.conditions, status.observed_generation)
    {
        let own = DatabricksAccountStatus {
            conditions: status.conditions,
            observed_generation: status.observed_generation,
            ..DatabricksAccountStatus::default()
        };
        let patch = serde_json::json!({"apiVersion": DatabricksAccount::api_version(&()), "kind": "DatabricksAccount", "status": own});
        Api::<DatabricksAccount>::all(ctx.client.clone())
            .patch_status(&name, &PatchParams::apply(super::MANAGER).force(), &Patch::Apply(&patch))
            .await
            .map_err(|e| Error::kube(format!("writing the status of DatabricksAccount {name}"), e))?;
    }
    if let (Ok(_), Some(fingerprint)) = (&outcome, fingerprint) {
        ctx.marks.record(&uid, fingerprint, ctx.config.resync_interval);
    }
    Ok(action)
}

/// What the account delegates, in one sentence of its Ready message.
fn tenancy_summary(spec: &crate::crd::DatabricksAccountSpec) -> String {
    let who = if spec.allowed_namespaces.is_some() { "every allowed namespace" } else { "every namespace" };
    if spec.single_tenant {
        format!(
            "single tenant: {who} may assign any workspace (ADMIN too), adopt principals, and create app \
             connections and trust policies"
        )
    } else if spec.delegations.is_empty() {
        format!(
            "no delegations: {who} may create service principals with secrets only (no workspace assignments, \
             adoption, app connections or trust policies)"
        )
    } else {
        format!(
            "{} delegation rule(s) decide what namespaces may do beyond service principals with secrets",
            spec.delegations.len()
        )
    }
}

async fn verify(client: &AccountClient) -> Result<String, Error> {
    client
        .authenticate()
        .await
        .map_err(|e| Error::Account { reason: reason_for(&e), message: explain(&e, client) })?;
    let identity = client.identity();
    let read = match client.application_id() {
        Some(app_id) => client.find_service_principal_by_application_id(&app_id).await.map(|sp| match sp {
            Some(sp) => {
                format!("service principal {} ({app_id}) via {}", sp.display_name, client.auth_method())
            }
            None => identity.clone(),
        }),
        None => client.list_custom_apps().await.map(|_| identity.clone()),
    };
    read.map_err(|e| Error::Account { reason: reason_for(&e), message: explain(&e, client) })
}

fn reason_for(err: &crate::databricks::Error) -> &'static str {
    if matches!(err, crate::databricks::Error::TokenFile { .. }) {
        "TokenFileUnreadable"
    } else if err.is_unauthenticated() {
        "AuthenticationFailed"
    } else if err.status() == Some(403) {
        "NotAccountAdmin"
    } else if err.is_retryable() {
        "AccountUnreachable"
    } else {
        "AccountRequestRejected"
    }
}

fn explain(err: &crate::databricks::Error, client: &AccountClient) -> String {
    let who = client.identity();
    if matches!(err, crate::databricks::Error::TokenFile { .. }) {
        format!("{who}: {err}. Mount a projected ServiceAccount token there (see the README).")
    } else if err.is_unauthenticated() {
        format!(
            "{who} could not authenticate: {err}. Check the client id and secret (or the federation policy)."
        )
    } else if err.status() == Some(403) {
        format!("{who} authenticated but is not an account admin: {err}. Grant it the account admin role.")
    } else {
        format!("{who}: {err}")
    }
}
