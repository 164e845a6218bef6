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

/// The CLI binary without a daemon (commands that need none, or fail before one).
fn run_alone(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(common::cli())
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", common::cli().display()));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_lines_prints_the_last_n_and_follows_after_them() {
    let dir = mistify_e2e::TempDir::new("log-n");
    let go = dir.path().join("go");
    let sup = Sup::start(
        "log-n",
        &[(
            "t.json",
            m(
                json!({"name": "t", "command": ["sh", "-c", format!("for i in 1 2 3 4 5; do echo l$i; done; while [ ! -f {g} ]; do sleep 0.05; done; echo second; exec sleep 3600", g = go.display())]}),
            ),
        )],
    );
    sup.until(
        "t",
        T,
        |s| s.status == "Healthy", // the last line the start writes
    )
    .await;
    let deadline = std::time::Instant::now() + T;
    while !sup.log(Some("t")).await.iter().any(|l| l.ends_with("l5")) {
        assert!(std::time::Instant::now() < deadline, "no l5");
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    let (code, all, _) = cli(&sup, &["log", "t"]);
    assert_eq!(code, 0);
    let all: Vec<&str> = all.lines().collect();
    assert!(all.len() > 3, "{all:#?}");
    let (code, out, _) = cli(&sup, &["log", "t", "-n", "3"]);
    assert_eq!(code, 0);
    assert_eq!(out.lines().collect::<Vec<_>>(), all[all.len() - 3..]);
    let (code, out, _) = cli(&sup, &["log", "t", "--lines", "1000"]);
    assert_eq!((code, out.lines().count()), (0, all.len()));
    let (code, out, _) = cli(&sup, &["log", "t", "-n", "0"]);
    assert_eq!((code, out.as_str()), (0, ""));
    let (code, out, _) = cli(&sup, &["--json", "log", "t", "-n", "2"]);
    assert_eq!(code, 0);
    let texts: Vec<String> = out
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap_or_default()["text"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert_eq!(texts.len(), 2, "{out}");
    assert!(all[all.len() - 1].ends_with(&texts[1]), "{out}");
    assert_eq!(cli(&sup, &["log", "t", "-n", "x"]).0, 2);

    // -f -n 1: the last line, then the new ones.
    let mut child = Command::new(common::cli())
        .args(["--addr", &sup.url, "log", "t", "-f", "-n", "1"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    std::fs::write(&go, "").unwrap_or_else(|e| panic!("{e}"));
    let deadline = std::time::Instant::now() + T;
    while !sup
        .log(Some("t"))
        .await
        .iter()
        .any(|l| l.ends_with("second"))
    {
        assert!(std::time::Instant::now() < deadline, "no second");
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let _ = child.kill();
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert_eq!(lines[0], all[all.len() - 1], "{text}");
    assert!(lines[1].ends_with("[t] stdout> second"), "{text}");
}

#[test]
fn without_a_terminal_the_tui_is_refused_with_status_2() {
    for args in [&[][..], &["tui"], &["--addr", "http://127.0.0.1:1", "ui"]] {
        let (code, out, err) = run_alone(args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert_eq!(out, "", "{args:?}");
        assert_eq!(
            err, "mistify-supervisor: no terminal for the TUI; give a command (status, log, …)\n",
            "{args:?}"
        );
    }
}

#[test]
fn the_password_comes_from_the_flag_a_file_or_the_environment() {
    use clap::Parser;
    use mistify_supervisor_cli::cli::{credentials, Cli};
    let dir = mistify_e2e::TempDir::new("pass-file");
    let file = dir.path().join("pass");
    std::fs::write(&file, "from-file\r\nsecond line\n").unwrap_or_else(|e| panic!("{e}"));
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\nnot the first line\n").unwrap_or_else(|e| panic!("{e}"));
    let f = file.display().to_string();
    let env_all = |name: &str| match name {
        "MISTIFY_SUPERVISOR_USER" => Some("env-user".to_string()),
        "MISTIFY_SUPERVISOR_PASS" => Some("env-pass".to_string()),
        _ => None,
    };
    let no_env = |_: &str| None;
    let empty_env = |_: &str| Some(String::new());
    let creds = |args: &[&str], env: &dyn Fn(&str) -> Option<String>| {
        let cli =
            Cli::try_parse_from(std::iter::once("mistify-supervisor").chain(args.iter().copied()))
                .unwrap_or_else(|e| panic!("{e}"));
        credentials(&cli, env)
    };
    let pair = |u: &str, p: &str| Ok((Some(u.to_string()), Some(p.to_string())));
    // The command line first: --pass, else --pass-file; then the environment.
    assert_eq!(
        creds(&["--user", "u", "--pass", "p", "list"], &env_all),
        pair("u", "p")
    );
    assert_eq!(
        creds(&["--pass-file", &f, "list"], &env_all),
        pair("env-user", "from-file")
    );
    assert_eq!(creds(&["list"], &env_all), pair("env-user", "env-pass"));
    assert_eq!(
        creds(&["list", "--user", "u"], &env_all),
        pair("u", "env-pass")
    );
    assert_eq!(creds(&["list"], &no_env), Ok((None, None)));
    assert_eq!(creds(&["list"], &empty_env), Ok((None, None)));
    let e = creds(
        &["--pass-file", &empty.display().to_string(), "list"],
        &env_all,
    );
    assert!(
        e.as_ref()
            .is_err_and(|e| e.contains("no password on its first line")),
        "{e:?}"
    );
    let e = creds(&["--pass-file", "/nonexistent/pass", "list"], &env_all);
    assert!(
        e.as_ref()
            .is_err_and(|e| e.starts_with("--pass-file /nonexistent/pass: ")),
        "{e:?}"
    );
    // Both flags at once is a usage error.
    assert!(Cli::try_parse_from([
        "mistify-supervisor",
        "--pass",
        "p",
        "--pass-file",
        &f,
        "list"
    ])
    .is_err());
    // The binary: an unreadable file is a bad command line (2), before any request.
    let (code, _, err) = run_alone(&[
        "--addr",
        "http://127.0.0.1:1",
        "--pass-file",
        "/nonexistent/pass",
        "list",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.starts_with("Error: --pass-file /nonexistent/pass: "),
        "{err}"
    );
}

#[test]
fn completions_and_the_manual_page() {
    let (code, bash, err) = run_alone(&["completions", "bash"]);
    assert_eq!(code, 0, "{err}");
    assert!(bash.contains("_mistify__supervisor()"), "{bash}");
    assert!(bash.contains("complete -F _mistify__supervisor"), "{bash}");
    assert!(bash.contains("mistify-supervisor"), "{bash}");
    for word in ["status", "restart", "--pass-file", "--lines", "completions"] {
        assert!(bash.contains(word), "{word} is not completed");
    }
    let check = Command::new("bash")
        .args(["-n", "-c", &bash])
        .output()
        .unwrap_or_else(|e| panic!("bash: {e}"));
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let (code, zsh, _) = run_alone(&["completions", "zsh"]);
    assert_eq!(code, 0);
    assert!(zsh.starts_with("#compdef mistify-supervisor"), "{zsh}");
    let (code, fish, _) = run_alone(&["completions", "fish"]);
    assert_eq!(code, 0);
    assert!(fish.contains("complete -c mistify-supervisor"), "{fish}");
    assert_eq!(run_alone(&["completions", "tcsh"]).0, 2);

    let (code, man, err) = run_alone(&["man"]);
    assert_eq!(code, 0, "{err}");
    assert!(man.starts_with(".TH mistify-supervisor 1 "), "{man}");
    assert_eq!(
        man.matches(".ds Aq").count(),
        2,
        "one definition of Aq: {man}"
    );
    for section in [
        "NAME",
        "SYNOPSIS",
        "OPTIONS",
        "COMMANDS",
        "\"TERMINAL UI\"",
        "ENVIRONMENT",
        "\"EXIT STATUS\"",
    ] {
        assert!(
            man.contains(&format!(".SH {section}\n")),
            "no {section}: {man}"
        );
    }
    for text in [
        "mistify\\-supervisor log [OPTIONS] [SERVICE]",
        "\\-n, \\-\\-lines N",
        "MISTIFY_SUPERVISOR_PASS",
        "\\-\\-pass\\-file",
    ] {
        assert!(man.contains(text), "{text} is not in the page: {man}");
    }
    // It renders without a warning, when man(1) is there to render it.
    let rendered = Command::new("man")
        .args(["--warnings", "-l", "-"])
        .env("MANWIDTH", "80")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            if let Some(mut stdin) = child.stdin.take() {
                stdin.write_all(man.as_bytes())?;
            }
            child.wait_with_output()
        });
    match rendered {
        Ok(out) => {
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(String::from_utf8_lossy(&out.stderr), "", "man --warnings");
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(text.contains("MISTIFY_SUPERVISOR_USER"), "{text}");
        }
        Err(e) => eprintln!("SKIPPED rendering: man(1) cannot run here: {e}"),
    }
}
