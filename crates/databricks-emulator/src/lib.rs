//! A faithful local Databricks account API for tests, demos and users' own CI: REST, SCIM, the OIDC token
//! endpoint and an admin API under `/_emulator/` for fault injection, rate limits, eventual consistency, a
//! movable clock and request statistics. Shaped by `databricks-account-api.md` and checked against every
//! official Databricks client: the SDKs for Python and Go, the `databricks` CLI and the Terraform provider
//! (`tests/sdk_conformance.rs` in the operator's repository).
//!
//! As a library: `Emulator::start(EmulatorConfig::new(account, admin_id, admin_secret), addr)` serves in the
//! calling process (port 0 picks one) until `shutdown`; `url()` is the `DATABRICKS_HOST` to give clients.
//! As a binary: `databricks-emulator --listen 127.0.0.1:8089 --account-id ... --admin-client-id ...`.

mod errors;
mod oidc;
mod routes;
mod state;

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use axum::body::Bytes;
use axum::{
    Json, Router,
    body::Body,
    extract::{Request, State as AxumState},
    http::{Method, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post, put},
};
use jiff::SignedDuration;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::{Mutex, oneshot};

pub use errors::ApiError;
pub use state::{EmulatorConfig, MAX_POLICIES, MAX_SECRETS};
use state::{State, TokenSubject};

/// What every handler shares.
#[derive(Clone)]
pub struct Shared {
    state: Arc<Mutex<State>>,
    control: Arc<Mutex<Control>>,
    /// For fetching JWKS of federation policies (`jwks_uri`, issuer discovery).
    http: reqwest::Client,
}

/// A rule of the fault injector. A request matches when its operation matches `operation` (exact, a prefix
/// ending in `*`, or `*`). The first `skip` matches pass untouched; the next `times` (forever when unset) get
/// the fault.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FaultRule {
    /// Operation name (see `GET /_emulator/stats`), `prefix.*`, or `*`.
    #[serde(default = "any_operation")]
    pub operation: String,
    /// Answer with this status instead of handling the request.
    #[serde(default)]
    pub status: Option<u16>,
    /// `Retry-After` header value (seconds or an HTTP date) sent with `status`.
    #[serde(default)]
    pub retry_after: Option<String>,
    /// Send `status` with an empty body (as throttled requests sometimes get).
    #[serde(default)]
    pub empty_body: bool,
    /// Delay before handling, in milliseconds.
    #[serde(default)]
    pub latency_ms: u64,
    /// Apply the request, then break the connection before the response body arrives.
    #[serde(default)]
    pub drop_response: bool,
    /// How many matching requests pass before the fault applies.
    #[serde(default)]
    pub skip: u32,
    /// How many times the fault applies; forever when unset.
    #[serde(default)]
    pub times: Option<u32>,
}

fn any_operation() -> String {
    "*".to_owned()
}

impl FaultRule {
    /// A rule answering `status` to `operation`.
    pub fn status(operation: &str, status: u16) -> Self {
        Self {
            operation: operation.to_owned(),
            status: Some(status),
            retry_after: None,
            empty_body: false,
            latency_ms: 0,
            drop_response: false,
            skip: 0,
            times: None,
        }
    }

    /// A rule that applies `operation` and then drops the response.
    pub fn drop_response(operation: &str) -> Self {
        Self { status: None, drop_response: true, ..Self::status(operation, 0) }
    }

    pub fn times(mut self, times: u32) -> Self {
        self.times = Some(times);
        self
    }

    pub fn retry_after(mut self, value: &str) -> Self {
        self.retry_after = Some(value.to_owned());
        self
    }

    fn matches(&self, operation: &str) -> bool {
        self.operation == "*"
            || self.operation == operation
            || self.operation.strip_suffix('*').is_some_and(|prefix| operation.starts_with(prefix))
    }
}

/// Server-side token buckets, as Databricks throttles with 429. Databricks limits classes of request separately
/// (GET about 20/s, POST/PUT/DELETE about 5/s, PATCH about 2/s; reference "Account SCIM rate limits"), so each
/// class has an optional bucket, and `all` optionally limits every request. The token endpoint counts as a read.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RateLimit {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all: Option<Bucket>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reads: Option<Bucket>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writes: Option<Bucket>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patches: Option<Bucket>,
    /// The `Retry-After` of a throttled answer, in seconds (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_seconds: Option<u32>,
}

