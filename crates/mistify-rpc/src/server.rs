//! [`Server`]: what a sub-agent author uses. Register methods by their full name
//! (`"Libvirt.Run"`) with a typed async handler, add ordinary axum routes, and serve.
//!
//! The RPC endpoint (`/_mistify_RPC_`) answers each request in the dialect it was asked
//! in (see [`crate::envelope`]): gorilla/rpc v1 byte for byte, or JSON-RPC 2.0.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, MethodRouter};
use axum::Router;
use futures::future::BoxFuture;
use futures::FutureExt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::value::RawValue;
use tokio::net::TcpListener;

use crate::envelope::{self, codes, Dialect, RawRequest};
use crate::RPC_PATH;
use mistify_http::auth::{Gate, Refusal, Tokens};
use mistify_http::{
    healthz_route, healthz_route_checked, shutdown_signal, with_common_layers, HealthCheck, Limits,
    RpcMethodName,
};
use mistify_types::token::TokenFile;

/// Default limit of a request body (16 MiB); larger bodies get 413.
pub const DEFAULT_BODY_LIMIT: usize = 16 * 1024 * 1024;

/// Why a call failed before or inside the method, and how each dialect reports it.
#[derive(Debug)]
enum CallError {
    /// v1: HTTP 400 plain text; 2.0: the given code.
    Request { code: i64, message: String },
    /// The method returned an error: v1 `"error":"text"`, 2.0 code -32000.
    Method(String),
    /// The method panicked: v1 HTTP 500 empty body, 2.0 code -32603.
    Panic,
}

type Handler = Arc<
    dyn Fn(Option<Box<RawValue>>, Dialect) -> BoxFuture<'static, Result<String, CallError>>
        + Send
        + Sync,
>;

/// Builder and runner of a sub-agent's HTTP server.
///
/// ```no_run
/// use mistify_rpc::{GuestRequest, GuestResponse, Server};
///
/// # async fn run() -> std::io::Result<()> {
/// Server::new("simple")
///     .method("Simple.DoStuff", |req: GuestRequest| async move {
///         Ok::<_, String>(GuestResponse { guest: req.guest, ..Default::default() })
///     })
///     .serve(21356)
///     .await
/// # }
/// ```
pub struct Server {
    name: String,
    version: String,
    methods: HashMap<String, Handler>,
    routes: Router,
    path: String,
    body_limit: usize,
    v1_only: bool,
    tokens: Option<Arc<Tokens>>,
    allow_remote: bool,
    limits: Limits,
    health: Option<HealthCheck>,
}

struct Registry {
    methods: HashMap<String, Handler>,
    services: HashSet<String>,
    body_limit: usize,
    v1_only: bool,
}

impl Registry {
    /// The dialect `req` is answered in.
    fn dialect(&self, req: &RawRequest<'_>) -> Dialect {
        if self.v1_only {
            Dialect::V1
        } else {
            req.dialect()
        }
    }
}

impl Server {
    /// A server named `name` (reported by `/healthz` and in logs).
    pub fn new(name: impl Into<String>) -> Self {
        Server {
            name: name.into(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            methods: HashMap::new(),
            routes: Router::new(),
            path: RPC_PATH.to_string(),
            body_limit: DEFAULT_BODY_LIMIT,
            v1_only: false,
            tokens: None,
            allow_remote: false,
            limits: Limits::default(),
            health: None,
        }
    }

    /// A readiness check `/healthz` asks first: `Err(reason)` answers 503 with
    /// `{"status":"unavailable",…,"reason"}` (the sub-agent runs but cannot serve, e.g.
    /// its pool is not mounted); without one `/healthz` always answers 200.
    pub fn health_check<F, Fut>(mut self, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        self.health = Some(Arc::new(move || check().boxed()));
        self
    }

    /// The HTTP server's limits (default [`Limits::default`]; see [`mistify_http::Limits`]).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Requires `Authorization: Bearer <token>` on every request but `/healthz` (the
    /// agent sends it from the service's `token` key in agent.json); others get 401.
    /// Without it the sub-agent trusts whatever reaches its (loopback) port, as the Go
    /// sub-agents did. Read a `--token-file` with [`read_token_file`], which checks it.
    pub fn require_token(self, token: impl Into<String>) -> Self {
        let file = TokenFile::single(&token.into());
        self.require_tokens(Arc::new(Tokens::fixed(file)))
    }

    /// Requires one of `tokens` (a `--token-file`, reloadable on SIGHUP with
    /// [`Tokens::reload_on_sighup`]) on every request but `/healthz`.
    pub fn require_tokens(mut self, tokens: Arc<Tokens>) -> Self {
        self.tokens = Some(tokens);
        self
    }

    /// Lets [`Server::bind`] take an address beyond loopback. Without it such a bind is
    /// refused: a sub-agent takes orders from anyone who reaches its port.
    pub fn allow_remote(mut self) -> Self {
        self.allow_remote = true;
        self
    }

    /// Speak gorilla/rpc v1 only, exactly as the Go sub-agents did: a `jsonrpc` member is
    /// ignored (the reply stays v1) and a batch is a malformed request. For sub-agents
    /// whose replies must match their Go original byte for byte.
    pub fn v1_only(mut self) -> Self {
        self.v1_only = true;
        self
    }

    /// The version `/healthz` reports (default: this crate's version).
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.version = version.into();
        self
    }

