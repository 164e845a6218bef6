//! HTTP layers shared by every mistify daemon: the per-request log event, gzip on
//! request, panic recovery and `GET /healthz`.
//!
//! One implementation, used by the sub-agents' RPC server, the agent and the supervisor.

use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use bytes::Bytes;
use futures::FutureExt as _;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tower::Layer as _;
use tower_http::compression::predicate::{NotForContentType, Predicate};
use tower_http::compression::CompressionLayer;

/// What the shared layers wrap and [`crate::serve`] serves: an axum `Router`,
/// or any service answering requests as one.
pub trait App:
    tower::Service<Request, Response = Response, Error = Infallible, Future: Send + 'static>
    + Clone
    + Send
    + Sync
    + 'static
{
}

impl<S> App for S where
    S: tower::Service<Request, Response = Response, Error = Infallible, Future: Send + 'static>
        + Clone
        + Send
        + Sync
        + 'static
{
}

/// Put into a response's extensions by the RPC endpoint so the request log names the
/// RPC method.
#[derive(Debug, Clone)]
pub struct RpcMethodName(pub String);

/// Wraps `router` (a [`Router`] or any service answering as one) in the shared layers,
/// outermost first: request log, gzip (only when the client sends `Accept-Encoding:
/// gzip`), panic recovery (500, empty body, as the Go daemons answered).
///
/// The layers wrap the router as a whole, as one concrete service, not each route
/// (`Router::layer` boxes every route once per layer, and axum clones that chain of
/// boxes on every request). The result is a router again, whose fallback is that
/// service: one box per request for the whole stack.
pub fn with_common_layers<S: App>(router: S) -> Router {
    Router::new().fallback_service(common_layers(router))
}

/// The layers of [`with_common_layers`] around `inner`, as a service of its own rather
/// than a router: what [`crate::serve`] takes without the router's own work per
/// request (a route lookup, a boxed service cloned and called).
pub fn common_layers<S: App>(inner: S) -> impl App {
    // Every reply when the client asks, whatever its size, as Go's handler compressed
    // (the default predicate skips bodies under 32 bytes: a metrics answer, an error).
    let compressible = NotForContentType::GRPC
        .and(NotForContentType::IMAGES)
        .and(NotForContentType::SSE);
    let compressed = CompressionLayer::new()
        .gzip(true)
        .no_br()
        .no_deflate()
        .no_zstd()
        .compress_when(compressible)
        .layer(inner);
    Edge { inner: compressed }
}

/// The outermost layer: panic recovery, Go's `Vary` spelling and, when the
/// `mistify::http` target logs at `INFO`, one event per request (see [`LoggedBody`]).
#[derive(Clone)]
struct Edge<S> {
    inner: S,
}

impl<S, B> tower::Service<Request> for Edge<S>
where
    S: tower::Service<Request, Response = http::Response<B>, Error = Infallible>,
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = EdgeFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let log = tracing::enabled!(target: "mistify::http", tracing::Level::INFO).then(|| {
            (
                Instant::now(),
                req.method().clone(),
                req.uri().path().to_owned(),
            )
        });
        // A panic while the request is handed over counts as one in the handler.
        let inner = std::panic::catch_unwind(AssertUnwindSafe(|| self.inner.call(req)))
            .ok()
            .map(|future| AssertUnwindSafe(future).catch_unwind());
        EdgeFuture { inner, log }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`Edge`]: the inner response, mapped as it becomes ready.
    struct EdgeFuture<F> {
        #[pin]
        inner: Option<futures::future::CatchUnwind<AssertUnwindSafe<F>>>,
        log: Option<(Instant, Method, String)>,
    }
}

