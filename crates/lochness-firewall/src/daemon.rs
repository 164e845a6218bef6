//! What nfirewalld runs: load the view of this hypervisor, render and apply, then on
//! every change (gathered for `--debounce`) render and apply again, until SIGTERM.
//!
//! A watch that cannot resume (its revision was compacted) or an etcd failure while
//! loading starts over with a full read. A ruleset nft refuses is logged and counted;
//! the previous one stays in force and the next change is tried again.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use lochness::{Context, Watcher};

use crate::apply::{Applied, Applier};
use crate::cli::Args;
use crate::metrics::Metrics;
use crate::render::{render, valid_table_name};
use crate::view::{prefixes, View};

/// Why the daemon stopped or could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// A flag is wrong.
    #[error("{0}")]
    Usage(String),
    /// etcd could not be reached or answered an error.
    #[error("etcd: {0}")]
    Etcd(#[source] lochness::Error),
    /// The HTTP listener could not start.
    #[error("{0}")]
    Listen(String),
    /// The rules would not see bridged traffic.
    #[error("{0}")]
    Unbridged(String),
}

/// The daemon's settings after the flags were checked.
#[derive(Debug, Clone)]
pub struct Settings {
    /// This hypervisor.
    pub hypervisor: String,
    /// Our table.
    pub table: String,
    /// Burst gathering.
    pub debounce: Duration,
}

fn now_seconds() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Renders the view and applies it; logs what was left out. True when the ruleset in
/// force is the view's.
pub async fn render_and_apply(
    view: &View,
    settings: &Settings,
    applier: &mut Applier,
    metrics: &Metrics,
) -> bool {
    let (snap, mut notes) = view.snapshot();
    let rendered = render(&settings.table, &snap);
    metrics.renders.inc();
    let skipped = rendered.skipped;
    notes.extend(rendered.notes);
    for s in &skipped {
        tracing::warn!(group = %s.group, rule = s.rule, reason = %s.reason, "firewall rule skipped: {s}");
    }
    for n in &notes {
        tracing::warn!("{n}");
    }
    metrics
        .skipped_rules
        .set(i64::try_from(skipped.len()).unwrap_or(i64::MAX));
    match applier.bridge_filtering().await {
        Ok(true) => {
            metrics.bridge_filtering.set(1);
        }
        Ok(false) => {
            metrics.bridge_filtering.set(0);
            tracing::error!("net.bridge.bridge-nf-call-iptables is not 1 where the rules apply: bridged guest traffic bypasses the firewall");
        }
        Err(e) => {
            metrics.bridge_filtering.set(0);
            tracing::error!(error = %e, "cannot read net.bridge.bridge-nf-call-iptables (is br_netfilter loaded?): bridged guest traffic bypasses the firewall");
        }
    }
    match applier.apply(&rendered.text).await {
        Ok(Applied::Unchanged) => {
            tracing::debug!("ruleset unchanged");
            true
        }
        Ok(Applied::Loaded) => {
            metrics.applies.inc();
            metrics.last_success.set(now_seconds());
            metrics
                .guests
                .set(i64::try_from(snap.guests.len()).unwrap_or(i64::MAX));
            metrics.set_healthy();
            tracing::info!(
                file = %applier.file().display(),
                guests = snap.guests.len(),
                skipped = skipped.len(),
                "ruleset loaded"
            );
            true
        }
        Err(e) => {
            metrics.apply_errors.inc();
            tracing::error!(error = %e, "ruleset not applied: the previous ruleset stays in force; retried on the next change");
            false
        }
    }
}

/// The watches of the view's prefixes.
async fn watches(ctx: &Context, hypervisor: &str) -> lochness::Result<Vec<Watcher>> {
    let mut out = Vec::new();
    for prefix in prefixes(hypervisor) {
        out.push(ctx.watch(&prefix, 0).await?);
    }
    Ok(out)
}

/// The next event of any of `ws`.
async fn next_event(ws: &mut [Watcher]) -> Option<lochness::Result<lochness::WatchEvent>> {
    let [a, b, c] = ws else {
        return None;
    };
    tokio::select! {
        e = a.next() => e,
        e = b.next() => e,
        e = c.next() => e,
    }
}

/// Runs until `shutdown`: (re)loads the view, applies, follows the watches.
pub async fn run(
    ctx: Context,
    settings: Settings,
    mut applier: Applier,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    'reload: loop {
        // Watch first, then read: a change after the read's revision is an event.
        let setup = async {
            let ws = watches(&ctx, &settings.hypervisor).await?;
            let view = View::load(&ctx, &settings.hypervisor).await?;
            Ok::<_, lochness::Error>((ws, view))
        };
        let (mut ws, mut view) = tokio::select! {
            r = setup => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the store, retrying");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(1)) => continue 'reload,
                        () = &mut shutdown => return,
                    }
                }
            },
            () = &mut shutdown => return,
        };
        render_and_apply(&view, &settings, &mut applier, &metrics).await;
        loop {
            let first = tokio::select! {
                e = next_event(&mut ws) => e,
                () = &mut shutdown => return,
            };
            let mut changed = false;
            match first {
                Some(Ok(ev)) => changed |= view.apply(&ev),
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "watch lost, reading everything again");
                    continue 'reload;
                }
                None => continue 'reload,
            }
            // Gather the burst.
            let deadline = tokio::time::Instant::now() + settings.debounce;
            loop {
                let e = tokio::select! {
                    e = next_event(&mut ws) => e,
                    () = tokio::time::sleep_until(deadline) => break,
                };
                match e {
                    Some(Ok(ev)) => changed |= view.apply(&ev),
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "watch lost, reading everything again");
                        continue 'reload;
                    }
                    None => continue 'reload,
                }
            }
            if changed {
                render_and_apply(&view, &settings, &mut applier, &metrics).await;
            }
        }
    }
}

