//! [`Client`]: one async client for the three daemons of the control plane.
//!
//! One [`Client`] holds the base URLs of cguestd, chypervisord and cnetworkd
//! ([`Endpoints`]) and one connection pool; each method goes to the daemon that serves its
//! route, and its errors name that daemon.
//!
//! Every call has a deadline (30 s unless [`Client::with_timeout`] says otherwise) that
//! covers connecting, sending and reading the whole answer. Any 2xx answer is a success;
//! anything else is [`Error::Api`] with the status and the daemon's `message` (from
//! either error shape, `{"message"}` or `{"message","code","stack"}`, or the trimmed text
//! of a plain-text answer).
//!
//! Path segments taken from callers (ids, VLAN tags) are percent-encoded as one segment
//! each; an empty one, `.` or `..` is refused with [`Error::InvalidInput`] before anything
//! is sent. Whether an id is a well-formed UUID is the daemon's to say (it answers 400).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use reqwest::header::{HeaderMap, ACCEPT, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::time::Instant;
use url::Url;

use crate::types::{Daemon, GuestAction, GuestJob, HypervisorResources, Job, Managed, Resource};

/// The header in which cguestd names the job it queued for a guest.
pub const JOB_ID_HEADER: &str = "X-Guest-Job-ID";

/// The header carrying the token of a list's next page.
pub const CONTINUE_HEADER: &str = "X-Continue";

/// The per-call deadline used unless [`Client::with_timeout`] sets another.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The page size [`Client::list_all`] asks for unless [`Client::with_page_size`] sets
/// another.
pub const DEFAULT_PAGE_SIZE: u32 = 1000;

/// The largest `?limit=` the daemons take.
pub const MAX_PAGE_SIZE: u32 = 10_000;

/// The first pause between two polls of a job in [`Client::wait_job_with`]; it doubles up
/// to [`MAX_POLL_INTERVAL`] (cguestd has no long poll on jobs).
pub const FIRST_POLL_INTERVAL: Duration = Duration::from_millis(100);

/// The longest pause between two polls of a job.
pub const MAX_POLL_INTERVAL: Duration = Duration::from_secs(2);

/// Everything that can go wrong in a call.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The caller's input was refused before anything was sent (a bad base URL, an empty
    /// id, a body that does not encode).
    #[error("invalid input: {0}")]
    InvalidInput(String),

    /// The request could not be sent or the answer could not be read.
    #[error("{what} to {daemon} failed: {source}")]
    Transport {
        daemon: Daemon,
        /// The request, e.g. `GET /guests/abc`.
        what: String,
        #[source]
        source: reqwest::Error,
    },

    /// No complete answer within the deadline.
    #[error("{what} to {daemon} timed out after {after:?}")]
    Timeout {
        daemon: Daemon,
        what: String,
        after: Duration,
    },

    /// The daemon answered with a status outside 2xx.
    #[error("{daemon} answered {status}: {message}")]
    Api {
        daemon: Daemon,
        status: u16,
        /// The daemon's `message`; for a plain-text answer its trimmed text; for an empty
        /// one the status's reason phrase.
        message: String,
        /// `code` of the `{"message","code","stack"}` shape, `None` for the other shapes.
        code: Option<u16>,
        /// `stack` of that shape (our daemons send `[]`).
        stack: Vec<String>,
        /// The raw text of the answer.
        body: String,
    },

    /// A 2xx answer whose body is not the expected JSON.
    #[error("cannot decode {daemon}'s answer to {what}: {source}")]
    Decode {
        daemon: Daemon,
        what: String,
        #[source]
        source: serde_json::Error,
    },

    /// cguestd accepted a guest request without naming the job it queued.
    #[error("{daemon} accepted {what} without an {JOB_ID_HEADER} header")]
    MissingJobId { daemon: Daemon, what: String },

    /// A list's next-page token came back unchanged (the daemon would page forever).
    #[error("{daemon} returned the same {CONTINUE_HEADER} token twice for {what}")]
    PagingLoop { daemon: Daemon, what: String },

    /// [`Client::wait_job`] gave up: the job had not finished within the allowed time.
    #[error("job {} is still {} after {after:?}", job.id, job.status)]
    JobTimeout {
        /// The job as last read.
        job: Box<Job>,
        after: Duration,
    },
}

