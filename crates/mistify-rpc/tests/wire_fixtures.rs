//! The recorded Go traffic of `tests/fixtures/wire/rpc-envelope.json`, both ways:
//!
//! * what the Go test-rpc-service answered (gzip bodies, the 400 plain-text error, the
//!   download stream) is served to our `Client`, which must read it as the Go agent did,
//!   and what our client sends must match what the Go agent sent;
//! * every recorded exchange is replayed with `replay.py --subagent` against our
//!   `test-rpc-service` example, which must answer as the Go one did.

use mistify_e2e::recorded::{fixture, GoSubagent};
use mistify_rpc::{Client, RpcError, ServiceConfig};
use serde_json::Value;

#[tokio::test]
async fn client_reads_the_recorded_go_replies() {
    let go = GoSubagent::start().await;
    assert_eq!(go.exchanges().len(), 8, "the fixture has 8 exchanges");
    let client = Client::new();
    let test = client.service("test", ServiceConfig::url(go.url()));
    let download = client.service(
        "testDownload",
        ServiceConfig::url(go.url()).path("/snapshots/download"),
    );
    for ex in go.exchanges() {
        if ex.path == "/snapshots/download" {
            let stream = download.stream(&ex.request).await.unwrap();
            assert_eq!(stream.status.as_u16(), 200);
            assert_eq!(
                stream.collect().await.unwrap().as_ref(),
                b"foobar",
                "{}",
                ex.name
            );
            continue;
        }
        let method = ex.request["method"].as_str().unwrap();
        let outcome = test.call_raw(method, &ex.request["params"][0]).await;
        if ex.status >= 400 {
            match outcome {
                Err(RpcError::Status { status, body, .. }) => {
                    assert_eq!(status, ex.status);
                    assert_eq!(
                        body,
                        ex.expect_body["text"].as_str().unwrap(),
                        "{}",
                        ex.name
                    );
                }
                other => panic!("{}: expected the 400 text, got {other:?}", ex.name),
            }
        } else {
            let result: Value = serde_json::from_str(outcome.unwrap().get()).unwrap();
            assert_eq!(result, ex.expect_body["json"]["result"], "{}", ex.name);
        }
    }
    let problems = go.problems();
    assert!(
        problems.is_empty(),
        "requests differ from the Go agent's: {problems:#?}"
    );
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
