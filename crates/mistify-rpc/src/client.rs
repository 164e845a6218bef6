//! The JSON-RPC client the agent uses to call its sub-agents.
//!
//! One [`Client`] holds a pool of keep-alive connections; [`Client::service`] gives a
//! cheap [`Service`] handle per configured sub-agent with its own URL, timeouts and
//! concurrency limit. Calls send `{"jsonrpc":"2.0","method","params":[obj],"id"}` (Go v1
//! servers ignore the extra key) without asking for gzip, and read v1 and 2.0 replies,
//! gzip-encoded or not.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};
use http::header::{HeaderMap, CONTENT_ENCODING};
use http::StatusCode;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::io::AsyncReadExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::{conn, RPC_PATH};

/// Default overall timeout of one call.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default idle timeout of a stream (time without a byte).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default timeout to establish a TCP connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// First capacity of a request body buffer, in bytes.
const REQUEST_CAPACITY: usize = 1024;

/// Everything that can go wrong in a call. Each variant names the service and method.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    /// The request could not be sent or the reply not read (connection refused, reset…).
    #[error("service {service:?} ({method}): {message}")]
    Transport {
        service: String,
        method: String,
        message: String,
    },
    /// No complete reply within the service's timeout (or a stream went idle).
    #[error("service {service:?} ({method}): timed out after {after:?}")]
    Timeout {
        service: String,
        method: String,
        after: Duration,
    },
    /// HTTP status ≥ 400; the message is the reply body as text, as the Go agent used it.
    #[error("{body}")]
    Status {
        service: String,
        method: String,
        status: u16,
        body: String,
    },
    /// The reply carried an error; its text (v1 string, or 2.0 `message`).
    #[error("{message}")]
    Remote {
        service: String,
        method: String,
        message: String,
        code: Option<i64>,
    },
    /// The reply had neither an error nor a result.
    #[error("result is null")]
    NullResult { service: String, method: String },
    /// The reply could not be decoded, or the params could not be encoded.
    #[error("service {service:?} ({method}): {message}")]
    Decode {
        service: String,
        method: String,
        message: String,
    },
}

impl RpcError {
    /// The configured name of the service the call went to.
    pub fn service(&self) -> &str {
        match self {
            RpcError::Transport { service, .. }
            | RpcError::Timeout { service, .. }
            | RpcError::Status { service, .. }
            | RpcError::Remote { service, .. }
            | RpcError::NullResult { service, .. }
            | RpcError::Decode { service, .. } => service,
        }
    }

    /// The RPC method (or the stream path) of the call.
    pub fn method(&self) -> &str {
        match self {
            RpcError::Transport { method, .. }
            | RpcError::Timeout { method, .. }
            | RpcError::Status { method, .. }
            | RpcError::Remote { method, .. }
            | RpcError::NullResult { method, .. }
            | RpcError::Decode { method, .. } => method,
        }
    }

    /// True when the sub-agent could not be reached or did not answer in time: the
    /// agent reports these as 502/504 rather than as the sub-agent's own error.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, RpcError::Transport { .. } | RpcError::Timeout { .. })
    }
}

/// Where and how to reach one sub-agent.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// Base URL, e.g. `http://127.0.0.1:20001`.
    pub base_url: String,
    /// Path of the endpoint (default `/_mistify_RPC_`; a Stream service's path such as
    /// `/snapshots/download`).
    pub path: String,
    /// Overall timeout of a call (connect, send, whole reply).
    pub timeout: Duration,
    /// For streams: the longest wait for the reply head or for the next chunk.
    pub idle_timeout: Duration,
    /// Most calls in flight at once; further calls wait (inside their timeout).
    pub max_pending: Option<usize>,
    /// Sent as `Authorization: Bearer <token>` to a sub-agent that requires one
    /// ([`crate::Server::require_token`]).
    pub token: Option<String>,
}

impl ServiceConfig {
    /// A sub-agent on `127.0.0.1:port` at the default RPC path, default timeouts.
    pub fn local(port: u16) -> Self {
        ServiceConfig::url(format!("http://127.0.0.1:{port}"))
    }

    /// A sub-agent at `base_url` (no trailing slash needed), default path and timeouts.
    pub fn url(base_url: impl Into<String>) -> Self {
        ServiceConfig {
            base_url: base_url.into(),
            path: RPC_PATH.to_string(),
            timeout: DEFAULT_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_pending: None,
            token: None,
        }
    }

    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.path = path.into();
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn idle_timeout(mut self, idle: Duration) -> Self {
        self.idle_timeout = idle;
        self
    }

