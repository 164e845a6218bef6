//! Guests: list, get (with `?refresh=true`), create, actions, metrics.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use mistify_types::{Guest, GuestAction, MetricsKind};

use super::{
    accepted, decode_checked, id, pipeline_response, read_body, AppState, FieldValidation,
};
use crate::error::{json_response, json_text_response, AgentError};

/// Every guest (`null` when there is none, a Go nil slice, as the original answered).
pub async fn list(State(agent): State<AppState>) -> Response {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        agent.store.guests_json(),
    )
        .into_response()
}

pub async fn get_one(
    State(agent): State<AppState>,
    Path(guest): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, AgentError> {
    let guest = id("guest id", &guest)?;
    if query.get("refresh").map(String::as_str) == Some("true") {
        let fresh = agent.refresh_guest(&guest).await?;
        return Ok(json_response(StatusCode::OK, &fresh));
    }
    Ok(json_response(StatusCode::OK, &*agent.guest(&guest)?))
}

pub async fn create(
    State(agent): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
    body: Body,
) -> Result<Response, AgentError> {
    let mode = FieldValidation::of(&query)?;
    let bytes = read_body(body).await?;
    let decoded = decode_checked::<Option<Guest>>(&bytes, true, mode)?;
    let guest = decoded.value.clone().unwrap_or_default();
    let done = super::detached(async move { agent.create_guest(guest).await }).await?;
    Ok(decoded.warn(mode, accepted(&done.job, &done.body)))
}

pub async fn action(
    State(agent): State<AppState>,
    Path((guest, action)): Path<(String, String)>,
    body: Body,
) -> Result<Response, AgentError> {
    let guest = id("guest id", &guest)?;
    agent.guest(&guest)?;
    // The body is ignored (lochness sends `null`), but still limited.
    read_body(body).await?;
    let action: GuestAction = action
        .parse()
        .map_err(|_| AgentError::UnknownAction(action))?;
    let done =
        super::detached(async move { agent.guest_action(&guest, action, false).await }).await?;
    Ok(accepted(&done.job, &*done.body))
}

/// `DELETE /guests/{id}` (ours): the `delete` job, as `POST /guests/{id}/delete`; with
/// `?force=true` the guest is removed whatever its stages answer (a stage that fails is
/// named in the job's message).
pub async fn delete(
    State(agent): State<AppState>,
    Path(guest): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, AgentError> {
    let guest = id("guest id", &guest)?;
    let force = match query.get("force").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(AgentError::BadRequest(format!(
                "invalid force {other:?}: true or false expected"
            )))
        }
    };
    let done =
        super::detached(
            async move { agent.guest_action(&guest, GuestAction::Delete, force).await },
        )
        .await?;
    Ok(accepted(&done.job, &*done.body))
}

/// `GET /guests/{id}/metrics/{kind}`: the sub-agent's figures of one kind.
pub async fn metrics(
    State(agent): State<AppState>,
    Path((guest, kind)): Path<(String, String)>,
) -> Result<Response, AgentError> {
    let guest = id("guest id", &guest)?;
    agent.guest(&guest)?;
    let kind = MetricsKind::parse(&kind).ok_or(AgentError::NotFound)?;
    let pipeline = agent.guest_metrics(&guest, kind).await?;
    Ok(pipeline_response(pipeline, |part| {
        json_text_response(StatusCode::OK, &part)
    }))
}