    /// Serve the RPC endpoint on another path than `/_mistify_RPC_`.
    pub fn rpc_path(mut self, path: impl Into<String>) -> Self {
        self.path = path.into();
        self
    }

    /// Limit of a request body in bytes (default [`DEFAULT_BODY_LIMIT`]).
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = bytes;
        self
    }

    /// Registers `handler` under its full name `Service.Method`.
    ///
    /// The argument decodes from the first element of `params` (a missing element or
    /// `null` gives `A::default()`, extra elements are ignored, unknown keys too); the
    /// reply is the `Ok` value; an `Err` becomes the error text of the reply.
    ///
    /// # Panics
    /// If `name` is not of the form `Service.Method` (one dot, both parts non-empty) or is
    /// registered twice: both are programming errors in the sub-agent.
    pub fn method<A, R, E, F, Fut>(mut self, name: &str, handler: F) -> Self
    where
        A: DeserializeOwned + Default + Send + 'static,
        R: Serialize + Send + 'static,
        E: std::fmt::Display + Send + 'static,
        F: Fn(A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, E>> + Send + 'static,
    {
        assert!(
            split_method(name).is_some(),
            "RPC method name {name:?} must be Service.Method"
        );
        let handler = Arc::new(handler);
        let erased: Handler = Arc::new(move |params, dialect| {
            let handler = handler.clone();
            async move {
                let arg: A = decode_arg(params.as_deref(), dialect)?;
                let result = AssertUnwindSafe(handler(arg))
                    .catch_unwind()
                    .await
                    .map_err(|_| CallError::Panic)?;
                match result {
                    Ok(reply) => serde_json::to_string(&reply).map_err(|e| {
                        CallError::Method(format!("rpc: cannot encode the reply: {e}"))
                    }),
                    Err(e) => Err(CallError::Method(e.to_string())),
                }
            }
            .boxed()
        });
        let previous = self.methods.insert(name.to_string(), erased);
        assert!(previous.is_none(), "RPC method {name:?} registered twice");
        self
    }

    /// Adds a plain HTTP route (e.g. `/snapshots/download`), wrapped by the same layers.
    pub fn route(mut self, path: &str, method_router: MethodRouter) -> Self {
        self.routes = self.routes.route(path, method_router);
        self
    }

    /// Merges a whole router of plain routes.
    pub fn merge(mut self, router: Router) -> Self {
        self.routes = self.routes.merge(router);
        self
    }

    /// The complete axum router: RPC endpoint, `/healthz`, extra routes, shared layers.
    pub fn into_router(self) -> Router {
        let services = self
            .methods
            .keys()
            .filter_map(|m| split_method(m).map(|(s, _)| s.to_string()))
            .collect();
        let registry = Arc::new(Registry {
            methods: self.methods,
            services,
            body_limit: self.body_limit,
            v1_only: self.v1_only,
        });
        let rpc = Router::new()
            .route(&self.path, any(rpc_endpoint))
            .with_state(registry);
        let mut app = rpc.merge(self.routes);
        if let Some(tokens) = self.tokens {
            let gate = Gate {
                tokens,
                refusal: Refusal::Text,
            };
            app = mistify_http::auth::guarded(app, gate);
        }
        let healthz = match self.health {
            Some(check) => healthz_route_checked(&self.name, &self.version, check),
            None => healthz_route(&self.name, &self.version),
        };
        with_common_layers(app.merge(healthz))
    }

    /// Binds `addr` (use port 0 for a free port) without serving yet.
    /// An address beyond loopback needs [`Server::allow_remote`].
    pub async fn bind(self, addr: SocketAddr) -> std::io::Result<BoundServer> {
        if !addr.ip().is_loopback() && !self.allow_remote {
            return Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!(
                    "{}: refusing to listen on {addr}, beyond loopback (a sub-agent obeys \
                     whoever reaches it); allow it explicitly",
                    self.name
                ),
            ));
        }
        let listener = TcpListener::bind(addr).await?;
        Ok(BoundServer {
            name: self.name.clone(),
            listener,
            limits: self.limits.clone(),
            router: self.into_router(),
        })
    }

    /// Binds `127.0.0.1:port` and serves until SIGTERM or Ctrl-C.
    pub async fn serve(self, port: u16) -> std::io::Result<()> {
        self.bind(SocketAddr::from(([127, 0, 0, 1], port)))
            .await?
            .run()
            .await
    }
}

