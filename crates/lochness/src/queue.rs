//! The job queue on etcd: claims bound to a lease ([`Claimer`], [`Claim`]) and the
//! in-memory picture of both queues and the claims that placers and workers wake on
//! ([`QueueView`]). See docs/cluster.md, "Jobs" and "Crash safety".
//!
//! - A [`Claimer`] holds one lease per process, kept alive in the background. When the
//!   lease cannot be confirmed within its TTL it is lost: every [`Claim`] made under it
//!   reports [`Claim::lost`] (its holder stops), and a new lease is granted.
//! - [`Claimer::claim`] takes a job in one transaction: its queue entry exists and no
//!   claim does. Every later write of the [`Claim`] compares that the claim key still
//!   holds the claimer's name under the same lease, and the job record its revision, so a
//!   process that lost its claim writes nothing.
//! - A [`QueueView`] keeps both queues and the claims in memory from one read and two
//!   watches, and says which jobs are eligible: unclaimed, and the oldest job of their
//!   guest (by the creation of the job) across both queues.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use etcd_client::{Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::context::{revision, txn_get, Context, Guard};
use crate::error::{Error, Result};
use crate::host::hostname;
use crate::job::{Job, Queue, Transition};
use crate::keys;
use crate::watch::{ChangeKind, WatchEvent};

/// The default TTL of a claimer's lease.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(10);

/// The name a process claims jobs under: `<program>@<host>:<pid>`.
pub fn claimer_name(program: &str) -> String {
    let host = hostname();
    let host = if host.is_empty() { "localhost" } else { &host };
    format!("{program}@{host}:{}", std::process::id())
}

/// One lease a [`Claimer`] holds; `generation` counts the leases it has held (1 for the
/// first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// etcd's lease id.
    pub id: i64,
    /// 1 for the claimer's first lease, then one more for each new grant.
    pub generation: u64,
}

/// Claims jobs for one process under one etcd lease (see the module documentation).
/// Cheap to clone: clones share the lease.
#[derive(Clone)]
pub struct Claimer {
    inner: Arc<ClaimerInner>,
}

struct ClaimerInner {
    ctx: Context,
    name: String,
    ttl: Duration,
    state: watch::Receiver<Option<Lease>>,
    keeper: JoinHandle<()>,
}

impl Drop for ClaimerInner {
    fn drop(&mut self) {
        self.keeper.abort();
    }
}

impl std::fmt::Debug for Claimer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Claimer")
            .field("name", &self.inner.name)
            .field("lease", &self.lease())
            .finish()
    }
}

/// The TTL etcd is asked for: whole seconds, at least 1.
fn ttl_seconds(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_secs().max(1)).unwrap_or(i64::MAX)
}

impl Claimer {
    /// Grants the first lease (`ttl`, whole seconds) and keeps leases alive in the
    /// background. `program` names the claims (`<program>@<host>:<pid>`).
    pub async fn start(ctx: &Context, program: &str, ttl: Duration) -> Result<Claimer> {
        let ttl = Duration::from_secs(ttl_seconds(ttl).unsigned_abs());
        let name = claimer_name(program);
        let granted = Instant::now();
        let first = ctx.client().lease_grant(ttl_seconds(ttl), None).await?.id();
        let (tx, rx) = watch::channel(Some(Lease {
            id: first,
            generation: 1,
        }));
        let keeper = tokio::spawn(keep_leases(
            ctx.clone(),
            name.clone(),
            ttl,
            tx,
            first,
            granted,
        ));
        tracing::info!(claimer = %name, lease = first, ?ttl, "claimer started");
        Ok(Claimer {
            inner: Arc::new(ClaimerInner {
                ctx: ctx.clone(),
                name,
                ttl,
                state: rx,
                keeper,
            }),
        })
    }

    /// The name the claims hold.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The lease TTL.
    pub fn ttl(&self) -> Duration {
        self.inner.ttl
    }

    /// The lease held now (`None` between losing one and being granted the next).
    pub fn lease(&self) -> Option<Lease> {
        *self.inner.state.borrow()
    }

    /// Waits until the claimer holds a lease (at once when it does).
    pub async fn leased(&self) -> Lease {
        let mut rx = self.inner.state.clone();
        let held = rx.wait_for(Option::is_some).await.ok().and_then(|l| *l);
        match held {
            Some(lease) => lease,
            // The keeper is gone (the claimer is being dropped): nothing will come.
            None => std::future::pending().await,
        }
    }

