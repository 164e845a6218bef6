//! What nconfigd does: watch the configured prefixes, feed the [`Scheduler`], start
//! each run it allows and report how it ended, until SIGTERM or Ctrl-C (which waits for
//! a run that is going on).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::http::{header, HeaderValue};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use lochness::{Context, Watcher};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::config::{Selection, TagMap};
use crate::metrics::Metrics;
use crate::run::{Outcome, Runner};
use crate::schedule::{Batch, Scheduler};

/// What the watches report.
#[derive(Debug)]
enum Change {
    /// A key under a watched prefix changed (created, updated or deleted).
    Key(String),
    /// A watch's history was compacted away: changes may have been missed.
    Lost,
}

/// Starts watching `prefix` from now, retrying until etcd answers.
async fn watch_from_now(ctx: &Context, prefix: &str) -> Watcher {
    loop {
        match ctx.watch(prefix, 0).await {
            Ok(w) => return w,
            Err(e) => {
                tracing::warn!(%prefix, error = %e, "cannot start the watch, retrying");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
    }
}

/// Follows `prefix` for good, from `first` (started before the start-up run): each
/// change is sent on; a watch that ends (its revision compacted away) reports
/// [`Change::Lost`] and starts again from now. The library's watch itself resumes after
/// the last delivered revision when the connection breaks.
async fn follow(ctx: Context, prefix: String, first: Watcher, tx: mpsc::Sender<Change>) {
    let mut next = Some(first);
    loop {
        let mut watcher = match next.take() {
            Some(w) => w,
            None => watch_from_now(&ctx, &prefix).await,
        };
        loop {
            match watcher.next().await {
                Some(Ok(event)) => {
                    tracing::debug!(key = %event.key, kind = ?event.kind, "change");
                    if tx.send(Change::Key(event.key)).await.is_err() {
                        return;
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!(%prefix, error = %e, "watch lost its history: a full run follows");
                    break;
                }
                None => break,
            }
        }
        if tx.send(Change::Lost).await.is_err() {
            return;
        }
    }
}

/// The watches of every prefix `tags` needs (none for an empty map).
async fn start_watches(ctx: &Context, tags: &TagMap) -> (mpsc::Receiver<Change>, Watches) {
    let (tx, rx) = mpsc::channel(4096);
    let mut tasks = Vec::new();
    for prefix in tags.watch_prefixes() {
        // The watch's start revision is fixed here, before the start-up run: a change
        // made once that run has started is never missed.
        let first = watch_from_now(ctx, &prefix).await;
        tracing::info!(%prefix, "watching");
        tasks.push(tokio::spawn(follow(ctx.clone(), prefix, first, tx.clone())));
    }
    (rx, Watches { tasks, _tx: tx })
}

/// The running watches; dropping them stops them.
#[derive(Debug)]
struct Watches {
    tasks: Vec<JoinHandle<()>>,
    /// Keeps the channel open when nothing is watched.
    _tx: mpsc::Sender<Change>,
}

impl Drop for Watches {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// What a batch runs.
fn selection(tags: &TagMap, batch: &Batch) -> Selection {
    if batch.full {
        Selection::Full
    } else {
        tags.select(&batch.keys)
    }
}

/// Waits for the run in `child`, forever when there is none.
async fn wait_run(child: &mut Option<JoinHandle<Outcome>>) -> Outcome {
    match child {
        Some(handle) => match handle.await {
            Ok(outcome) => outcome,
            Err(e) => Outcome::NotStarted(std::io::Error::other(e.to_string())),
        },
        None => std::future::pending().await,
    }
}

fn report(metrics: &Metrics, outcome: &Outcome, started: Instant) {
    let took_ms = started.elapsed().as_millis() as u64;
    match outcome {
        Outcome::Succeeded => {
            tracing::info!(took_ms, "run succeeded");
            metrics.ended("ok", Some(0));
        }
        Outcome::Failed(_) => {
            tracing::error!(status = %outcome, took_ms, "run failed: its keys are retried with the next change");
            metrics.ended("failed", outcome.code());
        }
        Outcome::NotStarted(_) => {
            tracing::error!(status = %outcome, "run not started: its keys are retried with the next change");
            metrics.ended("not_started", None);
        }
    }
}

/// Runs the loop until `shutdown` resolves, then waits for a run that is going on.
pub async fn serve(
    ctx: Context,
    tags: TagMap,
    runner: Runner,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) {
    // The watches start before the first run, so nothing changed during it is missed.
    let (mut changes, _watches) = start_watches(&ctx, &tags).await;
    let mut sched = Scheduler::new(Instant::now());
    let mut child: Option<JoinHandle<Outcome>> = None;
    let mut started = Instant::now();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        if child.is_none() {
            if let Some(batch) = sched.start(Instant::now()) {
                let sel = selection(&tags, &batch);
                let tag_list: Vec<&str> = match &sel {
                    Selection::Full => Vec::new(),
                    Selection::Tags(t) => t.iter().map(String::as_str).collect(),
                };
                tracing::info!(program = %runner.program().display(), full = sel == Selection::Full, tags = ?tag_list, keys = batch.keys.len(), "run started");
                metrics.started();
                metrics.waiting(sched.waiting());
                started = Instant::now();
                let runner = runner.clone();
                child = Some(tokio::spawn(async move { runner.run(&sel).await }));
            }
        }
        let due = sched.due();
        tokio::select! {
            change = changes.recv() => {
                let now = Instant::now();
                match change {
                    Some(Change::Key(key)) => sched.changed(key, now),
                    Some(Change::Lost) => {
                        metrics.watch_restarted();
                        sched.lost(now);
                    }
                    None => {}
                }
                metrics.waiting(sched.waiting());
            }
            _ = tokio::time::sleep_until(due.unwrap_or_else(Instant::now).into()), if due.is_some() => {}
            outcome = wait_run(&mut child) => {
                child = None;
                report(&metrics, &outcome, started);
                sched.finished(outcome.ok());
                metrics.waiting(sched.waiting());
            }
            () = &mut shutdown => {
                if child.is_some() {
                    tracing::info!("stopping: waiting for the run that is going on");
                    let outcome = wait_run(&mut child).await;
                    report(&metrics, &outcome, started);
                }
                tracing::info!("nconfigd stopped");
                return;
            }
        }
    }
}

/// Serves `/metrics` and `/healthz` on `addr` until `shutdown`; the bound address.
pub async fn metrics_listener(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(SocketAddr, JoinHandle<()>), String> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let bound = listener.local_addr().unwrap_or(addr);
    let routes = Router::new()
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move {
                    (
                        [(
                            header::CONTENT_TYPE,
                            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                        )],
                        metrics.encode(),
                    )
                        .into_response()
                }
            }),
        )
        .merge(mistify_http::healthz_route(
            "nconfigd",
            env!("CARGO_PKG_VERSION"),
        ));
    let app = mistify_http::with_common_layers(routes);
    let task = tokio::spawn(async move {
        if let Err(e) =
            mistify_http::serve(listener, app, mistify_http::Limits::default(), shutdown).await
        {
            tracing::error!(error = %e, "the metrics listener failed");
        }
    });
    Ok((bound, task))
}
