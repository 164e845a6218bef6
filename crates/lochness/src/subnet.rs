//! [`Subnet`]: an IPv4 range guests get their addresses from, and address reservation.
//! Each reservation is a key of its own; the allocation index
//! `lochness/subnets/<id>/alloc` ([`AllocIndex`]) lists them as runs and is updated in the
//! same transaction, so handing out an address never lists the reservations. The lowest
//! free address is handed out; network, broadcast and gateway addresses never are (the
//! original picked at random and excluded none; see docs/compat.md, section "lochness").
//! What a context last knew of each subnet's index is cached here too (`AllocCache`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};

use etcd_client::{Compare, Txn, TxnOp};
use ipnetwork::IpNetwork;
use serde::Serialize;

use crate::codec::{canonicalize, new_id, parse_cidr, ser_cidr, ser_ip, Obj};
use crate::context::{backoff, txn_get, Context, Kv, MAX_ATTEMPTS};
use crate::error::{Error, Result};
use crate::keys;

/// An IPv4 range guests get their addresses from.
#[derive(Debug, Clone, Serialize)]
pub struct Subnet {
    #[serde(skip)]
    ctx: Context,
    /// Lower-case UUID.
    pub id: String,
    /// Free-form key/values.
    pub metadata: BTreeMap<String, String>,
    /// The network this subnet belongs to (`""` when none); changed through
    /// [`Network::add_subnet`] / [`Network::remove_subnet`].
    ///
    /// [`Network::add_subnet`]: crate::Network::add_subnet
    /// [`Network::remove_subnet`]: crate::Network::remove_subnet
    pub network: String,
    /// Default gateway handed to guests (never handed out as an address).
    #[serde(serialize_with = "ser_ip")]
    pub gateway: Option<IpAddr>,
    /// The IPv4 network (host bits masked).
    #[serde(serialize_with = "ser_cidr")]
    pub cidr: Option<IpNetwork>,
    /// First address that may be handed out.
    #[serde(rename = "start", serialize_with = "ser_ip")]
    pub start_range: Option<IpAddr>,
    /// Last address that may be handed out.
    #[serde(rename = "end", serialize_with = "ser_ip")]
    pub end_range: Option<IpAddr>,
    #[serde(skip)]
    addresses: BTreeMap<u32, String>,
    #[serde(skip)]
    mod_revision: i64,
}

fn v4(ip: &Option<IpAddr>) -> Option<u32> {
    match ip {
        Some(IpAddr::V4(a)) => Some(u32::from(*a)),
        _ => None,
    }
}

/// The allocation index: the set of reserved addresses of one subnet, stored as text
/// (`a.b.c.d-e.f.g.h,i.j.k.l`: comma-separated ascending runs) and held as runs, so that
/// every operation costs the number of runs, not the number of reservations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllocIndex {
    /// Disjoint, non-adjacent runs: first address → last address.
    runs: BTreeMap<u32, u32>,
}

