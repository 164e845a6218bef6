//! The agent's REST router fed any request: the first byte picks the method, the input
//! up to the first newline is the path and query, the rest is the body. The agent (its
//! store in a temporary directory, its sub-agent a closed port) must answer every one
//! without panicking; a 5xx is only allowed where the unreachable sub-agent explains it.
#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use mistify_agent::config::Config;
use mistify_agent::{Agent, Settings};
use tower::ServiceExt;

const CONFIG: &str = include_str!("../../tests/fixtures/wire/agent-test-rpc.json");

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime")
    })
}

fn agent() -> Arc<Agent> {
    static AGENT: OnceLock<Arc<Agent>> = OnceLock::new();
    AGENT
        .get_or_init(|| {
            let dir = std::env::temp_dir().join(format!("mistify-fuzz-{}", std::process::id()));
            let _ = std::fs::create_dir_all(&dir);
            // Port 9 (discard) on loopback: nothing listens, every stage fails fast.
            let mut config = Config::default();
            config.add_str("agent.json", CONFIG).expect("config");
            for service in config.services.values_mut() {
                service.port = 9;
                service.timeout = Duration::from_millis(200);
            }
            let settings = Settings {
                config,
                db_path: dir.join("agent.redb"),
                joblog_max: 1000,
                drain_timeout: Duration::from_secs(1),
                limits: Default::default(),
                tls: None,
            };
            runtime().block_on(Agent::start(settings)).expect("agent")
        })
        .clone()
}

const METHODS: [&str; 6] = ["GET", "POST", "PATCH", "DELETE", "PUT", "HEAD"];

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let method = METHODS[first as usize % METHODS.len()];
    let (path, body) = match rest.iter().position(|&b| b == b'\n') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    let Ok(path) = std::str::from_utf8(path) else {
        return;
    };
    let uri = format!("/{}", path.trim_start_matches('/'));
    let Ok(request) = axum::http::Request::builder()
        .method(method)
        .uri(uri.as_str())
        .header("Content-Type", "application/json")
        .body(axum::body::Body::from(body.to_vec()))
    else {
        return;
    };
    let router = mistify_agent::api::router(agent());
    let status = runtime().block_on(async {
        let response = router.oneshot(request).await.expect("infallible");
        let status = response.status().as_u16();
        let _ = axum::body::to_bytes(response.into_body(), usize::MAX).await;
        status
    });
    assert!(
        status < 500 || matches!(status, 502 | 503 | 504),
        "{method} {uri}: status {status}"
    );
});
