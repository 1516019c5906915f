//! The account API client: every operation the operator needs, with timeouts, bounded and jittered retries
//! (429/503 honouring `Retry-After`; transient failures only for idempotent calls), one budget per account, and
//! errors that keep the server's own message.

use std::{
    sync::Arc,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use reqwest::{Method, header};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::{Value, json};

use super::{
    Budget, Class, Credentials, Error, Limits, Permit, TokenProvider,
    response::{api_error, decode, retry_after, transport_error},
    types::{
        AppPage, AssignmentList, CreatedCustomApp, CreatedSecret, CustomApp, CustomAppUpdate,
        FederationPolicy, NewCustomApp, NewServicePrincipal, PatchOperation, PermissionAssignment,
        PolicyPage, ScimList, SecretInfo, SecretPage, ServicePrincipal, TokenResponse, Workspace,
    },
};

/// Called after every HTTP attempt with the operation and the status (0 when no answer arrived): metrics.
#[derive(Clone)]
pub struct Observer(pub Arc<dyn Fn(&'static str, u16) + Send + Sync>);

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Observer")
    }
}

/// Tuning of one account's client.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Timeout of one HTTP request.
    pub request_timeout: Duration,
    /// Attempts per call, the first included.
    pub max_attempts: u32,
    /// Longest single wait between attempts (a longer `Retry-After` is cut to this).
    pub max_retry_wait: Duration,
    /// Give up retrying once this much time has passed since the first attempt.
    pub retry_budget: Duration,
    /// The account's shared API budget.
    pub budget: Budget,
    /// Told about every request (for metrics).
    pub observer: Option<Observer>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(30),
            max_attempts: 5,
            max_retry_wait: Duration::from_secs(30),
            retry_budget: Duration::from_secs(120),
            budget: Budget::new(Limits::DOCUMENTED),
            observer: None,
        }
    }
}

/// A client of one Databricks account. Clones share the connection, tokens and budget; each clone may speak for
/// another namespace ([`AccountClient::for_namespace`]), which is whose turn its requests take in the budget.
#[derive(Clone)]
pub struct AccountClient {
    inner: Arc<Inner>,
    namespace: Arc<str>,
    /// Whether a request of this clone got through the budget: its later requests are never deferred (a pass
    /// is deferred at its first request, before it did anything, or not at all).
    admitted: Arc<AtomicBool>,
}

struct Inner {
    http: reqwest::Client,
    host: String,
    account_id: String,
    tokens: TokenProvider,
    options: ClientOptions,
}

impl std::fmt::Debug for AccountClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountClient")
            .field("host", &self.inner.host)
            .field("account_id", &self.inner.account_id)
            .field("credentials", self.inner.tokens.credentials())
            .finish()
    }
}

/// `http://` is only accepted for loopback hosts; everything else must be `https://`.
pub fn check_host(host: &str) -> Result<String, Error> {
    let host = host.trim_end_matches('/');
    let url = url::Url::parse(host).map_err(|e| Error::Config(format!("host '{host}' is not a URL: {e}")))?;
    match url.scheme() {
        "https" => Ok(host.to_owned()),
        "http" if is_loopback_http_url(host) => Ok(host.to_owned()),
        "http" => Err(Error::Config(format!(
            "host '{host}' uses plain http://; only loopback hosts may (use https://)"
        ))),
        other => Err(Error::Config(format!("host '{host}' has unsupported scheme '{other}'"))),
    }
}

/// Whether `url` is plain `http://` to a loopback host (localhost, 127.0.0.0/8, ::1): the only place plain HTTP
/// is allowed (a local emulator).
pub fn is_loopback_http_url(url: &str) -> bool {
    url::Url::parse(url).ok().is_some_and(|u| {
        u.scheme() == "http"
            && match u.host() {
                Some(url::Host::Domain(d)) => d == "localhost",
                Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                None => false,
            }
    })
}

