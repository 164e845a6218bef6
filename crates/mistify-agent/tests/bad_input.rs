//! Bad input and failing peers: each gets a clear 4xx/5xx and changes nothing, and a
//! failing pipeline leaves its job `Error` with the reason.

mod common;

use common::{agent, fake, raw, wait_done, TempDir};
use mistify_client::{Client, Guest, JobStatus};
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
    // The JSON error body for paths no route knows, and the profiling routes.
    for path in ["/nothing", "/debug/pprof/", "/debug/pprof/heap"] {
        let (status, headers, text) = raw("GET", &format!("{base}{path}"), None).await;
        assert_eq!(status, 404, "{path}");
        assert_eq!(headers["content-type"], "application/json", "{path}");
        assert_eq!(
            serde_json::from_str::<Value>(&text).unwrap(),
            serde_json::json!({"message": "404 page not found", "code": 404, "stack": []}),
            "{path}"
        );
    }
    // Query parameters are validated alike: a limit or a wait that is not a number.
    for (path, what) in [
        ("/jobs?limit=abc", "invalid limit"),
        ("/jobs?limit=-1", "invalid limit"),
        ("/jobs?limit=", "invalid limit"),
        ("/jobs/j1?wait=abc", "invalid wait"),
    ] {
        let (status, _, text) = raw("GET", &format!("{base}{path}"), None).await;
        assert_eq!(status, 400, "{path}: {text}");
        assert!(message(&text).contains(what), "{path}: {text}");
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
    let accepted = client
        .create_guest(&common::sized(Guest::default()))
        .await
        .unwrap();
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
    // The agent itself answers, says which service is unreachable, and 503: the fake
    // serves guest actions.
    let (status, _, text) = raw("GET", &format!("{}/healthz", agent.url()), None).await;
    assert_eq!(status, 503, "{text}");
    let health = client.healthz().await.unwrap();
    assert_eq!(health["status"], "degraded");
    assert_eq!(health["serves_guests"], false);
    assert_eq!(health["unreachable"], serde_json::json!(["fake"]));
    assert_eq!(health["services"]["fake"]["reachable"], false);
}

/// A sub-agent that accepts connections but answers nothing (stopped with SIGSTOP) is
/// `degraded`, named, within the probe timeout; answering again, `ok`. The sub-agent is
/// `test-rpc-service`, a process of its own (the in-process fake cannot be stopped).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_sub_agent_is_degraded_within_the_probe_timeout() {
    let dir = TempDir::new("frozen");
    let port = mistify_e2e::free_port();
    let sub = mistify_e2e::Daemon::start(
        &mistify_e2e::example("test-rpc-service"),
        &["--port".into(), port.to_string()],
        port,
    );
    let config = mistify_e2e::agent_test_rpc_config(port);
    let agent = agent(&config, dir.path(), &dir.path().join("agent.redb"), &[]);
    let base = agent.url();
    let (status, _, text) = raw("GET", &format!("{base}/healthz"), None).await;
    assert_eq!(status, 200, "{text}");
    let signal = |sig: &str| {
        let ok = std::process::Command::new("kill")
            .args([sig, &sub.pid().to_string()])
            .status()
            .is_ok_and(|st| st.success());
        assert!(ok, "kill {sig}");
    };
    signal("-STOP");
    let started = std::time::Instant::now();
    let (status, _, text) = raw("GET", &format!("{base}/healthz"), None).await;
    let took = started.elapsed();
    signal("-CONT");
    assert_eq!(status, 503, "{text}");
    let health: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(health["status"], "degraded", "{text}");
    assert_eq!(health["serves_guests"], false, "{text}");
    let unreachable = health["unreachable"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(!unreachable.is_empty(), "{text}");
    for name in &unreachable {
        let name = name.as_str().unwrap_or_default();
        assert_eq!(health["services"][name]["reachable"], false, "{text}");
        assert!(
            health["services"][name]["error"]
                .as_str()
                .is_some_and(|e| e.contains("timed out")),
            "{text}"
        );
    }
    assert!(
        took < mistify_agent::api::PROBE_TIMEOUT + std::time::Duration::from_secs(1),
        "answered after {took:?}"
    );
    let (status, _, text) = raw("GET", &format!("{base}/healthz"), None).await;
    assert_eq!(status, 200, "{text}");
}

