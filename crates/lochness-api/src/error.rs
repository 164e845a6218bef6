//! The daemons' one error type and its mapping, at the HTTP edge, to the two error
//! bodies of the originals: the *msg* shape `{"message"}` (what their handlers wrote for
//! most 4xx) and the *error* shape `{"message","code","stack":[]}` (their 5xx, and ours
//! on every route beyond theirs); plus the router's plain-text 404.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Which body an error is answered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// `{"message": "..."}`
    Msg,
    /// `{"message": "...", "code": <status>, "stack": []}`
    Error,
    /// The router's `404 page not found` as plain text.
    RouterText,
}

/// An answered failure: status, message and body shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// What the body's `message` says.
    pub message: String,
    /// Which body.
    pub shape: Shape,
}

impl ApiError {
    /// The *error* shape.
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            shape: Shape::Error,
        }
    }

    /// `400` in the *error* shape.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    /// `404` in the *error* shape.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }

    /// `409` in the *error* shape.
    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, message)
    }

    /// `500` in the *error* shape.
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    /// A path no route has (`404`, plain text).
    pub fn no_route() -> ApiError {
        ApiError {
            status: StatusCode::NOT_FOUND,
            message: mistify_http::reply::NOT_FOUND_TEXT.trim_end().to_string(),
            shape: Shape::RouterText,
        }
    }

    /// A routed path with another method.
    pub fn method_not_allowed() -> ApiError {
        ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
    }

    /// The same error in the *msg* shape.
    pub fn msg(mut self) -> ApiError {
        if self.shape == Shape::Error {
            self.shape = Shape::Msg;
        }
        self
    }

    /// The same error with another message.
    pub fn with_message(mut self, message: impl Into<String>) -> ApiError {
        self.message = message.into();
        self
    }
}

/// What a relative metadata key (`lochness/flavors/<id>/metadata`) names, in words:
/// `flavor <id>`; `None` for another key.
pub fn describe_key(key: &str) -> Option<String> {
    let rest = key.strip_prefix(lochness::keys::ROOT)?;
    let (family, rest) = rest.split_once('/')?;
    let id = rest.split('/').next().filter(|id| !id.is_empty())?;
    let noun = match family {
        "hypervisors" => "hypervisor",
        "subnets" => "subnet",
        "networks" => "network",
        "flavors" => "flavor",
        "fwgroups" => "firewall group",
        "guests" => "guest",
        "vlans" => "VLAN",
        "vlangroups" => "VLAN group",
        "jobs" => "job",
        _ => return None,
    };
    Some(format!("{noun} {id}"))
}

impl From<lochness::Error> for ApiError {
    /// The status of each library error, in the *error* shape: invalid input 400, a
    /// missing entity 404, a lost compare-and-swap or a refusal (in use, not empty) 409,
    /// a change that kept losing races or an unreachable etcd 503, anything else 500.
    fn from(e: lochness::Error) -> ApiError {
        use lochness::Error as E;
        match e {
            E::InvalidUuid(_)
            | E::InvalidMac(_)
            | E::InvalidIp(_)
            | E::InvalidCidr(_)
            | E::InvalidJson(_)
            | E::Invalid(_) => ApiError::bad_request(e.to_string()),
            E::NotFound(key) => ApiError::not_found(match describe_key(&key) {
                Some(what) => format!("{what} not found"),
                None => format!("{key} not found"),
            }),
            E::Conflict(why) => ApiError::conflict(why),
            E::Refused(why) => ApiError::conflict(why),
            E::TooManyConflicts { .. } | E::Etcd(_) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
            }
            other => ApiError::internal(other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = match self.shape {
            Shape::RouterText => return mistify_http::not_found_text(),
            Shape::Msg => {
                mistify_http::json_response(self.status, &json!({ "message": self.message }))
            }
            Shape::Error => mistify_http::json_response(
                self.status,
                &mistify_types::rest::ErrorBody::new(self.status.as_u16(), self.message),
            ),
        };
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_in_words() {
        assert_eq!(
            describe_key("lochness/flavors/abc/metadata").as_deref(),
            Some("flavor abc")
        );
        assert_eq!(
            describe_key("lochness/fwgroups/abc/metadata").as_deref(),
            Some("firewall group abc")
        );
        assert_eq!(describe_key("lochness/jobs/j1").as_deref(), Some("job j1"));
        assert_eq!(describe_key("other/x"), None);
    }

    #[test]
    fn library_errors_map_to_statuses() {
        let e = ApiError::from(lochness::Error::NotFound(
            "lochness/guests/g1/metadata".into(),
        ));
        assert_eq!(
            (e.status, e.message.as_str()),
            (StatusCode::NOT_FOUND, "guest g1 not found")
        );
        let e = ApiError::from(lochness::Error::Refused("not empty".into()));
        assert_eq!(
            (e.status, e.message.as_str()),
            (StatusCode::CONFLICT, "not empty")
        );
        let e = ApiError::from(lochness::Error::Invalid("invalid tag".into())).msg();
        assert_eq!((e.status, e.shape), (StatusCode::BAD_REQUEST, Shape::Msg));
    }
}