impl AccountClient {
    pub fn new(
        host: &str,
        account_id: &str,
        credentials: Credentials,
        options: ClientOptions,
    ) -> Result<Self, Error> {
        let host = check_host(host)?;
        let http = reqwest::Client::builder()
            .timeout(options.request_timeout)
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("databricks-oauth-operator/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Config(format!("building the HTTP client: {e}")))?;
        let token_url = format!("{host}/oidc/accounts/{account_id}/v1/token");
        let tokens = TokenProvider::new(http.clone(), token_url, credentials);
        let inner = Arc::new(Inner { http, host, account_id: account_id.to_owned(), tokens, options });
        Ok(Self { inner, namespace: Arc::from(""), admitted: Arc::default() })
    }

    /// The same client, queuing its requests as `namespace`'s (empty: the account's own calls); one per pass,
    /// whose first request may be deferred.
    pub fn for_namespace(&self, namespace: &str) -> Self {
        Self { inner: self.inner.clone(), namespace: Arc::from(namespace), admitted: Arc::default() }
    }

    /// The account's budget (shared by every clone).
    pub fn budget(&self) -> &Budget {
        &self.inner.options.budget
    }

    /// Identifies this client (and its clones): a rebuilt client, for new credentials, has another.
    pub fn instance_id(&self) -> usize {
        Arc::as_ptr(&self.inner) as usize
    }

    pub fn host(&self) -> &str {
        &self.inner.host
    }

    pub fn account_id(&self) -> &str {
        &self.inner.account_id
    }

    /// The account's OIDC token endpoint.
    pub fn token_endpoint(&self) -> String {
        format!("{}/oidc/accounts/{}/v1/token", self.inner.host, self.inner.account_id)
    }

    /// The account's OIDC authorization endpoint (U2M sign-in).
    pub fn authorization_endpoint(&self) -> String {
        format!("{}/oidc/accounts/{}/v1/authorize", self.inner.host, self.inner.account_id)
    }

    /// The application id the client authenticates as, when it is a known service principal.
    pub fn application_id(&self) -> Option<String> {
        match self.inner.tokens.credentials() {
            Credentials::ClientCredentials { client_id, .. } => Some(client_id.clone()),
            Credentials::TokenExchange { client_id, .. } => client_id.clone(),
        }
    }

    /// How the client authenticates ("OAuth M2M" or "workload identity federation").
    pub fn auth_method(&self) -> &'static str {
        self.inner.tokens.credentials().method()
    }

    /// Who the client authenticates as (no secret).
    pub fn identity(&self) -> String {
        self.inner.tokens.credentials().describe()
    }

    /// Obtains an access token now (checks the credentials).
    pub async fn authenticate(&self) -> Result<(), Error> {
        self.inner.tokens.token().await.map(drop)
    }

    /// Proves a service principal's client id and secret work: a client-credentials token from the account.
    pub async fn verify_client_credentials(
        &self,
        client_id: &str,
        client_secret: &str,
    ) -> Result<TokenResponse, Error> {
        self.verify_scoped_credentials(client_id, client_secret, &[]).await
    }

    /// [`Self::verify_client_credentials`] asking for `scopes` (all of a scoped secret's, or `all-apis` when
    /// empty: a scoped secret refuses a request for more than it has).
    pub async fn verify_scoped_credentials(
        &self,
        client_id: &str,
        client_secret: &str,
        scopes: &[String],
    ) -> Result<TokenResponse, Error> {
        // A token request is a request like any other to the account's rate limit (it stores nothing: a read).
        let _permit = self.acquire("oidc.verify", Class::Read).await?;
        let scope = if scopes.is_empty() { "all-apis".to_owned() } else { scopes.join(" ") };
        let endpoint = self.token_endpoint();
        super::auth::client_credentials(&self.inner.http, &endpoint, client_id, client_secret, &scope).await
    }

    /// Exchanges a workload's JWT for a token acting as `client_id` (service-principal federation).
    pub async fn exchange_token(
        &self,
        subject_token: &str,
        client_id: Option<&str>,
    ) -> Result<TokenResponse, Error> {
        super::auth::token_exchange(
            &self.inner.http,
            &self.token_endpoint(),
            subject_token,
            client_id,
            "all-apis",
        )
        .await
    }

