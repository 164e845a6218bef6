//! The bearer-token gate every daemon with `--token-file` puts in front of its routes.
//!
//! A request needs `Authorization: Bearer <token>` with a token of the file (401
//! otherwise); a read-only (`ro:`) token may only `GET` and `HEAD` (403 otherwise).
//! `/healthz` stays open so supervisors and load balancers can probe without a secret.
//! The file format is [`mistify_types::token`]; [`Tokens`] keeps the file in force and
//! reads it again on SIGHUP (an unusable file then keeps the previous tokens and logs
//! why).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use mistify_types::token::{Access, TokenFile, TokenFileError};
use mistify_types::ErrorBody;

/// The token file in force.
#[derive(Debug)]
pub struct Tokens {
    path: Option<PathBuf>,
    current: RwLock<Arc<TokenFile>>,
}

impl Tokens {
    /// Loads `path`; an unusable file is an error.
    pub fn load(path: &Path) -> Result<Tokens, TokenFileError> {
        Ok(Tokens {
            path: Some(path.to_path_buf()),
            current: RwLock::new(Arc::new(TokenFile::load(path)?)),
        })
    }

    /// Tokens that are not read from a file (never reloaded).
    pub fn fixed(file: TokenFile) -> Tokens {
        Tokens {
            path: None,
            current: RwLock::new(Arc::new(file)),
        }
    }

    /// Reads the file again; on error the tokens in force stay. The number of tokens now.
    pub fn reload(&self) -> Result<usize, TokenFileError> {
        let Some(path) = &self.path else {
            return Ok(self.current().len());
        };
        let file = TokenFile::load(path)?;
        let n = file.len();
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(file);
        Ok(n)
    }

    /// The tokens in force.
    pub fn current(&self) -> Arc<TokenFile> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Reloads on every SIGHUP, for the life of the process.
    pub fn reload_on_sighup(self: &Arc<Self>) -> std::io::Result<()> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hup = signal(SignalKind::hangup())?;
        let tokens = self.clone();
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                let path = tokens.path.as_deref().map(Path::display);
                match tokens.reload() {
                    Ok(n) => tracing::info!(tokens = n, path = ?path, "token file reloaded"),
                    Err(e) => {
                        tracing::error!("token file not reloaded, the previous tokens stay: {e}")
                    }
                }
            }
        });
        Ok(())
    }
}

/// How a refused request is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The agent's JSON error body, `WWW-Authenticate: Bearer realm="<realm>"`.
    Json { realm: &'static str },
    /// A sub-agent's one line of text, `WWW-Authenticate: Bearer`.
    Text,
}

/// The gate: the tokens and how to refuse.
#[derive(Debug, Clone)]
pub struct Gate {
    pub tokens: Arc<Tokens>,
    pub refusal: Refusal,
}

impl Gate {
    fn refuse(&self, status: StatusCode, message: &str) -> Response {
        match self.refusal {
            Refusal::Json { realm } => {
                let body = ErrorBody::new(status.as_u16(), message);
                let mut text = serde_json::to_vec(&body).unwrap_or_default();
                text.push(b'\n');
                let mut response = (
                    status,
                    [(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    )],
                    text,
                )
                    .into_response();
                if status == StatusCode::UNAUTHORIZED {
                    if let Ok(v) = HeaderValue::from_str(&format!("Bearer realm=\"{realm}\"")) {
                        response.headers_mut().insert(header::WWW_AUTHENTICATE, v);
                    }
                }
                response
            }
            Refusal::Text => (
                status,
                [(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))],
                format!("{} {message}\n", status.as_u16()),
            )
                .into_response(),
        }
    }
}

/// The bearer token of a request, if it sent one (`Bearer` in any case).
pub fn bearer_token(request: &Request) -> Option<&str> {
    let value = request
        .headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// The middleware (`axum::middleware::from_fn_with_state(gate, require_token)`).
pub async fn require_token(State(gate): State<Gate>, request: Request, next: Next) -> Response {
    if request.uri().path() == "/healthz" {
        return next.run(request).await;
    }
    let access = bearer_token(&request).map(|t| gate.tokens.current().access(t.as_bytes()));
    let text = gate.refusal == Refusal::Text;
    match access {
        None if text => gate.refuse(
            StatusCode::UNAUTHORIZED,
            "unauthorized: this sub-agent requires the agent's token",
        ),
        None => gate.refuse(
            StatusCode::UNAUTHORIZED,
            "authentication required: send Authorization: Bearer <token>",
        ),
        Some(None) if text => gate.refuse(
            StatusCode::UNAUTHORIZED,
            "unauthorized: this sub-agent requires the agent's token",
        ),
        Some(None) => gate.refuse(StatusCode::UNAUTHORIZED, "unknown token"),
        Some(Some(Access::ReadOnly))
            if request.method() != Method::GET && request.method() != Method::HEAD =>
        {
            gate.refuse(
                StatusCode::FORBIDDEN,
                "this token may only read (GET): it is a read-only (ro:) token",
            )
        }
        Some(Some(_)) => next.run(request).await,
    }
}

/// `router` behind the gate.
pub fn guarded(router: axum::Router, gate: Gate) -> axum::Router {
    router.layer(axum::middleware::from_fn_with_state(gate, require_token))
}
