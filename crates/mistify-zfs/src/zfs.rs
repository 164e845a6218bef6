//! The one ZFS command layer: every `zfs` invocation of the crate goes through [`Zfs`].
//!
//! Commands run with `tokio::process`, `LC_ALL=C`, no shell, a timeout each, and stderr
//! as the error text. Two CLIs are supported and detected at start ([`Flavor`]):
//! OpenZFS (`zfs list -H -p` gives exact numbers) and zfs-fuse 0.7 (no `list -p`: exact
//! numbers come from `zfs get -H -p`). The argv builders ([`argv`]) and the parsers are
//! pure functions with golden tests.
//!
//! On zfs-fuse, every command that mounts or unmounts a filesystem holds an exclusive
//! `flock` on a lock file shared by every process of the machine ([`MountLock`]):
//! zfs-fuse stops serving its FUSE mounts for good when two of them run at once.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};

/// Which `zfs` CLI this machine has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// OpenZFS / ZFS on Linux (`zfs version` works, `list -p` exists, zvols, `lz4`).
    OpenZfs,
    /// zfs-fuse 0.7: no `list -p`, no `written`, no zvols, no `lz4`.
    Fuse,
}

impl Flavor {
    /// The compression value set on clones and created disks.
    pub fn compression(self) -> &'static str {
        match self {
            Flavor::OpenZfs => "lz4",
            Flavor::Fuse => "on",
        }
    }
}

/// A failed zfs command.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ZfsError {
    /// Non-zero exit: `exit status N: "zfs args…" => stderr`.
    #[error("{status}: \"{command}\" => {stderr}")]
    Failed {
        status: String,
        command: String,
        stderr: String,
    },
    #[error("\"{command}\" timed out after {after:?}")]
    Timeout { command: String, after: Duration },
    #[error("cannot run \"{command}\": {error}")]
    Spawn { command: String, error: String },
    /// Output that does not parse.
    #[error("unexpected output of \"{command}\": {detail}")]
    Parse { command: String, detail: String },
    /// Still busy when the retries ran out: zfs's last answer and what holds the
    /// dataset (its mounted filesystems, the processes using them).
    #[error("{command}: still busy after {tries} tries in {:.1} s: {stderr}; {held}", waited.as_secs_f64())]
    Held {
        command: String,
        stderr: String,
        tries: u32,
        waited: Duration,
        held: String,
    },
}

impl ZfsError {
    fn stderr(&self) -> &str {
        match self {
            ZfsError::Failed { stderr, .. } | ZfsError::Held { stderr, .. } => stderr,
            _ => "",
        }
    }
    /// The dataset does not exist.
    pub fn not_found(&self) -> bool {
        self.stderr().contains("does not exist")
    }
    /// ZFS refused the name (fallback; names are validated before).
    pub fn invalid_name(&self) -> bool {
        let s = self.stderr();
        s.contains("invalid dataset name") || s.contains("invalid character")
    }
    /// zfs's "dataset is busy" (transient on zfs-fuse), or umount(8)'s "target is busy"
    /// when a filesystem cannot be unmounted (a process uses it).
    pub fn busy(&self) -> bool {
        let s = self.stderr();
        s.contains("dataset is busy") || s.contains("target is busy")
    }
    /// An unmount of a filesystem that is not mounted (any more).
    pub fn not_mounted(&self) -> bool {
        self.stderr().contains("not currently mounted")
    }
    /// zfs-fuse's CLI could not drop the kernel page cache after a rollback
    /// (`/proc/sys/vm/drop_caches` is read-only, as in containers); the rollback itself
    /// is done.
    pub fn cache_drop_failed(&self) -> bool {
        self.stderr().contains("drop_caches failed")
    }
}

/// Dataset types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Filesystem,
    Volume,
    Snapshot,
    Other(String),
}

impl Kind {
    fn parse(s: &str) -> Kind {
        match s {
            "filesystem" => Kind::Filesystem,
            "volume" => Kind::Volume,
            "snapshot" => Kind::Snapshot,
            other => Kind::Other(other.to_string()),
        }
    }
}

/// The properties of one dataset the store uses (bytes; `-` → 0 / `None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dataset {
    pub name: String,
    pub kind: Kind,
    pub used: u64,
    pub avail: u64,
    /// `None` for `-`, `none`, `legacy` (not a usable path).
    pub mountpoint: Option<String>,
    pub volsize: u64,
    pub origin: Option<String>,
    /// Bytes written since the previous snapshot (OpenZFS only; zfs-fuse: `used`).
    pub written: u64,
    pub quota: u64,
}

