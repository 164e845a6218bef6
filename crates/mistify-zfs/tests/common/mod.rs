//! Shared set-up of the ZFS tests: the zfs-fuse daemon (started once per machine, never
//! stopped), a pool per test on a sparse file (destroyed by its guard), the binaries on
//! free ports, an RPC client, `zfs list`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use mistify_e2e::{free_port, Daemon, TempDir};
use mistify_rpc::{Client, RpcError, Service, ServiceConfig};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Serialises pool creation and destruction (zfs-fuse is one process for everyone).
static POOL_LOCK: Mutex<()> = Mutex::new(());

fn zpool_works() -> bool {
    Command::new("zpool")
        .arg("list")
        .env("LC_ALL", "C")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A zfs-fuse daemon that answers `zpool list` (started, in its own process group and
/// left running for later tests, when none does): `mistify_e2e`'s, serialised with the
/// pool set-up here.
pub fn ensure_zfs_fuse() {
    let _guard = POOL_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if let Err(e) = mistify_e2e::stack::ensure_zfs_fuse() {
        panic!("{e}");
    }
}

/// A pool on a sparse file in its own temp dir, mounted inside that dir; destroyed
/// (`zpool destroy -f`) on drop.
pub struct TestPool {
    pub name: String,
    pub dir: TempDir,
}

impl TestPool {
    pub fn new() -> TestPool {
        ensure_zfs_fuse();
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "mzt{}x{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let dir = TempDir::new(&name);
        let file = dir.path().join("pool.img");
        let f = std::fs::File::create(&file).expect("pool file");
        f.set_len(2 << 30).expect("sparse pool file");
        drop(f);
        let _guard = POOL_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let out = mistify_e2e::stack::zpool_locked()
            .args(["create", "-o", "cachefile=none", "-m"])
            .arg(dir.path().join("mnt"))
            .arg(&name)
            .arg(&file)
            .env("LC_ALL", "C")
            .output()
            .expect("zpool create");
        assert!(
            out.status.success(),
            "zpool create {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        TestPool { name, dir }
    }

    /// `zfs list -H -o name -t all -r <pool>`, one name per entry.
    pub fn list(&self) -> Vec<String> {
        zfs_list(&self.name)
    }

    pub fn has(&self, name: &str) -> bool {
        self.list().iter().any(|n| n == name)
    }

    /// The mountpoint of a dataset of this pool.
    pub fn mountpoint(&self, name: &str) -> PathBuf {
        let out = zfs(&["get", "-H", "-o", "value", "mountpoint", name]);
        PathBuf::from(out.trim())
    }
}

impl Drop for TestPool {
    fn drop(&mut self) {
        let _guard = POOL_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = mistify_e2e::stack::destroy_pool(&self.name) {
            // Not a panic in a drop (it would abort a failing test's report): make
            // test's leftover check names the pool.
            eprintln!("warning: the test pool is left: {e}");
        }
    }
}

/// Runs `zfs args…` under the mount lock, panicking on failure; stdout.
pub fn zfs(args: &[&str]) -> String {
    let out = mistify_e2e::stack::zfs_locked()
        .args(args)
        .env("LC_ALL", "C")
        .output()
        .expect("zfs");
    assert!(
        out.status.success(),
        "zfs {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn zfs_list(root: &str) -> Vec<String> {
    let out = Command::new("zfs")
        .args(["list", "-H", "-o", "name", "-t", "all", "-r", root])
        .env("LC_ALL", "C")
        .output()
        .expect("zfs list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// This crate's binaries as cargo built them for this test; other workspace binaries
/// through `mistify_e2e::binary`.
pub fn bin(name: &str) -> PathBuf {
    match name {
        "mistify-zfs" => PathBuf::from(env!("CARGO_BIN_EXE_mistify-zfs")),
        "mistify-image-server" => PathBuf::from(env!("CARGO_BIN_EXE_mistify-image-server")),
        other => mistify_e2e::binary(other),
    }
}

/// `mistify-image-server make` into `out`; the image file.
pub fn make_image(pool: &str, id: &str, size_mb: u64, out: &Path, gzip: bool) -> PathBuf {
    make_image_filled(pool, id, size_mb, 1, out, gzip)
}

/// As [`make_image`] with `fill_mb` MB of data at the start of the disk.
pub fn make_image_filled(
    pool: &str,
    id: &str,
    size_mb: u64,
    fill_mb: u64,
    out: &Path,
    gzip: bool,
) -> PathBuf {
    let mut cmd = Command::new(bin("mistify-image-server"));
    cmd.args([
        "make",
        "--pool",
        pool,
        "--id",
        id,
        "--size",
        &size_mb.to_string(),
    ])
    .args(["--fill", &fill_mb.to_string(), "--out"])
    .arg(out);
    if gzip {
        cmd.arg("--gzip");
    }
    let o = cmd.output().expect("image server make");
    assert!(
        o.status.success(),
        "make: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&o.stdout).trim())
}

/// `mistify-image-server --dir DIR` on a free port.
pub fn image_server(dir: &Path, chunk_delay_ms: u64) -> Daemon {
    let port = free_port();
    Daemon::start(
        &bin("mistify-image-server"),
        &[
            "--dir".into(),
            dir.display().to_string(),
            "--port".into(),
            port.to_string(),
            "--chunk-delay-ms".into(),
            chunk_delay_ms.to_string(),
        ],
        port,
    )
}

/// `mistify-zfs --disk-mode file` on `pool` and a free port.
pub fn storage(pool: &str, image_service: &str, extra: &[&str]) -> Daemon {
    let port = free_port();
    let mut args: Vec<String> = vec![
        "--port".into(),
        port.to_string(),
        "--zpool".into(),
        pool.into(),
        "--image-service".into(),
        image_service.into(),
        "--disk-mode".into(),
        "file".into(),
        "--log-level".into(),
        "info".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    Daemon::start(&bin("mistify-zfs"), &args, port)
}

pub fn client(port: u16) -> Service {
    let mut cfg = ServiceConfig::local(port);
    cfg.timeout = Duration::from_secs(300);
    Client::new().service("storage", cfg)
}

/// `ImageStore.<method>` with `req`.
pub async fn call<Q: Serialize, R: DeserializeOwned>(
    svc: &Service,
    method: &str,
    req: &Q,
) -> Result<R, RpcError> {
    svc.call(&format!("ImageStore.{method}"), req).await
}

/// The error text of a call that must fail.
pub async fn call_err(svc: &Service, method: &str, req: &serde_json::Value) -> String {
    match call::<_, serde_json::Value>(svc, method, req).await {
        Ok(v) => panic!("{method} {req} succeeded: {v}"),
        Err(e) => e.to_string(),
    }
}

/// The file content of `path`.
pub fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Downloads from the image server's `/stats`: how often `id` was served.
pub async fn served(image_server: &Daemon, id: &str) -> u64 {
    let v: serde_json::Value = reqwest::get(format!("{}/stats", image_server.url()))
        .await
        .expect("stats")
        .json()
        .await
        .expect("stats json");
    v["downloads"][id].as_u64().unwrap_or(0)
}

/// `zfs destroy -r name` ([`mistify_e2e::stack::destroy_dataset`]); panics when it
/// fails for another reason than zfs-fuse's transient busy, or stays busy.
pub fn destroy(name: &str) {
    if let Err(e) = mistify_e2e::stack::destroy_dataset(name) {
        panic!("{e}");
    }
}

/// The agent with `config/agent.json`, storage on `storage_port`, libvirt stages on the
/// fake service (its `Test.*` methods).
pub fn agent(dir: &std::path::Path, storage_port: u16, fake_port: u16) -> Daemon {
    let text = std::fs::read_to_string(
        mistify_e2e::workspace_root()
            .join("config")
            .join("agent.json"),
    )
    .expect("config/agent.json");
    let mut config: serde_json::Value = serde_json::from_str(&text).expect("config json");
    config["services"]["libvirt"]["port"] = fake_port.into();
    for name in ["storage", "storageDownload"] {
        config["services"][name]["port"] = storage_port.into();
    }
    for (action, method) in [("create", "Test.Create"), ("delete", "Test.Delete")] {
        for stage in config["actions"][action]["stages"]
            .as_array_mut()
            .expect("stages")
        {
            if stage["service"] == "libvirt" {
                stage["method"] = method.into();
            }
        }
    }
    let file = dir.join("agent.json");
    std::fs::write(&file, config.to_string()).expect("write config");
    let port = free_port();
    Daemon::start(
        &bin("mistify-agent"),
        &[
            "-a".into(),
            format!("127.0.0.1:{port}"),
            "-c".into(),
            file.display().to_string(),
            "--db-path".into(),
            dir.join("agent.redb").display().to_string(),
        ],
        port,
    )
}
