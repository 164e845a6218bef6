//! [`Subnet`]: an IPv4 range guests get their addresses from, and address reservation.
//! Each reservation is a key of its own; the allocation index ([`AllocIndex`]) lists them
//! as runs, in blocks of 256 addresses (`lochness/subnets/<id>/alloc/<first address>`,
//! absent when the block has none) updated in the same transaction, so handing out an
//! address never lists the reservations, and placements in different blocks do not
//! contend. `lochness/subnets/<id>/alloc` says the blocks are complete; until it does
//! (a store written by the Go library, or by our earlier single-key index) the index is
//! built from the reservations once, by whoever reads it first. The lowest
//! free address is handed out; network, broadcast and gateway addresses never are (the
//! original picked at random and excluded none; see docs/compat.md, section "lochness").
//! What a context last knew of each subnet's index is cached here too (`AllocCache`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};

use etcd_client::{Compare, Txn, TxnOp, TxnOpResponse};
use ipnetwork::IpNetwork;
use serde::Serialize;

use crate::codec::{canonicalize, new_id, parse_cidr, ser_cidr, ser_ip, Obj};
use crate::context::{backoff, revision, txn_get, Context, Kv, MAX_ATTEMPTS};
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

    /// The reserved addresses within `[start, end]`.
    pub(crate) fn slice(&self, start: u32, end: u32) -> AllocIndex {
        let mut out = AllocIndex::default();
        let from = self.run_of(start).map(|(f, _)| f).unwrap_or(start);
        for (f, l) in self.runs.range(from..=end) {
            let (a, b) = ((*f).max(start), (*l).min(end));
            if a <= b {
                out.runs.insert(a, b);
            }
        }
        out
    }

    /// Replaces what is reserved within `[start, end]` with what `part` holds there.
    pub(crate) fn replace(&mut self, start: u32, end: u32, part: &AllocIndex) {
        let from = self.run_of(start).map(|(f, _)| f).unwrap_or(start);
        let overlapping: Vec<(u32, u32)> =
            self.runs.range(from..=end).map(|(f, l)| (*f, *l)).collect();
        for (f, l) in overlapping {
            self.runs.remove(&f);
            if f < start {
                self.runs.insert(f, start - 1);
            }
            if l > end {
                self.runs.insert(end + 1, l);
            }
        }
        for (f, l) in part.slice(start, end).runs {
            self.insert_run(f, l);
        }
    }

    /// The block of the index that starts at `start` (see [`keys::alloc_block_of`]).
    pub(crate) fn block(&self, start: u32) -> AllocIndex {
        self.slice(start, block_end(start))
    }

    /// Replaces the block that starts at `start` with `block`.
    pub(crate) fn set_block(&mut self, start: u32, block: &AllocIndex) {
        self.replace(start, block_end(start), block);
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

/// The last address of the index block that starts at `start`.
fn block_end(start: u32) -> u32 {
    start.saturating_add(keys::ALLOC_BLOCK - 1)
}

/// The block start a key `…/alloc/<address>` names.
pub(crate) fn block_start(tail: &str) -> Option<u32> {
    let ip: Ipv4Addr = tail.parse().ok()?;
    let start = u32::from(ip);
    (keys::alloc_block_of(start) == start).then_some(start)
}

/// A subnet as read for an allocation: its metadata and index, with their revisions.
#[derive(Debug, Clone)]
pub(crate) struct AllocState {
    pub(crate) subnet: Subnet,
    /// Every reserved address (the union of the blocks).
    pub(crate) index: AllocIndex,
    /// `mod_revision` of each block key that exists.
    pub(crate) blocks: BTreeMap<u32, i64>,
    /// The newest revision this state reflects (of a key read, or of its last write).
    pub(crate) as_of: i64,
}

/// At most this many block writes per transaction when an index is built.
const BUILD_CHUNK: usize = 100;

impl AllocState {
    /// Builds the state from the responses of [`Subnet::read_ops`] (metadata, marker,
    /// blocks); `None` when the subnet does not exist. An index that is not complete
    /// (no marker: a store written by the Go library, or by the earlier single-key index)
    /// is built from the reservation keys and written (blocks, then the marker), which
    /// costs one read of the reservations once per subnet.
    pub(crate) async fn from_reads(
        ctx: &Context,
        id: &str,
        meta: Vec<Kv>,
        marker: Vec<Kv>,
        blocks: Vec<Kv>,
    ) -> Result<Option<AllocState>> {
        let Some(meta) = meta.into_iter().next() else {
            return Ok(None);
        };
        let subnet = Subnet::from_stored(ctx, id, &meta.value, meta.mod_revision)?;
        let prefix = keys::subnet_alloc_prefix(id);
        let mut as_of = meta.mod_revision;
        let mut revs = BTreeMap::new();
        let mut index = AllocIndex::default();
        let mut readable = true;
        for kv in &blocks {
            let Some(start) = kv.key.strip_prefix(prefix.as_str()).and_then(block_start) else {
                continue;
            };
            revs.insert(start, kv.mod_revision);
            as_of = as_of.max(kv.mod_revision);
            match AllocIndex::parse(&kv.text()) {
                Ok(part) => index.set_block(start, &part),
                Err(_) => readable = false,
            }
        }
        let marker = marker.into_iter().next();
        as_of = as_of.max(marker.as_ref().map_or(0, |kv| kv.mod_revision));
        let mut state = AllocState {
            subnet,
            index,
            blocks: revs,
            as_of,
        };
        if !(readable
            && marker
                .as_ref()
                .is_some_and(|kv| kv.text() == keys::ALLOC_BUILT))
        {
            state
                .build(ctx, marker.map_or(0, |kv| kv.mod_revision), &blocks)
                .await?;
        }
        Ok(Some(state))
    }

    /// [`AllocState::from_reads`] from the answers of [`Subnet::read_ops`] at `r[at..]`.
    pub(crate) async fn from_responses(
        ctx: &Context,
        id: &str,
        r: &[TxnOpResponse],
        at: usize,
    ) -> Result<Option<AllocState>> {
        let get = |i| txn_get(ctx, r, at + i);
        AllocState::from_reads(ctx, id, get(0), get(1), get(2)).await
    }

    /// Rebuilds the index from the reservation keys, then writes each block that differs
    /// and the marker (a lost race leaves the rest to the next reader: each write
    /// compares the revision of what it replaces).
    async fn build(&mut self, ctx: &Context, marker_rev: i64, stored: &[Kv]) -> Result<()> {
        let id = self.subnet.id.clone();
        let mut index = AllocIndex::default();
        for kv in ctx.get_prefix(&keys::subnet_addresses_prefix(&id)).await? {
            if let Some(Ok(ip)) = kv.key.rsplit('/').next().map(str::parse::<Ipv4Addr>) {
                index.insert(u32::from(ip));
            }
        }
        self.index = index;
        let prefix = keys::subnet_alloc_prefix(&id);
        let stored: BTreeMap<u32, String> = stored
            .iter()
            .filter_map(|kv| {
                let start = kv.key.strip_prefix(prefix.as_str()).and_then(block_start)?;
                Some((start, kv.text()))
            })
            .collect();
        let mut starts: BTreeSet<u32> = stored.keys().copied().collect();
        starts.extend(self.index.runs.iter().flat_map(|(f, l)| {
            (keys::alloc_block_of(*f)..=keys::alloc_block_of(*l))
                .step_by(keys::ALLOC_BLOCK as usize)
        }));
        let changes: Vec<u32> = starts
            .into_iter()
            .filter(|b| {
                stored.get(b).map(String::as_str).unwrap_or("") != self.index.block(*b).text()
            })
            .collect();
        let mut chunks: Vec<&[u32]> = changes.chunks(BUILD_CHUNK).collect();
        if chunks.is_empty() {
            chunks.push(&[]);
        }
        let last = chunks.len() - 1;
        for (n, chunk) in chunks.into_iter().enumerate() {
            let (mut cmps, mut ops) = (Vec::new(), Vec::new());
            for b in chunk {
                let (c, o) = self.block_write(ctx, *b);
                cmps.push(c);
                ops.push(o);
            }
            if n == last {
                cmps.push(ctx.cmp_rev(&keys::subnet_metadata(&id), self.subnet.mod_revision));
                cmps.push(ctx.cmp_rev(&keys::subnet_alloc(&id), marker_rev));
                ops.push(ctx.op_put(&keys::subnet_alloc(&id), keys::ALLOC_BUILT));
            }
            let resp = ctx.commit(Txn::new().when(cmps).and_then(ops)).await?;
            if !resp.succeeded() {
                tracing::debug!(subnet = %id, "building the allocation index lost a race");
                return Ok(());
            }
            let rev = revision(&resp);
            for b in chunk {
                self.written(*b, rev);
            }
        }
        tracing::info!(subnet = %id, reserved = self.index.len(), "allocation index built");
        Ok(())
    }

    /// The compare and write that store block `start` of this state's index (deleted
    /// when empty), if the stored block is the one this state read.
    pub(crate) fn block_write(&self, ctx: &Context, start: u32) -> (Compare, TxnOp) {
        let key = keys::subnet_alloc_block(&self.subnet.id, start);
        let cmp = ctx.cmp_rev(&key, self.blocks.get(&start).copied().unwrap_or(0));
        let block = self.index.block(start);
        let op = if block.is_empty() {
            ctx.op_delete(&key)
        } else {
            ctx.op_put(&key, block.text())
        };
        (cmp, op)
    }

    /// This state as read at revision `rev` (the answer's header): newer than any state
    /// read or written before it.
    pub(crate) fn seen_at(mut self, rev: i64) -> AllocState {
        self.as_of = self.as_of.max(rev);
        self
    }

    /// Records that block `start` was written at `rev`.
    pub(crate) fn written(&mut self, start: u32, rev: i64) {
        if self.index.block(start).is_empty() {
            self.blocks.remove(&start);
        } else {
            self.blocks.insert(start, rev);
        }
        self.as_of = self.as_of.max(rev);
    }

    /// The next address to hand out, if any: the lowest free one from `from` on (then
    /// from the start of the range).
    pub(crate) fn pick_from(&self, from: Option<u32>) -> Option<u32> {
        self.subnet.first_free_from(&self.index, from)
    }

    /// The next address to hand out, if any (the lowest free one).
    pub(crate) fn pick(&self) -> Option<u32> {
        self.pick_from(None)
    }

    /// Whether the subnet or a block of `starts` changed between `self` and `fresh`.
    pub(crate) fn moved(&self, fresh: &AllocState, starts: &BTreeSet<u32>) -> bool {
        self.subnet.revision() != fresh.subnet.revision()
            || starts
                .iter()
                .any(|b| self.blocks.get(b) != fresh.blocks.get(b))
    }

    /// Compares and operations reserving `ip` for `owner` (the caller adds its own).
    pub(crate) fn reserve_ops(
        &self,
        ctx: &Context,
        ip: u32,
        owner: &str,
    ) -> (Vec<Compare>, Vec<TxnOp>) {
        let id = &self.subnet.id;
        let mut next = self.clone();
        next.index.insert(ip);
        let addr = keys::subnet_address(id, Ipv4Addr::from(ip));
        let (block_cmp, block_op) = next.block_write(ctx, keys::alloc_block_of(ip));
        (
            vec![
                ctx.cmp_rev(&keys::subnet_metadata(id), self.subnet.mod_revision),
                block_cmp,
                ctx.cmp_absent(&addr),
            ],
            vec![ctx.op_put(&addr, owner), block_op],
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

    /// Gets (metadata, index marker, index blocks) for a read or the failure branch of
    /// a transaction.
    pub(crate) fn read_ops(ctx: &Context, id: &str) -> [TxnOp; 3] {
        [
            ctx.op_get(&keys::subnet_metadata(id)),
            ctx.op_get(&keys::subnet_alloc(id)),
            ctx.op_get_prefix(&keys::subnet_alloc_prefix(id)),
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

    /// The lowest address of `[start, end]` from `from` on (else from `start`) that is
    /// neither reserved in `index` nor excluded.
    pub(crate) fn first_free_from(&self, index: &AllocIndex, from: Option<u32>) -> Option<u32> {
        let (start, end) = self.bounds()?;
        match from.filter(|f| (start..=end).contains(f)) {
            Some(f) => self
                .free_in(index, f, end)
                .or_else(|| self.free_in(index, start, f)),
            None => self.free_in(index, start, end),
        }
    }

    /// The lowest free address of `[from, to]`.
    fn free_in(&self, index: &AllocIndex, from: u32, to: u32) -> Option<u32> {
        let mut c = u64::from(from);
        let end = u64::from(to);
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
        let mut state = AllocState::from_responses(&ctx, &id, &r, 0)
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
            let taken = !txn_get(&ctx, &r, 3).is_empty();
            state = AllocState::from_responses(&ctx, &id, &r, 0)
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
        let (cmps, ops) = match release_ops(ctx, id, ip, owner).await? {
            Release::Nothing => return Ok(()),
            Release::Write(cmps, ops) => (cmps, ops),
            Release::NeedsIndex => {
                ensure_index(ctx, id).await?;
                continue;
            }
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

/// What releasing an address takes.
#[derive(Debug)]
pub(crate) enum Release {
    /// Nothing to release (absent, or held by another owner).
    Nothing,
    /// These compares and operations release it.
    Write(Vec<Compare>, Vec<TxnOp>),
    /// The subnet's index is not built yet, or the address's block is unreadable: build
    /// it ([`ensure_index`]), then read again.
    NeedsIndex,
}

/// Reads the reservation of `ip` and what its release changes in the index, and returns
/// what releases it.
pub(crate) async fn release_ops(
    ctx: &Context,
    id: &str,
    ip: Ipv4Addr,
    owner: Option<&str>,
) -> Result<Release> {
    let addr = keys::subnet_address(id, ip);
    let mut reads = vec![ctx.op_get(&addr)];
    reads.extend(release_reads(ctx, id, ip));
    let resp = ctx.txn(Txn::new().and_then(reads)).await?;
    let r = resp.op_responses();
    let Some(held) = txn_get(ctx, &r, 0).into_iter().next() else {
        return Ok(Release::Nothing);
    };
    if owner.is_some_and(|o| o != held.text()) {
        return Ok(Release::Nothing);
    }
    let mut ops = vec![ctx.op_delete(&addr)];
    let Some(mut cmps) = release_block_ops(ctx, id, ip, &r, 1, &mut ops) else {
        return Ok(Release::NeedsIndex);
    };
    cmps.push(ctx.cmp_rev(&addr, held.mod_revision));
    Ok(Release::Write(cmps, ops))
}

/// The reads [`release_block_ops`] takes, in its order: the block of `ip` in subnet
/// `id`'s index, the index's marker, the subnet.
pub(crate) fn release_reads(ctx: &Context, id: &str, ip: Ipv4Addr) -> [TxnOp; 3] {
    [
        ctx.op_get(&keys::subnet_alloc_block(
            id,
            keys::alloc_block_of(u32::from(ip)),
        )),
        ctx.op_get(&keys::subnet_alloc(id)),
        ctx.op_get(&keys::subnet_metadata(id)),
    ]
}

/// The compares (and, into `ops`, the write) that take `ip` out of subnet `id`'s index,
/// from the answers to [`release_reads`] at `r[at..]`. `None` when the index is not built
/// yet or the block is unreadable: the index is to be built first. A release must not go
/// through on an index not built, because a process building it from the reservations it
/// read before this release would write the address back into its block, where it would
/// stay reserved for nobody. A release therefore either changes the block (which the
/// building compares) or finds the index built.
pub(crate) fn release_block_ops(
    ctx: &Context,
    id: &str,
    ip: Ipv4Addr,
    r: &[TxnOpResponse],
    at: usize,
    ops: &mut Vec<TxnOp>,
) -> Option<Vec<Compare>> {
    let key = keys::subnet_alloc_block(id, keys::alloc_block_of(u32::from(ip)));
    if let Some(kv) = txn_get(ctx, r, at).into_iter().next() {
        // Unreadable: the index is built again first (deleting the block alone would drop
        // its other reservations from an index marked complete).
        let mut part = AllocIndex::parse(&kv.text()).ok()?;
        part.remove(u32::from(ip));
        if part.is_empty() {
            ops.push(ctx.op_delete(&key));
        } else {
            ops.push(ctx.op_put(&key, part.text()));
        }
        return Some(vec![ctx.cmp_rev(&key, kv.mod_revision)]);
    }
    let marker = keys::subnet_alloc(id);
    let built = txn_get(ctx, r, at + 1)
        .first()
        .is_some_and(|kv| kv.text() == keys::ALLOC_BUILT);
    if built {
        return Some(vec![
            ctx.cmp_absent(&key),
            ctx.cmp_value(&marker, keys::ALLOC_BUILT),
        ]);
    }
    if txn_get(ctx, r, at + 2).is_empty() {
        // No subnet: no index is built for it.
        let meta = keys::subnet_metadata(id);
        return Some(vec![ctx.cmp_absent(&key), ctx.cmp_absent(&meta)]);
    }
    None
}

/// Builds subnet `id`'s index if it is not built (see [`AllocState::from_reads`]); a
/// subnet that does not exist is left so.
pub(crate) async fn ensure_index(ctx: &Context, id: &str) -> Result<()> {
    let r = ctx
        .txn(Txn::new().and_then(Subnet::read_ops(ctx, id).to_vec()))
        .await?
        .op_responses();
    AllocState::from_responses(ctx, id, &r, 0).await?;
    Ok(())
}

/// What a context knows of subnets' allocation state: per subnet the last state read or
/// written (possibly stale: writes built from it compare revisions, and a lost compare
/// brings fresh state back; placements of one process on a subnet are written together,
/// see `assign::SubnetTurns`). One per context
/// ([`AllocCache::of`]), shared by its clones.
#[derive(Debug, Default)]
pub(crate) struct AllocCache {
    states: Mutex<HashMap<String, AllocState>>,
    /// Per subnet, where this process looks for free addresses first (after it lost a
    /// race with another process, a block of its own).
    preferred: Mutex<HashMap<String, u32>>,
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
        let newer = |s: &AllocState| (s.as_of, s.subnet.revision());
        match states.get(&state.subnet.id) {
            Some(old) if newer(old) > newer(&state) => {}
            _ => {
                states.insert(state.subnet.id.clone(), state);
            }
        }
    }

    /// Where this process looks first for a free address of subnet `id` (`None`: the
    /// lowest).
    pub(crate) fn preferred(&self, id: &str) -> Option<u32> {
        self.preferred
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .copied()
    }

    /// Moves this process's first look for subnet `id` to a random free address of
    /// `state` (another process works where it looked).
    pub(crate) fn scatter(&self, id: &str, state: &AllocState) {
        use rand::Rng;
        let Some((start, end)) = state.subnet.bounds() else {
            return;
        };
        let at = rand::rng().random_range(start..=end);
        if let Some(ip) = state.pick_from(Some(at)) {
            self.preferred
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(id.to_string(), keys::alloc_block_of(ip));
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

    /// Subnet `id`'s allocation index as stored: the union of its blocks once they are
    /// complete (`None` before: a store whose index was never built).
    pub async fn subnet_index(&self, id: &str) -> Result<Option<AllocIndex>> {
        let id = canonicalize(id)?;
        let r = self
            .txn(Txn::new().and_then(Subnet::read_ops(self, &id).to_vec()))
            .await?
            .op_responses();
        let built = txn_get(self, &r, 1)
            .first()
            .is_some_and(|kv| kv.text() == keys::ALLOC_BUILT);
        if !built {
            return Ok(None);
        }
        let prefix = keys::subnet_alloc_prefix(&id);
        let mut index = AllocIndex::default();
        for kv in txn_get(self, &r, 2) {
            if let Some(start) = kv.key.strip_prefix(prefix.as_str()).and_then(block_start) {
                index.set_block(start, &AllocIndex::parse(&kv.text())?);
            }
        }
        Ok(Some(index))
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
    fn blocks_slice_and_replace_the_index() {
        let ip = |s: &str| u32::from(s.parse::<Ipv4Addr>().unwrap());
        let idx = AllocIndex::parse("10.0.0.250-10.0.1.5,10.0.1.9,10.0.2.0-10.0.2.255").unwrap();
        assert_eq!(idx.block(ip("10.0.0.0")).text(), "10.0.0.250-10.0.0.255");
        assert_eq!(
            idx.block(ip("10.0.1.0")).text(),
            "10.0.1.0-10.0.1.5,10.0.1.9"
        );
        assert_eq!(idx.block(ip("10.0.2.0")).text(), "10.0.2.0-10.0.2.255");
        assert!(idx.block(ip("10.0.3.0")).is_empty());
        // Replacing a block keeps its neighbours and merges across the edges.
        let mut whole = idx.clone();
        whole.set_block(
            ip("10.0.1.0"),
            &AllocIndex::parse("10.0.1.0-10.0.1.255").unwrap(),
        );
        assert_eq!(whole.text(), "10.0.0.250-10.0.2.255");
        whole.set_block(ip("10.0.1.0"), &AllocIndex::default());
        assert_eq!(whole.text(), "10.0.0.250-10.0.0.255,10.0.2.0-10.0.2.255");
        // Only the block's own addresses are taken from `part`.
        whole.set_block(
            ip("10.0.1.0"),
            &AllocIndex::parse("10.0.0.1,10.0.1.7").unwrap(),
        );
        assert_eq!(
            whole.text(),
            "10.0.0.250-10.0.0.255,10.0.1.7,10.0.2.0-10.0.2.255"
        );
        // The union of the blocks is the index.
        let mut union = AllocIndex::default();
        for b in ["10.0.0.0", "10.0.1.0", "10.0.2.0"] {
            union.set_block(ip(b), &idx.block(ip(b)));
        }
        assert_eq!(union, idx);
        assert_eq!(block_start("10.0.1.0"), Some(ip("10.0.1.0")));
        assert_eq!(block_start("10.0.1.1"), None, "not the start of a block");
        assert_eq!(block_start("nope"), None);
    }

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