impl Dataset {
    fn empty(name: &str) -> Dataset {
        Dataset {
            name: name.to_string(),
            kind: Kind::Other(String::new()),
            used: 0,
            avail: 0,
            mountpoint: None,
            volsize: 0,
            origin: None,
            written: 0,
            quota: 0,
        }
    }

    /// The part after `@` of a snapshot name.
    pub fn snap_name(&self) -> Option<&str> {
        self.name.split_once('@').map(|(_, s)| s)
    }
}

/// Pure argv builders (without the program name), one per operation.
pub mod argv {
    use super::Flavor;

    /// Columns of `zfs list -H -p -o` (OpenZFS).
    pub const LIST_COLUMNS: &str = "name,type,used,avail,mountpoint,volsize,origin,written,quota";
    /// Properties of `zfs get -H -p` (zfs-fuse has no `written`).
    pub const GET_PROPERTIES: &str = "type,used,available,mountpoint,volsize,origin,quota";

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    /// One dataset, or (`recursive`) it and all descendants including snapshots.
    pub fn query(flavor: Flavor, name: &str, recursive: bool) -> Vec<String> {
        let mut a = match flavor {
            Flavor::OpenZfs => s(&["list", "-H", "-p", "-o", LIST_COLUMNS, "-t", "all"]),
            Flavor::Fuse => s(&["get", "-H", "-p", "-o", "name,property,value"]),
        };
        if recursive {
            a.push("-r".into());
        }
        if flavor == Flavor::Fuse {
            a.push(GET_PROPERTIES.into());
        }
        a.push(name.into());
        a
    }

    pub fn create_filesystem(flavor: Flavor, name: &str, compress: bool) -> Vec<String> {
        let mut a = s(&["create", "-p"]);
        if compress {
            a.extend(["-o".into(), format!("compression={}", flavor.compression())]);
        }
        a.push(name.into());
        a
    }

    pub fn create_volume(flavor: Flavor, name: &str, bytes: u64) -> Vec<String> {
        vec![
            "create".into(),
            "-p".into(),
            "-V".into(),
            bytes.to_string(),
            "-o".into(),
            format!("compression={}", flavor.compression()),
            name.into(),
        ]
    }

    pub fn clone(flavor: Flavor, snapshot: &str, dest: &str) -> Vec<String> {
        vec![
            "clone".into(),
            "-p".into(),
            "-o".into(),
            format!("compression={}", flavor.compression()),
            snapshot.into(),
            dest.into(),
        ]
    }

    pub fn snapshot(name: &str, recursive: bool) -> Vec<String> {
        let mut a = s(&["snapshot"]);
        if recursive {
            a.push("-r".into());
        }
        a.push(name.into());
        a
    }

    pub fn destroy(name: &str, recursive: bool) -> Vec<String> {
        let mut a = s(&["destroy"]);
        if recursive {
            a.push("-r".into());
        }
        a.push(name.into());
        a
    }

    pub fn rollback(snapshot: &str, destroy_more_recent: bool) -> Vec<String> {
        let mut a = s(&["rollback"]);
        if destroy_more_recent {
            a.push("-r".into());
        }
        a.push(snapshot.into());
        a
    }

    /// Full stream of one snapshot; `replicate`: `-R`, the dataset and its descendants.
    pub fn send(snapshot: &str, replicate: bool) -> Vec<String> {
        let mut a = s(&["send"]);
        if replicate {
            a.push("-R".into());
        }
        a.push(snapshot.into());
        a
    }

    pub fn receive(dest: &str) -> Vec<String> {
        s(&["receive", dest])
    }
}

fn num(value: &str) -> u64 {
    value.trim().parse().unwrap_or(0)
}

fn opt_path(value: &str) -> Option<String> {
    match value {
        "-" | "none" | "legacy" | "" => None,
        v => Some(v.to_string()),
    }
}

fn opt_str(value: &str) -> Option<String> {
    match value {
        "-" | "" => None,
        v => Some(v.to_string()),
    }
}

/// Parses `zfs list -H -p -o LIST_COLUMNS` output (OpenZFS).
pub fn parse_list(text: &str) -> Result<Vec<Dataset>, String> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        let cols: Vec<&str> = line.split('\t').collect();
        if cols.len() != 9 {
            return Err(format!("expected 9 columns, got {}: {line:?}", cols.len()));
        }
        out.push(Dataset {
            name: cols[0].to_string(),
            kind: Kind::parse(cols[1]),
            used: num(cols[2]),
            avail: num(cols[3]),
            mountpoint: opt_path(cols[4]),
            volsize: num(cols[5]),
            origin: opt_str(cols[6]),
            written: num(cols[7]),
            quota: num(cols[8]),
        });
    }
    Ok(out)
}

