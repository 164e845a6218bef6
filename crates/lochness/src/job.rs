//! [`Job`]: the record of one asynchronous guest operation (`lochness/jobs/<id>`, the
//! original JSON), its typed action and status, the transitions between its states, and
//! the transactions that create a job together with its queue entry.
//!
//! A job is born `new` in a queue ([`Queue`]): `select-hypervisor` jobs in the placers'
//! queue, every other action in the workers' queue. Placers and workers claim jobs and
//! move them on with [`Job::next`]; see docs/cluster.md, "Jobs".

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, SecondsFormat, Utc};
use etcd_client::{Txn, TxnOp};
use mistify_types::GuestAction;
use serde::ser::SerializeStruct;
use serde::{Serialize, Serializer};

use crate::codec::{canonicalize, new_id, Obj};
use crate::context::{revision, Context};
use crate::error::{Error, Result};
use crate::guest::Guest;
use crate::keys;

/// Where a job waits for the process that works on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Queue {
    /// `select-hypervisor` jobs, for placers (`lochness/queue/create/`).
    Create,
    /// Every other job, for workers (`lochness/queue/work/`).
    Work,
}

impl Queue {
    /// The key prefix of the queue's entries.
    pub fn prefix(self) -> &'static str {
        match self {
            Queue::Create => keys::QUEUE_CREATE,
            Queue::Work => keys::QUEUE_WORK,
        }
    }

    /// The queue an entry key belongs to, and the job id it names.
    pub fn of_key(key: &str) -> Option<(Queue, &str)> {
        [Queue::Create, Queue::Work].into_iter().find_map(|q| {
            key.strip_prefix(q.prefix())
                .filter(|id| !id.is_empty() && !id.contains('/'))
                .map(|id| (q, id))
        })
    }
}

/// What a job does (the original's action names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobAction {
    /// Place the guest on a hypervisor (placer).
    SelectHypervisor,
    /// Fetch the image of the guest's flavor on its hypervisor's agent.
    Fetch,
    /// Create the guest on its hypervisor's agent.
    Create,
    /// Delete the guest from its agent, then from the cluster.
    Delete,
    /// `shutdown` on the agent.
    Shutdown,
    /// `reboot` on the agent.
    Reboot,
    /// `restart` on the agent.
    Restart,
    /// `poweroff` on the agent.
    Poweroff,
    /// `start` on the agent.
    Start,
    /// `suspend` on the agent.
    Suspend,
}

/// An action name that is not one of [`JobAction`]'s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid action: {0}")]
pub struct UnknownAction(pub String);

impl JobAction {
    /// The guest actions `POST /guests/{id}/{action}` accepts, in route order.
    pub const GUEST_ACTIONS: [JobAction; 6] = [
        JobAction::Shutdown,
        JobAction::Reboot,
        JobAction::Restart,
        JobAction::Poweroff,
        JobAction::Start,
        JobAction::Suspend,
    ];

    /// The original's name of the action.
    pub fn as_str(self) -> &'static str {
        match self {
            JobAction::SelectHypervisor => "select-hypervisor",
            JobAction::Fetch => "fetch",
            JobAction::Create => "create",
            JobAction::Delete => "delete",
            JobAction::Shutdown => "shutdown",
            JobAction::Reboot => "reboot",
            JobAction::Restart => "restart",
            JobAction::Poweroff => "poweroff",
            JobAction::Start => "start",
            JobAction::Suspend => "suspend",
        }
    }

    /// The queue a new job of this action waits in.
    pub fn queue(self) -> Queue {
        match self {
            JobAction::SelectHypervisor => Queue::Create,
            _ => Queue::Work,
        }
    }

    /// The agent's guest action this job runs, for the guest actions.
    pub fn guest_action(self) -> Option<GuestAction> {
        match self {
            JobAction::Shutdown => Some(GuestAction::Shutdown),
            JobAction::Reboot => Some(GuestAction::Reboot),
            JobAction::Restart => Some(GuestAction::Restart),
            JobAction::Poweroff => Some(GuestAction::Poweroff),
            JobAction::Start => Some(GuestAction::Start),
            JobAction::Suspend => Some(GuestAction::Suspend),
            JobAction::SelectHypervisor
            | JobAction::Fetch
            | JobAction::Create
            | JobAction::Delete => None,
        }
    }
}

