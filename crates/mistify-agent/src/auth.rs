//! Bearer tokens for the REST API (`--token-file`): one token per line, `ro:` in front of
//! a token that may only read (`GET`, `HEAD`); blank lines and `#` comments are skipped.
//! The file is read at start (an unusable file stops the agent) and again on SIGHUP (an
//! unusable file then keeps the tokens in force and logs why). `/healthz` stays open so
//! supervisors and load balancers can probe the agent without a secret.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;

use mistify_client::ErrorBody;
use mistify_rpc::http::constant_time_eq;

use crate::error::json_response;

/// Shortest token accepted: a guessable token is no protection.
pub const MIN_TOKEN_LEN: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("cannot read the token file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {reason}")]
    Line {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("{path}: no token in the file")]
    Empty { path: PathBuf },
}

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    ReadWrite,
    ReadOnly,
}

/// A parsed token file.
#[derive(Debug, Default)]
pub struct Tokens {
    entries: Vec<(Vec<u8>, Access)>,
}

impl Tokens {
    /// Parses the text of a token file; `path` names it in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Tokens, AuthError> {
        let mut entries = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (token, access) = match line.strip_prefix("ro:") {
                Some(t) => (t, Access::ReadOnly),
                None => (line, Access::ReadWrite),
            };
            let bad = |reason: String| AuthError::Line {
                path: path.to_path_buf(),
                line: i + 1,
                reason,
            };
            if token.len() < MIN_TOKEN_LEN {
                return Err(bad(format!(
                    "token too short ({} characters, at least {MIN_TOKEN_LEN})",
                    token.len()
                )));
            }
            if !token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(bad(
                    "a token is printable ASCII without spaces (it travels in a header)".into(),
                ));
            }
            entries.push((token.as_bytes().to_vec(), access));
        }
        if entries.is_empty() {
            return Err(AuthError::Empty {
                path: path.to_path_buf(),
            });
        }
        Ok(Tokens { entries })
    }

    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<Tokens, AuthError> {
        let text = std::fs::read_to_string(path).map_err(|source| AuthError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Tokens::parse(path, &text)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The access of `token`, comparing every entry in constant time per entry.
    pub fn access(&self, token: &[u8]) -> Option<Access> {
        let mut found = None;
        for (known, access) in &self.entries {
            if constant_time_eq(known, token) && found.is_none() {
                found = Some(*access);
            }
        }
        found
    }
}

/// The token file in force, reloadable.
#[derive(Debug)]
pub struct Auth {
    path: PathBuf,
    tokens: RwLock<Arc<Tokens>>,
}

impl Auth {
    /// Loads `path`; an unusable file is an error.
    pub fn load(path: &Path) -> Result<Auth, AuthError> {
        let tokens = Tokens::load(path)?;
        Ok(Auth {
            path: path.to_path_buf(),
            tokens: RwLock::new(Arc::new(tokens)),
        })
    }

    /// Reads the file again; on error the tokens in force stay. The number of tokens now.
    pub fn reload(&self) -> Result<usize, AuthError> {
        let tokens = Tokens::load(&self.path)?;
        let n = tokens.len();
        let mut guard = self.tokens.write().unwrap_or_else(|e| e.into_inner());
        *guard = Arc::new(tokens);
        Ok(n)
    }

    fn current(&self) -> Arc<Tokens> {
        self.tokens
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Reloads on every SIGHUP, for the life of the process.
    pub fn reload_on_sighup(self: &Arc<Self>) -> std::io::Result<()> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hup = signal(SignalKind::hangup())?;
        let auth = self.clone();
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                match auth.reload() {
                    Ok(n) => {
                        tracing::info!(tokens = n, path = %auth.path.display(), "token file reloaded")
                    }
                    Err(e) => {
                        tracing::error!("token file not reloaded, the previous tokens stay: {e}")
                    }
                }
            }
        });
        Ok(())
    }
}

fn refuse(status: StatusCode, message: &str) -> Response {
    let mut response = json_response(status, &ErrorBody::new(status.as_u16(), message));
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"mistify-agent\""),
        );
    }
    response
}

/// Middleware: 401 without a known bearer token, 403 for a read-only token that does
/// more than read. `/healthz` is open.
pub async fn require_token(
    State(auth): State<Arc<Auth>>,
    request: Request,
    next: Next,
) -> Response {
    if request.uri().path() == "/healthz" {
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| token.trim().to_string())
        });
    let Some(token) = presented else {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "authentication required: send Authorization: Bearer <token>",
        );
    };
    match auth.current().access(token.as_bytes()) {
        None => refuse(StatusCode::UNAUTHORIZED, "unknown token"),
        Some(Access::ReadOnly)
            if request.method() != Method::GET && request.method() != Method::HEAD =>
        {
            refuse(
                StatusCode::FORBIDDEN,
                "this token may only read (GET): it is a read-only (ro:) token",
            )
        }
        Some(_) => next.run(request).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Tokens, AuthError> {
        Tokens::parse(Path::new("tokens"), text)
    }

    #[test]
    fn tokens_parse_with_comments_and_read_only_prefix() {
        let t = parse("# operators\n\nabcdefghijklmnopq\nro:readonlytoken-12345\n").expect("ok");
        assert_eq!(t.len(), 2);
        assert_eq!(t.access(b"abcdefghijklmnopq"), Some(Access::ReadWrite));
        assert_eq!(t.access(b"readonlytoken-12345"), Some(Access::ReadOnly));
        assert_eq!(t.access(b"ro:readonlytoken-12345"), None);
        assert_eq!(t.access(b"abcdefghijklmnop"), None);
        assert_eq!(t.access(b""), None);
    }

    #[test]
    fn bad_token_files_name_the_line() {
        let e = parse("abcdefghijklmnopq\nshort\n").unwrap_err().to_string();
        assert!(e.contains("tokens:2") && e.contains("too short"), "{e}");
        let e = parse("abcdefgh ijklmnopq\n").unwrap_err().to_string();
        assert!(e.contains("tokens:1") && e.contains("printable"), "{e}");
        let e = parse("# nothing\n\n").unwrap_err().to_string();
        assert!(e.contains("no token"), "{e}");
    }
}
