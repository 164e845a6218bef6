//! The key layout: every key the library reads or writes, relative to the [`Context`]
//! prefix. This is the one module that builds key strings. The layout is the Go
//! original's (see docs/compat.md, section "lochness"), so existing tools keep reading
//! it; the two keys marked (ours) are beside it, under names the Go library never reads,
//! and are built on first use when missing:
//!
//! ```text
//! lochness/config/<key>                        global configuration (a key may contain `/`)
//! lochness/hypervisors/<id>/metadata           hypervisor JSON
//! lochness/hypervisors/<id>/heartbeat          present while the hypervisor is alive (a lease)
//! lochness/hypervisors/<id>/config/<key>       per-hypervisor configuration
//! lochness/hypervisors/<id>/subnets/<subnet>   link to a subnet; value: the bridge name
//! lochness/hypervisors/<id>/guests/<guest>     a guest placed here; value: the guest id
//! lochness/hypervisors/<id>/allocated          (ours) sum of the flavors of its guests
//! lochness/subnets/<id>/metadata               subnet JSON
//! lochness/subnets/<id>/addresses/<ip>         an address reservation; value: the owner
//! lochness/subnets/<id>/alloc                  (ours) allocation index (runs of reserved addresses)
//! lochness/networks/<id>/metadata              network JSON
//! lochness/networks/<id>/subnets/<subnet>      link to a subnet (empty value)
//! lochness/flavors/<id>/metadata               flavor JSON
//! lochness/fwgroups/<id>/metadata              firewall group JSON
//! lochness/guests/<id>/metadata                guest JSON
//! lochness/vlans/<tag>/metadata                VLAN JSON
//! lochness/vlans/<tag>/vlangroups/<group>      link to a VLAN group (empty value)
//! lochness/vlangroups/<id>/metadata            VLAN group JSON
//! lochness/vlangroups/<id>/vlans/<tag>         link to a VLAN (empty value)
//! lochness/jobs/<id>                           job JSON (the original record)
//! lochness/queue/create/<job>                  a select-hypervisor job waiting for a placer; value: the guest id
//! lochness/queue/work/<job>                    a job waiting for a worker; value: the guest id
//! lochness/claims/<job>                        the placer or worker on the job (bound to its lease)
//! ```
//!
//! Every key under an entity is `<family><id>/<entry>`: the family prefixes below, then
//! the entries ([`METADATA`], [`HEARTBEAT`], [`ALLOCATED`], [`ALLOC`]) and directories
//! ([`CONFIG_DIR`], [`SUBNETS_DIR`], …) of the tree.
//!
//! [`Context`]: crate::Context

use std::net::Ipv4Addr;

/// Root of every key the library writes.
pub const ROOT: &str = "lochness/";
/// Prefix of global configuration keys.
pub const CONFIG: &str = "lochness/config/";
/// Prefix of hypervisors.
pub const HYPERVISORS: &str = "lochness/hypervisors/";
/// Prefix of subnets.
pub const SUBNETS: &str = "lochness/subnets/";
/// Prefix of networks.
pub const NETWORKS: &str = "lochness/networks/";
/// Prefix of flavors.
pub const FLAVORS: &str = "lochness/flavors/";
/// Prefix of firewall groups.
pub const FWGROUPS: &str = "lochness/fwgroups/";
/// Prefix of guests.
pub const GUESTS: &str = "lochness/guests/";
/// Prefix of VLANs.
pub const VLANS: &str = "lochness/vlans/";
/// Prefix of VLAN groups.
pub const VLANGROUPS: &str = "lochness/vlangroups/";
/// Prefix of jobs.
pub const JOBS: &str = "lochness/jobs/";
/// Prefix of both job queues.
pub const QUEUE: &str = "lochness/queue/";
/// Queue of `select-hypervisor` jobs (placers).
pub const QUEUE_CREATE: &str = "lochness/queue/create/";
/// Queue of every other job (workers).
pub const QUEUE_WORK: &str = "lochness/queue/work/";
/// Prefix of job claims.
pub const CLAIMS: &str = "lochness/claims/";

