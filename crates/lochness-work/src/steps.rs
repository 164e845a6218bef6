//! The worker's state machine, without I/O: what a job's action asks of the agent
//! ([`Work`]), where a claimed job stands ([`Stage`]), how a step about to start resumes
//! from what the agent already has ([`resume`], docs/cluster.md "Crash safety"), and
//! what follows the end of the agent's job ([`after`]). The agent's answers are parsed
//! into these types at the edge ([`AgentJob::of`]); nothing here compares action words.

use chrono::{DateTime, Utc};
use lochness::{Job, JobAction, JobStatus, Transition};
use mistify_types::{Action, GuestAction, Verb};

/// What a worker does for a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    /// The agent fetches the image of the guest's flavor.
    Fetch,
    /// The agent creates the guest.
    Create,
    /// The agent deletes the guest, then the cluster forgets it.
    Delete,
    /// The agent runs a guest action.
    Action(GuestAction),
}

impl Work {
    /// The work of a job's action; `None` for `select-hypervisor` (the placer's).
    pub fn of(action: JobAction) -> Option<Work> {
        match action {
            JobAction::SelectHypervisor => None,
            JobAction::Fetch => Some(Work::Fetch),
            JobAction::Create => Some(Work::Create),
            JobAction::Delete => Some(Work::Delete),
            other => other.guest_action().map(Work::Action),
        }
    }

    /// The agent's verb of the jobs this work runs as.
    pub fn verb(self) -> Verb {
        match self {
            Work::Fetch => Verb::FetchImage,
            Work::Create => Verb::Create,
            Work::Delete => Verb::Delete,
            Work::Action(a) => a.verb(),
        }
    }
}

/// Where a claimed job stands, from its record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stage {
    /// Nothing asked of the agent yet (as far as the record says): `new`.
    Start,
    /// The agent works on it: `working` with the agent's job id.
    Wait {
        /// The agent's job id.
        remote: String,
    },
}

impl Stage {
    /// The stage of `job` (a `working` job without an agent job id starts again).
    pub fn of(job: &Job) -> Stage {
        match job.status {
            JobStatus::Working if !job.remote.is_empty() => Stage::Wait {
                remote: job.remote.clone(),
            },
            _ => Stage::Start,
        }
    }
}

/// The state of one of the agent's jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentState {
    /// Queued or running.
    Pending,
    /// Complete.
    Complete,
    /// Failed.
    Failed,
}

/// One of the agent's jobs for a guest, as the resume rules read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentJob {
    /// The agent's job id.
    pub id: String,
    /// What it does (`None`: an action this worker never asks for).
    pub verb: Option<Verb>,
    /// Where it is.
    pub state: AgentState,
    /// When the agent queued it.
    pub queued_at: DateTime<Utc>,
}

impl AgentJob {
    /// Parses the agent's job record.
    pub fn of(job: &mistify_types::Job) -> AgentJob {
        AgentJob {
            id: job.id.clone(),
            verb: Action::parse(&job.action).ok().map(Action::verb),
            state: match job.status {
                mistify_types::JobStatus::Queued | mistify_types::JobStatus::Running => {
                    AgentState::Pending
                }
                mistify_types::JobStatus::Complete => AgentState::Complete,
                mistify_types::JobStatus::Error => AgentState::Failed,
            },
            queued_at: job.queued_at,
        }
    }
}

/// What the agent has for a guest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Found {
    /// The agent knows the guest.
    pub guest_exists: bool,
    /// The guest's jobs on the agent.
    pub jobs: Vec<AgentJob>,
}

impl Found {
    /// The newest of the jobs that `keep` accepts.
    fn newest(&self, keep: impl Fn(&AgentJob) -> bool) -> Option<&AgentJob> {
        self.jobs
            .iter()
            .filter(|j| keep(j))
            .max_by(|a, b| a.queued_at.cmp(&b.queued_at))
    }
}

