//! `Libvirt.Status` calls per second on the test driver: straight to the sub-agent, and
//! through the agent's `status` action (`GET /guests/{id}?refresh=true`). Prints both
//! rates and their ratio, measured in one run, with 1 and with 4 pooled libvirt connections.
//! Not a test: `cargo bench -p mistify-libvirt`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::*;
use mistify_types::{Disk, Guest};

const CALLS: usize = 2000;
const CONCURRENCY: usize = 8;

async fn rate<F, Fut>(label: &str, call: F) -> f64
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    // Warm up connections.
    for _ in 0..20 {
        assert!(call().await, "{label}: warm-up call failed");
    }
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CONCURRENCY {
        let call = call.clone();
        tasks.push(tokio::spawn(async move {
            let mut ok = 0usize;
            for _ in 0..CALLS / CONCURRENCY {
                ok += usize::from(call().await);
            }
            ok
        }));
    }
    let mut ok = 0;
    for t in tasks {
        ok += t.await.unwrap_or(0);
    }
    let secs = start.elapsed().as_secs_f64().max(1e-9);
    let per_sec = ok as f64 / secs;
    println!("{label:<40} {ok} calls in {secs:.2} s: {per_sec:>8.0} calls/s");
    per_sec
}

/// Both rates with `pool` libvirt connections in the sub-agent.
async fn measure(pool: usize) {
    let pool_arg = pool.to_string();
    let extra = ["--max-connections", pool_arg.as_str()];
    // Straight to the sub-agent first: it needs only this crate's binary.
    let (_daemon, svc) = start_binary(&extra);
    let guest = Guest {
        id: guest_id(),
        memory: 64,
        cpu: 1,
        disks: vec![Disk {
            source: "/dev/null".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    call(&svc, "CreateGuest", Some(&guest))
        .await
        .expect("CreateGuest");
    let direct = {
        let (svc, g) = (svc.clone(), guest.clone());
        rate(&format!("Libvirt.Status, direct, pool {pool}"), move || {
            let (svc, g) = (svc.clone(), g.clone());
            async move { status(&svc, &g).await.is_ok() }
        })
        .await
    };

    // Then through the agent.
    let stack = start_stack(&extra);
    let base = stack.agent.url();
    let agent = mistify_client::Client::new(&base).expect("agent client");
    let id = guest_id();
    let guest = Guest {
        id: id.clone(),
        ..guest
    };
    let created = agent.create_guest(&guest).await.expect("create");
    if let Some(job) = created.job_id {
        agent
            .wait_job(&job, Duration::from_secs(60))
            .await
            .expect("create job");
    }
    let http = reqwest::Client::new();
    let via_agent = rate(
        &format!("status through the agent, pool {pool}"),
        move || {
            let (http, url) = (http.clone(), format!("{base}/guests/{id}?refresh=true"));
            async move { matches!(http.get(url).send().await, Ok(r) if r.status().is_success()) }
        },
    )
    .await;
    println!(
        "pool {pool}: ratio agent/direct {:.2} ({CONCURRENCY} concurrent callers)",
        via_agent / direct.max(1e-9)
    );
}

#[tokio::main]
async fn main() {
    if mistify_e2e::skipped("libvirt") {
        return;
    }
    for pool in [1, 4] {
        measure(pool).await;
    }
}
