//! The storage sub-agent's readiness: `/healthz` answers 503 with the reason while its
//! pool is not imported or the filesystems it uses are not mounted (a supervisor's
//! `ready: http:` probe then waits), and a sub-agent started before its pool is mounted
//! waits for it instead of writing into empty mountpoints.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// `/healthz` of the sub-agent follows the pool: 503 with the reason while a filesystem
/// it uses is not mounted, 200 again once it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_says_when_the_pool_is_not_mounted() {
    if mistify_e2e::skipped("zfs") {
        return;
    }
    let pool = TestPool::new();
    let daemon = storage(&pool.name, "127.0.0.1:9", &[]);
    let health =
        || mistify_e2e::stack::http_get(&format!("{}/healthz", daemon.url())).expect("healthz");
    let (status, body) = health();
    assert_eq!(status, 200, "{body}");
    let guests = format!("{}/guests", pool.name);
    zfs(&["unmount", &guests]);
    // The answer is kept for a second.
    std::thread::sleep(Duration::from_millis(1100));
    let (status, body) = health();
    assert_eq!(status, 503, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(body["status"], "unavailable");
    let reason = body["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains(&format!("pool {} is imported but", pool.name)) && reason.contains(&guests),
        "{reason}"
    );
    zfs(&["mount", &guests]);
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(health().0, 200);
}

/// Started before its pool is mounted, the sub-agent serves `/healthz` with 503 and the
/// reason (nothing else), writes nothing into the empty mountpoint, and serves once the
/// filesystems are mounted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sub_agent_waits_for_its_pool() {
    if mistify_e2e::skipped("zfs") {
        return;
    }
    let pool = TestPool::new();
    // Open once so that images/ and guests/ exist, then unmount everything.
    let first = storage(&pool.name, "127.0.0.1:9", &[]);
    drop(first);
    let images_dir = pool.mountpoint(&format!("{}/images", pool.name));
    for fs in [
        format!("{}/images", pool.name),
        format!("{}/guests", pool.name),
    ] {
        zfs(&["unmount", &fs]);
    }
    let daemon = storage(&pool.name, "127.0.0.1:9", &[]);
    let (status, body) =
        mistify_e2e::stack::http_get(&format!("{}/healthz", daemon.url())).expect("healthz");
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains(&format!("{}/images is not mounted", pool.name)),
        "{body}"
    );
    let svc = client(daemon.port);
    let waiting: Result<serde_json::Value, _> =
        call(&svc, "ListImages", &serde_json::json!({})).await;
    assert!(waiting.is_err(), "an RPC method answered while waiting");
    // Nothing was written under the unmounted mountpoint.
    let under: Vec<_> = std::fs::read_dir(&images_dir)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(under.is_empty(), "{under:?}");
    for fs in [
        format!("{}/images", pool.name),
        format!("{}/guests", pool.name),
    ] {
        zfs(&["mount", &fs]);
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, body) = mistify_e2e::stack::http_get(&format!("{}/healthz", daemon.url()))
            .unwrap_or((0, String::new()));
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still not ready: {status} {body}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let images: serde_json::Value = call(&svc, "ListImages", &serde_json::json!({}))
        .await
        .expect("ListImages");
    assert!(images["images"].is_null(), "{images}");
}
