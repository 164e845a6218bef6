//! The ruleset of one hypervisor as nft text: one table the daemon owns, replaced as a
//! whole in one transaction.
//!
//! Shape (see docs/firewall.md): a `forward` chain (bridged guest traffic reaches the
//! `inet` forward hook through br_netfilter) that accepts established/related traffic,
//! then sends traffic addressed to each guest of the hypervisor to its group's chain
//! with a verdict map. A group chain holds the group's rules and ends with a drop; a
//! guest without a (known) group goes to `no_group`, which drops. Everything else passes
//! untouched (the chain's policy is accept). Chains and sets are named after the
//! firewall group's id (`g_<id>`, `m_<id>`), never after a counter. The text is
//! deterministic: guests by address, groups and members sorted.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use crate::model::{Group, GuestAddr, Ports, Proto, Rule, Skipped, Verdict};

/// The chain of guests without a firewall group.
pub const NO_GROUP_CHAIN: &str = "no_group";

/// What a ruleset is rendered from.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The hypervisor the rules are for (named in the file's header).
    pub hypervisor: String,
    /// The guests on this hypervisor that have an IPv4 address.
    pub guests: Vec<GuestAddr>,
    /// Every firewall group of the cluster, by id.
    pub groups: BTreeMap<String, Group>,
    /// The addresses of the cluster's guests by firewall group id.
    pub members: BTreeMap<String, BTreeSet<Ipv4Addr>>,
    /// Rules of the groups left out while decoding them ([`crate::model::decode_group`]);
    /// those of the groups used here are reported with the ruleset.
    pub skipped: Vec<Skipped>,
}

/// A rendered ruleset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// The nft file.
    pub text: String,
    /// Rules of the groups used here left out of this ruleset (invalid as stored, or a
    /// group they refer to does not exist).
    pub skipped: Vec<Skipped>,
    /// Guests whose traffic is dropped because their group is unknown or missing, and
    /// guests left out (a second guest with the same address).
    pub notes: Vec<String>,
}

/// Is `name` usable as our table's name (letters, digits and `_`, starting with a
/// letter, at most 64 characters)?
pub fn valid_table_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 64
}

fn group_chain(id: &str) -> String {
    format!("g_{id}")
}

fn member_set(id: &str) -> String {
    format!("m_{id}")
}

/// The matches of a rule's protocol and ports.
fn proto_match(rule: &Rule) -> String {
    match (rule.proto, rule.ports) {
        (Proto::Icmp, _) | (_, Ports::Any) => format!("meta l4proto {}", rule.proto.as_str()),
        (p, Ports::Range(a, b)) if a == b => format!("{} dport {a}", p.as_str()),
        (p, Ports::Range(a, b)) => format!("{} dport {a}-{b}", p.as_str()),
    }
}

/// The lines of one rule: one per allowed source (a CIDR, a group's members), or one
/// without a source match when it names neither.
fn rule_lines(rule: &Rule) -> Vec<String> {
    let verdict = match rule.verdict {
        Verdict::Accept => "accept",
        Verdict::Drop => "drop",
    };
    let tail = format!("{} counter {verdict}", proto_match(rule));
    let mut sources = Vec::new();
    if let Some(net) = rule.source {
        sources.push(format!("ip saddr {}/{} ", net.network(), net.prefix()));
    }
    if let Some(g) = &rule.group {
        sources.push(format!("ip saddr @{} ", member_set(g)));
    }
    if sources.is_empty() {
        sources.push(String::new());
    }
    sources.into_iter().map(|s| format!("{s}{tail}")).collect()
}

