//! TLS (rustls with the ring provider) for `https://` listen addresses.

use crate::daemon::server::DaemonError;
use axum_server::tls_rustls::RustlsConfig;
use std::path::Path;
use tokio::task::JoinHandle;

/// Loads the PEM certificate (chain) and private key.
pub async fn config(cert: &Path, key: &Path) -> Result<RustlsConfig, DaemonError> {
    // Only one provider is compiled in; installing it twice is harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();
    RustlsConfig::from_pem_file(cert, key).await.map_err(|e| {
        DaemonError::Tls(format!(
            "certificate {} / key {}: {e}",
            cert.display(),
            key.display()
        ))
    })
}

/// Serves `app` over TLS.
pub fn serve(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    config: RustlsConfig,
) -> Result<JoinHandle<()>, DaemonError> {
    let std_listener = listener.into_std()?;
    let server = axum_server::from_tcp_rustls(std_listener, config)?;
    Ok(tokio::spawn(async move {
        if let Err(e) = server.serve(app.into_make_service()).await {
            tracing::error!("TLS server: {e}");
        }
    }))
}
