//! Bearer tokens (`--token-file`): 401 without a known token, 403 for a read-only token
//! that writes, `/healthz` open, SIGHUP reloads (a broken file keeps the tokens in force),
//! and the REST client and the `mistify` CLI with and without a token; HTTPS with client
//! certificates (`--tls-cert`, `--tls-key`, `--client-ca`).

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use mistify_e2e::{binary, Daemon};

const RW: &str = "rw-token-0123456789abcdef";
const RO: &str = "ro-token-0123456789abcdef";
const NEW: &str = "new-token-0123456789abcdef";

/// Status, `WWW-Authenticate` and body of a request with an optional bearer token.
async fn request(
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, String, String) {
    let (status, headers, body) = raw_with_token(method, url, token, body).await;
    let www = headers
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    (status, www, body)
}

async fn setup_with_tokens(
    name: &str,
) -> (
    TempDir,
    mistify_rpc::RunningServer,
    Daemon,
    std::path::PathBuf,
) {
    let dir = TempDir::new(name);
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, format!("# operators\n{RW}\n\nro:{RO}\n")).expect("tokens");
    let fake = fake::start(fake::Control::default()).await;
    let config = fake::config(fake.addr().port(), &[]);
    let token_arg = tokens.display().to_string();
    let agent = agent(
        &config,
        dir.path(),
        &dir.path().join("agent.redb"),
        &["--token-file", &token_arg],
    );
    (dir, fake, agent, tokens)
}

/// The number of guests in a `GET /guests` body (Go's `null` for none).
fn count(body: &str) -> usize {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    v.as_array().map_or(0, Vec::len)
}

fn guest_body() -> String {
    serde_json::json!({"memory": 256, "cpu": 1, "nics": [], "disks": []}).to_string()
}

