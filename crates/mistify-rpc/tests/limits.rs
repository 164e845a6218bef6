//! The shared HTTP limits (`mistify_http`) on a real sub-agent server over real
//! sockets: oversized heads, slow and idle connections, stalled bodies, load shedding.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mistify_http::Limits;
use mistify_rpc::{GuestRequest, GuestResponse, RunningServer, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

/// Short limits so the tests run fast: 8 KiB heads, 300 ms timeouts, 2 in flight.
fn tight() -> Limits {
    Limits {
        max_header_bytes: 8192,
        header_timeout: Duration::from_millis(300),
        body_timeout: Duration::from_millis(300),
        max_in_flight: 2,
    }
}

/// A server whose `Slow.Run` counts itself in and waits for a permit of `release`.
async fn start(entered: Arc<AtomicUsize>, release: Arc<Semaphore>) -> RunningServer {
    Server::new("limited")
        .method("Slow.Run", move |req: GuestRequest| {
            let (entered, release) = (entered.clone(), release.clone());
            async move {
                entered.fetch_add(1, Ordering::SeqCst);
                if let Ok(permit) = release.acquire().await {
                    permit.forget();
                }
                Ok::<_, String>(GuestResponse {
                    guest: req.guest,
                    ..Default::default()
                })
            }
        })
        .method("Fast.Run", |req: GuestRequest| async move {
            Ok::<_, String>(GuestResponse {
                guest: req.guest,
                ..Default::default()
            })
        })
        .limits(tight())
        .bind(([127, 0, 0, 1], 0).into())
        .await
        .expect("bind")
        .spawn()
        .expect("spawn")
}

const FAST: &str = r#"{"method":"Fast.Run","params":[{}],"id":1}"#;

fn request(body: &str) -> String {
    format!(
        "POST /_mistify_RPC_ HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

#[tokio::test]
async fn an_oversized_head_is_431() {
    let server = start(Default::default(), Arc::new(Semaphore::new(0))).await;
    let mut conn = TcpStream::connect(server.addr()).await.expect("connect");
    let big = format!(
        "POST /_mistify_RPC_ HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\nContent-Length: 0\r\n\r\n",
        "a".repeat(20_000)
    );
    let _ = conn.write_all(big.as_bytes()).await;
    let reply = mistify_e2e::read_until_closed(&mut conn).await;
    assert!(reply.starts_with("HTTP/1.1 431"), "{reply}");
    // The server still serves others.
    let mut conn = TcpStream::connect(server.addr()).await.expect("connect");
    conn.write_all(request(FAST).as_bytes())
        .await
        .expect("write");
    let mut buf = [0u8; 12];
    conn.read_exact(&mut buf).await.expect("read");
    assert_eq!(&buf, b"HTTP/1.1 200");
}

#[tokio::test]
async fn slow_heads_and_idle_connections_are_closed() {
    let server = start(Default::default(), Arc::new(Semaphore::new(0))).await;
    // Half a head, then nothing.
    let mut slow = TcpStream::connect(server.addr()).await.expect("connect");
    slow.write_all(b"POST /_mistify_RPC_ HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    let reply = mistify_e2e::read_until_closed(&mut slow).await;
    assert!(!reply.contains("200 OK"), "{reply}");
    // A kept-alive connection after one reply, then nothing.
    let mut idle = TcpStream::connect(server.addr()).await.expect("connect");
    idle.write_all(request(FAST).as_bytes())
        .await
        .expect("write");
    let reply = mistify_e2e::read_until_closed(&mut idle).await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert_eq!(reply.matches("HTTP/1.1").count(), 1, "{reply}");
}

#[tokio::test]
async fn a_stalled_body_is_408() {
    let server = start(Default::default(), Arc::new(Semaphore::new(0))).await;
    let mut conn = TcpStream::connect(server.addr()).await.expect("connect");
    conn.write_all(
        b"POST /_mistify_RPC_ HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"method\":",
    )
    .await
    .expect("write");
    let reply = mistify_e2e::read_until_closed(&mut conn).await;
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert!(
        reply.contains("the request body stopped arriving"),
        "{reply}"
    );
}

#[tokio::test]
async fn requests_beyond_the_in_flight_limit_are_shed_with_503() {
    let entered = Arc::new(AtomicUsize::new(0));
    let release = Arc::new(Semaphore::new(0));
    let server = start(entered.clone(), release.clone()).await;
    let http = reqwest::Client::new();
    let url = format!("{}/_mistify_RPC_", server.url());
    let slow = |id: u32| {
        let (http, url) = (http.clone(), url.clone());
        tokio::spawn(async move {
            http.post(url)
                .header("Content-Type", "application/json")
                .body(format!(
                    r#"{{"method":"Slow.Run","params":[{{}}],"id":{id}}}"#
                ))
                .send()
                .await
                .map(|r| r.status().as_u16())
        })
    };
    let first = [slow(1), slow(2)];
    while entered.load(Ordering::SeqCst) < 2 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let fast = || {
        http.post(&url)
            .header("Content-Type", "application/json")
            .body(FAST)
            .send()
    };
    let shed = fast().await.expect("send");
    assert_eq!(shed.status().as_u16(), 503);
    assert_eq!(
        shed.headers().get("retry-after").map(|v| v.as_bytes()),
        Some(&b"1"[..])
    );
    let body: serde_json::Value = shed.json().await.expect("json");
    assert_eq!(body["code"], 503);
    // Once the two finish, requests get through again.
    release.add_permits(2);
    for task in first {
        assert_eq!(task.await.expect("join").expect("send"), 200);
    }
    let again = fast().await.expect("send");
    assert_eq!(again.status().as_u16(), 200);
    assert_eq!(
        entered.load(Ordering::SeqCst),
        2,
        "the shed request never ran"
    );
}
