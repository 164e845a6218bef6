//! A "Go sub-agent" made of the replies recorded from the Go test-rpc-service
//! (`tests/fixtures/wire/rpc-envelope.json`): byte-level stand-in for a deployed Go
//! sub-agent, gzip bodies and gorilla's 400 plain-text error included.
//!
//! It answers each RPC method with the recorded reply of that method (an unrecorded
//! method gets gorilla's `rpc: can't find method "…"` with HTTP 400), and the download
//! route with the recorded bytes. It also checks what it receives against what the Go
//! agent sent and keeps every difference in [`GoSubagent::problems`].

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::Value;

/// One recorded exchange.
pub struct Exchange {
    pub name: String,
    /// `/_mistify_RPC_` or the stream path.
    pub path: String,
    /// The request body the Go agent sent (placeholders filled in).
    pub request: Value,
    /// The reply's status, headers and (uncompressed) body.
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The `expect.body` matcher of the fixture (placeholders filled in).
    pub expect_body: Value,
}

/// The fixture's exchanges with its `vars` substituted.
pub fn exchanges() -> Vec<Exchange> {
    let fx = fixture();
    let vars: HashMap<String, String> = fx["vars"]
        .as_object()
        .map(|o| {
            o.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default();
    fx["exchanges"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|ex| {
            let ex = subst(ex, &vars);
            let expect = &ex["expect"];
            let body = match (&expect["body"]["json"], &expect["body"]["text"]) {
                (Value::Null, Value::String(text)) => text.clone().into_bytes(),
                (json, _) => format!("{json}\n").into_bytes(),
            };
            Exchange {
                name: ex["name"].as_str().unwrap_or_default().to_string(),
                path: ex["request"]["path"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                request: ex["request"]["body"].clone(),
                status: expect["status"].as_u64().unwrap_or(500) as u16,
                headers: ex["recorded_reply_headers"]
                    .as_object()
                    .map(|h| {
                        h.iter()
                            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                            .collect()
                    })
                    .unwrap_or_default(),
                body,
                expect_body: expect["body"].clone(),
            }
        })
        .collect()
}

/// `tests/fixtures/wire/rpc-envelope.json`.
pub fn fixture() -> Value {
    let path = crate::fixtures_dir().join("wire").join("rpc-envelope.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Replaces `{name}` placeholders in every string of `value`.
pub fn subst(value: &Value, vars: &HashMap<String, String>) -> Value {
    match value {
        Value::String(s) => {
            let mut s = s.clone();
            for (k, v) in vars {
                s = s.replace(&format!("{{{k}}}"), v);
            }
            Value::String(s)
        }
        Value::Array(a) => Value::Array(a.iter().map(|v| subst(v, vars)).collect()),
        Value::Object(o) => {
            Value::Object(o.iter().map(|(k, v)| (k.clone(), subst(v, vars))).collect())
        }
        other => other.clone(),
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    // Writing into a Vec cannot fail.
    let _ = encoder.write_all(data);
    encoder.finish().unwrap_or_default()
}

struct Shared {
    exchanges: Vec<Exchange>,
    problems: Mutex<Vec<String>>,
}

impl Shared {
    fn problem(&self, text: String) {
        self.problems
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(text);
    }
}

/// Every reply is gzip-encoded, as the Go sub-agent answered the Go agent.
fn reply(status: u16, headers: &[(String, String)], body: &[u8]) -> Response {
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        if let (Ok(k), Ok(v)) = (HeaderName::try_from(k.as_str()), HeaderValue::from_str(v)) {
            map.insert(k, v);
        }
    }
    map.insert("content-encoding", HeaderValue::from_static("gzip"));
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, map, gzip(body)).into_response()
}

async fn rpc(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    if headers.contains_key("accept-encoding") {
        shared.problem("the client asked for a compressed reply".into());
    }
    let sent: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            shared.problem(format!(
                "not JSON ({e}): {}",
                String::from_utf8_lossy(&body)
            ));
            return reply(400, &[], e.to_string().as_bytes());
        }
    };
    let method = sent["method"].as_str().unwrap_or_default().to_string();
    let Some(ex) = shared
        .exchanges
        .iter()
        .find(|e| e.path == "/_mistify_RPC_" && e.request["method"] == method.as_str())
    else {
        return reply(
            400,
            &[],
            format!("rpc: can't find method {method:?}").as_bytes(),
        );
    };
    if sent["params"] != ex.request["params"] {
        shared.problem(format!(
            "{}: params {} != recorded {}",
            ex.name, sent["params"], ex.request["params"]
        ));
    }
    if !sent["id"].is_u64() || sent.get("jsonrpc").is_some_and(|v| v != "2.0") {
        shared.problem(format!("{}: envelope {sent}", ex.name));
    }
    reply(ex.status, &ex.headers, &ex.body)
}

async fn stream(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let Some(ex) = shared
        .exchanges
        .iter()
        .find(|e| e.path == "/snapshots/download")
    else {
        return reply(404, &[], b"404 page not found\n");
    };
    if serde_json::from_slice::<Value>(&body).ok().as_ref() != Some(&ex.request) {
        shared.problem(format!("download body {}", String::from_utf8_lossy(&body)));
    }
    reply(ex.status, &ex.headers, &ex.body)
}

/// The recorded Go sub-agent, serving on a loopback port until dropped.
pub struct GoSubagent {
    pub port: u16,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl GoSubagent {
    /// Starts it on a free port (inside a tokio runtime).
    pub async fn start() -> GoSubagent {
        let shared = Arc::new(Shared {
            exchanges: exchanges(),
            problems: Mutex::new(Vec::new()),
        });
        let router = axum::Router::new()
            .route("/_mistify_RPC_", post(rpc))
            .route("/snapshots/download", post(stream))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        GoSubagent { port, shared, task }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn exchanges(&self) -> &[Exchange] {
        &self.shared.exchanges
    }

    /// Differences between what it received and what the Go agent sent.
    pub fn problems(&self) -> Vec<String> {
        self.shared
            .problems
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Drop for GoSubagent {
    fn drop(&mut self) {
        self.task.abort();
    }
}
