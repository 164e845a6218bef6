//! The client's HTTP/1.1 (hyper's connection-level client) against a scripted server
//! on a real socket: every way a reply can be framed, interim replies, peers that close
//! kept-alive connections, and replies that are not HTTP.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mistify_rpc::{Client, RpcError, ServiceConfig};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the scripted server does with one accepted connection.
#[derive(Clone, Copy)]
enum Script {
    /// Answers every request on the connection with these bytes.
    KeepAnswering(&'static [u8]),
    /// Answers one request with these bytes, then closes.
    AnswerOnceThenClose(&'static [u8]),
    /// Answers one request, then reads the next one and closes without a reply: a
    /// peer that died while handling a call.
    AnswerOnceThenDropNext(&'static [u8]),
}

/// Reads one request head and its Content-Length body; false at EOF.
async fn read_request(conn: &mut TcpStream, seen: &mut Vec<u8>) -> bool {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match conn.read(&mut byte).await {
            Ok(1) => buf.push(byte[0]),
            _ => return false,
        }
    }
    let head = String::from_utf8_lossy(&buf).to_string();
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap_or(0))
        })
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    if conn.read_exact(&mut body).await.is_err() {
        return false;
    }
    seen.extend_from_slice(&buf);
    seen.extend_from_slice(&body);
    true
}

/// A server running `script` on every connection; counts connections and keeps the
/// requests it read.
async fn scripted(script: Script) -> (String, Arc<AtomicUsize>, Arc<std::sync::Mutex<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let conns = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (c, s) = (conns.clone(), seen.clone());
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            c.fetch_add(1, Ordering::SeqCst);
            let seen = s.clone();
            tokio::spawn(async move {
                let mut mine = Vec::new();
                match script {
                    Script::KeepAnswering(reply) => {
                        while read_request(&mut conn, &mut mine).await {
                            seen.lock().unwrap().append(&mut mine);
                            if conn.write_all(reply).await.is_err() {
                                break;
                            }
                        }
                    }
                    Script::AnswerOnceThenClose(reply) => {
                        if read_request(&mut conn, &mut mine).await {
                            seen.lock().unwrap().append(&mut mine);
                            let _ = conn.write_all(reply).await;
                        }
                    }
                    Script::AnswerOnceThenDropNext(reply) => {
                        if read_request(&mut conn, &mut mine).await {
                            seen.lock().unwrap().append(&mut mine);
                            let _ = conn.write_all(reply).await;
                            if read_request(&mut conn, &mut mine).await {
                                seen.lock().unwrap().append(&mut mine);
                            }
                        }
                    }
                }
            });
        }
    });
    (url, conns, seen)
}

async fn call(url: &str) -> Result<Value, RpcError> {
    Client::new()
        .service("scripted", ServiceConfig::url(url))
        .call::<_, Value>("Test.Run", &serde_json::json!({"x": 1}))
        .await
}