/// Renders the ruleset of `snap` into `table inet <table>`.
pub fn render(table: &str, snap: &Snapshot) -> Rendered {
    let mut skipped = Vec::new();
    let mut notes = Vec::new();
    // Guests by address; the first id (in id order) keeps an address used twice.
    let mut guests: Vec<&GuestAddr> = snap.guests.iter().collect();
    guests.sort_by(|a, b| a.id.cmp(&b.id));
    let mut by_ip: BTreeMap<Ipv4Addr, &GuestAddr> = BTreeMap::new();
    for g in guests {
        if let Some(first) = by_ip.get(&g.ip) {
            notes.push(format!(
                "guest {} has address {} of guest {}: left out",
                g.id, g.ip, first.id
            ));
            continue;
        }
        by_ip.insert(g.ip, g);
    }
    // The chain of each guest, and the groups used here.
    let mut used: BTreeSet<&str> = BTreeSet::new();
    let mut targets: BTreeMap<Ipv4Addr, String> = BTreeMap::new();
    for (ip, g) in &by_ip {
        let chain = match g.fwgroup.as_deref() {
            Some(id) if snap.groups.contains_key(id) => {
                used.insert(id);
                group_chain(id)
            }
            Some(id) => {
                notes.push(format!(
                    "guest {} ({ip}): firewall group {id} does not exist: new inbound traffic dropped",
                    g.id
                ));
                NO_GROUP_CHAIN.to_string()
            }
            None => NO_GROUP_CHAIN.to_string(),
        };
        targets.insert(*ip, chain);
    }
    skipped.extend(
        snap.skipped
            .iter()
            .filter(|s| used.contains(s.group.as_str()))
            .cloned(),
    );
    // The rules of the used groups; the member sets they need.
    let mut chains: Vec<(String, Vec<String>)> = Vec::new();
    let mut sets: BTreeSet<&str> = BTreeSet::new();
    for id in &used {
        let Some(group) = snap.groups.get(*id) else {
            continue;
        };
        let mut lines = Vec::new();
        for rule in &group.rules {
            if let Some(other) = &rule.group {
                match snap.groups.get_key_value(other.as_str()) {
                    Some((key, _)) => {
                        sets.insert(key.as_str());
                    }
                    None => {
                        skipped.push(Skipped {
                            group: group.id.clone(),
                            rule: rule.index,
                            reason: format!("group {other} does not exist"),
                        });
                        continue;
                    }
                }
            }
            lines.extend(rule_lines(rule));
        }
        lines.push("counter drop".to_string());
        chains.push((group_chain(id), lines));
    }
    chains.push((NO_GROUP_CHAIN.to_string(), vec!["counter drop".to_string()]));

    let mut t = String::new();
    let _ = writeln!(
        t,
        "# Written by nfirewalld for hypervisor {}: the table inet {table} and nothing else.\n\
         # Replaced as a whole on every change; do not edit.",
        snap.hypervisor
    );
    let _ = writeln!(t, "table inet {table}");
    let _ = writeln!(t, "delete table inet {table}");
    let _ = writeln!(t, "table inet {table} {{");
    for id in &sets {
        let _ = writeln!(t, "\tset {} {{", member_set(id));
        let _ = writeln!(t, "\t\ttype ipv4_addr");
        let members = snap.members.get(*id).cloned().unwrap_or_default();
        if !members.is_empty() {
            let list: Vec<String> = members.iter().map(ToString::to_string).collect();
            let _ = writeln!(t, "\t\telements = {{ {} }}", list.join(", "));
        }
        let _ = writeln!(t, "\t}}");
    }
    let _ = writeln!(t, "\tchain forward {{");
    let _ = writeln!(
        t,
        "\t\ttype filter hook forward priority filter; policy accept;"
    );
    let _ = writeln!(t, "\t\tct state established,related accept");
    if !targets.is_empty() {
        let _ = writeln!(t, "\t\tip daddr vmap {{");
        let n = targets.len();
        for (i, (ip, chain)) in targets.iter().enumerate() {
            let comma = if i + 1 < n { "," } else { "" };
            let _ = writeln!(t, "\t\t\t{ip} : jump {chain}{comma}");
        }
        let _ = writeln!(t, "\t\t}}");
    }
    let _ = writeln!(t, "\t}}");
    for (name, lines) in &chains {
        let _ = writeln!(t, "\tchain {name} {{");
        for l in lines {
            let _ = writeln!(t, "\t\t{l}");
        }
        let _ = writeln!(t, "\t}}");
    }
    let _ = writeln!(t, "}}");
    Rendered {
        text: t,
        skipped,
        notes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::decode_group;

    const A: &str = "aaaaaaaa-0000-4000-8000-000000000001";
    const B: &str = "bbbbbbbb-0000-4000-8000-000000000002";
    const GONE: &str = "cccccccc-0000-4000-8000-000000000003";

    fn guest(id: &str, ip: &str, group: Option<&str>) -> GuestAddr {
        GuestAddr {
            id: id.into(),
            ip: ip.parse().unwrap(),
            fwgroup: group.map(str::to_string),
        }
    }

    fn snapshot() -> Snapshot {
        let (a, skipped) = decode_group(
            A,
            format!(
                r#"{{"rules":[
                {{"portStart":8000,"portEnd":8100,"protocol":"tcp","action":"accept"}},
                {{"portStart":22,"portEnd":22,"protocol":"tcp","source":"10.78.0.48/28","action":"accept"}},
                {{"portStart":9000,"portEnd":9000,"protocol":"udp","group":"{B}","action":"accept"}},
                {{"portStart":7000,"portEnd":7000,"protocol":"tcp","group":"{GONE}","action":"accept"}},
                {{"portStart":443,"portEnd":443,"protocol":"tcp","group":"{A}","source":"192.168.0.0/16","action":"allow"}},
                {{"protocol":"icmp","action":"drop"}}
            ]}}"#
            )
            .as_bytes(),
        );
        assert!(skipped.is_empty());
        let (b, _) = decode_group(B, br#"{"rules":[]}"#);
        Snapshot {
            hypervisor: "hv-1".into(),
            guests: vec![
                guest("g2", "10.78.0.12", Some(B)),
                guest("g1", "10.78.0.11", Some(A)),
                guest("g3", "10.78.0.13", None),
                guest("g4", "10.78.0.14", Some(GONE)),
                guest("g0", "10.78.0.11", Some(B)),
            ],
            groups: BTreeMap::from([(A.to_string(), a), (B.to_string(), b)]),
            members: BTreeMap::from([
                (
                    A.to_string(),
                    BTreeSet::from(["10.78.0.11".parse().unwrap()]),
                ),
                (
                    B.to_string(),
                    BTreeSet::from(["10.78.0.50".parse().unwrap(), "10.78.0.12".parse().unwrap()]),
                ),
            ]),
            skipped: vec![Skipped {
                group: A.into(),
                rule: 9,
                reason: "stored badly".into(),
            }],
        }
    }

    #[test]
    fn a_hypervisor_renders_into_its_own_table() {
        let r = render("mistify", &snapshot());
        let expected = format!(
            "# Written by nfirewalld for hypervisor hv-1: the table inet mistify and nothing else.
# Replaced as a whole on every change; do not edit.
table inet mistify
delete table inet mistify
table inet mistify {{
\tchain forward {{
\t\ttype filter hook forward priority filter; policy accept;
\t\tct state established,related accept
\t\tip daddr vmap {{
\t\t\t10.78.0.11 : jump g_{B},
\t\t\t10.78.0.12 : jump g_{B},
\t\t\t10.78.0.13 : jump no_group,
\t\t\t10.78.0.14 : jump no_group
\t\t}}
\t}}
\tchain g_{B} {{
\t\tcounter drop
\t}}
\tchain no_group {{
\t\tcounter drop
\t}}
}}
"
        );
        // g0 sorts before g1 and takes 10.78.0.11: group A is not used here (its skipped
        // rule is not reported), and B's (empty) rules need no member set.
        assert_eq!(r.text, expected);
        assert!(r.skipped.is_empty());
        assert_eq!(
            r.notes,
            [
                "guest g1 has address 10.78.0.11 of guest g0: left out".to_string(),
                format!("guest g4 (10.78.0.14): firewall group {GONE} does not exist: new inbound traffic dropped"),
            ]
        );
    }

    #[test]
    fn rules_render_with_their_sources_and_a_final_drop() {
        let mut snap = snapshot();
        snap.guests.retain(|g| g.id != "g0");
        let r = render("fw", &snap);
        let chain_a = format!(
            "\tchain g_{A} {{
\t\ttcp dport 8000-8100 counter accept
\t\tip saddr 10.78.0.48/28 tcp dport 22 counter accept
\t\tip saddr @m_{B} udp dport 9000 counter accept
\t\tip saddr 192.168.0.0/16 tcp dport 443 counter accept
\t\tip saddr @m_{A} tcp dport 443 counter accept
\t\tmeta l4proto icmp counter drop
\t\tcounter drop
\t}}
"
        );
        assert!(r.text.contains(&chain_a), "{}", r.text);
        let sets = format!(
            "\tset m_{A} {{
\t\ttype ipv4_addr
\t\telements = {{ 10.78.0.11 }}
\t}}
\tset m_{B} {{
\t\ttype ipv4_addr
\t\telements = {{ 10.78.0.12, 10.78.0.50 }}
\t}}
"
        );
        assert!(r.text.contains(&sets), "{}", r.text);
        assert!(r.text.contains("\t\t\t10.78.0.11 : jump g_"), "{}", r.text);
        assert_eq!(
            r.skipped,
            [
                Skipped {
                    group: A.into(),
                    rule: 9,
                    reason: "stored badly".into(),
                },
                Skipped {
                    group: A.into(),
                    rule: 4,
                    reason: format!("group {GONE} does not exist"),
                }
            ]
        );
        // The same data in another order renders the same text.
        let mut shuffled = snap.clone();
        shuffled.guests.reverse();
        assert_eq!(render("fw", &shuffled).text, r.text);
    }

    #[test]
    fn no_guests_render_an_empty_forward_chain() {
        let snap = Snapshot {
            hypervisor: "h".into(),
            ..Snapshot::default()
        };
        let r = render("mistify", &snap);
        assert!(!r.text.contains("vmap"));
        assert!(r
            .text
            .contains("ct state established,related accept\n\t}\n"));
    }

    #[test]
    fn table_names() {
        assert!(valid_table_name("mistify"));
        assert!(valid_table_name("m_2"));
        assert!(!valid_table_name(""));
        assert!(!valid_table_name("2m"));
        assert!(!valid_table_name("a b"));
        assert!(!valid_table_name("a;flush ruleset"));
    }

    /// The rendered file passes nft's own check (in a throwaway user and network
    /// namespace, so no root is needed) when nft and unshare are there.
    #[test]
    fn nft_accepts_the_rendered_file() {
        let available = std::process::Command::new("unshare")
            .args(["-rn", "nft", "list", "ruleset"])
            .output()
            .is_ok_and(|o| o.status.success());
        if !available {
            eprintln!("skipped: `unshare -rn nft` does not run here");
            return;
        }
        let mut snap = snapshot();
        snap.guests.retain(|g| g.id != "g0");
        let text = render("mistify", &snap).text;
        let dir = std::env::temp_dir().join(format!("mistify-fw-render-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("rules.nft");
        std::fs::write(&file, &text).unwrap();
        let out = std::process::Command::new("unshare")
            .args(["-rn", "nft", "-c", "-f"])
            .arg(&file)
            .output()
            .unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            out.status.success(),
            "{}\n{text}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