/// How a step about to start goes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resume {
    /// Ask the agent.
    Post,
    /// The agent already has the job: follow it.
    Adopt(String),
    /// The agent already did it.
    AlreadyDone,
}

/// The resume rules: `found` is what the agent has for the guest, `since` the job's
/// `started_at` (set when a worker first claimed it, before it asked the agent
/// anything).
///
/// - fetch: fetching again is harmless;
/// - create: the guest exists on the agent → its newest create job (none left in the
///   agent's log: done);
/// - delete: the guest is gone → done; a queued or running delete → that one;
/// - an action: a job of that action queued since `since` → that one.
pub fn resume(work: Work, found: &Found, since: Option<DateTime<Utc>>) -> Resume {
    let adopt = |j: Option<&AgentJob>| j.map(|j| Resume::Adopt(j.id.clone()));
    let verb = work.verb();
    match work {
        Work::Fetch => Resume::Post,
        Work::Create if found.guest_exists => {
            adopt(found.newest(|j| j.verb == Some(verb))).unwrap_or(Resume::AlreadyDone)
        }
        Work::Create => Resume::Post,
        Work::Delete if !found.guest_exists => Resume::AlreadyDone,
        Work::Delete => {
            adopt(found.newest(|j| j.verb == Some(verb) && j.state == AgentState::Pending))
                .unwrap_or(Resume::Post)
        }
        Work::Action(_) => match since {
            Some(since) => adopt(found.newest(|j| j.verb == Some(verb) && j.queued_at >= since))
                .unwrap_or(Resume::Post),
            None => Resume::Post,
        },
    }
}

/// How the agent's job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentEnd {
    /// Complete.
    Complete,
    /// Failed, with the agent's message (or why it could not be followed).
    Failed(String),
}

/// What follows the end of the agent's job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum After {
    /// Save the step and go on with the same claim (the image is fetched: create).
    Save(Transition),
    /// The job ends with this step.
    Finish(Transition),
    /// The guest is gone from its agent: remove it from the cluster (address,
    /// resources, link), then the job is done.
    DestroyThenFinish,
}