/// The entity's JSON, under every entity.
pub const METADATA: &str = "metadata";
/// The liveness key of a hypervisor.
pub const HEARTBEAT: &str = "heartbeat";
/// What placement has promised of a hypervisor: the sum of the flavors of the guests
/// placed on it (`{"memory":M,"disk":D,"cpu":C}`). Not in the original layout; the Go
/// library ignores it.
pub const ALLOCATED: &str = "allocated";
/// The allocation index of a subnet.
pub const ALLOC: &str = "alloc";
/// Per-hypervisor configuration keys.
pub const CONFIG_DIR: &str = "config/";
/// Subnet links of a hypervisor or network.
pub const SUBNETS_DIR: &str = "subnets/";
/// Guest links of a hypervisor.
pub const GUESTS_DIR: &str = "guests/";
/// Address reservations of a subnet.
pub const ADDRESSES_DIR: &str = "addresses/";
/// VLAN group links of a VLAN.
pub const VLANGROUPS_DIR: &str = "vlangroups/";
/// VLAN links of a VLAN group.
pub const VLANS_DIR: &str = "vlans/";

/// The record of job `id`.
pub fn job(id: &str) -> String {
    format!("{JOBS}{id}")
}

/// The entry of job `id` in the queue whose prefix is `queue` ([`QUEUE_CREATE`] or
/// [`QUEUE_WORK`]).
pub fn queue_entry(queue: &str, id: &str) -> String {
    format!("{queue}{id}")
}

/// The claim on job `id`.
pub fn claim(id: &str) -> String {
    format!("{CLAIMS}{id}")
}

/// Global configuration key `key`.
pub fn config(key: &str) -> String {
    format!("{CONFIG}{key}")
}

/// The tree of hypervisor `id` (ends in `/`).
pub fn hypervisor_prefix(id: &str) -> String {
    format!("{HYPERVISORS}{id}/")
}

/// The JSON of hypervisor `id`.
pub fn hypervisor_metadata(id: &str) -> String {
    format!("{HYPERVISORS}{id}/{METADATA}")
}

/// The heartbeat of hypervisor `id`.
pub fn hypervisor_heartbeat(id: &str) -> String {
    format!("{HYPERVISORS}{id}/{HEARTBEAT}")
}

/// What placement has promised of hypervisor `id` (see [`ALLOCATED`]).
pub fn hypervisor_allocated(id: &str) -> String {
    format!("{HYPERVISORS}{id}/{ALLOCATED}")
}

/// Configuration key `key` of hypervisor `id`.
pub fn hypervisor_config(id: &str, key: &str) -> String {
    format!("{HYPERVISORS}{id}/{CONFIG_DIR}{key}")
}

/// The link of hypervisor `id` to subnet `subnet`.
pub fn hypervisor_subnet(id: &str, subnet: &str) -> String {
    format!("{HYPERVISORS}{id}/{SUBNETS_DIR}{subnet}")
}

/// Whether `rel` (a key under [`HYPERVISORS`]) is some hypervisor's link to `subnet`:
/// it ends in `/subnets/<subnet>`.
pub fn is_hypervisor_subnet_link(rel: &str, subnet: &str) -> bool {
    rel.starts_with(HYPERVISORS) && rel.ends_with(&format!("/{SUBNETS_DIR}{subnet}"))
}

/// The guest links of hypervisor `id` (ends in `/`).
pub fn hypervisor_guests_prefix(id: &str) -> String {
    format!("{HYPERVISORS}{id}/{GUESTS_DIR}")
}

/// The link of hypervisor `id` to guest `guest`.
pub fn hypervisor_guest(id: &str, guest: &str) -> String {
    format!("{HYPERVISORS}{id}/{GUESTS_DIR}{guest}")
}

/// The tree of subnet `id` (ends in `/`).
pub fn subnet_prefix(id: &str) -> String {
    format!("{SUBNETS}{id}/")
}

/// The JSON of subnet `id`.
pub fn subnet_metadata(id: &str) -> String {
    format!("{SUBNETS}{id}/{METADATA}")
}

/// The allocation index's marker of subnet `id`: [`ALLOC_BUILT`] once every block of
/// the index is written (see [`subnet_alloc_block`]); an earlier version kept the whole
/// index in this key.
pub fn subnet_alloc(id: &str) -> String {
    format!("{SUBNETS}{id}/{ALLOC}")
}

