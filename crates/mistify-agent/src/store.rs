//! The agent's durable local state in one redb file: guests, hypervisor metadata and
//! the job log.
//!
//! * Guests are also kept in memory (reads never touch the disk); every change is written
//!   to the file first.
//! * A job update is one small write of that job's record. The log is ordered by a
//!   sequence number and indexed per guest; it is pruned on insert to `joblog_max`
//!   (finished jobs first — a queued or running job is never dropped).
//! * A job that must survive a restart carries its spec (what to run) beside it.
//!
//! **One write path.** Every write goes to one writer thread, which applies every write
//! waiting at that moment in one transaction and commits them together (a group
//! commit): under load a commit costs one disk flush for many writes, no caller's thread
//! waits on another's commit, and the in-memory guests change in the file's order (the
//! writer updates them after each commit, before it answers). A write is a [`Write`]:
//! awaited in async code, or [`Write::wait`]ed for outside the runtime (start-up tools,
//! imports, tests). A write that fails is taken out of its group, and the others are
//! applied again without it in a fresh transaction (a write is a function of the
//! transaction, safe to apply twice); reads are direct: redb's read transactions see
//! the last commit.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, RwLock};
use std::task::{Context, Poll};
use std::thread::JoinHandle;

use bytes::Bytes;
use mistify_types::{Guest, Job, JobStatus};
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

const GUESTS: TableDefinition<&str, &[u8]> = TableDefinition::new("guests");
const METADATA: TableDefinition<&str, &str> = TableDefinition::new("hypervisor-metadata");
const JOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("jobs");
const JOB_ORDER: TableDefinition<u64, &str> = TableDefinition::new("job-order");
const GUEST_JOBS: TableDefinition<(&str, u64), &str> = TableDefinition::new("guest-jobs");

/// Everything the store can fail with, causes kept.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "{} is a database of the Go mistify-agent (SQLite); move it aside and import it with \
         `mistify-agent import-go-db {}`", .0.display(), .0.display()
    )]
    GoDatabase(PathBuf),
    #[error("cannot create {}: {source}", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: redb::DatabaseError,
    },
    #[error(transparent)]
    Database(#[from] redb::Error),
    #[error("corrupt {what}: {source}")]
    Corrupt {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot encode a record: {0}")]
    Encode(#[source] serde_json::Error),
    #[error("cannot start the store writer: {0}")]
    Writer(#[source] std::io::Error),
    #[error("the store's writer has stopped")]
    WriterStopped,
    /// A group commit failed: every write of the group gets this (the cause is shared).
    #[error("the commit failed: {0}")]
    Commit(#[source] Arc<StoreError>),
}

macro_rules! redb_errors {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Database(e.into())
            }
        }
    )*};
}
redb_errors!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

type Result<T, E = StoreError> = std::result::Result<T, E>;

/// What a stored job record holds: the job as the API shows it, its place in the log,
/// and (while it may still run) what to run.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    job: Job,
    seq: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    spec: Option<serde_json::Value>,
}

/// The guests in memory, changed by the writer thread after each commit.
#[derive(Default)]
struct Memory {
    /// Every guest as its JSON (a few hundred bytes each; parsed when asked for),
    /// written by `serde_json` from a `Guest`: valid JSON, never checked again.
    guests: RwLock<BTreeMap<String, Arc<RawValue>>>,
    /// `GET /guests` as sent, rebuilt after a change.
    list_json: RwLock<Option<Bytes>>,
    /// Bumped by every guest change (so a list serialized meanwhile is not cached).
    generation: AtomicU64,
}

impl Memory {
    fn set(&self, id: String, raw: Arc<RawValue>) {
        if let Ok(mut g) = self.guests.write() {
            g.insert(id, raw);
        }
        self.invalidate_list();
    }

    fn remove(&self, id: &str) {
        if let Ok(mut g) = self.guests.write() {
            g.remove(id);
        }
        self.invalidate_list();
    }

    fn invalidate_list(&self) {
        if let Ok(mut cache) = self.list_json.write() {
            self.generation.fetch_add(1, Ordering::SeqCst);
            *cache = None;
        }
    }
}

/// The store. Cheap to share behind an `Arc`.
pub struct Store {
    db: Arc<Database>,
    joblog_max: usize,
    /// To the writer thread; `None` once dropping.
    writes: Option<mpsc::Sender<Box<dyn GroupWrite>>>,
    writer: Option<JoinHandle<()>>,
    memory: Arc<Memory>,
}