    /// An account API URL; `preview/...` paths are under `/api/2.0/preview/accounts/{account}`.
    fn url(&self, path: &str) -> String {
        match path.strip_prefix("preview/") {
            Some(rest) => {
                format!("{}/api/2.0/preview/accounts/{}/{rest}", self.inner.host, self.inner.account_id)
            }
            None => format!("{}/api/2.0/accounts/{}/{path}", self.inner.host, self.inner.account_id),
        }
    }

    // ---- service principals (SCIM) ----

    pub async fn create_service_principal(
        &self,
        sp: &NewServicePrincipal,
    ) -> Result<ServicePrincipal, Error> {
        self.call("scim.sp.create", Method::POST, "scim/v2/ServicePrincipals", &[], Some(sp), false).await
    }

    pub async fn get_service_principal(&self, id: &str) -> Result<ServicePrincipal, Error> {
        let id = segment("service principal id", id)?;
        self.call::<ServicePrincipal, ()>(
            "scim.sp.get",
            Method::GET,
            &format!("scim/v2/ServicePrincipals/{id}"),
            &[],
            None,
            true,
        )
        .await
    }

    /// Every principal matching a SCIM filter (all pages; `None` lists all).
    pub async fn list_service_principals(
        &self,
        filter: Option<&str>,
    ) -> Result<Vec<ServicePrincipal>, Error> {
        const PAGE: usize = 100;
        let mut all: Vec<ServicePrincipal> = Vec::new();
        let mut start = 1;
        loop {
            let mut query = vec![("startIndex", start.to_string()), ("count", PAGE.to_string())];
            if let Some(filter) = filter {
                query.push(("filter", filter.to_owned()));
            }
            let page: ScimList<ServicePrincipal> = self
                .call::<_, ()>("scim.sp.list", Method::GET, "scim/v2/ServicePrincipals", &query, None, true)
                .await?;
            let received = page.resources.len();
            for sp in page.resources {
                if !all.iter().any(|known| known.id == sp.id) {
                    all.push(sp);
                }
            }
            start += received;
            let total = page.total_results.unwrap_or(0).max(0) as usize;
            if received == 0 || start > total {
                return Ok(all);
            }
        }
    }

    /// Principals whose `externalId` is exactly `external_id` (how the operator finds what it created).
    pub async fn find_service_principals_by_external_id(
        &self,
        external_id: &str,
    ) -> Result<Vec<ServicePrincipal>, Error> {
        let found = self
            .list_service_principals(Some(&format!("externalId eq {}", scim_string(external_id))))
            .await?;
        Ok(found.into_iter().filter(|sp| sp.external_id.as_deref() == Some(external_id)).collect())
    }

    /// The principal with this application id, if any.
    pub async fn find_service_principal_by_application_id(
        &self,
        application_id: &str,
    ) -> Result<Option<ServicePrincipal>, Error> {
        let found = self
            .list_service_principals(Some(&format!("applicationId eq {}", scim_string(application_id))))
            .await?;
        Ok(found.into_iter().find(|sp| sp.application_id == application_id))
    }

    pub async fn patch_service_principal(
        &self,
        id: &str,
        operations: &[PatchOperation],
    ) -> Result<(), Error> {
        let id = segment("service principal id", id)?;
        let body =
            json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": operations});
        // Replace operations are idempotent, so a lost answer may be retried.
        self.call_empty(
            "scim.sp.patch",
            Method::PATCH,
            &format!("scim/v2/ServicePrincipals/{id}"),
            &[],
            Some(&body),
            true,
        )
        .await
    }

    /// Deletes a principal; `Ok(false)` when it was already gone.
    pub async fn delete_service_principal(&self, id: &str) -> Result<bool, Error> {
        let id = segment("service principal id", id)?;
        gone_is_ok(
            self.call_empty::<()>(
                "scim.sp.delete",
                Method::DELETE,
                &format!("scim/v2/ServicePrincipals/{id}"),
                &[],
                None,
                true,
            )
            .await,
        )
    }

