//! `cbootstrapd`: what a hypervisor fetches while it network-boots, answered from the
//! cluster's etcd (docs/bootstrap.md).
//!
//! - `GET /ipxe/{ip}`: the iPXE script that boots the hypervisor with that address —
//!   kernel and initrd of its image version under the base URL, `uuid=<its id>` and the
//!   extra kernel options on the kernel line;
//! - `GET /config/{ip}`: its node configuration, `KEY=VALUE` lines: `ETCD_ADDRESS`, then
//!   the cluster's and the hypervisor's upper-case configuration keys;
//! - `GET /images/…`: the files of the images directory;
//! - `GET /metrics`, `GET /healthz`.
//!
//! The routes, bodies, statuses and plain-text errors are the original's (its recorded
//! exchanges replay against this daemon). A hypervisor is found by address through an
//! in-memory index kept current by a watch ([`index`]), not by reading every hypervisor
//! per request.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use lochness_bootstrap::{app, Boot, IpIndex, Settings};
//! let ctx = lochness::Context::new(&["http://127.0.0.1:2379"], None).await?;
//! let index = IpIndex::start(&ctx).await?;
//! let settings = Settings {
//!     base: "http://boot.example:8888".into(),
//!     image_version: "0.1.0".into(),
//!     options: String::new(),
//!     kv: "http://127.0.0.1:2379".into(),
//!     images: "/var/lib/images".into(),
//! };
//! let router = app(Boot::new(ctx, index, settings));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8888").await?;
//! mistify_http::serve(listener, router, Default::default(), mistify_http::shutdown_signal()).await?;
//! # Ok(())
//! # }
//! ```

pub mod config;
pub mod error;
pub mod index;
pub mod metrics;
pub mod render;
pub mod server;

pub use config::Args;
pub use error::BootError;
pub use index::{IpIndex, IpTable};
pub use server::{app, Boot, Settings};

/// Runs cbootstrapd with `args` until SIGTERM or Ctrl-C; the exit status (2: bad flags,
/// 1: cannot start).
pub async fn run(args: Args) -> i32 {
    const NAME: &str = "cbootstrapd";
    if let Err(e) = mistify_http::init_tracing(
        mistify_http::runtime::go_level(&args.log_level),
        args.log_format,
    ) {
        eprintln!("{NAME}: {e}");
        return 2;
    }
    let endpoints = match lochness::kv_endpoints(&args.kv) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("{NAME}: {e}");
            return 2;
        }
    };
    if let Some(s) = &args.statsd {
        tracing::warn!(statsd = %s, "--statsd is ignored: see GET /metrics");
    }
    let prefix = (!args.prefix.is_empty()).then_some(args.prefix.as_str());
    let ctx = match lochness::Context::new(&endpoints, prefix).await {
        Ok(ctx) => ctx,
        Err(e) => {
            eprintln!(
                "{NAME}: cannot connect to etcd at {}: {e}",
                endpoints.join(",")
            );
            return 1;
        }
    };
    let index = match IpIndex::start(&ctx).await {
        Ok(i) => i,
        Err(e) => {
            eprintln!("{NAME}: cannot read the hypervisors: {e}");
            return 1;
        }
    };
    if !args.images.is_dir() {
        tracing::warn!(images = %args.images.display(), "the images directory does not exist: /images/ answers 404");
    }
    let addr = args.listen();
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{NAME}: cannot listen on {addr}: {e}");
            return 1;
        }
    };
    tracing::info!(%addr, etcd = %endpoints.join(","), hypervisors = index.len(), "{NAME} listening");
    let settings = Settings {
        base: args.base.clone(),
        image_version: args.image_version.clone(),
        options: args.options.clone(),
        kv: args.kv.clone(),
        images: args.images.clone(),
    };
    let router = app(Boot::new(ctx, index, settings));
    match mistify_http::serve(
        listener,
        router,
        mistify_http::Limits::default(),
        mistify_http::shutdown_signal(),
    )
    .await
    {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{NAME}: {e}");
            1
        }
    }
}