impl fmt::Display for JobAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobAction {
    type Err = UnknownAction;

    fn from_str(s: &str) -> std::result::Result<JobAction, UnknownAction> {
        [
            JobAction::SelectHypervisor,
            JobAction::Fetch,
            JobAction::Create,
            JobAction::Delete,
        ]
        .into_iter()
        .chain(JobAction::GUEST_ACTIONS)
        .find(|a| a.as_str() == s)
        .ok_or_else(|| UnknownAction(s.to_string()))
    }
}

/// Where a job is (the original's status names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobStatus {
    /// Waiting for its next step.
    New,
    /// The agent works on it (`remote` names the agent's job).
    Working,
    /// Finished.
    Done,
    /// Failed; `error` says why.
    Error,
}

impl JobStatus {
    /// The original's name of the status.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::New => "new",
            JobStatus::Working => "working",
            JobStatus::Done => "done",
            JobStatus::Error => "error",
        }
    }

    /// Whether the job has ended (`done` or `error`).
    pub fn is_final(self) -> bool {
        matches!(self, JobStatus::Done | JobStatus::Error)
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobStatus {
    type Err = Error;

    fn from_str(s: &str) -> Result<JobStatus> {
        [
            JobStatus::New,
            JobStatus::Working,
            JobStatus::Done,
            JobStatus::Error,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
        .ok_or_else(|| Error::InvalidJson(format!("status: unknown job status {s:?}")))
    }
}

/// A step in a job's life, applied with [`Job::next`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// A worker took the job: `started_at` is set if it was not.
    Claimed,
    /// The placer placed the guest: `select-hypervisor` becomes `fetch`, still `new`.
    Placed,
    /// The placer found no place: `error` with the reason; the times stay unset, as
    /// the original's placer left them.
    Unplaceable {
        /// `unable to select candidate <guest> - <why>`.
        reason: String,
    },
    /// The agent accepted the step: `working`, `remote` = the agent's job id.
    Started {
        /// The agent's job id.
        remote: String,
    },
    /// The image is there: `fetch` becomes `create`, `new` again, `remote` cleared.
    Fetched,
    /// The job is done.
    Finished,
    /// The job failed.
    Failed {
        /// Why, for the operator.
        reason: String,
    },
}

/// A transition that does not apply to the job's state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("job {job} ({action}, {status}) cannot take the step {step:?}")]
pub struct WrongState {
    /// The job id.
    pub job: String,
    /// Its action.
    pub action: JobAction,
    /// Its status.
    pub status: JobStatus,
    /// The refused step.
    pub step: Transition,
}

/// One asynchronous operation on a guest, as stored at `lochness/jobs/<id>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// Lower-case UUID.
    pub id: String,
    /// The agent's job id while the agent works on it (`""` otherwise).
    pub remote: String,
    /// What the job does.
    pub action: JobAction,
    /// The guest it is about.
    pub guest: String,
    /// Why it failed (`""` unless `error`).
    pub error: String,
    /// Where it is.
    pub status: JobStatus,
    /// When a worker first took it.
    pub started_at: Option<DateTime<Utc>>,
    /// When it ended.
    pub finished_at: Option<DateTime<Utc>>,
    mod_revision: i64,
}

/// Go's zero `time.Time` in RFC 3339, what the original writes for an unset time.
pub const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// A time as Go's `time.RFC3339Nano` writes a UTC time (fraction without trailing
/// zeros), or [`ZERO_TIME`].
pub fn go_rfc3339(t: &Option<DateTime<Utc>>) -> String {
    match t {
        None => ZERO_TIME.to_string(),
        Some(t) => {
            let text = t.to_rfc3339_opts(SecondsFormat::Nanos, true);
            // `…05.120000000Z` → `…05.12Z`, `…05.000000000Z` → `…05Z`.
            match text.rsplit_once('.') {
                Some((head, frac)) => {
                    let digits = frac.trim_end_matches('Z').trim_end_matches('0');
                    if digits.is_empty() {
                        format!("{head}Z")
                    } else {
                        format!("{head}.{digits}Z")
                    }
                }
                None => text,
            }
        }
    }
}

