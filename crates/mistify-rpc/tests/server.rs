//! The RPC server over real HTTP: both dialects, the raw id echo, gorilla/rpc's error
//! answers, hostile bodies, gzip, extra routes, `/healthz`.

use axum::routing::get;
use mistify_rpc::{Guest, GuestRequest, GuestResponse, RunningServer, Server};
use serde_json::{json, Value};

async fn start() -> RunningServer {
    Server::new("test")
        .method("Test.Echo", |req: GuestRequest| async move {
            Ok::<_, String>(GuestResponse {
                guest: req.guest,
                ..Default::default()
            })
        })
        .method("Test.Fail", |req: GuestRequest| async move {
            Err::<GuestResponse, _>(format!("failed on \"{}\"", req.action))
        })
        .method("Test.Panic", |_: GuestRequest| async move {
            if true {
                panic!("boom");
            }
            Ok::<GuestResponse, String>(GuestResponse::default())
        })
        .route("/extra", get(|| async { "extra route" }))
        .body_limit(64 * 1024)
        .bind(([127, 0, 0, 1], 0).into())
        .await
        .expect("bind")
        .spawn()
        .expect("spawn")
}

struct Reply {
    status: u16,
    content_type: String,
    text: String,
}

async fn post_with(
    server: &RunningServer,
    content_type: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> Reply {
    let mut request = reqwest::Client::new()
        .post(format!("{}/_mistify_RPC_", server.url()))
        .body(body);
    if let Some(ct) = content_type {
        request = request.header("Content-Type", ct);
    }
    let response = request.send().await.expect("request");
    Reply {
        status: response.status().as_u16(),
        content_type: response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap_or("").to_string())
            .unwrap_or_default(),
        text: response.text().await.expect("body"),
    }
}

async fn post(server: &RunningServer, body: &str) -> Reply {
    post_with(server, Some("application/json"), body.to_string()).await
}

