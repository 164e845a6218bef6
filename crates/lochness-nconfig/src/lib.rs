//! `nconfigd`: runs the operator's configuration command on a hypervisor when keys it
//! watches in etcd change (docs/bootstrap.md).
//!
//! At start it runs `<ansible dir>/run --kv <address>` once (a full run). Then it
//! watches the prefixes of its configuration file (`{"<prefix>": ["tag", …]}`), collects
//! changed keys into batches (closed after 100 ms without a change or 1 s after the
//! first), and runs `run --kv <address> -t <tag> …` with the sorted union of the tags
//! the keys select — or a full run when any key selects none ([`config::TagMap`]). One
//! run at a time ([`schedule`]); a failed run is logged with its exit status, counted,
//! and its keys join the next batch; nconfigd never exits because a run failed.

pub mod config;
pub mod daemon;
pub mod metrics;
pub mod run;
pub mod schedule;

use std::net::SocketAddr;
use std::sync::Arc;

pub use config::{resolve_kv, Args, Selection, TagMap};
pub use run::{Outcome, Runner};
pub use schedule::{Batch, Scheduler};

/// Runs nconfigd with `args`; the exit status (2: bad flags or configuration, 1: cannot
/// start; with `--once`, 0 when the run succeeded and 1 when it failed).
pub async fn run(args: Args) -> i32 {
    const NAME: &str = "nconfigd";
    if let Err(e) = mistify_http::init_tracing(
        mistify_http::runtime::go_level(&args.log_level),
        args.log_format,
    ) {
        eprintln!("{NAME}: {e}");
        return 2;
    }
    let kv = resolve_kv(args.kv.as_deref(), |name| std::env::var(name).ok());
    let tags = match TagMap::load(args.config.as_deref()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{NAME}: {e}");
            return 2;
        }
    };
    let runner = Runner {
        dir: args.ansible.clone(),
        kv: kv.clone(),
    };
    if args.once {
        let outcome = runner.run(&Selection::Full).await;
        if outcome.ok() {
            return 0;
        }
        eprintln!("{NAME}: run failed: {outcome}");
        return 1;
    }
    let endpoints = match lochness::kv_endpoints(&kv) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("{NAME}: {e}");
            return 2;
        }
    };
    let ctx = match lochness::Context::new(&endpoints, None).await {
        Ok(ctx) => ctx,
        Err(e) => {
            eprintln!(
                "{NAME}: cannot connect to etcd at {}: {e}",
                endpoints.join(",")
            );
            return 1;
        }
    };
    let metrics = Arc::new(metrics::Metrics::new());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let listener = match args.metrics_port {
        None => None,
        Some(port) => {
            let mut rx = stop_rx.clone();
            let stopped = async move {
                let _ = rx.wait_for(|s| *s).await;
            };
            match daemon::metrics_listener(
                SocketAddr::new(args.bind, port),
                metrics.clone(),
                stopped,
            )
            .await
            {
                Ok((bound, task)) => {
                    tracing::info!(%bound, "metrics and health listening");
                    Some(task)
                }
                Err(e) => {
                    eprintln!("{NAME}: {e}");
                    return 1;
                }
            }
        }
    };
    tracing::info!(etcd = %kv, dir = %args.ansible.display(), prefixes = tags.watch_prefixes().len(), "{NAME} started");
    daemon::serve(ctx, tags, runner, metrics, mistify_http::shutdown_signal()).await;
    let _ = stop_tx.send(true);
    if let Some(task) = listener {
        let _ = task.await;
    }
    0
}