fn json<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(StoreError::Encode)
}

/// A guest's JSON as `serde_json` writes it (kept in memory, written to the file).
fn guest_raw(guest: &Guest) -> Result<Arc<RawValue>> {
    serde_json::value::to_raw_value(guest)
        .map(Arc::from)
        .map_err(StoreError::Encode)
}

fn parse<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &'static str) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Corrupt { what, source })
}

/// redb's page cache: the guests live in memory anyway, the job log is read by pages.
const CACHE_BYTES: usize = 16 * 1024 * 1024;

/// The first bytes of every SQLite database file (what the Go agent wrote).
const SQLITE_MAGIC: &[u8] = b"SQLite format 3\0";

/// A write on its way to the disk; its value once committed.
///
/// Await it in async code; [`Write::wait`] blocks for it outside the runtime.
#[must_use = "a write is only known to be done once awaited or waited for"]
pub struct Write<T> {
    answer: Option<tokio::sync::oneshot::Receiver<Result<T>>>,
}

impl<T> Write<T> {
    /// Waits for the commit on this thread. Not inside the tokio runtime (it would
    /// block a runtime thread): await the write there.
    pub fn wait(self) -> Result<T> {
        match self.answer {
            Some(rx) => rx.blocking_recv().unwrap_or(Err(StoreError::WriterStopped)),
            None => Err(StoreError::WriterStopped),
        }
    }
}

impl<T> Future for Write<T> {
    type Output = Result<T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T>> {
        match self.answer.as_mut() {
            None => Poll::Ready(Err(StoreError::WriterStopped)),
            Some(rx) => Pin::new(rx)
                .poll(cx)
                .map(|answer| answer.unwrap_or(Err(StoreError::WriterStopped))),
        }
    }
}

