//! Hypervisor metadata (`/metadata`) and guest metadata (`/guests/{id}/metadata`).

use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::Value;

use super::guests::load;
use super::{decode, read_body, AppState};
use crate::error::{json_response, AgentError};

type Patch = BTreeMap<String, Option<String>>;

pub async fn get_hypervisor(State(agent): State<AppState>) -> Result<Response, AgentError> {
    let map = agent.store.blocking(|s| s.metadata()).await?;
    Ok(json_response(StatusCode::OK, &map))
}

/// Sets every pair; an empty or `null` value deletes the key. Answers the whole map.
pub async fn patch_hypervisor(
    State(agent): State<AppState>,
    body: Body,
) -> Result<Response, AgentError> {
    let patch: Patch = decode(&read_body(body).await?, false)?;
    let map = agent
        .store
        .blocking(move |s| s.patch_metadata(&patch))
        .await?;
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
    Path(id): Path<String>,
) -> Result<Response, AgentError> {
    let (guest, _) = load(&agent, &id)?;
    Ok(json_response(
        StatusCode::OK,
        &guest_metadata(&guest.metadata),
    ))
}

pub async fn patch_guest(
    State(agent): State<AppState>,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, AgentError> {
    let (guest, _) = load(&agent, &id)?;
    let patch: Patch = decode(&read_body(body).await?, false)?;
    let mut guest = (*guest).clone();
    for (k, v) in patch {
        match v {
            Some(v) if !v.is_empty() => {
                guest.metadata.insert(k, v);
            }
            _ => {
                guest.metadata.remove(&k);
            }
        }
    }
    let metadata = guest_metadata(&guest.metadata);
    agent.store.blocking(move |s| s.put_guest(&guest)).await?;
    Ok(json_response(StatusCode::OK, &metadata))
}
