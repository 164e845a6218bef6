//! Test support shared by every crate's integration tests, and the home of the
//! end-to-end tests (`tests/`).
//!
//! Tests never run cargo. The build phase of `make test` builds every binary and example
//! of the workspace once (`cargo build --workspace --bins --examples`); a test finds a
//! binary of its own crate with `env!("CARGO_BIN_EXE_<name>")`, and any other with
//! [`binary`] or [`example`], which only look under `target/` and fail with a message
//! naming what to build. [`Daemon`] runs one as a child process that is killed when the
//! test ends. [`free_port`] picks a free loopback port.

pub mod etcd;
pub mod netns;
pub mod pki;
pub mod recorded;
pub mod stack;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The `sh` blocks of README.md between `<!-- NAME:begin -->` and `<!-- NAME:end -->`,
/// one string each, in order (the walk-throughs the tests run as written).
pub fn readme_blocks(name: &str) -> Vec<String> {
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).expect("README.md");
    let begin = format!("<!-- {name}:begin -->");
    let end = format!("<!-- {name}:end -->");
    let start = readme
        .find(&begin)
        .unwrap_or_else(|| panic!("README.md has no {begin} marker"));
    let stop = readme[start..]
        .find(&end)
        .map(|i| start + i)
        .unwrap_or_else(|| panic!("README.md has no {end} marker after {begin}"));
    let mut blocks = Vec::new();
    let mut block = String::new();
    let mut inside = false;
    for line in readme[start..stop].lines() {
        if inside && line.trim_start().starts_with("```") {
            inside = false;
            blocks.push(std::mem::take(&mut block));
        } else if inside {
            block.push_str(line);
            block.push('\n');
        } else if line.trim_start().starts_with("```sh") {
            inside = true;
        }
    }
    blocks
}

/// The workspace root (the directory of the top-level `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| here.to_path_buf())
}

/// `tests/fixtures` of the workspace.
pub fn fixtures_dir() -> PathBuf {
    workspace_root().join("tests").join("fixtures")
}

/// `../shared` beside the workspace, when this checkout has one.
pub fn shared_dir() -> Option<PathBuf> {
    let dir = workspace_root().parent()?.join("shared");
    dir.is_dir().then_some(dir)
}

/// The profile directory the running test was built into (`target/debug` or
/// `target/release`): the test executable lives in its `deps/`.
pub fn profile_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent()?.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| workspace_root().join("target").join("debug"))
}

/// `path`, when it is a built file; otherwise the test cannot run, and the message says
/// what to build.
fn built(what: &str, path: PathBuf) -> PathBuf {
    assert!(
        path.is_file(),
        "{what} is not built ({} is missing): tests never run cargo; build every binary \
         and example first with `cargo build --workspace --bins --examples` (the build \
         phase of `make test` does), with `--release` for a release test run",
        path.display()
    );
    path
}

/// Path of the workspace binary `name` (of any crate), as the build phase left it.
///
/// # Panics
/// When it has not been built, naming the command that builds it.
pub fn binary(name: &str) -> PathBuf {
    built(&format!("the binary {name}"), profile_dir().join(name))
}

/// Path of the example `name` of any workspace crate, as the build phase left it.
///
/// # Panics
/// As [`binary`].
pub fn example(name: &str) -> PathBuf {
    built(
        &format!("the example {name}"),
        profile_dir().join("examples").join(name),
    )
}

/// The arguments that start `mistify-agent` on `127.0.0.1:port` with the configuration
/// file `config`, its store at `db`, logging at `level`.
pub fn agent_args(config: &Path, db: &Path, port: u16, level: &str) -> Vec<String> {
    vec![
        "-a".into(),
        format!("127.0.0.1:{port}"),
        "-c".into(),
        config.display().to_string(),
        "--db-path".into(),
        db.display().to_string(),
        "--log-level".into(),
        level.into(),
    ]
}

