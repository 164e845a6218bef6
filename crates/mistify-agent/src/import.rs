//! `mistify-agent import-go-db`: reads the SQLite (kvite) database of the Go agent and
//! copies its guests, hypervisor metadata and job log into our store.

use std::collections::BTreeMap;
use std::path::Path;

use mistify_types::{Guest, Job, JobStatus};
use rusqlite::{Connection, OpenFlags};

use crate::store::{Store, StoreError};

/// Why an import stopped (entries that cannot be read are skipped and reported instead).
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("reading the Go database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("{} has no mistify_agent table: not a Go mistify-agent database", .0.display())]
    NotGo(std::path::PathBuf),
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

fn check_id(what: &'static str, id: &str) -> Result<(), mistify_types::IdError> {
    mistify_types::id::check(what, id)
}

/// The message of a Go job that had not finished when its log was imported.
pub const UNFINISHED: &str = "imported from the Go agent before it finished";

/// What an import did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ImportReport {
    pub guests: usize,
    pub metadata: usize,
    pub jobs: usize,
    /// Entries left out, each with the reason.
    pub skipped: Vec<String>,
}

/// Imports `go_db` into `store`. Guests already in the store are kept and reported.
pub fn import_go_db(go_db: &Path, store: &Store) -> Result<ImportReport, ImportError> {
    let conn = Connection::open_with_flags(go_db, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let has_table: bool = conn.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'mistify_agent'",
        [],
        |row| row.get::<_, i64>(0),
    )? > 0;
    if !has_table {
        return Err(ImportError::NotGo(go_db.to_path_buf()));
    }
    let mut stmt = conn.prepare("SELECT key, bucket, value FROM mistify_agent ORDER BY rowid")?;
    let rows = stmt.query_map([], |row| {
        Ok((
            row.get::<_, String>(0)?,
            row.get::<_, String>(1)?,
            row.get::<_, Vec<u8>>(2)?,
        ))
    })?;

    let mut report = ImportReport::default();
    let mut guests = Vec::new();
    let mut metadata = BTreeMap::new();
    let mut jobs: BTreeMap<String, Job> = BTreeMap::new();
    for row in rows {
        let (key, bucket, value) = row?;
        match bucket.as_str() {
            "guests" => match serde_json::from_slice::<Guest>(&value) {
                Ok(mut guest) => {
                    if guest.id.is_empty() {
                        guest.id = key.clone();
                    }
                    if let Err(e) = check_id("guest id", &guest.id) {
                        report.skipped.push(format!("guest {key:?}: {e}"));
                    } else if store.has_guest(&guest.id) {
                        report
                            .skipped
                            .push(format!("guest {}: already in the store", guest.id));
                    } else {
                        guests.push(guest);
                    }
                }
                Err(e) => report
                    .skipped
                    .push(format!("guest {key:?}: unreadable: {e}")),
            },
            "hypervisor-metadata" => match String::from_utf8(value) {
                Ok(v) if !v.is_empty() => {
                    metadata.insert(key, Some(v));
                }
                Ok(_) => {}
                Err(_) => report.skipped.push(format!("metadata {key:?}: not UTF-8")),
            },
            "guest_jobs" | "joblog" => match serde_json::from_slice::<Option<Vec<Job>>>(&value) {
                Ok(list) => {
                    for mut job in list.unwrap_or_default() {
                        if job.id.is_empty() || check_id("job id", &job.id).is_err() {
                            report.skipped.push(format!("job {:?}: invalid id", job.id));
                            continue;
                        }
                        if !job.status.is_done() {
                            job.status = JobStatus::Error;
                            job.message = UNFINISHED.into();
                        }
                        jobs.insert(job.id.clone(), job);
                    }
                }
                Err(e) => report
                    .skipped
                    .push(format!("job log {bucket}/{key:?}: unreadable: {e}")),
            },
            other => report
                .skipped
                .push(format!("bucket {other:?} key {key:?}: unknown, left out")),
        }
    }
    let mut jobs: Vec<Job> = jobs.into_values().collect();
    jobs.sort_by_key(|j| j.queued_at);
    // A command-line tool, outside any runtime: the writes are waited for here.
    store.put_guests(&guests).wait()?;
    if !metadata.is_empty() {
        store.patch_metadata(&metadata).wait()?;
    }
    store.import_jobs(&jobs).wait()?;
    report.guests = guests.len();
    report.metadata = metadata.len();
    report.jobs = jobs.len();
    Ok(report)
}
