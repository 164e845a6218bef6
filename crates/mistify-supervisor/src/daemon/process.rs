//! The Process provider: one OS process in its own process group, output captured line
//! by line, stopped with SIGTERM (or a stop command) then SIGKILL, always reaped.

use crate::daemon::logring::MAX_LINE;
use crate::daemon::manager::{Provider, ProviderContext};
use crate::manifest::{Manifest, Readiness};
use async_trait::async_trait;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;
use tokio::sync::{watch, Mutex};
use tokio::task::JoinHandle;

/// Variables passed from the daemon's environment to every service (the manifest `env`
/// is applied on top).
const BASE_ENV: &[&str] = &[
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TZ", "TMPDIR",
];

struct Running {
    pid: i32,
    exit: watch::Receiver<Option<ExitStatus>>,
    stopping: Arc<AtomicBool>,
    ctx: ProviderContext,
    notify: Option<(PathBuf, JoinHandle<()>)>,
}

/// Runs the command of a manifest.
pub struct Process {
    command: Vec<String>,
    env: Vec<(String, String)>,
    directory: Option<PathBuf>,
    stop_command: Vec<String>,
    stop_time: Duration,
    fail_on_exit: bool,
    check: Vec<String>,
    check_timeout: Duration,
    notify: bool,
    running: Mutex<Option<Running>>,
}

/// Go's text for an exit status: `exit status 1`, `signal: killed`.
pub fn exit_text(status: &ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exit status {code}");
    }
    match status.signal() {
        Some(sig) => format!("signal: {}", signal_name(sig)),
        None => "unknown exit".into(),
    }
}

fn signal_name(sig: i32) -> String {
    match sig {
        libc::SIGHUP => "hangup".into(),
        libc::SIGINT => "interrupt".into(),
        libc::SIGQUIT => "quit".into(),
        libc::SIGILL => "illegal instruction".into(),
        libc::SIGTRAP => "trace/breakpoint trap".into(),
        libc::SIGABRT => "aborted".into(),
        libc::SIGBUS => "bus error".into(),
        libc::SIGFPE => "floating point exception".into(),
        libc::SIGKILL => "killed".into(),
        libc::SIGUSR1 => "user defined signal 1".into(),
        libc::SIGSEGV => "segmentation fault".into(),
        libc::SIGUSR2 => "user defined signal 2".into(),
        libc::SIGPIPE => "broken pipe".into(),
        libc::SIGALRM => "alarm clock".into(),
        libc::SIGTERM => "terminated".into(),
        n => format!("signal {n}"),
    }
}

/// Sends `sig` to the process group `pgid` (ignoring "no such process").
fn killpg(pgid: i32, sig: i32) {
    if pgid > 1 {
        // SAFETY: killpg has no memory-safety preconditions; a stale group id at worst
        // yields ESRCH.
        unsafe {
            libc::killpg(pgid, sig);
        }
    }
}

fn base_env() -> Vec<(String, String)> {
    BASE_ENV
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
        .collect()
}

impl Process {
    pub fn new(m: &Manifest) -> Process {
        Process {
            command: m.command.clone(),
            env: m.env.clone(),
            directory: m.directory.clone(),
            stop_command: m.stop_command.clone(),
            stop_time: m.stop_time,
            fail_on_exit: m.fail_on_exit,
            check: m.check.clone(),
            check_timeout: m.check_interval,
            notify: m.ready == Readiness::Notify,
            running: Mutex::new(None),
        }
    }

    fn command(&self, argv: &[String]) -> Result<Command, String> {
        let Some((program, args)) = argv.split_first() else {
            return Err("no command".into());
        };
        let mut cmd = Command::new(program);
        cmd.args(args)
            .env_clear()
            .envs(base_env())
            .envs(self.env.iter().cloned())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(false);
        if let Some(d) = &self.directory {
            cmd.current_dir(d);
        }
        Ok(cmd)
    }
}

