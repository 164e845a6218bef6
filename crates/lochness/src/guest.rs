//! [`Guest`]: a virtual machine, with the references it is created from (flavor,
//! network, firewall and VLAN groups) and the fields placement sets (hypervisor, subnet,
//! address, bridge). Placing it is in [`crate::assign`] (`Hypervisor::add_guest`,
//! `Hypervisor::remove_guest` and `Guest::destroy`, which undoes a placement), choosing
//! where in [`crate::placement`] (`Guest::candidates`).

use std::collections::BTreeMap;
use std::net::IpAddr;

use etcd_client::{Txn, TxnOp};
use serde::Serialize;

use crate::codec::{canonicalize, new_id, ser_ip, ser_mac, Mac, Obj};
use crate::context::{metadata_of, revision, txn_get, Context};
use crate::error::{Error, Result};
use crate::keys;

/// A virtual machine.
#[derive(Debug, Clone, Serialize)]
pub struct Guest {
    #[serde(skip)]
    ctx: Context,
    /// Lower-case UUID.
    pub id: String,
    /// Free-form key/values, passed to the agent.
    pub metadata: BTreeMap<String, String>,
    /// Free text passed to the agent (`kvm`).
    #[serde(rename = "type")]
    pub kind: String,
    /// Flavor id.
    pub flavor: String,
    /// Hypervisor id, set by placement.
    pub hypervisor: String,
    /// Network id.
    pub network: String,
    /// Subnet id, set by placement.
    pub subnet: String,
    /// Firewall group id.
    pub fwgroup: String,
    /// VLAN group id.
    pub vlangroup: String,
    /// MAC of the guest's NIC.
    #[serde(serialize_with = "ser_mac")]
    pub mac: Option<Mac>,
    /// Address, set by placement.
    #[serde(serialize_with = "ser_ip")]
    pub ip: Option<IpAddr>,
    /// Bridge on the hypervisor, set by placement.
    pub bridge: String,
    #[serde(skip)]
    mod_revision: i64,
}

/// `02:` followed by the first five bytes of the MD5 of the id text (the agent derives
/// the MAC of a guest's first NIC the same way: [`mistify_types::derived_mac`]).
pub fn mac_for_id(id: &str) -> Mac {
    Mac::from_bytes(&mistify_types::derived_mac_bytes(id, 0))
}

fn merge_str(o: &Obj, name: &str, field: &mut String) -> Result<()> {
    if let Some(v) = o.string(name)? {
        if !v.is_empty() {
            *field = v;
        }
    }
    Ok(())
}

impl Guest {
    fn blank(ctx: &Context, id: String) -> Guest {
        Guest {
            ctx: ctx.clone(),
            id,
            metadata: BTreeMap::new(),
            kind: String::new(),
            flavor: String::new(),
            hypervisor: String::new(),
            network: String::new(),
            subnet: String::new(),
            fwgroup: String::new(),
            vlangroup: String::new(),
            mac: None,
            ip: None,
            bridge: String::new(),
            mod_revision: 0,
        }
    }

    /// The context this guest was loaded with.
    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// Applies a JSON document with the merge rules: a field overwrites only when present
    /// and non-empty. On any error nothing changes.
    pub fn decode_json(&mut self, data: &[u8]) -> Result<()> {
        let o = Obj::parse(data)?;
        let mut next = self.clone();
        merge_str(&o, "id", &mut next.id)?;
        if let Some(m) = o.map("metadata")? {
            next.metadata = m;
        }
        merge_str(&o, "type", &mut next.kind)?;
        merge_str(&o, "flavor", &mut next.flavor)?;
        merge_str(&o, "hypervisor", &mut next.hypervisor)?;
        merge_str(&o, "network", &mut next.network)?;
        merge_str(&o, "subnet", &mut next.subnet)?;
        merge_str(&o, "fwgroup", &mut next.fwgroup)?;
        merge_str(&o, "vlangroup", &mut next.vlangroup)?;
        if let Some(mac) = o.mac("mac")? {
            next.mac = Some(mac);
        }
        if let Some(ip) = o.ip("ip")? {
            next.ip = Some(ip);
        }
        merge_str(&o, "bridge", &mut next.bridge)?;
        *self = next;
        Ok(())
    }

    /// Applies a user's PATCH body with the merge rules, leaving the fields that only
    /// placement may change (`id`, `hypervisor`, `subnet`, `ip`, `bridge`) as they are, so
    /// a PATCH cannot desynchronise links and reservations.
    pub fn decode_patch(&mut self, data: &[u8]) -> Result<()> {
        let mut next = self.clone();
        next.decode_json(data)?;
        next.id.clone_from(&self.id);
        next.hypervisor.clone_from(&self.hypervisor);
        next.subnet.clone_from(&self.subnet);
        next.ip = self.ip;
        next.bridge.clone_from(&self.bridge);
        *self = next;
        Ok(())
    }

