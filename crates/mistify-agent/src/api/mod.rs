//! The REST API: routes, the shared request helpers and the middleware of the agent.
//! One file per resource. A handler parses the request into typed values (ids, actions,
//! bodies), calls one operation of the agent core (`crate::ops`) and writes its answer;
//! every error becomes the original JSON error body at this edge.

use std::convert::Infallible;
use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, Request};
use axum::http::{header, HeaderName, HeaderValue, Method, StatusCode};
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

/// Largest request body the agent reads (1 MiB); larger bodies get 413.
pub const BODY_LIMIT: usize = 1024 * 1024;
/// The header carrying the pipeline (job) id.
pub const JOB_ID_HEADER: &str = "X-Guest-Job-ID";

pub type AppState = Arc<Agent>;

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
fn routes(agent: Arc<Agent>) -> HotRoutes {
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
    let api = Router::new()
        .route(
            "/metadata",
            get(metadata::get_hypervisor).patch(metadata::patch_hypervisor),
        )
        .route("/images", get(images::list).post(images::fetch))
        .route("/images/{id}", get(images::get_one).delete(images::delete))
        .route("/jobs", get(jobs::list))
        .route("/jobs/{job}", get(jobs::get_one).delete(jobs::cancel))
        .route("/guests", get(guests::list).post(guests::create))
        .route("/guests/{id}", get(guests::get_one))
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
        .layer(CountAndGateLayer(agent.clone()))
        .with_state(agent.clone());
    HotRoutes { agent, router: api }
}

/// The route template of the metrics route, as `/metrics` labels it.
const METRICS_ROUTE: &str = "/guests/{id}/metrics/{kind}";

/// The router, with `GET /guests/{id}/metrics/{kind}` answered in front of it.
///
/// That route is the agent's busiest (a controller polls every guest), and the router's
/// own work for it (matching, the path parameters decoded into a map, the matched path
/// kept, a route service cloned) cost as many instructions as the rest of the request
/// handling. A path this service answers is one the router would give to the same
/// handler: `GET`, two non-empty parameters, no `/` in them, nothing percent-encoded
/// (every other path, `HEAD` included, goes to the router). It counts the request
/// under the same route label and, being a `GET`, is never refused while draining, as
/// [`CountAndGate`] does.
#[derive(Clone)]
struct HotRoutes {
    agent: AppState,
    router: Router,
}

type HotFuture = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

impl tower::Service<Request> for HotRoutes {
    type Response = Response;
    type Error = Infallible;
    type Future = futures::future::Either<HotFuture, <Router as tower::Service<Request>>::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        tower::Service::<Request>::poll_ready(&mut self.router, cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let hot = match request.method() == Method::GET {
            true => metrics_path(request.uri().path()),
            false => None,
        };
        let Some((id, kind)) = hot else {
            return futures::future::Either::Right(self.router.call(request));
        };
        let agent = self.agent.clone();
        // The URI shares its bytes with the request head: no copy of the path.
        let uri = request.into_parts().0.uri;
        futures::future::Either::Left(Box::pin(async move {
            let path = uri.path();
            let response = match (path.get(id), path.get(kind)) {
                (Some(guest), Some(kind)) => guests::metrics_of(&agent, guest, kind).await,
                _ => AgentError::Internal("the path changed".into()).into_response(),
            };
            agent
                .metrics
                .request("GET", METRICS_ROUTE, response.status().as_u16());
            Ok(response)
        }))
    }
}

/// Where `id` and `kind` lie in a path the metrics route matches, when neither needs
/// decoding: `/guests/{id}/metrics/{kind}`, both non-empty, neither holding a `/`, and
/// no `%` in the path.
fn metrics_path(path: &str) -> Option<(Range<usize>, Range<usize>)> {
    const PREFIX: &[u8] = b"/guests/";
    const MIDDLE: &[u8] = b"/metrics/";
    let bytes = path.as_bytes();
    if !bytes.starts_with(PREFIX) || bytes.contains(&b'%') {
        return None;
    }
    let id_end = PREFIX.len() + bytes[PREFIX.len()..].iter().position(|&b| b == b'/')?;
    let kind_start = id_end + MIDDLE.len();
    let plain = id_end > PREFIX.len()
        && bytes[id_end..].starts_with(MIDDLE)
        && kind_start < bytes.len()
        && !bytes[kind_start..].contains(&b'/');
    plain.then_some((PREFIX.len()..id_end, kind_start..bytes.len()))
}