impl Store {
    /// Opens (or creates) the store at `path`. A SQLite file from the Go agent is refused
    /// with a message saying how to import it.
    pub fn open(path: &Path, joblog_max: usize) -> Result<Store> {
        if let Ok(mut f) = std::fs::File::open(path) {
            let mut head = [0u8; 16];
            if std::io::Read::read_exact(&mut f, &mut head).is_ok() && head == SQLITE_MAGIC {
                return Err(StoreError::GoDatabase(path.to_path_buf()));
            }
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let db = redb::Builder::new()
            .set_cache_size(CACHE_BYTES)
            .create(path)
            .map_err(|source| StoreError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        {
            // The tables exist before anyone reads: the writer is not running yet.
            let txn = db.begin_write()?;
            txn.open_table(GUESTS)?;
            txn.open_table(METADATA)?;
            txn.open_table(JOBS)?;
            txn.open_table(JOB_ORDER)?;
            txn.open_table(GUEST_JOBS)?;
            txn.commit()?;
        }
        let memory = Arc::new(Memory::default());
        {
            let txn = db.begin_read()?;
            let table = txn.open_table(GUESTS)?;
            let mut guests = BTreeMap::new();
            for entry in table.iter()? {
                let (k, v) = entry?;
                // Checked once here; the bytes are what `GET /guests` sends.
                let guest: Guest = parse(v.value(), "guest")?;
                guests.insert(k.value().to_string(), guest_raw(&guest)?);
            }
            if let Ok(mut g) = memory.guests.write() {
                *g = guests;
            }
        }
        let db = Arc::new(db);
        let (writes, queue) = mpsc::channel();
        let writer = {
            let db = db.clone();
            std::thread::Builder::new()
                .name("store-writer".into())
                .spawn(move || write_groups(&db, &queue))
                .map_err(StoreError::Writer)?
        };
        Ok(Store {
            db,
            writes: Some(writes),
            writer: Some(writer),
            joblog_max: joblog_max.max(1),
            memory,
        })
    }

    /// Runs `f` on a blocking thread: for reads that may touch many pages (job lists).
    pub async fn blocking<T, F>(self: &Arc<Self>, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> Result<T> + Send + 'static,
    {
        let store = self.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|_| StoreError::WriterStopped)?
    }

    /// The one write path: `apply` runs in the writer's next transaction (again in a
    /// fresh one if another write of its group failed: it must only read and write the
    /// transaction); once that committed, `after` turns its value into the caller's
    /// answer on the writer thread (in commit order: the in-memory guests follow the
    /// file).
    fn write<V, T, F, A>(&self, apply: F, after: A) -> Write<T>
    where
        V: Send + 'static,
        T: Send + 'static,
        F: Fn(&redb::WriteTransaction) -> Result<V> + Send + 'static,
        A: FnOnce(V) -> T + Send + 'static,
    {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let pending = Box::new(Pending {
            apply,
            after: Some(after),
            value: None,
            reply,
        });
        let sent = self
            .writes
            .as_ref()
            .is_some_and(|w| w.send(pending).is_ok());
        Write {
            answer: sent.then_some(answer),
        }
    }

    // ------------------------------------------------------------------ guests

    /// The id of every guest, in order.
    pub fn guest_ids(&self) -> Vec<String> {
        self.memory
            .guests
            .read()
            .map(|g| g.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// The JSON of every guest (what `GET /guests` sends: `null` when there is none),
    /// serialized once per change.
    pub fn guests_json(&self) -> Bytes {
        let memory = &self.memory;
        if let Some(cached) = memory.list_json.read().ok().and_then(|c| c.clone()) {
            return cached;
        }
        let generation = memory.generation.load(Ordering::SeqCst);
        let bytes = {
            let guests = memory.guests.read().unwrap_or_else(|e| e.into_inner());
            if guests.is_empty() {
                Bytes::from_static(b"null\n")
            } else {
                let size: usize = guests.values().map(|g| g.get().len() + 1).sum();
                let mut out = Vec::with_capacity(size + 2);
                out.push(b'[');
                for (i, guest) in guests.values().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    out.extend_from_slice(guest.get().as_bytes());
                }
                out.extend_from_slice(b"]\n");
                Bytes::from(out)
            }
        };
        // Only cache what is still current: a change since the snapshot bumped the
        // generation (under the same lock as this check).
        if let Ok(mut cache) = memory.list_json.write() {
            if memory.generation.load(Ordering::SeqCst) == generation {
                *cache = Some(bytes.clone());
            }
        }
        bytes
    }

    pub fn guest_count(&self) -> usize {
        self.memory.guests.read().map(|g| g.len()).unwrap_or(0)
    }

    /// Guest `id` as its stored JSON (for requests that only pass it on).
    pub fn guest_json(&self, id: &str) -> Option<Arc<RawValue>> {
        self.memory
            .guests
            .read()
            .ok()
            .and_then(|g| g.get(id).cloned())
    }

    /// Guest `id`, parsed from its stored JSON.
    pub fn guest(&self, id: &str) -> Option<Arc<Guest>> {
        let raw = self.guest_json(id)?;
        match serde_json::from_str::<Guest>(raw.get()) {
            Ok(guest) => Some(Arc::new(guest)),
            Err(e) => {
                // Written by `serde_json` from a `Guest`: cannot happen short of memory
                // corruption.
                tracing::error!(guest = id, "unreadable guest in memory: {e}");
                None
            }
        }
    }

    /// Whether guest `id` exists.
    pub fn has_guest(&self, id: &str) -> bool {
        self.memory.guests.read().is_ok_and(|g| g.contains_key(id))
    }

    /// Writes `guest` under its id.
    pub fn put_guest(&self, guest: &Guest) -> Write<()> {
        self.write_guest(guest, false, |_| ())
    }

    /// Writes `guest` only if no guest has its id (decided inside the write's
    /// transaction); false when one does.
    pub fn insert_new_guest(&self, guest: &Guest) -> Write<bool> {
        self.write_guest(guest, true, |written| written)
    }

    /// Writes `guest` (only when its id is free, with `only_new`); `answer` turns
    /// "written" into the caller's value.
    fn write_guest<T: Send + 'static>(
        &self,
        guest: &Guest,
        only_new: bool,
        answer: fn(bool) -> T,
    ) -> Write<T> {
        let raw = match guest_raw(guest) {
            Ok(raw) => raw,
            Err(e) => return Write::failed(e),
        };
        let id = guest.id.clone();
        let memory = self.memory.clone();
        let (apply_raw, apply_id) = (raw.clone(), id.clone());
        self.write(
            move |txn| {
                let mut table = txn.open_table(GUESTS)?;
                if only_new && table.get(apply_id.as_str())?.is_some() {
                    return Ok(false);
                }
                table.insert(apply_id.as_str(), apply_raw.get().as_bytes())?;
                Ok(true)
            },
            move |written| {
                if written {
                    memory.set(id, raw);
                }
                answer(written)
            },
        )
    }

    /// Writes many guests in one transaction (imports, benchmarks).
    pub fn put_guests(&self, guests: &[Guest]) -> Write<()> {
        let encoded = match guests
            .iter()
            .map(|g| guest_raw(g).map(|raw| (g.id.clone(), raw)))
            .collect::<Result<Vec<_>>>()
        {
            Ok(e) => e,
            Err(e) => return Write::failed(e),
        };
        let memory = self.memory.clone();
        let to_write = encoded.clone();
        self.write(
            move |txn| {
                let mut table = txn.open_table(GUESTS)?;
                for (id, raw) in &to_write {
                    table.insert(id.as_str(), raw.get().as_bytes())?;
                }
                Ok(())
            },
            move |()| {
                for (id, raw) in encoded {
                    memory.set(id, raw);
                }
            },
        )
    }

    /// Removes guest `id`; true when it existed.
    pub fn delete_guest(&self, id: &str) -> Write<bool> {
        self.remove_guest_and(id, |_, existed| Ok(existed))
    }

    /// Removes guest `id` and does `also` (told whether the guest existed) in the same
    /// transaction; what `also` returned. Every guest removal goes through here.
    fn remove_guest_and<T: Send + 'static>(
        &self,
        id: &str,
        also: impl Fn(&redb::WriteTransaction, bool) -> Result<T> + Send + 'static,
    ) -> Write<T> {
        let memory = self.memory.clone();
        let (apply_id, id) = (id.to_string(), id.to_string());
        self.write(
            move |txn| {
                let existed = txn.open_table(GUESTS)?.remove(apply_id.as_str())?.is_some();
                also(txn, existed)
            },
            move |value| {
                memory.remove(&id);
                value
            },
        )
    }

    // ---------------------------------------------------------------- metadata

    /// The hypervisor metadata.
    pub fn metadata(&self) -> Result<BTreeMap<String, String>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(METADATA)?;
        let mut out = BTreeMap::new();
        for entry in table.iter()? {
            let (k, v) = entry?;
            out.insert(k.value().to_string(), v.value().to_string());
        }
        Ok(out)
    }

