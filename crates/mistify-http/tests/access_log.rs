//! The access log of the shared HTTP layers: one event per request once its body is
//! sent, with path, status and bytes, and the panic logged. A test binary of its own:
//! `tracing` caches per call site whether anyone listens, and a test in the same process
//! without this subscriber could make the cache say no.

use std::io::Write;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::Request;
use axum::routing::get;
use axum::Router;
use tower::ServiceExt;

fn app() -> Router {
    let routes = Router::new().route("/ok", get(|| async { "hello" })).route(
        "/boom",
        get(|| async {
            let handler_bug: Option<&str> = std::hint::black_box(None);
            handler_bug.expect("handler bug")
        }),
    );
    mistify_http::with_common_layers(routes)
}

async fn send(app: &Router, path: &str) {
    let response = app
        .clone()
        .oneshot(Request::get(path).body(Body::empty()).expect("request"))
        .await
        .expect("infallible");
    axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("body");
}

/// Collects what the subscriber writes.
#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("sink").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn every_request_is_logged_once_its_body_is_sent() {
    let sink = Sink::default();
    let writer = sink.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_max_level(tracing::Level::INFO)
        .with_writer(move || writer.clone())
        .finish();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    tracing::subscriber::with_default(subscriber, || {
        runtime.block_on(async {
            let app = app();
            send(&app, "/ok").await;
            send(&app, "/boom").await;
            send(&app, "/nowhere").await;
        })
    });
    let text = String::from_utf8(sink.0.lock().expect("sink").clone()).expect("utf-8");
    let events: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .filter(|e: &serde_json::Value| e["fields"]["message"] == "request processed")
        .collect();
    let seen: Vec<(String, u64, u64)> = events
        .iter()
        .map(|e| {
            let f = &e["fields"];
            (
                f["path"].as_str().unwrap_or("?").to_string(),
                f["status"].as_u64().unwrap_or(0),
                f["bytes"].as_u64().unwrap_or(u64::MAX),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            ("/ok".to_string(), 200, 5),
            ("/boom".to_string(), 500, 0),
            ("/nowhere".to_string(), 404, 0),
        ],
        "{text}"
    );
    assert!(
        text.contains("a request handler panicked"),
        "the panic is logged: {text}"
    );
}
