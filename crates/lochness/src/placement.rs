//! Candidate selection: which hypervisors may take a guest. [`Guest::candidates_in`]
//! starts from every hypervisor of a [`ClusterView`] and applies [`CandidateFunction`]s in
//! order (by default: alive, has a subnet of the guest's network with a free address, has
//! the flavor's resources, then shuffled). The view is an in-memory picture of
//! hypervisors (with liveness, subnet links and `allocated` figures), networks, subnets
//! and flavors that a placer loads with one read and can keep current from a watch
//! ([`ClusterView::apply`]). It may be stale; the transaction of
//! [`Hypervisor::add_guest`] compares what matters and retries or fails (see
//! docs/compat.md, section "lochness").
//!
//! "Has the resources" is [`Hypervisor::fits`]: the flavor within both
//! `total_resources − allocated` (what placement has promised, exact) and
//! `available_resources` (what the heartbeat last reported). A hypervisor whose
//! `allocated` key does not exist yet (a store written by the Go library) counts as
//! having nothing allocated here; placing on it builds the key and checks again.

use std::collections::BTreeMap;

use etcd_client::Txn;
use rand::seq::SliceRandom;

use crate::context::{group_by_id, revision, txn_get, Context, Kv};
use crate::error::{Error, Result};
use crate::flavor::{Flavor, Resources};
use crate::guest::Guest;
use crate::hypervisor::{hypervisors_from, Hypervisor};
use crate::keys;
use crate::subnet::{block_start, AllocIndex, Subnet};

/// A filter over candidate hypervisors for a guest.
pub type CandidateFunction =
    for<'a> fn(&Guest, &'a ClusterView, Vec<&'a Hypervisor>) -> Result<Vec<&'a Hypervisor>>;

/// The default filters, in the spec's order: alive, has a subnet with a free address,
/// has the resources, then shuffled.
pub const DEFAULT_CANDIDATE_FUNCTIONS: [CandidateFunction; 4] = [
    candidate_is_alive,
    candidate_has_subnet,
    candidate_has_resources,
    candidate_randomize,
];

/// What placement needs to know about the cluster, as of [`ClusterView::revision`].
#[derive(Debug, Clone, Default)]
pub struct ClusterView {
    /// Hypervisors by id, with links, liveness and `allocated` figures.
    pub hypervisors: BTreeMap<String, Hypervisor>,
    /// Network id → its subnet ids.
    pub networks: BTreeMap<String, Vec<String>>,
    /// Subnets by id with their allocation index.
    pub subnets: BTreeMap<String, (Option<Subnet>, AllocIndex)>,
    /// Flavor id → resources.
    pub flavors: BTreeMap<String, Resources>,
    /// The etcd revision the view reflects (watch from `revision + 1` to keep it current).
    pub revision: i64,
}

fn items(prefix: &str, kvs: Vec<Kv>) -> Vec<(String, Vec<(String, Kv)>)> {
    group_by_id(prefix, kvs)
}

/// A subnet's index from its keys: the blocks once the marker says they are complete,
/// else the reservations themselves.
fn index_of(subnet: &Subnet, its: &[(String, Kv)]) -> AllocIndex {
    let built = its
        .iter()
        .any(|(t, kv)| t == keys::ALLOC && kv.text() == keys::ALLOC_BUILT);
    let mut index = AllocIndex::default();
    if built {
        let block_dir = format!("{}/", keys::ALLOC);
        for (tail, kv) in its {
            let start = tail.strip_prefix(block_dir.as_str()).and_then(block_start);
            if let (Some(start), Ok(block)) = (start, AllocIndex::parse(&kv.text())) {
                index.set_block(start, &block);
            }
        }
    } else {
        for ip in subnet.addresses().keys() {
            if let Ok(ip) = ip.parse::<std::net::Ipv4Addr>() {
                index.insert(u32::from(ip));
            }
        }
    }
    index
}

