//! The REST API: the recorded govisord exchanges, auth, systemd notification, embedding.

mod common;

use common::*;
use mistify_supervisor::api::State;
use mistify_supervisor::daemon::{router, Manager, Provider, ProviderContext, ServiceConfig};
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[test]
fn govisord_fixture_replays_against_our_daemon() {
    if mistify_e2e::skipped("supervisor-replay") {
        return;
    }
    if std::process::Command::new("python3")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED: python3 is not installed, the replay tool cannot run");
        return;
    }
    let fixture = mistify_e2e::fixtures_dir()
        .join("wire")
        .join("supervisor-rest.json");
    let (ok, out) = mistify_e2e::replay(&[
        fixture.display().to_string(),
        "--start-daemon".into(),
        DAEMON.into(),
        "--allow-fixes".into(),
    ]);
    assert!(ok, "{out}");
    let last = out.lines().last().unwrap_or_default().to_string();
    assert!(last.ends_with("passed, 0 failed"), "{out}");
    // The only difference from the original is the documented one (ETag on 304).
    let fixed: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("QUIRK-FIXED"))
        .collect();
    assert_eq!(fixed.len(), 1, "{out}");
    assert!(fixed[0].contains("no-etag-on-304"));
}

/// An answer written as Go's `http.Error(w, text, code)`: `text` and a newline,
/// `Content-Type: text/plain; charset=utf-8`, `X-Content-Type-Options: nosniff`.
async fn assert_go_text_error(r: reqwest::Response, text: &str) {
    let what = format!("{} {}", r.status(), r.url());
    let header = |name: &str| {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    assert_eq!(
        header("content-type").as_deref(),
        Some("text/plain; charset=utf-8"),
        "{what}"
    );
    assert_eq!(
        header("x-content-type-options").as_deref(),
        Some("nosniff"),
        "{what}"
    );
    assert_eq!(
        r.text().await.unwrap_or_default(),
        format!("{text}\n"),
        "{what}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_from_a_bcrypt_password_file() {
    let hash = bcrypt::hash("s3cret", 4).unwrap_or_else(|e| panic!("{e}"));
    let dir = mistify_e2e::TempDir::new("auth-pass");
    let passfile = dir.path().join("passwd");
    std::fs::write(&passfile, format!("# users\n\nops:{hash}\n")).unwrap_or_else(|e| panic!("{e}"));
    let sup = Sup::start_with(
        "auth",
        &[(
            "a.json",
            m(json!({"name": "a", "command": ["sleep", "3600"]})),
        )],
        &[],
        &[
            "--passfile",
            &passfile.display().to_string(),
            "--passwd",
            "cli:other",
            "--name",
            "hv1",
        ],
    );
    let http = reqwest::Client::new();
    let r = http
        .get(format!("{}/", sup.url))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(
        r.headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok()),
        Some("Basic realm=\"hv1\"")
    );
    assert_go_text_error(r, "Unauthorized").await;
    for (user, pass, code) in [
        ("ops", "wrong", 401),
        ("nobody", "s3cret", 401),
        ("ops", "s3cret", 200),
        ("cli", "other", 200),
    ] {
        let r = http
            .get(format!("{}/services/a", sup.url))
            .basic_auth(user, Some(pass))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.status().as_u16(), code, "{user}:{pass}");
        if code == 401 {
            assert_go_text_error(r, "Unauthorized").await;
        }
    }
    // Authentication comes before routing: an unknown path is a 401 too.
    let r = http
        .post(format!("{}/nope", sup.url))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status().as_u16(), 401);
    assert_go_text_error(r, "Unauthorized").await;
    // The client reports 401 as such (the TUI's cue for its login screen).
    let e = sup
        .client
        .names()
        .await
        .err()
        .unwrap_or_else(|| panic!("no 401"));
    assert!(e.is_unauthorized(), "{e:?}");
    let r = http
        .get(format!("{}/", sup.url))
        .basic_auth("ops", Some("s3cret"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let info: serde_json::Value = r.json().await.unwrap_or_default();
    assert_eq!(info["name"], "hv1");
    // The CLI's --user/--pass, --pass-file, MISTIFY_SUPERVISOR_USER/_PASS.
    let cli_env = |extra: &[&str], env: &[(&str, &str)]| {
        std::process::Command::new(cli())
            .args(["--addr", &sup.url])
            .args(extra)
            .arg("list")
            .env_remove("MISTIFY_SUPERVISOR_USER")
            .env_remove("MISTIFY_SUPERVISOR_PASS")
            .envs(env.iter().copied())
            .output()
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let cli = |extra: &[&str]| cli_env(extra, &[]);
    let ok = cli(&["--user", "ops", "--pass", "s3cret"]);
    assert_eq!(String::from_utf8_lossy(&ok.stdout), "a\n");
    let cli_pass = dir.path().join("cli-pass");
    std::fs::write(&cli_pass, "s3cret\n").unwrap_or_else(|e| panic!("{e}"));
    let cli_pass = cli_pass.display().to_string();
    let env = [
        ("MISTIFY_SUPERVISOR_USER", "ops"),
        ("MISTIFY_SUPERVISOR_PASS", "s3cret"),
    ];
    let wrong_env = [("MISTIFY_SUPERVISOR_PASS", "wrong")];
    for (extra, env) in [
        (
            &["--user", "ops", "--pass-file", cli_pass.as_str()][..],
            &[][..],
        ),
        (&[], &env[..]),
        // The command line wins over the environment.
        (
            &["--user", "ops", "--pass-file", cli_pass.as_str()],
            &wrong_env,
        ),
        (&["--user", "ops", "--pass", "s3cret"], &wrong_env),
    ] {
        let ok = cli_env(extra, env);
        assert_eq!(
            String::from_utf8_lossy(&ok.stdout),
            "a\n",
            "{extra:?} {env:?}: {}",
            String::from_utf8_lossy(&ok.stderr)
        );
    }
    let refused = cli_env(&["--user", "ops"], &wrong_env);
    assert_eq!(refused.status.code(), Some(1));
    let refused = cli(&[]);
    assert_eq!(refused.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&refused.stderr).trim(),
        "Error: Unauthorized"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_is_sent_to_notify_socket_once_the_api_listens() {
    let dir = mistify_e2e::TempDir::new("notify-sock");
    let path = dir.path().join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&path).unwrap_or_else(|e| panic!("{e}"));
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap_or_else(|e| panic!("{e}"));
    let mut sup = Sup::start_with(
        "notify",
        &[(
            "a.json",
            m(json!({"name": "a", "command": ["sleep", "3600"]})),
        )],
        &[("NOTIFY_SOCKET", path.display().to_string())],
        &[],
    );
    let mut buf = [0u8; 512];
    let n = sock
        .recv(&mut buf)
        .unwrap_or_else(|e| panic!("no notification: {e}"));
    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(msg.lines().any(|l| l == "READY=1"), "{msg:?}");
    // READY means the API answers and the services were started.
    let a = sup
        .client
        .service("a")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(a.state, State::Running);
    let status = sup.terminate(Duration::from_secs(20));
    assert_eq!(status.code(), Some(0));
    let n = sock
        .recv(&mut buf)
        .unwrap_or_else(|e| panic!("no STOPPING: {e}"));
    assert!(String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_and_router_errors() {
    let logdir = mistify_e2e::TempDir::new("sup-logfile");
    let logfile = logdir.path().join("supervisor.log");
    let sup = Sup::start_with(
        "routes",
        &[(
            "a.json",
            m(json!({"name": "a:b", "command": ["sleep", "3600"]})),
        )],
        &[],
        &["--logfile", &logfile.display().to_string()],
    );
    let http = reqwest::Client::new();
    let r = http
        .get(format!("{}/healthz", sup.url))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status().as_u16(), 200);
    let r = http
        .get(format!("{}/services/", sup.url))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status().as_u16(), 404);
    let r = http
        .put(format!("{}/services", sup.url))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status().as_u16(), 405);
    // Govisor's view has exactly govisor's keys; ?full=1 adds ours.
    let v: serde_json::Value = http
        .get(format!("{}/services/a%3Ab", sup.url))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .json()
        .await
        .unwrap_or_default();
    assert!(v.get("state").is_none() && v.get("status").is_some(), "{v}");
    let v: serde_json::Value = http
        .get(format!("{}/services/a%3Ab?full=1", sup.url))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .json()
        .await
        .unwrap_or_default();
    assert!(v.get("state").is_some() && v.get("pid").is_some(), "{v}");
    // Poll-Time is capped and a bad since is refused.
    let r = http
        .get(format!("{}/log?since=zz", sup.url))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status().as_u16(), 400);
    // --logfile gets the consolidated log.
    let text = std::fs::read_to_string(&logfile).unwrap_or_default();
    assert!(
        text.contains("*** Govisor starting monitoring: govisord ***"),
        "{text}"
    );
    assert!(text.contains("[a:b] Enabling service a:b"), "{text}");
}

