//! The CLI against a live daemon.

mod common;

use common::*;
use mistify_supervisor::api::State;
use serde_json::json;
use std::process::Command;

fn cli(sup: &Sup, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(common::cli())
        .args(["--addr", &sup.url])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", common::cli().display()));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_commands_against_a_live_daemon() {
    let sup = Sup::start(
        "cli",
        &[
            (
                "a.json",
                m(
                    json!({"name": "web:a", "description": "the web", "command": ["sh", "-c", "echo hi; exec sleep 3600"], "provides": ["www"]}),
                ),
            ),
            (
                "b.json",
                m(json!({"name": "bad", "command": ["sh", "-c", "exit 4"]})),
            ),
            (
                "c.json",
                m(json!({"name": "zed", "command": ["sleep", "3600"], "conflicts": ["web"]})),
            ),
        ],
    );
    sup.until_state("web:a", State::Running, T).await;
    sup.until_state("bad", State::Failed, T).await;

    let (code, out, _) = cli(&sup, &["list"]);
    assert_eq!(code, 0);
    assert_eq!(out, "bad\nweb:a\nzed\n");
    let (code, out2, _) = cli(&sup, &["services"]);
    assert_eq!((code, out2), (0, out));

    let (code, out, _) = cli(&sup, &["status"]);
    assert_eq!(code, 0);
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("NAME"));
    // Failed first, then enabled, then by name.
    assert!(
        lines[1].starts_with("bad")
            && lines[1].contains("failed")
            && lines[1].contains("Faulted: exit status 4"),
        "{out}"
    );
    assert!(
        lines[2].starts_with("web:a") && lines[2].contains("running"),
        "{out}"
    );
    assert!(
        lines[3].starts_with("zed") && lines[3].contains("disabled"),
        "{out}"
    );

    let (code, out, _) = cli(&sup, &["status", "--json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
    assert_eq!(v.as_array().map(|a| a.len()), Some(3));

    let (code, out, _) = cli(&sup, &["info", "web:a"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("Name: web:a")
            && out.contains("Desc: the web")
            && out.contains("Provides: www"),
        "{out}"
    );

    let (code, _, err) = cli(&sup, &["enable", "zed"]);
    assert_eq!(code, 1);
    assert_eq!(err.trim(), "Error: Conflicting service enabled");
    let (code, _, err) = cli(&sup, &["enable", "nope"]);
    assert_eq!((code, err.trim()), (1, "Error: Service not found"));

    let (code, out, _) = cli(&sup, &["disable", "web:a"]);
    assert_eq!((code, out.as_str()), (0, ""));
    assert_eq!(
        sup.client.service("web:a").await.map(|s| s.state).ok(),
        Some(State::Disabled)
    );
    assert_eq!(cli(&sup, &["enable", "web:a"]).0, 0);
    sup.until_state("web:a", State::Running, T).await;
    assert_eq!(cli(&sup, &["restart", "web:a"]).0, 0);
    assert_eq!(cli(&sup, &["clear", "bad"]).0, 0);

    let (code, out, _) = cli(&sup, &["log", "web:a"]);
    assert_eq!(code, 0);
    assert!(
        out.lines().any(|l| l.ends_with("[web:a] stdout> hi")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.ends_with("[web:a] Restarting service web:a")),
        "{out}"
    );
    let (code, out, _) = cli(&sup, &["log"]);
    assert_eq!(code, 0);
    assert!(out.contains("*** Govisor starting monitoring: govisord ***"));

    // Unknown subcommands are an error (govisor exited 0).
    let (code, _, _) = cli(&sup, &["frobnicate"]);
    assert_ne!(code, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_follow_prints_new_lines() {
    let dir = mistify_e2e::TempDir::new("follow");
    let go = dir.path().join("go");
    let sup = Sup::start(
        "follow",
        &[(
            "t.json",
            m(
                json!({"name": "t", "command": ["sh", "-c", format!("echo first; while [ ! -f {g} ]; do sleep 0.05; done; echo second; exec sleep 3600", g = go.display())]}),
            ),
        )],
    );
    sup.until_state("t", State::Running, T).await;
    let mut child = Command::new(common::cli())
        .args(["--addr", &sup.url, "log", "-f", "t"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    std::fs::write(&go, "").unwrap_or_else(|e| panic!("{e}"));
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    let _ = child.kill();
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.matches("stdout> first").count(), 1, "{text}");
    assert_eq!(text.matches("stdout> second").count(), 1, "{text}");
}
