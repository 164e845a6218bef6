//! The HTTP server of every mistify daemon, with the same limits everywhere.
//!
//! [`serve`] accepts connections on a listener and serves an axum `Router` (or any
//! service answering as one) over HTTP/1.1
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
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::Semaphore;
use tower::ServiceExt;

use crate::layers::App;

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

/// Serves `router` (an axum `Router`, or any service answering as one) on `listener`
/// with `limits` until `shutdown` resolves; then stops accepting, lets the requests in
/// flight finish and closes idle connections. Handlers can extract
/// `ConnectInfo<SocketAddr>`.
pub async fn serve<S: App>(
    listener: tokio::net::TcpListener,
    router: S,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_maybe_tls(listener, router, limits, None, shutdown).await
}

/// As [`serve`], over TLS with `config` (see [`tls_config`]). The handshake must end
/// within [`Limits::header_timeout`]; a failed one closes the connection (logged at debug).
pub async fn serve_tls<S: App>(
    listener: tokio::net::TcpListener,
    router: S,
    limits: Limits,
    config: Arc<rustls::ServerConfig>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    serve_maybe_tls(listener, router, limits, Some(acceptor), shutdown).await
}

async fn serve_maybe_tls<S: App>(
    listener: tokio::net::TcpListener,
    router: S,
    limits: Limits,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // Each request body gets the idle timeout here, where it is boxed anyway (a
    // `Router::layer` would add a box per route and request).
    let body_timeout = limits.body_timeout;
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
                    router
                        .oneshot(request.map(|body| {
                            Body::new(tower_http::timeout::TimeoutBody::new(body_timeout, body))
                        }))
                        .await
                }
            });
        let (http, watcher, tls) = (http.clone(), graceful.watcher(), tls.clone());
        let handshake_timeout = limits.header_timeout;
        tokio::spawn(async move {
            let served =
                match tls {
                    None => {
                        let connection = http.serve_connection(TokioIo::new(stream), service);
                        watcher.watch(connection).await
                    }
                    Some(acceptor) => {
                        let stream =
                            match tokio::time::timeout(handshake_timeout, acceptor.accept(stream))
                                .await
                            {
                                Ok(Ok(s)) => s,
                                Ok(Err(e)) => {
                                    tracing::debug!(%peer, "TLS handshake: {e}");
                                    return;
                                }
                                Err(_) => {
                                    tracing::debug!(%peer, "TLS handshake: timed out");
                                    return;
                                }
                            };
                        let connection = http.serve_connection(TokioIo::new(stream), service);
                        watcher.watch(connection).await
                    }
                };
            if let Err(e) = served {
                tracing::debug!(%peer, "connection: {e}");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Errors of [`tls_config`], each naming the file.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(String);

/// A TLS server configuration from PEM files: the certificate chain, its private key
/// and, for client certificates (mTLS), the CA they must be signed by (then a client
/// without a valid certificate fails the handshake).
pub fn tls_config(
    cert: &std::path::Path,
    key: &std::path::Path,
    client_ca: Option<&std::path::Path>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect())
        .map_err(|e| TlsError(format!("certificate {}: {e}", cert.display())))?;
    if certs.is_empty() {
        return Err(TlsError(format!(
            "certificate {}: no certificate in the file",
            cert.display()
        )));
    }
    let private = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| TlsError(format!("private key {}: {e}", key.display())))?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(format!("TLS: {e}")))?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            let cas: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca)
                .and_then(|certs| certs.collect())
                .map_err(|e| TlsError(format!("client CA {}: {e}", ca.display())))?;
            for c in cas {
                roots
                    .add(c)
                    .map_err(|e| TlsError(format!("client CA {}: {e}", ca.display())))?;
            }
            if roots.is_empty() {
                return Err(TlsError(format!(
                    "client CA {}: no certificate in the file",
                    ca.display()
                )));
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| TlsError(format!("client CA {}: {e}", ca.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(certs, private).map_err(|e| {
        TlsError(format!(
            "certificate {} / key {}: {e}",
            cert.display(),
            key.display()
        ))
    })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
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
