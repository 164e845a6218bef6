//! A private etcd seeded from the recording, and cbootstrapd started on it.
#![allow(dead_code)]

use std::process::Command;

use mistify_e2e::etcd::Etcd;
use mistify_e2e::{free_port, Daemon, TempDir};

/// The base URL the recording was made with.
pub const BASE: &str = "http://ipxe.test:8888";

/// The recording.
pub fn fixture() -> std::path::PathBuf {
    mistify_e2e::fixtures_dir()
        .join("wire")
        .join("lochness-cbootstrapd.json")
}

/// etcd holding the recording's seed, an images directory, and cbootstrapd on them.
pub struct Boot {
    pub daemon: Daemon,
    pub images: TempDir,
    pub etcd: Etcd,
}

impl Boot {
    /// `None` when the etcd suite is skipped.
    pub fn start(extra: &[&str]) -> Option<Boot> {
        if mistify_e2e::skipped("etcd") {
            return None;
        }
        let etcd = Etcd::start("cbootstrapd-etcd");
        let seed = Command::new("python3")
            .arg(
                mistify_e2e::fixtures_dir()
                    .join("wire")
                    .join("lochness-seed.py"),
            )
            .arg(fixture())
            .args(["--etcd", &etcd.url, "--wipe"])
            .output()
            .expect("python3");
        assert!(
            seed.status.success(),
            "seeding failed: {}",
            String::from_utf8_lossy(&seed.stderr)
        );
        let images = TempDir::new("cbootstrapd-images");
        let port = free_port();
        let mut args: Vec<String> = vec![
            "--bind".into(),
            "127.0.0.1".into(),
            "-p".into(),
            port.to_string(),
            "-k".into(),
            etcd.url.clone(),
            "-b".into(),
            BASE.into(),
            "-i".into(),
            images.path().display().to_string(),
            "-l".into(),
            "warn".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let daemon = Daemon::start(&mistify_e2e::binary("cbootstrapd"), &args, port);
        Some(Boot {
            daemon,
            images,
            etcd,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.daemon.url())
    }
}

/// One answer: status, content type, body.
pub async fn get(url: &str) -> (u16, String, String) {
    let resp = reqwest::Client::new()
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = resp.status().as_u16();
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    (status, ct, resp.text().await.unwrap())
}

/// A raw HTTP/1.1 GET of `path` exactly as written (no client-side path cleaning):
/// the status line's code and the body.
pub fn raw_get(port: u16, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let code = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|x| x.1)
        .unwrap_or("")
        .to_string();
    (code, body)
}
