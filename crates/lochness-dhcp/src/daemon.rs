//! What `cdhcpd` runs: read the model, render, then apply each burst of changes from the
//! watches; a compacted watch (changes lost) reads everything again. In Kea mode the
//! running configuration is compared with the wanted one every `--kea-check-interval`,
//! so a restarted Kea, or one whose socket failed while etcd changed, gets the
//! reservations again.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use lochness::watch::WatchEvent;
use lochness::Context;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::cli::{Args, IscCheck};
use crate::files::{self, Check, Installed};
use crate::isc;
use crate::kea::{self, ControlSocket, Desired, Synced};
use crate::metrics::Metrics;
use crate::model::{Model, PREFIXES};

/// The changes of the three watches, merged; dropping it stops them.
struct Events {
    rx: mpsc::Receiver<lochness::Result<WatchEvent>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Events {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn watch_all(ctx: &Context, after: i64) -> lochness::Result<Events> {
    let (tx, rx) = mpsc::channel(1024);
    let mut tasks = Vec::new();
    for prefix in PREFIXES {
        let mut w = ctx.watch(prefix, after).await?;
        let tx = tx.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(ev) = w.next().await {
                let last = ev.is_err();
                if tx.send(ev).await.is_err() || last {
                    return;
                }
            }
        }));
    }
    Ok(Events { rx, tasks })
}

/// The renderer's settings and the state it keeps between renders.
struct Renderer {
    domain: String,
    isc_dir: Option<PathBuf>,
    isc_check: Option<Check>,
    isc_reload: Option<String>,
    kea: Option<ControlSocket>,
    kea_options: kea::Options,
    desired: Option<Desired>,
    kea_failing: bool,
    metrics: Arc<Metrics>,
}

fn in_path(program: &Path) -> bool {
    if program.components().count() > 1 {
        return program.is_file();
    }
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
        .unwrap_or(false)
}

impl Renderer {
    fn new(args: &Args, metrics: Arc<Metrics>) -> Result<Renderer, String> {
        let check = match args.isc_check {
            IscCheck::Never => false,
            IscCheck::Always => true,
            IscCheck::Auto => in_path(&args.dhcpd),
        };
        let isc_dir = args.isc_dir();
        if let Some(dir) = &isc_dir {
            if !dir.is_dir() {
                return Err(format!("--conf-dir {}: not a directory", dir.display()));
            }
        }
        Ok(Renderer {
            domain: args.domain.clone(),
            isc_dir,
            isc_check: check.then(|| Check {
                argv: vec![args.dhcpd.display().to_string(), "-t".into(), "-cf".into()],
            }),
            isc_reload: args.isc_reload.clone(),
            kea: args.kea_socket.clone().map(|path| ControlSocket {
                path,
                timeout: args.kea_timeout,
            }),
            kea_options: kea::Options {
                domain: args.domain.clone(),
                next_server: args.kea_next_server,
            },
            desired: None,
            kea_failing: false,
            metrics,
        })
    }

    async fn render(&mut self, model: &Model) {
        self.metrics.renders.inc();
        self.metrics.revision.set(model.revision);
        if let Some(dir) = self.isc_dir.clone() {
            self.write_isc(&dir, model).await;
        }
        if self.kea.is_some() {
            let desired = Desired::from_model(model, &self.kea_options);
            self.metrics.set_reservations("guest", desired.guests);
            self.metrics
                .set_reservations("hypervisor", desired.hypervisors);
            self.desired = Some(desired);
            self.sync_kea().await;
        } else {
            self.metrics
                .set_reservations("guest", model.served_guests().count());
            self.metrics.set_reservations(
                "hypervisor",
                model
                    .hypervisors
                    .values()
                    .filter(|h| h.mac.is_some() && h.ip.is_some())
                    .count(),
            );
        }
    }

    async fn write_isc(&mut self, dir: &Path, model: &Model) {
        let files = [
            (isc::HYPERVISORS_FILE, isc::hypervisors(model, &self.domain)),
            (isc::GUESTS_FILE, isc::guests(model, &self.domain)),
        ];
        let mut changed = false;
        for (name, text) in files {
            match files::install(&dir.join(name), &text, self.isc_check.as_ref()).await {
                Ok(Installed::Replaced) => {
                    tracing::info!(file = name, revision = model.revision, "written");
                    self.metrics.file_written(name);
                    changed = true;
                }
                Ok(Installed::Unchanged) => {}
                Err(e) => {
                    tracing::error!(error = %e, "not installed; the previous file stays");
                    self.metrics.file_failed(name);
                }
            }
        }
        if let (true, Some(cmd)) = (changed, &self.isc_reload) {
            if let Err(e) = files::run_reload(cmd).await {
                tracing::error!(error = %e, "the --isc-reload command failed");
                self.metrics.isc_reload_failures.inc();
            }
        }
    }

