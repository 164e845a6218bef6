//! nconfigd against a real etcd, with a `run` command that records what it was asked:
//! one line of arguments per run (`args`), a start and an end line per run (`events`),
//! an exit code read from `code`, and a pause while `hold` exists (so a test can keep a
//! run going while it writes more changes). Tests wait for effects (a new line, a
//! figure in `/metrics`), never for a fixed time.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use mistify_e2e::etcd::Etcd;
use mistify_e2e::{free_port, Daemon, TempDir};

const SCRIPT: &str = r#"#!/bin/sh
# Runs in the ansible directory (nconfigd's working directory for it).
echo "start $$" >> events
echo "$*" >> args
while [ -e hold ]; do sleep 0.02; done
code=$(cat code 2>/dev/null || echo 0)
echo "end $$" >> events
exit "$code"
"#;

const CONFIG: &str = r#"{
  "lochness/config/a/": ["a"],
  "lochness/config/b/": ["b"],
  "lochness/config/a/long/": ["long"],
  "lochness/config/full/": [],
  "lochness/config/trig/": ["trig"]
}"#;

struct Env {
    dir: TempDir,
    etcd: Etcd,
    daemon: Option<Daemon>,
    ctx: lochness::Context,
    /// What nconfigd was given as `--kv`.
    kv: String,
}

impl Env {
    async fn start(code: i32) -> Option<Env> {
        if mistify_e2e::skipped("etcd") {
            return None;
        }
        let etcd = Etcd::start("nconfigd-etcd");
        let kv = etcd.url.clone();
        Some(Env::start_on(etcd, &kv, code).await)
    }

