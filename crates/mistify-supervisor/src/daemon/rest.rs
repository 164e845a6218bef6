//! The REST API: govisor's routes and bodies, conditional GET and long-poll, plus
//! `GET /healthz` and `?since=<id>` on the log routes.

use crate::api::{ErrorBody, GovisorServiceInfo, Hex, Time, MAX_POLL_SECS, POLL_ETAG, POLL_TIME};
use crate::daemon::manager::{Manager, ManagerError};
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

const JSON: &str = "application/json; charset=UTF-8";
/// How long a POST waits for the starts and stops it caused.
const SETTLE_WAIT: Duration = Duration::from_secs(30);
fn full(q: &HashMap<String, String>) -> bool {
    q.get("full").is_some_and(|v| v != "0" && v != "false")
}

/// The REST API over `mgr`, ready to be mounted in any axum server.
pub fn router(mgr: Arc<Manager>) -> Router {
    let routes = Router::new()
        .route("/", get(root).fallback(method_not_allowed))
        .route("/log", get(manager_log).fallback(method_not_allowed))
        .route("/healthz", get(healthz).fallback(method_not_allowed))
        .route("/services", get(services).fallback(method_not_allowed))
        .route(
            "/services/{service}",
            get(service).fallback(method_not_allowed),
        )
        .route(
            "/services/{service}/log",
            get(service_log).fallback(method_not_allowed),
        )
        // Any method: an unknown action is an unknown path (404), a known one
        // with another method than POST a wrong method (405), as gorilla routed them.
        .route("/services/{service}/{action}", any(action))
        .fallback(not_found)
        .with_state(mgr);
    // gorilla answered a wrong method without an `Allow` header. axum's method routers
    // add theirs after any layer of a route, so the whole router is wrapped.
    Router::new()
        .fallback_service(routes)
        .layer(axum::middleware::map_response(no_allow))
}

async fn no_allow(mut r: Response) -> Response {
    r.headers_mut().remove(header::ALLOW);
    r
}

async fn method_not_allowed() -> Response {
    StatusCode::METHOD_NOT_ALLOWED.into_response()
}

/// An error answered as Go's `http.Error` writes it: the text and a newline, with
/// `Content-Type: text/plain; charset=utf-8` and `X-Content-Type-Options: nosniff`.
/// govisord answered this way its 401, its unknown paths (gorilla's default
/// `404 page not found`) and a reply it could not encode (500).
pub fn text_error(status: StatusCode, text: &str) -> Response {
    let mut r = (status, format!("{text}\n")).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

async fn not_found() -> Response {
    text_error(StatusCode::NOT_FOUND, "404 page not found")
}

/// `{"code": <status>, "message": "<text>"}` with the same status.
pub fn error(status: StatusCode, message: &str) -> Response {
    json_response(
        status,
        &ErrorBody {
            code: status.as_u16(),
            message: message.to_string(),
        },
    )
}

fn map_error(e: ManagerError) -> Response {
    let status = match e {
        ManagerError::NotFound => StatusCode::NOT_FOUND,
        ManagerError::Conflict | ManagerError::NameExists | ManagerError::Enabled => {
            StatusCode::CONFLICT
        }
        ManagerError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
    };
    error(status, &e.to_string())
}

fn json_response<T: Serialize>(status: StatusCode, body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => {
            let mut r = Response::new(Body::from(bytes));
            *r.status_mut() = status;
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON));
            r
        }
        Err(e) => {
            tracing::error!("cannot encode a response: {e}");
            text_error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string())
        }
    }
}

/// The long-poll request, if the headers ask for one: (old value, wait).
fn poll_request(headers: &HeaderMap) -> Option<(u64, Duration)> {
    let etag = headers.get(POLL_ETAG)?.to_str().ok()?;
    let old = Hex::from_etag(etag)?;
    let secs: i64 = headers.get(POLL_TIME)?.to_str().ok()?.trim().parse().ok()?;
    if secs <= 0 {
        return None;
    }
    let secs = u64::try_from(secs).ok()?.min(MAX_POLL_SECS);
    Some((old.0, Duration::from_secs(secs)))
}

/// Answers a GET: 304 when the client's copy is current (If-None-Match or
/// If-Modified-Since), else 200 with ETag, Last-Modified and the body.
fn conditional<T: Serialize>(headers: &HeaderMap, etag: u64, modified: Time, body: &T) -> Response {
    let tag = Hex(etag).etag();
    let not_modified = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == tag)
        || headers
            .get(header::IF_MODIFIED_SINCE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| chrono::DateTime::parse_from_rfc2822(v).ok())
            .is_some_and(|since| {
                modified.0 < since.with_timezone(&chrono::Utc) + chrono::Duration::seconds(1)
            });
    let mut r = if not_modified {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut r = json_response(StatusCode::OK, body);
        if let Ok(v) = HeaderValue::from_str(&modified.http_date()) {
            r.headers_mut().insert(header::LAST_MODIFIED, v);
        }
        r
    };
    if let Ok(v) = HeaderValue::from_str(&tag) {
        r.headers_mut().insert(header::ETAG, v);
    }
    r
}

async fn healthz(State(mgr): State<Arc<Manager>>) -> Response {
    let body = serde_json::json!({"status": "ok", "name": mgr.name()});
    json_response(StatusCode::OK, &body)
}

async fn root(State(mgr): State<Arc<Manager>>, headers: HeaderMap) -> Response {
    if let Some((old, wait)) = poll_request(&headers) {
        if mgr.watch(old, wait, |m| Some(m.serial())).await {
            // govisord read the answer once the change was complete (after the
            // operation that made it released the lock): so do we.
            mgr.settle_all(SETTLE_WAIT).await;
        }
    }
    let info = mgr.info();
    conditional(&headers, info.serial.0, info.updated, &info)
}