    async fn sync_kea(&mut self) {
        let (Some(socket), Some(desired)) = (&self.kea, &self.desired) else {
            return;
        };
        match kea::sync(socket, desired).await {
            Ok(Synced::Applied) => {
                tracing::info!(
                    guests = desired.guests,
                    hypervisors = desired.hypervisors,
                    digest = %desired.digest,
                    "Kea configuration applied"
                );
                self.metrics.kea_applies.inc();
                self.kea_failing = false;
            }
            Ok(Synced::InSync) => self.kea_failing = false,
            Err(e) => {
                if self.kea_failing {
                    tracing::debug!(error = %e, "Kea sync failed again");
                } else {
                    tracing::error!(error = %e, "Kea sync failed; retried every check interval");
                }
                self.metrics.kea_failed(e.stage.as_str());
                self.kea_failing = true;
            }
        }
    }
}

/// `GET /metrics` and `GET /healthz`.
fn router(metrics: Arc<Metrics>) -> Router {
    let metrics_route = Router::new().route(
        "/metrics",
        get(move || {
            let metrics = metrics.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    metrics.encode(),
                )
            }
        }),
    );
    mistify_http::with_common_layers(metrics_route.merge(mistify_http::healthz_route(
        "cdhcpd",
        env!("CARGO_PKG_VERSION"),
    )))
}

async fn reload(ctx: &Context, metrics: &Metrics) -> (Model, Events) {
    let mut delay = Duration::from_millis(200);
    loop {
        match Model::load(ctx).await {
            Ok(model) => match watch_all(ctx, model.revision).await {
                Ok(events) => {
                    metrics.reloads.inc();
                    return (model, events);
                }
                Err(e) => tracing::warn!(error = %e, "cannot watch etcd; retrying"),
            },
            Err(e) => tracing::warn!(error = %e, "cannot read etcd; retrying"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// Runs cdhcpd until SIGTERM or Ctrl-C.
pub async fn run(args: Args) -> Result<(), String> {
    mistify_http::init_tracing(
        mistify_http::runtime::go_level(&args.log_level),
        args.log_format,
    )?;
    let eps = lochness::kv_endpoints(&args.kv).map_err(|e| e.to_string())?;
    let prefix = (!args.prefix.is_empty()).then_some(args.prefix.as_str());
    let ctx = Context::new(&eps, prefix)
        .await
        .map_err(|e| format!("cannot connect to etcd at {}: {e}", args.kv))?;
    let metrics = Arc::new(Metrics::new());
    let mut renderer = Renderer::new(&args, metrics.clone())?;
    // The first read must work (as the original, which exits on it); later ones retry.
    let mut model = Model::load(&ctx)
        .await
        .map_err(|e| format!("cannot read the cluster from etcd: {e}"))?;
    let mut events = watch_all(&ctx, model.revision)
        .await
        .map_err(|e| format!("cannot watch etcd: {e}"))?;
    metrics.reloads.inc();

    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let listener = if args.http == 0 {
        None
    } else {
        let addr = SocketAddr::new(args.bind, args.http);
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        let app = router(metrics.clone());
        let mut rx = stop_rx.clone();
        Some(tokio::spawn(async move {
            let stopped = async move {
                let _ = rx.wait_for(|s| *s).await;
            };
            if let Err(e) =
                mistify_http::serve(listener, app, mistify_http::Limits::default(), stopped).await
            {
                tracing::error!(error = %e, "the metrics listener failed");
            }
        }))
    };
    tokio::spawn(async move {
        mistify_http::shutdown_signal().await;
        let _ = stop_tx.send(true);
    });

    tracing::info!(
        revision = model.revision,
        hypervisors = model.hypervisors.len(),
        subnets = model.subnets.len(),
        guests = model.guests.len(),
        "cdhcpd started"
    );
    renderer.render(&model).await;
    let mut pending: Option<Instant> = None;
    let mut check = tokio::time::interval(args.kea_check_interval.max(Duration::from_millis(50)));
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let due = pending.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            _ = stop_rx.wait_for(|s| *s) => break,
            ev = events.rx.recv() => match ev {
                Some(Ok(ev)) => {
                    if model.apply(&ctx, &ev) && pending.is_none() {
                        pending = Some(Instant::now() + args.debounce);
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "watch lost (compacted); reading everything again");
                    (model, events) = reload(&ctx, &metrics).await;
                    pending = Some(Instant::now());
                }
                None => {
                    tracing::warn!("watches ended; reading everything again");
                    (model, events) = reload(&ctx, &metrics).await;
                    pending = Some(Instant::now());
                }
            },
            _ = tokio::time::sleep_until(due), if pending.is_some() => {
                pending = None;
                renderer.render(&model).await;
            }
            _ = check.tick(), if renderer.kea.is_some() => renderer.sync_kea().await,
        }
    }
    drop(events);
    if let Some(task) = listener {
        let _ = task.await;
    }
    tracing::info!("cdhcpd stopped");
    Ok(())
}
