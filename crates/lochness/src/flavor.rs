//! [`Flavor`], the resource template guests are created from, and [`Resources`]
//! (memory and disk in MiB, virtual CPUs), which hypervisors use too.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use serde::Serialize;

use crate::codec::{canonicalize, is_uuid, new_id, Obj};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::keys;

/// Memory (MiB), disk (MiB) and virtual CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Resources {
    /// Memory in MiB.
    pub memory: u64,
    /// Disk in MiB.
    pub disk: u64,
    /// Virtual CPUs.
    pub cpu: u32,
}

impl Resources {
    /// Whether every figure of `self` is at least `need`'s.
    pub fn covers(&self, need: &Resources) -> bool {
        self.memory >= need.memory && self.disk >= need.disk && self.cpu >= need.cpu
    }

    /// `self - other`, each figure floored at zero.
    pub fn saturating_sub(&self, other: &Resources) -> Resources {
        Resources {
            memory: self.memory.saturating_sub(other.memory),
            disk: self.disk.saturating_sub(other.disk),
            cpu: self.cpu.saturating_sub(other.cpu),
        }
    }

    /// `self + other`, each figure capped at its maximum.
    pub fn saturating_add(&self, other: &Resources) -> Resources {
        Resources {
            memory: self.memory.saturating_add(other.memory),
            disk: self.disk.saturating_add(other.disk),
            cpu: self.cpu.saturating_add(other.cpu),
        }
    }

    /// The JSON form, `{"memory":M,"disk":D,"cpu":C}` (as in a hypervisor's
    /// `total_resources`, and the value of its `allocated` key).
    pub fn to_json(&self) -> String {
        crate::codec::to_json(self)
    }

    /// Parses the JSON form; absent members are zero.
    pub fn from_json(data: &[u8]) -> Result<Resources> {
        let mut r = Resources::default();
        r.apply(&Obj::parse(data)?)?;
        Ok(r)
    }

    /// Field by field: present fields overwrite (`null` keeps the current value).
    pub(crate) fn apply(&mut self, o: &Obj) -> Result<()> {
        if let Some(v) = o.u64("memory")? {
            self.memory = v;
        }
        if let Some(v) = o.u64("disk")? {
            self.disk = v;
        }
        if let Some(v) = o.u64("cpu")? {
            self.cpu = u32::try_from(v)
                .map_err(|_| Error::InvalidJson(format!("cpu: {v} is too large")))?;
        }
        Ok(())
    }
}

/// Whether `image` is a valid flavor image reference: a UUID, or a name of 1–64
/// characters from `[A-Za-z0-9._-]` (the original accepted only UUIDs; see
/// docs/compat.md, section "lochness").
pub fn valid_image_ref(image: &str) -> bool {
    is_uuid(image)
        || (!image.is_empty()
            && image.len() <= 64
            && image
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')))
}

/// A resource template guests are created from.
#[derive(Debug, Clone, Serialize)]
pub struct Flavor {
    #[serde(skip)]
    ctx: Context,
    /// Lower-case UUID.
    pub id: String,
    /// Image id (UUID) or image name.
    pub image: String,
    /// Free-form key/values.
    pub metadata: BTreeMap<String, String>,
    /// What a guest of this flavor gets (flattened into the JSON).
    #[serde(flatten)]
    pub resources: Resources,
    #[serde(skip)]
    mod_revision: i64,
}

impl Flavor {
    fn blank(ctx: &Context, id: String) -> Flavor {
        Flavor {
            ctx: ctx.clone(),
            id,
            image: String::new(),
            metadata: BTreeMap::new(),
            resources: Resources::default(),
            mod_revision: 0,
        }
    }

    fn key(&self) -> String {
        keys::flavor_metadata(&self.id)
    }

    /// Applies a JSON document with the default decode rules (present fields overwrite,
    /// absent ones stay, metadata keys are added).
    pub fn decode_json(&mut self, data: &[u8]) -> Result<()> {
        let o = Obj::parse(data)?;
        if let Some(v) = o.string("id")? {
            self.id = v;
        }
        if let Some(v) = o.string("image")? {
            self.image = v;
        }
        if let Some(m) = o.map("metadata")? {
            self.metadata.extend(m);
        }
        self.resources.apply(&o)
    }

    /// Checks the flavor's id and image.
    pub fn validate(&self) -> Result<()> {
        if self.id.is_empty() {
            return Err(Error::Invalid("flavor ID required".into()));
        }
        if canonicalize(&self.id).is_err() {
            return Err(Error::Invalid("flavor ID must be uuid".into()));
        }
        if self.image.is_empty() {
            return Err(Error::Invalid("flavor image required".into()));
        }
        if !valid_image_ref(&self.image) {
            return Err(Error::Invalid(
                "flavor image must be uuid or image name".into(),
            ));
        }
        Ok(())
    }

    /// Reloads the flavor from etcd.
    pub async fn refresh(&mut self) -> Result<()> {
        let kv = self
            .ctx
            .get(&self.key())
            .await?
            .ok_or_else(|| Error::NotFound(self.key()))?;
        let mut fresh = Flavor::blank(&self.ctx, self.id.clone());
        fresh.decode_json(&kv.value)?;
        fresh.id = self.id.clone();
        fresh.mod_revision = kv.mod_revision;
        *self = fresh;
        Ok(())
    }

    pub(crate) fn from_stored(ctx: &Context, id: &str, value: &[u8], rev: i64) -> Result<Flavor> {
        let mut f = Flavor::blank(ctx, id.to_string());
        f.decode_json(value)?;
        f.id = id.to_string();
        f.mod_revision = rev;
        Ok(f)
    }
}

impl Context {
    /// A new flavor with a fresh id (not saved).
    pub fn new_flavor(&self) -> Flavor {
        Flavor::blank(self, new_id())
    }

    /// Loads flavor `id`.
    pub async fn flavor(&self, id: &str) -> Result<Flavor> {
        let mut f = Flavor::blank(self, canonicalize(id)?);
        f.refresh().await?;
        Ok(f)
    }

    /// Every flavor, in one ranged read (entries that fail to decode are skipped with a
    /// warning).
    pub async fn flavors(&self) -> Result<Vec<Flavor>> {
        let mut out = Vec::new();
        for kv in self.get_prefix(keys::FLAVORS).await? {
            if let Some(id) = keys::metadata_id(keys::FLAVORS, &kv.key) {
                match Flavor::from_stored(self, id, &kv.value, kv.mod_revision) {
                    Ok(f) => out.push(f),
                    Err(e) => {
                        tracing::warn!(key = %kv.key, error = %e, "skipping undecodable flavor")
                    }
                }
            }
        }
        Ok(out)
    }
}

/// The resources of the flavors a context has read, so that placing a guest need not
/// read its flavor again. One per context ([`FlavorCache::of`]), shared by its clones;
/// entries are not refreshed once read.
#[derive(Debug, Default)]
pub(crate) struct FlavorCache(Mutex<HashMap<String, Resources>>);

impl FlavorCache {
    /// The cache of `ctx` (shared by its clones).
    pub(crate) fn of(ctx: &Context) -> std::sync::Arc<FlavorCache> {
        ctx.local::<FlavorCache>()
    }

    /// The resources of flavor `id` as last read.
    pub(crate) fn get(&self, id: &str) -> Option<Resources> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .copied()
    }

    /// Remembers the resources of flavor `id`.
    pub(crate) fn put(&self, id: &str, resources: Resources) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_string(), resources);
    }
}

crate::codec::stored_entity!(Flavor);

crate::codec::saved_by_uuid!(Flavor);