/// Parses `zfs get -H -p -o name,property,value GET_PROPERTIES` output (zfs-fuse),
/// grouping rows by dataset in listing order.
pub fn parse_get(text: &str) -> Result<Vec<Dataset>, String> {
    let mut out: Vec<Dataset> = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        let mut cols = line.splitn(3, '\t');
        let (Some(name), Some(prop), Some(value)) = (cols.next(), cols.next(), cols.next()) else {
            return Err(format!("expected 3 columns: {line:?}"));
        };
        if out.last().is_none_or(|d| d.name != name) {
            out.push(Dataset::empty(name));
        }
        let Some(d) = out.last_mut() else {
            continue;
        };
        match prop {
            "type" => d.kind = Kind::parse(value),
            "used" => {
                d.used = num(value);
                d.written = d.used;
            }
            "available" => d.avail = num(value),
            "mountpoint" => d.mountpoint = opt_path(value),
            "volsize" => d.volsize = num(value),
            "origin" => d.origin = opt_str(value),
            "quota" => d.quota = num(value),
            _ => {}
        }
    }
    Ok(out)
}

/// The lock file zfs-fuse's mount-changing commands hold by default: the same file the
/// tests and the dev pool's manifest take (with `flock`) around `zpool create`,
/// `import`, `export` and `destroy`.
pub const FUSE_MOUNT_LOCK: &str = "/tmp/mistify-zpool.lock";

/// Whether `zfs args…` may mount or unmount a filesystem (and so must hold the mount
/// lock on zfs-fuse): `create`, `clone` and `receive` mount what they make, `destroy`,
/// `rename` and `promote` unmount, `mount`/`unmount` do both, `rollback` and
/// `set`/`inherit` (a `mountpoint`) may remount.
pub fn changes_mounts(args: &[String]) -> bool {
    matches!(
        args.first().map(String::as_str),
        Some(
            "create"
                | "clone"
                | "receive"
                | "recv"
                | "destroy"
                | "rename"
                | "promote"
                | "mount"
                | "umount"
                | "unmount"
                | "rollback"
                | "set"
                | "inherit"
        )
    )
}

/// An exclusive `flock` on one file, shared with every process of the machine that
/// takes the same file (including `flock(1)` in shell scripts).
#[derive(Debug, Clone)]
pub struct MountLock {
    path: PathBuf,
}

/// A held [`MountLock`]: released when dropped (the file is opened close-on-exec, so
/// the zfs child never inherits it).
#[derive(Debug)]
pub struct MountGuard {
    _file: std::fs::File,
}

impl MountLock {
    pub fn new(path: impl Into<PathBuf>) -> MountLock {
        MountLock { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits (polling, so a caller's timeout can cancel the wait) until the lock is ours.
    pub async fn acquire(&self) -> std::io::Result<MountGuard> {
        let file = match std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&self.path)
        {
            Ok(f) => f,
            // A lock file made by another user: reading is enough to lock it.
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                std::fs::File::open(&self.path)?
            }
            Err(e) => return Err(e),
        };
        let mut delay = Duration::from_millis(2);
        loop {
            if try_lock_exclusive(&file)? {
                return Ok(MountGuard { _file: file });
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(50));
        }
    }
}

/// `flock(LOCK_EX | LOCK_NB)`: Ok(false) while another holder has it.
fn try_lock_exclusive(file: &std::fs::File) -> std::io::Result<bool> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a descriptor this function borrows for the call; no memory is
    // passed.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(true);
    }
    let err = std::io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EWOULDBLOCK) | Some(libc::EINTR) => Ok(false),
        _ => Err(err),
    }
}

/// Runs zfs commands. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Zfs {
    program: PathBuf,
    flavor: Flavor,
    timeout: Duration,
    /// Held around the commands that change mounts ([`changes_mounts`]); set on zfs-fuse.
    mount_lock: Option<MountLock>,
    /// Every command started (tests prove that a refused request ran none).
    counter: Arc<AtomicU64>,
    /// How long a destroy or rollback keeps retrying "busy".
    busy_for: Duration,
}

/// How long a destroy or rollback keeps retrying "busy" by default.
pub const DEFAULT_BUSY_FOR: Duration = Duration::from_secs(30);