/// A create that cannot succeed is refused before a job exists, with a 4xx naming the
/// field; unknown keys are accepted with a `Warning` each (Kubernetes' field validation),
/// refused under `?fieldValidation=Strict`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_creates_are_refused_before_any_job() {
    let s = common::setup("bad-input", &[]).await;
    let url = format!("{}/guests", s.agent.url());
    for (query, body, status, says) in [
        ("", "{}", 400, "memory"),
        ("", r#"{"memory": 256}"#, 400, "cpu"),
        (
            "",
            r#"{"memory": 256, "cpu": 1, "disks": [{"image": "nope"}]}"#,
            400,
            "disks[0].image: no image nope",
        ),
        (
            "",
            r#"{"memory": 256, "cpu": 1, "disks": [{"size": 8}, {"image": "img-pending"}]}"#,
            409,
            "disks[1].image: image img-pending is not ready",
        ),
        (
            "?fieldValidation=Strict",
            r#"{"memory": 256, "cpu": 1, "memroy": 512}"#,
            400,
            "unknown field \"memroy\"",
        ),
        (
            "?fieldValidation=Strict",
            r#"{"memory": 256, "cpu": 1, "nics": [{"netwrok": "br0"}]}"#,
            400,
            "\"nics.0.netwrok\"",
        ),
        (
            "?fieldValidation=Bogus",
            r#"{"memory": 256, "cpu": 1}"#,
            400,
            "invalid fieldValidation",
        ),
    ] {
        let (got, _, text) = raw("POST", &format!("{url}{query}"), Some(body)).await;
        assert_eq!(got, status, "{body}: {text}");
        assert!(message(&text).contains(says), "{body}: {text}");
    }
    assert_eq!(
        s.control.count("Fake.Create"),
        0,
        "no create reached the sub-agent"
    );
    assert!(
        s.client.list_jobs(None).await.unwrap().is_empty(),
        "no job was logged"
    );
    assert!(
        s.client.list_guests().await.unwrap().is_empty(),
        "no guest was stored"
    );

    // Warn (the default): accepted, one Warning per unknown key; Ignore: no Warning.
    let body =
        r#"{"memory": 256, "cpu": 1, "disks": [{"image": "img-ok", "szie": 1}], "memroy": 1}"#;
    let (status, headers, text) = raw("POST", &url, Some(body)).await;
    assert_eq!(status, 202, "{text}");
    let warnings: Vec<&str> = headers
        .get_all("warning")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    assert_eq!(
        warnings,
        [
            r#"299 - "unknown field \"disks.0.szie\"""#,
            r#"299 - "unknown field \"memroy\"""#
        ],
        "{headers:?}"
    );
    let (status, headers, _) =
        raw("POST", &format!("{url}?fieldValidation=Ignore"), Some(body)).await;
    assert_eq!(status, 202);
    assert!(headers.get("warning").is_none());
}

/// Backend errors the caller caused are 4xx: libvirt refusing an operation in the
/// domain's state is 409; an image that guests use is 409 naming them, before any job.
/// A job that fails names its stage, service and method.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_errors_name_their_cause_and_caller_faults_are_4xx() {
    let s = common::setup(
        "bad-input",
        &[
            (
                "cpuMetrics",
                "fail",
                "[Code-55] [Domain-20] Requested operation is not valid: domain is not running",
            ),
            ("reboot", "fail", "the disk is on fire"),
        ],
    )
    .await;
    let base = s.agent.url();
    let guest = common::sized(Guest {
        disks: vec![mistify_client::Disk {
            image: "img-ok".into(),
            ..Default::default()
        }],
        ..Guest::default()
    });
    let id = s.new_guest(guest).await.id;
    let (status, _, text) = raw("GET", &format!("{base}/guests/{id}/metrics/cpu"), None).await;
    assert_eq!(status, 409, "{text}");
    assert!(message(&text).contains("domain is not running"), "{text}");

    let (status, _, text) = raw("DELETE", &format!("{base}/images/img-ok"), None).await;
    assert_eq!(status, 409, "{text}");
    assert_eq!(
        message(&text),
        format!("image img-ok is in use by guest {id}: delete it first")
    );

    let job = s.queue(&id, mistify_client::GuestAction::Reboot).await;
    let job = wait_done(&s.client, &job).await;
    assert_eq!(
        (job.status, job.message.as_str()),
        (
            JobStatus::Error,
            "stage 1 of 1 (fake Fake.Reboot): the disk is on fire"
        )
    );
}

/// A delete whose stage fails leaves the guest (the job says why); a forced delete goes
/// on, removes the guest, and its job names what was left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forced_delete_removes_a_guest_whose_storage_is_stuck() {
    let s = common::setup(
        "bad-input",
        &[("delete", "fail", "cannot destroy: dataset is busy")],
    )
    .await;
    let id = new_guest(&s).await;
    let job = s.queue(&id, mistify_client::GuestAction::Delete).await;
    let job = wait_done(&s.client, &job).await;
    assert_eq!(job.status, JobStatus::Error, "{job:?}");
    assert!(s.client.get_guest(&id).await.is_ok(), "the guest stays");

    let base = s.agent.url();
    let (status, _, text) = raw("DELETE", &format!("{base}/guests/{id}?force=yes"), None).await;
    assert_eq!(status, 400, "{text}");

    let accepted = s.client.delete_guest_forced(&id).await.unwrap();
    let job = wait_done(&s.client, accepted.job_id.as_deref().unwrap()).await;
    assert_eq!(
        (job.status, job.message.as_str()),
        (
            JobStatus::Complete,
            "forced: stage 1 of 1 (fake Fake.Delete): cannot destroy: dataset is busy"
        )
    );
    let err = s.client.get_guest(&id).await.unwrap_err();
    assert_eq!(err.status(), Some(404), "{err}");
    assert_eq!(s.control.count("Fake.Delete"), 2);
}