    /// nconfigd with `--kv kv` (the etcd's own URL, or a proxy in front of it).
    async fn start_on(etcd: Etcd, kv: &str, code: i32) -> Env {
        let dir = TempDir::new("nconfigd");
        write_script(dir.path());
        std::fs::write(dir.path().join("code"), code.to_string()).unwrap();
        let config = dir.path().join("config.json");
        std::fs::write(&config, CONFIG).unwrap();
        let port = free_port();
        let args: Vec<String> = vec![
            "--kv".into(),
            kv.to_string(),
            "-a".into(),
            dir.path().display().to_string(),
            "-c".into(),
            config.display().to_string(),
            "--metrics-port".into(),
            port.to_string(),
            "-l".into(),
            "warn".into(),
        ];
        let daemon = Daemon::start(&mistify_e2e::binary("nconfigd"), &args, port);
        let ctx = lochness::Context::new(&[etcd.url.as_str()], None)
            .await
            .unwrap();
        Env {
            dir,
            etcd,
            daemon: Some(daemon),
            ctx,
            kv: kv.to_string(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn args(&self) -> Vec<String> {
        lines(&self.path("args"))
    }

    /// Waits until `n` runs have recorded their arguments; returns them all.
    fn wait_runs(&self, n: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let args = self.args();
            if args.len() >= n {
                return args;
            }
            assert!(Instant::now() < deadline, "{n} runs expected, saw {args:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until `n` runs have ended (their end line is written).
    fn wait_ended(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while ended(&self.path("events")) < n {
            assert!(Instant::now() < deadline, "{n} runs should have ended");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    async fn metrics(&self) -> String {
        let url = format!("{}/metrics", self.daemon.as_ref().unwrap().url());
        reqwest::get(&url).await.unwrap().text().await.unwrap()
    }

    /// Waits until `/metrics` has the line `line`.
    async fn wait_metric(&self, line: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = self.metrics().await;
            if text.lines().any(|l| l == line) {
                return;
            }
            assert!(Instant::now() < deadline, "no {line:?} in\n{text}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn put(&self, key: &str) {
        self.ctx.set_config(key, "v").await.unwrap();
    }

    fn hold(&self) {
        std::fs::write(self.path("hold"), "").unwrap();
    }

    fn release(&self) {
        std::fs::remove_file(self.path("hold")).unwrap();
    }

    fn set_code(&self, code: i32) {
        std::fs::write(self.path("code"), code.to_string()).unwrap();
    }

    fn kv(&self, tags: &[&str]) -> String {
        let mut line = format!("--kv {}", self.kv);
        for t in tags {
            line.push_str(&format!(" -t {t}"));
        }
        line
    }

    /// Checks that no two runs overlapped: starts and ends alternate, each end by the
    /// process that started.
    fn assert_no_overlap(&self) {
        let events = lines(&self.path("events"));
        assert!(events.len().is_multiple_of(2), "{events:?}");
        for pair in events.chunks(2) {
            let start = pair[0].strip_prefix("start ");
            let end = pair[1].strip_prefix("end ");
            assert!(
                start.is_some() && start == end,
                "runs overlapped: {events:?}"
            );
        }
    }
}

fn write_script(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let run = dir.join("run");
    std::fs::write(&run, SCRIPT).unwrap();
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn ended(path: &Path) -> usize {
    lines(path).iter().filter(|l| l.starts_with("end ")).count()
}

#[tokio::test]
async fn batches_select_tags_and_runs_never_overlap() {
    let Some(env) = Env::start(0).await else {
        return;
    };
    // The start-up run: no tags.
    assert_eq!(env.wait_runs(1), [env.kv(&[])]);
    env.wait_ended(1);

    // A burst under two prefixes while a run is held: one run with both tags, sorted.
    env.hold();
    env.put("trig/1").await;
    env.wait_runs(2);
    env.put("b/1").await;
    env.put("a/1").await;
    env.put("b/2").await;
    env.put("a/2").await;
    env.wait_metric("nconfigd_waiting_keys 4").await;
    env.release();
    let args = env.wait_runs(3);
    assert_eq!(args[1], env.kv(&["trig"]));
    assert_eq!(args[2], env.kv(&["a", "b"]));
    env.wait_ended(3);

    // The longer prefix wins over the shorter one.
    env.put("a/long/x").await;
    assert_eq!(env.wait_runs(4)[3], env.kv(&["long"]));
    env.wait_ended(4);

    // A key under a prefix with no tags: a full run.
    env.put("full/x").await;
    assert_eq!(env.wait_runs(5)[4], env.kv(&[]));
    env.wait_ended(5);

    // Mixed with tagged keys, it still makes the run a full one.
    env.hold();
    env.put("trig/2").await;
    env.wait_runs(6);
    env.put("a/3").await;
    env.put("full/y").await;
    env.wait_metric("nconfigd_waiting_keys 2").await;
    env.release();
    assert_eq!(env.wait_runs(7)[6], env.kv(&[]));
    env.wait_ended(7);

    // Deletions are changes too.
    env.ctx
        .client()
        .kv_client()
        .delete("lochness/config/b/1", None)
        .await
        .unwrap();
    assert_eq!(env.wait_runs(8)[7], env.kv(&["b"]));
    env.wait_ended(8);
    env.wait_metric(r#"nconfigd_runs_total{result="ok"} 8"#)
        .await;
    assert_eq!(env.args().len(), 8, "one run per batch");
    env.assert_no_overlap();
}

#[tokio::test]
async fn a_failed_run_is_reported_and_retried_with_its_tags() {
    let Some(env) = Env::start(0).await else {
        return;
    };
    env.wait_runs(1);
    env.wait_ended(1);
    env.set_code(5);
    env.put("a/1").await;
    assert_eq!(env.wait_runs(2)[1], env.kv(&["a"]));
    env.wait_metric(r#"nconfigd_runs_total{result="failed"} 1"#)
        .await;
    env.wait_metric("nconfigd_last_exit_code 5").await;
    env.wait_metric("nconfigd_waiting_keys 1").await;
    // Still serving, and no retry without a change.
    assert_eq!(env.args().len(), 2);
    // The next change retries with the failed run's tags added.
    env.set_code(0);
    env.put("b/1").await;
    assert_eq!(env.wait_runs(3)[2], env.kv(&["a", "b"]));
    env.wait_metric(r#"nconfigd_runs_total{result="ok"} 2"#)
        .await;
    env.wait_metric("nconfigd_waiting_keys 0").await;
    // Carried once only.
    env.put("b/2").await;
    assert_eq!(env.wait_runs(4)[3], env.kv(&["b"]));
    env.wait_ended(4);
    env.assert_no_overlap();
}

#[tokio::test]
async fn a_failed_start_up_run_does_not_stop_the_daemon() {
    let Some(mut env) = Env::start(7).await else {
        return;
    };
    assert_eq!(env.wait_runs(1), [env.kv(&[])]);
    env.wait_metric(r#"nconfigd_runs_total{result="failed"} 1"#)
        .await;
    env.wait_metric("nconfigd_last_exit_code 7").await;
    let daemon = env.daemon.as_mut().unwrap();
    assert!(
        daemon.wait_exit(Duration::from_millis(100)).is_none(),
        "nconfigd exited"
    );
    let health = reqwest::get(format!("{}/healthz", daemon.url()))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    // The retry of the start-up run is a full one, whatever the change's tags.
    env.set_code(0);
    env.put("a/1").await;
    assert_eq!(env.wait_runs(2)[1], env.kv(&[]));
    env.wait_metric(r#"nconfigd_runs_total{result="ok"} 1"#)
        .await;
    // A command that cannot be started is reported the same way.
    std::fs::remove_file(env.path("run")).unwrap();
    env.put("b/1").await;
    env.wait_metric(r#"nconfigd_runs_total{result="not_started"} 1"#)
        .await;
    write_script(env.dir.path());
    env.put("a/2").await;
    assert_eq!(env.wait_runs(3)[2], env.kv(&["a", "b"]));
    env.wait_ended(3);
}

#[tokio::test]
async fn sigterm_waits_for_the_run() {
    let Some(mut env) = Env::start(0).await else {
        return;
    };
    env.wait_runs(1);
    env.wait_ended(1);
    env.hold();
    env.put("a/1").await;
    env.wait_runs(2);
    let daemon = env.daemon.as_mut().unwrap();
    daemon.signal_term();
    // The run is held: nconfigd cannot be gone yet.
    assert!(
        daemon.wait_exit(Duration::from_millis(300)).is_none(),
        "nconfigd did not wait"
    );
    env.release();
    let daemon = env.daemon.as_mut().unwrap();
    let status = daemon
        .wait_exit(Duration::from_secs(20))
        .expect("nconfigd exits after the run");
    assert!(status.success(), "{status}");
    assert_eq!(ended(&env.path("events")), 2, "the run finished first");
}

fn once(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> std::process::ExitStatus {
    Command::new(mistify_e2e::binary("nconfigd"))
        .arg("--once")
        .arg("-a")
        .arg(dir)
        .args(args)
        .env_remove("NCONFIGD_KV_ADDRESS")
        .env_remove("NCONFIGD_ETCD_ADDRESS")
        .envs(env.iter().copied())
        .status()
        .unwrap()
}

#[test]
fn once_runs_once_with_the_address_of_flag_or_environment() {
    let dir = TempDir::new("nconfigd-once");
    write_script(dir.path());
    let args = || lines(&dir.path().join("args"));
    assert!(once(
        dir.path(),
        &["--kv", "http://flag:1"],
        &[("NCONFIGD_KV_ADDRESS", "http://env:2")]
    )
    .success());
    assert!(once(
        dir.path(),
        &[],
        &[
            ("NCONFIGD_KV_ADDRESS", "http://env:2"),
            ("NCONFIGD_ETCD_ADDRESS", "http://etcd:3")
        ]
    )
    .success());
    assert!(once(
        dir.path(),
        &[],
        &[("NCONFIGD_ETCD_ADDRESS", "http://etcd:3")]
    )
    .success());
    assert!(once(dir.path(), &[], &[]).success());
    assert_eq!(
        args(),
        [
            "--kv http://flag:1",
            "--kv http://env:2",
            "--kv http://etcd:3",
            "--kv http://127.0.0.1:2379"
        ]
    );
    std::fs::write(dir.path().join("code"), "4").unwrap();
    assert_eq!(once(dir.path(), &[], &[]).code(), Some(1));
    // A configuration that is an empty object is refused before anything runs.
    let empty = dir.path().join("empty.json");
    std::fs::write(&empty, "{}").unwrap();
    let status = once(dir.path(), &["-c", empty.to_str().unwrap()], &[]);
    assert_eq!(status.code(), Some(2));
    assert_eq!(args().len(), 5);
}

/// A TCP proxy in front of etcd whose connections can be cut (and new ones refused)
/// and restored.
struct Proxy {
    port: u16,
    open: std::sync::Arc<std::sync::atomic::AtomicBool>,
    conns: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(target: &str) -> Proxy {
        use std::sync::atomic::{AtomicBool, Ordering};
        let target = target.trim_start_matches("http://").to_string();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let open = std::sync::Arc::new(AtomicBool::new(true));
        let conns = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (o, c) = (open.clone(), conns.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !o.load(Ordering::SeqCst) {
                    continue; // dropped: refused
                }
                let target = target.clone();
                let conn = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                c.lock().unwrap().push(conn);
            }
        });
        Proxy {
            port,
            open,
            conns,
            task,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn cut(&self) {
        self.open.store(false, std::sync::atomic::Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }

    fn restore(&self) {
        self.open.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.task.abort();
    }
}

/// `etcdctl` against `url`: its standard output.
fn etcdctl(url: &str, args: &[&str]) -> String {
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg("--endpoints")
        .arg(url)
        .args(args)
        .output()
        .expect("etcdctl");
    assert!(
        out.status.success(),
        "etcdctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_that_lost_its_history_brings_a_full_run() {
    if mistify_e2e::skipped("etcd") {
        return;
    }
    let etcd = Etcd::start("nconfigd-etcd");
    let proxy = Proxy::start(&etcd.url).await;
    let env = Env::start_on(etcd, &proxy.url(), 0).await;
    assert_eq!(env.wait_runs(1), [env.kv(&[])]);
    env.wait_ended(1);
    env.put("a/1").await;
    assert_eq!(env.wait_runs(2)[1], env.kv(&["a"]));
    env.wait_ended(2);
    // Cut nconfigd off, change a watched key, compact the history past it.
    proxy.cut();
    env.put("b/1").await;
    // A write outside the watched prefixes, and the compaction at its revision: b/1's
    // revision is gone too, so no watch can resume (compacting at b/1's own revision
    // would keep it, and a watch resuming from there would deliver b/1).
    etcdctl(&env.etcd.url, &["put", "lochness/unwatched", "x"]);
    let status = etcdctl(&env.etcd.url, &["get", "lochness/unwatched", "-w", "json"]);
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let revision = status["header"]["revision"].as_i64().unwrap();
    etcdctl(&env.etcd.url, &["compact", &revision.to_string()]);
    proxy.restore();
    // The watches cannot resume (a quiet prefix's too: its start revision is gone):
    // all four (a/, b/, full/, trig/; a/long/ is within a/) start again, and a full run
    // follows the losses — one run when they fall in one batch, more when a loss comes
    // after a run started (under load the watches reconnect at different moments).
    assert_eq!(env.wait_runs(3)[2], env.kv(&[]));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let restarts: u64 = env
            .metrics()
            .await
            .lines()
            .find_map(|l| l.strip_prefix("nconfigd_watch_restarts_total "))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if restarts >= 4 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{restarts} of 4 watches restarted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Quiet for longer than a batch: any further full run has started by now.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let runs = env.args();
    assert!(
        runs[2..].iter().all(|r| *r == env.kv(&[])),
        "only full runs follow the losses: {runs:?}"
    );
    assert!(
        runs.len() <= 2 + 4,
        "one full run per lost watch at most: {runs:?}"
    );
    env.wait_ended(runs.len());
    // Watching goes on from there.
    env.put("a/2").await;
    let n = runs.len() + 1;
    assert_eq!(env.wait_runs(n)[n - 1], env.kv(&["a"]));
    env.wait_ended(n);
    env.assert_no_overlap();
}
