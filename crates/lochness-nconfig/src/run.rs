//! One run of the operator's command: `<dir>/run --kv <address> [-t <tag>]…`, in
//! `<dir>`, with nconfigd's standard output and error, in a process group of its own
//! (a signal to nconfigd's group does not cut a run short: nconfigd waits for it).

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};

use crate::config::Selection;

/// How a run ended.
#[derive(Debug)]
pub enum Outcome {
    /// Exit status 0.
    Succeeded,
    /// Any other exit status, or killed by a signal.
    Failed(ExitStatus),
    /// The command could not be started (missing, not executable, …).
    NotStarted(std::io::Error),
}

impl Outcome {
    /// Whether the run succeeded.
    pub fn ok(&self) -> bool {
        matches!(self, Outcome::Succeeded)
    }

    /// The exit code, when the command exited with one.
    pub fn code(&self) -> Option<i32> {
        match self {
            Outcome::Succeeded => Some(0),
            Outcome::Failed(status) => status.code(),
            Outcome::NotStarted(_) => None,
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Succeeded => write!(f, "exit status 0"),
            Outcome::Failed(status) => match status.code() {
                Some(code) => write!(f, "exit status {code}"),
                None => write!(f, "{status}"),
            },
            Outcome::NotStarted(e) => write!(f, "could not start: {e}"),
        }
    }
}

/// The command nconfigd runs.
#[derive(Debug, Clone)]
pub struct Runner {
    /// The directory holding `run` (and its working directory).
    pub dir: PathBuf,
    /// The etcd address passed as `--kv`.
    pub kv: String,
}

/// The arguments of a run: `--kv <kv>`, then `-t <tag>` per tag in order.
pub fn arguments(kv: &str, selection: &Selection) -> Vec<String> {
    let mut args = vec!["--kv".to_string(), kv.to_string()];
    if let Selection::Tags(tags) = selection {
        for tag in tags {
            args.push("-t".into());
            args.push(tag.clone());
        }
    }
    args
}

impl Runner {
    /// The program: `<dir>/run`.
    pub fn program(&self) -> PathBuf {
        Path::new(&self.dir).join("run")
    }

    /// Runs the command for `selection` and waits for it.
    pub async fn run(&self, selection: &Selection) -> Outcome {
        let mut command = tokio::process::Command::new(self.program());
        command
            .args(arguments(&self.kv, selection))
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit())
            .process_group(0);
        let mut child = match command.spawn() {
            Ok(c) => c,
            Err(e) => return Outcome::NotStarted(e),
        };
        match child.wait().await {
            Ok(status) if status.success() => Outcome::Succeeded,
            Ok(status) => Outcome::Failed(status),
            Err(e) => Outcome::NotStarted(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_in_order() {
        assert_eq!(
            arguments("http://e:1", &Selection::Full),
            ["--kv", "http://e:1"]
        );
        let tags = Selection::Tags(["b".to_string(), "a".to_string()].into_iter().collect());
        assert_eq!(arguments("k", &tags), ["--kv", "k", "-t", "a", "-t", "b"]);
    }
}
