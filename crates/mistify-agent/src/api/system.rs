//! `/healthz`, `/metrics` (Prometheus text) and `/openapi.json`.

use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map};

use super::AppState;
use crate::error::json_response;

/// How long `/healthz` waits for each sub-agent's answer.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// The agent's version and, for each sub-agent, whether it answered a request within
/// [`PROBE_TIMEOUT`] (`GET /healthz`, any status: a process that accepts connections
/// but answers nothing, stopped or wedged, does not count). `status` is `ok`, or
/// `degraded` with the names of the sub-agents that did not answer in `unreachable`;
/// the answer is 503 when one of them serves a guest action (the agent cannot serve
/// guests), 200 otherwise.
pub async fn healthz(State(agent): State<AppState>) -> Response {
    let probes = agent.services().map(|(name, service)| async move {
        let outcome = service.probe(PROBE_TIMEOUT).await;
        (name.clone(), service.url().to_string(), outcome)
    });
    let results = futures::future::join_all(probes).await;
    let guest_services = agent.config.guest_action_services();
    let mut unreachable = Vec::new();
    let mut services = Map::new();
    for (name, url, outcome) in results {
        let entry = match outcome {
            Ok(took) => json!({
                "url": url, "reachable": true,
                "answered_in_ms": (took.as_secs_f64() * 1000.0 * 10.0).round() / 10.0,
            }),
            Err(e) => {
                unreachable.push(name.clone());
                json!({"url": url, "reachable": false, "error": e.to_string()})
            }
        };
        services.insert(name, entry);
    }
    let serves_guests = unreachable
        .iter()
        .all(|name| !guest_services.contains(name.as_str()));
    let body = json!({
        "status": if unreachable.is_empty() { "ok" } else { "degraded" },
        "version": env!("CARGO_PKG_VERSION"),
        "draining": agent.is_draining(),
        "serves_guests": serves_guests,
        "unreachable": unreachable,
        "guests": agent.store.guest_count(),
        "services": services,
    });
    let status = if serves_guests {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json_response(status, &body)
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
