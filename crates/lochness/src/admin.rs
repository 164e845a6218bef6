//! What an operator's edits need beyond saving an entity, each checked before anything
//! is written and written in one transaction: user patches that cannot touch what
//! placement owns, hypervisor configuration and subnet links set together, VLAN
//! memberships set as a whole, subnets created or changed only where they fit, and
//! deletes of flavors, networks, firewall groups and subnets refused while something uses
//! them (the original could not delete the first three at all, and deleted subnets under
//! their guests).
//!
//! "In use" is [`Error::Refused`] naming a user; an entity the change names that does not
//! exist is [`Error::NotFound`] with its metadata key; a request that cannot be valid is
//! [`Error::Invalid`].

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use etcd_client::{Compare, CompareOp, GetOptions, Txn, TxnOp};
use ipnetwork::IpNetwork;

use crate::codec::{canonicalize, cidr_text, Obj};
use crate::context::{backoff, revision, txn_get, Context, Kv};
use crate::error::{Error, Result};
use crate::flavor::{Flavor, Resources};
use crate::fwgroup::FwGroup;
use crate::guest::Guest;
use crate::hypervisor::Hypervisor;
use crate::keys;
use crate::network::Network;
use crate::page::GuestFilter;
use crate::subnet::Subnet;
use crate::vlan::{Vlan, VlanGroup};

/// How often a guarded change is tried again when something it depends on changed
/// between its checks and its write.
const GUARD_ATTEMPTS: u32 = 10;

/// The id of a body's `id` member when it names another entity than `current`: `Ok`
/// when absent, empty or the same id in any case; [`Error::Invalid`] with `bad_id` for
/// one that is not a UUID, with a message naming both otherwise.
fn same_id(body_id: &str, current: &str, bad_id: &str) -> Result<()> {
    if body_id.is_empty() || body_id == current {
        return Ok(());
    }
    match canonicalize(body_id) {
        Ok(id) if id == current => Ok(()),
        Ok(id) => Err(Error::Invalid(format!(
            "the id of the body ({id}) is not the id of the path ({current}); an id cannot be changed"
        ))),
        Err(_) => Err(Error::Invalid(bad_id.to_string())),
    }
}

impl Guest {
    /// Applies a user's PATCH body with the merge rules (present, non-empty members
    /// replace). Refused with [`Error::Invalid`], nothing changed: another `id`, and a
    /// value for `hypervisor`, `subnet`, `ip` or `bridge` that differs from the stored one
    /// (placement sets them; the same value is fine).
    pub fn apply_patch(&mut self, data: &[u8]) -> Result<()> {
        let mut next = self.clone();
        next.decode_json(data)?;
        same_id(&next.id, &self.id, "missing or invalid id")?;
        next.id.clone_from(&self.id);
        let placement = [
            ("hypervisor", next.hypervisor != self.hypervisor),
            ("subnet", next.subnet != self.subnet),
            ("ip", next.ip != self.ip),
            ("bridge", next.bridge != self.bridge),
        ];
        if let Some((field, _)) = placement.iter().find(|(_, changed)| *changed) {
            return Err(Error::Invalid(format!(
                "{field} is set by placement and cannot be changed"
            )));
        }
        *self = next;
        Ok(())
    }
}

impl Hypervisor {
    /// Applies a user's PATCH body with the merge rules; `total_resources` and
    /// `available_resources` are replaced only when the body has them (the original reset
    /// both to zero when they were absent). Another `id` is [`Error::Invalid`]; on any
    /// error nothing changes.
    pub fn apply_patch(&mut self, data: &[u8]) -> Result<()> {
        let o = Obj::parse(data)?;
        let mut next = self.clone();
        next.decode_json(data)?;
        same_id(&next.id, &self.id, "invalid id")?;
        next.id.clone_from(&self.id);
        if o.obj("total_resources")?.is_none() {
            next.total_resources = self.total_resources;
        }
        if o.obj("available_resources")?.is_none() {
            next.available_resources = self.available_resources;
        }
        *self = next;
        Ok(())
    }
}

/// `stored` (an entity's JSON) with the members of the JSON object `body` put over it
/// (a member replaces the stored one of the same name in any case); `null` is `{}`.
fn overlay(stored: &str, body: &[u8]) -> Result<Vec<u8>> {
    let bad = |e: String| Error::InvalidJson(e);
    let mut merged: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(stored).map_err(|e| bad(e.to_string()))?;
    match serde_json::from_slice::<serde_json::Value>(body).map_err(|e| bad(e.to_string()))? {
        serde_json::Value::Null => {}
        serde_json::Value::Object(members) => {
            for (k, v) in members {
                merged.retain(|old, _| !old.eq_ignore_ascii_case(&k));
                merged.insert(k, v);
            }
        }
        other => return Err(bad(format!("expected an object, got {other}"))),
    }
    serde_json::to_vec(&merged).map_err(|e| bad(e.to_string()))
}

impl Flavor {
    /// Applies a user's PATCH body (present members replace, metadata keys are added);
    /// another `id` is [`Error::Invalid`]. On any error nothing changes.
    pub fn apply_patch(&mut self, data: &[u8]) -> Result<()> {
        let mut next = self.clone();
        next.decode_json(data)?;
        same_id(&next.id, &self.id, "flavor ID must be uuid")?;
        next.id.clone_from(&self.id);
        *self = next;
        Ok(())
    }
}

impl Network {
    /// Applies a user's PATCH body (metadata keys are added); another `id` is
    /// [`Error::Invalid`].
    pub fn apply_patch(&mut self, data: &[u8]) -> Result<()> {
        let mut next = self.clone();
        next.decode_json(data)?;
        same_id(&next.id, &self.id, "invalid ID")?;
        next.id.clone_from(&self.id);
        *self = next;
        Ok(())
    }
}

