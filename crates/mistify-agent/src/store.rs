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
//! Calls are blocking (a commit waits for the disk): async code runs them through
//! [`Store::blocking`]. The job writes of running jobs ([`Store::add_job_async`],
//! [`Store::update_job_async`]) go to one writer thread instead, which commits every
//! write waiting at that moment in one transaction (a group commit): under load a commit
//! costs one disk flush for many jobs, and no thread waits on another's commit.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, RwLock};
use std::thread::JoinHandle;

use bytes::Bytes;
use mistify_client::{Guest, Job, JobStatus};
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::error::AgentError;

const GUESTS: TableDefinition<&str, &[u8]> = TableDefinition::new("guests");
const METADATA: TableDefinition<&str, &str> = TableDefinition::new("hypervisor-metadata");
const JOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("jobs");
const JOB_ORDER: TableDefinition<u64, &str> = TableDefinition::new("job-order");
const GUEST_JOBS: TableDefinition<(&str, u64), &str> = TableDefinition::new("guest-jobs");

/// What a stored job record holds: the job as the API shows it, its place in the log,
/// and (while it may still run) what to run.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    job: Job,
    seq: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    spec: Option<serde_json::Value>,
}

/// The store. Cheap to share behind an `Arc`.
pub struct Store {
    db: Arc<Database>,
    joblog_max: usize,
    /// To the group-commit writer thread; `None` once dropping.
    writes: Option<mpsc::Sender<Box<dyn GroupWrite>>>,
    writer: Option<JoinHandle<()>>,
    /// Every guest as its JSON (a few hundred bytes each; parsed when asked for),
    /// written by `serde_json` from a `Guest`: valid JSON, never checked again.
    guests: RwLock<BTreeMap<String, Arc<RawValue>>>,
    /// Serializes guest writes so the memory copy follows the file's order.
    guest_writes: Mutex<()>,
    /// `GET /guests` as sent, rebuilt after a change.
    list_json: RwLock<Option<Bytes>>,
    /// Bumped by every guest change (so a list serialized meanwhile is not cached).
    generation: AtomicU64,
}

fn json<T: Serialize>(value: &T) -> Result<Vec<u8>, AgentError> {
    serde_json::to_vec(value).map_err(|e| AgentError::Internal(format!("encoding: {e}")))
}

/// A guest's JSON as `serde_json` writes it (kept in memory, written to the file).
fn guest_raw(guest: &Guest) -> Result<Arc<RawValue>, AgentError> {
    serde_json::value::to_raw_value(guest)
        .map(Arc::from)
        .map_err(|e| AgentError::Internal(format!("encoding: {e}")))
}

fn parse<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, AgentError> {
    serde_json::from_slice(bytes).map_err(|e| AgentError::Store(format!("corrupt {what}: {e}")))
}

/// redb's page cache: the guests live in memory anyway, the job log is read by pages.
const CACHE_BYTES: usize = 16 * 1024 * 1024;

/// The first bytes of every SQLite database file (what the Go agent wrote).
const SQLITE_MAGIC: &[u8] = b"SQLite format 3\0";

