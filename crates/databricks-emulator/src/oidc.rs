//! The account OIDC endpoints: host metadata, discovery, the token endpoint (client credentials, token exchange
//! with real JWT checks, authorization code + PKCE, refresh) and the authorize endpoint with an auto-approving
//! test user.

use std::collections::HashMap;

use axum::{
    Json,
    extract::{Path, Query, State as AxumState},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Redirect, Response},
};
use base64::{Engine as _, engine::general_purpose::STANDARD, engine::general_purpose::URL_SAFE_NO_PAD};
use jiff::SignedDuration;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, jwk::JwkSet};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{
    Shared,
    errors::{ApiError, random_hex},
    state::{AuthCode, Policy, RefreshGrant, State, TokenSubject, beyond_secret_scopes, hash},
};

const M2M_TTL: SignedDuration = SignedDuration::from_secs(3600);
const DEFAULT_ACCESS_MINUTES: i64 = 60;
const DEFAULT_REFRESH_MINUTES: i64 = 10_080;

/// The base URL the client used to reach us (so metadata works on any address).
pub fn base_url(headers: &HeaderMap) -> String {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("127.0.0.1");
    format!("http://{host}")
}

/// `GET /.well-known/databricks-config`
pub async fn host_metadata(AxumState(shared): AxumState<Shared>, headers: HeaderMap) -> Json<Value> {
    let account_id = shared.state.lock().await.config.account_id.clone();
    Json(json!({
        "oidc_endpoint": format!("{}/oidc/accounts/{{account_id}}", base_url(&headers)),
        "account_id": account_id,
        "host_type": "account",
        "cloud": "AWS",
    }))
}

