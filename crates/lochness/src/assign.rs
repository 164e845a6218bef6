//! Placing a guest on a hypervisor and undoing it, each in one etcd transaction:
//! [`Hypervisor::add_guest`] reserves an address, adds the flavor's resources to the
//! hypervisor's `allocated` key, links the guest and saves the placed guest;
//! [`Hypervisor::remove_guest`] and [`Guest::destroy`] give them back (the original wrote
//! these keys one after the other, without rollback, and never accounted resources; see
//! docs/compat.md, section "lochness").
//!
//! Resources: a guest fits when its flavor is within both `total_resources − allocated`
//! and the reported `available_resources` ([`Hypervisor::fits`]). The transactions
//! compare the `allocated` key's revision, never the hypervisor's metadata, which they
//! neither write nor compare beyond its presence: heartbeats and operators' edits of the
//! metadata do not make placements retry (the total and reported figures checked are
//! those of the caller's copy, or of the fresh read made after a lost race). When
//! `allocated` does not exist yet (a store written by the Go library), it is first built
//! from the guests linked to the hypervisor and their flavors.

use std::collections::{BTreeSet, HashSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicUsize, Ordering};

use etcd_client::{Compare, Txn, TxnOp, TxnOpResponse};
use rand::seq::SliceRandom;
use tokio::sync::oneshot;

use crate::context::{backoff, revision, txn_get, Context, Guard, Kv, MAX_ATTEMPTS};
use crate::error::{Error, Result};
use crate::flavor::{Flavor, FlavorCache, Resources};
use crate::guest::Guest;
use crate::hypervisor::{ensure_allocated, Hypervisor};
use crate::keys;
use crate::subnet::{
    ensure_index, release_block_ops, release_reads, AllocCache, AllocState, Subnet,
};

impl Guest {
    /// Deletes the guest. A placed guest is removed from its hypervisor and its address
    /// released in the same transaction.
    pub async fn destroy(&mut self) -> Result<()> {
        if self.revision() == 0 {
            return Err(Error::Invalid("not persisted".into()));
        }
        unplace(&self.context().clone(), self, true).await?;
        Ok(())
    }
}

/// What [`Hypervisor::add_guest`] reads, in one read-only transaction (and again in the
/// failure branch of its write).
struct PlacementReads {
    ops: Vec<TxnOp>,
}

const R_NETWORK: usize = 0;
const R_HYPERVISOR: usize = 1;
const R_ALLOCATED: usize = 2;
const R_GUEST: usize = 3;
const R_FLAVOR: usize = 4;
const R_SUBNETS: usize = 5;
/// Reads per subnet from [`R_SUBNETS`] on: [`Subnet::read_ops`] (three), then the link.
const PER_SUBNET: usize = 4;

impl PlacementReads {
    fn new(ctx: &Context, h: &str, g: &Guest, sids: &[(String, String)]) -> PlacementReads {
        let mut ops = vec![
            ctx.op_get_prefix(&keys::network_prefix(&g.network)),
            ctx.op_get(&keys::hypervisor_metadata(h)),
            ctx.op_get(&keys::hypervisor_allocated(h)),
            ctx.op_get(&keys::guest_metadata(&g.id)),
            ctx.op_get(&keys::flavor_metadata(&g.flavor)),
        ];
        for (sid, _) in sids {
            ops.extend(Subnet::read_ops(ctx, sid));
            ops.push(ctx.op_get(&keys::hypervisor_subnet(h, sid)));
        }
        PlacementReads { ops }
    }

    /// Runs the reads: their answers, and the revision they were read at.
    async fn fetch(&self, ctx: &Context) -> Result<(Vec<TxnOpResponse>, i64)> {
        let resp = ctx.txn(Txn::new().and_then(self.ops.clone())).await?;
        let at = revision(&resp);
        Ok((resp.op_responses(), at))
    }
}

impl Hypervisor {
    /// Places `guest` here in one transaction: reserves the lowest free address in a
    /// subnet of the guest's network that this hypervisor has (updating the subnet's
    /// allocation index), adds the guest's flavor to this hypervisor's `allocated` figure,
    /// links the guest to the hypervisor, and saves the guest with its hypervisor,
    /// subnet, IP and bridge (created if it was never saved). Either every key changes or
    /// none does; lost races on the shared index or on `allocated` are retried with fresh
    /// state (bounded). A guest changed by someone else since it was read is a
    /// [`Error::Conflict`]; a flavor that does not fit ([`Hypervisor::fits`]: within both
    /// `total_resources − allocated` and `available_resources`) is
    /// [`Error::InsufficientResources`]. The hypervisor's metadata is not written (it must
    /// exist).
    pub async fn add_guest(&mut self, guest: &mut Guest) -> Result<()> {
        self.add_guest_with(guest, &Guard::default()).await
    }