impl Subnet {
    /// Applies a user's PATCH body: the members it has replace the stored ones, the
    /// others stay; another `id` is [`Error::Invalid`]. See [`Subnet::save_checked`] for
    /// what may change.
    pub fn apply_patch(&mut self, data: &[u8]) -> Result<()> {
        let merged = overlay(&self.to_json(), data)?;
        let mut next = self.clone();
        next.decode_json(&merged)?;
        same_id(&next.id, &self.id, "invalid ID")?;
        next.id.clone_from(&self.id);
        *self = next;
        Ok(())
    }
}

impl FwGroup {
    /// Applies a user's PATCH body: the members it has replace the stored ones (`rules`
    /// as a whole), the others stay; another `id` is [`Error::Invalid`].
    pub fn apply_patch(&mut self, data: &[u8]) -> Result<()> {
        let merged = overlay(&self.to_json(), data)?;
        let mut next = self.clone();
        next.decode_json(&merged)?;
        same_id(&next.id, &self.id, "invalid ID")?;
        next.id.clone_from(&self.id);
        *self = next;
        Ok(())
    }
}

impl Context {
    /// Firewall group `id` with a user's PATCH body put over its stored JSON before it is
    /// decoded (as [`FwGroup::apply_patch`]), so a body that replaces `rules` repairs a
    /// stored group whose rules cannot be decoded (a `source` that is not a CIDR, written
    /// by another tool), which [`Context::fwgroup`] refuses to load. Save it with
    /// [`FwGroup::save_checked`] (compared on the stored revision).
    pub async fn patched_fwgroup(&self, id: &str, data: &[u8]) -> Result<FwGroup> {
        let id = canonicalize(id)?;
        let key = keys::fwgroup_metadata(&id);
        let kv = self.get(&key).await?.ok_or(Error::NotFound(key))?;
        let merged = overlay(&kv.text(), data)?;
        let mut probe = self.new_fwgroup();
        probe.decode_json(&merged)?;
        same_id(&probe.id, &id, "invalid ID")?;
        FwGroup::from_stored(self, &id, &merged, kv.mod_revision)
    }
}

