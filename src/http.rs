//! `/healthz`, `/readyz` and `/metrics`.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
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

/// Serves health on `health` and metrics on `metrics` (the same listener when the addresses are equal).
pub async fn serve(
    health: SocketAddr,
    metrics_addr: SocketAddr,
    metrics: Arc<Metrics>,
    ready: Readiness,
) -> std::io::Result<()> {
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
    if health == metrics_addr {
        let listener = tokio::net::TcpListener::bind(health).await?;
        return axum::serve(listener, health_routes.merge(metrics_routes)).await;
    }
    let health_listener = tokio::net::TcpListener::bind(health).await?;
    let metrics_listener = tokio::net::TcpListener::bind(metrics_addr).await?;
    let (a, b) = tokio::join!(
        axum::serve(health_listener, health_routes),
        axum::serve(metrics_listener, metrics_routes)
    );
    a.and(b)
}
