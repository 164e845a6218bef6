//! `cworkerd`'s work: a claimed job drives the agent of its guest's hypervisor through
//! the state machine of [`crate::steps`]. A step first asks the agent what it already
//! has (a process that died may have asked before), posts only what is missing, saves
//! the agent's job id (`working`), and waits with the agent's long poll. The agent's
//! failure becomes the job's error; an agent that does not answer is retried for
//! `--agent-retry-for`, then the job fails with the reason.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use lochness::{Claim, Context, Error, Guest, JobAction, MistifyAgent, Queue, Transition};
use mistify_client::{Client, ClientError, GuestAction};

use crate::dispatch::Handler;
use crate::metrics::{Metrics, Outcome};
use crate::steps::{after, resume, After, AgentEnd, AgentJob, Found, Resume, Stage, Work};

/// How long one long poll on the agent's job waits.
pub const LONG_POLL: Duration = Duration::from_secs(30);
/// The first pause between polls of an agent that answers a long poll at once (a Go
/// agent ignores `?wait=`); it doubles up to [`MAX_POLL_PAUSE`].
pub const FIRST_POLL_PAUSE: Duration = Duration::from_millis(200);
/// The longest pause between polls of such an agent.
pub const MAX_POLL_PAUSE: Duration = Duration::from_secs(2);
/// How many jobs of a guest are read to find one to adopt.
const JOBS_READ: u32 = 100;

/// Why a step cannot go on.
#[derive(Debug)]
enum Problem {
    /// The claim no longer holds: another process has the job.
    Lost(Error),
    /// etcd failed: give the job back, it is resumed from its record.
    GiveBack(Error),
}

impl From<Error> for Problem {
    fn from(e: Error) -> Problem {
        match e {
            Error::ClaimLost(_) => Problem::Lost(e),
            other => Problem::GiveBack(other),
        }
    }
}

/// How a step ended.
enum StepEnd {
    /// The record moved on (saved); go on with the next step.
    Continue(Option<Outcome>),
    /// The job ends with this step.
    Finish(Transition),
}

/// A failed agent call.
#[derive(Debug)]
enum AgentCall {
    /// The agent answered, no (4xx, or an answer we cannot use).
    Refused(ClientError),
    /// The agent did not answer (or answered 5xx) for the whole retry period.
    Unreachable(String),
}

impl AgentCall {
    fn reason(&self) -> String {
        match self {
            AgentCall::Refused(e) => e.to_string(),
            AgentCall::Unreachable(m) => m.clone(),
        }
    }

    fn is_not_found(&self) -> bool {
        matches!(self, AgentCall::Refused(e) if e.is_not_found())
    }

    fn is_conflict(&self) -> bool {
        matches!(self, AgentCall::Refused(e) if e.status() == Some(409))
    }
}

/// Whether an agent error is worth retrying: no answer, or a 5xx.
fn transient(e: &ClientError) -> bool {
    match e {
        ClientError::Transport { .. } | ClientError::Timeout { .. } => true,
        ClientError::Api { status, .. } => *status >= 500,
        ClientError::InvalidInput(_) | ClientError::Decode { .. } => false,
    }
}

/// The agent of one guest's hypervisor.
struct AgentOf {
    client: Client,
    url: String,
    retry_for: Duration,
}

impl AgentOf {
    /// Runs `call`, retrying while the agent does not answer, for `retry_for`.
    async fn call<T, F, Fut>(&self, what: &str, mut call: F) -> Result<T, AgentCall>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        let deadline = Instant::now() + self.retry_for;
        let mut pause = Duration::from_millis(250);
        loop {
            match call().await {
                Ok(t) => return Ok(t),
                Err(e) if transient(&e) && Instant::now() < deadline => {
                    tracing::debug!(agent = %self.url, %what, error = %e, "agent did not answer, retrying");
                    let pause_for = e
                        .retry_after()
                        .unwrap_or(pause)
                        .min(Duration::from_secs(10));
                    tokio::time::sleep(pause_for).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
                Err(e) if transient(&e) => {
                    return Err(AgentCall::Unreachable(format!(
                        "the agent at {} did not answer {what} for {:?}: {e}",
                        self.url, self.retry_for
                    )))
                }
                Err(e) => return Err(AgentCall::Refused(e)),
            }
        }
    }

