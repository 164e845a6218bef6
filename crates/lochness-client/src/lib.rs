//! The wire types of the cluster control plane's REST daemons — cguestd (guests, jobs,
//! flavors), chypervisord (hypervisors) and cnetworkd (VLANs, networks, subnets,
//! firewall groups) — and [`Client`], an async client of all three.
//!
//! The types ([`types`]) encode exactly the JSON the daemons write (the Go originals'
//! members, in their order); the client follows the routes of `docs/cluster.md`:
//! paging with `?limit=`/`?continue=` and `X-Continue` ([`Client::list`],
//! [`Client::list_all`]), guest create, delete and actions as jobs ([`GuestJob`],
//! [`Client::wait_job`]), and the typed [`Error`] naming the daemon, its status and
//! message. The `lochness` operator CLI (crate `lochness-cli`) is built on it.
//!
//! ```no_run
//! # async fn demo() -> Result<(), lochness_client::Error> {
//! use lochness_client::{Client, Endpoints, Guest, ListQuery};
//! let cluster = Client::new(&Endpoints::default())?;
//! let started = cluster
//!     .create_guest(&serde_json::json!({"flavor": "…", "network": "…"}))
//!     .await?;
//! let job = cluster
//!     .wait_job(&started.id, std::time::Duration::from_secs(600))
//!     .await?;
//! let placed: Guest = cluster.get(&started.guest.id).await?;
//! println!("{} ({}) on {} at {}", placed.id, job.status, placed.hypervisor, placed.ip);
//! for guest in cluster
//!     .list_all::<Guest>(&ListQuery::new().filter("hypervisor", &placed.hypervisor))
//!     .await?
//! {
//!     println!("{}", guest.id);
//! }
//! # Ok(()) }
//! ```

pub mod client;
pub mod types;

pub use client::{
    Client, Endpoints, Error, ListQuery, Page, CONTINUE_HEADER, DEFAULT_PAGE_SIZE, DEFAULT_TIMEOUT,
    JOB_ID_HEADER, MAX_PAGE_SIZE,
};
pub use types::{
    Daemon, Flavor, FwGroup, FwRule, Guest, GuestAction, GuestJob, Hypervisor, HypervisorResources,
    Job, JobAction, JobStatus, Managed, Metadata, Network, Resource, Resources, Subnet,
    UnknownGuestAction, Vlan, VlanGroup, ZERO_TIME,
};