/// The marker's value once subnet's index is kept in blocks.
pub const ALLOC_BUILT: &str = "blocks:256";

/// Addresses per block of an allocation index (aligned on the address value).
pub const ALLOC_BLOCK: u32 = 256;

/// The blocks of subnet `id`'s allocation index (ends in `/`).
pub fn subnet_alloc_prefix(id: &str) -> String {
    format!("{SUBNETS}{id}/{ALLOC}/")
}

/// The block of subnet `id`'s allocation index that starts at `start` (a multiple of
/// [`ALLOC_BLOCK`]): the reserved addresses of `[start, start + 255]` as runs.
pub fn subnet_alloc_block(id: &str, start: u32) -> String {
    format!("{SUBNETS}{id}/{ALLOC}/{}", Ipv4Addr::from(start))
}

/// The start of the block of the index that holds `ip`.
pub fn alloc_block_of(ip: u32) -> u32 {
    ip & !(ALLOC_BLOCK - 1)
}

/// The address reservations of subnet `id` (ends in `/`).
pub fn subnet_addresses_prefix(id: &str) -> String {
    format!("{SUBNETS}{id}/{ADDRESSES_DIR}")
}

/// The reservation of `ip` in subnet `id`.
pub fn subnet_address(id: &str, ip: Ipv4Addr) -> String {
    format!("{SUBNETS}{id}/{ADDRESSES_DIR}{ip}")
}

/// The tree of network `id` (ends in `/`).
pub fn network_prefix(id: &str) -> String {
    format!("{NETWORKS}{id}/")
}

/// The JSON of network `id`.
pub fn network_metadata(id: &str) -> String {
    format!("{NETWORKS}{id}/{METADATA}")
}

/// The link of network `id` to subnet `subnet`.
pub fn network_subnet(id: &str, subnet: &str) -> String {
    format!("{NETWORKS}{id}/{SUBNETS_DIR}{subnet}")
}

/// The JSON of flavor `id`.
pub fn flavor_metadata(id: &str) -> String {
    format!("{FLAVORS}{id}/{METADATA}")
}

/// The JSON of firewall group `id`.
pub fn fwgroup_metadata(id: &str) -> String {
    format!("{FWGROUPS}{id}/{METADATA}")
}

/// The tree of guest `id` (ends in `/`).
pub fn guest_prefix(id: &str) -> String {
    format!("{GUESTS}{id}/")
}

/// The JSON of guest `id`.
pub fn guest_metadata(id: &str) -> String {
    format!("{GUESTS}{id}/{METADATA}")
}

/// The tree of VLAN `tag` (ends in `/`).
pub fn vlan_prefix(tag: i64) -> String {
    format!("{VLANS}{tag}/")
}

/// The JSON of VLAN `tag`.
pub fn vlan_metadata(tag: i64) -> String {
    format!("{VLANS}{tag}/{METADATA}")
}

/// The link of VLAN `tag` to VLAN group `group`.
pub fn vlan_group(tag: i64, group: &str) -> String {
    format!("{VLANS}{tag}/{VLANGROUPS_DIR}{group}")
}

/// The tree of VLAN group `id` (ends in `/`).
pub fn vlangroup_prefix(id: &str) -> String {
    format!("{VLANGROUPS}{id}/")
}

/// The JSON of VLAN group `id`.
pub fn vlangroup_metadata(id: &str) -> String {
    format!("{VLANGROUPS}{id}/{METADATA}")
}

/// The link of VLAN group `group` to VLAN `tag`.
pub fn vlangroup_vlan(group: &str, tag: i64) -> String {
    format!("{VLANGROUPS}{group}/{VLANS_DIR}{tag}")
}

/// Splits `rest` (the part of a key after a family prefix) into its id and the remainder
/// after the id's `/` (`""` when there is none).
pub fn split_id(rest: &str) -> (&str, &str) {
    match rest.split_once('/') {
        Some((id, tail)) => (id, tail),
        None => (rest, ""),
    }
}

