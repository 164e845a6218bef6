//! The agent's one error type and its mapping, at the HTTP edge, to the original error
//! body `{"message","code","stack"}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use mistify_rpc::RpcError;
use mistify_types::{Action, ErrorBody};

use crate::pipeline::StageError;
use crate::store::StoreError;

/// Everything a request or a job can fail with.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Unknown guest, job, image or snapshot (`not found`, as the original said).
    #[error("not found")]
    NotFound,
    /// Something the request names is not there, and the text says what (ours: the
    /// original had no such answers).
    #[error("{0}")]
    NotFoundWhy(String),
    /// The request is malformed or its input unsafe; nothing was changed.
    #[error("{0}")]
    BadRequest(String),
    /// The action (the variant for the guest's or image's type) is not configured.
    #[error("{0}: Not configured")]
    NotConfigured(Action),
    /// No route has this path.
    #[error("404 page not found")]
    NoRoute,
    /// The route exists but not this action word.
    #[error("unknown action {0:?}")]
    UnknownAction(String),
    /// The request conflicts with the current state (duplicate id, job already running).
    #[error("{0}")]
    Conflict(String),
    /// Back-pressure: a full queue or a draining agent. `retry_after` in seconds.
    #[error("{message}")]
    Unavailable { message: String, retry_after: u64 },
    /// A known path with another method.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The request body is larger than the agent accepts.
    #[error("request body larger than {0} bytes")]
    TooLarge(usize),
    /// The request body stopped arriving (see `mistify_http::Limits`).
    #[error("the request body stopped arriving")]
    BodyTimeout,
    /// A sub-agent call failed.
    #[error(transparent)]
    Rpc(#[from] RpcError),
    /// A stage returned something unusable (e.g. no guest).
    #[error(transparent)]
    Stage(#[from] StageError),
    /// A stage of a pipeline failed: which one, calling what, and why (what a job's
    /// message says; an HTTP answer carries the cause's own text, as the Go agent's did).
    #[error("{}", in_stage(*.index, *.stages, .service, .method, .source))]
    InStage {
        /// 1-based.
        index: usize,
        stages: usize,
        service: String,
        method: String,
        #[source]
        source: Box<AgentError>,
    },
    /// The local store failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// An answer could not be encoded.
    #[error("cannot encode the result: {0}")]
    Encode(#[source] serde_json::Error),
    /// Anything else that is the agent's own fault (a broken invariant).
    #[error("{0}")]
    Internal(String),
}

/// How a libvirt sub-agent's error text starts when libvirt refused an operation in the
/// domain's present state (`VIR_ERR_OPERATION_INVALID`).
const LIBVIRT_OPERATION_INVALID: &str = "[Code-55] ";

/// `stage 2 of 2 (libvirt Libvirt.CreateGuest): <why>`; the service and method are left
/// out when the cause names them already (an RPC transport, timeout or decode error).
fn in_stage(
    index: usize,
    stages: usize,
    service: &str,
    method: &str,
    source: &AgentError,
) -> String {
    match source {
        AgentError::Rpc(
            RpcError::Transport { .. } | RpcError::Timeout { .. } | RpcError::Decode { .. },
        ) => {
            format!("stage {index} of {stages}: {source}")
        }
        _ => format!("stage {index} of {stages} ({service} {method}): {source}"),
    }
}

impl AgentError {
    /// The error an HTTP answer reports: the cause of a failed stage, not its place.
    pub fn cause(&self) -> &AgentError {
        match self {
            AgentError::InStage { source, .. } => source.cause(),
            other => other,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            AgentError::InStage { source, .. } => source.status(),
            AgentError::NotFound
            | AgentError::NotFoundWhy(_)
            | AgentError::NoRoute
            | AgentError::NotConfigured(_)
            | AgentError::UnknownAction(_) => StatusCode::NOT_FOUND,
            AgentError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AgentError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            AgentError::Conflict(_) => StatusCode::CONFLICT,
            AgentError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            AgentError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            AgentError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            AgentError::Rpc(RpcError::Transport { .. }) => StatusCode::BAD_GATEWAY,
            // libvirt refusing an operation in the domain's state (`[Code-55] … domain is
            // not running`): the caller asked at the wrong time.
            AgentError::Rpc(RpcError::Remote { message, .. })
                if message.starts_with(LIBVIRT_OPERATION_INVALID) =>
            {
                StatusCode::CONFLICT
            }
            AgentError::Rpc(RpcError::Timeout { .. }) => StatusCode::GATEWAY_TIMEOUT,
            // The sub-agent answered with an error: the original reported 500 with its text.
            AgentError::Rpc(_)
            | AgentError::Stage(_)
            | AgentError::Store(_)
            | AgentError::Encode(_)
            | AgentError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The 503 of a draining agent.
    pub fn draining() -> AgentError {
        AgentError::Unavailable {
            message: "the agent is shutting down".into(),
            retry_after: 10,
        }
    }
}

pub use mistify_http::json_response;

/// A JSON response from JSON text already checked (a sub-agent's reply, copied as it
/// came): the text and Go's trailing newline, nothing parsed or built.
pub fn json_text_response(status: StatusCode, text: &serde_json::value::RawValue) -> Response {
    let text = text.get().as_bytes();
    let mut bytes = Vec::with_capacity(text.len() + 1);
    bytes.extend_from_slice(text);
    mistify_http::json_bytes(status, bytes)
}

impl IntoResponse for AgentError {
    fn into_response(self) -> Response {
        let status = self.status();
        let cause = self.cause();
        let mut response =
            json_response(status, &ErrorBody::new(status.as_u16(), cause.to_string()));
        if let AgentError::Unavailable { retry_after, .. } = cause {
            if let Ok(v) = HeaderValue::from_str(&retry_after.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        response
    }
}