impl Store {
    /// Opens (or creates) the store at `path`. A SQLite file from the Go agent is refused
    /// with a message saying how to import it.
    pub fn open(path: &Path, joblog_max: usize) -> Result<Store, AgentError> {
        if let Ok(mut f) = std::fs::File::open(path) {
            let mut head = [0u8; 16];
            if std::io::Read::read_exact(&mut f, &mut head).is_ok() && head == SQLITE_MAGIC {
                return Err(AgentError::Store(format!(
                    "{} is a database of the Go mistify-agent (SQLite); move it aside and import it with \
                     `mistify-agent import-go-db {}`",
                    path.display(),
                    path.display()
                )));
            }
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| AgentError::Store(format!("cannot create {}: {e}", dir.display())))?;
        }
        let db = redb::Builder::new()
            .set_cache_size(CACHE_BYTES)
            .create(path)
            .map_err(|e| AgentError::Store(format!("{}: {e}", path.display())))?;
        {
            let txn = db.begin_write()?;
            txn.open_table(GUESTS)?;
            txn.open_table(METADATA)?;
            txn.open_table(JOBS)?;
            txn.open_table(JOB_ORDER)?;
            txn.open_table(GUEST_JOBS)?;
            txn.commit()?;
        }
        let mut guests = BTreeMap::new();
        {
            let txn = db.begin_read()?;
            let table = txn.open_table(GUESTS)?;
            for entry in table.iter()? {
                let (k, v) = entry?;
                // Checked once here; the bytes are what `GET /guests` sends.
                let guest: Guest = parse(v.value(), "guest")?;
                guests.insert(k.value().to_string(), guest_raw(&guest)?);
            }
        }
        let db = Arc::new(db);
        let (writes, queue) = mpsc::channel();
        let writer = {
            let db = db.clone();
            std::thread::Builder::new()
                .name("store-writer".into())
                .spawn(move || write_groups(&db, &queue))
                .map_err(|e| AgentError::Store(format!("cannot start the store writer: {e}")))?
        };
        Ok(Store {
            db,
            writes: Some(writes),
            writer: Some(writer),
            joblog_max: joblog_max.max(1),
            guests: RwLock::new(guests),
            guest_writes: Mutex::new(()),
            list_json: RwLock::new(None),
            generation: AtomicU64::new(0),
        })
    }

    /// Runs `f` on a blocking thread (store calls wait for the disk).
    pub async fn blocking<T, F>(self: &Arc<Self>, f: F) -> Result<T, AgentError>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> Result<T, AgentError> + Send + 'static,
    {
        let store = self.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| AgentError::Internal(format!("store task failed: {e}")))?
    }

    // ------------------------------------------------------------------ guests

    /// The id of every guest, in order.
    pub fn guest_ids(&self) -> Vec<String> {
        self.guests
            .read()
            .map(|g| g.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// The JSON of every guest (what `GET /guests` sends: `null` when there is none),
    /// serialized once per change.
    pub fn guests_json(&self) -> Result<Bytes, AgentError> {
        if let Some(cached) = self.list_json.read().ok().and_then(|c| c.clone()) {
            return Ok(cached);
        }
        let generation = self.generation.load(Ordering::SeqCst);
        let bytes = {
            let guests = self
                .guests
                .read()
                .map_err(|_| AgentError::Internal("guest map poisoned".into()))?;
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
        if let Ok(mut cache) = self.list_json.write() {
            if self.generation.load(Ordering::SeqCst) == generation {
                *cache = Some(bytes.clone());
            }
        }
        Ok(bytes)
    }

    fn invalidate_list(&self) {
        if let Ok(mut cache) = self.list_json.write() {
            self.generation.fetch_add(1, Ordering::SeqCst);
            *cache = None;
        }
    }

    pub fn guest_count(&self) -> usize {
        self.guests.read().map(|g| g.len()).unwrap_or(0)
    }

    /// Guest `id` as its stored JSON (for requests that only pass it on).
    pub fn guest_json(&self, id: &str) -> Option<Arc<RawValue>> {
        self.guests.read().ok().and_then(|g| g.get(id).cloned())
    }

    /// Guest `id`, parsed from its stored JSON.
    pub fn guest(&self, id: &str) -> Option<Arc<Guest>> {
        let raw = self.guests.read().ok().and_then(|g| g.get(id).cloned())?;
        match serde_json::from_str::<Guest>(raw.get()) {
            Ok(guest) => Some(Arc::new(guest)),
            Err(e) => {
                // Written by `json` above: cannot happen short of memory corruption.
                tracing::error!(guest = id, "unreadable guest in memory: {e}");
                None
            }
        }
    }

    /// Whether guest `id` exists.
    pub fn has_guest(&self, id: &str) -> bool {
        self.guests.read().is_ok_and(|g| g.contains_key(id))
    }

    /// Writes `guest` under its id.
    pub fn put_guest(&self, guest: &Guest) -> Result<(), AgentError> {
        self.write_guest(guest, false).map(|_| ())
    }

    /// Writes `guest` only if no guest has its id; false when one does.
    pub fn insert_new_guest(&self, guest: &Guest) -> Result<bool, AgentError> {
        self.write_guest(guest, true)
    }

    fn write_guest(&self, guest: &Guest, only_new: bool) -> Result<bool, AgentError> {
        let _w = self
            .guest_writes
            .lock()
            .map_err(|_| AgentError::Internal("guest lock poisoned".into()))?;
        if only_new && self.has_guest(&guest.id) {
            return Ok(false);
        }
        let raw = guest_raw(guest)?;
        let txn = self.db.begin_write()?;
        txn.open_table(GUESTS)?
            .insert(guest.id.as_str(), raw.get().as_bytes())?;
        txn.commit()?;
        if let Ok(mut g) = self.guests.write() {
            g.insert(guest.id.clone(), raw);
        }
        self.invalidate_list();
        Ok(true)
    }

    /// Writes many guests in one transaction (imports, benchmarks).
    pub fn put_guests(&self, guests: &[Guest]) -> Result<(), AgentError> {
        let _w = self
            .guest_writes
            .lock()
            .map_err(|_| AgentError::Internal("guest lock poisoned".into()))?;
        let encoded = guests
            .iter()
            .map(|g| guest_raw(g).map(|b| (g.id.clone(), b)))
            .collect::<Result<Vec<_>, _>>()?;
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(GUESTS)?;
            for (id, bytes) in &encoded {
                table.insert(id.as_str(), bytes.get().as_bytes())?;
            }
        }
        txn.commit()?;
        if let Ok(mut g) = self.guests.write() {
            for (id, bytes) in encoded {
                g.insert(id, bytes);
            }
        }
        self.invalidate_list();
        Ok(())
    }

    /// Removes guest `id`; true when it existed.
    pub fn delete_guest(&self, id: &str) -> Result<bool, AgentError> {
        self.remove_guest_and(id, |_| Ok(()))
            .map(|(existed, ())| existed)
    }

    /// Removes guest `id` and does `also` in the same transaction; whether the guest
    /// existed, and what `also` returned. Every guest removal goes through here.
    fn remove_guest_and<T>(
        &self,
        id: &str,
        also: impl FnOnce(&redb::WriteTransaction) -> Result<T, AgentError>,
    ) -> Result<(bool, T), AgentError> {
        let _w = self
            .guest_writes
            .lock()
            .map_err(|_| AgentError::Internal("guest lock poisoned".into()))?;
        let txn = self.db.begin_write()?;
        let existed = txn.open_table(GUESTS)?.remove(id)?.is_some();
        let out = also(&txn)?;
        txn.commit()?;
        if let Ok(mut g) = self.guests.write() {
            g.remove(id);
        }
        self.invalidate_list();
        Ok((existed, out))
    }

    // ---------------------------------------------------------------- metadata

    /// The hypervisor metadata.
    pub fn metadata(&self) -> Result<BTreeMap<String, String>, AgentError> {
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
    /// one transaction; returns the whole map after.
    pub fn patch_metadata(
        &self,
        patch: &BTreeMap<String, Option<String>>,
    ) -> Result<BTreeMap<String, String>, AgentError> {
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(METADATA)?;
            for (k, v) in patch {
                match v.as_deref() {
                    None | Some("") => {
                        table.remove(k.as_str())?;
                    }
                    Some(v) => {
                        table.insert(k.as_str(), v)?;
                    }
                }
            }
        }
        txn.commit()?;
        self.metadata()
    }

    // -------------------------------------------------------------------- jobs

    /// Adds a new job (and what to run, for jobs that must survive a restart), pruning
    /// the oldest finished jobs beyond `joblog_max`, in one transaction.
    pub fn add_job(&self, job: &Job, spec: Option<serde_json::Value>) -> Result<(), AgentError> {
        let txn = self.db.begin_write()?;
        insert_job(&txn, job, spec, self.joblog_max)?;
        txn.commit()?;
        Ok(())
    }

    /// [`Store::add_job`] through the group-commit writer.
    pub async fn add_job_async(
        &self,
        job: Job,
        spec: Option<serde_json::Value>,
    ) -> Result<(), AgentError> {
        let max = self.joblog_max;
        self.group_write(move |txn| insert_job(txn, &job, spec, max))
            .await
    }

    /// [`Store::update_job`] through the group-commit writer.
    pub async fn update_job_async(
        &self,
        id: String,
        change: impl FnOnce(&mut Job) -> bool + Send + 'static,
    ) -> Result<Option<(Job, bool)>, AgentError> {
        self.group_write(move |txn| change_job(txn, &id, change))
            .await
    }

    /// Runs `write` in the writer thread's next transaction; its value once committed.
    async fn group_write<T, F>(&self, write: F) -> Result<T, AgentError>
    where
        T: Send + 'static,
        F: FnOnce(&redb::WriteTransaction) -> Result<T, AgentError> + Send + 'static,
    {
        let stopped = || AgentError::Store("the store's writer has stopped".into());
        let (reply, answer) = tokio::sync::oneshot::channel();
        let pending = Box::new(Pending {
            write: Some(write),
            value: None,
            reply,
        });
        self.writes
            .as_ref()
            .ok_or_else(stopped)?
            .send(pending)
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// Appends finished jobs (oldest first) in one transaction, without specs: imports
    /// of another agent's log, benchmarks. Jobs beyond `joblog_max` are not kept.
    pub fn import_jobs(&self, jobs: &[Job]) -> Result<(), AgentError> {
        let skip = jobs.len().saturating_sub(self.joblog_max);
        let txn = self.db.begin_write()?;
        {
            let mut order = txn.open_table(JOB_ORDER)?;
            let mut table = txn.open_table(JOBS)?;
            let mut per_guest = txn.open_table(GUEST_JOBS)?;
            let mut seq = order.last()?.map(|(k, _)| k.value()).unwrap_or(0);
            for job in &jobs[skip..] {
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
        }
        txn.commit()?;
        Ok(())
    }

    fn record(&self, id: &str) -> Result<Option<Record>, AgentError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(JOBS)?;
        let value = table.get(id)?;
        value.map(|v| parse(v.value(), "job")).transpose()
    }

    pub fn job(&self, id: &str) -> Result<Option<Job>, AgentError> {
        Ok(self.record(id)?.map(|r| r.job))
    }

    /// What to run for job `id`, if it was stored with one.
    pub fn job_spec(&self, id: &str) -> Result<Option<serde_json::Value>, AgentError> {
        Ok(self.record(id)?.and_then(|r| r.spec))
    }

    /// Applies `change` to job `id` in one transaction when `change` returns true;
    /// the job after (or as it was, when unchanged). `None` for an unknown job. A job
    /// that is done drops its spec.
    pub fn update_job(
        &self,
        id: &str,
        change: impl FnOnce(&mut Job) -> bool,
    ) -> Result<Option<(Job, bool)>, AgentError> {
        let txn = self.db.begin_write()?;
        let outcome = change_job(&txn, id, change)?;
        txn.commit()?;
        Ok(outcome)
    }

    /// Removes guest `id` and applies `change` to job `job` in one transaction, so a
    /// crash leaves both done or neither (never a deleted guest under a job that says it
    /// failed). The job after the change, as [`Store::update_job`].
    pub fn delete_guest_with_job(
        &self,
        id: &str,
        job: &str,
        change: impl FnOnce(&mut Job) -> bool,
    ) -> Result<Option<(Job, bool)>, AgentError> {
        self.remove_guest_and(id, |txn| change_job(txn, job, change))
            .map(|(_, outcome)| outcome)
    }

    /// The newest `limit` jobs, newest first.
    pub fn jobs(&self, limit: usize) -> Result<Vec<Job>, AgentError> {
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
    pub fn guest_jobs(&self, guest: &str, limit: usize) -> Result<Vec<Job>, AgentError> {
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
    pub fn jobs_in(
        &self,
        status: JobStatus,
    ) -> Result<Vec<(Job, Option<serde_json::Value>)>, AgentError> {
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
    pub fn job_count(&self) -> Result<u64, AgentError> {
        let txn = self.db.begin_read()?;
        Ok(txn.open_table(JOB_ORDER)?.len()?)
    }
}

/// Applies `change` to job `id` inside `txn` when `change` returns true; the job after
/// (or as it was, when unchanged), `None` for an unknown job. A job that is done drops
/// its spec.
fn change_job(
    txn: &redb::WriteTransaction,
    id: &str,
    change: impl FnOnce(&mut Job) -> bool,
) -> Result<Option<(Job, bool)>, AgentError> {
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
) -> Result<(), AgentError> {
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

/// One write waiting for the group-commit writer.
trait GroupWrite: Send {
    /// Applies the write inside the group's transaction.
    fn apply(&mut self, txn: &redb::WriteTransaction) -> Result<(), AgentError>;
    /// Answers the caller once the group committed (or failed, with the reason).
    fn deliver(self: Box<Self>, committed: Result<(), &str>);
}

struct Pending<T, F> {
    write: Option<F>,
    value: Option<T>,
    reply: tokio::sync::oneshot::Sender<Result<T, AgentError>>,
}

impl<T, F> GroupWrite for Pending<T, F>
where
    T: Send,
    F: FnOnce(&redb::WriteTransaction) -> Result<T, AgentError> + Send,
{
    fn apply(&mut self, txn: &redb::WriteTransaction) -> Result<(), AgentError> {
        if let Some(write) = self.write.take() {
            self.value = Some(write(txn)?);
        }
        Ok(())
    }

    fn deliver(self: Box<Self>, committed: Result<(), &str>) {
        let outcome = match (committed, self.value) {
            (Ok(()), Some(value)) => Ok(value),
            (Ok(()), None) => Err(AgentError::Internal("a store write was not applied".into())),
            (Err(e), _) => Err(AgentError::Store(e.to_string())),
        };
        let _ = self.reply.send(outcome);
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
        let outcome = commit_group(db, &mut group).map_err(|e| e.to_string());
        if let Err(e) = &outcome {
            tracing::error!(writes = group.len(), "store write failed: {e}");
        }
        for write in group {
            write.deliver(outcome.as_ref().map(|_| ()).map_err(String::as_str));
        }
    }
}

/// One transaction for the whole group: any failure abandons all of it.
fn commit_group(db: &Database, group: &mut [Box<dyn GroupWrite>]) -> Result<(), AgentError> {
    let txn = db.begin_write()?;
    for write in group.iter_mut() {
        write.apply(&txn)?;
    }
    txn.commit()?;
    Ok(())
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
    use mistify_client::serde_go::go_time;

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

    fn temp(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("mistify-store-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir.join("agent.redb")
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
                        s.add_job_async(job(&id, &format!("g{}", i % 7), JobStatus::Queued), None)
                            .await
                            .unwrap();
                        let (after, changed) = s
                            .update_job_async(id, |j| {
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
            assert!(s
                .update_job_async("nope".into(), |_| true)
                .await
                .unwrap()
                .is_none());
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
            assert!(s.insert_new_guest(&g).unwrap());
            assert!(!s.insert_new_guest(&g).unwrap());
            let patch = [
                ("a".to_string(), Some("1".to_string())),
                ("b".to_string(), Some("2".to_string())),
            ]
            .into();
            s.patch_metadata(&patch).unwrap();
            let patch = [
                ("a".to_string(), None),
                ("b".to_string(), Some(String::new())),
            ]
            .into();
            assert!(s.patch_metadata(&patch).unwrap().is_empty());
            let patch = [("c".to_string(), Some("3".to_string()))].into();
            s.patch_metadata(&patch).unwrap();
            s.add_job(
                &job("j1", "g1", JobStatus::Queued),
                Some(serde_json::json!({"x": 1})),
            )
            .unwrap();
            s.add_job(&job("j2", "g2", JobStatus::Queued), None)
                .unwrap();
            s.update_job("j1", |j| {
                j.status = JobStatus::Complete;
                true
            })
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
        assert!(s.delete_guest("g1").unwrap());
        assert!(s.guest("g1").is_none());
    }

    #[test]
    fn the_cached_guest_list_follows_every_change() {
        let s = Store::open(&temp("list"), 10).unwrap();
        assert_eq!(&s.guests_json().unwrap()[..], b"null\n");
        let mut g = Guest {
            id: "g1".into(),
            memory: 1,
            ..Guest::default()
        };
        s.put_guest(&g).unwrap();
        assert_eq!(
            &s.guests_json().unwrap()[..],
            b"[{\"id\":\"g1\",\"memory\":1}]\n"
        );
        g.memory = 2;
        s.put_guest(&g).unwrap();
        assert_eq!(
            &s.guests_json().unwrap()[..],
            b"[{\"id\":\"g1\",\"memory\":2}]\n"
        );
        s.put_guests(&[Guest {
            id: "g0".into(),
            ..Guest::default()
        }])
        .unwrap();
        assert_eq!(
            &s.guests_json().unwrap()[..],
            b"[{\"id\":\"g0\"},{\"id\":\"g1\",\"memory\":2}]\n"
        );
        s.delete_guest("g0").unwrap();
        s.delete_guest("g1").unwrap();
        assert_eq!(&s.guests_json().unwrap()[..], b"null\n");
    }

    #[test]
    fn pruning_keeps_active_jobs() {
        let s = Store::open(&temp("prune"), 3).unwrap();
        s.add_job(&job("active", "g", JobStatus::Running), None)
            .unwrap();
        for i in 0..6 {
            s.add_job(&job(&format!("done{i}"), "g", JobStatus::Complete), None)
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
}