impl ClusterView {
    /// Loads the view with one read-only transaction (four ranged reads).
    pub async fn load(ctx: &Context) -> Result<ClusterView> {
        let txn = Txn::new().and_then(vec![
            ctx.op_get_prefix(keys::HYPERVISORS),
            ctx.op_get_prefix(keys::NETWORKS),
            ctx.op_get_prefix(keys::SUBNETS),
            ctx.op_get_prefix(keys::FLAVORS),
        ]);
        let resp = ctx.txn(txn).await?;
        let rev = revision(&resp);
        let r = resp.op_responses();
        let mut view = ClusterView {
            revision: rev,
            ..ClusterView::default()
        };
        for h in hypervisors_from(ctx, txn_get(ctx, &r, 0)) {
            view.hypervisors.insert(h.id.clone(), h);
        }
        for (id, its) in items(keys::NETWORKS, txn_get(ctx, &r, 1)) {
            let subnets = its
                .iter()
                .filter_map(|(t, _)| t.strip_prefix(keys::SUBNETS_DIR))
                .map(str::to_string)
                .collect();
            view.networks.insert(id, subnets);
        }
        for (id, its) in items(keys::SUBNETS, txn_get(ctx, &r, 2)) {
            let subnet = match Subnet::from_keys(ctx, &id, &its) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(subnet = %id, error = %e, "skipping broken subnet");
                    continue;
                }
            };
            let index = index_of(&subnet, &its);
            view.subnets.insert(id, (Some(subnet), index));
        }
        for kv in txn_get(ctx, &r, 3) {
            if let Some(id) = keys::metadata_id(keys::FLAVORS, &kv.key) {
                if let Ok(f) = Flavor::from_stored(ctx, id, &kv.value, kv.mod_revision) {
                    view.flavors.insert(id.to_string(), f.resources);
                }
            }
        }
        Ok(view)
    }

    /// Applies one change (`value` `None` = deleted) of a key under `lochness/`, as a
    /// watch reports it, so that the view stays current without re-reading.
    pub fn apply(&mut self, ctx: &Context, key: &str, value: Option<&[u8]>, mod_revision: i64) {
        self.revision = self.revision.max(mod_revision);
        if let Some(rest) = key.strip_prefix(keys::HYPERVISORS) {
            let (id, tail) = keys::split_id(rest);
            if tail == keys::METADATA {
                match value {
                    None => {
                        self.hypervisors.remove(id);
                    }
                    Some(v) => {
                        let kv = Kv {
                            key: key.to_string(),
                            value: v.to_vec(),
                            mod_revision,
                            create_revision: 0,
                        };
                        if let Ok(mut h) =
                            Hypervisor::from_keys(ctx, id, &[(keys::METADATA.to_string(), kv)])
                        {
                            if let Some(old) = self.hypervisors.remove(id) {
                                h.absorb_links(old);
                            }
                            self.hypervisors.insert(id.to_string(), h);
                        }
                    }
                }
                return;
            }
            let Some(h) = self.hypervisors.get_mut(id) else {
                return;
            };
            if tail == keys::HEARTBEAT {
                h.set_alive(value.is_some());
            } else if tail == keys::ALLOCATED {
                // A placement this process made may be known ahead of its event.
                if value.is_none() || mod_revision >= h.allocated_state().map_or(0, |(_, r)| r) {
                    h.apply_allocated(value, mod_revision);
                }
            } else if let Some(s) = tail.strip_prefix(keys::SUBNETS_DIR) {
                match value {
                    Some(v) => h.insert_subnet(s, &String::from_utf8_lossy(v)),
                    None => h.drop_subnet(s),
                }
            } else if let Some(g) = tail.strip_prefix(keys::GUESTS_DIR) {
                match value {
                    Some(_) => h.push_guest(g),
                    None => h.drop_guest(g),
                }
            }
        } else if let Some(rest) = key.strip_prefix(keys::NETWORKS) {
            let (id, tail) = keys::split_id(rest);
            if let Some(s) = tail.strip_prefix(keys::SUBNETS_DIR) {
                let list = self.networks.entry(id.to_string()).or_default();
                list.retain(|x| x != s);
                if value.is_some() {
                    list.push(s.to_string());
                }
            } else if tail == keys::METADATA && value.is_none() {
                self.networks.remove(id);
            } else if tail == keys::METADATA {
                self.networks.entry(id.to_string()).or_default();
            }
        } else if let Some(rest) = key.strip_prefix(keys::SUBNETS) {
            let (id, tail) = keys::split_id(rest);
            if tail == keys::METADATA {
                match value {
                    None => {
                        self.subnets.remove(id);
                    }
                    Some(v) => {
                        let entry = self.subnets.entry(id.to_string()).or_default();
                        entry.0 = Subnet::from_stored(ctx, id, v, mod_revision).ok();
                    }
                }
            } else if let Some(start) = tail
                .strip_prefix(keys::ALLOC)
                .and_then(|t| t.strip_prefix('/'))
                .and_then(block_start)
            {
                let entry = self.subnets.entry(id.to_string()).or_default();
                let block = value
                    .and_then(|v| AllocIndex::parse(&String::from_utf8_lossy(v)).ok())
                    .unwrap_or_default();
                entry.1.set_block(start, &block);
            }
        } else if let Some(rest) = key.strip_prefix(keys::FLAVORS) {
            let (id, tail) = keys::split_id(rest);
            if tail == keys::METADATA {
                match value.and_then(|v| Flavor::from_stored(ctx, id, v, mod_revision).ok()) {
                    Some(f) => {
                        self.flavors.insert(id.to_string(), f.resources);
                    }
                    None => {
                        self.flavors.remove(id);
                    }
                }
            }
        }
    }

    /// Takes in a placement this process just made on `host` (its `allocated` figure
    /// and the guest link, as [`Hypervisor::add_guest`] left them) ahead of the watch,
    /// so that the next placement there does not start from the figure before it.
    pub fn absorb_placement(&mut self, host: &Hypervisor, guest: &str) {
        let Some(h) = self.hypervisors.get_mut(&host.id) else {
            return;
        };
        if let Some((figure, rev)) = host.allocated_state() {
            if rev > h.allocated_state().map_or(0, |(_, r)| r) {
                h.set_allocated(Some(figure), rev);
                h.push_guest(guest);
            }
        }
    }

    /// How many addresses subnet `id` still has free, per the view.
    pub fn free_addresses(&self, id: &str) -> u64 {
        match self.subnets.get(id) {
            Some((Some(s), index)) => s.free_count(index),
            _ => 0,
        }
    }
}

