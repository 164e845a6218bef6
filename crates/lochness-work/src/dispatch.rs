//! The claim loop both daemons run: wait for eligible jobs in the watched queue view,
//! claim the oldest first (up to `--concurrency` at once), work each claimed job in its
//! own task, and stop a task when the lease its claim is bound to is lost. Nothing
//! sleeps on a timer: the loop wakes when the view changes or a task ends (after an etcd
//! error, it also retries after a short pause).

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use lochness::{Claim, Claimer, Error, Queue, QueueView};
use tokio::task::JoinSet;

use crate::metrics::Metrics;

/// What a daemon does with the jobs it claims.
pub trait Handler: Send + Sync + 'static {
    /// The queue it takes jobs from.
    fn queue(&self) -> Queue;

    /// Works on a claimed job until the job is finished, handed on or given back. The
    /// task is dropped when the claim's lease is lost.
    fn work(&self, claim: Claim) -> impl Future<Output = ()> + Send;
}

/// Runs the claim loop for `handler` until `shutdown` resolves; then stops every task and
/// revokes the claimer's lease, so the jobs it held are resumed elsewhere at once.
pub async fn run<H: Handler>(
    mut view: QueueView,
    claimer: Claimer,
    handler: Arc<H>,
    concurrency: usize,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) {
    let queue = handler.queue();
    let mut tasks: JoinSet<String> = JoinSet::new();
    let mut held: HashSet<String> = HashSet::new();
    let mut ids: HashMap<tokio::task::Id, String> = HashMap::new();
    let mut pause = Duration::from_millis(100);
    let mut failed = false;
    tokio::pin!(shutdown);
    loop {
        let (create, work) = view.depths();
        metrics.set_depth(Queue::Create, create);
        metrics.set_depth(Queue::Work, work);
        let had_error = std::mem::take(&mut failed);
        if held.len() < concurrency && claimer.lease().is_some() {
            let room = concurrency - held.len();
            for entry in view.eligible_up_to(queue, room, |job| held.contains(job)) {
                if held.len() >= concurrency {
                    break;
                }
                match claimer.claim(&entry.job, queue).await {
                    Ok(Some(claim)) => {
                        tracing::debug!(job = %entry.job, guest = %entry.guest, "claimed");
                        held.insert(entry.job.clone());
                        let lease = claim.lease();
                        let (handler, claimer) = (handler.clone(), claimer.clone());
                        let job = entry.job.clone();
                        let task = tasks.spawn(async move {
                            tokio::select! {
                                () = handler.work(claim) => {}
                                () = claimer.lost(lease) => {
                                    tracing::warn!(%job, "lease lost: stopped working on the job");
                                }
                            }
                            job
                        });
                        ids.insert(task.id(), entry.job.clone());
                    }
                    // Taken by someone else or gone: the view will say so.
                    Ok(None) => {}
                    Err(Error::ClaimLost(_)) => break,
                    Err(e) => {
                        tracing::warn!(job = %entry.job, error = %e, "cannot claim");
                        failed = true;
                        break;
                    }
                }
            }
        }
        metrics.set_claims(held.len());
        pause = if failed || had_error {
            (pause * 2).min(Duration::from_secs(5))
        } else {
            Duration::from_millis(100)
        };
        tokio::select! {
            () = &mut shutdown => break,
            () = view.changed() => {}
            done = tasks.join_next_with_id(), if !tasks.is_empty() => {
                match done {
                    Some(Ok((id, job))) => {
                        ids.remove(&id);
                        held.remove(&job);
                    }
                    Some(Err(e)) => {
                        tracing::error!(error = %e, "a job task failed");
                        if let Some(job) = ids.remove(&e.id()) {
                            held.remove(&job);
                            if let Err(e) = claimer.give_back(&job).await {
                                tracing::warn!(%job, error = %e, "cannot give the job back");
                            }
                        }
                    }
                    None => {}
                }
            }
            _ = claimer.leased(), if claimer.lease().is_none() => {}
            () = tokio::time::sleep(pause), if failed => {}
        }
    }
    tracing::info!(jobs = held.len(), "stopping: giving the jobs back");
    tasks.shutdown().await;
    if let Err(e) = claimer.stop().await {
        tracing::warn!(error = %e, "cannot revoke the lease (the claims expire with it)");
    }
}
