//! Kea DHCPv4 output: the part of the `Dhcp4` configuration cdhcpd owns, built from the
//! model, merged into the server's running configuration and applied through Kea's
//! control socket (`config-get`, `config-test`, then `config-set`) without a restart.
//!
//! What cdhcpd owns:
//! - the `subnet4` entries whose `user-context` has a `cdhcpd` member: one per lochness
//!   subnet (routers and subnet-mask options, the guests' reservations), and one per
//!   hypervisor network that is not a lochness subnet (the hypervisors' reservations,
//!   each with its own router and mask). No pools: a MAC without a reservation gets no
//!   address;
//! - the `client-classes` named `cdhcpd-…`: the hypervisors' PXE boot (iPXE clients get
//!   the HTTP script URL, others `undionly.kpxe` from the TFTP server).
//!
//! Everything else (interfaces, lease database, loggers, control socket, other subnets
//! and classes) stays as the server has it.
//!
//! Subnet ids are stable: a lochness subnet's id is the first 32 bits of its UUID, a
//! hypervisor network's the 32 bits of its network address (0 and 2^32−1 become 1 and
//! 2^32−2). An id that another subnet already has moves to the next free one.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use ipnetwork::Ipv4Network;
use serde_json::{json, Map, Value};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::model::Model;

/// The name prefix of the client classes cdhcpd owns.
pub const CLASS_PREFIX: &str = "cdhcpd-";
/// The `user-context` member that marks a subnet as cdhcpd's.
pub const OWNER_KEY: &str = "cdhcpd";
const MAX_ID: u32 = u32::MAX - 1;

/// What the hypervisors' PXE options need.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The cluster's domain (`-d`).
    pub domain: String,
    /// The TFTP server's address for `next-server` (Kea needs an address; the name
    /// `tftp.services.<domain>` is sent as server name and option 66 either way).
    pub next_server: Option<Ipv4Addr>,
}

/// One subnet cdhcpd wants in Kea.
#[derive(Debug, Clone)]
struct WantedSubnet {
    /// The id it prefers (see the module's documentation).
    preferred_id: u32,
    /// The `subnet4` entry without its `id`.
    entry: Map<String, Value>,
}

/// The part of the configuration cdhcpd owns, for one state of the model.
#[derive(Debug, Clone)]
pub struct Desired {
    subnets: Vec<WantedSubnet>,
    classes: Vec<Value>,
    /// A digest of all of it (stored in each owned subnet's `user-context`).
    pub digest: String,
    /// Guest reservations in it.
    pub guests: usize,
    /// Hypervisor reservations in it.
    pub hypervisors: usize,
}

fn v4(ip: Option<IpAddr>) -> Option<Ipv4Addr> {
    match ip {
        Some(IpAddr::V4(a)) => Some(a),
        _ => None,
    }
}

fn clamp(id: u32) -> u32 {
    id.clamp(1, MAX_ID)
}

/// The id a lochness subnet prefers: the first 32 bits of its UUID.
pub fn subnet_id_of(uuid: &str) -> u32 {
    let hex: String = uuid
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(8)
        .collect();
    let id = u32::from_str_radix(&hex, 16).unwrap_or_else(|_| {
        let d = md5::compute(uuid.as_bytes()).0;
        u32::from_be_bytes([d[0], d[1], d[2], d[3]])
    });
    clamp(id)
}

/// A reservation list with the checks Kea would refuse the whole configuration for:
/// the address inside the subnet, one reservation per MAC and per address.
#[derive(Debug, Default)]
struct Reservations {
    list: Vec<Value>,
    macs: BTreeSet<String>,
    ips: BTreeSet<Ipv4Addr>,
}

impl Reservations {
    fn add(
        &mut self,
        net: Ipv4Network,
        what: &str,
        id: &str,
        mac: String,
        ip: Ipv4Addr,
        options: Vec<Value>,
    ) -> bool {
        if !net.contains(ip) || ip == net.network() || ip == net.broadcast() && net.prefix() < 31 {
            tracing::warn!(%what, %id, %ip, subnet = %net, "address outside the subnet's hosts: no Kea reservation");
            return false;
        }
        if self.macs.contains(&mac) || self.ips.contains(&ip) {
            tracing::warn!(%what, %id, %mac, %ip, subnet = %net, "MAC or address already reserved in this subnet: no Kea reservation");
            return false;
        }
        self.macs.insert(mac.clone());
        self.ips.insert(ip);
        let mut r = json!({"hw-address": mac, "ip-address": ip.to_string(), "hostname": id});
        if !options.is_empty() {
            r["option-data"] = Value::Array(options);
        }
        self.list.push(r);
        true
    }
}

