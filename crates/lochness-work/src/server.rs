//! The daemons' HTTP listener (`--http`): `GET /metrics` and `GET /healthz`, with the
//! shared layers of every mistify daemon. `/metrics` answers Prometheus text when the
//! client's `Accept` names `text/plain` or OpenMetrics (as scrapers send), one JSON
//! object otherwise.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use crate::metrics::Metrics;

/// The content type of the metrics text for a client that accepts OpenMetrics.
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The content type of the metrics text for a client that accepts `text/plain`.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// How `/metrics` answers a request's `Accept`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsFormat {
    /// OpenMetrics text.
    OpenMetrics,
    /// The same text as `text/plain`.
    Text,
    /// One JSON object.
    Json,
}

impl MetricsFormat {
    /// The format the `Accept` headers ask for (OpenMetrics before `text/plain`; JSON
    /// when neither is named).
    pub fn of(headers: &HeaderMap) -> MetricsFormat {
        let accept: Vec<String> = headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            })
            .collect();
        if accept.iter().any(|m| m == "application/openmetrics-text") {
            MetricsFormat::OpenMetrics
        } else if accept.iter().any(|m| m == "text/plain") {
            MetricsFormat::Text
        } else {
            MetricsFormat::Json
        }
    }
}

fn metrics_answer(metrics: &Metrics, format: MetricsFormat) -> Response {
    match format {
        MetricsFormat::OpenMetrics => (
            [(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)],
            metrics.encode(),
        )
            .into_response(),
        MetricsFormat::Text => (
            [(header::CONTENT_TYPE, TEXT_CONTENT_TYPE)],
            metrics.encode(),
        )
            .into_response(),
        MetricsFormat::Json => Json(metrics.snapshot()).into_response(),
    }
}

/// The routes: `/metrics` and `/healthz` (naming `program`).
pub fn router(program: &str, metrics: Arc<Metrics>) -> Router {
    let metrics_route = Router::new().route(
        "/metrics",
        get(move |headers: HeaderMap| {
            let metrics = metrics.clone();
            async move { metrics_answer(&metrics, MetricsFormat::of(&headers)) }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &str) -> MetricsFormat {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, value.parse().unwrap());
        MetricsFormat::of(&h)
    }

    #[test]
    fn accept_chooses_the_format() {
        assert_eq!(MetricsFormat::of(&HeaderMap::new()), MetricsFormat::Json);
        assert_eq!(accept("application/json"), MetricsFormat::Json);
        assert_eq!(accept("*/*"), MetricsFormat::Json);
        assert_eq!(accept("text/plain"), MetricsFormat::Text);
        assert_eq!(
            accept("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"),
            MetricsFormat::OpenMetrics
        );
        assert_eq!(accept("Text/Plain; version=0.0.4"), MetricsFormat::Text);
    }
}
