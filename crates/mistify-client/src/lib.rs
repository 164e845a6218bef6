//! An async client of the mistify-agent REST API: one method per agent route.
//!
//! The types it sends and returns are the wire types of [`mistify_types`], re-exported
//! here. The `mistify` operator CLI built on it is the crate `mistify-cli`
//! (`docs/cli.md`).
//!
//! ```no_run
//! # async fn demo() -> Result<(), mistify_client::ClientError> {
//! let agent = mistify_client::Client::new("http://127.0.0.1:8080")?;
//! for guest in agent.list_guests().await? {
//!     println!("{} {}", guest.id, guest.state);
//! }
//! # Ok(()) }
//! ```

pub mod client;

pub use client::{
    warning_text, Accepted, Client, ClientError, DownloadStream, MetadataPatch, TlsFiles,
};
pub use mistify_types::rest::*;
pub use mistify_types::{GuestAction, MetricsKind};
/// The TLS client configuration [`TlsFiles::client_config`] loads.
pub use rustls::ClientConfig as TlsClientConfig;