/// Reads lines (capped at [`MAX_LINE`]) and logs them with `prefix`.
fn pump<R: AsyncRead + Unpin + Send + 'static>(
    reader: R,
    prefix: &'static str,
    ctx: ProviderContext,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut r = BufReader::new(reader);
        let mut line: Vec<u8> = Vec::new();
        loop {
            let (done, used) = match r.fill_buf().await {
                Ok([]) | Err(_) => {
                    if !line.is_empty() {
                        ctx.log(&format!("{prefix}{}", String::from_utf8_lossy(&line)));
                    }
                    return;
                }
                Ok(buf) => match buf.iter().position(|&b| b == b'\n') {
                    Some(i) => {
                        if line.len() < MAX_LINE {
                            line.extend_from_slice(&buf[..i.min(MAX_LINE - line.len())]);
                        }
                        (true, i + 1)
                    }
                    None => {
                        if line.len() < MAX_LINE {
                            let take = buf.len().min(MAX_LINE - line.len());
                            line.extend_from_slice(&buf[..take]);
                        }
                        (false, buf.len())
                    }
                },
            };
            r.consume(used);
            if done {
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                ctx.log(&format!("{prefix}{}", String::from_utf8_lossy(&line)));
                line.clear();
            }
        }
    })
}

static NOTIFY_COUNTER: AtomicU64 = AtomicU64::new(0);

fn notify_listener(ctx: ProviderContext) -> Result<(PathBuf, JoinHandle<()>), String> {
    let n = NOTIFY_COUNTER.fetch_add(1, Ordering::SeqCst);
    let path = std::env::temp_dir().join(format!(
        "mistify-supervisor-{}-{n}.notify",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&path);
    let sock = tokio::net::UnixDatagram::bind(&path)
        .map_err(|e| format!("cannot create the notify socket {}: {e}", path.display()))?;
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let Ok(n) = sock.recv(&mut buf).await else {
                return;
            };
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            for line in text.lines() {
                if line == "READY=1" {
                    ctx.ready();
                } else if let Some(s) = line.strip_prefix("STATUS=") {
                    ctx.status(s);
                }
            }
        }
    });
    Ok((path, task))
}

