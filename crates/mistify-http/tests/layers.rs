//! The shared HTTP layers (`mistify_http::with_common_layers`) on a router of their
//! own, in process: panic recovery and gzip on request with Go's `Vary` (the access log
//! is tested in `access_log.rs`, a binary of its own).

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::routing::get;
use axum::Router;
use tower::ServiceExt;

fn app() -> Router {
    let routes = Router::new()
        .route("/ok", get(|| async { "hello" }))
        .route("/big", get(|| async { "x".repeat(4096) }))
        .route(
            "/boom",
            get(|| async {
                if std::env::var_os("MISTIFY_NEVER_SET").is_none() {
                    panic!("handler bug");
                }
                "unreachable"
            }),
        );
    mistify_http::with_common_layers(routes)
}

async fn send(
    app: &Router,
    path: &str,
    gzip: bool,
) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let mut request = Request::get(path);
    if gzip {
        request = request.header(header::ACCEPT_ENCODING, "gzip");
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::empty()).expect("request"))
        .await
        .expect("infallible");
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX).await.expect("body");
    (parts.status, parts.headers, bytes.to_vec())
}

#[tokio::test]
async fn a_panicking_handler_answers_500_with_an_empty_body_and_the_router_goes_on() {
    let app = app();
    let (status, _, body) = send(&app, "/boom", false).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(body.is_empty(), "{body:?}");
    let (status, _, body) = send(&app, "/ok", false).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, b"hello");
}

#[tokio::test]
async fn gzip_only_when_asked_with_vary_spelt_as_go_did() {
    let app = app();
    let (status, headers, body) = send(&app, "/big", true).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_ENCODING], "gzip");
    assert_eq!(headers[header::VARY], "Accept-Encoding");
    let mut plain = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&body[..]), &mut plain)
        .expect("gzip");
    assert_eq!(plain, "x".repeat(4096));
    let (_, headers, body) = send(&app, "/big", false).await;
    assert!(headers.get(header::CONTENT_ENCODING).is_none());
    assert_eq!(body.len(), 4096);
    // A small body is compressed too, as Go compressed every reply.
    let (_, headers, body) = send(&app, "/ok", true).await;
    assert_eq!(headers[header::CONTENT_ENCODING], "gzip");
    assert_eq!(headers[header::VARY], "Accept-Encoding");
    let mut plain = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&body[..]), &mut plain)
        .expect("gzip");
    assert_eq!(plain, "hello");
}
