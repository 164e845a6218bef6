//! `cplacerd`'s work: a claimed `select-hypervisor` job is placed with the default
//! candidate functions over the watched [`ClusterView`](lochness::ClusterView), in one
//! transaction with the hand-over (the job becomes `fetch`/`new`, moves to the workers'
//! queue, the claim goes). When no hypervisor will do, the job fails with the
//! original's text, `unable to select candidate <guest> - <reason>`, its entry and
//! claim removed in the same transaction and the guest unchanged.

use std::sync::Arc;
use std::time::Instant;

use lochness::{
    keys, Claim, ClusterView, Context, Error, Guest, Hypervisor, JobAction, JobStatus, Queue,
    Transition, DEFAULT_CANDIDATE_FUNCTIONS,
};

use crate::cluster::ClusterWatch;
use crate::dispatch::Handler;
use crate::metrics::{Metrics, Outcome};

/// Why a guest cannot be placed, with the original placer's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoPlace {
    /// The cluster has no hypervisor at all.
    NoHypervisors,
    /// A candidate filter left none (dead, no subnet with a free address, no resources).
    NoSuitableHypervisors,
    /// The guest's flavor does not exist (the original's load error).
    UnknownFlavor,
    /// The guest's network does not exist (the original's load error).
    UnknownNetwork,
}

impl NoPlace {
    /// The reason as the original said it.
    pub fn text(self) -> &'static str {
        match self {
            NoPlace::NoHypervisors => "no hypervisors",
            NoPlace::NoSuitableHypervisors => "no suitable hypervisors",
            NoPlace::UnknownFlavor => "key not found",
            NoPlace::UnknownNetwork => "metadata key is missing",
        }
    }

    /// The job's error: `unable to select candidate <guest> - <reason>`.
    pub fn reason(self, guest: &str) -> String {
        format!("unable to select candidate {guest} - {}", self.text())
    }

    /// What a candidate selection error means for `guest` (`None`: not a reason to give
    /// up on the guest, e.g. etcd failed).
    pub fn of(e: &Error, guest: &Guest) -> Option<NoPlace> {
        match e {
            Error::NoHypervisors => Some(NoPlace::NoHypervisors),
            Error::NoSuitableHypervisors => Some(NoPlace::NoSuitableHypervisors),
            Error::NotFound(k) if *k == keys::flavor_metadata(&guest.flavor) => {
                Some(NoPlace::UnknownFlavor)
            }
            Error::NotFound(k) if *k == keys::network_metadata(&guest.network) => {
                Some(NoPlace::UnknownNetwork)
            }
            _ => None,
        }
    }
}

/// What became of a claimed job.
#[derive(Debug)]
enum Placement {
    /// Placed and handed to the workers.
    Placed { hypervisor: String },
    /// Failed for good, with the job's error.
    Refused(String),
    /// The claim no longer holds: another process has the job.
    Lost(Error),
    /// etcd failed: the job is given back to be tried again.
    Retry(Error),
}

/// The placer.
#[derive(Debug)]
pub struct Placer {
    ctx: Context,
    cluster: ClusterWatch,
    metrics: Arc<Metrics>,
}

impl Placer {
    /// A placer over `ctx` with its watched cluster view.
    pub async fn start(ctx: &Context, metrics: Arc<Metrics>) -> lochness::Result<Placer> {
        Ok(Placer {
            ctx: ctx.clone(),
            cluster: ClusterWatch::start(ctx).await?,
            metrics,
        })
    }

    /// The ids of the candidates for `guest` in `view`, in the order to try them (the
    /// hypervisors themselves are cloned out of the view only when tried: with a
    /// thousand candidates, cloning them all cost more than the placement).
    fn candidates(view: &ClusterView, guest: &Guest) -> Result<Vec<String>, Error> {
        Ok(guest
            .candidates_in(view, &DEFAULT_CANDIDATE_FUNCTIONS)?
            .into_iter()
            .map(|h| h.id.clone())
            .collect())
    }

    /// Tries the candidates in order, each as `lookup` has it now (one that left the
    /// view meanwhile is passed over); `Ok(None)` when none took the guest.
    async fn try_candidates(
        &self,
        claim: &Claim,
        guest: &mut Guest,
        candidates: Vec<String>,
        lookup: impl Fn(&str) -> Option<Hypervisor>,
    ) -> Result<Option<String>, Placement> {
        for id in candidates {
            let Some(mut host) = lookup(&id) else {
                continue;
            };
            let (guard, _) = claim
                .hand_over()
                .map_err(|e| Placement::Refused(e.to_string()))?;
            match host.add_guest_with(guest, &guard).await {
                Ok(()) => {
                    self.cluster
                        .update(|view| view.absorb_placement(&host, &guest.id));
                    return Ok(Some(host.id.clone()));
                }
                Err(e @ Error::ClaimLost(_)) => return Err(Placement::Lost(e)),
                // Someone changed the guest since it was read: read it again and go on.
                Err(Error::Conflict(_)) => match self.ctx.guest(&guest.id).await {
                    Ok(fresh) if fresh.hypervisor.is_empty() => *guest = fresh,
                    Ok(fresh) => {
                        return Err(Placement::Refused(format!(
                            "guest already has a hypervisor {} - {}",
                            fresh.id, fresh.hypervisor
                        )))
                    }
                    Err(e) => return Err(Placement::Retry(e)),
                },
                Err(e @ Error::Etcd(_)) => return Err(Placement::Retry(e)),
                // This one cannot take it after all (full, gone, lost races): the next.
                Err(e) => {
                    tracing::debug!(guest = %guest.id, hypervisor = %host.id, error = %e, "candidate refused the guest");
                }
            }
        }
        Ok(None)
    }