    pub fn max_pending(mut self, max: usize) -> Self {
        self.max_pending = Some(max.max(1));
        self
    }

    /// The bearer token the sub-agent requires (`None`: send none).
    pub fn token(mut self, token: Option<String>) -> Self {
        self.token = token;
        self
    }
}

/// How a [`Service`]'s connections are made: shared settings of every service made
/// from it (each service keeps its own pool of connections, [`crate::conn`]).
#[derive(Debug, Clone)]
pub struct Client {
    connect_timeout: Duration,
    keep_alive: bool,
}

impl Client {
    /// A client with the default connect timeout.
    pub fn new() -> Self {
        Client::with_connect_timeout(DEFAULT_CONNECT_TIMEOUT)
    }

    pub fn with_connect_timeout(connect: Duration) -> Self {
        Client {
            connect_timeout: connect,
            keep_alive: true,
        }
    }

    /// A client that opens a new TCP connection for every call (for measurements and
    /// for peers that mishandle keep-alive).
    pub fn without_keep_alive() -> Self {
        Client {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            keep_alive: false,
        }
    }

    /// A handle for one configured sub-agent. An URL that is not a plain `http://` one
    /// is reported by every call.
    pub fn service(&self, name: impl Into<String>, config: ServiceConfig) -> Service {
        let url = format!("{}{}", config.base_url.trim_end_matches('/'), config.path);
        let pool = conn::Pool::for_url(
            &url,
            config.token.as_deref(),
            self.connect_timeout,
            self.keep_alive,
        );
        Service {
            inner: Arc::new(ServiceInner {
                name: name.into(),
                pool,
                url,
                limit: config.max_pending.map(|n| Arc::new(Semaphore::new(n))),
                config,
            }),
        }
    }
}

impl Default for Client {
    fn default() -> Self {
        Client::new()
    }
}

#[derive(Debug)]
struct ServiceInner {
    name: String,
    url: String,
    /// The service's connections, or why its URL cannot be served.
    pool: Result<conn::Pool, String>,
    config: ServiceConfig,
    limit: Option<Arc<Semaphore>>,
}

/// One sub-agent: cheap to clone; clones share its connections.
#[derive(Debug, Clone)]
pub struct Service {
    inner: Arc<ServiceInner>,
}

#[derive(Serialize)]
struct Envelope<'a, P: Serialize> {
    jsonrpc: &'static str,
    method: &'a str,
    params: [&'a P; 1],
    id: u64,
}

#[derive(Deserialize)]
struct Reply<'a> {
    #[serde(borrow, default)]
    result: Option<&'a RawValue>,
    #[serde(borrow, default)]
    error: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct V2Error {
    #[serde(default)]
    code: Option<i64>,
    #[serde(default)]
    message: Option<String>,
}

/// The reply of a Stream call: status, headers and the body as it arrives.
pub struct RawStream {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Pin<Box<dyn Stream<Item = Result<Bytes, RpcError>> + Send>>,
}

impl std::fmt::Debug for RawStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawStream")
            .field("status", &self.status)
            .field("headers", &self.headers)
            .finish_non_exhaustive()
    }
}

impl RawStream {
    /// Reads the whole body (for error replies and tests).
    pub async fn collect(self) -> Result<Bytes, RpcError> {
        let chunks: Vec<Bytes> = self.body.try_collect().await?;
        Ok(chunks.concat().into())
    }
}

fn is_gzip(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("gzip"))
}

impl Service {
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Whether the sub-agent serves: `GET /healthz` answered within `timeout` (any
    /// status: a Go sub-agent answers 404, ours 200); how long it took. A process that
    /// accepts connections but answers nothing (stopped, wedged) is a timeout.
    pub async fn probe(&self, timeout: Duration) -> Result<Duration, RpcError> {
        let what = "GET /healthz";
        let pool = self.pool(what)?;
        let start = std::time::Instant::now();
        match tokio::time::timeout(timeout, pool.probe("/healthz")).await {
            Ok(Ok(_status)) => Ok(start.elapsed()),
            Ok(Err(e)) => Err(self.error(what)(e.to_string())),
            Err(_) => Err(self.timeout_error(what, timeout)),
        }
    }

    /// The full endpoint URL (base URL and path).
    pub fn url(&self) -> &str {
        &self.inner.url
    }

    pub fn config(&self) -> &ServiceConfig {
        &self.inner.config
    }

    fn error(&self, method: &str) -> impl Fn(String) -> RpcError + '_ {
        let method = method.to_string();
        move |message| RpcError::Transport {
            service: self.inner.name.clone(),
            method: method.clone(),
            message,
        }
    }

