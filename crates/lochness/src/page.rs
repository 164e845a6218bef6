//! Pages of the entity listings: up to `limit` entities of a family in key (id) order,
//! starting after a given id, each page read with ranged reads that start where the last
//! page ended — never the whole family, never one read per entity.
//!
//! - Families whose trees are one key (guests, flavors, firewall groups) or a few
//!   (networks, VLANs, VLAN groups) are read with value ranges that start after the last
//!   id and stop at the page's size; only the `metadata` key of each entity is used.
//! - Families whose trees hold many link keys (a hypervisor's guest links, a subnet's
//!   address reservations) are read in two steps: a keys-only range that finds the next
//!   ids, jumping past each id's tree as soon as the id is known, then one transaction of
//!   gets per 40 ids for what the listing shows (metadata, heartbeat, a link).
//!
//! Each ranged read ends at a bound in the id space rather than at the family's end:
//! etcd counts every key from a read's start to its end to answer the read's `count`,
//! even when the read has a limit, so a read to the family's end costs the whole rest of
//! the family (with 100,000 guests the first page took ~35 ms, the last ~4 ms). The bound
//! is an 8-hex-digit id prefix (ids are UUIDs), set from how many keys the reads so far
//! found per stretch of the id space, so that a read counts about what it returns; an id
//! that does not start with 8 lower-case hex digits makes that read run to the family's
//! end. Every key of an id's tree shares the id's first 8 characters, so no tree is split
//! between two reads.
//!
//! Entities of a page carry what their JSON shows: a hypervisor its metadata and
//! liveness, a network, subnet, VLAN or VLAN group its metadata (their link lists stay
//! empty; load one entity with its getter for them). A page whose listing goes on has
//! [`Page::next`]: the id the next page starts after. Entities created or deleted while a
//! listing is paged through may or may not be in it; every other entity is in exactly
//! one page. Entries that cannot be decoded are skipped with a warning, as in the full
//! listings.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use etcd_client::{GetOptions, Txn, TxnOp};
use futures::future::try_join_all;

use crate::codec::canonicalize;
use crate::context::{txn_get, Context, Kv};
use crate::error::{Error, Result};
use crate::flavor::Flavor;
use crate::fwgroup::FwGroup;
use crate::guest::Guest;
use crate::hypervisor::Hypervisor;
use crate::keys;
use crate::network::Network;
use crate::subnet::Subnet;
use crate::vlan::{Vlan, VlanGroup};

/// The largest page a listing takes.
pub const MAX_PAGE: usize = 10_000;

/// Keys read per ranged read when a page's size does not bound it (a filtered or an
/// unlimited listing).
const SCAN_BATCH: usize = 2_000;

/// Keys read per keys-only read while looking for the next ids of a family whose trees
/// are large.
const ID_BATCH: usize = 512;

/// Entities per read-only transaction of gets (etcd's default limit is 128 operations per
/// transaction; a hypervisor takes up to three).
const GETS_PER_TXN: usize = 40;

/// One page of a listing.
#[derive(Debug, Clone)]
pub struct Page<T> {
    /// The entities, in id (key) order.
    pub items: Vec<T>,
    /// When more entities follow: the id of the last one of this page, after which the
    /// next page starts.
    pub next: Option<String>,
}

/// Which page of a listing: after which id (`None`: from the start), and how many
/// entities at most (`None`: all of them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageRequest {
    /// The page starts after this id.
    pub after: Option<String>,
    /// At most this many entities (1 to [`MAX_PAGE`]).
    pub limit: Option<usize>,
}

impl PageRequest {
    /// Every entity from the start.
    pub fn all() -> PageRequest {
        PageRequest::default()
    }

    /// How many entities to look for: one more than the page holds, to know whether
    /// the listing goes on.
    fn want(&self) -> usize {
        self.limit.map_or(usize::MAX, |l| l.saturating_add(1))
    }