/// `GET /oidc/accounts/{account_id}/.well-known/oauth-authorization-server` (and `openid-configuration`)
pub async fn discovery(
    AxumState(shared): AxumState<Shared>,
    Path(account_id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    check_account(&shared, &account_id).await?;
    let base = format!("{}/oidc/accounts/{account_id}", base_url(&headers));
    Ok(Json(json!({
        "issuer": format!("{base}/v1"),
        "authorization_endpoint": format!("{base}/v1/authorize"),
        "token_endpoint": format!("{base}/v1/token"),
        "response_types_supported": ["code"],
        "grant_types_supported": ["client_credentials", "authorization_code", "refresh_token",
            "urn:ietf:params:oauth:grant-type:token-exchange"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
    })))
}

async fn check_account(shared: &Shared, account_id: &str) -> Result<(), ApiError> {
    if shared.state.lock().await.config.account_id != account_id {
        return Err(ApiError::not_found(format!("Account {account_id}")));
    }
    Ok(())
}

/// `GET /oidc/accounts/{account_id}/v1/authorize`: the test user approves at once and is sent back with a code.
pub async fn authorize(
    AxumState(shared): AxumState<Shared>,
    Path(account_id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    check_account(&shared, &account_id).await?;
    let mut state = shared.state.lock().await;
    let param = |name: &str| query.get(name).map(String::as_str).filter(|v| !v.is_empty());
    let client_id = param("client_id").ok_or_else(|| {
        ApiError::oauth(StatusCode::BAD_REQUEST, "invalid_request", "client_id is required")
    })?;
    let app = state
        .apps
        .values()
        .find(|a| a.client_id == client_id)
        .cloned()
        .ok_or_else(|| ApiError::oauth(StatusCode::BAD_REQUEST, "invalid_client", "Unknown client_id"))?;
    let redirect_uri = param("redirect_uri").ok_or_else(|| {
        ApiError::oauth(StatusCode::BAD_REQUEST, "invalid_request", "redirect_uri is required")
    })?;
    // An unregistered redirect URL is refused here and never redirected to (RFC 6749 §4.1.2.1).
    if !app.redirect_urls.iter().any(|u| u == redirect_uri) {
        return Err(ApiError::oauth(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!("redirect_uri '{redirect_uri}' is not registered for this app connection"),
        ));
    }
    let back = |params: &[(&str, &str)]| -> Response {
        let mut url = match url::Url::parse(redirect_uri) {
            Ok(url) => url,
            Err(_) => return StatusCode::BAD_REQUEST.into_response(),
        };
        {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in params {
                pairs.append_pair(k, v);
            }
            if let Some(s) = param("state") {
                pairs.append_pair("state", s);
            }
        }
        Redirect::to(url.as_str()).into_response()
    };
    if param("response_type") != Some("code") {
        return Ok(back(&[("error", "unsupported_response_type")]));
    }
    let (Some(challenge), Some("S256")) = (param("code_challenge"), param("code_challenge_method")) else {
        return Ok(back(&[
            ("error", "invalid_request"),
            ("error_description", "PKCE with S256 is required"),
        ]));
    };
    let scopes: Vec<String> =
        param("scope").unwrap_or("all-apis").split_whitespace().map(str::to_owned).collect();
    if let Some(unknown) = scopes.iter().find(|s| !app.scopes.contains(s)) {
        let description = format!("scope '{unknown}' is not allowed for this app connection");
        return Ok(back(&[("error", "invalid_scope"), ("error_description", &description)]));
    }
    let code = random_hex(20);
    let expires_at = state.now().saturating_add(SignedDuration::from_mins(5)).unwrap_or(jiff::Timestamp::MAX);
    state.codes.insert(
        code.clone(),
        AuthCode {
            integration_id: app.integration_id.clone(),
            redirect_uri: redirect_uri.to_owned(),
            code_challenge: challenge.to_owned(),
            scopes,
            expires_at,
        },
    );
    Ok(back(&[("code", &code)]))
}

/// `POST /oidc/accounts/{account_id}/v1/token`
pub async fn token(
    AxumState(shared): AxumState<Shared>,
    Path(account_id): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Result<Json<Value>, ApiError> {
    check_account(&shared, &account_id).await?;
    let form: HashMap<String, String> = url::form_urlencoded::parse(body.as_bytes()).into_owned().collect();
    let basic = basic_credentials(&headers);
    let grant = form.get("grant_type").map(String::as_str).unwrap_or_default();
    match grant {
        "client_credentials" => client_credentials(&shared, &form, basic).await,
        "urn:ietf:params:oauth:grant-type:token-exchange" => token_exchange(&shared, &form).await,
        "authorization_code" => authorization_code(&shared, &form, basic).await,
        "refresh_token" => refresh(&shared, &form, basic).await,
        "" => Err(ApiError::oauth(StatusCode::BAD_REQUEST, "invalid_request", "grant_type is required")),
        other => Err(ApiError::oauth(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            format!("grant_type {other} is not supported"),
        )),
    }
}

/// The client id of a `client_secret_basic` request (for the request log; never the secret).
pub(super) fn basic_client_id(headers: &HeaderMap) -> Option<String> {
    basic_credentials(headers).map(|(id, _)| id)
}

/// `client_secret_basic`: `Authorization: Basic base64(id:secret)` with both parts form-urlencoded.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ").or_else(|| value.strip_prefix("basic "))?;
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    let unescape = |s: &str| {
        url::form_urlencoded::parse(format!("v={s}").as_bytes()).next().map(|(_, v)| v.into_owned())
    };
    Some((unescape(id)?, unescape(secret)?))
}

/// Client authentication by Basic header or form fields (`client_secret_post`).
fn client_auth(
    form: &HashMap<String, String>,
    basic: Option<(String, String)>,
) -> Option<(String, Option<String>)> {
    match basic {
        Some((id, secret)) => Some((id, Some(secret))),
        None => Some((form.get("client_id")?.clone(), form.get("client_secret").cloned())),
    }
}

fn invalid_client() -> ApiError {
    ApiError::oauth(StatusCode::UNAUTHORIZED, "invalid_client", "Client authentication failed")
}

fn token_response(
    token: String,
    expires_in: i64,
    scopes: &[String],
    refresh_token: Option<String>,
) -> Json<Value> {
    let mut body = json!({
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": expires_in,
        "scope": scopes.join(" "),
    });
    if let Some(refresh) = refresh_token {
        body["refresh_token"] = json!(refresh);
    }
    Json(body)
}

fn requested_scopes(form: &HashMap<String, String>) -> Vec<String> {
    form.get("scope")
        .map(String::as_str)
        .unwrap_or("all-apis")
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

async fn client_credentials(
    shared: &Shared,
    form: &HashMap<String, String>,
    basic: Option<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let (client_id, secret) = client_auth(form, basic).ok_or_else(invalid_client)?;
    let secret = secret.ok_or_else(invalid_client)?;
    let mut state = shared.state.lock().await;
    let (principal_id, secret_id) =
        state.authenticate_principal(&client_id, &secret).ok_or_else(invalid_client)?;
    let scopes = requested_scopes(form);
    let bound = state.secret_scopes(&principal_id, secret_id.as_deref());
    let beyond = beyond_secret_scopes(&scopes, &bound);
    if !beyond.is_empty() {
        let description = format!("Scopes '{}' are not assigned to this OAuth secret", beyond.join(" "));
        return Err(ApiError::oauth(StatusCode::BAD_REQUEST, "access_denied", description));
    }
    let subject = TokenSubject::Principal { principal_id, secret_id, policy_uid: None };
    let (token, expires_in) = state.issue_token(subject, scopes.clone(), M2M_TTL);
    Ok(token_response(token, expires_in, &scopes, None))
}

fn invalid_grant(description: impl Into<String>) -> ApiError {
    ApiError::oauth(StatusCode::BAD_REQUEST, "invalid_grant", description)
}

async fn token_exchange(shared: &Shared, form: &HashMap<String, String>) -> Result<Json<Value>, ApiError> {
    let (subject_token, header) = subject_jwt(form)?;
    // Candidate policies and who a match acts as, decided while holding the lock; keys are fetched outside it.
    let (candidates, account_id, now) = {
        let state = shared.state.lock().await;
        let candidates = candidate_policies(&state, form.get("client_id"))?;
        (candidates, state.config.account_id.clone(), state.now().as_second())
    };
    if candidates.is_empty() {
        return Err(invalid_grant("no federation policy applies to this request"));
    }
    let mut reasons = Vec::new();
    for (policy, principal) in candidates {
        match verify_against(&shared.http, subject_token, &header, &policy, &account_id, now).await {
            Ok((subject, exp)) => {
                let mut state = shared.state.lock().await;
                return issue_exchanged(&mut state, form, &policy, principal, &subject, exp);
            }
            Err(reason) => reasons.push(format!("policy {}: {reason}", policy.policy_id)),
        }
    }
    Err(invalid_grant(format!("the token matches no federation policy ({})", reasons.join("; "))))
}

/// The subject token of an exchange request, a JWT signed with an algorithm Databricks accepts, and its header.
fn subject_jwt(form: &HashMap<String, String>) -> Result<(&str, jsonwebtoken::Header), ApiError> {
    let subject_token = form.get("subject_token").ok_or_else(|| {
        ApiError::oauth(StatusCode::BAD_REQUEST, "invalid_request", "subject_token is required")
    })?;
    if form.get("subject_token_type").map(String::as_str) != Some("urn:ietf:params:oauth:token-type:jwt") {
        return Err(ApiError::oauth(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "subject_token_type must be urn:ietf:params:oauth:token-type:jwt",
        ));
    }
    let header = jsonwebtoken::decode_header(subject_token)
        .map_err(|e| invalid_grant(format!("subject_token is not a JWT: {e}")))?;
    if !matches!(header.alg, Algorithm::RS256 | Algorithm::ES256) {
        return Err(invalid_grant(format!(
            "unsupported signing algorithm {:?}: use RS256 or ES256",
            header.alg
        )));
    }
    Ok((subject_token, header))
}

/// The policies an exchange may match, with the principal a match acts as: the principal's own policies when the
/// request names its `client_id`, else the account-wide ones (the principal then comes from the subject).
fn candidate_policies(
    state: &State,
    client_id: Option<&String>,
) -> Result<Vec<(Policy, Option<String>)>, ApiError> {
    let Some(client_id) = client_id else {
        let account_wide = state.policies.iter().filter(|((sp, _), _)| sp.is_empty());
        return Ok(account_wide.map(|(_, p)| (p.clone(), None)).collect());
    };
    let principal = state
        .principals
        .values()
        .find(|p| &p.application_id == client_id && p.active)
        .ok_or_else(|| invalid_grant("no active service principal has this client_id"))?;
    let own = state.policies.iter().filter(|((sp, _), _)| sp == &principal.id);
    Ok(own.map(|(_, p)| (p.clone(), Some(principal.id.clone()))).collect())
}

/// The token an exchange that matched `policy` gets, acting as `principal` (or, account-wide, as the active
/// principal whose application id is the subject), valid no longer than the subject token.
fn issue_exchanged(
    state: &mut State,
    form: &HashMap<String, String>,
    policy: &Policy,
    principal: Option<String>,
    subject: &str,
    exp: i64,
) -> Result<Json<Value>, ApiError> {
    let principal_id = match principal {
        Some(id) => id,
        None => state
            .principals
            .values()
            .find(|p| p.application_id == subject && p.active)
            .map(|p| p.id.clone())
            .ok_or_else(|| {
                invalid_grant(format!("subject '{subject}' does not map to an active service principal"))
            })?,
    };
    let now = state.now().as_second();
    let ttl = SignedDuration::from_secs((exp - now).clamp(1, M2M_TTL.as_secs()));
    let scopes = requested_scopes(form);
    let token_subject =
        TokenSubject::Principal { principal_id, secret_id: None, policy_uid: Some(policy.uid.clone()) };
    let (token, expires_in) = state.issue_token(token_subject, scopes.clone(), ttl);
    Ok(token_response(token, expires_in, &scopes, None))
}

/// Verifies `token` against one policy: signature (key from `jwks_json`, `jwks_uri`, or the issuer's discovery),
/// issuer, audience (default: the account id), expiry, and the subject claim. Returns (subject, exp).
async fn verify_against(
    http: &reqwest::Client,
    token: &str,
    header: &jsonwebtoken::Header,
    policy: &Policy,
    account_id: &str,
    now: i64,
) -> Result<(String, i64), String> {
    let oidc = &policy.oidc;
    let issuer = oidc.issuer.clone().unwrap_or_default();
    let jwks = load_jwks(http, oidc.jwks_json.as_deref(), oidc.jwks_uri.as_deref(), &issuer).await?;
    let key = jwks
        .keys
        .iter()
        .filter(|k| header.kid.is_none() || k.common.key_id == header.kid)
        .find_map(|k| DecodingKey::from_jwk(k).ok())
        .ok_or_else(|| format!("no key in the policy's JWKS matches kid {:?}", header.kid))?;
    let mut validation = Validation::new(header.alg);
    validation.set_issuer(&[&issuer]);
    let audiences =
        if oidc.audiences.is_empty() { vec![account_id.to_owned()] } else { oidc.audiences.clone() };
    validation.set_audience(&audiences);
    validation.set_required_spec_claims(&["exp", "iss", "aud"]);
    // Expiry is checked below against the emulator's clock, which tests can move.
    validation.validate_exp = false;
    let data = jsonwebtoken::decode::<Value>(token, &key, &validation).map_err(|e| match e.kind() {
        jsonwebtoken::errors::ErrorKind::InvalidSignature => {
            "signature does not verify with the policy's keys".to_owned()
        }
        jsonwebtoken::errors::ErrorKind::ExpiredSignature => "token has expired".to_owned(),
        jsonwebtoken::errors::ErrorKind::InvalidIssuer => format!("issuer is not {issuer}"),
        jsonwebtoken::errors::ErrorKind::InvalidAudience => format!("audience is not one of {audiences:?}"),
        other => format!("{other:?}"),
    })?;
    let claim = oidc.subject_claim.as_deref().unwrap_or("sub");
    let subject = data
        .claims
        .get(claim)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("claim '{claim}' is missing"))?;
    if let Some(expected) = &oidc.subject
        && subject != expected
    {
        return Err(format!("subject '{subject}' is not '{expected}'"));
    }
    let exp = data.claims.get("exp").and_then(Value::as_i64).unwrap_or_default();
    if exp <= now {
        return Err("token has expired".to_owned());
    }
    Ok((subject.to_owned(), exp))
}

async fn load_jwks(
    http: &reqwest::Client,
    inline: Option<&str>,
    uri: Option<&str>,
    issuer: &str,
) -> Result<JwkSet, String> {
    if let Some(json) = inline {
        return serde_json::from_str(json).map_err(|e| format!("jwks_json is invalid: {e}"));
    }
    let uri = match uri {
        Some(uri) => uri.to_owned(),
        None => {
            let discovery = format!("{}/.well-known/openid-configuration", issuer.trim_end_matches('/'));
            let document: Value = fetch_json(http, &discovery).await?;
            document
                .get("jwks_uri")
                .and_then(Value::as_str)
                .ok_or("issuer discovery has no jwks_uri")?
                .to_owned()
        }
    };
    fetch_json(http, &uri).await
}

async fn fetch_json<T: serde::de::DeserializeOwned>(http: &reqwest::Client, url: &str) -> Result<T, String> {
    // A local emulator makes no outside connections: keys of other issuers must be inlined (jwks_json).
    if !crate::is_loopback_url(url) {
        return Err(format!(
            "cannot fetch {url}: the emulator only fetches keys from loopback hosts; inline them (jwks_json)"
        ));
    }
    let response = http.get(url).send().await.map_err(|e| format!("fetching {url}: {e}"))?;
    if !response.status().is_success() {
        return Err(format!("fetching {url}: HTTP {}", response.status()));
    }
    response.json().await.map_err(|e| format!("reading {url}: {e}"))
}

/// Finds the app of a U2M client and checks its client authentication (a secret for confidential apps).
fn authenticate_app(
    state: &State,
    form: &HashMap<String, String>,
    basic: Option<(String, String)>,
) -> Result<super::state::App, ApiError> {
    let (client_id, secret) = client_auth(form, basic).ok_or_else(invalid_client)?;
    let app = state.apps.values().find(|a| a.client_id == client_id).cloned().ok_or_else(invalid_client)?;
    if let Some(expected) = &app.client_secret_hash
        && secret.as_deref().map(hash).as_ref() != Some(expected)
    {
        return Err(invalid_client());
    }
    Ok(app)
}

fn app_ttls(app: &super::state::App) -> (SignedDuration, SignedDuration, Option<SignedDuration>, bool) {
    let policy = app.token_access_policy.clone().unwrap_or_default();
    (
        SignedDuration::from_mins(policy.access_token_ttl_in_minutes.unwrap_or(DEFAULT_ACCESS_MINUTES)),
        SignedDuration::from_mins(policy.refresh_token_ttl_in_minutes.unwrap_or(DEFAULT_REFRESH_MINUTES)),
        policy.absolute_session_lifetime_in_minutes.map(SignedDuration::from_mins),
        policy.enable_single_use_refresh_tokens.unwrap_or(false),
    )
}

async fn authorization_code(
    shared: &Shared,
    form: &HashMap<String, String>,
    basic: Option<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let mut state = shared.state.lock().await;
    let app = authenticate_app(&state, form, basic)?;
    let code = form.get("code").ok_or_else(|| invalid_grant("code is required"))?;
    // A code is single use: it is gone whatever happens next.
    let grant = state
        .codes
        .remove(code)
        .ok_or_else(|| invalid_grant("Authorization code is invalid or was already used"))?;
    if grant.integration_id != app.integration_id || grant.expires_at <= state.now() {
        return Err(invalid_grant("Authorization code is invalid or expired"));
    }
    if form.get("redirect_uri") != Some(&grant.redirect_uri) {
        return Err(invalid_grant("redirect_uri does not match the authorization request"));
    }
    let verifier = form.get("code_verifier").ok_or_else(|| invalid_grant("code_verifier is required"))?;
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    if challenge != grant.code_challenge {
        return Err(invalid_grant("PKCE verification failed"));
    }
    issue_app_tokens(&mut state, &app, grant.scopes, None)
}

fn issue_app_tokens(
    state: &mut State,
    app: &super::state::App,
    scopes: Vec<String>,
    session_expires_at: Option<jiff::Timestamp>,
) -> Result<Json<Value>, ApiError> {
    let (access_ttl, refresh_ttl, session_cap, _) = app_ttls(app);
    let now = state.now();
    let session_expires_at =
        session_expires_at.or_else(|| session_cap.and_then(|cap| now.checked_add(cap).ok()));
    let refresh_token = scopes.iter().any(|s| s == "offline_access").then(|| {
        let token = format!("doau{}", random_hex(24));
        let expires_at = now.saturating_add(refresh_ttl).unwrap_or(jiff::Timestamp::MAX);
        let expires_at = session_expires_at.map_or(expires_at, |cap| expires_at.min(cap));
        state.refresh_tokens.insert(
            token.clone(),
            RefreshGrant {
                integration_id: app.integration_id.clone(),
                scopes: scopes.clone(),
                expires_at,
                session_expires_at,
            },
        );
        token
    });
    let subject = TokenSubject::AppUser { integration_id: app.integration_id.clone() };
    let (token, expires_in) = state.issue_token(subject, scopes.clone(), access_ttl);
    Ok(token_response(token, expires_in, &scopes, refresh_token))
}

async fn refresh(
    shared: &Shared,
    form: &HashMap<String, String>,
    basic: Option<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let mut state = shared.state.lock().await;
    let app = authenticate_app(&state, form, basic)?;
    let presented = form.get("refresh_token").ok_or_else(|| invalid_grant("refresh_token is required"))?;
    let grant = state
        .refresh_tokens
        .get(presented)
        .filter(|g| g.integration_id == app.integration_id && g.expires_at > state.now())
        .cloned()
        .ok_or_else(|| invalid_grant("Refresh token is invalid"))?;
    let (_, _, _, single_use) = app_ttls(&app);
    if single_use {
        state.refresh_tokens.remove(presented);
        return issue_app_tokens(&mut state, &app, grant.scopes, grant.session_expires_at);
    }
    let (access_ttl, ..) = app_ttls(&app);
    let subject = TokenSubject::AppUser { integration_id: app.integration_id.clone() };
    let (token, expires_in) = state.issue_token(subject, grant.scopes.clone(), access_ttl);
    Ok(token_response(token, expires_in, &grant.scopes, Some(presented.clone())))
}
