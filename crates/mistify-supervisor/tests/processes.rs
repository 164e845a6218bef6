//! Real processes under a real daemon: ordering, readiness, cascades, stop escalation,
//! throttling, conflicts, shutdown, logs and `${VAR}` expansion.

mod common;

use common::*;
use mistify_e2e::free_port;
use mistify_supervisor::api::{Hex, LogRecord, State};
use serde_json::json;
use std::time::{Duration, Instant};

/// The lines of a `--logfile`, each without its leading timestamp.
fn logfile_lines(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            l.split_once(' ')
                .map(|(_, t)| t.to_string())
                .unwrap_or_default()
        })
        .collect()
}

fn index_of(log: &[String], text: &str) -> usize {
    log.iter()
        .position(|l| l == text)
        .unwrap_or_else(|| panic!("{text:?} not in the log:\n{}", log.join("\n")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chain_starts_in_order_waiting_for_readiness() {
    let (pa, pc) = (free_port(), free_port());
    let sup = Sup::start(
        "chain",
        &[
            (
                "a.json",
                m(
                    json!({"name": "chain:a", "command": tcp_server(pa, 0.4), "ready": format!("tcp:{pa}"), "failOnExit": true}),
                ),
            ),
            (
                "b.json",
                m(
                    json!({"name": "chain:b", "command": notify_server(0.4), "ready": "notify", "depends": ["chain:a"], "failOnExit": true}),
                ),
            ),
            (
                "c.json",
                m(
                    json!({"name": "chain:c", "command": tcp_server(pc, 0.2), "ready": format!("tcp:{pc}"), "depends": ["chain:b"], "failOnExit": true}),
                ),
            ),
        ],
    );
    for n in ["chain:a", "chain:b", "chain:c"] {
        let s = sup.until_state(n, State::Running, T).await;
        assert!(s.ready && s.running && s.pid.is_some(), "{s:?}");
        assert_eq!(s.status, "Healthy");
    }
    let log = sup.log(None).await;
    let a_ready = index_of(&log, "[chain:a] Service healthy");
    let b_start = index_of(&log, "[chain:b] Started chain:b: Dependency running");
    let b_ready = index_of(&log, "[chain:b] Service healthy");
    let c_start = index_of(&log, "[chain:c] Started chain:c: Dependency running");
    assert!(
        a_ready < b_start && b_start < b_ready && b_ready < c_start,
        "{log:#?}"
    );
    assert!(log.contains(&"[chain:b] status: up".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oneshot_runs_before_its_dependents() {
    let dir = mistify_e2e::TempDir::new("oneshot-flag");
    let flag = dir.path().join("done");
    let f = flag.display().to_string();
    let sup = Sup::start(
        "oneshot",
        &[
            (
                "setup.json",
                m(
                    json!({"name": "setup", "type": "oneshot", "command": ["sh", "-c", format!("sleep 0.3; touch {f}")]}),
                ),
            ),
            // Fails at once if it runs before the setup step finished.
            (
                "app.json",
                m(
                    json!({"name": "app", "depends": ["setup"], "failOnExit": true, "command": ["sh", "-c", format!("test -f {f} && exec sleep 3600")]}),
                ),
            ),
        ],
    );
    let app = sup.until_state("app", State::Running, T).await;
    assert!(!app.failed);
    let setup = sup.until_state("setup", State::Exited, T).await;
    assert!(setup.ready && !setup.failed, "{setup:?}");
    let log = sup.log(None).await;
    assert!(
        index_of(&log, "[setup] Service setup completed")
            < index_of(&log, "[app] Started app: Dependency running")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_dependency_stops_dependents_and_all_come_back() {
    let sup = Sup::start(
        "cascade",
        &[
            (
                "db.json",
                m(
                    json!({"name": "db", "command": ["sleep", "3600"], "failOnExit": true, "restart": true}),
                ),
            ),
            (
                "api.json",
                m(
                    json!({"name": "api", "command": ["sleep", "3600"], "depends": ["db"], "failOnExit": true}),
                ),
            ),
            (
                "web.json",
                m(
                    json!({"name": "web", "command": ["sleep", "3600"], "depends": ["api"], "failOnExit": true}),
                ),
            ),
        ],
    );
    let mut pids = Vec::new();
    for n in ["db", "api", "web"] {
        pids.push(sup.until_state(n, State::Running, T).await.pid.unwrap_or(0));
    }
    kill(pids[0], "KILL");
    for (n, old) in ["db", "api", "web"].iter().zip(&pids) {
        let s = sup
            .until(n, T, |s| {
                s.state == State::Running && s.pid.is_some_and(|p| p != *old)
            })
            .await;
        assert!(s.enabled && !s.failed);
    }
    // The old dependents were stopped (not left behind), in reverse order.
    assert!(wait_gone(&pids, Duration::from_secs(5)).is_empty());
    let log = sup.log(None).await;
    assert!(
        log.contains(&"[db] Failed: signal: killed".to_string()),
        "{log:#?}"
    );
    let web_stop = index_of(&log, "[web] Stopped web: Unmet dependency");
    let api_stop = index_of(&log, "[api] Stopped api: Unmet dependency");
    let db_stop = index_of(&log, "[db] Stopped db: Faulted: signal: killed");
    assert!(web_stop < api_stop && api_stop < db_stop, "{log:#?}");
    assert_eq!(
        sup.client
            .service("db")
            .await
            .map(|s| s.restarts)
            .unwrap_or(0),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_ignoring_sigterm_is_killed_after_stop_time() {
    let sup = Sup::start(
        "stubborn",
        &[(
            "s.json",
            m(
                json!({"name": "stubborn", "stopTime": "1s", "command": ["sh", "-c", "trap '' TERM; echo armed; while :; do sleep 0.1; done"]}),
            ),
        )],
    );
    let s = sup.until_state("stubborn", State::Running, T).await;
    let pid = s.pid.unwrap_or(0);
    sup.until("stubborn", T, |_| true).await;
    // Wait until the trap is armed.
    let deadline = Instant::now() + T;
    while !sup
        .log(Some("stubborn"))
        .await
        .iter()
        .any(|l| l.ends_with("stdout> armed"))
    {
        assert!(Instant::now() < deadline, "never armed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let members = group_members(pid);
    assert!(!members.is_empty());
    let t0 = Instant::now();
    sup.client
        .disable("stubborn")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let took = t0.elapsed();
    assert!(took >= Duration::from_millis(950), "stopped after {took:?}");
    assert!(took < Duration::from_secs(5), "stopped after {took:?}");
    assert!(wait_gone(&members, Duration::from_secs(2)).is_empty());
    let log = sup.log(Some("stubborn")).await;
    assert!(
        log.contains(&"[stubborn] Graceful shutdown timed out".to_string()),
        "{log:#?}"
    );
    let s = sup
        .client
        .service("stubborn")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s.state, State::Disabled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_loop_ends_throttled_and_clear_restarts_it() {
    let sup = Sup::start(
        "crashloop",
        &[(
            "c.json",
            m(
                json!({"name": "loop", "restart": true, "restartBackoff": "10ms", "startLimitBurst": 3, "startLimitInterval": "30s", "command": ["sh", "-c", "exit 3"]}),
            ),
        )],
    );
    let s = sup.until_state("loop", State::Throttled, T).await;
    assert!(s.failed && s.enabled);
    assert!(s.throttled_until.is_some());
    assert_eq!(s.restarts, 2, "{s:?}");
    // It stays throttled (no more starts).
    tokio::time::sleep(Duration::from_millis(400)).await;
    let log = sup.log(Some("loop")).await;
    let starts = log.iter().filter(|l| l.contains("Process id")).count();
    assert_eq!(starts, 3, "{log:#?}");
    assert_eq!(
        log.iter()
            .filter(|l| l.ends_with("restarting too quickly"))
            .count(),
        1
    );
    sup.client
        .clear("loop")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let s = sup.until_state("loop", State::Throttled, T).await;
    assert!(s.throttled_until.is_some());
    let log = sup.log(Some("loop")).await;
    assert!(
        log.contains(&"[loop] Started loop: Cleared fault".to_string()),
        "{log:#?}"
    );
    assert_eq!(log.iter().filter(|l| l.contains("Process id")).count(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicts_refuse_enable_with_409() {
    let sup = Sup::start(
        "conflict",
        &[
            (
                "a.json",
                m(json!({"name": "holder:x", "command": ["sleep", "3600"]})),
            ),
            (
                "b.json",
                m(
                    json!({"name": "rival:x", "command": ["sleep", "3600"], "conflicts": ["holder"]}),
                ),
            ),
        ],
    );
    // Deterministic start-up: name order, the first one wins.
    sup.until_state("holder:x", State::Running, T).await;
    let r = sup
        .client
        .service("rival:x")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (r.enabled, r.status.as_str()),
        (false, "Disabled due to conflict")
    );
    let resp = reqwest::Client::new()
        .post(format!("{}/services/rival%3Ax/enable", sup.url))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status().as_u16(), 409);
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    assert_eq!(
        body,
        json!({"code": 409, "message": "Conflicting service enabled"})
    );
    // Each refusal (start-up, then the POST) is logged in govisord's words, by the
    // service (so in its log and the consolidated one), and nowhere else.
    let refused = "[rival:x] Cannot enable rival:x: conflicts with holder:x";
    let own = sup.log(Some("rival:x")).await;
    assert_eq!(
        own.iter().filter(|l| l.as_str() == refused).count(),
        2,
        "{own:#?}"
    );
    let all = sup.log(None).await;
    assert_eq!(
        all.iter().filter(|l| l.as_str() == refused).count(),
        2,
        "{all:#?}"
    );
    assert!(
        !all.iter()
            .any(|l| l.contains("Not enabling") || l.contains("Conflicting service")),
        "{all:#?}"
    );
    // Once the holder is disabled, the rival may run.
    sup.client
        .disable("holder:x")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    sup.client
        .enable("rival:x")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    sup.until_state("rival:x", State::Running, T).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disable_cascades_to_dependents_which_return_on_enable() {
    let sup = Sup::start(
        "disable",
        &[
            (
                "a.json",
                m(json!({"name": "base", "command": ["sleep", "3600"]})),
            ),
            (
                "b.json",
                m(json!({"name": "mid", "command": ["sleep", "3600"], "depends": ["base"]})),
            ),
            (
                "c.json",
                m(json!({"name": "top", "command": ["sleep", "3600"], "depends": ["mid"]})),
            ),
        ],
    );
    let top = sup.until_state("top", State::Running, T).await;
    let mid = sup.until_state("mid", State::Running, T).await;
    sup.client
        .disable("base")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    for n in ["mid", "top"] {
        let s = sup
            .client
            .service(n)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (s.state, s.enabled, s.status.as_str()),
            (State::Waiting, true, "Unmet dependency"),
            "{n}"
        );
        assert_eq!(s.pid, None);
    }
    assert!(wait_gone(
        &[top.pid.unwrap_or(0), mid.pid.unwrap_or(0)],
        Duration::from_secs(2)
    )
    .is_empty());
    sup.client
        .enable("base")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    sup.until_state("top", State::Running, T).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_is_ordered_exits_0_and_leaves_no_process() {
    let logdir = mistify_e2e::TempDir::new("shutdown-log");
    let logfile = logdir.path().join("sup.log");
    let mut sup = Sup::start_with(
        "shutdown",
        &[
            (
                "a.json",
                m(
                    json!({"name": "root", "command": ["sh", "-c", "sleep 3600 & sleep 3600 & wait"]}),
                ),
            ),
            (
                "b.json",
                m(
                    json!({"name": "leaf", "depends": ["root"], "stopTime": "1s", "command": ["sh", "-c", "trap '' TERM; (trap '' TERM; sleep 3600) & while :; do sleep 0.1; done"]}),
                ),
            ),
            (
                "c.json",
                m(json!({"name": "solo", "command": ["sleep", "3600"]})),
            ),
        ],
        &[],
        &["--logfile", &logfile.display().to_string()],
    );
    let mut all = Vec::new();
    for n in ["root", "leaf", "solo"] {
        let s = sup.until_state(n, State::Running, T).await;
        let pid = s.pid.unwrap_or(0);
        let deadline = Instant::now() + T;
        // Wait for the children sh forks: root's two sleeps; leaf's subshell (which
        // execs its sleep). Leaf's loop also forks short-lived `sleep 0.1`s, counted
        // only when caught alive, so they do not count towards `want`.
        let want = match n {
            "root" => 3,
            "leaf" => 2,
            _ => 1,
        };
        while group_members(pid).len() < want {
            assert!(Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        all.extend(group_members(pid));
    }
    assert!(all.len() >= 6, "{all:?}");
    let status = sup.terminate(Duration::from_secs(20));
    assert_eq!(status.code(), Some(0), "stderr: {}", sup.stderr());
    let left = wait_gone(&all, Duration::from_secs(3));
    assert!(left.is_empty(), "still alive after shutdown: {left:?}");
    // Dependents stop before their dependencies.
    let log = logfile_lines(&logfile);
    let leaf = index_of(&log, "[leaf] Stopped leaf: Shutting down");
    let root = index_of(&log, "[root] Stopped root: Shutting down");
    assert!(leaf < root, "{log:#?}");
}

/// The talker's log (and its last id) once it holds the line `text` (up to `T`).
async fn talker_log_until(sup: &Sup, text: &str) -> (Vec<LogRecord>, Hex) {
    let deadline = Instant::now() + T;
    loop {
        let (r, id) = sup
            .client
            .log(Some("talker"), None)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        if r.iter().any(|r| r.text == text) {
            return (r, id);
        }
        assert!(Instant::now() < deadline, "no {text:?} in the log");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_ring_and_long_poll_return_new_lines_only() {
    let dir = mistify_e2e::TempDir::new("talk");
    let go = dir.path().join("go");
    let sup = Sup::start(
        "logs",
        &[(
            "t.json",
            m(
                json!({"name": "talker", "command": ["sh", "-c", format!("echo one; while [ ! -f {g} ]; do sleep 0.05; done; echo two; echo three; exec sleep 3600", g = go.display())]}),
            ),
        )],
    );
    sup.until_state("talker", State::Running, T).await;
    let (records, last) = talker_log_until(&sup, "[talker] stdout> one").await;
    assert_eq!(records.last().map(|r| r.id), Some(last));
    // Nothing new: the long poll waits, then answers 304 (None).
    let t0 = Instant::now();
    let none = sup
        .client
        .watch_log(Some("talker"), last, 1)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(none.is_none() && t0.elapsed() >= Duration::from_millis(900));
    // A change ends the poll early with only the new lines.
    let c = sup.client.clone();
    let poll = tokio::spawn(async move { c.watch_log(Some("talker"), last, 30).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t0 = Instant::now();
    std::fs::write(&go, "").unwrap_or_else(|e| panic!("{e}"));
    let (new, id) = poll
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("poll ended without news"));
    assert!(t0.elapsed() < Duration::from_secs(5));
    assert!(id > last);
    let texts: Vec<&str> = new.iter().map(|r| r.text.as_str()).collect();
    assert!(!texts.contains(&"[talker] stdout> one"), "{texts:?}");
    assert!(texts.contains(&"[talker] stdout> two"), "{texts:?}");
    assert!(new.iter().all(|r| r.id > last));
    // ETag/If-None-Match on the log: 304 with the ETag, once the talker has printed its
    // last line ("three" may come after the poll above returned with "two").
    let (_, cur) = talker_log_until(&sup, "[talker] stdout> three").await;
    let resp = reqwest::Client::new()
        .get(format!("{}/services/talker/log", sup.url))
        .header("If-None-Match", cur.etag())
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status().as_u16(), 304);
    assert_eq!(
        resp.headers().get("etag").and_then(|v| v.to_str().ok()),
        Some(cur.etag().as_str())
    );
    assert_ne!(cur, Hex(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn variables_expand_from_the_daemon_environment() {
    let sup = Sup::start_with(
        "vars",
        &[(
            "v.json",
            m(
                json!({"name": "vars", "description": "port ${SUP_TEST_PORT}", "env": ["GREETING=${SUP_TEST_GREETING:-hello}"], "command": ["sh", "-c", "echo port=$0 dir=$1 greet=$GREETING; exec sleep 3600", "${SUP_TEST_PORT}", "${SUP_TEST_DIR:-/var/lib/default}"]}),
            ),
        )],
        &[("SUP_TEST_PORT", "4242".to_string())],
        &[],
    );
    let s = sup.until_state("vars", State::Running, T).await;
    assert_eq!(s.description, "port 4242");
    let deadline = Instant::now() + T;
    loop {
        let log = sup.log(Some("vars")).await;
        if log.contains(&"[vars] stdout> port=4242 dir=/var/lib/default greet=hello".to_string()) {
            break;
        }
        assert!(Instant::now() < deadline, "{log:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_manifests_are_refused_by_file_and_key_and_the_rest_runs() {
    let sup = Sup::start(
        "bad",
        &[
            (
                "good.json",
                m(json!({"name": "good", "command": ["sleep", "3600"]})),
            ),
            (
                "unknown.json",
                m(json!({"name": "u", "command": ["sleep", "1"], "colour": "red"})),
            ),
            ("nocmd.json", m(json!({"name": "nocmd"}))),
            (
                "negative.json",
                m(json!({"name": "neg", "command": ["sleep", "1"], "startLimitBurst": -1})),
            ),
            (
                "cycle1.json",
                m(json!({"name": "c1", "command": ["sleep", "1"], "depends": ["c2"]})),
            ),
            (
                "cycle2.json",
                m(json!({"name": "c2", "command": ["sleep", "1"], "depends": ["c1"]})),
            ),
            ("broken.json", "{not json".to_string()),
        ],
    );
    sup.until_state("good", State::Running, T).await;
    let names = sup.client.names().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(names, vec!["good".to_string()]);
    let log = sup.log(None).await.join("\n");
    for (file, key) in [
        ("unknown.json", "colour"),
        ("nocmd.json", "command"),
        ("negative.json", "startLimitBurst"),
        ("cycle1.json", "depends"),
        ("cycle2.json", "depends"),
    ] {
        assert!(
            log.lines()
                .any(|l| l.contains(file) && l.contains(&format!("key \"{key}\""))),
            "{file}/{key} not reported:\n{log}"
        );
    }
    assert!(log.contains("broken.json"));
    assert!(sup.stderr().contains("unknown.json"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_manifests() {
    let sup = Sup::start(
        "reload",
        &[
            (
                "keep.json",
                m(json!({"name": "keep", "command": ["sleep", "3600"]})),
            ),
            (
                "gone.json",
                m(json!({"name": "gone", "command": ["sleep", "3600"]})),
            ),
        ],
    );
    let keep = sup.until_state("keep", State::Running, T).await;
    let gone = sup.until_state("gone", State::Running, T).await;
    std::fs::remove_file(sup.path("services/gone.json")).unwrap_or_else(|e| panic!("{e}"));
    write_manifests(
        sup.dir.path(),
        &[(
            "new.json",
            m(json!({"name": "new", "command": ["sleep", "3600"]})),
        )],
    );
    sup.signal("HUP");
    sup.until_state("new", State::Running, T).await;
    let deadline = Instant::now() + T;
    while sup
        .client
        .names()
        .await
        .unwrap_or_default()
        .contains(&"gone".to_string())
    {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(wait_gone(&[gone.pid.unwrap_or(0)], Duration::from_secs(3)).is_empty());
    let k = sup
        .client
        .service("keep")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(k.pid, keep.pid, "an unchanged service keeps running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dependent_that_keeps_running_survives_its_dependency_and_stops_first() {
    let logdir = mistify_e2e::TempDir::new("keeplog");
    let logfile = logdir.path().join("daemon.log");
    let mut sup = Sup::start_with(
        "keep",
        &[
            (
                "db.json",
                m(
                    json!({"name": "db", "command": ["sleep", "3600"], "failOnExit": true, "restart": true}),
                ),
            ),
            (
                "agent.json",
                m(
                    json!({"name": "agent", "command": ["sleep", "3600"], "depends": ["db"], "onDependencyLoss": "keep", "failOnExit": true}),
                ),
            ),
        ],
        &[],
        &["--logfile", &logfile.display().to_string()],
    );
    let db = sup
        .until_state("db", State::Running, T)
        .await
        .pid
        .unwrap_or(0);
    let agent = sup
        .until_state("agent", State::Running, T)
        .await
        .pid
        .unwrap_or(0);
    assert!(db > 0 && agent > 0);
    // The dependency crashes and is restarted; the dependent is left alone.
    kill(db, "KILL");
    let db2 = sup
        .until("db", T, |s| {
            s.state == State::Running && s.pid.is_some_and(|p| p != db)
        })
        .await
        .pid
        .unwrap_or(0);
    let a = sup
        .client
        .service("agent")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((a.state, a.pid), (State::Running, Some(agent)), "{a:?}");
    assert!(alive(agent));
    let log = sup.log(None).await;
    assert!(
        !log.iter().any(|l| l.starts_with("[agent] Stopped")),
        "{log:#?}"
    );
    // Disabling the dependency stops it without waiting for the dependent.
    sup.client
        .disable("db")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    sup.until_state("db", State::Disabled, T).await;
    assert!(!alive(db2));
    assert_eq!(
        sup.client
            .service("agent")
            .await
            .map(|s| s.pid)
            .ok()
            .flatten(),
        Some(agent)
    );
    // Shutdown still stops the dependent before its dependency.
    sup.client
        .enable("db")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    sup.until_state("db", State::Running, T).await;
    assert!(sup.terminate(T).success());
    let log = logfile_lines(&logfile);
    let agent_stop = index_of(&log, "[agent] Stopped agent: Shutting down");
    let db_stop = index_of(&log, "[db] Stopped db: Shutting down");
    assert!(agent_stop < db_stop, "{log:#?}");
}