    /// Whether the agent knows the guest, and its jobs when it does.
    async fn found(&self, guest: &str) -> Result<Found, AgentCall> {
        match self
            .call("GET /guests/{id}", || self.client.get_guest(guest))
            .await
        {
            Ok(_) => {}
            Err(e) if e.is_not_found() => return Ok(Found::default()),
            Err(e) => return Err(e),
        }
        let jobs = match self
            .call("GET /guests/{id}/jobs", || {
                self.client.list_guest_jobs(guest, Some(JOBS_READ))
            })
            .await
        {
            Ok(jobs) => jobs.iter().map(AgentJob::of).collect(),
            Err(e) if e.is_not_found() => Vec::new(),
            Err(e) => return Err(e),
        };
        Ok(Found {
            guest_exists: true,
            jobs,
        })
    }

    /// Follows the agent's job `remote` to its end with the long poll (or, when the
    /// agent answers at once, polls with a growing pause).
    async fn wait(&self, remote: &str) -> AgentEnd {
        let mut pause = FIRST_POLL_PAUSE;
        loop {
            let asked = Instant::now();
            match self
                .call("GET /jobs/{id}", || self.client.wait_job(remote, LONG_POLL))
                .await
            {
                Ok(job) if job.status.is_done() => {
                    return match job.status {
                        mistify_client::JobStatus::Complete => AgentEnd::Complete,
                        _ if job.message.is_empty() => {
                            AgentEnd::Failed(format!("the agent's job {remote} failed"))
                        }
                        _ => AgentEnd::Failed(job.message),
                    }
                }
                Ok(_) if asked.elapsed() < LONG_POLL / 2 => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(MAX_POLL_PAUSE);
                }
                Ok(_) => pause = FIRST_POLL_PAUSE,
                Err(e) if e.is_not_found() => {
                    return AgentEnd::Failed(format!(
                        "the agent at {} has no job {remote}",
                        self.url
                    ))
                }
                Err(e) => return AgentEnd::Failed(e.reason()),
            }
        }
    }
}

/// A failed step's reason names the stage that failed (`fetch: …`, `create: …`): the
/// job's action when it failed.
fn named(action: JobAction, step: Transition) -> Transition {
    match step {
        Transition::Failed { reason } => Transition::Failed {
            reason: format!("{action}: {reason}"),
        },
        other => other,
    }
}

/// Job ids from an agent's 202.
fn job_id<T>(accepted: mistify_client::Accepted<T>) -> Result<String, String> {
    accepted
        .job_id
        .filter(|j| !j.is_empty())
        .ok_or_else(|| "the agent sent no X-Guest-Job-ID".to_string())
}

/// How the start of a step turned out.
enum Started {
    /// The agent works on it: its job id.
    Remote(String),
    /// The agent already did it.
    AlreadyDone,
    /// It cannot be done: the job's error.
    Fail(String),
}

/// The worker.
#[derive(Debug)]
pub struct Worker {
    ctx: Context,
    agent: MistifyAgent,
    retry_for: Duration,
    metrics: Arc<Metrics>,
}

impl Worker {
    /// A worker reaching agents with `agent`, retrying an agent that does not answer for
    /// `retry_for`.
    pub fn new(
        ctx: &Context,
        agent: MistifyAgent,
        retry_for: Duration,
        metrics: Arc<Metrics>,
    ) -> Worker {
        Worker {
            ctx: ctx.clone(),
            agent,
            retry_for,
            metrics,
        }
    }

    /// The agent of `guest`'s hypervisor, or why it cannot be reached (the job's error).
    async fn agent_of(&self, guest: &Guest) -> Result<Result<AgentOf, String>, Problem> {
        let hv = match self.ctx.hypervisor_settings(&guest.hypervisor).await {
            Ok(hv) => hv,
            Err(Error::NotFound(_)) => {
                return Ok(Err(format!(
                    "hypervisor {} of guest {} does not exist",
                    guest.hypervisor, guest.id
                )))
            }
            Err(e) => return Err(e.into()),
        };
        Ok(self
            .agent
            .client_for(&hv)
            .map_err(|e| e.to_string())
            .map(|client| AgentOf {
                url: client.base_url().as_str().trim_end_matches('/').to_string(),
                client,
                retry_for: self.retry_for,
            }))
    }

