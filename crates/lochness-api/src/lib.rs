//! The REST daemons of the cluster control plane, over etcd (docs/cluster.md):
//!
//! - `cguestd` (port 18000): guests, their jobs, flavors ([`guests`]);
//! - `chypervisord` (port 17000): hypervisors, their configuration, subnet links, guests
//!   and resources ([`hypervisors`]);
//! - `cnetworkd` (port 19000): VLANs and VLAN groups ([`vlans`]), networks, subnets and
//!   firewall groups ([`networks`]).
//!
//! Each keeps the original daemon's routes, bodies, statuses and error shapes (the
//! recorded Go exchanges replay against it), fixes its bugs (docs/compat.md), validates
//! every request before anything is written, pages its lists, and serves `/healthz`,
//! `/metrics` and `/openapi.json` ([`system`]). They keep no state: every request is
//! answered from etcd, so any number of copies may run.
//!
//! The binaries are thin: `lochness_api::main(Daemon::Guests)`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use lochness_api::{app, Daemon};
//! let ctx = lochness::Context::new(&["http://127.0.0.1:2379"], None).await?;
//! let router = app(Daemon::Guests, ctx); // an axum Router, with the shared layers
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:18000").await?;
//! mistify_http::serve(listener, router, Default::default(), mistify_http::shutdown_signal()).await?;
//! # Ok(())
//! # }
//! ```

pub mod common;
pub mod config;
pub mod error;
pub mod guests;
pub mod hypervisors;
pub mod metrics;
pub mod networks;
pub mod openapi;
pub mod system;
pub mod vlans;

use std::sync::Arc;

use axum::Router;
use clap::Parser;

pub use config::{kv_endpoints, Daemon, Flags};
pub use error::ApiError;

/// The route table of `daemon` (its API and the system routes).
pub fn routes(daemon: Daemon) -> Vec<common::Route> {
    let mut routes = match daemon {
        Daemon::Guests => guests::routes(),
        Daemon::Hypervisors => hypervisors::routes(),
        Daemon::Networks => {
            let mut r = vlans::routes();
            r.extend(networks::routes());
            r
        }
    };
    routes.extend(system::routes());
    routes
}

/// The OpenAPI document of `daemon`.
pub fn openapi_document(daemon: Daemon) -> serde_json::Value {
    openapi::document(daemon, &routes(daemon))
}

/// The complete application of `daemon` on `ctx`: its routes, fallbacks and request
/// counter, inside the shared layers (request log, gzip when asked, panic recovery).
pub fn app(daemon: Daemon, ctx: lochness::Context) -> Router {
    let api = common::Api {
        ctx,
        daemon,
        metrics: Arc::new(metrics::Metrics::default()),
        openapi: Arc::new(std::sync::OnceLock::new()),
    };
    let routes = routes(daemon);
    let _ = api
        .openapi
        .set(openapi::document(daemon, &routes).to_string());
    mistify_http::with_common_layers(common::router(api, routes))
}

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    flags: Flags,
}

/// The `main` of `daemon`'s binary: flags, logging, etcd, serve until SIGTERM or Ctrl-C.
/// Exits 2 on bad flags, 1 when it cannot start.
pub fn main(daemon: Daemon) {
    let command = <Cli as clap::CommandFactory>::command()
        .name(daemon.name())
        .about(daemon.about())
        .version(env!("CARGO_PKG_VERSION"))
        .mut_arg("port", |a| a.default_value(daemon.default_port_text()));
    let matches = command.get_matches();
    let cli = match <Cli as clap::FromArgMatches>::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{}: cannot start the runtime: {e}", daemon.name());
            std::process::exit(1);
        }
    };
    let code = runtime.block_on(run(daemon, cli.flags));
    std::process::exit(code);
}

/// Runs `daemon` with `flags` until SIGTERM or Ctrl-C; the exit status.
pub async fn run(daemon: Daemon, flags: Flags) -> i32 {
    let name = daemon.name();
    if let Err(e) = mistify_http::init_tracing(
        mistify_http::runtime::go_level(&flags.log_level),
        flags.log_format,
    ) {
        eprintln!("{name}: {e}");
        return 2;
    }
    let endpoints = match kv_endpoints(&flags.kv) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("{name}: {e}");
            return 2;
        }
    };
    if let Some(b) = &flags.beanstalk {
        tracing::warn!(beanstalk = %b, "--beanstalk is ignored: jobs and their queues live in etcd");
    }
    if let Some(s) = &flags.statsd {
        tracing::warn!(statsd = %s, "--statsd is ignored: see GET /metrics");
    }
    let prefix = (!flags.prefix.is_empty()).then_some(flags.prefix.as_str());
    let ctx = match lochness::Context::new(&endpoints, prefix).await {
        Ok(ctx) => ctx,
        Err(e) => {
            eprintln!(
                "{name}: cannot connect to etcd at {}: {e}",
                endpoints.join(",")
            );
            return 1;
        }
    };
    let addr = flags.listen(daemon);
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{name}: cannot listen on {addr}: {e}");
            return 1;
        }
    };
    tracing::info!(%addr, etcd = %endpoints.join(","), prefix = %flags.prefix, "{name} listening");
    let app = app(daemon, ctx);
    match mistify_http::serve(
        listener,
        app,
        mistify_http::Limits::default(),
        mistify_http::shutdown_signal(),
    )
    .await
    {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{name}: {e}");
            1
        }
    }
}
