//! Health checks, stop commands, log files, http readiness, ready timeouts, and graph
//! decisions (every matching pattern linked; failed dependents stay failed).

mod common;

use common::*;
use mistify_e2e::free_port;
use mistify_supervisor::api::State;
use serde_json::json;
use std::time::{Duration, Instant};

async fn until_log(sup: &Sup, name: &str, pred: impl Fn(&str) -> bool) -> Vec<String> {
    let deadline = Instant::now() + T;
    loop {
        let log = sup.log(Some(name)).await;
        if log.iter().any(|l| pred(l)) {
            return log;
        }
        assert!(Instant::now() < deadline, "{log:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_checks_fault_the_service_after_the_threshold() {
    let dir = mistify_e2e::TempDir::new("check-flag");
    let flag = dir.path().join("healthy");
    std::fs::write(&flag, "").unwrap_or_else(|e| panic!("{e}"));
    let f = flag.display().to_string();
    let sup = Sup::start(
        "check",
        &[(
            "c.json",
            m(
                json!({"name": "checked", "command": ["sleep", "3600"], "check": ["test", "-f", f], "checkInterval": "100ms", "checkFailures": 2}),
            ),
        )],
    );
    let s = sup.until_state("checked", State::Running, T).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        sup.client.service("checked").await.map(|s| s.state).ok(),
        Some(State::Running)
    );
    std::fs::remove_file(&flag).unwrap_or_else(|e| panic!("{e}"));
    let t = sup.until_state("checked", State::Failed, T).await;
    assert_eq!(t.status, "Faulted: check: exit status 1");
    assert!(wait_gone(&[s.pid.unwrap_or(0)], Duration::from_secs(3)).is_empty());
    let log = sup.log(Some("checked")).await;
    assert!(
        log.iter()
            .any(|l| l.ends_with("Check failed (2/2): check: exit status 1")),
        "{log:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_command_gets_the_pid_and_log_file_gets_the_lines() {
    let dir = mistify_e2e::TempDir::new("logfile");
    let file = dir.path().join("svc.log");
    let sup = Sup::start(
        "stopcmd",
        &[(
            "s.json",
            m(
                json!({"name": "s", "command": ["sh", "-c", "echo started; exec sleep 3600"], "stopCommand": ["sh", "-c", "echo stopping $PID $MAINPID; kill -TERM $PID"], "logFile": file.display().to_string()}),
            ),
        )],
    );
    let s = sup.until_state("s", State::Running, T).await;
    let pid = s.pid.unwrap_or(0);
    sup.client
        .disable("s")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let log = sup.log(Some("s")).await;
    assert!(
        log.contains(&format!("[s] stopstdout> stopping {pid} {pid}")),
        "{log:#?}"
    );
    assert!(!alive(pid));
    let text = std::fs::read_to_string(&file).unwrap_or_default();
    assert!(
        text.lines().any(|l| l.ends_with("[s] stdout> started")),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l.ends_with("[s] Stopped s: Disabled")),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_readiness_and_ready_timeout() {
    let port = free_port();
    // Served by the web service: a directory of its own (listing `/` stats every mount,
    // and a busy FUSE mount there would stall the readiness probe).
    let docroot = mistify_e2e::TempDir::new("web");
    let docroot_path = docroot.path().display().to_string();
    let sup = Sup::start(
        "http",
        &[
            (
                "web.json",
                m(
                    json!({"name": "web", "command": ["python3", "-m", "http.server", port.to_string(), "--bind", "127.0.0.1"], "directory": docroot_path, "ready": format!("http:http://127.0.0.1:{port}/")}),
                ),
            ),
            (
                "mute.json",
                m(
                    json!({"name": "mute", "command": ["sleep", "3600"], "ready": "notify", "readyTimeout": "300ms"}),
                ),
            ),
            (
                "after.json",
                m(json!({"name": "after", "command": ["sleep", "3600"], "depends": ["mute"]})),
            ),
        ],
    );
    let w = sup.until_state("web", State::Running, T).await;
    assert!(w.ready && w.status == "Healthy");
    let mute = sup.until_state("mute", State::Failed, T).await;
    assert_eq!(mute.status, "Faulted: not ready after 300ms");
    let after = sup
        .client
        .service("after")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (after.state, after.status.as_str()),
        (State::Waiting, "Unmet dependency")
    );
    assert!(
        !sup.log(Some("after"))
            .await
            .iter()
            .any(|l| l.contains("Process id")),
        "a dependent of a never-ready service must not start"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_matching_pattern_counts_and_failed_dependents_stay_failed() {
    let sup = Sup::start(
        "graph",
        &[
            (
                "ax.json",
                m(json!({"name": "a:x", "command": ["sleep", "3600"]})),
            ),
            // Depends on both `a` and `a:x`; only `a:x` exists (govisor never started it).
            (
                "both.json",
                m(json!({"name": "both", "command": ["sleep", "3600"], "depends": ["a", "a:x"]})),
            ),
            (
                "frail.json",
                m(
                    json!({"name": "frail", "command": ["sleep", "3600"], "depends": ["a"], "failOnExit": true}),
                ),
            ),
        ],
    );
    sup.until_state("both", State::Running, T).await;
    let frail = sup.until_state("frail", State::Running, T).await;
    kill(frail.pid.unwrap_or(0), "KILL");
    sup.until_state("frail", State::Failed, T).await;
    sup.client
        .restart("a:x")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    sup.until("both", T, |s| s.state == State::Running).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let f = sup
        .client
        .service("frail")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        f.state,
        State::Failed,
        "a failed dependent is not silently restarted"
    );
    let _ = until_log(&sup, "both", |l| {
        l.ends_with("Started both: Dependency running")
    })
    .await;
}