fn parse_time(name: &str, text: Option<String>) -> Result<Option<DateTime<Utc>>> {
    match text.as_deref() {
        None | Some("") | Some(ZERO_TIME) => Ok(None),
        Some(t) => DateTime::parse_from_rfc3339(t)
            .map(|t| Some(t.with_timezone(&Utc)))
            .map_err(|e| Error::InvalidJson(format!("{name}: {e}"))),
    }
}

impl Serialize for Job {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let fields = if self.error.is_empty() { 7 } else { 8 };
        let mut o = s.serialize_struct("Job", fields)?;
        o.serialize_field("id", &self.id)?;
        o.serialize_field("remote", &self.remote)?;
        o.serialize_field("action", self.action.as_str())?;
        o.serialize_field("guest", &self.guest)?;
        if !self.error.is_empty() {
            o.serialize_field("error", &self.error)?;
        }
        o.serialize_field("status", self.status.as_str())?;
        o.serialize_field("started_at", &go_rfc3339(&self.started_at))?;
        o.serialize_field("finished_at", &go_rfc3339(&self.finished_at))?;
        o.end()
    }
}

impl Job {
    /// A new job (`new`, fresh id) of `action` on `guest`.
    pub fn new(guest: &str, action: JobAction) -> Job {
        Job {
            id: new_id(),
            remote: String::new(),
            action,
            guest: guest.to_string(),
            error: String::new(),
            status: JobStatus::New,
            started_at: None,
            finished_at: None,
            mod_revision: 0,
        }
    }

    /// Decodes a stored record (members matched as Go does, unknown ones ignored).
    pub fn from_stored(id: &str, data: &[u8], mod_revision: i64) -> Result<Job> {
        let o = Obj::parse(data)?;
        let action = o
            .string("action")?
            .ok_or_else(|| Error::InvalidJson("action: missing".into()))?;
        let action = JobAction::from_str(&action).map_err(|e| Error::InvalidJson(e.to_string()))?;
        let status = o
            .string("status")?
            .ok_or_else(|| Error::InvalidJson("status: missing".into()))?
            .parse()?;
        let stored_id = o.string("id")?.unwrap_or_default();
        Ok(Job {
            id: if stored_id.is_empty() {
                id.to_string()
            } else {
                stored_id
            },
            remote: o.string("remote")?.unwrap_or_default(),
            action,
            guest: o.string("guest")?.unwrap_or_default(),
            error: o.string("error")?.unwrap_or_default(),
            status,
            started_at: parse_time("started_at", o.string("started_at")?)?,
            finished_at: parse_time("finished_at", o.string("finished_at")?)?,
            mod_revision,
        })
    }

    /// The stored JSON, members in the original's order.
    pub fn to_json(&self) -> String {
        crate::codec::to_json(self)
    }

    /// The `mod_revision` of the record this copy was read or written at (0 = never).
    pub fn revision(&self) -> i64 {
        self.mod_revision
    }

    /// Records the revision this copy was written at.
    pub fn set_revision(&mut self, rev: i64) {
        self.mod_revision = rev;
    }

    /// The queue this job waits in while it is not finished.
    pub fn queue(&self) -> Queue {
        self.action.queue()
    }

    /// The job after `step` at time `now`, or why the step does not apply.
    pub fn next(&self, step: Transition, now: DateTime<Utc>) -> Result<Job, WrongState> {
        let refuse = |step: Transition| WrongState {
            job: self.id.clone(),
            action: self.action,
            status: self.status,
            step,
        };
        if self.status.is_final() {
            return Err(refuse(step));
        }
        let mut next = self.clone();
        match &step {
            Transition::Claimed => {
                next.started_at = self.started_at.or(Some(now));
            }
            Transition::Placed => {
                if self.action != JobAction::SelectHypervisor || self.status != JobStatus::New {
                    return Err(refuse(step));
                }
                next.action = JobAction::Fetch;
            }
            Transition::Unplaceable { reason } => {
                if self.action != JobAction::SelectHypervisor {
                    return Err(refuse(step));
                }
                next.status = JobStatus::Error;
                next.error.clone_from(reason);
            }
            Transition::Started { remote } => {
                if self.action == JobAction::SelectHypervisor
                    || self.status != JobStatus::New
                    || remote.is_empty()
                {
                    return Err(refuse(step));
                }
                next.status = JobStatus::Working;
                next.remote.clone_from(remote);
                next.started_at = self.started_at.or(Some(now));
            }
            Transition::Fetched => {
                if self.action != JobAction::Fetch {
                    return Err(refuse(step));
                }
                next.action = JobAction::Create;
                next.status = JobStatus::New;
                next.remote.clear();
            }
            Transition::Finished => {
                if self.action == JobAction::SelectHypervisor {
                    return Err(refuse(step));
                }
                next.status = JobStatus::Done;
                next.started_at = self.started_at.or(Some(now));
                next.finished_at = Some(now);
            }
            Transition::Failed { reason } => {
                next.status = JobStatus::Error;
                next.error = if reason.is_empty() {
                    "failed".to_string()
                } else {
                    reason.clone()
                };
                next.started_at = self.started_at.or(Some(now));
                next.finished_at = Some(now);
            }
        }
        Ok(next)
    }