impl AllocIndex {
    /// Parses the stored text.
    pub fn parse(text: &str) -> Result<AllocIndex> {
        let bad = || Error::InvalidJson(format!("bad allocation index: {text:.80}"));
        let mut index = AllocIndex::default();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (a, b) = part.split_once('-').unwrap_or((part, part));
            let a: Ipv4Addr = a.parse().map_err(|_| bad())?;
            let b: Ipv4Addr = b.parse().map_err(|_| bad())?;
            let (a, b) = (u32::from(a), u32::from(b));
            if a > b {
                return Err(bad());
            }
            index.insert_run(a, b);
        }
        Ok(index)
    }

    /// The text form.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for (first, last) in &self.runs {
            if !out.is_empty() {
                out.push(',');
            }
            if first == last {
                out.push_str(&Ipv4Addr::from(*first).to_string());
            } else {
                out.push_str(&format!(
                    "{}-{}",
                    Ipv4Addr::from(*first),
                    Ipv4Addr::from(*last)
                ));
            }
        }
        out
    }

    /// The run containing `ip`, if any.
    fn run_of(&self, ip: u32) -> Option<(u32, u32)> {
        self.runs
            .range(..=ip)
            .next_back()
            .filter(|(_, last)| **last >= ip)
            .map(|(f, l)| (*f, *l))
    }

    /// Whether `ip` is reserved.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        self.run_of(u32::from(ip)).is_some()
    }

    /// Number of reserved addresses.
    pub fn len(&self) -> usize {
        self.runs.iter().map(|(f, l)| (l - f) as usize + 1).sum()
    }

    /// Whether nothing is reserved.
    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// How many reserved addresses fall in `[start, end]`.
    pub fn count_in(&self, start: u32, end: u32) -> u64 {
        let from = self.run_of(start).map(|(f, _)| f).unwrap_or(start);
        self.runs
            .range(from..=end)
            .map(|(f, l)| u64::from((*l).min(end)) - u64::from((*f).max(start)) + 1)
            .sum()
    }

    fn insert_run(&mut self, mut a: u32, mut b: u32) {
        // Merge with every run overlapping or adjacent to [a, b].
        let lo = a.saturating_sub(1);
        let hi = b.saturating_add(1);
        let touching: Vec<(u32, u32)> = self
            .runs
            .range(..=hi)
            .rev()
            .take_while(|(_, l)| **l >= lo)
            .map(|(f, l)| (*f, *l))
            .collect();
        for (f, l) in touching {
            self.runs.remove(&f);
            a = a.min(f);
            b = b.max(l);
        }
        self.runs.insert(a, b);
    }

    pub(crate) fn insert(&mut self, ip: u32) {
        self.insert_run(ip, ip);
    }

    pub(crate) fn remove(&mut self, ip: u32) {
        if let Some((f, l)) = self.run_of(ip) {
            self.runs.remove(&f);
            if f < ip {
                self.runs.insert(f, ip - 1);
            }
            if ip < l {
                self.runs.insert(ip + 1, l);
            }
        }
    }
}

/// A subnet as read for an allocation: its metadata and index, with their revisions.
#[derive(Debug, Clone)]
pub(crate) struct AllocState {
    pub(crate) subnet: Subnet,
    pub(crate) index: AllocIndex,
    /// `mod_revision` of the alloc key; 0 when it does not exist yet.
    pub(crate) index_rev: i64,
}

impl AllocState {
    /// Builds the state from the responses of [`Subnet::read_ops`]; `None` when the
    /// subnet does not exist. A missing (or unreadable) index is rebuilt from the
    /// reservation keys, which costs one extra read once per subnet.
    pub(crate) async fn from_reads(
        ctx: &Context,
        id: &str,
        meta: Vec<Kv>,
        alloc: Vec<Kv>,
    ) -> Result<Option<AllocState>> {
        let Some(meta) = meta.into_iter().next() else {
            return Ok(None);
        };
        let subnet = Subnet::from_stored(ctx, id, &meta.value, meta.mod_revision)?;
        let parsed = alloc
            .first()
            .map(|kv| (AllocIndex::parse(&kv.text()), kv.mod_revision));
        let (index, index_rev) = match parsed {
            Some((Ok(index), rev)) => (index, rev),
            other => {
                let rev = other.map(|(_, rev)| rev).unwrap_or(0);
                let mut index = AllocIndex::default();
                for kv in ctx.get_prefix(&keys::subnet_addresses_prefix(id)).await? {
                    if let Some(Ok(ip)) = kv.key.rsplit('/').next().map(str::parse::<Ipv4Addr>) {
                        index.insert(u32::from(ip));
                    }
                }
                (index, rev)
            }
        };
        Ok(Some(AllocState {
            subnet,
            index,
            index_rev,
        }))
    }

    /// The next address to hand out, if any.
    pub(crate) fn pick(&self) -> Option<u32> {
        self.subnet.first_free(&self.index)
    }

