//! lochness: the controller library of a mistify cluster, over etcd v3.
//!
//! Controllers link this crate to keep the cluster's model — [`Hypervisor`]s,
//! [`Subnet`]s and their addresses, [`Network`]s, [`Flavor`]s, firewall groups
//! ([`FwGroup`]), [`Guest`]s, [`Vlan`]s and [`VlanGroup`]s — and to place guests on
//! agents. Everything lives in etcd under `lochness/…` (optionally below a [`Context`]
//! prefix), in the key layout and JSON of the Go original, so existing tools keep reading
//! it.
//!
//! What the port adds:
//! - every entity's `save` is a compare-and-swap on its metadata key's `mod_revision`
//!   (create-only when new); a stale copy gets [`Error::Conflict`];
//! - every multi-key change (placing a guest, moving a subnet between networks, linking
//!   VLANs, destroying an entity with its links) is **one etcd transaction** with revision
//!   compares, retried with fresh state when it loses a race on shared state — all keys
//!   change or none;
//! - IPv4 addresses are handed out from a per-subnet index (`lochness/subnets/<id>/alloc`)
//!   updated in the same transaction as the per-address keys; network, broadcast and
//!   gateway addresses are never handed out;
//! - resources are accounted: each hypervisor's `lochness/hypervisors/<id>/allocated`
//!   key holds the sum of the flavors of its guests, updated in the transactions that
//!   place and remove guests; a guest fits when its flavor is within both
//!   `total_resources − allocated` and the reported `available_resources`
//!   ([`Hypervisor::fits`], [`Context::hypervisor_resources`]). Placement never writes
//!   the hypervisor's metadata, which heartbeats and operators own. Both our keys are
//!   built on first use in a store written by the Go library;
//! - listings are one ranged read; heartbeats are leases ([`Context::heartbeat`]);
//!   placement works on a [`ClusterView`] a placer can keep current with a
//!   [`Context::watch`].
//!
//! # Example
//!
//! A network with a subnet, a live hypervisor bridged onto it, and one guest placed on
//! the best candidate (the same code is `examples/quickstart.rs`, which the test suite
//! runs against a real etcd):
//!
//! ```no_run
//! use lochness::{Context, Resources, DEFAULT_CANDIDATE_FUNCTIONS};
//!
//! # async fn demo() -> lochness::Result<()> {
//! let ctx = Context::new(&["http://127.0.0.1:2379"], None).await?;
//!
//! let mut network = ctx.new_network();
//! network.save().await?;
//! let mut subnet = ctx.new_subnet();
//! subnet.cidr = Some(lochness::codec::parse_cidr("192.168.100.0/24")?);
//! subnet.start_range = lochness::codec::parse_ip("192.168.100.10")?;
//! subnet.end_range = lochness::codec::parse_ip("192.168.100.200")?;
//! subnet.gateway = lochness::codec::parse_ip("192.168.100.1")?;
//! subnet.save().await?;
//! network.add_subnet(&mut subnet).await?;
//!
//! let mut hv = ctx.new_hypervisor();
//! hv.ip = lochness::codec::parse_ip("10.0.0.5")?;
//! hv.total_resources = Resources { memory: 16384, disk: 1 << 20, cpu: 16 };
//! hv.available_resources = hv.total_resources;
//! hv.save().await?;
//! hv.add_subnet(&subnet, "br0").await?;
//! let _beat = ctx.heartbeat(&hv.id, std::time::Duration::from_secs(10)).await?;
//!
//! let mut flavor = ctx.new_flavor();
//! flavor.image = "debian-12".into();
//! flavor.resources = Resources { memory: 512, disk: 4096, cpu: 1 };
//! flavor.save().await?;
//!
//! let mut guest = ctx.new_guest();
//! guest.flavor = flavor.id.clone();
//! guest.network = network.id.clone();
//! let mut host = guest.candidates(&DEFAULT_CANDIDATE_FUNCTIONS).await?.remove(0);
//! host.add_guest(&mut guest).await?; // address, resources, link and guest: one transaction
//! assert_eq!(guest.ip.map(|ip| ip.to_string()).as_deref(), Some("192.168.100.10"));
//! # Ok(())
//! # }
//! ```

//!
//! # Modules
//!
//! Each module depends only on the ones listed before it (`tests/modules.rs` checks that
//! the module graph has no cycle):
//!
//! - [`error`], [`codec`] (UUIDs, addresses, lenient JSON) and [`keys`] (the key layout:
//!   every key string is built there);
//! - [`context`]: the connection, the key prefix and the storage primitives;
//! - the entities and what they rest on: [`flavor`], [`fwgroup`], [`vlan`], [`config`]
//!   (global configuration), [`watch`], [`host`] (the machine we run on), [`subnet`]
//!   (with address allocation), [`network`], [`guest`], [`hypervisor`];
//! - [`placement`] (candidate selection over a [`ClusterView`]) and [`assign`] (placing a
//!   guest on a hypervisor and undoing it, one transaction each);
//! - [`heartbeat`] (liveness leases and the `lochness-heartbeat` loop) and [`agent`] (the
//!   client of a hypervisor's agent);
//! - [`job`]: job records, their transitions, and creating a job with its queue entry;
//! - [`page`] (listings a page at a time, with the filters of the REST API) and
//!   [`admin`] (an operator's edits checked before they are written: patches that cannot
//!   touch placement, configuration and links set in one transaction, deletes refused
//!   while something uses the entity).
//! - [`queue`]: lease-bound claims on jobs and the watched picture of the queues that
//!   placers and workers wake on.

#![warn(missing_docs)]

pub mod admin;
pub mod agent;
pub mod assign;
pub mod codec;
pub mod config;
pub mod context;
pub mod endpoints;
pub mod error;
pub mod flavor;
pub mod fwgroup;
pub mod guest;
pub mod heartbeat;
pub mod host;
pub mod hypervisor;
pub mod job;
pub mod keys;
pub mod network;
pub mod page;
pub mod placement;
pub mod queue;
pub mod subnet;
pub mod vlan;
pub mod watch;

pub use agent::{Agent, MistifyAgent};
pub use codec::{canonicalize, Mac};
pub use context::{Context, Guard};
pub use endpoints::{kv_endpoints, KvError};
pub use error::{Error, Result};
pub use flavor::{Flavor, Resources};
pub use fwgroup::{FwGroup, FwRule};
pub use guest::Guest;
pub use heartbeat::Heartbeat;
pub use host::{hypervisor_id, set_hypervisor_id};
pub use hypervisor::{Hypervisor, HypervisorResources};
pub use job::{Job, JobAction, JobStatus, Queue, Transition};
pub use network::Network;
pub use page::{GuestFilter, HypervisorFilter, Page, PageRequest, MAX_PAGE};
pub use placement::{
    candidate_has_resources, candidate_has_subnet, candidate_is_alive, candidate_randomize,
    CandidateFunction, ClusterView, DEFAULT_CANDIDATE_FUNCTIONS,
};
pub use queue::{Claim, Claimer, Lease, QueueEntry, QueueState, QueueView};
pub use subnet::{AllocIndex, Subnet};
pub use vlan::{Vlan, VlanGroup};
pub use watch::{ChangeKind, EntityKind, WatchEvent, Watcher};