    /// The operation writing this record (for a transaction).
    pub(crate) fn put_op(&self, ctx: &Context) -> TxnOp {
        ctx.op_put(&keys::job(&self.id), self.to_json())
    }
}

impl Context {
    /// Reads job `id` (no lock is taken: reading a job never holds it up).
    pub async fn job(&self, id: &str) -> Result<Job> {
        let id = canonicalize(id)?;
        let key = keys::job(&id);
        match self.get(&key).await? {
            Some(kv) => Job::from_stored(&id, &kv.value, kv.mod_revision),
            None => Err(Error::NotFound(key)),
        }
    }

    /// Creates `guest` (which must not exist yet) together with its `select-hypervisor`
    /// job and the job's entry in the placers' queue, in one transaction that also
    /// requires the flavor, network, firewall group and VLAN group the guest names to
    /// exist ([`Error::NotFound`] names the first missing one's key). The guest's
    /// placement fields are cleared first. An existing guest id is [`Error::Conflict`].
    pub async fn create_guest_with_job(&self, guest: &mut Guest) -> Result<Job> {
        guest.id = canonicalize(&guest.id)?;
        guest.hypervisor.clear();
        guest.subnet.clear();
        guest.ip = None;
        guest.bridge.clear();
        guest.validate()?;
        guest.canonicalize_refs()?;
        let job = Job::new(&guest.id, JobAction::SelectHypervisor);
        let gkey = keys::guest_metadata(&guest.id);
        let refs = guest.reference_keys();
        let mut cmps = vec![self.cmp_absent(&gkey)];
        cmps.extend(refs.iter().map(|k| self.cmp_present(k)));
        let txn = Txn::new()
            .when(cmps)
            .and_then(vec![
                self.op_put(&gkey, guest.to_json()),
                job.put_op(self),
                self.op_put(
                    &keys::queue_entry(keys::QUEUE_CREATE, &job.id),
                    guest.id.as_str(),
                ),
            ])
            .or_else(refs.iter().map(|k| self.op_get(k)).collect::<Vec<_>>());
        let resp = self.txn(txn).await?;
        if !resp.succeeded() {
            let r = resp.op_responses();
            if let Some((_, missing)) = refs
                .iter()
                .enumerate()
                .find(|(i, _)| crate::context::txn_get(self, &r, *i).is_empty())
            {
                return Err(Error::NotFound(missing.clone()));
            }
            return Err(Error::Conflict(format!(
                "guest {} already exists",
                guest.id
            )));
        }
        let rev = revision(&resp);
        guest.set_revision(rev);
        let mut job = job;
        job.mod_revision = rev;
        Ok(job)
    }

    /// Queues a job of `action` (anything but `select-hypervisor`) on the existing guest
    /// `guest_id`: the job and its entry in the workers' queue, in one transaction that
    /// requires the guest to exist ([`Error::NotFound`] otherwise).
    pub async fn queue_job(&self, guest_id: &str, action: JobAction) -> Result<Job> {
        let guest_id = canonicalize(guest_id)?;
        if action == JobAction::SelectHypervisor {
            return Err(Error::Invalid(
                "select-hypervisor jobs are created with their guest".into(),
            ));
        }
        let job = Job::new(&guest_id, action);
        let gkey = keys::guest_metadata(&guest_id);
        let txn = Txn::new()
            .when(vec![self.cmp_present(&gkey)])
            .and_then(vec![
                job.put_op(self),
                self.op_put(
                    &keys::queue_entry(keys::QUEUE_WORK, &job.id),
                    guest_id.as_str(),
                ),
            ]);
        let resp = self.txn(txn).await?;
        if !resp.succeeded() {
            return Err(Error::NotFound(gkey));
        }
        let mut job = job;
        job.mod_revision = revision(&resp);
        Ok(job)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(secs: u32, nanos: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 7, 10, 0, secs).unwrap()
            + chrono::Duration::nanoseconds(i64::from(nanos))
    }