#[tokio::test]
async fn content_length_chunked_and_close_delimited_replies_are_read() {
    let cases: [(&'static [u8], Value); 4] = [
        (
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 31\r\n\r\n{\"result\":{\"a\":1},\"error\":null}",
            serde_json::json!({"a": 1}),
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"res\r\n1a;ext=1\r\nult\":{\"b\":2},\"error\":null}\r\n0\r\nX-Trailer: t\r\n\r\n",
            serde_json::json!({"b": 2}),
        ),
        (
            b"HTTP/1.0 200 OK\r\n\r\n{\"result\":{\"c\":3},\"error\":null}",
            serde_json::json!({"c": 3}),
        ),
        (
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 31\r\n\r\n{\"result\":{\"d\":4},\"error\":null}",
            serde_json::json!({"d": 4}),
        ),
    ];
    for (reply, want) in cases {
        let (url, _, seen) = scripted(Script::AnswerOnceThenClose(reply)).await;
        assert_eq!(call(&url).await.unwrap(), want);
        let request = String::from_utf8(seen.lock().unwrap().clone()).unwrap();
        assert!(
            request.starts_with("POST /_mistify_RPC_ HTTP/1.1\r\n"),
            "{request}"
        );
        assert!(
            request.contains("Content-Type: application/json\r\n"),
            "{request}"
        );
        assert!(request.contains("\"method\":\"Test.Run\""), "{request}");
        assert!(request.contains("\"params\":[{\"x\":1}]"), "{request}");
    }
}

#[tokio::test]
async fn a_gzip_reply_is_decoded() {
    let mut gz = flate2_like_gzip(br#"{"result":{"z":26},"error":null}"#);
    let mut reply = format!(
        "HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: {}\r\n\r\n",
        gz.len()
    )
    .into_bytes();
    reply.append(&mut gz);
    let reply: &'static [u8] = Box::leak(reply.into_boxed_slice());
    let (url, _, _) = scripted(Script::KeepAnswering(reply)).await;
    assert_eq!(call(&url).await.unwrap(), serde_json::json!({"z": 26}));
}

/// A gzip member of `data` (stored blocks: no compression, valid for any decoder).
fn flate2_like_gzip(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];
    // One final stored deflate block.
    out.push(1);
    let len = data.len() as u16;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&(!len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&crc32(data).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// `n` calls in a row through one service handle (one pool), each succeeding.
async fn calls(url: &str, n: usize) {
    calls_pausing(url, n, Duration::ZERO).await;
}

/// `n` calls through one service handle with a pause after each, each succeeding.
async fn calls_pausing(url: &str, n: usize, pause: Duration) {
    let service = Client::new().service("scripted", ServiceConfig::url(url));
    for _ in 0..n {
        service
            .call::<_, Value>("Test.Run", &serde_json::json!({}))
            .await
            .unwrap();
        tokio::time::sleep(pause).await;
    }
}

#[tokio::test]
async fn kept_alive_connections_are_reused_and_a_closed_one_is_replaced() {
    const OK: &[u8] =
        b"HTTP/1.1 200 OK\r\nContent-Length: 31\r\n\r\n{\"result\":{\"a\":1},\"error\":null}";
    // Reuse: ten calls, one connection.
    let (url, conns, _) = scripted(Script::KeepAnswering(OK)).await;
    calls(&url, 10).await;
    assert_eq!(conns.load(Ordering::SeqCst), 1);

    // The peer closes a kept-alive connection while it is idle: the next call sees
    // that before writing and goes on a new connection; every request is read once.
    let (url, conns, seen) = scripted(Script::AnswerOnceThenClose(OK)).await;
    calls_pausing(&url, 3, Duration::from_millis(50)).await;
    assert_eq!(conns.load(Ordering::SeqCst), 3);
    let requests = String::from_utf8(seen.lock().unwrap().clone()).unwrap();
    assert_eq!(requests.matches("POST ").count(), 3);

    // The peer takes the next request and goes away without answering: the call fails
    // and is not sent again (the peer may have acted on it; a call is not idempotent).
    let (url, conns, seen) = scripted(Script::AnswerOnceThenDropNext(OK)).await;
    let service = Client::new().service("scripted", ServiceConfig::url(&url));
    let params = serde_json::json!({});
    let run = || service.call::<_, Value>("Test.Run", &params);
    run().await.unwrap();
    let err = run().await.expect_err("the peer vanished mid-call");
    assert!(matches!(err, RpcError::Transport { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("connection closed before message completed"),
        "{err}"
    );
    assert_eq!(conns.load(Ordering::SeqCst), 1);
    let requests = String::from_utf8(seen.lock().unwrap().clone()).unwrap();
    assert_eq!(requests.matches("POST ").count(), 2);

    // `Connection: close` replies are not reused.
    const CLOSE: &[u8] = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 31\r\n\r\n{\"result\":{\"a\":1},\"error\":null}";
    let (url, conns, _) = scripted(Script::AnswerOnceThenClose(CLOSE)).await;
    calls(&url, 3).await;
    assert_eq!(conns.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn replies_that_are_not_http_or_are_cut_short_are_transport_errors() {
    let cases: [(&'static [u8], &str); 5] = [
        (b"SSH-2.0-OpenSSH_9.2\r\n\r\n", "invalid HTTP version"),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"result\":",
            "end of file before message length reached",
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"res",
            "unexpected EOF during chunk size line",
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            "Invalid chunk size line",
        ),
        (b"", "connection closed before message completed"),
    ];
    for (reply, want) in cases {
        let (url, _, _) = scripted(Script::AnswerOnceThenClose(reply)).await;
        let err = call(&url).await.expect_err("must fail");
        assert!(
            matches!(err, RpcError::Transport { .. }) && err.to_string().contains(want),
            "{want}: {err:?}"
        );
        assert!(err.to_string().contains("\"scripted\""), "{err}");
    }
}

#[tokio::test]
async fn an_error_status_keeps_its_body_as_the_message() {
    let (url, _, _) = scripted(Script::KeepAnswering(
        b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 34\r\n\r\nrpc: can't find method \"Test.Run\"\n",
    ))
    .await;
    match call(&url).await {
        Err(RpcError::Status { status, body, .. }) => {
            assert_eq!(
                (status, body.as_str()),
                (400, "rpc: can't find method \"Test.Run\"")
            );
        }
        other => panic!("{other:?}"),
    }
}
