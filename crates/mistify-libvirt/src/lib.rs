//! `mistify-libvirt`: the guest sub-agent of mistify on libvirt.
//!
//! The agent calls `Libvirt.*` methods over JSON-RPC (see `docs/libvirt.md`); each turns
//! into libvirt calls made on blocking threads over a bounded [`pool::Pool`] of
//! connections. Domain and network XML is built from typed structs ([`xml`],
//! [`render`]).
//!
//! ```no_run
//! use mistify_libvirt::{server, Libvirt, pool::Pool, render::Options};
//!
//! # async fn run() -> std::io::Result<()> {
//! let lv = Libvirt::new(Pool::new("test:///default", 1), Options::default());
//! server(lv).serve(20001).await
//! # }
//! ```

pub mod cli;
pub mod error;
pub mod pool;
mod raw;
pub mod render;
pub mod service;
pub mod xml;

use std::sync::Arc;

use mistify_rpc::{GuestMetricsRequest, GuestRequest, Server};

pub use error::Error;
pub use service::Libvirt;

/// The service name of every method.
pub const SERVICE: &str = "Libvirt";

/// The RPC server with every `Libvirt.*` method registered.
pub fn server(lv: Libvirt) -> Server {
    let lv = Arc::new(lv);
    macro_rules! guest {
        ($server:expr, $name:literal, $method:ident) => {{
            let lv = lv.clone();
            $server.method($name, move |req: GuestRequest| {
                let lv = lv.clone();
                async move { lv.$method(req).await }
            })
        }};
    }
    macro_rules! metrics {
        ($server:expr, $name:literal, $method:ident) => {{
            let lv = lv.clone();
            $server.method($name, move |req: GuestMetricsRequest| {
                let lv = lv.clone();
                async move { lv.$method(req).await }
            })
        }};
    }
    // v1 only: the Go sub-agent ignored a `jsonrpc` member, and so do we (its replies
    // stay byte-compatible; our agent reads v1 replies).
    let s = Server::new("mistify-libvirt")
        .version(env!("CARGO_PKG_VERSION"))
        .v1_only();
    let s = guest!(s, "Libvirt.CreateGuest", create_guest);
    let s = guest!(s, "Libvirt.Create", create);
    let s = guest!(s, "Libvirt.Delete", delete);
    let s = guest!(s, "Libvirt.Run", run);
    let s = guest!(s, "Libvirt.Reboot", reboot);
    let s = guest!(s, "Libvirt.Restart", reboot);
    let s = guest!(s, "Libvirt.Shutdown", shutdown);
    let s = guest!(s, "Libvirt.Poweroff", poweroff);
    let s = guest!(s, "Libvirt.Suspend", suspend);
    let s = guest!(s, "Libvirt.Resume", resume);
    let s = guest!(s, "Libvirt.Status", status);
    let s = {
        let lv = lv.clone();
        s.method("Libvirt.Inspect", move |req: GuestRequest| {
            let lv = lv.clone();
            async move { lv.inspect(req).await }
        })
    };
    let s = metrics!(s, "Libvirt.CPUMetrics", cpu_metrics);
    let s = metrics!(s, "Libvirt.DiskMetrics", disk_metrics);
    let s = metrics!(s, "Libvirt.NicMetrics", nic_metrics);
    // Any other path: the Go router's plain-text 404.
    s.merge(axum::Router::new().fallback(|| async {
        (
            axum::http::StatusCode::NOT_FOUND,
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; charset=utf-8",
            )],
            "404 page not found\n",
        )
    }))
}