    /// [`Hypervisor::add_guest`] with `guard`'s compares and operations in the placement
    /// transaction (a placer's hand-over of its job): the guest is placed only if they
    /// hold, and then they are written with it. When they no longer hold, nothing is
    /// written and the answer is [`Error::ClaimLost`].
    pub async fn add_guest_with(&mut self, guest: &mut Guest, guard: &Guard) -> Result<()> {
        guest.validate()?;
        guest.canonicalize_refs()?;
        if !guest.hypervisor.is_empty() {
            return Err(Error::Refused(format!(
                "guest {} is already placed on hypervisor {}",
                guest.id, guest.hypervisor
            )));
        }
        let ctx = self.context().clone();
        let (allocs, flavors) = (AllocCache::of(&ctx), FlavorCache::of(&ctx));
        let sids: Vec<(String, String)> = self
            .subnets()
            .iter()
            .map(|(s, b)| (s.clone(), b.clone()))
            .collect();
        if sids.is_empty() {
            return Err(Error::NoSuitableSubnet);
        }
        let reads = PlacementReads::new(&ctx, &self.id, guest, &sids);
        // Fresh read results; `None` while we work from what this context already knows
        // (the compares of the write catch anything stale, and its failure branch brings
        // the fresh reads).
        let mut resp: Option<(Vec<TxnOpResponse>, i64)> = None;
        let mut foreign: Vec<(usize, u32)> = Vec::new();
        for attempt in 0..MAX_ATTEMPTS {
            // Subnets of the guest's network this hypervisor (still) has: (index, bridge).
            let mut usable: Vec<(usize, String)> = Vec::new();
            let mut matching = false;
            match &resp {
                None => {
                    // Only with a known `allocated` figure (the compare on its revision
                    // catches a stale one); otherwise read it (building it if needed).
                    let host = self.stored_metadata()?;
                    let fits = host.allocated_state().is_some()
                        && flavors
                            .get(&guest.flavor)
                            .is_some_and(|need| host.fits(&need));
                    for (i, (sid, bridge)) in sids.iter().enumerate() {
                        if !fits {
                            break;
                        }
                        match allocs.get(sid) {
                            Some(state) if state.subnet.network == guest.network => {
                                matching = true;
                                if state.pick().is_some() {
                                    usable.push((i, bridge.clone()));
                                }
                            }
                            Some(_) => {}
                            None => {
                                usable.clear();
                                break;
                            }
                        }
                    }
                    if usable.is_empty() {
                        resp = Some(reads.fetch(&ctx).await?);
                        continue;
                    }
                }
                Some((r, at)) => {
                    let net = txn_get(&ctx, r, R_NETWORK);
                    let net_meta = keys::network_metadata(&guest.network);
                    if !net.iter().any(|kv| kv.key == net_meta) {
                        return Err(Error::NotFound(net_meta));
                    }
                    let Some(hkv) = txn_get(&ctx, r, R_HYPERVISOR).into_iter().next() else {
                        return Err(Error::NotFound(keys::hypervisor_metadata(&self.id)));
                    };
                    let Some(fkv) = txn_get(&ctx, r, R_FLAVOR).into_iter().next() else {
                        return Err(Error::NotFound(keys::flavor_metadata(&guest.flavor)));
                    };
                    let need =
                        Flavor::from_stored(&ctx, &guest.flavor, &fkv.value, fkv.mod_revision)?
                            .resources;
                    flavors.put(&guest.flavor, need);
                    let fresh = Hypervisor::from_keys(
                        &ctx,
                        &self.id,
                        &[(keys::METADATA.to_string(), hkv)],
                    )?;
                    self.take_stored(&fresh);
                    match txn_get(&ctx, r, R_ALLOCATED).into_iter().next() {
                        Some(kv) => self.apply_allocated(Some(&kv.value), kv.mod_revision),
                        None => self.set_allocated(None, 0),
                    }
                    if self.allocated_state().is_none() {
                        // A store that predates the key: build it from the linked guests.
                        match ensure_allocated(&ctx, &self.id).await? {
                            Some((figure, rev)) => self.set_allocated(Some(figure), rev),
                            None => {
                                return Err(Error::NotFound(keys::hypervisor_metadata(&self.id)))
                            }
                        }
                    }
                    if !self.fits(&need) {
                        return Err(Error::InsufficientResources(self.id.clone()));
                    }
                    let stored_rev = txn_get(&ctx, r, R_GUEST)
                        .first()
                        .map(|kv| kv.mod_revision)
                        .unwrap_or(0);
                    if stored_rev != guest.revision() {
                        return Err(Error::Conflict(format!(
                            "guest {} was changed since it was read",
                            guest.id
                        )));
                    }
                    for (i, (sid, _)) in sids.iter().enumerate() {
                        let base = R_SUBNETS + PER_SUBNET * i;
                        let Some(link) = txn_get(&ctx, r, base + 3).into_iter().next() else {
                            self.drop_subnet(sid);
                            continue;
                        };
                        let net_link = keys::network_subnet(&guest.network, sid);
                        if !net.iter().any(|kv| kv.key == net_link) {
                            continue;
                        }
                        let Some(state) = AllocState::from_responses(&ctx, sid, r, base).await?
                        else {
                            continue;
                        };
                        let state = state.seen_at(*at);
                        matching = true;
                        let mut state = state;
                        for (fi, ip) in &foreign {
                            if *fi == i {
                                state.index.insert(*ip);
                            }
                        }
                        let free = state.pick().is_some();
                        allocs.put(state);
                        if free {
                            usable.push((i, link.text()));
                        }
                    }
                }
            }
            if usable.is_empty() {
                return Err(if matching {
                    Error::NoAvailableAddresses
                } else {
                    Error::NoSuitableSubnet
                });
            }
            usable.shuffle(&mut rand::rng());
            let Some((i, bridge)) = usable.into_iter().next() else {
                return Err(Error::NoSuitableSubnet);
            };
            let sid = &sids[i].0;
            let Some(need) = flavors.get(&guest.flavor) else {
                resp = None;
                continue;
            };
            let host = self.stored_metadata()?;
            let Some((allocated, allocated_rev)) =
                host.allocated_state().filter(|_| host.fits(&need))
            else {
                resp = Some(reads.fetch(&ctx).await?);
                continue;
            };
            let allocated = allocated.saturating_add(&need);
            let mut placed = guest.clone();
            placed.hypervisor = self.id.clone();
            placed.subnet = sid.clone();
            placed.bridge = bridge.clone();
            let gkey = keys::guest_metadata(&guest.id);
            let akey = keys::hypervisor_allocated(&self.id);
            let link = keys::hypervisor_guest(&self.id, &guest.id);
            let mut cmps = vec![
                ctx.cmp_present(&keys::network_subnet(&guest.network, sid)),
                ctx.cmp_value(&keys::hypervisor_subnet(&self.id, sid), &bridge),
                ctx.cmp_present(&keys::hypervisor_metadata(&self.id)),
                ctx.cmp_rev(&akey, allocated_rev),
                ctx.cmp_present(&keys::flavor_metadata(&guest.flavor)),
                ctx.cmp_rev(&gkey, guest.revision()),
                ctx.cmp_absent(&link),
            ];
            cmps.extend(guard.compares.iter().cloned());
            let mut ops = vec![
                ctx.op_put(&link, guest.id.as_str()),
                ctx.op_put(&akey, allocated.to_json()),
            ];
            ops.extend(guard.ops.iter().cloned());
            let pending = Pending {
                hypervisor: self.id.clone(),
                allocated_rev,
                placed,
                cmps,
                ops,
            };
            match SubnetTurns::of(&ctx)
                .turn(sid)
                .submit(&ctx, &allocs, sid, pending)
                .await
            {
                Committed::Placed { guest: placed } => {
                    let rev = placed.revision();
                    *guest = *placed;
                    self.set_allocated(Some(allocated), rev);
                    self.push_guest(&guest.id);
                    return Ok(());
                }
                Committed::Failed(e) => return Err(e),
                Committed::Unknown | Committed::Retry => resp = None,
                Committed::Again => {
                    resp = None;
                    backoff(attempt).await;
                }
                Committed::Full => {
                    resp = Some(reads.fetch(&ctx).await?);
                }
                Committed::Lost { ip, foreign: taken } => {
                    if !guard.holds(&ctx).await? {
                        return Err(Error::ClaimLost(format!(
                            "placing guest {}: the guard no longer holds",
                            guest.id
                        )));
                    }
                    if taken {
                        foreign.push((i, ip));
                    }
                    resp = Some(reads.fetch(&ctx).await?);
                    tracing::debug!(guest = %guest.id, attempt, "add_guest lost a race, retrying");
                    backoff(attempt).await;
                }
            }
        }
        Err(Error::TooManyConflicts {
            what: format!("add guest {} to hypervisor {}", guest.id, self.id),
            attempts: MAX_ATTEMPTS,
        })
    }

