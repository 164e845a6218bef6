//! The HTTP server every mistify daemon runs, with the same limits everywhere.
//!
//! [`serve`] accepts connections on a listener and serves an axum `Router` over HTTP/1.1
//! with [`Limits`]:
//!
//! * request heads larger than `max_header_bytes` are answered `431` and the connection
//!   closed;
//! * a connection must send a complete request head within `header_timeout` of being
//!   opened or of finishing the previous reply, else it is closed — that bounds slow
//!   senders and idle keep-alive connections alike;
//! * a request body must keep arriving: more than `body_timeout` between two chunks is
//!   an error for the handler reading it (the agent answers 408);
//! * at most `max_in_flight` requests are handled at once; one more is answered `503`
//!   with `Retry-After: 1` at once, without reaching the handler (load shedding).
//!
//! Request bodies have their own per-route limits (the agent 1 MiB, a sub-agent 16 MiB).

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::Semaphore;
use tower::ServiceExt;

/// Limits of one daemon's HTTP server (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest request head (request line and headers), bytes. Default 64 KiB.
    pub max_header_bytes: usize,
    /// Longest wait for a complete request head on a connection. Default 30 s.
    pub header_timeout: Duration,
    /// Longest pause between two chunks of a request body. Default 30 s.
    pub body_timeout: Duration,
    /// Most requests handled at once; beyond, `503`. Default 1024.
    pub max_in_flight: usize,
}

/// Default of [`Limits::max_header_bytes`].
pub const DEFAULT_MAX_HEADER_BYTES: usize = 64 * 1024;
/// Default of [`Limits::header_timeout`].
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// Default of [`Limits::body_timeout`].
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// Default of [`Limits::max_in_flight`].
pub const DEFAULT_MAX_IN_FLIGHT: usize = 1024;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
        }
    }
}

/// Serves `router` on `listener` with `limits` until `shutdown` resolves; then stops
/// accepting, lets the requests in flight finish and closes idle connections. Handlers
/// can extract `ConnectInfo<SocketAddr>`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = router.layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
        limits.body_timeout,
    ));
    let in_flight = Arc::new(Semaphore::new(limits.max_in_flight.max(1)));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        // The read buffer must hold a whole head; hyper's minimum is 8 KiB.
        .max_buf_size(limits.max_header_bytes.max(8192))
        .max_header_size(limits.max_header_bytes);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait, do not spin.
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let in_flight = in_flight.clone();
        let service =
            hyper::service::service_fn(move |mut request: Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                let router = router.clone();
                let permit = in_flight.clone().try_acquire_owned();
                async move {
                    let Ok(_permit) = permit else {
                        return Ok::<_, Infallible>(overloaded());
                    };
                    router.oneshot(request.map(Body::new)).await
                }
            });
        let connection = http.serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(%peer, "connection: {e}");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// The `503` of load shedding.
fn overloaded() -> Response {
    let mut response = (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::CONTENT_TYPE, "application/json")],
        r#"{"message":"too many requests in flight, try again","code":503,"stack":[]}"#,
    )
        .into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// Whether `error` or any error in its source chain is a `T` (body errors arrive wrapped
/// once or twice by axum and hyper).
pub fn caused_by<T: std::error::Error + 'static>(
    error: &(dyn std::error::Error + 'static),
) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if e.is::<T>() {
            return true;
        }
        current = e.source();
    }
    false
}

/// Whether reading a request body failed because it stopped arriving
/// ([`Limits::body_timeout`]).
pub fn is_body_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    caused_by::<tower_http::timeout::TimeoutError>(error)
}