    /// The page of `found` (at most [`PageRequest::want`] entities): `next` is set when
    /// there was one more than the page holds.
    fn finish<T>(&self, mut found: Vec<(String, T)>) -> Page<T> {
        let next = match self.limit {
            Some(limit) if found.len() > limit => {
                found.truncate(limit);
                found.last().map(|(id, _)| id.clone())
            }
            _ => None,
        };
        Page {
            items: found.into_iter().map(|(_, t)| t).collect(),
            next,
        }
    }

    /// Keys per ranged read: the page's size when every key counts, else a batch.
    fn batch(&self, filtered: bool) -> usize {
        match self.limit {
            Some(limit) if !filtered => limit + 1,
            _ => SCAN_BATCH,
        }
    }
}

/// What `GET /guests` keeps (every given field must match).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GuestFilter {
    /// Placed on this hypervisor (read through its guest links).
    pub hypervisor: Option<String>,
    /// On this network.
    pub network: Option<String>,
    /// With an address in this subnet.
    pub subnet: Option<String>,
    /// Of this flavor.
    pub flavor: Option<String>,
    /// In this firewall group.
    pub fwgroup: Option<String>,
}

impl GuestFilter {
    /// Whether `guest` matches every given field.
    pub fn matches(&self, guest: &Guest) -> bool {
        let is = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        is(&self.hypervisor, &guest.hypervisor)
            && is(&self.network, &guest.network)
            && is(&self.subnet, &guest.subnet)
            && is(&self.flavor, &guest.flavor)
            && is(&self.fwgroup, &guest.fwgroup)
    }

    fn is_empty(&self) -> bool {
        *self == GuestFilter::default()
    }

    /// The filter with every id lower-cased; [`Error::InvalidUuid`] for one that is not
    /// a UUID.
    pub fn canonical(&self) -> Result<GuestFilter> {
        let c = |v: &Option<String>| v.as_deref().map(canonicalize).transpose();
        Ok(GuestFilter {
            hypervisor: c(&self.hypervisor)?,
            network: c(&self.network)?,
            subnet: c(&self.subnet)?,
            flavor: c(&self.flavor)?,
            fwgroup: c(&self.fwgroup)?,
        })
    }
}

/// What `GET /hypervisors` keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HypervisorFilter {
    /// Alive (a heartbeat key is present) or not.
    pub alive: Option<bool>,
    /// Linked to this subnet.
    pub subnet: Option<String>,
}

impl HypervisorFilter {
    fn is_empty(&self) -> bool {
        *self == HypervisorFilter::default()
    }
}

/// The etcd key a listing of `family` starts at after entity `id`: past every key of
/// `id`'s tree (`<family><id>/…`), at the first id that sorts after it.
fn after_tree(ctx: &Context, family: &str, id: &str) -> Vec<u8> {
    ctx.abs(&format!("{family}{id}0")).into_bytes()
}

/// The etcd key just after `key`.
fn after_key(key: &[u8]) -> Vec<u8> {
    let mut next = key.to_vec();
    next.push(0);
    next
}

/// The end of the range of every key under `prefix` (which ends in `/`).
fn prefix_end(ctx: &Context, prefix: &str) -> Vec<u8> {
    let mut end = ctx.abs(prefix).into_bytes();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    end
}

/// The id space a bound is taken in: the value of an id's first 8 hex digits.
const ID_SPACE: u64 = 1 << 32;

/// The stretch of the id space a family's first read spans, before anything is known of
/// the family (a sixteenth: an empty family takes two reads).
const FIRST_WIDTH: u64 = ID_SPACE / 16;

/// What a context has learnt of its families' density: per family, the width of id space
/// its last read was planned to span; and whether reads are bounded at all.
#[derive(Debug, Default)]
struct RangeWidths {
    widths: Mutex<HashMap<String, u64>>,
    unbounded: AtomicBool,
}

/// The ranged reads of one family, each ending at a bound in the id space (see the
/// module's documentation).
struct Ranges {
    family: Vec<u8>,
    end: Vec<u8>,
    name: String,
    width: u64,
    bounded: bool,
    learnt: Arc<RangeWidths>,
}

