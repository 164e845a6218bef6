//! A private etcd for one test: free loopback ports, a temporary data directory, killed
//! (and the directory removed) on drop.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{free_port, TempDir};

/// A running etcd (killed on drop).
pub struct Etcd {
    child: Child,
    /// Its client URL, `http://127.0.0.1:PORT`.
    pub url: String,
    dir: TempDir,
}

impl Etcd {
    /// Starts an etcd in a fresh directory `mistify-<name>-…` on free ports and waits
    /// until it is healthy.
    ///
    /// # Panics
    /// When it cannot start or is not healthy within 30 s (with its log).
    pub fn start(name: &str) -> Etcd {
        let dir = TempDir::new(name);
        let (client, peer) = (free_port(), free_port());
        let url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let log = std::fs::File::create(dir.path().join("etcd.log")).expect("etcd log");
        let child = Command::new("etcd")
            .arg("--name")
            .arg("default")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--listen-client-urls", &url])
            .args(["--advertise-client-urls", &url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("default={peer_url}")])
            .args(["--log-level", "error", "--logger", "zap"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("cannot start etcd");
        let etcd = Etcd { child, url, dir };
        etcd.wait_healthy();
        etcd
    }

    /// Stops it now (`kill -9`); what it stored stays on disk until the drop.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let health = crate::stack::http_get(&format!("{}/health", self.url));
            if health.is_some_and(|(_, body)| body.contains("\"health\":\"true\"")) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "etcd at {} is not healthy after 30 s; its log:\n{}",
                self.url,
                crate::tail(
                    &std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default(),
                    20
                )
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
