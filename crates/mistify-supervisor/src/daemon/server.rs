//! `mistify-supervisord`: flags, basic auth, listener, systemd notification, signals.

use crate::daemon::{router, Manager};
use crate::manifest;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The longest the daemon waits for the start-up to settle before it serves.
const STARTUP_SETTLE: std::time::Duration = std::time::Duration::from_secs(5);

/// Errors that end the daemon (exit status 1).
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("bad --addr {0:?}: {1}")]
    Addr(String, String),
    #[error("cannot listen on {0}: {1}")]
    Listen(String, std::io::Error),
    #[error("password file {0}: {1}")]
    Passfile(PathBuf, String),
    #[error("--passwd: {0}")]
    Passwd(String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// govisord's flags, in long form.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "mistify-supervisord",
    version,
    about = "Supervises a hypervisor's daemons (govisor compatible REST API)"
)]
pub struct Options {
    /// Listen address: http://HOST:PORT, https://HOST:PORT (TLS) or HOST:PORT.
    #[arg(long, default_value = "http://127.0.0.1:8321")]
    pub addr: String,
    /// Configuration directory; manifests are read from DIR/services.
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    /// TLS certificate (PEM), default DIR/cert.pem.
    #[arg(long)]
    pub certfile: Option<PathBuf>,
    /// TLS key (PEM), default DIR/key.pem.
    #[arg(long)]
    pub keyfile: Option<PathBuf>,
    /// Password file of user:bcrypt-hash lines (default DIR/passwd when it exists).
    #[arg(long)]
    pub passfile: Option<PathBuf>,
    /// Adds a user: USER:PASSWORD.
    #[arg(long)]
    pub passwd: Vec<String>,
    /// Enable every loaded service at start-up.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub enable: bool,
    /// Manager name (also the HTTP Basic realm).
    #[arg(long, default_value = "govisord")]
    pub name: String,
    /// Append the consolidated log to this file.
    #[arg(long)]
    pub logfile: Option<PathBuf>,
}

/// The listen address, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addr {
    pub tls: bool,
    pub host_port: String,
}

pub fn parse_addr(addr: &str) -> Result<Addr, DaemonError> {
    let (tls, rest) = if let Some(r) = addr.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = addr.strip_prefix("http://") {
        (false, r)
    } else {
        (false, addr)
    };
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() || !rest.contains(':') {
        return Err(DaemonError::Addr(addr.into(), "expected HOST:PORT".into()));
    }
    Ok(Addr {
        tls,
        host_port: rest.to_string(),
    })
}

/// HTTP Basic authentication against bcrypt hashes; verified credentials are cached so
/// bcrypt does not run on every request (long polls included).
pub struct Auth {
    realm: String,
    users: HashMap<String, String>,
    verified: Mutex<HashSet<String>>,
}

impl Auth {
    pub fn new(realm: &str) -> Auth {
        Auth {
            realm: realm.to_string(),
            users: HashMap::new(),
            verified: Mutex::new(HashSet::new()),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Reads `user:hash` lines (`#` comments and blank lines skipped); any other line is
    /// an error naming the line.
    pub fn load_file(&mut self, path: &Path) -> Result<(), DaemonError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| DaemonError::Passfile(path.into(), e.to_string()))?;
        check_permissions(path);
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = line.split(':').collect();
            if fields.len() != 2 || fields[0].is_empty() || fields[1].is_empty() {
                return Err(DaemonError::Passfile(
                    path.into(),
                    format!("line {}: expected user:bcrypt-hash", i + 1),
                ));
            }
            self.users.insert(fields[0].into(), fields[1].into());
        }
        Ok(())
    }

    /// `--passwd user:password`.
    pub fn add_plain(&mut self, spec: &str) -> Result<(), DaemonError> {
        let (user, pass) = spec
            .split_once(':')
            .filter(|(u, _)| !u.is_empty())
            .ok_or_else(|| DaemonError::Passwd("expected USER:PASSWORD".into()))?;
        let hash = bcrypt::hash(pass, 10).map_err(|e| DaemonError::Passwd(e.to_string()))?;
        tracing::info!("added user {user} (hash {hash})");
        self.users.insert(user.into(), hash);
        Ok(())
    }

    fn check(&self, value: Option<&HeaderValue>) -> bool {
        let Some(value) = value.and_then(|v| v.to_str().ok()) else {
            return false;
        };
        if self
            .verified
            .lock()
            .map(|v| v.contains(value))
            .unwrap_or(false)
        {
            return true;
        }
        let Some(encoded) = value.strip_prefix("Basic ") else {
            return false;
        };
        let Some(decoded) = base64_decode(encoded.trim()) else {
            return false;
        };
        let Ok(text) = String::from_utf8(decoded) else {
            return false;
        };
        let Some((user, pass)) = text.split_once(':') else {
            return false;
        };
        let Some(hash) = self.users.get(user) else {
            return false;
        };
        let ok = bcrypt::verify(pass, hash).unwrap_or(false);
        if ok {
            if let Ok(mut v) = self.verified.lock() {
                if v.len() > 1000 {
                    v.clear();
                }
                v.insert(value.to_string());
            }
        }
        ok
    }
}

fn check_permissions(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(m) = std::fs::metadata(path) {
        if m.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                file = %path.display(),
                "the password file is readable by group or others; chmod 600 it"
            );
        }
    }
}

/// Standard base64 (with or without padding).
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(((acc >> bits) & 0xff) as u8);
        }
    }
    Some(out)
}