impl Guest {
    /// Candidate hypervisors for this guest: loads a fresh [`ClusterView`] and applies
    /// `fns` in order (see [`Guest::candidates_in`]).
    pub async fn candidates(&self, fns: &[CandidateFunction]) -> Result<Vec<Hypervisor>> {
        let view = ClusterView::load(self.context()).await?;
        Ok(self
            .candidates_in(&view, fns)?
            .into_iter()
            .cloned()
            .collect())
    }

    /// Candidate hypervisors for this guest in `view`: every hypervisor, then each of
    /// `fns` in order. [`Error::NoHypervisors`] when the view has none,
    /// [`Error::NoSuitableHypervisors`] when a filter leaves none.
    pub fn candidates_in<'a>(
        &self,
        view: &'a ClusterView,
        fns: &[CandidateFunction],
    ) -> Result<Vec<&'a Hypervisor>> {
        let mut list: Vec<&Hypervisor> = view.hypervisors.values().collect();
        if list.is_empty() {
            return Err(Error::NoHypervisors);
        }
        for f in fns {
            let before = list.len();
            list = f(self, view, list)?;
            tracing::debug!(guest = %self.id, before, after = list.len(), "candidate filter");
            if list.is_empty() {
                return Err(Error::NoSuitableHypervisors);
            }
        }
        Ok(list)
    }
}

/// Keeps the hypervisors whose heartbeat key is present.
pub fn candidate_is_alive<'a>(
    _: &Guest,
    _: &'a ClusterView,
    list: Vec<&'a Hypervisor>,
) -> Result<Vec<&'a Hypervisor>> {
    Ok(list.into_iter().filter(|h| h.is_alive()).collect())
}

/// Keeps the hypervisors that have a subnet of the guest's network with a free address.
pub fn candidate_has_subnet<'a>(
    g: &Guest,
    view: &'a ClusterView,
    list: Vec<&'a Hypervisor>,
) -> Result<Vec<&'a Hypervisor>> {
    let subnets = view
        .networks
        .get(&g.network)
        .ok_or_else(|| Error::NotFound(keys::network_metadata(&g.network)))?;
    let usable: Vec<&String> = subnets
        .iter()
        .filter(|s| view.free_addresses(s) > 0)
        .collect();
    Ok(list
        .into_iter()
        .filter(|h| usable.iter().any(|s| h.subnets().contains_key(*s)))
        .collect())
}

/// Keeps the hypervisors the guest's flavor fits on ([`Hypervisor::fits`]: within both
/// `total_resources − allocated` and `available_resources`).
pub fn candidate_has_resources<'a>(
    g: &Guest,
    view: &'a ClusterView,
    list: Vec<&'a Hypervisor>,
) -> Result<Vec<&'a Hypervisor>> {
    let need = view
        .flavors
        .get(&g.flavor)
        .ok_or_else(|| Error::NotFound(keys::flavor_metadata(&g.flavor)))?;
    Ok(list.into_iter().filter(|h| h.fits(need)).collect())
}

/// Shuffles the list uniformly.
pub fn candidate_randomize<'a>(
    _: &Guest,
    _: &'a ClusterView,
    mut list: Vec<&'a Hypervisor>,
) -> Result<Vec<&'a Hypervisor>> {
    list.shuffle(&mut rand::rng());
    Ok(list)
}
