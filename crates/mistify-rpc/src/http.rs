//! HTTP layers shared by every mistify daemon: the per-request log event, gzip on
//! request, panic recovery, `GET /healthz`, tracing set-up and graceful shutdown.
//!
//! One implementation, used by the sub-agent [`crate::Server`] and by the agent.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::compression::CompressionLayer;

/// Put into a response's extensions by the RPC endpoint so the request log names the
/// RPC method.
#[derive(Debug, Clone)]
pub struct RpcMethodName(pub String);

/// Wraps `router` in the shared layers, outermost first: request log, gzip (only when
/// the client sends `Accept-Encoding: gzip`), panic recovery (500, empty body, as the Go
/// daemons answered).
pub fn with_common_layers(router: Router) -> Router {
    router
        .layer(CatchPanicLayer::custom(
            |_panic: Box<dyn std::any::Any + Send>| {
                tracing::error!("a request handler panicked");
                StatusCode::INTERNAL_SERVER_ERROR.into_response()
            },
        ))
        .layer(
            CompressionLayer::new()
                .gzip(true)
                .no_br()
                .no_deflate()
                .no_zstd(),
        )
        .layer(axum::middleware::from_fn(log_request))
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

/// Middleware emitting one `tracing` event per request once its response body is done:
/// HTTP method, path, RPC method (if any), status, bytes sent and duration.
/// (It also writes `Vary` as Go did, see `go_vary`: one middleware instead of two, as
/// each costs an allocation and a boxed future per request.)
pub async fn log_request(req: Request, next: Next) -> Response {
    if !tracing::enabled!(target: "mistify::http", tracing::Level::INFO) {
        // No access log at this level: nothing to measure or wrap.
        return go_vary(next.run(req).await);
    }
    let start = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let response = go_vary(next.run(req).await);
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
    Response::from_parts(parts, body)
}

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

/// Resolves on SIGTERM or Ctrl-C (SIGINT).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!("cannot listen for Ctrl-C: {e}");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("Ctrl-C received, shutting down"),
        _ = term => tracing::info!("SIGTERM received, shutting down"),
    }
}

/// Log output format of the daemons.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line (the Go daemons logged JSON).
    #[default]
    Json,
    /// Human-readable lines.
    Pretty,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "json" => Ok(LogFormat::Json),
            "pretty" | "text" => Ok(LogFormat::Pretty),
            other => Err(format!("unknown log format {other:?} (json or pretty)")),
        }
    }
}

/// Installs the global tracing subscriber: `level` (e.g. `info`, or a full `RUST_LOG`
/// style filter), overridden by `RUST_LOG` when set. Returns an error for a bad filter.
pub fn init_tracing(level: &str, format: LogFormat) -> Result<(), String> {
    use tracing_subscriber::EnvFilter;
    let filter = match std::env::var("RUST_LOG") {
        Ok(env) if !env.is_empty() => EnvFilter::try_new(env),
        _ => EnvFilter::try_new(level),
    }
    .map_err(|e| format!("invalid log level {level:?}: {e}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
    result.map_err(|e| format!("cannot install the log subscriber: {e}"))
}

/// Whether `a` and `b` are equal, in time that depends on their length only (for
/// comparing secrets such as bearer tokens).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
