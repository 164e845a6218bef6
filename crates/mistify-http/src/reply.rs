//! Replies the daemons write the same way: JSON bodies with the newline Go's encoder
//! wrote after every document, the router's plain-text `404 page not found`, and the
//! strict-slash redirect of gorilla's router (a routed path with a trailing slash
//! answers `301` to the path without it).

use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

/// A JSON response with `Content-Type: application/json` and Go's trailing newline.
pub fn json_response(status: StatusCode, body: &impl serde::Serialize) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => json_bytes(status, bytes),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode the reply: {e}"),
        )
            .into_response(),
    }
}

/// A JSON response from JSON text that is already encoded: the text, then Go's
/// trailing newline (added here).
pub fn json_bytes(status: StatusCode, mut bytes: Vec<u8>) -> Response {
    bytes.push(b'\n');
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        bytes,
    )
        .into_response()
}

/// The text of Go's router for a path no route has.
pub const NOT_FOUND_TEXT: &str = "404 page not found\n";

/// Go's router's answer to a path no route has: `404`, `text/plain`,
/// `404 page not found`.
pub fn not_found_text() -> Response {
    (
        StatusCode::NOT_FOUND,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        )],
        NOT_FOUND_TEXT,
    )
        .into_response()
}

/// The strict-slash redirect: when `uri`'s path ends in `/` (and is not `/`) and the
/// path without the trailing slashes is one `routed` accepts, `301` with `Location` the
/// path without them (and the query, if any). `None` otherwise.
pub fn strict_slash_redirect(uri: &Uri, routed: impl Fn(&str) -> bool) -> Option<Response> {
    let path = uri.path();
    if path.len() <= 1 || !path.ends_with('/') {
        return None;
    }
    let mut location = path.trim_end_matches('/').to_string();
    if location.is_empty() {
        location.push('/');
    }
    if !routed(&location) {
        return None;
    }
    if let Some(query) = uri.query() {
        location.push('?');
        location.push_str(query);
    }
    let value = HeaderValue::from_str(&location).ok()?;
    Some((StatusCode::MOVED_PERMANENTLY, [(header::LOCATION, value)]).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_only_routed_paths() {
        let uri: Uri = "/guests/?limit=2".parse().unwrap();
        let r = strict_slash_redirect(&uri, |p| p == "/guests").unwrap();
        assert_eq!(r.status(), StatusCode::MOVED_PERMANENTLY);
        assert_eq!(r.headers()[header::LOCATION], "/guests?limit=2");
        assert!(strict_slash_redirect(&uri, |_| false).is_none());
        assert!(strict_slash_redirect(&"/".parse().unwrap(), |_| true).is_none());
        assert!(strict_slash_redirect(&"/guests".parse().unwrap(), |_| true).is_none());
        let r = strict_slash_redirect(&"//".parse().unwrap(), |_| true).unwrap();
        assert_eq!(r.headers()[header::LOCATION], "/");
    }
}