impl Ranges {
    fn of(ctx: &Context, family: &str) -> Ranges {
        let learnt = ctx.local::<RangeWidths>();
        let width = learnt
            .widths
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(family)
            .copied()
            .unwrap_or(FIRST_WIDTH);
        Ranges {
            family: ctx.abs(family).into_bytes(),
            end: prefix_end(ctx, family),
            name: family.to_string(),
            width,
            bounded: !learnt.unbounded.load(Ordering::Relaxed),
            learnt,
        }
    }

    /// Where in the id space `at` lies: its id's first 8 hex digits (`0` at the family's
    /// start); `None` when they are not 8 lower-case hex digits.
    fn position(&self, at: &[u8]) -> Option<u64> {
        let id = at.strip_prefix(self.family.as_slice())?;
        if id.is_empty() {
            return Some(0);
        }
        id.get(..8)?.iter().try_fold(0u64, |n, b| {
            let digit = match b {
                b'0'..=b'9' => b - b'0',
                b'a'..=b'f' => b - b'a' + 10,
                _ => return None,
            };
            Some(n << 4 | u64::from(digit))
        })
    }

    /// The end of the read that starts at `from`, with the stretch of id space it spans
    /// (`None`: to the family's end, from a place that is not in the id space).
    fn bound(&self, from: &[u8]) -> (Vec<u8>, Option<u64>) {
        let position = if self.bounded {
            self.position(from)
        } else {
            None
        };
        match position {
            Some(p) if p + self.width < ID_SPACE => {
                let mut end = self.family.clone();
                end.extend(format!("{:08x}", p + self.width).bytes());
                (end, Some(self.width))
            }
            Some(p) => (self.end.clone(), Some(ID_SPACE - p)),
            None => (self.end.clone(), None),
        }
    }

    /// Whether `end` is the family's end (nothing follows a read that ends there).
    fn is_last(&self, end: &[u8]) -> bool {
        end == self.end.as_slice()
    }

    /// Plans the next read from the last one, which spanned `span` and held `count` keys
    /// (etcd's count: every key of its range), so that it holds about `want` keys.
    fn learn(&mut self, span: Option<u64>, count: i64, want: usize) {
        let Some(span) = span else { return };
        let width = match u128::try_from(count) {
            Ok(count) if count > 0 => u128::from(span) * (want as u128) * 5 / 4 / count,
            _ => u128::from(span) * 16,
        };
        self.width = u64::try_from(width).unwrap_or(ID_SPACE).clamp(1, ID_SPACE);
        self.learnt
            .widths
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(self.name.clone(), self.width);
    }
}

/// Calls `f` and logs (skipping the entry) when the entry is broken.
fn decoded<T>(key: &str, built: Result<T>) -> Option<T> {
    match built {
        Ok(t) => Some(t),
        Err(e) => {
            tracing::warn!(entry = %key, error = %e, "skipping broken entry");
            None
        }
    }
}

impl Context {
    /// Whether listings bound each ranged read in the id space (the default; see the
    /// module [`crate::page`]). Turned off, each read runs to the family's end: the same
    /// pages, for comparing the two in one benchmark run or test.
    pub fn set_bounded_reads(&self, bounded: bool) {
        self.local::<RangeWidths>()
            .unbounded
            .store(!bounded, Ordering::Relaxed);
    }

    /// How many keys there are under `prefix` (a count-only read: no key is sent).
    pub async fn count_keys(&self, prefix: &str) -> Result<u64> {
        let resp = self
            .kv()
            .get(
                self.abs(prefix),
                Some(GetOptions::new().with_prefix().with_count_only()),
            )
            .await?;
        Ok(u64::try_from(resp.count()).unwrap_or(0))
    }

