//! REST client of the supervisor API (govisor routes, plus `?full=1` and `?since=`).

use mistify_types::supervisor::{
    ErrorBody, Hex, LogRecord, ManagerInfo, ServiceInfo, POLL_ETAG, POLL_TIME,
};
use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use std::time::Duration;

/// Client errors. `code` follows govisor's client: the server's `{code, message}` when
/// the body has one, else the HTTP status and its reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    #[error("{message}")]
    Api { code: u16, message: String },
    #[error("Request timed out")]
    Timeout,
    #[error("{0}")]
    Transport(String),
    #[error("bad address {0:?}: {1}")]
    Address(String, String),
}

impl ClientError {
    /// The HTTP-like code (408 for a timeout, 0 for transport errors).
    pub fn code(&self) -> u16 {
        match self {
            ClientError::Api { code, .. } => *code,
            ClientError::Timeout => 408,
            _ => 0,
        }
    }

    pub fn is_unauthorized(&self) -> bool {
        self.code() == 401
    }
}

/// Connection settings.
#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    pub user: Option<String>,
    pub pass: Option<String>,
    /// PEM CA file (used only for https:// addresses).
    pub cacert: Option<std::path::PathBuf>,
    pub insecure: bool,
}

/// A client of one daemon.
#[derive(Clone)]
pub struct Client {
    base: String,
    shown: String,
    http: reqwest::Client,
    auth: Option<(String, String)>,
}

/// The timeout of ordinary requests.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a watch waits on the server.
pub const WATCH_SECS: u64 = 300;