/// The id of `key` when it is `<family><id>/metadata`.
pub fn metadata_id<'a>(family: &str, key: &'a str) -> Option<&'a str> {
    key.strip_prefix(family)?
        .strip_suffix(METADATA)?
        .strip_suffix('/')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        let (h, s, g) = ("h1", "s1", "g1");
        assert_eq!(config("a/b"), "lochness/config/a/b");
        assert_eq!(hypervisor_prefix(h), "lochness/hypervisors/h1/");
        assert_eq!(hypervisor_metadata(h), "lochness/hypervisors/h1/metadata");
        assert_eq!(hypervisor_heartbeat(h), "lochness/hypervisors/h1/heartbeat");
        assert_eq!(hypervisor_allocated(h), "lochness/hypervisors/h1/allocated");
        assert_eq!(
            hypervisor_config(h, "x"),
            "lochness/hypervisors/h1/config/x"
        );
        assert_eq!(
            hypervisor_subnet(h, s),
            "lochness/hypervisors/h1/subnets/s1"
        );
        assert_eq!(
            hypervisor_guests_prefix(h),
            "lochness/hypervisors/h1/guests/"
        );
        assert_eq!(hypervisor_guest(h, g), "lochness/hypervisors/h1/guests/g1");
        assert_eq!(subnet_prefix(s), "lochness/subnets/s1/");
        assert_eq!(subnet_metadata(s), "lochness/subnets/s1/metadata");
        assert_eq!(subnet_alloc(s), "lochness/subnets/s1/alloc");
        let ip = u32::from(Ipv4Addr::new(10, 0, 3, 77));
        assert_eq!(alloc_block_of(ip), u32::from(Ipv4Addr::new(10, 0, 3, 0)));
        assert_eq!(
            subnet_alloc_block(s, alloc_block_of(ip)),
            "lochness/subnets/s1/alloc/10.0.3.0"
        );
        assert_eq!(subnet_alloc_prefix(s), "lochness/subnets/s1/alloc/");
        assert_eq!(subnet_addresses_prefix(s), "lochness/subnets/s1/addresses/");
        assert_eq!(
            subnet_address(s, Ipv4Addr::new(10, 0, 0, 7)),
            "lochness/subnets/s1/addresses/10.0.0.7"
        );
        assert_eq!(network_prefix("n"), "lochness/networks/n/");
        assert_eq!(network_metadata("n"), "lochness/networks/n/metadata");
        assert_eq!(network_subnet("n", s), "lochness/networks/n/subnets/s1");
        assert_eq!(flavor_metadata("f"), "lochness/flavors/f/metadata");
        assert_eq!(fwgroup_metadata("w"), "lochness/fwgroups/w/metadata");
        assert_eq!(guest_prefix(g), "lochness/guests/g1/");
        assert_eq!(guest_metadata(g), "lochness/guests/g1/metadata");
        assert_eq!(vlan_prefix(10), "lochness/vlans/10/");
        assert_eq!(vlan_metadata(10), "lochness/vlans/10/metadata");
        assert_eq!(vlan_group(10, "v"), "lochness/vlans/10/vlangroups/v");
        assert_eq!(vlangroup_prefix("v"), "lochness/vlangroups/v/");
        assert_eq!(vlangroup_metadata("v"), "lochness/vlangroups/v/metadata");
        assert_eq!(vlangroup_vlan("v", 10), "lochness/vlangroups/v/vlans/10");
    }

    #[test]
    fn parsing() {
        assert_eq!(split_id("abc/guests/g"), ("abc", "guests/g"));
        assert_eq!(split_id("abc"), ("abc", ""));
        assert_eq!(metadata_id(FLAVORS, &flavor_metadata("f1")), Some("f1"));
        assert_eq!(metadata_id(FLAVORS, "lochness/flavors/f1/other"), None);
        assert_eq!(metadata_id(FLAVORS, &guest_metadata("g1")), None);
        assert!(is_hypervisor_subnet_link(
            &hypervisor_subnet("h", "s1"),
            "s1"
        ));
        assert!(!is_hypervisor_subnet_link(
            &hypervisor_subnet("h", "s1"),
            "s"
        ));
        assert!(!is_hypervisor_subnet_link(&network_subnet("n", "s1"), "s1"));
    }
}
