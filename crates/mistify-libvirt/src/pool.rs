//! A bounded pool of libvirt connections used from async code.
//!
//! Every libvirt call is blocking C, so [`Pool::run`] takes a free slot (waiting a
//! bounded time), moves it onto tokio's blocking threads, opens or re-opens the slot's
//! connection there, runs the closure and puts the slot back. Connections are opened
//! lazily; one that `virConnectIsAlive` reports dead (or cannot judge) is closed and
//! replaced before use.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use tokio::sync::Semaphore;
use virt::connect::Connect;

use crate::error::{Error, Result};

/// How long a call waits for a free connection by default.
pub const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one libvirt call may take by default.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(120);

static QUIET: Once = Once::new();

/// Stops libvirt from printing every error on stderr (we report them ourselves).
pub fn quiet_libvirt() {
    QUIET.call_once(virt::error::clear_error_callback);
}

struct Shared {
    uri: String,
    idle: Mutex<VecDeque<Option<Connect>>>,
    opened: AtomicU64,
    reconnects: AtomicU64,
}

/// The pool; cheap to clone.
#[derive(Clone)]
pub struct Pool {
    shared: Arc<Shared>,
    permits: Arc<Semaphore>,
    size: usize,
    acquire_timeout: Duration,
    call_timeout: Duration,
}

/// Closes a connection without `virt`'s `Drop`, which panics when the close fails.
fn discard(conn: Connect) {
    // SAFETY: we own this reference; forgetting the wrapper hands it to us so it is
    // closed exactly once, and a null pointer is never passed on.
    let ptr = unsafe { conn.as_ptr() };
    std::mem::forget(conn);
    if !ptr.is_null() {
        // SAFETY: `ptr` is a reference we own (see above).
        let _ = unsafe { virt::sys::virConnectClose(ptr) };
    }
}

impl Pool {
    /// A pool of at most `size` (≥ 1) connections to `uri`; nothing is opened yet.
    pub fn new(uri: impl Into<String>, size: usize) -> Pool {
        quiet_libvirt();
        let size = size.max(1);
        Pool {
            shared: Arc::new(Shared {
                uri: uri.into(),
                idle: Mutex::new((0..size).map(|_| None).collect()),
                opened: AtomicU64::new(0),
                reconnects: AtomicU64::new(0),
            }),
            permits: Arc::new(Semaphore::new(size)),
            size,
            acquire_timeout: DEFAULT_ACQUIRE_TIMEOUT,
            call_timeout: DEFAULT_CALL_TIMEOUT,
        }
    }

    /// Changes how long a call waits for a free connection.
    pub fn acquire_timeout(mut self, timeout: Duration) -> Pool {
        self.acquire_timeout = timeout;
        self
    }

    /// Changes how long one call may take before the caller gets an error (the call
    /// itself cannot be interrupted; its slot comes back when it ends).
    pub fn call_timeout(mut self, timeout: Duration) -> Pool {
        self.call_timeout = timeout;
        self
    }

    /// The libvirt URI.
    pub fn uri(&self) -> &str {
        &self.shared.uri
    }

    /// The number of slots.
    pub fn size(&self) -> usize {
        self.size
    }

    /// How many connections were opened so far.
    pub fn opened(&self) -> u64 {
        self.shared.opened.load(Ordering::Relaxed)
    }

    /// How many dead connections were replaced so far.
    pub fn reconnects(&self) -> u64 {
        self.shared.reconnects.load(Ordering::Relaxed)
    }

    /// Runs `f` with a live connection on a blocking thread.
    pub async fn run<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connect) -> Result<T> + Send + 'static,
    {
        let permit =
            tokio::time::timeout(self.acquire_timeout, self.permits.clone().acquire_owned())
                .await
                .map_err(|_| Error::PoolExhausted(self.acquire_timeout.as_secs()))?
                .map_err(|e| Error::Task(e.to_string()))?;
        let shared = self.shared.clone();
        let task = tokio::task::spawn_blocking(move || {
            let slot = shared.take();
            let (slot, result) = match shared.live(slot) {
                Ok(conn) => {
                    let result = f(&conn);
                    (Some(conn), result)
                }
                Err(e) => (None, Err(e)),
            };
            shared.give_back(slot);
            drop(permit);
            result
        });
        match tokio::time::timeout(self.call_timeout, task).await {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => Err(Error::Task(join.to_string())),
            Err(_) => Err(Error::Timeout(self.call_timeout.as_secs())),
        }
    }

    /// Test support: closes every idle connection underneath the pool, as if the
    /// hypervisor connection had gone away; the slot keeps a handle that libvirt
    /// reports as invalid. Returns how many were closed.
    #[doc(hidden)]
    pub fn close_idle_underneath(&self) -> usize {
        let mut idle = self.shared.lock_idle();
        let mut closed = 0;
        for slot in idle.iter_mut() {
            if let Some(conn) = slot.take() {
                discard(conn);
                // SAFETY: a null connection pointer is a valid argument to every libvirt
                // call (each answers "invalid connection"), and `discard` never closes it.
                *slot = Some(unsafe { Connect::from_ptr(std::ptr::null_mut()) });
                closed += 1;
            }
        }
        closed
    }
}

impl Shared {
    fn lock_idle(&self) -> std::sync::MutexGuard<'_, VecDeque<Option<Connect>>> {
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn take(&self) -> Option<Connect> {
        self.lock_idle().pop_front().flatten()
    }

    fn give_back(&self, slot: Option<Connect>) {
        self.lock_idle().push_back(slot);
    }

    fn open(&self) -> Result<Connect> {
        let conn = Connect::open(Some(&self.uri))?;
        self.opened.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(uri = %self.uri, "libvirt connection opened");
        Ok(conn)
    }

    /// The slot's connection if it is alive, else a fresh one.
    fn live(&self, slot: Option<Connect>) -> Result<Connect> {
        match slot {
            None => self.open(),
            Some(conn) => match conn.is_alive() {
                Ok(true) => Ok(conn),
                answer => {
                    tracing::warn!(uri = %self.uri, ?answer, "libvirt connection dead, reopening");
                    discard(conn);
                    self.reconnects.fetch_add(1, Ordering::Relaxed);
                    self.open()
                }
            },
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        let idle = std::mem::take(&mut *self.lock_idle());
        idle.into_iter().flatten().for_each(discard);
    }
}
