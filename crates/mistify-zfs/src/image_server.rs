//! `mistify-image-server`: serves `GET /images/<id>/download` from a directory
//! (`DIR/<id>`, else `DIR/<id>.gz` as is), and `make` builds a file-mode image stream
//! from a scratch dataset.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use clap::{Parser, Subcommand};
use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio_util::io::ReaderStream;

use crate::names;
use crate::store::{DISK_FILE, MB};
use crate::zfs::Zfs;

/// A tiny image server for tests and the dev stack.
#[derive(Debug, Parser)]
#[command(
    name = "mistify-image-server",
    version,
    about = "Serves image streams from a directory; `make` builds a file-mode image"
)]
pub struct Flags {
    /// Directory holding `<id>` or `<id>.gz` image streams.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Port to listen on (127.0.0.1).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Testing aid: pause this many milliseconds after each 64 KiB sent.
    #[arg(long, default_value_t = 0)]
    pub chunk_delay_ms: u64,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Builds an image stream of the file kind: a scratch filesystem in POOL holding a
    /// sparse `disk.img` of SIZE MB (its first MBs filled), snapshotted and sent to
    /// `OUT/<id>` (or `OUT/<id>.gz` with --gzip).
    Make {
        #[arg(long)]
        pool: String,
        #[arg(long)]
        id: String,
        /// Disk size in MB.
        #[arg(long)]
        size: u64,
        #[arg(long)]
        out: PathBuf,
        /// Write `OUT/<id>.gz` (gzip) instead of `OUT/<id>`.
        #[arg(long)]
        gzip: bool,
        /// MB of pseudo-random data written at the start of the disk (default 1).
        #[arg(long, default_value_t = 1)]
        fill: u64,
    },
}

#[derive(Default)]
struct Shared {
    dir: PathBuf,
    delay: Duration,
    downloads: Mutex<BTreeMap<String, u64>>,
}

pub async fn run(flags: Flags) -> Result<(), String> {
    match flags.command {
        Some(Command::Make {
            pool,
            id,
            size,
            out,
            gzip,
            fill,
        }) => make(&pool, &id, size, &out, gzip, fill).await.map(|path| {
            println!("{}", path.display());
        }),
        None => {
            let dir = flags.dir.ok_or("--dir is required to serve")?;
            serve(dir, flags.port, Duration::from_millis(flags.chunk_delay_ms)).await
        }
    }
}

/// The router serving `dir` (also `GET /stats`: downloads per image id).
pub fn router(dir: PathBuf, delay: Duration) -> Router {
    let shared = Arc::new(Shared {
        dir,
        delay,
        downloads: Mutex::new(BTreeMap::new()),
    });
    Router::new()
        .route("/images/{id}/download", get(download))
        .route("/stats", get(stats))
        .with_state(shared)
}

async fn serve(dir: PathBuf, port: u16, delay: Duration) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .map_err(|e| format!("cannot listen on port {port}: {e}"))?;
    mistify_http::serve(
        listener,
        router(dir, delay),
        mistify_http::Limits::default(),
        mistify_http::shutdown_signal(),
    )
    .await
    .map_err(|e| e.to_string())
}

async fn stats(State(shared): State<Arc<Shared>>) -> Json<serde_json::Value> {
    let map = shared
        .downloads
        .lock()
        .map(|m| m.clone())
        .unwrap_or_default();
    Json(serde_json::json!({ "downloads": map }))
}

async fn download(State(shared): State<Arc<Shared>>, UrlPath(id): UrlPath<String>) -> Response {
    if names::check_id(&id).is_err() {
        return (StatusCode::BAD_REQUEST, "invalid image id\n").into_response();
    }
    let plain = shared.dir.join(&id);
    let gz = shared.dir.join(format!("{id}.gz"));
    let path = if plain.is_file() { plain } else { gz };
    let file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(_) => return (StatusCode::NOT_FOUND, "not found\n").into_response(),
    };
    let len = file.metadata().await.map(|m| m.len()).ok();
    if let Ok(mut map) = shared.downloads.lock() {
        *map.entry(id).or_default() += 1;
    }
    let delay = shared.delay;
    let stream = ReaderStream::with_capacity(file, 64 * 1024).then(move |chunk| async move {
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        chunk
    });
    let mut resp = (
        [(header::CONTENT_TYPE, "application/octet-stream")],
        Body::from_stream(stream),
    )
        .into_response();
    if let Some(len) = len {
        if let Ok(v) = len.to_string().parse() {
            resp.headers_mut().insert(header::CONTENT_LENGTH, v);
        }
    }
    resp
}