/// One token bucket: a sustained rate and how many requests it takes at once after idling.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Bucket {
    pub requests_per_second: f64,
    pub burst: f64,
}

impl RateLimit {
    /// One bucket for every request.
    pub fn all(requests_per_second: f64, burst: f64) -> Self {
        Self { all: Some(Bucket { requests_per_second, burst }), ..Self::default() }
    }

    /// Databricks' documented per-class limits, each with a one-second burst.
    pub fn documented() -> Self {
        let bucket = |rate: f64| Some(Bucket { requests_per_second: rate, burst: rate });
        Self { reads: bucket(20.0), writes: bucket(5.0), patches: bucket(2.0), ..Self::default() }
    }
}

impl LoggedRequest {
    /// Whether the request names one of `ids` (principal ids and UIDs in its path or query, including the
    /// percent-encoded search by tag `filter=externalId eq "<uid>"`, or the token endpoint's client id): which
    /// caller's objects it concerns.
    pub fn names_any(&self, ids: &std::collections::BTreeSet<String>) -> bool {
        self.target.split(['/', '?', '&', '=', '%', '"']).any(|s| ids.contains(s))
            || self.client_id.as_ref().is_some_and(|c| ids.contains(c))
            || ids.iter().any(|id| id.len() == 36 && self.target.contains(id.as_str()))
    }
}

/// The class of a request for rate limits: `reads`, `writes` or `patches`.
pub fn rate_class(method: &Method, operation: &str) -> &'static str {
    match *method {
        _ if operation.starts_with("oidc.") => "reads",
        Method::GET | Method::HEAD => "reads",
        Method::PATCH => "patches",
        _ => "writes",
    }
}

/// The buckets' fill, beside their settings.
struct Throttle {
    limit: RateLimit,
    /// Tokens of `all`, `reads`, `writes`, `patches`.
    tokens: [f64; 4],
    last: Instant,
}

impl Throttle {
    fn new(limit: RateLimit) -> Self {
        let burst = |b: Option<Bucket>| b.map_or(0.0, |b| b.burst);
        let tokens = [burst(limit.all), burst(limit.reads), burst(limit.writes), burst(limit.patches)];
        Self { limit, tokens, last: Instant::now() }
    }

    /// Whether a request of `class` is refused; an accepted one takes a token from each bucket it passes.
    fn refuses(&mut self, class: &str) -> bool {
        let now = Instant::now();
        let elapsed = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        let buckets = [self.limit.all, self.limit.reads, self.limit.writes, self.limit.patches];
        for (tokens, bucket) in self.tokens.iter_mut().zip(buckets) {
            if let Some(b) = bucket {
                *tokens = (*tokens + elapsed * b.requests_per_second).min(b.burst);
            }
        }
        let applies = [true, class == "reads", class == "writes", class == "patches"];
        let passing: Vec<usize> = (0..4).filter(|i| applies[*i] && buckets[*i].is_some()).collect();
        if passing.iter().any(|i| self.tokens[*i] < 1.0) {
            return true;
        }
        for i in passing {
            self.tokens[i] -= 1.0;
        }
        false
    }
}

/// One request as the emulator saw it (for tests that attribute requests to their callers).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoggedRequest {
    /// Milliseconds since the Unix epoch when the request arrived.
    pub at_ms: u64,
    pub method: String,
    /// Path and query.
    pub target: String,
    /// `reads`, `writes` or `patches`.
    pub class: String,
    pub status: u16,
    /// For the token endpoint: the client id of a Basic-authenticated request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
}

/// Request counts per operation.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Stats {
    pub requests: u64,
    pub reads: u64,
    pub writes: u64,
    pub throttled: u64,
    pub operations: BTreeMap<String, OperationStats>,
    /// `METHOD path` of every write, oldest first (the first 100,000): which remote objects were written.
    #[serde(default)]
    pub write_paths: Vec<String>,
    /// Every request, oldest first (the first 200,000).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub log: Vec<LoggedRequest>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct OperationStats {
    pub count: u64,
    pub write: bool,
    /// Answers by HTTP status.
    pub statuses: BTreeMap<u16, u64>,
}

impl Stats {
    /// Requests of one operation (0 when none).
    pub fn count(&self, operation: &str) -> u64 {
        self.operations.get(operation).map_or(0, |o| o.count)
    }