    /// Resolves when a lease other than `lease` is current (or none is).
    pub async fn lost(&self, lease: Lease) {
        let mut rx = self.inner.state.clone();
        let _ = rx.wait_for(|l| *l != Some(lease)).await;
    }

    /// Claims job `job_id` waiting in `queue`, in one transaction: its entry exists and
    /// no claim does; the same transaction reads the record and the entry, so the claim
    /// and what it holds are of one revision. The record is not written (a worker that
    /// needs `started_at` before it asks the agent anything saves
    /// [`Transition::Claimed`]). `None` when the job is not to be had: its entry is gone,
    /// or someone else claimed it. An entry whose record is missing, unreadable or
    /// finished is removed with the claim just made (nothing could work on it).
    pub async fn claim(&self, job_id: &str, queue: Queue) -> Result<Option<Claim>> {
        let mut claims = self.claim_many(&[job_id.to_string()], queue).await?;
        Ok(claims.pop().flatten())
    }

    /// Claims each of `jobs` as [`Claimer::claim`] does, all in one transaction (one
    /// raft proposal): each job's claim is a nested transaction with its own
    /// conditions, so each is taken or not on its own. The answers are in the order of
    /// `jobs`.
    pub async fn claim_many(&self, jobs: &[String], queue: Queue) -> Result<Vec<Option<Claim>>> {
        let Some(lease) = self.lease() else {
            return Err(Error::ClaimLost(format!("{} holds no lease", self.name())));
        };
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let ctx = &self.inner.ctx;
        let subs: Vec<TxnOp> = jobs
            .iter()
            .map(|id| {
                let ekey = keys::queue_entry(queue.prefix(), id);
                let ckey = keys::claim(id);
                TxnOp::txn(
                    Txn::new()
                        .when(vec![ctx.cmp_present(&ekey), ctx.cmp_absent(&ckey)])
                        .and_then(vec![
                            TxnOp::put(
                                ctx.abs(&ckey),
                                self.name(),
                                Some(PutOptions::new().with_lease(lease.id)),
                            ),
                            ctx.op_get(&keys::job(id)),
                            ctx.op_get(&ekey),
                        ]),
                )
            })
            .collect();
        let resp = ctx.txn(Txn::new().and_then(subs)).await?;
        let mut out = Vec::with_capacity(jobs.len());
        for (id, answer) in jobs.iter().zip(resp.op_responses()) {
            out.push(match answer {
                TxnOpResponse::Txn(t) if t.succeeded() => {
                    self.claimed(id, queue, lease, &t.op_responses()).await?
                }
                _ => None,
            });
        }
        Ok(out)
    }

    /// The claim of `job_id` from the responses of its claim transaction (put, record,
    /// entry); a broken entry is removed with the claim.
    async fn claimed(
        &self,
        job_id: &str,
        queue: Queue,
        lease: Lease,
        r: &[TxnOpResponse],
    ) -> Result<Option<Claim>> {
        let ctx = &self.inner.ctx;
        let first = |i| txn_get(ctx, r, i).into_iter().next();
        let Some(entry) = first(2) else {
            return Ok(None);
        };
        let job = match first(1).map(|kv| Job::from_stored(job_id, &kv.value, kv.mod_revision)) {
            Some(Ok(job)) if !job.status.is_final() => job,
            other => {
                let why = match other {
                    None => "its record is missing".to_string(),
                    Some(Ok(job)) => format!("it is already {}", job.status),
                    Some(Err(e)) => format!("its record is unreadable: {e}"),
                };
                tracing::error!(job = %job_id, queue = ?queue, "removing a queue entry: {why}");
                let ekey = keys::queue_entry(queue.prefix(), job_id);
                let ckey = keys::claim(job_id);
                let txn = Txn::new()
                    .when(vec![
                        ctx.cmp_rev(&ekey, entry.mod_revision),
                        Compare::lease(ctx.abs(&ckey), CompareOp::Equal, lease.id),
                    ])
                    .and_then(vec![ctx.op_delete(&ekey), ctx.op_delete(&ckey)]);
                ctx.txn(txn).await?;
                return Ok(None);
            }
        };
        Ok(Some(Claim {
            ctx: ctx.clone(),
            name: self.inner.name.clone(),
            lease,
            queue,
            guest: entry.text(),
            job,
            unsaved: false,
            state: self.inner.state.clone(),
        }))
    }

