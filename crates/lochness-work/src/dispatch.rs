//! The claim loop both daemons run: wait for eligible jobs in the watched queue view,
//! claim among the oldest (up to `--concurrency` at once; the jobs taken at one wake-up
//! in one transaction), work each claimed job in its own task, and stop a task when the
//! lease its claim is bound to is lost. Nothing
//! sleeps on a timer: the loop wakes when the view changes or a task ends (after an etcd
//! error, it also retries after a short pause).

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::time::Duration;

use lochness::{Claim, Claimer, Error, Queue, QueueView};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::metrics::Metrics;

/// What a daemon does with the jobs it claims.
pub trait Handler: Send + Sync + 'static {
    /// The queue it takes jobs from.
    fn queue(&self) -> Queue;

    /// Works on a claimed job until the job is finished, handed on or given back. The
    /// task is dropped when the claim's lease is lost.
    fn work(&self, claim: Claim) -> impl Future<Output = ()> + Send;
}

/// How many times the room the loop draws its jobs from: each process takes its jobs
/// in its own (random) order among the `SPREAD × room` oldest eligible ones, so that
/// several processes do not all race for the oldest.
const SPREAD: usize = 4;

/// Runs the claim loop for `handler` until `shutdown` resolves; then stops every task and
/// revokes the claimer's lease, so the jobs it held are resumed elsewhere at once. The
/// jobs taken at one wake-up are claimed in one transaction ([`Claimer::claim_many`]).
pub async fn run<H: Handler>(
    mut view: QueueView,
    claimer: Claimer,
    handler: Arc<H>,
    concurrency: usize,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) {
    let queue = handler.queue();
    let order = RandomState::new();
    let mut tasks: JoinSet<String> = JoinSet::new();
    let mut held: HashSet<String> = HashSet::new();
    // Jobs this process could not claim, passed over until the view changes.
    let mut missed: HashSet<String> = HashSet::new();
    let mut ids: HashMap<tokio::task::Id, String> = HashMap::new();
    let mut pause = Duration::from_millis(100);
    let mut resume_at: Option<Instant> = None;
    tokio::pin!(shutdown);
    loop {
        let (create, work) = view.depths();
        metrics.set_depth(Queue::Create, create);
        metrics.set_depth(Queue::Work, work);
        if resume_at.is_some_and(|t| t <= Instant::now()) {
            resume_at = None;
        }
        if held.len() < concurrency && claimer.lease().is_some() && resume_at.is_none() {
            let room = concurrency - held.len();
            let mut entries = view.eligible_up_to(queue, room * SPREAD, |job| {
                held.contains(job) || missed.contains(job)
            });
            entries.sort_by_key(|e| order.hash_one(&e.job));
            let jobs: Vec<String> = entries.into_iter().take(room).map(|e| e.job).collect();
            match claimer.claim_many(&jobs, queue).await {
                Ok(claims) => {
                    pause = Duration::from_millis(100);
                    for (job, claim) in jobs.into_iter().zip(claims) {
                        let Some(claim) = claim else {
                            // Taken by someone else or gone: the view will say so.
                            missed.insert(job);
                            continue;
                        };
                        tracing::debug!(%job, guest = %claim.guest(), "claimed");
                        held.insert(job.clone());
                        let lease = claim.lease();
                        let (handler, claimer) = (handler.clone(), claimer.clone());
                        let name = job.clone();
                        let task = tasks.spawn(async move {
                            tokio::select! {
                                () = handler.work(claim) => {}
                                () = claimer.lost(lease) => {
                                    tracing::warn!(job = %name, "lease lost: stopped working on the job");
                                }
                            }
                            name
                        });
                        ids.insert(task.id(), job);
                    }
                }
                Err(Error::ClaimLost(_)) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "cannot claim");
                    resume_at = Some(Instant::now() + pause);
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
            }
        }
        metrics.set_claims(held.len());
        tokio::select! {
            () = &mut shutdown => break,
            () = view.changed() => missed.clear(),
            done = tasks.join_next_with_id(), if !tasks.is_empty() => {
                // Every task that has ended by now, so that their slots are claimed for
                // together (a placement transaction ends several at once).
                let mut next = done;
                while let Some(ended) = next {
                    match ended {
                        Ok((id, job)) => {
                            ids.remove(&id);
                            held.remove(&job);
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "a job task failed");
                            if let Some(job) = ids.remove(&e.id()) {
                                held.remove(&job);
                                if let Err(e) = claimer.give_back(&job).await {
                                    tracing::warn!(%job, error = %e, "cannot give the job back");
                                }
                            }
                        }
                    }
                    next = tasks.try_join_next_with_id();
                }
            }
            _ = claimer.leased(), if claimer.lease().is_none() => {}
            () = sleep_until(resume_at), if resume_at.is_some() => {}
        }
    }
    tracing::info!(jobs = held.len(), "stopping: giving the jobs back");
    tasks.shutdown().await;
    if let Err(e) = claimer.stop().await {
        tracing::warn!(error = %e, "cannot revoke the lease (the claims expire with it)");
    }
}

async fn sleep_until(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at).await;
    }
}
