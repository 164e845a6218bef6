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

/// Replays `fixture` against a fresh agent with `test-rpc-service` behind it.
fn replay_against_fresh_agent(fixture: &str) {
    if mistify_e2e::skipped("replay") {
        return;
    }
    let dir = TempDir::new("replay");
    let fake = fake_subagent();
    let agent = agent(
        &test_config(fake.port),
        dir.path(),
        &dir.path().join("agent.redb"),
        &[],
    );
    replay(fixture, &agent.url());
}

#[test]
fn agent_rest_fixture_replays() {
    replay_against_fresh_agent("agent-rest.json");
}

#[test]
fn rpc_envelope_triggers_replay() {
    replay_against_fresh_agent("rpc-envelope.json");
}
