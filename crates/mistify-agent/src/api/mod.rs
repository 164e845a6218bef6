//! The REST API: routes, the shared request helpers and the middleware of the agent.
//! One file per resource. A handler parses the request into typed values (ids, actions,
//! bodies), calls one operation of the agent core (`crate::ops`) and writes its answer;
//! every error becomes the original JSON error body at this edge.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::de::DeserializeOwned;

use crate::agent::Agent;
use crate::error::{json_response, AgentError};
use crate::ops::Pipeline;
use mistify_types::Id;

mod guests;
mod images;
mod jobs;
mod metadata;
mod snapshots;
mod system;

pub use system::PROBE_TIMEOUT;

/// Largest request body the agent reads (1 MiB); larger bodies get 413.
pub const BODY_LIMIT: usize = 1024 * 1024;
/// The header carrying the pipeline (job) id.
pub const JOB_ID_HEADER: &str = "X-Guest-Job-ID";

pub type AppState = Arc<Agent>;

/// Runs `op` to its end even when the client goes away meanwhile: hyper drops the
/// handler of a closed connection, and an operation cut between writing a guest and
/// submitting its job (or between storing a job and handing it to its runner) would leave
/// a guest without its create job, or a job queued forever.
pub(crate) async fn detached<T: Send + 'static>(
    op: impl std::future::Future<Output = Result<T, AgentError>> + Send + 'static,
) -> Result<T, AgentError> {
    tokio::spawn(op)
        .await
        .map_err(|e| AgentError::Internal(format!("the operation did not finish: {e}")))?
}

/// The agent's complete router with its middleware.
pub fn router(agent: Arc<Agent>) -> Router {
    mistify_http::with_common_layers(routes(agent))
}

/// The same as [`router`] as a plain service: what the agent serves (one router fewer
/// to pass through per request).
pub fn service(agent: Arc<Agent>) -> impl mistify_http::App {
    mistify_http::common_layers(routes(agent))
}

/// The routes, without the shared layers.
fn routes(agent: Arc<Agent>) -> Router {
    let snapshot_routes = |prefix: &str| {
        Router::new()
            .route(
                &format!("{prefix}/snapshots"),
                get(snapshots::list).post(snapshots::create),
            )
            .route(
                &format!("{prefix}/snapshots/{{name}}"),
                get(snapshots::get_one).delete(snapshots::delete),
            )
            .route(
                &format!("{prefix}/snapshots/{{name}}/rollback"),
                post(snapshots::rollback),
            )
            .route(
                &format!("{prefix}/snapshots/{{name}}/download"),
                get(snapshots::download),
            )
    };
    Router::new()
        .route(
            "/metadata",
            get(metadata::get_hypervisor).patch(metadata::patch_hypervisor),
        )
        .route("/images", get(images::list).post(images::fetch))
        .route("/images/{id}", get(images::get_one).delete(images::delete))
        .route("/jobs", get(jobs::list))
        .route("/jobs/{job}", get(jobs::get_one).delete(jobs::cancel))
        .route("/guests", get(guests::list).post(guests::create))
        .route("/guests/{id}", get(guests::get_one).delete(guests::delete))
        .route("/guests/{id}/jobs", get(jobs::list_guest))
        .route("/guests/{id}/jobs/{job}", get(jobs::get_guest_job))
        .route(
            "/guests/{id}/metadata",
            get(metadata::get_guest).patch(metadata::patch_guest),
        )
        .route("/guests/{id}/metrics/{kind}", get(guests::metrics))
        .route("/guests/{id}/{action}", post(guests::action))
        .merge(snapshot_routes("/guests/{id}"))
        .merge(snapshot_routes("/guests/{id}/disks/{disk}"))
        .route("/healthz", get(system::healthz))
        .route("/metrics", get(system::metrics))
        .route("/openapi.json", get(system::openapi))
        .method_not_allowed_fallback(|| async { AgentError::MethodNotAllowed.into_response() })
        .fallback(not_found_or_strict_slash)
        .layer(axum::middleware::from_fn_with_state(
            agent.clone(),
            count_and_gate,
        ))
        .with_state(agent)
}

/// What no route matched: a path with a trailing slash answers 301 to the path without
/// it (gorilla's strict-slash routing; no route ends with a slash, so every such path
/// lands here), anything else 404 with the JSON error body of every other error (the Go
/// router's words, `404 page not found`; it answered them as plain text).
async fn not_found_or_strict_slash(uri: axum::http::Uri) -> Response {
    // The original's profiling routes are not served: no redirect into them either.
    let routed = |p: &str| p != "/debug" && !p.starts_with("/debug/");
    mistify_http::strict_slash_redirect(&uri, routed)
        .unwrap_or_else(|| AgentError::NoRoute.into_response())
}

/// Counts requests by route template and status; answers 503 to changes while the
/// agent drains. On every route (the route template is known once a route matched) and
/// the fallback (`unmatched`).
async fn count_and_gate(State(agent): State<AppState>, request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().cloned();
    let method = request.method().clone();
    let response = if agent.is_draining() && method != Method::GET && method != Method::HEAD {
        AgentError::draining().into_response()
    } else {
        next.run(request).await
    };
    let route = route
        .as_ref()
        .map(MatchedPath::as_str)
        .unwrap_or("unmatched");
    agent
        .metrics
        .request(method.as_str(), route, response.status().as_u16());
    response
}

/// Parses an id of the path or body: 400 for one that is unsafe in a path, a dataset
/// name or a store key (the one id rule, [`mistify_types::id::check`];
/// `openapi::id_pattern` says the same to clients).
pub fn id(what: &'static str, text: &str) -> Result<Id, AgentError> {
    Id::parse(what, text).map_err(|e| AgentError::BadRequest(e.to_string()))
}

