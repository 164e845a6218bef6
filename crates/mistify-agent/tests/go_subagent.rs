//! A Go sub-agent behind our agent: the recorded replies of the Go test-rpc-service
//! (pure gorilla/rpc v1: no `jsonrpc` key, gzip bodies, HTTP 400 text for unknown
//! methods) serve the REST triggers of `rpc-envelope.json`, and what our agent sends
//! must match what the Go agent sent.

mod common;

use common::{agent, TempDir};
use mistify_e2e::recorded::{fixture, GoSubagent};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_go_subagent_behind_our_agent() {
    if mistify_e2e::skipped("replay") {
        return;
    }
    let go = GoSubagent::start().await;
    let mut config = fixture()["agent_config"].clone();
    for service in config["services"]
        .as_object_mut()
        .expect("services")
        .values_mut()
    {
        service["port"] = go.port.into();
    }
    let dir = TempDir::new("go-subagent");
    let agent = agent(&config, dir.path(), &dir.path().join("agent.redb"), &[]);
    let file = mistify_e2e::fixtures_dir()
        .join("wire")
        .join("rpc-envelope.json");
    let args = [
        file.display().to_string(),
        "--base".into(),
        agent.url(),
        "--allow-fixes".into(),
        "--verbose".into(),
    ];
    // replay.py blocks; the recorded sub-agent must keep serving meanwhile.
    let (ok, output) = tokio::task::spawn_blocking(move || mistify_e2e::replay(&args))
        .await
        .unwrap();
    assert!(ok, "{output}");
    assert!(
        output.lines().any(|l| l == "8 passed, 0 failed"),
        "{output}"
    );
    let problems = go.problems();
    assert!(
        problems.is_empty(),
        "our agent's requests differ from the Go agent's: {problems:#?}"
    );
}
