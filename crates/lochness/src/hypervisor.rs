//! [`Hypervisor`]: a physical host running a mistify agent, with its subnet links
//! (subnet → bridge), the guests placed on it, its configuration, its liveness (the
//! heartbeat key, kept by [`crate::heartbeat`]) and the resource figures placement works
//! with. Placing guests on it is in [`crate::assign`].
//!
//! Three figures describe its resources ([`Context::hypervisor_resources`] reads them
//! together):
//! - `total_resources` and `available_resources`, in the metadata JSON: what the host
//!   offers and what it has left after its guests' flavors, as its heartbeat
//!   ([`Hypervisor::update_resources`]) or an operator last wrote them;
//! - [`Hypervisor::allocated`], the key `lochness/hypervisors/<id>/allocated`: the sum
//!   of the flavors of the guests placed on it, kept exact by placement (added in the
//!   transaction that places a guest, subtracted in the one that removes it) and built
//!   from the guests linked to the hypervisor the first time it is needed.
//!
//! A guest fits ([`Hypervisor::fits`]) when its flavor is within both
//! `total_resources − allocated` ([`Hypervisor::free`]) and `available_resources`.
//! Placement never writes the metadata, so heartbeats and operators' edits do not
//! contend with it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use etcd_client::{Txn, TxnOp};
use serde::Serialize;

use crate::codec::{canonicalize, new_id, ser_ip, ser_mac, Mac, Obj};
use crate::context::{backoff, build_trees, revision, txn_get, Context, Kv, MAX_ATTEMPTS};
use crate::error::{Error, Result};
use crate::flavor::{Flavor, Resources};
use crate::guest::Guest;
use crate::host::{host_resources, hypervisor_id, DEFAULT_GUEST_DISK_DIR};
use crate::keys;
use crate::subnet::Subnet;

/// A physical host running a mistify agent.
#[derive(Debug, Clone, Serialize)]
pub struct Hypervisor {
    #[serde(skip)]
    ctx: Context,
    /// Lower-case UUID (also the host's hostname).
    pub id: String,
    /// Free-form key/values.
    pub metadata: BTreeMap<String, String>,
    /// Management address; the agent is reached there.
    #[serde(serialize_with = "ser_ip")]
    pub ip: Option<IpAddr>,
    /// Netmask, stored as an address (`255.255.255.0`).
    #[serde(serialize_with = "ser_ip")]
    pub netmask: Option<IpAddr>,
    /// Default gateway.
    #[serde(serialize_with = "ser_ip")]
    pub gateway: Option<IpAddr>,
    /// MAC of the management interface.
    #[serde(serialize_with = "ser_mac")]
    pub mac: Option<Mac>,
    /// What the host offers to guests.
    pub total_resources: Resources,
    /// What the host has left after its guests' flavors, as its heartbeat
    /// ([`Hypervisor::update_resources`]) or an operator last wrote it. Placement reads
    /// it but never writes it; what placement has promised is [`Hypervisor::allocated`].
    pub available_resources: Resources,
    #[serde(skip)]
    subnets: BTreeMap<String, String>,
    #[serde(skip)]
    guests: Vec<String>,
    #[serde(skip)]
    config: BTreeMap<String, String>,
    #[serde(skip)]
    alive: bool,
    /// The `allocated` key as last read: `None` when absent or unreadable.
    #[serde(skip)]
    allocated: Option<Resources>,
    /// The `mod_revision` of the `allocated` key as last read (0 = absent).
    #[serde(skip)]
    allocated_rev: i64,
    #[serde(skip)]
    mod_revision: i64,
    /// The metadata JSON as last read or written (what `mod_revision` refers to).
    #[serde(skip)]
    stored: Arc<[u8]>,
}

fn resources(o: Option<Obj>) -> Result<Resources> {
    let mut r = Resources::default();
    if let Some(o) = o {
        r.apply(&o)?;
    }
    Ok(r)
}