    // ---- service principal secrets ----

    /// Mints an OAuth secret valid for `lifetime`. The value is in the answer only.
    pub async fn create_secret(
        &self,
        service_principal_id: &str,
        lifetime: Duration,
    ) -> Result<CreatedSecret, Error> {
        self.create_scoped_secret(service_principal_id, lifetime, &[]).await
    }

    /// A secret whose tokens cannot exceed `scopes` (unrestricted when empty).
    pub async fn create_scoped_secret(
        &self,
        service_principal_id: &str,
        lifetime: Duration,
        scopes: &[String],
    ) -> Result<CreatedSecret, Error> {
        let service_principal_id = segment("service principal id", service_principal_id)?;
        let mut body = json!({"lifetime": format!("{}s", lifetime.as_secs().max(1))});
        if !scopes.is_empty() {
            body["scopes"] = json!(scopes);
        }
        let path = format!("servicePrincipals/{service_principal_id}/credentials/secrets");
        self.call("secrets.create", Method::POST, &path, &[], Some(&body), false).await
    }

    pub async fn list_secrets(&self, service_principal_id: &str) -> Result<Vec<SecretInfo>, Error> {
        let service_principal_id = segment("service principal id", service_principal_id)?;
        let path = format!("servicePrincipals/{service_principal_id}/credentials/secrets");
        self.paginate("secrets.list", &path, |page: SecretPage| (page.secrets, page.next_page_token)).await
    }

    /// Deletes a secret; `Ok(false)` when it was already gone.
    pub async fn delete_secret(&self, service_principal_id: &str, secret_id: &str) -> Result<bool, Error> {
        let service_principal_id = segment("service principal id", service_principal_id)?;
        let secret_id = segment("secret id", secret_id)?;
        let path = format!("servicePrincipals/{service_principal_id}/credentials/secrets/{secret_id}");
        gone_is_ok(self.call_empty::<()>("secrets.delete", Method::DELETE, &path, &[], None, true).await)
    }

    // ---- service principal federation policies ----

    pub async fn create_federation_policy(
        &self,
        service_principal_id: &str,
        policy_id: Option<&str>,
        policy: &FederationPolicy,
    ) -> Result<FederationPolicy, Error> {
        let service_principal_id = segment("service principal id", service_principal_id)?;
        let path = format!("servicePrincipals/{service_principal_id}/federationPolicies");
        let query: Vec<(&str, String)> =
            policy_id.map(|id| ("policy_id", id.to_owned())).into_iter().collect();
        self.call("sp_policies.create", Method::POST, &path, &query, Some(policy), false).await
    }

    pub async fn get_federation_policy(
        &self,
        service_principal_id: &str,
        policy_id: &str,
    ) -> Result<FederationPolicy, Error> {
        let service_principal_id = segment("service principal id", service_principal_id)?;
        let policy_id = segment("federation policy id", policy_id)?;
        let path = format!("servicePrincipals/{service_principal_id}/federationPolicies/{policy_id}");
        self.call::<_, ()>("sp_policies.get", Method::GET, &path, &[], None, true).await
    }

    pub async fn list_federation_policies(
        &self,
        service_principal_id: &str,
    ) -> Result<Vec<FederationPolicy>, Error> {
        let service_principal_id = segment("service principal id", service_principal_id)?;
        let path = format!("servicePrincipals/{service_principal_id}/federationPolicies");
        self.paginate("sp_policies.list", &path, |page: PolicyPage| (page.policies, page.next_page_token))
            .await
    }