fn since(q: &HashMap<String, String>) -> Result<Option<u64>, Box<Response>> {
    match q.get("since") {
        None => Ok(None),
        Some(s) => u64::from_str_radix(s.trim_matches('"'), 16)
            .map(Some)
            .map_err(|_| Box::new(error(StatusCode::BAD_REQUEST, "since must be a hex log id"))),
    }
}

async fn manager_log(
    State(mgr): State<Arc<Manager>>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let since = match since(&q) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    if let Some((old, wait)) = poll_request(&headers) {
        mgr.watch(old, wait, |m| Some(m.log_id())).await;
    }
    let (records, id, modified) = mgr.log_records(since);
    conditional(&headers, id, modified, &records)
}

async fn services(
    State(mgr): State<Arc<Manager>>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if full(&q) {
        // Every service's full info in one request, versioned by the global serial.
        if let Some((old, wait)) = poll_request(&headers) {
            mgr.watch(old, wait, |m| Some(m.serial())).await;
        }
        let info = mgr.info();
        return conditional(&headers, info.serial.0, info.updated, &mgr.all());
    }
    if let Some((old, wait)) = poll_request(&headers) {
        mgr.watch(old, wait, |m| Some(m.list_serial())).await;
    }
    let (names, serial, time) = mgr.services();
    conditional(&headers, serial, time, &names)
}

async fn service(
    State(mgr): State<Arc<Manager>>,
    name: Result<Path<String>, PathRejection>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    // A name that is not UTF-8 names no service (gorilla matched the raw bytes).
    let Ok(Path(name)) = name else {
        return map_error(ManagerError::NotFound);
    };
    if mgr.service_serial(&name).is_none() {
        return map_error(ManagerError::NotFound);
    }
    if let Some((old, wait)) = poll_request(&headers) {
        // govisor's view is read once the change is complete, as govisord did (a
        // restart is never seen half done); ours (`?full=1`) shows starting and stopping.
        if mgr.watch(old, wait, |m| m.service_serial(&name)).await && !full(&q) {
            mgr.settle(&name, SETTLE_WAIT).await;
        }
    }
    match mgr.service(&name) {
        Some(info) if full(&q) => conditional(&headers, info.serial.0, info.tstamp, &info),
        Some(info) => conditional(
            &headers,
            info.serial.0,
            info.tstamp,
            &GovisorServiceInfo::from(&info),
        ),
        None => map_error(ManagerError::NotFound),
    }
}

async fn service_log(
    State(mgr): State<Arc<Manager>>,
    name: Result<Path<String>, PathRejection>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let Ok(Path(name)) = name else {
        return map_error(ManagerError::NotFound);
    };
    let since = match since(&q) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    if mgr.service_log_id(&name).is_none() {
        return map_error(ManagerError::NotFound);
    }
    if let Some((old, wait)) = poll_request(&headers) {
        mgr.watch(old, wait, |m| m.service_log_id(&name)).await;
    }
    match mgr.service_log_records(&name, since) {
        Some((records, id, modified)) => conditional(&headers, id, modified, &records),
        None => map_error(ManagerError::NotFound),
    }
}

/// The percent-decoded last segment of `uri`'s path (invalid UTF-8 replaced).
fn last_segment(uri: &Uri) -> String {
    let raw = uri.path().rsplit('/').next().unwrap_or("").as_bytes();
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let hex = raw
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (raw[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn action(
    State(mgr): State<Arc<Manager>>,
    method: Method,
    uri: Uri,
    params: Result<Path<(String, String)>, PathRejection>,
) -> Response {
    let (name, action) = match params {
        Ok(Path(p)) => p,
        // A name that is not UTF-8 names no service.
        Err(_) => (String::new(), last_segment(&uri)),
    };
    if !matches!(action.as_str(), "enable" | "disable" | "restart" | "clear") {
        return not_found().await;
    }
    if method != Method::POST {
        return method_not_allowed().await;
    }
    let res = match action.as_str() {
        "enable" => mgr.enable(&name),
        "disable" => mgr.disable(&name),
        "restart" => mgr.restart(&name),
        _ => mgr.clear(&name),
    };
    match res {
        Ok(()) => {
            mgr.settle(&name, SETTLE_WAIT).await;
            json_response(StatusCode::OK, &serde_json::json!({}))
        }
        Err(e) => map_error(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A value serde cannot encode.
    struct Unencodable;

    impl Serialize for Unencodable {
        fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom("no JSON for this"))
        }
    }

    async fn body(r: Response) -> String {
        let bytes = axum::body::to_bytes(r.into_body(), 1 << 16)
            .await
            .unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    #[tokio::test]
    async fn a_reply_that_cannot_be_encoded_is_a_go_style_500() {
        let r = json_response(StatusCode::OK, &Unencodable);
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let h = r.headers();
        assert_eq!(
            h.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()),
            Some("text/plain; charset=utf-8")
        );
        assert_eq!(
            h.get(header::X_CONTENT_TYPE_OPTIONS)
                .and_then(|v| v.to_str().ok()),
            Some("nosniff")
        );
        assert_eq!(body(r).await, "no JSON for this\n");
    }

    #[test]
    fn the_last_segment_is_percent_decoded() {
        let uri = |s: &str| s.parse::<Uri>().unwrap_or_default();
        assert_eq!(last_segment(&uri("/services/%FF/en%61ble")), "enable");
        assert_eq!(last_segment(&uri("/services/a/%zz")), "%zz");
        assert_eq!(last_segment(&uri("/services/a/%FF")), "\u{fffd}");
    }
}