    /// Removes `guest` from this hypervisor in one transaction: releases the guest's own
    /// address (only if the reservation is still the guest's), updates the index,
    /// subtracts the guest's flavor from `allocated` (floored at zero), deletes the link
    /// and clears the guest's placement fields (compare-and-swap on the guest).
    pub async fn remove_guest(&mut self, guest: &mut Guest) -> Result<()> {
        if guest.hypervisor != self.id {
            return Err(Error::Refused("guest does not belong to hypervisor".into()));
        }
        if let Some((figure, rev)) = unplace(&self.context().clone(), guest, false).await? {
            self.set_allocated(Some(figure), rev);
        }
        self.drop_guest(&guest.id);
        Ok(())
    }
}

/// Undoes a placement (and deletes the guest when `destroy`), atomically. Returns the
/// hypervisor's `allocated` figure and its revision as written, when it was updated.
async fn unplace(
    ctx: &Context,
    guest: &mut Guest,
    destroy: bool,
) -> Result<Option<(Resources, i64)>> {
    let gkey = keys::guest_metadata(&guest.id);
    let placed = !guest.hypervisor.is_empty();
    let akey = keys::hypervisor_allocated(&guest.hypervisor);
    let addr = match (&guest.ip, guest.subnet.is_empty()) {
        (Some(IpAddr::V4(ip)), false) => Some((keys::subnet_address(&guest.subnet, *ip), *ip)),
        _ => None,
    };
    for attempt in 0..MAX_ATTEMPTS {
        let mut reads = vec![
            ctx.op_get(&gkey),
            ctx.op_get(&akey),
            ctx.op_get(&keys::hypervisor_metadata(&guest.hypervisor)),
            ctx.op_get(&keys::flavor_metadata(&guest.flavor)),
        ];
        if let Some((a, ip)) = &addr {
            reads.push(ctx.op_get(a));
            reads.extend(release_reads(ctx, &guest.subnet, *ip));
        }
        let r: Vec<TxnOpResponse> = ctx.txn(Txn::new().and_then(reads)).await?.op_responses();
        let stored: Option<Kv> = txn_get(ctx, &r, 0).into_iter().next();
        if stored.as_ref().map(|kv| kv.mod_revision).unwrap_or(0) != guest.revision() {
            return Err(Error::Conflict(format!(
                "guest {} was changed since it was read",
                guest.id
            )));
        }
        let mut cmps: Vec<Compare> = vec![ctx.cmp_rev(&gkey, guest.revision())];
        let mut ops: Vec<TxnOp> = Vec::new();
        // Give the flavor's resources back: subtract them from `allocated`.
        let mut allocated = None;
        if placed {
            ops.push(ctx.op_delete(&keys::hypervisor_guest(&guest.hypervisor, &guest.id)));
            let akv = txn_get(ctx, &r, 1).into_iter().next();
            let figure = akv
                .as_ref()
                .and_then(|kv| Resources::from_json(&kv.value).ok());
            match (akv, figure) {
                (Some(kv), Some(figure)) => {
                    let need = match txn_get(ctx, &r, 3).into_iter().next().map(|kv| {
                        Flavor::from_stored(ctx, &guest.flavor, &kv.value, kv.mod_revision)
                    }) {
                        Some(Ok(flavor)) => flavor.resources,
                        other => {
                            tracing::warn!(
                                guest = %guest.id,
                                flavor = %guest.flavor,
                                error = ?other.and_then(|r| r.err()).map(|e| e.to_string()),
                                "the guest's flavor is unreadable or gone: nothing is subtracted from allocated"
                            );
                            Resources::default()
                        }
                    };
                    let next = figure.saturating_sub(&need);
                    cmps.push(ctx.cmp_rev(&akey, kv.mod_revision));
                    ops.push(ctx.op_put(&akey, next.to_json()));
                    allocated = Some(next);
                }
                (_, _) if !txn_get(ctx, &r, 2).is_empty() => {
                    // Absent or unreadable (a store that predates it): build it from the
                    // linked guests, this one included, then subtract.
                    ensure_allocated(ctx, &guest.hypervisor).await?;
                    continue;
                }
                (akv, _) => {
                    // The hypervisor is gone: there is nothing left to account.
                    cmps.push(ctx.cmp_rev(&akey, akv.map_or(0, |kv| kv.mod_revision)));
                }
            }
        }
        if let Some((a, ip)) = &addr {
            if let Some(held) = txn_get(ctx, &r, 4).into_iter().next() {
                if held.text() == guest.id {
                    cmps.push(ctx.cmp_rev(a, held.mod_revision));
                    ops.push(ctx.op_delete(a));
                    match release_block_ops(ctx, &guest.subnet, *ip, &r, 5, &mut ops) {
                        Some(mut c) => cmps.append(&mut c),
                        None => {
                            ensure_index(ctx, &guest.subnet).await?;
                            continue;
                        }
                    }
                }
            }
        }
        let mut cleared = guest.clone();
        cleared.hypervisor.clear();
        cleared.subnet.clear();
        cleared.ip = None;
        cleared.bridge.clear();
        if destroy {
            ops.push(ctx.op_delete_prefix(&keys::guest_prefix(&guest.id)));
        } else {
            ops.push(ctx.op_put(&gkey, cleared.to_json()));
        }
        let resp = ctx.commit(Txn::new().when(cmps).and_then(ops)).await?;
        if resp.succeeded() {
            let rev = revision(&resp);
            cleared.set_revision(if destroy { 0 } else { rev });
            *guest = cleared;
            return Ok(allocated.map(|a| (a, rev)));
        }
        backoff(attempt).await;
    }
    Err(Error::TooManyConflicts {
        what: format!("remove guest {}", guest.id),
        attempts: MAX_ATTEMPTS,
    })
}