fn option(name: &str, data: impl ToString) -> Value {
    json!({"name": name, "data": data.to_string()})
}

impl Desired {
    /// What the model asks of Kea.
    pub fn from_model(model: &Model, opts: &Options) -> Desired {
        struct Building {
            preferred_id: u32,
            net: Ipv4Network,
            base: Map<String, Value>,
            reservations: Reservations,
        }
        let mut subnets: Vec<Building> = Vec::new();
        let mut by_net: BTreeMap<(Ipv4Addr, u8), usize> = BTreeMap::new();
        let mut by_subnet: BTreeMap<&str, usize> = BTreeMap::new();
        for s in model.subnets.values() {
            let Some(ipnetwork::IpNetwork::V4(cidr)) = s.cidr else {
                tracing::warn!(subnet = %s.id, "not an IPv4 subnet: not in Kea");
                continue;
            };
            let net = Ipv4Network::new(cidr.network(), cidr.prefix()).unwrap_or(cidr);
            if by_net.contains_key(&(net.network(), net.prefix())) {
                tracing::warn!(subnet = %s.id, cidr = %net, "another subnet has this prefix: not in Kea");
                continue;
            }
            let mut options = Vec::new();
            if let Some(gw) = v4(s.gateway) {
                options.push(option("routers", gw));
            }
            options.push(option("subnet-mask", net.mask()));
            let mut base = Map::new();
            base.insert("subnet".into(), json!(net.to_string()));
            base.insert("option-data".into(), Value::Array(options));
            base.insert("user-context".into(), json!({OWNER_KEY: {"subnet": s.id}}));
            by_net.insert((net.network(), net.prefix()), subnets.len());
            by_subnet.insert(&s.id, subnets.len());
            subnets.push(Building {
                preferred_id: subnet_id_of(&s.id),
                net,
                base,
                reservations: Reservations::default(),
            });
        }
        let mut guests = 0;
        let guest_domain = format!("guests.{}", opts.domain);
        for (g, s) in model.served_guests() {
            let (Some(i), Some(mac), Some(ip)) = (by_subnet.get(s.id.as_str()), &g.mac, v4(g.ip))
            else {
                continue;
            };
            let b = &mut subnets[*i];
            let options = vec![option("domain-name", &guest_domain)];
            if b.reservations
                .add(b.net, "guest", &g.id, mac.to_string(), ip, options)
            {
                guests += 1;
            }
        }
        let mut hypervisors = 0;
        let mut hv_macs = Vec::new();
        let node_domain = format!("nodes.{}", opts.domain);
        for h in model.hypervisors.values() {
            let (Some(mac), Some(ip), Some(mask)) = (&h.mac, v4(h.ip), v4(h.netmask)) else {
                tracing::debug!(hypervisor = %h.id, "no MAC, address or netmask: no Kea reservation");
                continue;
            };
            let Ok(net) = Ipv4Network::with_netmask(ip, mask)
                .and_then(|n| Ipv4Network::new(n.network(), n.prefix()))
            else {
                tracing::warn!(hypervisor = %h.id, %mask, "netmask is not a prefix: no Kea reservation");
                continue;
            };
            let i = *by_net
                .entry((net.network(), net.prefix()))
                .or_insert_with(|| {
                    let mut base = Map::new();
                    base.insert("subnet".into(), json!(net.to_string()));
                    base.insert(
                        "user-context".into(),
                        json!({OWNER_KEY: {"hypervisors": net.to_string()}}),
                    );
                    subnets.push(Building {
                        preferred_id: clamp(u32::from(net.network())),
                        net,
                        base,
                        reservations: Reservations::default(),
                    });
                    subnets.len() - 1
                });
            let mut options = Vec::new();
            if let Some(gw) = v4(h.gateway) {
                options.push(option("routers", gw));
            }
            options.push(option("subnet-mask", mask));
            options.push(option("domain-name", &node_domain));
            let b = &mut subnets[i];
            if b.reservations
                .add(b.net, "hypervisor", &h.id, mac.to_string(), ip, options)
            {
                hypervisors += 1;
                hv_macs.push(mac.to_string().replace(':', ""));
            }
        }
        let mut classes = Vec::new();
        if !hv_macs.is_empty() {
            let macs = hv_macs
                .iter()
                .map(|m| format!("pkt4.mac == 0x{m}"))
                .collect::<Vec<_>>()
                .join(" or ");
            let d = &opts.domain;
            classes.push(json!({
                "name": format!("{CLASS_PREFIX}hypervisor-ipxe"),
                "test": format!("option[77].hex == 'iPXE' and ({macs})"),
                "boot-file-name": format!("http://ipxe.services.{d}:8888/ipxe/${{net0/ip}}"),
            }));
            let mut pxe = json!({
                "name": format!("{CLASS_PREFIX}hypervisor-pxe"),
                "test": format!("not (option[77].hex == 'iPXE') and ({macs})"),
                "server-hostname": format!("tftp.services.{d}"),
                "boot-file-name": "undionly.kpxe",
                "option-data": [option("tftp-server-name", format!("tftp.services.{d}"))],
            });
            if let Some(ns) = opts.next_server {
                pxe["next-server"] = json!(ns.to_string());
            }
            classes.push(pxe);
        }
        let subnets: Vec<WantedSubnet> = subnets
            .into_iter()
            .map(|b| {
                let mut entry = b.base;
                entry.insert("pools".into(), json!([]));
                entry.insert("reservations".into(), Value::Array(b.reservations.list));
                WantedSubnet {
                    preferred_id: b.preferred_id,
                    entry,
                }
            })
            .collect();
        let text = serde_json::to_string(&json!({
            "subnets": subnets.iter().map(|s| Value::Object(s.entry.clone())).collect::<Vec<_>>(),
            "classes": classes,
        }))
        .unwrap_or_default();
        let digest = format!("{:x}", md5::compute(text.as_bytes()));
        let mut desired = Desired {
            subnets,
            classes,
            digest,
            guests,
            hypervisors,
        };
        let digest = desired.digest.clone();
        for s in &mut desired.subnets {
            if let Some(Value::Object(ctx)) = s.entry.get_mut("user-context") {
                if let Some(Value::Object(own)) = ctx.get_mut(OWNER_KEY) {
                    own.insert("digest".into(), json!(digest));
                }
            }
        }
        desired
    }