#[tokio::test]
async fn tokens_gate_every_route_but_healthz() {
    let (_dir, _fake, agent, _tokens) = setup_with_tokens("auth-gate").await;
    let base = agent.url();

    // No token, an unknown token, another scheme: 401 with a JSON body and a challenge.
    for token in [None, Some("not-a-known-token-at-all")] {
        let (status, www, body) = request("GET", &format!("{base}/guests"), token, None).await;
        assert_eq!(status, 401, "{body}");
        assert!(www.starts_with("Bearer"), "{www}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("json error body");
        assert_eq!(v["code"], 401, "{body}");
    }
    let basic = reqwest::Client::new()
        .get(format!("{base}/guests"))
        .basic_auth("admin", Some(RW))
        .send()
        .await
        .expect("request");
    assert_eq!(basic.status().as_u16(), 401);
    // A refused write changes nothing.
    let (status, _, _) =
        request("POST", &format!("{base}/guests"), None, Some(&guest_body())).await;
    assert_eq!(status, 401);

    // The metrics route, answered in front of the router, is behind the same gate.
    let metrics = format!("{base}/guests/no-such-guest/metrics/cpu");
    for token in [None, Some("not-a-known-token-at-all")] {
        assert_eq!(request("GET", &metrics, token, None).await.0, 401);
    }
    assert_eq!(request("GET", &metrics, Some(RO), None).await.0, 404);

    // /healthz stays open.
    let (status, _, _) = request("GET", &format!("{base}/healthz"), None, None).await;
    assert_eq!(status, 200);

    // The read-only token reads and may not write.
    let (status, _, body) = request("GET", &format!("{base}/guests"), Some(RO), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(count(&body), 0);
    let (status, _, body) = request(
        "POST",
        &format!("{base}/guests"),
        Some(RO),
        Some(&guest_body()),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("read-only"), "{body}");
    let (status, _, _) = request(
        "PATCH",
        &format!("{base}/metadata"),
        Some(RO),
        Some(r#"{"a":"b"}"#),
    )
    .await;
    assert_eq!(status, 403);
    let (_, _, body) = request("GET", &format!("{base}/guests"), Some(RO), None).await;
    assert_eq!(count(&body), 0, "refused writes created nothing");

    // The read-write token does both.
    let (status, _, body) = request(
        "POST",
        &format!("{base}/guests"),
        Some(RW),
        Some(&guest_body()),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let (status, _, body) = request("GET", &format!("{base}/guests"), Some(RW), None).await;
    assert_eq!(status, 200);
    assert_eq!(count(&body), 1, "{body}");

    // The REST client, with and without a token.
    let plain = mistify_client::Client::new(&base).expect("client");
    let err = plain.list_guests().await.expect_err("no token");
    assert_eq!(err.status(), Some(401), "{err}");
    let with = mistify_client::Client::new(&base)
        .expect("client")
        .with_token(RO)
        .expect("token");
    assert_eq!(with.list_guests().await.expect("list").len(), 1);
    assert!(mistify_client::Client::new(&base)
        .expect("client")
        .with_token("two words")
        .is_err());
}

#[tokio::test]
async fn the_cli_sends_the_token_from_its_file() {
    let (dir, _fake, agent, _tokens) = setup_with_tokens("auth-cli").await;
    let client_token = dir.path().join("client-token");
    // A line copied from the agent's file works as is (its ro: prefix is dropped).
    std::fs::write(&client_token, format!("# mine\nro:{RO}\n")).expect("token");
    let cli = |args: &[&str]| {
        Command::new(binary("mistify"))
            .args(["--agent", &agent.url()])
            .args(args)
            .output()
            .expect("mistify")
    };
    let out = cli(&[
        "--token-file",
        &client_token.display().to_string(),
        "--json",
        "guests",
        "list",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(count(&String::from_utf8_lossy(&out.stdout)), 0);
    let out = cli(&["--json", "guests", "list"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("401") || err.contains("authentication required"),
        "{err}"
    );
    let out = cli(&["--token-file", "/nonexistent/token", "guests", "list"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn sighup_reloads_the_token_file_and_a_broken_file_keeps_the_old_tokens() {
    let (_dir, _fake, agent, tokens) = setup_with_tokens("auth-hup").await;
    let url = format!("{}/guests", agent.url());
    assert_eq!(request("GET", &url, Some(RW), None).await.0, 200);

    std::fs::write(&tokens, format!("{NEW}\n")).expect("tokens");
    hup(&agent);
    let reloaded =
        wait_until(|| async { request("GET", &url, Some(NEW), None).await.0 == 200 }).await;
    assert!(reloaded, "the new token is accepted after SIGHUP");
    assert_eq!(
        request("GET", &url, Some(RW), None).await.0,
        401,
        "the removed token is refused"
    );

    // A broken file (a short token) is not taken: the tokens in force stay.
    std::fs::write(&tokens, "short\n").expect("tokens");
    hup(&agent);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(request("GET", &url, Some(NEW), None).await.0, 200);
    assert_eq!(request("GET", &url, Some("short"), None).await.0, 401);
}

#[test]
fn an_unusable_token_file_stops_the_agent_at_start() {
    let dir = TempDir::new("auth-bad");
    let config = dir.path().join("agent.json");
    std::fs::write(&config, fake::config(1, &[]).to_string()).expect("config");
    let tokens = dir.path().join("tokens");
    for (content, expect) in [
        (format!("{RW}\ntiny\n"), ":2: token too short"),
        ("# only comments\n".to_string(), "no token"),
    ] {
        std::fs::write(&tokens, content).expect("tokens");
        let out = Command::new(std::path::PathBuf::from(env!(
            "CARGO_BIN_EXE_mistify-agent"
        )))
        .args(["-a", "127.0.0.1:1", "-c"])
        .arg(&config)
        .arg("--db-path")
        .arg(dir.path().join("agent.redb"))
        .arg("--token-file")
        .arg(&tokens)
        .output()
        .expect("agent");
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expect), "{err}");
    }
    assert!(
        !dir.path().join("agent.redb").exists(),
        "no store was created"
    );
}

fn hup(agent: &Daemon) {
    let status = Command::new("kill")
        .args(["-HUP", &agent.pid().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

async fn wait_until<F, Fut>(mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..50 {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// A sub-agent started with `--token-file` answers the agent that has the service's
/// `token` in agent.json, and refuses (401) the one without: that job ends `Error` with
/// the reason, and no guest call reached the sub-agent's methods.
#[tokio::test]
async fn a_service_token_reaches_a_sub_agent_that_requires_it() {
    const SUB: &str = "sub-agent-token-0123456789";
    let dir = TempDir::new("auth-subagent");
    let token_file = dir.path().join("sub-token");
    std::fs::write(&token_file, format!("# shared with the agent\n{SUB}\n")).expect("token");
    let port = mistify_e2e::free_port();
    let _sub = Daemon::start(
        &mistify_e2e::example("test-rpc-service"),
        &[
            "--port".into(),
            port.to_string(),
            "--log-level".into(),
            "warn".into(),
            "--token-file".into(),
            token_file.display().to_string(),
        ],
        port,
    );
    let mut with_token = test_config(port);
    for service in with_token["services"]
        .as_object_mut()
        .expect("services")
        .values_mut()
    {
        service["token"] = SUB.into();
    }
    let create = |agent: &Daemon| {
        let client = mistify_client::Client::new(&agent.url()).expect("client");
        async move {
            let accepted = client
                .create_guest(&mistify_client::Guest {
                    memory: 256,
                    cpu: 1,
                    ..Default::default()
                })
                .await
                .expect("create");
            let job = wait_done(&client, accepted.job_id.as_deref().expect("job id")).await;
            (accepted.body.id, job)
        }
    };
    let good = agent(&with_token, dir.path(), &dir.path().join("good.redb"), &[]);
    let (id, job) = create(&good).await;
    assert_eq!(job.status, mistify_client::JobStatus::Complete, "{job:?}");
    // A Stream stage carries the token too.
    let download = |agent: &Daemon| format!("{}/guests/{id}/snapshots/s1/download", agent.url());
    let (status, _, body) = raw("GET", &download(&good), None).await;
    assert_eq!(status, 200, "{body}");

    let bad = agent(
        &test_config(port),
        dir.path(),
        &dir.path().join("bad.redb"),
        &[],
    );
    let (bad_id, job) = create(&bad).await;
    assert_eq!(job.status, mistify_client::JobStatus::Error, "{job:?}");
    assert!(job.message.contains("401"), "{job:?}");
    // The sub-agent's 401 to a stream is the agent's fault, not the caller's: 502
    // naming the service, never a 401 that would send the operator after their token.
    let url = format!("{}/guests/{bad_id}/snapshots/s1/download", bad.url());
    let (status, _, body) = raw("GET", &url, None).await;
    assert_eq!(status, 502, "{body}");
    assert!(
        body.contains("\"testDownload\"")
            && body.contains("refused the agent")
            && body.contains("401"),
        "{body}"
    );

    // A token that is not printable ASCII is refused at load, naming the service.
    let mut broken = test_config(port);
    broken["services"]["test"]["token"] = "two words".into();
    let file = dir.path().join("broken.json");
    std::fs::write(&file, broken.to_string()).expect("config");
    let out = Command::new(std::path::PathBuf::from(env!(
        "CARGO_BIN_EXE_mistify-agent"
    )))
    .args(["--check-config", "-c"])
    .arg(&file)
    .output()
    .expect("agent");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("service test: token"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_client_certificates_lets_in_only_the_ca_s_clients() {
    use mistify_client::{Client, TlsFiles};
    if mistify_e2e::skipped("supervisor-tls") {
        return;
    }
    let dir = TempDir::new("agent-tls");
    let pki = mistify_e2e::pki::make(dir.path());
    let p = |f: &std::path::Path| f.display().to_string();
    let agent = agent(
        &test_config(mistify_e2e::free_port()),
        dir.path(),
        &dir.path().join("agent.redb"),
        &[
            "--tls-cert",
            &p(&pki.server_cert),
            "--tls-key",
            &p(&pki.server_key),
            "--client-ca",
            &p(&pki.ca),
        ],
    );
    let https = agent.url().replace("http://", "https://");
    let files =
        |ca: &std::path::Path, cert: Option<(&std::path::Path, &std::path::Path)>| TlsFiles {
            ca: Some(ca.to_path_buf()),
            cert: cert.map(|c| c.0.to_path_buf()),
            key: cert.map(|c| c.1.to_path_buf()),
        };
    let good = Client::new(&https)
        .unwrap()
        .with_tls(&files(&pki.ca, Some((&pki.client_cert, &pki.client_key))))
        .unwrap();
    assert!(good.list_guests().await.unwrap().is_empty());
    for (what, tls) in [
        ("no client certificate", files(&pki.ca, None)),
        (
            "a client certificate of another CA",
            files(
                &pki.ca,
                Some((&pki.other_client_cert, &pki.other_client_key)),
            ),
        ),
        (
            "a client trusting another CA",
            files(&pki.other_ca, Some((&pki.client_cert, &pki.client_key))),
        ),
    ] {
        let client = Client::new(&https).unwrap().with_tls(&tls).unwrap();
        let err = client.list_guests().await.expect_err(what);
        assert_eq!(
            err.status(),
            None,
            "{what}: refused in the handshake, not by HTTP: {err}"
        );
    }
    let plain = Client::new(&agent.url()).unwrap();
    assert!(
        plain.list_guests().await.is_err(),
        "plain HTTP to the HTTPS port"
    );

    // The CLI: the same files as flags.
    let cli = |extra: &[&str]| {
        let mut args = vec!["--agent".to_string(), https.clone(), "--json".into()];
        args.extend(extra.iter().map(|s| s.to_string()));
        args.extend(["guests".into(), "list".into()]);
        Command::new(binary("mistify"))
            .args(&args)
            .output()
            .expect("mistify")
    };
    let ok = cli(&[
        "--ca-cert",
        &p(&pki.ca),
        "--client-cert",
        &p(&pki.client_cert),
        "--client-key",
        &p(&pki.client_key),
    ]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let refused = cli(&["--ca-cert", &p(&pki.ca)]);
    assert!(!refused.status.success());
    let half = cli(&[
        "--ca-cert",
        &p(&pki.ca),
        "--client-cert",
        &p(&pki.client_cert),
    ]);
    assert!(!half.status.success());
    assert!(
        String::from_utf8_lossy(&half.stderr).contains("needs its key"),
        "{}",
        String::from_utf8_lossy(&half.stderr)
    );
}

#[test]
fn unusable_tls_files_stop_the_agent_naming_the_file() {
    let dir = TempDir::new("agent-tls-bad");
    let config = dir.path().join("agent.json");
    std::fs::write(&config, r#"{"services": {}, "actions": {}}"#).unwrap();
    let not_pem = dir.path().join("not.pem");
    std::fs::write(&not_pem, "hello\n").unwrap();
    for args in [
        vec![
            "--tls-cert",
            "/nonexistent/cert.pem",
            "--tls-key",
            "/nonexistent/key.pem",
        ],
        vec![
            "--tls-cert",
            not_pem.to_str().unwrap(),
            "--tls-key",
            not_pem.to_str().unwrap(),
        ],
        vec!["--tls-cert", not_pem.to_str().unwrap()],
        vec!["--client-ca", not_pem.to_str().unwrap()],
    ] {
        let out = Command::new(std::path::PathBuf::from(env!(
            "CARGO_BIN_EXE_mistify-agent"
        )))
        .arg("-c")
        .arg(&config)
        .args(&args)
        .arg("--check-config")
        .output()
        .expect("run");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(args[1]) || stderr.contains("--tls-"),
            "{args:?}: {stderr}"
        );
    }
}