impl Hypervisor {
    fn blank(ctx: &Context, id: String) -> Hypervisor {
        Hypervisor {
            ctx: ctx.clone(),
            id,
            metadata: BTreeMap::new(),
            ip: None,
            netmask: None,
            gateway: None,
            mac: None,
            total_resources: Resources::default(),
            available_resources: Resources::default(),
            subnets: BTreeMap::new(),
            guests: Vec::new(),
            config: BTreeMap::new(),
            alive: false,
            allocated: None,
            allocated_rev: 0,
            mod_revision: 0,
            stored: Arc::from(&[][..]),
        }
    }

    /// Key of the heartbeat of hypervisor `id` (see [`keys::hypervisor_heartbeat`]).
    pub fn heartbeat_key(id: &str) -> String {
        keys::hypervisor_heartbeat(id)
    }

    /// The context this hypervisor was loaded with.
    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// Applies a JSON document with the merge rules: a field overwrites only when present
    /// and non-empty; both resource objects are always replaced (absent → zeros). On any
    /// error nothing changes.
    pub fn decode_json(&mut self, data: &[u8]) -> Result<()> {
        let o = Obj::parse(data)?;
        let id = o.string("id")?.filter(|s| !s.is_empty());
        let metadata = o.map("metadata")?;
        let ip = o.ip("ip")?;
        let netmask = o.ip("netmask")?;
        let gateway = o.ip("gateway")?;
        let mac = o.mac("mac")?;
        let total = resources(o.obj("total_resources")?)?;
        let available = resources(o.obj("available_resources")?)?;
        if let Some(v) = id {
            self.id = v;
        }
        if let Some(v) = metadata {
            self.metadata = v;
        }
        self.ip = ip.or(self.ip);
        self.netmask = netmask.or(self.netmask);
        self.gateway = gateway.or(self.gateway);
        if mac.is_some() {
            self.mac = mac;
        }
        self.total_resources = total;
        self.available_resources = available;
        Ok(())
    }

    /// Checks the id.
    pub fn validate(&self) -> Result<()> {
        if self.id.is_empty() {
            return Err(Error::Invalid("no id".into()));
        }
        canonicalize(&self.id)
            .map(|_| ())
            .map_err(|_| Error::Invalid("invalid id".into()))
    }

    /// Subnet id → bridge name, as of the last load plus local changes.
    pub fn subnets(&self) -> &BTreeMap<String, String> {
        &self.subnets
    }

    /// Ids of the guests placed here, as of the last load plus local changes.
    pub fn guests(&self) -> &[String] {
        &self.guests
    }

    /// Per-hypervisor configuration, as of the last load plus local changes.
    pub fn config(&self) -> &BTreeMap<String, String> {
        &self.config
    }

    /// Whether the heartbeat key was present when this copy was loaded.
    pub fn is_alive(&self) -> bool {
        self.alive
    }

    /// What placement has promised here: the sum of the flavors of the guests placed on
    /// this hypervisor (the `allocated` key), as of the last load plus this copy's own
    /// placements. Zero when the key is absent (a store written by the Go library: it is
    /// built from the linked guests the first time a guest is placed here or removed;
    /// [`Context::hypervisor_resources`] computes it meanwhile).
    pub fn allocated(&self) -> Resources {
        self.allocated.unwrap_or_default()
    }

    /// What placement may still promise: `total_resources − allocated`, each figure
    /// floored at zero.
    pub fn free(&self) -> Resources {
        self.total_resources.saturating_sub(&self.allocated())
    }

    /// Placement's rule: a guest needing `need` fits when `need` is within both
    /// [`Hypervisor::free`] (exact) and `available_resources` (the reported figure, as
    /// the Go placer checked).
    pub fn fits(&self, need: &Resources) -> bool {
        self.free().covers(need) && self.available_resources.covers(need)
    }

    /// Validates and writes the hypervisor with compare-and-swap on its revision.
    pub async fn save(&mut self) -> Result<()> {
        self.validate()?;
        self.id = canonicalize(&self.id)?;
        let key = keys::hypervisor_metadata(&self.id);
        let json = self.to_json();
        self.mod_revision = self
            .ctx
            .cas_put(&key, json.clone(), self.mod_revision)
            .await?;
        self.stored = Arc::from(json.as_bytes());
        Ok(())
    }