    /// The store's current revision (a count-only read of one key).
    pub(crate) async fn current_revision(&self) -> Result<i64> {
        let resp = self
            .kv()
            .get(
                self.abs(keys::ROOT),
                Some(GetOptions::new().with_count_only()),
            )
            .await?;
        Ok(resp.header().map(|h| h.revision()).unwrap_or_default())
    }

    /// The `metadata` entries under `family` in key order, from after entity `after` on,
    /// in ranged reads of `batch` keys, each built by `build` (`None`: not taken), until
    /// `want` are taken or the family ends.
    async fn scan_metadata<T>(
        &self,
        family: &str,
        after: Option<&str>,
        want: usize,
        batch: usize,
        mut build: impl FnMut(&str, Kv) -> Option<T>,
    ) -> Result<Vec<(String, T)>> {
        let mut out = Vec::new();
        if want == 0 {
            return Ok(out);
        }
        let mut ranges = Ranges::of(self, family);
        let mut cursor = match after {
            Some(id) => after_tree(self, family, id),
            None => self.abs(family).into_bytes(),
        };
        let batch = batch.clamp(1, MAX_PAGE + 1);
        let limit = i64::try_from(batch).unwrap_or(1);
        loop {
            let (end, span) = ranges.bound(&cursor);
            let resp = self
                .kv()
                .get(
                    cursor.clone(),
                    Some(GetOptions::new().with_range(end.clone()).with_limit(limit)),
                )
                .await?;
            ranges.learn(span, resp.count(), batch);
            for raw in resp.kvs() {
                let Some(kv) = self.to_kv(raw) else { continue };
                let Some(rest) = kv.key.strip_prefix(family) else {
                    continue;
                };
                let (id, tail) = keys::split_id(rest);
                if tail != keys::METADATA {
                    continue;
                }
                let id = id.to_string();
                if let Some(t) = build(&id, kv) {
                    out.push((id, t));
                    if out.len() >= want {
                        return Ok(out);
                    }
                }
            }
            match resp.kvs().last() {
                Some(last) if resp.more() => cursor = after_key(last.key()),
                _ if ranges.is_last(&end) => return Ok(out),
                _ => cursor = end,
            }
        }
    }

    /// The next ids under `family` from `cursor` on (at least `want` when the family has
    /// them), with keys-only reads that jump past each id's tree once the id is known.
    /// `cursor` is moved past the ids returned; `true` when the family ended.
    async fn next_ids(
        &self,
        family: &str,
        cursor: &mut Vec<u8>,
        want: usize,
    ) -> Result<(Vec<String>, bool)> {
        let mut ranges = Ranges::of(self, family);
        let mut ids: Vec<String> = Vec::new();
        while ids.len() < want {
            let (end, span) = ranges.bound(cursor);
            let resp = self
                .kv()
                .get(
                    cursor.clone(),
                    Some(
                        GetOptions::new()
                            .with_range(end.clone())
                            .with_keys_only()
                            .with_limit(ID_BATCH as i64),
                    ),
                )
                .await?;
            ranges.learn(span, resp.count(), ID_BATCH);
            for raw in resp.kvs() {
                let Some(rel) = std::str::from_utf8(raw.key())
                    .ok()
                    .and_then(|k| self.rel(k))
                else {
                    continue;
                };
                let Some(rest) = rel.strip_prefix(family) else {
                    continue;
                };
                let (id, _) = keys::split_id(rest);
                if ids.last().map(String::as_str) != Some(id) {
                    ids.push(id.to_string());
                }
            }
            match ids.last() {
                Some(last) if resp.more() => *cursor = after_tree(self, family, last),
                _ if ranges.is_last(&end) => return Ok((ids, true)),
                _ => *cursor = end,
            }
        }
        Ok((ids, false))
    }

