//! Installing a generated file: unchanged content is not rewritten; new content goes to a
//! temporary file in the same directory (checked by an optional command), then is renamed
//! over the target, so a reader sees the old file or the new one and never a part.

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

/// Why a file was not installed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Reading, writing or renaming failed.
    #[error("{path}: {source}")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The check command refused the new content (the old file stays).
    #[error("{path}: check failed: {reason}")]
    Check {
        /// The target.
        path: PathBuf,
        /// The command's status and output.
        reason: String,
    },
}

/// What [`install`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Installed {
    /// The file already held this content; nothing was written.
    Unchanged,
    /// The new content replaced the file.
    Replaced,
}

/// A check run on the temporary file before it replaces the target: `program args… FILE`
/// must exit 0.
#[derive(Debug, Clone)]
pub struct Check {
    /// The program and its leading arguments (the file's path is appended).
    pub argv: Vec<String>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> WriteError + '_ {
    move |source| WriteError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Installs `content` as `path` (mode 0644) unless it already holds exactly that.
pub async fn install(
    path: &Path,
    content: &str,
    check: Option<&Check>,
) -> Result<Installed, WriteError> {
    match tokio::fs::read(path).await {
        Ok(old) if old == content.as_bytes() => return Ok(Installed::Unchanged),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(path)(e)),
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.cdhcpd-{}.tmp", std::process::id()));
    let written = {
        let (tmp, content) = (tmp.clone(), content.to_string());
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.set_permissions(std::fs::Permissions::from_mode(0o644))?;
            f.write_all(content.as_bytes())?;
            f.sync_all()
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)))
    };
    if let Err(e) = written {
        let _ = tokio::fs::remove_file(&tmp).await;
        return Err(io(path)(e));
    }
    if let Some(check) = check {
        if let Err(reason) = run_check(check, &tmp).await {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(WriteError::Check {
                path: path.to_path_buf(),
                reason,
            });
        }
    }
    if let Err(e) = tokio::fs::rename(&tmp, path).await {
        let _ = tokio::fs::remove_file(&tmp).await;
        return Err(io(path)(e));
    }
    // The rename is durable once the directory is synced.
    if let Some(dir) = path.parent() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".").to_path_buf()
        } else {
            dir.to_path_buf()
        };
        let _ = tokio::task::spawn_blocking(move || std::fs::File::open(dir)?.sync_all()).await;
    }
    Ok(Installed::Replaced)
}

async fn run_check(check: &Check, file: &Path) -> Result<(), String> {
    let Some((program, args)) = check.argv.split_first() else {
        return Ok(());
    };
    let out = tokio::process::Command::new(program)
        .args(args)
        .arg(file)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    Err(format!(
        "{program} exited with {}: {}",
        out.status,
        lines[lines.len().saturating_sub(4)..].join(" / ")
    ))
}

/// Runs the operator's reload command (`sh -c CMD`); its failure as text.
pub async fn run_reload(cmd: &str) -> Result<(), String> {
    let out = tokio::process::Command::new("sh")
        .args(["-c", cmd])
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| format!("cannot run sh -c {cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?} exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn unchanged_content_is_not_rewritten_and_a_refused_check_keeps_the_old_file() {
        let dir = std::env::temp_dir().join(format!("lochness-dhcp-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("guests.conf");
        assert_eq!(install(&f, "a\n", None).await.unwrap(), Installed::Replaced);
        let before = std::fs::metadata(&f).unwrap().modified().unwrap();
        assert_eq!(
            install(&f, "a\n", None).await.unwrap(),
            Installed::Unchanged
        );
        assert_eq!(std::fs::metadata(&f).unwrap().modified().unwrap(), before);
        assert_eq!(
            std::fs::metadata(&f).unwrap().permissions().mode() & 0o777,
            0o644
        );
        let refuse = Check {
            argv: vec!["false".into()],
        };
        assert!(matches!(
            install(&f, "b\n", Some(&refuse)).await,
            Err(WriteError::Check { .. })
        ));
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "a\n");
        let accept = Check {
            argv: vec!["true".into()],
        };
        assert_eq!(
            install(&f, "b\n", Some(&accept)).await.unwrap(),
            Installed::Replaced
        );
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "b\n");
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
