//! What a boot request can fail with, and the plain-text answer of each (the original
//! answered with Go's `http.Error`: the message, a newline, `text/plain`).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// The failures of `/ipxe/{ip}` and `/config/{ip}`.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// The path's address does not parse as an IP address.
    #[error("invalid address")]
    InvalidAddress,
    /// No hypervisor has that address.
    #[error("hypervisor not found")]
    NotFound,
    /// etcd failed.
    #[error("{0}")]
    Store(#[source] lochness::Error),
}

impl BootError {
    /// The status answered.
    pub fn status(&self) -> StatusCode {
        match self {
            BootError::InvalidAddress => StatusCode::BAD_REQUEST,
            BootError::NotFound => StatusCode::NOT_FOUND,
            BootError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// A plain-text answer: `status`, `text` and a newline, as Go's `http.Error` wrote it.
pub fn plain_error(status: StatusCode, text: &str) -> Response {
    (
        status,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        format!("{text}\n"),
    )
        .into_response()
}

impl IntoResponse for BootError {
    fn into_response(self) -> Response {
        if let BootError::Store(e) = &self {
            tracing::error!(error = %e, "etcd failed while answering a boot request");
        }
        plain_error(self.status(), &self.to_string())
    }
}
