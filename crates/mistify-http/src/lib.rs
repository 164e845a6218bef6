//! The HTTP server every mistify daemon runs — the agent, the sub-agents, the image
//! server and the supervisor — with one implementation of each shared piece:
//!
//! * [`serve`] / [`serve_tls`] with [`Limits`] (request heads, slow senders, stalled
//!   bodies, load shedding) and [`tls_config`];
//! * [`layers`]: the request log, gzip on request with Go's `Vary`, panic recovery,
//!   `GET /healthz`;
//! * [`auth`]: the bearer-token gate of `--token-file`;
//! * [`runtime`]: the log subscriber and the shutdown signal every `main` sets up.

pub mod auth;
pub mod layers;
pub mod runtime;
mod server;

pub use layers::{
    common_layers, healthz_route, healthz_route_checked, with_common_layers, App, HealthCheck,
    RpcMethodName,
};
pub use runtime::{init_tracing, shutdown_signal, LogFormat};
pub use server::{
    caused_by, is_body_timeout, serve, serve_tls, tls_config, Limits, TlsError,
    DEFAULT_BODY_TIMEOUT, DEFAULT_HEADER_TIMEOUT, DEFAULT_MAX_HEADER_BYTES, DEFAULT_MAX_IN_FLIGHT,
};