/// What no route matched: a path with a trailing slash answers 301 to the path without
/// it (gorilla's strict-slash routing; no route ends with a slash, so every such path
/// lands here), anything else the Go router's plain-text 404.
async fn not_found_or_strict_slash(uri: axum::http::Uri) -> Response {
    let path = uri.path();
    // The original's profiling routes are not served: no redirect into them either.
    if path.len() > 1 && path.ends_with('/') && !path.starts_with("/debug/") {
        let mut location = path.trim_end_matches('/').to_string();
        if location.is_empty() {
            location.push('/');
        }
        if let Some(query) = uri.query() {
            location.push('?');
            location.push_str(query);
        }
        if let Ok(value) = HeaderValue::from_str(&location) {
            return (StatusCode::MOVED_PERMANENTLY, [(header::LOCATION, value)]).into_response();
        }
    }
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "404 page not found\n",
    )
        .into_response()
}

/// Counts requests by route template and status; answers 503 to changes while the
/// agent drains. A route layer (the route template is known once a route matched),
/// written as a plain service: `from_fn` would box a clone of the route and a future
/// on every request.
#[derive(Clone)]
struct CountAndGateLayer(AppState);

impl<S> tower::Layer<S> for CountAndGateLayer {
    type Service = CountAndGate<S>;
    fn layer(&self, inner: S) -> CountAndGate<S> {
        CountAndGate {
            agent: self.0.clone(),
            inner,
        }
    }
}

#[derive(Clone)]
struct CountAndGate<S> {
    agent: AppState,
    inner: S,
}

impl<S> tower::Service<Request> for CountAndGate<S>
where
    S: tower::Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Counted<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let route = request.extensions().get::<MatchedPath>().cloned();
        let method = request.method().clone();
        let (inner, refused) =
            if self.agent.is_draining() && method != Method::GET && method != Method::HEAD {
                (None, Some(AgentError::draining().into_response()))
            } else {
                (Some(self.inner.call(request)), None)
            };
        Counted {
            inner,
            refused,
            agent: self.agent.clone(),
            method,
            route,
        }
    }
}

pin_project_lite::pin_project! {
    /// The response of [`CountAndGate`], counted once it is ready.
    struct Counted<F> {
        #[pin]
        inner: Option<F>,
        refused: Option<Response>,
        agent: AppState,
        method: Method,
        route: Option<MatchedPath>,
    }
}

impl<F: Future<Output = Result<Response, Infallible>>> Future for Counted<F> {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = match (this.inner.as_pin_mut(), this.refused.take()) {
            (Some(inner), _) => match std::task::ready!(inner.poll(cx)) {
                Ok(response) => response,
                Err(never) => match never {},
            },
            (None, Some(refused)) => refused,
            // Polled again after it was ready: a caller's bug, answered rather than
            // panicking.
            (None, None) => AgentError::Internal("response polled twice".into()).into_response(),
        };
        let route = this
            .route
            .as_ref()
            .map(MatchedPath::as_str)
            .unwrap_or("unmatched");
        this.agent
            .metrics
            .request(this.method.as_str(), route, response.status().as_u16());
        Poll::Ready(Ok(response))
    }
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

/// Decodes a JSON body; an empty body is an error (`EOF`, as Go's decoder said) unless
/// `empty_ok`, when it decodes as `{}`. Every body is an object: a top-level array is
/// refused as Go refused it (serde alone would fill a struct's fields from the items in
/// order).
pub fn decode<T: DeserializeOwned>(bytes: &[u8], empty_ok: bool) -> Result<T, AgentError> {
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
    serde_json::from_slice(text).map_err(|e| AgentError::BadRequest(e.to_string()))
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

#[cfg(test)]
mod tests {
    use super::metrics_path;

    #[test]
    fn metrics_paths_taken_before_the_router() {
        fn parts(path: &str) -> Option<(&str, &str)> {
            metrics_path(path).map(|(i, k)| (&path[i], &path[k]))
        }
        assert_eq!(parts("/guests/g1/metrics/cpu"), Some(("g1", "cpu")));
        assert_eq!(parts("/guests/metrics/metrics/x"), Some(("metrics", "x")));
        // Unknown kinds and unsafe ids are the handler's to refuse, as from the router.
        assert_eq!(parts("/guests/../metrics/gpu"), Some(("..", "gpu")));
        // Everything else is the router's: empty or encoded parameters, a trailing
        // slash, more segments, other routes.
        for path in [
            "/guests//metrics/cpu",
            "/guests/g1/metrics/",
            "/guests/g1/metrics/cpu/",
            "/guests/g1/metrics/cpu/x",
            "/guests/g%31/metrics/cpu",
            "/guests/g1/metrics/c%70u",
            "/guests/g1/metrics",
            "/guests/g1/metricsx/cpu",
            "/guests/g1/jobs/cpu",
            "/guests/g1",
            "/guests/",
            "/guests",
            "//guests/g1/metrics/cpu",
            "/guests/g1/disks/vda/metrics/cpu",
        ] {
            assert_eq!(parts(path), None, "{path}");
        }
    }
}
