//! JSON-RPC over HTTP between the mistify agent and its sub-agents.
//!
//! * the request and response objects of every sub-agent method, from
//!   [`mistify_types`] (re-exported here).
//! * [`Client`] / [`Service`] — what the agent uses to call a sub-agent: keep-alive
//!   pool, per-service timeouts and concurrency limit, raw Stream calls.
//! * [`Server`] — what a sub-agent author uses: register `Service.Method` handlers,
//!   add plain routes, serve on loopback with graceful shutdown.
//! * The HTTP server under it (limits, shared layers, `/healthz`, the token gate) is the
//!   crate `mistify-http`, which every daemon shares.
//!
//! The wire format is gorilla/rpc v1 (what the Go agent and sub-agents speak) and
//! JSON-RPC 2.0; the server answers each request in its own dialect. See
//! `docs/architecture.md` for why this is our own thin layer rather than jsonrpsee.
//!
//! A complete sub-agent:
//!
//! ```no_run
//! use mistify_rpc::{GuestRequest, GuestResponse, Server};
//!
//! #[tokio::main]
//! async fn main() -> std::io::Result<()> {
//!     Server::new("echo")
//!         .method("Echo.Run", |req: GuestRequest| async move {
//!             Ok::<_, String>(GuestResponse { guest: req.guest, ..Default::default() })
//!         })
//!         .serve(21000)
//!         .await
//! }
//! ```

pub mod client;
mod conn;
pub mod envelope;
pub mod merge;
pub mod server;

pub use client::{Client, RawStream, RpcError, Service, ServiceConfig};
pub use mistify_http::Limits;
pub use mistify_types::rest::{
    Guest, GuestCpuMetrics, GuestDiskMetrics, GuestNicMetrics, Image, ImageRequest, ImageResponse,
    Snapshot, SnapshotRequest, Volume,
};
pub use mistify_types::rpc::*;
pub use server::{read_token_file, BoundServer, RunningServer, Server};

/// The path of the RPC endpoint of every sub-agent.
pub const RPC_PATH: &str = "/_mistify_RPC_";