    pub(crate) fn from_keys(ctx: &Context, id: &str, items: &[(String, Kv)]) -> Result<Hypervisor> {
        let mut h = Hypervisor::blank(ctx, id.to_string());
        let mut found = false;
        for (tail, kv) in items {
            if tail == keys::METADATA {
                h.decode_json(&kv.value)?;
                h.mod_revision = kv.mod_revision;
                h.stored = Arc::from(kv.value.as_slice());
                found = true;
            } else if tail == keys::HEARTBEAT {
                h.alive = true;
            } else if tail == keys::ALLOCATED {
                h.apply_allocated(Some(&kv.value), kv.mod_revision);
            } else if let Some(s) = tail.strip_prefix(keys::SUBNETS_DIR) {
                h.subnets.insert(s.to_string(), kv.text());
            } else if let Some(g) = tail.strip_prefix(keys::GUESTS_DIR) {
                h.guests.push(g.to_string());
            } else if let Some(c) = tail.strip_prefix(keys::CONFIG_DIR) {
                h.config.insert(c.to_string(), kv.text());
            }
        }
        if !found {
            return Err(Error::NotFound(keys::hypervisor_metadata(id)));
        }
        h.id = id.to_string();
        Ok(h)
    }

    /// Reloads the hypervisor with its links, configuration and liveness in one ranged
    /// read.
    pub async fn refresh(&mut self) -> Result<()> {
        let prefix = keys::hypervisor_prefix(&self.id);
        let items = self.ctx.get_tree(&prefix).await?;
        *self = Hypervisor::from_keys(&self.ctx, &self.id, &items)?;
        Ok(())
    }

    /// Sets a configuration key of this hypervisor; an empty value deletes it.
    pub async fn set_config(&mut self, key: &str, value: &str) -> Result<()> {
        if key.is_empty() {
            return Err(Error::Invalid("empty config key".into()));
        }
        let rel = keys::hypervisor_config(&self.id, key);
        let mut kv = self.ctx.kv();
        if value.is_empty() {
            kv.delete(self.ctx.abs(&rel), None).await?;
            self.config.remove(key);
        } else {
            kv.put(self.ctx.abs(&rel), value, None).await?;
            self.config.insert(key.to_string(), value.to_string());
        }
        Ok(())
    }

    /// Links `subnet` to this hypervisor through `bridge`; both must exist (checked in the
    /// same transaction as the write).
    pub async fn add_subnet(&mut self, subnet: &Subnet, bridge: &str) -> Result<()> {
        if bridge.is_empty() {
            return Err(Error::Invalid("empty bridge name".into()));
        }
        let ctx = &self.ctx;
        let hmeta = keys::hypervisor_metadata(&self.id);
        let smeta = keys::subnet_metadata(&subnet.id);
        let txn = Txn::new()
            .when(vec![ctx.cmp_present(&hmeta), ctx.cmp_present(&smeta)])
            .and_then(vec![
                ctx.op_put(&keys::hypervisor_subnet(&self.id, &subnet.id), bridge)
            ])
            .or_else(vec![ctx.op_get(&hmeta)]);
        let resp = ctx.commit(txn).await?;
        if !resp.succeeded() {
            return Err(Error::NotFound(
                if txn_get(ctx, &resp.op_responses(), 0).is_empty() {
                    hmeta
                } else {
                    smeta
                },
            ));
        }
        self.subnets.insert(subnet.id.clone(), bridge.to_string());
        Ok(())
    }

    /// Unlinks `subnet` (a missing link is fine).
    pub async fn remove_subnet(&mut self, subnet: &Subnet) -> Result<()> {
        self.ctx
            .kv()
            .delete(
                self.ctx.abs(&keys::hypervisor_subnet(&self.id, &subnet.id)),
                None,
            )
            .await?;
        self.subnets.remove(&subnet.id);
        Ok(())
    }

