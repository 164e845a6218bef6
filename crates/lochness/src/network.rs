//! [`Network`]: a logical group of subnets, and its subnet links. Attaching or detaching
//! a subnet changes the link and the subnet's `network` field in one transaction (the
//! original wrote them one after the other; see docs/compat.md, section "lochness").

use std::collections::BTreeMap;

use etcd_client::Txn;
use serde::Serialize;

use crate::codec::{canonicalize, new_id, Obj};
use crate::context::{revision, txn_get, Context, Kv};
use crate::error::{Error, Result};
use crate::keys;
use crate::subnet::Subnet;

/// A logical group of subnets guests are attached to.
#[derive(Debug, Clone, Serialize)]
pub struct Network {
    #[serde(skip)]
    ctx: Context,
    /// Lower-case UUID.
    pub id: String,
    /// Free-form key/values.
    pub metadata: BTreeMap<String, String>,
    #[serde(skip)]
    subnets: Vec<String>,
    #[serde(skip)]
    mod_revision: i64,
}

impl Network {
    fn key(&self) -> String {
        keys::network_metadata(&self.id)
    }

    fn blank(ctx: &Context, id: String) -> Network {
        Network {
            ctx: ctx.clone(),
            id,
            metadata: BTreeMap::new(),
            subnets: Vec::new(),
            mod_revision: 0,
        }
    }

    /// Applies a JSON document with the default decode rules.
    pub fn decode_json(&mut self, data: &[u8]) -> Result<()> {
        let o = Obj::parse(data)?;
        if let Some(v) = o.string("id")? {
            self.id = v;
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

    /// Ids of the subnets of this network (as of the last load, plus local changes).
    pub fn subnets(&self) -> &[String] {
        &self.subnets
    }

    pub(crate) fn from_keys(ctx: &Context, id: &str, items: &[(String, Kv)]) -> Result<Network> {
        let mut n = Network::blank(ctx, id.to_string());
        let mut found = false;
        for (tail, kv) in items {
            if tail == keys::METADATA {
                n.decode_json(&kv.value)?;
                n.mod_revision = kv.mod_revision;
                found = true;
            } else if let Some(s) = tail.strip_prefix(keys::SUBNETS_DIR) {
                if !s.contains('/') {
                    n.subnets.push(s.to_string());
                }
            }
        }
        if !found {
            return Err(Error::NotFound(keys::network_metadata(id)));
        }
        n.id = id.to_string();
        Ok(n)
    }

    /// Reloads the network and its subnet links in one ranged read.
    pub async fn refresh(&mut self) -> Result<()> {
        let prefix = keys::network_prefix(&self.id);
        let items = self.ctx.get_tree(&prefix).await?;
        *self = Network::from_keys(&self.ctx, &self.id, &items)?;
        Ok(())
    }

    /// Attaches `subnet` to this network in one transaction: the link key, the subnet's
    /// `network` field (compare-and-swap on the subnet) and the removal of the subnet's
    /// link from a previous network. Both must exist.
    pub async fn add_subnet(&mut self, subnet: &mut Subnet) -> Result<()> {
        if self.mod_revision == 0 {
            self.refresh().await?;
        }
        if subnet.revision() == 0 {
            subnet.refresh().await?;
        }
        let ctx = &self.ctx;
        let mut updated = subnet.clone();
        let old = std::mem::replace(&mut updated.network, self.id.clone());
        let skey = keys::subnet_metadata(&subnet.id);
        let mut ops = vec![
            ctx.op_put(&keys::network_subnet(&self.id, &subnet.id), ""),
            ctx.op_put(&skey, updated.to_json()),
        ];
        if !old.is_empty() && old != self.id {
            ops.push(ctx.op_delete(&keys::network_subnet(&old, &subnet.id)));
        }
        let txn = Txn::new()
            .when(vec![
                ctx.cmp_present(&keys::network_metadata(&self.id)),
                ctx.cmp_rev(&skey, subnet.revision()),
            ])
            .and_then(ops)
            .or_else(vec![ctx.op_get(&keys::network_metadata(&self.id))]);
        let resp = ctx.commit(txn).await?;
        if !resp.succeeded() {
            if txn_get(ctx, &resp.op_responses(), 0).is_empty() {
                return Err(Error::NotFound(keys::network_metadata(&self.id)));
            }
            return Err(Error::Conflict(format!(
                "subnet {} was changed since it was read",
                subnet.id
            )));
        }
        updated.set_revision(revision(&resp));
        *subnet = updated;
        if !self.subnets.contains(&subnet.id) {
            self.subnets.push(subnet.id.clone());
        }
        Ok(())
    }

    /// Detaches `subnet` in one transaction: deletes the link and clears the subnet's
    /// `network` field (compare-and-swap on the subnet).
    pub async fn remove_subnet(&mut self, subnet: &mut Subnet) -> Result<()> {
        if subnet.revision() == 0 {
            subnet.refresh().await?;
        }
        let ctx = &self.ctx;
        let mut updated = subnet.clone();
        let skey = keys::subnet_metadata(&subnet.id);
        let mut ops = vec![ctx.op_delete(&keys::network_subnet(&self.id, &subnet.id))];
        if updated.network == self.id {
            updated.network.clear();
            ops.push(ctx.op_put(&skey, updated.to_json()));
        }
        let txn = Txn::new()
            .when(vec![ctx.cmp_rev(&skey, subnet.revision())])
            .and_then(ops);
        let resp = ctx.commit(txn).await?;
        if !resp.succeeded() {
            return Err(Error::Conflict(format!(
                "subnet {} was changed since it was read",
                subnet.id
            )));
        }
        if updated.network.is_empty() {
            updated.set_revision(revision(&resp));
        }
        *subnet = updated;
        self.subnets.retain(|s| *s != subnet.id);
        Ok(())
    }
}

impl Context {
    /// A new network with a fresh id (not saved).
    pub fn new_network(&self) -> Network {
        Network::blank(self, new_id())
    }

    /// Loads network `id` with its subnet links.
    pub async fn network(&self, id: &str) -> Result<Network> {
        let mut n = Network::blank(self, canonicalize(id)?);
        n.refresh().await?;
        Ok(n)
    }

    /// Every network with its links, in one ranged read.
    pub async fn networks(&self) -> Result<Vec<Network>> {
        self.list_trees(keys::NETWORKS, |id, items| {
            Network::from_keys(self, id, items)
        })
        .await
    }
}

crate::codec::stored_entity!(Network);

crate::codec::saved_by_uuid!(Network);