    /// For each id, the values of the keys `keys_of(id)` names, read with read-only
    /// transactions of gets (run concurrently); per id, one `Option<Kv>` per key.
    async fn get_each(
        &self,
        ids: &[String],
        keys_of: impl Fn(&str) -> Vec<String>,
    ) -> Result<Vec<Vec<Option<Kv>>>> {
        let per = keys_of("x").len().max(1);
        let chunks: Vec<&[String]> = ids.chunks(GETS_PER_TXN).collect();
        let reads = chunks.iter().map(|chunk| {
            let ops: Vec<TxnOp> = chunk
                .iter()
                .flat_map(|id| keys_of(id).into_iter().map(|k| self.op_get(&k)))
                .collect();
            let ctx = self.clone();
            async move { ctx.txn(Txn::new().and_then(ops)).await }
        });
        let responses = try_join_all(reads).await?;
        let mut out = Vec::with_capacity(ids.len());
        for (chunk, resp) in chunks.iter().zip(responses) {
            let r = resp.op_responses();
            for i in 0..chunk.len() {
                out.push(
                    (0..per)
                        .map(|k| txn_get(self, &r, i * per + k).into_iter().next())
                        .collect(),
                );
            }
        }
        Ok(out)
    }

    /// A page of guests matching `filter` (ids in the filter must be lower-case: see
    /// [`GuestFilter::canonical`]). With `filter.hypervisor`, the hypervisor's guest
    /// links are read, then those guests; otherwise guests are read in key order and
    /// those that do not match are passed over.
    pub async fn guests_page(
        &self,
        page: &PageRequest,
        filter: &GuestFilter,
    ) -> Result<Page<Guest>> {
        let want = page.want();
        let found = match &filter.hypervisor {
            Some(h) => {
                self.guests_of_hypervisor(h, page.after.as_deref(), want, filter)
                    .await?
            }
            None => {
                self.scan_metadata(
                    keys::GUESTS,
                    page.after.as_deref(),
                    want,
                    page.batch(!filter.is_empty()),
                    |id, kv| {
                        let g = decoded(
                            &kv.key,
                            Guest::from_stored(self, id, &kv.value, kv.mod_revision),
                        )?;
                        filter.matches(&g).then_some(g)
                    },
                )
                .await?
            }
        };
        Ok(page.finish(found))
    }

    /// The first guest (in id order) that matches `filter`, if any.
    pub async fn first_guest(&self, filter: &GuestFilter) -> Result<Option<Guest>> {
        let page = PageRequest {
            after: None,
            limit: Some(1),
        };
        let mut found = match &filter.hypervisor {
            Some(h) => self.guests_of_hypervisor(h, None, 1, filter).await?,
            None => {
                self.scan_metadata(keys::GUESTS, None, 1, page.batch(true), |id, kv| {
                    let g = decoded(
                        &kv.key,
                        Guest::from_stored(self, id, &kv.value, kv.mod_revision),
                    )?;
                    filter.matches(&g).then_some(g)
                })
                .await?
            }
        };
        Ok(found.pop().map(|(_, g)| g))
    }

    async fn guests_of_hypervisor(
        &self,
        hypervisor: &str,
        after: Option<&str>,
        want: usize,
        filter: &GuestFilter,
    ) -> Result<Vec<(String, Guest)>> {
        let prefix = keys::hypervisor_guests_prefix(hypervisor);
        let end = prefix_end(self, &prefix);
        let mut cursor = match after {
            Some(id) => after_key(self.abs(&format!("{prefix}{id}")).as_bytes()),
            None => self.abs(&prefix).into_bytes(),
        };
        let mut out = Vec::new();
        while out.len() < want {
            let batch = (want - out.len()).clamp(1, SCAN_BATCH);
            let resp = self
                .kv()
                .get(
                    cursor.clone(),
                    Some(
                        GetOptions::new()
                            .with_range(end.clone())
                            .with_keys_only()
                            .with_limit(batch as i64),
                    ),
                )
                .await?;
            let ids: Vec<String> = resp
                .kvs()
                .iter()
                .filter_map(|raw| {
                    let rel = self.rel(std::str::from_utf8(raw.key()).ok()?)?;
                    let id = rel.strip_prefix(prefix.as_str())?;
                    (!id.is_empty() && !id.contains('/')).then(|| id.to_string())
                })
                .collect();
            let values = self
                .get_each(&ids, |id| vec![keys::guest_metadata(id)])
                .await?;
            for (id, mut kvs) in ids.into_iter().zip(values) {
                let Some(kv) = kvs.pop().flatten() else {
                    tracing::warn!(hypervisor, guest = %id, "a guest link names no guest");
                    continue;
                };
                let Some(g) = decoded(
                    &kv.key,
                    Guest::from_stored(self, &id, &kv.value, kv.mod_revision),
                ) else {
                    continue;
                };
                if filter.matches(&g) {
                    out.push((id, g));
                    if out.len() >= want {
                        break;
                    }
                }
            }
            match resp.kvs().last() {
                Some(last) if resp.more() => cursor = after_key(last.key()),
                _ => break,
            }
        }
        Ok(out)
    }

