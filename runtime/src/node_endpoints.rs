//! What a recorder or transcoder node serves its operators over HTTP: `/metrics` (Prometheus text from
//! the node's registry), `/healthz` (the process answers) and `/readyz` (it is connected to NATS, so it
//! can take work). Off unless `[metrics] listen` is set.

use crate::bus::Bus;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use tokio::sync::watch;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Where to serve `/metrics`, `/healthz` and `/readyz`, e.g. "0.0.0.0:9100"; unset serves nothing.
    pub listen: Option<String>,
}

#[derive(Clone)]
struct Endpoints {
    registry: Arc<Registry>,
    bus: Bus,
}

/// The node's endpoints on `router` (for tests and for [`serve`]).
pub fn router(registry: Arc<Registry>, bus: Bus) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(Endpoints { registry, bus })
}

/// Serves the endpoints until `shutdown` turns true; returns at once when nothing is to be served.
pub async fn serve(config: MetricsConfig, registry: Arc<Registry>, bus: Bus, mut shutdown: watch::Receiver<bool>) -> std::io::Result<()> {
    let Some(listen) = config.listen else { return Ok(()) };
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    tracing::info!(address = %listener.local_addr()?, "serving /metrics, /healthz and /readyz");
    axum::serve(listener, router(registry, bus))
        .with_graceful_shutdown(async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        })
        .await
}

/// [`serve`] on a task of its own; a failure is logged (the node goes on working without its endpoints).
pub fn spawn(config: MetricsConfig, registry: Registry, bus: Bus, shutdown: watch::Receiver<bool>) {
    tokio::spawn(async move {
        if let Err(err) = serve(config, Arc::new(registry), bus, shutdown).await {
            tracing::error!(%err, "the metrics and health endpoints stopped");
        }
    });
}

async fn metrics(State(endpoints): State<Endpoints>) -> impl IntoResponse {
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, &endpoints.registry) {
        Ok(()) => (StatusCode::OK, [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text),
        Err(err) => (StatusCode::INTERNAL_SERVER_ERROR, [(header::CONTENT_TYPE, "text/plain")], format!("encoding the metrics: {err}\n")),
    }
}

async fn ready(State(endpoints): State<Endpoints>) -> impl IntoResponse {
    if endpoints.bus.is_connected() { (StatusCode::OK, "ready\n") } else { (StatusCode::SERVICE_UNAVAILABLE, "not connected to NATS\n") }
}