/// `/metrics` (Prometheus text) and `/healthz` (503 until a ruleset is in force).
fn router(metrics: Arc<Metrics>) -> Router {
    let m = metrics.clone();
    let check: mistify_http::HealthCheck = Arc::new(move || {
        let ok = m.is_healthy();
        Box::pin(async move {
            if ok {
                Ok(())
            } else {
                Err("no ruleset loaded yet".to_string())
            }
        })
    });
    let metrics_route = Router::new().route(
        "/metrics",
        get(move || {
            let metrics = metrics.clone();
            async move {
                (
                    [(
                        header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    metrics.encode(),
                )
                    .into_response()
            }
        }),
    );
    mistify_http::with_common_layers(metrics_route.merge(mistify_http::healthz_route_checked(
        "nfirewalld",
        env!("CARGO_PKG_VERSION"),
        check,
    )))
}

/// `nfirewalld`: checks the flags, connects, serves metrics, runs until SIGTERM.
pub async fn main(args: Args) -> Result<(), DaemonError> {
    mistify_http::init_tracing(&args.log_level, args.log_format).map_err(DaemonError::Usage)?;
    if !valid_table_name(&args.table) {
        return Err(DaemonError::Usage(format!(
            "--table {:?}: a table name is letters, digits and _, starting with a letter",
            args.table
        )));
    }
    let hypervisor = lochness::set_hypervisor_id(&args.id)
        .map_err(|e| DaemonError::Usage(format!("hypervisor id: {e}")))?;
    let endpoints =
        lochness::kv_endpoints(&args.etcd).map_err(|e| DaemonError::Usage(e.to_string()))?;
    let prefix = (!args.prefix.is_empty()).then_some(args.prefix.as_str());
    let ctx = Context::new(&endpoints, prefix)
        .await
        .map_err(DaemonError::Etcd)?;
    ctx.hypervisor(&hypervisor)
        .await
        .map_err(DaemonError::Etcd)?;
    let applier = Applier::new(&args.file, args.netns.clone(), &args.nft);
    let stale = applier.remove_stale_temps();
    if stale > 0 {
        tracing::info!(
            removed = stale,
            "removed temporary rules files of an earlier run"
        );
    }
    match applier.bridge_filtering().await {
        Ok(true) => {}
        other if args.allow_unbridged => {
            tracing::error!(state = ?other, "net.bridge.bridge-nf-call-iptables is not 1: bridged guest traffic bypasses the firewall (--allow-unbridged)");
        }
        Ok(false) => {
            return Err(DaemonError::Unbridged(
                "net.bridge.bridge-nf-call-iptables is 0 where the rules apply: bridged guest traffic would bypass the firewall; set it to 1 (sysctl -w net.bridge.bridge-nf-call-iptables=1), or pass --allow-unbridged for guests that are not bridged".into(),
            ))
        }
        Err(e) => {
            return Err(DaemonError::Unbridged(format!(
                "{e}: br_netfilter is not loaded (modprobe br_netfilter), so bridged guest traffic would bypass the firewall; or pass --allow-unbridged for guests that are not bridged"
            )))
        }
    }
    let metrics = Arc::new(Metrics::new());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let listener = if args.http == 0 {
        None
    } else {
        let addr = SocketAddr::new(args.bind, args.http);
        let tcp = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| DaemonError::Listen(format!("cannot listen on {addr}: {e}")))?;
        let app = router(metrics.clone());
        let mut rx = stop_rx.clone();
        tracing::info!(%addr, "metrics and health listening");
        Some(tokio::spawn(async move {
            let stopped = async move {
                let _ = rx.wait_for(|s| *s).await;
            };
            if let Err(e) =
                mistify_http::serve(tcp, app, mistify_http::Limits::default(), stopped).await
            {
                tracing::error!(error = %e, "the metrics listener failed");
            }
        }))
    };
    tracing::info!(
        %hypervisor,
        table = %args.table,
        file = %applier.file().display(),
        netns = args.netns.as_deref().unwrap_or("-"),
        "nfirewalld started"
    );
    let settings = Settings {
        hypervisor,
        table: args.table.clone(),
        debounce: args.debounce,
    };
    run(
        ctx,
        settings,
        applier,
        metrics,
        mistify_http::shutdown_signal(),
    )
    .await;
    let _ = stop_tx.send(true);
    if let Some(task) = listener {
        let _ = task.await;
    }
    tracing::info!("nfirewalld stopped");
    Ok(())
}