    /// Whether the running configuration `dhcp4` holds exactly this (by digest).
    pub fn is_in(&self, dhcp4: &Value) -> bool {
        let owned: Vec<&Value> = subnets_of(dhcp4)
            .into_iter()
            .filter(|s| is_owned(s))
            .collect();
        let digests_ok = owned.iter().all(|s| {
            s.pointer(&format!("/user-context/{OWNER_KEY}/digest"))
                .and_then(Value::as_str)
                == Some(self.digest.as_str())
        });
        let live_classes: BTreeSet<&str> = dhcp4["client-classes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["name"].as_str())
            .filter(|n| n.starts_with(CLASS_PREFIX))
            .collect();
        let want_classes: BTreeSet<&str> = self
            .classes
            .iter()
            .filter_map(|c| c["name"].as_str())
            .collect();
        owned.len() == self.subnets.len() && digests_ok && live_classes == want_classes
    }

    /// `dhcp4` (a running configuration) with cdhcpd's part replaced by this one.
    pub fn merge_into(&self, dhcp4: &Value) -> Value {
        let mut next = dhcp4.clone();
        let Some(obj) = next.as_object_mut() else {
            return next;
        };
        let mut kept: Vec<Value> = obj
            .get("subnet4")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|s| !is_owned(s))
            .cloned()
            .collect();
        let mut used: BTreeSet<u64> = kept.iter().filter_map(|s| s["id"].as_u64()).collect();
        for net in obj
            .get("shared-networks")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            for s in net["subnet4"].as_array().into_iter().flatten() {
                if let Some(id) = s["id"].as_u64() {
                    used.insert(id);
                }
            }
        }
        for s in &self.subnets {
            let mut id = s.preferred_id;
            while used.contains(&u64::from(id)) {
                id = if id >= MAX_ID { 1 } else { id + 1 };
            }
            used.insert(u64::from(id));
            let mut entry = Map::new();
            entry.insert("id".into(), json!(id));
            entry.extend(s.entry.clone());
            kept.push(Value::Object(entry));
        }
        obj.insert("subnet4".into(), Value::Array(kept));
        let mut classes: Vec<Value> = obj
            .get("client-classes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|c| {
                !c["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with(CLASS_PREFIX))
            })
            .cloned()
            .collect();
        classes.extend(self.classes.iter().cloned());
        if classes.is_empty() {
            obj.remove("client-classes");
        } else {
            obj.insert("client-classes".into(), Value::Array(classes));
        }
        next
    }
}

