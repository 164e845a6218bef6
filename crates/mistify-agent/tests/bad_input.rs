//! Bad input and failing peers: each gets a clear 4xx/5xx and changes nothing, and a
//! failing pipeline leaves its job `Error` with the reason.

mod common;

use common::{agent, fake, raw, wait_done, TempDir};
use mistify_client::{Client, Guest, GuestAction, JobStatus};
use serde_json::Value;

async fn new_guest(s: &common::Setup) -> String {
    s.new_guest(Guest {
        memory: 256,
        ..Guest::default()
    })
    .await
    .id
}

fn message(body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
    assert!(v["code"].is_u64() && v["stack"].is_array(), "{body}");
    v["message"].as_str().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_bodies_are_400_or_413_and_change_nothing() {
    let s = common::setup("bad-input", &[]).await;
    let base = s.agent.url();
    for (method, path, body) in [
        ("POST", "/guests", "{bad json"),
        ("POST", "/guests", "[1,2]"),
        ("POST", "/guests", r#"{"memory": -5}"#),
        ("POST", "/guests", r#"{"id": "not-a-uuid"}"#),
        ("PATCH", "/metadata", "nope"),
        ("PATCH", "/metadata", r#"{"a": 1}"#),
        ("PATCH", "/metadata", ""),
        ("POST", "/images", r#"{"source": "x"}"#),
        // An array is not an object, even when its items fit the fields in order.
        ("POST", "/images", r#"["http://example.com/a.img"]"#),
        ("PATCH", "/metadata", r#"[["a", "b"]]"#),
    ] {
        let (status, _, text) = raw(method, &format!("{base}{path}"), Some(body)).await;
        assert_eq!(status, 400, "{method} {path} {body}: {text}");
        assert!(!message(&text).is_empty());
    }
    let big = format!(r#"{{"id":"","image":"{}"}}"#, "x".repeat(2 * 1024 * 1024));
    let (status, _, text) = raw("POST", &format!("{base}/guests"), Some(&big)).await;
    assert_eq!(status, 413, "{text}");
    assert!(message(&text).contains("1048576"));
    assert!(s.client.list_guests().await.unwrap().is_empty());
    assert!(s.client.get_metadata().await.unwrap().is_empty());
    assert!(
        s.control.calls().is_empty(),
        "no sub-agent call for bad input: {:?}",
        s.control.calls()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_ids_and_names_are_400_without_a_sub_agent_call() {
    let s = common::setup("bad-input", &[]).await;
    let id = new_guest(&s).await;
    let base = s.agent.url();
    let calls_before = s.control.calls().len();
    for (method, path, body) in [
        ("GET", "/guests/a;b".to_string(), None),
        ("GET", "/guests/a%20b".to_string(), None),
        ("GET", "/guests/a%2Fb".to_string(), None),
        ("GET", "/guests/..%2F..%2Fetc".to_string(), None),
        ("GET", "/jobs/x@y".to_string(), None),
        ("GET", "/images/a%0Ab".to_string(), None),
        ("GET", format!("/guests/{id}/snapshots/bad;name"), None),
        ("GET", format!("/guests/{id}/snapshots/a@b"), None),
        ("DELETE", format!("/guests/{id}/snapshots/..%2Fother"), None),
        ("GET", format!("/guests/{id}/disks/..%2Fx/snapshots"), None),
        (
            "POST",
            format!("/guests/{id}/snapshots"),
            Some(r#"{"dest": "a@b"}"#),
        ),
        (
            "POST",
            format!("/guests/{id}/snapshots"),
            Some(r#"{"dest": "x y"}"#),
        ),
        (
            "POST",
            format!("/guests/{id}/snapshots/s1/rollback"),
            Some("{nope"),
        ),
        (
            "POST",
            format!("/guests/{id}/snapshots"),
            Some("[null,null]"),
        ),
        (
            "POST",
            format!("/guests/{id}/snapshots/s1/rollback"),
            Some("[true]"),
        ),
    ] {
        let (status, _, text) = raw(method, &format!("{base}{path}"), body).await;
        assert_eq!(status, 400, "{method} {path}: {text}");
        assert!(!message(&text).is_empty());
    }
    assert_eq!(
        s.control.calls().len(),
        calls_before,
        "{:?}",
        s.control.calls()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_things_are_404() {
    let s = common::setup("bad-input", &[]).await;
    let id = new_guest(&s).await;
    let base = s.agent.url();
    let unknown = "00000000-0000-0000-0000-000000000000";
    for (method, path, expected) in [
        ("GET", format!("/guests/{unknown}"), "not found"),
        ("POST", format!("/guests/{unknown}/reboot"), "not found"),
        ("GET", format!("/guests/{unknown}/metrics/cpu"), "not found"),
        ("GET", format!("/jobs/{unknown}"), "not found"),
        ("GET", format!("/guests/{id}/jobs/{unknown}"), "not found"),
        (
            "POST",
            format!("/guests/{id}/explode"),
            "unknown action \"explode\"",
        ),
        ("GET", format!("/guests/{id}/metrics/gpu"), "not found"),
        (
            "GET",
            format!("/guests/{id}/snapshots/missing"),
            "not found",
        ),
        ("GET", "/images/nothing-here".to_string(), "not found"),
    ] {
        let (status, _, text) = raw(method, &format!("{base}{path}"), None).await;
        assert_eq!(status, 404, "{method} {path}: {text}");
        assert!(message(&text).contains(expected), "{path}: {text}");
    }
    // Plain-text 404 for paths no route knows, and the profiling routes.
    for path in ["/nothing", "/debug/pprof/", "/debug/pprof/heap"] {
        let (status, _, text) = raw("GET", &format!("{base}{path}"), None).await;
        assert_eq!(
            (status, text.as_str()),
            (404, "404 page not found\n"),
            "{path}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_guest_id_is_409_and_keeps_the_guest() {
    let s = common::setup("bad-input", &[]).await;
    let id = new_guest(&s).await;
    let body = format!(r#"{{"id": "{id}", "memory": 999}}"#);
    let (status, _, text) = raw("POST", &format!("{}/guests", s.agent.url()), Some(&body)).await;
    assert_eq!(status, 409, "{text}");
    assert!(message(&text).contains(&id));
    assert_eq!(s.client.get_guest(&id).await.unwrap().memory, 256);
    assert_eq!(s.control.count("Fake.Create"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sub_agent_that_is_down_is_502_and_fails_the_job_with_the_reason() {
    let dir = TempDir::new("down");
    let dead_port = mistify_e2e::free_port();
    let config = fake::config(dead_port, &[]);
    let agent = agent(&config, dir.path(), &dir.path().join("agent.redb"), &[]);
    let client = Client::new(&agent.url()).unwrap();
    let accepted = client.create_guest(&Guest::default()).await.unwrap();
    let job = wait_done(&client, accepted.job_id.as_deref().unwrap()).await;
    assert_eq!(job.status, JobStatus::Error);
    assert!(
        job.message.contains("\"fake\"") && job.message.contains("Fake.Create"),
        "{}",
        job.message
    );
    let id = accepted.body.id;
    let (status, headers, text) = raw(
        "GET",
        &format!("{}/guests/{id}/metrics/cpu", agent.url()),
        None,
    )
    .await;
    assert_eq!(status, 502, "{text}");
    assert!(message(&text).contains("\"fake\""), "{text}");
    assert!(headers.contains_key("x-guest-job-id"));
    // The agent itself is fine and says which service is unreachable.
    let health = client.healthz().await.unwrap();
    assert_eq!(health["status"], "degraded");
    assert_eq!(health["services"]["fake"]["reachable"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_is_503_with_retry_after() {
    let s = common::setup("bad-input", &[]).await;
    let id = new_guest(&s).await;
    s.control.close_gate();
    // One job runs (held at the gate), 100 wait: the next is refused.
    let mut last = String::new();
    for _ in 0..101 {
        let a = s
            .client
            .guest_action(&id, GuestAction::Reboot)
            .await
            .unwrap();
        last = a.job_id.unwrap();
    }
    // Give the worker a moment to take the first job out of the queue if it had not yet.
    let (mut status, mut headers, mut text) = (0, Default::default(), String::new());
    for _ in 0..50 {
        (status, headers, text) = raw(
            "POST",
            &format!("{}/guests/{id}/reboot", s.agent.url()),
            None,
        )
        .await;
        if status == 503 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(status, 503, "{text}");
    assert!(headers.contains_key("retry-after"));
    assert!(message(&text).contains("full"));
    s.control.open_gate();
    assert_eq!(
        wait_done(&s.client, &last).await.status,
        JobStatus::Complete
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_and_guestless_stages_fail_the_job_not_the_agent() {
    let s = common::setup(
        "bad-input",
        &[
            ("reboot", "fail", "the disk is on fire"),
            ("restart", "null_guest", "1"),
        ],
    )
    .await;
    let id = new_guest(&s).await;
    let a = s
        .client
        .guest_action(&id, GuestAction::Reboot)
        .await
        .unwrap();
    let job = wait_done(&s.client, a.job_id.as_deref().unwrap()).await;
    assert_eq!(
        (job.status, job.message.as_str()),
        (JobStatus::Error, "the disk is on fire")
    );
    let a = s
        .client
        .guest_action(&id, GuestAction::Restart)
        .await
        .unwrap();
    let job = wait_done(&s.client, a.job_id.as_deref().unwrap()).await;
    assert_eq!(job.status, JobStatus::Error);
    assert!(job.message.contains("returned no guest"), "{}", job.message);
    // Still serving, guest unchanged.
    assert_eq!(s.client.get_guest(&id).await.unwrap().memory, 256);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_of_one_id_make_one_guest() {
    let s = common::setup("bad-input", &[]).await;
    let guest = Guest {
        id: "4b7e8c2a-1d3f-4a5b-9c6d-7e8f9a0b1c2d".into(),
        memory: 128,
        ..Guest::default()
    };
    let creates = (0..8).map(|_| s.client.create_guest(&guest));
    let outcomes = futures::future::join_all(creates).await;
    let accepted: Vec<_> = outcomes.iter().filter_map(|o| o.as_ref().ok()).collect();
    assert_eq!(accepted.len(), 1, "{outcomes:?}");
    assert!(outcomes
        .iter()
        .filter_map(|o| o.as_ref().err())
        .all(|e| e.status() == Some(409)));
    wait_done(&s.client, accepted[0].job_id.as_deref().unwrap()).await;
    assert_eq!(s.control.count("Fake.Create"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_limits_from_flags_431_408_and_503_when_too_many_in_flight() {
    use tokio::io::AsyncWriteExt;
    let dir = TempDir::new("limits");
    let control = fake::Control::default();
    let fake = fake::start(control.clone()).await;
    let config = fake::config(fake.addr().port(), &[]);
    let agent = agent(
        &config,
        dir.path(),
        &dir.path().join("agent.redb"),
        &[
            "--max-in-flight",
            "1",
            "--body-timeout",
            "1",
            "--max-header-bytes",
            "4096",
            // One runtime thread serves everything, sheds load and runs the pipeline.
            "--worker-threads",
            "1",
        ],
    );
    let base = agent.url();
    let client = Client::new(&base).expect("client");
    let (_, headers, _) = raw("POST", &format!("{base}/guests"), Some("{}")).await;
    let job = headers["x-guest-job-id"].to_str().unwrap().to_string();
    assert_eq!(wait_done(&client, &job).await.status, JobStatus::Complete);
    let id = client.list_guests().await.unwrap()[0].id.clone();

    // One request in flight (held at the sub-agent): the next one is shed.
    control.close_gate();
    let refresh = format!("{base}/guests/{id}?refresh=true");
    let held = tokio::spawn(async move { raw("GET", &refresh, None).await });
    while control.count("Fake.Status") == 0 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let (status, headers, body) = raw("GET", &format!("{base}/guests"), None).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(headers["retry-after"], "1");
    assert!(
        message(&body).contains("too many requests in flight"),
        "{body}"
    );
    control.open_gate();
    assert_eq!(held.await.unwrap().0, 200);
    let (status, _, _) = raw("GET", &format!("{base}/guests"), None).await;
    assert_eq!(status, 200);

    // A head over --max-header-bytes.
    let addr = base.trim_start_matches("http://").to_string();
    let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let big = format!(
        "GET /guests HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(5000)
    );
    let _ = conn.write_all(big.as_bytes()).await;
    let reply = mistify_e2e::read_until_closed(&mut conn).await;
    assert!(reply.starts_with("HTTP/1.1 431"), "{reply}");

    // A body that stops arriving: 408 with the JSON error, nothing created.
    let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
    conn.write_all(
        b"POST /guests HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"memory\":",
    )
    .await
    .unwrap();
    let reply = mistify_e2e::read_until_closed(&mut conn).await;
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    let body = reply.split("\r\n\r\n").nth(1).unwrap_or_default();
    assert_eq!(message(body), "the request body stopped arriving");
    assert_eq!(client.list_guests().await.unwrap().len(), 1);
}

#[test]
fn out_of_range_limits_are_refused() {
    for (flag, value) in [
        ("--max-in-flight", "0"),
        ("--body-timeout", "0"),
        ("--header-timeout", "0"),
        ("--max-header-bytes", "10"),
        ("--worker-threads", "1025"),
    ] {
        let out = std::process::Command::new(std::path::PathBuf::from(env!(
            "CARGO_BIN_EXE_mistify-agent"
        )))
        .args(["-c", "/nonexistent.json", flag, value, "--check-config"])
        .output()
        .expect("run");
        assert_eq!(out.status.code(), Some(2), "{flag} {value}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(flag), "{flag}: {stderr}");
    }
}