    /// Compares and operations reserving `ip` for `owner` (the caller adds its own).
    pub(crate) fn reserve_ops(
        &self,
        ctx: &Context,
        ip: u32,
        owner: &str,
    ) -> (Vec<Compare>, Vec<TxnOp>) {
        let id = &self.subnet.id;
        let mut index = self.index.clone();
        index.insert(ip);
        let addr = keys::subnet_address(id, Ipv4Addr::from(ip));
        (
            vec![
                ctx.cmp_rev(&keys::subnet_metadata(id), self.subnet.mod_revision),
                ctx.cmp_rev(&keys::subnet_alloc(id), self.index_rev),
                ctx.cmp_absent(&addr),
            ],
            vec![
                ctx.op_put(&addr, owner),
                ctx.op_put(&keys::subnet_alloc(id), index.text()),
            ],
        )
    }
}

impl Subnet {
    fn key(&self) -> String {
        keys::subnet_metadata(&self.id)
    }

    fn blank(ctx: &Context, id: String) -> Subnet {
        Subnet {
            ctx: ctx.clone(),
            id,
            metadata: BTreeMap::new(),
            network: String::new(),
            gateway: None,
            cidr: None,
            start_range: None,
            end_range: None,
            addresses: BTreeMap::new(),
            mod_revision: 0,
        }
    }

    /// Gets (metadata, alloc) for a read or the failure branch of a transaction.
    pub(crate) fn read_ops(ctx: &Context, id: &str) -> [TxnOp; 2] {
        [
            ctx.op_get(&keys::subnet_metadata(id)),
            ctx.op_get(&keys::subnet_alloc(id)),
        ]
    }

    pub(crate) fn set_revision(&mut self, rev: i64) {
        self.mod_revision = rev;
    }

    /// Replaces every field from a JSON document (absent → empty). The `cidr` must be a
    /// valid CIDR; on any error nothing changes.
    pub fn decode_json(&mut self, data: &[u8]) -> Result<()> {
        let o = Obj::parse(data)?;
        let cidr = parse_cidr(&o.string("cidr")?.unwrap_or_default())?;
        let gateway = o.ip("gateway")?;
        let start = o.ip("start")?;
        let end = o.ip("end")?;
        self.id = o.string("id")?.unwrap_or_default();
        self.metadata = o.map("metadata")?.unwrap_or_default();
        self.network = o.string("network")?.unwrap_or_default();
        self.gateway = gateway;
        self.cidr = Some(cidr);
        self.start_range = start;
        self.end_range = end;
        Ok(())
    }

    /// Checks, in order: id, CIDR present and IPv4, start present and inside, end present
    /// and inside, start ≤ end, gateway (when given) inside the CIDR.
    pub fn validate(&self) -> Result<()> {
        canonicalize(&self.id).map_err(|_| Error::Invalid("invalid ID".into()))?;
        let cidr = self
            .cidr
            .ok_or_else(|| Error::InvalidCidr("CIDR cannot be nil".into()))?;
        if !cidr.is_ipv4() {
            return Err(Error::InvalidCidr(format!(
                "{cidr}: IPv6 subnets are not supported"
            )));
        }
        let start = self
            .start_range
            .ok_or_else(|| Error::Invalid("StartRange cannot be nil".into()))?;
        if !cidr.contains(start) {
            return Err(Error::Invalid(format!(
                "{} does not contain {start}",
                crate::codec::cidr_text(&cidr)
            )));
        }
        let end = self
            .end_range
            .ok_or_else(|| Error::Invalid("EndRange cannot be nil".into()))?;
        if !cidr.contains(end) {
            return Err(Error::Invalid(format!(
                "{} does not contain {end}",
                crate::codec::cidr_text(&cidr)
            )));
        }
        if v4(&self.end_range) < v4(&self.start_range) {
            return Err(Error::Invalid(
                "EndRange cannot be less than StartRange".into(),
            ));
        }
        if let Some(gw) = self.gateway {
            if !cidr.contains(gw) {
                return Err(Error::Invalid(format!(
                    "{} does not contain gateway {gw}",
                    crate::codec::cidr_text(&cidr)
                )));
            }
        }
        Ok(())
    }