fn subnets_of(dhcp4: &Value) -> Vec<&Value> {
    dhcp4["subnet4"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default()
}

fn is_owned(subnet: &Value) -> bool {
    subnet
        .pointer(&format!("/user-context/{OWNER_KEY}"))
        .is_some()
}

/// A failure talking to Kea.
#[derive(Debug, thiserror::Error)]
pub enum KeaError {
    /// The socket could not be reached, or the exchange broke or timed out.
    #[error("control socket {path}: {detail}")]
    Socket {
        /// The socket.
        path: PathBuf,
        /// What happened.
        detail: String,
    },
    /// Kea answered with something that is not its JSON answer.
    #[error("{command}: unreadable answer: {detail}")]
    Answer {
        /// The command sent.
        command: String,
        /// What was wrong.
        detail: String,
    },
    /// Kea refused the command (`result` not 0).
    #[error("{command} refused (result {result}): {text}")]
    Refused {
        /// The command sent.
        command: String,
        /// Kea's result code.
        result: i64,
        /// Kea's text.
        text: String,
    },
}

/// Kea's unix control socket.
#[derive(Debug, Clone)]
pub struct ControlSocket {
    /// Its path.
    pub path: PathBuf,
    /// The limit on one exchange.
    pub timeout: Duration,
}

impl ControlSocket {
    /// Sends `command` (with `arguments`) and returns the answer's `arguments`
    /// (`null` when none) when `result` is 0.
    pub async fn call(&self, command: &str, arguments: Option<&Value>) -> Result<Value, KeaError> {
        let socket_err = |detail: String| KeaError::Socket {
            path: self.path.clone(),
            detail,
        };
        let mut req = json!({ "command": command });
        if let Some(a) = arguments {
            req["arguments"] = a.clone();
        }
        let exchange = async {
            let mut conn = tokio::net::UnixStream::connect(&self.path).await?;
            conn.write_all(req.to_string().as_bytes()).await?;
            let mut out = Vec::new();
            conn.read_to_end(&mut out).await?;
            Ok::<_, std::io::Error>(out)
        };
        let out = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| socket_err(format!("{command}: no answer within {:?}", self.timeout)))?
            .map_err(|e| socket_err(format!("{command}: {e}")))?;
        let answer: Value = serde_json::from_slice(&out).map_err(|e| KeaError::Answer {
            command: command.into(),
            detail: e.to_string(),
        })?;
        // A Control Agent wraps the answer in a list; kea-dhcp4's own socket does not.
        let answer = match answer {
            Value::Array(mut a) if !a.is_empty() => a.swap_remove(0),
            other => other,
        };
        let result = answer["result"].as_i64().ok_or_else(|| KeaError::Answer {
            command: command.into(),
            detail: format!("no result in {}", crate::short(&answer.to_string())),
        })?;
        if result != 0 {
            return Err(KeaError::Refused {
                command: command.into(),
                result,
                text: answer["text"].as_str().unwrap_or_default().to_string(),
            });
        }
        Ok(answer.get("arguments").cloned().unwrap_or(Value::Null))
    }

    /// The running `Dhcp4` configuration.
    pub async fn config_get(&self) -> Result<Value, KeaError> {
        let args = self.call("config-get", None).await?;
        match args.get("Dhcp4") {
            Some(d) if d.is_object() => Ok(d.clone()),
            _ => Err(KeaError::Answer {
                command: "config-get".into(),
                detail: "no Dhcp4 object".into(),
            }),
        }
    }
}

