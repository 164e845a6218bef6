//! The connections of a service: hyper's HTTP/1.1 connection-level client
//! (`hyper::client::conn::http1`), one `SendRequest` per kept-alive connection, pooled
//! per service.
//!
//! An RPC call takes an idle connection (or opens one), sends its request, reads the
//! whole reply and puts the connection back when it is still open. A connection idle for
//! over [`MAX_IDLE_AGE`] is not reused: our servers close idle connections after 30 s,
//! and a request sent just as the peer closes could not be sent again. A request is only
//! sent again on another connection when hyper hands it back unsent (the connection had
//! closed while idle): once written, the peer may have acted on it (a create, a reboot)
//! before it went away, and a JSON-RPC call is not idempotent.
//!
//! A Stream call takes a connection of its own (`Connection: close`) and hands back the
//! reply with its body as it arrives.

use std::io;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderValue, AUTHORIZATION, CONNECTION, CONTENT_ENCODING, CONTENT_TYPE, HOST};
use http::{Request, Response, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Largest reply body of an RPC call (replies of sub-agents are JSON documents).
pub const MAX_BODY: usize = 256 * 1024 * 1024;
/// Idle connections kept per service.
const MAX_IDLE: usize = 128;
/// An idle connection older than this is not reused.
const MAX_IDLE_AGE: Duration = Duration::from_secs(20);

/// A reply read completely.
#[derive(Debug)]
pub(crate) struct Reply {
    pub status: u16,
    pub gzip: bool,
    pub body: Bytes,
}

/// The connections to one `http://` endpoint, and the fixed part of every request.
#[derive(Debug)]
pub(crate) struct Pool {
    host: String,
    port: u16,
    uri: Uri,
    authority: HeaderValue,
    bearer: Option<HeaderValue>,
    connect_timeout: Duration,
    keep_alive: bool,
    idle: Mutex<Vec<(SendRequest<Full<Bytes>>, Instant)>>,
}

impl Pool {
    /// A pool for `url`, which must be a plain `http://host:port/path` URL; the error
    /// says why another is not served.
    pub fn for_url(
        url: &str,
        token: Option<&str>,
        connect_timeout: Duration,
        keep_alive: bool,
    ) -> Result<Pool, String> {
        let parsed: Uri = url
            .parse()
            .map_err(|e| format!("invalid service URL {url:?}: {e}"))?;
        if parsed.scheme_str() != Some("http") {
            return Err(format!(
                "unsupported service URL {url:?}: sub-agents are reached over plain http://"
            ));
        }
        let authority = parsed
            .authority()
            .ok_or_else(|| format!("invalid service URL {url:?}: no host"))?;
        if authority.as_str().contains('@') {
            return Err(format!(
                "unsupported service URL {url:?}: credentials go in the service's token"
            ));
        }
        // An IPv6 literal is written in brackets in the URL and the Host header only.
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = authority.port_u16().unwrap_or(80);
        let uri = Uri::builder()
            .path_and_query(
                parsed
                    .path_and_query()
                    .map_or("/", |p| p.as_str())
                    .to_string(),
            )
            .build()
            .map_err(|e| format!("invalid service URL {url:?}: {e}"))?;
        let authority = HeaderValue::from_str(authority.as_str())
            .map_err(|e| format!("invalid service URL {url:?}: {e}"))?;
        // The same rule as any header value: printable ASCII only, else not sent (the
        // sub-agent then answers 401).
        let bearer = token
            .filter(|t| t.bytes().all(|b| (0x20..0x7f).contains(&b)))
            .and_then(|t| HeaderValue::from_str(&format!("Bearer {t}")).ok())
            .map(|mut v| {
                v.set_sensitive(true);
                v
            });
        Ok(Pool {
            host,
            port,
            uri,
            authority,
            bearer,
            connect_timeout,
            keep_alive,
            idle: Mutex::new(Vec::new()),
        })
    }

    fn request(&self, body: Bytes, close: bool) -> io::Result<Request<Full<Bytes>>> {
        let mut request = Request::post(self.uri.clone())
            .header(HOST, self.authority.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(bearer) = &self.bearer {
            request = request.header(AUTHORIZATION, bearer.clone());
        }
        if close {
            request = request.header(CONNECTION, HeaderValue::from_static("close"));
        }
        request.body(Full::new(body)).map_err(io::Error::other)
    }

    /// POSTs `body` and reads the whole reply.
    pub async fn post(&self, body: Vec<u8>) -> io::Result<Reply> {
        let mut request = self.request(Bytes::from(body), !self.keep_alive)?;
        loop {
            let (mut sender, reused) = match self.take_idle() {
                Some(sender) => (sender, true),
                None => (self.connect().await?, false),
            };
            if sender.ready().await.is_err() {
                if reused {
                    continue;
                }
                return Err(io::Error::other("the connection closed before the request"));
            }
            let response = match sender.try_send_request(request).await {
                Ok(response) => response,
                Err(mut e) => match e.take_message() {
                    // Not sent (the kept-alive connection had closed): another one.
                    Some(unsent) if reused => {
                        request = unsent;
                        continue;
                    }
                    _ => return Err(transport(e.into_error())),
                },
            };
            let status = response.status().as_u16();
            let gzip = response
                .headers()
                .get(CONTENT_ENCODING)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("gzip"));
            let body = Limited::new(response.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|e| match e.downcast::<hyper::Error>() {
                    Ok(e) => transport(*e),
                    Err(e) => io::Error::new(io::ErrorKind::InvalidData, e.to_string()),
                })?
                .to_bytes();
            if self.keep_alive {
                self.put_idle(sender);
            }
            return Ok(Reply { status, gzip, body });
        }
    }

    /// POSTs `body` on a new connection and returns the reply once its head is read;
    /// the body is read as the caller polls it, and the connection closes after it.
    pub async fn stream(&self, body: Vec<u8>) -> io::Result<Response<Incoming>> {
        let mut sender = self.connect().await?;
        let request = self.request(Bytes::from(body), true)?;
        sender.send_request(request).await.map_err(transport)
    }

    /// `GET path` on a connection of its own: the status of whatever answers (a health
    /// probe: any HTTP answer means the process serves).
    pub async fn probe(&self, path: &str) -> io::Result<u16> {
        let mut sender = self.connect().await?;
        let uri = Uri::builder()
            .path_and_query(path)
            .build()
            .map_err(io::Error::other)?;
        let request = Request::get(uri)
            .header(HOST, self.authority.clone())
            .header(CONNECTION, HeaderValue::from_static("close"))
            .body(Full::new(Bytes::new()))
            .map_err(io::Error::other)?;
        let response = sender.send_request(request).await.map_err(transport)?;
        Ok(response.status().as_u16())
    }

    /// The most recently used idle connection that is still open and young enough.
    fn take_idle(&self) -> Option<SendRequest<Full<Bytes>>> {
        loop {
            let (sender, since) = self.idle.lock().ok()?.pop()?;
            if since.elapsed() <= MAX_IDLE_AGE && !sender.is_closed() {
                return Some(sender);
            }
        }
    }

    fn put_idle(&self, sender: SendRequest<Full<Bytes>>) {
        if sender.is_closed() {
            return;
        }
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() < MAX_IDLE {
                idle.push((sender, Instant::now()));
            }
        }
    }

    /// A new connection, its hyper connection task running.
    async fn connect(&self) -> io::Result<SendRequest<Full<Bytes>>> {
        let target = (self.host.as_str(), self.port);
        let stream =
            match tokio::time::timeout(self.connect_timeout, TcpStream::connect(target)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("cannot connect to {}:{}: {e}", self.host, self.port),
                    ))
                }
                Err(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "cannot connect to {}:{}: no answer within {:?}",
                            self.host, self.port, self.connect_timeout
                        ),
                    ))
                }
            };
        stream.set_nodelay(true)?;
        // Header names as Go writes them (`Content-Type`), for peers that compare them.
        let (sender, connection) = hyper::client::conn::http1::Builder::new()
            .title_case_headers(true)
            .handshake(TokioIo::new(stream))
            .await
            .map_err(transport)?;
        // Drives the connection until it closes (the sender dropped, or the peer done).
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("sub-agent connection: {e}");
            }
        });
        Ok(sender)
    }
}

/// hyper's error as an I/O error whose text names its cause too ("connection closed
/// before message completed", "… : Connection reset by peer").
fn transport(e: hyper::Error) -> io::Error {
    let text = e.to_string();
    match std::error::Error::source(&e) {
        Some(cause) => io::Error::other(format!("{text}: {cause}")),
        None => io::Error::other(text),
    }
}
