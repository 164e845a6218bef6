//! The mistify hypervisor agent: the REST API operators and controllers call, the
//! configured action pipelines of JSON-RPC stages to sub-agents, per-guest runners, and
//! the durable job log.
//!
//! [`run`] is what the binary does; [`Agent::start`] and [`api::router`] (or
//! [`api::service`]) let tests and embedders assemble the same pieces.

pub mod agent;
pub mod api;
pub mod config;
pub mod error;
pub mod import;
pub mod jobs;
pub mod metrics;
pub mod openapi;
pub mod ops;
pub mod pipeline;
pub mod runner;
pub mod store;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

pub use agent::{Agent, Settings, TlsSettings};
pub use config::Config;
pub use error::AgentError;
pub use jobs::Work;
use mistify_http::auth::{Gate, Refusal, Tokens};

/// Serves the agent on `listener` until `shutdown` resolves; then stops taking work
/// (503), waits (bounded) for running jobs, and finishes the requests in flight.
pub async fn serve(
    agent: Arc<Agent>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(agent, None, listener, shutdown).await
}

/// As [`serve`], with bearer tokens required when `auth` is given (`--token-file`: 401
/// without a token of the file, 403 for a read-only token that does more than read;
/// `/healthz` stays open).
pub async fn serve_with(
    agent: Arc<Agent>,
    auth: Option<Arc<Tokens>>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = api::service(agent.clone());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let drainer = agent.clone();
    tokio::spawn(async move {
        shutdown.await;
        drainer.drain().await;
        let _ = stop_tx.send(());
    });
    let stopped = async {
        let _ = stop_rx.await;
    };
    match auth {
        Some(tokens) => {
            let gate = Gate {
                tokens,
                refusal: Refusal::Json {
                    realm: "mistify-agent",
                },
            };
            let app = tower::Layer::layer(
                &axum::middleware::from_fn_with_state(gate, mistify_http::auth::require_token),
                app,
            );
            serve_app(&agent, listener, app, stopped).await
        }
        None => serve_app(&agent, listener, app, stopped).await,
    }
}

/// Serves `app` over HTTP or, with the agent's TLS settings, HTTPS.
async fn serve_app<S: mistify_http::App>(
    agent: &Agent,
    listener: tokio::net::TcpListener,
    app: S,
    stopped: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = agent.limits.clone();
    match agent.tls.clone() {
        Some(tls) => mistify_http::serve_tls(listener, app, limits, tls.config, stopped).await,
        None => mistify_http::serve(listener, app, limits, stopped).await,
    }
}

/// Starts the agent with `settings` on `address` and serves until SIGTERM or Ctrl-C.
/// With `auth` (a loaded `--token-file`), every request but `/healthz` needs one of its
/// bearer tokens; the file is read again on SIGHUP.
pub async fn run(
    settings: Settings,
    address: SocketAddr,
    auth: Option<Tokens>,
) -> Result<(), String> {
    let auth = auth.map(Arc::new);
    if let Some(auth) = &auth {
        auth.reload_on_sighup()
            .map_err(|e| format!("cannot watch SIGHUP: {e}"))?;
    }
    let agent = Agent::start(settings).await.map_err(|e| e.to_string())?;
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| format!("cannot listen on {address}: {e}"))?;
    let client_certs = agent.tls.as_ref().is_some_and(|t| t.client_certs);
    if !address.ip().is_loopback() && auth.is_none() && !client_certs {
        tracing::warn!(%address, "listening beyond loopback without authentication (see --token-file and --client-ca)");
    }
    tracing::info!(%address, tokens = auth.is_some(), tls = agent.tls.is_some(), client_certs, "mistify-agent serving");
    serve_with(agent, auth, listener, mistify_http::shutdown_signal())
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!("mistify-agent stopped");
    Ok(())
}

/// Parses the original's `--address` forms: `:8080` (every interface), `host:port`.
pub fn parse_address(text: &str) -> Result<SocketAddr, String> {
    let full = if text.starts_with(':') {
        format!("0.0.0.0{text}")
    } else {
        text.to_string()
    };
    if let Ok(addr) = full.parse() {
        return Ok(addr);
    }
    use std::net::ToSocketAddrs;
    full.to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| format!("invalid address {text:?} (expected :PORT or HOST:PORT)"))
}