/// Percent-encodes one path segment (`:` becomes `%3A`).
pub fn encode_segment(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Client {
    pub fn new(addr: &str, opts: &ClientOptions) -> Result<Client, ClientError> {
        let base = if addr.starts_with("http://") || addr.starts_with("https://") {
            addr.trim_end_matches('/').to_string()
        } else {
            format!("http://{}", addr.trim_end_matches('/'))
        };
        url::Url::parse(&base).map_err(|e| ClientError::Address(addr.into(), e.to_string()))?;
        if base.starts_with("https://") {
            return Err(ClientError::Address(
                addr.into(),
                "https:// needs Client::connect".into(),
            ));
        }
        let http = reqwest::Client::builder()
            .build()
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        let auth = opts
            .user
            .clone()
            .map(|u| (u, opts.pass.clone().unwrap_or_default()));
        Ok(Client {
            shown: base.clone(),
            base,
            http,
            auth,
        })
    }

    /// Like [`Client::new`], and for `https://` addresses: checks the server's
    /// certificate (against `--cacert`, or the system roots; not at all with
    /// `--insecure`) and then talks to it through a TLS tunnel on a loopback port.
    pub async fn connect(addr: &str, opts: &ClientOptions) -> Result<Client, ClientError> {
        let Some(rest) = addr.strip_prefix("https://") else {
            return Client::new(addr, opts);
        };
        let url =
            url::Url::parse(addr).map_err(|e| ClientError::Address(addr.into(), e.to_string()))?;
        let local = tls::tunnel(&url, opts)
            .await
            .map_err(|e| ClientError::Address(addr.into(), e))?;
        let path = rest.split_once('/').map(|(_, p)| p).unwrap_or("");
        let mut c = Client::new(&format!("{local}/{path}"), opts)?;
        c.shown = addr.trim_end_matches('/').to_string();
        Ok(c)
    }

    /// The server address as given.
    pub fn url(&self) -> &str {
        &self.shown
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn set_auth(&mut self, user: &str, pass: &str) {
        self.auth = Some((user.into(), pass.into()));
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, format!("{}{path}", self.base));
        match &self.auth {
            Some((u, p)) => r.basic_auth(u, Some(p)),
            None => r,
        }
    }

    async fn error_of(resp: reqwest::Response) -> ClientError {
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        match serde_json::from_str::<ErrorBody>(&text) {
            Ok(b) => ClientError::Api {
                code: b.code,
                message: b.message,
            },
            Err(_) => ClientError::Api {
                code: status.as_u16(),
                message: format!(
                    "{} {}",
                    status.as_u16(),
                    status.canonical_reason().unwrap_or("")
                )
                .trim()
                .to_string(),
            },
        }
    }

    fn transport(e: reqwest::Error) -> ClientError {
        if e.is_timeout() {
            ClientError::Timeout
        } else {
            let mut text = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                text.push_str(&format!(": {s}"));
                src = s.source();
            }
            ClientError::Transport(text)
        }
    }

    /// GET with optional long-poll on `etag`; `None` when unchanged (304).
    async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        watch: Option<(Hex, u64)>,
    ) -> Result<Option<(T, Hex)>, ClientError> {
        let mut req = self.request(reqwest::Method::GET, path);
        match watch {
            Some((etag, secs)) => {
                req = req
                    .header("If-None-Match", etag.etag())
                    .header(POLL_ETAG, etag.etag())
                    .header(POLL_TIME, secs.to_string())
                    .timeout(Duration::from_secs(secs) + REQUEST_TIMEOUT);
            }
            None => req = req.timeout(REQUEST_TIMEOUT),
        }
        let resp = req.send().await.map_err(Self::transport)?;
        if resp.status() == StatusCode::NOT_MODIFIED {
            return Ok(None);
        }
        if resp.status() != StatusCode::OK {
            return Err(Self::error_of(resp).await);
        }
        let etag = resp
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .and_then(Hex::from_etag)
            .unwrap_or_default();
        let body = resp.json::<T>().await.map_err(Self::transport)?;
        Ok(Some((body, etag)))
    }

    async fn get_now<T: DeserializeOwned>(&self, path: &str) -> Result<(T, Hex), ClientError> {
        self.get(path, None)
            .await?
            .ok_or_else(|| ClientError::Transport("unexpected 304".into()))
    }

    pub async fn info(&self) -> Result<ManagerInfo, ClientError> {
        Ok(self.get_now("/").await?.0)
    }

    pub async fn names(&self) -> Result<Vec<String>, ClientError> {
        let mut n: Vec<String> = self.get_now("/services").await?.0;
        n.sort();
        Ok(n)
    }

    /// One service with our extended fields.
    pub async fn service(&self, name: &str) -> Result<ServiceInfo, ClientError> {
        Ok(self
            .get_now(&format!("/services/{}?full=1", encode_segment(name)))
            .await?
            .0)
    }

    /// Every service (one request), with the global serial as ETag.
    pub async fn all(&self) -> Result<(Vec<ServiceInfo>, Hex), ClientError> {
        self.get_now("/services?full=1").await
    }

    /// Waits up to `secs` for any change after `etag`; `None` when nothing changed.
    pub async fn watch_all(
        &self,
        etag: Hex,
        secs: u64,
    ) -> Result<Option<(Vec<ServiceInfo>, Hex)>, ClientError> {
        self.get("/services?full=1", Some((etag, secs))).await
    }

    fn log_path(name: Option<&str>, since: Option<Hex>) -> String {
        let mut p = match name {
            Some(n) => format!("/services/{}/log", encode_segment(n)),
            None => "/log".to_string(),
        };
        if let Some(s) = since {
            p.push_str(&format!("?since={s}"));
        }
        p
    }

    /// The log of a service (or the consolidated log with `None`), newer than `since`.
    pub async fn log(
        &self,
        name: Option<&str>,
        since: Option<Hex>,
    ) -> Result<(Vec<LogRecord>, Hex), ClientError> {
        self.get_now(&Self::log_path(name, since)).await
    }

    /// Waits for lines after `last` (the id of the newest line seen); only new lines.
    pub async fn watch_log(
        &self,
        name: Option<&str>,
        last: Hex,
        secs: u64,
    ) -> Result<Option<(Vec<LogRecord>, Hex)>, ClientError> {
        self.get(&Self::log_path(name, Some(last)), Some((last, secs)))
            .await
    }

    async fn post(&self, name: &str, action: &str) -> Result<(), ClientError> {
        let resp = self
            .request(
                reqwest::Method::POST,
                &format!("/services/{}/{action}", encode_segment(name)),
            )
            .header("Content-Type", "text/plain")
            .body("")
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .map_err(Self::transport)?;
        if resp.status() == StatusCode::OK {
            Ok(())
        } else {
            Err(Self::error_of(resp).await)
        }
    }

    pub async fn enable(&self, name: &str) -> Result<(), ClientError> {
        self.post(name, "enable").await
    }
    pub async fn disable(&self, name: &str) -> Result<(), ClientError> {
        self.post(name, "disable").await
    }
    pub async fn restart(&self, name: &str) -> Result<(), ClientError> {
        self.post(name, "restart").await
    }
    pub async fn clear(&self, name: &str) -> Result<(), ClientError> {
        self.post(name, "clear").await
    }
}

