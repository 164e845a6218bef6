//! The routes: `/ipxe/{ip}` and `/config/{ip}` (every method, as the original routed
//! them), `/images/…` (the files of the images directory), `/metrics`, `/healthz`;
//! Go's strict-slash redirect and plain-text 404 for everything else.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{MatchedPath, Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use lochness::{Context, Hypervisor};
use tower::ServiceExt;
use tower_http::services::ServeDir;

use crate::error::{plain_error, BootError};
use crate::index::IpIndex;
use crate::metrics::Metrics;
use crate::render::{choose_version, ipxe_script, node_config, DEFAULT_VERSION_KEY, VERSION_KEY};

/// What the answers are made of besides etcd.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `-b`: base URL of the boot files.
    pub base: String,
    /// `-v`: the last-resort image version.
    pub image_version: String,
    /// `-o`: extra kernel options.
    pub options: String,
    /// `-k` as given: the node's `ETCD_ADDRESS`.
    pub kv: String,
    /// `-i`: the directory under `/images/`.
    pub images: PathBuf,
}

/// The state every handler shares.
#[derive(Clone)]
pub struct Boot {
    ctx: Context,
    index: Arc<IpIndex>,
    settings: Arc<Settings>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Boot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Boot")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Boot {
    /// The state of a daemon on `ctx` with `index` (see [`IpIndex::start`]).
    pub fn new(ctx: Context, index: IpIndex, settings: Settings) -> Boot {
        Boot {
            ctx,
            index: Arc::new(index),
            settings: Arc::new(settings),
            metrics: Arc::new(Metrics::new()),
        }
    }

    /// The hypervisor whose address, as the original rendered it, is exactly `raw`
    /// (after checking that `raw` is an IP address): among the indexed candidates, the
    /// first in id order whose freshly read metadata still has that address.
    pub async fn find(&self, raw: &str) -> Result<Hypervisor, BootError> {
        if raw.parse::<IpAddr>().is_err() {
            return Err(BootError::InvalidAddress);
        }
        for id in self.index.lookup(raw) {
            match self.ctx.hypervisor(&id).await {
                Ok(h) if h.ip.map(|ip| ip.to_string()).as_deref() == Some(raw) => return Ok(h),
                Ok(_) => continue,
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(BootError::Store(e)),
            }
        }
        Err(BootError::NotFound)
    }

    /// The global configuration value of `key`, `None` when unset.
    async fn global(&self, key: &str) -> Result<Option<String>, BootError> {
        match self.ctx.get_config(key).await {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(BootError::Store(e)),
        }
    }

    /// The iPXE script of the hypervisor at `raw`.
    pub async fn ipxe(&self, raw: &str) -> Result<String, BootError> {
        let h = self.find(raw).await?;
        let own = h.config().get(VERSION_KEY).cloned();
        let global = match own.as_deref() {
            Some(v) if !v.is_empty() => None,
            _ => self.global(DEFAULT_VERSION_KEY).await?,
        };
        let version = choose_version(
            own.as_deref(),
            global.as_deref(),
            &self.settings.image_version,
        );
        Ok(ipxe_script(
            &self.settings.base,
            version,
            &h.id,
            &self.settings.options,
        ))
    }

    /// The node configuration of the hypervisor at `raw`.
    pub async fn config(&self, raw: &str) -> Result<String, BootError> {
        let h = self.find(raw).await?;
        let mut global = Vec::new();
        self.ctx
            .for_each_config(|k, v| {
                global.push((k.to_string(), v.to_string()));
                Ok(())
            })
            .await
            .map_err(BootError::Store)?;
        Ok(node_config(
            &self.settings.kv,
            global.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            h.config().iter().map(|(k, v)| (k.as_str(), v.as_str())),
        ))
    }
}

fn text(body: String) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        )],
        body,
    )
        .into_response()
}

async fn ipxe(State(boot): State<Boot>, Path(ip): Path<String>) -> Response {
    match boot.ipxe(&ip).await {
        Ok(body) => text(body),
        Err(e) => e.into_response(),
    }
}

async fn config(State(boot): State<Boot>, Path(ip): Path<String>) -> Response {
    match boot.config(&ip).await {
        Ok(body) => text(body),
        Err(e) => e.into_response(),
    }
}

