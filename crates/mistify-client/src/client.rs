//! An async client of the mistify-agent REST API: one method per agent route.
//!
//! Every call has a deadline (30 s unless [`Client::with_timeout`] says otherwise) that
//! covers connecting, sending and reading the whole answer. Two calls differ:
//! [`Client::wait_job`] adds its long-poll wait to the deadline, and
//! [`Client::download_snapshot`] uses the deadline for the response headers and then as
//! an *idle* limit between body chunks, so a large download may take as long as it needs
//! while data keeps arriving.
//!
//! Ids that end up in the URL path (guest, job, image, snapshot, disk) are checked before
//! anything is sent: an empty id, or one holding `/`, `..`, `?`, `#`, a backslash,
//! whitespace or a control character, is refused with [`ClientError::InvalidInput`].
//! Accepted ids are percent-encoded as one path segment each.
//!
//! [`Client::with_strict_fields`] asks the agent to refuse a request body with keys it does
//! not know (`?fieldValidation=Strict`) instead of accepting it with a `Warning` header per
//! key; [`Client::on_warning`] is told of every `Warning` header an answer carries.
//!
//! Any 2xx status counts as success (the Go agent answers its asynchronous snapshot calls
//! with 200 and a `null` body, the Rust agent with 202). Everything else becomes
//! [`ClientError::Api`], carrying the agent's JSON error body when it sent one.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use reqwest::header::{HeaderMap, ACCEPT, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use url::Url;

use mistify_types::{
    ErrorBody, Guest, GuestAction, GuestCpuMetrics, GuestDiskMetrics, GuestNicMetrics, Image,
    ImageRequest, ImageResponse, Job, Snapshot, SnapshotRequest,
};

/// The header in which the agent names the job (pipeline) it started for a request.
pub const JOB_ID_HEADER: &str = "X-Guest-Job-ID";

/// The per-call deadline used unless [`Client::with_timeout`] sets another.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// A metadata update: `Some(value)` sets a key, `None` (sent as JSON `null`) deletes it.
pub type MetadataPatch = BTreeMap<String, Option<String>>;

/// Everything that can go wrong in a call.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The caller's input was refused before any request was sent (bad id, bad base URL,
    /// unencodable body).
    #[error("invalid input: {0}")]
    InvalidInput(String),

    /// The request could not be sent or the answer could not be read.
    #[error("{what} failed: {source}")]
    Transport {
        /// The route, e.g. `GET /guests/abc`.
        what: String,
        #[source]
        source: reqwest::Error,
    },

    /// No answer (or, for downloads, no further data) within the allowed time.
    #[error("{what} timed out after {after:?}")]
    Timeout {
        /// The route, e.g. `GET /guests/abc`.
        what: String,
        after: Duration,
    },

    /// The agent answered with a status outside 2xx.
    #[error("agent answered {status}: {}", api_message(body))]
    Api {
        status: u16,
        /// The agent's JSON error body; for a plain-text answer, a body built from the
        /// trimmed text with `code` = the status.
        body: ErrorBody,
        /// The raw text of the answer.
        text: String,
        /// The agent's `Retry-After` (a full queue, a draining agent), if it sent one.
        retry_after: Option<Duration>,
    },

    /// The agent answered 2xx but the body did not decode as the expected JSON.
    #[error("cannot decode the answer to {what}: {source}")]
    Decode {
        /// The route, e.g. `GET /guests`.
        what: String,
        #[source]
        source: serde_json::Error,
    },
}

fn api_message(body: &ErrorBody) -> &str {
    if body.message.is_empty() {
        "(no message)"
    } else {
        &body.message
    }
}

impl ClientError {
    /// The HTTP status of an [`ClientError::Api`] error, `None` for every other kind.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The agent's error message for an [`ClientError::Api`] error; for other kinds the
    /// error's own description.
    pub fn message(&self) -> Cow<'_, str> {
        match self {
            ClientError::Api { body, .. } => Cow::Borrowed(body.message.as_str()),
            ClientError::InvalidInput(m) => Cow::Borrowed(m.as_str()),
            other => Cow::Owned(other.to_string()),
        }
    }

    /// How long the agent asked to wait before retrying (`Retry-After` of a 503).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ClientError::Api { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// True for an agent answer with status 404.
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }

    /// True for [`ClientError::Timeout`].
    pub fn is_timeout(&self) -> bool {
        matches!(self, ClientError::Timeout { .. })
    }
}

/// The answer to a call that queued (or may queue) work on the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted<T> {
    /// The job id from the `X-Guest-Job-ID` header, if the agent sent one. Asynchronous
    /// work can be followed with [`Client::get_job`] or [`Client::wait_job`].
    pub job_id: Option<String>,
    /// The HTTP status of the answer (202, or 200 for the Go agent's snapshot routes).
    pub status: u16,
    /// The decoded body.
    pub body: T,
}

impl From<mistify_types::UnknownGuestAction> for ClientError {
    fn from(e: mistify_types::UnknownGuestAction) -> Self {
        ClientError::InvalidInput(e.to_string())
    }
}