mod tls {
    use super::ClientOptions;
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{DigitallySignedStruct, SignatureScheme};
    use std::sync::Arc;

    /// `--insecure`: accepts any certificate (signatures are still checked).
    #[derive(Debug)]
    struct AnyCert(Arc<rustls::crypto::CryptoProvider>);

    impl ServerCertVerifier for AnyCert {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }
        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }
        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }

    fn config(opts: &ClientOptions) -> Result<rustls::ClientConfig, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        if opts.insecure {
            return Ok(builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
                .with_no_client_auth());
        }
        let mut roots = rustls::RootCertStore::empty();
        let files: Vec<std::path::PathBuf> = match &opts.cacert {
            Some(ca) => vec![ca.clone()],
            None => SYSTEM_ROOTS
                .iter()
                .map(std::path::PathBuf::from)
                .filter(|p| p.is_file())
                .take(1)
                .collect(),
        };
        for f in files {
            let certs = CertificateDer::pem_file_iter(&f)
                .map_err(|e| format!("CA file {}: {e}", f.display()))?;
            for c in certs {
                let c = c.map_err(|e| format!("CA file {}: {e}", f.display()))?;
                let _ = roots.add(c);
            }
        }
        if roots.is_empty() {
            return Err("no trusted CA certificates (give --cacert, or --insecure)".into());
        }
        Ok(builder.with_root_certificates(roots).with_no_client_auth())
    }

    const SYSTEM_ROOTS: &[&str] = &[
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
        "/etc/ssl/cert.pem",
    ];

    /// Opens a loopback listener whose connections are forwarded over TLS to `url`'s
    /// host; returns `http://127.0.0.1:PORT`. One handshake is made first so that
    /// certificate problems are reported here.
    pub async fn tunnel(url: &url::Url, opts: &ClientOptions) -> Result<String, String> {
        let host = url
            .host_str()
            .ok_or("no host")?
            .trim_matches(['[', ']'])
            .to_string();
        let port = url.port_or_known_default().unwrap_or(443);
        let name = ServerName::try_from(host.clone()).map_err(|e| e.to_string())?;
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config(opts)?));
        let dial = {
            let (host, name, connector) = (host.clone(), name.clone(), connector.clone());
            move || {
                let (host, name, connector) = (host.clone(), name.clone(), connector.clone());
                async move {
                    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
                        .await
                        .map_err(|e| format!("connect {host}:{port}: {e}"))?;
                    connector
                        .connect(name, tcp)
                        .await
                        .map_err(|e| format!("TLS with {host}:{port}: {e}"))
                }
            }
        };
        // Fail early, with the real reason, on a bad certificate.
        drop(dial().await?);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| e.to_string())?;
        let local = listener.local_addr().map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let dial = dial.clone();
                tokio::spawn(async move {
                    match dial().await {
                        Ok(mut tls) => {
                            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut tls).await;
                        }
                        Err(e) => tracing::warn!("{e}"),
                    }
                });
            }
        });
        Ok(format!("http://{local}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_encoded() {
        assert_eq!(encode_segment("s2:ok"), "s2%3Aok");
        assert_eq!(encode_segment("a_b"), "a_b");
        assert_eq!(encode_segment("a/b"), "a%2Fb");
    }
}
