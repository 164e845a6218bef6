//! `scripts/dev-pool.sh`, the dev pool of `make run` (`config/services/dev/20-pool.json`),
//! on zfs-fuse with a pool of its own: a failed import keeps the pool's file; an export
//! that a process blocks is retried for a bounded time and then says what holds the
//! pool; an imported pool whose filesystems are not mounted is re-used and mounted before
//! it counts as ready; a clean stop exports it.

use std::io::Read;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mistify_e2e::stack::{destroy_pool, ensure_zfs_fuse, zfs_locked};
use mistify_e2e::{skipped, workspace_root, TempDir};

fn script() -> PathBuf {
    workspace_root().join("scripts").join("dev-pool.sh")
}

/// `dev-pool.sh up` with its own notify socket; its output goes to `log`.
struct Up {
    child: Child,
    socket: UnixDatagram,
    log: PathBuf,
}

impl Up {
    fn start(pool: &str, data: &Path, name: &str) -> Up {
        let sock_path = data.join(format!("{name}.notify"));
        let _ = std::fs::remove_file(&sock_path);
        let socket = UnixDatagram::bind(&sock_path).expect("notify socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        let log = data.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).expect("log");
        let err = out.try_clone().expect("log");
        let child = Command::new(script())
            .arg("up")
            .env("MISTIFY_POOL", pool)
            .env("MISTIFY_DATA", data)
            .env("MISTIFY_POOL_SIZE", "512M")
            .env("MISTIFY_POOL_EXPORT_SECONDS", "2")
            .env("NOTIFY_SOCKET", &sock_path)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("dev-pool.sh up");
        Up { child, socket, log }
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for READY=1 (Ok) or the script's exit (Err with its status and output).
    fn ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut buf = [0u8; 64];
        loop {
            if let Ok(n) = self.socket.recv(&mut buf) {
                if &buf[..n] == b"READY=1" {
                    return Ok(());
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("exited {status}:\n{}", self.output()));
            }
            if Instant::now() > deadline {
                return Err(format!("not ready after 60 s:\n{}", self.output()));
            }
        }
    }

    /// SIGTERM (what the supervisor sends when the stack stops); exit code and output.
    fn stop(mut self) -> (Option<i32>, String) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return (status.code(), self.output());
            }
            assert!(
                Instant::now() < deadline,
                "still stopping:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Destroys the pool (if still imported) when the test ends, however it ends.
struct PoolGuard(String);

impl Drop for PoolGuard {
    fn drop(&mut self) {
        if let Err(e) = destroy_pool(&self.0) {
            eprintln!("warning: the test pool is left: {e}");
        }
    }
}

fn imported(pool: &str) -> bool {
    Command::new("zpool")
        .args(["list", pool])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The pool's filesystems in /proc/mounts.
fn mounted(pool: &str) -> Vec<String> {
    std::fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').next())
        .filter(|src| *src == pool || src.starts_with(&format!("{pool}/")))
        .map(str::to_string)
        .collect()
}

fn zfs(args: &[&str]) {
    let out = zfs_locked().args(args).output().expect("zfs");
    assert!(
        out.status.success(),
        "zfs {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_dev_pool_is_kept_reused_mounted_and_exported() {
    if skipped("zfs") || skipped("stack") {
        return;
    }
    ensure_zfs_fuse().unwrap_or_else(|e| panic!("{e}"));
    let pool = format!("mdp{}", std::process::id());
    let _guard = PoolGuard(pool.clone());
    let data = TempDir::new("dev-pool");

    // A pool file that does not import: said, and kept as it was.
    let file = data.path().join("pool.img");
    std::fs::write(&file, vec![0x5au8; 1 << 20]).expect("garbage pool file");
    let mut up = Up::start(&pool, data.path(), "garbage");
    let err = up.ready().expect_err("ready on a file that is no pool");
    assert!(err.contains(&format!("cannot import {pool} from")), "{err}");
    assert!(err.contains("is kept"), "{err}");
    let mut kept = Vec::new();
    std::fs::File::open(&file)
        .and_then(|mut f| f.read_to_end(&mut kept))
        .expect("the pool file");
    assert_eq!(kept, vec![0x5au8; 1 << 20], "the pool file was changed");
    drop(up);
    std::fs::remove_file(&file).expect("remove the garbage");

    // Created, with datasets like the stack's.
    let mut up = Up::start(&pool, data.path(), "first");
    up.ready().unwrap_or_else(|e| panic!("{e}"));
    assert!(up.output().contains(&format!("created {pool} on")));
    for ds in ["images", "guests/g/disk-0", "guests/g/disk-1"] {
        zfs(&["create", "-p", &format!("{pool}/{ds}")]);
    }
    // A process works in a disk's directory: the stop retries, then names it.
    let disk = data.path().join("mnt/guests/g/disk-0");
    let mut holder = Command::new("sleep")
        .arg("60")
        .current_dir(&disk)
        .spawn()
        .expect("holder");
    let t = Instant::now();
    let (code, out) = up.stop();
    let took = t.elapsed();
    let _ = holder.kill();
    let _ = holder.wait();
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(&format!("cannot export {pool}: still busy after")),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "still mounted: {pool}/guests/g/disk-0 at {}",
            disk.display()
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "in use by pid {} (sleep): cwd {}",
            holder.id(),
            disk.display()
        )),
        "{out}"
    );
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert!(imported(&pool), "exported although held");
    eprintln!("a held stop, {took:?}:\n{out}");

    // The pool stays imported with filesystems unmounted (the failed export unmounted
    // what it could; unmount the rest but one): the next start re-uses it and mounts
    // them all before it is ready.
    for ds in ["guests/g/disk-1", "images"] {
        let name = format!("{pool}/{ds}");
        if mounted(&pool).contains(&name) {
            zfs(&["unmount", &name]);
        }
    }
    let before = mounted(&pool);
    let mut up = Up::start(&pool, data.path(), "reuse");
    up.ready().unwrap_or_else(|e| panic!("{e}"));
    let out = up.output();
    assert!(
        out.contains(&format!("pool {pool} is already imported: re-using it")),
        "{out}"
    );
    assert!(out.contains("all 6 filesystems mounted"), "{out}");
    let after = mounted(&pool);
    assert_eq!(after.len(), 6, "before {before:?}, after {after:?}");
    let (code, out) = up.stop();
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains(&format!("exported {pool}")), "{out}");
    assert!(!imported(&pool));
    assert!(mounted(&pool).is_empty());

    // And imported from its file the next time.
    let mut up = Up::start(&pool, data.path(), "import");
    up.ready().unwrap_or_else(|e| panic!("{e}"));
    assert!(up.output().contains(&format!("imported {pool} from")));
    assert_eq!(mounted(&pool).len(), 6);
    let (code, out) = up.stop();
    assert_eq!(code, Some(0), "{out}");
    assert!(!imported(&pool));
}
