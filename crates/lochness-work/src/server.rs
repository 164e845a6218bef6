//! The daemons' HTTP listener (`--http`): `GET /metrics` (Prometheus) and `GET /healthz`,
//! with the shared layers of every mistify daemon.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::header;
use axum::routing::get;
use axum::Router;

use crate::metrics::Metrics;

/// The content type of the metrics text (OpenMetrics, which Prometheus scrapes).
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The routes: `/metrics` and `/healthz` (naming `program`).
pub fn router(program: &str, metrics: Arc<Metrics>) -> Router {
    let metrics_route = Router::new().route(
        "/metrics",
        get(move || {
            let metrics = metrics.clone();
            async move {
                (
                    [(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)],
                    metrics.encode(),
                )
            }
        }),
    );
    mistify_http::with_common_layers(metrics_route.merge(mistify_http::healthz_route(
        program,
        env!("CARGO_PKG_VERSION"),
    )))
}

/// Binds `addr` (an error names it) and serves [`router`] until `shutdown`; returns the
/// bound address and the serving task.
pub async fn start(
    program: &str,
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), String> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let bound = listener.local_addr().unwrap_or(addr);
    let app = router(program, metrics);
    let task = tokio::spawn(async move {
        if let Err(e) =
            mistify_http::serve(listener, app, mistify_http::Limits::default(), shutdown).await
        {
            tracing::error!(error = %e, "the metrics listener failed");
        }
    });
    tracing::info!(%bound, "metrics and health listening");
    Ok((bound, task))
}