impl Error {
    /// The HTTP status of an [`Error::Api`], `None` for every other kind.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The daemon's message of an [`Error::Api`]; for other kinds the error's own text.
    pub fn message(&self) -> Cow<'_, str> {
        match self {
            Error::Api { message, .. } => Cow::Borrowed(message.as_str()),
            Error::InvalidInput(m) => Cow::Borrowed(m.as_str()),
            other => Cow::Owned(other.to_string()),
        }
    }

    /// The daemon the call went to (`None` for input refused before sending and for a
    /// wait that gave up).
    pub fn daemon(&self) -> Option<Daemon> {
        match self {
            Error::Transport { daemon, .. }
            | Error::Timeout { daemon, .. }
            | Error::Api { daemon, .. }
            | Error::Decode { daemon, .. }
            | Error::MissingJobId { daemon, .. }
            | Error::PagingLoop { daemon, .. } => Some(*daemon),
            Error::InvalidInput(_) | Error::JobTimeout { .. } => None,
        }
    }

    /// True for an answer with status 404.
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }
}

/// The base URLs of the three daemons.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    /// cguestd (default `http://127.0.0.1:18000`).
    pub guests: String,
    /// chypervisord (default `http://127.0.0.1:17000`).
    pub hypervisors: String,
    /// cnetworkd (default `http://127.0.0.1:19000`).
    pub networks: String,
}

impl Default for Endpoints {
    fn default() -> Self {
        Endpoints {
            guests: Daemon::Guests.default_url().to_string(),
            hypervisors: Daemon::Hypervisors.default_url().to_string(),
            networks: Daemon::Networks.default_url().to_string(),
        }
    }
}

/// One page of a list: `?limit=`, `?continue=` and filters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListQuery {
    /// At most this many items (1–10000); `None` lets the daemon decide.
    pub limit: Option<u32>,
    /// The `X-Continue` token of the previous page.
    pub continue_token: Option<String>,
    /// `?key=value` filters: `hypervisor`, `network`, `subnet`, `flavor`, `fwgroup` for
    /// guests; `alive`, `subnet` for hypervisors.
    pub filters: Vec<(String, String)>,
}

impl ListQuery {
    /// Every item, no filter.
    pub fn new() -> ListQuery {
        ListQuery::default()
    }

    /// At most `n` items per page.
    pub fn limit(mut self, n: u32) -> ListQuery {
        self.limit = Some(n);
        self
    }

    /// The page after the one that answered `token` in `X-Continue`.
    pub fn after(mut self, token: impl Into<String>) -> ListQuery {
        self.continue_token = Some(token.into());
        self
    }

    /// Only the items whose `key` is `value`.
    pub fn filter(mut self, key: impl Into<String>, value: impl Into<String>) -> ListQuery {
        self.filters.push((key.into(), value.into()));
        self
    }

    fn pairs(&self) -> Vec<(String, String)> {
        let mut pairs = self.filters.clone();
        if let Some(limit) = self.limit {
            pairs.push(("limit".to_string(), limit.to_string()));
        }
        if let Some(token) = &self.continue_token {
            pairs.push(("continue".to_string(), token.clone()));
        }
        pairs
    }
}

/// One page of a list and the token of the next (`None` on the last page).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

/// A successful (2xx) answer, read completely.
struct Reply {
    daemon: Daemon,
    what: String,
    headers: HeaderMap,
    body: bytes::Bytes,
}

