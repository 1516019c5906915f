//! The gate in front of every Databricks route, as steps: count the request, refuse it when throttled, apply a
//! fault rule (latency, an error status, a dropped response), check the Bearer token, and record the answer.

use axum::{
    body::{Body, Bytes},
    extract::{Request, State as AxumState},
    http::{StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};

use super::{
    Shared,
    control::{Control, FaultRule, LoggedRequest, rate_class},
    errors::ApiError,
    oidc,
    state::TokenSubject,
    table::classify,
};

/// What the gate knows of a request, before it is handled.
struct Seen {
    operation: &'static str,
    write: bool,
    class: &'static str,
    method: String,
    target: String,
    client_id: Option<String>,
    at_ms: u64,
}

impl Seen {
    fn of(request: &Request, operation: &'static str, write: bool) -> Self {
        let uri = request.uri();
        Self {
            operation,
            write,
            class: rate_class(request.method(), operation),
            method: request.method().to_string(),
            target: uri.path_and_query().map_or_else(|| uri.path().to_owned(), |p| p.to_string()),
            client_id: (operation == "oidc.token")
                .then(|| oidc::basic_client_id(request.headers()))
                .flatten(),
            at_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        }
    }
}

/// Stats, latency, rate limits, faults and Bearer authentication, in front of every Databricks route.
pub async fn gatekeeper(AxumState(shared): AxumState<Shared>, request: Request, next: Next) -> Response {
    let Some((operation, write)) = classify(request.method(), request.uri().path()) else {
        return next.run(request).await;
    };
    let seen = Seen::of(&request, operation, write);
    let (fault, throttled) = count(&mut *shared.control.lock().await, &request, &seen);
    let response = match throttled {
        Some(retry_after) => throttled_response(operation, retry_after),
        None => handle(&shared, request, next, operation, fault).await,
    };
    record(&mut *shared.control.lock().await, seen, response.status());
    response
}

/// Counts the request, and says whether it is throttled (the `Retry-After`) or which fault applies to it.
fn count(control: &mut Control, request: &Request, seen: &Seen) -> (Option<FaultRule>, Option<u32>) {
    let stats = &mut control.stats;
    stats.requests += 1;
    if seen.write {
        stats.writes += 1;
        if stats.write_paths.len() < 100_000 {
            stats.write_paths.push(format!("{} {}", request.method(), request.uri().path()));
        }
    } else {
        stats.reads += 1;
    }
    let entry = stats.operations.entry(seen.operation.to_owned()).or_default();
    entry.count += 1;
    entry.write = seen.write;
    let throttled = control.throttle(seen.class);
    (if throttled.is_some() { None } else { control.take_fault(seen.operation) }, throttled)
}

/// A 429 as Databricks throttles: OAuth-shaped at the token endpoint, REST-shaped elsewhere.
fn throttled_response(operation: &str, retry_after: u32) -> Response {
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
}

/// The request handled, or answered by its fault: latency first, then an error status instead of the handler, or
/// the handler's answer with its body dropped.
async fn handle(
    shared: &Shared,
    request: Request,
    next: Next,
    operation: &str,
    fault: Option<FaultRule>,
) -> Response {
    if let Some(latency) = fault.as_ref().map(|f| f.latency_ms).filter(|l| *l > 0) {
        tokio::time::sleep(std::time::Duration::from_millis(latency)).await;
    }
    if let Some((rule, status)) = fault.as_ref().and_then(|f| f.status.map(|s| (f, s))) {
        return fault_response(
            operation,
            rule,
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        );
    }
    let path = request.uri().path().to_owned();
    let bearer =
        request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let mut request = request;
    let response = match authorize(shared, &path, bearer.as_deref()).await {
        Ok(caller) => {
            if let Some(caller) = caller {
                request.extensions_mut().insert(caller);
            }
            next.run(request).await
        }
        Err(error) => error.into_response(),
    };
    if fault.as_ref().is_some_and(|f| f.drop_response) { drop_body(response) } else { response }
}

/// Counts the answer and logs the request.
fn record(control: &mut Control, seen: Seen, status: StatusCode) {
    if status == StatusCode::TOO_MANY_REQUESTS {
        control.stats.throttled += 1;
    }
    let entry = control.stats.operations.entry(seen.operation.to_owned()).or_default();
    *entry.statuses.entry(status.as_u16()).or_default() += 1;
    if control.stats.log.len() < 200_000 {
        let Seen { at_ms, method, target, class, client_id, .. } = seen;
        let (class, status) = (class.to_owned(), status.as_u16());
        control.stats.log.push(LoggedRequest { at_ms, method, target, class, status, client_id });
    }
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

/// Who made an account API request, as rule sets name principals (`servicePrincipals/<application id>`).
#[derive(Debug, Clone)]
pub struct Caller(pub String);

/// Account REST APIs (and their preview paths) need a valid Bearer token of an account admin, and the configured
/// account id. Returns the caller.
async fn authorize(
    shared: &Shared,
    path: &str,
    authorization: Option<&str>,
) -> Result<Option<Caller>, ApiError> {
    let rest =
        path.strip_prefix("/api/2.0/accounts/").or_else(|| path.strip_prefix("/api/2.0/preview/accounts/"));
    let Some(rest) = rest else { return Ok(None) };
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
    // The account APIs take an `all-apis` token; one minted narrower (a scoped secret's `sql`) is refused. The
    // per-API scopes Databricks also has (`iam.groups:read`, ...) are not modelled.
    if !issued.scopes.iter().any(|s| s == "all-apis") {
        return Err(ApiError::Rest {
            status: StatusCode::FORBIDDEN,
            code: "PERMISSION_DENIED",
            message: "Provided OAuth token does not have required scopes: all-apis".to_owned(),
        });
    }
    if !state.is_admin(&issued.subject) {
        return Err(ApiError::Rest {
            status: StatusCode::FORBIDDEN,
            code: "PERMISSION_DENIED",
            message: "This API is disabled for users without account admin status.".to_owned(),
        });
    }
    let caller = match &issued.subject {
        TokenSubject::Principal { principal_id, .. } => state.principals.get(principal_id),
        TokenSubject::AppUser { .. } => None,
    };
    Ok(caller.map(|p| Caller(format!("servicePrincipals/{}", p.application_id))))
}
