//! [`FwGroup`] and [`FwRule`]: named sets of ingress firewall rules guests refer to.

use std::collections::BTreeMap;

use ipnetwork::IpNetwork;
use serde::Serialize;

use crate::codec::{canonicalize, new_id, parse_cidr, ser_cidr, Obj};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::keys;

/// One ingress rule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FwRule {
    /// Allowed source network; omitted from the JSON when absent.
    #[serde(serialize_with = "ser_cidr", skip_serializing_if = "Option::is_none")]
    pub source: Option<IpNetwork>,
    /// Another group whose members are allowed; omitted when empty.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub group: String,
    /// First port.
    #[serde(rename = "portStart")]
    pub port_start: u32,
    /// Last port.
    #[serde(rename = "portEnd")]
    pub port_end: u32,
    /// `tcp`, `udp`, …
    pub protocol: String,
    /// Stored as given (renderers treat every rule as accept).
    pub action: String,
}

/// A named set of ingress rules guests refer to.
#[derive(Debug, Clone, Serialize)]
pub struct FwGroup {
    #[serde(skip)]
    ctx: Context,
    /// Lower-case UUID.
    pub id: String,
    /// Free-form key/values.
    pub metadata: BTreeMap<String, String>,
    /// The rules (always an array in the JSON).
    pub rules: Vec<FwRule>,
    #[serde(skip)]
    mod_revision: i64,
}

fn port(o: &Obj, name: &str) -> Result<u32> {
    let v = o.u64(name)?.unwrap_or(0);
    u32::try_from(v).map_err(|_| Error::InvalidJson(format!("{name}: {v} is too large")))
}

impl FwGroup {
    fn blank(ctx: &Context, id: String) -> FwGroup {
        FwGroup {
            ctx: ctx.clone(),
            id,
            metadata: BTreeMap::new(),
            rules: Vec::new(),
            mod_revision: 0,
        }
    }

    fn key(&self) -> String {
        keys::fwgroup_metadata(&self.id)
    }

    /// Replaces every field from a JSON document (absent → empty); an invalid rule
    /// `source` fails the whole decode and changes nothing.
    pub fn decode_json(&mut self, data: &[u8]) -> Result<()> {
        let o = Obj::parse(data)?;
        let mut rules = Vec::new();
        for r in o.array("rules")?.unwrap_or_default() {
            rules.push(FwRule {
                source: match r.string("source")? {
                    Some(s) if !s.is_empty() => Some(parse_cidr(&s)?),
                    _ => None,
                },
                group: r.string("group")?.unwrap_or_default(),
                port_start: port(&r, "portStart")?,
                port_end: port(&r, "portEnd")?,
                protocol: r.string("protocol")?.unwrap_or_default(),
                action: r.string("action")?.unwrap_or_default(),
            });
        }
        self.id = o.string("id")?.unwrap_or_default();
        self.metadata = o.map("metadata")?.unwrap_or_default();
        self.rules = rules;
        Ok(())
    }

    /// Checks the id.
    pub fn validate(&self) -> Result<()> {
        crate::codec::check_id(&self.id, "invalid ID")
    }

    /// Reloads the group from etcd.
    pub async fn refresh(&mut self) -> Result<()> {
        let kv = self
            .ctx
            .get(&self.key())
            .await?
            .ok_or_else(|| Error::NotFound(self.key()))?;
        *self = FwGroup::from_stored(&self.ctx, &self.id, &kv.value, kv.mod_revision)?;
        Ok(())
    }

    pub(crate) fn from_stored(ctx: &Context, id: &str, value: &[u8], rev: i64) -> Result<FwGroup> {
        let mut g = FwGroup::blank(ctx, id.to_string());
        g.decode_json(value)?;
        g.id = id.to_string();
        g.mod_revision = rev;
        Ok(g)
    }
}

impl Context {
    /// A new firewall group with a fresh id (not saved).
    pub fn new_fwgroup(&self) -> FwGroup {
        FwGroup::blank(self, new_id())
    }

    /// Loads firewall group `id`.
    pub async fn fwgroup(&self, id: &str) -> Result<FwGroup> {
        let mut g = FwGroup::blank(self, canonicalize(id)?);
        g.refresh().await?;
        Ok(g)
    }
}

crate::codec::stored_entity!(FwGroup);

crate::codec::saved_by_uuid!(FwGroup);
