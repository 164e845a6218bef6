//! The client side: the REST [`rest::Client`], the CLI ([`cli`]) and the TUI ([`tui`]).

pub mod cli;
pub mod rest;
pub mod tui;

pub use rest::{Client, ClientError, ClientOptions};