/// The token in a sub-agent's `--token-file`: its first token (the format of
/// [`mistify_types::token`]); the error names the file and the line.
pub fn read_token_file(path: &std::path::Path) -> Result<String, String> {
    TokenFile::load(path)
        .map(|file| file.first().to_string())
        .map_err(|e| e.to_string())
}

/// A server bound to its socket; [`BoundServer::local_addr`] tells the port.
pub struct BoundServer {
    name: String,
    listener: TcpListener,
    router: Router,
    limits: Limits,
}

impl BoundServer {
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until SIGTERM or Ctrl-C, then finishes the requests in flight.
    pub async fn run(self) -> std::io::Result<()> {
        self.run_until(shutdown_signal()).await
    }

    /// Serves until `shutdown` resolves, then finishes the requests in flight.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let addr = self.listener.local_addr()?;
        tracing::info!(service = %self.name, %addr, "serving");
        mistify_http::serve(self.listener, self.router, self.limits, shutdown).await?;
        tracing::info!(service = %self.name, "stopped");
        Ok(())
    }

    /// Serves on a background task; dropping or calling [`RunningServer::stop`] stops it.
    pub fn spawn(self) -> std::io::Result<RunningServer> {
        let addr = self.local_addr()?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(self.run_until(async {
            let _ = rx.await;
        }));
        Ok(RunningServer {
            addr,
            stop: Some(tx),
            task,
        })
    }
}

/// A server running on a background task (tests, embedding).
pub struct RunningServer {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl RunningServer {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting, finishes requests in flight, and waits for the task.
    pub async fn stop(mut self) -> std::io::Result<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        match (&mut self.task).await {
            Ok(r) => r,
            Err(e) => Err(std::io::Error::other(e)),
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// `("Service", "Method")` when `name` has exactly one dot with text on both sides.
fn split_method(name: &str) -> Option<(&str, &str)> {
    let (service, method) = name.split_once('.')?;
    if service.is_empty() || method.is_empty() || method.contains('.') {
        return None;
    }
    Some((service, method))
}

fn decode_arg<A: DeserializeOwned + Default>(
    params: Option<&RawValue>,
    dialect: Dialect,
) -> Result<A, CallError> {
    let invalid = |message: String| CallError::Request {
        code: codes::INVALID_PARAMS,
        message,
    };
    let Some(params) = params else {
        return Ok(A::default());
    };
    let text = params.get().trim_start();
    let first: Option<&RawValue> = if text.starts_with('[') {
        let items: Vec<&RawValue> = serde_json::from_str(params.get())
            .map_err(|e| invalid(format!("rpc: cannot decode params: {e}")))?;
        items.into_iter().next()
    } else if dialect == Dialect::V2 && text.starts_with('{') {
        // JSON-RPC 2.0 also allows the argument object by name.
        Some(params)
    } else if text == "null" {
        None
    } else {
        return Err(invalid(
            "rpc: params must be an array with one element".into(),
        ));
    };
    match first {
        None => Ok(A::default()),
        Some(raw) if raw.get() == "null" => Ok(A::default()),
        Some(raw) => serde_json::from_str(raw.get())
            .map_err(|e| invalid(format!("rpc: cannot decode the argument: {e}"))),
    }
}

fn plain_text(status: StatusCode, text: String) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        )],
        text,
    )
        .into_response()
}

