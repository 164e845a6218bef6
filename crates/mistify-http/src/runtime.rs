//! What every daemon's `main` sets up: the log subscriber and the shutdown signal.

/// Resolves on SIGTERM or Ctrl-C (SIGINT).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!("cannot listen for Ctrl-C: {e}");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("Ctrl-C received, shutting down"),
        _ = term => tracing::info!("SIGTERM received, shutting down"),
    }
}

/// Log output format of the daemons.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line (what the Go daemons wrote), for log shippers.
    Json,
    /// Human-readable lines (the default; coloured only on a terminal): what an operator
    /// reads on a terminal and in the supervisor's log view.
    #[default]
    Pretty,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "json" => Ok(LogFormat::Json),
            "pretty" | "text" => Ok(LogFormat::Pretty),
            other => Err(format!("unknown log format {other:?} (json or pretty)")),
        }
    }
}

/// The Go daemons' level names as tracing filters: `warning` is `warn`; `critical`,
/// `fatal` and `panic` are `error`; anything else is passed on as it is.
pub fn go_level(name: &str) -> &str {
    match name {
        "warning" => "warn",
        "critical" | "fatal" | "panic" => "error",
        other => other,
    }
}

/// Installs the global tracing subscriber: `level` (e.g. `info`, or a full `RUST_LOG`
/// style filter), overridden by `RUST_LOG` when set. Returns an error for a bad filter.
pub fn init_tracing(level: &str, format: LogFormat) -> Result<(), String> {
    use tracing_subscriber::EnvFilter;
    let filter = match std::env::var("RUST_LOG") {
        Ok(env) if !env.is_empty() => EnvFilter::try_new(env),
        _ => EnvFilter::try_new(level),
    }
    .map_err(|e| format!("invalid log level {level:?}: {e}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Pretty => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
    };
    result.map_err(|e| format!("cannot install the log subscriber: {e}"))
}
