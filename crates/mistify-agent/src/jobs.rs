//! Async jobs: what a job runs ([`Work`]), the one function that changes a job's status
//! ([`JobEvent::apply`]), and the agent's side of it — submission, the per-runner
//! worker, execution, cancel, the long poll, and recovery after a restart.
//!
//! A job's life: `Queued` → `Running` (a worker takes it) → `Complete` or `Error` (its
//! pipeline ended). A queued job may instead end `Error` without running: cancelled, its
//! guest deleted, or unresumable after a restart. A running job the agent did not see
//! end (a crash, a drain timeout) is `Error` after the next start. Nothing else changes
//! a job: every write of a status goes through [`Agent::transition`].

use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::FutureExt;
use mistify_types::{Action, ActionType, ImageRequest, Job, JobStatus, SnapshotRequest, Verb};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::agent::Agent;
use crate::error::AgentError;
use crate::pipeline::GUEST_DELETED;
use crate::runner::{Reservation, Runner};

/// The message of jobs found running when the agent starts.
pub const RESTARTED: &str = "agent restarted before the job finished";
/// The message of a cancelled job.
pub const CANCELLED: &str = "cancelled";
/// The message of a queued job that cannot run after a restart.
pub const UNRESUMABLE: &str = "cannot resume after a restart: guest deleted or job unreadable";

/// What an async job runs; stored with the job so it survives a restart (the action is
/// stored as its configuration word).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Work {
    /// A guest action on the guest as stored when the job starts. A forced delete goes
    /// on past a stage that fails and removes the guest anyway.
    Guest {
        action: Action,
        guest_id: String,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        force: bool,
    },
    /// `fetchImage` / `deleteImage` (or their container variants).
    Image {
        action: Action,
        request: ImageRequest,
    },
    /// `createSnapshot`, `deleteSnapshot`, `rollbackSnapshot`.
    Snapshot {
        action: Action,
        request: SnapshotRequest,
    },
}

impl Work {
    pub fn action(&self) -> Action {
        match self {
            Work::Guest { action, .. }
            | Work::Image { action, .. }
            | Work::Snapshot { action, .. } => *action,
        }
    }

    /// The guest a successful run removes (a guest delete), if any.
    fn deletes(&self) -> Option<&str> {
        match self {
            Work::Guest {
                action, guest_id, ..
            } if action.verb() == Verb::Delete => Some(guest_id),
            _ => None,
        }
    }
}

/// A change of a job's status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobEvent {
    /// A worker takes the job: `Queued` → `Running`.
    Start,
    /// Its pipeline ended: `Running` → `Complete`, or `Error` with the reason.
    Finish(Result<(), String>),
    /// A forced delete ended: `Running` → `Complete`, the message naming what failed
    /// on the way (left behind).
    Forced(String),
    /// A client cancels it: `Queued` → `Error` `cancelled`.
    Cancel,
    /// Its guest was deleted first: `Queued` → `Error` `guest deleted`.
    GuestDeleted,
    /// The agent restarted while it ran: `Running` → `Error` (`RESTARTED`).
    Restarted,
    /// It cannot run after a restart: `Queued` → `Error` (`UNRESUMABLE`).
    Unresumable,
}

impl JobEvent {
    /// Applies the event to `job` at `now`; false (and `job` untouched) when the job is
    /// not in the status the event starts from.
    pub fn apply(&self, job: &mut Job, now: DateTime<Utc>) -> bool {
        let (from, to, message) = match self {
            JobEvent::Start => (JobStatus::Queued, JobStatus::Running, ""),
            JobEvent::Finish(Ok(())) => (JobStatus::Running, JobStatus::Complete, ""),
            JobEvent::Finish(Err(reason)) => {
                (JobStatus::Running, JobStatus::Error, reason.as_str())
            }
            JobEvent::Forced(left) => (JobStatus::Running, JobStatus::Complete, left.as_str()),
            JobEvent::Cancel => (JobStatus::Queued, JobStatus::Error, CANCELLED),
            JobEvent::GuestDeleted => (JobStatus::Queued, JobStatus::Error, GUEST_DELETED),
            JobEvent::Restarted => (JobStatus::Running, JobStatus::Error, RESTARTED),
            JobEvent::Unresumable => (JobStatus::Queued, JobStatus::Error, UNRESUMABLE),
        };
        if job.status != from {
            return false;
        }
        job.status = to;
        job.message = message.to_string();
        job.updated_at = now;
        if to == JobStatus::Running {
            job.started_at = now;
        }
        true
    }
}

