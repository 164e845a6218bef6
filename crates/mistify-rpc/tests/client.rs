//! The agent-side client against real servers: replies, errors, keep-alive, timeouts,
//! concurrency limit and raw streams.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::response::IntoResponse;
use axum::routing::post;
use axum::serve::ListenerExt;
use bytes::Bytes;
use futures::StreamExt;
use mistify_rpc::{
    Client, Guest, GuestRequest, GuestResponse, RpcError, RunningServer, Server, ServiceConfig,
};
use tokio::net::TcpListener;

fn guest_request(id: &str) -> GuestRequest {
    GuestRequest {
        guest: Some(Guest {
            id: id.into(),
            ..Guest::default()
        }),
        action: "create".into(),
        ..GuestRequest::default()
    }
}

async fn echo_server() -> RunningServer {
    Server::new("echo")
        .method("Echo.Run", |req: GuestRequest| async move {
            Ok::<_, String>(GuestResponse {
                guest: req.guest,
                ..Default::default()
            })
        })
        .method("Echo.Fail", |_: GuestRequest| async move {
            Err::<GuestResponse, _>("it broke")
        })
        .bind(([127, 0, 0, 1], 0).into())
        .await
        .unwrap()
        .spawn()
        .unwrap()
}

#[tokio::test]
async fn call_decodes_result_and_remote_errors() {
    let server = echo_server().await;
    let service = Client::new().service("echo", ServiceConfig::url(server.url()));
    let reply: GuestResponse = service
        .call("Echo.Run", &guest_request("g1"))
        .await
        .unwrap();
    assert_eq!(reply.guest.map(|g| g.id), Some("g1".to_string()));

    let err = service
        .call::<_, GuestResponse>("Echo.Fail", &guest_request("g1"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, RpcError::Remote { message, .. } if message == "it broke"),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "it broke");

    let err = service
        .call::<_, GuestResponse>("Echo.Missing", &guest_request("g1"))
        .await
        .unwrap_err();
    // Our client speaks 2.0, so our server answers in 2.0 with a code (a Go server's
    // HTTP 400 text is covered by the recorded replies in wire_fixtures.rs).
    match &err {
        RpcError::Remote { message, code, .. } => {
            assert_eq!(message, "rpc: can't find method \"Echo.Missing\"");
            assert_eq!(*code, Some(-32601));
        }
        other => panic!("expected a method-not-found error, got {other:?}"),
    }
    assert_eq!((err.service(), err.method()), ("echo", "Echo.Missing"));
}

#[tokio::test]
async fn five_hundred_calls_use_one_connection() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    let router = Server::new("echo")
        .method("Echo.Run", |req: GuestRequest| async move {
            Ok::<_, String>(GuestResponse {
                guest: req.guest,
                ..Default::default()
            })
        })
        .into_router();
    let listener = listener.tap_io(move |_| {
        counter.fetch_add(1, Ordering::SeqCst);
    });
    let task = tokio::spawn(async move { axum::serve(listener, router).await });

    let service = Client::new().service("echo", ServiceConfig::url(format!("http://{addr}")));
    for i in 0..500 {
        let reply: GuestResponse = service
            .call("Echo.Run", &guest_request(&format!("g{i}")))
            .await
            .unwrap();
        assert_eq!(reply.guest.unwrap().id, format!("g{i}"));
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "every call should reuse one keep-alive connection"
    );

    // The measurement client really opens a connection per call.
    let fresh =
        Client::without_keep_alive().service("echo", ServiceConfig::url(format!("http://{addr}")));
    for _ in 0..5 {
        let _: GuestResponse = fresh.call("Echo.Run", &guest_request("x")).await.unwrap();
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 6);
    task.abort();
}