/// etcd's default limit of compares, and of operations, in one transaction
/// (`--max-txn-ops`).
const MAX_TXN_OPS: usize = 128;

/// A placement waiting for its subnet's next transaction ([`SubnetTurn`]): everything
/// but the address, which the transaction's leader picks.
pub(crate) struct Pending {
    /// The hypervisor: one placement per hypervisor and transaction (each rewrites its
    /// `allocated` key).
    hypervisor: String,
    /// The revision of its `allocated` key the placement was computed from.
    allocated_rev: i64,
    /// The guest as placed, without its address (at the revision it was read).
    placed: Guest,
    /// Its compares, besides the subnet's and the address's.
    cmps: Vec<Compare>,
    /// Its writes, besides the subnet's index, the address and the guest.
    ops: Vec<TxnOp>,
}

/// What became of a [`Pending`] placement.
pub(crate) enum Committed {
    /// Written: the guest as stored (address and revision set).
    Placed {
        /// The placed guest.
        guest: Box<Guest>,
    },
    /// The subnet has no free address left, as this process knows it.
    Full,
    /// This process knows no state of the subnet: read it.
    Unknown,
    /// The transaction failed a compare that is this placement's own (its guest or its
    /// hypervisor's `allocated` changed, its address was taken), or one nobody could
    /// tell (a guard's): nothing was written. `foreign`: the address was taken outside
    /// the index.
    Lost {
        /// The address it was given.
        ip: u32,
        /// Whether someone else holds that address.
        foreign: bool,
    },
    /// The transaction failed for someone else (another member's compare, or the
    /// subnet's index moved on: this process now knows it as it is): place again.
    Retry,
    /// The transaction's outcome is unknown to this placement (its leader stopped, or
    /// etcd failed another member's way): try again; the compares make a retry safe.
    Again,
    /// etcd failed.
    Failed(Error),
}

