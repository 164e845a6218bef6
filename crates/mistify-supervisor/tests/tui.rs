//! The TUI on ratatui's TestBackend, fed by the long-poll of a live daemon.

mod common;

use common::*;
use mistify_supervisor::api::State;
use mistify_supervisor_cli::tui::{dispatch, watch_services, App, Command, Screen, Update};
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;
use serde_json::json;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

fn screen(t: &Terminal<TestBackend>) -> Vec<String> {
    let buf = t.backend().buffer();
    let w = buf.area.width as usize;
    buf.content
        .chunks(w)
        .map(|row| row.iter().map(|c| c.symbol()).collect::<String>())
        .collect()
}

fn row<'a>(lines: &'a [String], name: &str) -> Option<&'a String> {
    lines.iter().find(|l| l.starts_with(name))
}

async fn until_screen<F: Fn(&[String]) -> bool>(
    app: &mut App,
    term: &mut Terminal<TestBackend>,
    rx: &mut mpsc::UnboundedReceiver<Update>,
    what: &str,
    pred: F,
) -> Vec<String> {
    let deadline = Instant::now() + T;
    loop {
        term.draw(|f| app.draw(f)).unwrap_or_else(|e| panic!("{e}"));
        let lines = screen(term);
        if pred(&lines) {
            return lines;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "{what} never shown:\n{}", lines.join("\n"));
        if let Ok(Some(u)) = tokio::time::timeout(left, rx.recv()).await {
            app.apply(u);
        }
    }
}

