//! `/healthz`, `/readyz` and `/metrics`.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use axum::{Router, extract::State, http::StatusCode, routing::get};

use crate::metrics::Metrics;

/// Whether the controllers are running (set once their watches are up).
#[derive(Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Relaxed);
    }
}

/// Parses a listen address: `host:port`, `[IPv6]:port`, and also `[IPv4]:port`, so one template
/// (`[$(POD_IP)]:8081`) serves either family.
pub fn parse_listen_addr(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    let invalid = || format!("'{text}' is not an address such as 0.0.0.0:8081, [::]:8081 or [10.0.0.1]:8081");
    let (host, port) = text.strip_prefix('[').and_then(|rest| rest.split_once("]:")).ok_or_else(invalid)?;
    let ip: std::net::IpAddr = host.parse().map_err(|_| invalid())?;
    let port: u16 = port.parse().map_err(|_| invalid())?;
    Ok(SocketAddr::new(ip, port))
}

/// The listeners of `/healthz` + `/readyz` and of `/metrics` (one when the addresses are equal).
#[derive(Debug)]
pub struct Listeners {
    health: tokio::net::TcpListener,
    metrics: Option<tokio::net::TcpListener>,
}

/// How long `bind` waits for an address in use to become free.
const BIND_PATIENCE: Duration = Duration::from_secs(30);

/// Binds both addresses. An address in use is retried for a while: with `hostNetwork`, the replacement of a Pod
/// killed at once may start while the old container still holds the port.
pub async fn bind(health: SocketAddr, metrics: SocketAddr) -> std::io::Result<Listeners> {
    let health_listener = bind_one(health).await?;
    let metrics = match health == metrics {
        true => None,
        false => Some(bind_one(metrics).await?),
    };
    Ok(Listeners { health: health_listener, metrics })
}

async fn bind_one(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let deadline = tokio::time::Instant::now() + BIND_PATIENCE;
    loop {
        match tokio::net::TcpListener::bind(addr).await {
            Err(err)
                if err.kind() == std::io::ErrorKind::AddrInUse && tokio::time::Instant::now() < deadline =>
            {
                tracing::warn!(%addr, "address in use; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(err) => return Err(std::io::Error::new(err.kind(), format!("listening on {addr}: {err}"))),
            Ok(listener) => return Ok(listener),
        }
    }
}

/// Serves health and metrics on the bound listeners until an error.
pub async fn serve(listeners: Listeners, metrics: Arc<Metrics>, ready: Readiness) -> std::io::Result<()> {
    let health_routes = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(ready): State<Readiness>| async move {
                if ready.0.load(Ordering::Relaxed) {
                    (StatusCode::OK, "ok")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "starting")
                }
            }),
        )
        .with_state(ready);
    let metrics_routes = Router::new()
        .route(
            "/metrics",
            get(|State(metrics): State<Arc<Metrics>>| async move {
                (
                    [("content-type", "application/openmetrics-text; version=1.0.0; charset=utf-8")],
                    metrics.render(),
                )
            }),
        )
        .with_state(metrics);
    let Some(metrics_listener) = listeners.metrics else {
        return axum::serve(listeners.health, health_routes.merge(metrics_routes)).await;
    };
    let (a, b) = tokio::join!(
        axum::serve(listeners.health, health_routes),
        axum::serve(metrics_listener, metrics_routes)
    );
    a.and(b)
}

#[cfg(test)]
mod tests {
    use super::parse_listen_addr;

    #[test]
    fn listen_addresses_of_either_family_may_be_bracketed() {
        let ok = |text: &str| parse_listen_addr(text).map(|a| a.to_string());
        assert_eq!(ok("0.0.0.0:8081").as_deref(), Ok("0.0.0.0:8081"));
        assert_eq!(ok("[198.18.0.1]:8081").as_deref(), Ok("198.18.0.1:8081"));
        assert_eq!(ok("[fd00::1]:8081").as_deref(), Ok("[fd00::1]:8081"));
        assert!(parse_listen_addr("198.18.0.1").is_err());
        assert!(parse_listen_addr("[$(POD_IP)]:8081").is_err_and(|e| e.contains("is not an address")));
    }
}