    /// A page of hypervisors (metadata and liveness) matching `filter`.
    pub async fn hypervisors_page(
        &self,
        page: &PageRequest,
        filter: &HypervisorFilter,
    ) -> Result<Page<Hypervisor>> {
        let want = page.want();
        let family = keys::HYPERVISORS;
        let mut cursor = match &page.after {
            Some(id) => after_tree(self, family, id),
            None => self.abs(family).into_bytes(),
        };
        let subnet = filter.subnet.clone();
        let mut out = Vec::new();
        loop {
            let ask = if filter.is_empty() {
                want.saturating_sub(out.len())
            } else {
                ID_BATCH
            };
            let (ids, ended) = self
                .next_ids(family, &mut cursor, ask.min(MAX_PAGE + 1))
                .await?;
            let values = self
                .get_each(&ids, |id| {
                    let mut k = vec![
                        keys::hypervisor_metadata(id),
                        keys::hypervisor_heartbeat(id),
                    ];
                    if let Some(s) = &subnet {
                        k.push(keys::hypervisor_subnet(id, s));
                    }
                    k
                })
                .await?;
            for (id, kvs) in ids.into_iter().zip(values) {
                let mut items = Vec::new();
                for (name, kv) in [keys::METADATA, keys::HEARTBEAT]
                    .into_iter()
                    .map(String::from)
                    .chain(subnet.iter().map(|s| format!("{}{s}", keys::SUBNETS_DIR)))
                    .zip(kvs)
                {
                    if let Some(kv) = kv {
                        items.push((name, kv));
                    }
                }
                if !items.iter().any(|(t, _)| t == keys::METADATA) {
                    // Links without metadata: a tree the original left half deleted.
                    continue;
                }
                let Some(h) = decoded(
                    &keys::hypervisor_metadata(&id),
                    Hypervisor::from_keys(self, &id, &items),
                ) else {
                    continue;
                };
                let keep = filter.alive.is_none_or(|a| a == h.is_alive())
                    && subnet.as_ref().is_none_or(|s| h.subnets().contains_key(s));
                if keep {
                    out.push((id, h));
                    if out.len() >= want {
                        return Ok(page.finish(out));
                    }
                }
            }
            if ended {
                return Ok(page.finish(out));
            }
        }
    }

    /// A page of subnets (metadata only, no reservations).
    pub async fn subnets_page(&self, page: &PageRequest) -> Result<Page<Subnet>> {
        let want = page.want();
        let family = keys::SUBNETS;
        let mut cursor = match &page.after {
            Some(id) => after_tree(self, family, id),
            None => self.abs(family).into_bytes(),
        };
        let mut out = Vec::new();
        loop {
            let ask = want.saturating_sub(out.len()).min(MAX_PAGE + 1);
            let (ids, ended) = self.next_ids(family, &mut cursor, ask).await?;
            let values = self
                .get_each(&ids, |id| vec![keys::subnet_metadata(id)])
                .await?;
            for (id, mut kvs) in ids.into_iter().zip(values) {
                let Some(kv) = kvs.pop().flatten() else {
                    continue;
                };
                if let Some(s) = decoded(
                    &kv.key,
                    Subnet::from_stored(self, &id, &kv.value, kv.mod_revision),
                ) {
                    out.push((id, s));
                    if out.len() >= want {
                        return Ok(page.finish(out));
                    }
                }
            }
            if ended {
                return Ok(page.finish(out));
            }
        }
    }