fn json_reply(status: StatusCode, body: String) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// The content type check of gorilla/rpc: absent is fine, else it must be JSON.
fn content_type_error(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::CONTENT_TYPE)?;
    let text = String::from_utf8_lossy(value.as_bytes()).into_owned();
    let media = text
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    (media != "application/json").then(|| format!("rpc: unrecognized Content-Type: {text}"))
}

async fn rpc_endpoint(State(registry): State<Arc<Registry>>, request: Request) -> Response {
    if request.method() != Method::POST {
        return plain_text(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("rpc: POST method required, received {}", request.method()),
        );
    }
    if let Some(message) = content_type_error(request.headers()) {
        return plain_text(StatusCode::UNSUPPORTED_MEDIA_TYPE, message);
    }
    let body = match axum::body::to_bytes(request.into_body(), registry.body_limit).await {
        Ok(body) => body,
        Err(e) => {
            if mistify_http::is_body_timeout(&e) {
                return plain_text(
                    StatusCode::REQUEST_TIMEOUT,
                    "rpc: the request body stopped arriving".to_string(),
                );
            }
            let too_large = mistify_http::caused_by::<http_body_util::LengthLimitError>(&e);
            return if too_large {
                plain_text(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!(
                        "rpc: request body larger than {} bytes",
                        registry.body_limit
                    ),
                )
            } else {
                plain_text(
                    StatusCode::BAD_REQUEST,
                    format!("rpc: cannot read the request: {e}"),
                )
            };
        }
    };
    let text = match std::str::from_utf8(&body) {
        Ok(text) => text,
        Err(e) => {
            return plain_text(
                StatusCode::BAD_REQUEST,
                format!("rpc: request is not UTF-8: {e}"),
            )
        }
    };
    if text.trim_start().starts_with('[') && !registry.v1_only {
        return batch(&registry, text).await;
    }
    match serde_json::from_str::<RawRequest>(text) {
        Ok(req) => {
            let (response, method) = single(&registry, &req).await;
            with_method_name(response, method)
        }
        // Unreadable: answer in v2 only when the text claims to be 2.0.
        Err(e) if !registry.v1_only && text.contains("\"jsonrpc\"") => json_reply(
            StatusCode::OK,
            envelope::v2_error(codes::PARSE_ERROR, &format!("parse error: {e}"), None),
        ),
        Err(e) => plain_text(
            StatusCode::BAD_REQUEST,
            format!("rpc: cannot decode the request: {e}"),
        ),
    }
}

fn with_method_name(mut response: Response, method: Option<String>) -> Response {
    if let Some(method) = method {
        response.extensions_mut().insert(RpcMethodName(method));
    }
    response
}

/// Runs one request; returns the HTTP response and the method name (for the log).
async fn single(registry: &Registry, req: &RawRequest<'_>) -> (Response, Option<String>) {
    let dialect = registry.dialect(req);
    let method = req.method.and_then(envelope::as_str);
    let outcome = call(registry, req, method.as_deref()).await;
    let response = match dialect {
        Dialect::V1 => v1_response(outcome, req.reply_id(dialect)),
        Dialect::V2 => match v2_reply(outcome, req) {
            Some(body) => json_reply(StatusCode::OK, body),
            None => StatusCode::NO_CONTENT.into_response(),
        },
    };
    (response, method)
}

