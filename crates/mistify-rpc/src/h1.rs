//! A small HTTP/1.1 client for the one request shape of a JSON-RPC call: a `POST` with
//! a JSON body to a sub-agent on a plain `http://` URL, the whole reply read into memory.
//!
//! It exists because that call is the agent's hot path: a general client (reqwest over
//! hyper's pooled client) spends more CPU per call than the sub-agent spends answering
//! it, in request building, URL conversion, a connection task per connection and a
//! channel hop to it. Here the calling task owns its connection for the whole exchange:
//! one write, reads into one buffer, and the connection goes back to the service's idle
//! list when the reply was complete and the peer keeps it open.
//!
//! What it understands of a reply: the status line, `Content-Length`, `Transfer-Encoding:
//! chunked` (trailers skipped), a body delimited by the end of the connection,
//! `Connection: close`, interim `1xx` replies (skipped) and `Content-Encoding` (reported,
//! decoded by the caller). Other schemes go through reqwest.
//!
//! A Stream call ([`Pool::stream`]) takes a new connection of its own and hands it to
//! hyper's HTTP/1.1 client, which delivers the body as it arrives; the connection ends
//! with the body.

use std::io::{self, Write as _};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longest reply head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Largest reply body accepted (replies of sub-agents are JSON documents).
pub const MAX_BODY: usize = 256 * 1024 * 1024;
/// Most headers in a reply head.
const MAX_HEADERS: usize = 64;
/// Idle connections kept per service.
const MAX_IDLE: usize = 128;
/// An idle connection older than this is not reused: our servers close idle
/// connections after 30 s, and a request sent just as the peer closes cannot be resent.
const MAX_IDLE_AGE: Duration = Duration::from_secs(20);

/// A reply read completely.
#[derive(Debug)]
pub(crate) struct Reply {
    pub status: u16,
    pub gzip: bool,
    pub body: Vec<u8>,
}

/// Connections to one `host:port`, and the fixed part of every request head.
#[derive(Debug)]
pub(crate) struct Pool {
    host: String,
    port: u16,
    /// `Host: …\r\nContent-Type: application/json\r\n` and, with a token, the
    /// `Authorization` line.
    fixed_headers: String,
    path: String,
    /// `Host` and `Authorization` of a Stream call.
    authority: String,
    bearer: Option<String>,
    connect_timeout: Duration,
    keep_alive: bool,
    idle: Mutex<Vec<(TcpStream, Instant)>>,
}

/// Where an exchange failed. Only a request that could not be written may be sent
/// again: once written, the peer may have acted on it (a create, a reboot) before
/// it went away, and a JSON-RPC call is not idempotent.
struct Failure {
    error: io::Error,
    unsent: bool,
}