    async fn place(&self, claim: &Claim) -> Placement {
        let job = claim.job();
        if job.action != JobAction::SelectHypervisor {
            return Placement::Refused(format!("bad action: {}", job.action));
        }
        if job.status != JobStatus::New {
            return Placement::Refused(format!("bad job status: {}", job.status));
        }
        let mut guest = match self.ctx.guest(&job.guest).await {
            Ok(g) => g,
            Err(Error::NotFound(_)) => {
                return Placement::Refused(format!(
                    "unable to select candidate {} - guest does not exist",
                    job.guest
                ))
            }
            Err(e) => return Placement::Retry(e),
        };
        if !guest.hypervisor.is_empty() {
            return Placement::Refused(format!(
                "guest already has a hypervisor {} - {}",
                guest.id, guest.hypervisor
            ));
        }
        // First the watched view; when it finds no place, a fresh read (the view may lag
        // behind a heartbeat, a new subnet or a freed address) decides.
        let mut why = NoPlace::NoSuitableHypervisors;
        for fresh in [false, true] {
            let tried = if fresh {
                tracing::debug!(guest = %guest.id, "no place in the watched view: reading the cluster");
                let view = match ClusterView::load(&self.ctx).await {
                    Ok(view) => view,
                    Err(e) => return Placement::Retry(e),
                };
                match Self::candidates(&view, &guest) {
                    Ok(list) => Ok(self
                        .try_candidates(claim, &mut guest, list, |id| {
                            view.hypervisors.get(id).cloned()
                        })
                        .await),
                    Err(e) => Err(e),
                }
            } else {
                match self.cluster.with(|view| Self::candidates(view, &guest)) {
                    Ok(list) => Ok(self
                        .try_candidates(claim, &mut guest, list, |id| {
                            self.cluster.with(|view| view.hypervisors.get(id).cloned())
                        })
                        .await),
                    Err(e) => Err(e),
                }
            };
            match tried {
                Ok(Ok(Some(hypervisor))) => return Placement::Placed { hypervisor },
                Ok(Ok(None)) => why = NoPlace::NoSuitableHypervisors,
                Ok(Err(p)) => return p,
                Err(e) => match NoPlace::of(&e, &guest) {
                    Some(reason) => why = reason,
                    None => return Placement::Retry(e),
                },
            }
        }
        Placement::Refused(why.reason(&guest.id))
    }
}

impl Handler for Placer {
    fn queue(&self) -> Queue {
        Queue::Create
    }

    async fn work(&self, claim: Claim) {
        let started = Instant::now();
        let (id, action) = (claim.job().id.clone(), claim.job().action);
        let outcome = match self.place(&claim).await {
            Placement::Placed { hypervisor } => {
                tracing::info!(job = %id, guest = %claim.guest(), %hypervisor, "placed");
                Outcome::Placed
            }
            Placement::Refused(reason) => {
                let step = if action == JobAction::SelectHypervisor {
                    Transition::Unplaceable {
                        reason: reason.clone(),
                    }
                } else {
                    Transition::Failed {
                        reason: reason.clone(),
                    }
                };
                match claim.finish(step).await {
                    Ok(_) => {
                        tracing::info!(job = %id, %reason, "cannot place");
                        Outcome::Unplaceable
                    }
                    Err(e) => {
                        tracing::warn!(job = %id, error = %e, "cannot record the failed placement");
                        Outcome::GivenBack
                    }
                }
            }
            Placement::Lost(e) => {
                tracing::warn!(job = %id, error = %e, "claim lost while placing");
                Outcome::GivenBack
            }
            Placement::Retry(e) => {
                tracing::warn!(job = %id, error = %e, "placement failed, giving the job back");
                if let Err(e) = claim.release().await {
                    tracing::warn!(job = %id, error = %e, "cannot give the job back");
                }
                Outcome::GivenBack
            }
        };
        self.metrics.record(action, outcome, started.elapsed());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_the_originals() {
        assert_eq!(
            NoPlace::NoSuitableHypervisors.reason("g"),
            "unable to select candidate g - no suitable hypervisors"
        );
        assert_eq!(NoPlace::NoHypervisors.text(), "no hypervisors");
        assert_eq!(NoPlace::UnknownFlavor.text(), "key not found");
        assert_eq!(NoPlace::UnknownNetwork.text(), "metadata key is missing");
    }
}
