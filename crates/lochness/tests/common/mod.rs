//! Test harness: one real etcd per test binary on free loopback ports in a temporary
//! directory, and one key prefix per test.
#![allow(dead_code)]

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use lochness::{Context, Flavor, Guest, Hypervisor, Network, Resources, Subnet};

/// The client URL of this binary's etcd, started on first use. The etcd process gets
/// SIGKILL when this test process ends (it is spawned by a thread that lives as long as
/// the process, with `PR_SET_PDEATHSIG`).
pub fn etcd_url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        cleanup_stale_dirs();
        let client = mistify_e2e::free_port();
        let peer = mistify_e2e::free_port();
        let dir = scratch_dir().join(format!("lochness-etcd-{}-{client}", std::process::id()));
        let url = format!("http://127.0.0.1:{client}");
        let args = etcd_args(&dir, client, peer);
        let log = dir.with_extension("log");
        let stderr = log_file(&log);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut cmd = Command::new("etcd");
            cmd.args(&args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(stderr);
            // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
            unsafe {
                cmd.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
            let child = cmd.spawn();
            let ok = child.is_ok();
            let _ = tx.send(child.map(|c| c.id()).map_err(|e| e.to_string()));
            if ok {
                loop {
                    std::thread::park();
                }
            }
        });
        let pid = rx.recv().unwrap().expect("cannot start etcd");
        // A reaper removes the data directory once this test process is gone.
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "while kill -0 {me} 2>/dev/null; do sleep 0.5; done; kill -9 {pid} 2>/dev/null; sleep 0.2; rm -rf '{dir}' '{log}'",
                me = std::process::id(),
                dir = dir.display(),
                log = log.display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        // The child is held (unreaped) by the spawning thread: once it exits it is a
        // zombie, state `Z` in /proc.
        let exited = || {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let state = stat.rsplit_once(") ").map(|(_, rest)| rest.starts_with('Z'));
            (state != Some(false)).then(|| "etcd exited".to_string())
        };
        if let Err(why) = wait_healthy(&url, exited) {
            panic!("etcd at {url}: {why}; its log:\n{}", log_tail(&log));
        }
        url
    })
}

/// tmpfs when there is one (etcd's fsyncs are then cheap), else the temp dir.
fn scratch_dir() -> std::path::PathBuf {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() && std::fs::metadata(shm).is_ok_and(|m| !m.permissions().readonly()) {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

fn cleanup_stale_dirs() {
    for dir in [scratch_dir(), std::env::temp_dir()] {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(rest) = name.strip_prefix("lochness-etcd-") {
                let pid = rest.split('-').next().unwrap_or("");
                if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                    // The data directory, or the log beside it.
                    let _ = std::fs::remove_dir_all(e.path());
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }
}

fn etcd_args(dir: &std::path::Path, client: u16, peer: u16) -> Vec<String> {
    let url = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    [
        "--name",
        "default",
        "--data-dir",
        &dir.display().to_string(),
        "--listen-client-urls",
        &url,
        "--advertise-client-urls",
        &url,
        "--listen-peer-urls",
        &peer_url,
        "--initial-advertise-peer-urls",
        &peer_url,
        "--initial-cluster",
        &format!("default={peer_url}"),
        "--log-level",
        "error",
        "--logger",
        "zap",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// An etcd of one test (killed on drop), for tests that stop and restart it.
pub struct PrivateEtcd {
    child: std::process::Child,
    keep: bool,
    pub dir: std::path::PathBuf,
    pub client: u16,
    pub peer: u16,
}

impl PrivateEtcd {
    /// Starts an etcd in a fresh directory on free ports and waits for `/health`.
    pub fn start() -> PrivateEtcd {
        cleanup_stale_dirs();
        let (client, peer) = (mistify_e2e::free_port(), mistify_e2e::free_port());
        let dir = scratch_dir().join(format!("lochness-etcd-{}-{client}", std::process::id()));
        PrivateEtcd::start_at(dir, client, peer)
    }

    /// Starts (or restarts) an etcd on `dir` and the given ports. An etcd that exits
    /// before it is healthy is started again, up to 5 times a second apart: a restart
    /// on the same ports can find one still held for a moment (for instance by a client
    /// that, reconnecting while nothing listened, was given that port and connected to
    /// itself). Its stderr goes to `dir.log`, shown when it never becomes healthy.
    pub fn start_at(dir: std::path::PathBuf, client: u16, peer: u16) -> PrivateEtcd {
        let url = format!("http://127.0.0.1:{client}");
        let log = dir.with_extension("log");
        for attempt in 1.. {
            let mut child = Command::new("etcd")
                .args(etcd_args(&dir, client, peer))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log_file(&log))
                .spawn()
                .expect("cannot start etcd");
            let result = wait_healthy(&url, || match child.try_wait() {
                Ok(Some(status)) => Some(format!("etcd exited ({status})")),
                _ => None,
            });
            match result {
                Ok(()) => {
                    return PrivateEtcd {
                        child,
                        keep: false,
                        dir,
                        client,
                        peer,
                    }
                }
                Err(_) if attempt < 5 && matches!(child.try_wait(), Ok(Some(_))) => {
                    eprintln!(
                        "etcd at {url} exited at start (attempt {attempt}): {}",
                        log_tail(&log)
                    );
                    std::thread::sleep(Duration::from_secs(1));
                }
                Err(why) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("etcd at {url}: {why}; its log:\n{}", log_tail(&log));
                }
            }
        }
        unreachable!("the loop returns or panics")
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client)
    }

    /// Kills it (the data directory stays for a restart).
    pub fn kill(mut self) -> (std::path::PathBuf, u16, u16) {
        self.keep = true;
        let _ = self.child.kill();
        let _ = self.child.wait();
        (self.dir.clone(), self.client, self.peer)
    }
}

impl Drop for PrivateEtcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.dir);
            let _ = std::fs::remove_file(self.dir.with_extension("log"));
        }
    }
}