impl Reply {
    fn json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_slice(&self.body).map_err(|source| Error::Decode {
            daemon: self.daemon,
            what: self.what.clone(),
            source,
        })
    }

    /// Decodes `T`, taking a JSON `null` as `T::default()` (Go's nil slices and maps).
    fn json_or_default<T: DeserializeOwned + Default>(&self) -> Result<T, Error> {
        Ok(self.json::<Option<T>>()?.unwrap_or_default())
    }

    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    }

    /// The guest and job of a 202 from cguestd.
    fn guest_job(&self) -> Result<GuestJob, Error> {
        let id = self
            .header(JOB_ID_HEADER)
            .ok_or_else(|| Error::MissingJobId {
                daemon: self.daemon,
                what: self.what.clone(),
            })?;
        Ok(GuestJob {
            id,
            guest: self.json()?,
        })
    }
}

/// The first JSON value of `raw`, if it starts with one (the Go VLAN delete wrote an error
/// body and then the entity into one answer).
fn first_json(raw: &[u8]) -> Option<serde_json::Value> {
    serde_json::Deserializer::from_slice(raw)
        .into_iter::<serde_json::Value>()
        .next()?
        .ok()
}

/// The [`Error::Api`] of a non-2xx answer.
fn api_error(daemon: Daemon, status: StatusCode, raw: &[u8]) -> Error {
    let text = String::from_utf8_lossy(raw).into_owned();
    let json = first_json(raw).filter(|v| v.get("message").is_some_and(|m| m.is_string()));
    let (message, code, stack) = match json {
        Some(v) => {
            let message = v["message"].as_str().unwrap_or_default().to_string();
            let code = v
                .get("code")
                .and_then(serde_json::Value::as_u64)
                .and_then(|c| u16::try_from(c).ok());
            let stack = v
                .get("stack")
                .and_then(serde_json::Value::as_array)
                .map(|frames| {
                    frames
                        .iter()
                        .map(|f| match f.as_str() {
                            Some(s) => s.to_string(),
                            None => f.to_string(),
                        })
                        .collect()
                })
                .unwrap_or_default();
            (message, code, stack)
        }
        None => (text.trim().to_string(), None, Vec::new()),
    };
    let message = if message.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("no message")
            .to_string()
    } else {
        message
    };
    Error::Api {
        daemon,
        status: status.as_u16(),
        message,
        code,
        stack,
        body: text,
    }
}

/// `GET /guests/abc?limit=3`: how errors name a request.
fn describe(method: &Method, url: &Url) -> String {
    match url.query() {
        Some(q) => format!("{method} {}?{q}", url.path()),
        None => format!("{method} {}", url.path()),
    }
}

fn encode<T: Serialize + ?Sized>(body: &T) -> Result<Vec<u8>, Error> {
    serde_json::to_vec(body)
        .map_err(|e| Error::InvalidInput(format!("cannot encode the request body: {e}")))
}

/// A path segment from a caller: refused when empty, `.` or `..` (the URL would name
/// another route); everything else is percent-encoded by the URL builder.
fn segment<'a>(what: &str, value: &'a str) -> Result<&'a str, Error> {
    if value.is_empty() || value == "." || value == ".." {
        return Err(Error::InvalidInput(format!("invalid {what} {value:?}")));
    }
    Ok(value)
}

/// A daemon's base URL: `http://host:port` or `https://…` (optionally with a path
/// prefix), or a bare `host:port`, which means plain HTTP.
fn parse_base(daemon: Daemon, base_url: &str) -> Result<Url, Error> {
    let trimmed = base_url.trim();
    let bad = |why: &str| Error::InvalidInput(format!("{daemon} address {base_url:?}: {why}"));
    if trimmed.is_empty() {
        return Err(bad("empty"));
    }
    let full: Cow<'_, str> = if trimmed.contains("://") {
        Cow::Borrowed(trimmed)
    } else {
        Cow::Owned(format!("http://{trimmed}"))
    };
    let url = Url::parse(&full).map_err(|e| bad(&e.to_string()))?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(bad("the scheme must be http or https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("a base URL has no query or fragment"));
    }
    Ok(url)
}

