//! Images: every query asks the disk image back-end and, unless a type is given, the
//! container one too; fetch and delete are async jobs on the `agent` runner.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use mistify_client::{Image, ImageRequest, ImageResponse};
use mistify_rpc::RpcError;
use serde_json::json;

use super::{accepted, check_id, decode, read_body, AppState};
use crate::agent::{Agent, Work};
use crate::config::prefixed;
use crate::error::{json_response, AgentError};
use crate::runner::AGENT_RUNNER;

/// A back-end's way of saying "no such image": an empty result, not a failure.
fn is_not_found(e: &AgentError) -> bool {
    let text = match e {
        AgentError::Rpc(RpcError::Remote { message, .. }) => message,
        AgentError::Rpc(RpcError::Status { body, .. }) => body,
        _ => return false,
    };
    matches!(
        text.trim().to_ascii_lowercase().as_str(),
        "not found" | "no such image"
    )
}

/// Runs `base` (or `containerBase`) on each image back-end, in parallel, and joins the
/// images. An unconfigured back-end contributes nothing; any real error fails the call.
async fn query(
    agent: &Agent,
    base: &str,
    kind: Option<&str>,
    request: &ImageRequest,
) -> Result<Vec<Image>, AgentError> {
    let kinds: Vec<&str> = match kind {
        Some(k) => vec![k],
        None => vec!["", "container"],
    };
    let runner = agent
        .runner(AGENT_RUNNER)
        .ok_or_else(|| AgentError::Internal("agent runner missing".into()))?;
    let calls = kinds.into_iter().map(|k| {
        let action = prefixed(k, base);
        let runner = runner.clone();
        async move {
            if agent.config.action(&action).is_none() {
                return Ok(Vec::new());
            }
            let _slot = runner.info_slot().await?;
            match agent
                .run_plain(&action, request, json!({"images": null}))
                .await
            {
                Ok(v) => serde_json::from_value::<ImageResponse>(v)
                    .map(|r| r.images.unwrap_or_default())
                    .map_err(|e| AgentError::Stage(format!("{action}: unreadable images: {e}"))),
                Err(e) if is_not_found(&e) => Ok(Vec::new()),
                Err(e) => Err(e),
            }
        }
    });
    let mut images = Vec::new();
    for result in futures::future::join_all(calls).await {
        images.extend(result?);
    }
    Ok(images)
}

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
    let images = query(
        &agent,
        "listImages",
        kind_param(&params),
        &ImageRequest::default(),
    )
    .await?;
    if images.is_empty() {
        return Ok(json_response(StatusCode::OK, &serde_json::Value::Null));
    }
    Ok(json_response(StatusCode::OK, &images))
}

async fn find(agent: &Agent, id: &str, kind: Option<&str>) -> Result<Image, AgentError> {
    check_id("image id", id)?;
    let request = ImageRequest {
        id: id.to_string(),
        ..ImageRequest::default()
    };
    let mut images = query(agent, "getImage", kind, &request).await?;
    if images.len() > 1 {
        tracing::error!(
            image = id,
            found = images.len(),
            "more than one back-end has this image; using the first"
        );
    }
    if images.is_empty() {
        return Err(AgentError::NotFound);
    }
    Ok(images.swap_remove(0))
}

pub async fn get_one(
    State(agent): State<AppState>,
    Path(id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, AgentError> {
    let image = find(&agent, &id, kind_param(&params)).await?;
    Ok(json_response(StatusCode::OK, &image))
}

pub async fn fetch(State(agent): State<AppState>, body: Body) -> Result<Response, AgentError> {
    let request: ImageRequest = decode(&read_body(body).await?, false)?;
    if request.id.is_empty() {
        return Err(AgentError::BadRequest("missing id".into()));
    }
    check_id("image id", &request.id)?;
    let action = prefixed(&request.kind, "fetchImage");
    agent.action(&action)?;
    let job = agent
        .submit(AGENT_RUNNER, Work::Image { action, request })
        .await?;
    Ok(accepted(&job, &ImageResponse::default()))
}

pub async fn delete(
    State(agent): State<AppState>,
    Path(id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, AgentError> {
    let image = find(&agent, &id, kind_param(&params)).await?;
    let action = prefixed(&image.kind, "deleteImage");
    agent.action(&action)?;
    let request = ImageRequest {
        id,
        ..ImageRequest::default()
    };
    let job = agent
        .submit(AGENT_RUNNER, Work::Image { action, request })
        .await?;
    Ok(accepted(&job, &json!({})))
}