impl Agent {
    /// Records `event` on job `id` (removing guest `remove_guest` in the same write, for
    /// a guest delete that completed); the job after, and whether it changed. `None` for
    /// an unknown job. Counts finished jobs and wakes long polls.
    pub(crate) async fn transition(
        &self,
        id: &str,
        event: JobEvent,
        remove_guest: Option<&str>,
    ) -> Result<Option<(Job, bool)>, AgentError> {
        let now = Utc::now();
        let change = move |job: &mut Job| event.apply(job, now);
        let outcome = match remove_guest {
            None => self.store.update_job(id, change).await?,
            Some(guest) => self.store.delete_guest_with_job(guest, id, change).await?,
        };
        if let Some((job, true)) = &outcome {
            if job.status.is_done() {
                self.metrics.job_finished(job.status);
            }
            let _ = self.job_events.send(job.id.clone());
        }
        Ok(outcome)
    }

    /// Logs a `Queued` job for `work` on runner `runner_id` and queues it; the job id.
    /// 503 while draining or when the runner's queue is full.
    pub(crate) async fn submit(
        self: &Arc<Self>,
        runner_id: &str,
        work: Work,
    ) -> Result<String, AgentError> {
        if self.is_draining() {
            return Err(AgentError::draining());
        }
        let action = work.action();
        self.action(action)?;
        if action.kind() != ActionType::Async {
            return Err(AgentError::Internal(format!(
                "{action} is not an async action"
            )));
        }
        let runner = self.runner(runner_id).ok_or(AgentError::NotFound)?;
        let reservation = runner.reserve()?;
        let stamp = Utc::now();
        let job = Job {
            id: uuid::Uuid::new_v4().to_string(),
            guest_id: runner_id.to_string(),
            action: action.name(),
            queued_at: stamp,
            updated_at: stamp,
            ..Job::default()
        };
        let spec = serde_json::to_value(&work).map_err(AgentError::Encode)?;
        self.store.add_job(&job, Some(spec)).await?;
        let _ = self.job_events.send(job.id.clone());
        self.enqueue(&runner, reservation, job.id.clone()).await;
        Ok(job.id)
    }

    /// Queues job `id` on `runner` and makes sure a worker runs it; a job refused
    /// because the guest was deleted meanwhile ends `Error` / `guest deleted`.
    async fn enqueue(self: &Arc<Self>, runner: &Arc<Runner>, reservation: Reservation, id: String) {
        if let Err(id) = reservation.send(id) {
            self.fail_queued(&id, JobEvent::GuestDeleted).await;
            return;
        }
        if runner.claim() {
            tokio::spawn(self.clone().worker(runner.clone()));
        }
    }

    /// Ends a queued job without running it (logged when that cannot be recorded).
    async fn fail_queued(&self, id: &str, event: JobEvent) {
        if let Err(e) = self.transition(id, event, None).await {
            tracing::error!(job = %id, "cannot record the end of a job that did not run: {e}");
        }
    }

    /// After a restart: running jobs end `Error` (`RESTARTED`), queued ones are queued
    /// again (or end `Error`, `UNRESUMABLE`, when their guest or spec is gone).
    pub(crate) async fn recover(self: &Arc<Self>) -> Result<(), AgentError> {
        for (job, _) in self.store.jobs_in(JobStatus::Running)? {
            self.transition(&job.id, JobEvent::Restarted, None).await?;
            tracing::warn!(job = %job.id, guest = %job.guest_id, action = %job.action, "{RESTARTED}");
        }
        for (job, spec) in self.store.jobs_in(JobStatus::Queued)? {
            let resumed = spec
                .and_then(|s| serde_json::from_value::<Work>(s).ok())
                .and_then(|_| self.runner(&job.guest_id))
                .and_then(|r| r.reserve().ok().map(|res| (r, res)));
            match resumed {
                Some((runner, reservation)) => {
                    tracing::info!(job = %job.id, guest = %job.guest_id, action = %job.action, "resuming queued job");
                    self.enqueue(&runner, reservation, job.id).await;
                }
                None => {
                    self.transition(&job.id, JobEvent::Unresumable, None)
                        .await?;
                }
            }
        }
        Ok(())
    }