    /// Updates the fields named in `update_mask` (e.g. `description,oidc_policy`).
    pub async fn update_federation_policy(
        &self,
        service_principal_id: &str,
        policy_id: &str,
        update_mask: &str,
        policy: &FederationPolicy,
    ) -> Result<FederationPolicy, Error> {
        let service_principal_id = segment("service principal id", service_principal_id)?;
        let policy_id = segment("federation policy id", policy_id)?;
        let path = format!("servicePrincipals/{service_principal_id}/federationPolicies/{policy_id}");
        let query = [("update_mask", update_mask.to_owned())];
        self.call("sp_policies.update", Method::PATCH, &path, &query, Some(policy), true).await
    }

    /// Deletes a policy; `Ok(false)` when it was already gone.
    pub async fn delete_federation_policy(
        &self,
        service_principal_id: &str,
        policy_id: &str,
    ) -> Result<bool, Error> {
        let service_principal_id = segment("service principal id", service_principal_id)?;
        let policy_id = segment("federation policy id", policy_id)?;
        let path = format!("servicePrincipals/{service_principal_id}/federationPolicies/{policy_id}");
        gone_is_ok(self.call_empty::<()>("sp_policies.delete", Method::DELETE, &path, &[], None, true).await)
    }

    // ---- workspace permission assignments ----

    /// Sets the principal's permissions in a workspace (an idempotent upsert).
    pub async fn put_workspace_assignment(
        &self,
        workspace_id: i64,
        principal_id: &str,
        permissions: &[&str],
    ) -> Result<PermissionAssignment, Error> {
        let principal_id = segment("service principal id", principal_id)?;
        let path = format!("workspaces/{workspace_id}/permissionassignments/principals/{principal_id}");
        self.call(
            "assignments.put",
            Method::PUT,
            &path,
            &[],
            Some(&json!({"permissions": permissions})),
            true,
        )
        .await
    }

    /// Removes the principal from a workspace; `Ok(false)` when it was not assigned.
    pub async fn delete_workspace_assignment(
        &self,
        workspace_id: i64,
        principal_id: &str,
    ) -> Result<bool, Error> {
        let principal_id = segment("service principal id", principal_id)?;
        let path = format!("workspaces/{workspace_id}/permissionassignments/principals/{principal_id}");
        gone_is_ok(self.call_empty::<()>("assignments.delete", Method::DELETE, &path, &[], None, true).await)
    }

    /// The ids of the account's workspaces (the Workspaces API; its list is a bare array).
    pub async fn list_workspaces(&self) -> Result<Vec<i64>, Error> {
        let list: Vec<Workspace> =
            self.call::<_, ()>("workspaces.list", Method::GET, "workspaces", &[], None, true).await?;
        Ok(list.into_iter().filter_map(|w| w.workspace_id).collect())
    }

    pub async fn list_workspace_assignments(
        &self,
        workspace_id: i64,
    ) -> Result<Vec<PermissionAssignment>, Error> {
        let path = format!("workspaces/{workspace_id}/permissionassignments");
        let list: AssignmentList =
            self.call::<_, ()>("assignments.list", Method::GET, &path, &[], None, true).await?;
        Ok(list.permission_assignments)
    }

    // ---- custom OAuth app integrations ----

    pub async fn create_custom_app(&self, app: &NewCustomApp) -> Result<CreatedCustomApp, Error> {
        self.call("apps.create", Method::POST, "oauth2/custom-app-integrations", &[], Some(app), false).await
    }

    pub async fn get_custom_app(&self, integration_id: &str) -> Result<CustomApp, Error> {
        let integration_id = segment("integration id", integration_id)?;
        let path = format!("oauth2/custom-app-integrations/{integration_id}");
        self.call::<_, ()>("apps.get", Method::GET, &path, &[], None, true).await
    }

    pub async fn list_custom_apps(&self) -> Result<Vec<CustomApp>, Error> {
        let path = "oauth2/custom-app-integrations";
        self.paginate("apps.list", path, |page: AppPage| (page.apps, page.next_page_token)).await
    }

    pub async fn update_custom_app(
        &self,
        integration_id: &str,
        update: &CustomAppUpdate,
    ) -> Result<(), Error> {
        let integration_id = segment("integration id", integration_id)?;
        let path = format!("oauth2/custom-app-integrations/{integration_id}");
        self.call_empty("apps.update", Method::PATCH, &path, &[], Some(update), true).await
    }

