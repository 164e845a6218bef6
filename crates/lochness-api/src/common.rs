//! What the three daemons share: the state handlers get, the route table each daemon
//! builds its router and its OpenAPI document from, the router's fallbacks (the
//! strict-slash redirect of gorilla's router, its plain-text 404, 405 for a routed path
//! with another method), the request counter, and the request helpers — path ids, the
//! body, list pages (`?limit=`, `?continue=`, `X-Continue`) and replies.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use axum::Router;
use base64::Engine as _;
use lochness::{Context, PageRequest, MAX_PAGE};

use crate::config::Daemon;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::openapi::Doc;

/// Largest request body read (1 MiB); larger bodies get 413.
pub const BODY_LIMIT: usize = 1024 * 1024;

/// The header carrying the job id of cguestd's 202 answers.
pub const JOB_ID_HEADER: &str = "X-Guest-Job-ID";

/// The header carrying the token of the next page of a list.
pub const CONTINUE_HEADER: &str = "X-Continue";

/// What every handler gets.
#[derive(Clone)]
pub struct Api {
    /// The cluster in etcd.
    pub ctx: Context,
    /// Which daemon this is.
    pub daemon: Daemon,
    /// Its counters.
    pub metrics: Arc<Metrics>,
    /// Its OpenAPI document (set once the route table is built).
    pub openapi: Arc<std::sync::OnceLock<String>>,
}

/// One route: method, path template, handler and what the OpenAPI document says of it.
pub struct Route {
    /// The method (GET routes answer HEAD too).
    pub method: Method,
    /// The path template (`/guests/{id}`).
    pub path: &'static str,
    /// Its description.
    pub doc: Doc,
    handler: MethodRouter<Api>,
}

impl Route {
    /// A route; `handler` must answer `method` (axum's `get(…)`, `post(…)`, …).
    pub fn new(method: Method, path: &'static str, handler: MethodRouter<Api>, doc: Doc) -> Route {
        Route {
            method,
            path,
            doc,
            handler,
        }
    }
}

/// Whether `path` matches the template `template` (`{name}` matches one non-empty
/// segment).
pub fn matches_template(template: &str, path: &str) -> bool {
    let (mut t, mut p) = (template.split('/'), path.split('/'));
    loop {
        match (t.next(), p.next()) {
            (None, None) => return true,
            (Some(ts), Some(ps)) => {
                let param = ts.starts_with('{') && ts.ends_with('}');
                if (param && ps.is_empty()) || (!param && ts != ps) {
                    return false;
                }
            }
            _ => return false,
        }
    }
}

/// The router of `routes` with the fallbacks and the request counter.
pub fn router(api: Api, routes: Vec<Route>) -> Router {
    let templates: Arc<Vec<&'static str>> = Arc::new(routes.iter().map(|r| r.path).collect());
    let mut router = Router::new();
    for route in routes {
        router = router.route(route.path, route.handler);
    }
    router
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .fallback(move |uri: Uri| {
            let templates = templates.clone();
            async move {
                let routed = |p: &str| templates.iter().any(|t| matches_template(t, p));
                mistify_http::strict_slash_redirect(&uri, routed)
                    .unwrap_or_else(|| ApiError::no_route().into_response())
            }
        })
        .layer(axum::middleware::from_fn_with_state(api.clone(), count))
        .with_state(api)
}

/// Counts requests by route template and status (`unmatched` for the fallback).
async fn count(State(api): State<Api>, request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().cloned();
    let method = request.method().clone();
    let response = next.run(request).await;
    let route = route
        .as_ref()
        .map(MatchedPath::as_str)
        .unwrap_or("unmatched");
    api.metrics
        .request(method.as_str(), route, response.status().as_u16());
    response
}

/// A UUID of the path, lower-cased; `400` in the *msg* shape with `message` otherwise
/// (what the originals answered, e.g. `invalid guest id`).
pub fn path_uuid(text: &str, message: &str) -> Result<String, ApiError> {
    lochness::canonicalize(text).map_err(|_| ApiError::bad_request(message).msg())
}

/// Reads the whole body, up to [`BODY_LIMIT`].
pub async fn read_body(body: Body) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, BODY_LIMIT).await.map_err(|e| {
        if mistify_http::is_body_timeout(&e) {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "the request body stopped arriving",
            )
        } else if mistify_http::caused_by::<http_body_util::LengthLimitError>(&e) {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body larger than {BODY_LIMIT} bytes"),
            )
        } else {
            ApiError::bad_request(format!("cannot read the request body: {e}"))
        }
    })
}

/// Decodes a JSON body with serde (membership lists, configuration maps): `null` is the
/// type's default; an empty body is `EOF`, as Go's decoder said.
pub fn decode<T: serde::de::DeserializeOwned + Default>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request("EOF"));
    }
    serde_json::from_slice::<Option<T>>(bytes)
        .map(Option::unwrap_or_default)
        .map_err(|e| ApiError::bad_request(e.to_string()))
}

/// What the ids of a listing are, for checking a continue token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdKind {
    /// Lower-case UUIDs.
    Uuid,
    /// VLAN tags.
    Tag,
}

/// The `?continue=` token of the page after `id`: its base64url text.
pub fn continue_token(id: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id)
}

fn token_id(token: &str, kind: IdKind) -> Option<String> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()?;
    let id = String::from_utf8(bytes).ok()?;
    let ok = match kind {
        IdKind::Uuid => lochness::canonicalize(&id).ok().as_deref() == Some(id.as_str()),
        IdKind::Tag => id.parse::<u16>().is_ok_and(|t| (1..=4095).contains(&t)),
    };
    ok.then_some(id)
}

/// The query parameters of a list route.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// `?limit=` and `?continue=` as a page of the listing.
    pub page: PageRequest,
    /// The other parameters (the last value of each).
    pub params: BTreeMap<String, String>,
}