async fn auth_layer(State(auth): State<Arc<Auth>>, req: Request, next: Next) -> Response {
    if auth.check(req.headers().get(header::AUTHORIZATION)) {
        return next.run(req).await;
    }
    // govisord: `http.Error(w, "Unauthorized", 401)` after setting the realm.
    let mut r = crate::daemon::rest::text_error(StatusCode::UNAUTHORIZED, "Unauthorized");
    if let Ok(v) = HeaderValue::from_str(&format!("Basic realm=\"{}\"", auth.realm)) {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    r
}

/// The router with authentication in front when users are configured.
pub fn app(mgr: Arc<Manager>, auth: Option<Arc<Auth>>) -> axum::Router {
    let r = router(mgr);
    match auth {
        Some(a) if !a.is_empty() => r.layer(axum::middleware::from_fn_with_state(a, auth_layer)),
        _ => r,
    }
}

/// Sends `state` (e.g. `READY=1`) to `$NOTIFY_SOCKET` if it is set; whether it was sent.
pub fn sd_notify(state: &str) -> bool {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return false;
    };
    let Ok(sock) = std::os::unix::net::UnixDatagram::unbound() else {
        return false;
    };
    let bytes = path.as_encoded_bytes();
    let res = if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(name)
            .and_then(|a| sock.send_to_addr(state.as_bytes(), &a))
    } else {
        sock.send_to(state.as_bytes(), Path::new(&path))
    };
    match res {
        Ok(_) => true,
        Err(e) => {
            tracing::warn!("cannot notify systemd: {e}");
            false
        }
    }
}

fn load_and_log(mgr: &Manager, dir: &Path) -> Vec<manifest::Manifest> {
    let loaded = manifest::load_dir(dir);
    for e in &loaded.errors {
        tracing::error!("skipping manifest: {e}");
        mgr.log(&format!("[{}] Skipping manifest: {e}", mgr.name()));
        eprintln!("mistify-supervisord: skipping manifest: {e}");
    }
    loaded.manifests
}

/// Runs the daemon until SIGTERM or SIGINT (then stops everything in order and returns
/// `Ok`). SIGHUP reloads the manifests.
pub async fn run(opts: Options) -> Result<(), DaemonError> {
    use tokio::signal::unix::{signal, SignalKind};
    let addr = parse_addr(&opts.addr)?;
    let mgr = Manager::new(&opts.name);
    if let Some(f) = &opts.logfile {
        mgr.set_logfile(f.clone());
    }
    let mut auth = Auth::new(&opts.name);
    let passfile = opts.passfile.clone().or_else(|| {
        let p = opts.dir.join("passwd");
        p.is_file().then_some(p)
    });
    if let Some(p) = &passfile {
        auth.load_file(p)?;
    }
    for spec in &opts.passwd {
        auth.add_plain(spec)?;
    }
    let auth = Arc::new(auth);
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;

    let listener = tokio::net::TcpListener::bind(&addr.host_port)
        .await
        .map_err(|e| DaemonError::Listen(addr.host_port.clone(), e))?;
    let local = listener.local_addr()?;
    let app = app(mgr.clone(), Some(auth));
    // TLS material is checked before any service starts.
    let tls = if addr.tls {
        let cert = opts
            .certfile
            .clone()
            .unwrap_or_else(|| opts.dir.join("cert.pem"));
        let key = opts
            .keyfile
            .clone()
            .unwrap_or_else(|| opts.dir.join("key.pem"));
        Some(crate::daemon::tls::config(&cert, &key).await?)
    } else {
        None
    };

    for m in load_and_log(&mgr, &opts.dir) {
        let name = m.name.clone();
        if let Err(e) = mgr.add_manifest(m) {
            tracing::error!(service = %name, "cannot add: {e}");
        }
    }
    mgr.start_monitoring();
    if opts.enable {
        mgr.enable_all();
    }
    // Connections wait in the listen queue until the start-up has played out.
    mgr.settle_startup(STARTUP_SETTLE).await;
    let server = if let Some(config) = tls {
        match crate::daemon::tls::serve(listener, app, config) {
            Ok(s) => s,
            Err(e) => {
                mgr.shutdown().await;
                return Err(e);
            }
        }
    } else {
        tokio::spawn(async move {
            let limits = mistify_http::Limits::default();
            let forever = std::future::pending::<()>();
            if let Err(e) = mistify_http::serve(listener, app, limits, forever).await {
                tracing::error!("server: {e}");
            }
        })
    };
    tracing::info!(
        "listening on {}://{local}",
        if addr.tls { "https" } else { "http" }
    );
    sd_notify("READY=1\nSTATUS=supervising");

    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading manifests");
                sd_notify("RELOADING=1");
                mgr.log(&format!("[{}] Reloading manifests", mgr.name()));
                let manifests = load_and_log(&mgr, &opts.dir);
                mgr.reload(manifests, opts.enable).await;
                sd_notify("READY=1");
            }
        }
    }
    sd_notify("STOPPING=1");
    tracing::info!("stopping every service");
    mgr.shutdown().await;
    server.abort();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(
            parse_addr("http://127.0.0.1:8321").ok(),
            Some(Addr {
                tls: false,
                host_port: "127.0.0.1:8321".into()
            })
        );
        assert!(parse_addr("https://[::1]:1").is_ok_and(|a| a.tls));
        assert!(parse_addr("localhost:80").is_ok_and(|a| !a.tls));
        assert!(parse_addr("http://").is_err());
    }

    #[test]
    fn base64() {
        assert_eq!(
            base64_decode("ZGVtbzpkZW1v").as_deref(),
            Some(&b"demo:demo"[..])
        );
        assert_eq!(base64_decode("YQ==").as_deref(), Some(&b"a"[..]));
        assert!(base64_decode("**").is_none());
    }
}