    /// A page of flavors.
    pub async fn flavors_page(&self, page: &PageRequest) -> Result<Page<Flavor>> {
        let found = self
            .scan_metadata(
                keys::FLAVORS,
                page.after.as_deref(),
                page.want(),
                page.batch(false),
                |id, kv| {
                    decoded(
                        &kv.key,
                        Flavor::from_stored(self, id, &kv.value, kv.mod_revision),
                    )
                },
            )
            .await?;
        Ok(page.finish(found))
    }

    /// A page of firewall groups.
    pub async fn fwgroups_page(&self, page: &PageRequest) -> Result<Page<FwGroup>> {
        let found = self
            .scan_metadata(
                keys::FWGROUPS,
                page.after.as_deref(),
                page.want(),
                page.batch(false),
                |id, kv| {
                    decoded(
                        &kv.key,
                        FwGroup::from_stored(self, id, &kv.value, kv.mod_revision),
                    )
                },
            )
            .await?;
        Ok(page.finish(found))
    }

    /// A page of networks (metadata only).
    pub async fn networks_page(&self, page: &PageRequest) -> Result<Page<Network>> {
        let found = self
            .scan_metadata(
                keys::NETWORKS,
                page.after.as_deref(),
                page.want(),
                page.batch(true),
                |id, kv| {
                    let key = kv.key.clone();
                    decoded(
                        &key,
                        Network::from_keys(self, id, &[(keys::METADATA.to_string(), kv)]),
                    )
                },
            )
            .await?;
        Ok(page.finish(found))
    }

    /// A page of VLANs (metadata only), in the order of their keys (tags as text).
    pub async fn vlans_page(&self, page: &PageRequest) -> Result<Page<Vlan>> {
        let found = self
            .scan_metadata(
                keys::VLANS,
                page.after.as_deref(),
                page.want(),
                page.batch(true),
                |id, kv| {
                    let key = kv.key.clone();
                    let tag = decoded(
                        &key,
                        id.parse::<i64>()
                            .map_err(|_| Error::InvalidJson(format!("VLAN tag {id:?}"))),
                    )?;
                    decoded(
                        &key,
                        Vlan::from_keys(self, tag, &[(keys::METADATA.to_string(), kv)]),
                    )
                },
            )
            .await?;
        Ok(page.finish(found))
    }

