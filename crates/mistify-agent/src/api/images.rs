//! Images: every query asks the disk image back-end and, unless a type is given, the
//! container one too; fetch and delete are async jobs on the `agent` runner.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use mistify_types::ImageRequest;

use super::{accepted, decode_checked, id, read_body, AppState, FieldValidation};
use crate::error::{json_response, AgentError};

/// `type` as the original matched it: letters only, else ignored.
fn kind_param(query: &HashMap<String, String>) -> Option<&str> {
    query
        .get("type")
        .map(String::as_str)
        .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_alphabetic()))
}

pub async fn list(
    State(agent): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, AgentError> {
    let images = agent.list_images(kind_param(&params)).await?;
    if images.is_empty() {
        return Ok(json_response(StatusCode::OK, &serde_json::Value::Null));
    }
    Ok(json_response(StatusCode::OK, &images))
}

pub async fn get_one(
    State(agent): State<AppState>,
    Path(image): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, AgentError> {
    let image = id("image id", &image)?;
    let found = agent.image(&image, kind_param(&params)).await?;
    Ok(json_response(StatusCode::OK, &found))
}

pub async fn fetch(
    State(agent): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
    body: Body,
) -> Result<Response, AgentError> {
    let mode = FieldValidation::of(&params)?;
    let decoded = decode_checked::<ImageRequest>(&read_body(body).await?, false, mode)?;
    let request = decoded.value.clone();
    if request.id.is_empty() {
        return Err(AgentError::BadRequest("missing id".into()));
    }
    let image = id("image id", &request.id)?;
    let done = super::detached(async move { agent.fetch_image(image, request).await }).await?;
    Ok(decoded.warn(mode, accepted(&done.job, &done.body)))
}

pub async fn delete(
    State(agent): State<AppState>,
    Path(image): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, AgentError> {
    let image = id("image id", &image)?;
    let done = agent.delete_image(&image, kind_param(&params)).await?;
    Ok(accepted(&done.job, &done.body))
}
