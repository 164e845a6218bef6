//! Behaviours beyond the recorded fixtures: long poll and cancel, suspend/resume and
//! `?refresh=true`, delete failing the jobs queued behind it, derived MACs, metadata on a
//! guest without any, disk snapshots, routing details, `/metrics`, `/openapi.json`.

mod common;

use std::time::{Duration, Instant};

use common::{raw, wait_done, Setup};
use mistify_client::{Guest, GuestAction, JobStatus, Nic};
use serde_json::Value;

/// The `status`, `suspend` and `resume` stages make the fake set the guest's state.
async fn setup() -> Setup {
    common::setup(
        "api",
        &[
            ("status", "state", "running"),
            ("suspend", "state", "paused"),
            ("resume", "state", "running"),
        ],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_and_cancel() {
    let s = setup().await;
    let id = s.new_guest(Guest::default()).await.id;
    s.control.close_gate();
    let running = s.queue(&id, GuestAction::Reboot).await;
    let queued = s.queue(&id, GuestAction::Shutdown).await;

    let start = Instant::now();
    let job = s
        .client
        .wait_job(&queued, Duration::from_millis(300))
        .await
        .unwrap();
    assert_eq!(job.status, JobStatus::Queued);
    assert!(
        start.elapsed() >= Duration::from_millis(250),
        "answered before the wait: {:?}",
        start.elapsed()
    );

    let cancelled = s.client.cancel_job(&queued).await.unwrap();
    assert_eq!(
        (cancelled.status, cancelled.message.as_str()),
        (JobStatus::Error, "cancelled")
    );
    let err = s.client.cancel_job(&running).await.unwrap_err();
    assert_eq!(err.status(), Some(409), "{err}");

    // The long poll answers as soon as the job ends.
    let waiter = {
        let client = s.client.clone();
        let running = running.clone();
        tokio::spawn(async move { client.wait_job(&running, Duration::from_secs(20)).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    s.control.open_gate();
    let done = waiter.await.unwrap().unwrap();
    assert_eq!(done.status, JobStatus::Complete);
    assert_eq!(
        s.control.count("Fake.Shutdown"),
        0,
        "a cancelled job must not run"
    );
    let (status, _, _) = raw(
        "GET",
        &format!("{}/jobs/{running}?wait=abc", s.agent.url()),
        None,
    )
    .await;
    assert_eq!(status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspend_resume_and_refresh() {
    let s = setup().await;
    let id = s.new_guest(Guest::default()).await.id;
    for (action, state) in [
        (GuestAction::Suspend, "paused"),
        (GuestAction::Resume, "running"),
    ] {
        let a = s.client.guest_action(&id, action).await.unwrap();
        assert_eq!(
            wait_done(&s.client, a.job_id.as_deref().unwrap())
                .await
                .status,
            JobStatus::Complete
        );
        assert_eq!(s.client.get_guest(&id).await.unwrap().state, state);
    }
    s.control.calls.lock().unwrap().clear();
    let (status, _, body) = raw(
        "GET",
        &format!("{}/guests/{id}?refresh=true", s.agent.url()),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["state"],
        "running"
    );
    assert_eq!(s.control.calls(), ["Fake.Status"]);
    // Without refresh: the stored copy, no sub-agent call.
    s.client.get_guest(&id).await.unwrap();
    assert_eq!(s.control.calls().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_fails_the_jobs_queued_behind_it() {
    let s = setup().await;
    let id = s.new_guest(Guest::default()).await.id;
    s.control.close_gate();
    let reboot = s.queue(&id, GuestAction::Reboot).await;
    let delete = s.queue(&id, GuestAction::Delete).await;
    let restart = s.queue(&id, GuestAction::Restart).await;
    s.control.open_gate();
    assert_eq!(
        wait_done(&s.client, &reboot).await.status,
        JobStatus::Complete
    );
    assert_eq!(
        wait_done(&s.client, &delete).await.status,
        JobStatus::Complete
    );
    let after = wait_done(&s.client, &restart).await;
    assert_eq!(
        (after.status, after.message.as_str()),
        (JobStatus::Error, "guest deleted")
    );
    assert_eq!(
        s.client.get_guest(&id).await.unwrap_err().status(),
        Some(404)
    );
    assert_eq!(s.control.count("Fake.Restart"), 0);
    let jobs = s.client.list_guest_jobs(&id, None).await.unwrap();
    assert_eq!(jobs.len(), 4, "the deleted guest's jobs stay in the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nics_without_mac_get_a_derived_one_and_metadata_works_without_a_map() {
    let s = setup().await;
    let nic = |mac: &str| Nic {
        network: "br0".into(),
        mac: mac.into(),
        ..Nic::default()
    };
    let guest = s
        .new_guest(Guest {
            nics: vec![nic(""), nic("52:54:00:00:00:01"), nic("")],
            ..Guest::default()
        })
        .await;
    let stored = s.client.get_guest(&guest.id).await.unwrap();
    let macs: Vec<&str> = stored.nics.iter().map(|n| n.mac.as_str()).collect();
    assert_eq!(macs[0], mistify_types::derived_mac(&guest.id, 0));
    assert_eq!(macs[1], "52:54:00:00:00:01");
    assert_eq!(macs[2], mistify_types::derived_mac(&guest.id, 2));
    assert_eq!(
        guest.nics, stored.nics,
        "the 202 answer shows the MACs that were stored"
    );

    assert!(s
        .client
        .get_guest_metadata(&guest.id)
        .await
        .unwrap()
        .is_empty());
    let (status, _, body) = raw(
        "GET",
        &format!("{}/guests/{}/metadata", s.agent.url(), guest.id),
        None,
    )
    .await;
    assert_eq!((status, body.trim()), (200, "null"));
    let set = [("role".to_string(), Some("web".to_string()))].into();
    let map = s
        .client
        .patch_guest_metadata(&guest.id, &set)
        .await
        .unwrap();
    assert_eq!(map["role"], "web");
    let unset = [("role".to_string(), None)].into();
    assert!(s
        .client
        .patch_guest_metadata(&guest.id, &unset)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_requests_name_the_right_entity() {
    let s = setup().await;
    let disk = |device: &str| mistify_client::Disk {
        device: device.into(),
        ..Default::default()
    };
    let guest = Guest {
        disks: vec![disk("vda"), disk("vdb")],
        ..Guest::default()
    };
    let id = s.new_guest(guest).await.id;
    let base = s.agent.url();
    // A disk by its device, its index or its dataset name; an unknown one is 404 naming
    // the guest's disks, before any job.
    for (selector, status) in [
        ("vdb", 202),
        ("1", 202),
        ("disk-1", 202),
        ("vdc", 404),
        ("2", 404),
        ("disk-9", 404),
    ] {
        let (got, _, text) = raw(
            "GET",
            &format!("{base}/guests/{id}/disks/{selector}/snapshots"),
            None,
        )
        .await;
        let want = if status == 202 { 200 } else { 404 };
        assert_eq!(got, want, "{selector}: {text}");
        if want == 404 {
            assert!(
                text.contains("its disks: 0 (vda), 1 (vdb)"),
                "{selector}: {text}"
            );
        }
    }
    let before = s.control.snapshot_requests.lock().unwrap().len();
    let (status, headers, _) = raw(
        "POST",
        &format!("{base}/guests/{id}/disks/vdb/snapshots"),
        Some(""),
    )
    .await;
    assert_eq!(status, 202);
    let job = headers["x-guest-job-id"].to_str().unwrap().to_string();
    assert_eq!(
        headers["location"].to_str().unwrap(),
        format!("/jobs/{job}")
    );
    assert_eq!(wait_done(&s.client, &job).await.status, JobStatus::Complete);
    let (status, _, _) = raw(
        "POST",
        &format!("{base}/guests/{id}/snapshots/nightly/rollback"),
        Some(r#"{"destroyMoreRecent": true}"#),
    )
    .await;
    assert_eq!(status, 202);
    let (status, _, body) = raw(
        "GET",
        &format!("{base}/guests/{id}/snapshots/nightly"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let requests = s.control.snapshot_requests.lock().unwrap().clone();
    let create = &requests[before];
    assert_eq!(create.id, format!("guests/{id}/disk-1"));
    assert!(!create.recursive);
    assert!(
        create.dest.starts_with("snap-") && create.dest[5..].bytes().all(|b| b.is_ascii_digit()),
        "{}",
        create.dest
    );
    assert_eq!(requests.last().unwrap().id, format!("guests/{id}@nightly"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_details_metrics_and_openapi() {
    let s = setup().await;
    let id = s.new_guest(Guest::default()).await.id;
    let base = s.agent.url();
    let no_redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = no_redirect
        .get(format!("{base}/guests/"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        (
            r.status().as_u16(),
            r.headers()["location"].to_str().unwrap()
        ),
        (301, "/guests")
    );
    // Every route, with or without path parameters, redirects the same way.
    for (path, location) in [
        (format!("/guests/{id}/"), format!("/guests/{id}")),
        (
            format!("/guests/{id}/metrics/cpu/?x=1"),
            format!("/guests/{id}/metrics/cpu?x=1"),
        ),
        (
            format!("/guests/{id}/reboot//"),
            format!("/guests/{id}/reboot"),
        ),
        ("/jobs/".to_string(), "/jobs".to_string()),
    ] {
        let r = no_redirect
            .get(format!("{base}{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            (
                r.status().as_u16(),
                r.headers()
                    .get("location")
                    .map(|v| v.to_str().unwrap().to_string())
            ),
            (301, Some(location)),
            "{path}"
        );
    }
    let (status, _, body) = raw("PUT", &format!("{base}/guests"), None).await;
    assert_eq!(status, 405, "{body}");
    // Guest actions are POST only.
    let (status, _, body) = raw("GET", &format!("{base}/guests/{id}/reboot"), None).await;
    assert_eq!(status, 405, "{body}");
    assert_eq!(s.control.count("Fake.Reboot"), 0);
    let (status, _, body) = raw("HEAD", &format!("{base}/guests"), None).await;
    assert_eq!((status, body.as_str()), (200, ""));
    let cpu = s.client.cpu_metrics(&id).await.unwrap();
    assert_eq!((cpu[0].cpu_time, cpu[0].vcpu_time), (1.5, 0.5));
    let gz = no_redirect
        .get(format!("{base}/guests/{id}"))
        .header("Accept-Encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(
        gz.headers()
            .get("content-encoding")
            .map(|v| v.to_str().unwrap()),
        Some("gzip")
    );

    let (status, _, text) = raw("GET", &format!("{base}/metrics"), None).await;
    assert_eq!(status, 200);
    for needle in [
        "mistify_agent_http_requests_total{method=\"POST\",route=\"/guests\",status=\"202\"} 1",
        "mistify_agent_jobs_finished_total{status=\"Complete\"} 1",
        "mistify_agent_subagent_call_seconds_count{service=\"fake\",method=\"Fake.Create\"} 1",
        "mistify_agent_subagent_call_seconds_count{service=\"fake\",method=\"Fake.CPUMetrics\"} 1",
        "mistify_agent_queue_depth 0",
        "mistify_agent_guest_queue_depth_count 1",
        "mistify_agent_guests 1",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
    assert!(!text.contains(&id), "no per-guest series");

    let served: Value = s.client.healthz().await.unwrap();
    assert_eq!(
        (
            served["status"].as_str(),
            served["services"]["fake"]["reachable"].as_bool()
        ),
        (Some("ok"), Some(true))
    );
    let (status, _, doc) = raw("GET", &format!("{base}/openapi.json"), None).await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&doc).unwrap(),
        mistify_agent::openapi::document()
    );
}

/// `GET /guests/{id}/metrics/{kind}`, the agent's busiest route, answers a plain path and
/// its percent-encoded twin alike: the same status, body and headers, and `/metrics`
/// counts them under the same route.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_answer_alike_in_front_of_the_router_and_through_it() {
    let s = setup().await;
    let id = s.new_guest(Guest::default()).await.id;
    let base = s.agent.url();
    // `%2D` is `-`, `%70` is `p`, `%40` is `@`, `%6F` is `o`.
    let encoded_id = id.replacen('-', "%2D", 1);
    let mut oks = 0;
    for ((plain, encoded), status) in [
        (
            (
                format!("{id}/metrics/cpu"),
                format!("{encoded_id}/metrics/cpu"),
            ),
            200,
        ),
        (
            (format!("{id}/metrics/cpu"), format!("{id}/metrics/c%70u")),
            200,
        ),
        (
            (format!("{id}/metrics/gpu"), format!("{id}/metrics/g%70u")),
            404,
        ),
        (("a@b/metrics/cpu".into(), "a%40b/metrics/cpu".into()), 400),
        (
            ("nope/metrics/cpu".into(), "n%6Fpe/metrics/cpu".into()),
            404,
        ),
    ] {
        let (a_status, a_headers, a_body) =
            raw("GET", &format!("{base}/guests/{plain}"), None).await;
        let (b_status, b_headers, b_body) =
            raw("GET", &format!("{base}/guests/{encoded}"), None).await;
        assert_eq!(
            (a_status, &a_body),
            (status, &b_body),
            "{plain} / {encoded}"
        );
        assert_eq!(b_status, status, "{encoded}");
        for name in ["content-type", "content-length", "vary"] {
            assert_eq!(
                a_headers.get(name),
                b_headers.get(name),
                "{name} of {plain}"
            );
        }
        assert_eq!(
            a_headers.contains_key("x-guest-job-id"),
            b_headers.contains_key("x-guest-job-id"),
            "{plain}"
        );
        if status == 200 {
            assert!(a_headers.contains_key("x-guest-job-id"), "{plain}");
            oks += 2;
        }
    }
    // The router still answers what it answered: HEAD, other methods, a trailing slash.
    let (status, _, body) = raw("HEAD", &format!("{base}/guests/{id}/metrics/cpu"), None).await;
    assert_eq!((status, body.as_str()), (200, ""));
    let (status, _, _) = raw("POST", &format!("{base}/guests/{id}/metrics/cpu"), None).await;
    assert_eq!(status, 405);
    assert_eq!(s.control.count("Fake.CPUMetrics"), 4 + 1);

    let (_, _, text) = raw("GET", &format!("{base}/metrics"), None).await;
    for (line, count) in [
        (
            "method=\"GET\",route=\"/guests/{id}/metrics/{kind}\",status=\"200\"",
            oks,
        ),
        (
            "method=\"GET\",route=\"/guests/{id}/metrics/{kind}\",status=\"404\"",
            4,
        ),
        (
            "method=\"GET\",route=\"/guests/{id}/metrics/{kind}\",status=\"400\"",
            2,
        ),
        (
            "method=\"HEAD\",route=\"/guests/{id}/metrics/{kind}\",status=\"200\"",
            1,
        ),
    ] {
        let needle = format!("mistify_agent_http_requests_total{{{line}}} {count}\n");
        assert!(text.contains(&needle), "{needle} in\n{text}");
    }
}

/// Asked with `Accept-Encoding: gzip`, the metrics route answers as every route does, as
/// the Go agent did: gzip, `Vary: Accept-Encoding`, the same JSON once decoded; a small
/// body too (Go compressed every reply). Without it, identity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_gzipped_like_every_route() {
    let s = setup().await;
    let id = s.new_guest(Guest::default()).await.id;
    let base = s.agent.url();
    let http = reqwest::Client::new();
    let get = |url: String, gzip: bool| {
        let http = http.clone();
        async move {
            let mut request = http.get(url);
            if gzip {
                request = request.header("Accept-Encoding", "gzip");
            }
            let reply = request.send().await.unwrap();
            let status = reply.status().as_u16();
            let headers = reply.headers().clone();
            (status, headers, reply.bytes().await.unwrap().to_vec())
        }
    };
    for path in [
        format!("{base}/guests/{id}/metrics/cpu"),
        format!("{base}/guests/{id}/metrics/nic"),
        format!("{base}/guests/{id}"),
        // `null`: five bytes.
        format!("{base}/guests/{id}/metadata"),
        format!("{base}/guests/nope/metrics/cpu"),
    ] {
        let (plain_status, plain_headers, plain) = get(path.clone(), false).await;
        let (status, headers, gzipped) = get(path.clone(), true).await;
        assert_eq!(status, plain_status, "{path}");
        assert!(plain_headers.get("content-encoding").is_none(), "{path}");
        assert_eq!(headers["content-encoding"], "gzip", "{path}");
        assert_eq!(headers["vary"], "Accept-Encoding", "{path}");
        assert_eq!(
            headers["content-type"], plain_headers["content-type"],
            "{path}"
        );
        let mut decoded = Vec::new();
        std::io::Read::read_to_end(
            &mut flate2::read::GzDecoder::new(&gzipped[..]),
            &mut decoded,
        )
        .unwrap();
        assert_eq!(decoded, plain, "{path}");
    }
}
