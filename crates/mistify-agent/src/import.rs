//! `mistify-agent import-go-db`: reads the SQLite (kvite) database of the Go agent and
//! copies its guests, hypervisor metadata and job log into our store.

use std::collections::BTreeMap;
use std::path::Path;

use mistify_client::{Guest, Job, JobStatus};
use rusqlite::{Connection, OpenFlags};

use crate::api::check_id;
use crate::error::AgentError;
use crate::store::Store;

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

fn sql(e: rusqlite::Error) -> AgentError {
    AgentError::Store(format!("reading the Go database: {e}"))
}

/// Imports `go_db` into `store`. Guests already in the store are kept and reported.
pub fn import_go_db(go_db: &Path, store: &Store) -> Result<ImportReport, AgentError> {
    let conn = Connection::open_with_flags(go_db, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(sql)?;
    let has_table: bool = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'mistify_agent'",
            [],
            |row| row.get::<_, i64>(0),
        )
        .map_err(sql)?
        > 0;
    if !has_table {
        return Err(AgentError::Store(format!(
            "{} has no mistify_agent table: not a Go mistify-agent database",
            go_db.display()
        )));
    }
    let mut stmt = conn
        .prepare("SELECT key, bucket, value FROM mistify_agent ORDER BY rowid")
        .map_err(sql)?;
    let rows = stmt
        .query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, Vec<u8>>(2)?,
            ))
        })
        .map_err(sql)?;

    let mut report = ImportReport::default();
    let mut guests = Vec::new();
    let mut metadata = BTreeMap::new();
    let mut jobs: BTreeMap<String, Job> = BTreeMap::new();
    for row in rows {
        let (key, bucket, value) = row.map_err(sql)?;
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
    store.put_guests(&guests)?;
    if !metadata.is_empty() {
        store.patch_metadata(&metadata)?;
    }
    store.import_jobs(&jobs)?;
    report.guests = guests.len();
    report.metadata = metadata.len();
    report.jobs = jobs.len();
    Ok(report)
}
