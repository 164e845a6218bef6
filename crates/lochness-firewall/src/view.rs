//! What the firewall of one hypervisor depends on, kept from etcd: the cluster's guests
//! (address and firewall group), the firewall groups (as stored) and this hypervisor's
//! guest links. Loaded with three ranged reads, then kept current from the watches'
//! events ([`View::apply`]); [`View::snapshot`] is what the renderer needs.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use lochness::{keys, ChangeKind, Context, WatchEvent};
use serde_json::Value;

use crate::model::{decode_group, GuestAddr};
use crate::render::Snapshot;

/// What the firewall reads of a guest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct GuestEntry {
    ip: Option<Ipv4Addr>,
    fwgroup: Option<String>,
}

fn guest_entry(value: &[u8]) -> GuestEntry {
    let doc: Value = serde_json::from_slice(value).unwrap_or(Value::Null);
    let ip = doc
        .get("ip")
        .and_then(Value::as_str)
        .and_then(|s| s.parse::<IpAddr>().ok())
        .and_then(|ip| match lochness::codec::canonical_ip(ip) {
            IpAddr::V4(v4) => Some(v4),
            IpAddr::V6(_) => None,
        });
    let fwgroup = doc
        .get("fwgroup")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(|s| lochness::canonicalize(s).unwrap_or_else(|_| s.to_string()));
    GuestEntry { ip, fwgroup }
}

/// The store as the firewall of one hypervisor sees it.
#[derive(Debug, Clone, Default)]
pub struct View {
    hypervisor: String,
    guests: BTreeMap<String, GuestEntry>,
    groups: BTreeMap<String, Vec<u8>>,
    links: BTreeSet<String>,
}

/// The prefixes a view of `hypervisor` watches.
pub fn prefixes(hypervisor: &str) -> [String; 3] {
    [
        keys::GUESTS.to_string(),
        keys::FWGROUPS.to_string(),
        keys::hypervisor_guests_prefix(hypervisor),
    ]
}

impl View {
    /// An empty view of `hypervisor`.
    pub fn new(hypervisor: &str) -> View {
        View {
            hypervisor: hypervisor.to_string(),
            ..View::default()
        }
    }

    /// Reads everything the view holds from etcd (three ranged reads).
    pub async fn load(ctx: &Context, hypervisor: &str) -> lochness::Result<View> {
        let mut view = View::new(hypervisor);
        for prefix in prefixes(hypervisor) {
            for kv in ctx.get_prefix(&prefix).await? {
                view.put(&kv.key, &kv.value);
            }
        }
        Ok(view)
    }

    fn put(&mut self, key: &str, value: &[u8]) {
        if let Some(id) = keys::metadata_id(keys::GUESTS, key) {
            self.guests.insert(id.to_string(), guest_entry(value));
        } else if let Some(id) = keys::metadata_id(keys::FWGROUPS, key) {
            self.groups.insert(id.to_string(), value.to_vec());
        } else if let Some(g) = key.strip_prefix(&keys::hypervisor_guests_prefix(&self.hypervisor))
        {
            self.links.insert(g.to_string());
        }
    }

    fn delete(&mut self, key: &str) {
        if let Some(id) = keys::metadata_id(keys::GUESTS, key) {
            self.guests.remove(id);
        } else if let Some(id) = keys::metadata_id(keys::FWGROUPS, key) {
            self.groups.remove(id);
        } else if let Some(g) = key.strip_prefix(&keys::hypervisor_guests_prefix(&self.hypervisor))
        {
            self.links.remove(g);
        }
    }

    /// Applies one watched change; true when it concerns the view.
    pub fn apply(&mut self, ev: &WatchEvent) -> bool {
        let relevant = keys::metadata_id(keys::GUESTS, &ev.key).is_some()
            || keys::metadata_id(keys::FWGROUPS, &ev.key).is_some()
            || ev
                .key
                .starts_with(&keys::hypervisor_guests_prefix(&self.hypervisor));
        match ev.kind {
            ChangeKind::Delete => self.delete(&ev.key),
            ChangeKind::Create | ChangeKind::Update => self.put(&ev.key, &ev.value),
        }
        relevant
    }

