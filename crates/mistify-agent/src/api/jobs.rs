//! The job log: lists (all, per guest), one job (with `?wait=` long poll), cancel.

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;

use super::{id, AppState};
use crate::error::{json_response, AgentError};

/// Default `limit` of a job list. A larger one returns at most the whole log, which
/// pruning keeps to `joblog_max` jobs.
pub const DEFAULT_LIMIT: usize = 1000;
/// Longest `?wait=` accepted, in seconds.
pub const MAX_WAIT_SECONDS: u64 = 300;

/// `limit`: a whole number (the default when absent); anything else is 400, as for
/// `wait` (the original ignored a `limit` that was not digits).
fn limit(query: &HashMap<String, String>) -> Result<usize, AgentError> {
    match query.get("limit") {
        None => Ok(DEFAULT_LIMIT),
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|_| v.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| {
                AgentError::BadRequest(format!("invalid limit {v:?}: a whole number expected"))
            }),
    }
}

pub async fn list(
    State(agent): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, AgentError> {
    let n = limit(&query)?;
    let jobs = agent.store.blocking(move |s| s.jobs(n)).await?;
    Ok(json_response(StatusCode::OK, &jobs))
}

pub async fn list_guest(
    State(agent): State<AppState>,
    Path(guest): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, AgentError> {
    let guest = id("guest id", &guest)?;
    let n = limit(&query)?;
    let jobs = agent
        .store
        .blocking(move |s| s.guest_jobs(&guest, n))
        .await?;
    Ok(json_response(StatusCode::OK, &jobs))
}

pub async fn get_one(
    State(agent): State<AppState>,
    Path(job): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, AgentError> {
    let job = id("job id", &job)?;
    let job = match query.get("wait") {
        None => agent.store.job(&job)?.ok_or(AgentError::NotFound)?,
        Some(w) => {
            let seconds: f64 = w
                .parse()
                .ok()
                .filter(|s: &f64| s.is_finite() && *s >= 0.0)
                .ok_or_else(|| {
                    AgentError::BadRequest(format!("invalid wait {w:?}: seconds expected"))
                })?;
            let wait = Duration::from_secs_f64(seconds.min(MAX_WAIT_SECONDS as f64));
            agent.wait_job(&job, wait).await?
        }
    };
    Ok(json_response(StatusCode::OK, &job))
}

pub async fn get_guest_job(
    State(agent): State<AppState>,
    Path((guest, job)): Path<(String, String)>,
) -> Result<Response, AgentError> {
    let guest = id("guest id", &guest)?;
    let job = id("job id", &job)?;
    match agent.store.job(&job)? {
        Some(job) if job.guest_id == *guest => Ok(json_response(StatusCode::OK, &job)),
        _ => Err(AgentError::NotFound),
    }
}

pub async fn cancel(
    State(agent): State<AppState>,
    Path(job): Path<String>,
) -> Result<Response, AgentError> {
    let job = id("job id", &job)?;
    let job = agent.cancel(&job).await?;
    Ok(json_response(StatusCode::OK, &job))
}
