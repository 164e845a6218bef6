//! The wire types of mistify, and the small rules every side must apply alike.
//!
//! * [`rest`] — the JSON of the agent's REST API (Guest, Nic, Disk, metrics, Job, Image,
//!   Snapshot, the error body), byte-exact with the Go agent; re-exported at the root;
//! * [`rpc`] — the request and response objects of the sub-agent RPC methods;
//! * [`supervisor`] — the govisor-compatible REST types of `mistify-supervisord`;
//! * [`serde_go`] — how Go's `encoding/json` read and wrote these types;
//! * [`id`] — [`Id`], the one validator of ids that travel in paths and store keys, and
//!   UUID canonicalisation;
//! * [`action`] — [`Action`], the typed action names of an agent configuration, and
//!   [`GuestAction`], the verbs of `POST /guests/{id}/{action}`;
//! * [`mac`] — the MAC address derived from a guest id;
//! * [`token`] — bearer-token files (`--token-file`).
//!
//! Serde and pure functions only: no HTTP, TLS, async runtime or CLI code.

pub mod action;
pub mod id;
pub mod mac;
pub mod rest;
pub mod rpc;
pub mod serde_go;
pub mod supervisor;
pub mod token;

pub use action::{
    Action, ActionType, GuestAction, MetricsKind, UnknownAction, UnknownGuestAction, Verb,
};
pub use id::{Id, IdError};
pub use mac::{derived_mac, derived_mac_bytes};
pub use rest::*;
pub use rpc::*;