fn key(c: KeyCode) -> KeyEvent {
    KeyEvent::new(c, KeyModifiers::NONE)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_service_changes_state_on_screen_through_the_long_poll() {
    let sup = Sup::start(
        "tui",
        &[
            (
                "v.json",
                m(json!({"name": "victim", "command": ["sleep", "3600"], "failOnExit": true})),
            ),
            (
                "o.json",
                m(json!({"name": "other", "command": ["sleep", "3600"]})),
            ),
        ],
    );
    let pid = sup
        .until_state("victim", State::Running, T)
        .await
        .pid
        .unwrap_or(0);
    sup.until_state("other", State::Running, T).await;

    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut refresher = tokio::spawn(watch_services(sup.client.clone(), tx.clone()));
    let mut app = App::new(&sup.url);
    let mut term = Terminal::new(TestBackend::new(100, 12)).unwrap_or_else(|e| panic!("{e}"));
    let lines = until_screen(&mut app, &mut term, &mut rx, "victim running", |l| {
        row(l, "victim").is_some_and(|r| r.contains("running"))
    })
    .await;
    assert!(lines[0].contains(&sup.url));
    assert!(lines[1].contains("2 Services"), "{}", lines[1]);

    kill(pid, "KILL");
    let lines = until_screen(&mut app, &mut term, &mut rx, "victim failed", |l| {
        row(l, "victim")
            .is_some_and(|r| r.contains("failed") && r.contains("Faulted: signal: killed"))
    })
    .await;
    // Failed rows come first; the status bar counts the fault.
    assert!(lines[2].starts_with("victim"), "{}", lines.join("\n"));
    assert!(lines[1].contains("1 Faulted"), "{}", lines[1]);

    // Keys: select the first row, clear it; the result shows in the status bar.
    assert_eq!(app.on_key(key(KeyCode::Down)), None);
    assert_eq!(app.selected.as_deref(), Some("victim"));
    term.draw(|f| app.draw(f)).unwrap_or_else(|e| panic!("{e}"));
    assert!(screen(&term)
        .last()
        .is_some_and(|k| k.contains("[C] Clear")));
    let cmd = app.on_key(key(KeyCode::Char('c')));
    assert_eq!(cmd, Some(Command::Action("clear", "victim".into())));
    let mut client = sup.client.clone();
    let mut log_task = None;
    if let Some(cmd) = cmd {
        dispatch(cmd, &mut client, &tx, &mut log_task, &mut refresher);
    }
    until_screen(
        &mut app,
        &mut term,
        &mut rx,
        "clear result and running again",
        |l| {
            l[1].contains("clear victim: done")
                && row(l, "victim").is_some_and(|r| r.contains("running"))
        },
    )
    .await;

    // The log panel follows new lines.
    let cmd = app.on_key(key(KeyCode::Char('l')));
    assert_eq!(app.screen, Screen::Log);
    if let Some(cmd) = cmd {
        dispatch(cmd, &mut client, &tx, &mut log_task, &mut refresher);
    }
    until_screen(&mut app, &mut term, &mut rx, "log panel", |l| {
        l[0].contains("Log for victim")
            && l.iter()
                .any(|r| r.contains("[victim] Clearing fault on victim"))
    })
    .await;
    refresher.abort();
    if let Some(t) = log_task {
        t.abort();
    }
    let _ = Duration::ZERO;
}

#[test]
fn unauthorized_switches_to_the_login_screen() {
    use mistify_supervisor_cli::ClientError;
    let mut app = App::new("http://127.0.0.1:1");
    app.apply(Update::Error(ClientError::Api {
        code: 401,
        message: "401 Unauthorized".into(),
    }));
    assert_eq!(app.screen, Screen::Login);
    let mut term = Terminal::new(TestBackend::new(60, 8)).unwrap_or_else(|e| panic!("{e}"));
    for c in "ops".chars() {
        app.on_key(key(KeyCode::Char(c)));
    }
    app.on_key(key(KeyCode::Tab));
    for c in "pw".chars() {
        app.on_key(key(KeyCode::Char(c)));
    }
    term.draw(|f| app.draw(f)).unwrap_or_else(|e| panic!("{e}"));
    let lines = screen(&term);
    assert!(lines[1].contains("Authentication Required"));
    assert!(lines.iter().any(|l| l.contains("Username:  ops")));
    assert!(lines.iter().any(|l| l.contains("Password:  **_")));
    let cmd = app.on_key(key(KeyCode::Enter));
    assert_eq!(cmd, Some(Command::Login("ops".into(), "pw".into())));
    assert_eq!(app.screen, Screen::Main);
}

/// A service as the daemon describes it, for tests without a daemon.
fn service(name: &str, enabled: bool) -> mistify_supervisor::api::ServiceInfo {
    serde_json::from_value(json!({
        "name": name, "description": "", "enabled": enabled, "running": enabled,
        "failed": false, "provides": [], "depends": [], "conflicts": [],
        "status": "Healthy", "tstamp": "2024-05-01T10:00:00Z", "serial": "1",
        "state": if enabled { "running" } else { "disabled" },
    }))
    .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn restart_and_disable_ask_for_confirmation() {
    let mut app = App::new("http://127.0.0.1:1");
    app.apply(Update::Services(vec![service("web", true)]));
    let mut term = Terminal::new(TestBackend::new(80, 8)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(app.on_key(key(KeyCode::Down)), None);
    for (letter, what, verb) in [('r', "restart", "Restart"), ('D', "disable", "Disable")] {
        // Asked, then confirmed with y.
        assert_eq!(app.on_key(key(KeyCode::Char(letter))), None, "{what}");
        term.draw(|f| app.draw(f)).unwrap_or_else(|e| panic!("{e}"));
        let lines = screen(&term);
        assert!(
            lines[1].contains(&format!("{verb} web? [y/N]")),
            "{}",
            lines[1]
        );
        assert!(lines[7].contains("[Y] Yes"), "{}", lines[7]);
        assert_eq!(
            app.on_key(key(KeyCode::Char('y'))),
            Some(Command::Action(what, "web".into()))
        );
        // Asked, then any other key cancels (and does nothing else).
        assert_eq!(app.on_key(key(KeyCode::Char(letter))), None);
        assert_eq!(app.on_key(key(KeyCode::Char('q'))), None);
        assert!(!app.quit, "the cancelling key is not a command");
        term.draw(|f| app.draw(f)).unwrap_or_else(|e| panic!("{e}"));
        let lines = screen(&term);
        assert!(
            lines[1].contains(&format!("{what} web: cancelled")),
            "{}",
            lines[1]
        );
        assert_eq!(app.on_key(key(KeyCode::Enter)), None);
        assert_eq!(app.screen, Screen::Info, "keys work again");
        app.on_key(key(KeyCode::Esc));
    }
    // Enable and clear act at once.
    app.apply(Update::Services(vec![service("web", false)]));
    assert_eq!(
        app.on_key(key(KeyCode::Char('e'))),
        Some(Command::Action("enable", "web".into()))
    );
    assert_eq!(
        app.on_key(key(KeyCode::Char('c'))),
        Some(Command::Action("clear", "web".into()))
    );
}

#[test]
fn long_log_lines_wrap_and_the_tail_stays_in_view() {
    use mistify_supervisor::api::{Hex, LogRecord, Time};
    let mut app = App::new("http://127.0.0.1:1");
    app.on_key(key(KeyCode::Char('l')));
    assert_eq!(app.screen, Screen::Log);
    let long = format!(
        "[svc] stdout> {{\"msg\":\"{}\",\"end\":\"TAIL\"}}",
        "x".repeat(150)
    );
    let record = |id: u64, text: &str| LogRecord {
        id: Hex(id),
        time: Time::now(),
        text: text.to_string(),
    };
    // 1 + 10 one-row records, then one of 4 rows (60 columns): 15 rows, 7 on screen.
    let mut records = vec![record(1, "[svc] first")];
    records.extend((1..=10).map(|i| record(1 + i, &format!("[svc] line {i}"))));
    records.push(record(12, &long));
    app.apply(Update::Log(None, records));
    let mut term = Terminal::new(TestBackend::new(60, 10)).unwrap_or_else(|e| panic!("{e}"));
    term.draw(|f| app.draw(f)).unwrap_or_else(|e| panic!("{e}"));
    let lines = screen(&term);
    let body = &lines[2..9];
    // The tail: the whole long record, its continued rows indented, under line 10.
    assert!(body[0].contains("[svc] line 8"), "{lines:#?}");
    assert!(body[2].contains("[svc] line 10"), "{lines:#?}");
    assert!(body[3].contains("stdout> {\"msg\""), "{lines:#?}");
    assert!(body[4].starts_with("  xxx"), "{lines:#?}");
    assert!(body[6].contains("\"end\":\"TAIL\"}"), "{lines:#?}");
    // Scrolling back stops at the top (8 rows back); End follows the tail again.
    for _ in 0..50 {
        app.on_key(key(KeyCode::Up));
    }
    assert_eq!(app.log_back, 8);
    term.draw(|f| app.draw(f)).unwrap_or_else(|e| panic!("{e}"));
    let lines = screen(&term);
    assert!(lines[2].contains("[svc] first"), "{lines:#?}");
    assert!(lines[8].contains("[svc] line 6"), "{lines:#?}");
    app.on_key(key(KeyCode::Down));
    assert_eq!(app.log_back, 7);
    app.on_key(key(KeyCode::End));
    assert_eq!(app.log_back, 0);
    assert_eq!(
        mistify_supervisor_cli::tui::wrap("abcdefgh", 4),
        ["abcd", "  ef", "  gh"]
    );
    assert_eq!(mistify_supervisor_cli::tui::wrap("a\tb", 10), ["a b"]);
}
