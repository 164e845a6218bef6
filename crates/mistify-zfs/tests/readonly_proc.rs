//! zfs-fuse's CLI writes `/proc/sys/vm/drop_caches` after a rollback and fails when
//! `/proc/sys` is read-only (containers, build sandboxes), although the rollback is done.
//! mistify-zfs then remounts the rolled-back filesystems: the call succeeds and the
//! mount shows the restored content, not stale cached pages.

mod common;

use common::*;
use mistify_e2e::{free_port, Daemon};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// `mistify-zfs` whose `zfs rollback` runs with a read-only `/proc/sys` (in a mount
/// namespace of its own, through `--zfs`): what a container gives it.
fn storage_with_readonly_proc(pool: &str, dir: &Path) -> Daemon {
    let wrapper = dir.join("zfs-ro-proc");
    std::fs::write(
        &wrapper,
        "#!/bin/sh\n\
         if [ \"$1\" = rollback ]; then\n\
           exec unshare -m sh -c 'mount --bind /proc/sys /proc/sys && \
         mount -o remount,bind,ro /proc/sys && exec zfs \"$@\"' zfs \"$@\"\n\
         fi\n\
         exec zfs \"$@\"\n",
    )
    .unwrap();
    let mut perms = std::fs::metadata(&wrapper).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&wrapper, perms).unwrap();
    let port = free_port();
    let args: Vec<String> = [
        "--port",
        &port.to_string(),
        "--zpool",
        pool,
        "--image-service",
        "127.0.0.1:9",
        "--disk-mode",
        "file",
        "--log-level",
        "info",
        "--zfs",
        &wrapper.display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    Daemon::start(&bin("mistify-zfs"), &args, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rollback_works_when_proc_sys_is_read_only() {
    if mistify_e2e::skipped("zfs") {
        return;
    }
    let pool = TestPool::new();
    let p = pool.name.clone();
    // The condition itself: zfs rollback through the wrapper cannot drop caches.
    let daemon = storage_with_readonly_proc(&p, pool.dir.path());
    let svc = client(daemon.port);
    let g = "ro-proc-guest";
    let r: Value = call(
        &svc,
        "CreateGuestDisks",
        &json!({"guest": {"id": g, "disks": [{"size": 16}]}}),
    )
    .await
    .unwrap();
    let src = PathBuf::from(r["guest"]["disks"][0]["source"].as_str().unwrap());
    std::fs::write(&src, b"before").unwrap();
    let _: Value = call(
        &svc,
        "CreateSnapshot",
        &json!({"id": format!("guests/{g}"), "dest": "s1", "recursive": true}),
    )
    .await
    .unwrap();
    std::fs::write(&src, b"after the snapshot").unwrap();
    assert_eq!(read(&src), b"after the snapshot");
    let r: Value = call(
        &svc,
        "RollbackSnapshot",
        &json!({"id": format!("guests/{g}@s1"), "recursive": true}),
    )
    .await
    .unwrap_or_else(|e| panic!("rollback failed: {e}"));
    assert_eq!(r["snapshots"][0]["id"], format!("{p}/guests/{g}@s1"));
    assert_eq!(
        read(&src),
        b"before",
        "the mount serves the rolled-back content"
    );
    let _: Value = call(&svc, "DeleteGuestsDisks", &json!({"guest": {"id": g}}))
        .await
        .unwrap();
    assert!(!pool.has(&format!("{p}/guests/{g}")));
    drop(daemon);
}