    /// Sets every non-empty value and deletes keys whose value is empty or `None`, in
    /// one transaction; the whole map after.
    pub fn patch_metadata(
        &self,
        patch: &BTreeMap<String, Option<String>>,
    ) -> Write<BTreeMap<String, String>> {
        let patch = patch.clone();
        self.write(
            move |txn| {
                let mut table = txn.open_table(METADATA)?;
                for (k, v) in &patch {
                    match v.as_deref() {
                        None | Some("") => {
                            table.remove(k.as_str())?;
                        }
                        Some(v) => {
                            table.insert(k.as_str(), v)?;
                        }
                    }
                }
                let mut out = BTreeMap::new();
                for entry in table.iter()? {
                    let (k, v) = entry?;
                    out.insert(k.value().to_string(), v.value().to_string());
                }
                Ok(out)
            },
            |value| value,
        )
    }

    // -------------------------------------------------------------------- jobs

    /// Adds a new job (and what to run, for jobs that must survive a restart), pruning
    /// the oldest finished jobs beyond `joblog_max`, in one transaction.
    pub fn add_job(&self, job: &Job, spec: Option<serde_json::Value>) -> Write<()> {
        let (job, max) = (job.clone(), self.joblog_max);
        self.write(move |txn| insert_job(txn, &job, spec.clone(), max), |()| ())
    }

    /// Appends finished jobs (oldest first) in one transaction, without specs: imports
    /// of another agent's log, benchmarks. Jobs beyond `joblog_max` are not kept.
    pub fn import_jobs(&self, jobs: &[Job]) -> Write<()> {
        let skip = jobs.len().saturating_sub(self.joblog_max);
        let jobs = jobs[skip..].to_vec();
        self.write(
            move |txn| {
                let mut order = txn.open_table(JOB_ORDER)?;
                let mut table = txn.open_table(JOBS)?;
                let mut per_guest = txn.open_table(GUEST_JOBS)?;
                let mut seq = order.last()?.map(|(k, _)| k.value()).unwrap_or(0);
                for job in &jobs {
                    seq += 1;
                    let record = Record {
                        job: job.clone(),
                        seq,
                        spec: None,
                    };
                    table.insert(job.id.as_str(), json(&record)?.as_slice())?;
                    order.insert(seq, job.id.as_str())?;
                    if !job.guest_id.is_empty() {
                        per_guest.insert((job.guest_id.as_str(), seq), job.id.as_str())?;
                    }
                }
                Ok(())
            },
            |value| value,
        )
    }