#[tokio::test]
async fn v1_request_gets_a_byte_exact_v1_reply() {
    let server = start().await;
    let r = post(
        &server,
        r#"{"method":"Test.Echo","params":[{"guest":{"id":"g1","memory":512},"action":"reboot"}],"id":4037200794235010051}"#,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.content_type, "application/json; charset=utf-8");
    assert_eq!(
        r.text,
        "{\"result\":{\"guest\":{\"id\":\"g1\",\"memory\":512}},\"error\":null,\"id\":4037200794235010051}\n"
    );
}

#[tokio::test]
async fn v2_request_gets_a_v2_reply() {
    let server = start().await;
    let r = post(
        &server,
        r#"{"jsonrpc":"2.0","method":"Test.Echo","params":[{"guest":{"id":"g2"}}],"id":7}"#,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.text,
        r#"{"jsonrpc":"2.0","result":{"guest":{"id":"g2"}},"id":7}"#
    );
    // 2.0 also passes the argument by name.
    let r = post(
        &server,
        r#"{"jsonrpc":"2.0","method":"Test.Echo","params":{"guest":{"id":"g3"}},"id":"x"}"#,
    )
    .await;
    assert_eq!(
        r.text,
        r#"{"jsonrpc":"2.0","result":{"guest":{"id":"g3"}},"id":"x"}"#
    );
}

#[tokio::test]
async fn raw_id_token_is_echoed() {
    let server = start().await;
    for id in [
        "9223372036854775807",
        "0",
        "18446744073709551615",
        "\"a-string-id\"",
        "\"\\u00e9t\\u00e9\"",
        "1.50",
        "-3",
    ] {
        let v1 = post(
            &server,
            &format!(r#"{{"method":"Test.Echo","params":[{{}}],"id":{id}}}"#),
        )
        .await;
        assert!(
            v1.text.ends_with(&format!(",\"id\":{id}}}\n")),
            "v1 id {id} came back as {}",
            v1.text
        );
        let v2 = post(
            &server,
            &format!(r#"{{"jsonrpc":"2.0","method":"Test.Echo","params":[{{}}],"id":{id}}}"#),
        )
        .await;
        assert!(
            v2.text.ends_with(&format!(",\"id\":{id}}}")),
            "v2 id {id}: {}",
            v2.text
        );
    }
}

#[tokio::test]
async fn notifications_run_but_get_no_body() {
    let server = start().await;
    let r = post(&server, r#"{"method":"Test.Echo","params":[{}]}"#).await;
    assert_eq!((r.status, r.text.as_str()), (200, ""));
    let r = post(&server, r#"{"method":"Test.Echo","params":[{}],"id":null}"#).await;
    assert_eq!((r.status, r.text.as_str()), (200, ""));
    let r = post(
        &server,
        r#"{"jsonrpc":"2.0","method":"Test.Echo","params":[{}]}"#,
    )
    .await;
    assert_eq!((r.status, r.text.as_str()), (204, ""));
}

#[tokio::test]
async fn method_errors_in_each_dialect() {
    let server = start().await;
    let r = post(
        &server,
        r#"{"method":"Test.Fail","params":[{"action":"x"}],"id":1}"#,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.text,
        "{\"result\":null,\"error\":\"failed on \\\"x\\\"\",\"id\":1}\n"
    );
    let r = post(
        &server,
        r#"{"jsonrpc":"2.0","method":"Test.Fail","params":[{"action":"y"}],"id":2}"#,
    )
    .await;
    let v: Value = serde_json::from_str(&r.text).unwrap();
    assert_eq!(
        v,
        json!({"jsonrpc": "2.0", "error": {"code": -32000, "message": "failed on \"y\""}, "id": 2})
    );
}

#[tokio::test]
async fn gorilla_v1_request_errors() {
    let server = start().await;
    let cases = [
        (
            r#"{"method":"Test.Nope","params":[{}],"id":1}"#,
            "rpc: can't find method \"Test.Nope\"",
        ),
        (
            r#"{"method":"Other.Echo","params":[{}],"id":1}"#,
            "rpc: can't find service \"Other.Echo\"",
        ),
        (
            r#"{"method":"TestEcho","params":[{}],"id":1}"#,
            "rpc: service/method request ill-formed: \"TestEcho\"",
        ),
        (
            r#"{"method":"A.B.C","params":[{}],"id":1}"#,
            "rpc: service/method request ill-formed: \"A.B.C\"",
        ),
        (
            r#"{"params":[{}],"id":1}"#,
            "rpc: service/method request ill-formed: \"\"",
        ),
        (
            r#"{"method":"Test.Echo","id":1}"#,
            "rpc: method request ill-formed: missing params field",
        ),
        (
            r#"{"method":"Test.Echo","params":null,"id":1}"#,
            "rpc: method request ill-formed: missing params field",
        ),
    ];
    for (body, text) in cases {
        let r = post(&server, body).await;
        assert_eq!(r.status, 400, "{body}");
        assert_eq!(r.text, text, "{body}");
        assert!(
            r.content_type.starts_with("text/plain"),
            "{body}: {}",
            r.content_type
        );
    }
    let r = reqwest::get(format!("{}/_mistify_RPC_", server.url()))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 405);
    assert_eq!(
        r.text().await.unwrap(),
        "rpc: POST method required, received GET"
    );
    let r = post_with(&server, Some("text/xml"), "{}").await;
    assert_eq!(
        (r.status, r.text.as_str()),
        (415, "rpc: unrecognized Content-Type: text/xml")
    );
    // No Content-Type at all is accepted, parameters after ';' and case are ignored.
    let echo = r#"{"method":"Test.Echo","params":[{}],"id":1}"#;
    assert_eq!(post_with(&server, None, echo).await.status, 200);
    assert_eq!(
        post_with(&server, Some("Application/JSON; charset=utf-8"), echo)
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn v2_request_errors_carry_codes() {
    let server = start().await;
    let code = |text: &str| -> i64 {
        let v: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"));
        v["error"]["code"]
            .as_i64()
            .unwrap_or_else(|| panic!("no code in {text}"))
    };
    let r = post(
        &server,
        r#"{"jsonrpc":"2.0","method":"Test.Nope","params":[],"id":1}"#,
    )
    .await;
    assert_eq!((r.status, code(&r.text)), (200, -32601));
    let r = post(
        &server,
        r#"{"jsonrpc":"2.0","method":"Test.Echo","params":[{"guest":7}],"id":1}"#,
    )
    .await;
    assert_eq!(code(&r.text), -32602);
    let r = post(&server, r#"{"jsonrpc":"1.5","method":"Test.Echo","id":1}"#).await;
    assert_eq!(code(&r.text), -32600);
    let r = post(&server, r#"{"jsonrpc":"2.0","method":"Test.Echo",,}"#).await;
    assert_eq!(code(&r.text), -32700);
    let r = post(
        &server,
        r#"{"jsonrpc":"2.0","method":"Test.Panic","params":[{}],"id":1}"#,
    )
    .await;
    assert_eq!(code(&r.text), -32603);
}

#[tokio::test]
async fn v2_batches_answer_each_element() {
    let server = start().await;
    let r = post(
        &server,
        r#"[{"jsonrpc":"2.0","method":"Test.Echo","params":[{"guest":{"id":"a"}}],"id":1},
            {"jsonrpc":"2.0","method":"Test.Echo","params":[{}]},
            {"jsonrpc":"2.0","method":"Test.Fail","params":[{"action":"b"}],"id":2},
            5]"#,
    )
    .await;
    let v: Value = serde_json::from_str(&r.text).unwrap();
    assert_eq!(v.as_array().map(Vec::len), Some(3), "{v}");
    assert_eq!(v[0]["result"]["guest"]["id"], "a");
    assert_eq!(v[1]["error"]["code"], -32000);
    assert_eq!(v[2]["error"]["code"], -32600);
    let r = post(&server, "[]").await;
    assert_eq!(
        serde_json::from_str::<Value>(&r.text).unwrap()["error"]["code"],
        -32600
    );
}

#[tokio::test]
async fn malformed_bodies_get_errors_and_the_server_survives() {
    let server = start().await;
    let bodies: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"not json".to_vec(),
        b"{\"method\":\"Test.Echo\",\"params\":[{\"guest\":".to_vec(),
        b"{\"method\":\"Test.Echo\",\"params\":{\"a\":1},\"id\":1}".to_vec(),
        b"{\"method\":\"Test.Echo\",\"params\":\"x\",\"id\":1}".to_vec(),
        b"{\"method\":\"Test.Echo\",\"params\":[{\"guest\":{\"memory\":-1}}],\"id\":1}".to_vec(),
        b"{\"method\":\"Test.Echo\",\"params\":[[1,2]],\"id\":1}".to_vec(),
        b"{\"method\":42,\"params\":[],\"id\":1}".to_vec(),
        b"42".to_vec(),
        b"null".to_vec(),
        vec![0xff, 0xfe, 0x00, 0x01],
        format!(
            "{{\"method\":\"Test.Echo\",\"params\":[\"{}\"],\"id\":1}}",
            "x".repeat(100 * 1024)
        )
        .into_bytes(),
    ];
    for body in bodies {
        let shown = String::from_utf8_lossy(&body[..body.len().min(60)]).into_owned();
        let r = post_with(&server, Some("application/json"), body).await;
        assert!(
            (400..500).contains(&r.status),
            "{shown}: status {}",
            r.status
        );
        assert!(!r.text.is_empty(), "{shown}: empty error text");
    }
    let too_big = format!(
        "{{\"method\":\"Test.Echo\",\"params\":[\"{}\"],\"id\":1}}",
        "x".repeat(100 * 1024)
    );
    assert_eq!(post(&server, &too_big).await.status, 413);
    // A panicking method answers 500 with an empty body, as gorilla's recovery did.
    let r = post(&server, r#"{"method":"Test.Panic","params":[{}],"id":1}"#).await;
    assert_eq!((r.status, r.text.as_str()), (500, ""));
    let r = post(
        &server,
        r#"{"method":"Test.Echo","params":[{"guest":{"id":"alive"}}],"id":1}"#,
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(r.text.contains("alive"));
}

#[tokio::test]
async fn partial_and_over_complete_bodies_decode() {
    let server = start().await;
    // Partial: most fields missing, explicit nulls.
    let r = post(
        &server,
        r#"{"method":"Test.Echo","params":[{"guest":{"id":"p","nics":null}}],"id":1}"#,
    )
    .await;
    assert_eq!(
        r.text,
        "{\"result\":{\"guest\":{\"id\":\"p\"}},\"error\":null,\"id\":1}\n"
    );
    // Empty and null argument: the zero value.
    for params in ["[]", "[null]", "[{}]"] {
        let r = post(
            &server,
            &format!(r#"{{"method":"Test.Echo","params":{params},"id":1}}"#),
        )
        .await;
        assert_eq!(
            r.text, "{\"result\":{\"guest\":null},\"error\":null,\"id\":1}\n",
            "{params}"
        );
    }
    // Over-complete: unknown keys everywhere, extra params elements, extra envelope keys.
    let r = post(
        &server,
        r#"{"method":"Test.Echo","params":[{"guest":{"id":"o","future":{"x":1}},"action":"a","new":[1]},{"second":true}],"id":2,"extra":"ignored"}"#,
    )
    .await;
    assert_eq!(
        r.text,
        "{\"result\":{\"guest\":{\"id\":\"o\"}},\"error\":null,\"id\":2}\n"
    );
}

#[tokio::test]
async fn gzip_only_when_asked_extra_routes_and_healthz() {
    let server = start().await;
    let guest = Guest {
        id: "z".repeat(2000),
        ..Guest::default()
    };
    let body = json!({"method": "Test.Echo", "params": [{"guest": guest}], "id": 1}).to_string();
    let raw = reqwest::Client::new()
        .post(format!("{}/_mistify_RPC_", server.url()))
        .header("Content-Type", "application/json")
        .header("Accept-Encoding", "gzip")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(raw.headers()["content-encoding"], "gzip");
    assert_eq!(
        raw.headers()["vary"],
        "Accept-Encoding",
        "spelled as Go wrote it"
    );
    let plain = reqwest::Client::new()
        .post(format!("{}/_mistify_RPC_", server.url()))
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert!(plain.headers().get("content-encoding").is_none());
    assert_eq!(
        reqwest::get(format!("{}/extra", server.url()))
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "extra route"
    );
    let health: Value = reqwest::get(format!("{}/healthz", server.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["service"], "test");
    assert!(health["version"].as_str().is_some_and(|v| !v.is_empty()));
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn a_v1_only_server_ignores_the_jsonrpc_member_as_gorilla_did() {
    let server = Server::new("legacy")
        .v1_only()
        .method("Test.Echo", |req: GuestRequest| async move {
            Ok::<_, String>(GuestResponse {
                guest: req.guest,
                ..Default::default()
            })
        })
        .bind(([127, 0, 0, 1], 0).into())
        .await
        .unwrap()
        .spawn()
        .unwrap();
    let r = post(
        &server,
        r#"{"jsonrpc":"2.0","method":"Test.Echo","params":[{"guest":{"id":"x"}}],"id":5}"#,
    )
    .await;
    assert_eq!(
        r.text,
        "{\"result\":{\"guest\":{\"id\":\"x\"}},\"error\":null,\"id\":5}\n"
    );
    let r = post(
        &server,
        r#"{"jsonrpc":"2.0","method":"Test.Nope","params":[{}],"id":5}"#,
    )
    .await;
    assert_eq!(
        (r.status, r.text.as_str()),
        (400, "rpc: can't find method \"Test.Nope\"")
    );
    let r = post(
        &server,
        r#"{"jsonrpc":"2.0","method":"Test.Echo","params":[{}],"id":null}"#,
    )
    .await;
    assert_eq!(
        (r.status, r.text.as_str()),
        (200, ""),
        "a null id is a v1 notification"
    );
    let r = post(
        &server,
        r#"[{"jsonrpc":"2.0","method":"Test.Echo","params":[{}],"id":1}]"#,
    )
    .await;
    assert_eq!(r.status, 400, "no batches in v1");
}

#[tokio::test]
async fn healthz_answers_503_with_the_reason_while_the_check_fails() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let ready = Arc::new(AtomicBool::new(false));
    let flag = ready.clone();
    let server = Server::new("checked")
        .version("1.2.3")
        .health_check(move || {
            let ready = flag.load(Ordering::SeqCst);
            async move {
                if ready {
                    Ok(())
                } else {
                    Err("pool p is not imported".to_string())
                }
            }
        })
        .bind(([127, 0, 0, 1], 0).into())
        .await
        .expect("bind")
        .spawn()
        .expect("spawn");
    let get = || async {
        let reply = reqwest::get(format!("{}/healthz", server.url()))
            .await
            .expect("GET /healthz");
        let status = reply.status().as_u16();
        (status, reply.json::<Value>().await.expect("json"))
    };
    assert_eq!(
        get().await,
        (
            503,
            json!({"status": "unavailable", "service": "checked", "version": "1.2.3",
                   "reason": "pool p is not imported"})
        )
    );
    ready.store(true, Ordering::SeqCst);
    assert_eq!(
        get().await,
        (
            200,
            json!({"status": "ok", "service": "checked", "version": "1.2.3"})
        )
    );
}