impl<F, B> Future for EdgeFuture<F>
where
    F: Future<Output = Result<http::Response<B>, Infallible>>,
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = match this.inner.as_pin_mut() {
            Some(inner) => match std::task::ready!(inner.poll(cx)) {
                Ok(Ok(response)) => go_vary(response.map(Body::new)),
                Ok(Err(never)) => match never {},
                Err(_panic) => panicked(),
            },
            None => panicked(),
        };
        let Some((start, method, path)) = this.log.take() else {
            return Poll::Ready(Ok(response));
        };
        let rpc = response
            .extensions()
            .get::<RpcMethodName>()
            .map(|m| m.0.clone())
            .unwrap_or_default();
        let status = response.status();
        let (parts, body) = response.into_parts();
        let body = Body::new(LoggedBody {
            inner: body,
            bytes: 0,
            start,
            method,
            path,
            rpc,
            status,
        });
        Poll::Ready(Ok(Response::from_parts(parts, body)))
    }
}

/// The answer to a request whose handler panicked: 500, empty body, as Go answered.
fn panicked() -> Response {
    tracing::error!("a request handler panicked");
    StatusCode::INTERNAL_SERVER_ERROR.into_response()
}

/// Writes the `Vary` of gzip replies as Go did (`Accept-Encoding`, not the lower-case
/// spelling of the compression layer); header values are compared verbatim by some
/// clients and by the recorded fixtures.
fn go_vary(mut response: Response) -> Response {
    let vary = response
        .headers()
        .get(header::VARY)
        .map(|v| v.as_bytes().to_vec());
    if let Some(v) = vary {
        if v.eq_ignore_ascii_case(b"accept-encoding") {
            response
                .headers_mut()
                .insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
        }
    }
    response
}

/// `GET /healthz` answering `{"status":"ok","service":NAME,"version":VERSION}`.
pub fn healthz_route(service: &str, version: &str) -> Router {
    let body =
        serde_json::json!({ "status": "ok", "service": service, "version": version }).to_string();
    Router::new().route(
        "/healthz",
        axum::routing::get(move || {
            let body = body.clone();
            async move {
                (
                    [(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    )],
                    body,
                )
            }
        }),
    )
}

/// A readiness check for `/healthz`: `Err(reason)` when the daemon cannot serve yet.
pub type HealthCheck = std::sync::Arc<
    dyn Fn() -> futures::future::BoxFuture<'static, Result<(), String>> + Send + Sync,
>;

/// `GET /healthz` that asks `check` first: 200 `{"status":"ok","service","version"}`
/// when it passes, else 503 `{"status":"unavailable","service","version","reason"}`
/// (a supervisor's `ready: http:` probe keeps waiting on a 503).
pub fn healthz_route_checked(service: &str, version: &str, check: HealthCheck) -> Router {
    let (service, version) = (service.to_string(), version.to_string());
    Router::new().route(
        "/healthz",
        axum::routing::get(move || {
            let (service, version, check) = (service.clone(), version.clone(), check.clone());
            async move {
                let (status, body) = match check().await {
                    Ok(()) => (
                        StatusCode::OK,
                        serde_json::json!({ "status": "ok", "service": service, "version": version }),
                    ),
                    Err(reason) => (
                        StatusCode::SERVICE_UNAVAILABLE,
                        serde_json::json!({
                            "status": "unavailable",
                            "service": service,
                            "version": version,
                            "reason": reason,
                        }),
                    ),
                };
                (
                    status,
                    [(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    )],
                    body.to_string(),
                )
            }
        }),
    )
}

/// The body of a logged request: one `tracing` event once it is done (or dropped) with
/// the HTTP method, path, RPC method (if any), status, bytes sent and duration.
struct LoggedBody {
    inner: Body,
    bytes: u64,
    start: Instant,
    method: Method,
    path: String,
    rpc: String,
    status: StatusCode,
}

impl HttpBody for LoggedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                self.bytes += data.len() as u64;
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for LoggedBody {
    fn drop(&mut self) {
        tracing::info!(
            target: "mistify::http",
            http_method = %self.method,
            path = %self.path,
            rpc_method = %self.rpc,
            status = self.status.as_u16(),
            bytes = self.bytes,
            duration_us = self.start.elapsed().as_micros() as u64,
            "request processed"
        );
    }
}