    /// Cancels a job that has not started: it ends `Error` / `cancelled`; 409 for a job
    /// that already runs or ended.
    pub async fn cancel(&self, id: &str) -> Result<Job, AgentError> {
        match self.transition(id, JobEvent::Cancel, None).await? {
            None => Err(AgentError::NotFound),
            Some((job, true)) => Ok(job),
            Some((job, false)) => Err(AgentError::Conflict(format!(
                "job {} is {} and can no longer be cancelled",
                job.id, job.status
            ))),
        }
    }

    /// The job, once it is done or `wait` has passed.
    pub async fn wait_job(&self, id: &str, wait: Duration) -> Result<Job, AgentError> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut events = self.job_events.subscribe();
        loop {
            let job = self.store.job(id)?.ok_or(AgentError::NotFound)?;
            if job.status.is_done() || tokio::time::Instant::now() >= deadline {
                return Ok(job);
            }
            loop {
                match tokio::time::timeout_at(deadline, events.recv()).await {
                    Err(_) => break,
                    Ok(Ok(event)) if event != id => continue,
                    Ok(_) => break,
                }
            }
        }
    }

    /// Runs the runner's queued jobs one at a time, then ends.
    async fn worker(self: Arc<Self>, runner: Arc<Runner>) {
        loop {
            // While stopping, queued jobs stay `Queued`: they run after the next start.
            let next = if self.is_draining() {
                None
            } else {
                runner.pop()
            };
            let Some(job_id) = next else {
                if runner.release() && !self.is_draining() {
                    continue;
                }
                return;
            };
            self.running.fetch_add(1, Ordering::SeqCst);
            let deleted = self.run_job(&job_id).await;
            if self.running.fetch_sub(1, Ordering::SeqCst) == 1 {
                self.idle.notify_waiters();
            }
            if deleted {
                self.retire(&runner).await;
                return;
            }
        }
    }

    /// After a successful delete: no more jobs for this guest.
    async fn retire(&self, runner: &Runner) {
        self.remove_runner(&runner.id);
        for id in runner.close() {
            self.fail_queued(&id, JobEvent::GuestDeleted).await;
        }
        // Jobs logged but never queued (a submission racing the delete).
        if let Ok(jobs) = self.store.guest_jobs(&runner.id, usize::MAX) {
            for job in jobs.iter().filter(|j| j.status == JobStatus::Queued) {
                self.fail_queued(&job.id, JobEvent::GuestDeleted).await;
            }
        }
    }

    /// Runs one queued job; true when it deleted its guest.
    async fn run_job(&self, id: &str) -> bool {
        match self.transition(id, JobEvent::Start, None).await {
            Ok(Some((_, true))) => {}
            Ok(_) => return false, // cancelled or pruned meanwhile
            Err(e) => {
                tracing::error!(job = id, "cannot start the job: {e}");
                return false;
            }
        }
        let work = match self.store.job_spec(id) {
            Ok(Some(spec)) => serde_json::from_value::<Work>(spec)
                .map_err(|e| AgentError::Internal(format!("cannot read the job: {e}"))),
            Ok(None) => Err(AgentError::Internal(
                "cannot read the job: it has no spec".into(),
            )),
            Err(e) => Err(e.into()),
        };
        let outcome = match &work {
            Ok(work) => AssertUnwindSafe(self.execute(work))
                .catch_unwind()
                .await
                .unwrap_or_else(|_| Err(AgentError::Internal("the pipeline panicked".into()))),
            Err(_) => Ok(String::new()),
        };
        let outcome = work.and_then(|w| outcome.map(|left| (w, left)));
        let (event, remove) = match &outcome {
            Ok((work, left)) if !left.is_empty() => {
                tracing::warn!(job = id, "forced delete, left behind: {left}");
                (JobEvent::Forced(left.clone()), work.deletes())
            }
            Ok((work, _)) => (JobEvent::Finish(Ok(())), work.deletes()),
            Err(e) => {
                tracing::warn!(job = id, "job failed: {e}");
                (JobEvent::Finish(Err(e.to_string())), None)
            }
        };
        match self.transition(id, event, remove).await {
            Ok(_) => remove.is_some(),
            Err(e) => {
                tracing::error!(job = id, "cannot record the end of the job: {e}");
                if remove.is_some() {
                    // The guest stays (the write failed whole): the job says why.
                    let message = format!("cannot remove the deleted guest: {e}");
                    let _ = self
                        .transition(id, JobEvent::Finish(Err(message)), None)
                        .await;
                }
                false
            }
        }
    }

    /// Executes `work`'s pipeline; what a forced delete left behind (empty otherwise).
    async fn execute(&self, work: &Work) -> Result<String, AgentError> {
        match work {
            // A delete's guest record goes with the job's completion, in one write.
            Work::Guest {
                action,
                guest_id,
                force: true,
            } => self.run_guest_forced(*action, guest_id).await,
            Work::Guest {
                action, guest_id, ..
            } => self
                .run_guest(*action, guest_id)
                .await
                .map(|_| String::new()),
            Work::Image { action, request } => self
                .run_plain(*action, request, json!({"images": null}))
                .await
                .map(|_| String::new()),
            Work::Snapshot { action, request } => self
                .run_plain(*action, request, json!({"snapshots": null}))
                .await
                .map(|_| String::new()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mistify_types::serde_go::go_time;

    fn job(status: JobStatus) -> Job {
        Job {
            id: "j".into(),
            status,
            ..Job::default()
        }
    }

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).unwrap_or_default()
    }

    /// Every event from every status: the one it starts from changes the job as the
    /// table says; every other status leaves it untouched.
    #[test]
    fn every_transition_and_every_guard() {
        use JobStatus::*;
        let cases: Vec<(JobEvent, JobStatus, JobStatus, &str)> = vec![
            (JobEvent::Start, Queued, Running, ""),
            (JobEvent::Finish(Ok(())), Running, Complete, ""),
            (JobEvent::Finish(Err("boom".into())), Running, Error, "boom"),
            (JobEvent::Cancel, Queued, Error, CANCELLED),
            (JobEvent::GuestDeleted, Queued, Error, GUEST_DELETED),
            (JobEvent::Restarted, Running, Error, RESTARTED),
            (JobEvent::Unresumable, Queued, Error, UNRESUMABLE),
            (
                JobEvent::Forced("forced: x".into()),
                Running,
                Complete,
                "forced: x",
            ),
        ];
        for (event, from, to, message) in cases {
            for status in [Queued, Running, Complete, Error] {
                let mut j = job(status);
                let changed = event.apply(&mut j, at(100));
                if status == from {
                    assert!(changed, "{event:?} from {status}");
                    assert_eq!(j.status, to, "{event:?}");
                    assert_eq!(j.message, message, "{event:?}");
                    assert_eq!(j.updated_at, at(100));
                    let started = if to == Running {
                        at(100)
                    } else {
                        go_time::zero()
                    };
                    assert_eq!(j.started_at, started, "{event:?}");
                } else {
                    assert!(!changed, "{event:?} must not apply to {status}");
                    assert_eq!(j, job(status), "{event:?} changed a {status} job");
                }
            }
        }
    }

    #[test]
    fn a_finished_job_never_changes_again() {
        for event in [
            JobEvent::Start,
            JobEvent::Finish(Ok(())),
            JobEvent::Cancel,
            JobEvent::Restarted,
        ] {
            for status in [JobStatus::Complete, JobStatus::Error] {
                assert!(!event.apply(&mut job(status), at(1)));
            }
        }
    }

    #[test]
    fn work_keeps_its_stored_form() {
        let work = Work::Guest {
            action: Action::parse("containerDelete").unwrap(),
            guest_id: "g".into(),
            force: false,
        };
        let text = serde_json::to_string(&work).unwrap();
        assert_eq!(
            text,
            r#"{"kind":"guest","action":"containerDelete","guest_id":"g"}"#
        );
        let back: Work = serde_json::from_str(&text).unwrap();
        assert_eq!(back, work);
        assert_eq!(back.deletes(), Some("g"));
        let reboot: Work =
            serde_json::from_str(r#"{"kind":"guest","action":"reboot","guest_id":"g"}"#).unwrap();
        assert_eq!(reboot.deletes(), None);
        assert!(serde_json::from_str::<Work>(
            r#"{"kind":"guest","action":"bogus","guest_id":"g"}"#
        )
        .is_err());
        // A forced delete says so; an unforced one is stored as before the flag existed.
        let forced = Work::Guest {
            action: Action::parse("delete").unwrap(),
            guest_id: "g".into(),
            force: true,
        };
        assert_eq!(
            serde_json::to_string(&forced).unwrap(),
            r#"{"kind":"guest","action":"delete","guest_id":"g","force":true}"#
        );
    }
}