#[async_trait]
impl Provider for Process {
    async fn start(&self, ctx: ProviderContext) -> Result<Option<u32>, String> {
        let mut slot = self.running.lock().await;
        if let Some(old) = slot.take() {
            // Should not happen (the manager stops before it starts again); be safe.
            killpg(old.pid, libc::SIGKILL);
        }
        let mut cmd = self.command(&self.command)?;
        let notify = if self.notify {
            let (path, task) = notify_listener(ctx.clone())?;
            cmd.env("NOTIFY_SOCKET", &path);
            Some((path, task))
        } else {
            None
        };
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                if let Some((path, task)) = notify {
                    task.abort();
                    let _ = std::fs::remove_file(path);
                }
                let program = self.command.first().map(String::as_str).unwrap_or("");
                return Err(format!("exec: {program:?}: {e}"));
            }
        };
        let pid = child.id().unwrap_or(0);
        ctx.log(&format!("Process id {pid}"));
        let out = child
            .stdout
            .take()
            .map(|o| pump(o, "stdout> ", ctx.clone()));
        let err = child
            .stderr
            .take()
            .map(|e| pump(e, "stderr> ", ctx.clone()));
        let (tx, rx) = watch::channel(None);
        let stopping = Arc::new(AtomicBool::new(false));
        let stop_flag = stopping.clone();
        let fail_on_exit = self.fail_on_exit;
        let wctx = ctx.clone();
        tokio::spawn(async move {
            let status = child.wait().await;
            // Let the readers drain what the process wrote last (a grandchild may hold
            // the pipes open: do not wait for it).
            for h in [out, err].into_iter().flatten() {
                let _ = tokio::time::timeout(Duration::from_millis(100), h).await;
            }
            let status = match status {
                Ok(s) => s,
                Err(e) => {
                    wctx.log(&format!("cannot wait for the process: {e}"));
                    ExitStatus::from_raw(libc::SIGKILL)
                }
            };
            let _ = tx.send(Some(status));
            if !stop_flag.load(Ordering::SeqCst) {
                let outcome = if status.success() {
                    if fail_on_exit {
                        Err("Unexpected termination".to_string())
                    } else {
                        Ok(())
                    }
                } else {
                    Err(exit_text(&status))
                };
                wctx.exited(outcome);
            }
        });
        *slot = Some(Running {
            pid: i32::try_from(pid).unwrap_or(0),
            exit: rx,
            stopping,
            ctx,
            notify,
        });
        Ok(Some(pid))
    }

    async fn stop(&self) {
        let Some(mut run) = self.running.lock().await.take() else {
            return;
        };
        run.stopping.store(true, Ordering::SeqCst);
        let exited = run.exit.borrow().is_some();
        if !exited {
            if self.stop_command.is_empty() {
                killpg(run.pid, libc::SIGTERM);
                killpg(run.pid, libc::SIGCONT);
            } else {
                self.run_stop_command(&run).await;
            }
            let wait = tokio::time::timeout(self.stop_time, run.exit.wait_for(|s| s.is_some()));
            if wait.await.is_err() {
                run.ctx.log("Graceful shutdown timed out");
                killpg(run.pid, libc::SIGKILL);
                let _ = run.exit.wait_for(|s| s.is_some()).await;
            }
        }
        // Whatever is left of the group (children that ignored SIGTERM) goes too.
        killpg(run.pid, libc::SIGKILL);
        if let Some((path, task)) = run.notify.take() {
            task.abort();
            let _ = std::fs::remove_file(path);
        }
    }

    fn has_check(&self) -> bool {
        !self.check.is_empty()
    }

    async fn check(&self) -> Result<(), String> {
        if self.check.is_empty() {
            return Ok(());
        }
        let mut cmd = self.command(&self.check)?;
        cmd.stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|e| {
            format!(
                "check: exec {:?}: {e}",
                self.check.first().map(String::as_str).unwrap_or("")
            )
        })?;
        let pgid = child.id().and_then(|p| i32::try_from(p).ok()).unwrap_or(0);
        match tokio::time::timeout(self.check_timeout, child.wait()).await {
            Ok(Ok(s)) if s.success() => Ok(()),
            Ok(Ok(s)) => Err(format!("check: {}", exit_text(&s))),
            Ok(Err(e)) => Err(format!("check: {e}")),
            Err(_) => {
                killpg(pgid, libc::SIGKILL);
                let _ = child.wait().await;
                Err("check: timed out".into())
            }
        }
    }
}

impl Process {
    async fn run_stop_command(&self, run: &Running) {
        let mut cmd = match self.command(&self.stop_command) {
            Ok(c) => c,
            Err(e) => {
                run.ctx.log(&format!(
                    "Cannot run the stop command: {e}; sending SIGTERM"
                ));
                killpg(run.pid, libc::SIGTERM);
                return;
            }
        };
        cmd.env("PID", run.pid.to_string())
            .env("MAINPID", run.pid.to_string())
            .kill_on_drop(true);
        let child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                run.ctx.log(&format!(
                    "Cannot run the stop command: {e}; sending SIGTERM"
                ));
                killpg(run.pid, libc::SIGTERM);
                return;
            }
        };
        let pgid = child.id().and_then(|p| i32::try_from(p).ok()).unwrap_or(0);
        match tokio::time::timeout(self.stop_time, child.wait_with_output()).await {
            Ok(Ok(out)) => {
                for (prefix, bytes) in
                    [("stopstdout> ", &out.stdout), ("stopstderr> ", &out.stderr)]
                {
                    for line in String::from_utf8_lossy(bytes).lines() {
                        run.ctx.log(&format!("{prefix}{line}"));
                    }
                }
            }
            Ok(Err(e)) => run.ctx.log(&format!("Stop command failed: {e}")),
            Err(_) => {
                run.ctx.log("Timeout waiting for stop command");
                killpg(pgid, libc::SIGKILL);
            }
        }
    }
}