    pub(crate) fn from_stored(ctx: &Context, id: &str, value: &[u8], rev: i64) -> Result<Subnet> {
        let mut s = Subnet::blank(ctx, id.to_string());
        s.decode_json(value)?;
        s.id = id.to_string();
        s.mod_revision = rev;
        Ok(s)
    }

    pub(crate) fn from_keys(ctx: &Context, id: &str, items: &[(String, Kv)]) -> Result<Subnet> {
        let meta = crate::context::metadata_of(items, || keys::subnet_metadata(id))?;
        let mut s = Subnet::from_stored(ctx, id, &meta.value, meta.mod_revision)?;
        for (tail, kv) in items {
            if let Some(ip) = tail.strip_prefix(keys::ADDRESSES_DIR) {
                if let Ok(ip) = ip.parse::<Ipv4Addr>() {
                    s.addresses.insert(u32::from(ip), kv.text());
                }
            }
        }
        Ok(s)
    }

    /// Reloads the subnet and its reservations in one ranged read.
    pub async fn refresh(&mut self) -> Result<()> {
        let prefix = keys::subnet_prefix(&self.id);
        let items = self.ctx.get_tree(&prefix).await?;
        *self = Subnet::from_keys(&self.ctx, &self.id, &items)?;
        Ok(())
    }

    fn bounds(&self) -> Option<(u32, u32)> {
        Some((v4(&self.start_range)?, v4(&self.end_range)?))
    }

    /// Whether `ip` is never handed out: the network, broadcast or gateway address.
    pub fn is_excluded(&self, ip: Ipv4Addr) -> bool {
        let ip = u32::from(ip);
        if v4(&self.gateway) == Some(ip) {
            return true;
        }
        match self.cidr {
            Some(IpNetwork::V4(net)) if net.prefix() < 31 => {
                ip == u32::from(net.network()) || ip == u32::from(net.broadcast())
            }
            _ => false,
        }
    }

    /// The lowest address of `[start, end]` that is neither reserved in `index` nor
    /// excluded.
    pub(crate) fn first_free(&self, index: &AllocIndex) -> Option<u32> {
        let (start, end) = self.bounds()?;
        let mut c = u64::from(start);
        let end = u64::from(end);
        while c <= end {
            if let Some((_, last)) = index.run_of(c as u32) {
                c = u64::from(last) + 1;
                continue;
            }
            if self.is_excluded(Ipv4Addr::from(c as u32)) {
                c += 1;
                continue;
            }
            return Some(c as u32);
        }
        None
    }

    /// How many addresses `index` still leaves free in `[start, end]`.
    pub fn free_count(&self, index: &AllocIndex) -> u64 {
        let Some((start, end)) = self.bounds() else {
            return 0;
        };
        if end < start {
            return 0;
        }
        let size = u64::from(end - start) + 1;
        let taken = index.count_in(start, end);
        let mut excluded = BTreeSet::new();
        if let Some(g) = v4(&self.gateway) {
            excluded.insert(g);
        }
        if let Some(IpNetwork::V4(net)) = self.cidr {
            if net.prefix() < 31 {
                excluded.insert(u32::from(net.network()));
                excluded.insert(u32::from(net.broadcast()));
            }
        }
        let ex = excluded
            .iter()
            .filter(|e| (start..=end).contains(*e) && index.run_of(**e).is_none())
            .count() as u64;
        size.saturating_sub(taken + ex)
    }

    /// Addresses of `[start, end]` that are not reserved (as of the last load) and not
    /// excluded, ascending.
    pub fn available_addresses(&self) -> Vec<Ipv4Addr> {
        let Some((start, end)) = self.bounds() else {
            return Vec::new();
        };
        (u64::from(start)..=u64::from(end))
            .map(|c| c as u32)
            .filter(|c| !self.addresses.contains_key(c))
            .map(Ipv4Addr::from)
            .filter(|ip| !self.is_excluded(*ip))
            .collect()
    }

