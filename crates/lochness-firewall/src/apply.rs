//! Putting a ruleset in force: the rules file written atomically, nft's check, then one
//! nft transaction, optionally inside a network namespace.
//!
//! A file loaded by `nft -f` is one transaction: when any part fails, the kernel keeps
//! the ruleset it had, whole. The rules file on disk is only replaced once the kernel
//! took the new ruleset, so it always holds the ruleset in force. Nothing here flushes
//! the ruleset or names another table: the file holds only our table.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rand::Rng;
use tokio::process::Command;

/// How long one `nft` or `ip netns exec` run may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// The sysctl that sends bridged IPv4 traffic through the `inet` hooks.
pub const BRIDGE_SYSCTL: &str = "/proc/sys/net/bridge/bridge-nf-call-iptables";

/// Why a ruleset was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The temporary rules file could not be written or renamed.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A command could not run or did not end in time.
    #[error("{command}: {reason}")]
    Command {
        /// The command.
        command: String,
        /// Why.
        reason: String,
    },
    /// `nft -c` refused the ruleset (nothing was changed).
    #[error("nft refused the ruleset in its check: {0}")]
    Check(String),
    /// `nft -f` failed (the transaction was not applied; the previous ruleset stays).
    #[error("nft failed to load the ruleset: {0}")]
    Load(String),
}

/// Writes a new file readable by root only (mode 0600, as the original's rules file).
async fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    let mut f = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .await?;
    f.write_all(text.as_bytes()).await?;
    f.sync_all().await
}

/// What [`Applier::apply`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The ruleset was the one last applied: nothing done.
    Unchanged,
    /// Checked, loaded and written.
    Loaded,
}

/// Applies rulesets through `nft`.
#[derive(Debug)]
pub struct Applier {
    file: PathBuf,
    netns: Option<String>,
    nft: String,
    last: Option<String>,
}

impl Applier {
    /// An applier writing `file` (made absolute against the current directory), running
    /// `nft` (a program name or path) inside `netns` when given.
    pub fn new(file: &Path, netns: Option<String>, nft: &str) -> Applier {
        let file = std::path::absolute(file).unwrap_or_else(|_| file.to_path_buf());
        Applier {
            file,
            netns,
            nft: nft.to_string(),
            last: None,
        }
    }

    /// The rules file.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// The ruleset last applied, if any.
    pub fn last(&self) -> Option<&str> {
        self.last.as_deref()
    }

    fn temp_prefix(&self) -> String {
        let base = self
            .file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "rules".into());
        format!("{base}.tmp")
    }

    /// Removes temporary files a killed run left beside the rules file; how many.
    pub fn remove_stale_temps(&self) -> usize {
        let (Some(dir), prefix) = (self.file.parent(), self.temp_prefix()) else {
            return 0;
        };
        let Ok(entries) = std::fs::read_dir(dir) else {
            return 0;
        };
        entries
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .filter(|e| std::fs::remove_file(e.path()).is_ok())
            .count()
    }

    /// A command running `program` inside the namespace (`ip netns exec NS`), or
    /// directly.
    fn command(&self, program: &str) -> Command {
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, program]);
                c
            }
            None => Command::new(program),
        };
        cmd.stdin(std::process::Stdio::null()).kill_on_drop(true);
        cmd
    }

    /// Runs `program ARGS`: stdout, or (error text) stderr of a failure.
    async fn run(
        &self,
        program: &str,
        args: &[&str],
    ) -> Result<Result<String, String>, ApplyError> {
        let mut cmd = self.command(program);
        cmd.args(args);
        let shown = format!("{cmd:?}");
        let out = tokio::time::timeout(COMMAND_TIMEOUT, cmd.output())
            .await
            .map_err(|_| ApplyError::Command {
                command: shown.clone(),
                reason: format!("did not end within {COMMAND_TIMEOUT:?}"),
            })?
            .map_err(|e| ApplyError::Command {
                command: shown,
                reason: e.to_string(),
            })?;
        if out.status.success() {
            Ok(Ok(String::from_utf8_lossy(&out.stdout).into_owned()))
        } else {
            let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
            Ok(Err(format!("{}: {err}", out.status)))
        }
    }

    /// Is `net.bridge.bridge-nf-call-iptables` 1 where the rules apply? `Err` names why
    /// it could not be read (br_netfilter not loaded: the file is missing).
    pub async fn bridge_filtering(&self) -> Result<bool, String> {
        let text = match &self.netns {
            None => std::fs::read_to_string(BRIDGE_SYSCTL)
                .map_err(|e| format!("{BRIDGE_SYSCTL}: {e}"))?,
            Some(_) => self
                .run("cat", &[BRIDGE_SYSCTL])
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("{BRIDGE_SYSCTL}: {e}"))?,
        };
        Ok(text.trim() == "1")
    }

    /// `nft list table inet NAME` where the rules apply (`Ok(None)` when it does not
    /// exist).
    pub async fn list_table(&self, table: &str) -> Result<Option<String>, ApplyError> {
        Ok(self
            .run(&self.nft, &["list", "table", "inet", table])
            .await?
            .ok())
    }

    /// Puts `text` in force: nothing when it is the ruleset last applied; otherwise a
    /// temporary file beside the rules file, `nft -c -f` on it, `nft -f` on it, and the
    /// rename over the rules file. On an error the temporary file is removed and the
    /// kernel and the rules file keep the previous ruleset.
    pub async fn apply(&mut self, text: &str) -> Result<Applied, ApplyError> {
        if self.last.as_deref() == Some(text) {
            return Ok(Applied::Unchanged);
        }
        let suffix: u32 = rand::rng().random();
        let temp = self
            .file
            .with_file_name(format!("{}{suffix:08x}", self.temp_prefix()));
        let file_error = |path: &Path, source| ApplyError::File {
            path: path.to_path_buf(),
            source,
        };
        write_private(&temp, text)
            .await
            .map_err(|e| file_error(&temp, e))?;
        let result = self.load(&temp).await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&temp).await;
            return result.map(|()| Applied::Loaded);
        }
        if let Err(e) = tokio::fs::rename(&temp, &self.file).await {
            let _ = tokio::fs::remove_file(&temp).await;
            // The kernel has the ruleset; only the file is behind.
            self.last = Some(text.to_string());
            return Err(file_error(&self.file, e));
        }
        self.last = Some(text.to_string());
        Ok(Applied::Loaded)
    }

    async fn load(&self, temp: &Path) -> Result<(), ApplyError> {
        let path = temp.to_string_lossy();
        self.run(&self.nft, &["-c", "-f", &path])
            .await?
            .map_err(ApplyError::Check)?;
        self.run(&self.nft, &["-f", &path])
            .await?
            .map_err(ApplyError::Load)?;
        Ok(())
    }
}
