//! Snapshots of a guest (`/guests/{id}/snapshots…`) or of one of its disks
//! (`/guests/{id}/disks/{disk}/snapshots…`). The storage sub-agent gets the entity
//! `guests/<id>[/disk-<disk>][@<name>]`.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use mistify_client::SnapshotRequest;
use mistify_rpc::RpcError;
use serde_json::{json, Value};

use super::guests::load;
use super::{accepted, check_id, decode, pipeline_id, read_body, with_job_id, AppState};
use crate::agent::{Agent, Work};
use crate::error::{json_response, AgentError};

/// The path parameters of every snapshot route: `id`, optional `disk`, optional `name`.
type Params = HashMap<String, String>;

struct Target {
    guest: String,
    /// `guests/<id>[/disk-<disk>]`
    entity: String,
    /// No disk in the path: the whole guest, recursively.
    recursive: bool,
    name: Option<String>,
}

impl Target {
    fn from(agent: &Agent, params: &Params) -> Result<Target, AgentError> {
        let id = params.get("id").cloned().unwrap_or_default();
        load(agent, &id)?;
        let mut entity = format!("guests/{id}");
        let disk = params.get("disk");
        if let Some(disk) = disk {
            check_id("disk", disk)?;
            entity.push_str("/disk-");
            entity.push_str(disk);
        }
        let name = params.get("name").cloned();
        if let Some(name) = &name {
            check_id("snapshot name", name)?;
        }
        Ok(Target {
            guest: id,
            entity,
            recursive: disk.is_none(),
            name,
        })
    }

    fn full(&self) -> String {
        match &self.name {
            Some(n) => format!("{}@{n}", self.entity),
            None => self.entity.clone(),
        }
    }
}

/// Info errors: the storage agent's `not found` is a 404.
fn info_error(e: AgentError) -> AgentError {
    match &e {
        AgentError::Rpc(RpcError::Remote { message, .. }) if message.trim() == "not found" => {
            AgentError::NotFound
        }
        _ => e,
    }
}

async fn info(agent: &Agent, target: &Target, action: &str) -> Result<Response, AgentError> {
    agent.action(action)?;
    let job_id = pipeline_id();
    let request = SnapshotRequest {
        id: target.full(),
        ..SnapshotRequest::default()
    };
    let runner = agent
        .runner(&target.guest)
        .ok_or_else(|| AgentError::Internal("guest runner not found".into()))?;
    let result = async {
        let _slot = runner.info_slot().await?;
        agent
            .run_plain(action, &request, json!({"snapshots": null}))
            .await
    }
    .await;
    let response = match result {
        Ok(mut v) => {
            let snapshots = v
                .get_mut("snapshots")
                .map(Value::take)
                .unwrap_or(Value::Null);
            json_response(StatusCode::OK, &snapshots)
        }
        Err(e) => info_error(e).into_response(),
    };
    Ok(with_job_id(response, &job_id))
}

pub async fn list(
    State(agent): State<AppState>,
    Path(params): Path<Params>,
) -> Result<Response, AgentError> {
    let target = Target::from(&agent, &params)?;
    info(&agent, &target, "listSnapshots").await
}

pub async fn get_one(
    State(agent): State<AppState>,
    Path(params): Path<Params>,
) -> Result<Response, AgentError> {
    let target = Target::from(&agent, &params)?;
    info(&agent, &target, "getSnapshot").await
}

async fn submit(
    agent: &AppState,
    target: &Target,
    action: &str,
    request: SnapshotRequest,
) -> Result<Response, AgentError> {
    agent.action(action)?;
    let work = Work::Snapshot {
        action: action.to_string(),
        request,
    };
    let job = agent.submit(&target.guest, work).await?;
    Ok(accepted(&job, &Value::Null))
}

pub async fn create(
    State(agent): State<AppState>,
    Path(params): Path<Params>,
    body: Body,
) -> Result<Response, AgentError> {
    let target = Target::from(&agent, &params)?;
    let mut request: SnapshotRequest = decode(&read_body(body).await?, true)?;
    if request.dest.is_empty() {
        request.dest = format!("snap-{}", chrono::Utc::now().timestamp());
    }
    check_id("snapshot name", &request.dest)?;
    request.id = target.entity.clone();
    request.recursive = target.recursive;
    submit(&agent, &target, "createSnapshot", request).await
}

pub async fn delete(
    State(agent): State<AppState>,
    Path(params): Path<Params>,
) -> Result<Response, AgentError> {
    let target = Target::from(&agent, &params)?;
    let request = SnapshotRequest {
        id: target.full(),
        recursive: target.recursive,
        ..SnapshotRequest::default()
    };
    submit(&agent, &target, "deleteSnapshot", request).await
}

pub async fn rollback(
    State(agent): State<AppState>,
    Path(params): Path<Params>,
    body: Body,
) -> Result<Response, AgentError> {
    let target = Target::from(&agent, &params)?;
    let body: SnapshotRequest = decode(&read_body(body).await?, true)?;
    let request = SnapshotRequest {
        id: target.full(),
        dest: String::new(),
        recursive: body.recursive,
        destroy_more_recent: body.destroy_more_recent,
    };
    submit(&agent, &target, "rollbackSnapshot", request).await
}

/// Proxies the storage agent's bytes; its non-200 answers are passed on as text.
pub async fn download(
    State(agent): State<AppState>,
    Path(params): Path<Params>,
) -> Result<Response, AgentError> {
    let target = Target::from(&agent, &params)?;
    let action = "downloadSnapshot";
    agent.action(action)?;
    let job_id = pipeline_id();
    let runner = agent
        .runner(&target.guest)
        .ok_or_else(|| AgentError::Internal("guest runner not found".into()))?;
    let slot = runner.stream_slot().await?;
    let request = SnapshotRequest {
        id: target.full(),
        recursive: target.recursive,
        ..SnapshotRequest::default()
    };
    let plain = |status: StatusCode, text: String| {
        (
            status,
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; charset=utf-8"),
                ),
                (
                    header::X_CONTENT_TYPE_OPTIONS,
                    HeaderValue::from_static("nosniff"),
                ),
            ],
            text,
        )
            .into_response()
    };
    let response = match agent.open_stream(action, &request).await {
        Err(e) => {
            let status = e.status();
            plain(status, format!("{e}\n"))
        }
        Ok(stream) if stream.status != StatusCode::OK => {
            let status = stream.status;
            let text = stream
                .collect()
                .await
                .map(|b| String::from_utf8_lossy(&b).into_owned());
            plain(
                status,
                format!("{}\n", text.unwrap_or_else(|e| e.to_string()).trim_end()),
            )
        }
        Ok(stream) => {
            let guest = target.guest.clone();
            // The Stream slot is held until the last byte is sent.
            let body = stream.body.map(move |chunk| {
                let _held = &slot;
                chunk.map_err(|e| {
                    tracing::warn!(guest = %guest, "snapshot download broke off: {e}");
                    std::io::Error::other(e.to_string())
                })
            });
            let mut response = Body::from_stream(body).into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            response
        }
    };
    Ok(with_job_id(response, &job_id))
}
