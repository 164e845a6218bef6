//! Flags of `mistify-zfs` and its run loop.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use mistify_http::{init_tracing, LogFormat};

use crate::store::{Config, DiskMode, Store};

/// The storage sub-agent (`ImageStore`) of the mistify agent, on one ZFS pool.
#[derive(Debug, Parser)]
#[command(
    name = "mistify-zfs",
    version,
    about = "The ZFS storage sub-agent (ImageStore) of the mistify agent"
)]
pub struct Flags {
    /// Port to listen on (127.0.0.1 only).
    #[arg(short, long, default_value_t = 19999)]
    pub port: u16,
    /// The ZFS pool that holds everything.
    #[arg(short, long, default_value = "mistify")]
    pub zpool: String,
    /// Image server `host[:port]` (without a port: 80).
    #[arg(short, long, default_value = "image.services.lochness.local")]
    pub image_service: String,
    /// debug, info, warning, error, critical, fatal (or a tracing filter).
    #[arg(short, long, default_value = "warning")]
    pub log_level: String,
    /// Log format: pretty (human lines, the default) or json (one object per line).
    #[arg(long, default_value = "pretty")]
    pub log_format: LogFormat,
    /// How guest disks are made: zvol (a zvol each) or file (a filesystem holding a
    /// sparse raw `disk.img` each).
    #[arg(long, value_enum, default_value_t = DiskMode::Zvol)]
    pub disk_mode: DiskMode,
    /// URL prefixes and directories a RequestImage `source` may name (comma list);
    /// empty: `source` is refused.
    #[arg(long, value_delimiter = ',')]
    pub allowed_sources: Vec<String>,
    /// The image record store (default: `<mountpoint of POOL/images>/.images.redb`).
    #[arg(long)]
    pub db_path: Option<PathBuf>,
    /// Concurrent image downloads.
    #[arg(long, default_value_t = 2)]
    pub max_fetches: usize,
    /// The zfs program.
    #[arg(long, default_value = "zfs")]
    pub zfs: PathBuf,
    /// Seconds one zfs command may take (send and receive excepted).
    #[arg(long, default_value_t = 60)]
    pub zfs_timeout: u64,
    /// Seconds one image import (`zfs receive`) may take.
    #[arg(long, default_value_t = 3600)]
    pub receive_timeout: u64,
    /// Hold an exclusive flock on this file around every zfs command that mounts or
    /// unmounts (create, clone, receive, destroy, rollback, …), machine-wide. Default:
    /// /tmp/mistify-zpool.lock on zfs-fuse (which wedges on concurrent mounts), none on
    /// OpenZFS.
    #[arg(long)]
    pub mount_lock: Option<PathBuf>,
    /// Seconds a destroy (guest disks, images, datasets) or a rollback keeps retrying
    /// while zfs answers "busy", before it answers what holds the dataset.
    #[arg(long, default_value_t = 30)]
    pub busy_timeout: u64,
    /// Seconds the image server may stay silent during a download.
    #[arg(long, default_value_t = 60)]
    pub download_idle: u64,
    /// Require the agent's bearer token (this file's first non-comment line; the
    /// service's `token` in agent.json) on every call.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
}

fn level(l: &str) -> &str {
    match l {
        "warning" => "warn",
        "critical" | "fatal" | "panic" => "error",
        other => other,
    }
}

impl Flags {
    pub fn config(&self) -> Config {
        Config {
            pool: self.zpool.clone(),
            image_service: self.image_service.clone(),
            disk_mode: self.disk_mode,
            allowed_sources: self
                .allowed_sources
                .iter()
                .filter(|s| !s.is_empty())
                .cloned()
                .collect(),
            db_path: self.db_path.clone(),
            max_fetches: self.max_fetches,
            zfs_program: self.zfs.clone(),
            zfs_timeout: Duration::from_secs(self.zfs_timeout.max(1)),
            receive_timeout: Duration::from_secs(self.receive_timeout.max(1)),
            download_idle: Duration::from_secs(self.download_idle.max(1)),
            mount_lock: self.mount_lock.clone(),
            busy_for: Duration::from_secs(self.busy_timeout),
            check_mounts: true,
        }
    }
}

/// How often the store is opened again while the pool is not ready.
const OPEN_RETRY: Duration = Duration::from_secs(2);

/// Opens the store and serves until SIGTERM / Ctrl-C. While the pool is not imported or
/// its filesystems are not mounted, `/healthz` answers 503 with the reason (every other
/// route 404) and the store is opened again every 2 s; a supervisor's `ready: http:`
/// probe waits meanwhile.
pub async fn run(flags: Flags) -> Result<(), String> {
    use futures::FutureExt;
    init_tracing(level(&flags.log_level), flags.log_format)?;
    let token = flags
        .token_file
        .as_deref()
        .map(mistify_rpc::read_token_file)
        .transpose()?;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], flags.port));
    let shutdown = mistify_http::shutdown_signal().boxed().shared();
    let reason = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let mut waiting: Option<mistify_rpc::RunningServer> = None;
    let store = loop {
        match Store::open(flags.config()).await {
            Ok(store) => break store,
            Err(crate::Error::NotReady(why)) => {
                let changed = {
                    let mut held = reason.lock().unwrap_or_else(|e| e.into_inner());
                    let changed = *held != why;
                    *held = why.clone();
                    changed
                };
                if changed {
                    tracing::warn!(reason = %why, "the pool is not ready: /healthz answers 503; trying again every {OPEN_RETRY:?}");
                }
                if waiting.is_none() {
                    let r = reason.clone();
                    let server = mistify_rpc::Server::new("mistify-zfs")
                        .v1_only()
                        .version(env!("CARGO_PKG_VERSION"))
                        .health_check(move || {
                            let why = r.lock().unwrap_or_else(|e| e.into_inner()).clone();
                            async move { Err(why) }
                        });
                    let bound = server
                        .bind(addr)
                        .await
                        .map_err(|e| format!("cannot serve on port {}: {e}", flags.port))?;
                    waiting = Some(bound.spawn().map_err(|e| e.to_string())?);
                }
                tokio::select! {
                    _ = tokio::time::sleep(OPEN_RETRY) => {}
                    _ = shutdown.clone() => {
                        if let Some(w) = waiting.take() {
                            let _ = w.stop().await;
                        }
                        return Ok(());
                    }
                }
            }
            Err(e) => {
                return Err(format!(
                    "cannot open the store on pool {}: {e}",
                    flags.zpool
                ))
            }
        }
    };
    if let Some(w) = waiting.take() {
        tracing::info!("the pool is ready: serving");
        let _ = w.stop().await;
    }
    let mut server = crate::api::server(store);
    if let Some(token) = token {
        server = server.require_token(token);
    }
    server
        .bind(addr)
        .await
        .map_err(|e| format!("cannot serve on port {}: {e}", flags.port))?
        .run_until(shutdown)
        .await
        .map_err(|e| format!("cannot serve on port {}: {e}", flags.port))
}