    /// A page of VLAN groups (metadata only).
    pub async fn vlangroups_page(&self, page: &PageRequest) -> Result<Page<VlanGroup>> {
        let found = self
            .scan_metadata(
                keys::VLANGROUPS,
                page.after.as_deref(),
                page.want(),
                page.batch(true),
                |id, kv| {
                    let key = kv.key.clone();
                    decoded(
                        &key,
                        VlanGroup::from_keys(self, id, &[(keys::METADATA.to_string(), kv)]),
                    )
                },
            )
            .await?;
        Ok(page.finish(found))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_is_cut_at_its_limit_and_names_its_last_id() {
        let page = PageRequest {
            after: None,
            limit: Some(2),
        };
        assert_eq!(page.want(), 3);
        let p = page.finish(vec![("a".to_string(), 1), ("b".into(), 2), ("c".into(), 3)]);
        assert_eq!(p.items, [1, 2]);
        assert_eq!(p.next.as_deref(), Some("b"));
        let p = page.finish(vec![("a".to_string(), 1), ("b".into(), 2)]);
        assert_eq!(p.items, [1, 2]);
        assert_eq!(p.next, None);
        let all = PageRequest::all();
        assert_eq!(all.want(), usize::MAX);
        assert_eq!(all.finish(vec![("a".to_string(), 1)]).next, None);
    }

    fn ranges(width: u64, bounded: bool) -> Ranges {
        Ranges {
            family: b"p/guests/".to_vec(),
            end: b"p/guests0".to_vec(),
            name: "guests/".into(),
            width,
            bounded,
            learnt: Arc::default(),
        }
    }

    #[test]
    fn reads_end_at_a_bound_in_the_id_space() {
        let r = ranges(0x1000_0000, true);
        assert_eq!(r.position(b"p/guests/"), Some(0));
        assert_eq!(
            r.position(b"p/guests/0a1b2c3d-1111-4111-8111-000000000001/metadata"),
            Some(0x0a1b_2c3d)
        );
        assert_eq!(r.position(b"p/guests/ffffffff0"), Some(0xffff_ffff));
        // Not 8 lower-case hex digits: no place in the id space.
        assert_eq!(r.position(b"p/guests/0A1B2C3D-x"), None);
        assert_eq!(r.position(b"p/guests/abc"), None);
        assert_eq!(r.position(b"p/other/0a1b2c3d"), None);
        assert_eq!(
            r.bound(b"p/guests/0a1b2c3d-1111-4111-8111-000000000001/metadata\0"),
            (b"p/guests/1a1b2c3d".to_vec(), Some(0x1000_0000))
        );
        let (end, span) = r.bound(b"p/guests/f8000000");
        assert!(r.is_last(&end), "past the id space: the family's end");
        assert_eq!(span, Some(0x0800_0000));
        assert_eq!(r.bound(b"p/guests/zz"), (b"p/guests0".to_vec(), None));
        // A bound sorts after every key of the ids before it and before every key of
        // the ids from it on, so no id's tree is split.
        let (end, _) = r.bound(b"p/guests/");
        assert!(b"p/guests/0fffffff-ffff/metadata".as_slice() < end.as_slice());
        assert!(end.as_slice() <= b"p/guests/10000000-0000/metadata".as_slice());
        let off = ranges(0x1000_0000, false);
        assert_eq!(off.bound(b"p/guests/"), (b"p/guests0".to_vec(), None));
    }

    #[test]
    fn the_next_read_is_sized_from_the_keys_the_last_one_held() {
        let mut r = ranges(1 << 28, true);
        // 2,000 keys over 2^28: 1,001 wanted (with a quarter more) is 5/32 of that.
        r.learn(Some(1 << 28), 2000, 1001);
        assert_eq!(r.width, (1u64 << 28) * 1001 * 5 / 4 / 2000);
        assert_eq!(
            r.learnt.widths.lock().unwrap().get("guests/").copied(),
            Some(r.width),
            "kept for the family's next listing"
        );
        // Nothing there: sixteen times wider, up to the whole space.
        let mut r = ranges(1 << 28, true);
        r.learn(Some(1 << 28), 0, 1001);
        assert_eq!(r.width, ID_SPACE);
        r.learn(Some(ID_SPACE), 0, 1001);
        assert_eq!(r.width, ID_SPACE);
        // Dense: never below one.
        r.learn(Some(1), 1_000_000, 1);
        assert_eq!(r.width, 1);
        // A read to the family's end from outside the id space teaches nothing.
        r.learn(None, 5, 1001);
        assert_eq!(r.width, 1);
    }

    #[test]
    fn guest_filters_need_uuids() {
        let f = GuestFilter {
            network: Some("AAAA0001-1111-4111-8111-000000000001".into()),
            ..GuestFilter::default()
        };
        assert_eq!(
            f.canonical().unwrap().network.as_deref(),
            Some("aaaa0001-1111-4111-8111-000000000001")
        );
        let bad = GuestFilter {
            flavor: Some("x".into()),
            ..GuestFilter::default()
        };
        assert!(matches!(bad.canonical(), Err(Error::InvalidUuid(_))));
    }
}
