//! TLS (rustls with the ring provider) for `https://` listen addresses, served with the
//! HTTP limits every mistify daemon shares (`mistify_http`).

use crate::daemon::server::DaemonError;
use std::path::Path;
use std::sync::Arc;
use tokio::task::JoinHandle;

/// Loads the PEM certificate (chain) and private key.
pub async fn config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, DaemonError> {
    mistify_http::tls_config(cert, key, None).map_err(|e| DaemonError::Tls(e.to_string()))
}

/// Serves `app` over TLS.
pub fn serve(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    config: Arc<rustls::ServerConfig>,
) -> Result<JoinHandle<()>, DaemonError> {
    Ok(tokio::spawn(async move {
        let limits = mistify_http::Limits::default();
        let forever = std::future::pending::<()>();
        if let Err(e) = mistify_http::serve_tls(listener, app, limits, config, forever).await {
            tracing::error!("TLS server: {e}");
        }
    }))
}