async fn call(
    registry: &Registry,
    req: &RawRequest<'_>,
    method: Option<&str>,
) -> Result<String, CallError> {
    let dialect = registry.dialect(req);
    let bad = |code: i64, message: String| CallError::Request { code, message };
    if dialect == Dialect::V2 && req.jsonrpc.and_then(envelope::as_str).as_deref() != Some("2.0") {
        return Err(bad(
            codes::INVALID_REQUEST,
            "jsonrpc must be \"2.0\"".into(),
        ));
    }
    let name = match (method, req.method) {
        (Some(name), _) => name,
        // Go decoded an absent or null method as "".
        (None, None) => "",
        (None, Some(raw)) if raw.get() == "null" => "",
        (None, Some(_)) => {
            return Err(bad(
                codes::INVALID_REQUEST,
                "rpc: method must be a string".into(),
            ))
        }
    };
    let Some((service, _)) = split_method(name) else {
        return Err(bad(
            codes::METHOD_NOT_FOUND,
            format!("rpc: service/method request ill-formed: {name:?}"),
        ));
    };
    if !registry.services.contains(service) {
        return Err(bad(
            codes::METHOD_NOT_FOUND,
            format!("rpc: can't find service {name:?}"),
        ));
    }
    let Some(handler) = registry.methods.get(name) else {
        return Err(bad(
            codes::METHOD_NOT_FOUND,
            format!("rpc: can't find method {name:?}"),
        ));
    };
    let params = match req.params {
        Some(p) if p.get() != "null" => Some(p.to_owned()),
        _ if dialect == Dialect::V1 => {
            return Err(bad(
                codes::INVALID_PARAMS,
                "rpc: method request ill-formed: missing params field".into(),
            ))
        }
        _ => None,
    };
    handler(params, dialect).await
}

fn v1_response(outcome: Result<String, CallError>, id: Option<&RawValue>) -> Response {
    let body = match (outcome, id) {
        (Err(CallError::Request { message, .. }), _) => {
            return plain_text(StatusCode::BAD_REQUEST, message)
        }
        (Err(CallError::Panic), _) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        // A notification: the method ran, nothing is written back.
        (_, None) => return StatusCode::OK.into_response(),
        (Ok(result), Some(id)) => envelope::v1_result(&result, id),
        (Err(CallError::Method(message)), Some(id)) => envelope::v1_error(&message, id),
    };
    json_reply(StatusCode::OK, body)
}

/// The 2.0 reply text, `None` for a notification.
fn v2_reply(outcome: Result<String, CallError>, req: &RawRequest<'_>) -> Option<String> {
    let id = req.id;
    let invalid =
        matches!(&outcome, Err(CallError::Request { code, .. }) if *code == codes::INVALID_REQUEST);
    if id.is_none() && !invalid {
        return None;
    }
    Some(match outcome {
        Ok(result) => envelope::v2_result(&result, id?),
        Err(CallError::Request { code, message }) => envelope::v2_error(code, &message, id),
        Err(CallError::Method(message)) => envelope::v2_error(codes::SERVER_ERROR, &message, id),
        Err(CallError::Panic) => envelope::v2_error(codes::INTERNAL_ERROR, "internal error", id),
    })
}

/// A JSON-RPC 2.0 batch: every element answered in order, notifications left out.
async fn batch(registry: &Registry, text: &str) -> Response {
    let items: Vec<&RawValue> = match serde_json::from_str(text) {
        Ok(items) => items,
        Err(e) => {
            return json_reply(
                StatusCode::OK,
                envelope::v2_error(codes::PARSE_ERROR, &format!("parse error: {e}"), None),
            )
        }
    };
    if items.is_empty() {
        return json_reply(
            StatusCode::OK,
            envelope::v2_error(codes::INVALID_REQUEST, "empty batch", None),
        );
    }
    let mut replies = Vec::with_capacity(items.len());
    for item in items {
        match serde_json::from_str::<RawRequest>(item.get()) {
            Ok(req) if req.dialect() == Dialect::V2 => {
                let method = req.method.and_then(envelope::as_str);
                let outcome = call(registry, &req, method.as_deref()).await;
                replies.extend(v2_reply(outcome, &req));
            }
            _ => replies.push(envelope::v2_error(
                codes::INVALID_REQUEST,
                "a batch element must be a JSON-RPC 2.0 request object",
                None,
            )),
        }
    }
    if replies.is_empty() {
        return StatusCode::NO_CONTENT.into_response();
    }
    json_reply(StatusCode::OK, format!("[{}]", replies.join(",")))
}
