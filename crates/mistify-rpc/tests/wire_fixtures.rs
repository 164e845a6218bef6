//! The recorded Go traffic of `tests/fixtures/wire/rpc-envelope.json`, both ways:
//!
//! * what the Go test-rpc-service answered (gzip bodies, the 400 plain-text error, the
//!   download stream) is served to our `Client`, which must read it as the Go agent did,
//!   and what our client sends must match what the Go agent sent;
//! * every recorded exchange is replayed with `replay.py --subagent` against our
//!   `test-rpc-service` example, which must answer as the Go one did.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use mistify_rpc::{Client, RpcError, ServiceConfig};
use serde_json::Value;

fn fixture() -> Value {
    let path = mistify_e2e::fixtures_dir()
        .join("wire")
        .join("rpc-envelope.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("fixture is JSON")
}

/// Replaces `{name}` placeholders in every string of `value`.
fn subst(value: &Value, vars: &HashMap<String, String>) -> Value {
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
    encoder.write_all(data).expect("gzip");
    encoder.finish().expect("gzip")
}

/// One recorded exchange, ready to serve.
struct Recorded {
    name: String,
    path: String,
    request: Value,
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn recorded() -> Vec<Recorded> {
    let fx = fixture();
    let vars: HashMap<String, String> = fx["vars"]
        .as_object()
        .expect("vars")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
        .collect();
    let exchanges = fx["exchanges"].as_array().expect("exchanges");
    assert_eq!(exchanges.len(), 8, "the fixture has 8 exchanges");
    exchanges
        .iter()
        .map(|ex| {
            let ex = subst(ex, &vars);
            let expect = &ex["expect"];
            let plain = match (&expect["body"]["json"], &expect["body"]["text"]) {
                (Value::Null, Value::String(text)) => text.clone().into_bytes(),
                (json, _) => format!("{json}\n").into_bytes(),
            };
            let headers = ex["recorded_reply_headers"]
                .as_object()
                .map(|h| {
                    h.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                        .collect()
                })
                .unwrap_or_default();
            Recorded {
                name: ex["name"].as_str().unwrap_or_default().to_string(),
                path: ex["request"]["path"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                request: ex["request"]["body"].clone(),
                status: expect["status"].as_u64().unwrap_or(0) as u16,
                headers,
                // Every reply was recorded gzip-encoded (the Go agent asked for it).
                body: gzip(&plain),
            }
        })
        .collect()
}

struct Fake {
    recorded: Vec<Recorded>,
    problems: Mutex<Vec<String>>,
}

fn reply(r: &Recorded) -> Response {
    let mut headers = HeaderMap::new();
    for (k, v) in &r.headers {
        if let (Ok(k), Ok(v)) = (HeaderName::try_from(k.as_str()), HeaderValue::from_str(v)) {
            headers.insert(k, v);
        }
    }
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, headers, r.body.clone()).into_response()
}

/// Answers an RPC call with the recorded reply of the same method, after checking the
/// request is what the Go agent sent (plus our `"jsonrpc":"2.0"`).
async fn rpc(State(fake): State<Arc<Fake>>, headers: HeaderMap, body: Bytes) -> Response {
    let problem = |text: String| {
        fake.problems
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(text);
        (StatusCode::IM_A_TEAPOT, "request mismatch").into_response()
    };
    if headers.get("accept-encoding").is_some() {
        return problem("the client asked for a compressed reply".into());
    }
    let Ok(sent) = serde_json::from_slice::<Value>(&body) else {
        return problem(format!("not JSON: {}", String::from_utf8_lossy(&body)));
    };
    let Some(r) = fake
        .recorded
        .iter()
        .find(|r| r.path == "/_mistify_RPC_" && r.request["method"] == sent["method"])
    else {
        return problem(format!("unexpected method {}", sent["method"]));
    };
    if sent["params"] != r.request["params"] {
        return problem(format!(
            "{}: params {} != {}",
            r.name, sent["params"], r.request["params"]
        ));
    }
    if sent["jsonrpc"] != "2.0" || !sent["id"].is_u64() {
        return problem(format!("{}: envelope {sent}", r.name));
    }
    reply(r)
}

async fn download(State(fake): State<Arc<Fake>>, body: Bytes) -> Response {
    let Some(r) = fake
        .recorded
        .iter()
        .find(|r| r.path == "/snapshots/download")
    else {
        return (StatusCode::NOT_FOUND, "").into_response();
    };
    if serde_json::from_slice::<Value>(&body).ok().as_ref() != Some(&r.request) {
        fake.problems
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(format!("download body {}", String::from_utf8_lossy(&body)));
    }
    reply(r)
}

#[tokio::test]
async fn client_reads_the_recorded_go_replies() {
    let fake = Arc::new(Fake {
        recorded: recorded(),
        problems: Mutex::new(Vec::new()),
    });
    let router = axum::Router::new()
        .route("/_mistify_RPC_", post(rpc))
        .route("/snapshots/download", post(download))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move { axum::serve(listener, router).await });

    let client = Client::new();
    let test = client.service("test", ServiceConfig::url(&url));
    let download = client.service(
        "testDownload",
        ServiceConfig::url(&url).path("/snapshots/download"),
    );
    let fx = fixture();
    let mut checked = 0;
    for r in &fake.recorded {
        let expected = fx["exchanges"]
            .as_array()
            .and_then(|a| a.iter().find(|e| e["name"] == r.name.as_str()))
            .map(|e| &e["expect"]["body"])
            .expect("exchange");
        if r.path == "/snapshots/download" {
            let stream = download.stream(&r.request).await.unwrap();
            assert_eq!(stream.status.as_u16(), 200);
            let bytes = stream.collect().await.unwrap();
            assert_eq!(bytes.as_ref(), b"foobar", "{}", r.name);
        } else if r.status >= 400 {
            let method = r.request["method"].as_str().unwrap();
            let err = test
                .call_raw(method, &r.request["params"][0])
                .await
                .unwrap_err();
            match err {
                RpcError::Status { status, body, .. } => {
                    assert_eq!(status, r.status);
                    assert_eq!(body, expected["text"].as_str().unwrap(), "{}", r.name);
                }
                other => panic!("{}: expected the 400 text, got {other:?}", r.name),
            }
        } else {
            let method = r.request["method"].as_str().unwrap();
            let result = test
                .call_raw(method, &r.request["params"][0])
                .await
                .unwrap();
            let result: Value = serde_json::from_str(result.get()).unwrap();
            let vars: HashMap<String, String> = [(
                "guest_id".to_string(),
                fx["vars"]["guest_id"].as_str().unwrap().to_string(),
            )]
            .into();
            assert_eq!(
                result,
                subst(&expected["json"]["result"], &vars),
                "{}",
                r.name
            );
        }
        checked += 1;
    }
    assert_eq!(checked, 8);
    let problems = fake.problems.lock().unwrap().clone();
    assert!(
        problems.is_empty(),
        "requests differ from the Go agent's: {problems:#?}"
    );
    task.abort();
}

#[test]
fn test_rpc_service_answers_every_recorded_exchange_as_go_did() {
    if mistify_e2e::skipped("replay") {
        return;
    }
    // An exchanges-only copy of the fixture, so replay.py needs no agent.
    let mut fx = fixture();
    if let Some(o) = fx.as_object_mut() {
        o.remove("cases");
    }
    let dir = std::env::temp_dir().join(format!("mistify-rpc-replay-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("exchanges.json");
    std::fs::write(&file, fx.to_string()).unwrap();

    let port = mistify_e2e::free_port();
    let service = mistify_e2e::example("test-rpc-service");
    let _daemon = mistify_e2e::Daemon::start(&service, &["--port".into(), port.to_string()], port);
    let (ok, output) = mistify_e2e::replay(&[
        file.display().to_string(),
        "--subagent".into(),
        format!("http://127.0.0.1:{port}"),
    ]);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(ok, "replay failed:\n{output}");
    assert!(
        output.lines().any(|l| l == "8 passed, 0 failed"),
        "{output}"
    );
}
