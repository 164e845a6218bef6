//! The recorded exchanges of the Go daemons (`tests/fixtures/wire/lochness-*.json`)
//! replayed against ours: a fresh etcd holding the fixture's seed, the daemon started on
//! it, `replay.py --allow-fixes` with the overlay `tests/fixtures/lochness-fixes.json`
//! merged in (our deliberate answers to cases that carry no quirk marker, each a fixable
//! quirk with our fix id). Every case must pass: as recorded, or as the documented fix.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{Cluster, Which};
use serde_json::Value;

fn fixtures() -> PathBuf {
    mistify_e2e::fixtures_dir()
}

/// The fixture `file` with the overlay's entries for it merged in: each case named there
/// gets `quirk {id, fixable, summary, fixed}` (and its `capture` replaced when the entry
/// has one); the entry's `vars` are added. Checks that every entry names a case without
/// a quirk of its own and that its `compat` line is in docs/compat.md.
fn merged(file: &str) -> (Value, Vec<(String, String)>) {
    let read = |p: PathBuf| -> Value {
        let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    };
    let mut fx = read(fixtures().join("wire").join(file));
    let overlay = read(fixtures().join("lochness-fixes.json"));
    let compat =
        std::fs::read_to_string(mistify_e2e::workspace_root().join("docs").join("compat.md"))
            .expect("docs/compat.md");
    let mut fixed = Vec::new();
    let Some(entry) = overlay["files"].get(file) else {
        return (fx, fixed);
    };
    if let Some(vars) = entry["vars"].as_object() {
        for (k, v) in vars {
            fx["vars"][k] = v.clone();
        }
    }
    let cases = fx["cases"].as_array_mut().expect("cases");
    for (name, fix) in entry["cases"].as_object().expect("overlay cases") {
        let case = cases
            .iter_mut()
            .find(|c| c["name"] == *name)
            .unwrap_or_else(|| panic!("the overlay names {name}, not a case of {file}"));
        assert!(
            case.get("quirk").is_none(),
            "{file} {name} has a recorded quirk: the overlay must not replace it"
        );
        let line = fix["compat"].as_str().expect("compat line");
        assert!(
            compat.contains(line),
            "docs/compat.md lacks the line of fix {} ({name}): {line}",
            fix["id"]
        );
        case["quirk"] = serde_json::json!({
            "id": fix["id"],
            "fixable": true,
            "summary": format!("{} (docs/compat.md: {line})", fix["summary"].as_str().unwrap_or("")),
            "fixed": fix["fixed"],
        });
        if let Some(capture) = fix.get("capture") {
            if capture.is_null() {
                case.as_object_mut().unwrap().remove("capture");
            } else {
                case["capture"] = capture.clone();
            }
        }
        fixed.push((name.clone(), fix["id"].as_str().unwrap_or("").to_string()));
    }
    (fx, fixed)
}

fn replay(file: &str, which: Which) {
    replay_with(file, which, false);
}

fn replay_with(file: &str, which: Which, placer: bool) {
    let Some(mut cluster) = Cluster::new() else {
        return;
    };
    let seed = Command::new("python3")
        .arg(fixtures().join("wire").join("lochness-seed.py"))
        .arg(fixtures().join("wire").join(file))
        .args(["--etcd", &cluster.etcd.url, "--wipe"])
        .output()
        .expect("python3");
    assert!(
        seed.status.success(),
        "seeding failed: {}",
        String::from_utf8_lossy(&seed.stderr)
    );
    let base = cluster.start(which, &[]);
    // The placer under test beside cguestd, on the same store (no worker, as recorded).
    let _placer = placer.then(|| {
        let port = mistify_e2e::free_port();
        mistify_e2e::Daemon::start(
            &mistify_e2e::binary("cplacerd"),
            &[
                "--etcd".into(),
                cluster.etcd.url.clone(),
                "--bind".into(),
                "127.0.0.1".into(),
                "--http".into(),
                port.to_string(),
            ],
            port,
        )
    });
    let (fx, fixed) = merged(file);
    let dir = mistify_e2e::TempDir::new("lochness-replay");
    let path = dir.path().join(file);
    std::fs::write(&path, serde_json::to_vec_pretty(&fx).unwrap()).unwrap();
    let (ok, out) = mistify_e2e::replay(&[
        path.display().to_string(),
        "--base".into(),
        base,
        "--allow-fixes".into(),
        "--verbose".into(),
    ]);
    println!("{out}");
    let total = fx["cases"].as_array().map(Vec::len).unwrap_or(0);
    let last = out.lines().last().unwrap_or("");
    assert_eq!(last, format!("{total} passed, 0 failed"), "{out}");
    assert!(ok, "{out}");
    // Each case of the overlay was answered with our fix, under our id.
    for (name, id) in &fixed {
        let line = out
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(name.as_str()))
            .unwrap_or_else(|| panic!("{name} is not in the output"));
        assert!(
            line.starts_with("QUIRK-FIXED") && line.contains(&format!("quirk {id};")),
            "{name}: {line}"
        );
    }
    let quirk_fixed = out.lines().filter(|l| l.starts_with("QUIRK-FIXED")).count();
    let passed = out.lines().filter(|l| l.starts_with("PASS")).count();
    println!(
        "{file}: {passed} PASS, {quirk_fixed} QUIRK-FIXED ({} of them ours)",
        fixed.len()
    );
}

#[test]
fn cguestd_replays_the_recorded_exchanges() {
    replay("lochness-cguestd.json", Which::Guests);
}

#[test]
fn chypervisord_replays_the_recorded_exchanges() {
    replay("lochness-chypervisord.json", Which::Hypervisors);
}

#[test]
fn cnetworkd_replays_the_recorded_exchanges() {
    replay("lochness-cnetworkd.json", Which::Networks);
}

#[test]
fn cplacerd_replays_the_recorded_exchanges() {
    replay_with("lochness-cplacerd.json", Which::Guests, true);
}