    fn job(action: JobAction) -> Job {
        let mut j = Job::new("0a1b2c3d-4e5f-4071-8293-a4b5c6d7e8f9", action);
        j.id = "11111111-2222-4333-8444-555555555555".into();
        j
    }

    #[test]
    fn json_is_the_originals() {
        let j = job(JobAction::SelectHypervisor);
        assert_eq!(
            j.to_json(),
            r#"{"id":"11111111-2222-4333-8444-555555555555","remote":"","action":"select-hypervisor","guest":"0a1b2c3d-4e5f-4071-8293-a4b5c6d7e8f9","status":"new","started_at":"0001-01-01T00:00:00Z","finished_at":"0001-01-01T00:00:00Z"}"#
        );
        let mut failed = j
            .next(
                Transition::Failed {
                    reason: "boom".into(),
                },
                at(5, 120_000_000),
            )
            .unwrap();
        assert_eq!(
            failed.to_json(),
            r#"{"id":"11111111-2222-4333-8444-555555555555","remote":"","action":"select-hypervisor","guest":"0a1b2c3d-4e5f-4071-8293-a4b5c6d7e8f9","error":"boom","status":"error","started_at":"2026-12-07T10:00:05.12Z","finished_at":"2026-12-07T10:00:05.12Z"}"#
        );
        failed.finished_at = Some(at(6, 0));
        let back = Job::from_stored(&failed.id, failed.to_json().as_bytes(), 7).unwrap();
        assert_eq!(back.finished_at, Some(at(6, 0)));
        assert_eq!(back.started_at, Some(at(5, 120_000_000)));
        assert_eq!(back.revision(), 7);
        assert_eq!(back.to_json(), failed.to_json());
    }

    #[test]
    fn go_times() {
        assert_eq!(go_rfc3339(&None), ZERO_TIME);
        assert_eq!(go_rfc3339(&Some(at(5, 0))), "2026-12-07T10:00:05Z");
        assert_eq!(
            go_rfc3339(&Some(at(5, 1))),
            "2026-12-07T10:00:05.000000001Z"
        );
        assert_eq!(
            go_rfc3339(&Some(at(5, 715_868_326))),
            "2026-12-07T10:00:05.715868326Z"
        );
        // Another zone and Go's nanosecond text decode to the same instant.
        let j = Job::from_stored(
            "x",
            br#"{"action":"fetch","status":"working","started_at":"2026-12-07T11:00:05.5+01:00"}"#,
            1,
        )
        .unwrap();
        assert_eq!(j.started_at, Some(at(5, 500_000_000)));
        assert_eq!(j.id, "x");
    }

