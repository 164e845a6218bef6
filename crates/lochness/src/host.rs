//! Facts of the machine this process runs on: which hypervisor it is (a process-wide id,
//! from an argument, `$HYPERVISOR_ID` or the hostname) and what it offers to guests.

use std::sync::RwLock;

use crate::codec::canonicalize;
use crate::error::{Error, Result};
use crate::flavor::Resources;

/// Where guest disks live when the hypervisor config has no `guestDiskDir`.
pub const DEFAULT_GUEST_DISK_DIR: &str = "/mistify/guests";

static HYPERVISOR_ID: RwLock<String> = RwLock::new(String::new());

/// Sets the process-wide id of the hypervisor we run on. An empty `id` falls back to
/// `$HYPERVISOR_ID`, then to the hostname; the result must be a UUID and is stored
/// lower-cased. On error the previous value is kept.
pub fn set_hypervisor_id(id: &str) -> Result<String> {
    let mut candidate = id.to_string();
    if candidate.is_empty() {
        candidate = std::env::var("HYPERVISOR_ID").unwrap_or_default();
    }
    if candidate.is_empty() {
        candidate = hostname();
    }
    if candidate.is_empty() {
        return Err(Error::NoHypervisorId);
    }
    let id = canonicalize(&candidate)?;
    let mut guard = HYPERVISOR_ID.write().unwrap_or_else(|p| p.into_inner());
    *guard = id.clone();
    Ok(id)
}

/// The process-wide hypervisor id (empty until [`set_hypervisor_id`] succeeded).
pub fn hypervisor_id() -> String {
    HYPERVISOR_ID
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
}

/// The host's name (`/proc/sys/kernel/hostname`), `""` when unreadable.
pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// What this host offers to guests: 80 % of `MemTotal`, 80 % of the size of the
/// filesystem holding `guest_disk_dir`, and the number of processors. (The original
/// took 80 % of the free space and counted one processor too few; see docs/compat.md,
/// section "lochness".)
pub fn host_resources(guest_disk_dir: &str) -> Result<Resources> {
    let meminfo = std::fs::read_to_string("/proc/meminfo")?;
    let kb: u64 = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| Error::Io(std::io::Error::other("no MemTotal in /proc/meminfo")))?;
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo")?;
    let cpus = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    Ok(Resources {
        memory: kb * 80 / 100 / 1024,
        disk: filesystem_size(guest_disk_dir)? * 80 / 100 / 1024 / 1024,
        cpu: u32::try_from(cpus).unwrap_or(u32::MAX),
    })
}

/// Size in bytes of the filesystem holding `dir`.
fn filesystem_size(dir: &str) -> Result<u64> {
    let path = std::ffi::CString::new(dir)
        .map_err(|_| Error::Invalid(format!("bad directory {dir:?}")))?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a valid NUL-terminated string and `st` a writable statvfs.
    let rc = unsafe { libc::statvfs(path.as_ptr(), &mut st) };
    if rc != 0 {
        return Err(Error::Io(std::io::Error::last_os_error()));
    }
    Ok((st.f_blocks as u64).saturating_mul(st.f_frsize as u64))
}