/// An async client of cguestd, chypervisord and cnetworkd. Cloning is cheap; clones share
/// the connection pool.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    guests: Url,
    hypervisors: Url,
    networks: Url,
    timeout: Duration,
    page_size: u32,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("guests", &self.guests.as_str())
            .field("hypervisors", &self.hypervisors.as_str())
            .field("networks", &self.networks.as_str())
            .field("timeout", &self.timeout)
            .field("page_size", &self.page_size)
            .finish()
    }
}

impl Client {
    /// A client of the daemons at `endpoints`. A malformed URL is
    /// [`Error::InvalidInput`] naming the daemon.
    pub fn new(endpoints: &Endpoints) -> Result<Client, Error> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("lochness-client/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|source| Error::Transport {
                daemon: Daemon::Guests,
                what: "building the HTTP client".to_string(),
                source,
            })?;
        Ok(Client {
            http,
            guests: parse_base(Daemon::Guests, &endpoints.guests)?,
            hypervisors: parse_base(Daemon::Hypervisors, &endpoints.hypervisors)?,
            networks: parse_base(Daemon::Networks, &endpoints.networks)?,
            timeout: DEFAULT_TIMEOUT,
            page_size: DEFAULT_PAGE_SIZE,
        })
    }

    /// The same client with another per-call deadline.
    pub fn with_timeout(mut self, timeout: Duration) -> Client {
        self.timeout = timeout;
        self
    }

    /// The same client asking for pages of `n` items in [`Client::list_all`] (clamped to
    /// 1–10000).
    pub fn with_page_size(mut self, n: u32) -> Client {
        self.page_size = n.clamp(1, MAX_PAGE_SIZE);
        self
    }

    /// The per-call deadline in force.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The base URL of `daemon`.
    pub fn base_url(&self, daemon: Daemon) -> &Url {
        match daemon {
            Daemon::Guests => &self.guests,
            Daemon::Hypervisors => &self.hypervisors,
            Daemon::Networks => &self.networks,
        }
    }

    // ----- plumbing -------------------------------------------------------------------

    /// The URL of `segments` below `daemon`'s base, each segment percent-encoded.
    fn url(
        &self,
        daemon: Daemon,
        segments: &[&str],
        query: &[(String, String)],
    ) -> Result<Url, Error> {
        let base = self.base_url(daemon);
        let mut url = base.clone();
        url.path_segments_mut()
            .map_err(|()| {
                Error::InvalidInput(format!("{daemon} address {base} cannot take a path"))
            })?
            .pop_if_empty()
            .extend(segments);
        if !query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(query.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        }
        Ok(url)
    }

    /// Sends one request with a JSON body (if any), reads the whole answer within the
    /// deadline and turns a non-2xx status into [`Error::Api`].
    async fn call(
        &self,
        daemon: Daemon,
        method: Method,
        url: Url,
        body: Option<Vec<u8>>,
    ) -> Result<Reply, Error> {
        let what = describe(&method, &url);
        let fail = |source: reqwest::Error, what: String| {
            if source.is_timeout() {
                Error::Timeout {
                    daemon,
                    what,
                    after: self.timeout,
                }
            } else {
                Error::Transport {
                    daemon,
                    what,
                    source,
                }
            }
        };
        let mut request = self
            .http
            .request(method, url)
            .timeout(self.timeout)
            .header(ACCEPT, "application/json");
        if let Some(body) = body {
            request = request.header(CONTENT_TYPE, "application/json").body(body);
        }
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => return Err(fail(e, what)),
        };
        let status = response.status();
        let headers = response.headers().clone();
        let body = match response.bytes().await {
            Ok(b) => b,
            Err(e) => return Err(fail(e, what)),
        };
        if !status.is_success() {
            return Err(api_error(daemon, status, &body));
        }
        Ok(Reply {
            daemon,
            what,
            headers,
            body,
        })
    }

    async fn get_at(&self, daemon: Daemon, segments: &[&str]) -> Result<Reply, Error> {
        let url = self.url(daemon, segments, &[])?;
        self.call(daemon, Method::GET, url, None).await
    }

    async fn send_at<B: Serialize + ?Sized>(
        &self,
        daemon: Daemon,
        method: Method,
        segments: &[&str],
        body: Option<&B>,
    ) -> Result<Reply, Error> {
        let body = body.map(encode).transpose()?;
        let url = self.url(daemon, segments, &[])?;
        self.call(daemon, method, url, body).await
    }

    fn entity_path<R: Resource>(key: &str) -> Result<Vec<&str>, Error> {
        let mut path = R::PATH.to_vec();
        path.push(segment(R::NOUN, key)?);
        Ok(path)
    }

    // ----- every collection -----------------------------------------------------------

    /// `GET /<collection>?…`: one page, and the token of the next from `X-Continue`.
    pub async fn list<R: Resource>(&self, query: &ListQuery) -> Result<Page<R>, Error> {
        let url = self.url(R::DAEMON, R::PATH, &query.pairs())?;
        let reply = self.call(R::DAEMON, Method::GET, url, None).await?;
        Ok(Page {
            items: reply.json_or_default()?,
            next: reply.header(CONTINUE_HEADER),
        })
    }

    /// Every item matching `query`'s filters: pages of `query.limit` (or the client's
    /// page size) items from `query.continue_token` on, following `X-Continue` until a
    /// page comes without it.
    pub async fn list_all<R: Resource>(&self, query: &ListQuery) -> Result<Vec<R>, Error> {
        let mut query = query.clone();
        query.limit = Some(query.limit.unwrap_or(self.page_size));
        let mut all = Vec::new();
        loop {
            let page = self.list::<R>(&query).await?;
            all.extend(page.items);
            match page.next {
                None => return Ok(all),
                Some(next) if query.continue_token.as_deref() == Some(next.as_str()) => {
                    return Err(Error::PagingLoop {
                        daemon: R::DAEMON,
                        what: format!("GET /{}", R::PATH.join("/")),
                    })
                }
                Some(next) => query.continue_token = Some(next),
            }
        }
    }

    /// `GET /<collection>/{key}`.
    pub async fn get<R: Resource>(&self, key: &str) -> Result<R, Error> {
        self.get_at(R::DAEMON, &Self::entity_path::<R>(key)?)
            .await?
            .json()
    }

    /// `PATCH /<collection>/{key}` with `body` (a partial entity: only the members to
    /// change); the entity afterwards.
    pub async fn patch<R: Resource, B: Serialize + ?Sized>(
        &self,
        key: &str,
        body: &B,
    ) -> Result<R, Error> {
        let path = Self::entity_path::<R>(key)?;
        self.send_at(R::DAEMON, Method::PATCH, &path, Some(body))
            .await?
            .json()
    }

    /// `POST /<collection>` with `body`; the entity created (201).
    pub async fn create<R: Managed, B: Serialize + ?Sized>(&self, body: &B) -> Result<R, Error> {
        self.send_at(R::DAEMON, Method::POST, R::PATH, Some(body))
            .await?
            .json()
    }

    /// `DELETE /<collection>/{key}`; the entity as it was.
    pub async fn delete<R: Managed>(&self, key: &str) -> Result<R, Error> {
        let path = Self::entity_path::<R>(key)?;
        self.send_at::<()>(R::DAEMON, Method::DELETE, &path, None)
            .await?
            .json()
    }

    // ----- guests and jobs (cguestd) -------------------------------------------------

    /// `POST /guests` with `body` (at least `flavor` and `network`): the guest as stored
    /// and the `select-hypervisor` job that places it.
    pub async fn create_guest<B: Serialize + ?Sized>(&self, body: &B) -> Result<GuestJob, Error> {
        self.send_at(Daemon::Guests, Method::POST, &["guests"], Some(body))
            .await?
            .guest_job()
    }

    /// `DELETE /guests/{id}`: queues the `delete` job; the guest stays until it is done.
    pub async fn delete_guest(&self, id: &str) -> Result<GuestJob, Error> {
        let id = segment("guest id", id)?;
        self.send_at::<()>(Daemon::Guests, Method::DELETE, &["guests", id], None)
            .await?
            .guest_job()
    }

    /// `POST /guests/{id}/{action}`: queues the action's job.
    pub async fn guest_action(&self, id: &str, action: GuestAction) -> Result<GuestJob, Error> {
        let id = segment("guest id", id)?;
        let path = ["guests", id, action.as_str()];
        self.send_at::<()>(Daemon::Guests, Method::POST, &path, None)
            .await?
            .guest_job()
    }

    /// `GET /jobs/{id}`.
    pub async fn get_job(&self, id: &str) -> Result<Job, Error> {
        let id = segment("job id", id)?;
        self.get_at(Daemon::Guests, &["jobs", id]).await?.json()
    }

    /// Polls `GET /jobs/{id}` until the job is `done` or `error` and returns it (a job
    /// that ends in `error` is an `Ok`: look at its status). After `timeout` it gives up
    /// with [`Error::JobTimeout`] carrying the job as last read.
    pub async fn wait_job(&self, id: &str, timeout: Duration) -> Result<Job, Error> {
        self.wait_job_with(id, Some(timeout), |_| {}).await
    }

    /// As [`Client::wait_job`], with no deadline when `timeout` is `None`, calling
    /// `on_poll` with the job after every read (to show progress). The pause between two
    /// reads starts at [`FIRST_POLL_INTERVAL`] and doubles up to [`MAX_POLL_INTERVAL`].
    pub async fn wait_job_with(
        &self,
        id: &str,
        timeout: Option<Duration>,
        mut on_poll: impl FnMut(&Job),
    ) -> Result<Job, Error> {
        let started = Instant::now();
        let deadline = timeout.map(|t| started + t);
        let mut pause = FIRST_POLL_INTERVAL;
        loop {
            let job = self.get_job(id).await?;
            on_poll(&job);
            if job.status.is_finished() {
                return Ok(job);
            }
            let mut wake = Instant::now() + pause;
            if let Some(deadline) = deadline {
                if Instant::now() >= deadline {
                    return Err(Error::JobTimeout {
                        job: Box::new(job),
                        after: started.elapsed(),
                    });
                }
                wake = wake.min(deadline);
            }
            tokio::time::sleep_until(wake).await;
            pause = (pause * 2).min(MAX_POLL_INTERVAL);
        }
    }

    // ----- hypervisors (chypervisord) ---------------------------------------------------

    fn hypervisor_path<'a>(id: &'a str, tail: &[&'a str]) -> Result<Vec<&'a str>, Error> {
        let mut path = vec!["hypervisors", segment("hypervisor id", id)?];
        path.extend_from_slice(tail);
        Ok(path)
    }

    /// `GET /hypervisors/{id}/config`.
    pub async fn hypervisor_config(&self, id: &str) -> Result<BTreeMap<String, String>, Error> {
        self.get_at(
            Daemon::Hypervisors,
            &Self::hypervisor_path(id, &["config"])?,
        )
        .await?
        .json_or_default()
    }

    /// `PATCH /hypervisors/{id}/config`: sets each key (an empty value deletes it); the
    /// whole config afterwards.
    pub async fn patch_hypervisor_config(
        &self,
        id: &str,
        changes: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>, Error> {
        let path = Self::hypervisor_path(id, &["config"])?;
        self.send_at(Daemon::Hypervisors, Method::PATCH, &path, Some(changes))
            .await?
            .json_or_default()
    }

    /// `GET /hypervisors/{id}/subnets`: subnet id → bridge.
    pub async fn hypervisor_subnets(&self, id: &str) -> Result<BTreeMap<String, String>, Error> {
        self.get_at(
            Daemon::Hypervisors,
            &Self::hypervisor_path(id, &["subnets"])?,
        )
        .await?
        .json_or_default()
    }

    /// `PATCH /hypervisors/{id}/subnets`: links each subnet (id → bridge); every link
    /// afterwards.
    pub async fn patch_hypervisor_subnets(
        &self,
        id: &str,
        links: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>, Error> {
        let path = Self::hypervisor_path(id, &["subnets"])?;
        self.send_at(Daemon::Hypervisors, Method::PATCH, &path, Some(links))
            .await?
            .json_or_default()
    }

    /// `DELETE /hypervisors/{id}/subnets/{subnet}`: the links that remain.
    pub async fn delete_hypervisor_subnet(
        &self,
        id: &str,
        subnet: &str,
    ) -> Result<BTreeMap<String, String>, Error> {
        let subnet = segment("subnet id", subnet)?;
        let path = Self::hypervisor_path(id, &["subnets", subnet])?;
        self.send_at::<()>(Daemon::Hypervisors, Method::DELETE, &path, None)
            .await?
            .json_or_default()
    }

    /// `GET /hypervisors/{id}/guests`: the ids of the guests placed on it.
    pub async fn hypervisor_guests(&self, id: &str) -> Result<Vec<String>, Error> {
        self.get_at(
            Daemon::Hypervisors,
            &Self::hypervisor_path(id, &["guests"])?,
        )
        .await?
        .json_or_default()
    }

    /// `GET /hypervisors/{id}/resources`.
    pub async fn hypervisor_resources(&self, id: &str) -> Result<HypervisorResources, Error> {
        self.get_at(
            Daemon::Hypervisors,
            &Self::hypervisor_path(id, &["resources"])?,
        )
        .await?
        .json()
    }

    // ----- networks, subnets (cnetworkd) ---------------------------------------------

    /// `GET /networks/{id}/subnets`: the ids of the network's subnets.
    pub async fn network_subnets(&self, id: &str) -> Result<Vec<String>, Error> {
        let id = segment("network id", id)?;
        self.get_at(Daemon::Networks, &["networks", id, "subnets"])
            .await?
            .json_or_default()
    }

    /// `POST /networks/{id}/subnets` with the subnet's id (a JSON string): the network's
    /// subnets afterwards.
    pub async fn add_network_subnet(&self, id: &str, subnet: &str) -> Result<Vec<String>, Error> {
        let id = segment("network id", id)?;
        let path = ["networks", id, "subnets"];
        self.send_at(Daemon::Networks, Method::POST, &path, Some(subnet))
            .await?
            .json_or_default()
    }

    /// `DELETE /networks/{id}/subnets/{subnet}`: the network's subnets afterwards.
    pub async fn remove_network_subnet(
        &self,
        id: &str,
        subnet: &str,
    ) -> Result<Vec<String>, Error> {
        let id = segment("network id", id)?;
        let subnet = segment("subnet id", subnet)?;
        let path = ["networks", id, "subnets", subnet];
        self.send_at::<()>(Daemon::Networks, Method::DELETE, &path, None)
            .await?
            .json_or_default()
    }

    /// `GET /subnets/{id}/addresses`: reserved address → guest id.
    pub async fn subnet_addresses(&self, id: &str) -> Result<BTreeMap<String, String>, Error> {
        let id = segment("subnet id", id)?;
        self.get_at(Daemon::Networks, &["subnets", id, "addresses"])
            .await?
            .json_or_default()
    }

    // ----- VLANs and VLAN groups (cnetworkd) -----------------------------------------

    /// `GET /vlans/tags/{tag}/groups`: the groups the VLAN is in.
    pub async fn vlan_groups(&self, tag: u16) -> Result<Vec<String>, Error> {
        let tag = tag.to_string();
        self.get_at(Daemon::Networks, &["vlans", "tags", &tag, "groups"])
            .await?
            .json_or_default()
    }

    /// `POST /vlans/tags/{tag}/groups` with the complete list of groups the VLAN is to be
    /// in (those missing are left, the new ones joined); the groups afterwards.
    pub async fn set_vlan_groups(&self, tag: u16, groups: &[String]) -> Result<Vec<String>, Error> {
        let tag = tag.to_string();
        let path = ["vlans", "tags", tag.as_str(), "groups"];
        self.send_at(Daemon::Networks, Method::POST, &path, Some(groups))
            .await?
            .json_or_default()
    }

    /// `GET /vlans/groups/{id}/tags`: the VLANs of the group.
    pub async fn vlangroup_tags(&self, id: &str) -> Result<Vec<u16>, Error> {
        let id = segment("VLAN group id", id)?;
        self.get_at(Daemon::Networks, &["vlans", "groups", id, "tags"])
            .await?
            .json_or_default()
    }

    /// `POST /vlans/groups/{id}/tags` with the complete list of the group's VLANs; the
    /// VLANs afterwards.
    pub async fn set_vlangroup_tags(&self, id: &str, tags: &[u16]) -> Result<Vec<u16>, Error> {
        let id = segment("VLAN group id", id)?;
        let path = ["vlans", "groups", id, "tags"];
        self.send_at(Daemon::Networks, Method::POST, &path, Some(tags))
            .await?
            .json_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Guest, Vlan};

    #[test]
    fn error_shapes() {
        let e = api_error(
            Daemon::Guests,
            StatusCode::BAD_REQUEST,
            br#"{"message":"invalid guest id"}"#,
        );
        assert_eq!(e.to_string(), "cguestd answered 400: invalid guest id");
        assert!(matches!(e, Error::Api { code: None, .. }));
        let e = api_error(
            Daemon::Hypervisors,
            StatusCode::INTERNAL_SERVER_ERROR,
            b"{\"message\":\"not empty\",\"code\":500,\"stack\":[\"a.go:1 (0x1)\"]}\n",
        );
        match &e {
            Error::Api {
                status,
                message,
                code,
                stack,
                ..
            } => {
                assert_eq!(
                    (*status, message.as_str(), *code),
                    (500, "not empty", Some(500))
                );
                assert_eq!(stack, &["a.go:1 (0x1)".to_string()]);
            }
            other => panic!("{other:?}"),
        }
        let e = api_error(
            Daemon::Networks,
            StatusCode::NOT_FOUND,
            b"404 page not found\n",
        );
        assert_eq!(e.to_string(), "cnetworkd answered 404: 404 page not found");
        let e = api_error(Daemon::Networks, StatusCode::BAD_GATEWAY, b"");
        assert_eq!(e.to_string(), "cnetworkd answered 502: Bad Gateway");
        // The Go VLAN delete: an error body followed by the entity.
        let e = api_error(
            Daemon::Networks,
            StatusCode::INTERNAL_SERVER_ERROR,
            b"{\"message\":\"metadata key is missing\",\"code\":500,\"stack\":[]}\n{\"tag\":20,\"description\":\"twenty\"}\n",
        );
        assert_eq!(e.message(), "metadata key is missing");
        // JSON without a string message is text.
        let e = api_error(Daemon::Guests, StatusCode::CONFLICT, br#"{"error":"x"}"#);
        assert_eq!(e.message(), r#"{"error":"x"}"#);
    }

    #[test]
    fn urls() {
        let client = Client::new(&Endpoints {
            guests: "127.0.0.1:18000".into(),
            hypervisors: "http://127.0.0.1:17000/api/".into(),
            networks: "https://net.example:19000".into(),
        })
        .unwrap();
        let url = client
            .url(Daemon::Guests, &["guests", "a/b c"], &[])
            .unwrap();
        assert_eq!(url.as_str(), "http://127.0.0.1:18000/guests/a%2Fb%20c");
        let url = client
            .url(
                Daemon::Hypervisors,
                &["hypervisors"],
                &ListQuery::new()
                    .filter("alive", "true")
                    .limit(5)
                    .after("t&1")
                    .pairs(),
            )
            .unwrap();
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:17000/api/hypervisors?alive=true&limit=5&continue=t%261"
        );
        assert!(Client::entity_path::<Guest>("..").is_err());
        assert!(Client::entity_path::<Vlan>("").is_err());
        for bad in ["", "ftp://x", "http://", "http://h?x=1"] {
            let endpoints = Endpoints {
                networks: bad.into(),
                ..Endpoints::default()
            };
            let e = Client::new(&endpoints).unwrap_err();
            assert!(e.to_string().contains("cnetworkd address"), "{e}");
        }
    }
}