    /// Deletes the hypervisor and everything under its key (links, configuration,
    /// heartbeat, `allocated`) in one transaction guarded by its revision. Refused while guests are
    /// placed on it (checked against etcd, not only this copy).
    pub async fn destroy(&mut self) -> Result<()> {
        if !self.guests.is_empty() {
            return Err(Error::Refused("not empty".into()));
        }
        if self.mod_revision == 0 {
            return Err(Error::Invalid("not persisted".into()));
        }
        let ctx = &self.ctx;
        let guests = keys::hypervisor_guests_prefix(&self.id);
        let hmeta = keys::hypervisor_metadata(&self.id);
        let txn = Txn::new()
            .when(vec![
                ctx.cmp_rev(&hmeta, self.mod_revision),
                ctx.cmp_prefix_empty(&guests),
            ])
            .and_then(vec![
                ctx.op_delete_prefix(&keys::hypervisor_prefix(&self.id))
            ])
            .or_else(vec![ctx.op_get_prefix(&guests)]);
        let resp = ctx.commit(txn).await?;
        if !resp.succeeded() {
            if !txn_get(ctx, &resp.op_responses(), 0).is_empty() {
                return Err(Error::Refused("not empty".into()));
            }
            return Err(Error::Conflict(format!(
                "{hmeta} was changed since it was read"
            )));
        }
        self.mod_revision = 0;
        Ok(())
    }

    /// Fails with [`Error::NotThisHypervisor`] unless [`hypervisor_id`] is this
    /// hypervisor's id: for code that must run on the host itself.
    pub fn verify_on_hv(&self) -> Result<()> {
        if hypervisor_id() == self.id {
            Ok(())
        } else {
            Err(Error::NotThisHypervisor)
        }
    }

    /// Recomputes total and available resources from the host and the guests' flavors
    /// and saves them in the metadata, re-reading and retrying when the metadata was
    /// changed concurrently (an operator's edit: placement never writes it, and this
    /// never touches placement's `allocated` key). See [`crate::host::host_resources`]
    /// for the host side.
    pub async fn update_resources(&mut self) -> Result<()> {
        let dir = self
            .config
            .get("guestDiskDir")
            .cloned()
            .unwrap_or_else(|| DEFAULT_GUEST_DISK_DIR.to_string());
        self.update_resources_with(&dir).await
    }

    /// [`Hypervisor::update_resources`] with the guest-disk directory given explicitly.
    pub async fn update_resources_with(&mut self, guest_disk_dir: &str) -> Result<()> {
        let total = host_resources(guest_disk_dir)?;
        for attempt in 0..MAX_ATTEMPTS {
            self.refresh().await?;
            let used = guests_usage(&self.ctx, &self.guests).await?;
            self.total_resources = total;
            self.available_resources = total.saturating_sub(&used);
            match self.save().await {
                Ok(()) => return Ok(()),
                Err(Error::Conflict(_)) => backoff(attempt).await,
                Err(e) => return Err(e),
            }
        }
        Err(Error::TooManyConflicts {
            what: format!("update resources of {}", self.id),
            attempts: MAX_ATTEMPTS,
        })
    }

    /// Calls `f` for every guest placed here (as of this copy), loaded with batched reads
    /// of up to 100 guests each; a guest that no longer exists is [`Error::NotFound`].
    /// Stops at the first error.
    pub async fn for_each_guest<F: FnMut(Guest) -> Result<()>>(&self, mut f: F) -> Result<()> {
        let ctx = self.context();
        for chunk in self.guests().chunks(100) {
            let ops: Vec<TxnOp> = chunk
                .iter()
                .map(|g| ctx.op_get(&keys::guest_metadata(g)))
                .collect();
            let r = ctx.txn(Txn::new().and_then(ops)).await?.op_responses();
            for (i, id) in chunk.iter().enumerate() {
                let kv = txn_get(ctx, &r, i)
                    .into_iter()
                    .next()
                    .ok_or_else(|| Error::NotFound(keys::guest_metadata(id)))?;
                f(Guest::from_stored(ctx, id, &kv.value, kv.mod_revision)?)?;
            }
        }
        Ok(())
    }

    pub(crate) fn push_guest(&mut self, guest: &str) {
        if !self.guests.iter().any(|g| g == guest) {
            self.guests.push(guest.to_string());
        }
    }

    pub(crate) fn drop_guest(&mut self, guest: &str) {
        self.guests.retain(|g| g != guest);
    }

