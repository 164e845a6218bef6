//! The dev hypervisor stack (`config/services/dev` under `mistify-supervisord`) on free
//! ports, with its own data directory and pool, for end-to-end tests. `make run` starts
//! the same manifests.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::{free_port, workspace_root, TempDir};

/// Serialises the start of zfs-fuse within one test process.
static ZFS_FUSE: Mutex<()> = Mutex::new(());

fn quiet(cmd: &mut Command) -> bool {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Held (`flock`) around every `zpool create`, `import`, `export` and `destroy` on this
/// machine, by the tests and by the dev pool's manifest, and by `mistify-zfs` around
/// every zfs command that mounts or unmounts on zfs-fuse: zfs-fuse stops serving its
/// FUSE mounts for good when two pools are created at once (seen here: two concurrent
/// `zpool create` wedged it within 2 to 10 rounds; with this lock, 30 of 30 passed), and
/// when two stacks receive and clone at once (3 wedges in 76 rounds without the lock, 0 in
/// 225 with it).
pub const ZPOOL_LOCK: &str = "/tmp/mistify-zpool.lock";

/// `zpool` under [`ZPOOL_LOCK`] (through `flock`, so other processes and shell scripts
/// take the same lock); add the subcommand and its arguments.
pub fn zpool_locked() -> Command {
    let mut cmd = Command::new("flock");
    cmd.args([ZPOOL_LOCK, "zpool"]).env("LC_ALL", "C");
    cmd
}

/// `zfs` under [`ZPOOL_LOCK`], for the tests' own commands that mount or unmount
/// (`create`, `receive`, `destroy`, …): `mistify-zfs` holds the same lock around its
/// own on zfs-fuse (`mistify_zfs::zfs::FUSE_MOUNT_LOCK`), as two mounts at once wedge
/// zfs-fuse too. Add the subcommand and its arguments.
pub fn zfs_locked() -> Command {
    let mut cmd = Command::new("flock");
    cmd.args([ZPOOL_LOCK, "zfs"]).env("LC_ALL", "C");
    cmd
}

/// How long a destroy keeps retrying zfs-fuse's transient "busy".
pub const BUSY_RETRY_FOR: Duration = Duration::from_secs(30);

/// Runs `cmd()` until it succeeds; while it fails with zfs-fuse's transient "is busy"
/// (a dataset just received or cloned, a pool whose mounts are still being released),
/// again every 250 ms for up to [`BUSY_RETRY_FOR`]; any other failure at once. Err with
/// the last error text.
fn retry_busy(what: &str, cmd: impl Fn() -> Command, between: impl Fn()) -> Result<(), String> {
    let deadline = Instant::now() + BUSY_RETRY_FOR;
    loop {
        let out = cmd()
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("{what}: cannot run: {e}"))?;
        if out.status.success() {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if !text.contains("busy") || Instant::now() > deadline {
            return Err(format!("{what}: {text}"));
        }
        between();
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// `zfs destroy -r name` under [`ZPOOL_LOCK`], tolerating zfs-fuse's transient "dataset
/// is busy" ([`retry_busy`]). The one destroy of the tests' own datasets.
pub fn destroy_dataset(name: &str) -> Result<(), String> {
    retry_busy(
        &format!("zfs destroy -r {name}"),
        || {
            let mut cmd = zfs_locked();
            cmd.args(["destroy", "-r", name]);
            cmd
        },
        || {},
    )
}

/// `zpool destroy pool` under [`ZPOOL_LOCK`], its filesystems unmounted first (deepest
/// first), tolerating zfs-fuse's transient "pool is busy" (unmounting again between
/// tries). Never `-f` (`zfs unmount -f`, `zpool destroy -f`): on zfs-fuse a forced
/// unmount is a lazy one, and once the last file open on the detached mount is closed
/// zfs-fuse loops for good in its FUSE destroy handler, every mount of the machine with
/// it (reproduced here). Ok when the pool is gone (or was never imported).
pub fn destroy_pool(pool: &str) -> Result<(), String> {
    if !quiet(Command::new("zpool").args(["list", pool])) {
        return Ok(());
    }
    let unmount = || {
        let out = Command::new("zfs")
            .args(["list", "-H", "-o", "name", "-t", "filesystem", "-r", pool])
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .output();
        let names = out
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let mounted = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        for name in names.lines().rev() {
            let source = format!("{name} ");
            if mounted.lines().any(|l| l.starts_with(&source)) {
                let _ = quiet(zfs_locked().args(["unmount", name]));
            }
        }
    };
    unmount();
    retry_busy(
        &format!("zpool destroy {pool}"),
        || {
            let mut cmd = zpool_locked();
            cmd.args(["destroy", pool]);
            cmd
        },
        unmount,
    )
}

/// Whether `zpool list` answers (a zfs-fuse daemon runs and is ready).
pub fn zpool_works() -> bool {
    quiet(Command::new("zpool").arg("list"))
}

/// The mountpoints of zfs-fuse's filesystems in `/proc/mounts` text (type `fuse.zfs`).
pub fn zfs_fuse_mounts(proc_mounts: &str) -> Vec<String> {
    proc_mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(' ');
            let (_source, target, kind) = (fields.next()?, fields.next()?, fields.next()?);
            (kind == "fuse.zfs").then(|| target.replace("\\040", " "))
        })
        .collect()
}

/// How long a zfs-fuse mount may take to answer `statfs` before the daemon counts as
/// wedged.
const WEDGE_PROBE: &str = "10";

/// Err when one of zfs-fuse's mounts does not answer `statfs` in 10 s: a wedged
/// zfs-fuse (docs/zfs.md) answers `zpool list` but no FUSE request, and every later ZFS
/// test would wait for it until the run's timeout. A mount that goes away meanwhile is
/// not a wedge.
pub fn check_zfs_fuse_serves() -> Result<(), String> {
    let text = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    for mount in zfs_fuse_mounts(&text) {
        // SIGKILL: a caller waiting on a FUSE request can only be killed.
        let status = Command::new("timeout")
            .args(["-s", "KILL", WEDGE_PROBE, "stat", "-f", "--"])
            .arg(&mount)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(|e| format!("cannot run timeout(1): {e}"))?;
        // timeout(1) kills its own process group too, itself included: the wait ran
        // out when timeout died of SIGKILL or said so (124, 137).
        use std::os::unix::process::ExitStatusExt;
        if status.signal() == Some(9) || matches!(status.code(), Some(124 | 137)) {
            return Err(format!(
                "zfs-fuse is wedged: its mount {mount} does not answer statfs in \
                 {WEDGE_PROBE} s, so every ZFS test would wait for it; kill zfs-fuse and \
                 `umount -l` its mounts (docs/zfs.md)"
            ));
        }
    }
    Ok(())
}

/// Makes sure a zfs-fuse daemon runs: one that runs is used; otherwise
/// `zfs-fuse --no-daemon` is started in its own process group and left running (it is
/// shared by every test process and never stopped by a test). Waits until `zpool list`
/// works. A running daemon that is wedged is an error ([`check_zfs_fuse_serves`]).
pub fn ensure_zfs_fuse() -> Result<(), String> {
    let _guard = ZFS_FUSE.lock().unwrap_or_else(|e| e.into_inner());
    if zpool_works() {
        return check_zfs_fuse_serves();
    }
    // A zfs-fuse that is starting gets a moment; one that never answers us (e.g. another
    // root's, visible through the shared pid namespace) is not ours to wait for.
    let serving = quiet(Command::new("pgrep").args(["-x", "zfs-fuse"])) && {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !zpool_works() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
        }
        zpool_works()
    };
    if !serving {
        use std::os::unix::process::CommandExt;
        let child = Command::new("zfs-fuse")
            .arg("--no-daemon")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot start zfs-fuse: {e}"))?;
        // Deliberately not waited for: the daemon outlives this process.
        std::mem::forget(child);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while !zpool_works() {
        if Instant::now() > deadline {
            return Err("zfs-fuse does not answer `zpool list` after 30 s".into());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

/// A running dev stack. Dropping it stops the supervisor (and with it every service) and
/// destroys the stack's pool.
pub struct DevStack {
    child: Option<Child>,
    data: TempDir,
    bin: PathBuf,
    env: Vec<(String, String)>,
    /// `http://127.0.0.1:PORT` of the agent.
    pub agent: String,
    /// `http://127.0.0.1:PORT` of the supervisor's REST API.
    pub supervisor: String,
    /// The stack's pool (unique per stack).
    pub pool: String,
    pub zfs_port: u16,
    pub libvirt_port: u16,
    pub image_port: u16,
    /// The cluster around the stack, when started with [`DevStack::start_cluster`].
    pub cluster: Option<DevCluster>,
}

/// What `make run` adds around the dev stack (config/services/cluster): etcd, the
/// controllers, a second hypervisor stack on 127.0.0.2, registration and heartbeats.
/// Ids of the registered objects are config/dev.env's defaults.
#[derive(Debug, Clone)]
pub struct DevCluster {
    /// `http://127.0.0.1:PORT` of etcd's client URL.
    pub etcd: String,
    /// Base URLs of cguestd, chypervisord and cnetworkd.
    pub guests: String,
    pub hypervisors: String,
    pub networks: String,
    /// `http://127.0.0.2:PORT` of the second hypervisor's agent.
    pub hv2_agent: String,
    /// The second hypervisor's pool.
    pub hv2_pool: String,
    ports: Vec<(&'static str, String)>,
}

impl DevCluster {
    /// The registered hypervisors' ids (config/dev.env).
    pub const HV1: &'static str = "6c6f6368-6e65-4573-8000-000000000001";
    pub const HV2: &'static str = "6c6f6368-6e65-4573-8000-000000000002";
    /// The registered network, subnet, flavor and firewall group (config/dev.env).
    pub const NETWORK: &'static str = "6c6f6368-6e65-4573-8000-6e6574000001";
    pub const SUBNET: &'static str = "6c6f6368-6e65-4573-8000-737562000001";
    pub const FLAVOR: &'static str = "6c6f6368-6e65-4573-8000-666c76000001";
    pub const FWGROUP: &'static str = "6c6f6368-6e65-4573-8000-667767000001";
    /// The registered subnet's range.
    pub const CIDR: &'static str = "10.99.0.0/24";

    fn new(pool: &str) -> DevCluster {
        let mut ports = Vec::new();
        let mut port = |name: &'static str| {
            let p = free_port();
            ports.push((name, p.to_string()));
            p
        };
        let etcd = port("ETCD_PORT");
        port("ETCD_PEER_PORT");
        port("ETCD_METRICS_PORT");
        let guests = port("GUESTS_PORT");
        let hypervisors = port("HYPERVISORS_PORT");
        let networks = port("NETWORKS_PORT");
        port("PLACER_PORT");
        port("WORKER_PORT");
        port("HV2_ZFS_PORT");
        port("HV2_LIBVIRT_PORT");
        let hv2 = free_port();
        let hv2_pool = format!("{pool}b");
        ports.push(("HV2_AGENT_ADDRESS", format!("127.0.0.2:{hv2}")));
        ports.push(("HV2_POOL", hv2_pool.clone()));
        ports.push(("HEARTBEAT_TTL", "10s".into()));
        DevCluster {
            etcd: format!("http://127.0.0.1:{etcd}"),
            guests: format!("http://127.0.0.1:{guests}"),
            hypervisors: format!("http://127.0.0.1:{hypervisors}"),
            networks: format!("http://127.0.0.1:{networks}"),
            hv2_agent: format!("http://127.0.0.2:{hv2}"),
            hv2_pool,
            ports,
        }
    }

    /// The environment of the cluster's manifests (and of scripts/dev-cluster.sh).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        self.ports.clone()
    }

    /// The environment the `lochness` CLI reads to find the three daemons.
    pub fn cli_env(&self) -> [(&'static str, String); 3] {
        [
            ("LOCHNESS_GUESTS", self.guests.clone()),
            ("LOCHNESS_HYPERVISORS", self.hypervisors.clone()),
            ("LOCHNESS_NETWORKS", self.networks.clone()),
        ]
    }
}

impl DevStack {
    /// Starts `mistify-supervisord` with the dev manifests, every port free and fresh, a
    /// data directory and a pool of its own; waits until the agent answers `/healthz`.
    /// `bin` is the directory of the built binaries (see [`crate::binary`]).
    pub fn start(bin: &Path, name: &str) -> Result<DevStack, String> {
        Self::start_with_env(bin, name, &[])
    }

    /// As [`DevStack::start`], with extra environment for the supervisor (and so for the
    /// manifests), e.g. `IMAGE_CHUNK_DELAY_MS` to slow the image server down.
    pub fn start_with_env(
        bin: &Path,
        name: &str,
        env: &[(&str, &str)],
    ) -> Result<DevStack, String> {
        Self::start_inner(bin, name, env, false)
    }

    /// The dev cluster of `make run` on free ports: the dev stack (hv1) plus
    /// config/services/cluster (etcd, the controllers, hv2 on 127.0.0.2, registration,
    /// heartbeats); waits until both agents answer and the registration has run.
    pub fn start_cluster(bin: &Path, name: &str) -> Result<DevStack, String> {
        Self::start_inner(bin, name, &[], true)
    }

    fn start_inner(
        bin: &Path,
        name: &str,
        env: &[(&str, &str)],
        cluster: bool,
    ) -> Result<DevStack, String> {
        ensure_zfs_fuse()?;
        let data = TempDir::new(&format!("stack-{name}"));
        let sup = data.path().join("supervisor");
        std::fs::create_dir_all(&sup).map_err(|e| e.to_string())?;
        let manifests = workspace_root().join("config").join("services");
        if cluster {
            // As scripts/run.sh: one link per manifest of both directories.
            let services = sup.join("services");
            std::fs::create_dir_all(&services).map_err(|e| e.to_string())?;
            for dir in ["dev", "cluster"] {
                let entries = std::fs::read_dir(manifests.join(dir))
                    .map_err(|e| format!("cannot read the {dir} manifests: {e}"))?;
                for entry in entries.flatten() {
                    std::os::unix::fs::symlink(entry.path(), services.join(entry.file_name()))
                        .map_err(|e| format!("cannot link the manifests: {e}"))?;
                }
            }
        } else {
            std::os::unix::fs::symlink(manifests.join("dev"), sup.join("services"))
                .map_err(|e| format!("cannot link the manifests: {e}"))?;
        }
        let (agent_port, sup_port) = (free_port(), free_port());
        let (zfs_port, libvirt_port, image_port) = (free_port(), free_port(), free_port());
        let pool = format!("mst{}x{}", std::process::id(), agent_port);
        let cluster = cluster.then(|| DevCluster::new(&pool));
        let mut stack = DevStack {
            child: None,
            data,
            bin: bin.to_path_buf(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            agent: format!("http://127.0.0.1:{agent_port}"),
            supervisor: format!("http://127.0.0.1:{sup_port}"),
            pool,
            zfs_port,
            libvirt_port,
            image_port,
            cluster,
        };
        stack.run_supervisor()?;
        Ok(stack)
    }

    /// Starts the stopped stack again on its data directory, pool and ports, as a
    /// second `make run` does; waits until the agent answers `/healthz`. The
    /// supervisor's log goes on in the same file.
    pub fn start_again(&mut self) -> Result<(), String> {
        if self.child.is_some() {
            return Err("the stack is running".into());
        }
        ensure_zfs_fuse()?;
        self.run_supervisor()
    }

    /// Spawns the supervisor and waits for the agent (180 s).
    fn run_supervisor(&mut self) -> Result<(), String> {
        let sup = self.data.path().join("supervisor");
        let agent = self.agent.trim_start_matches("http://").to_string();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data.path().join("supervisor.log"))
            .map_err(|e| e.to_string())?;
        let log2 = log.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new(self.bin.join("mistify-supervisord"))
            .args(["--addr", &self.supervisor, "--dir"])
            .arg(&sup)
            .env("MISTIFY_BIN", &self.bin)
            .env("MISTIFY_SRC", workspace_root())
            .env("MISTIFY_DATA", self.data.path())
            .env("MISTIFY_POOL", &self.pool)
            .env("MISTIFY_POOL_SIZE", "1G")
            .env("MISTIFY_LOG_LEVEL", "info")
            .env("AGENT_ADDRESS", &agent)
            .env("ZFS_PORT", self.zfs_port.to_string())
            .env("LIBVIRT_PORT", self.libvirt_port.to_string())
            .env("IMAGE_PORT", self.image_port.to_string())
            .env("LIBVIRT_URI", "test:///default")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .envs(self.cluster.iter().flat_map(DevCluster::env))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| format!("cannot start mistify-supervisord: {e}"))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            if http_ok(&format!("{}/healthz", self.agent)) && self.cluster_ready() {
                return Ok(());
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                return Err(format!(
                    "mistify-supervisord exited ({status}) before the agent was ready\n--- supervisor log, last 60 lines\n{}",
                    crate::tail(&self.log(), 60)
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "the agent was not ready after 180 s\n{}\n--- supervisor log, last 60 lines\n{}",
                    crate::diagnose(),
                    crate::tail(&self.log(), 60)
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Without a cluster, true; with one, whether hv2's agent answers and both
    /// hypervisors are registered and alive (chypervisord lists them with
    /// `?alive=true`: the registration has run to its end and both heartbeats are in
    /// etcd, so a guest can be placed).
    fn cluster_ready(&self) -> bool {
        let Some(c) = &self.cluster else {
            return true;
        };
        http_ok(&format!("{}/healthz", c.hv2_agent))
            && http_get(&format!("{}/hypervisors?alive=true", c.hypervisors)).is_some_and(
                |(status, body)| {
                    status == 200
                        && body.contains(DevCluster::HV1)
                        && body.contains(DevCluster::HV2)
                },
            )
    }

    /// The data directory (agent store, agent config, pool file, images).
    pub fn data(&self) -> &Path {
        self.data.path()
    }

    /// The supervisor's output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data.path().join("supervisor.log")).unwrap_or_default()
    }

    /// The pid of `mistify-supervisord`.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The supervisor and every process below it, each as `(pid, start time)` (field 22
    /// of `/proc/PID/stat`, so a reused pid is not mistaken for one of these later).
    pub fn processes(&self) -> Vec<(u32, u64)> {
        let Some(root) = self.pid() else {
            return Vec::new();
        };
        let table: Vec<(u32, u32, u64)> = std::fs::read_dir("/proc")
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
                    .filter_map(|pid| {
                        let (ppid, start) = stat_of(pid)?;
                        Some((pid, ppid, start))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mut found: Vec<(u32, u64)> = table
            .iter()
            .filter(|(pid, _, _)| *pid == root)
            .map(|(pid, _, start)| (*pid, *start))
            .collect();
        let mut i = 0;
        while i < found.len() {
            let parent = found[i].0;
            for (pid, ppid, start) in &table {
                if *ppid == parent && !found.iter().any(|(p, _)| p == pid) {
                    found.push((*pid, *start));
                }
            }
            i += 1;
        }
        found
    }

    /// SIGTERM to the supervisor, then waits up to `timeout` for it to stop every
    /// service and exit; its exit status (`None`: still running, then killed).
    pub fn stop(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.stop_with("TERM", timeout)
    }

    /// As [`DevStack::stop`] with SIGINT, what Ctrl-C of `make run` sends.
    pub fn interrupt(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.stop_with("INT", timeout)
    }

    fn stop_with(&mut self, signal: &str, timeout: Duration) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status();
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether the stack's pool is imported.
    pub fn pool_imported(&self) -> bool {
        quiet(Command::new("zpool").args(["list", &self.pool]))
            || self
                .cluster
                .as_ref()
                .is_some_and(|c| quiet(Command::new("zpool").args(["list", &c.hv2_pool])))
    }

    /// The pool's file (exported pools stay on it until the data directory goes).
    pub fn pool_file(&self) -> PathBuf {
        self.data.path().join("pool.img")
    }
}

impl Drop for DevStack {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(60));
        let hv2 = self.cluster.as_ref().map(|c| c.hv2_pool.clone());
        for pool in std::iter::once(self.pool.clone()).chain(hv2) {
            if let Err(e) = destroy_pool(&pool) {
                eprintln!("warning: the dev stack's pool {pool} is left: {e}");
            }
        }
    }
}

/// `(ppid, start time)` of a live process.
pub fn stat_of(pid: u32) -> Option<(u32, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state): ppid is field 4, starttime field 22.
    let ppid = fields.get(1)?.parse().ok()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((ppid, start))
}

/// Which of `procs` (from [`DevStack::processes`]) still run (same pid and start time,
/// not a zombie), after giving them up to 5 s to go.
pub fn still_running(procs: &[(u32, u64)]) -> Vec<u32> {
    let running = || -> Vec<u32> {
        procs
            .iter()
            .filter(|(pid, start)| {
                stat_of(*pid).is_some_and(|(_, s)| s == *start) && !is_zombie(*pid)
            })
            .map(|(pid, _)| *pid)
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = running();
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, r)| r.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// A plain HTTP/1.1 GET answered 2xx (std only: no client library needed here).
pub fn http_ok(url: &str) -> bool {
    http_get(url).is_some_and(|(status, _)| (200..300).contains(&status))
}

/// A plain HTTP/1.1 GET: status and body, `None` when nothing answers.
pub fn http_get(url: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://")?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let addr: std::net::SocketAddr = host.parse().ok()?;
    let mut stream =
        std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(
        stream,
        "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((status, body))
}

#[cfg(test)]
mod tests {
    use super::zfs_fuse_mounts;

    #[test]
    fn zfs_fuse_mounts_are_read_off_proc_mounts() {
        let text = "proc /proc proc rw,nosuid 0 0\n\
            kstat /zfs-kstat fuse rw,nosuid,nodev 0 0\n\
            mzt1x0 /tmp/mistify-mzt1x0/mnt fuse.zfs rw,relatime,user_id=0 0 0\n\
            mzt1x0/guests /tmp/with\\040space/mnt/guests fuse.zfs rw 0 0\n\
            /dev/vda / ext4 rw 0 0\n\
            truncated line\n";
        assert_eq!(
            zfs_fuse_mounts(text),
            vec![
                "/tmp/mistify-mzt1x0/mnt".to_string(),
                "/tmp/with space/mnt/guests".to_string()
            ]
        );
        assert!(zfs_fuse_mounts("").is_empty());
    }
}