/// The step of a sync that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Reading the running configuration (Kea unreachable or broken).
    Get,
    /// `config-test` refused the merged configuration (nothing changed in Kea).
    Test,
    /// `config-set` failed (the previous configuration was re-applied).
    Set,
    /// Re-applying the previous configuration after a failed set failed too.
    Restore,
}

impl Stage {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Get => "get",
            Stage::Test => "test",
            Stage::Set => "set",
            Stage::Restore => "restore",
        }
    }
}

/// How a sync ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Synced {
    /// Kea already had it.
    InSync,
    /// It was applied with `config-set`.
    Applied,
}

/// A failed sync: where, why, and (for a failed set) whether the previous configuration
/// could be restored.
#[derive(Debug, thiserror::Error)]
#[error("Kea {}: {source}", stage.as_str())]
pub struct SyncError {
    /// Where it failed.
    pub stage: Stage,
    /// Why.
    #[source]
    pub source: KeaError,
}

/// Makes Kea's running configuration hold `desired`: read it, and when cdhcpd's part
/// differs, test the merged configuration, then set it. When the set fails (Kea then
/// serves no one until a good configuration is set) the configuration it ran before is
/// set again at once.
pub async fn sync(socket: &ControlSocket, desired: &Desired) -> Result<Synced, SyncError> {
    let err = |stage| move |source| SyncError { stage, source };
    let live = socket.config_get().await.map_err(err(Stage::Get))?;
    if desired.is_in(&live) {
        return Ok(Synced::InSync);
    }
    let next = json!({ "Dhcp4": desired.merge_into(&live) });
    socket
        .call("config-test", Some(&next))
        .await
        .map_err(err(Stage::Test))?;
    if let Err(e) = socket.call("config-set", Some(&next)).await {
        let previous = json!({ "Dhcp4": live });
        if let Err(r) = socket.call("config-set", Some(&previous)).await {
            tracing::error!(error = %r, "re-applying Kea's previous configuration failed");
            return Err(SyncError {
                stage: Stage::Restore,
                source: e,
            });
        }
        tracing::warn!("Kea's previous configuration re-applied after the failed config-set");
        return Err(SyncError {
            stage: Stage::Set,
            source: e,
        });
    }
    Ok(Synced::Applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wanted(preferred_id: u32, subnet: &str, digest: &str) -> WantedSubnet {
        let mut entry = Map::new();
        entry.insert("subnet".into(), json!(subnet));
        entry.insert(
            "user-context".into(),
            json!({OWNER_KEY: {"subnet": subnet, "digest": digest}}),
        );
        entry.insert("pools".into(), json!([]));
        entry.insert("reservations".into(), json!([]));
        WantedSubnet {
            preferred_id,
            entry,
        }
    }

    fn desired(digest: &str, subnets: Vec<WantedSubnet>, classes: Vec<Value>) -> Desired {
        Desired {
            subnets,
            classes,
            digest: digest.into(),
            guests: 0,
            hypervisors: 0,
        }
    }

    #[test]
    fn subnet_ids_come_from_the_uuid_and_stay_in_keas_range() {
        assert_eq!(
            subnet_id_of("bbbb0081-2222-4222-8222-000000000081"),
            0xbbbb_0081
        );
        assert_eq!(subnet_id_of("00000000-2222-4222-8222-000000000081"), 1);
        assert_eq!(subnet_id_of("ffffffff-2222-4222-8222-000000000081"), MAX_ID);
        // Not a UUID: still a stable id in range.
        let odd = subnet_id_of("xyz");
        assert_eq!(odd, subnet_id_of("xyz"));
        assert!((1..=MAX_ID).contains(&odd));
    }

    #[test]
    fn merging_replaces_only_what_cdhcpd_owns_and_moves_a_taken_id() {
        let live = json!({
            "interfaces-config": {"interfaces": ["eth0"]},
            "subnet4": [
                {"id": 5, "subnet": "192.0.2.0/24"},
                {"id": 9, "subnet": "10.1.0.0/24", "user-context": {OWNER_KEY: {"digest": "old"}}}
            ],
            "shared-networks": [{"name": "n", "subnet4": [{"id": 6, "subnet": "198.51.100.0/24"}]}],
            "client-classes": [{"name": "mine"}, {"name": "cdhcpd-hypervisor-pxe"}]
        });
        let d = desired(
            "new",
            vec![
                wanted(5, "10.2.0.0/24", "new"),
                wanted(6, "10.3.0.0/24", "new"),
            ],
            vec![json!({"name": "cdhcpd-hypervisor-ipxe"})],
        );
        assert!(!d.is_in(&live));
        let next = d.merge_into(&live);
        assert_eq!(next["interfaces-config"], live["interfaces-config"]);
        assert_eq!(next["shared-networks"], live["shared-networks"]);
        let subnets = next["subnet4"].as_array().unwrap();
        assert_eq!(subnets.len(), 3, "{subnets:?}");
        assert_eq!(
            subnets[0], live["subnet4"][0],
            "the operator's subnet stays"
        );
        // 5 and 6 are taken (one in a shared network): the next free ids.
        assert_eq!(
            (subnets[1]["id"].as_u64(), subnets[1]["subnet"].as_str()),
            (Some(7), Some("10.2.0.0/24"))
        );
        assert_eq!(subnets[2]["id"], 8);
        let classes: Vec<&str> = next["client-classes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(classes, ["mine", "cdhcpd-hypervisor-ipxe"]);
        assert!(d.is_in(&next));
        // A restarted Kea (its file: nothing of ours) is out of sync again.
        let restarted = json!({"subnet4": [{"id": 5, "subnet": "192.0.2.0/24"}]});
        assert!(!d.is_in(&restarted));
        // Nothing wanted and nothing owned: in sync, and a merge removes our leftovers.
        let empty = desired("e", vec![], vec![]);
        assert!(empty.is_in(&restarted));
        assert!(!empty.is_in(&next));
        let cleaned = empty.merge_into(&next);
        assert_eq!(cleaned["subnet4"].as_array().unwrap().len(), 1);
        assert_eq!(cleaned["client-classes"], json!([{"name": "mine"}]));
    }

    #[test]
    fn the_id_search_wraps_at_keas_maximum() {
        let live = json!({"subnet4": [{"id": MAX_ID, "subnet": "192.0.2.0/24"}]});
        let d = desired("d", vec![wanted(MAX_ID, "10.2.0.0/24", "d")], vec![]);
        assert_eq!(d.merge_into(&live)["subnet4"][1]["id"], 1);
    }

    #[test]
    fn reservations_kea_would_refuse_are_left_out() {
        let net: Ipv4Network = "10.0.0.0/24".parse().unwrap();
        let mut r = Reservations::default();
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        assert!(r.add(
            net,
            "guest",
            "a",
            "02:00:00:00:00:01".into(),
            ip("10.0.0.10"),
            vec![]
        ));
        assert!(
            !r.add(
                net,
                "guest",
                "b",
                "02:00:00:00:00:01".into(),
                ip("10.0.0.11"),
                vec![]
            ),
            "same MAC"
        );
        assert!(
            !r.add(
                net,
                "guest",
                "c",
                "02:00:00:00:00:03".into(),
                ip("10.0.0.10"),
                vec![]
            ),
            "same address"
        );
        assert!(
            !r.add(
                net,
                "guest",
                "d",
                "02:00:00:00:00:04".into(),
                ip("10.0.1.10"),
                vec![]
            ),
            "outside"
        );
        assert!(
            !r.add(
                net,
                "guest",
                "e",
                "02:00:00:00:00:05".into(),
                ip("10.0.0.0"),
                vec![]
            ),
            "network"
        );
        assert!(
            !r.add(
                net,
                "guest",
                "f",
                "02:00:00:00:00:06".into(),
                ip("10.0.0.255"),
                vec![]
            ),
            "broadcast"
        );
        assert_eq!(
            r.list,
            vec![
                json!({"hw-address": "02:00:00:00:00:01", "ip-address": "10.0.0.10", "hostname": "a"})
            ]
        );
    }
}
