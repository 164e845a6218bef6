//! Helpers: a real `mistify-supervisord` on a free port with its own directory.
#![allow(dead_code)]

use mistify_e2e::{free_port, wait_for_port, TempDir};
use mistify_supervisor::api::{ServiceInfo, State};
use mistify_supervisor_cli::{Client, ClientOptions};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub const DAEMON: &str = env!("CARGO_BIN_EXE_mistify-supervisord");
/// The `mistify-supervisor` CLI (a binary of the crate `mistify-supervisor-cli`, built by
/// the build phase of `make test`).
pub fn cli() -> std::path::PathBuf {
    mistify_e2e::binary("mistify-supervisor")
}

pub struct Sup {
    pub child: Child,
    pub port: u16,
    pub url: String,
    pub dir: TempDir,
    pub client: Client,
}

/// Writes `<dir>/services/<file>` for each manifest.
pub fn write_manifests(dir: &std::path::Path, manifests: &[(&str, String)]) {
    let services = dir.join("services");
    std::fs::create_dir_all(&services).unwrap_or_else(|e| panic!("mkdir: {e}"));
    for (file, text) in manifests {
        std::fs::write(services.join(file), text).unwrap_or_else(|e| panic!("write: {e}"));
    }
}

impl Sup {
    pub fn start(name: &str, manifests: &[(&str, String)]) -> Sup {
        Sup::start_with(name, manifests, &[], &[])
    }

    pub fn start_with(
        name: &str,
        manifests: &[(&str, String)],
        env: &[(&str, String)],
        args: &[&str],
    ) -> Sup {
        let dir = TempDir::new(&format!("sup-{name}"));
        write_manifests(dir.path(), manifests);
        let port = free_port();
        let url = format!("http://127.0.0.1:{port}");
        let child = Command::new(DAEMON)
            .args(["--addr", &url, "--dir"])
            .arg(dir.path())
            .args(args)
            .envs(env.iter().map(|(k, v)| (k.to_string(), v.clone())))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.path().join("stderr.txt"))
                    .unwrap_or_else(|e| panic!("stderr file: {e}")),
            ))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {DAEMON}: {e}"));
        wait_for_port(
            SocketAddr::from(([127, 0, 0, 1], port)),
            Duration::from_secs(20),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let client =
            Client::new(&url, &ClientOptions::default()).unwrap_or_else(|e| panic!("client: {e}"));
        Sup {
            child,
            port,
            url,
            dir,
            client,
        }
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.txt")).unwrap_or_default()
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status();
    }

    /// SIGTERM, then waits for the exit (panics after `timeout`).
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        self.signal("TERM");
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "the daemon did not exit in {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Polls the service until `pred` holds (panics with the last state after `timeout`).
    pub async fn until<F: Fn(&ServiceInfo) -> bool>(
        &self,
        name: &str,
        timeout: Duration,
        pred: F,
    ) -> ServiceInfo {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.client.service(name).await;
            if let Ok(s) = &s {
                if pred(s) {
                    return s.clone();
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "{name}: condition not met in {timeout:?}; last: {s:?}\nstderr: {}",
                    self.stderr()
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub async fn until_state(&self, name: &str, state: State, timeout: Duration) -> ServiceInfo {
        self.until(name, timeout, |s| s.state == state).await
    }

    /// The texts of a service log.
    pub async fn log(&self, name: Option<&str>) -> Vec<String> {
        self.client
            .log(name, None)
            .await
            .map(|(r, _)| r.into_iter().map(|r| r.text).collect())
            .unwrap_or_default()
    }
}

impl Drop for Sup {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.signal("TERM");
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A manifest from a JSON value.
pub fn m(v: serde_json::Value) -> String {
    v.to_string()
}

/// Processes whose process group is `pgid` (read from /proc), zombies excluded.
pub fn group_members(pgid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in entries.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        // state ppid pgrp
        if f.len() > 2 && f[0] != "Z" && f[2] == pgid.to_string() {
            out.push(pid);
        }
    }
    out
}

/// Whether a process is alive (present in /proc and not a zombie).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, r)| !r.trim_start().starts_with('Z'))
            .unwrap_or(false),
        Err(_) => false,
    }
}

/// Waits until none of `pids` is alive; the survivors otherwise.
pub fn wait_gone(pids: &[u32], timeout: Duration) -> Vec<u32> {
    let deadline = Instant::now() + timeout;
    loop {
        let left: Vec<u32> = pids.iter().copied().filter(|p| alive(*p)).collect();
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn kill(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status();
}

/// A python3 one-liner that listens on 127.0.0.1:PORT after `delay` seconds.
pub fn tcp_server(port: u16, delay: f32) -> Vec<String> {
    vec![
        "python3".into(),
        "-c".into(),
        format!(
            "import socket,time\ntime.sleep({delay})\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\ns.bind(('127.0.0.1',{port}))\ns.listen(16)\nwhile True:\n    c,_=s.accept()\n    c.close()\n"
        ),
    ]
}

/// A python3 one-liner that sends READY=1 to $NOTIFY_SOCKET after `delay` seconds.
pub fn notify_server(delay: f32) -> Vec<String> {
    vec![
        "python3".into(),
        "-c".into(),
        format!(
            "import socket,os,time\ntime.sleep({delay})\ns=socket.socket(socket.AF_UNIX,socket.SOCK_DGRAM)\ns.sendto(b'STATUS=up\\nREADY=1',os.environ['NOTIFY_SOCKET'])\nwhile True:\n    time.sleep(60)\n"
        ),
    ]
}

pub const T: Duration = Duration::from_secs(15);
