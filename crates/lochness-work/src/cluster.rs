//! The placer's picture of the cluster: a [`ClusterView`] read once and kept current by
//! watches on the hypervisors, networks, subnets and flavors from the next revision (a
//! watch whose revision was compacted away reads everything again).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use lochness::{keys, ChangeKind, ClusterView, Context, Result, WatchEvent};
use tokio::task::JoinHandle;

/// The prefixes a [`ClusterView`] is built from.
const PREFIXES: [&str; 4] = [
    keys::HYPERVISORS,
    keys::NETWORKS,
    keys::SUBNETS,
    keys::FLAVORS,
];

/// A [`ClusterView`] kept current in the background.
pub struct ClusterWatch {
    view: Arc<Mutex<ClusterView>>,
    task: JoinHandle<()>,
}

impl Drop for ClusterWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl std::fmt::Debug for ClusterWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterWatch").finish_non_exhaustive()
    }
}

fn apply(ctx: &Context, view: &mut ClusterView, e: &WatchEvent) {
    let value = (e.kind != ChangeKind::Delete).then_some(e.value.as_slice());
    view.apply(ctx, &e.key, value, e.revision);
}

impl ClusterWatch {
    /// Loads the view and starts following it.
    pub async fn start(ctx: &Context) -> Result<ClusterWatch> {
        let view = Arc::new(Mutex::new(ClusterView::load(ctx).await?));
        let task = tokio::spawn(follow(ctx.clone(), view.clone()));
        Ok(ClusterWatch { view, task })
    }

    /// Runs `f` on the view as it is now (under its lock: keep it short).
    pub fn with<T>(&self, f: impl FnOnce(&ClusterView) -> T) -> T {
        f(&self.view.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Runs `f` on the view to change it (under its lock: keep it short).
    pub fn update<T>(&self, f: impl FnOnce(&mut ClusterView) -> T) -> T {
        f(&mut self.view.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

async fn follow(ctx: Context, view: Arc<Mutex<ClusterView>>) {
    loop {
        let after = view.lock().unwrap_or_else(|p| p.into_inner()).revision;
        let mut watches = Vec::new();
        for prefix in PREFIXES {
            match ctx.watch(prefix, after).await {
                Ok(w) => watches.push(w),
                Err(e) => {
                    tracing::warn!(%prefix, error = %e, "cannot watch the cluster");
                    break;
                }
            }
        }
        if watches.len() == PREFIXES.len() {
            loop {
                let next = {
                    let pending = watches.iter_mut().map(|w| Box::pin(w.next()));
                    futures::future::select_all(pending).await.0
                };
                match next {
                    Some(Ok(e)) => {
                        let mut v = view.lock().unwrap_or_else(|p| p.into_inner());
                        apply(&ctx, &mut v, &e);
                        for w in &mut watches {
                            while let Some(Ok(e)) = w.try_next() {
                                apply(&ctx, &mut v, &e);
                            }
                        }
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "cluster watch ended, reading the cluster again");
                        break;
                    }
                    None => break,
                }
            }
        }
        drop(watches);
        loop {
            match ClusterView::load(&ctx).await {
                Ok(fresh) => {
                    *view.lock().unwrap_or_else(|p| p.into_inner()) = fresh;
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the cluster, retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
}