    /// Reservations inside `[start, end]`: dotted address → owner id (as of the last load).
    pub fn addresses(&self) -> BTreeMap<String, String> {
        let Some((start, end)) = self.bounds() else {
            return BTreeMap::new();
        };
        self.addresses
            .range(start..=end)
            .map(|(ip, owner)| (Ipv4Addr::from(*ip).to_string(), owner.clone()))
            .collect()
    }

    /// Reserves the lowest free address for `owner` in one transaction that creates the
    /// address key and updates the allocation index (retried on conflict).
    pub async fn reserve_address(&mut self, owner: &str) -> Result<Ipv4Addr> {
        let ctx = self.ctx.clone();
        let id = self.id.clone();
        let read = ctx
            .txn(Txn::new().and_then(Subnet::read_ops(&ctx, &id).to_vec()))
            .await?;
        let r = read.op_responses();
        let mut state =
            AllocState::from_reads(&ctx, &id, txn_get(&ctx, &r, 0), txn_get(&ctx, &r, 1))
                .await?
                .ok_or_else(|| Error::NotFound(keys::subnet_metadata(&id)))?;
        for attempt in 0..MAX_ATTEMPTS {
            let ip = state.pick().ok_or(Error::NoAvailableAddresses)?;
            let (cmps, ops) = state.reserve_ops(&ctx, ip, owner);
            let addr = keys::subnet_address(&id, Ipv4Addr::from(ip));
            let mut fail = Subnet::read_ops(&ctx, &id).to_vec();
            fail.push(ctx.op_get(&addr));
            let resp = ctx
                .commit(Txn::new().when(cmps).and_then(ops).or_else(fail))
                .await?;
            if resp.succeeded() {
                self.addresses.insert(ip, owner.to_string());
                return Ok(Ipv4Addr::from(ip));
            }
            let r = resp.op_responses();
            let taken = !txn_get(&ctx, &r, 2).is_empty();
            state = AllocState::from_reads(&ctx, &id, txn_get(&ctx, &r, 0), txn_get(&ctx, &r, 1))
                .await?
                .ok_or_else(|| Error::NotFound(keys::subnet_metadata(&id)))?;
            if taken {
                // Written by someone who does not keep the index: record it on the next try.
                state.index.insert(ip);
            }
            backoff(attempt).await;
        }
        Err(Error::TooManyConflicts {
            what: format!("reserve address in subnet {id}"),
            attempts: MAX_ATTEMPTS,
        })
    }

    /// Releases `ip` (a missing reservation is fine): deletes the address key and updates
    /// the index in one transaction, guarded so that a reservation made again in between
    /// is not freed.
    pub async fn release_address(&mut self, ip: Ipv4Addr) -> Result<()> {
        release(&self.ctx, &self.id, ip, None).await?;
        self.addresses.remove(&u32::from(ip));
        Ok(())
    }

    /// Deletes the subnet, its index, its network link and every hypervisor link to it in
    /// one transaction. Refused while any address is reserved. Deleting a subnet that does
    /// not exist is a no-op.
    pub async fn destroy(&mut self) -> Result<()> {
        let ctx = self.ctx.clone();
        let id = canonicalize(&self.id).map_err(|_| Error::Invalid("invalid ID".into()))?;
        for attempt in 0..MAX_ATTEMPTS {
            let prefix = keys::subnet_prefix(&id);
            let Some(meta) = ctx.get(&keys::subnet_metadata(&id)).await? else {
                return Ok(());
            };
            let current = Subnet::from_stored(&ctx, &id, &meta.value, meta.mod_revision)?;
            let mut ops = vec![ctx.op_delete_prefix(&prefix)];
            if !current.network.is_empty() {
                ops.push(ctx.op_delete(&keys::network_subnet(&current.network, &id)));
            }
            let links = ctx
                .kv()
                .get(
                    ctx.abs(keys::HYPERVISORS),
                    Some(
                        etcd_client::GetOptions::new()
                            .with_prefix()
                            .with_keys_only(),
                    ),
                )
                .await?;
            for kv in links.kvs() {
                if let Some(rel) = std::str::from_utf8(kv.key()).ok().and_then(|k| ctx.rel(k)) {
                    if keys::is_hypervisor_subnet_link(rel, &id) {
                        ops.push(ctx.op_delete(rel));
                    }
                }
            }
            let txn = Txn::new()
                .when(vec![
                    ctx.cmp_rev(&keys::subnet_metadata(&id), meta.mod_revision),
                    ctx.cmp_prefix_empty(&keys::subnet_addresses_prefix(&id)),
                ])
                .and_then(ops)
                .or_else(vec![ctx.op_get_prefix(&keys::subnet_addresses_prefix(&id))]);
            let resp = ctx.commit(txn).await?;
            if resp.succeeded() {
                self.mod_revision = 0;
                self.addresses.clear();
                return Ok(());
            }
            if !txn_get(&ctx, &resp.op_responses(), 0).is_empty() {
                return Err(Error::Refused(format!(
                    "subnet {id} has reserved addresses"
                )));
            }
            backoff(attempt).await;
        }
        Err(Error::TooManyConflicts {
            what: format!("destroy subnet {id}"),
            attempts: MAX_ATTEMPTS,
        })
    }
}

