//! [`Vlan`]s (identified by their tag, 1–4095), [`VlanGroup`]s (named sets of VLANs
//! guests are attached to) and the links between them. A link is two keys, one on each
//! side, always written and removed together in one transaction (the original could leave
//! one side behind; see docs/compat.md, section "lochness").

use std::collections::BTreeMap;

use etcd_client::Txn;
use serde::Serialize;

use crate::codec::{canonicalize, new_id, Obj};
use crate::context::{txn_get, Context, Kv};
use crate::error::{Error, Result};
use crate::keys;

/// A VLAN, identified by its tag.
#[derive(Debug, Clone, Serialize)]
pub struct Vlan {
    #[serde(skip)]
    ctx: Context,
    /// 1–4095.
    pub tag: i64,
    /// Free text.
    pub description: String,
    #[serde(skip)]
    groups: Vec<String>,
    #[serde(skip)]
    mod_revision: i64,
}

/// A named set of VLANs guests can be attached to.
#[derive(Debug, Clone, Serialize)]
pub struct VlanGroup {
    #[serde(skip)]
    ctx: Context,
    /// Lower-case UUID.
    pub id: String,
    /// Free text.
    pub description: String,
    /// Free-form key/values.
    pub metadata: BTreeMap<String, String>,
    #[serde(skip)]
    vlans: Vec<i64>,
    #[serde(skip)]
    mod_revision: i64,
}

impl Vlan {
    fn blank(ctx: &Context, tag: i64) -> Vlan {
        Vlan {
            ctx: ctx.clone(),
            tag: if tag == 0 { 1 } else { tag },
            description: String::new(),
            groups: Vec::new(),
            mod_revision: 0,
        }
    }

    /// Applies a JSON document with the default decode rules.
    pub fn decode_json(&mut self, data: &[u8]) -> Result<()> {
        let o = Obj::parse(data)?;
        if let Some(v) = o.i64("tag")? {
            self.tag = v;
        }
        if let Some(v) = o.string("description")? {
            self.description = v;
        }
        Ok(())
    }

    /// Checks `1 ≤ tag ≤ 4095`.
    pub fn validate(&self) -> Result<()> {
        if (1..=4095).contains(&self.tag) {
            Ok(())
        } else {
            Err(Error::Invalid("invalid tag".into()))
        }
    }

    /// Ids of the groups this VLAN belongs to.
    pub fn vlan_groups(&self) -> &[String] {
        &self.groups
    }

    /// Validates and writes the VLAN with compare-and-swap on its revision.
    pub async fn save(&mut self) -> Result<()> {
        self.validate()?;
        let key = keys::vlan_metadata(self.tag);
        self.mod_revision = self
            .ctx
            .cas_put(&key, self.to_json(), self.mod_revision)
            .await?;
        Ok(())
    }

    pub(crate) fn from_keys(ctx: &Context, tag: i64, items: &[(String, Kv)]) -> Result<Vlan> {
        let mut v = Vlan::blank(ctx, tag);
        let mut found = false;
        for (tail, kv) in items {
            if tail == keys::METADATA {
                v.decode_json(&kv.value)?;
                v.mod_revision = kv.mod_revision;
                found = true;
            } else if let Some(g) = tail.strip_prefix(keys::VLANGROUPS_DIR) {
                v.groups.push(g.to_string());
            }
        }
        if !found {
            return Err(Error::NotFound(keys::vlan_metadata(tag)));
        }
        v.tag = tag;
        Ok(v)
    }

    /// Reloads the VLAN and its group links in one ranged read.
    pub async fn refresh(&mut self) -> Result<()> {
        let prefix = keys::vlan_prefix(self.tag);
        let items = self.ctx.get_tree(&prefix).await?;
        *self = Vlan::from_keys(&self.ctx, self.tag, &items)?;
        Ok(())
    }

    /// Deletes the VLAN, its links on both sides, in one transaction guarded by the
    /// revisions read just before (retried on conflict). Deleting an unsaved VLAN is a
    /// no-op.
    pub async fn destroy(&mut self) -> Result<()> {
        let tag = self.tag;
        self.ctx
            .destroy_tree(&keys::vlan_prefix(tag), |tail| {
                tail.strip_prefix(keys::VLANGROUPS_DIR)
                    .map(|g| keys::vlangroup_vlan(g, tag))
            })
            .await?;
        self.groups.clear();
        self.mod_revision = 0;
        Ok(())
    }
}

impl VlanGroup {
    fn key(&self) -> String {
        keys::vlangroup_metadata(&self.id)
    }

    fn blank(ctx: &Context, id: String) -> VlanGroup {
        VlanGroup {
            ctx: ctx.clone(),
            id,
            description: String::new(),
            metadata: BTreeMap::new(),
            vlans: Vec::new(),
            mod_revision: 0,
        }
    }

    /// Applies a JSON document with the default decode rules.
    pub fn decode_json(&mut self, data: &[u8]) -> Result<()> {
        let o = Obj::parse(data)?;
        if let Some(v) = o.string("id")? {
            self.id = v;
        }
        if let Some(v) = o.string("description")? {
            self.description = v;
        }
        if let Some(m) = o.map("metadata")? {
            self.metadata.extend(m);
        }
        Ok(())
    }

    /// Checks the id.
    pub fn validate(&self) -> Result<()> {
        crate::codec::check_id(&self.id, "invalid ID")
    }

    /// Tags of the VLANs in this group.
    pub fn vlans(&self) -> &[i64] {
        &self.vlans
    }

