//! Benchmark (not run in CI): crash -> restarted latency, and cold start of a
//! three-service chain (tcp readiness) -> all ready. Prints figures.
//!
//!     cargo bench -p mistify-supervisor --bench supervisor
//!     cargo test -p mistify-supervisor --bench supervisor     (debug build, quicker)

use mistify_e2e::{free_port, wait_for_port, TempDir};
use mistify_supervisor::api::State;
use mistify_supervisor_cli::{Client, ClientOptions};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const DAEMON: &str = env!("CARGO_BIN_EXE_mistify-supervisord");

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

fn start(dir: &TempDir, manifests: &[(&str, serde_json::Value)]) -> (Running, Client, Instant) {
    let services = dir.path().join("services");
    let _ = std::fs::create_dir_all(&services);
    for (f, v) in manifests {
        let _ = std::fs::write(services.join(f), v.to_string());
    }
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let t0 = Instant::now();
    let child = Command::new(DAEMON)
        .args(["--addr", &url, "--dir"])
        .arg(dir.path())
        .env("RUST_LOG", "error")
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {DAEMON}: {e}"));
    let running = Running(child);
    wait_for_port(
        SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(20),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let client = Client::new(&url, &ClientOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    (running, client, t0)
}

fn tcp_server(port: u16) -> Vec<String> {
    vec![
        "python3".into(),
        "-c".into(),
        format!("import socket\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\ns.bind(('127.0.0.1',{port}))\ns.listen(16)\nwhile True:\n    c,_=s.accept()\n    c.close()\n"),
    ]
}

fn stats(name: &str, mut v: Vec<Duration>) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{name}: n={} min={:.1} ms median={:.1} ms max={:.1} ms",
        v.len(),
        ms(v[0]),
        ms(v[v.len() / 2]),
        ms(v[v.len() - 1])
    );
}

async fn crash_to_restarted() {
    let dir = TempDir::new("bench-crash");
    let (_d, client, _) = start(
        &dir,
        &[(
            "a.json",
            serde_json::json!({"name": "victim", "command": ["sleep", "3600"], "failOnExit": true, "restart": true, "startLimitBurst": 0, "startLimitInterval": "20ms"}),
        )],
    );
    let mut samples = Vec::new();
    for _ in 0..20 {
        let pid = loop {
            if let Ok(s) = client.service("victim").await {
                if s.state == State::Running && s.pid.is_some() {
                    break s.pid.unwrap_or(0);
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        // Let the back-off counter see a stable run so each crash is a "first" one.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let (_, mut etag) = client.all().await.unwrap_or_else(|e| panic!("{e}"));
        let t0 = Instant::now();
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
        loop {
            if let Ok(Some((list, e))) = client.watch_all(etag, 10).await {
                etag = e;
                if list.iter().any(|s| {
                    s.name == "victim"
                        && s.state == State::Running
                        && s.pid.is_some_and(|p| p != pid)
                }) {
                    break;
                }
            }
        }
        samples.push(t0.elapsed());
    }
    stats("crash -> restarted (running, new pid)", samples);
}

async fn cold_start_chain() {
    let mut samples = Vec::new();
    for _ in 0..5 {
        let dir = TempDir::new("bench-chain");
        let (p1, p2, p3) = (free_port(), free_port(), free_port());
        let (_d, client, t0) = start(
            &dir,
            &[
                (
                    "1.json",
                    serde_json::json!({"name": "storage", "command": tcp_server(p1), "ready": format!("tcp:{p1}"), "failOnExit": true}),
                ),
                (
                    "2.json",
                    serde_json::json!({"name": "hypervisor", "command": tcp_server(p2), "ready": format!("tcp:{p2}"), "depends": ["storage"], "failOnExit": true}),
                ),
                (
                    "3.json",
                    serde_json::json!({"name": "agent", "command": tcp_server(p3), "ready": format!("tcp:{p3}"), "depends": ["hypervisor"], "failOnExit": true}),
                ),
            ],
        );
        loop {
            if let Ok((list, _)) = client.all().await {
                if list.len() == 3 && list.iter().all(|s| s.state == State::Running && s.ready) {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        samples.push(t0.elapsed());
    }
    stats(
        "cold start of a 3-service tcp-ready chain -> all ready (from daemon spawn)",
        samples,
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rt = tokio::runtime::Runtime::new().unwrap_or_else(|e| panic!("{e}"));
    rt.block_on(async {
        crash_to_restarted().await;
        cold_start_chain().await;
    });
}