    /// Starts `work` on the agent unless it already has it.
    async fn start(
        &self,
        agent: &AgentOf,
        guest: &Guest,
        work: Work,
        since: Option<DateTime<Utc>>,
    ) -> Result<Started, Problem> {
        let posted = |r: Result<String, String>| match r {
            Ok(remote) => Started::Remote(remote),
            Err(reason) => Started::Fail(reason),
        };
        // A create the agent refuses with 409 is looked at again once.
        for _ in 0..2 {
            let found = match work {
                Work::Fetch => Found::default(),
                _ => match agent.found(&guest.id).await {
                    Ok(f) => f,
                    Err(e) => return Ok(Started::Fail(e.reason())),
                },
            };
            match resume(work, &found, since) {
                Resume::Adopt(remote) => {
                    tracing::info!(guest = %guest.id, %remote, ?work, "adopting the agent's job");
                    return Ok(Started::Remote(remote));
                }
                Resume::AlreadyDone => {
                    tracing::info!(guest = %guest.id, ?work, "the agent already did it");
                    return Ok(Started::AlreadyDone);
                }
                Resume::Post => {}
            }
            let answer = match work {
                Work::Fetch => {
                    let request = match self.agent.image_request(guest).await {
                        Ok(r) => r,
                        Err(e @ Error::Etcd(_)) => return Err(e.into()),
                        Err(e) => return Ok(Started::Fail(e.to_string())),
                    };
                    agent
                        .call("POST /images", || agent.client.fetch_image(&request))
                        .await
                        .map(job_id)
                }
                Work::Create => {
                    let body = match self.agent.agent_guest(guest).await {
                        Ok(b) => b,
                        Err(e @ Error::Etcd(_)) => return Err(e.into()),
                        Err(e) => return Ok(Started::Fail(e.to_string())),
                    };
                    agent
                        .call("POST /guests", || agent.client.create_guest(&body))
                        .await
                        .map(job_id)
                }
                Work::Delete => agent
                    .call("POST /guests/{id}/delete", || {
                        agent.client.guest_action(&guest.id, GuestAction::Delete)
                    })
                    .await
                    .map(job_id),
                Work::Action(a) => agent
                    .call("POST /guests/{id}/{action}", || {
                        agent.client.guest_action(&guest.id, a)
                    })
                    .await
                    .map(job_id),
            };
            match answer {
                Ok(r) => return Ok(posted(r)),
                Err(e) if work == Work::Create && e.is_conflict() => continue,
                Err(e) if work == Work::Delete && e.is_not_found() => {
                    return Ok(Started::AlreadyDone)
                }
                Err(e) => return Ok(Started::Fail(e.reason())),
            }
        }
        Ok(Started::Fail(format!(
            "the agent refuses to create guest {} and has no create job for it",
            guest.id
        )))
    }

    /// Removes `id` from the cluster (address, resources, link), retrying when the guest
    /// changed meanwhile; a guest already gone is fine.
    async fn destroy(&self, id: &str) -> Result<(), Problem> {
        let mut last = None;
        for _ in 0..20 {
            let mut guest = match self.ctx.guest(id).await {
                Ok(g) => g,
                Err(Error::NotFound(_)) => return Ok(()),
                Err(e) => return Err(e.into()),
            };
            match guest.destroy().await {
                Ok(()) | Err(Error::NotFound(_)) => return Ok(()),
                Err(e @ Error::Conflict(_)) => last = Some(e),
                Err(e) => return Err(e.into()),
            }
        }
        Err(Problem::GiveBack(last.unwrap_or(Error::TooManyConflicts {
            what: format!("destroy guest {id}"),
            attempts: 20,
        })))
    }