#[tokio::test]
async fn a_server_that_never_answers_times_out_naming_service_and_method() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Accept and hold every connection without ever answering.
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let timeout = Duration::from_millis(300);
    let service = Client::new().service(
        "libvirt",
        ServiceConfig::url(format!("http://{addr}")).timeout(timeout),
    );
    let start = Instant::now();
    let err = service
        .call::<_, GuestResponse>("Libvirt.Run", &guest_request("g"))
        .await
        .unwrap_err();
    let elapsed = start.elapsed();
    assert!(
        matches!(err, RpcError::Timeout { after, .. } if after == timeout),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("libvirt") && text.contains("Libvirt.Run"),
        "{text}"
    );
    assert!(elapsed >= timeout, "gave up early: {elapsed:?}");
    assert!(
        elapsed < timeout + Duration::from_secs(2),
        "took {elapsed:?}"
    );
    assert!(err.is_unreachable());
    task.abort();
}

#[tokio::test]
async fn a_service_that_is_down_is_a_transport_error() {
    // Bind then drop to find a port where nothing listens.
    let port = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let service = Client::new().service("storage", ServiceConfig::local(port));
    let err = service
        .call::<_, GuestResponse>("ImageStore.ListImages", &guest_request("g"))
        .await
        .unwrap_err();
    assert!(matches!(err, RpcError::Transport { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("storage") && text.contains("ImageStore.ListImages"),
        "{text}"
    );
    assert!(text.to_lowercase().contains("refused"), "{text}");
}

/// A server answering every POST with a fixed status and body.
async fn canned(status: u16, body: &'static str) -> (String, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let router = axum::Router::new().route(
        "/_mistify_RPC_",
        post(move || async move {
            (
                axum::http::StatusCode::from_u16(status).unwrap(),
                [("content-type", "application/json")],
                body,
            )
        }),
    );
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    (url, task)
}

#[tokio::test]
async fn reply_shapes_of_both_dialects() {
    let cases: [(u16, &str, Result<&str, &str>); 7] = [
        (
            200,
            r#"{"result":{"guest":{"id":"v1"}},"error":null,"id":1}"#,
            Ok("v1"),
        ),
        (
            200,
            r#"{"jsonrpc":"2.0","result":{"guest":{"id":"v2"}},"id":1}"#,
            Ok("v2"),
        ),
        (
            200,
            r#"{"result":null,"error":"v1 failure","id":1}"#,
            Err("v1 failure"),
        ),
        (
            200,
            r#"{"jsonrpc":"2.0","error":{"code":-32000,"message":"v2 failure"},"id":1}"#,
            Err("v2 failure"),
        ),
        (
            200,
            r#"{"result":null,"error":null,"id":1}"#,
            Err("result is null"),
        ),
        (
            200,
            r#"{"error":{"weird":true},"id":1}"#,
            Err(r#"{"weird":true}"#),
        ),
        (500, "", Err("")),
    ];
    for (status, body, expected) in cases {
        let (url, task) = canned(status, body).await;
        let service = Client::new().service("x", ServiceConfig::url(url));
        let got = service
            .call::<_, GuestResponse>("X.Y", &guest_request("g"))
            .await;
        match (got, expected) {
            (Ok(reply), Ok(id)) => assert_eq!(reply.guest.unwrap().id, id),
            (Err(e), Err(text)) => assert_eq!(e.to_string(), text, "{body}"),
            (got, expected) => panic!("{body}: got {got:?}, expected {expected:?}"),
        }
        task.abort();
    }
    let (url, task) = canned(200, "<html>").await;
    let err = Client::new()
        .service("x", ServiceConfig::url(url))
        .call::<_, GuestResponse>("X.Y", &guest_request("g"))
        .await
        .unwrap_err();
    assert!(matches!(err, RpcError::Decode { .. }), "{err:?}");
    task.abort();
}

#[tokio::test]
async fn max_pending_limits_calls_in_flight() {
    let in_flight = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (f, p) = (in_flight.clone(), peak.clone());
    let server = Server::new("slow")
        .method("Slow.Run", move |req: GuestRequest| {
            let (f, p) = (f.clone(), p.clone());
            async move {
                let now = f.fetch_add(1, Ordering::SeqCst) + 1;
                p.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
                f.fetch_sub(1, Ordering::SeqCst);
                Ok::<_, String>(GuestResponse {
                    guest: req.guest,
                    ..Default::default()
                })
            }
        })
        .bind(([127, 0, 0, 1], 0).into())
        .await
        .unwrap()
        .spawn()
        .unwrap();
    let limited = Client::new().service("slow", ServiceConfig::url(server.url()).max_pending(2));
    let calls = (0..8).map(|i| {
        let s = limited.clone();
        async move {
            s.call::<_, GuestResponse>("Slow.Run", &guest_request(&i.to_string()))
                .await
        }
    });
    for r in futures::future::join_all(calls).await {
        r.unwrap();
    }
    assert_eq!(peak.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn stream_calls_pass_status_and_bytes_through() {
    let server = Server::new("dl")
        .route(
            "/snapshots/download",
            post(|body: String| async move {
                if body.contains("missing") {
                    return (
                        axum::http::StatusCode::NOT_FOUND,
                        "no such snapshot".to_string(),
                    )
                        .into_response();
                }
                (axum::http::StatusCode::OK, format!("bytes of {body}")).into_response()
            }),
        )
        .route(
            "/stall",
            post(|| async {
                let chunks = futures::stream::iter(vec![Ok::<_, std::io::Error>(
                    Bytes::from_static(b"first"),
                )])
                .chain(futures::stream::pending());
                axum::body::Body::from_stream(chunks)
            }),
        )
        .bind(([127, 0, 0, 1], 0).into())
        .await
        .unwrap()
        .spawn()
        .unwrap();
    let client = Client::new();
    let dl = client.service(
        "storage",
        ServiceConfig::url(server.url()).path("/snapshots/download"),
    );
    let ok = dl
        .stream(&serde_json::json!({"id": "guests/g@s"}))
        .await
        .unwrap();
    assert_eq!(ok.status.as_u16(), 200);
    assert_eq!(
        ok.collect().await.unwrap(),
        Bytes::from(r#"bytes of {"id":"guests/g@s"}"#)
    );
    let missing = dl
        .stream(&serde_json::json!({"id": "missing"}))
        .await
        .unwrap();
    assert_eq!(missing.status.as_u16(), 404);
    assert_eq!(
        missing.collect().await.unwrap(),
        Bytes::from("no such snapshot")
    );

    let idle = Duration::from_millis(300);
    let stall = client.service(
        "storage",
        ServiceConfig::url(server.url())
            .path("/stall")
            .idle_timeout(idle),
    );
    let mut stream = stall.stream(&serde_json::json!({})).await.unwrap();
    assert_eq!(
        stream.body.next().await.unwrap().unwrap(),
        Bytes::from_static(b"first")
    );
    let start = Instant::now();
    let err = stream.body.next().await.unwrap().unwrap_err();
    assert!(matches!(err, RpcError::Timeout { .. }), "{err:?}");
    assert!(start.elapsed() < idle + Duration::from_secs(2));
    assert!(stream.body.next().await.is_none());
    // Ended means ended, however often it is polled (an HTTP body may poll once more).
    assert!(stream.body.next().await.is_none());
    let mut done = dl
        .stream(&serde_json::json!({"id": "guests/g@s"}))
        .await
        .unwrap();
    while done.body.next().await.is_some() {}
    assert!(done.body.next().await.is_none());
}

#[tokio::test]
async fn an_invalid_service_url_is_a_transport_error_naming_it() {
    let service = Client::new().service("bad", ServiceConfig::url("not a url"));
    let err = service
        .call::<_, GuestResponse>("Bad.Run", &guest_request("g"))
        .await
        .unwrap_err();
    assert!(matches!(err, RpcError::Transport { .. }), "{err:?}");
    assert!(err.to_string().contains("not a url"), "{err}");
    let err = service.stream(&serde_json::json!({})).await.unwrap_err();
    assert!(err.to_string().contains("invalid service URL"), "{err}");
}

#[tokio::test]
async fn streams_carry_the_token_decode_gzip_and_name_a_down_service() {
    use tokio::io::AsyncReadExt;
    let plain: Vec<u8> = (0..200_000u32).flat_map(|i| i.to_le_bytes()).collect();
    let mut gzipped = Vec::new();
    async_compression::tokio::bufread::GzipEncoder::new(&plain[..])
        .read_to_end(&mut gzipped)
        .await
        .unwrap();
    let server = Server::new("dl")
        .require_token("s3cret")
        .route(
            "/download",
            post(move || {
                let gzipped = gzipped.clone();
                async move {
                    // Chunked, in pieces, as a sub-agent streaming a snapshot would.
                    let pieces: Vec<Result<Bytes, std::io::Error>> = gzipped
                        .chunks(16 * 1024)
                        .map(|c| Ok(Bytes::copy_from_slice(c)))
                        .collect();
                    (
                        [(axum::http::header::CONTENT_ENCODING, "gzip")],
                        axum::body::Body::from_stream(futures::stream::iter(pieces)),
                    )
                }
            }),
        )
        .bind(([127, 0, 0, 1], 0).into())
        .await
        .unwrap()
        .spawn()
        .unwrap();
    let client = Client::new();
    let with_token = client.service(
        "storage",
        ServiceConfig::url(server.url())
            .path("/download")
            .token(Some("s3cret".into())),
    );
    let reply = with_token.stream(&serde_json::json!({})).await.unwrap();
    assert_eq!(reply.status.as_u16(), 200);
    assert!(
        reply.collect().await.unwrap() == plain,
        "decoded body differs"
    );

    let without = client.service(
        "storage",
        ServiceConfig::url(server.url()).path("/download"),
    );
    let refused = without.stream(&serde_json::json!({})).await.unwrap();
    assert_eq!(refused.status.as_u16(), 401);

    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let down = client.service("storage", ServiceConfig::local(port).path("/download"));
    let err = down.stream(&serde_json::json!({})).await.unwrap_err();
    assert!(matches!(err, RpcError::Transport { .. }), "{err:?}");
    assert!(err.is_unreachable(), "{err:?}");
    assert!(
        err.to_string().contains("storage") && err.to_string().contains("cannot connect"),
        "{err}"
    );
}

/// `call` ends every reply shape: result, remote error of either dialect, null or
/// missing result, non-JSON; a repeated `result` or trailing bytes are decode errors.
#[tokio::test]
async fn call_ends_every_reply_shape() {
    let bodies = [
        r#"{"result":{"guest":{"id":"v1"}},"error":null,"id":1}"#,
        r#"{"id":1,"error":null,"result":{"guest":{"id":"v1b"}}}"#,
        r#"{"jsonrpc":"2.0","result":{"guest":{"id":"v2"}},"id":1}"#,
        r#"{"result":null,"error":"v1 failure","id":1}"#,
        r#"{"jsonrpc":"2.0","error":{"code":-32000,"message":"v2 failure"},"id":1}"#,
        r#"{"result":null,"error":null,"id":1}"#,
        r#"{"id":1}"#,
        r#"{"error":{"weird":true},"id":1}"#,
        r#"{"result":{"guest":{"id":"a"}},"result":{"guest":{"id":"b"}},"id":1}"#,
        r#"{"result":{"guest":{"id":"v1"}},"error":null,"id":1} x"#,
        r#"{"result":{"guest":{"id":1}},"error":null,"id":1}"#,
        "<html>",
    ];
    let mut outcomes = Vec::new();
    for body in bodies {
        let (url, task) = canned(200, body).await;
        let service = Client::new().service("x", ServiceConfig::url(url));
        let call = service
            .call::<_, GuestResponse>("X.Y", &guest_request("g"))
            .await;
        // Decode messages are serde's own wording.
        let show = |r: &Result<GuestResponse, RpcError>| match r {
            Ok(reply) => Ok(reply.guest.as_ref().map(|g| g.id.clone())),
            Err(RpcError::Decode { .. }) => Err("decode".to_string()),
            Err(e) => Err(e.to_string()),
        };
        outcomes.push(show(&call));
        task.abort();
    }
    let decode = Err("decode".to_string());
    assert_eq!(
        outcomes,
        [
            Ok(Some("v1".into())),
            Ok(Some("v1b".into())),
            Ok(Some("v2".into())),
            Err("v1 failure".into()),
            Err("v2 failure".into()),
            Err("result is null".into()),
            Err("result is null".into()),
            Err(r#"{"weird":true}"#.into()),
            decode.clone(),
            decode.clone(),
            decode.clone(),
            decode,
        ]
    );
}