    /// Applies `change` to job `id` when `change` returns true; the job after (or as it
    /// was, when unchanged). `None` for an unknown job. A job that is done drops its
    /// spec.
    pub fn update_job(
        &self,
        id: &str,
        change: impl Fn(&mut Job) -> bool + Send + 'static,
    ) -> Write<Option<(Job, bool)>> {
        let id = id.to_string();
        self.write(move |txn| change_job(txn, &id, &change), |v| v)
    }

    /// Removes guest `id` and applies `change` to job `job` in one transaction, so a
    /// crash leaves both done or neither (never a deleted guest under a job that says it
    /// failed). The job after the change, as [`Store::update_job`].
    pub fn delete_guest_with_job(
        &self,
        id: &str,
        job: &str,
        change: impl Fn(&mut Job) -> bool + Send + 'static,
    ) -> Write<Option<(Job, bool)>> {
        let job = job.to_string();
        self.remove_guest_and(id, move |txn, _| change_job(txn, &job, &change))
    }

    fn record(&self, id: &str) -> Result<Option<Record>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(JOBS)?;
        let value = table.get(id)?;
        value.map(|v| parse(v.value(), "job")).transpose()
    }

    pub fn job(&self, id: &str) -> Result<Option<Job>> {
        Ok(self.record(id)?.map(|r| r.job))
    }

    /// What to run for job `id`, if it was stored with one.
    pub fn job_spec(&self, id: &str) -> Result<Option<serde_json::Value>> {
        Ok(self.record(id)?.and_then(|r| r.spec))
    }

    /// The newest `limit` jobs, newest first.
    pub fn jobs(&self, limit: usize) -> Result<Vec<Job>> {
        let txn = self.db.begin_read()?;
        let order = txn.open_table(JOB_ORDER)?;
        let jobs = txn.open_table(JOBS)?;
        let mut out = Vec::new();
        for entry in order.iter()?.rev() {
            if out.len() >= limit {
                break;
            }
            let (_, id) = entry?;
            if let Some(v) = jobs.get(id.value())? {
                out.push(parse::<Record>(v.value(), "job")?.job);
            }
        }
        Ok(out)
    }

    /// The newest `limit` jobs of guest `guest`, newest first.
    pub fn guest_jobs(&self, guest: &str, limit: usize) -> Result<Vec<Job>> {
        let txn = self.db.begin_read()?;
        let index = txn.open_table(GUEST_JOBS)?;
        let jobs = txn.open_table(JOBS)?;
        let mut out = Vec::new();
        for entry in index.range((guest, 0u64)..=(guest, u64::MAX))?.rev() {
            if out.len() >= limit {
                break;
            }
            let (_, id) = entry?;
            if let Some(v) = jobs.get(id.value())? {
                out.push(parse::<Record>(v.value(), "job")?.job);
            }
        }
        Ok(out)
    }

    /// Every job in `status`, oldest first, with its spec (start-up recovery).
    pub fn jobs_in(&self, status: JobStatus) -> Result<Vec<(Job, Option<serde_json::Value>)>> {
        let txn = self.db.begin_read()?;
        let order = txn.open_table(JOB_ORDER)?;
        let jobs = txn.open_table(JOBS)?;
        let mut out = Vec::new();
        for entry in order.iter()? {
            let (_, id) = entry?;
            if let Some(v) = jobs.get(id.value())? {
                let record: Record = parse(v.value(), "job")?;
                if record.job.status == status {
                    out.push((record.job, record.spec));
                }
            }
        }
        Ok(out)
    }

    /// Number of jobs in the log.
    pub fn job_count(&self) -> Result<u64> {
        let txn = self.db.begin_read()?;
        Ok(txn.open_table(JOB_ORDER)?.len()?)
    }
}

impl<T: Send + 'static> Write<T> {
    /// A write that failed before reaching the writer.
    fn failed(e: StoreError) -> Write<T> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let _ = tx.send(Err(e));
        Write { answer: Some(rx) }
    }
}

/// Applies `change` to job `id` inside `txn` when `change` returns true; the job after
/// (or as it was, when unchanged), `None` for an unknown job. A job that is done drops
/// its spec.
fn change_job(
    txn: &redb::WriteTransaction,
    id: &str,
    change: &impl Fn(&mut Job) -> bool,
) -> Result<Option<(Job, bool)>> {
    let mut jobs = txn.open_table(JOBS)?;
    let record: Option<Record> = match jobs.get(id)? {
        Some(v) => Some(parse(v.value(), "job")?),
        None => None,
    };
    Ok(match record {
        None => None,
        Some(mut record) => {
            let changed = change(&mut record.job);
            if changed {
                if record.job.status.is_done() {
                    record.spec = None;
                }
                jobs.insert(id, json(&record)?.as_slice())?;
            }
            Some((record.job, changed))
        }
    })
}

