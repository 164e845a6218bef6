//! A Go agent's SQLite database: refused as a store with a clear message, imported by
//! `mistify-agent import-go-db`, then served.

mod common;

use std::process::Command;

use common::{agent, fake, TempDir};
use mistify_client::{Client, JobStatus};

/// A database as the Go agent (kvite on SQLite) wrote it.
fn go_database(path: &std::path::Path) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS 'mistify_agent' (key text not null, bucket text not null, value blob not null);
         CREATE UNIQUE INDEX IF NOT EXISTS 'mistify_agent_kvite_key_index' ON 'mistify_agent' (key, bucket);",
    )
    .unwrap();
    let put = |key: &str, bucket: &str, value: &[u8]| {
        conn.execute(
            "INSERT OR REPLACE INTO mistify_agent (key, value, bucket) VALUES (?1, ?2, ?3)",
            rusqlite::params![key, value, bucket],
        )
        .unwrap();
    };
    put(
        "3d2e0c52-4d8f-4b1a-9a43-2f5cbe1e0a01",
        "guests",
        br#"{"id":"3d2e0c52-4d8f-4b1a-9a43-2f5cbe1e0a01","type":"kvm","state":"running","memory":512,"cpu":1,"metadata":{"owner":"ops"}}"#,
    );
    put("bad", "guests", b"{not json");
    put("rack", "hypervisor-metadata", b"r9");
    put(
        "",
        "guest_jobs",
        br#"[{"ID":"0f9c8a52-6a1e-4d3c-9d7f-4e1f2b3c4d5e","GuestID":"3d2e0c52-4d8f-4b1a-9a43-2f5cbe1e0a01","Action":"create","QueuedAt":"2015-06-01T12:00:00.1Z","StartedAt":"2015-06-01T12:00:00.2Z","UpdatedAt":"2015-06-01T12:00:01Z","Status":"Complete","Message":""},
             {"ID":"1f9c8a52-6a1e-4d3c-9d7f-4e1f2b3c4d5e","GuestID":"3d2e0c52-4d8f-4b1a-9a43-2f5cbe1e0a01","Action":"reboot","QueuedAt":"2015-06-01T13:00:00Z","StartedAt":"0001-01-01T00:00:00Z","UpdatedAt":"2015-06-01T13:00:00Z","Status":"Queued","Message":""}]"#,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_go_database_is_refused_then_imported() {
    let dir = TempDir::new("import");
    let go_db = dir.path().join("mistify-agent.db");
    go_database(&go_db);
    let bin = std::path::PathBuf::from(env!("CARGO_BIN_EXE_mistify-agent"));
    let config = dir.path().join("agent.json");
    std::fs::write(&config, fake::config(1, &[]).to_string()).unwrap();

    let refused = Command::new(&bin)
        .args(["-a", "127.0.0.1:0", "-c"])
        .arg(&config)
        .arg("--db-path")
        .arg(&go_db)
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("Go mistify-agent") && stderr.contains("import-go-db"),
        "{stderr}"
    );

    let store = dir.path().join("agent.redb");
    let out = Command::new(&bin)
        .arg("--db-path")
        .arg(&store)
        .arg("import-go-db")
        .arg(&go_db)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("imported 1 guests, 1 metadata keys, 2 jobs"),
        "{stdout}"
    );
    assert!(stdout.contains("skipped: guest \"bad\""), "{stdout}");

    let control = fake::Control::default();
    let server = fake::start(control).await;
    let agent = agent(
        &fake::config(server.addr().port(), &[]),
        dir.path(),
        &store,
        &[],
    );
    let client = Client::new(&agent.url()).unwrap();
    let guest = client
        .get_guest("3d2e0c52-4d8f-4b1a-9a43-2f5cbe1e0a01")
        .await
        .unwrap();
    assert_eq!(
        (
            guest.state.as_str(),
            guest.memory,
            guest.metadata["owner"].as_str()
        ),
        ("running", 512, "ops")
    );
    assert_eq!(client.get_metadata().await.unwrap()["rack"], "r9");
    let jobs = client.list_jobs(None).await.unwrap();
    assert_eq!(jobs.len(), 2);
    assert_eq!(
        (jobs[0].action.as_str(), jobs[0].status),
        ("reboot", JobStatus::Error)
    );
    assert_eq!(jobs[0].message, mistify_agent::import::UNFINISHED);
    assert_eq!(jobs[1].status, JobStatus::Complete);
    // The imported guest has a runner: actions work.
    let a = client
        .guest_action(&guest.id, mistify_client::GuestAction::Reboot)
        .await
        .unwrap();
    assert_eq!(
        common::wait_done(&client, a.job_id.as_deref().unwrap())
            .await
            .status,
        JobStatus::Complete
    );
}