    /// Checks, in order: id, flavor id, network id, MAC present; and that the optional
    /// references are UUIDs when given.
    pub fn validate(&self) -> Result<()> {
        canonicalize(&self.id).map_err(|_| Error::Invalid("missing or invalid id".into()))?;
        canonicalize(&self.flavor)
            .map_err(|_| Error::Invalid("missing or invalid flavor".into()))?;
        canonicalize(&self.network)
            .map_err(|_| Error::Invalid("missing or invalid network".into()))?;
        if self.mac.is_none() {
            return Err(Error::Invalid("missing MAC".into()));
        }
        for (name, v) in [
            ("fwgroup", &self.fwgroup),
            ("vlangroup", &self.vlangroup),
            ("hypervisor", &self.hypervisor),
            ("subnet", &self.subnet),
        ] {
            if !v.is_empty() && canonicalize(v).is_err() {
                return Err(Error::Invalid(format!("invalid {name}")));
            }
        }
        Ok(())
    }

    /// Lower-cases the id and every reference (the empty optional ones stay empty).
    pub(crate) fn canonicalize_refs(&mut self) -> Result<()> {
        self.id = canonicalize(&self.id)?;
        self.flavor = canonicalize(&self.flavor)?;
        self.network = canonicalize(&self.network)?;
        for v in [
            &mut self.fwgroup,
            &mut self.vlangroup,
            &mut self.hypervisor,
            &mut self.subnet,
        ] {
            if !v.is_empty() {
                *v = canonicalize(v)?;
            }
        }
        Ok(())
    }

    /// Keys of the referenced entities that must exist: flavor, network, and the firewall
    /// and VLAN groups when set.
    pub(crate) fn reference_keys(&self) -> Vec<String> {
        let mut refs = vec![
            keys::flavor_metadata(&self.flavor),
            keys::network_metadata(&self.network),
        ];
        if !self.fwgroup.is_empty() {
            refs.push(keys::fwgroup_metadata(&self.fwgroup));
        }
        if !self.vlangroup.is_empty() {
            refs.push(keys::vlangroup_metadata(&self.vlangroup));
        }
        refs
    }

    /// Validates and writes the guest with compare-and-swap on its revision, in a
    /// transaction that also requires the referenced flavor, network, firewall group and
    /// VLAN group to exist ([`Error::NotFound`] names the missing one; nothing is written).
    pub async fn save(&mut self) -> Result<()> {
        self.validate()?;
        self.canonicalize_refs()?;
        let ctx = &self.ctx;
        let key = keys::guest_metadata(&self.id);
        let refs = self.reference_keys();
        let mut cmps = vec![ctx.cmp_rev(&key, self.mod_revision)];
        cmps.extend(refs.iter().map(|k| ctx.cmp_present(k)));
        let mut fail: Vec<TxnOp> = refs.iter().map(|k| ctx.op_get(k)).collect();
        fail.push(ctx.op_get(&key));
        let txn = Txn::new()
            .when(cmps)
            .and_then(vec![ctx.op_put(&key, self.to_json())])
            .or_else(fail);
        let resp = ctx.commit(txn).await?;
        if !resp.succeeded() {
            let r = resp.op_responses();
            if let Some(missing) = refs
                .iter()
                .enumerate()
                .find(|(i, _)| txn_get(ctx, &r, *i).is_empty())
            {
                return Err(Error::NotFound(missing.1.clone()));
            }
            return Err(Error::Conflict(if self.mod_revision == 0 {
                format!("{key} already exists")
            } else {
                format!("{key} was changed since it was read")
            }));
        }
        self.mod_revision = revision(&resp);
        Ok(())
    }

    pub(crate) fn from_stored(ctx: &Context, id: &str, value: &[u8], rev: i64) -> Result<Guest> {
        let mut g = Guest::blank(ctx, id.to_string());
        g.decode_json(value)?;
        g.id = id.to_string();
        g.mod_revision = rev;
        Ok(g)
    }

    /// Reloads the guest from etcd (every field as stored: fields cleared by another
    /// writer are cleared here too).
    pub async fn refresh(&mut self) -> Result<()> {
        let key = keys::guest_metadata(&self.id);
        let kv = self.ctx.get(&key).await?.ok_or(Error::NotFound(key))?;
        *self = Guest::from_stored(&self.ctx, &self.id, &kv.value, kv.mod_revision)?;
        Ok(())
    }

    pub(crate) fn set_revision(&mut self, rev: i64) {
        self.mod_revision = rev;
    }
}

impl Context {
    /// A new guest with a fresh id and the MAC derived from it (not saved).
    pub fn new_guest(&self) -> Guest {
        let id = new_id();
        let mut g = Guest::blank(self, id.clone());
        g.mac = Some(mac_for_id(&id));
        g
    }

    /// Loads guest `id`.
    pub async fn guest(&self, id: &str) -> Result<Guest> {
        let mut g = Guest::blank(self, canonicalize(id)?);
        g.refresh().await?;
        Ok(g)
    }

    /// Every guest, from one ranged read; undecodable entries are skipped with a warning.
    pub async fn guests(&self) -> Result<Vec<Guest>> {
        self.list_trees(keys::GUESTS, |id, items| {
            let kv = metadata_of(items, || keys::guest_metadata(id))?;
            Guest::from_stored(self, id, &kv.value, kv.mod_revision)
        })
        .await
    }

    /// Calls `f` for every guest (see [`Context::guests`]); stops at the first error.
    pub async fn for_each_guest<F: FnMut(Guest) -> Result<()>>(&self, mut f: F) -> Result<()> {
        for g in self.guests().await? {
            f(g)?;
        }
        Ok(())
    }
}

crate::codec::stored_entity!(Guest);
