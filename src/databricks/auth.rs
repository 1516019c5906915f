//! How the client gets account access tokens: OAuth M2M client credentials, or RFC 8693 token exchange of a
//! JWT read from a file (re-read on every refresh, so a rotated projected token is picked up). Tokens are cached
//! and refreshed before they expire; one refresh at a time.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use reqwest::header;
use tokio::sync::Mutex;

use super::{
    Error,
    response::{oauth_error, transport_error},
    types::TokenResponse,
};

/// Refresh this long before expiry (Azure refuses tokens with 30 s or less left; the Python SDK uses 40 s).
const EXPIRY_SKEW: Duration = Duration::from_secs(60);

/// The credentials the operator authenticates with.
#[derive(Clone)]
pub enum Credentials {
    /// OAuth M2M: a service principal's application id and secret.
    ClientCredentials { client_id: String, client_secret: String },
    /// Workload identity federation: exchange the JWT in `token_path`; `client_id` selects service-principal
    /// federation, `None` account-wide federation.
    TokenExchange { token_path: PathBuf, client_id: Option<String> },
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::ClientCredentials { client_id, .. } => f
                .debug_struct("ClientCredentials")
                .field("client_id", client_id)
                .field("client_secret", &"<redacted>")
                .finish(),
            Self::TokenExchange { token_path, client_id } => f
                .debug_struct("TokenExchange")
                .field("token_path", token_path)
                .field("client_id", client_id)
                .finish(),
        }
    }
}

impl Credentials {
    /// How the operator authenticates, for messages.
    pub fn method(&self) -> &'static str {
        match self {
            Self::ClientCredentials { .. } => "OAuth M2M",
            Self::TokenExchange { .. } => "workload identity federation",
        }
    }

    /// Who the operator acts as, for messages (no secret).
    pub fn describe(&self) -> String {
        match self {
            Self::ClientCredentials { client_id, .. } => format!("service principal {client_id} (OAuth M2M)"),
            Self::TokenExchange { client_id: Some(id), .. } => {
                format!("service principal {id} (workload identity federation)")
            }
            Self::TokenExchange { client_id: None, .. } => {
                "account-wide workload identity federation".to_owned()
            }
        }
    }
}

struct Cached {
    token: String,
    refresh_at: Instant,
}

/// Issues and caches access tokens for one account.
pub struct TokenProvider {
    http: reqwest::Client,
    token_url: String,
    credentials: Credentials,
    cache: Mutex<Option<Cached>>,
}

impl std::fmt::Debug for TokenProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenProvider")
            .field("token_url", &self.token_url)
            .field("credentials", &self.credentials)
            .finish()
    }
}

impl TokenProvider {
    pub fn new(http: reqwest::Client, token_url: String, credentials: Credentials) -> Self {
        Self { http, token_url, credentials, cache: Mutex::new(None) }
    }

    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    /// A valid access token, from the cache or freshly issued.
    pub async fn token(&self) -> Result<String, Error> {
        let mut cache = self.cache.lock().await;
        if let Some(cached) = cache.as_ref()
            && Instant::now() < cached.refresh_at
        {
            return Ok(cached.token.clone());
        }
        let response = self.fetch().await?;
        let lifetime = Duration::from_secs(response.expires_in.unwrap_or(3600).max(0) as u64);
        let refresh_in = lifetime.saturating_sub(EXPIRY_SKEW).max(lifetime / 2);
        let token = response.expose_access_token().to_owned();
        *cache = Some(Cached { token: token.clone(), refresh_at: Instant::now() + refresh_in });
        Ok(token)
    }

    /// Forgets the cached token (after Databricks refused it).
    pub async fn invalidate(&self) {
        *self.cache.lock().await = None;
    }

    async fn fetch(&self) -> Result<TokenResponse, Error> {
        match &self.credentials {
            Credentials::ClientCredentials { client_id, client_secret } => {
                client_credentials(&self.http, &self.token_url, client_id, client_secret, "all-apis").await
            }
            Credentials::TokenExchange { token_path, client_id } => {
                let jwt = tokio::fs::read_to_string(token_path).await.map_err(|e| Error::TokenFile {
                    path: token_path.display().to_string(),
                    message: e.to_string(),
                })?;
                token_exchange(&self.http, &self.token_url, jwt.trim(), client_id.as_deref(), "all-apis")
                    .await
            }
        }
    }
}

/// OAuth M2M: `grant_type=client_credentials` with HTTP Basic client authentication, as the SDKs send it.
pub async fn client_credentials(
    http: &reqwest::Client,
    token_url: &str,
    client_id: &str,
    client_secret: &str,
    scope: &str,
) -> Result<TokenResponse, Error> {
    let form = [("grant_type", "client_credentials"), ("scope", scope)];
    let request = http.post(token_url).basic_auth(client_id, Some(client_secret)).form(&form);
    send_token_request("client_credentials", request).await
}

/// RFC 8693 token exchange of a JWT from the workload's identity provider.
pub async fn token_exchange(
    http: &reqwest::Client,
    token_url: &str,
    subject_token: &str,
    client_id: Option<&str>,
    scope: &str,
) -> Result<TokenResponse, Error> {
    let mut form = vec![
        ("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange"),
        ("subject_token_type", "urn:ietf:params:oauth:token-type:jwt"),
        ("subject_token", subject_token),
        ("scope", scope),
    ];
    if let Some(client_id) = client_id {
        form.push(("client_id", client_id));
    }
    send_token_request("token_exchange", http.post(token_url).form(&form)).await
}

async fn send_token_request(
    operation: &'static str,
    request: reqwest::RequestBuilder,
) -> Result<TokenResponse, Error> {
    // Bounded retries of throttling, unavailability and transport failures; refusals are returned at once.
    let mut attempt: u32 = 0;
    loop {
        attempt += 1;
        let request = request
            .try_clone()
            .ok_or_else(|| Error::Config("token request body cannot be retried".into()))?;
        let error = match request.header(header::ACCEPT, "application/json").send().await {
            Err(err) => transport_error(operation, &err),
            Ok(response) => {
                let status = response.status().as_u16();
                match response.bytes().await {
                    Err(err) => transport_error(operation, &err),
                    Ok(body) if (200..300).contains(&status) => {
                        return serde_json::from_slice(&body).map_err(|e| Error::Decode {
                            operation,
                            message: format!("token response is not valid JSON: {e}"),
                        });
                    }
                    Ok(body) => oauth_error(operation, status, &body),
                }
            }
        };
        if !error.is_retryable() || attempt >= 4 {
            return Err(error);
        }
        tokio::time::sleep(Duration::from_millis(200 * 2u64.pow(attempt))).await;
    }
}