impl ListQuery {
    /// Parses a list route's query: `limit` must be an integer from 1 to 10000,
    /// `continue` a token this daemon gave (`400` otherwise). Other parameters are
    /// kept for the route's filters.
    pub fn parse(query: Option<&str>, kind: IdKind) -> Result<ListQuery, ApiError> {
        let mut out = ListQuery::default();
        for (k, v) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            out.params.insert(k.into_owned(), v.into_owned());
        }
        if let Some(limit) = out.params.remove("limit") {
            let n = limit
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=MAX_PAGE).contains(n))
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "invalid limit {limit:?}: an integer from 1 to {MAX_PAGE}"
                    ))
                })?;
            out.page.limit = Some(n);
        }
        if let Some(token) = out.params.remove("continue") {
            out.page.after = Some(token_id(&token, kind).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "invalid continue token {token:?}: pass the X-Continue header of the previous page"
                ))
            })?);
        }
        Ok(out)
    }

    /// The UUID filter `name` (absent or empty: none); `400` for another value.
    pub fn uuid_filter(&self, name: &str) -> Result<Option<String>, ApiError> {
        match self.params.get(name).map(String::as_str) {
            None | Some("") => Ok(None),
            Some(v) => lochness::canonicalize(v)
                .map(Some)
                .map_err(|_| ApiError::bad_request(format!("invalid {name} filter {v:?}: a UUID"))),
        }
    }

    /// The boolean filter `name` (`true` or `false`; absent or empty: none).
    pub fn bool_filter(&self, name: &str) -> Result<Option<bool>, ApiError> {
        match self.params.get(name).map(String::as_str) {
            None | Some("") => Ok(None),
            Some("true") => Ok(Some(true)),
            Some("false") => Ok(Some(false)),
            Some(v) => Err(ApiError::bad_request(format!(
                "invalid {name} filter {v:?}: true or false"
            ))),
        }
    }
}

/// A JSON document (already encoded) with Go's trailing newline.
pub fn json_text(status: StatusCode, json: String) -> Response {
    mistify_http::json_bytes(status, json.into_bytes())
}

/// `200` with a JSON array of `items` (each already encoded) and, when more follow,
/// `X-Continue` with the token of the next page.
pub fn list_response(items: impl IntoIterator<Item = String>, next: Option<&str>) -> Response {
    let mut text = String::from("[");
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            text.push(',');
        }
        text.push_str(&item);
    }
    text.push(']');
    let mut response = json_text(StatusCode::OK, text);
    if let Some(id) = next {
        if let Ok(v) = HeaderValue::from_str(&continue_token(id)) {
            static NAME: HeaderName = HeaderName::from_static("x-continue");
            response.headers_mut().insert(NAME.clone(), v);
        }
    }
    response
}

/// `202` with the guest and `X-Guest-Job-ID`.
pub fn accepted(job_id: &str, json: String) -> Response {
    let mut response = json_text(StatusCode::ACCEPTED, json);
    if let Ok(v) = HeaderValue::from_str(job_id) {
        static NAME: HeaderName = HeaderName::from_static("x-guest-job-id");
        response.headers_mut().insert(NAME.clone(), v);
    }
    response
}

/// The request's `Accept` header names Prometheus' text format or OpenMetrics.
pub fn accepts_prometheus(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .any(|m| m == "text/plain" || m == "application/openmetrics-text")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates() {
        assert!(matches_template("/guests", "/guests"));
        assert!(matches_template("/guests/{id}", "/guests/abc"));
        assert!(!matches_template("/guests/{id}", "/guests/"));
        assert!(!matches_template("/guests/{id}", "/guests/a/b"));
        assert!(matches_template(
            "/hypervisors/{id}/config",
            "/hypervisors/x/config"
        ));
        assert!(!matches_template("/jobs/{id}", "/jobs"));
    }

    #[test]
    fn list_queries() {
        let q = ListQuery::parse(
            Some("limit=5&network=AAAA0001-1111-4111-8111-000000000001"),
            IdKind::Uuid,
        )
        .unwrap();
        assert_eq!(q.page.limit, Some(5));
        assert_eq!(
            q.uuid_filter("network").unwrap().as_deref(),
            Some("aaaa0001-1111-4111-8111-000000000001")
        );
        for bad in [
            "limit=0",
            "limit=10001",
            "limit=x",
            "limit=",
            "continue=%%%",
            "continue=abc",
        ] {
            assert!(ListQuery::parse(Some(bad), IdKind::Uuid).is_err(), "{bad}");
        }
        let id = "aaaa0001-1111-4111-8111-000000000001";
        let q = ListQuery::parse(
            Some(&format!("continue={}", continue_token(id))),
            IdKind::Uuid,
        )
        .unwrap();
        assert_eq!(q.page.after.as_deref(), Some(id));
        assert!(ListQuery::parse(
            Some(&format!("continue={}", continue_token("10"))),
            IdKind::Uuid
        )
        .is_err());
        assert!(ListQuery::parse(
            Some(&format!("continue={}", continue_token("10"))),
            IdKind::Tag
        )
        .is_ok());
        let q = ListQuery::parse(Some("alive=maybe"), IdKind::Uuid).unwrap();
        assert!(q.bool_filter("alive").is_err());
        assert!(q.uuid_filter("subnet").unwrap().is_none());
    }

    #[test]
    fn prometheus_is_asked_for_by_scrapers() {
        let mut h = axum::http::HeaderMap::new();
        assert!(!accepts_prometheus(&h));
        h.insert(header::ACCEPT, HeaderValue::from_static("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"));
        assert!(accepts_prometheus(&h));
        h.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        assert!(!accepts_prometheus(&h));
    }
}