    fn timeout_error(&self, method: &str, after: Duration) -> RpcError {
        RpcError::Timeout {
            service: self.inner.name.clone(),
            method: method.to_string(),
            after,
        }
    }

    /// The service's connections, or a transport error naming the bad URL.
    fn pool(&self, method: &str) -> Result<&conn::Pool, RpcError> {
        self.inner
            .pool
            .as_ref()
            .map_err(|why| self.error(method)(why.clone()))
    }

    async fn permit(&self) -> Option<OwnedSemaphorePermit> {
        match &self.inner.limit {
            // The semaphore is never closed, so acquiring only waits.
            Some(sem) => sem.clone().acquire_owned().await.ok(),
            None => None,
        }
    }

    /// Calls `method` with `params` and decodes the result into `R`.
    pub async fn call<P, R>(&self, method: &str, params: &P) -> Result<R, RpcError>
    where
        P: Serialize + ?Sized,
        R: DeserializeOwned,
    {
        let raw = self.call_raw(method, params).await?;
        serde_json::from_str(raw.get()).map_err(|e| RpcError::Decode {
            service: self.inner.name.clone(),
            method: method.to_string(),
            message: format!("cannot decode the result: {e}"),
        })
    }

    /// Calls `method` and returns the `result` as raw JSON (for callers that merge it
    /// into an existing object, see [`crate::merge`]).
    pub async fn call_raw<P>(&self, method: &str, params: &P) -> Result<Box<RawValue>, RpcError>
    where
        P: Serialize + ?Sized,
    {
        self.call_with(method, params, |result| Ok(result.to_owned()))
            .await
    }

    /// Calls `method` and hands the `result`, still borrowed from the reply buffer, to
    /// `read`: a caller that wants one member of a large result takes it without a copy
    /// of the whole. An `Err` of `read` is a decode error of this call.
    pub async fn call_with<P, R>(
        &self,
        method: &str,
        params: &P,
        read: impl FnOnce(&RawValue) -> Result<R, String>,
    ) -> Result<R, RpcError>
    where
        P: Serialize + ?Sized,
    {
        self.call_timed(method, params, |bytes| {
            let reply: Reply = serde_json::from_slice(bytes)
                .map_err(|e| self.decode_error(method, format!("cannot decode the reply: {e}")))?;
            if reply.error.is_some() {
                return self.settle(method, reply.error, None);
            }
            let result = reply
                .result
                .map(read)
                .transpose()
                .map_err(|message| self.decode_error(method, message))?;
            self.settle(method, None, result)
        })
        .await
    }

    async fn call_timed<P, R>(
        &self,
        method: &str,
        params: &P,
        decode: impl FnOnce(&[u8]) -> Result<R, RpcError>,
    ) -> Result<R, RpcError>
    where
        P: Serialize + ?Sized,
    {
        let timeout = self.inner.config.timeout;
        match tokio::time::timeout(timeout, self.call_inner(method, params, decode)).await {
            Ok(result) => result,
            Err(_) => Err(self.timeout_error(method, timeout)),
        }
    }

    fn decode_error(&self, method: &str, message: String) -> RpcError {
        RpcError::Decode {
            service: self.inner.name.clone(),
            method: method.to_string(),
            message,
        }
    }

    /// A decoded reply's outcome: its error if it has one, else its result.
    fn settle<R>(
        &self,
        method: &str,
        error: Option<&RawValue>,
        result: Option<R>,
    ) -> Result<R, RpcError> {
        if let Some(error) = error {
            let (message, code) = remote_message(error);
            return Err(RpcError::Remote {
                service: self.inner.name.clone(),
                method: method.to_string(),
                message,
                code,
            });
        }
        result.ok_or_else(|| RpcError::NullResult {
            service: self.inner.name.clone(),
            method: method.to_string(),
        })
    }