    /// Deletes an integration (its tokens stop working); `Ok(false)` when it was already gone.
    pub async fn delete_custom_app(&self, integration_id: &str) -> Result<bool, Error> {
        let integration_id = segment("integration id", integration_id)?;
        let path = format!("oauth2/custom-app-integrations/{integration_id}");
        gone_is_ok(self.call_empty::<()>("apps.delete", Method::DELETE, &path, &[], None, true).await)
    }

    // ---- the request loop ----

    /// Whether this pass may start now (its first request being of `class`): a pass that writes elsewhere (a
    /// Kubernetes record) before its first Databricks request asks first, so it is never deferred after that
    /// write. Once admitted, none of its requests is deferred.
    pub fn admit(&self, operation: &'static str, class: Class) -> Result<(), Error> {
        if self.admitted.load(Ordering::Relaxed) {
            return Ok(());
        }
        let budget = &self.inner.options.budget;
        budget.admit(class, &self.namespace).map_err(|d| Error::Deferred {
            operation,
            class: d.class.name(),
            queued: d.queued,
        })?;
        self.admitted.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// This namespace's turn in the budget of `class`.
    async fn acquire(&self, operation: &'static str, class: Class) -> Result<Permit, Error> {
        let budget = &self.inner.options.budget;
        if self.admitted.load(Ordering::Relaxed) {
            return Ok(budget.acquire_admitted(class, &self.namespace).await);
        }
        let permit = budget.acquire(class, &self.namespace).await.map_err(|d| Error::Deferred {
            operation,
            class: d.class.name(),
            queued: d.queued,
        })?;
        self.admitted.store(true, Ordering::Relaxed);
        Ok(permit)
    }

    /// Every item of a token-paginated list: `page_size`/`page_token` until `next_page_token` is absent or empty.
    async fn paginate<P: DeserializeOwned, T>(
        &self,
        operation: &'static str,
        path: &str,
        split: impl Fn(P) -> (Vec<T>, Option<String>),
    ) -> Result<Vec<T>, Error> {
        let mut all = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut query = vec![("page_size", "100".to_owned())];
            if let Some(token) = &token {
                query.push(("page_token", token.clone()));
            }
            let page: P = self.call::<_, ()>(operation, Method::GET, path, &query, None, true).await?;
            let (items, next) = split(page);
            all.extend(items);
            match next.filter(|t| !t.is_empty()) {
                Some(next) => token = Some(next),
                None => return Ok(all),
            }
        }
    }

    pub(super) async fn call_empty<B: Serialize>(
        &self,
        operation: &'static str,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&B>,
        idempotent: bool,
    ) -> Result<(), Error> {
        self.call::<Value, B>(operation, method, path, query, body, idempotent).await.map(drop)
    }