impl Zfs {
    /// Detects the flavor of `program` (`zfs version` succeeds on OpenZFS ≥ 0.8 only).
    pub async fn detect(program: impl Into<PathBuf>, timeout: Duration) -> Zfs {
        let mut zfs = Zfs::with_flavor(program, Flavor::Fuse, timeout);
        let version = zfs.run(vec!["version".into()]).await;
        if matches!(&version, Ok(out) if out.starts_with("zfs-")) {
            zfs.flavor = Flavor::OpenZfs;
            zfs.mount_lock = None;
        }
        tracing::info!(
            flavor = ?zfs.flavor,
            mount_lock = ?zfs.mount_lock.as_ref().map(MountLock::path),
            "zfs CLI detected"
        );
        zfs
    }

    /// Without detection (tests, or when the flavor is known). zfs-fuse gets the mount
    /// lock [`FUSE_MOUNT_LOCK`].
    pub fn with_flavor(program: impl Into<PathBuf>, flavor: Flavor, timeout: Duration) -> Zfs {
        Zfs {
            program: program.into(),
            flavor,
            timeout,
            mount_lock: (flavor == Flavor::Fuse).then(|| MountLock::new(FUSE_MOUNT_LOCK)),
            counter: Arc::new(AtomicU64::new(0)),
            busy_for: DEFAULT_BUSY_FOR,
        }
    }

    /// Changes how long a destroy or rollback keeps retrying "busy".
    pub fn with_busy_for(mut self, busy_for: Duration) -> Zfs {
        self.busy_for = busy_for;
        self
    }

    /// Replaces the mount lock (None: mount-changing commands run concurrently).
    pub fn with_mount_lock(mut self, lock: Option<MountLock>) -> Zfs {
        self.mount_lock = lock;
        self
    }

    pub fn mount_lock(&self) -> Option<&MountLock> {
        self.mount_lock.as_ref()
    }

    /// The mount lock, held, when `args` change mounts and this CLI needs it.
    async fn lock_for(&self, args: &[String]) -> Result<Option<MountGuard>, ZfsError> {
        match &self.mount_lock {
            Some(lock) if changes_mounts(args) => {
                lock.acquire().await.map(Some).map_err(|e| ZfsError::Spawn {
                    command: Self::describe(args),
                    error: format!("cannot lock {}: {e}", lock.path().display()),
                })
            }
            _ => Ok(None),
        }
    }

    pub fn flavor(&self) -> Flavor {
        self.flavor
    }

    /// How many commands this layer has started.
    pub fn commands_run(&self) -> u64 {
        self.counter.load(Ordering::SeqCst)
    }

    fn describe(args: &[String]) -> String {
        format!("zfs {}", args.join(" "))
    }

    fn command(&self, args: &[String]) -> Command {
        self.counter.fetch_add(1, Ordering::SeqCst);
        let mut cmd = Command::new(&self.program);
        cmd.args(args)
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd
    }

