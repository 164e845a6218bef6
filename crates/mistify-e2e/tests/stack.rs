//! The dev stack (`config/services/dev` under `mistify-supervisord`, what `make run`
//! starts) on free ports: the README walk-through runs as written, and stopping the
//! stack leaves no process, pool or mount behind.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use mistify_e2e::stack::{still_running, DevStack};
use mistify_e2e::{binary, skipped, workspace_root};

/// The `sh` blocks of the README between the walk-through markers.
fn walkthrough() -> String {
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).expect("README.md");
    let start = readme
        .find("<!-- walkthrough:begin -->")
        .expect("README.md has no walk-through begin marker");
    let end = readme
        .find("<!-- walkthrough:end -->")
        .expect("README.md has no walk-through end marker");
    let mut script = String::new();
    let mut inside = false;
    for line in readme[start..end].lines() {
        if inside && line.trim_start().starts_with("```") {
            inside = false;
            script.push('\n');
        } else if inside {
            script.push_str(line);
            script.push('\n');
        } else if line.trim_start().starts_with("```sh") {
            inside = true;
        }
    }
    assert!(
        script.contains("curl") && script.contains("mistify "),
        "the walk-through holds no curl or mistify commands"
    );
    script
}

fn bin_dir() -> PathBuf {
    binary("mistify-supervisord")
        .parent()
        .expect("binary directory")
        .to_path_buf()
}

fn zfs_names(pool: &str) -> Vec<String> {
    let out = Command::new("zfs")
        .args(["list", "-H", "-o", "name", "-r", pool])
        .output()
        .expect("zfs list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn readme_walkthrough_runs_and_the_stack_stops_clean() {
    if skipped("stack") || skipped("zfs") || skipped("libvirt") {
        return;
    }
    let script = walkthrough();
    let bin = bin_dir();
    let mut stack = DevStack::start(&bin, "walk").unwrap_or_else(|e| panic!("{e}"));
    let work = stack.data().join("walk");
    std::fs::create_dir_all(&work).expect("work dir");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!("set -euo pipefail\n{script}"))
        .current_dir(&work)
        .env("AGENT", &stack.agent)
        .env("PATH", path)
        .output()
        .expect("bash");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the walk-through failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}\n--- supervisor\n{}",
        out.status,
        stack.log()
    );
    eprintln!("--- walk-through output\n{stdout}\n--- stderr\n{stderr}");
    // Both guests were deleted: no guest dataset is left, the image stays.
    let names = zfs_names(&stack.pool);
    assert!(
        !names.iter().any(|n| n.contains("/guests/")),
        "guest datasets left: {names:?}"
    );
    assert!(
        names.iter().any(|n| n.ends_with("/images/sample")),
        "the image is gone: {names:?}"
    );
    assert!(
        stdout.contains("first.zfs"),
        "no download listed:\n{stdout}"
    );

    let data = stack.data().to_path_buf();
    let procs = stack.processes();
    // The supervisor, the zfs-fuse stand-in, the pool keeper, the image server, both
    // sub-agents and the agent (with the shells some of them run under).
    assert!(procs.len() >= 7, "the stack's processes: {procs:?}");
    let status = stack.stop(Duration::from_secs(90));
    assert!(
        status.is_some_and(|s| s.success()),
        "the supervisor did not stop cleanly: {status:?}\n{}",
        stack.log()
    );
    assert!(!stack.pool_imported(), "the pool is still imported");
    let left = still_running(&procs);
    assert!(left.is_empty(), "processes of the stack left: {left:?}");
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let data_text = data.display().to_string();
    assert!(
        !mounts.lines().any(|l| l.contains(&data_text)),
        "mounts left under {data_text}:\n{mounts}"
    );
}
