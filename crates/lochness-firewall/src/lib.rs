//! `nfirewalld`: each hypervisor's guest firewall, rendered from the cluster's firewall
//! groups in etcd into one nftables table the daemon owns, and applied atomically.
//!
//! - [`model`]: stored firewall groups decoded rule by rule (a bad rule is skipped with
//!   its reason, the others still apply).
//! - [`view`]: what the firewall of one hypervisor reads from etcd, kept current from
//!   watches.
//! - [`render`]: the nft text of one hypervisor (`table inet <name>`, a forward-hook
//!   chain, one chain per firewall group, member sets), deterministic.
//! - [`apply`]: `nft -c -f`, `nft -f` (one transaction), the rules file replaced
//!   atomically, optionally inside a network namespace.
//! - [`daemon`], [`cli`], [`metrics`]: the process.
//!
//! docs/firewall.md describes what is enforced and how to check it on a host.
//!
//! ```
//! use lochness_firewall::model::decode_group;
//! use lochness_firewall::render::{render, Snapshot};
//!
//! let id = "aaaaaaaa-0000-4000-8000-000000000001";
//! let (group, skipped) = decode_group(
//!     id,
//!     br#"{"rules":[{"portStart":22,"portEnd":22,"protocol":"tcp","action":"accept"}]}"#,
//! );
//! assert!(skipped.is_empty()); // (every stored rule is valid)
//! let snap = Snapshot {
//!     hypervisor: "hv".into(),
//!     guests: vec![lochness_firewall::model::GuestAddr {
//!         id: "g".into(),
//!         ip: "10.0.0.5".parse().unwrap(),
//!         fwgroup: Some(id.into()),
//!     }],
//!     groups: [(id.to_string(), group)].into(),
//!     members: Default::default(),
//!     skipped,
//! };
//! let text = render("mistify", &snap).text;
//! assert!(text.contains("10.0.0.5 : jump g_aaaaaaaa-0000-4000-8000-000000000001"));
//! assert!(text.contains("tcp dport 22 counter accept"));
//! ```

pub mod apply;
pub mod cli;
pub mod daemon;
pub mod metrics;
pub mod model;
pub mod render;
pub mod view;