    /// What follows the end of the agent's job.
    async fn ended(
        &self,
        claim: &mut Claim,
        work: Work,
        end: AgentEnd,
        guest: &Guest,
        agent: &AgentOf,
    ) -> Result<StepEnd, Problem> {
        // A delete that failed while the guest went anyway (a second delete queued
        // behind a first one) is done.
        let end = match (work, end) {
            (Work::Delete, AgentEnd::Failed(reason)) => match agent.found(&guest.id).await {
                Ok(found) if !found.guest_exists => AgentEnd::Complete,
                _ => AgentEnd::Failed(reason),
            },
            (_, end) => end,
        };
        match after(work, end) {
            After::Save(step) => {
                // Written with the next step's start: a process resuming from the
                // record finds the fetch complete on the agent and goes on the same way.
                claim.advance(step)?;
                Ok(StepEnd::Continue(Some(Outcome::Fetched)))
            }
            After::Finish(step) => Ok(StepEnd::Finish(step)),
            After::DestroyThenFinish => {
                self.destroy(&guest.id).await?;
                Ok(StepEnd::Finish(Transition::Finished))
            }
        }
    }

    /// One step of the job the claim holds.
    async fn step(
        &self,
        claim: &mut Claim,
        target: &mut Option<(Guest, AgentOf)>,
    ) -> Result<StepEnd, Problem> {
        let job = claim.job().clone();
        let fail = |reason: String| Ok(StepEnd::Finish(Transition::Failed { reason }));
        let Some(work) = Work::of(job.action) else {
            return fail(format!("bad action: {}", job.action));
        };
        // The guest and its agent are read at the claim's first step; its placement does
        // not change while one of its jobs is claimed (a guest's jobs go one at a time).
        if target.is_none() {
            let guest = match self.ctx.guest(&job.guest).await {
                Ok(g) => g,
                Err(Error::NotFound(_)) if work == Work::Delete => {
                    return Ok(StepEnd::Finish(Transition::Finished))
                }
                Err(Error::NotFound(_)) => return fail("guest does not exist".into()),
                Err(e) => return Err(e.into()),
            };
            if guest.hypervisor.is_empty() {
                if work == Work::Delete {
                    // Never placed (its placement failed): nothing on any agent.
                    self.destroy(&guest.id).await?;
                    return Ok(StepEnd::Finish(Transition::Finished));
                }
                return fail(format!("guest {} is not placed on a hypervisor", guest.id));
            }
            let agent = match self.agent_of(&guest).await? {
                Ok(a) => a,
                Err(reason) => return fail(reason),
            };
            *target = Some((guest, agent));
        }
        let Some((guest, agent)) = target.as_ref() else {
            return fail("the guest could not be read".into());
        };
        let stage = Stage::of(&job);
        let mut since = job.started_at;
        if stage == Stage::Start && matches!(work, Work::Action(_)) && since.is_none() {
            // An action resumes by adopting the agent's jobs queued since `started_at`:
            // it is stored before the agent is asked anything.
            since = claim.save(Transition::Claimed).await?.started_at;
        }
        match stage {
            Stage::Start => match self.start(agent, guest, work, since).await? {
                Started::Remote(remote) => {
                    claim.save(Transition::Started { remote }).await?;
                    Ok(StepEnd::Continue(None))
                }
                Started::AlreadyDone => {
                    self.ended(claim, work, AgentEnd::Complete, guest, agent)
                        .await
                }
                Started::Fail(reason) => fail(reason),
            },
            Stage::Wait { remote } => {
                let end = agent.wait(&remote).await;
                self.ended(claim, work, end, guest, agent).await
            }
        }
    }