impl Context {
    /// Sets configuration keys of hypervisor `id` in one transaction (an empty value
    /// deletes the key) and returns the whole configuration afterwards. Every key is
    /// checked first: an empty one is [`Error::Invalid`] and nothing is written.
    pub async fn set_hypervisor_config(
        &self,
        id: &str,
        changes: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>> {
        let id = canonicalize(id)?;
        if changes.keys().any(String::is_empty) {
            return Err(Error::Invalid("empty config key".into()));
        }
        let meta = keys::hypervisor_metadata(&id);
        let ops: Vec<TxnOp> = changes
            .iter()
            .map(|(k, v)| {
                let key = keys::hypervisor_config(&id, k);
                if v.is_empty() {
                    self.op_delete(&key)
                } else {
                    self.op_put(&key, v.as_str())
                }
            })
            .collect();
        let resp = self
            .commit(Txn::new().when(vec![self.cmp_present(&meta)]).and_then(ops))
            .await?;
        if !resp.succeeded() {
            return Err(Error::NotFound(meta));
        }
        Ok(self.hypervisor(&id).await?.config().clone())
    }

    /// Links hypervisor `id` to each subnet of `links` (subnet id → bridge) in one
    /// transaction that requires the hypervisor and every subnet to exist, and returns all
    /// its links afterwards. Subnet ids that are not UUIDs are [`Error::InvalidUuid`], an
    /// empty bridge [`Error::Invalid`]; nothing is written then.
    pub async fn link_hypervisor_subnets(
        &self,
        id: &str,
        links: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>> {
        let id = canonicalize(id)?;
        let mut canonical = BTreeMap::new();
        for (subnet, bridge) in links {
            let subnet = canonicalize(subnet)?;
            if bridge.is_empty() {
                return Err(Error::Invalid(format!(
                    "empty bridge name for subnet {subnet}"
                )));
            }
            canonical.insert(subnet, bridge.clone());
        }
        let mut required = vec![keys::hypervisor_metadata(&id)];
        required.extend(canonical.keys().map(|s| keys::subnet_metadata(s)));
        let txn = Txn::new()
            .when(
                required
                    .iter()
                    .map(|k| self.cmp_present(k))
                    .collect::<Vec<_>>(),
            )
            .and_then(
                canonical
                    .iter()
                    .map(|(s, b)| self.op_put(&keys::hypervisor_subnet(&id, s), b.as_str()))
                    .collect::<Vec<_>>(),
            )
            .or_else(required.iter().map(|k| self.op_get(k)).collect::<Vec<_>>());
        let resp = self.commit(txn).await?;
        if !resp.succeeded() {
            let r = resp.op_responses();
            let missing = (0..required.len())
                .find(|i| txn_get(self, &r, *i).is_empty())
                .unwrap_or(0);
            return Err(Error::NotFound(required[missing].clone()));
        }
        Ok(self.hypervisor(&id).await?.subnets().clone())
    }

    /// Every address reservation of subnet `id` (address → owner), one ranged read.
    pub async fn subnet_reservations(&self, id: &str) -> Result<BTreeMap<Ipv4Addr, String>> {
        let id = canonicalize(id)?;
        let prefix = keys::subnet_addresses_prefix(&id);
        Ok(self
            .get_prefix(&prefix)
            .await?
            .into_iter()
            .filter_map(|kv| {
                let ip = kv.key.strip_prefix(prefix.as_str())?.parse().ok()?;
                Some((ip, kv.text()))
            })
            .collect())
    }

    /// The first guest (by id) that names `what`, for a refusal to delete it.
    async fn used_by_guest(&self, noun: &str, id: &str, filter: GuestFilter) -> Result<()> {
        match self.first_guest(&filter).await? {
            Some(g) => Err(Error::Refused(format!(
                "{noun} {id} is used by guest {}",
                g.id
            ))),
            None => Ok(()),
        }
    }

    /// Compare: nothing under `prefix` was written after revision `rev`.
    fn cmp_unchanged_since(&self, prefix: &str, rev: i64) -> Compare {
        Compare::mod_revision(self.abs(prefix), CompareOp::Less, rev + 1).with_prefix()
    }

    /// Compare: nothing under `prefix` was created after revision `rev` (changes of keys
    /// that existed do not count).
    fn cmp_none_created_since(&self, prefix: &str, rev: i64) -> Compare {
        Compare::create_revision(self.abs(prefix), CompareOp::Less, rev + 1).with_prefix()
    }

    /// Deletes `tree` when the metadata key `meta` is still at `rev` and `guards` hold;
    /// [`Error::NotFound`] when it is gone, [`Error::Conflict`] when it changed, `false`
    /// when only a guard failed (the caller checks again).
    async fn delete_guarded(
        &self,
        meta: &str,
        rev: i64,
        tree: &str,
        guards: Vec<Compare>,
        also: Vec<TxnOp>,
    ) -> Result<bool> {
        let mut cmps = vec![self.cmp_rev(meta, rev)];
        cmps.extend(guards);
        let mut ops = vec![self.op_delete_prefix(tree)];
        ops.extend(also);
        let resp = self
            .commit(
                Txn::new()
                    .when(cmps)
                    .and_then(ops)
                    .or_else(vec![self.op_get(meta)]),
            )
            .await?;
        if resp.succeeded() {
            return Ok(true);
        }
        match txn_get(self, &resp.op_responses(), 0).into_iter().next() {
            None => Err(Error::NotFound(meta.to_string())),
            Some(kv) if kv.mod_revision != rev => Err(Error::Conflict(format!(
                "{meta} was changed since it was read"
            ))),
            Some(_) => Ok(false),
        }
    }
}

fn too_many(what: String) -> Error {
    Error::TooManyConflicts {
        what,
        attempts: GUARD_ATTEMPTS,
    }
}

impl Flavor {
    /// Deletes the flavor; refused while a guest uses it. The check and the delete hold
    /// together: the delete is written only if no guest changed since the check.
    pub async fn destroy(&mut self) -> Result<()> {
        let ctx = self.entity_context().clone();
        let id = canonicalize(&self.id)?;
        for attempt in 0..GUARD_ATTEMPTS {
            let since = ctx.current_revision().await?;
            let filter = GuestFilter {
                flavor: Some(id.clone()),
                ..GuestFilter::default()
            };
            ctx.used_by_guest("flavor", &id, filter).await?;
            let guard = ctx.cmp_unchanged_since(keys::GUESTS, since);
            let meta = keys::flavor_metadata(&id);
            let tree = format!("{}{id}/", keys::FLAVORS);
            if ctx
                .delete_guarded(&meta, self.revision(), &tree, vec![guard], Vec::new())
                .await?
            {
                self.set_entity_revision(0);
                return Ok(());
            }
            backoff(attempt).await;
        }
        Err(too_many(format!("delete flavor {id}")))
    }

    /// Saves the flavor; when its resources differ from `before` (what was stored),
    /// refused while a guest uses it (what placement accounted for that guest would no
    /// longer match). Guarded as [`Flavor::destroy`].
    pub async fn save_unless_used(&mut self, before: Resources) -> Result<()> {
        if self.resources == before {
            return self.save().await;
        }
        self.validate()?;
        let ctx = self.entity_context().clone();
        let id = canonicalize(&self.id)?;
        for attempt in 0..GUARD_ATTEMPTS {
            let since = ctx.current_revision().await?;
            let filter = GuestFilter {
                flavor: Some(id.clone()),
                ..GuestFilter::default()
            };
            ctx.used_by_guest("flavor", &id, filter)
                .await
                .map_err(|e| match e {
                    Error::Refused(why) => {
                        Error::Refused(format!("{why}: its resources cannot change"))
                    }
                    other => other,
                })?;
            let meta = keys::flavor_metadata(&id);
            let txn = Txn::new()
                .when(vec![
                    ctx.cmp_rev(&meta, self.revision()),
                    ctx.cmp_unchanged_since(keys::GUESTS, since),
                ])
                .and_then(vec![ctx.op_put(&meta, self.to_json())])
                .or_else(vec![ctx.op_get(&meta)]);
            let resp = ctx.commit(txn).await?;
            if resp.succeeded() {
                self.set_entity_revision(revision(&resp));
                return Ok(());
            }
            match txn_get(&ctx, &resp.op_responses(), 0).into_iter().next() {
                None => return Err(Error::NotFound(meta)),
                Some(kv) if kv.mod_revision != self.revision() => {
                    return Err(Error::Conflict(format!(
                        "{meta} was changed since it was read"
                    )))
                }
                Some(_) => backoff(attempt).await,
            }
        }
        Err(too_many(format!("save flavor {id}")))
    }
}

impl Network {
    /// Deletes the network; refused while it has subnets or a guest uses it (guarded as
    /// [`Flavor::destroy`]).
    pub async fn destroy(&mut self) -> Result<()> {
        let ctx = self.entity_context().clone();
        let id = canonicalize(&self.id)?;
        let links = format!("{}{}", keys::network_prefix(&id), keys::SUBNETS_DIR);
        for attempt in 0..GUARD_ATTEMPTS {
            let since = ctx.current_revision().await?;
            if let Some(kv) = ctx.get_prefix(&links).await?.first() {
                let subnet = kv.key.strip_prefix(links.as_str()).unwrap_or_default();
                return Err(Error::Refused(format!(
                    "network {id} has subnet {subnet}; detach its subnets first"
                )));
            }
            let filter = GuestFilter {
                network: Some(id.clone()),
                ..GuestFilter::default()
            };
            ctx.used_by_guest("network", &id, filter).await?;
            let guards = vec![
                ctx.cmp_prefix_empty(&links),
                ctx.cmp_unchanged_since(keys::GUESTS, since),
            ];
            if ctx
                .delete_guarded(
                    &keys::network_metadata(&id),
                    self.revision(),
                    &keys::network_prefix(&id),
                    guards,
                    Vec::new(),
                )
                .await?
            {
                self.set_entity_revision(0);
                return Ok(());
            }
            backoff(attempt).await;
        }
        Err(too_many(format!("delete network {id}")))
    }

    /// Attaches `subnet` to this network in one transaction (the link and the subnet's
    /// `network` field). Refused when the subnet belongs to another network (detach it
    /// there first) and invalid when its CIDR overlaps one of this network's subnets.
    /// Attaching a subnet that is already here changes nothing.
    pub async fn attach(&mut self, subnet: &mut Subnet) -> Result<()> {
        let ctx = self.entity_context().clone();
        let id = canonicalize(&self.id)?;
        for attempt in 0..GUARD_ATTEMPTS {
            subnet.refresh().await?;
            if subnet.network == id {
                return Ok(());
            }
            if !subnet.network.is_empty() {
                return Err(Error::Refused(format!(
                    "subnet {} belongs to network {}; detach it there first",
                    subnet.id, subnet.network
                )));
            }
            let siblings = Siblings::read(&ctx, &id).await?;
            siblings.check(subnet)?;
            let mut attached = subnet.clone();
            attached.network.clone_from(&id);
            let skey = keys::subnet_metadata(&subnet.id);
            let mut cmps = siblings.guards(&ctx);
            cmps.push(ctx.cmp_rev(&skey, subnet.revision()));
            let txn = Txn::new().when(cmps).and_then(vec![
                ctx.op_put(&keys::network_subnet(&id, &subnet.id), ""),
                ctx.op_put(&skey, attached.to_json()),
            ]);
            let resp = ctx.commit(txn).await?;
            if resp.succeeded() {
                attached.set_entity_revision(revision(&resp));
                *subnet = attached;
                self.refresh().await?;
                return Ok(());
            }
            backoff(attempt).await;
        }
        Err(too_many(format!(
            "attach subnet {} to network {id}",
            subnet.id
        )))
    }

    /// Detaches `subnet` from this network in one transaction; refused while the subnet
    /// has reserved addresses (its guests are on this network). A subnet that is not
    /// attached here is [`Error::NotFound`] (its link key).
    pub async fn detach(&mut self, subnet: &mut Subnet) -> Result<()> {
        let ctx = self.entity_context().clone();
        let id = canonicalize(&self.id)?;
        let link = keys::network_subnet(&id, &subnet.id);
        subnet.refresh().await?;
        if ctx.get(&link).await?.is_none() && subnet.network != id {
            return Err(Error::NotFound(link));
        }
        let addresses = keys::subnet_addresses_prefix(&subnet.id);
        if let Some(kv) = ctx.get_prefix(&addresses).await?.first() {
            return Err(Error::Refused(format!(
                "subnet {} has reserved addresses ({} for {}); it cannot leave its network",
                subnet.id,
                kv.key.strip_prefix(addresses.as_str()).unwrap_or_default(),
                kv.text()
            )));
        }
        let skey = keys::subnet_metadata(&subnet.id);
        let mut detached = subnet.clone();
        let mut ops = vec![ctx.op_delete(&link)];
        if detached.network == id {
            detached.network.clear();
            ops.push(ctx.op_put(&skey, detached.to_json()));
        }
        let txn = Txn::new()
            .when(vec![
                ctx.cmp_rev(&skey, subnet.revision()),
                ctx.cmp_prefix_empty(&addresses),
            ])
            .and_then(ops);
        if !ctx.commit(txn).await?.succeeded() {
            return Err(Error::Conflict(format!(
                "subnet {} changed while it was detached; try again",
                subnet.id
            )));
        }
        subnet.refresh().await?;
        self.refresh().await?;
        Ok(())
    }
}

/// The subnets of a network as read for a change that must not overlap them.
struct Siblings {
    network: String,
    network_rev: i64,
    /// When the read was made.
    read_rev: i64,
    subnets: Vec<Subnet>,
}

impl Siblings {
    /// Reads network `id` (which must exist) and its subnets.
    async fn read(ctx: &Context, id: &str) -> Result<Siblings> {
        let prefix = keys::network_prefix(id);
        let resp = ctx
            .kv()
            .get(ctx.abs(&prefix), Some(GetOptions::new().with_prefix()))
            .await?;
        let read_rev = resp.header().map(|h| h.revision()).unwrap_or_default();
        let items: Vec<(String, Kv)> = resp
            .kvs()
            .iter()
            .filter_map(|kv| ctx.to_kv(kv))
            .map(|kv| (kv.key[prefix.len()..].to_string(), kv))
            .collect();
        let network = Network::from_keys(ctx, id, &items)?;
        let ids: Vec<String> = network.subnets().to_vec();
        let ops: Vec<TxnOp> = ids
            .iter()
            .map(|s| ctx.op_get(&keys::subnet_metadata(s)))
            .collect();
        let mut subnets = Vec::new();
        for chunk_start in (0..ops.len()).step_by(100) {
            let chunk: Vec<TxnOp> = ops[chunk_start..(chunk_start + 100).min(ops.len())].to_vec();
            let r = ctx.txn(Txn::new().and_then(chunk)).await?.op_responses();
            for (i, sid) in ids[chunk_start..].iter().take(100).enumerate() {
                if let Some(kv) = txn_get(ctx, &r, i).into_iter().next() {
                    subnets.push(Subnet::from_stored(ctx, sid, &kv.value, kv.mod_revision)?);
                }
            }
        }
        Ok(Siblings {
            network: id.to_string(),
            network_rev: network.revision(),
            read_rev,
            subnets,
        })
    }

    /// Invalid when `subnet`'s CIDR overlaps another subnet's of the network.
    fn check(&self, subnet: &Subnet) -> Result<()> {
        let Some(cidr) = subnet.cidr else {
            return Ok(());
        };
        for other in self.subnets.iter().filter(|o| o.id != subnet.id) {
            if let Some(theirs) = other.cidr {
                if overlap(&cidr, &theirs) {
                    return Err(Error::Invalid(format!(
                        "{} overlaps subnet {} ({}) of network {}",
                        cidr_text(&cidr),
                        other.id,
                        cidr_text(&theirs),
                        self.network
                    )));
                }
            }
        }
        Ok(())
    }

    /// Compares that the network and what was read of it are unchanged.
    fn guards(&self, ctx: &Context) -> Vec<Compare> {
        let mut cmps = vec![
            ctx.cmp_rev(&keys::network_metadata(&self.network), self.network_rev),
            ctx.cmp_unchanged_since(&keys::network_prefix(&self.network), self.read_rev),
        ];
        cmps.extend(
            self.subnets
                .iter()
                .map(|s| ctx.cmp_rev(&keys::subnet_metadata(&s.id), s.revision())),
        );
        cmps
    }
}

/// Whether two networks share an address.
fn overlap(a: &IpNetwork, b: &IpNetwork) -> bool {
    a.contains(b.network()) || b.contains(a.network())
}

impl Context {
    /// Creates `subnet` (which must not exist yet) after validating it; when its
    /// `network` is set, the network must exist, the subnet's CIDR must not overlap the
    /// network's other subnets, and the subnet is attached in the same transaction.
    pub async fn create_subnet(&self, subnet: &mut Subnet) -> Result<()> {
        subnet.validate()?;
        subnet.id = canonicalize(&subnet.id)?;
        if !subnet.network.is_empty() {
            subnet.network = canonicalize(&subnet.network)?;
        }
        let skey = keys::subnet_metadata(&subnet.id);
        for attempt in 0..GUARD_ATTEMPTS {
            let mut cmps = vec![self.cmp_absent(&skey)];
            let mut ops = vec![self.op_put(&skey, subnet.to_json())];
            if !subnet.network.is_empty() {
                let siblings = match Siblings::read(self, &subnet.network).await {
                    Err(Error::NotFound(key)) => return Err(Error::NotFound(key)),
                    other => other?,
                };
                siblings.check(subnet)?;
                cmps.extend(siblings.guards(self));
                ops.push(self.op_put(&keys::network_subnet(&subnet.network, &subnet.id), ""));
            }
            let resp = self
                .commit(
                    Txn::new()
                        .when(cmps)
                        .and_then(ops)
                        .or_else(vec![self.op_get(&skey)]),
                )
                .await?;
            if resp.succeeded() {
                subnet.set_entity_revision(revision(&resp));
                return Ok(());
            }
            if !txn_get(self, &resp.op_responses(), 0).is_empty() {
                return Err(Error::Conflict(format!(
                    "subnet {} already exists",
                    subnet.id
                )));
            }
            backoff(attempt).await;
        }
        Err(too_many(format!("create subnet {}", subnet.id)))
    }
}

impl Subnet {
    /// Saves changes to an existing subnet: validated; its `network` cannot change here
    /// ([`Network::attach`], [`Network::detach`]); every reserved address must stay inside
    /// the new range and must not become its network, broadcast or gateway address
    /// (refused otherwise); the CIDR must not overlap the network's other subnets. Written
    /// only if the subnet's tree is unchanged since the checks.
    pub async fn save_checked(&mut self) -> Result<()> {
        self.validate()?;
        let ctx = self.entity_context().clone();
        let id = canonicalize(&self.id)?;
        let prefix = keys::subnet_prefix(&id);
        let skey = keys::subnet_metadata(&id);
        for attempt in 0..GUARD_ATTEMPTS {
            let resp = ctx
                .kv()
                .get(ctx.abs(&prefix), Some(GetOptions::new().with_prefix()))
                .await?;
            let read_rev = resp.header().map(|h| h.revision()).unwrap_or_default();
            let items: Vec<(String, Kv)> = resp
                .kvs()
                .iter()
                .filter_map(|kv| ctx.to_kv(kv))
                .map(|kv| (kv.key[prefix.len()..].to_string(), kv))
                .collect();
            let stored = Subnet::from_keys(&ctx, &id, &items)?;
            if stored.revision() != self.revision() {
                return Err(Error::Conflict(format!(
                    "{skey} was changed since it was read"
                )));
            }
            if stored.network != self.network {
                return Err(Error::Invalid(
                    "the network of a subnet changes by attaching it to a network".into(),
                ));
            }
            self.check_reservations(&items)?;
            let mut cmps = vec![ctx.cmp_unchanged_since(&prefix, read_rev)];
            if !self.network.is_empty() {
                let siblings = Siblings::read(&ctx, &self.network).await?;
                siblings.check(self)?;
                cmps.extend(siblings.guards(&ctx));
            }
            let resp = ctx
                .commit(
                    Txn::new()
                        .when(cmps)
                        .and_then(vec![ctx.op_put(&skey, self.to_json())]),
                )
                .await?;
            if resp.succeeded() {
                self.set_entity_revision(revision(&resp));
                return Ok(());
            }
            backoff(attempt).await;
        }
        Err(too_many(format!("save subnet {id}")))
    }

    /// Refused when a reservation of the subnet's tree (`items`) falls outside this copy's
    /// range or on an address it never hands out.
    fn check_reservations(&self, items: &[(String, Kv)]) -> Result<()> {
        let (Some(IpAddr::V4(start)), Some(IpAddr::V4(end))) = (self.start_range, self.end_range)
        else {
            return Ok(());
        };
        for (tail, kv) in items {
            let Some(ip) = tail
                .strip_prefix(keys::ADDRESSES_DIR)
                .and_then(|ip| ip.parse::<Ipv4Addr>().ok())
            else {
                continue;
            };
            if ip < start || ip > end || self.is_excluded(ip) {
                return Err(Error::Refused(format!(
                    "address {ip} is reserved for {} and would fall outside the subnet's range",
                    kv.text()
                )));
            }
        }
        Ok(())
    }

    /// Deletes the subnet with its network link; refused while it has reserved
    /// addresses, while a hypervisor links it or a guest names it. The delete is written
    /// only if no reservation, guest or hypervisor key was created or changed since the
    /// checks (hypervisor keys: created).
    pub async fn destroy_unused(&mut self) -> Result<()> {
        let ctx = self.entity_context().clone();
        let id = canonicalize(&self.id)?;
        let addresses = keys::subnet_addresses_prefix(&id);
        for attempt in 0..GUARD_ATTEMPTS {
            let since = ctx.current_revision().await?;
            if let Some(kv) = ctx.get_prefix(&addresses).await?.first() {
                return Err(Error::Refused(format!(
                    "subnet {id} has reserved addresses ({} for {})",
                    kv.key.strip_prefix(addresses.as_str()).unwrap_or_default(),
                    kv.text()
                )));
            }
            if let Some(h) = hypervisor_linking(&ctx, &id).await? {
                return Err(Error::Refused(format!(
                    "subnet {id} is linked to hypervisor {h}"
                )));
            }
            let filter = GuestFilter {
                subnet: Some(id.clone()),
                ..GuestFilter::default()
            };
            ctx.used_by_guest("subnet", &id, filter).await?;
            let stored = ctx.subnet(&id).await?;
            let mut also = Vec::new();
            if !stored.network.is_empty() {
                also.push(ctx.op_delete(&keys::network_subnet(&stored.network, &id)));
            }
            let guards = vec![
                ctx.cmp_prefix_empty(&addresses),
                ctx.cmp_unchanged_since(keys::GUESTS, since),
                ctx.cmp_none_created_since(keys::HYPERVISORS, since),
            ];
            if ctx
                .delete_guarded(
                    &keys::subnet_metadata(&id),
                    stored.revision(),
                    &keys::subnet_prefix(&id),
                    guards,
                    also,
                )
                .await?
            {
                self.set_entity_revision(0);
                return Ok(());
            }
            backoff(attempt).await;
        }
        Err(too_many(format!("delete subnet {id}")))
    }
}

/// A hypervisor that links subnet `id` (a keys-only read of the hypervisors' trees).
async fn hypervisor_linking(ctx: &Context, id: &str) -> Result<Option<String>> {
    let resp = ctx
        .kv()
        .get(
            ctx.abs(keys::HYPERVISORS),
            Some(GetOptions::new().with_prefix().with_keys_only()),
        )
        .await?;
    for kv in resp.kvs() {
        let Some(rel) = std::str::from_utf8(kv.key()).ok().and_then(|k| ctx.rel(k)) else {
            continue;
        };
        if keys::is_hypervisor_subnet_link(rel, id) {
            let rest = rel.strip_prefix(keys::HYPERVISORS).unwrap_or_default();
            return Ok(Some(keys::split_id(rest).0.to_string()));
        }
    }
    Ok(None)
}

/// Problems of one firewall rule, for [`FwGroup::check_rules`].
fn rule_problem(i: usize, rule: &crate::fwgroup::FwRule) -> Option<String> {
    rule.problem().map(|why| format!("rule {}: {why}", i + 1))
}

impl crate::fwgroup::FwRule {
    /// What is wrong with this rule, if anything: the checks of
    /// [`FwGroup::check_rules`] (protocol, action, ports, IPv4 source, group reference
    /// is a UUID) without the existence of the referenced group. The API refuses such a
    /// rule; a renderer meeting one in the store skips it with this reason.
    pub fn problem(&self) -> Option<String> {
        const PROTOCOLS: [&str; 3] = ["tcp", "udp", "icmp"];
        const ACTIONS: [&str; 5] = ["accept", "allow", "drop", "deny", "reject"];
        if !PROTOCOLS.contains(&self.protocol.as_str()) {
            return Some(format!(
                "protocol {:?} is not one of tcp, udp, icmp",
                self.protocol
            ));
        }
        if !ACTIONS.contains(&self.action.as_str()) {
            return Some(format!(
                "action {:?} is not one of accept, allow, drop, deny, reject",
                self.action
            ));
        }
        if self.port_start > 65535 || self.port_end > 65535 {
            return Some("ports must be within 0-65535".to_string());
        }
        if self.port_start > self.port_end {
            return Some(format!(
                "portStart {} is greater than portEnd {}",
                self.port_start, self.port_end
            ));
        }
        if self.protocol == "icmp" && (self.port_start != 0 || self.port_end != 0) {
            return Some("icmp has no ports (0-0)".to_string());
        }
        if let Some(IpNetwork::V6(_)) = self.source {
            return Some("IPv6 sources are not supported".to_string());
        }
        if !self.group.is_empty() && canonicalize(&self.group).is_err() {
            return Some(format!("group {:?} is not a UUID", self.group));
        }
        None
    }
}

impl FwGroup {
    /// Checks every rule: protocol `tcp`, `udp` or `icmp` (icmp without ports), ports
    /// 0–65535 with start ≤ end, action `accept`, `allow`, `drop`, `deny` or `reject`,
    /// an IPv4 source, a group reference that is a UUID ([`Error::Invalid`] naming the
    /// rule). Whether referenced groups exist is checked by [`FwGroup::save_checked`].
    pub fn check_rules(&self) -> Result<()> {
        match self
            .rules
            .iter()
            .enumerate()
            .find_map(|(i, r)| rule_problem(i, r))
        {
            Some(why) => Err(Error::Invalid(why)),
            None => Ok(()),
        }
    }

    /// The groups the rules refer to other than this one, lower-cased.
    fn referenced_groups(&self) -> BTreeSet<String> {
        self.rules
            .iter()
            .filter(|r| !r.group.is_empty())
            .filter_map(|r| canonicalize(&r.group).ok())
            .filter(|g| *g != self.id)
            .collect()
    }

    /// Validates (the id and [`FwGroup::check_rules`]) and saves the group (created when
    /// new) in a transaction that requires every group its rules refer to to exist
    /// ([`Error::NotFound`] with the first missing one's key). Group references are
    /// lower-cased; a rule may refer to its own group.
    pub async fn save_checked(&mut self) -> Result<()> {
        self.validate()?;
        self.check_rules()?;
        self.id = canonicalize(&self.id)?;
        for rule in &mut self.rules {
            if !rule.group.is_empty() {
                rule.group = canonicalize(&rule.group)?;
            }
        }
        let ctx = self.entity_context().clone();
        let key = keys::fwgroup_metadata(&self.id);
        let refs: Vec<String> = self
            .referenced_groups()
            .iter()
            .map(|g| keys::fwgroup_metadata(g))
            .collect();
        let mut cmps = vec![ctx.cmp_rev(&key, self.revision())];
        cmps.extend(refs.iter().map(|k| ctx.cmp_present(k)));
        let txn = Txn::new()
            .when(cmps)
            .and_then(vec![ctx.op_put(&key, self.to_json())])
            .or_else(refs.iter().map(|k| ctx.op_get(k)).collect::<Vec<_>>());
        let resp = ctx.commit(txn).await?;
        if !resp.succeeded() {
            let r = resp.op_responses();
            if let Some(i) = (0..refs.len()).find(|i| txn_get(&ctx, &r, *i).is_empty()) {
                return Err(Error::NotFound(refs[i].clone()));
            }
            return Err(Error::Conflict(if self.revision() == 0 {
                format!("firewall group {} already exists", self.id)
            } else {
                format!("{key} was changed since it was read")
            }));
        }
        self.set_entity_revision(revision(&resp));
        Ok(())
    }

    /// Deletes the group; refused while a guest uses it or another group's rule refers
    /// to it (guarded as [`Flavor::destroy`]).
    pub async fn destroy(&mut self) -> Result<()> {
        let ctx = self.entity_context().clone();
        let id = canonicalize(&self.id)?;
        for attempt in 0..GUARD_ATTEMPTS {
            let since = ctx.current_revision().await?;
            let filter = GuestFilter {
                fwgroup: Some(id.clone()),
                ..GuestFilter::default()
            };
            ctx.used_by_guest("firewall group", &id, filter).await?;
            let groups = ctx
                .fwgroups_page(&crate::page::PageRequest::all())
                .await?
                .items;
            if let Some(g) = groups
                .iter()
                .find(|g| g.id != id && g.referenced_groups().contains(&id))
            {
                return Err(Error::Refused(format!(
                    "firewall group {id} is referred to by a rule of firewall group {}",
                    g.id
                )));
            }
            let guards = vec![
                ctx.cmp_unchanged_since(keys::GUESTS, since),
                ctx.cmp_unchanged_since(keys::FWGROUPS, since),
            ];
            let meta = keys::fwgroup_metadata(&id);
            let tree = format!("{}{id}/", keys::FWGROUPS);
            // The group's own key is compared by revision, not by the guard.
            if ctx
                .delete_guarded(&meta, self.revision(), &tree, guards, Vec::new())
                .await?
            {
                self.set_entity_revision(0);
                return Ok(());
            }
            backoff(attempt).await;
        }
        Err(too_many(format!("delete firewall group {id}")))
    }
}

impl Vlan {
    /// Makes `groups` the VLAN groups this VLAN is in (a set: duplicates count once), in
    /// one transaction: links to groups no longer listed are removed on both sides, new
    /// ones added on both sides. Every group added must exist ([`Error::NotFound`] with
    /// its key); ids that are not UUIDs are [`Error::InvalidUuid`]. Returns the groups
    /// afterwards, sorted.
    pub async fn set_groups(&mut self, groups: &[String]) -> Result<Vec<String>> {
        let wanted = groups
            .iter()
            .map(|g| canonicalize(g))
            .collect::<Result<BTreeSet<String>>>()?;
        self.refresh().await?;
        let ctx = self.entity_context().clone();
        let tag = self.tag;
        let current: BTreeSet<String> = self.vlan_groups().iter().cloned().collect();
        let added: Vec<&String> = wanted.difference(&current).collect();
        let mut ops = Vec::new();
        for g in current.difference(&wanted) {
            ops.push(ctx.op_delete(&keys::vlan_group(tag, g)));
            ops.push(ctx.op_delete(&keys::vlangroup_vlan(g, tag)));
        }
        for g in &added {
            ops.push(ctx.op_put(&keys::vlan_group(tag, g), ""));
            ops.push(ctx.op_put(&keys::vlangroup_vlan(g, tag), ""));
        }
        let mut required = vec![keys::vlan_metadata(tag)];
        required.extend(added.iter().map(|g| keys::vlangroup_metadata(g)));
        set_links(&ctx, &required, ops).await?;
        self.refresh().await?;
        let mut out = self.vlan_groups().to_vec();
        out.sort();
        Ok(out)
    }
}

impl VlanGroup {
    /// Makes `tags` the VLANs of this group, as [`Vlan::set_groups`] does from the other
    /// side. Every VLAN added must exist. Returns the tags afterwards, sorted.
    pub async fn set_vlans(&mut self, tags: &[i64]) -> Result<Vec<i64>> {
        let wanted: BTreeSet<i64> = tags.iter().copied().collect();
        self.refresh().await?;
        let ctx = self.entity_context().clone();
        let id = self.id.clone();
        let current: BTreeSet<i64> = self.vlans().iter().copied().collect();
        let added: Vec<i64> = wanted.difference(&current).copied().collect();
        let mut ops = Vec::new();
        for t in current.difference(&wanted) {
            ops.push(ctx.op_delete(&keys::vlangroup_vlan(&id, *t)));
            ops.push(ctx.op_delete(&keys::vlan_group(*t, &id)));
        }
        for t in &added {
            ops.push(ctx.op_put(&keys::vlangroup_vlan(&id, *t), ""));
            ops.push(ctx.op_put(&keys::vlan_group(*t, &id), ""));
        }
        let mut required = vec![keys::vlangroup_metadata(&id)];
        required.extend(added.iter().map(|t| keys::vlan_metadata(*t)));
        set_links(&ctx, &required, ops).await?;
        self.refresh().await?;
        let mut out = self.vlans().to_vec();
        out.sort_unstable();
        Ok(out)
    }
}

/// Runs `ops` in one transaction that requires every key of `required` to exist
/// ([`Error::NotFound`] with the first missing one otherwise).
async fn set_links(ctx: &Context, required: &[String], ops: Vec<TxnOp>) -> Result<()> {
    let txn = Txn::new()
        .when(
            required
                .iter()
                .map(|k| ctx.cmp_present(k))
                .collect::<Vec<_>>(),
        )
        .and_then(ops)
        .or_else(required.iter().map(|k| ctx.op_get(k)).collect::<Vec<_>>());
    let resp = ctx.commit(txn).await?;
    if resp.succeeded() {
        return Ok(());
    }
    let r = resp.op_responses();
    let missing = (0..required.len())
        .find(|i| txn_get(ctx, &r, *i).is_empty())
        .unwrap_or(0);
    Err(Error::NotFound(required[missing].clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fwgroup::FwRule;

    #[test]
    fn body_ids() {
        let id = "aaaa0001-1111-4111-8111-000000000001";
        assert!(same_id("", id, "x").is_ok());
        assert!(same_id(id, id, "x").is_ok());
        assert!(same_id(&id.to_uppercase(), id, "x").is_ok());
        assert_eq!(
            same_id("bogus", id, "invalid id").unwrap_err().to_string(),
            "invalid id"
        );
        assert!(same_id("aaaa0002-1111-4111-8111-000000000002", id, "x")
            .unwrap_err()
            .to_string()
            .contains("cannot be changed"));
    }

    #[test]
    fn overlapping_networks() {
        let n = |s: &str| crate::codec::parse_cidr(s).unwrap();
        assert!(overlap(&n("10.0.0.0/24"), &n("10.0.0.128/25")));
        assert!(overlap(&n("10.0.0.128/25"), &n("10.0.0.0/16")));
        assert!(!overlap(&n("10.0.0.0/24"), &n("10.0.1.0/24")));
    }

    #[test]
    fn firewall_rules() {
        let ok = FwRule {
            source: None,
            group: String::new(),
            port_start: 22,
            port_end: 22,
            protocol: "tcp".into(),
            action: "accept".into(),
        };
        assert_eq!(rule_problem(0, &ok), None);
        let bad = |f: &dyn Fn(&mut FwRule)| {
            let mut r = ok.clone();
            f(&mut r);
            rule_problem(0, &r).expect("refused")
        };
        assert!(bad(&|r| r.protocol = "sctp".into()).contains("protocol"));
        assert!(bad(&|r| r.protocol = String::new()).contains("protocol"));
        assert!(bad(&|r| r.action = "permit".into()).contains("action"));
        assert!(bad(&|r| r.port_end = 70000).contains("0-65535"));
        assert!(bad(&|r| r.port_start = 80).contains("greater"));
        assert!(bad(&|r| {
            r.protocol = "icmp".into();
        })
        .contains("icmp"));
        assert!(bad(&|r| r.group = "web".into()).contains("UUID"));
    }
}