    pub(super) async fn call<T: DeserializeOwned, B: Serialize>(
        &self,
        operation: &'static str,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&B>,
        idempotent: bool,
    ) -> Result<T, Error> {
        let inner = &self.inner;
        let url = self.url(path);
        let started = Instant::now();
        let mut attempt: u32 = 0;
        let mut refreshed_token = false;
        loop {
            attempt += 1;
            let permit = self.acquire(operation, Class::of(&method)).await?;
            let token = inner.tokens.token().await?;
            let mut request = inner
                .http
                .request(method.clone(), &url)
                .bearer_auth(token)
                .header(header::ACCEPT, "application/json")
                .query(query);
            if let Some(body) = body {
                request = request.json(body);
            }
            let error = match request.send().await {
                Err(err) => transport_error(operation, &err),
                Ok(response) => {
                    let status = response.status();
                    let retry_after = retry_after(response.headers());
                    match response.bytes().await {
                        Err(err) => transport_error(operation, &err),
                        Ok(bytes) if status.is_success() => {
                            if let Some(Observer(observe)) = &inner.options.observer {
                                observe(operation, status.as_u16());
                            }
                            return decode(operation, &bytes);
                        }
                        Ok(bytes) => api_error(operation, status, &bytes, retry_after),
                    }
                }
            };
            drop(permit);
            if let Some(Observer(observe)) = &inner.options.observer {
                observe(operation, error.status().unwrap_or(0));
            }
            // A refused token may have been revoked or expired early: fetch a new one once.
            if error.status() == Some(401) && !refreshed_token {
                refreshed_token = true;
                inner.tokens.invalidate().await;
                attempt -= 1;
                continue;
            }
            let retryable = match &error {
                Error::Api { status: 429 | 503, .. } => true,
                Error::Api { status: 500 | 502 | 504, .. } | Error::Transport { .. } => idempotent,
                _ => false,
            };
            if !retryable
                || attempt >= inner.options.max_attempts
                || started.elapsed() > inner.options.retry_budget
            {
                return Err(error);
            }
            let wait =
                error.retry_after().unwrap_or_else(|| backoff(attempt)).min(inner.options.max_retry_wait);
            tracing::debug!(operation, attempt, wait_ms = wait.as_millis() as u64, error = %error, "retrying Databricks call");
            if error.is_throttled() {
                // Databricks limits each class of request per account: slow down every caller of this class.
                inner.options.budget.back_off(Class::of(&method), wait);
            } else {
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// Exponential backoff with full jitter: up to 250 ms · 2^(attempt-1), at most 10 s.
fn backoff(attempt: u32) -> Duration {
    let ceiling = (250u64 << attempt.saturating_sub(1).min(6)).min(10_000);
    Duration::from_millis(ceiling / 2 + rand::random_range(0..=ceiling / 2))
}

pub(super) fn gone_is_ok(result: Result<(), Error>) -> Result<bool, Error> {
    match result {
        Ok(()) => Ok(true),
        Err(err) if err.is_not_found() => Ok(false),
        Err(err) => Err(err),
    }
}

/// A SCIM filter string literal.
pub(super) fn scim_string(value: &str) -> String {
    format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
}

/// `value` when it is safe as one URL path segment: ids come from status fields anyone with `/status` access can
/// write, so an id must never be able to reach another path (`..`, `/`, `?`, `%`, ...).
pub(super) fn segment<'a>(what: &'static str, value: &'a str) -> Result<&'a str, Error> {
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if (1..=128).contains(&value.len()) && value.chars().all(plain) && value != "." && value != ".." {
        Ok(value)
    } else {
        Err(Error::InvalidId { what, value: value.chars().take(64).collect() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_from_status_cannot_reach_another_path() {
        for good in ["1234567890", "a1b2-c3", "k8s-team-a-reporting", "0d3c8a0e-6f1b-4c2a-9a57-3f2b1e4d5c6a"]
        {
            assert_eq!(segment("id", good).ok(), Some(good));
        }
        for bad in
            ["", ".", "..", "1/../../2", "1?attributes=x", "1%2F2", "1 2", "1/credentials", &"9".repeat(129)]
        {
            assert!(matches!(segment("id", bad), Err(Error::InvalidId { .. })), "{bad:?} accepted");
        }
    }

    #[test]
    fn plain_http_is_only_for_loopback() {
        assert!(check_host("https://accounts.cloud.databricks.com/").is_ok());
        assert!(check_host("http://127.0.0.1:8080").is_ok());
        assert!(check_host("http://localhost:1").is_ok());
        assert!(check_host("http://[::1]:1").is_ok());
        let remote = check_host("http://accounts.cloud.databricks.com").expect_err("refused");
        assert!(remote.to_string().contains("only loopback hosts"), "{remote}");
        assert!(check_host("ftp://x").is_err());
    }

    #[test]
    fn backoff_is_bounded_and_jittered() {
        for attempt in 1..20 {
            let wait = backoff(attempt);
            assert!(wait <= Duration::from_secs(10));
            assert!(wait >= Duration::from_millis(125));
        }
    }
}