/// Releases `ip` of subnet `id`, only when it is held by `owner` (any owner when `None`).
pub(crate) async fn release(
    ctx: &Context,
    id: &str,
    ip: Ipv4Addr,
    owner: Option<&str>,
) -> Result<()> {
    for attempt in 0..MAX_ATTEMPTS {
        let Some((cmps, ops)) = release_ops(ctx, id, ip, owner).await? else {
            return Ok(());
        };
        let resp = ctx.commit(Txn::new().when(cmps).and_then(ops)).await?;
        if resp.succeeded() {
            return Ok(());
        }
        backoff(attempt).await;
    }
    Err(Error::TooManyConflicts {
        what: format!("release {ip} in subnet {id}"),
        attempts: MAX_ATTEMPTS,
    })
}

/// Reads the reservation of `ip` and the index, and returns the compares and operations
/// that release it; `None` when there is nothing to release (absent, or held by another
/// owner).
pub(crate) async fn release_ops(
    ctx: &Context,
    id: &str,
    ip: Ipv4Addr,
    owner: Option<&str>,
) -> Result<Option<(Vec<Compare>, Vec<TxnOp>)>> {
    let addr = keys::subnet_address(id, ip);
    let alloc_key = keys::subnet_alloc(id);
    let resp = ctx
        .txn(Txn::new().and_then(vec![ctx.op_get(&addr), ctx.op_get(&alloc_key)]))
        .await?;
    let r = resp.op_responses();
    let Some(held) = txn_get(ctx, &r, 0).into_iter().next() else {
        return Ok(None);
    };
    if owner.is_some_and(|o| o != held.text()) {
        return Ok(None);
    }
    let mut cmps = vec![ctx.cmp_rev(&addr, held.mod_revision)];
    let mut ops = vec![ctx.op_delete(&addr)];
    match txn_get(ctx, &r, 1).into_iter().next() {
        Some(alloc) => {
            cmps.push(ctx.cmp_rev(&alloc_key, alloc.mod_revision));
            if let Ok(mut index) = AllocIndex::parse(&alloc.text()) {
                index.remove(u32::from(ip));
                ops.push(ctx.op_put(&alloc_key, index.text()));
            } else {
                ops.push(ctx.op_delete(&alloc_key));
            }
        }
        None => cmps.push(ctx.cmp_absent(&alloc_key)),
    }
    Ok(Some((cmps, ops)))
}

/// What a context knows of subnets' allocation state: per subnet the last state read or
/// written (possibly stale: writes built from it compare revisions, and a lost compare
/// brings fresh state back; placements of one process on a subnet are written together,
/// see `assign::SubnetTurns`). One per context
/// ([`AllocCache::of`]), shared by its clones.
#[derive(Debug, Default)]
pub(crate) struct AllocCache {
    states: Mutex<HashMap<String, AllocState>>,
}