/// Reads the whole body, up to [`BODY_LIMIT`].
pub async fn read_body(body: Body) -> Result<Bytes, AgentError> {
    axum::body::to_bytes(body, BODY_LIMIT).await.map_err(|e| {
        if mistify_http::caused_by::<http_body_util::LengthLimitError>(&e) {
            AgentError::TooLarge(BODY_LIMIT)
        } else if mistify_http::is_body_timeout(&e) {
            AgentError::BodyTimeout
        } else {
            AgentError::BadRequest(format!("cannot read the request body: {e}"))
        }
    })
}

/// How a body's unknown keys are handled, as Kubernetes' field validation
/// (`?fieldValidation=`): `Warn` (the default) accepts the body and answers one
/// `Warning` header per unknown key, so Go clients keep working; `Strict` refuses it
/// with 400 naming each; `Ignore` says nothing (the Go agent's way).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldValidation {
    Ignore,
    Warn,
    Strict,
}

impl FieldValidation {
    /// The mode of a request's `fieldValidation` (any case); 400 for another value.
    pub fn of(query: &std::collections::HashMap<String, String>) -> Result<Self, AgentError> {
        match query.get("fieldValidation").map(|v| v.to_ascii_lowercase()) {
            None => Ok(FieldValidation::Warn),
            Some(v) if v == "warn" => Ok(FieldValidation::Warn),
            Some(v) if v == "strict" => Ok(FieldValidation::Strict),
            Some(v) if v == "ignore" => Ok(FieldValidation::Ignore),
            Some(v) => Err(AgentError::BadRequest(format!(
                "invalid fieldValidation {v:?}: Strict, Warn or Ignore expected"
            ))),
        }
    }
}

/// A decoded body and the keys it held that no field takes (`nics.0.macc`).
#[derive(Debug)]
pub struct Decoded<T> {
    pub value: T,
    pub unknown: Vec<String>,
}

impl<T> Decoded<T> {
    /// The `Warning` headers of the unknown keys on `response` (mode `Warn`).
    pub fn warn(&self, mode: FieldValidation, mut response: Response) -> Response {
        if mode == FieldValidation::Warn {
            for key in &self.unknown {
                // A quoted-string: `"` and `\` inside are escaped (RFC 9110 5.6.4).
                let quoted = key.replace('\\', "\\\\").replace('"', "\\\"");
                let text = format!("299 - \"unknown field \\\"{quoted}\\\"\"");
                if let Ok(v) = HeaderValue::from_str(&text) {
                    response.headers_mut().append(header::WARNING, v);
                }
            }
        }
        response
    }
}

/// Decodes a JSON body; an empty body is an error (`EOF`, as Go's decoder said) unless
/// `empty_ok`, when it decodes as `{}`. Every body is an object: a top-level array is
/// refused as Go refused it (serde alone would fill a struct's fields from the items in
/// order). Unknown keys are collected; with `Strict` they are a 400 naming each.
pub fn decode_checked<T: DeserializeOwned>(
    bytes: &[u8],
    empty_ok: bool,
    mode: FieldValidation,
) -> Result<Decoded<T>, AgentError> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    let text = match first {
        None if !empty_ok => return Err(AgentError::BadRequest("EOF".into())),
        None => &b"{}"[..],
        Some(b'[') => {
            return Err(AgentError::BadRequest(
                "the request body must be a JSON object, not an array".into(),
            ))
        }
        Some(_) => bytes,
    };
    let mut unknown = Vec::new();
    let mut de = serde_json::Deserializer::from_slice(text);
    let value: T = serde_ignored::deserialize(&mut de, |path| {
        // `?` stands for an optional (or `null`-tolerant) level: not part of the key.
        let path = path.to_string().replace("?.", "");
        unknown.push(path.trim_end_matches(".?").to_string());
    })
    .and_then(|v| de.end().map(|()| v))
    .map_err(|e| AgentError::BadRequest(e.to_string()))?;
    if mode == FieldValidation::Strict && !unknown.is_empty() {
        let names: Vec<String> = unknown.iter().map(|k| format!("{k:?}")).collect();
        return Err(AgentError::BadRequest(format!(
            "unknown field{} {} (fieldValidation=Strict)",
            if names.len() == 1 { "" } else { "s" },
            names.join(", ")
        )));
    }
    Ok(Decoded { value, unknown })
}

/// [`decode_checked`] for bodies whose unknown keys are ignored.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], empty_ok: bool) -> Result<T, AgentError> {
    decode_checked(bytes, empty_ok, FieldValidation::Ignore).map(|d| d.value)
}

/// Sets `X-Guest-Job-ID` on a response.
pub fn with_job_id(mut response: Response, job_id: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(job_id) {
        // A constant name: a `&str` name that is not a standard header is parsed and
        // copied on every insert.
        static NAME: HeaderName = HeaderName::from_static("x-guest-job-id");
        response.headers_mut().insert(NAME.clone(), v);
    }
    response
}

/// 202 with `body`, `X-Guest-Job-ID` and `Location: /jobs/{id}`.
pub fn accepted(job_id: &str, body: &impl serde::Serialize) -> Response {
    let mut response = with_job_id(json_response(StatusCode::ACCEPTED, body), job_id);
    if let Ok(v) = HeaderValue::from_str(&format!("/jobs/{job_id}")) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    response
}

/// The answer to a synchronous pipeline: `ok` of its result, or its error, with the
/// pipeline's id in `X-Guest-Job-ID` either way.
pub fn pipeline_response<T>(pipeline: Pipeline<T>, ok: impl FnOnce(T) -> Response) -> Response {
    let response = match pipeline.outcome {
        Ok(value) => ok(value),
        Err(e) => e.into_response(),
    };
    with_job_id(response, &pipeline.id)
}
