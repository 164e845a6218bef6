//! `mistify-supervisor`: the command-line client and terminal UI of
//! `mistify-supervisord` (and of govisord: the REST API is govisor's).
//!
//! * [`rest`]: the REST [`Client`] (long polls, ETags, HTTP Basic, TLS);
//! * [`cli`]: the commands (`status`, `enable`, `log -f`, …);
//! * [`tui`]: the terminal UI.
//!
//! The wire types are [`mistify_types::supervisor`].

pub mod cli;
pub mod rest;
pub mod tui;

pub use rest::{Client, ClientError, ClientOptions};