    pub(crate) fn drop_subnet(&mut self, subnet: &str) {
        self.subnets.remove(subnet);
    }

    pub(crate) fn set_alive(&mut self, alive: bool) {
        self.alive = alive;
    }

    /// The `allocated` figure and its revision, when this copy read a usable key.
    pub(crate) fn allocated_state(&self) -> Option<(Resources, i64)> {
        self.allocated
            .filter(|_| self.allocated_rev != 0)
            .map(|r| (r, self.allocated_rev))
    }

    /// Records the `allocated` key as read or written (`None`: absent or unreadable;
    /// `rev` 0: absent).
    pub(crate) fn set_allocated(&mut self, figure: Option<Resources>, rev: i64) {
        self.allocated = figure;
        self.allocated_rev = rev;
    }

    /// Records the `allocated` key from its stored value (`None`: deleted).
    pub(crate) fn apply_allocated(&mut self, value: Option<&[u8]>, rev: i64) {
        match value {
            None => self.set_allocated(None, 0),
            Some(v) => match Resources::from_json(v) {
                Ok(r) => self.set_allocated(Some(r), rev),
                Err(e) => {
                    tracing::warn!(hypervisor = %self.id, error = %e, "unreadable allocated figure");
                    self.set_allocated(None, rev);
                }
            },
        }
    }

    /// The metadata as stored at [`Hypervisor::revision`] (this copy when never stored),
    /// without this copy's unsaved changes, with this copy's `allocated` figure.
    pub(crate) fn stored_metadata(&self) -> Result<Hypervisor> {
        if self.stored.is_empty() {
            return Ok(self.clone());
        }
        let mut h = Hypervisor::blank(&self.ctx, self.id.clone());
        h.decode_json(&self.stored)?;
        h.id = self.id.clone();
        h.mod_revision = self.mod_revision;
        h.stored = self.stored.clone();
        h.set_allocated(self.allocated, self.allocated_rev);
        Ok(h)
    }

    /// Takes the stored metadata (revision, resources, stored JSON) of `fresh`, keeping
    /// this copy's other fields.
    pub(crate) fn take_stored(&mut self, fresh: &Hypervisor) {
        self.mod_revision = fresh.mod_revision;
        self.total_resources = fresh.total_resources;
        self.available_resources = fresh.available_resources;
        self.stored = fresh.stored.clone();
    }

    pub(crate) fn insert_subnet(&mut self, subnet: &str, bridge: &str) {
        self.subnets.insert(subnet.to_string(), bridge.to_string());
    }

    /// Takes the links, configuration, liveness and `allocated` figure of `old` (a copy
    /// whose metadata was replaced by a watch event).
    pub(crate) fn absorb_links(&mut self, old: Hypervisor) {
        self.subnets = old.subnets;
        self.guests = old.guests;
        self.config = old.config;
        self.alive = old.alive;
        self.allocated = old.allocated;
        self.allocated_rev = old.allocated_rev;
    }
}

impl Context {
    /// A new hypervisor with a fresh id (not saved).
    pub fn new_hypervisor(&self) -> Hypervisor {
        Hypervisor::blank(self, new_id())
    }

    /// Loads hypervisor `id` with its links, configuration and liveness.
    pub async fn hypervisor(&self, id: &str) -> Result<Hypervisor> {
        let mut h = Hypervisor::blank(self, canonicalize(id)?);
        h.refresh().await?;
        Ok(h)
    }

    /// Loads hypervisor `id`'s metadata and configuration (address, resources,
    /// `agentPort`), without its guest and subnet links or liveness: one transaction of
    /// two small reads, whatever the number of its guests (for reaching its agent).
    pub async fn hypervisor_settings(&self, id: &str) -> Result<Hypervisor> {
        let id = canonicalize(id)?;
        let meta = keys::hypervisor_metadata(&id);
        let config = format!("{}{}", keys::hypervisor_prefix(&id), keys::CONFIG_DIR);
        let txn = Txn::new().and_then(vec![self.op_get(&meta), self.op_get_prefix(&config)]);
        let r = self.txn(txn).await?.op_responses();
        let mut items: Vec<(String, Kv)> = Vec::new();
        for kv in txn_get(self, &r, 0) {
            items.push((keys::METADATA.to_string(), kv));
        }
        for kv in txn_get(self, &r, 1) {
            if let Some(name) = kv.key.strip_prefix(config.as_str()).map(str::to_string) {
                items.push((format!("{}{name}", keys::CONFIG_DIR), kv));
            }
        }
        Hypervisor::from_keys(self, &id, &items)
    }