/// Adds `job` to the log inside `txn`, pruning the oldest finished jobs beyond
/// `joblog_max`.
fn insert_job(
    txn: &redb::WriteTransaction,
    job: &Job,
    spec: Option<serde_json::Value>,
    joblog_max: usize,
) -> Result<()> {
    let mut order = txn.open_table(JOB_ORDER)?;
    let seq = order.last()?.map(|(k, _)| k.value() + 1).unwrap_or(1);
    let record = Record {
        job: job.clone(),
        seq,
        spec,
    };
    let mut jobs = txn.open_table(JOBS)?;
    let mut per_guest = txn.open_table(GUEST_JOBS)?;
    jobs.insert(job.id.as_str(), json(&record)?.as_slice())?;
    order.insert(seq, job.id.as_str())?;
    if !job.guest_id.is_empty() {
        per_guest.insert((job.guest_id.as_str(), seq), job.id.as_str())?;
    }
    let excess = order.len()?.saturating_sub(joblog_max as u64);
    if excess > 0 {
        let mut doomed = Vec::new();
        for entry in order.iter()? {
            if doomed.len() as u64 >= excess {
                break;
            }
            let (seq, id) = entry?;
            let id = id.value().to_string();
            let record: Option<Record> = match jobs.get(id.as_str())? {
                Some(v) => Some(parse(v.value(), "job")?),
                None => None,
            };
            match record {
                Some(r) if !r.job.status.is_done() => continue,
                Some(r) => doomed.push((seq.value(), id, r.job.guest_id)),
                None => doomed.push((seq.value(), id, String::new())),
            }
        }
        for (seq, id, guest) in doomed {
            order.remove(seq)?;
            jobs.remove(id.as_str())?;
            if !guest.is_empty() {
                per_guest.remove((guest.as_str(), seq))?;
            }
        }
    }
    Ok(())
}

/// One write waiting for the writer.
trait GroupWrite: Send {
    /// Applies the write inside the group's transaction.
    fn apply(&mut self, txn: &redb::WriteTransaction) -> Result<()>;
    /// Once the group committed: runs the write's `after` and answers the caller.
    fn committed(self: Box<Self>);
    /// The write failed (its own error) or its group's commit did: answers the caller.
    fn failed(self: Box<Self>, error: StoreError);
}

struct Pending<V, F, A, T> {
    apply: F,
    after: Option<A>,
    value: Option<V>,
    reply: tokio::sync::oneshot::Sender<Result<T>>,
}

impl<V, T, F, A> GroupWrite for Pending<V, F, A, T>
where
    V: Send,
    T: Send,
    F: Fn(&redb::WriteTransaction) -> Result<V> + Send,
    A: FnOnce(V) -> T + Send,
{
    fn apply(&mut self, txn: &redb::WriteTransaction) -> Result<()> {
        self.value = Some((self.apply)(txn)?);
        Ok(())
    }

    fn committed(mut self: Box<Self>) {
        let answer = match (self.value.take(), self.after.take()) {
            (Some(value), Some(after)) => Ok(after(value)),
            _ => Err(StoreError::WriterStopped),
        };
        let _ = self.reply.send(answer);
    }

    fn failed(self: Box<Self>, error: StoreError) {
        let _ = self.reply.send(Err(error));
    }
}

/// Most writes committed together.
const MAX_GROUP: usize = 256;

/// The writer thread: takes the writes waiting, applies them in one transaction,
/// commits, answers each; until the store is dropped.
fn write_groups(db: &Database, queue: &mpsc::Receiver<Box<dyn GroupWrite>>) {
    while let Ok(first) = queue.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(next) => group.push(next),
                Err(_) => break,
            }
        }
        commit_group(db, group);
    }
}