    async fn call_inner<P, R>(
        &self,
        method: &str,
        params: &P,
        decode: impl FnOnce(&[u8]) -> Result<R, RpcError>,
    ) -> Result<R, RpcError>
    where
        P: Serialize + ?Sized,
    {
        let name = &self.inner.name;
        let decode_err = |message: String| self.decode_error(method, message);
        // Sized for a typical request (a guest record and a few members): one
        // allocation instead of the doublings from an empty buffer.
        let mut body = Vec::with_capacity(REQUEST_CAPACITY);
        serde_json::to_writer(
            &mut body,
            &Envelope {
                jsonrpc: "2.0",
                method,
                params: [&params],
                id: rand::random::<u64>() & (i64::MAX as u64),
            },
        )
        .map_err(|e| decode_err(format!("cannot encode the params: {e}")))?;
        let _permit = self.permit().await;
        let reply = self
            .pool(method)?
            .post(body)
            .await
            .map_err(|e| self.error(method)(e.to_string()))?;
        let (status, gzip, bytes) = (reply.status, reply.gzip, reply.body);
        let bytes = if gzip {
            Bytes::from(
                gunzip(&bytes)
                    .await
                    .map_err(|e| decode_err(format!("cannot decompress the reply: {e}")))?,
            )
        } else {
            bytes
        };
        if status >= 400 {
            return Err(RpcError::Status {
                service: name.clone(),
                method: method.to_string(),
                status,
                body: String::from_utf8_lossy(&bytes).trim_end().to_string(),
            });
        }
        decode(&bytes)
    }

    /// A Stream call: POSTs the bare `params` JSON (no envelope) to the service URL and
    /// hands back the status, headers and body stream without buffering. The reply head
    /// and each chunk must arrive within the idle timeout; there is no overall limit.
    pub async fn stream<P>(&self, params: &P) -> Result<RawStream, RpcError>
    where
        P: Serialize + ?Sized,
    {
        let what = self.inner.config.path.clone();
        let idle = self.inner.config.idle_timeout;
        let body = serde_json::to_vec(params).map_err(|e| RpcError::Decode {
            service: self.inner.name.clone(),
            method: what.clone(),
            message: format!("cannot encode the request: {e}"),
        })?;
        let permit = self.permit().await;
        let service = self.inner.name.clone();
        let pool = self.pool(&what)?;
        let response = match tokio::time::timeout(idle, pool.stream(body)).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return Err(self.error(&what)(e.to_string())),
            Err(_) => return Err(self.timeout_error(&what, idle)),
        };
        let (head, incoming) = response.into_parts();
        let (s, m) = (service.clone(), what.clone());
        let chunks = http_body_util::BodyExt::into_data_stream(incoming)
            .map_err(move |e| std::io::Error::other(format!("service {s:?} ({m}): {e}")));
        let chunks: Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>> = Box::pin(chunks);
        let (status, headers) = (head.status, head.headers);
        let gzip = is_gzip(&headers);
        let chunks: Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>> = if gzip {
            let reader = tokio_util::io::StreamReader::new(chunks);
            let decoder = async_compression::tokio::bufread::GzipDecoder::new(reader);
            Box::pin(tokio_util::io::ReaderStream::new(decoder))
        } else {
            Box::pin(chunks)
        };
        // Each chunk must come within the idle timeout of the one before; the first
        // failure ends the body. The permit lives as long as the body is read.
        let (s, m) = (service, what);
        let body = tokio_stream::StreamExt::timeout(chunks, idle).map(move |item| {
            let _held = &permit;
            match item {
                Ok(Ok(chunk)) => Ok(chunk),
                Ok(Err(e)) => Err(RpcError::Transport {
                    service: s.clone(),
                    method: m.clone(),
                    message: e.to_string(),
                }),
                Err(_elapsed) => Err(RpcError::Timeout {
                    service: s.clone(),
                    method: m.clone(),
                    after: idle,
                }),
            }
        });
        // The first failure ends the body (an idle source is not polled again); fused: it
        // stays ended when polled again.
        let body =
            futures::stream::unfold((Box::pin(body), false), |(mut rest, failed)| async move {
                if failed {
                    return None;
                }
                let item = rest.next().await?;
                let failed = item.is_err();
                Some((item, (rest, failed)))
            })
            .fuse();
        Ok(RawStream {
            status,
            headers,
            body: Box::pin(body),
        })
    }
}

/// The error text of a reply's `error` member: a v1 string as is, a 2.0 object's
/// `message` (and its code), anything else as its JSON text.
fn remote_message(error: &RawValue) -> (String, Option<i64>) {
    if let Ok(text) = serde_json::from_str::<String>(error.get()) {
        return (text, None);
    }
    if let Ok(V2Error {
        code,
        message: Some(message),
    }) = serde_json::from_str::<V2Error>(error.get())
    {
        return (message, code);
    }
    (error.get().to_string(), None)
}

async fn gunzip(data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut decoder = async_compression::tokio::bufread::GzipDecoder::new(data);
    let mut out = Vec::with_capacity(data.len() * 4);
    decoder.read_to_end(&mut out).await?;
    Ok(out)
}