    /// The resource figures of hypervisor `id`, for operators: total, available (as
    /// reported), allocated (what placement has promised) and free (total − allocated).
    /// When the `allocated` key does not exist yet (a store written by the Go library)
    /// the figure is computed from the guests linked to the hypervisor, without writing
    /// it.
    pub async fn hypervisor_resources(&self, id: &str) -> Result<HypervisorResources> {
        let h = self.hypervisor(id).await?;
        let allocated = match h.allocated_state() {
            Some((figure, _)) => figure,
            None => guests_usage(self, h.guests()).await?,
        };
        Ok(HypervisorResources {
            total: h.total_resources,
            available: h.available_resources,
            allocated,
            free: h.total_resources.saturating_sub(&allocated),
        })
    }

    /// Every hypervisor, fully loaded, from one ranged read. Broken entries (no or
    /// undecodable metadata) are skipped with a warning instead of failing the listing.
    pub async fn hypervisors(&self) -> Result<Vec<Hypervisor>> {
        Ok(hypervisors_from(
            self,
            self.get_prefix(keys::HYPERVISORS).await?,
        ))
    }

    /// Calls `f` for every hypervisor (see [`Context::hypervisors`]); stops at the first
    /// error `f` returns.
    pub async fn for_each_hypervisor<F: FnMut(Hypervisor) -> Result<()>>(
        &self,
        mut f: F,
    ) -> Result<()> {
        for h in self.hypervisors().await? {
            f(h)?;
        }
        Ok(())
    }

    /// The first hypervisor (in key order) for which `pred` is true.
    pub async fn first_hypervisor<F: FnMut(&Hypervisor) -> bool>(
        &self,
        mut pred: F,
    ) -> Result<Option<Hypervisor>> {
        Ok(self.hypervisors().await?.into_iter().find(|h| pred(h)))
    }
}

/// The resource figures of one hypervisor ([`Context::hypervisor_resources`]); as JSON
/// `{"total":{…},"available":{…},"allocated":{…},"free":{…}}`, each a
/// `{"memory","disk","cpu"}` object.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct HypervisorResources {
    /// What the host offers (`total_resources`).
    pub total: Resources,
    /// What the host reported left (`available_resources`, written by its heartbeat).
    pub available: Resources,
    /// What placement has promised: the sum of the flavors of its guests.
    pub allocated: Resources,
    /// What placement may still promise: `total − allocated`, floored at zero.
    pub free: Resources,
}