/// `tests/fixtures/wire/agent-test-rpc.json` (the agent configuration of the wire
/// recordings) with every service moved to `port`, where a `test-rpc-service` listens.
///
/// # Panics
/// When the fixture cannot be read: the test cannot run.
pub fn agent_test_rpc_config(port: u16) -> serde_json::Value {
    let path = fixtures_dir().join("wire").join("agent-test-rpc.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let mut config: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
    if let Some(services) = config["services"].as_object_mut() {
        for service in services.values_mut() {
            service["port"] = port.into();
        }
    }
    config
}

/// Whether the test suite `suite` is skipped through `MISTIFY_SKIP=suite,…` (a comma
/// list; `make test` lists skipped suites at the end, CI never sets it). A skipped test
/// says so on stderr and returns early.
pub fn skipped(suite: &str) -> bool {
    let skip = std::env::var("MISTIFY_SKIP").unwrap_or_default();
    let hit = skip.split(',').any(|s| s.trim() == suite);
    if hit {
        eprintln!("SKIPPED: suite {suite:?} (MISTIFY_SKIP={skip})");
    }
    hit
}

/// The state of the machine for a failure message: free disk and memory, zfs-fuse and
/// its pools, processes stuck in the kernel, FUSE mounts (`scripts/diagnose.sh`, every
/// probe bounded in time).
pub fn diagnose() -> String {
    match Command::new(workspace_root().join("scripts").join("diagnose.sh"))
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) => format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => format!("(scripts/diagnose.sh did not run: {e})"),
    }
}

/// Everything a server sends on `conn` until it closes the connection; panics (fails
/// the test) when it is still open after 5 s — for limits that must close connections.
pub async fn read_until_closed(conn: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "the server kept the connection open");
    String::from_utf8_lossy(&out).to_string()
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A fresh directory under the system temp dir, removed with everything in it on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// `<tmp>/mistify-<name>-<pid>-<unique>`.
    ///
    /// # Panics
    /// When the directory cannot be created: the test cannot run.
    pub fn new(name: &str) -> TempDir {
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir =
            std::env::temp_dir().join(format!("mistify-{name}-{}-{n}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A port that was free on 127.0.0.1 a moment ago, and never handed out before by this
/// process: the kernel may give a released port again at once, and stacks started side by
/// side pick their ports before any of them binds (two services of two stacks on one
/// port made one stack's readiness check answer for the other's).
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("no free loopback port");
        if given.insert(port) {
            return port;
        }
    }
}

/// Waits until something accepts TCP connections on `addr`.
pub fn wait_for_port(addr: SocketAddr, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!("nothing listens on {addr} after {timeout:?}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A child process killed (and reaped) when dropped.
pub struct Daemon {
    child: Child,
    name: String,
    pub port: u16,
}

impl Daemon {
    /// Starts `program args…`, then waits until `127.0.0.1:port` accepts connections.
    ///
    /// # Panics
    /// When it cannot start or does not listen within 30 s.
    pub fn start(program: &Path, args: &[String], port: u16) -> Daemon {
        Daemon::start_with_env(program, args, &[], port)
    }

    /// As [`Daemon::start`], with these variables added to the environment.
    pub fn start_with_env(
        program: &Path,
        args: &[String],
        env: &[(&str, &str)],
        port: u16,
    ) -> Daemon {
        let name = program
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let child = Command::new(program)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        let mut daemon = Daemon { child, name, port };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        if let Err(e) = wait_for_port(addr, Duration::from_secs(30)) {
            let status = daemon.child.try_wait().ok().flatten();
            panic!(
                "{} did not start ({e}; exit status {status:?})",
                daemon.name
            );
        }
        daemon
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `kill -9`: the process gets no chance to clean up.
    pub fn kill_hard(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM without waiting.
    pub fn signal_term(&self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
    }

    /// Waits up to `timeout` for the process to exit; its status.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Sends SIGTERM and waits up to `timeout` for the exit; its status, or `None` when
    /// it is still running.
    pub fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.signal_term();
        self.wait_exit(timeout)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `python3 tests/tools/replay.py ARGS…` (the wire replay tool) and returns
/// whether it passed, with its output.
pub fn replay(args: &[String]) -> (bool, String) {
    let tool = workspace_root()
        .join("tests")
        .join("tools")
        .join("replay.py");
    let output = Command::new("python3")
        .arg(&tool)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run python3 {}: {e}", tool.display()));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}