    /// Writes whose path names `id` as one of its segments (a principal, secret, policy or integration id).
    pub fn writes_to(&self, id: &str) -> Vec<&str> {
        self.write_paths.iter().filter(|p| p.split(['/', ' ']).any(|s| s == id)).map(String::as_str).collect()
    }

    /// Answers with `status` across all operations.
    pub fn with_status(&self, status: u16) -> u64 {
        self.operations.values().map(|o| o.statuses.get(&status).copied().unwrap_or(0)).sum()
    }
}

#[derive(Default)]
struct Control {
    faults: Vec<(FaultRule, u32)>,
    rate_limit: Option<Throttle>,
    stats: Stats,
}

impl Control {
    /// The fault to apply to this request, if any (consumes one use of the rule).
    fn take_fault(&mut self, operation: &str) -> Option<FaultRule> {
        for (rule, seen) in &mut self.faults {
            if !rule.matches(operation) {
                continue;
            }
            *seen += 1;
            let applied = seen.saturating_sub(rule.skip);
            if *seen > rule.skip && rule.times.is_none_or(|t| applied <= t) {
                return Some(rule.clone());
            }
        }
        None
    }

    /// When a request of `class` is throttled: the `Retry-After` to answer with.
    fn throttle(&mut self, class: &str) -> Option<u32> {
        let throttle = self.rate_limit.as_mut()?;
        throttle.refuses(class).then(|| throttle.limit.retry_after_seconds.unwrap_or(1))
    }
}

/// The operation a request is, and whether it writes: the names used by stats and fault rules.
pub fn classify(method: &Method, path: &str) -> Option<(&'static str, bool)> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let write = !matches!(*method, Method::GET | Method::HEAD);
    let m = method.as_str();
    let op = match segments.as_slice() {
        [".well-known", "databricks-config"] => "oidc.host_metadata",
        ["oidc", "accounts", _, ".well-known", _] => "oidc.discovery",
        ["oidc", "accounts", _, "v1", "token"] => "oidc.token",
        ["oidc", "accounts", _, "v1", "authorize"] => "oidc.authorize",
        ["api", "2.0", "accounts", _, rest @ ..] => match (m, rest) {
            ("POST", ["scim", "v2", "ServicePrincipals"]) => "scim.sp.create",
            ("GET", ["scim", "v2", "ServicePrincipals"]) => "scim.sp.list",
            ("GET", ["scim", "v2", "ServicePrincipals", _]) => "scim.sp.get",
            ("PATCH", ["scim", "v2", "ServicePrincipals", _]) => "scim.sp.patch",
            ("PUT", ["scim", "v2", "ServicePrincipals", _]) => "scim.sp.replace",
            ("DELETE", ["scim", "v2", "ServicePrincipals", _]) => "scim.sp.delete",
            ("POST", ["servicePrincipals", _, "credentials", "secrets"]) => "secrets.create",
            ("GET", ["servicePrincipals", _, "credentials", "secrets"]) => "secrets.list",
            ("DELETE", ["servicePrincipals", _, "credentials", "secrets", _]) => "secrets.delete",
            ("POST", ["servicePrincipals", _, "federationPolicies"]) => "sp_policies.create",
            ("GET", ["servicePrincipals", _, "federationPolicies"]) => "sp_policies.list",
            ("GET", ["servicePrincipals", _, "federationPolicies", _]) => "sp_policies.get",
            ("PATCH", ["servicePrincipals", _, "federationPolicies", _]) => "sp_policies.update",
            ("DELETE", ["servicePrincipals", _, "federationPolicies", _]) => "sp_policies.delete",
            ("POST", ["federationPolicies"]) => "account_policies.create",
            ("GET", ["federationPolicies"]) => "account_policies.list",
            ("GET", ["federationPolicies", _]) => "account_policies.get",
            ("PATCH", ["federationPolicies", _]) => "account_policies.update",
            ("DELETE", ["federationPolicies", _]) => "account_policies.delete",
            ("POST", ["oauth2", "custom-app-integrations"]) => "apps.create",
            ("GET", ["oauth2", "custom-app-integrations"]) => "apps.list",
            ("GET", ["oauth2", "custom-app-integrations", _]) => "apps.get",
            ("PATCH", ["oauth2", "custom-app-integrations", _]) => "apps.update",
            ("DELETE", ["oauth2", "custom-app-integrations", _]) => "apps.delete",
            ("GET", ["workspaces", _, "permissionassignments"]) => "assignments.list",
            ("GET", ["workspaces", _, "permissionassignments", "permissions"]) => "assignments.permissions",
            ("PUT", ["workspaces", _, "permissionassignments", "principals", _]) => "assignments.put",
            ("DELETE", ["workspaces", _, "permissionassignments", "principals", _]) => "assignments.delete",
            _ => "api.unknown",
        },
        _ => return None,
    };
    // The token endpoint is a POST but mints no stored object; count it as a read for "writes per object".
    let write = write && !op.starts_with("oidc.");
    Some((op, write))
}

