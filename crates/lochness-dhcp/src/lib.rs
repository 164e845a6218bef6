//! `cdhcpd`: keeps the DHCP server's host reservations equal to the cluster in etcd.
//!
//! The [`model`] (hypervisors, subnets, guests) is read from etcd at one revision and
//! kept current by watches that resume after a disconnect; a compacted watch reads
//! everything again. Each burst of changes is rendered ([`daemon`]) as:
//! - the original's ISC dhcpd include files ([`isc`]), installed atomically and only
//!   when their content changed ([`files`]), optionally checked with `dhcpd -t` and
//!   followed by an operator's reload command;
//! - and/or Kea DHCPv4's reservations ([`kea`]), merged into Kea's running configuration
//!   and applied through its control socket (`config-test`, then `config-set`).
//!
//! See docs/dhcp.md.

#![warn(missing_docs)]

pub mod cli;
pub mod daemon;
pub mod files;
pub mod isc;
pub mod kea;
pub mod metrics;
pub mod model;

/// `text` cut to 200 characters (for error messages).
pub(crate) fn short(text: &str) -> String {
    text.chars().take(200).collect()
}