    /// Runs `zfs args…` to completion; its stdout.
    pub async fn run(&self, args: Vec<String>) -> Result<String, ZfsError> {
        let command = Self::describe(&args);
        tracing::debug!(%command, "zfs");
        let work = async {
            // Waiting for the mount lock counts against the command's timeout.
            let _held = self.lock_for(&args).await?;
            let child = self.command(&args).spawn().map_err(|e| ZfsError::Spawn {
                command: command.clone(),
                error: e.to_string(),
            })?;
            Ok::<_, ZfsError>(child.wait_with_output().await)
        };
        let output = match tokio::time::timeout(self.timeout, work).await {
            Err(_) => {
                return Err(ZfsError::Timeout {
                    command,
                    after: self.timeout,
                })
            }
            // The lock or the spawn failed.
            Ok(Err(e)) => return Err(e),
            Ok(Ok(Err(e))) => {
                return Err(ZfsError::Spawn {
                    command,
                    error: e.to_string(),
                })
            }
            Ok(Ok(Ok(o))) => o,
        };
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(ZfsError::Failed {
                status: output.status.to_string(),
                command,
                stderr: String::from_utf8_lossy(&output.stderr)
                    .trim_end()
                    .to_string(),
            })
        }
    }

    /// Runs a command, retrying while zfs-fuse says "dataset is busy" (for `busy_for`),
    /// each retry logged with zfs's answer.
    async fn run_retry_busy(&self, args: Vec<String>) -> Result<String, ZfsError> {
        let start = std::time::Instant::now();
        let mut delay = Duration::from_millis(100);
        let mut tries = 0u32;
        loop {
            tries += 1;
            match self.run(args.clone()).await {
                Err(e) if e.busy() && start.elapsed() < self.busy_for => {
                    tracing::warn!(command = %Self::describe(&args), try_ = tries, reason = %e.stderr(), "busy, retrying in {delay:?}");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
                other => return other,
            }
        }
    }

    /// Unmounts every mounted filesystem of `name` (with `descendants`, and of every
    /// descendant), deepest first, each once: a plain `zfs unmount`, never `-f`. On
    /// zfs-fuse a forced unmount is a lazy one, and once the last file open on such a
    /// detached mount is closed zfs-fuse loops in its FUSE destroy handler for good:
    /// every mount of the machine stops answering (reproduced here).
    async fn unmount_tree(&self, name: &str, descendants: bool) -> Result<(), ZfsError> {
        for mount in crate::holders::mounts_of(name, descendants) {
            match self
                .run(vec!["unmount".into(), mount.dataset.clone()])
                .await
            {
                Ok(_) => {}
                Err(e) if e.not_mounted() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// `zfs destroy [-r] name` of a filesystem or volume: its mounted filesystems are
    /// unmounted first (deepest first; destroying mounted clones is what zfs-fuse
    /// answers "dataset is busy" to, 3 times in 20 here, never once unmounted first),
    /// then it is destroyed; while either is busy, both are tried again with backoff
    /// for `busy_for`, each retry logged with its reason and what holds the dataset.
    /// Still busy then: [`ZfsError::Held`], naming the filesystems still mounted and
    /// the processes using them.
    async fn destroy_tree(&self, name: &str, recursive: bool) -> Result<(), ZfsError> {
        let args = argv::destroy(name, recursive);
        let start = std::time::Instant::now();
        let mut delay = Duration::from_millis(100);
        let mut tries = 0u32;
        loop {
            tries += 1;
            let attempt = match self.unmount_tree(name, recursive).await {
                Ok(()) => self.run(args.clone()).await.map(drop),
                Err(e) => Err(e),
            };
            match attempt {
                Ok(()) => {
                    if tries > 1 {
                        tracing::info!(dataset = %name, tries, waited = ?start.elapsed(), "destroyed after busy retries");
                    }
                    return Ok(());
                }
                Err(e) if e.busy() => {
                    let held = crate::holders::describe(name);
                    if start.elapsed() >= self.busy_for {
                        return Err(ZfsError::Held {
                            command: Self::describe(&args),
                            stderr: e
                                .stderr()
                                .lines()
                                .map(str::trim)
                                .filter(|l| !l.is_empty())
                                .collect::<Vec<_>>()
                                .join(" "),
                            tries,
                            waited: start.elapsed(),
                            held,
                        });
                    }
                    tracing::warn!(dataset = %name, try_ = tries, reason = %e.stderr(), %held, "busy, retrying in {delay:?}");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn parse(&self, args: &[String], text: &str) -> Result<Vec<Dataset>, ZfsError> {
        let parsed = match self.flavor {
            Flavor::OpenZfs => parse_list(text),
            Flavor::Fuse => parse_get(text),
        };
        parsed.map_err(|detail| ZfsError::Parse {
            command: Self::describe(args),
            detail,
        })
    }

    /// The dataset `name`.
    pub async fn get(&self, name: &str) -> Result<Dataset, ZfsError> {
        let args = argv::query(self.flavor, name, false);
        let text = self.run(args.clone()).await?;
        self.parse(&args, &text)?
            .into_iter()
            .find(|d| d.name == name)
            .ok_or_else(|| ZfsError::Parse {
                command: Self::describe(&args),
                detail: format!("no row for {name}"),
            })
    }

    /// `name` and every descendant, snapshots included, in listing order.
    pub async fn list(&self, name: &str) -> Result<Vec<Dataset>, ZfsError> {
        let args = argv::query(self.flavor, name, true);
        let text = self.run(args.clone()).await?;
        self.parse(&args, &text)
    }

    /// The snapshots of `name` and of its descendants.
    pub async fn snapshots(&self, name: &str) -> Result<Vec<Dataset>, ZfsError> {
        Ok(self
            .list(name)
            .await?
            .into_iter()
            .filter(|d| d.kind == Kind::Snapshot)
            .collect())
    }

    pub async fn create_filesystem(&self, name: &str, compress: bool) -> Result<(), ZfsError> {
        self.run(argv::create_filesystem(self.flavor, name, compress))
            .await
            .map(drop)
    }

    pub async fn create_volume(&self, name: &str, bytes: u64) -> Result<(), ZfsError> {
        self.run(argv::create_volume(self.flavor, name, bytes))
            .await
            .map(drop)
    }

    pub async fn clone_snapshot(&self, snapshot: &str, dest: &str) -> Result<(), ZfsError> {
        self.run(argv::clone(self.flavor, snapshot, dest))
            .await
            .map(drop)
    }

    pub async fn snapshot(&self, name: &str, recursive: bool) -> Result<(), ZfsError> {
        self.run(argv::snapshot(name, recursive)).await.map(drop)
    }

    /// Destroys `name`: a snapshot at once (retrying zfs-fuse's transient "dataset is
    /// busy"); a filesystem or volume after unmounting it ([`Zfs::destroy_tree`]).
    pub async fn destroy(&self, name: &str, recursive: bool) -> Result<(), ZfsError> {
        if name.contains('@') {
            return self
                .run_retry_busy(argv::destroy(name, recursive))
                .await
                .map(drop);
        }
        self.destroy_tree(name, recursive).await
    }

    pub async fn rollback(
        &self,
        snapshot: &str,
        destroy_more_recent: bool,
    ) -> Result<(), ZfsError> {
        self.run_retry_busy(argv::rollback(snapshot, destroy_more_recent))
            .await
            .map(drop)
    }

    /// Unmounts the filesystem `name` and its mounted descendants (deepest first), then
    /// mounts them again: the kernel then holds no cached page of what they held.
    pub async fn remount_tree(&self, name: &str) -> Result<(), ZfsError> {
        let mut filesystems: Vec<String> = self
            .list(name)
            .await?
            .into_iter()
            .filter(|d| d.kind == Kind::Filesystem && d.mountpoint.is_some())
            .map(|d| d.name)
            .collect();
        filesystems.sort_by_key(|n| n.matches('/').count());
        for fs in filesystems.iter().rev() {
            self.run_retry_busy(vec!["umount".into(), fs.clone()])
                .await?;
        }
        for fs in &filesystems {
            self.run(vec!["mount".into(), fs.clone()]).await?;
        }
        Ok(())
    }

    /// Starts `zfs send [-R] snapshot` with stdout piped (no timeout: the reader paces it).
    pub fn spawn_send(&self, snapshot: &str, replicate: bool) -> Result<Child, ZfsError> {
        let args = argv::send(snapshot, replicate);
        tracing::debug!(command = %Self::describe(&args), "zfs");
        let child = self.command(&args).spawn().map_err(|e| ZfsError::Spawn {
            command: Self::describe(&args),
            error: e.to_string(),
        })?;
        if let Some(stdout) = child.stdout.as_ref() {
            widen_pipe(stdout);
        }
        Ok(child)
    }

    /// `zfs receive dest` fed from `input`, bounded by `timeout`.
    pub async fn receive<R>(
        &self,
        dest: &str,
        mut input: R,
        timeout: Duration,
    ) -> Result<(), ZfsError>
    where
        R: tokio::io::AsyncRead + Unpin + Send,
    {
        let args = argv::receive(dest);
        let command = Self::describe(&args);
        tracing::debug!(%command, "zfs");
        // Held for the whole stream, as the received filesystem is mounted at its end
        // (zfs-fuse 0.7 lists no `receive -u`; the stress runs of docs/zfs.md held it
        // so). Its wait has its own `timeout`, before the stream's.
        let _held = match tokio::time::timeout(timeout, self.lock_for(&args)).await {
            Ok(held) => held?,
            Err(_) => {
                return Err(ZfsError::Timeout {
                    command,
                    after: timeout,
                })
            }
        };
        let mut cmd = self.command(&args);
        cmd.stdin(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| ZfsError::Spawn {
            command: command.clone(),
            error: e.to_string(),
        })?;
        let mut stdin = child.stdin.take();
        let mut stderr = child.stderr.take();
        let work = async {
            let copied = match stdin.as_mut() {
                Some(w) => tokio::io::copy(&mut input, w).await.map(drop),
                None => Ok(()),
            };
            drop(stdin.take());
            let mut err_text = String::new();
            if let Some(e) = stderr.as_mut() {
                let _ = e.read_to_string(&mut err_text).await;
            }
            let status = child.wait().await;
            (copied, err_text, status)
        };
        let (copied, err_text, status) = match tokio::time::timeout(timeout, work).await {
            Err(_) => {
                return Err(ZfsError::Timeout {
                    command,
                    after: timeout,
                })
            }
            Ok(r) => r,
        };
        let status = status.map_err(|e| ZfsError::Spawn {
            command: command.clone(),
            error: e.to_string(),
        })?;
        if !status.success() {
            return Err(ZfsError::Failed {
                status: status.to_string(),
                command,
                stderr: err_text.trim_end().to_string(),
            });
        }
        if let Err(e) = copied {
            return Err(ZfsError::Spawn {
                command,
                error: format!("writing the stream: {e}"),
            });
        }
        Ok(())
    }
}

/// Asks for a 1 MiB pipe buffer (Linux; best effort): `zfs send` then writes, and the
/// HTTP layer forwards, chunks of up to 1 MiB instead of 64 KiB.
fn widen_pipe(pipe: &impl std::os::fd::AsRawFd) {
    #[cfg(target_os = "linux")]
    {
        let fd = pipe.as_raw_fd();
        // SAFETY: fcntl on a descriptor we own; F_SETPIPE_SZ only resizes the buffer and
        // its failure (e.g. above /proc/sys/fs/pipe-max-size) is harmless.
        let _ = unsafe { libc::fcntl(fd, libc::F_SETPIPE_SZ, 1 << 20) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Captured from OpenZFS 2.1 (`zfs list -H -p -o LIST_COLUMNS -t all -r mistify`), a
    /// zvol-mode host with one image and one guest disk.
    const OPENZFS_LIST: &str = "mistify\tfilesystem\t1128267776\t9547235328\t/mistify\t-\t-\t98304\t0
mistify/guests\tfilesystem\t1074008064\t9547235328\t/mistify/guests\t-\t-\t98304\t0
mistify/guests/5a0c\tfilesystem\t1073913856\t9547235328\t/mistify/guests/5a0c\t-\t-\t98304\t0
mistify/guests/5a0c@snap-1433160000\tsnapshot\t0\t-\t-\t-\t-\t0\t-
mistify/guests/5a0c/disk-0\tvolume\t1073815552\t10620952576\t-\t1073741824\tmistify/images/ubuntu@base\t73728\t-
mistify/guests/5a0c/disk-0@snap-1433160000\tsnapshot\t0\t-\t-\t1073741824\t-\t73728\t-
mistify/images\tfilesystem\t54071296\t9547235328\t/mistify/images\t-\t-\t110592\t0
mistify/images/ubuntu\tvolume\t53960704\t9547235328\t-\t1073741824\t-\t12288\t-
mistify/images/ubuntu@base\tsnapshot\t0\t-\t-\t1073741824\t-\t53948416\t-
";

    #[test]
    fn golden_openzfs_list_parsing() {
        let rows = parse_list(OPENZFS_LIST).unwrap();
        assert_eq!(rows.len(), 9);
        let disk = &rows[4];
        assert_eq!(disk.name, "mistify/guests/5a0c/disk-0");
        assert_eq!(disk.kind, Kind::Volume);
        assert_eq!(disk.volsize, 1 << 30);
        assert_eq!(disk.mountpoint, None);
        assert_eq!(disk.origin.as_deref(), Some("mistify/images/ubuntu@base"));
        assert_eq!(rows[0].avail, 9547235328);
        assert_eq!(rows[0].mountpoint.as_deref(), Some("/mistify"));
        let image_snap = &rows[8];
        assert_eq!(image_snap.kind, Kind::Snapshot);
        assert_eq!(image_snap.written, 53948416);
        assert_eq!(image_snap.snap_name(), Some("base"));
        assert_eq!(image_snap.avail, 0);
        assert!(parse_list("a\tb\n").is_err());
    }

    /// Captured from zfs-fuse 0.7 on this machine.
    const FUSE_GET: &str = "zxp/images\ttype\tfilesystem
zxp/images\tused\t2334720
zxp/images\tavailable\t165556224
zxp/images\tmountpoint\t/zxp/images
zxp/images\tvolsize\t-
zxp/images\torigin\t-
zxp/images\tquota\t0
zxp/images/foo@image\ttype\tsnapshot
zxp/images/foo@image\tused\t0
zxp/images/foo@image\tavailable\t-
zxp/images/foo@image\tmountpoint\t-
";

    #[test]
    fn golden_fuse_get_parsing() {
        let rows = parse_get(FUSE_GET).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].kind, Kind::Filesystem);
        assert_eq!(rows[0].used, 2334720);
        assert_eq!(rows[0].avail, 165556224);
        assert_eq!(rows[0].mountpoint.as_deref(), Some("/zxp/images"));
        assert_eq!(rows[1].kind, Kind::Snapshot);
        assert_eq!(rows[1].mountpoint, None);
    }

    fn joined(v: Vec<String>) -> String {
        v.join(" ")
    }

    #[test]
    fn golden_argv() {
        use argv::*;
        let o = Flavor::OpenZfs;
        let f = Flavor::Fuse;
        assert_eq!(
            joined(query(o, "mistify/guests", true)),
            "list -H -p -o name,type,used,avail,mountpoint,volsize,origin,written,quota -t all -r mistify/guests"
        );
        assert_eq!(
            joined(query(o, "mistify/images/u", false)),
            "list -H -p -o name,type,used,avail,mountpoint,volsize,origin,written,quota -t all mistify/images/u"
        );
        assert_eq!(
            joined(query(f, "zxp/images", true)),
            "get -H -p -o name,property,value -r type,used,available,mountpoint,volsize,origin,quota zxp/images"
        );
        // zvol mode (OpenZFS only).
        assert_eq!(
            joined(create_volume(o, "mistify/guests/g/disk-1", 64 << 20)),
            "create -p -V 67108864 -o compression=lz4 mistify/guests/g/disk-1"
        );
        assert_eq!(
            joined(clone(o, "mistify/images/u@base", "mistify/guests/g/disk-0")),
            "clone -p -o compression=lz4 mistify/images/u@base mistify/guests/g/disk-0"
        );
        assert_eq!(
            joined(clone(f, "zxp/images/u@base", "zxp/guests/g/disk-0")),
            "clone -p -o compression=on zxp/images/u@base zxp/guests/g/disk-0"
        );
        assert_eq!(
            joined(create_filesystem(f, "zxp/guests/g/disk-1", true)),
            "create -p -o compression=on zxp/guests/g/disk-1"
        );
        assert_eq!(
            joined(create_filesystem(o, "p/images", false)),
            "create -p p/images"
        );
        assert_eq!(
            joined(snapshot("p/guests/g@s", true)),
            "snapshot -r p/guests/g@s"
        );
        assert_eq!(
            joined(snapshot("p/guests/g@s", false)),
            "snapshot p/guests/g@s"
        );
        assert_eq!(joined(destroy("p/guests/g", true)), "destroy -r p/guests/g");
        assert_eq!(joined(rollback("p/g@s", true)), "rollback -r p/g@s");
        assert_eq!(joined(rollback("p/g@s", false)), "rollback p/g@s");
        assert_eq!(joined(send("p/g@s", true)), "send -R p/g@s");
        assert_eq!(joined(send("p/g/disk-0@s", false)), "send p/g/disk-0@s");
        assert_eq!(joined(receive("p/images/u")), "receive p/images/u");
    }

    #[test]
    fn error_classification() {
        let e = ZfsError::Failed {
            status: "exit status: 1".into(),
            command: "zfs list x".into(),
            stderr: "cannot open 'x': dataset does not exist".into(),
        };
        assert!(e.not_found());
        assert!(!e.busy());
        assert_eq!(
            e.to_string(),
            "exit status: 1: \"zfs list x\" => cannot open 'x': dataset does not exist"
        );
        let umount = ZfsError::Failed {
            status: "exit status: 1".into(),
            command: "zfs unmount p/g".into(),
            stderr: "umount: /m/g: target is busy.\ncannot unmount '/m/g': umount failed".into(),
        };
        assert!(umount.busy());
        let gone = ZfsError::Failed {
            status: "exit status: 1".into(),
            command: "zfs unmount p/g".into(),
            stderr: "cannot unmount 'p/g': not currently mounted".into(),
        };
        assert!(gone.not_mounted() && !gone.busy());
        let held = ZfsError::Held {
            command: "zfs destroy -r p/g".into(),
            stderr: "cannot destroy 'p/g': dataset is busy".into(),
            tries: 6,
            waited: Duration::from_millis(3240),
            held: "still mounted: p/g at /m/g; in use by pid 7 (qemu) /m/g/disk.img".into(),
        };
        assert!(held.busy());
        assert_eq!(
            held.to_string(),
            "zfs destroy -r p/g: still busy after 6 tries in 3.2 s: cannot destroy 'p/g': \
             dataset is busy; still mounted: p/g at /m/g; in use by pid 7 (qemu) /m/g/disk.img"
        );
    }
}