fn fault_response(operation: &str, rule: &FaultRule, status: StatusCode) -> Response {
    let error = if rule.empty_body {
        ApiError::Empty { status, retry_after: None }
    } else if operation.starts_with("scim.") {
        ApiError::scim(
            status,
            None,
            format!("Injected fault: {}", status.canonical_reason().unwrap_or("error")),
        )
    } else if operation.starts_with("oidc.") {
        let error = if status == StatusCode::TOO_MANY_REQUESTS { "invalid_request" } else { "server_error" };
        let description = if status == StatusCode::TOO_MANY_REQUESTS {
            "Temporarily throttled, too many requests"
        } else {
            "Injected fault"
        };
        ApiError::oauth(status, error, description)
    } else {
        let code = match status.as_u16() {
            429 => "REQUEST_LIMIT_EXCEEDED",
            503 => "TEMPORARILY_UNAVAILABLE",
            500 => "INTERNAL_ERROR",
            504 => "DEADLINE_EXCEEDED",
            404 => "RESOURCE_DOES_NOT_EXIST",
            409 => "RESOURCE_ALREADY_EXISTS",
            400 => "BAD_REQUEST",
            _ => "UNKNOWN",
        };
        ApiError::Rest {
            status,
            code,
            message: format!("Injected fault: {}", status.canonical_reason().unwrap_or("error")),
        }
    };
    let mut response = error.into_response();
    if let Some(value) = rule.retry_after.as_deref().and_then(|v| header::HeaderValue::from_str(v).ok()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// Stats, latency, rate limits, faults and Bearer authentication, in front of every Databricks route.
async fn gatekeeper(AxumState(shared): AxumState<Shared>, request: Request, next: Next) -> Response {
    let Some((operation, write)) = classify(request.method(), request.uri().path()) else {
        return next.run(request).await;
    };
    let class = rate_class(request.method(), operation);
    let method = request.method().to_string();
    let target =
        request.uri().path_and_query().map_or_else(|| request.uri().path().to_owned(), |p| p.to_string());
    let client_id = (operation == "oidc.token").then(|| oidc::basic_client_id(request.headers())).flatten();
    let at_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let (fault, throttled) = {
        let mut control = shared.control.lock().await;
        let stats = &mut control.stats;
        stats.requests += 1;
        if write {
            stats.writes += 1;
            if stats.write_paths.len() < 100_000 {
                stats.write_paths.push(format!("{} {}", request.method(), request.uri().path()));
            }
        } else {
            stats.reads += 1;
        }
        let entry = stats.operations.entry(operation.to_owned()).or_default();
        entry.count += 1;
        entry.write = write;
        let throttled = control.throttle(class);
        (if throttled.is_some() { None } else { control.take_fault(operation) }, throttled)
    };
    let response = if let Some(retry_after) = throttled {
        let mut response = if operation.starts_with("oidc.") {
            ApiError::oauth(
                StatusCode::TOO_MANY_REQUESTS,
                "invalid_request",
                "Temporarily throttled, too many requests",
            )
            .into_response()
        } else {
            ApiError::Rest {
                status: StatusCode::TOO_MANY_REQUESTS,
                code: "REQUEST_LIMIT_EXCEEDED",
                message: "Request limit exceeded: RPC token bucket limit has been exceeded".to_owned(),
            }
            .into_response()
        };
        response.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from(retry_after));
        response
    } else {
        if let Some(latency) = fault.as_ref().map(|f| f.latency_ms).filter(|l| *l > 0) {
            tokio::time::sleep(Duration::from_millis(latency)).await;
        }
        match fault.as_ref().and_then(|f| f.status.map(|s| (f, s))) {
            Some((rule, status)) => fault_response(
                operation,
                rule,
                StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            ),
            None => {
                let path = request.uri().path().to_owned();
                let bearer = request
                    .headers()
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let response = match authorize(&shared, &path, bearer.as_deref()).await {
                    Ok(()) => next.run(request).await,
                    Err(error) => error.into_response(),
                };
                if fault.as_ref().is_some_and(|f| f.drop_response) { drop_body(response) } else { response }
            }
        }
    };
    let mut control = shared.control.lock().await;
    if response.status() == StatusCode::TOO_MANY_REQUESTS {
        control.stats.throttled += 1;
    }
    let entry = control.stats.operations.entry(operation.to_owned()).or_default();
    *entry.statuses.entry(response.status().as_u16()).or_default() += 1;
    if control.stats.log.len() < 200_000 {
        let status = response.status().as_u16();
        let class = class.to_owned();
        control.stats.log.push(LoggedRequest { at_ms, method, target, class, status, client_id });
    }
    response
}

/// The request was applied; break the connection before the body arrives, as a lost response looks.
fn drop_body(response: Response) -> Response {
    let (parts, _) = response.into_parts();
    let broken = futures::stream::once(async {
        Err::<Bytes, std::io::Error>(std::io::Error::other(
            "response dropped by the emulator's fault injector",
        ))
    });
    Response::from_parts(parts, Body::from_stream(broken))
}

/// Account REST APIs need a valid Bearer token of an account admin, and the configured account id.
async fn authorize(shared: &Shared, path: &str, authorization: Option<&str>) -> Result<(), ApiError> {
    let Some(rest) = path.strip_prefix("/api/2.0/accounts/") else { return Ok(()) };
    let state = shared.state.lock().await;
    let account = rest.split('/').next().unwrap_or_default();
    let bearer = authorization.and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")));
    let unauthenticated = |message: &str| ApiError::Rest {
        status: StatusCode::UNAUTHORIZED,
        code: "UNAUTHENTICATED",
        message: message.to_owned(),
    };
    let token = bearer.ok_or_else(|| {
        unauthenticated("Credential was not sent or was of an unsupported type for this API.")
    })?;
    let issued = state.valid_token(token).ok_or_else(|| unauthenticated("Invalid access token."))?;
    if account != state.config.account_id {
        return Err(ApiError::not_found(format!("Account {account}")));
    }
    if !state.is_admin(&issued.subject) {
        return Err(ApiError::Rest {
            status: StatusCode::FORBIDDEN,
            code: "PERMISSION_DENIED",
            message: "This API is disabled for users without account admin status.".to_owned(),
        });
    }
    Ok(())
}

fn router(shared: Shared) -> Router {
    use routes::*;
    let acct = "/api/2.0/accounts/{account_id}";
    let api = Router::new()
        .route("/.well-known/databricks-config", get(oidc::host_metadata))
        .route("/oidc/accounts/{account_id}/.well-known/oauth-authorization-server", get(oidc::discovery))
        .route("/oidc/accounts/{account_id}/.well-known/openid-configuration", get(oidc::discovery))
        .route("/oidc/accounts/{account_id}/v1/token", post(oidc::token))
        .route("/oidc/accounts/{account_id}/v1/authorize", get(oidc::authorize))
        .route(&format!("{acct}/scim/v2/ServicePrincipals"), get(sp_list).post(sp_create))
        .route(
            &format!("{acct}/scim/v2/ServicePrincipals/{{id}}"),
            get(sp_get).patch(sp_patch).put(sp_replace).delete(sp_delete),
        )
        .route(
            &format!("{acct}/servicePrincipals/{{sp}}/credentials/secrets"),
            get(secret_list).post(secret_create),
        )
        .route(
            &format!("{acct}/servicePrincipals/{{sp}}/credentials/secrets/{{secret}}"),
            axum::routing::delete(secret_delete),
        )
        .route(
            &format!("{acct}/servicePrincipals/{{sp}}/federationPolicies"),
            get(sp_policy_list).post(sp_policy_create),
        )
        .route(
            &format!("{acct}/servicePrincipals/{{sp}}/federationPolicies/{{id}}"),
            get(sp_policy_get).patch(sp_policy_update).delete(sp_policy_delete),
        )
        .route(&format!("{acct}/federationPolicies"), get(account_policy_list).post(account_policy_create))
        .route(
            &format!("{acct}/federationPolicies/{{id}}"),
            get(account_policy_get).patch(account_policy_update).delete(account_policy_delete),
        )
        .route(&format!("{acct}/oauth2/custom-app-integrations"), get(app_list).post(app_create))
        .route(
            &format!("{acct}/oauth2/custom-app-integrations/{{id}}"),
            get(app_get).patch(app_update).delete(app_delete),
        )
        .route(&format!("{acct}/workspaces/{{ws}}/permissionassignments"), get(assignment_list))
        .route(&format!("{acct}/workspaces/{{ws}}/permissionassignments/permissions"), get(assignment_levels))
        .route(
            &format!("{acct}/workspaces/{{ws}}/permissionassignments/principals/{{principal}}"),
            put(assignment_put).delete(assignment_delete),
        )
        .fallback(|| async {
            ApiError::Rest {
                status: StatusCode::NOT_FOUND,
                code: "ENDPOINT_NOT_FOUND",
                message: "No API found for this path.".into(),
            }
        })
        .layer(middleware::from_fn_with_state(shared.clone(), gatekeeper));
    let admin = Router::new()
        .route("/_emulator/faults", get(admin_faults).post(admin_add_fault).delete(admin_clear_faults))
        .route("/_emulator/rate-limit", put(admin_set_rate_limit).delete(admin_clear_rate_limit))
        .route("/_emulator/consistency", put(admin_set_consistency))
        .route("/_emulator/clock", post(admin_advance_clock))
        .route("/_emulator/stats", get(admin_stats).delete(admin_reset_stats))
        .route("/_emulator/reset", post(admin_reset))
        .route("/_emulator/state", get(admin_state))
        .route("/_emulator/tokens/introspect", post(admin_introspect));
    api.merge(admin).with_state(shared)
}

// ---- admin API ----

async fn admin_faults(AxumState(s): AxumState<Shared>) -> Json<Value> {
    let control = s.control.lock().await;
    Json(json!({"rules": control.faults.iter().map(|(r, _)| r).collect::<Vec<_>>()}))
}

async fn admin_add_fault(AxumState(s): AxumState<Shared>, Json(rule): Json<FaultRule>) -> StatusCode {
    s.control.lock().await.faults.push((rule, 0));
    StatusCode::NO_CONTENT
}

async fn admin_clear_faults(AxumState(s): AxumState<Shared>) -> StatusCode {
    s.control.lock().await.faults.clear();
    StatusCode::NO_CONTENT
}

async fn admin_set_rate_limit(AxumState(s): AxumState<Shared>, Json(limit): Json<RateLimit>) -> StatusCode {
    s.control.lock().await.rate_limit = Some(Throttle::new(limit));
    StatusCode::NO_CONTENT
}

async fn admin_clear_rate_limit(AxumState(s): AxumState<Shared>) -> StatusCode {
    s.control.lock().await.rate_limit = None;
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
struct Consistency {
    delay_ms: u64,
}

async fn admin_set_consistency(AxumState(s): AxumState<Shared>, Json(c): Json<Consistency>) -> StatusCode {
    s.state.lock().await.consistency_delay = SignedDuration::from_millis(c.delay_ms as i64);
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
struct Clock {
    advance_seconds: i64,
}

async fn admin_advance_clock(AxumState(s): AxumState<Shared>, Json(c): Json<Clock>) -> StatusCode {
    let mut state = s.state.lock().await;
    state.clock_offset = state.clock_offset.saturating_add(SignedDuration::from_secs(c.advance_seconds));
    StatusCode::NO_CONTENT
}

async fn admin_stats(AxumState(s): AxumState<Shared>) -> Json<Stats> {
    Json(s.control.lock().await.stats.clone())
}

async fn admin_reset_stats(AxumState(s): AxumState<Shared>) -> StatusCode {
    s.control.lock().await.stats = Stats::default();
    StatusCode::NO_CONTENT
}

async fn admin_reset(AxumState(s): AxumState<Shared>) -> StatusCode {
    s.state.lock().await.reset();
    *s.control.lock().await = Control::default();
    StatusCode::NO_CONTENT
}

async fn admin_state(AxumState(s): AxumState<Shared>) -> Json<Value> {
    Json(s.state.lock().await.summary())
}

#[derive(Deserialize)]
struct Introspect {
    token: String,
}

async fn admin_introspect(AxumState(s): AxumState<Shared>, Json(i): Json<Introspect>) -> Json<Value> {
    let state = s.state.lock().await;
    Json(match state.valid_token(&i.token) {
        None => json!({"active": false}),
        Some(issued) => {
            let subject = match &issued.subject {
                TokenSubject::Principal { principal_id, .. } => {
                    json!({"service_principal_id": principal_id,
                           "application_id": state.principals.get(principal_id).map(|p| p.application_id.clone())})
                }
                TokenSubject::AppUser { integration_id } => {
                    json!({"user": "emulator-user@example.com", "integration_id": integration_id})
                }
            };
            json!({"active": true, "subject": subject, "scopes": issued.scopes,
                   "expires_in": (issued.expires_at - state.now()).get_seconds()})
        }
    })
}

impl State {
    /// What exists, without secret values: for tests that assert nothing was duplicated or left behind.
    pub fn summary(&self) -> Value {
        let principals: Vec<Value> = self
            .principals
            .values()
            .map(|p| {
                json!({
                    "id": p.id, "applicationId": p.application_id, "displayName": p.display_name,
                    "externalId": p.external_id, "active": p.active,
                    "secrets": self.secrets.get(&p.id).map_or(0, Vec::len),
                    "policies": self.policies.keys().filter(|(sp, _)| sp == &p.id).count(),
                })
            })
            .collect();
        let assignments: BTreeMap<String, usize> =
            self.assignments.iter().map(|(ws, a)| (ws.to_string(), a.len())).collect();
        json!({
            "principals": principals,
            "apps": self.apps.len(),
            "account_policies": self.policies.keys().filter(|(sp, _)| sp.is_empty()).count(),
            "assignments": assignments,
        })
    }
}

/// A running emulator.
pub struct Emulator {
    addr: SocketAddr,
    shared: Shared,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Emulator {
    /// Starts an emulator on `listen` (port 0 picks a free port) in this process.
    pub async fn start(config: EmulatorConfig, listen: SocketAddr) -> std::io::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(std::io::Error::other)?;
        let shared = Shared {
            state: Arc::new(Mutex::new(State::new(config))),
            control: Arc::new(Mutex::new(Control::default())),
            http,
        };
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let (tx, rx) = oneshot::channel();
        let app = router(shared.clone());
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async {
                let _ = rx.await;
            });
            if let Err(err) = serve.await {
                tracing::error!(%err, "emulator server failed");
            }
        });
        Ok(Self { addr, shared, shutdown: Some(tx), task: Some(task) })
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub async fn add_fault(&self, rule: FaultRule) {
        self.shared.control.lock().await.faults.push((rule, 0));
    }

    pub async fn clear_faults(&self) {
        self.shared.control.lock().await.faults.clear();
    }

    pub async fn set_rate_limit(&self, limit: Option<RateLimit>) {
        self.shared.control.lock().await.rate_limit = limit.map(Throttle::new);
    }

    pub async fn set_consistency_delay(&self, delay: Duration) {
        self.shared.state.lock().await.consistency_delay =
            SignedDuration::try_from(delay).unwrap_or(SignedDuration::MAX);
    }

    /// Moves the emulator's clock forward (secrets and tokens expire accordingly).
    pub async fn advance_clock(&self, by: Duration) {
        let mut state = self.shared.state.lock().await;
        state.clock_offset =
            state.clock_offset.saturating_add(SignedDuration::try_from(by).unwrap_or(SignedDuration::MAX));
    }

    pub async fn stats(&self) -> Stats {
        self.shared.control.lock().await.stats.clone()
    }

    pub async fn reset_stats(&self) {
        self.shared.control.lock().await.stats = Stats::default();
    }

    /// What exists (principals with secret and policy counts, apps, assignments), without secret values.
    pub async fn summary(&self) -> Value {
        self.shared.state.lock().await.summary()
    }

    /// Whether an access token is currently valid, and whom it acts as.
    pub async fn introspect(&self, token: &str) -> Value {
        admin_introspect(AxumState(self.shared.clone()), Json(Introspect { token: token.to_owned() })).await.0
    }

    /// Stops serving and waits for the server to finish.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Plain `http://` to a loopback host: the only non-HTTPS URL the emulator trusts (an OIDC issuer or redirect URL
/// in a test). The operator's client has the same rule of its own; the two crates share no code by design.
pub fn is_loopback_http_url(url: &str) -> bool {
    url::Url::parse(url).ok().is_some_and(|u| u.scheme() == "http" && loopback_host(&u))
}

/// Any URL to a loopback host: the only places the emulator fetches from (it makes no outside connections).
pub fn is_loopback_url(url: &str) -> bool {
    url::Url::parse(url).ok().is_some_and(|u| loopback_host(&u))
}

fn loopback_host(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}