/// Builds `out/<id>[.gz]`; its path.
pub async fn make(
    pool: &str,
    id: &str,
    size_mb: u64,
    out: &Path,
    gzip: bool,
    fill_mb: u64,
) -> Result<PathBuf, String> {
    names::check_id(id).map_err(|e| format!("image id: {e}"))?;
    names::check_component(pool).map_err(|e| format!("pool: {e}"))?;
    if size_mb == 0 {
        return Err("--size must be at least 1 MB".into());
    }
    let zfs = Zfs::detect("zfs", Duration::from_secs(120)).await;
    let scratch = format!(
        "{pool}/mistify-make-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    );
    let result = make_in(&zfs, &scratch, id, size_mb, out, gzip, fill_mb).await;
    if let Err(e) = zfs.destroy(&scratch, true).await {
        tracing::warn!(%scratch, error = %e, "cannot destroy the scratch dataset");
    }
    result
}

async fn make_in(
    zfs: &Zfs,
    scratch: &str,
    id: &str,
    size_mb: u64,
    out: &Path,
    gzip: bool,
    fill_mb: u64,
) -> Result<PathBuf, String> {
    zfs.create_filesystem(scratch, false)
        .await
        .map_err(|e| e.to_string())?;
    let ds = zfs.get(scratch).await.map_err(|e| e.to_string())?;
    let mp = ds.mountpoint.ok_or(format!("{scratch} is not mounted"))?;
    let file = Path::new(&mp).join(DISK_FILE);
    {
        let mut f = tokio::fs::File::create(&file)
            .await
            .map_err(|e| e.to_string())?;
        // Deterministic content from the id, so tests can compare.
        let mut state: u64 = id.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        let mut block = vec![0u8; MB as usize];
        for _ in 0..fill_mb.min(size_mb) {
            for chunk in block.chunks_mut(8) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let bytes = state.to_le_bytes();
                chunk.copy_from_slice(&bytes[..chunk.len()]);
            }
            f.write_all(&block).await.map_err(|e| e.to_string())?;
        }
        f.set_len(size_mb * MB).await.map_err(|e| e.to_string())?;
        f.sync_all().await.map_err(|e| e.to_string())?;
    }
    let snap = format!("{scratch}@image");
    zfs.snapshot(&snap, false)
        .await
        .map_err(|e| e.to_string())?;
    tokio::fs::create_dir_all(out)
        .await
        .map_err(|e| e.to_string())?;
    let path = out.join(if gzip {
        format!("{id}.gz")
    } else {
        id.to_string()
    });
    let mut child = zfs.spawn_send(&snap, false).map_err(|e| e.to_string())?;
    let mut stdout = child.stdout.take().ok_or("zfs send: no stdout")?;
    let dest = tokio::fs::File::create(&path)
        .await
        .map_err(|e| e.to_string())?;
    if gzip {
        let mut enc = async_compression::tokio::write::GzipEncoder::new(dest);
        tokio::io::copy(&mut stdout, &mut enc)
            .await
            .map_err(|e| e.to_string())?;
        enc.shutdown().await.map_err(|e| e.to_string())?;
    } else {
        let mut dest = dest;
        tokio::io::copy(&mut stdout, &mut dest)
            .await
            .map_err(|e| e.to_string())?;
        dest.flush().await.map_err(|e| e.to_string())?;
    }
    let output = child.wait_with_output().await.map_err(|e| e.to_string())?;
    if !output.status.success() {
        let _ = tokio::fs::remove_file(&path).await;
        return Err(format!(
            "zfs send {snap}: {}",
            String::from_utf8_lossy(&output.stderr).trim_end()
        ));
    }
    Ok(path)
}
