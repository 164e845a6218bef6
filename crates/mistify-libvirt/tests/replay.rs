//! The recorded exchanges of the Go original on the same test driver
//! (`tests/fixtures/wire/libvirt-rpc.json`) replayed against our binary.

use mistify_e2e::{fixtures_dir, free_port, replay, Daemon};

#[test]
fn recorded_exchanges_answer_as_the_original_or_as_the_documented_fix() {
    if mistify_e2e::skipped("libvirt") || mistify_e2e::skipped("replay") {
        return;
    }
    let port = free_port();
    let args = vec![
        "--uri".to_string(),
        "test:///default".to_string(),
        "--port".to_string(),
        port.to_string(),
    ];
    let daemon = Daemon::start(
        std::path::Path::new(env!("CARGO_BIN_EXE_mistify-libvirt")),
        &args,
        port,
    );
    let fixture = fixtures_dir().join("wire").join("libvirt-rpc.json");
    let (_ok, output) = replay(&[
        fixture.to_string_lossy().into_owned(),
        "--subagent".into(),
        daemon.url(),
        "--allow-fixes".into(),
    ]);
    println!("{output}");
    let last = output.lines().last().unwrap_or_default();
    assert!(last.contains("passed"), "no summary line: {output}");
    assert!(last.ends_with(" 0 failed"), "{output}");
    // Every exchange was run: 84 in the file.
    let counted = output
        .lines()
        .filter(|l| l.starts_with("PASS") || l.starts_with("QUIRK-FIXED") || l.starts_with("FAIL"))
        .count();
    assert_eq!(counted, 84, "{output}");
}
