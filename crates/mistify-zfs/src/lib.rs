//! `mistify-zfs`: the storage sub-agent ("ImageStore") of the mistify agent, and a small
//! image server.
//!
//! * [`names`] — local validation of every name before any zfs command runs.
//! * [`zfs`] — the one command layer (OpenZFS or zfs-fuse, detected at start).
//! * [`holders`] — what keeps a dataset busy: its mounts and the processes using them.
//! * [`store`] — images, guest disks (`zvol` or `file` mode), volumes, snapshots.
//! * [`fetch`] / [`records`] — image downloads and the embedded image records.
//! * [`api`] — the `ImageStore.*` RPC methods and `/snapshots/download`.
//! * [`image_server`] — `mistify-image-server` (serve a directory, make an image).
//!
//! Contract and operator doc: `docs/zfs.md`.
//!
//! ```no_run
//! use mistify_zfs::store::{Config, DiskMode, Store};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let mut cfg = Config::new("mistify");
//! cfg.disk_mode = DiskMode::File;
//! let store = Store::open(cfg).await?;
//! mistify_zfs::api::server(store).serve(19999).await?;
//! # Ok(()) }
//! ```

pub mod api;
pub mod cli;
pub mod error;
pub mod fetch;
pub mod holders;
pub mod image_server;
pub mod names;
pub mod records;
pub mod store;
pub mod zfs;

pub use error::Error;
pub use store::{Config, DiskMode, Store};
