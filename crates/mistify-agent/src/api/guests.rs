//! Guests: list, get (with `?refresh=true`), create, actions, metrics.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, RawPathParams, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use mistify_client::{Guest, JobStatus};

use super::{accepted, check_id, decode, pipeline_id, read_body, with_job_id, AppState};
use crate::agent::{derived_mac, Agent, Work};
use crate::config::prefixed;
use crate::error::{json_response, json_text_response, AgentError};
use crate::runner::Runner;

/// The guest `id` and its runner: 404 `not found` for an unknown guest.
pub fn load(agent: &Agent, id: &str) -> Result<(Arc<Guest>, Arc<Runner>), AgentError> {
    check_id("guest id", id)?;
    let guest = agent.store.guest(id).ok_or(AgentError::NotFound)?;
    let runner = agent
        .runner(id)
        .ok_or_else(|| AgentError::Internal("guest runner not found".into()))?;
    Ok((guest, runner))
}

/// Every guest (`null` when there is none, a Go nil slice, as the original answered).
pub async fn list(State(agent): State<AppState>) -> Result<Response, AgentError> {
    let body = agent.store.guests_json()?;
    Ok((
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response())
}

pub async fn get_one(
    State(agent): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, AgentError> {
    let (guest, runner) = load(&agent, &id)?;
    if query.get("refresh").map(String::as_str) != Some("true") {
        return Ok(json_response(StatusCode::OK, &*guest));
    }
    // Ask the hypervisor for the current state (the `status` Info action) and keep it.
    let action = prefixed(&guest.kind, "status");
    agent.action(&action)?;
    let _slot = runner.info_slot().await?;
    let fresh = agent.run_guest_info(&action, &id).await?;
    Ok(json_response(StatusCode::OK, &fresh))
}

/// A UUID in canonical 8-4-4-4-12 form (any case, any version), optionally prefixed by
/// `urn:uuid:` — what the original accepted.
fn is_uuid(id: &str) -> bool {
    let s = id.strip_prefix("urn:uuid:").unwrap_or(id);
    s.len() == 36
        && s.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

pub async fn create(State(agent): State<AppState>, body: Body) -> Result<Response, AgentError> {
    let bytes = read_body(body).await?;
    let mut guest: Guest = decode::<Option<Guest>>(&bytes, true)?.unwrap_or_default();
    if guest.id.is_empty() {
        guest.id = uuid::Uuid::new_v4().to_string();
    } else if !is_uuid(&guest.id) {
        return Err(AgentError::BadRequest("id must be uuid".into()));
    }
    guest.state = "create".into();
    for (i, nic) in guest.nics.iter_mut().enumerate() {
        if nic.mac.is_empty() {
            nic.mac = derived_mac(&guest.id, i);
        }
    }
    let action = prefixed(&guest.kind, "create");
    agent.action(&action)?;

    let conflict = || AgentError::Conflict(format!("guest {} already exists", guest.id));
    let retry = match agent.store.guest(&guest.id) {
        Some(existing) if retry_allowed(&agent, &existing)? => true,
        Some(_) => return Err(conflict()),
        None => false,
    };
    // The runner exists before the guest is visible.
    agent.ensure_runner(&guest.id);
    let stored = guest.clone();
    // A new id is inserted only if still free: two creates racing for it get one 202
    // and one 409, never two create jobs.
    let written = agent
        .store
        .blocking(move |s| {
            if retry {
                s.put_guest(&stored).map(|_| true)
            } else {
                s.insert_new_guest(&stored)
            }
        })
        .await?;
    if !written {
        return Err(conflict());
    }
    let job = agent
        .submit(
            &guest.id,
            Work::Guest {
                action,
                guest_id: guest.id.clone(),
            },
        )
        .await?;
    Ok(accepted(&job, &guest))
}

/// A create may be repeated for a guest whose own latest job is a create that failed
/// (e.g. cut short by a crash) and that was never changed since.
fn retry_allowed(agent: &Agent, existing: &Guest) -> Result<bool, AgentError> {
    if existing.state != "create" {
        return Ok(false);
    }
    let latest = agent.store.guest_jobs(&existing.id, 1)?;
    Ok(matches!(latest.first(), Some(j)
        if j.status == JobStatus::Error && (j.action == "create" || j.action == "containerCreate")))
}

/// The guest actions a `POST /guests/{id}/{action}` may name.
pub const GUEST_ACTIONS: &[&str] = &[
    "shutdown", "reboot", "restart", "poweroff", "start", "suspend", "resume", "delete",
];

pub async fn action(
    State(agent): State<AppState>,
    Path((id, action)): Path<(String, String)>,
    body: Body,
) -> Result<Response, AgentError> {
    let (guest, _runner) = load(&agent, &id)?;
    // The body is ignored (lochness sends `null`), but still limited.
    read_body(body).await?;
    if !GUEST_ACTIONS.contains(&action.as_str()) {
        return Err(AgentError::UnknownAction(action));
    }
    let name = prefixed(&guest.kind, &action);
    agent.action(&name)?;
    let job = agent
        .submit(
            &id,
            Work::Guest {
                action: name,
                guest_id: id.clone(),
            },
        )
        .await?;
    Ok(accepted(&job, &*guest))
}

/// `GET /guests/{id}/metrics/{kind}` as a route of the router. The path parameters are
/// read where axum keeps them (`RawPathParams`, already percent-decoded). Plain paths of
/// this route, the agent's busiest, do not reach the router: [`super::HotRoutes`]
/// answers them with [`metrics_of`] directly.
pub async fn metrics(State(agent): State<AppState>, params: RawPathParams) -> Response {
    let (mut id, mut kind) = ("", "");
    for (name, value) in &params {
        match name {
            "id" => id = value,
            _ => kind = value,
        }
    }
    metrics_of(&agent, id, kind).await
}

/// The answer to `GET /guests/{id}/metrics/{kind}`, errors included.
pub async fn metrics_of(agent: &Agent, id: &str, kind: &str) -> Response {
    match metrics_result(agent, id, kind).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

async fn metrics_result(agent: &Agent, id: &str, kind: &str) -> Result<Response, AgentError> {
    check_id("guest id", id)?;
    // The stored JSON goes into the request as it is: no parse into a `Guest` and back,
    // no second check of what `serde_json` wrote.
    let guest = agent.store.guest_json(id).ok_or(AgentError::NotFound)?;
    let runner = agent
        .runner(id)
        .ok_or_else(|| AgentError::Internal("guest runner not found".into()))?;
    let action = match kind {
        "cpu" => "cpuMetrics",
        "disk" => "diskMetrics",
        "nic" => "nicMetrics",
        _ => return Err(AgentError::NotFound),
    };
    agent.action(action)?;
    let job_id = pipeline_id();
    let result = async {
        let _slot = runner.info_slot().await?;
        agent.run_metrics(action, &guest, kind).await
    }
    .await;
    let response = match result {
        Ok(part) => json_text_response(StatusCode::OK, &part),
        Err(e) => e.into_response(),
    };
    Ok(with_job_id(response, &job_id))
}

#[cfg(test)]
mod tests {
    use super::is_uuid;

    #[test]
    fn uuid_forms() {
        assert!(is_uuid("c6a0c1e4-4f5e-4d8b-9c1a-0e2b9a3f7d11"));
        assert!(is_uuid("C6A0C1E4-4F5E-4D8B-9C1A-0E2B9A3F7D11"));
        assert!(is_uuid("urn:uuid:c6a0c1e4-4f5e-4d8b-9c1a-0e2b9a3f7d11"));
        assert!(!is_uuid("not-a-uuid"));
        assert!(!is_uuid("c6a0c1e44f5e4d8b9c1a0e2b9a3f7d11"));
        assert!(!is_uuid("c6a0c1e4-4f5e-4d8b-9c1a-0e2b9a3f7d1g"));
    }
}