/// Commits `group` in one transaction. A write whose `apply` fails is answered with its
/// error, the transaction is dropped (nothing of it is kept), and the rest of the group
/// is applied again in a fresh one; a failed commit fails every write of the group.
fn commit_group(db: &Database, mut group: Vec<Box<dyn GroupWrite>>) {
    loop {
        let txn = match db.begin_write() {
            Ok(txn) => txn,
            Err(e) => return fail_all(group, e.into()),
        };
        let mut failed = None;
        for (i, write) in group.iter_mut().enumerate() {
            if let Err(e) = write.apply(&txn) {
                failed = Some((i, e));
                break;
            }
        }
        if let Some((i, e)) = failed {
            drop(txn);
            tracing::error!("store write failed: {e}");
            group.remove(i).failed(e);
            if group.is_empty() {
                return;
            }
            continue;
        }
        return match txn.commit() {
            Ok(()) => group.into_iter().for_each(GroupWrite::committed),
            Err(e) => fail_all(group, e.into()),
        };
    }
}

fn fail_all(group: Vec<Box<dyn GroupWrite>>, error: StoreError) {
    tracing::error!(writes = group.len(), "store commit failed: {error}");
    let shared = Arc::new(error);
    for write in group {
        write.failed(StoreError::Commit(shared.clone()));
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        // The writer ends once its queue is closed and empty; the file is closed after.
        drop(self.writes.take());
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mistify_types::serde_go::go_time;

    fn job(id: &str, guest: &str, status: JobStatus) -> Job {
        Job {
            id: id.into(),
            guest_id: guest.into(),
            action: "reboot".into(),
            status,
            queued_at: go_time::zero(),
            ..Job::default()
        }
    }

    /// A store path in a fresh directory of its own, removed when dropped.
    struct Temp(std::path::PathBuf);

    impl std::ops::Deref for Temp {
        type Target = Path;
        fn deref(&self) -> &Path {
            &self.0
        }
    }

    impl AsRef<Path> for Temp {
        fn as_ref(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Temp {
        fn drop(&mut self) {
            if let Some(dir) = self.0.parent() {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }

    fn temp(name: &str) -> Temp {
        let dir = std::env::temp_dir().join(format!("mistify-store-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Temp(dir.join("agent.redb"))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn group_commit_applies_every_concurrent_write_and_closes_the_file() {
        let path = temp("group");
        {
            let s = Arc::new(Store::open(&path, 10_000).unwrap());
            let tasks: Vec<_> = (0..200)
                .map(|i| {
                    let s = s.clone();
                    tokio::spawn(async move {
                        let id = format!("j{i}");
                        s.add_job(&job(&id, &format!("g{}", i % 7), JobStatus::Queued), None)
                            .await
                            .unwrap();
                        let (after, changed) = s
                            .update_job(&id, |j| {
                                j.status = JobStatus::Complete;
                                true
                            })
                            .await
                            .unwrap()
                            .unwrap();
                        assert!(changed);
                        assert_eq!(after.status, JobStatus::Complete);
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
            assert_eq!(s.job_count().unwrap(), 200);
            assert!(s.update_job("nope", |_| true).await.unwrap().is_none());
        }
        // Dropping the store stopped its writer and closed the file: it opens again.
        let s = Store::open(&path, 10_000).unwrap();
        let jobs = s.jobs(1000).unwrap();
        assert_eq!(jobs.len(), 200);
        assert!(jobs.iter().all(|j| j.status == JobStatus::Complete));
        assert_eq!(s.guest_jobs("g3", 1000).unwrap().len(), 29);
    }

    #[test]
    fn guests_metadata_and_jobs_survive_reopen() {
        let path = temp("reopen");
        {
            let s = Store::open(&path, 10).unwrap();
            let g = Guest {
                id: "g1".into(),
                memory: 512,
                ..Guest::default()
            };
            assert!(s.insert_new_guest(&g).wait().unwrap());
            assert!(!s.insert_new_guest(&g).wait().unwrap());
            let patch = [
                ("a".to_string(), Some("1".to_string())),
                ("b".to_string(), Some("2".to_string())),
            ]
            .into();
            s.patch_metadata(&patch).wait().unwrap();
            let patch = [
                ("a".to_string(), None),
                ("b".to_string(), Some(String::new())),
            ]
            .into();
            assert!(s.patch_metadata(&patch).wait().unwrap().is_empty());
            let patch = [("c".to_string(), Some("3".to_string()))].into();
            s.patch_metadata(&patch).wait().unwrap();
            s.add_job(
                &job("j1", "g1", JobStatus::Queued),
                Some(serde_json::json!({"x": 1})),
            )
            .wait()
            .unwrap();
            s.add_job(&job("j2", "g2", JobStatus::Queued), None)
                .wait()
                .unwrap();
            s.update_job("j1", |j| {
                j.status = JobStatus::Complete;
                true
            })
            .wait()
            .unwrap();
        }
        let s = Store::open(&path, 10).unwrap();
        assert_eq!(s.guest("g1").unwrap().memory, 512);
        assert_eq!(
            s.metadata().unwrap(),
            [("c".to_string(), "3".to_string())].into()
        );
        let ids: Vec<_> = s.jobs(10).unwrap().into_iter().map(|j| j.id).collect();
        assert_eq!(ids, ["j2", "j1"]);
        assert_eq!(
            s.guest_jobs("g1", 10).unwrap()[0].status,
            JobStatus::Complete
        );
        assert!(
            s.job_spec("j1").unwrap().is_none(),
            "a finished job drops its spec"
        );
        assert_eq!(s.jobs_in(JobStatus::Queued).unwrap().len(), 1);
        assert!(s.delete_guest("g1").wait().unwrap());
        assert!(s.guest("g1").is_none());
    }

    #[test]
    fn the_cached_guest_list_follows_every_change() {
        let path = temp("list");
        let s = Store::open(&path, 10).unwrap();
        assert_eq!(&s.guests_json()[..], b"null\n");
        let mut g = Guest {
            id: "g1".into(),
            memory: 1,
            ..Guest::default()
        };
        s.put_guest(&g).wait().unwrap();
        assert_eq!(&s.guests_json()[..], b"[{\"id\":\"g1\",\"memory\":1}]\n");
        g.memory = 2;
        s.put_guest(&g).wait().unwrap();
        assert_eq!(&s.guests_json()[..], b"[{\"id\":\"g1\",\"memory\":2}]\n");
        s.put_guests(&[Guest {
            id: "g0".into(),
            ..Guest::default()
        }])
        .wait()
        .unwrap();
        assert_eq!(
            &s.guests_json()[..],
            b"[{\"id\":\"g0\"},{\"id\":\"g1\",\"memory\":2}]\n"
        );
        s.delete_guest("g0").wait().unwrap();
        s.delete_guest("g1").wait().unwrap();
        assert_eq!(&s.guests_json()[..], b"null\n");
    }

    #[test]
    fn pruning_keeps_active_jobs() {
        let path = temp("prune");
        let s = Store::open(&path, 3).unwrap();
        s.add_job(&job("active", "g", JobStatus::Running), None)
            .wait()
            .unwrap();
        for i in 0..6 {
            s.add_job(&job(&format!("done{i}"), "g", JobStatus::Complete), None)
                .wait()
                .unwrap();
        }
        let ids: Vec<_> = s.jobs(100).unwrap().into_iter().map(|j| j.id).collect();
        assert_eq!(ids, ["done5", "done4", "active"]);
        assert_eq!(s.guest_jobs("g", 100).unwrap().len(), 3);
        assert_eq!(s.job_count().unwrap(), 3);
    }

    #[test]
    fn a_go_sqlite_file_is_refused() {
        let path = temp("sqlite");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut bytes = SQLITE_MAGIC.to_vec();
        bytes.extend([0u8; 100]);
        std::fs::write(&path, bytes).unwrap();
        let err = Store::open(&path, 10).err().unwrap().to_string();
        assert!(
            err.contains("Go mistify-agent") && err.contains("import-go-db"),
            "{err}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_write_leaves_its_group_and_the_others_commit() {
        let path = temp("isolate");
        let s = Arc::new(Store::open(&path, 100).unwrap());
        // A job record that is not JSON: changing it fails inside its transaction.
        let corrupt = s.write(
            |txn| {
                txn.open_table(JOBS)?
                    .insert("bad", b"not json".as_slice())?;
                Ok(())
            },
            |()| (),
        );
        corrupt.await.unwrap();
        let writes: Vec<_> = (0..20)
            .map(|i| {
                let s = s.clone();
                tokio::spawn(async move {
                    if i == 7 {
                        s.update_job("bad", |_| true).await.map(|_| ())
                    } else {
                        s.add_job(&job(&format!("ok{i}"), "g", JobStatus::Queued), None)
                            .await
                    }
                })
            })
            .collect();
        let mut failed = 0;
        for w in writes {
            if let Err(e) = w.await.unwrap() {
                assert!(e.to_string().contains("corrupt job"), "{e}");
                failed += 1;
            }
        }
        assert_eq!(failed, 1, "only the failing write fails");
        assert_eq!(s.job_count().unwrap(), 19);
        // Nothing of the failed write was kept: the record is as it was.
        assert!(s.job("bad").is_err());
    }
}