/// Whether the percent-decoded `path` has a `..` segment (either separator).
pub fn climbs_out(path: &str) -> bool {
    let decoded = percent_encoding::percent_decode_str(path).decode_utf8_lossy();
    decoded.split(['/', '\\']).any(|seg| seg == "..")
}

/// `/images/<rest>`: the file `<rest>` under the images directory. A path with a `..`
/// segment is refused with 400 before the file service sees it (which refuses such
/// paths on its own too); a missing file is the router's 404 text.
async fn images(State(boot): State<Boot>, req: Request) -> Response {
    let path = req.uri().path();
    if climbs_out(path) {
        return plain_error(StatusCode::BAD_REQUEST, "invalid URL path");
    }
    let rest = path.strip_prefix("/images").unwrap_or(path).to_string();
    let rest = if rest.is_empty() {
        "/".to_string()
    } else {
        rest
    };
    let uri = match req.uri().query() {
        Some(q) => format!("{rest}?{q}"),
        None => rest,
    };
    let Ok(uri) = uri.parse::<Uri>() else {
        return plain_error(StatusCode::BAD_REQUEST, "invalid URL path");
    };
    let (mut parts, body) = req.into_parts();
    parts.uri = uri;
    let files = ServeDir::new(&boot.settings.images)
        .append_index_html_on_directories(false)
        .not_found_service(tower::service_fn(|_req: Request| async {
            Ok::<_, std::convert::Infallible>(mistify_http::not_found_text())
        }));
    match files.oneshot(Request::from_parts(parts, body)).await {
        Ok(r) => r.map(axum::body::Body::new),
        Err(e) => plain_error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

async fn metrics(State(boot): State<Boot>) -> Response {
    let body = boot.metrics.encode(boot.index.len(), boot.index.loads());
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        body,
    )
        .into_response()
}

/// Whether `path` is one the router answers (for the strict-slash redirect).
fn routed(path: &str) -> bool {
    let one_segment = |p: &str, prefix: &str| {
        p.strip_prefix(prefix)
            .is_some_and(|rest| !rest.is_empty() && !rest.contains('/'))
    };
    one_segment(path, "/ipxe/")
        || one_segment(path, "/config/")
        || path == "/metrics"
        || path == "/healthz"
}

async fn fallback(uri: Uri) -> Response {
    mistify_http::strict_slash_redirect(&uri, routed).unwrap_or_else(mistify_http::not_found_text)
}

/// Counts each request by its route template and status.
async fn count(State(boot): State<Boot>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "other".to_string());
    let response = next.run(req).await;
    boot.metrics.request(&route, response.status().as_u16());
    response
}

/// The whole application: the routes inside the shared layers (request log, gzip when
/// asked, panic recovery).
pub fn app(boot: Boot) -> Router {
    let routes = Router::new()
        .route("/ipxe/{ip}", any(ipxe))
        .route("/config/{ip}", any(config))
        .route("/images/{*rest}", any(images))
        .route("/metrics", get(metrics))
        .fallback(fallback)
        .route_layer(middleware::from_fn_with_state(boot.clone(), count))
        .with_state(boot)
        .merge(mistify_http::healthz_route(
            "cbootstrapd",
            env!("CARGO_PKG_VERSION"),
        ));
    mistify_http::with_common_layers(routes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_dot_segments_are_caught() {
        for bad in [
            "/images/../etc/passwd",
            "/images/a/../../b",
            "/images/%2e%2e/x",
            "/images/%2E%2E%2Fx",
            "/images/..%5cx",
            "/images/..",
        ] {
            assert!(climbs_out(bad), "{bad}");
        }
        for ok in ["/images/1.2.3/vmlinuz", "/images/a..b/c", "/images/.../x"] {
            assert!(!climbs_out(ok), "{ok}");
        }
    }

    #[test]
    fn strict_slash_only_for_routes() {
        assert!(routed("/ipxe/10.0.0.1"));
        assert!(routed("/config/x"));
        assert!(!routed("/ipxe/"));
        assert!(!routed("/ipxe/a/b"));
        assert!(!routed("/boot"));
    }
}
