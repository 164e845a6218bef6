//! The dev stack (`config/services/dev` under `mistify-supervisord`, what `make run`
//! starts) on free ports: the README walk-through runs as written, and stopping the
//! stack leaves no process, pool or mount behind.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use mistify_e2e::stack::{still_running, DevStack};
use mistify_e2e::{binary, readme_blocks, skipped};

/// The `sh` blocks of the README between the walk-through markers, one string each.
fn walkthrough_blocks() -> Vec<String> {
    readme_blocks("walkthrough")
}

/// The whole walk-through: every block, in order.
fn walkthrough() -> String {
    let script = walkthrough_blocks().join("\n");
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

/// Runs `script` under bash against the stack (the binaries first on PATH); its stdout.
fn run_script(stack: &DevStack, script: &str, what: &str) -> String {
    let work = stack.data().join("walk");
    std::fs::create_dir_all(&work).expect("work dir");
    let path = format!(
        "{}:{}",
        bin_dir().display(),
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
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{}\n--- supervisor\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        stack.log()
    );
    stdout
}

/// After a stop: no process of the stack runs, the pool is exported, nothing of it is
/// mounted.
fn assert_nothing_left(stack: &DevStack, procs: &[(u32, u64)], when: &str) {
    assert!(
        !stack.pool_imported(),
        "{when}: the pool is still imported\n{}",
        stack.log()
    );
    let left = still_running(procs);
    assert!(
        left.is_empty(),
        "{when}: processes of the stack left: {left:?}"
    );
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let data_text = stack.data().display().to_string();
    let ours: Vec<&str> = mounts
        .lines()
        .filter(|l| l.contains(&data_text) || l.starts_with(&format!("{} ", stack.pool)))
        .collect();
    assert!(ours.is_empty(), "{when}: mounts left: {ours:?}");
}

/// `make run`, the walk-through, Ctrl-C, and `make run` again on the same data
/// directory: the stack stops clean (pool exported, nothing mounted, no process), and
/// comes back on the re-imported pool with its image and its guests, which start
/// (libvirt's test driver forgot their domains: the libvirt sub-agent re-defines them).
#[test]
fn the_stack_stops_clean_and_finds_its_guests_after_a_restart() {
    if skipped("stack") || skipped("zfs") || skipped("libvirt") {
        return;
    }
    use mistify_types::{Disk, Guest, JobStatus, Nic};
    let curl = walkthrough_blocks()
        .into_iter()
        .next()
        .expect("the walk-through's first block");
    assert!(curl.contains("curl -fsS"), "not the curl block:\n{curl}");
    let started = std::time::Instant::now();
    let mut stack = DevStack::start(&bin_dir(), "again").unwrap_or_else(|e| panic!("{e}"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut client = mistify_client::Client::new(&stack.agent).expect("client");
    let complete = |client: &mistify_client::Client, job: Option<String>, what: &str| {
        let job = job.unwrap_or_else(|| panic!("{what}: no job"));
        let done = rt
            .block_on(client.wait_job(&job, Duration::from_secs(120)))
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(done.status, JobStatus::Complete, "{what}: {done:?}");
    };

    // First `make run`: the walk-through, then two guests: one started, one only made.
    run_script(&stack, &curl, "the walk-through");
    let mut ids = Vec::new();
    for _ in 0..2 {
        let guest = Guest {
            memory: 128,
            cpu: 1,
            disks: vec![Disk {
                image: "sample".into(),
                ..Default::default()
            }],
            nics: vec![Nic {
                network: "default".into(),
                model: "virtio".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let accepted = rt
            .block_on(client.create_guest(&guest))
            .expect("POST /guests");
        complete(&client, accepted.job_id, "create");
        ids.push(accepted.body.id);
    }
    let accepted = rt
        .block_on(client.guest_action(&ids[0], mistify_types::GuestAction::Start))
        .expect("start");
    complete(&client, accepted.job_id, "start");

    // Ctrl-C.
    let procs = stack.processes();
    let stopping = std::time::Instant::now();
    let status = stack.interrupt(Duration::from_secs(90));
    assert!(
        status.is_some_and(|s| s.success()),
        "the supervisor did not stop cleanly: {status:?}\n{}",
        stack.log()
    );
    eprintln!("first stop: {:?}", stopping.elapsed());
    assert_nothing_left(&stack, &procs, "after the first stop");
    assert!(stack.pool_file().exists(), "the pool's file is gone");

    // Second `make run` on the same data directory.
    let again = std::time::Instant::now();
    stack.start_again().unwrap_or_else(|e| panic!("{e}"));
    eprintln!("second start: {:?}", again.elapsed());
    // A new client: the old one's pooled connections went with the first agent.
    client = mistify_client::Client::new(&stack.agent).expect("client");
    let log = stack.log();
    assert!(
        log.contains(&format!("imported {} from", stack.pool)),
        "the pool was not re-imported:\n{log}"
    );
    let images = rt.block_on(client.list_images(None)).expect("images");
    assert!(
        images.iter().any(|i| i.id == "sample"),
        "the image is not listed after the restart: {images:?}"
    );
    let guests = rt.block_on(client.list_guests()).expect("guests");
    for id in &ids {
        assert!(
            guests.iter().any(|g| &g.id == id),
            "guest {id} is not found after the restart: {guests:?}"
        );
        let accepted = rt
            .block_on(client.guest_action(id, mistify_types::GuestAction::Start))
            .expect("start after the restart");
        complete(&client, accepted.job_id, "start after the restart");
        let seen =
            mistify_e2e::stack::http_get(&format!("{}/guests/{id}?refresh=true", stack.agent))
                .expect("refresh");
        assert!(seen.1.contains("\"state\":\"running\""), "{id}: {seen:?}");
    }
    run_script(&stack, &curl, "the walk-through after the restart");

    // And stopped again (SIGTERM, as `systemctl stop` would).
    let procs = stack.processes();
    let status = stack.stop(Duration::from_secs(90));
    assert!(
        status.is_some_and(|s| s.success()),
        "the supervisor did not stop cleanly the second time: {status:?}\n{}",
        stack.log()
    );
    assert_nothing_left(&stack, &procs, "after the second stop");
    let log = stack.log();
    let told: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("[pool:dev] stdout>") || l.contains("re-defined"))
        .collect();
    assert!(
        log.contains("re-defined it from the request's guest"),
        "no domain was re-defined:
{log}"
    );
    eprintln!(
        "stop, start again, stop: {:?} in all
{}",
        started.elapsed(),
        told.join(
            "
"
        )
    );
}