/// Group commit of one subnet's placements within a process. Placements of a subnet
/// all rewrite its allocation index, so one at a time would cost one etcd round trip
/// each; instead each waits its turn, and whoever gets the turn writes every placement
/// waiting then (up to etcd's limits, one per hypervisor and guest) in one
/// transaction, giving each its address. Either all of them are written or none.
#[derive(Default)]
pub(crate) struct SubnetTurn {
    /// Most placements per transaction; 0: as many as etcd's limits allow.
    max_batch: usize,
    waiting: std::sync::Mutex<VecDeque<(Pending, oneshot::Sender<Committed>)>>,
    turn: tokio::sync::Mutex<()>,
}

/// The [`SubnetTurn`]s of a context, one per subnet ([`SubnetTurns::of`]).
#[derive(Debug, Default)]
pub(crate) struct SubnetTurns {
    turns: std::sync::Mutex<std::collections::HashMap<String, std::sync::Arc<SubnetTurn>>>,
    /// Most placements per transaction; 0: as many as etcd's limits allow.
    max_batch: AtomicUsize,
}

impl Context {
    /// At most `max` placements of this context (and its clones) on one subnet go into
    /// one transaction: those waiting for the subnet at once are written together
    /// (within etcd's limits of 128 compares and operations). 1 writes each alone; the
    /// default is as many as the limits allow.
    pub fn set_placement_batch(&self, max: usize) {
        SubnetTurns::of(self)
            .max_batch
            .store(max, Ordering::Relaxed);
    }
}