impl AllocCache {
    /// The cache of `ctx`.
    pub(crate) fn of(ctx: &Context) -> Arc<AllocCache> {
        ctx.local::<AllocCache>()
    }

    /// The allocation state of subnet `id` as last read or written.
    pub(crate) fn get(&self, id: &str) -> Option<AllocState> {
        self.states
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    /// Remembers `state` unless a newer one is known.
    pub(crate) fn put(&self, state: AllocState) {
        let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        let newer = |s: &AllocState| (s.index_rev.max(s.subnet.revision()), s.subnet.revision());
        match states.get(&state.subnet.id) {
            Some(old) if newer(old) > newer(&state) => {}
            _ => {
                states.insert(state.subnet.id.clone(), state);
            }
        }
    }
}

impl Context {
    /// A new subnet with a fresh id (not saved).
    pub fn new_subnet(&self) -> Subnet {
        Subnet::blank(self, new_id())
    }

    /// Loads subnet `id` with its reservations.
    pub async fn subnet(&self, id: &str) -> Result<Subnet> {
        let mut s = Subnet::blank(self, canonicalize(id)?);
        s.refresh().await?;
        Ok(s)
    }

    /// Loads subnet `id` without its reservations: one key, whatever the number of
    /// guests on it (for readers of its addressing: CIDR, gateway, range).
    pub async fn subnet_settings(&self, id: &str) -> Result<Subnet> {
        let id = canonicalize(id)?;
        let key = keys::subnet_metadata(&id);
        let kv = self.get(&key).await?.ok_or(Error::NotFound(key))?;
        Subnet::from_stored(self, &id, &kv.value, kv.mod_revision)
    }

    /// Calls `f` for every subnet (with reservations), loaded with one ranged read; stops
    /// at the first error. Broken entries are skipped with a warning.
    pub async fn for_each_subnet<F: FnMut(Subnet) -> Result<()>>(&self, f: F) -> Result<()> {
        let all = self
            .list_trees(keys::SUBNETS, |id, items| {
                Subnet::from_keys(self, id, items)
            })
            .await?;
        all.into_iter().try_for_each(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_text_round_trip() {
        let mut idx = AllocIndex::default();
        for ip in ["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.9", "10.0.1.0"] {
            idx.insert(u32::from(ip.parse::<Ipv4Addr>().unwrap()));
        }
        assert_eq!(idx.text(), "10.0.0.2-10.0.0.4,10.0.0.9,10.0.1.0");
        assert_eq!(AllocIndex::parse(&idx.text()).unwrap(), idx);
        assert_eq!(AllocIndex::parse("").unwrap().len(), 0);
        assert!(AllocIndex::parse("10.0.0.9-10.0.0.2").is_err());
        assert!(AllocIndex::parse("nope").is_err());
        let ip = |s: &str| u32::from(s.parse::<Ipv4Addr>().unwrap());
        idx.insert(ip("10.0.0.5"));
        idx.insert(ip("10.0.0.6"));
        idx.insert(ip("10.0.0.7"));
        idx.insert(ip("10.0.0.8"));
        assert_eq!(idx.text(), "10.0.0.2-10.0.0.9,10.0.1.0");
        assert_eq!(idx.len(), 9);
        assert_eq!(idx.count_in(ip("10.0.0.4"), ip("10.0.0.255")), 6);
        idx.remove(ip("10.0.0.5"));
        idx.remove(ip("10.0.1.0"));
        idx.remove(ip("10.0.3.3"));
        assert_eq!(idx.text(), "10.0.0.2-10.0.0.4,10.0.0.6-10.0.0.9");
        assert!(!idx.contains("10.0.0.5".parse().unwrap()));
        assert!(idx.contains("10.0.0.6".parse().unwrap()));
        assert_eq!(
            AllocIndex::parse("10.0.0.3,10.0.0.1-10.0.0.2")
                .unwrap()
                .text(),
            "10.0.0.1-10.0.0.3"
        );
    }
}

crate::codec::stored_entity!(Subnet);

crate::codec::saved_by_uuid!(Subnet);