    #[test]
    fn stored_records_must_name_known_actions_and_statuses() {
        for bad in [
            r#"{"action":"dance","status":"new"}"#,
            r#"{"action":"fetch","status":"sleeping"}"#,
            r#"{"status":"new"}"#,
            r#"{"action":"fetch"}"#,
            r#"{"action":"fetch","status":"new","started_at":"yesterday"}"#,
            r#"[1]"#,
        ] {
            assert!(
                matches!(
                    Job::from_stored("x", bad.as_bytes(), 1),
                    Err(Error::InvalidJson(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn actions_and_queues() {
        for a in JobAction::GUEST_ACTIONS {
            assert_eq!(a.as_str().parse::<JobAction>().unwrap(), a);
            assert_eq!(a.queue(), Queue::Work);
            assert!(a.guest_action().is_some());
        }
        assert_eq!(JobAction::SelectHypervisor.queue(), Queue::Create);
        assert_eq!(
            "select-hypervisor".parse::<JobAction>().unwrap(),
            JobAction::SelectHypervisor
        );
        assert!(JobAction::Delete.guest_action().is_none());
        assert!("resume".parse::<JobAction>().is_err());
        assert_eq!(
            Queue::of_key("lochness/queue/work/abc"),
            Some((Queue::Work, "abc"))
        );
        assert_eq!(Queue::of_key("lochness/queue/work/"), None);
        assert_eq!(Queue::of_key("lochness/queue/other/abc"), None);
    }

    #[test]
    fn a_create_goes_placed_fetch_create_done() {
        let now = at(1, 0);
        let j = job(JobAction::SelectHypervisor);
        let placed = j.next(Transition::Placed, now).unwrap();
        assert_eq!(
            (placed.action, placed.status),
            (JobAction::Fetch, JobStatus::New)
        );
        assert_eq!(placed.started_at, None, "the placer leaves the times unset");
        let claimed = placed.next(Transition::Claimed, at(2, 0)).unwrap();
        assert_eq!(claimed.started_at, Some(at(2, 0)));
        let again = claimed.next(Transition::Claimed, at(3, 0)).unwrap();
        assert_eq!(
            again.started_at,
            Some(at(2, 0)),
            "a resumed job keeps its start"
        );
        let working = again
            .next(
                Transition::Started {
                    remote: "agent-1".into(),
                },
                at(3, 0),
            )
            .unwrap();
        assert_eq!(
            (working.status, working.remote.as_str()),
            (JobStatus::Working, "agent-1")
        );
        let fetched = working.next(Transition::Fetched, at(4, 0)).unwrap();
        assert_eq!(
            (fetched.action, fetched.status, fetched.remote.as_str()),
            (JobAction::Create, JobStatus::New, "")
        );
        let creating = fetched
            .next(
                Transition::Started {
                    remote: "agent-2".into(),
                },
                at(5, 0),
            )
            .unwrap();
        let done = creating.next(Transition::Finished, at(6, 0)).unwrap();
        assert_eq!(done.status, JobStatus::Done);
        assert_eq!(done.started_at, Some(at(2, 0)));
        assert_eq!(done.finished_at, Some(at(6, 0)));
        assert!(done.status.is_final());
    }

    #[test]
    fn an_unplaceable_guest_fails_without_times() {
        let j = job(JobAction::SelectHypervisor);
        let failed = j
            .next(
                Transition::Unplaceable {
                    reason: "unable to select candidate g - no suitable hypervisors".into(),
                },
                at(1, 0),
            )
            .unwrap();
        assert_eq!(failed.status, JobStatus::Error);
        assert_eq!((failed.started_at, failed.finished_at), (None, None));
        assert_eq!(
            failed.error,
            "unable to select candidate g - no suitable hypervisors"
        );
    }

    #[test]
    fn steps_that_do_not_apply_are_refused() {
        let now = at(1, 0);
        let select = job(JobAction::SelectHypervisor);
        let reboot = job(JobAction::Reboot);
        let remote = || Transition::Started { remote: "r".into() };
        // Only the placer's job is placed, and only while new.
        assert!(reboot.next(Transition::Placed, now).is_err());
        let working = reboot.next(remote(), now).unwrap();
        assert!(working.next(remote(), now).is_err(), "started twice");
        assert!(
            working.next(Transition::Fetched, now).is_err(),
            "not a fetch"
        );
        assert!(
            select.next(remote(), now).is_err(),
            "the placer has no agent job"
        );
        assert!(select.next(Transition::Finished, now).is_err());
        assert!(reboot
            .next(
                Transition::Started {
                    remote: String::new()
                },
                now
            )
            .is_err());
        assert!(reboot
            .next(Transition::Unplaceable { reason: "x".into() }, now)
            .is_err());
        // Nothing moves a finished job.
        let done = working.next(Transition::Finished, now).unwrap();
        let failed = working
            .next(Transition::Failed { reason: "x".into() }, now)
            .unwrap();
        for end in [done, failed] {
            for step in [
                Transition::Claimed,
                Transition::Finished,
                Transition::Failed { reason: "y".into() },
                remote(),
            ] {
                let e = end.next(step.clone(), now).unwrap_err();
                assert_eq!(e.status, end.status);
                assert_eq!(e.step, step);
            }
        }
        // A failure always says something.
        let f = reboot
            .next(Transition::Failed { reason: "".into() }, now)
            .unwrap();
        assert_eq!(f.error, "failed");
    }
}
