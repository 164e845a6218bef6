//! `mistify-supervisor`: the process supervisor for a hypervisor's daemons, a port of
//! gdamore/govisor with its REST API, plus explicit states, readiness, restart back-off,
//! a sliding-window start limit and ordered shutdown.
//!
//! * [`api`]: wire types;
//! * [`manifest`]: service manifests (govisor's JSON plus our keys);
//! * [`daemon`]: the [`daemon::Manager`], the [`daemon::Provider`] trait, the process
//!   provider, the REST [`daemon::router`] and the daemon;
//! * [`client`]: the REST client, the CLI and the TUI.

pub mod api;
pub mod client;
pub mod daemon;
pub mod manifest;
