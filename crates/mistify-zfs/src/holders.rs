//! What keeps a dataset busy, said so an operator can act on it: which of its
//! filesystems are still mounted (`/proc/self/mountinfo`), and which processes have a
//! file open, or their working directory, under those mounts (`/proc/*/fd/*` and
//! `/proc/*/cwd`, read with `readlink` only: nothing here touches the filesystems
//! themselves, so a wedged FUSE mount cannot hang it).

use std::path::{Path, PathBuf};

/// A mounted ZFS filesystem (`zfs` on OpenZFS, `fuse.zfs` on zfs-fuse).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// The dataset (the mount's source).
    pub dataset: String,
    /// Where it is mounted.
    pub path: PathBuf,
}

/// A process holding a path under a mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub pid: u32,
    /// `/proc/PID/comm`.
    pub command: String,
    /// What it holds: the open file, or `cwd <dir>`.
    pub what: String,
}

/// Undoes the octal escapes of `/proc/*/mountinfo` (`\040` for a space, …).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let digits = &bytes[i + 1..i + 4];
            if digits.iter().all(|b| (b'0'..=b'7').contains(b)) {
                let value = digits
                    .iter()
                    .fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0'));
                if let Ok(byte) = u8::try_from(value) {
                    out.push(byte);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The ZFS mounts in `/proc/*/mountinfo` text.
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let dash = fields.iter().position(|f| *f == "-")?;
            let (kind, source) = (fields.get(dash + 1)?, fields.get(dash + 2)?);
            if *kind != "zfs" && *kind != "fuse.zfs" {
                return None;
            }
            Some(Mount {
                dataset: unescape(source),
                path: PathBuf::from(unescape(fields.get(4)?)),
            })
        })
        .collect()
}

/// Whether `name` is `dataset` or one of its descendants.
pub fn within(name: &str, dataset: &str) -> bool {
    name == dataset
        || name
            .strip_prefix(dataset)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// The mounted filesystems of `dataset` (and, with `descendants`, of everything under
/// it), deepest first: the order to unmount them in.
pub fn mounts_of(dataset: &str, descendants: bool) -> Vec<Mount> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut found: Vec<Mount> = parse_mountinfo(&text)
        .into_iter()
        .filter(|m| {
            if descendants {
                within(&m.dataset, dataset)
            } else {
                m.dataset == dataset
            }
        })
        .collect();
    found.sort_by_key(|m| std::cmp::Reverse(m.dataset.matches('/').count()));
    found.dedup();
    found
}

/// Whether `path` is `dir` or lies under it.
fn under(path: &Path, dirs: &[PathBuf]) -> bool {
    dirs.iter().any(|d| path.starts_with(d))
}

/// The processes with a file open, or their working directory, under one of `dirs`.
pub fn holders(dirs: &[PathBuf]) -> Vec<Holder> {
    let mut out = Vec::new();
    if dirs.is_empty() {
        return out;
    }
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let base = entry.path();
        let mut held: Vec<String> = Vec::new();
        if let Ok(cwd) = std::fs::read_link(base.join("cwd")) {
            if under(&cwd, dirs) {
                held.push(format!("cwd {}", cwd.display()));
            }
        }
        if let Ok(fds) = std::fs::read_dir(base.join("fd")) {
            for fd in fds.flatten() {
                if let Ok(target) = std::fs::read_link(fd.path()) {
                    if under(&target, dirs) {
                        let text = target.display().to_string();
                        if !held.contains(&text) {
                            held.push(text);
                        }
                    }
                }
            }
        }
        if held.is_empty() {
            continue;
        }
        let command = std::fs::read_to_string(base.join("comm"))
            .map(|c| c.trim_end().to_string())
            .unwrap_or_default();
        for what in held {
            out.push(Holder {
                pid,
                command: command.clone(),
                what,
            });
        }
    }
    out
}

/// What still holds `dataset` (and its descendants): its mounts and the processes
/// using them, in one sentence.
pub fn describe(dataset: &str) -> String {
    let mounts = mounts_of(dataset, true);
    if mounts.is_empty() {
        return format!(
            "nothing of {dataset} is mounted and no process can hold it; zfs itself \
             still holds it"
        );
    }
    let dirs: Vec<PathBuf> = mounts.iter().map(|m| m.path.clone()).collect();
    let listed: Vec<String> = mounts
        .iter()
        .map(|m| format!("{} at {}", m.dataset, m.path.display()))
        .collect();
    let found = holders(&dirs);
    let users = if found.is_empty() {
        "no process has a file open or its working directory there".to_string()
    } else {
        let mut shown: Vec<String> = found
            .iter()
            .take(10)
            .map(|h| format!("pid {} ({}) {}", h.pid, h.command, h.what))
            .collect();
        if found.len() > 10 {
            shown.push(format!("and {} more", found.len() - 10));
        }
        format!("in use by {}", shown.join(", "))
    };
    format!("still mounted: {}; {users}", listed.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zfs_mounts_are_read_off_mountinfo() {
        let text = "22 1 0:21 / /proc rw,nosuid - proc proc rw\n\
            46 27 0:41 / /tmp/x/mnt rw,relatime - fuse.zfs p rw,user_id=0\n\
            47 46 0:42 / /tmp/x/mnt/guests rw,relatime - fuse.zfs p/guests rw\n\
            48 47 0:43 / /tmp/with\\040space/g rw shared:5 - zfs p/guests/g rw\n\
            49 1 0:44 / /zfs-kstat rw - fuse kstat rw\n\
            truncated\n";
        let m = parse_mountinfo(text);
        assert_eq!(
            m,
            vec![
                Mount {
                    dataset: "p".into(),
                    path: "/tmp/x/mnt".into()
                },
                Mount {
                    dataset: "p/guests".into(),
                    path: "/tmp/x/mnt/guests".into()
                },
                Mount {
                    dataset: "p/guests/g".into(),
                    path: "/tmp/with space/g".into()
                },
            ]
        );
    }

    #[test]
    fn within_is_by_component() {
        assert!(within("p/guests/g", "p/guests"));
        assert!(within("p/guests", "p/guests"));
        assert!(!within("p/guests2", "p/guests"));
        assert!(!within("p", "p/guests"));
    }

    #[test]
    fn a_process_with_its_cwd_under_a_directory_is_found() {
        let dir = std::env::temp_dir().join(format!("mistify-holders-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .current_dir(&dir)
            .spawn()
            .unwrap();
        let found = holders(std::slice::from_ref(&dir));
        let _ = child.kill();
        let _ = child.wait();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            found
                .iter()
                .any(|h| h.pid == child.id() && h.command == "sleep" && h.what.starts_with("cwd ")),
            "{found:?}"
        );
    }
}
