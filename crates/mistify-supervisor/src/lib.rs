//! `mistify-supervisor`: the process supervisor for a hypervisor's daemons, a port of
//! gdamore/govisor with its REST API, plus explicit states, readiness, restart back-off,
//! a sliding-window start limit and ordered shutdown.
//!
//! * [`api`]: the wire types ([`mistify_types::supervisor`], re-exported);
//! * [`manifest`]: service manifests (govisor's JSON plus our keys);
//! * [`daemon`]: the [`daemon::Manager`], the [`daemon::Provider`] trait, the process
//!   provider, the REST [`daemon::router`] and the daemon.
//!
//! The CLI and TUI (`mistify-supervisor`) are the crate `mistify-supervisor-cli`.

pub mod daemon;
pub mod manifest;

/// The wire types of the REST API.
pub mod api {
    pub use mistify_types::supervisor::*;
}
