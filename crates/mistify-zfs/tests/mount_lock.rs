//! The mount lock: on zfs-fuse, the commands that mount or unmount wait for an exclusive
//! `flock` that another process (here `flock(1)`, as the tests and the dev pool's
//! manifest take it) holds; the others do not wait, and OpenZFS takes no lock. A fake
//! `zfs` logs its argv, so a command that waited is one that did not run.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mistify_e2e::TempDir;
use mistify_zfs::zfs::{changes_mounts, Flavor, MountLock, Zfs, ZfsError};

/// A fake `zfs` that appends its argv to `log` and succeeds.
fn fake_zfs(dir: &Path, log: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("zfs");
    let script = format!(
        "#!/bin/sh\ncat > /dev/null\necho \"$*\" >> '{}'\n",
        log.display()
    );
    std::fs::write(&path, script).expect("fake zfs");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

fn logged(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// `flock -o lock sh -c 'touch ready; sleep 60'`: the lock held by another process
/// (flock itself, `-o` keeping it from the command), once `ready` exists.
struct Holder(Child);

impl Holder {
    fn take(lock: &Path, dir: &Path) -> Holder {
        let ready = dir.join("ready");
        let _ = std::fs::remove_file(&ready);
        let child = Command::new("flock")
            .arg("-o")
            .arg(lock)
            .args(["sh", "-c"])
            .arg(format!("touch '{}'; exec sleep 60", ready.display()))
            .stdin(Stdio::null())
            .spawn()
            .expect("flock");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ready.exists() {
            assert!(Instant::now() < deadline, "flock did not take the lock");
            std::thread::sleep(Duration::from_millis(10));
        }
        Holder(child)
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_commands_that_mount_or_unmount() {
    let args = |s: &str| s.split(' ').map(str::to_string).collect::<Vec<_>>();
    for cmd in [
        "create -o compression=on p/guests/a",
        "clone p/images/i@s p/guests/a",
        "receive p/images/i",
        "destroy -r p/guests/a",
        "rollback -r p/guests/a@s",
        "mount p/guests/a",
        "umount p/guests/a",
        "unmount p/guests/a",
        "rename p/a p/b",
        "promote p/a",
        "set mountpoint=/x p/a",
        "inherit mountpoint p/a",
    ] {
        assert!(changes_mounts(&args(cmd)), "{cmd}");
    }
    for cmd in [
        "list -H -t all -r p",
        "get -H -p -o name,property,value all p",
        "snapshot p/a@s",
        "send -R p/a@s",
        "version",
    ] {
        assert!(!changes_mounts(&args(cmd)), "{cmd}");
    }
    assert!(!changes_mounts(&[]));
}

#[tokio::test]
async fn on_zfs_fuse_mount_changes_wait_for_the_lock_others_do_not() {
    let dir = TempDir::new("zfs-mount-lock");
    let log = dir.path().join("argv.log");
    let lock = dir.path().join("mount.lock");
    let zfs = Zfs::with_flavor(
        fake_zfs(dir.path(), &log),
        Flavor::Fuse,
        Duration::from_secs(1),
    )
    .with_mount_lock(Some(MountLock::new(&lock)));
    assert_eq!(zfs.mount_lock().map(MountLock::path), Some(lock.as_path()));

    let holder = Holder::take(&lock, dir.path());
    // Not mount-changing: runs at once.
    zfs.run(vec!["list".into(), "p".into()])
        .await
        .expect("list while the lock is held");
    // Mount-changing: waits for the lock until the command's timeout, and never runs.
    let started = Instant::now();
    let err = zfs
        .create_filesystem("p/guests/a", false)
        .await
        .expect_err("create ran while another process held the lock");
    assert!(matches!(err, ZfsError::Timeout { .. }), "{err}");
    assert!(started.elapsed() >= Duration::from_secs(1));
    let err = zfs
        .receive("p/images/i", &b"stream"[..], Duration::from_millis(300))
        .await
        .expect_err("receive ran while another process held the lock");
    assert!(matches!(err, ZfsError::Timeout { .. }), "{err}");
    assert_eq!(logged(&log), vec!["list p".to_string()]);

    // Released: the same commands run.
    drop(holder);
    zfs.create_filesystem("p/guests/a", false)
        .await
        .expect("create once the lock is free");
    zfs.receive("p/images/i", &b"stream"[..], Duration::from_secs(5))
        .await
        .expect("receive once the lock is free");
    let log_now = logged(&log);
    assert_eq!(log_now.len(), 3, "{log_now:?}");
    assert!(log_now[1].starts_with("create ") && log_now[1].ends_with("p/guests/a"));
    assert_eq!(log_now[2], "receive p/images/i");

    // The lock is not kept after a command: another process takes it at once.
    let again = Holder::take(&lock, dir.path());
    drop(again);
}

#[tokio::test]
async fn openzfs_takes_no_lock_and_zfs_fuse_takes_the_shared_one() {
    let dir = TempDir::new("zfs-no-mount-lock");
    let log = dir.path().join("argv.log");
    let fake = fake_zfs(dir.path(), &log);
    let fuse = Zfs::with_flavor(&fake, Flavor::Fuse, Duration::from_secs(5));
    assert_eq!(
        fuse.mount_lock().map(MountLock::path),
        Some(Path::new(mistify_zfs::zfs::FUSE_MOUNT_LOCK))
    );
    // The tests and the dev pool's manifest take the same file with flock(1).
    assert_eq!(
        mistify_zfs::zfs::FUSE_MOUNT_LOCK,
        mistify_e2e::stack::ZPOOL_LOCK
    );

    let lock = dir.path().join("mount.lock");
    let _holder = Holder::take(&lock, dir.path());
    let open = Zfs::with_flavor(&fake, Flavor::OpenZfs, Duration::from_secs(5));
    assert!(open.mount_lock().is_none());
    open.destroy("p/guests/a", true)
        .await
        .expect("OpenZFS destroys without the lock");
    // Nor does a zfs-fuse layer whose lock was taken away.
    let unlocked =
        Zfs::with_flavor(&fake, Flavor::Fuse, Duration::from_secs(5)).with_mount_lock(None);
    unlocked
        .destroy("p/guests/b", true)
        .await
        .expect("no lock, no wait");
    assert_eq!(
        logged(&log),
        vec![
            "destroy -r p/guests/a".to_string(),
            "destroy -r p/guests/b".to_string()
        ]
    );
}
