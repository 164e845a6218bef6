//! The recorded exchanges of the Go cbootstrapd (`tests/fixtures/wire/lochness-cbootstrapd.json`)
//! replayed against ours: a fresh etcd holding the recording's seed, cbootstrapd started
//! as recorded (`-b http://ipxe.test:8888`, an empty `-i`, `-v`/`-o` at their defaults),
//! `replay.py` with `kv_addr` set to our `-k`. Every case passes as recorded.

mod common;

#[test]
fn cbootstrapd_replays_the_recorded_exchanges() {
    let Some(boot) = common::Boot::start(&[]) else {
        return;
    };
    let fx: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(common::fixture()).unwrap()).unwrap();
    let total = fx["cases"].as_array().map(Vec::len).unwrap_or(0);
    assert!(total > 0);
    let (ok, out) = mistify_e2e::replay(&[
        common::fixture().display().to_string(),
        "--base".into(),
        boot.daemon.url(),
        "--var".into(),
        format!("kv_addr={}", boot.etcd.url),
        "--var".into(),
        format!("base_url={}", common::BASE),
        "--verbose".into(),
    ]);
    println!("{out}");
    let last = out.lines().last().unwrap_or("");
    assert_eq!(last, format!("{total} passed, 0 failed"), "{out}");
    assert!(ok, "{out}");
    assert_eq!(
        out.lines().filter(|l| l.starts_with("PASS")).count(),
        total,
        "every case as recorded: {out}"
    );
}
