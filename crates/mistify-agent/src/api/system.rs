//! `/healthz`, `/metrics` (Prometheus text) and `/openapi.json`.

use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

use super::AppState;
use crate::error::json_response;

/// How long `/healthz` waits for a sub-agent's port.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// The agent's version, whether each sub-agent accepts connections, the guest count.
/// `status` is `ok`, or `degraded` when a sub-agent cannot be reached (still 200: the
/// agent itself works).
pub async fn healthz(State(agent): State<AppState>) -> Response {
    let probes = agent.services().map(|(name, service)| {
        let port = service
            .config()
            .base_url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse::<u16>().ok());
        let url = service.url().to_string();
        async move {
            let reachable = match port {
                Some(port) => matches!(
                    tokio::time::timeout(
                        PROBE_TIMEOUT,
                        tokio::net::TcpStream::connect(("127.0.0.1", port))
                    )
                    .await,
                    Ok(Ok(_))
                ),
                None => false,
            };
            (name.clone(), json!({"url": url, "reachable": reachable}))
        }
    });
    let results = futures::future::join_all(probes).await;
    let all_up = results.iter().all(|(_, v)| v["reachable"] == true);
    let services: Map<String, Value> = results.into_iter().collect();
    let body = json!({
        "status": if all_up { "ok" } else { "degraded" },
        "version": env!("CARGO_PKG_VERSION"),
        "draining": agent.is_draining(),
        "guests": agent.store.guest_count(),
        "services": services,
    });
    json_response(StatusCode::OK, &body)
}

pub async fn metrics(State(agent): State<AppState>) -> Response {
    let text = agent
        .metrics
        .render(&agent.queue_depths(), agent.store.guest_count());
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

pub async fn openapi() -> Response {
    json_response(StatusCode::OK, &crate::openapi::document())
}
