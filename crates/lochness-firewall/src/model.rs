//! The firewall's typed view of the store: groups of rules parsed once from their JSON,
//! each rule either usable or skipped with the reason.
//!
//! Stored groups are decoded rule by rule, so a rule the API would have refused (written
//! to etcd by another tool or by an older version) is skipped on its own and the other
//! rules of the group still apply. The checks are the library's
//! ([`lochness::FwRule::problem`]), the ones the REST API refuses with 400.

use std::fmt;
use std::net::Ipv4Addr;

use ipnetwork::{IpNetwork, Ipv4Network};
use lochness::FwRule;
use serde_json::Value;

/// A transport protocol a rule allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Proto {
    /// TCP, with ports.
    Tcp,
    /// UDP, with ports.
    Udp,
    /// ICMP (IPv4), without ports.
    Icmp,
}

impl Proto {
    fn parse(text: &str) -> Option<Proto> {
        match text {
            "tcp" => Some(Proto::Tcp),
            "udp" => Some(Proto::Udp),
            "icmp" => Some(Proto::Icmp),
            _ => None,
        }
    }

    /// The nft keyword.
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Icmp => "icmp",
        }
    }
}

/// The destination ports a rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ports {
    /// Every port (`portStart` and `portEnd` both 0, and always for ICMP).
    Any,
    /// `first..=last` (a single port when they are equal).
    Range(u16, u16),
}

/// What a matching packet gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// `accept`/`allow`, and a stored rule without an action.
    Accept,
    /// `drop`/`deny`/`reject` (rejected packets are dropped: see docs/firewall.md).
    Drop,
}

/// One usable rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The rule's position in its group (1-based), for comments and logs.
    pub index: usize,
    /// Protocol.
    pub proto: Proto,
    /// Destination ports.
    pub ports: Ports,
    /// Allowed source network, when given.
    pub source: Option<Ipv4Network>,
    /// Allowed source group (its members' addresses), when given: a lower-case id.
    pub group: Option<String>,
    /// Accept or drop.
    pub verdict: Verdict,
}

/// A rule left out, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The group the rule belongs to.
    pub group: String,
    /// The rule's position (1-based); 0 for the whole group.
    pub rule: usize,
    /// Why it was left out.
    pub reason: String,
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.rule == 0 {
            write!(f, "firewall group {}: {}", self.group, self.reason)
        } else {
            write!(
                f,
                "firewall group {} rule {}: {}",
                self.group, self.rule, self.reason
            )
        }
    }
}

/// A firewall group with its usable rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// Lower-case UUID.
    pub id: String,
    /// The rules that can be rendered, in stored order.
    pub rules: Vec<Rule>,
}

/// A guest as the firewall sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestAddr {
    /// Guest id.
    pub id: String,
    /// Its IPv4 address.
    pub ip: Ipv4Addr,
    /// Its firewall group (lower-case), or `None`.
    pub fwgroup: Option<String>,
}

fn text_field(rule: &Value, name: &str) -> Result<String, String> {
    match rule.get(name) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(format!("{name} {other} is not a string")),
    }
}

fn port_field(rule: &Value, name: &str) -> Result<u32, String> {
    match rule.get(name) {
        None | Some(Value::Null) => Ok(0),
        Some(v) => v
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| format!("{name} {v} is not a port number")),
    }
}

/// The library's rule from one stored rule object, or why it cannot be read.
fn stored_rule(rule: &Value) -> Result<FwRule, String> {
    if !rule.is_object() {
        return Err(format!("{rule} is not an object"));
    }
    let source = text_field(rule, "source")?;
    let source = if source.is_empty() {
        None
    } else {
        Some(
            lochness::codec::parse_cidr(&source)
                .map_err(|_| format!("source {source:?} is not a CIDR"))?,
        )
    };
    let mut action = text_field(rule, "action")?;
    if action.is_empty() {
        // The original stored rules without an action and accepted them.
        action = "accept".into();
    }
    Ok(FwRule {
        source,
        group: text_field(rule, "group")?,
        port_start: port_field(rule, "portStart")?,
        port_end: port_field(rule, "portEnd")?,
        protocol: text_field(rule, "protocol")?,
        action,
    })
}

