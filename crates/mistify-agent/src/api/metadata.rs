//! Hypervisor metadata (`/metadata`) and guest metadata (`/guests/{id}/metadata`).

use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::Value;

use super::{decode, id, read_body, AppState};
use crate::error::{json_response, AgentError};

pub async fn get_hypervisor(State(agent): State<AppState>) -> Result<Response, AgentError> {
    let map = agent.store.metadata()?;
    Ok(json_response(StatusCode::OK, &map))
}

/// Sets every pair; an empty or `null` value deletes the key. Answers the whole map.
pub async fn patch_hypervisor(
    State(agent): State<AppState>,
    body: Body,
) -> Result<Response, AgentError> {
    let patch: BTreeMap<String, Option<String>> = decode(&read_body(body).await?, false)?;
    let map = agent.store.patch_metadata(&patch).await?;
    Ok(json_response(StatusCode::OK, &map))
}

/// The guest's metadata, `null` when it has none.
fn guest_metadata(map: &BTreeMap<String, String>) -> Value {
    if map.is_empty() {
        Value::Null
    } else {
        serde_json::to_value(map).unwrap_or(Value::Null)
    }
}

pub async fn get_guest(
    State(agent): State<AppState>,
    Path(guest): Path<String>,
) -> Result<Response, AgentError> {
    let guest = agent.guest(&id("guest id", &guest)?)?;
    Ok(json_response(
        StatusCode::OK,
        &guest_metadata(&guest.metadata),
    ))
}

/// As for the hypervisor: sets every pair, deletes keys with an empty or `null` value;
/// answers the guest's whole metadata.
pub async fn patch_guest(
    State(agent): State<AppState>,
    Path(guest): Path<String>,
    body: Body,
) -> Result<Response, AgentError> {
    let guest = id("guest id", &guest)?;
    agent.guest(&guest)?;
    let patch: BTreeMap<String, Option<String>> = decode(&read_body(body).await?, false)?;
    let guest = agent.patch_guest_metadata(&guest, patch).await?;
    Ok(json_response(
        StatusCode::OK,
        &guest_metadata(&guest.metadata),
    ))
}
