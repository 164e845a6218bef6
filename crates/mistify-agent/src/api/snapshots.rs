//! Snapshots of a guest (`/guests/{id}/snapshots…`) or of one of its disks
//! (`/guests/{id}/disks/{disk}/snapshots…`). The storage sub-agent gets the entity
//! `guests/<id>[/disk-<disk>][@<name>]`.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use mistify_types::SnapshotRequest;

use super::{
    accepted, decode_checked, id, pipeline_response, read_body, AppState, FieldValidation,
};
use crate::agent::Agent;
use crate::error::{json_response, AgentError};
use crate::ops::{disk_index, SnapshotTarget};

/// The path parameters of every snapshot route: `id`, optional `disk`, optional `name`.
type Params = HashMap<String, String>;

/// The target of the path: the guest (checked to exist) first, then its disk (by index,
/// dataset name or device) and name.
fn target(agent: &Agent, params: &Params) -> Result<SnapshotTarget, AgentError> {
    let guest = id("guest id", params.get("id").map_or("", String::as_str))?;
    let record = agent.guest(&guest)?;
    let disk = params
        .get("disk")
        .map(|d| id("disk", d).and_then(|d| disk_index(&record, &d)))
        .transpose()?;
    let name = params
        .get("name")
        .map(|n| id("snapshot name", n))
        .transpose()?;
    Ok(SnapshotTarget { guest, disk, name })
}

pub async fn list(
    State(agent): State<AppState>,
    Path(params): Path<Params>,
) -> Result<Response, AgentError> {
    let target = target(&agent, &params)?;
    let pipeline = agent.list_snapshots(&target).await?;
    Ok(pipeline_response(pipeline, |v| {
        json_response(StatusCode::OK, &v)
    }))
}

pub async fn get_one(
    State(agent): State<AppState>,
    Path(params): Path<Params>,
) -> Result<Response, AgentError> {
    let target = target(&agent, &params)?;
    let pipeline = agent.snapshot(&target).await?;
    Ok(pipeline_response(pipeline, |v| {
        json_response(StatusCode::OK, &v)
    }))
}

pub async fn create(
    State(agent): State<AppState>,
    Path(params): Path<Params>,
    Query(query): Query<HashMap<String, String>>,
    body: Body,
) -> Result<Response, AgentError> {
    let target = target(&agent, &params)?;
    let mode = FieldValidation::of(&query)?;
    let decoded = decode_checked::<SnapshotRequest>(&read_body(body).await?, true, mode)?;
    let name = match decoded.value.dest.as_str() {
        "" => None,
        dest => Some(id("snapshot name", dest)?),
    };
    let done = agent.create_snapshot(&target, name).await?;
    Ok(decoded.warn(mode, accepted(&done.job, &done.body)))
}

pub async fn delete(
    State(agent): State<AppState>,
    Path(params): Path<Params>,
) -> Result<Response, AgentError> {
    let target = target(&agent, &params)?;
    let done = agent.delete_snapshot(&target).await?;
    Ok(accepted(&done.job, &done.body))
}

pub async fn rollback(
    State(agent): State<AppState>,
    Path(params): Path<Params>,
    Query(query): Query<HashMap<String, String>>,
    body: Body,
) -> Result<Response, AgentError> {
    let target = target(&agent, &params)?;
    let mode = FieldValidation::of(&query)?;
    let decoded = decode_checked::<SnapshotRequest>(&read_body(body).await?, true, mode)?;
    let body = &decoded.value;
    let done = agent
        .rollback_snapshot(&target, body.recursive, body.destroy_more_recent)
        .await?;
    Ok(decoded.warn(mode, accepted(&done.job, &done.body)))
}

/// A plain-text answer, as Go's `http.Error` writes one.
fn plain(status: StatusCode, text: String) -> Response {
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
}

/// Proxies the storage agent's bytes; its non-200 answers are passed on as text.
pub async fn download(
    State(agent): State<AppState>,
    Path(params): Path<Params>,
) -> Result<Response, AgentError> {
    let target = target(&agent, &params)?;
    let pipeline = agent.download_snapshot(&target).await?;
    let response = match pipeline.outcome {
        Err(e) => plain(e.status(), format!("{e}\n")),
        Ok((stream, _slot)) if stream.status != StatusCode::OK => {
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
        Ok((stream, slot)) => {
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
    Ok(super::with_job_id(response, &pipeline.id))
}