/// The typed rule of a library rule that passed [`FwRule::problem`].
fn typed(index: usize, rule: &FwRule) -> Result<Rule, String> {
    if let Some(why) = rule.problem() {
        return Err(why);
    }
    let proto = Proto::parse(&rule.protocol)
        .ok_or_else(|| format!("protocol {:?} is not supported", rule.protocol))?;
    let port = |p: u32| u16::try_from(p).map_err(|_| format!("port {p} is out of range"));
    let ports = match (rule.port_start, rule.port_end) {
        (0, 0) => Ports::Any,
        (a, b) => Ports::Range(port(a)?, port(b)?),
    };
    let source = match rule.source {
        None => None,
        Some(IpNetwork::V4(net)) => Some(net),
        Some(IpNetwork::V6(_)) => return Err("IPv6 sources are not supported".into()),
    };
    let group = if rule.group.is_empty() {
        None
    } else {
        Some(lochness::canonicalize(&rule.group).map_err(|e| e.to_string())?)
    };
    let verdict = match rule.action.as_str() {
        "accept" | "allow" => Verdict::Accept,
        _ => Verdict::Drop,
    };
    Ok(Rule {
        index,
        proto,
        ports,
        source,
        group,
        verdict,
    })
}

/// Decodes a stored firewall group (the value of `lochness/fwgroups/<id>/metadata`) rule
/// by rule: the usable rules, and each rule left out with its reason. A value that is
/// not a JSON object gives a group without rules (and one [`Skipped`] for rule 0).
pub fn decode_group(id: &str, value: &[u8]) -> (Group, Vec<Skipped>) {
    let mut group = Group {
        id: id.to_string(),
        rules: Vec::new(),
    };
    let mut skipped = Vec::new();
    let skip = |rule: usize, reason: String| Skipped {
        group: id.to_string(),
        rule,
        reason,
    };
    let doc: Value = match serde_json::from_slice(value) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => {
            skipped.push(skip(0, "the stored value is not a JSON object".into()));
            return (group, skipped);
        }
        Err(e) => {
            skipped.push(skip(0, format!("the stored value is not JSON: {e}")));
            return (group, skipped);
        }
    };
    let rules = match doc.get("rules") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(rules)) => rules.clone(),
        Some(_) => {
            skipped.push(skip(0, "rules is not an array".into()));
            return (group, skipped);
        }
    };
    for (i, rule) in rules.iter().enumerate() {
        match stored_rule(rule).and_then(|r| typed(i + 1, &r)) {
            Ok(rule) => group.rules.push(rule),
            Err(reason) => skipped.push(skip(i + 1, reason)),
        }
    }
    (group, skipped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_rules_are_read_one_by_one() {
        let json = br#"{"id":"x","rules":[
            {"source":"10.0.0.0/8","portStart":22,"portEnd":22,"protocol":"tcp","action":"accept"},
            {"portStart":80,"portEnd":22,"protocol":"tcp","action":"accept"},
            {"portStart":1,"portEnd":2,"protocol":"sctp","action":"accept"},
            {"source":"10.0.0.0/33","portStart":1,"portEnd":2,"protocol":"tcp"},
            {"group":"not-a-uuid","protocol":"udp"},
            {"portStart":53,"portEnd":53,"protocol":"udp","action":"deny"},
            {"protocol":"icmp"},
            {"portStart":"x","protocol":"tcp"},
            7
        ]}"#;
        let (g, skipped) = decode_group("gid", json);
        assert_eq!(
            g.rules,
            vec![
                Rule {
                    index: 1,
                    proto: Proto::Tcp,
                    ports: Ports::Range(22, 22),
                    source: Some("10.0.0.0/8".parse().unwrap()),
                    group: None,
                    verdict: Verdict::Accept,
                },
                Rule {
                    index: 6,
                    proto: Proto::Udp,
                    ports: Ports::Range(53, 53),
                    source: None,
                    group: None,
                    verdict: Verdict::Drop,
                },
                Rule {
                    index: 7,
                    proto: Proto::Icmp,
                    ports: Ports::Any,
                    source: None,
                    group: None,
                    verdict: Verdict::Accept,
                },
            ]
        );
        let reasons: Vec<String> = skipped.iter().map(ToString::to_string).collect();
        assert_eq!(
            reasons,
            [
                "firewall group gid rule 2: portStart 80 is greater than portEnd 22",
                "firewall group gid rule 3: protocol \"sctp\" is not one of tcp, udp, icmp",
                "firewall group gid rule 4: source \"10.0.0.0/33\" is not a CIDR",
                "firewall group gid rule 5: group \"not-a-uuid\" is not a UUID",
                "firewall group gid rule 8: portStart \"x\" is not a port number",
                "firewall group gid rule 9: 7 is not an object",
            ]
        );
    }

    #[test]
    fn a_broken_value_gives_an_empty_group() {
        let (g, skipped) = decode_group("gid", b"{bad");
        assert!(g.rules.is_empty());
        assert_eq!(skipped.len(), 1);
        assert!(skipped[0].reason.contains("not JSON"));
        let (_, skipped) = decode_group("gid", br#"{"rules":{}}"#);
        assert_eq!(skipped[0].reason, "rules is not an array");
        let (g, skipped) = decode_group("gid", br#"{"id":"gid"}"#);
        assert!(g.rules.is_empty() && skipped.is_empty());
    }
}