impl Pool {
    /// A pool for `url` when it is a plain `http://` URL (else `None`: use reqwest).
    pub fn for_url(
        url: &reqwest::Url,
        token: Option<&str>,
        connect_timeout: Duration,
        keep_alive: bool,
    ) -> Option<Pool> {
        if url.scheme() != "http" || !url.username().is_empty() || url.password().is_some() {
            return None;
        }
        // An IPv6 literal is written in brackets in the URL and the Host header only.
        let host = url
            .host_str()?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = url.port_or_known_default()?;
        let authority = match url.port() {
            Some(p) => format!("{}:{p}", url.host_str()?),
            None => url.host_str()?.to_string(),
        };
        let mut fixed_headers = format!("Host: {authority}\r\nContent-Type: application/json\r\n");
        // The same rule as a header value: printable ASCII only, else not sent.
        let bearer = token
            .filter(|t| t.bytes().all(|b| (0x20..0x7f).contains(&b)))
            .map(|t| format!("Bearer {t}"));
        if let Some(bearer) = &bearer {
            fixed_headers.push_str(&format!("Authorization: {bearer}\r\n"));
        }
        if !keep_alive {
            fixed_headers.push_str("Connection: close\r\n");
        }
        let mut path = url.path().to_string();
        if let Some(q) = url.query() {
            path.push('?');
            path.push_str(q);
        }
        Some(Pool {
            host,
            port,
            fixed_headers,
            path,
            authority,
            bearer,
            connect_timeout,
            keep_alive,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// POSTs `body` and reads the whole reply.
    pub async fn post(&self, body: &[u8]) -> io::Result<Reply> {
        let mut request =
            Vec::with_capacity(self.path.len() + self.fixed_headers.len() + 64 + body.len());
        request.extend_from_slice(b"POST ");
        request.extend_from_slice(self.path.as_bytes());
        request.extend_from_slice(b" HTTP/1.1\r\n");
        request.extend_from_slice(self.fixed_headers.as_bytes());
        // Written into the buffer: no string of its own per request.
        let _ = write!(request, "Content-Length: {}\r\n\r\n", body.len());
        request.extend_from_slice(body);
        loop {
            let (mut conn, reused) = match self.take_idle() {
                Some(c) => (c, true),
                None => (self.connect().await?, false),
            };
            match exchange(&mut conn, &request).await {
                Ok((reply, reusable)) => {
                    if reusable && self.keep_alive {
                        self.put_idle(conn);
                    }
                    return Ok(reply);
                }
                // A kept-alive connection that failed before taking the request (the
                // peer had reset it): try the next one or a new one.
                Err(f) if reused && f.unsent => continue,
                Err(f) => return Err(f.error),
            }
        }
    }

    /// POSTs `body` on a new connection and returns the reply once its head is read;
    /// the body is read as the caller polls it, and the connection closes after it.
    pub async fn stream(&self, body: Vec<u8>) -> io::Result<http::Response<hyper::body::Incoming>> {
        let conn = self.connect().await?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(conn))
                .await
                .map_err(io::Error::other)?;
        // Drives the connection until the reply body is read or dropped.
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("stream connection: {e}");
            }
        });
        let mut request = http::Request::post(self.path.as_str())
            .header(http::header::HOST, self.authority.as_str())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::CONNECTION, "close");
        if let Some(bearer) = &self.bearer {
            request = request.header(http::header::AUTHORIZATION, bearer.as_str());
        }
        let request = request
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
            .map_err(io::Error::other)?;
        sender.send_request(request).await.map_err(|e| {
            let text = e.to_string();
            match std::error::Error::source(&e) {
                Some(cause) => io::Error::other(format!("{text}: {cause}")),
                None => io::Error::other(text),
            }
        })
    }

    /// The most recently used idle connection that is still open. A connection the
    /// peer closed while idle has its end-of-stream (or reset) waiting to be read;
    /// it is dropped here, before a request is written to it.
    fn take_idle(&self) -> Option<TcpStream> {
        loop {
            let (conn, since) = self.idle.lock().ok()?.pop()?;
            if since.elapsed() > MAX_IDLE_AGE {
                continue;
            }
            let mut probe = [0u8; 1];
            match conn.try_read(&mut probe) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Some(conn),
                // Closed (0), reset, or bytes nobody asked for: not reusable.
                _ => continue,
            }
        }
    }

    fn put_idle(&self, conn: TcpStream) {
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() < MAX_IDLE {
                idle.push((conn, Instant::now()));
            }
        }
    }

    async fn connect(&self) -> io::Result<TcpStream> {
        let target = (self.host.as_str(), self.port);
        let conn =
            match tokio::time::timeout(self.connect_timeout, TcpStream::connect(target)).await {
                Ok(Ok(c)) => c,
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
        conn.set_nodelay(true)?;
        Ok(conn)
    }
}

/// Writes `request` and reads one reply; whether the connection can carry another.
async fn exchange(conn: &mut TcpStream, request: &[u8]) -> Result<(Reply, bool), Failure> {
    conn.write_all(request).await.map_err(|error| Failure {
        error,
        unsent: true,
    })?;
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    loop {
        let head = match parse_head(&buf) {
            Ok(Some(head)) => head,
            Ok(None) => {
                if buf.len() > MAX_HEAD {
                    return Err(late(invalid("reply head too long")));
                }
                let n = read_more(conn, &mut buf).await.map_err(late)?;
                if n == 0 {
                    return Err(late(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed before a complete reply",
                    )));
                }
                continue;
            }
            Err(e) => return Err(late(e)),
        };
        buf.drain(..head.len);
        if (100..200).contains(&head.status) {
            // An interim reply (100 Continue, 103 Early Hints): the real one follows.
            continue;
        }
        let no_body = head.status == 204 || head.status == 304;
        let (body, complete) = if no_body {
            (Vec::new(), true)
        } else if head.chunked {
            (read_chunked(conn, buf).await.map_err(late)?, true)
        } else if let Some(len) = head.content_length {
            (read_exact_len(conn, buf, len).await.map_err(late)?, true)
        } else {
            (read_to_close(conn, buf).await.map_err(late)?, false)
        };
        let reusable = complete && head.keep_alive;
        return Ok((
            Reply {
                status: head.status,
                gzip: head.gzip,
                body,
            },
            reusable,
        ));
    }
}

