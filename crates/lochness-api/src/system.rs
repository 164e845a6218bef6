//! The routes every daemon serves beside its API: `GET /healthz` (etcd reachable),
//! `GET /metrics` and `GET /openapi.json`.

use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use crate::common::{accepts_prometheus, json_text, Api, Route};
use crate::openapi::{Doc, Schema};

/// How long `/healthz` waits for etcd.
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

/// The system routes.
pub fn routes() -> Vec<Route> {
    vec![
        Route::new(
            Method::GET,
            "/healthz",
            get(healthz),
            Doc::new(
                "health: 200 when etcd answers, else 503",
                200,
                Schema::Ref("Health"),
            ),
        ),
        Route::new(
            Method::GET,
            "/metrics",
            get(metrics),
            Doc::new(
                "requests, queued jobs and queue depths: Prometheus text when Accept names text/plain or OpenMetrics, else a JSON object",
                200,
                Schema::Object,
            ),
        ),
        Route::new(
            Method::GET,
            "/openapi.json",
            get(openapi),
            Doc::new("this document", 200, Schema::Object),
        ),
    ]
}

async fn healthz(State(api): State<Api>) -> Response {
    let service = api.daemon.name();
    let version = env!("CARGO_PKG_VERSION");
    let probe = tokio::time::timeout(HEALTH_TIMEOUT, api.ctx.count_keys(lochness::keys::ROOT));
    let (status, body) = match probe.await {
        Ok(Ok(_)) => (
            StatusCode::OK,
            json!({"status": "ok", "service": service, "version": version}),
        ),
        Ok(Err(e)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"status": "unavailable", "service": service, "version": version,
                   "message": e.to_string()}),
        ),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"status": "unavailable", "service": service, "version": version,
                   "message": format!("etcd did not answer within {HEALTH_TIMEOUT:?}")}),
        ),
    };
    mistify_http::json_response(status, &body)
}

async fn metrics(State(api): State<Api>, headers: HeaderMap) -> Response {
    if accepts_prometheus(&headers) {
        let text = api.metrics.prometheus(&api.ctx).await;
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            )],
            text,
        )
            .into_response()
    } else {
        mistify_http::json_response(StatusCode::OK, &api.metrics.json(&api.ctx).await)
    }
}

async fn openapi(State(api): State<Api>) -> Response {
    json_text(
        StatusCode::OK,
        api.openapi.get().cloned().unwrap_or_else(|| "{}".into()),
    )
}
