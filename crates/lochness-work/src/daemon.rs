//! What `cplacerd` and `cworkerd` run: connect, claim under a lease, serve metrics,
//! dispatch until SIGTERM or Ctrl-C, then give every claimed job back.

use std::net::SocketAddr;
use std::sync::Arc;

use lochness::{Claimer, Context, MistifyAgent, QueueView};

use crate::cli::{init, read_token, Common, PlacerArgs, WorkerArgs};
use crate::dispatch::{self, Handler};
use crate::metrics::Metrics;
use crate::placer::Placer;
use crate::worker::Worker;

/// The context of `-k` and `--prefix`.
async fn connect(common: &Common) -> Result<Context, String> {
    let endpoints = lochness::kv_endpoints(&common.etcd).map_err(|e| e.to_string())?;
    let prefix = (!common.prefix.is_empty()).then_some(common.prefix.as_str());
    Context::new(&endpoints, prefix)
        .await
        .map_err(|e| format!("cannot connect to etcd at {}: {e}", common.etcd))
}

/// Serves metrics (unless `port` is 0), then runs the claim loop of `handler`.
async fn serve<H: Handler>(
    program: &str,
    common: &Common,
    port: u16,
    concurrency: u32,
    ctx: Context,
    metrics: Arc<Metrics>,
    handler: H,
) -> Result<(), String> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let listener = if port == 0 {
        None
    } else {
        let mut rx = stop_rx.clone();
        let stopped = async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let addr = SocketAddr::new(common.bind, port);
        Some(
            crate::server::start(program, addr, metrics.clone(), stopped)
                .await?
                .1,
        )
    };
    let claimer = Claimer::start(&ctx, program, common.lease_ttl)
        .await
        .map_err(|e| format!("cannot take a lease: {e}"))?;
    let view = QueueView::start(&ctx)
        .await
        .map_err(|e| format!("cannot read the queues: {e}"))?;
    tracing::info!(claimer = %claimer.name(), concurrency, "{program} started");
    let concurrency = usize::try_from(concurrency).unwrap_or(1);
    dispatch::run(
        view,
        claimer,
        Arc::new(handler),
        concurrency,
        metrics,
        mistify_http::shutdown_signal(),
    )
    .await;
    let _ = stop_tx.send(true);
    if let Some(task) = listener {
        let _ = task.await;
    }
    tracing::info!("{program} stopped");
    Ok(())
}

/// `cplacerd`.
pub async fn placer(args: PlacerArgs) -> Result<(), String> {
    init("cplacerd", &args.common)?;
    let ctx = connect(&args.common).await?;
    ctx.set_placement_batch(usize::try_from(args.batch).unwrap_or(1));
    let metrics = Arc::new(Metrics::new());
    let placer = Placer::start(&ctx, metrics.clone())
        .await
        .map_err(|e| format!("cannot read the cluster: {e}"))?;
    serve(
        "cplacerd",
        &args.common,
        args.http,
        args.concurrency,
        ctx,
        metrics,
        placer,
    )
    .await
}

/// `cworkerd`.
pub async fn worker(args: WorkerArgs) -> Result<(), String> {
    init("cworkerd", &args.common)?;
    let ctx = connect(&args.common).await?;
    let mut agent = MistifyAgent::new(&ctx).with_default_port(args.agent_port);
    if let Some(path) = &args.agent_token_file {
        agent = agent.with_token(&read_token(path)?);
    }
    let tls = mistify_client::TlsFiles {
        ca: args.agent_ca_cert.clone(),
        cert: args.agent_client_cert.clone(),
        key: args.agent_client_key.clone(),
    };
    if !tls.is_empty() {
        tls.client_config().map_err(|e| e.to_string())?;
        agent = agent.with_tls(tls);
    }
    let metrics = Arc::new(Metrics::new());
    let worker = Worker::new(&ctx, agent, args.agent_retry_for, metrics.clone());
    serve(
        "cworkerd",
        &args.common,
        args.http,
        args.concurrency,
        ctx,
        metrics,
        worker,
    )
    .await
}
