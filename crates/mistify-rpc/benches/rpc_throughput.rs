//! Calls per second through `Client` → `Server` on loopback: keep-alive connections vs a
//! new TCP connection per call, sequential and with 16 calls in flight.
//!
//! `cargo bench -p mistify-rpc` (set `BENCH_SECONDS` to change the 3 s per figure).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mistify_rpc::{Client, Guest, GuestRequest, GuestResponse, Server, ServiceConfig};

async fn measure(client: &Client, url: &str, concurrency: usize, seconds: f64) -> f64 {
    let service = client.service("bench", ServiceConfig::url(url));
    let request = GuestRequest {
        guest: Some(Guest {
            id: "5a0c7d7e-0000-4000-8000-000000000001".into(),
            memory: 512,
            cpu: 1,
            ..Guest::default()
        }),
        action: "reboot".into(),
        ..GuestRequest::default()
    };
    let calls = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (service, request, calls) = (service.clone(), request.clone(), calls.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let reply: GuestResponse = service
                    .call("Bench.Echo", &request)
                    .await
                    .unwrap_or_else(|e| panic!("bench call failed: {e}"));
                assert!(reply.guest.is_some());
                calls.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for task in tasks {
        task.await.expect("bench task panicked");
    }
    calls.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    let seconds: f64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let server = Server::new("bench")
        .method("Bench.Echo", |req: GuestRequest| async move {
            Ok::<_, String>(GuestResponse {
                guest: req.guest,
                ..Default::default()
            })
        })
        .bind(([127, 0, 0, 1], 0).into())
        .await
        .expect("bind")
        .spawn()
        .expect("spawn");
    let url = server.url();
    let pooled = Client::new();
    let fresh = Client::without_keep_alive();
    // Warm up both paths.
    measure(&pooled, &url, 1, 0.3).await;
    measure(&fresh, &url, 1, 0.3).await;

    println!("mistify-rpc Client -> Server on loopback, {seconds} s per figure");
    println!(
        "{:<14} {:>16} {:>18} {:>8}",
        "in flight", "keep-alive call/s", "new-conn call/s", "ratio"
    );
    for concurrency in [1, 16] {
        let keep = measure(&pooled, &url, concurrency, seconds).await;
        let new = measure(&fresh, &url, concurrency, seconds).await;
        println!(
            "{concurrency:<14} {keep:>16.0} {new:>18.0} {:>7.2}x",
            keep / new
        );
    }
    server.stop().await.expect("stop");
}