/// The `allocated` figure of hypervisor `id` with its `mod_revision`, building the key
/// when it is absent or unreadable (a store written by the Go library or an older
/// version): the sum of the flavors of the guests linked under the hypervisor, written
/// only if no link was added or changed since they were read, the key is still as it was
/// seen and the hypervisor still exists. `None` when the hypervisor's metadata does not
/// exist.
pub(crate) async fn ensure_allocated(ctx: &Context, id: &str) -> Result<Option<(Resources, i64)>> {
    let links = keys::hypervisor_guests_prefix(id);
    let akey = keys::hypervisor_allocated(id);
    let hmeta = keys::hypervisor_metadata(id);
    for attempt in 0..MAX_ATTEMPTS {
        let resp = ctx
            .txn(Txn::new().and_then(vec![
                ctx.op_get_prefix(&links),
                ctx.op_get(&akey),
                ctx.op_get(&hmeta),
            ]))
            .await?;
        let read_rev = revision(&resp);
        let r = resp.op_responses();
        if txn_get(ctx, &r, 2).is_empty() {
            return Ok(None);
        }
        let seen = txn_get(ctx, &r, 1).into_iter().next();
        if let Some(kv) = &seen {
            match Resources::from_json(&kv.value) {
                Ok(figure) => return Ok(Some((figure, kv.mod_revision))),
                Err(e) => {
                    tracing::warn!(key = %akey, error = %e, "unreadable allocated figure, rebuilding it")
                }
            }
        }
        let guests: Vec<String> = txn_get(ctx, &r, 0)
            .into_iter()
            .filter_map(|kv| kv.key.strip_prefix(&links).map(str::to_string))
            .collect();
        let sum = guests_usage(ctx, &guests).await?;
        let txn = Txn::new()
            .when(vec![
                ctx.cmp_rev(&akey, seen.as_ref().map_or(0, |kv| kv.mod_revision)),
                ctx.cmp_prefix_unchanged(&links, read_rev),
                ctx.cmp_present(&hmeta),
            ])
            .and_then(vec![ctx.op_put(&akey, sum.to_json())]);
        let out = ctx.txn(txn).await?;
        if out.succeeded() {
            tracing::info!(hypervisor = %id, guests = guests.len(), allocated = ?sum, "built the allocated figure from the linked guests");
            return Ok(Some((sum, revision(&out))));
        }
        backoff(attempt).await;
    }
    Err(Error::TooManyConflicts {
        what: format!("build the allocated figure of hypervisor {id}"),
        attempts: MAX_ATTEMPTS,
    })
}

pub(crate) fn hypervisors_from(ctx: &Context, kvs: Vec<Kv>) -> Vec<Hypervisor> {
    build_trees(keys::HYPERVISORS, kvs, |id, items| {
        Hypervisor::from_keys(ctx, id, items)
    })
}

/// Sum of the flavors of `guests` (batched reads of at most 100 keys each, within etcd's
/// limit of operations per transaction: the guests, then their flavors). A guest or
/// flavor that does not exist (or does not decode) counts as nothing, with a warning.
pub(crate) async fn guests_usage(ctx: &Context, guests: &[String]) -> Result<Resources> {
    let mut used = Resources::default();
    if guests.is_empty() {
        return Ok(used);
    }
    let mut flavors = Vec::new();
    for chunk in guests.chunks(100) {
        let ops: Vec<TxnOp> = chunk
            .iter()
            .map(|g| ctx.op_get(&keys::guest_metadata(g)))
            .collect();
        let r = ctx.txn(Txn::new().and_then(ops)).await?.op_responses();
        for (i, id) in chunk.iter().enumerate() {
            let Some(kv) = txn_get(ctx, &r, i).into_iter().next() else {
                tracing::warn!(guest = %id, "a linked guest does not exist, counted as nothing");
                continue;
            };
            match Guest::from_stored(ctx, id, &kv.value, kv.mod_revision) {
                Ok(g) => flavors.push(g.flavor),
                Err(e) => {
                    tracing::warn!(guest = %id, error = %e, "undecodable guest, counted as nothing")
                }
            }
        }
    }
    let distinct: Vec<String> = flavors
        .iter()
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut per = BTreeMap::new();
    for chunk in distinct.chunks(100) {
        let ops: Vec<TxnOp> = chunk
            .iter()
            .map(|f| ctx.op_get(&keys::flavor_metadata(f)))
            .collect();
        let r = ctx.txn(Txn::new().and_then(ops)).await?.op_responses();
        for (i, id) in chunk.iter().enumerate() {
            let Some(kv) = txn_get(ctx, &r, i).into_iter().next() else {
                tracing::warn!(flavor = %id, "the flavor of a guest does not exist, counted as nothing");
                continue;
            };
            match Flavor::from_stored(ctx, id, &kv.value, kv.mod_revision) {
                Ok(f) => {
                    per.insert(id.clone(), f.resources);
                }
                Err(e) => {
                    tracing::warn!(flavor = %id, error = %e, "undecodable flavor, counted as nothing")
                }
            }
        }
    }
    for f in &flavors {
        if let Some(r) = per.get(f) {
            used = used.saturating_add(r);
        }
    }
    Ok(used)
}

crate::codec::stored_entity!(Hypervisor);