/// The body of a snapshot download, read chunk by chunk.
///
/// Implements [`Stream`]; each item is a chunk or an error. A stall longer than the
/// client's timeout between two chunks ends the stream with [`ClientError::Timeout`].
pub struct DownloadStream {
    /// The job id from the `X-Guest-Job-ID` header.
    pub job_id: Option<String>,
    /// The length announced by the agent, if any (the agent streams chunked, so usually
    /// `None`).
    pub content_length: Option<u64>,
    inner: Pin<Box<dyn Stream<Item = Result<Bytes, ClientError>> + Send>>,
}

impl DownloadStream {
    /// The bare chunk stream.
    pub fn into_stream(self) -> Pin<Box<dyn Stream<Item = Result<Bytes, ClientError>> + Send>> {
        self.inner
    }

    /// Reads the whole download into memory.
    pub async fn collect_bytes(mut self) -> Result<Vec<u8>, ClientError> {
        let mut all = Vec::new();
        while let Some(chunk) = self.inner.next().await {
            all.extend_from_slice(&chunk?);
        }
        Ok(all)
    }
}

impl Stream for DownloadStream {
    type Item = Result<Bytes, ClientError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

impl fmt::Debug for DownloadStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DownloadStream")
            .field("job_id", &self.job_id)
            .field("content_length", &self.content_length)
            .finish_non_exhaustive()
    }
}

/// An async client of one agent. Cloning is cheap; clones share the connection pool.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Arc<Url>,
    timeout: Duration,
    /// Sent with every request (the bearer token).
    headers: reqwest::header::HeaderMap,
    /// For `https://` agents: the CA to trust and the client certificate, if any.
    tls: Option<Arc<rustls::ClientConfig>>,
    /// Whether requests with a JSON body carry `?fieldValidation=Strict`.
    strict_fields: bool,
    /// Told of each `Warning` header of an answer.
    on_warning: Option<WarningHook>,
}

/// The callback of [`Client::on_warning`].
#[derive(Clone)]
struct WarningHook(Arc<dyn Fn(&str) + Send + Sync>);

impl fmt::Debug for WarningHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WarningHook(..)")
    }
}

/// The text of a `Warning` header value (RFC 7234: `code agent "text" ["date"]`), the
/// quoted text unescaped, e.g. `unknown field "x"` for
/// `299 - "unknown field \"x\""`; a value not of that form is returned trimmed.
pub fn warning_text(value: &str) -> String {
    let value = value.trim();
    let quoted = value
        .split_once(' ')
        .and_then(|(code, rest)| {
            (code.len() == 3 && code.bytes().all(|b| b.is_ascii_digit())).then_some(rest)
        })
        .and_then(|rest| rest.trim_start().split_once(' '))
        .map(|(_agent, rest)| rest.trim_start())
        .filter(|rest| rest.starts_with('"'));
    let Some(quoted) = quoted else {
        return value.to_string();
    };
    let mut text = String::new();
    let mut chars = quoted[1..].chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(escaped) => text.push(escaped),
                None => return value.to_string(),
            },
            '"' => return text,
            c => text.push(c),
        }
    }
    // No closing quote.
    value.to_string()
}

/// PEM files for an `https://` agent (see [`Client::with_tls`]).
#[derive(Debug, Clone, Default)]
pub struct TlsFiles {
    /// The CA that signed the agent's certificate (default: the system's trusted CAs).
    pub ca: Option<std::path::PathBuf>,
    /// A client certificate (chain), for an agent started with `--client-ca`.
    pub cert: Option<std::path::PathBuf>,
    /// The client certificate's private key.
    pub key: Option<std::path::PathBuf>,
}

impl TlsFiles {
    /// Whether any file is set.
    pub fn is_empty(&self) -> bool {
        self.ca.is_none() && self.cert.is_none() && self.key.is_none()
    }