    async fn run(&self, mut claim: Claim) {
        let mut started = Instant::now();
        let id = claim.job().id.clone();
        let mut target = None;
        let mut tally = Tally::default();
        loop {
            let action = claim.job().action;
            match self.step(&mut claim, &mut target).await {
                Ok(StepEnd::Continue(outcome)) => {
                    let took = started.elapsed();
                    if outcome.is_some() {
                        started = Instant::now();
                    }
                    let step = outcome.map(|o| (action, o, took));
                    for (action, outcome, took) in tally.stepped(step, claim.unsaved()) {
                        self.metrics.record(action, outcome, took);
                    }
                }
                Ok(StepEnd::Finish(step)) => {
                    let step = named(action, step);
                    let outcome = match &step {
                        Transition::Finished => Outcome::Done,
                        _ => Outcome::Failed,
                    };
                    match claim.finish(step).await {
                        Ok(job) => {
                            tracing::info!(job = %id, action = %job.action, status = %job.status, error = %job.error, "job finished");
                            let last = (action, outcome, started.elapsed());
                            for (action, outcome, took) in tally.stepped(Some(last), false) {
                                self.metrics.record(action, outcome, took);
                            }
                        }
                        Err(e) => {
                            tracing::warn!(job = %id, error = %e, "cannot record the end of the job");
                            self.metrics
                                .record(action, Outcome::GivenBack, started.elapsed());
                        }
                    }
                    return;
                }
                Err(Problem::Lost(e)) => {
                    tracing::warn!(job = %id, error = %e, "claim lost");
                    self.metrics
                        .record(action, Outcome::GivenBack, started.elapsed());
                    return;
                }
                Err(Problem::GiveBack(e)) => {
                    tracing::warn!(job = %id, error = %e, "giving the job back");
                    if let Err(e) = claim.release().await {
                        tracing::warn!(job = %id, error = %e, "cannot give the job back");
                    }
                    self.metrics
                        .record(action, Outcome::GivenBack, started.elapsed());
                    return;
                }
            }
        }
    }
}

/// A step as counted: the job's action at the step, how it ended, how long it took.
type Counted = (JobAction, Outcome, Duration);

/// Counts a job's steps once they are stored, so that each step is counted once in the
/// cluster: a step folded into the next write (`Claim::advance`) waits for that write,
/// and is never counted here when the claim ends first (the process that resumes the
/// job redoes the step and counts it).
#[derive(Debug, Default)]
struct Tally {
    unstored: Vec<Counted>,
}

impl Tally {
    /// After a step that ended with `step` (`None`: nothing to count); `unsaved` tells
    /// whether the claim still holds a step not written. Returns what to count now.
    fn stepped(&mut self, step: Option<Counted>, unsaved: bool) -> Vec<Counted> {
        self.unstored.extend(step);
        if unsaved {
            Vec::new()
        } else {
            std::mem::take(&mut self.unstored)
        }
    }
}

impl Handler for Worker {
    fn queue(&self) -> Queue {
        Queue::Work
    }

    fn work(&self, claim: Claim) -> impl Future<Output = ()> + Send {
        self.run(claim)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_folded_into_the_next_write_is_counted_with_it() {
        let ms = Duration::from_millis;
        let fetched = (JobAction::Fetch, Outcome::Fetched, ms(5));
        let started = (JobAction::Create, Outcome::Done, ms(7));
        let mut tally = Tally::default();
        // The fetch ended; its step waits for the create's first write.
        assert!(tally.stepped(Some(fetched), true).is_empty());
        // The create's start is written: the fetch is counted now.
        assert_eq!(tally.stepped(None, false), vec![fetched]);
        assert_eq!(tally.stepped(Some(started), false), vec![started]);
        // A claim that ends before the write counts nothing (its tally is dropped).
        let mut lost = Tally::default();
        assert!(lost.stepped(Some(fetched), true).is_empty());
        assert!(lost.stepped(None, true).is_empty());
        // Finished at once after the fold (the agent had the guest): both counted.
        let mut at_once = Tally::default();
        assert!(at_once.stepped(Some(fetched), true).is_empty());
        assert_eq!(
            at_once.stepped(Some(started), false),
            vec![fetched, started]
        );
    }

    #[test]
    fn failures_name_their_stage() {
        let failed = |reason: &str| Transition::Failed {
            reason: reason.into(),
        };
        assert_eq!(
            named(JobAction::Fetch, failed("no image")),
            failed("fetch: no image")
        );
        assert_eq!(
            named(JobAction::Reboot, failed("boom")),
            failed("reboot: boom")
        );
        assert_eq!(
            named(JobAction::Create, Transition::Finished),
            Transition::Finished
        );
    }
}