    /// What the renderer needs (with the rules left out while decoding), and the notes
    /// on guests that cannot be filtered.
    pub fn snapshot(&self) -> (Snapshot, Vec<String>) {
        let mut skipped = Vec::new();
        let mut notes = Vec::new();
        let mut groups = BTreeMap::new();
        for (id, value) in &self.groups {
            if !lochness::codec::is_uuid(id) || id.to_lowercase() != *id {
                notes.push(format!(
                    "firewall group key {id:?} is not a lower-case UUID: ignored"
                ));
                continue;
            }
            let (group, left) = decode_group(id, value);
            skipped.extend(left);
            groups.insert(id.clone(), group);
        }
        let mut members: BTreeMap<String, BTreeSet<Ipv4Addr>> = BTreeMap::new();
        for entry in self.guests.values() {
            if let (Some(ip), Some(group)) = (entry.ip, &entry.fwgroup) {
                members.entry(group.clone()).or_default().insert(ip);
            }
        }
        let mut guests = Vec::new();
        for id in &self.links {
            match self.guests.get(id) {
                None => notes.push(format!(
                    "guest {id} is linked to this hypervisor but does not exist"
                )),
                Some(GuestEntry { ip: None, .. }) => {
                    notes.push(format!("guest {id} has no IPv4 address: not filtered"))
                }
                Some(GuestEntry {
                    ip: Some(ip),
                    fwgroup,
                }) => guests.push(GuestAddr {
                    id: id.clone(),
                    ip: *ip,
                    fwgroup: fwgroup.clone(),
                }),
            }
        }
        let snap = Snapshot {
            hypervisor: self.hypervisor.clone(),
            guests,
            groups,
            members,
            skipped,
        };
        (snap, notes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lochness::EntityKind;

    const HV: &str = "11111111-0000-4000-8000-000000000001";
    const A: &str = "aaaaaaaa-0000-4000-8000-000000000001";

    fn event(key: &str, kind: ChangeKind, value: &str) -> WatchEvent {
        WatchEvent {
            key: key.into(),
            kind,
            entity: EntityKind::Other,
            id: String::new(),
            sub: String::new(),
            value: value.as_bytes().to_vec(),
            prev_value: None,
            revision: 1,
        }
    }

    #[test]
    fn events_keep_the_view_current() {
        let mut v = View::new(HV);
        let put = ChangeKind::Create;
        assert!(v.apply(&event(
            "lochness/guests/g1/metadata",
            put,
            &format!(
                r#"{{"id":"g1","ip":"10.0.0.1","fwgroup":"{}"}}"#,
                A.to_uppercase()
            )
        )));
        assert!(v.apply(&event(
            "lochness/guests/g2/metadata",
            put,
            r#"{"id":"g2","ip":"10.0.0.2","fwgroup":""}"#
        )));
        assert!(v.apply(&event(
            "lochness/guests/g3/metadata",
            put,
            &format!(r#"{{"id":"g3","ip":"10.0.0.3","fwgroup":"{A}"}}"#)
        )));
        assert!(v.apply(&event(
            &format!("lochness/fwgroups/{A}/metadata"),
            put,
            r#"{"rules":[{"protocol":"tcp","portStart":9,"portEnd":1}]}"#
        )));
        assert!(v.apply(&event(
            &format!("lochness/hypervisors/{HV}/guests/g1"),
            put,
            ""
        )));
        assert!(v.apply(&event(
            &format!("lochness/hypervisors/{HV}/guests/g2"),
            put,
            ""
        )));
        assert!(v.apply(&event(
            &format!("lochness/hypervisors/{HV}/guests/gx"),
            put,
            ""
        )));
        assert!(!v.apply(&event("lochness/hypervisors/other/guests/g3", put, "")));
        let (snap, notes) = v.snapshot();
        assert_eq!(
            snap.guests,
            [
                GuestAddr {
                    id: "g1".into(),
                    ip: "10.0.0.1".parse().unwrap(),
                    fwgroup: Some(A.into())
                },
                GuestAddr {
                    id: "g2".into(),
                    ip: "10.0.0.2".parse().unwrap(),
                    fwgroup: None
                },
            ]
        );
        assert_eq!(
            snap.members[A],
            BTreeSet::from(["10.0.0.1".parse().unwrap(), "10.0.0.3".parse().unwrap()])
        );
        assert_eq!(snap.skipped.len(), 1);
        assert_eq!(
            notes,
            ["guest gx is linked to this hypervisor but does not exist"]
        );
        // A guest leaves the group, a link goes.
        v.apply(&event(
            "lochness/guests/g3/metadata",
            ChangeKind::Update,
            r#"{"id":"g3","ip":"10.0.0.3"}"#,
        ));
        v.apply(&event(
            &format!("lochness/hypervisors/{HV}/guests/gx"),
            ChangeKind::Delete,
            "",
        ));
        let (snap, notes) = v.snapshot();
        assert_eq!(
            snap.members[A],
            BTreeSet::from(["10.0.0.1".parse().unwrap()])
        );
        assert!(notes.is_empty());
        v.apply(&event(
            &format!("lochness/fwgroups/{A}/metadata"),
            ChangeKind::Delete,
            "",
        ));
        assert!(v.snapshot().0.groups.is_empty());
    }
}