    pub(crate) fn from_keys(ctx: &Context, id: &str, items: &[(String, Kv)]) -> Result<VlanGroup> {
        let mut g = VlanGroup::blank(ctx, id.to_string());
        let mut found = false;
        for (tail, kv) in items {
            if tail == keys::METADATA {
                g.decode_json(&kv.value)?;
                g.mod_revision = kv.mod_revision;
                found = true;
            } else if let Some(t) = tail.strip_prefix(keys::VLANS_DIR) {
                g.vlans.push(t.parse().unwrap_or(0));
            }
        }
        if !found {
            return Err(Error::NotFound(keys::vlangroup_metadata(id)));
        }
        g.id = id.to_string();
        Ok(g)
    }

    /// Reloads the group and its VLAN links in one ranged read.
    pub async fn refresh(&mut self) -> Result<()> {
        let prefix = keys::vlangroup_prefix(&self.id);
        let items = self.ctx.get_tree(&prefix).await?;
        *self = VlanGroup::from_keys(&self.ctx, &self.id, &items)?;
        Ok(())
    }

    /// Links `vlan` into this group: both link keys in one transaction that requires
    /// both entities to exist.
    pub async fn add_vlan(&mut self, vlan: &mut Vlan) -> Result<()> {
        if self.mod_revision == 0 {
            self.refresh().await?;
        }
        if vlan.mod_revision == 0 {
            vlan.refresh().await?;
        }
        let ctx = &self.ctx;
        let gmeta = keys::vlangroup_metadata(&self.id);
        let vmeta = keys::vlan_metadata(vlan.tag);
        let txn = Txn::new()
            .when(vec![ctx.cmp_present(&gmeta), ctx.cmp_present(&vmeta)])
            .and_then(vec![
                ctx.op_put(&keys::vlangroup_vlan(&self.id, vlan.tag), ""),
                ctx.op_put(&keys::vlan_group(vlan.tag, &self.id), ""),
            ])
            .or_else(vec![ctx.op_get(&gmeta)]);
        let resp = ctx.commit(txn).await?;
        if !resp.succeeded() {
            return Err(Error::NotFound(
                if txn_get(ctx, &resp.op_responses(), 0).is_empty() {
                    gmeta
                } else {
                    vmeta
                },
            ));
        }
        if !self.vlans.contains(&vlan.tag) {
            self.vlans.push(vlan.tag);
        }
        if !vlan.groups.contains(&self.id) {
            vlan.groups.push(self.id.clone());
        }
        Ok(())
    }

    /// Unlinks `vlan` from this group: both link keys in one transaction (missing keys
    /// are fine).
    pub async fn remove_vlan(&mut self, vlan: &mut Vlan) -> Result<()> {
        let ctx = &self.ctx;
        let txn = Txn::new().and_then(vec![
            ctx.op_delete(&keys::vlangroup_vlan(&self.id, vlan.tag)),
            ctx.op_delete(&keys::vlan_group(vlan.tag, &self.id)),
        ]);
        ctx.txn(txn).await?;
        self.vlans.retain(|t| *t != vlan.tag);
        vlan.groups.retain(|g| *g != self.id);
        Ok(())
    }

    /// Deletes the group and its links on both sides in one transaction guarded by the
    /// revisions read just before (retried on conflict).
    pub async fn destroy(&mut self) -> Result<()> {
        if self.id.is_empty() {
            return Err(Error::Invalid("missing id".into()));
        }
        let id = self.id.clone();
        self.ctx
            .destroy_tree(&keys::vlangroup_prefix(&id), |tail| {
                let tag = tail.strip_prefix(keys::VLANS_DIR)?.parse::<i64>().ok()?;
                Some(keys::vlan_group(tag, &id))
            })
            .await?;
        self.vlans.clear();
        self.mod_revision = 0;
        Ok(())
    }
}

impl Context {
    /// A new VLAN with tag 1 (not saved).
    pub fn new_vlan(&self) -> Vlan {
        Vlan::blank(self, 1)
    }

    /// Loads VLAN `tag` (0 means 1).
    pub async fn vlan(&self, tag: i64) -> Result<Vlan> {
        let mut v = Vlan::blank(self, tag);
        v.refresh().await?;
        Ok(v)
    }

    /// A new VLAN group with a fresh id (not saved).
    pub fn new_vlangroup(&self) -> VlanGroup {
        VlanGroup::blank(self, new_id())
    }

    /// Loads VLAN group `id`.
    pub async fn vlangroup(&self, id: &str) -> Result<VlanGroup> {
        let mut g = VlanGroup::blank(self, canonicalize(id)?);
        g.refresh().await?;
        Ok(g)
    }

    /// Calls `f` for every VLAN, loaded with one ranged read; stops at the first error.
    /// Broken entries are skipped with a warning.
    pub async fn for_each_vlan<F: FnMut(Vlan) -> Result<()>>(&self, f: F) -> Result<()> {
        let all = self
            .list_trees(keys::VLANS, |id, items| {
                Vlan::from_keys(self, id.parse().unwrap_or(0), items)
            })
            .await?;
        all.into_iter().try_for_each(f)
    }

    /// Calls `f` for every VLAN group, loaded with one ranged read; stops at the first
    /// error. Broken entries are skipped with a warning.
    pub async fn for_each_vlangroup<F: FnMut(VlanGroup) -> Result<()>>(&self, f: F) -> Result<()> {
        let all = self
            .list_trees(keys::VLANGROUPS, |id, items| {
                VlanGroup::from_keys(self, id, items)
            })
            .await?;
        all.into_iter().try_for_each(f)
    }
}

crate::codec::stored_entity!(Vlan);

crate::codec::stored_entity!(VlanGroup);

crate::codec::saved_by_uuid!(VlanGroup);
