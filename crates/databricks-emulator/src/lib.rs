//! A faithful local Databricks account API for tests, demos and users' own CI: REST, SCIM, the OIDC token
//! endpoint and an admin API under `/_emulator/` for fault injection, rate limits, eventual consistency, a
//! movable clock and request statistics. Shaped by `databricks-account-api.md` and checked against every
//! official Databricks client: the SDKs for Python and Go, the `databricks` CLI and the Terraform provider
//! (`tests/sdk_conformance.rs` in the operator's repository).
//!
//! As a library: `Emulator::start(EmulatorConfig::new(account, admin_id, admin_secret), addr)` serves in the
//! calling process (port 0 picks one) until `shutdown`; `url()` is the `DATABRICKS_HOST` to give clients.
//! As a binary: `databricks-emulator --listen 127.0.0.1:8089 --account-id ... --admin-client-id ...`.
//!
//! Inside: `table` (the one route table) and `gate` (the middleware in front of it) over `routes` and `oidc`
//! (the handlers) over `state` (the account, one module per resource); `control` holds the test knobs and
//! `admin` serves them.

mod admin;
mod control;
mod errors;
mod gate;
mod oidc;
mod routes;
mod state;
mod table;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::middleware;
use jiff::SignedDuration;
use serde_json::Value;
use tokio::sync::{Mutex, oneshot};

pub use control::{Bucket, FaultRule, LoggedRequest, OperationStats, RateLimit, Stats, rate_class};
pub use errors::ApiError;
pub use state::{EmulatorConfig, MAX_POLICIES, MAX_SECRETS};
pub use table::classify;

use control::Control;
use state::State;

/// What every handler shares.
#[derive(Clone)]
pub struct Shared {
    state: Arc<Mutex<State>>,
    control: Arc<Mutex<Control>>,
    /// For fetching JWKS of federation policies (`jwks_uri`, issuer discovery).
    http: reqwest::Client,
}

fn router(shared: Shared) -> axum::Router {
    let api = table::router().layer(middleware::from_fn_with_state(shared.clone(), gate::gatekeeper));
    api.merge(admin::router()).with_state(shared)
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
        self.shared.add_fault(rule).await;
    }

    pub async fn clear_faults(&self) {
        self.shared.clear_faults().await;
    }

    pub async fn set_rate_limit(&self, limit: Option<RateLimit>) {
        self.shared.set_rate_limit(limit).await;
    }

    /// Just before the next write of the rule set of principal `application_id` lands, another writer gives
    /// `principal` `role` on it (its etag moves on): a read-modify-write racing a concurrent writer, whose write is
    /// then refused as stale.
    pub async fn write_rule_set_before_next_write(&self, application_id: &str, role: &str, principal: &str) {
        let write = (application_id.to_owned(), role.to_owned(), principal.to_owned());
        self.shared.state.lock().await.rule_set_writes_before_write.push(write);
    }

    pub async fn set_consistency_delay(&self, delay: Duration) {
        self.shared
            .set_consistency_delay(SignedDuration::try_from(delay).unwrap_or(SignedDuration::MAX))
            .await;
    }

    /// Moves the emulator's clock forward (secrets and tokens expire accordingly).
    pub async fn advance_clock(&self, by: Duration) {
        self.shared.advance_clock(SignedDuration::try_from(by).unwrap_or(SignedDuration::MAX)).await;
    }

    pub async fn stats(&self) -> Stats {
        self.shared.stats().await
    }

    pub async fn reset_stats(&self) {
        self.shared.reset_stats().await;
    }

    /// What exists (principals with secret and policy counts, apps, assignments), without secret values.
    pub async fn summary(&self) -> Value {
        self.shared.summary().await
    }

    /// Whether an access token is currently valid, and whom it acts as.
    pub async fn introspect(&self, token: &str) -> Value {
        self.shared.introspect(token).await
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