/// What follows `end` for `work`.
pub fn after(work: Work, end: AgentEnd) -> After {
    match (work, end) {
        (_, AgentEnd::Failed(reason)) => After::Finish(Transition::Failed { reason }),
        (Work::Fetch, AgentEnd::Complete) => After::Save(Transition::Fetched),
        (Work::Delete, AgentEnd::Complete) => After::DestroyThenFinish,
        (Work::Create | Work::Action(_), AgentEnd::Complete) => After::Finish(Transition::Finished),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 7, 10, 0, s).unwrap()
    }

    fn job(id: &str, action: &str, status: mistify_types::JobStatus, s: u32) -> AgentJob {
        AgentJob::of(&mistify_types::Job {
            id: id.into(),
            guest_id: "g".into(),
            action: action.into(),
            queued_at: at(s),
            status,
            ..Default::default()
        })
    }

    use mistify_types::JobStatus as S;

    #[test]
    fn actions_map_to_work() {
        assert_eq!(Work::of(JobAction::SelectHypervisor), None);
        assert_eq!(Work::of(JobAction::Fetch), Some(Work::Fetch));
        assert_eq!(Work::of(JobAction::Delete), Some(Work::Delete));
        assert_eq!(
            Work::of(JobAction::Suspend),
            Some(Work::Action(GuestAction::Suspend))
        );
        for a in JobAction::GUEST_ACTIONS {
            let w = Work::of(a).unwrap();
            assert_eq!(w.verb().as_str(), a.as_str());
        }
        assert_eq!(Work::Fetch.verb(), Verb::FetchImage);
    }

    #[test]
    fn stages_come_from_the_record() {
        let mut j = Job::new("g", JobAction::Create);
        assert_eq!(Stage::of(&j), Stage::Start);
        j = j
            .next(
                Transition::Started {
                    remote: "r1".into(),
                },
                at(1),
            )
            .unwrap();
        assert_eq!(
            Stage::of(&j),
            Stage::Wait {
                remote: "r1".into()
            }
        );
        j.remote.clear();
        assert_eq!(Stage::of(&j), Stage::Start, "working without a remote job");
    }

    #[test]
    fn agent_jobs_are_parsed_once() {
        let j = job("1", "containerCreate", S::Running, 1);
        assert_eq!((j.verb, j.state), (Some(Verb::Create), AgentState::Pending));
        assert_eq!(job("2", "dance", S::Complete, 1).verb, None);
        assert_eq!(job("3", "delete", S::Error, 1).state, AgentState::Failed);
    }

    #[test]
    fn create_adopts_what_the_agent_has() {
        let nothing = Found::default();
        assert_eq!(resume(Work::Create, &nothing, Some(at(0))), Resume::Post);
        let found = Found {
            guest_exists: true,
            jobs: vec![
                job("old", "create", S::Error, 1),
                job("new", "create", S::Running, 5),
                job("r", "reboot", S::Complete, 9),
            ],
        };
        assert_eq!(
            resume(Work::Create, &found, Some(at(0))),
            Resume::Adopt("new".into())
        );
        let pruned = Found {
            guest_exists: true,
            jobs: vec![job("r", "reboot", S::Complete, 9)],
        };
        assert_eq!(resume(Work::Create, &pruned, None), Resume::AlreadyDone);
    }

    #[test]
    fn delete_is_done_when_the_guest_is_gone() {
        assert_eq!(
            resume(Work::Delete, &Found::default(), Some(at(0))),
            Resume::AlreadyDone
        );
        let pending = Found {
            guest_exists: true,
            jobs: vec![
                job("failed", "delete", S::Error, 1),
                job("queued", "delete", S::Queued, 2),
            ],
        };
        assert_eq!(
            resume(Work::Delete, &pending, Some(at(0))),
            Resume::Adopt("queued".into())
        );
        let failed = Found {
            guest_exists: true,
            jobs: vec![job("failed", "delete", S::Error, 1)],
        };
        assert_eq!(resume(Work::Delete, &failed, Some(at(0))), Resume::Post);
    }

    #[test]
    fn actions_adopt_only_jobs_queued_since_the_claim() {
        let found = Found {
            guest_exists: true,
            jobs: vec![
                job("before", "reboot", S::Complete, 1),
                job("after", "reboot", S::Running, 6),
                job("other", "shutdown", S::Running, 7),
            ],
        };
        let reboot = Work::Action(GuestAction::Reboot);
        assert_eq!(
            resume(reboot, &found, Some(at(5))),
            Resume::Adopt("after".into())
        );
        assert_eq!(resume(reboot, &found, Some(at(7))), Resume::Post);
        assert_eq!(
            resume(Work::Action(GuestAction::Start), &found, Some(at(0))),
            Resume::Post
        );
        assert_eq!(resume(reboot, &found, None), Resume::Post);
        assert_eq!(resume(Work::Fetch, &found, Some(at(0))), Resume::Post);
    }

    #[test]
    fn what_follows_an_agent_job() {
        assert_eq!(
            after(Work::Fetch, AgentEnd::Complete),
            After::Save(Transition::Fetched)
        );
        assert_eq!(
            after(Work::Create, AgentEnd::Complete),
            After::Finish(Transition::Finished)
        );
        assert_eq!(
            after(Work::Delete, AgentEnd::Complete),
            After::DestroyThenFinish
        );
        assert_eq!(
            after(Work::Action(GuestAction::Suspend), AgentEnd::Complete),
            After::Finish(Transition::Finished)
        );
        assert_eq!(
            after(Work::Fetch, AgentEnd::Failed("no image".into())),
            After::Finish(Transition::Failed {
                reason: "no image".into()
            })
        );
    }
}
