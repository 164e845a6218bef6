//! A stand-in for every sub-agent the agent can call, with canned answers: what the
//! agent's integration tests run behind it (the equivalent of the Go example of the same
//! name). Service `Test`; plain route `/snapshots/download` answers `foobar`.
//!
//! `cargo run -p mistify-rpc --example test-rpc-service -- --port 9999`

use axum::http::header;
use axum::routing::any;
use clap::Parser;
use mistify_http::{init_tracing, LogFormat};
use mistify_rpc::{
    Guest, GuestCpuMetrics, GuestDiskMetrics, GuestMetricsRequest, GuestMetricsResponse,
    GuestNicMetrics, GuestRequest, GuestResponse, Image, ImageRequest, ImageResponse, Server,
    Snapshot, SnapshotRequest, SnapshotResponse,
};

#[derive(Parser)]
#[command(about = "Fake sub-agent answering every Test.* method with canned data")]
struct Flags {
    /// Port to listen on (127.0.0.1).
    #[arg(short, long, default_value_t = 9999)]
    port: u16,
    /// Log level or filter.
    #[arg(short, long, default_value = "info")]
    log_level: String,
    /// Require the bearer token in this file (first non-comment line) on every call.
    #[arg(long)]
    token_file: Option<std::path::PathBuf>,
    /// Answer each guest action (Create, Run, Reboot, …) after this many milliseconds:
    /// a slow sub-agent, for crash and soak tests.
    #[arg(long, default_value_t = 0)]
    delay_ms: u64,
}

/// `--delay-ms`, read by every guest action.
static DELAY_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

type Reply<T> = Result<T, String>;

/// The one image every image method answers with.
fn the_image() -> ImageResponse {
    ImageResponse {
        images: Some(vec![Image {
            id: "289120e4-ed12-431d-8d18-48f8a94bb05a".into(),
            size: 1024,
            status: "complete".into(),
            ..Image::default()
        }]),
    }
}

/// The guest every container method answers with, whatever it was asked.
fn container_guest() -> GuestResponse {
    GuestResponse {
        guest: Some(Guest {
            id: "foobar".into(),
            kind: "container".into(),
            image: "asdfasdfpoih".into(),
            ..Guest::default()
        }),
        ..GuestResponse::default()
    }
}

/// Lexical clean-up of a slash-separated path, as Go's `path.Clean`.
fn clean_path(path: &str) -> String {
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if matches!(parts.last(), Some(p) if *p != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            p => parts.push(p),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".into(),
        (false, false) => joined,
    }
}

/// `mistify/<id>` cleaned, the dataset the snapshot methods report.
fn dataset(req: &SnapshotRequest) -> String {
    clean_path(&format!("mistify/{}", req.id))
}

fn snapshot(id: String) -> SnapshotResponse {
    SnapshotResponse {
        snapshots: Some(vec![Snapshot { id, size: 1024 }]),
    }
}

async fn echo(req: GuestRequest) -> Reply<GuestResponse> {
    let delay = DELAY_MS.load(std::sync::atomic::Ordering::Relaxed);
    if delay > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
    }
    Ok(GuestResponse {
        guest: req.guest,
        ..GuestResponse::default()
    })
}

async fn cpu(req: GuestMetricsRequest) -> Reply<GuestMetricsResponse> {
    Ok(GuestMetricsResponse {
        guest: req.guest,
        kind: "cpu".into(),
        cpu: vec![GuestCpuMetrics::default()],
        ..Default::default()
    })
}

async fn disk(req: GuestMetricsRequest) -> Reply<GuestMetricsResponse> {
    let vda = GuestDiskMetrics {
        disk: "vda".into(),
        ..Default::default()
    };
    Ok(GuestMetricsResponse {
        guest: req.guest,
        kind: "disk".into(),
        disk: [("vda".to_string(), vda)].into(),
        ..Default::default()
    })
}

async fn nic(req: GuestMetricsRequest) -> Reply<GuestMetricsResponse> {
    let net0 = GuestNicMetrics {
        name: "net0".into(),
        ..Default::default()
    };
    Ok(GuestMetricsResponse {
        guest: req.guest,
        // "disk", not "nic": the original answers so and the recordings keep it.
        kind: "disk".into(),
        nic: [("net0".to_string(), net0)].into(),
        ..Default::default()
    })
}

async fn image(_: ImageRequest) -> Reply<ImageResponse> {
    Ok(the_image())
}

async fn container(_: GuestRequest) -> Reply<GuestResponse> {
    Ok(container_guest())
}

/// Every `Test.*` method with its canned answer.
fn test_service() -> Server {
    let mut server = Server::new("test-rpc-service");
    for name in [
        "Restart", "Poweroff", "Delete", "Create", "Run", "Reboot", "Shutdown",
    ] {
        server = server.method(&format!("Test.{name}"), echo);
    }
    for name in ["ListImages", "GetImage", "DeleteImage", "RequestImage"] {
        server = server.method(&format!("Test.{name}"), image);
    }
    for name in [
        "CreateContainer",
        "StartContainer",
        "RebootContainer",
        "RestartContainer",
        "StopContainer",
        "DeleteContainer",
    ] {
        server = server.method(&format!("Test.{name}"), container);
    }
    for name in ["GetSnapshot", "DeleteSnapshot", "RollbackSnapshot"] {
        server = server.method(&format!("Test.{name}"), |req: SnapshotRequest| async move {
            Reply::Ok(snapshot(dataset(&req)))
        });
    }
    server
        .method("Test.CPUMetrics", cpu)
        .method("Test.DiskMetrics", disk)
        .method("Test.NicMetrics", nic)
        .method("Test.ListSnapshots", |req: SnapshotRequest| async move {
            Reply::Ok(snapshot(format!("{}@bar", dataset(&req))))
        })
        .method("Test.CreateSnapshot", |req: SnapshotRequest| async move {
            Reply::Ok(snapshot(format!("{}@{}", dataset(&req), req.dest)))
        })
        .route(
            "/snapshots/download",
            any(|| async {
                (
                    [(header::CONTENT_TYPE, "application/octet-stream")],
                    "foobar",
                )
            }),
        )
}

#[tokio::main]
async fn main() {
    let flags = Flags::parse();
    if let Err(e) = init_tracing(&flags.log_level, LogFormat::Json) {
        eprintln!("test-rpc-service: {e}");
        std::process::exit(2);
    }
    DELAY_MS.store(flags.delay_ms, std::sync::atomic::Ordering::Relaxed);
    let mut server = test_service();
    if let Some(path) = &flags.token_file {
        match mistify_rpc::read_token_file(path) {
            Ok(token) => server = server.require_token(token),
            Err(e) => {
                eprintln!("test-rpc-service: {e}");
                std::process::exit(2);
            }
        }
    }
    if let Err(e) = server.serve(flags.port).await {
        eprintln!("test-rpc-service: {e}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::clean_path;

    #[test]
    fn cleans_like_go() {
        assert_eq!(clean_path("mistify/guests/x"), "mistify/guests/x");
        assert_eq!(clean_path("mistify//a/./b/"), "mistify/a/b");
        assert_eq!(clean_path("mistify/../../x"), "../x");
        assert_eq!(clean_path("mistify/"), "mistify");
        assert_eq!(clean_path("/a/../.."), "/");
    }
}
