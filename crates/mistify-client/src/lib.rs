//! Types and an async client of the mistify-agent REST API.
//!
//! The types serialize exactly as the Go agent's JSON (`docs/compat.md` lists the few
//! deliberate differences) and decode leniently. [`Client`] covers every agent route.
//! [`cli`] is the `mistify` operator CLI built on it (`docs/cli.md`).
//!
//! ```no_run
//! # async fn demo() -> Result<(), mistify_client::ClientError> {
//! let agent = mistify_client::Client::new("http://127.0.0.1:8080")?;
//! for guest in agent.list_guests().await? {
//!     println!("{} {}", guest.id, guest.state);
//! }
//! # Ok(()) }
//! ```

pub mod cli;
pub mod client;
pub mod serde_go;
pub mod stream;
pub mod types;

pub use client::{
    Accepted, Client, ClientError, DownloadStream, GuestAction, MetadataPatch, TlsFiles,
};
/// The TLS client configuration [`TlsFiles::client_config`] loads.
pub use rustls::ClientConfig as TlsClientConfig;
pub use types::*;