impl SubnetTurns {
    /// The turns of `ctx` (shared by its clones).
    pub(crate) fn of(ctx: &Context) -> std::sync::Arc<SubnetTurns> {
        ctx.local::<SubnetTurns>()
    }

    /// Subnet `id`'s turn.
    pub(crate) fn turn(&self, id: &str) -> std::sync::Arc<SubnetTurn> {
        self.turns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(id.to_string())
            .or_insert_with(|| {
                std::sync::Arc::new(SubnetTurn {
                    max_batch: self.max_batch.load(Ordering::Relaxed),
                    ..SubnetTurn::default()
                })
            })
            .clone()
    }
}

impl std::fmt::Debug for SubnetTurn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubnetTurn").finish_non_exhaustive()
    }
}

impl SubnetTurn {
    /// Queues `pending` and waits until a transaction has written it or failed.
    pub(crate) async fn submit(
        &self,
        ctx: &Context,
        allocs: &AllocCache,
        sid: &str,
        pending: Pending,
    ) -> Committed {
        let (tx, mut rx) = oneshot::channel();
        self.queue().push_back((pending, tx));
        loop {
            let _turn = self.turn.lock().await;
            match rx.try_recv() {
                Ok(done) => return done,
                // Taken by a leader that stopped before it answered.
                Err(oneshot::error::TryRecvError::Closed) => return Committed::Again,
                Err(oneshot::error::TryRecvError::Empty) => {}
            }
            let batch = self.take();
            commit_batch(ctx, allocs, sid, batch).await;
        }
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, VecDeque<(Pending, oneshot::Sender<Committed>)>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next batch, oldest first: within etcd's limits, one placement per hypervisor
    /// and per guest (the others wait for the next).
    fn take(&self) -> Vec<(Pending, oneshot::Sender<Committed>)> {
        let mut waiting = self.queue();
        // The subnet's compare; each member may touch an index block of its own.
        let (mut cmps, mut ops) = (1, 0);
        let mut seen: HashSet<String> = HashSet::new();
        let mut batch = Vec::new();
        let mut rest = VecDeque::new();
        while let Some((p, tx)) = waiting.pop_front() {
            if tx.is_closed() {
                continue;
            }
            let (c, o) = (p.cmps.len() + 2, p.ops.len() + 3);
            let clash = seen.contains(&p.hypervisor) || seen.contains(&p.placed.id);
            let full = self.max_batch > 0 && batch.len() >= self.max_batch;
            if !batch.is_empty()
                && (full || clash || cmps + c > MAX_TXN_OPS || ops + o > MAX_TXN_OPS)
            {
                rest.push_back((p, tx));
                continue;
            }
            cmps += c;
            ops += o;
            seen.insert(p.hypervisor.clone());
            seen.insert(p.placed.id.clone());
            batch.push((p, tx));
        }
        *waiting = rest;
        batch
    }
}

/// Writes `batch` in one transaction on subnet `sid`'s index as `allocs` knows it, and
/// answers each member.
async fn commit_batch(
    ctx: &Context,
    allocs: &AllocCache,
    sid: &str,
    batch: Vec<(Pending, oneshot::Sender<Committed>)>,
) {
    let Some(state) = allocs.get(sid) else {
        for (_, tx) in batch {
            let _ = tx.send(Committed::Unknown);
        }
        return;
    };
    // Addresses from where this process looks first (the lowest free, until it lost a
    // block to another process).
    let mut next = state.clone();
    let from = allocs.preferred(sid);
    let mut members = Vec::with_capacity(batch.len());
    let mut touched = BTreeSet::new();
    for (p, tx) in batch {
        match next.pick_from(from) {
            Some(ip) => {
                next.index.insert(ip);
                touched.insert(keys::alloc_block_of(ip));
                members.push((p, tx, ip));
            }
            None => {
                let _ = tx.send(Committed::Full);
            }
        }
    }
    if members.is_empty() {
        return;
    }
    let mut cmps = vec![ctx.cmp_rev(&keys::subnet_metadata(sid), state.subnet.revision())];
    let mut ops = Vec::new();
    for b in &touched {
        let (cmp, op) = next.block_write(ctx, *b);
        cmps.push(cmp);
        ops.push(op);
    }
    // The failure branch reads what tells whose compare failed: the subnet, and each
    // member's address, `allocated` and guest.
    let reads = Subnet::read_ops(ctx, sid);
    let first = reads.len();
    let mut fail = Vec::from(reads);
    for (p, _, ip) in &mut members {
        let addr = keys::subnet_address(sid, Ipv4Addr::from(*ip));
        p.placed.ip = Some(IpAddr::V4(Ipv4Addr::from(*ip)));
        cmps.push(ctx.cmp_absent(&addr));
        cmps.append(&mut p.cmps);
        ops.push(ctx.op_put(&addr, p.placed.id.as_str()));
        ops.push(ctx.op_put(&keys::guest_metadata(&p.placed.id), p.placed.to_json()));
        ops.append(&mut p.ops);
        fail.push(ctx.op_get(&addr));
        fail.push(ctx.op_get(&keys::hypervisor_allocated(&p.hypervisor)));
        fail.push(ctx.op_get(&keys::guest_metadata(&p.placed.id)));
    }
    let out = ctx
        .commit(Txn::new().when(cmps).and_then(ops).or_else(fail))
        .await;
    match out {
        Ok(out) if out.succeeded() => {
            let rev = revision(&out);
            for b in &touched {
                next.written(*b, rev);
            }
            allocs.put(next);
            for (mut p, tx, _) in members {
                p.placed.set_revision(rev);
                let _ = tx.send(Committed::Placed {
                    guest: Box::new(p.placed),
                });
            }
        }
        Ok(out) => {
            let r = out.op_responses();
            let rev_of = |i: usize| txn_get(ctx, &r, i).first().map_or(0, |kv| kv.mod_revision);
            let fresh = AllocState::from_responses(ctx, sid, &r, 0)
                .await
                .ok()
                .flatten()
                .map(|f| f.seen_at(revision(&out)));
            let moved = match &fresh {
                Some(f) => state.moved(f, &touched),
                None => true,
            };
            if let Some(f) = fresh {
                if moved {
                    // Someone else places in the blocks this process looked in: look
                    // elsewhere from now on.
                    allocs.scatter(sid, &f);
                }
                allocs.put(f);
            }
            let verdicts: Vec<(bool, bool)> = members
                .iter()
                .enumerate()
                .map(|(i, (p, _, _))| {
                    let base = first + 3 * i;
                    let foreign = !txn_get(ctx, &r, base).is_empty();
                    let own = foreign
                        || rev_of(base + 1) != p.allocated_rev
                        || rev_of(base + 2) != p.placed.revision();
                    (own, foreign)
                })
                .collect();
            let explained = moved || verdicts.iter().any(|(own, _)| *own);
            for ((_, tx, ip), (own, foreign)) in members.into_iter().zip(verdicts) {
                let _ = tx.send(if explained && !own {
                    Committed::Retry
                } else {
                    Committed::Lost { ip, foreign }
                });
            }
        }
        Err(e) => {
            let mut e = Some(e);
            for (_, tx, _) in members {
                let _ = tx.send(match e.take() {
                    Some(e) => Committed::Failed(e),
                    None => Committed::Again,
                });
            }
        }
    }
}