    /// Gives back the claim on job `job_id` if this claimer holds it under its current
    /// lease (for a holder that ended without finishing, e.g. a task that panicked).
    pub async fn give_back(&self, job_id: &str) -> Result<()> {
        let Some(lease) = self.lease() else {
            return Ok(());
        };
        let ctx = &self.inner.ctx;
        let ckey = ctx.abs(&keys::claim(job_id));
        let txn = Txn::new()
            .when(vec![
                Compare::value(ckey.clone(), CompareOp::Equal, self.name()),
                Compare::lease(ckey, CompareOp::Equal, lease.id),
            ])
            .and_then(vec![ctx.op_delete(&keys::claim(job_id))]);
        ctx.txn(txn).await?;
        Ok(())
    }

    /// Stops keeping the lease alive and revokes it: every claim made under it vanishes
    /// now, so other processes resume those jobs at once.
    pub async fn stop(self) -> Result<()> {
        self.inner.keeper.abort();
        if let Some(lease) = self.lease() {
            self.inner.ctx.client().lease_revoke(lease.id).await?;
        }
        Ok(())
    }
}

/// Keeps leases: the current one alive until it is lost, then announces the loss,
/// revokes it (best effort: its claims vanish now rather than at expiry) and grants the
/// next. Runs until aborted.
async fn keep_leases(
    ctx: Context,
    name: String,
    ttl: Duration,
    tx: watch::Sender<Option<Lease>>,
    first: i64,
    granted: Instant,
) {
    let (mut id, mut granted, mut generation) = (first, granted, 1u64);
    loop {
        tx.send_replace(Some(Lease { id, generation }));
        keep_alive(&ctx, id, ttl, granted).await;
        tx.send_replace(None);
        tracing::warn!(claimer = %name, lease = id, "lease lost: its claims are given up");
        let mut client = ctx.client();
        let _ = tokio::time::timeout(Duration::from_secs(1), client.lease_revoke(id)).await;
        let mut pause = Duration::from_millis(100);
        loop {
            granted = Instant::now();
            match client.lease_grant(ttl_seconds(ttl), None).await {
                Ok(r) => {
                    id = r.id();
                    break;
                }
                Err(e) => {
                    tracing::warn!(claimer = %name, error = %e, "cannot grant a lease, retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
            }
        }
        generation += 1;
        tracing::info!(claimer = %name, lease = id, generation, "new lease granted");
    }
}

/// Keeps lease `id` alive; returns once it could not be confirmed within its TTL (each
/// confirmation counts from the moment its request was sent) or etcd says it is gone.
async fn keep_alive(ctx: &Context, id: i64, ttl: Duration, granted: Instant) {
    let every = (ttl / 3).max(Duration::from_millis(200));
    let mut valid_until = granted + ttl;
    let mut channel = None;
    while Instant::now() < valid_until {
        let sent = Instant::now();
        let answer = async {
            let (keeper, stream) = match &mut channel {
                Some(c) => c,
                // Opening the channel sends the first keep-alive and reads its answer
                // (an error when the lease is gone): the lease has its full TTL again.
                None => {
                    channel = Some(ctx.client().lease_keep_alive(id).await?);
                    return Ok::<_, etcd_client::Error>(Some(ttl_seconds(ttl)));
                }
            };
            keeper.keep_alive().await?;
            Ok(Some(stream_ttl(stream).await?))
        };
        match tokio::time::timeout_at(valid_until, answer).await {
            Ok(Ok(Some(left))) if left > 0 => {
                valid_until = sent + Duration::from_secs(left.unsigned_abs());
                tokio::time::sleep(every).await;
            }
            Ok(Ok(_)) => return,
            Ok(Err(e)) => {
                tracing::debug!(lease = id, error = %e, "lease keep-alive failed, retrying");
                channel = None;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(_) => return,
        }
    }
}

/// The TTL in the next keep-alive answer (`0` when the stream ended: the lease is gone).
async fn stream_ttl(
    stream: &mut etcd_client::LeaseKeepAliveStream,
) -> std::result::Result<i64, etcd_client::Error> {
    Ok(stream.message().await?.map_or(0, |r| r.ttl()))
}

/// A job this process has claimed (see [`Claimer::claim`]). Its writes compare that the
/// claim is still this process's, under the same lease, and that the record is the one
/// it last wrote; otherwise they fail with [`Error::ClaimLost`] and write nothing.
#[derive(Debug)]
pub struct Claim {
    ctx: Context,
    name: String,
    lease: Lease,
    queue: Queue,
    guest: String,
    job: Job,
    /// Whether `job` holds a step applied by [`Claim::advance`] and not written yet.
    unsaved: bool,
    state: watch::Receiver<Option<Lease>>,
}

impl Claim {
    /// The job as last read or written.
    pub fn job(&self) -> &Job {
        &self.job
    }

    /// The queue the job waits in.
    pub fn queue(&self) -> Queue {
        self.queue
    }

    /// The guest its queue entry names.
    pub fn guest(&self) -> &str {
        &self.guest
    }

    /// The lease the claim is bound to.
    pub fn lease(&self) -> Lease {
        self.lease
    }

    /// Whether the lease the claim is bound to is no longer the claimer's.
    pub fn is_lost(&self) -> bool {
        *self.state.borrow() != Some(self.lease)
    }

    /// Resolves once the claim's lease is lost: its holder must stop working on the job
    /// (another process will resume it from its record).
    pub async fn lost(&self) {
        let mut rx = self.state.clone();
        let lease = self.lease;
        let _ = rx.wait_for(|l| *l != Some(lease)).await;
    }

    /// The compares every write of this claim makes: the claim key holds our name under
    /// our lease, the job record is the one we know.
    fn compares(&self) -> Vec<Compare> {
        let ckey = self.ctx.abs(&keys::claim(&self.job.id));
        vec![
            Compare::value(ckey.clone(), CompareOp::Equal, self.name.as_str()),
            Compare::lease(ckey, CompareOp::Equal, self.lease.id),
            self.ctx
                .cmp_rev(&keys::job(&self.job.id), self.job.revision()),
        ]
    }

    fn lost_error(&self) -> Error {
        Error::ClaimLost(format!(
            "job {}: the claim of {} (lease {:x}) no longer holds",
            self.job.id, self.name, self.lease.id
        ))
    }

    fn step(&self, step: Transition) -> Result<Job> {
        self.job
            .next(step, Utc::now())
            .map_err(|e| Error::Refused(e.to_string()))
    }

    /// Writes `next` and `extra` if the claim holds.
    async fn write(&mut self, mut next: Job, extra: Vec<TxnOp>) -> Result<()> {
        if self.is_lost() {
            return Err(self.lost_error());
        }
        let mut ops = vec![next.put_op(&self.ctx)];
        ops.extend(extra);
        let txn = Txn::new().when(self.compares()).and_then(ops);
        let resp = self.ctx.txn(txn).await?;
        if !resp.succeeded() {
            return Err(self.lost_error());
        }
        next.set_revision(revision(&resp));
        self.job = next;
        self.unsaved = false;
        Ok(())
    }

    /// Applies `step` to the record in memory only: the next write of the claim
    /// ([`Claim::save`], [`Claim::finish`]) stores it together with its own step. Only
    /// for a step that a process resuming from the stored record redoes by itself (the
    /// image fetched: it finds the agent's fetch job complete and goes on to create).
    pub fn advance(&mut self, step: Transition) -> Result<&Job> {
        self.job = self.step(step)?;
        self.unsaved = true;
        Ok(&self.job)
    }

    /// Whether a step applied by [`Claim::advance`] is still to be written: if the claim
    /// ends now (lost, given back), a process resuming the job redoes that step.
    pub fn unsaved(&self) -> bool {
        self.unsaved
    }

    /// Applies `step` to the job record and keeps the claim (a step in the middle of the
    /// job: the agent started, the image is fetched).
    pub async fn save(&mut self, step: Transition) -> Result<&Job> {
        let next = self.step(step)?;
        self.write(next, Vec::new()).await?;
        Ok(&self.job)
    }

    /// Applies `step` (the last: done or failed), and in the same transaction removes the
    /// queue entry and the claim. When etcd fails, the job is given back ([`Claim::release`])
    /// before the error is returned, so that a process resumes it.
    pub async fn finish(mut self, step: Transition) -> Result<Job> {
        let next = self.step(step)?;
        let extra = vec![
            self.ctx
                .op_delete(&keys::queue_entry(self.queue.prefix(), &self.job.id)),
            self.ctx.op_delete(&keys::claim(&self.job.id)),
        ];
        match self.write(next, extra).await {
            Ok(()) => Ok(self.job),
            Err(e @ Error::Etcd(_)) => {
                self.give_back().await;
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    /// Gives the job back without changing it (the claim key goes; a process resumes it
    /// from its record). etcd failing is retried for as long as the claim's lease is
    /// held: a claim left behind under a lease that is kept alive would hold the job
    /// until the process stops (a give-back usually follows an etcd failure, such as a
    /// member that died). Once the lease is lost the claim is gone with it.
    pub async fn release(self) -> Result<()> {
        self.give_back().await;
        Ok(())
    }

    /// The loop of [`Claim::release`].
    async fn give_back(&self) {
        let ckey = self.ctx.abs(&keys::claim(&self.job.id));
        let mut pause = Duration::from_millis(100);
        loop {
            let txn = Txn::new()
                .when(vec![
                    Compare::value(ckey.clone(), CompareOp::Equal, self.name.as_str()),
                    Compare::lease(ckey.clone(), CompareOp::Equal, self.lease.id),
                ])
                .and_then(vec![self.ctx.op_delete(&keys::claim(&self.job.id))]);
            match self.ctx.txn(txn).await {
                Ok(_) => return,
                Err(_) if self.is_lost() => return,
                Err(e) => {
                    tracing::debug!(job = %self.job.id, error = %e, "cannot give the job back yet, retrying");
                    tokio::select! {
                        () = tokio::time::sleep(pause) => {}
                        () = self.lost() => return,
                    }
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
            }
        }
    }

    /// The placer's hand-over, for the placement transaction (see
    /// `Hypervisor::add_guest_with`): the job after [`Transition::Placed`], and the guard
    /// that writes it, moves the queue entry from `queue/create` to `queue/work` and
    /// releases the claim, if the claim and the entry still hold.
    pub fn hand_over(&self) -> Result<(Guard, Job)> {
        if self.queue != Queue::Create {
            return Err(Error::Refused(format!(
                "job {} is not in the placers' queue",
                self.job.id
            )));
        }
        let next = self.step(Transition::Placed)?;
        let from = keys::queue_entry(Queue::Create.prefix(), &self.job.id);
        let to = keys::queue_entry(Queue::Work.prefix(), &self.job.id);
        let mut compares = self.compares();
        compares.push(self.ctx.cmp_present(&from));
        let guard = Guard {
            compares,
            ops: vec![
                next.put_op(&self.ctx),
                self.ctx.op_delete(&from),
                self.ctx.op_put(&to, self.guest.as_str()),
                self.ctx.op_delete(&keys::claim(&self.job.id)),
            ],
        };
        Ok((guard, next))
    }
}

/// One entry of a queue, as a [`QueueView`] knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueEntry {
    /// The job id.
    pub job: String,
    /// The queue it waits in.
    pub queue: Queue,
    /// The guest it names.
    pub guest: String,
    /// Its place in line: the etcd revision at which the job was created (kept when the
    /// placer moves it from `queue/create` to `queue/work`).
    pub order: i64,
}

/// Both queues and the claims, as of [`QueueState::revision`]; kept current with
/// [`QueueState::apply`] (see [`QueueView`]).
#[derive(Debug, Clone, Default)]
pub struct QueueState {
    entries: BTreeMap<String, QueueEntry>,
    claims: BTreeMap<String, String>,
    /// Entries removed from a queue at a revision, by job: (revision, order), so that an
    /// entry moved in the same transaction keeps its place in line.
    moved: HashMap<String, (i64, i64)>,
    revision: i64,
}

impl QueueState {
    /// Reads both queues and the claims in one transaction; then the creation revision of
    /// the jobs waiting in `queue/work` (a job moved there by a placer was created
    /// before its entry).
    pub async fn load(ctx: &Context) -> Result<QueueState> {
        let resp = ctx
            .txn(Txn::new().and_then(vec![
                ctx.op_get_prefix(keys::QUEUE),
                ctx.op_get_prefix(keys::CLAIMS),
            ]))
            .await?;
        let rev = revision(&resp);
        let r = resp.op_responses();
        let mut state = QueueState {
            revision: rev,
            ..QueueState::default()
        };
        for kv in txn_get(ctx, &r, 0) {
            if let Some((queue, job)) = Queue::of_key(&kv.key) {
                state.insert(job, queue, &kv.text(), kv.create_revision);
            }
        }
        for kv in txn_get(ctx, &r, 1) {
            if let Some(job) = claim_job(&kv.key) {
                state.claims.insert(job.to_string(), kv.text());
            }
        }
        let moved: Vec<String> = state
            .entries
            .values()
            .filter(|e| e.queue == Queue::Work)
            .map(|e| e.job.clone())
            .collect();
        for chunk in moved.chunks(64) {
            let options = GetOptions::new().with_keys_only().with_revision(rev);
            let ops: Vec<TxnOp> = chunk
                .iter()
                .map(|j| TxnOp::get(ctx.abs(&keys::job(j)), Some(options.clone())))
                .collect();
            let r = ctx.txn(Txn::new().and_then(ops)).await?.op_responses();
            for (i, job) in chunk.iter().enumerate() {
                let created = txn_get(ctx, &r, i).first().map(|kv| kv.create_revision);
                if let (Some(created), Some(e)) = (created, state.entries.get_mut(job)) {
                    e.order = e.order.min(created);
                }
            }
        }
        Ok(state)
    }

    /// Records an entry (as read by a listing).
    pub fn insert(&mut self, job: &str, queue: Queue, guest: &str, order: i64) {
        self.entries.insert(
            job.to_string(),
            QueueEntry {
                job: job.to_string(),
                queue,
                guest: guest.to_string(),
                order,
            },
        );
    }

    /// The etcd revision the state reflects.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// Applies one change of a key under `lochness/queue/` or `lochness/claims/` (other
    /// keys are ignored), as a watch reports it at `revision`.
    pub fn apply(&mut self, key: &str, kind: ChangeKind, value: &[u8], revision: i64) {
        self.revision = self.revision.max(revision);
        self.moved.retain(|_, (rev, _)| *rev >= revision);
        if let Some(job) = claim_job(key) {
            match kind {
                ChangeKind::Delete => {
                    self.claims.remove(job);
                }
                ChangeKind::Create | ChangeKind::Update => {
                    self.claims
                        .insert(job.to_string(), String::from_utf8_lossy(value).into_owned());
                }
            }
            return;
        }
        let Some((queue, job)) = Queue::of_key(key) else {
            return;
        };
        match kind {
            ChangeKind::Delete => {
                // The entry of the other queue may already stand for the job (a move
                // whose put came first).
                if self.entries.get(job).is_some_and(|e| e.queue == queue) {
                    if let Some(e) = self.entries.remove(job) {
                        self.moved.insert(job.to_string(), (revision, e.order));
                    }
                }
            }
            ChangeKind::Create | ChangeKind::Update => {
                let order = match self.entries.get(job) {
                    Some(e) => e.order,
                    None => self.moved.remove(job).map_or(revision, |(_, order)| order),
                };
                self.insert(job, queue, &String::from_utf8_lossy(value), order);
            }
        }
    }

    /// Applies a watch event (see [`QueueState::apply`]).
    pub fn apply_event(&mut self, event: &WatchEvent) {
        self.apply(&event.key, event.kind, &event.value, event.revision);
    }

    /// The jobs of `queue` that may be claimed now, oldest first: unclaimed, and each
    /// the oldest job of its guest across both queues.
    pub fn eligible(&self, queue: Queue) -> Vec<QueueEntry> {
        self.eligible_up_to(queue, usize::MAX, |_| false)
    }

    /// The first `limit` of [`QueueState::eligible`] whose job `skip` does not name
    /// (a daemon's loop asks for only as many as it can take, leaving out those it holds;
    /// only those are copied out).
    pub fn eligible_up_to(
        &self,
        queue: Queue,
        limit: usize,
        skip: impl Fn(&str) -> bool,
    ) -> Vec<QueueEntry> {
        if limit == 0 {
            return Vec::new();
        }
        let mut first: HashMap<&str, (i64, &str)> = HashMap::new();
        for e in self.entries.values() {
            let place = (e.order, e.job.as_str());
            first
                .entry(e.guest.as_str())
                .and_modify(|f| *f = (*f).min(place))
                .or_insert(place);
        }
        let mut out: Vec<&QueueEntry> = self
            .entries
            .values()
            .filter(|e| e.queue == queue && !self.claims.contains_key(&e.job))
            .filter(|e| first.get(e.guest.as_str()) == Some(&(e.order, e.job.as_str())))
            .filter(|e| !skip(&e.job))
            .collect();
        out.sort_by(|a, b| (a.order, &a.job).cmp(&(b.order, &b.job)));
        out.into_iter().take(limit).cloned().collect()
    }

    /// The entry of job `job`, if it waits in a queue.
    pub fn entry(&self, job: &str) -> Option<&QueueEntry> {
        self.entries.get(job)
    }

    /// Who holds the claim on job `job`.
    pub fn holder(&self, job: &str) -> Option<&str> {
        self.claims.get(job).map(String::as_str)
    }

    /// How many jobs wait in `queue` (claimed or not).
    pub fn depth(&self, queue: Queue) -> usize {
        self.entries.values().filter(|e| e.queue == queue).count()
    }

    /// How many claims exist, and how many of them `name` holds.
    pub fn claims(&self, name: &str) -> (usize, usize) {
        let mine = self.claims.values().filter(|h| *h == name).count();
        (self.claims.len(), mine)
    }
}

/// The job id of a claim key.
fn claim_job(key: &str) -> Option<&str> {
    key.strip_prefix(keys::CLAIMS)
        .filter(|id| !id.is_empty() && !id.contains('/'))
}

/// A [`QueueState`] kept current in the background: one read, then one watch on
/// `lochness/queue/` and one on `lochness/claims/` from the next revision (a watch whose
/// revision was compacted away reads everything again). Placers and workers wait on
/// [`QueueView::changed`] instead of polling. Cheap to clone: each clone has its own
/// notion of the last change it saw.
#[derive(Clone)]
pub struct QueueView {
    shared: Arc<ViewShared>,
    changes: watch::Receiver<u64>,
}

struct ViewShared {
    state: Arc<Mutex<QueueState>>,
    task: JoinHandle<()>,
}

impl Drop for ViewShared {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl std::fmt::Debug for QueueView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueView")
            .field("revision", &self.state().revision())
            .finish()
    }
}

impl QueueView {
    /// Loads the queues and starts following them.
    pub async fn start(ctx: &Context) -> Result<QueueView> {
        let state = Arc::new(Mutex::new(QueueState::load(ctx).await?));
        let (tx, rx) = watch::channel(0u64);
        let task = tokio::spawn(follow(ctx.clone(), state.clone(), tx));
        Ok(QueueView {
            shared: Arc::new(ViewShared { state, task }),
            changes: rx,
        })
    }

    /// A copy of the state now.
    pub fn state(&self) -> QueueState {
        self.shared
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The jobs of `queue` that may be claimed now (see [`QueueState::eligible`]).
    pub fn eligible(&self, queue: Queue) -> Vec<QueueEntry> {
        self.shared
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .eligible(queue)
    }

    /// [`QueueState::eligible_up_to`] on the state now, without copying the rest of it.
    pub fn eligible_up_to(
        &self,
        queue: Queue,
        limit: usize,
        skip: impl Fn(&str) -> bool,
    ) -> Vec<QueueEntry> {
        self.shared
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .eligible_up_to(queue, limit, skip)
    }

    /// How many jobs wait in `queue/create` and in `queue/work` now.
    pub fn depths(&self) -> (usize, usize) {
        let state = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
        (state.depth(Queue::Create), state.depth(Queue::Work))
    }

    /// Waits until the state changed since this handle last returned from `changed` (or
    /// was made). Never resolves once the view is shut down.
    pub async fn changed(&mut self) {
        if self.changes.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Applies the watches' events to `state` and counts changes in `tx`; reads everything
/// again when a watch cannot go on.
async fn follow(ctx: Context, state: Arc<Mutex<QueueState>>, tx: watch::Sender<u64>) {
    let lock = |s: &Arc<Mutex<QueueState>>| s.lock().unwrap_or_else(|p| p.into_inner()).revision();
    loop {
        let after = lock(&state);
        let watches = async {
            Ok::<_, Error>((
                ctx.watch(keys::QUEUE, after).await?,
                ctx.watch(keys::CLAIMS, after).await?,
            ))
        };
        match watches.await {
            // Whole batches (whole revisions) only: a placer's move deletes the entry
            // from `queue/create` and puts it in `queue/work` in one transaction, and a
            // state with the delete applied but not the put would let the guest's next
            // job through ahead of it.
            Ok((mut queue, mut claims)) => loop {
                let batch = tokio::select! {
                    b = queue.next_batch() => b,
                    b = claims.next_batch() => b,
                };
                match batch {
                    Some(Ok(first)) => {
                        let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
                        first.iter().for_each(|e| s.apply_event(e));
                        while let Some(Ok(b)) = queue.try_next_batch() {
                            b.iter().for_each(|e| s.apply_event(e));
                        }
                        while let Some(Ok(b)) = claims.try_next_batch() {
                            b.iter().for_each(|e| s.apply_event(e));
                        }
                        drop(s);
                        tx.send_modify(|n| *n += 1);
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "queue watch ended, reading the queues again");
                        break;
                    }
                    None => break,
                }
            },
            Err(e) => tracing::warn!(error = %e, "cannot watch the queues"),
        }
        loop {
            match QueueState::load(&ctx).await {
                Ok(fresh) => {
                    *state.lock().unwrap_or_else(|p| p.into_inner()) = fresh;
                    tx.send_modify(|n| *n += 1);
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the queues, retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(s: &mut QueueState, key: &str, value: &str, rev: i64) {
        s.apply(key, ChangeKind::Create, value.as_bytes(), rev);
    }

    fn del(s: &mut QueueState, key: &str, rev: i64) {
        s.apply(key, ChangeKind::Delete, b"", rev);
    }

    fn jobs(list: Vec<QueueEntry>) -> Vec<String> {
        list.into_iter().map(|e| e.job).collect()
    }

    #[test]
    fn oldest_job_of_a_guest_goes_first_across_queues() {
        let mut s = QueueState::default();
        put(&mut s, "lochness/queue/create/j1", "g1", 10);
        put(&mut s, "lochness/queue/create/j2", "g2", 11);
        put(&mut s, "lochness/queue/work/j3", "g1", 12); // a start after the create
        put(&mut s, "lochness/queue/work/j4", "g3", 13);
        assert_eq!(jobs(s.eligible(Queue::Create)), ["j1", "j2"]);
        assert_eq!(jobs(s.eligible(Queue::Work)), ["j4"], "j3 waits for j1");

        // The placer moves j1 to the work queue in one transaction: it keeps its place
        // ahead of j3, whichever order the two events come in.
        del(&mut s, "lochness/queue/create/j1", 20);
        put(&mut s, "lochness/queue/work/j1", "g1", 20);
        assert_eq!(s.entry("j1").map(|e| e.order), Some(10));
        assert_eq!(jobs(s.eligible(Queue::Work)), ["j1", "j4"]);
        put(&mut s, "lochness/queue/work/j2", "g2", 21);
        del(&mut s, "lochness/queue/create/j2", 21);
        assert_eq!(
            s.entry("j2").map(|e| (e.order, e.queue)),
            Some((11, Queue::Work))
        );
        assert_eq!(jobs(s.eligible(Queue::Work)), ["j1", "j2", "j4"]);
        assert!(s.eligible(Queue::Create).is_empty());

        // A claim hides the job, and the guest's later jobs still wait.
        put(&mut s, "lochness/claims/j1", "cworkerd@h:1", 22);
        assert_eq!(jobs(s.eligible(Queue::Work)), ["j2", "j4"]);
        assert_eq!(s.holder("j1"), Some("cworkerd@h:1"));
        assert_eq!(s.claims("cworkerd@h:1"), (1, 1));
        // Finished: entry and claim gone, j3 is next for g1.
        del(&mut s, "lochness/queue/work/j1", 23);
        del(&mut s, "lochness/claims/j1", 23);
        assert_eq!(jobs(s.eligible(Queue::Work)), ["j2", "j3", "j4"]);
        assert_eq!((s.depth(Queue::Work), s.depth(Queue::Create)), (3, 0));
        assert_eq!(s.revision(), 23);

        // The first few, leaving out some: the same order as the whole list.
        assert_eq!(
            jobs(s.eligible_up_to(Queue::Work, 2, |_| false)),
            ["j2", "j3"]
        );
        assert_eq!(
            jobs(s.eligible_up_to(Queue::Work, 2, |j| j == "j2")),
            ["j3", "j4"]
        );
        assert!(s.eligible_up_to(Queue::Work, 0, |_| false).is_empty());
        assert_eq!(
            s.eligible_up_to(Queue::Work, usize::MAX, |_| false),
            s.eligible(Queue::Work)
        );
    }

    #[test]
    fn a_removed_entry_does_not_lend_its_place_later() {
        let mut s = QueueState::default();
        put(&mut s, "lochness/queue/create/j1", "g1", 10);
        del(&mut s, "lochness/queue/create/j1", 11);
        // Another entry of the same job id at a later revision is new in line.
        put(&mut s, "lochness/queue/work/j1", "g1", 12);
        assert_eq!(s.entry("j1").map(|e| e.order), Some(12));
        // Keys that are not queue entries or claims change nothing.
        put(&mut s, "lochness/queue/other/j9", "g9", 13);
        put(&mut s, "lochness/claims/", "x", 14);
        put(&mut s, "lochness/jobs/j1", "{}", 15);
        assert_eq!(jobs(s.eligible(Queue::Work)), ["j1"]);
        assert_eq!(s.claims("x"), (0, 0));
    }

    #[test]
    fn names_say_program_host_and_pid() {
        let name = claimer_name("cworkerd");
        let (program, rest) = name.split_once('@').unwrap();
        assert_eq!(program, "cworkerd");
        let (host, pid) = rest.rsplit_once(':').unwrap();
        assert!(!host.is_empty());
        assert_eq!(pid, std::process::id().to_string());
        assert_eq!(ttl_seconds(Duration::from_millis(300)), 1);
        assert_eq!(ttl_seconds(Duration::from_secs(10)), 10);
    }
}
