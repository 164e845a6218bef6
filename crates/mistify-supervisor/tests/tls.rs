//! `https://` listen addresses: TLS with rustls, and the client's --cacert / --insecure.

mod common;

use common::*;
use mistify_e2e::{free_port, wait_for_port, TempDir};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn daemon_serves_https_and_the_cli_verifies_it() {
    if mistify_e2e::skipped("supervisor-tls") {
        return;
    }
    let dir = TempDir::new("sup-tls");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-addext",
            "basicConstraints=critical,CA:FALSE",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status();
    if !made.is_ok_and(|s| s.success()) {
        eprintln!("SKIPPED: openssl cannot make a test certificate here");
        return;
    }
    write_manifests(
        dir.path(),
        &[(
            "a.json",
            m(serde_json::json!({"name": "a", "command": ["sleep", "3600"]})),
        )],
    );
    let port = free_port();
    let url = format!("https://127.0.0.1:{port}");
    let mut daemon = Command::new(DAEMON)
        .args(["--addr", &url, "--dir"])
        .arg(dir.path())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    wait_for_port(
        SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(20),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let run = |extra: &[&str]| {
        Command::new(cli())
            .args(["--addr", &url])
            .args(extra)
            .arg("list")
            .output()
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let ca = cert.display().to_string();
    let with_ca = run(&["--cacert", &ca]);
    let insecure = run(&["--insecure"]);
    let untrusted = run(&[]);
    let _ = Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status();
    let status = daemon.wait().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        String::from_utf8_lossy(&with_ca.stdout),
        "a\n",
        "{}",
        String::from_utf8_lossy(&with_ca.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&insecure.stdout),
        "a\n",
        "{}",
        String::from_utf8_lossy(&insecure.stderr)
    );
    assert!(
        !untrusted.status.success(),
        "a self-signed certificate must not be trusted by default"
    );
    assert_eq!(status.code(), Some(0));
}

#[test]
fn missing_certificate_refuses_to_start_before_any_service_runs() {
    let dir = TempDir::new("sup-tls-missing");
    let flag = dir.path().join("ran");
    write_manifests(
        dir.path(),
        &[(
            "a.json",
            m(serde_json::json!({"name": "a", "command": ["touch", flag.display().to_string()]})),
        )],
    );
    let out = Command::new(DAEMON)
        .args([
            "--addr",
            // Port 0: nothing to race for; the certificate check must come first anyway.
            "https://127.0.0.1:0",
            "--dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cert.pem"), "{stderr}");
    assert!(!flag.exists());
}