/// Waits until the etcd at `url` answers `/health`. `Err` with the reason once `gone`
/// says the process ended, or after 30 s.
fn wait_healthy(url: &str, mut gone: impl FnMut() -> Option<String>) -> Result<(), String> {
    let addr: std::net::SocketAddr = url
        .trim_start_matches("http://")
        .parse()
        .map_err(|e| format!("bad etcd URL {url}: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            use std::io::{Read, Write};
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let _ = s.write_all(b"GET /health HTTP/1.0\r\n\r\n");
            let mut body = String::new();
            let _ = s.read_to_string(&mut body);
            if body.contains("\"health\":\"true\"") {
                return Ok(());
            }
        }
        if let Some(why) = gone() {
            return Err(why);
        }
        if Instant::now() >= deadline {
            return Err("not healthy after 30 s".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A fresh file for an etcd's stderr (or nowhere, if it cannot be created).
fn log_file(path: &std::path::Path) -> Stdio {
    std::fs::File::create(path).map_or_else(|_| Stdio::null(), Stdio::from)
}

/// The last lines of an etcd's log, for a failure message.
fn log_tail(path: &std::path::Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// A context on this binary's etcd with a prefix of its own, or `None` when the etcd
/// suite is skipped.
pub async fn ctx() -> Option<Context> {
    if mistify_e2e::skipped("etcd") {
        return None;
    }
    let url = etcd_url();
    let prefix = format!("test-{}/", uuid_like());
    Some(Context::new(&[url], Some(&prefix)).await.unwrap())
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// Raw value of a relative key (under the context prefix).
pub async fn raw(ctx: &Context, rel: &str) -> Option<String> {
    ctx.get(rel).await.unwrap().map(|kv| kv.text())
}

/// Every relative key under a relative prefix.
pub async fn keys(ctx: &Context, rel: &str) -> Vec<String> {
    ctx.get_prefix(rel)
        .await
        .unwrap()
        .into_iter()
        .map(|kv| kv.key)
        .collect()
}

/// A saved flavor {memory, disk, cpu}.
pub async fn flavor(ctx: &Context, memory: u64, disk: u64, cpu: u32) -> Flavor {
    let mut f = ctx.new_flavor();
    f.image = lochness::codec::new_id();
    f.resources = Resources { memory, disk, cpu };
    f.save().await.unwrap();
    f
}

/// A saved network.
pub async fn network(ctx: &Context) -> Network {
    let mut n = ctx.new_network();
    n.save().await.unwrap();
    n
}

/// A saved subnet `cidr` with range `start`–`end` and gateway `gw`, attached to `net`.
pub async fn subnet(
    ctx: &Context,
    net: &mut Network,
    cidr: &str,
    start: &str,
    end: &str,
    gw: &str,
) -> Subnet {
    let mut s = ctx.new_subnet();
    s.cidr = Some(lochness::codec::parse_cidr(cidr).unwrap());
    s.start_range = Some(start.parse().unwrap());
    s.end_range = Some(end.parse().unwrap());
    s.gateway = Some(gw.parse().unwrap());
    s.save().await.unwrap();
    net.add_subnet(&mut s).await.unwrap();
    s
}

/// A saved hypervisor with `res` total and available.
pub async fn hypervisor(ctx: &Context, res: Resources) -> Hypervisor {
    let mut h = ctx.new_hypervisor();
    h.ip = Some("192.168.100.11".parse().unwrap());
    h.netmask = Some("255.255.255.0".parse().unwrap());
    h.gateway = Some("192.168.100.1".parse().unwrap());
    h.mac = Some(lochness::Mac::parse("96:E0:51:F9:31:C1").unwrap());
    h.total_resources = res;
    h.available_resources = res;
    h.save().await.unwrap();
    h
}

/// A new (unsaved) guest of `flavor` on `network`.
pub fn guest(ctx: &Context, flavor: &Flavor, network: &Network) -> Guest {
    let mut g = ctx.new_guest();
    g.flavor = flavor.id.clone();
    g.network = network.id.clone();
    g.kind = "kvm".into();
    g
}

/// A guest of a new small flavor on a new network, created with its placement job
/// (not placed), so that jobs can be queued for it.
pub async fn created_guest(ctx: &Context) -> Guest {
    let flavor = flavor(ctx, 512, 1024, 1).await;
    let network = network(ctx).await;
    let mut g = guest(ctx, &flavor, &network);
    ctx.create_guest_with_job(&mut g)
        .await
        .expect("create the guest");
    g
}

/// Marks hypervisor `id` alive with a plain key (no lease) for placement tests.
pub async fn mark_alive(ctx: &Context, id: &str) {
    ctx.client()
        .put(
            ctx.abs(&format!("lochness/hypervisors/{id}/heartbeat")),
            "alive",
            None,
        )
        .await
        .unwrap();
}