    /// The rustls configuration these files describe (ring provider). Unreadable or
    /// empty files are [`ClientError::InvalidInput`] naming the file.
    pub fn client_config(&self) -> Result<Arc<rustls::ClientConfig>, ClientError> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let bad = |what: &str, path: &std::path::Path, e: &dyn std::fmt::Display| {
            ClientError::InvalidInput(format!("{what} {}: {e}", path.display()))
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ClientError::InvalidInput(format!("TLS: {e}")))?;
        let mut roots = rustls::RootCertStore::empty();
        let (ca, system) = match &self.ca {
            Some(ca) => (ca.clone(), false),
            // Debian's bundle of the system's trusted CAs.
            None => (
                std::path::PathBuf::from("/etc/ssl/certs/ca-certificates.crt"),
                true,
            ),
        };
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&ca)
            .and_then(|c| c.collect())
            .map_err(|e| bad("CA", &ca, &e))?;
        for c in certs {
            if let Err(e) = roots.add(c) {
                if !system {
                    return Err(bad("CA", &ca, &e));
                }
            }
        }
        if roots.is_empty() {
            return Err(bad("CA", &ca, &"no certificate in the file"));
        }
        let builder = builder.with_root_certificates(roots);
        let mut config = match (&self.cert, &self.key) {
            (None, None) => builder.with_no_client_auth(),
            (Some(cert), Some(key)) => {
                let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                    .and_then(|c| c.collect())
                    .map_err(|e| bad("client certificate", cert, &e))?;
                let private =
                    PrivateKeyDer::from_pem_file(key).map_err(|e| bad("client key", key, &e))?;
                builder
                    .with_client_auth_cert(chain, private)
                    .map_err(|e| bad("client certificate", cert, &e))?
            }
            _ => {
                return Err(ClientError::InvalidInput(
                    "a client certificate needs its key, and a key its certificate".to_string(),
                ))
            }
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// A successful (2xx) answer, read completely.
struct Reply {
    what: String,
    status: u16,
    job_id: Option<String>,
    body: Bytes,
}

impl Reply {
    fn json<T: DeserializeOwned>(&self) -> Result<T, ClientError> {
        serde_json::from_slice(&self.body).map_err(|source| ClientError::Decode {
            what: self.what.clone(),
            source,
        })
    }

    /// Decodes `T`, taking a JSON `null` as `T::default()` (Go's nil slices and maps).
    fn json_or_default<T: DeserializeOwned + Default>(&self) -> Result<T, ClientError> {
        Ok(self.json::<Option<T>>()?.unwrap_or_default())
    }

    fn accepted<T>(self, body: T) -> Accepted<T> {
        Accepted {
            job_id: self.job_id,
            status: self.status,
            body,
        }
    }
}

/// Refuses ids that cannot stand as one URL path segment (the agent's own id rule,
/// [`mistify_types::id::check`]).
fn check_segment(what: &'static str, value: &str) -> Result<(), ClientError> {
    mistify_types::id::check(what, value).map_err(|e| ClientError::InvalidInput(e.to_string()))
}

fn job_id_of(headers: &HeaderMap) -> Option<String> {
    headers
        .get(JOB_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

/// `GET /guests/abc?limit=3`: how errors name a request.
fn describe(method: &Method, url: &Url) -> String {
    match url.query() {
        Some(q) => format!("{method} {}?{q}", url.path()),
        None => format!("{method} {}", url.path()),
    }
}

/// Builds the [`ClientError::Api`] for a non-2xx answer.
/// The `Retry-After` header in seconds, if present and numeric.
fn retry_after_of(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

fn api_error(status: StatusCode, raw: &[u8], retry_after: Option<Duration>) -> ClientError {
    let code = status.as_u16();
    let text = String::from_utf8_lossy(raw).into_owned();
    let body = parse_error_body(raw)
        .map(|mut b| {
            if b.code == 0 {
                b.code = code;
            }
            b
        })
        .unwrap_or_else(|| {
            let trimmed = text.trim();
            let message = if trimmed.is_empty() {
                status.canonical_reason().unwrap_or_default()
            } else {
                trimmed
            };
            ErrorBody::new(code, message)
        });
    ClientError::Api {
        status: code,
        body,
        text,
        retry_after,
    }
}

/// The agent's `{"message","code","stack"}` body, if `raw` is one (an object with a
/// string `message`).
fn parse_error_body(raw: &[u8]) -> Option<ErrorBody> {
    let value: serde_json::Value = serde_json::from_slice(raw).ok()?;
    if !value
        .get("message")
        .is_some_and(serde_json::Value::is_string)
    {
        return None;
    }
    serde_json::from_value(value).ok()
}

fn encode<T: Serialize + ?Sized>(body: &T) -> Result<Vec<u8>, ClientError> {
    serde_json::to_vec(body)
        .map_err(|e| ClientError::InvalidInput(format!("cannot encode the request body: {e}")))
}

/// The HTTP client under [`Client`]: our user agent, `headers` on every request, and
/// `tls` for `https://` agents (reqwest's default, the system's CAs, when `None`).
fn http_client(
    headers: reqwest::header::HeaderMap,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> Result<reqwest::Client, ClientError> {
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("mistify-client/", env!("CARGO_PKG_VERSION")))
        .default_headers(headers);
    if let Some(config) = tls {
        builder = builder.tls_backend_preconfigured((**config).clone());
    }
    builder.build().map_err(|source| ClientError::Transport {
        what: "building the HTTP client".to_string(),
        source,
    })
}

impl Client {
    /// A client of the agent at `base_url`: `http://host:port` or `https://host:port`
    /// (optionally with a path prefix), or a bare `host:port`, which means plain HTTP.
    /// An `https://` agent is verified against the system's CAs unless
    /// [`Client::with_tls`] names its CA.
    pub fn new(base_url: &str) -> Result<Client, ClientError> {
        let base = parse_base(base_url)?;
        Ok(Client {
            http: http_client(reqwest::header::HeaderMap::new(), None)?,
            base: Arc::new(base),
            timeout: DEFAULT_TIMEOUT,
            headers: reqwest::header::HeaderMap::new(),
            tls: None,
            strict_fields: false,
            on_warning: None,
        })
    }

    /// The same client asking the agent to refuse request bodies with keys it does not
    /// know: every request that sends a JSON body carries `?fieldValidation=Strict`, and
    /// such a body is answered 400 naming each key (by default the agent accepts it and
    /// answers a `Warning` header per unknown key).
    pub fn with_strict_fields(mut self) -> Client {
        self.strict_fields = true;
        self
    }

    /// The same client calling `hook` with the value of each `Warning` header of every
    /// answer (2xx or not), e.g. `299 - "unknown field \"x\""`; [`warning_text`] gives
    /// its text.
    pub fn on_warning(mut self, hook: impl Fn(&str) + Send + Sync + 'static) -> Client {
        self.on_warning = Some(WarningHook(Arc::new(hook)));
        self
    }

    /// Passes the `Warning` headers of an answer to the hook, if any.
    fn report_warnings(&self, headers: &HeaderMap) {
        if let Some(WarningHook(hook)) = &self.on_warning {
            for value in headers.get_all(reqwest::header::WARNING) {
                hook(&String::from_utf8_lossy(value.as_bytes()));
            }
        }
    }

    /// The same client trusting `files.ca` for the agent's certificate and presenting
    /// `files.cert`/`files.key` (for an agent started with `--client-ca`). Unreadable
    /// files are [`ClientError::InvalidInput`] naming the file.
    pub fn with_tls(self, files: &TlsFiles) -> Result<Client, ClientError> {
        self.with_tls_config(files.client_config()?)
    }

    /// As [`Client::with_tls`], with a configuration already loaded by
    /// [`TlsFiles::client_config`] (for callers that make many clients).
    pub fn with_tls_config(
        mut self,
        config: Arc<rustls::ClientConfig>,
    ) -> Result<Client, ClientError> {
        self.http = http_client(self.headers.clone(), Some(&config))?;
        self.tls = Some(config);
        Ok(self)
    }

    /// The same client sending `Authorization: Bearer <token>` with every request (for an
    /// agent started with `--token-file`). A token with spaces or control characters is
    /// refused with [`ClientError::InvalidInput`].
    pub fn with_token(mut self, token: &str) -> Result<Client, ClientError> {
        let token = token.trim();
        if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ClientError::InvalidInput(
                "a token is non-empty printable ASCII without spaces".to_string(),
            ));
        }
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|e| ClientError::InvalidInput(e.to_string()))?;
        value.set_sensitive(true);
        self.headers.insert(reqwest::header::AUTHORIZATION, value);
        self.http = http_client(self.headers.clone(), self.tls.as_ref())?;
        Ok(self)
    }

    /// The same client with another per-call deadline (and download idle limit).
    pub fn with_timeout(mut self, timeout: Duration) -> Client {
        self.timeout = timeout;
        self
    }

    /// The per-call deadline in force.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The agent's base URL.
    pub fn base_url(&self) -> &Url {
        &self.base
    }

    // ----- plumbing -------------------------------------------------------------------

    /// The URL of `segments` below the base, each segment percent-encoded. Segments
    /// coming from callers must have passed [`check_segment`].
    fn url(&self, segments: &[&str], query: &[(&str, String)]) -> Result<Url, ClientError> {
        let mut url = Url::clone(&self.base);
        url.path_segments_mut()
            .map_err(|()| {
                ClientError::InvalidInput(format!("base URL {} cannot take a path", self.base))
            })?
            .pop_if_empty()
            .extend(segments);
        if !query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        Ok(url)
    }

    fn transport_or_timeout(what: String, source: reqwest::Error, after: Duration) -> ClientError {
        if source.is_timeout() {
            ClientError::Timeout { what, after }
        } else {
            ClientError::Transport { what, source }
        }
    }

    /// Sends one request with a JSON body (if any), reads the whole answer within
    /// `timeout` and turns a non-2xx status into [`ClientError::Api`].
    async fn call(
        &self,
        method: Method,
        url: Url,
        body: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<Reply, ClientError> {
        let what = describe(&method, &url);
        let mut request = self
            .http
            .request(method, url)
            .timeout(timeout)
            .header(ACCEPT, "application/json");
        if let Some(body) = body {
            request = request.header(CONTENT_TYPE, "application/json").body(body);
        }
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => return Err(Self::transport_or_timeout(what, e, timeout)),
        };
        let status = response.status();
        self.report_warnings(response.headers());
        let job_id = job_id_of(response.headers());
        let retry_after = retry_after_of(response.headers());
        let body = match response.bytes().await {
            Ok(b) => b,
            Err(e) => return Err(Self::transport_or_timeout(what, e, timeout)),
        };
        if !status.is_success() {
            return Err(api_error(status, &body, retry_after));
        }
        Ok(Reply {
            what,
            status: status.as_u16(),
            job_id,
            body,
        })
    }

    async fn get(&self, url: Url) -> Result<Reply, ClientError> {
        self.call(Method::GET, url, None, self.timeout).await
    }

    /// Sends `body` as JSON (with `?fieldValidation=Strict` when the client asks for it).
    async fn send_json<B: Serialize + ?Sized>(
        &self,
        method: Method,
        mut url: Url,
        body: &B,
    ) -> Result<Reply, ClientError> {
        let body = encode(body)?;
        if self.strict_fields {
            url.query_pairs_mut()
                .append_pair("fieldValidation", "Strict");
        }
        self.call(method, url, Some(body), self.timeout).await
    }

    /// `["guests", id]` or `["guests", id, "disks", disk]`, checked.
    fn snapshot_base<'a>(id: &'a str, disk: Option<&'a str>) -> Result<Vec<&'a str>, ClientError> {
        check_segment("guest id", id)?;
        let mut segments = vec!["guests", id];
        if let Some(disk) = disk {
            check_segment("disk", disk)?;
            segments.extend(["disks", disk]);
        }
        segments.push("snapshots");
        Ok(segments)
    }

    // ----- health and agent metadata --------------------------------------------------

    /// `GET /healthz`: the agent's health report as free-form JSON (a non-JSON answer is
    /// returned as a JSON string). A `503` carrying a JSON report (the agent answers, a
    /// sub-agent that serves guests does not) is a report too: see its `status` and
    /// `serves_guests`.
    pub async fn healthz(&self) -> Result<serde_json::Value, ClientError> {
        let body = match self.get(self.url(&["healthz"], &[])?).await {
            Ok(reply) => reply.body,
            Err(ClientError::Api {
                status: 503, text, ..
            }) if serde_json::from_str::<serde_json::Value>(&text)
                .is_ok_and(|v| v.get("serves_guests").is_some()) =>
            {
                Bytes::from(text)
            }
            Err(e) => return Err(e),
        };
        Ok(serde_json::from_slice(&body).unwrap_or_else(|_| {
            serde_json::Value::String(String::from_utf8_lossy(&body).trim().to_string())
        }))
    }

    /// `GET /metadata`: the hypervisor's metadata.
    pub async fn get_metadata(&self) -> Result<BTreeMap<String, String>, ClientError> {
        self.get(self.url(&["metadata"], &[])?)
            .await?
            .json_or_default()
    }

    /// `PATCH /metadata`: sets or (with `None`) deletes keys; returns the whole metadata
    /// afterwards.
    pub async fn patch_metadata(
        &self,
        patch: &MetadataPatch,
    ) -> Result<BTreeMap<String, String>, ClientError> {
        let url = self.url(&["metadata"], &[])?;
        self.send_json(Method::PATCH, url, patch)
            .await?
            .json_or_default()
    }

    // ----- images -----------------------------------------------------------------

    /// `GET /images[?type=kind]`: the images of every back-end, or of one type
    /// (`container`). An empty `kind` lists every type.
    pub async fn list_images(&self, kind: Option<&str>) -> Result<Vec<Image>, ClientError> {
        let query: Vec<(&str, String)> = kind
            .filter(|k| !k.is_empty())
            .map(|k| ("type", k.to_string()))
            .into_iter()
            .collect();
        self.get(self.url(&["images"], &query)?)
            .await?
            .json_or_default()
    }

    /// `POST /images`: asks the agent to fetch an image; the work runs as a job.
    pub async fn fetch_image(
        &self,
        request: &ImageRequest,
    ) -> Result<Accepted<ImageResponse>, ClientError> {
        let url = self.url(&["images"], &[])?;
        let reply = self.send_json(Method::POST, url, request).await?;
        let body = reply.json_or_default()?;
        Ok(reply.accepted(body))
    }

    /// `GET /images/{id}`: one image.
    pub async fn get_image(&self, id: &str) -> Result<Image, ClientError> {
        check_segment("image id", id)?;
        self.get(self.url(&["images", id], &[])?).await?.json()
    }

    /// `DELETE /images/{id}`: deletes an image as a job.
    pub async fn delete_image(&self, id: &str) -> Result<Accepted<()>, ClientError> {
        check_segment("image id", id)?;
        let url = self.url(&["images", id], &[])?;
        let reply = self.call(Method::DELETE, url, None, self.timeout).await?;
        Ok(reply.accepted(()))
    }

    // ----- jobs -----------------------------------------------------------------------

    fn limit_query(limit: Option<u32>) -> Vec<(&'static str, String)> {
        limit
            .map(|l| ("limit", l.to_string()))
            .into_iter()
            .collect()
    }

    /// `GET /jobs[?limit=n]`: the latest jobs of the agent, newest first.
    pub async fn list_jobs(&self, limit: Option<u32>) -> Result<Vec<Job>, ClientError> {
        self.get(self.url(&["jobs"], &Self::limit_query(limit))?)
            .await?
            .json_or_default()
    }

    /// `GET /jobs/{job_id}`: one job.
    pub async fn get_job(&self, job_id: &str) -> Result<Job, ClientError> {
        check_segment("job id", job_id)?;
        self.get(self.url(&["jobs", job_id], &[])?).await?.json()
    }

    /// `GET /jobs/{job_id}?wait=seconds`: long poll; the agent answers once the job is
    /// done or after `wait` (rounded up to whole seconds), whichever comes first. The
    /// deadline of this call is the client's timeout plus `wait`.
    pub async fn wait_job(&self, job_id: &str, wait: Duration) -> Result<Job, ClientError> {
        check_segment("job id", job_id)?;
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        let url = self.url(&["jobs", job_id], &[("wait", seconds.to_string())])?;
        let timeout = self.timeout.saturating_add(Duration::from_secs(seconds));
        self.call(Method::GET, url, None, timeout).await?.json()
    }

    /// `DELETE /jobs/{job_id}`: cancels a job; returns it as it stands afterwards.
    pub async fn cancel_job(&self, job_id: &str) -> Result<Job, ClientError> {
        check_segment("job id", job_id)?;
        let url = self.url(&["jobs", job_id], &[])?;
        self.call(Method::DELETE, url, None, self.timeout)
            .await?
            .json()
    }

    // ----- guests -----------------------------------------------------------------

    /// `GET /guests`: every guest the agent knows.
    pub async fn list_guests(&self) -> Result<Vec<Guest>, ClientError> {
        self.get(self.url(&["guests"], &[])?)
            .await?
            .json_or_default()
    }

    /// `POST /guests`: creates a guest; the answer is the guest as accepted (state
    /// `create`), the creation itself runs as a job.
    pub async fn create_guest(&self, guest: &Guest) -> Result<Accepted<Guest>, ClientError> {
        let url = self.url(&["guests"], &[])?;
        let reply = self.send_json(Method::POST, url, guest).await?;
        let body = reply.json()?;
        Ok(reply.accepted(body))
    }

    /// `GET /guests/{id}`: one guest.
    pub async fn get_guest(&self, id: &str) -> Result<Guest, ClientError> {
        check_segment("guest id", id)?;
        self.get(self.url(&["guests", id], &[])?).await?.json()
    }

    /// `GET /guests/{id}?refresh=true`: one guest, its state asked of the sub-agents first
    /// (the agent's `status` action) and stored.
    pub async fn get_guest_refreshed(&self, id: &str) -> Result<Guest, ClientError> {
        check_segment("guest id", id)?;
        let url = self.url(&["guests", id], &[("refresh", "true".to_string())])?;
        self.get(url).await?.json()
    }

    /// `GET /guests/{id}/jobs[?limit=n]`: the latest jobs of a guest.
    pub async fn list_guest_jobs(
        &self,
        id: &str,
        limit: Option<u32>,
    ) -> Result<Vec<Job>, ClientError> {
        check_segment("guest id", id)?;
        self.get(self.url(&["guests", id, "jobs"], &Self::limit_query(limit))?)
            .await?
            .json_or_default()
    }

    /// `GET /guests/{id}/jobs/{job_id}`: one job of a guest.
    pub async fn get_guest_job(&self, id: &str, job_id: &str) -> Result<Job, ClientError> {
        check_segment("guest id", id)?;
        check_segment("job id", job_id)?;
        self.get(self.url(&["guests", id, "jobs", job_id], &[])?)
            .await?
            .json()
    }

    /// `GET /guests/{id}/metadata`: a guest's metadata (empty when it has none).
    pub async fn get_guest_metadata(
        &self,
        id: &str,
    ) -> Result<BTreeMap<String, String>, ClientError> {
        check_segment("guest id", id)?;
        self.get(self.url(&["guests", id, "metadata"], &[])?)
            .await?
            .json_or_default()
    }

    /// `PATCH /guests/{id}/metadata`: sets or (with `None`) deletes keys of a guest's
    /// metadata; returns the metadata afterwards.
    pub async fn patch_guest_metadata(
        &self,
        id: &str,
        patch: &MetadataPatch,
    ) -> Result<BTreeMap<String, String>, ClientError> {
        check_segment("guest id", id)?;
        let url = self.url(&["guests", id, "metadata"], &[])?;
        self.send_json(Method::PATCH, url, patch)
            .await?
            .json_or_default()
    }

    async fn metrics<T: DeserializeOwned + Default>(
        &self,
        id: &str,
        kind: &str,
    ) -> Result<T, ClientError> {
        check_segment("guest id", id)?;
        self.get(self.url(&["guests", id, "metrics", kind], &[])?)
            .await?
            .json_or_default()
    }

    /// `GET /guests/{id}/metrics/cpu`: one entry per virtual CPU.
    pub async fn cpu_metrics(&self, id: &str) -> Result<Vec<GuestCpuMetrics>, ClientError> {
        self.metrics(id, "cpu").await
    }

    /// `GET /guests/{id}/metrics/disk`: block device metrics by device name.
    pub async fn disk_metrics(
        &self,
        id: &str,
    ) -> Result<BTreeMap<String, GuestDiskMetrics>, ClientError> {
        self.metrics(id, "disk").await
    }

    /// `GET /guests/{id}/metrics/nic`: interface metrics by interface name.
    pub async fn nic_metrics(
        &self,
        id: &str,
    ) -> Result<BTreeMap<String, GuestNicMetrics>, ClientError> {
        self.metrics(id, "nic").await
    }

    /// `POST /guests/{id}/{action}`: queues a guest action; the answer is the guest as
    /// stored when the request arrived.
    pub async fn guest_action(
        &self,
        id: &str,
        action: GuestAction,
    ) -> Result<Accepted<Guest>, ClientError> {
        check_segment("guest id", id)?;
        let url = self.url(&["guests", id, action.as_str()], &[])?;
        let reply = self.call(Method::POST, url, None, self.timeout).await?;
        let body = reply.json()?;
        Ok(reply.accepted(body))
    }

    /// `DELETE /guests/{id}?force=true`: deletes the guest whatever its stages say (a
    /// stage that fails is noted in the job's message, the record goes anyway); for a
    /// guest whose storage or domain is stuck.
    pub async fn delete_guest_forced(&self, id: &str) -> Result<Accepted<Guest>, ClientError> {
        check_segment("guest id", id)?;
        let url = self.url(&["guests", id], &[("force", "true".to_string())])?;
        let reply = self.call(Method::DELETE, url, None, self.timeout).await?;
        let body = reply.json()?;
        Ok(reply.accepted(body))
    }

    // ----- snapshots --------------------------------------------------------------
    //
    // `disk: Some(d)` addresses `/guests/{id}/disks/{d}/snapshots…` (one disk),
    // `None` addresses `/guests/{id}/snapshots…` (the whole guest, recursively).

    /// `GET /guests/{id}[/disks/{disk}]/snapshots`: the snapshots.
    pub async fn list_snapshots(
        &self,
        id: &str,
        disk: Option<&str>,
    ) -> Result<Vec<Snapshot>, ClientError> {
        let segments = Self::snapshot_base(id, disk)?;
        self.get(self.url(&segments, &[])?).await?.json_or_default()
    }

    /// `POST /guests/{id}[/disks/{disk}]/snapshots`: takes a snapshot as a job (the name
    /// goes in `request.dest`; the agent picks one when it is empty).
    pub async fn create_snapshot(
        &self,
        id: &str,
        disk: Option<&str>,
        request: &SnapshotRequest,
    ) -> Result<Accepted<()>, ClientError> {
        let segments = Self::snapshot_base(id, disk)?;
        let url = self.url(&segments, &[])?;
        let reply = self.send_json(Method::POST, url, request).await?;
        Ok(reply.accepted(()))
    }

    /// `GET /guests/{id}[/disks/{disk}]/snapshots/{name}`: the snapshot (as a list of
    /// one, as the agent returns it).
    pub async fn get_snapshot(
        &self,
        id: &str,
        disk: Option<&str>,
        name: &str,
    ) -> Result<Vec<Snapshot>, ClientError> {
        let mut segments = Self::snapshot_base(id, disk)?;
        check_segment("snapshot name", name)?;
        segments.push(name);
        self.get(self.url(&segments, &[])?).await?.json_or_default()
    }

    /// `DELETE /guests/{id}[/disks/{disk}]/snapshots/{name}`: deletes a snapshot as a
    /// job.
    pub async fn delete_snapshot(
        &self,
        id: &str,
        disk: Option<&str>,
        name: &str,
    ) -> Result<Accepted<()>, ClientError> {
        let mut segments = Self::snapshot_base(id, disk)?;
        check_segment("snapshot name", name)?;
        segments.push(name);
        let url = self.url(&segments, &[])?;
        let reply = self.call(Method::DELETE, url, None, self.timeout).await?;
        Ok(reply.accepted(()))
    }

    /// `POST /guests/{id}[/disks/{disk}]/snapshots/{name}/rollback`: rolls back to a
    /// snapshot as a job (`request.destroy_more_recent` allows losing later snapshots).
    pub async fn rollback_snapshot(
        &self,
        id: &str,
        disk: Option<&str>,
        name: &str,
        request: &SnapshotRequest,
    ) -> Result<Accepted<()>, ClientError> {
        let mut segments = Self::snapshot_base(id, disk)?;
        check_segment("snapshot name", name)?;
        segments.extend([name, "rollback"]);
        let url = self.url(&segments, &[])?;
        let reply = self.send_json(Method::POST, url, request).await?;
        Ok(reply.accepted(()))
    }

    /// `GET /guests/{id}[/disks/{disk}]/snapshots/{name}/download`: streams the snapshot.
    ///
    /// The client's timeout bounds the wait for the response headers and then each gap
    /// between two chunks, not the whole transfer. A non-2xx answer (the agent passes on
    /// the storage sub-agent's plain-text error) is a [`ClientError::Api`].
    pub async fn download_snapshot(
        &self,
        id: &str,
        disk: Option<&str>,
        name: &str,
    ) -> Result<DownloadStream, ClientError> {
        let mut segments = Self::snapshot_base(id, disk)?;
        check_segment("snapshot name", name)?;
        segments.extend([name, "download"]);
        let url = self.url(&segments, &[])?;
        let what = describe(&Method::GET, &url);
        let after = self.timeout;

        // No request-level timeout here: reqwest's would also cut off a long body.
        let send = self.http.get(url).send();
        let response = match tokio::time::timeout(after, send).await {
            Err(_) => return Err(ClientError::Timeout { what, after }),
            Ok(Err(e)) => return Err(Self::transport_or_timeout(what, e, after)),
            Ok(Ok(r)) => r,
        };
        let status = response.status();
        self.report_warnings(response.headers());
        if !status.is_success() {
            let retry_after = retry_after_of(response.headers());
            let body = match tokio::time::timeout(after, response.bytes()).await {
                Err(_) => return Err(ClientError::Timeout { what, after }),
                Ok(Err(e)) => return Err(Self::transport_or_timeout(what, e, after)),
                Ok(Ok(b)) => b,
            };
            return Err(api_error(status, &body, retry_after));
        }
        let job_id = job_id_of(response.headers());
        let content_length = response.content_length();

        // Each chunk must come within `after` of the one before; the first failure ends
        // the stream.
        let idle_what = format!("{what} (waiting for data)");
        let chunks =
            tokio_stream::StreamExt::timeout(response.bytes_stream(), after).map(move |item| {
                match item {
                    Ok(Ok(chunk)) => Ok(chunk),
                    Ok(Err(source)) => Err(ClientError::Transport {
                        what: idle_what.clone(),
                        source,
                    }),
                    Err(_elapsed) => Err(ClientError::Timeout {
                        what: idle_what.clone(),
                        after,
                    }),
                }
            });
        // The first failure ends the stream (an idle source is not polled again).
        let inner =
            futures::stream::unfold((Box::pin(chunks), false), |(mut rest, failed)| async move {
                if failed {
                    return None;
                }
                let item = rest.next().await?;
                let failed = item.is_err();
                Some((item, (rest, failed)))
            })
            .fuse();
        Ok(DownloadStream {
            job_id,
            content_length,
            inner: Box::pin(inner),
        })
    }
}

/// Parses and checks the base URL given to [`Client::new`].
fn parse_base(base_url: &str) -> Result<Url, ClientError> {
    let trimmed = base_url.trim();
    if trimmed.is_empty() {
        return Err(ClientError::InvalidInput(
            "the agent address must not be empty".to_string(),
        ));
    }
    let full: Cow<'_, str> = if trimmed.contains("://") {
        Cow::Borrowed(trimmed)
    } else {
        Cow::Owned(format!("http://{trimmed}"))
    };
    let url = Url::parse(&full).map_err(|e| {
        ClientError::InvalidInput(format!("invalid agent address {base_url:?}: {e}"))
    })?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(ClientError::InvalidInput(format!(
            "unsupported scheme {:?} in agent address {base_url:?} (http or https)",
            url.scheme()
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(ClientError::InvalidInput(format!(
            "agent address {base_url:?} has no host"
        )));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(ClientError::InvalidInput(format!(
            "agent address {base_url:?} must not have a query or fragment"
        )));
    }
    if url.cannot_be_a_base() {
        return Err(ClientError::InvalidInput(format!(
            "agent address {base_url:?} cannot take a path"
        )));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_checked() {
        for bad in [
            "", "a/b", "..", ".", "a..b", "a b", "a\tb", "a\u{7}b", "a?b", "a#b", "a\\b",
        ] {
            assert!(
                matches!(
                    check_segment("guest id", bad),
                    Err(ClientError::InvalidInput(_))
                ),
                "{bad:?} should be refused"
            );
        }
        for good in [
            "abc",
            "5a0c9e2e-1111-4222-8333-444455556666",
            "disk-0",
            "snap.1",
            "a%b",
            "ü",
        ] {
            assert!(
                check_segment("guest id", good).is_ok(),
                "{good:?} should pass"
            );
        }
    }

    #[test]
    fn base_urls() {
        let c = Client::new("127.0.0.1:8080").unwrap();
        assert_eq!(c.base_url().as_str(), "http://127.0.0.1:8080/");
        let c = Client::new("http://h:1/prefix/").unwrap();
        assert_eq!(
            c.url(&["guests", "a%b"], &[]).unwrap().as_str(),
            "http://h:1/prefix/guests/a%25b"
        );
        assert_eq!(
            c.url(&["jobs"], &[("limit", "5".into())]).unwrap().as_str(),
            "http://h:1/prefix/jobs?limit=5"
        );
        for bad in [
            "",
            "  ",
            "ftp://h",
            "http://h:1/?q=1",
            "http://h:1/#f",
            "http://",
        ] {
            assert!(
                matches!(Client::new(bad), Err(ClientError::InvalidInput(_))),
                "{bad:?} should be refused"
            );
        }
        assert_eq!(Client::new("h:1").unwrap().timeout(), DEFAULT_TIMEOUT);
    }

    #[test]
    fn warning_texts() {
        assert_eq!(
            warning_text(r#"299 - "unknown field \"x\"""#),
            r#"unknown field "x""#
        );
        assert_eq!(
            warning_text(r#"299 agent:8080 "deprecated" "Wed, 21 Oct 2015 07:28:00 GMT""#),
            "deprecated"
        );
        assert_eq!(warning_text(" just text "), "just text");
        assert_eq!(
            warning_text(r#"299 - "unterminated"#),
            r#"299 - "unterminated"#
        );
        assert_eq!(warning_text("29 - \"x\""), "29 - \"x\"");
    }

    #[test]
    fn retry_after_is_read_from_the_header() {
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after_of(&headers), None);
        headers.insert(reqwest::header::RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after_of(&headers), Some(Duration::from_secs(7)));
        let e = api_error(
            StatusCode::SERVICE_UNAVAILABLE,
            b"full",
            retry_after_of(&headers),
        );
        assert_eq!(e.retry_after(), Some(Duration::from_secs(7)));
        headers.insert(
            reqwest::header::RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after_of(&headers), None);
    }

    #[test]
    fn api_errors_from_json_and_text() {
        let e = api_error(
            StatusCode::NOT_FOUND,
            br#"{"message":"not found","code":404,"stack":[]}"#,
            None,
        );
        assert_eq!(e.status(), Some(404));
        assert_eq!(e.message(), "not found");
        assert_eq!(e.to_string(), "agent answered 404: not found");

        let e = api_error(StatusCode::INTERNAL_SERVER_ERROR, b"boom\n", None);
        match &e {
            ClientError::Api {
                status, body, text, ..
            } => {
                assert_eq!(*status, 500);
                assert_eq!(body, &ErrorBody::new(500, "boom"));
                assert_eq!(text, "boom\n");
            }
            other => panic!("unexpected {other:?}"),
        }

        // A JSON value that is not an error body counts as text.
        let e = api_error(StatusCode::BAD_REQUEST, br#"{"x":1}"#, None);
        assert_eq!(e.message(), r#"{"x":1}"#);

        // An empty body falls back to the reason phrase.
        let e = api_error(StatusCode::INTERNAL_SERVER_ERROR, b"", None);
        assert_eq!(e.message(), "Internal Server Error");
    }
}