fn late(error: io::Error) -> Failure {
    Failure {
        error,
        unsent: false,
    }
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

async fn read_more(conn: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<usize> {
    if buf.capacity() - buf.len() < 1024 {
        buf.reserve(buf.capacity().max(4096));
    }
    conn.read_buf(buf).await
}

#[derive(Debug, PartialEq)]
struct Head {
    len: usize,
    status: u16,
    content_length: Option<usize>,
    chunked: bool,
    keep_alive: bool,
    gzip: bool,
}

/// The reply head at the start of `buf`: `None` while incomplete.
fn parse_head(buf: &[u8]) -> io::Result<Option<Head>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let len = match response.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(invalid(&format!("unreadable reply head: {e}"))),
    };
    let status = response.code.unwrap_or(0);
    let mut head = Head {
        len,
        status,
        content_length: None,
        chunked: false,
        // HTTP/1.1 keeps the connection unless told otherwise; 1.0 closes it.
        keep_alive: response.version == Some(1),
        gzip: false,
    };
    for h in response.headers.iter() {
        let value = std::str::from_utf8(h.value).unwrap_or("").trim();
        if h.name.eq_ignore_ascii_case("content-length") {
            let n: usize = value
                .parse()
                .map_err(|_| invalid("unreadable Content-Length"))?;
            if head.content_length.is_some_and(|m| m != n) {
                return Err(invalid("conflicting Content-Length headers"));
            }
            head.content_length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            let last = value.rsplit(',').next().unwrap_or("").trim();
            if last.eq_ignore_ascii_case("chunked") {
                head.chunked = true;
            } else {
                // Not chunked last: the body ends with the connection (RFC 9112 6.3).
                head.keep_alive = false;
            }
        } else if h.name.eq_ignore_ascii_case("connection") {
            if value
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("close"))
            {
                head.keep_alive = false;
            }
        } else if h.name.eq_ignore_ascii_case("content-encoding") {
            head.gzip = value.eq_ignore_ascii_case("gzip");
        }
    }
    if head.content_length.is_some_and(|n| n > MAX_BODY) {
        return Err(invalid("reply body too large"));
    }
    if head.chunked {
        // Transfer-Encoding wins over Content-Length (RFC 9112 6.3).
        head.content_length = None;
    }
    Ok(Some(head))
}

async fn read_exact_len(conn: &mut TcpStream, mut buf: Vec<u8>, len: usize) -> io::Result<Vec<u8>> {
    if buf.len() < len {
        buf.reserve(len - buf.len());
    }
    while buf.len() < len {
        if conn.read_buf(&mut buf).await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed in the middle of the reply body",
            ));
        }
    }
    if buf.len() > len {
        // Bytes past the body: the peer is not speaking one reply per request.
        return Err(invalid("more bytes than the reply's Content-Length"));
    }
    Ok(buf)
}

async fn read_to_close(conn: &mut TcpStream, mut buf: Vec<u8>) -> io::Result<Vec<u8>> {
    loop {
        if buf.len() > MAX_BODY {
            return Err(invalid("reply body too large"));
        }
        if read_more(conn, &mut buf).await? == 0 {
            return Ok(buf);
        }
    }
}

/// Decodes a chunked body; `buf` holds what was read past the head.
async fn read_chunked(conn: &mut TcpStream, mut buf: Vec<u8>) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    let mut pos = 0;
    loop {
        // The chunk-size line.
        let (size, used) = loop {
            match httparse::parse_chunk_size(&buf[pos..]) {
                Ok(httparse::Status::Complete((used, size))) => break (size, used),
                Ok(httparse::Status::Partial) => fill(conn, &mut buf).await?,
                Err(_) => return Err(invalid("unreadable chunk size")),
            }
        };
        pos += used;
        let size = usize::try_from(size).map_err(|_| invalid("chunk too large"))?;
        if size == 0 {
            // Trailers (ignored), up to the empty line.
            loop {
                match find_line(&buf[pos..]) {
                    Some(0) => return Ok(body),
                    Some(n) => pos += n,
                    None => fill(conn, &mut buf).await?,
                }
            }
        }
        if body.len() + size > MAX_BODY {
            return Err(invalid("reply body too large"));
        }
        while buf.len() - pos < size + 2 {
            fill(conn, &mut buf).await?;
        }
        body.extend_from_slice(&buf[pos..pos + size]);
        if &buf[pos + size..pos + size + 2] != b"\r\n" {
            return Err(invalid("chunk not followed by CRLF"));
        }
        pos += size + 2;
    }
}

/// The length of the line at the start of `data` including its CRLF, `Some(0)` for
/// the empty line that ends the trailers, `None` when no full line is there yet.
fn find_line(data: &[u8]) -> Option<usize> {
    let end = data.windows(2).position(|w| w == b"\r\n")?;
    Some(if end == 0 { 0 } else { end + 2 })
}

/// Reads more into `buf`; EOF is an error: a chunked body has its own end.
async fn fill(conn: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<()> {
    if read_more(conn, buf).await? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed in the middle of a chunked reply",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads() {
        let h = parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
            .unwrap()
            .unwrap();
        assert_eq!(
            (h.status, h.content_length, h.keep_alive),
            (200, Some(5), true)
        );
        assert_eq!(h.len, 38);
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Len")
            .unwrap()
            .is_none());
        let h = parse_head(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\nContent-Encoding: gzip\r\nConnection: keep-alive, close\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        assert!(h.chunked && h.gzip && !h.keep_alive);
        assert_eq!(h.content_length, None);
        let h = parse_head(b"HTTP/1.0 200 OK\r\n\r\n").unwrap().unwrap();
        assert!(!h.keep_alive);
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n").is_err());
        assert!(
            parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n")
                .is_err()
        );
        assert!(parse_head(b"garbage\r\n\r\n").is_err());
        assert!(parse_head(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
                MAX_BODY + 1
            )
            .as_bytes()
        )
        .is_err());
    }

    #[test]
    fn lines() {
        assert_eq!(find_line(b"\r\nrest"), Some(0));
        assert_eq!(find_line(b"X-T: 1\r\n\r\n"), Some(8));
        assert_eq!(find_line(b"X-T: 1"), None);
    }
}