/// A non-process provider: a flag that is "up" while started.
struct Flag(Arc<AtomicBool>);

#[async_trait::async_trait]
impl Provider for Flag {
    async fn start(&self, ctx: ProviderContext) -> Result<Option<u32>, String> {
        self.0.store(true, Ordering::SeqCst);
        ctx.log("flag raised");
        ctx.ready();
        Ok(None)
    }
    async fn stop(&self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_provider_is_supervised_through_the_embedded_router() {
    let mgr = Manager::new("embedded");
    let up = Arc::new(AtomicBool::new(false));
    let mut cfg = ServiceConfig::new("flag:one");
    cfg.ready = mistify_supervisor::manifest::Readiness::Notify;
    cfg.provides = vec!["flag".into()];
    mgr.add_service(cfg, Arc::new(Flag(up.clone())))
        .unwrap_or_else(|e| panic!("{e}"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let app = axum::Router::new().nest_service("/supervisor", router(mgr.clone()));
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let base = format!("http://{addr}/supervisor");
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{base}/services/flag:one/enable"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status().as_u16(), 200);
    let deadline = std::time::Instant::now() + T;
    loop {
        let v: serde_json::Value = http
            .get(format!("{base}/services/flag:one?full=1"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .json()
            .await
            .unwrap_or_default();
        if v["state"] == "running" && v["ready"] == true {
            assert_eq!(v["status"], "Healthy");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(up.load(Ordering::SeqCst));
    mgr.shutdown().await;
    assert!(!up.load(Ordering::SeqCst));
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_ends_when_its_client_goes_away() {
    use tokio::io::AsyncWriteExt;
    let mgr = Manager::new("polls");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let app = router(mgr.clone());
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let serial = mgr.serial();
    let mut conn = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let req = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Govisor-Poll-Etag: \"{serial:x}\"\r\nX-Govisor-Poll-Time: 60\r\n\r\n");
    conn.write_all(req.as_bytes())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let deadline = std::time::Instant::now() + T;
    while mgr.watchers() != 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the poll never started"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(conn);
    while mgr.watchers() != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the poll outlived its client"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.abort();
}

/// Every error answer as govisord wrote it: gorilla's `404 page not found` through Go's
/// `http.Error` (with `nosniff`), a wrong method 405 with no body, no `Content-Type` and
/// no `Allow`, and the JSON errors (`Service not found`, the conflict) without `nosniff`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_answers_carry_the_headers_govisord_wrote() {
    let sup = Sup::start(
        "errors",
        &[
            (
                "a.json",
                m(json!({"name": "a:b", "command": ["sleep", "3600"]})),
            ),
            (
                "z.json",
                m(json!({"name": "z", "command": ["sleep", "3600"], "conflicts": ["a"]})),
            ),
        ],
    );
    sup.until_state("a:b", State::Running, T).await;
    let http = reqwest::Client::new();
    let send = |method: &str, path: &str| {
        let method =
            reqwest::Method::from_bytes(method.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        http.request(method, format!("{}{path}", sup.url)).send()
    };
    for (method, path) in [
        ("GET", "/nope"),
        ("POST", "/nope"),
        ("GET", "/services/"),
        ("GET", "/services/a:b/log/extra"),
        ("POST", "/services/a:b/frob"),
        ("GET", "/services/a:b/frob"),
        ("POST", "/services/%FF/frob"),
    ] {
        let r = send(method, path).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.status().as_u16(), 404, "{method} {path}");
        assert_go_text_error(r, "404 page not found").await;
    }
    for (method, path) in [
        ("PUT", "/"),
        ("POST", "/services"),
        ("DELETE", "/services/a:b"),
        ("GET", "/services/a:b/enable"),
        ("HEAD", "/services/nope/restart"),
        ("POST", "/services/a:b/log"),
    ] {
        let r = send(method, path).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.status().as_u16(), 405, "{method} {path}");
        for h in ["content-type", "x-content-type-options", "allow"] {
            assert!(r.headers().get(h).is_none(), "{method} {path}: {h}");
        }
        assert_eq!(r.text().await.unwrap_or_default(), "", "{method} {path}");
    }
    for (method, path, code, message) in [
        ("GET", "/services/nope", 404, "Service not found"),
        ("GET", "/services/%FF", 404, "Service not found"),
        ("GET", "/services/%FF/log", 404, "Service not found"),
        ("POST", "/services/%FF/enable", 404, "Service not found"),
        ("POST", "/services/nope/clear", 404, "Service not found"),
        (
            "POST",
            "/services/z/enable",
            409,
            "Conflicting service enabled",
        ),
    ] {
        let r = send(method, path).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.status().as_u16(), code, "{method} {path}");
        assert!(
            r.headers().get("x-content-type-options").is_none(),
            "{method} {path}"
        );
        assert_eq!(
            r.headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("application/json; charset=UTF-8"),
            "{method} {path}"
        );
        let v: serde_json::Value = r.json().await.unwrap_or_default();
        assert_eq!(
            v,
            json!({"code": code, "message": message}),
            "{method} {path}"
        );
    }
}

/// A provider that is ready at once and takes `stop` to stop.
struct SlowStop(Duration);

#[async_trait::async_trait]
impl Provider for SlowStop {
    async fn start(&self, ctx: ProviderContext) -> Result<Option<u32>, String> {
        ctx.ready();
        Ok(None)
    }
    async fn stop(&self) {
        tokio::time::sleep(self.0).await;
    }
}

/// Sends a long poll of `path` on `etag` and returns its answer once `mgr` counts it as
/// waiting.
async fn long_poll(
    mgr: &Manager,
    url: String,
    etag: String,
) -> tokio::task::JoinHandle<(u16, serde_json::Value)> {
    let before = mgr.watchers();
    let poll = tokio::spawn(async move {
        let r = reqwest::Client::new()
            .get(url)
            .header("X-Govisor-Poll-Etag", etag)
            .header("X-Govisor-Poll-Time", "30")
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let code = r.status().as_u16();
        (code, r.json().await.unwrap_or_default())
    });
    let deadline = std::time::Instant::now() + T;
    while mgr.watchers() == before {
        assert!(
            std::time::Instant::now() < deadline,
            "the poll never waited"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    poll
}

/// govisord ran a restart under its lock, so a long poll woken by it read the service
/// once it ran again. Ours reads govisor's views once the change has played out too:
/// never `running: false` with the old status while the stop is under way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_answers_once_the_change_it_saw_is_complete() {
    let mgr = Manager::new("polls");
    // Healthy as soon as it is ready (no settle time): nothing changes after a restart.
    let mut cfg = ServiceConfig::new("slow");
    cfg.ready = mistify_supervisor::manifest::Readiness::Notify;
    mgr.add_service(cfg, Arc::new(SlowStop(Duration::from_millis(400))))
        .unwrap_or_else(|e| panic!("{e}"));
    mgr.enable("slow").unwrap_or_else(|e| panic!("{e}"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let base = format!(
        "http://{}",
        listener.local_addr().unwrap_or_else(|e| panic!("{e}"))
    );
    let app = router(mgr.clone());
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    mgr.settle("slow", T).await;
    let info = mgr.service("slow").unwrap_or_else(|| panic!("no slow"));
    assert!(info.running && info.status == "Healthy", "{info:?}");
    let http = reqwest::Client::new();
    let restart = || async {
        let r = http
            .post(format!("{base}/services/slow/restart"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.status().as_u16(), 200);
    };

    // The service, govisor's view.
    let poll = long_poll(
        &mgr,
        format!("{base}/services/slow"),
        format!("\"{}\"", info.serial),
    )
    .await;
    restart().await;
    let (code, v) = poll.await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(code, 200);
    assert_eq!(v["running"], true, "{v}");
    assert!(v["status"] == "Started" || v["status"] == "Healthy", "{v}");
    let now = mgr.service("slow").unwrap_or_else(|| panic!("no slow"));
    assert_eq!(v["serial"], now.serial.to_string(), "{v}");

    // The manager: the serial once the restart is done.
    let serial = mgr.serial();
    let poll = long_poll(&mgr, format!("{base}/"), format!("\"{serial:x}\"")).await;
    restart().await;
    let (code, v) = poll.await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(code, 200);
    assert_eq!(v["serial"], format!("{:x}", mgr.serial()), "{v}");

    // Ours (`?full=1`) answers at the first change: the stop under way.
    let serial = mgr.service("slow").map(|s| s.serial).unwrap_or_default();
    let poll = long_poll(
        &mgr,
        format!("{base}/services/slow?full=1"),
        format!("\"{serial}\""),
    )
    .await;
    restart().await;
    let (_, v) = poll.await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(v["state"], "stopping", "{v}");
    mgr.shutdown().await;
    server.abort();
}

/// The scenario as an operator meets it: govisor's one-shot (a command that exits 0) and
/// ours (`type: oneshot`), restarted while a long poll waits on them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_one_shot_is_running_in_the_long_poll_answer() {
    let sup = Sup::start(
        "oneshot-poll",
        &[
            (
                "hello.json",
                m(json!({"name": "hello:echo", "command": ["echo", "hello"]})),
            ),
            (
                "once.json",
                m(json!({"name": "once", "command": ["echo", "once"], "type": "oneshot"})),
            ),
        ],
    );
    let http = reqwest::Client::new();
    for name in ["hello:echo", "once"] {
        sup.until(name, T, |s| s.running && s.status == "Healthy")
            .await;
        let r = http
            .get(format!("{}/services/{name}", sup.url))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let etag = r
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let url = format!("{}/services/{name}", sup.url);
        let poll = tokio::spawn(async move {
            reqwest::Client::new()
                .get(url)
                .header("X-Govisor-Poll-Etag", etag)
                .header("X-Govisor-Poll-Time", "30")
                .send()
                .await
                .unwrap_or_else(|e| panic!("{e}"))
                .json::<serde_json::Value>()
                .await
                .unwrap_or_default()
        });
        // The poll is waiting by then (it is answered at once only on a change).
        tokio::time::sleep(Duration::from_millis(300)).await;
        sup.client
            .restart(name)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let v = poll.await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(v["running"], true, "{name}: {v}");
        assert_eq!(v["enabled"], true, "{name}: {v}");
        assert!(
            v["status"] == "Started" || v["status"] == "Healthy",
            "{name}: {v}"
        );
    }
}
