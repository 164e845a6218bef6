//! The part of the cluster DHCP needs — hypervisors, subnets and guests, by id — read
//! from etcd at one revision and kept current from watch events on their metadata keys.

use std::collections::BTreeMap;

use etcd_client::{GetOptions, Txn, TxnOp, TxnOpResponse};
use lochness::watch::{ChangeKind, EntityKind, WatchEvent};
use lochness::{keys, Context, Guest, Hypervisor, Subnet};

/// The prefixes cdhcpd reads and watches.
pub const PREFIXES: [&str; 3] = [keys::HYPERVISORS, keys::SUBNETS, keys::GUESTS];

/// Hypervisors, subnets and guests by id, as of [`Model::revision`].
#[derive(Debug, Clone, Default)]
pub struct Model {
    /// Hypervisors by id (metadata only: no links, no liveness).
    pub hypervisors: BTreeMap<String, Hypervisor>,
    /// Subnets by id (metadata only).
    pub subnets: BTreeMap<String, Subnet>,
    /// Guests by id.
    pub guests: BTreeMap<String, Guest>,
    /// The etcd revision the model reflects: watches start after it.
    pub revision: i64,
}

/// Why a stored entity was left out of the model.
#[derive(Debug, thiserror::Error)]
#[error("{kind} {id}: {source}")]
pub struct Skipped {
    kind: &'static str,
    id: String,
    #[source]
    source: lochness::Error,
}

fn decode_hypervisor(ctx: &Context, id: &str, value: &[u8]) -> lochness::Result<Hypervisor> {
    let mut h = ctx.new_hypervisor();
    h.decode_json(value)?;
    h.id = id.to_string();
    Ok(h)
}

fn decode_subnet(ctx: &Context, id: &str, value: &[u8]) -> lochness::Result<Subnet> {
    let mut s = ctx.new_subnet();
    s.decode_json(value)?;
    s.id = id.to_string();
    Ok(s)
}

fn decode_guest(ctx: &Context, id: &str, value: &[u8]) -> lochness::Result<Guest> {
    let mut g = ctx.new_guest();
    // A new guest carries a MAC derived from its fresh id; the stored one decides here.
    g.mac = None;
    g.decode_json(value)?;
    g.id = id.to_string();
    Ok(g)
}

impl Model {
    /// Reads the three prefixes in one read-only transaction (one revision).
    pub async fn load(ctx: &Context) -> lochness::Result<Model> {
        let get = |p: &str| TxnOp::get(ctx.abs(p), Some(GetOptions::new().with_prefix()));
        let txn = Txn::new().and_then(PREFIXES.map(get).to_vec());
        let resp = ctx.txn(txn).await?;
        let mut model = Model {
            revision: resp.header().map(|h| h.revision()).unwrap_or_default(),
            ..Model::default()
        };
        for op in resp.op_responses() {
            let TxnOpResponse::Get(get) = op else {
                continue;
            };
            for kv in get.kvs() {
                let Some(key) = std::str::from_utf8(kv.key()).ok().and_then(|k| ctx.rel(k)) else {
                    continue;
                };
                let (entity, id, sub) = lochness::watch::classify(key);
                if let Err(e) = model.put(ctx, entity, &id, &sub, Some(kv.value())) {
                    tracing::warn!(error = %e, "left out of the DHCP configuration");
                }
            }
        }
        Ok(model)
    }

    /// Applies one watch event; whether the model changed.
    pub fn apply(&mut self, ctx: &Context, event: &WatchEvent) -> bool {
        self.revision = self.revision.max(event.revision);
        let value = (event.kind != ChangeKind::Delete).then_some(event.value.as_slice());
        match self.put(ctx, event.entity, &event.id, &event.sub, value) {
            Ok(changed) => changed,
            Err(e) => {
                // A value that does not decode: the entity is dropped (it cannot be served).
                tracing::warn!(error = %e, "left out of the DHCP configuration");
                true
            }
        }
    }

    /// Stores (`Some`) or drops (`None`) the entity of a metadata key; other keys are
    /// ignored. A value that does not decode drops the entity and is an error.
    fn put(
        &mut self,
        ctx: &Context,
        entity: EntityKind,
        id: &str,
        sub: &str,
        value: Option<&[u8]>,
    ) -> Result<bool, Skipped> {
        if sub != keys::METADATA || id.is_empty() {
            return Ok(false);
        }
        let skipped = |kind, source| Skipped {
            kind,
            id: id.to_string(),
            source,
        };
        match entity {
            EntityKind::Hypervisor => {
                self.hypervisors.remove(id);
                if let Some(v) = value {
                    let h = decode_hypervisor(ctx, id, v).map_err(|e| skipped("hypervisor", e))?;
                    self.hypervisors.insert(id.to_string(), h);
                }
            }
            EntityKind::Subnet => {
                self.subnets.remove(id);
                if let Some(v) = value {
                    let s = decode_subnet(ctx, id, v).map_err(|e| skipped("subnet", e))?;
                    self.subnets.insert(id.to_string(), s);
                }
            }
            EntityKind::Guest => {
                self.guests.remove(id);
                if let Some(v) = value {
                    let g = decode_guest(ctx, id, v).map_err(|e| skipped("guest", e))?;
                    self.guests.insert(id.to_string(), g);
                }
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// The guests DHCP serves, sorted by id: placed on a hypervisor, in a subnet the
    /// model knows, with a MAC and an address; each with its subnet.
    pub fn served_guests(&self) -> impl Iterator<Item = (&Guest, &Subnet)> {
        self.guests.values().filter_map(|g| {
            if g.hypervisor.is_empty() || g.mac.is_none() || g.ip.is_none() {
                return None;
            }
            self.subnets.get(&g.subnet).map(|s| (g, s))
        })
    }
}
