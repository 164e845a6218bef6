//! The recorded Go traffic replayed against our agent with our fake sub-agent behind it:
//! every case of `agent-rest.json` (original behaviour or a documented fix), and the
//! REST triggers of `rpc-envelope.json`.

mod common;

use common::{agent, fake_subagent, test_config, TempDir};

fn replay(fixture: &str, base: &str) {
    let file = mistify_e2e::fixtures_dir().join("wire").join(fixture);
    let (ok, output) = mistify_e2e::replay(&[
        file.display().to_string(),
        "--base".into(),
        base.to_string(),
        "--allow-fixes".into(),
        "--verbose".into(),
    ]);
    assert!(ok, "{fixture}:\n{output}");
    assert!(
        output
            .lines()
            .last()
            .is_some_and(|l| l.ends_with(" 0 failed")),
        "{fixture}:\n{output}"
    );
}

#[test]
fn agent_rest_fixture_replays() {
    if mistify_e2e::skipped("replay") {
        return;
    }
    let dir = TempDir::new("replay-rest");
    let fake = fake_subagent();
    let agent = agent(
        &test_config(fake.port),
        dir.path(),
        &dir.path().join("agent.redb"),
        &[],
    );
    replay("agent-rest.json", &agent.url());
}

#[test]
fn rpc_envelope_triggers_replay() {
    if mistify_e2e::skipped("replay") {
        return;
    }
    let dir = TempDir::new("replay-rpc");
    let fake = fake_subagent();
    let agent = agent(
        &test_config(fake.port),
        dir.path(),
        &dir.path().join("agent.redb"),
        &[],
    );
    replay("rpc-envelope.json", &agent.url());
}
