//! The original nfirewalld's recorded data set (`tests/fixtures/wire/lochness-renderers.json`),
//! seeded into a real etcd with the Go keys and rendered by ours for each of its two
//! hypervisors. Our text is deliberately not the original's (docs/compat.md, "Guest
//! firewall"); what must agree is what is enforced: the same guests filtered by their
//! group's rules, the same member sets (read from the recorded text), with the
//! original's recorded quirks fixed (group numbers that collide, `deny` rendered as
//! accept, a rule with start > end).

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use lochness::Context;
use lochness_firewall::render::render;
use lochness_firewall::view::View;
use mistify_e2e::etcd::Etcd;
use serde_json::Value;

const WEB: &str = "eeee0081-5555-4555-8555-000000000081";
const DB: &str = "eeee0082-5555-4555-8555-000000000082";

/// The recorded text's member sets by firewall group (`# FWGroupID=` … `set s<N>` …
/// `elements = { … }`) and the addresses of its vmap.
fn recorded_facts(text: &str) -> (BTreeMap<String, BTreeSet<String>>, BTreeSet<String>) {
    let mut sets: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut vmap = BTreeSet::new();
    let (mut group, mut in_elements, mut in_vmap) = (None::<String>, false, false);
    for line in text.lines().map(str::trim) {
        if let Some(id) = line.strip_prefix("# FWGroupID=") {
            group = Some(id.to_string());
            sets.entry(id.to_string()).or_default();
        } else if line.starts_with("elements = {") {
            in_elements = true;
        } else if line.starts_with("add rule filter input ip daddr vmap {") {
            in_vmap = true;
        } else if line.starts_with('}') {
            in_elements = false;
            in_vmap = false;
        } else if in_elements {
            if let Some(g) = &group {
                sets.entry(g.clone())
                    .or_default()
                    .insert(line.trim_end_matches(',').to_string());
            }
        } else if in_vmap {
            if let Some((ip, _)) = line.split_once(" : ") {
                vmap.insert(ip.to_string());
            }
        }
    }
    (sets, vmap)
}

/// Our text's member sets by group and our vmap (address → chain).
fn our_facts(text: &str) -> (BTreeMap<String, BTreeSet<String>>, BTreeMap<String, String>) {
    let mut sets = BTreeMap::new();
    let mut vmap = BTreeMap::new();
    let mut set = None::<String>;
    for line in text.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix("set m_") {
            set = Some(name.trim_end_matches(" {").to_string());
        } else if let Some(list) = line.strip_prefix("elements = { ") {
            let members = list
                .trim_end_matches(" }")
                .split(", ")
                .map(str::to_string)
                .collect();
            if let Some(s) = set.take() {
                sets.insert(s, members);
            }
        } else if let Some((ip, chain)) = line.split_once(" : jump ") {
            vmap.insert(ip.to_string(), chain.trim_end_matches(',').to_string());
        }
    }
    (sets, vmap)
}

/// The lines of our chain `name`.
fn chain<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
    text.split(&format!("\tchain {name} {{\n"))
        .nth(1)
        .and_then(|rest| rest.split("\n\t}").next())
        .map(|body| body.lines().map(str::trim).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn the_recorded_data_set_renders_the_same_rules_with_the_quirks_fixed() {
    if mistify_e2e::skipped("etcd") {
        return;
    }
    let wire = mistify_e2e::fixtures_dir().join("wire");
    let file = wire.join("lochness-renderers.json");
    let etcd = Etcd::start("lochness-fw-recorded");
    let seed = Command::new("python3")
        .arg(wire.join("lochness-seed.py"))
        .arg(&file)
        .args(["--etcd", &etcd.url, "--wipe"])
        .output()
        .expect("python3");
    assert!(
        seed.status.success(),
        "{}",
        String::from_utf8_lossy(&seed.stderr)
    );
    let fixture: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    let ctx = Context::new(&[etcd.url.as_str()], None).await.unwrap();
    let hypervisors = fixture["renderers"]["nfirewalld"]["hypervisors"]
        .as_object()
        .unwrap();
    assert_eq!(hypervisors.len(), 2);
    let mut seen = 0;
    for (hv, recorded) in hypervisors {
        let view = View::load(&ctx, hv).await.unwrap();
        let (snap, notes) = view.snapshot();
        let r = render("mistify", &snap);
        let skipped = r.skipped.clone();
        assert!(
            notes.is_empty() && r.notes.is_empty(),
            "{notes:?} {:?}",
            r.notes
        );
        let (rec_sets, rec_vmap) = recorded_facts(recorded["text"].as_str().unwrap());
        let (sets, vmap) = our_facts(&r.text);
        // The same guests are filtered, each by its own group's chain.
        assert_eq!(
            vmap.keys().cloned().collect::<BTreeSet<_>>(),
            rec_vmap,
            "{hv}"
        );
        for ip in vmap.keys() {
            let guest = snap
                .guests
                .iter()
                .find(|g| g.ip.to_string() == *ip)
                .unwrap();
            assert_eq!(vmap[ip], format!("g_{}", guest.fwgroup.as_deref().unwrap()));
        }
        // Member sets: the recorded members of every group our rules refer to.
        for (group, members) in &sets {
            assert_eq!(
                Some(members),
                rec_sets.get(group),
                "{hv}: members of {group}"
            );
        }
        let reasons: Vec<String> = skipped.iter().map(ToString::to_string).collect();
        if hv.starts_with("aaaa0081") {
            seen += 1;
            assert_eq!(
                chain(&r.text, &format!("g_{WEB}")),
                [
                    "tcp dport 80 counter accept".to_string(),
                    "ip saddr 0.0.0.0/0 tcp dport 443 counter accept".to_string(),
                    format!("ip saddr @m_{WEB} tcp dport 8000-8080 counter accept"),
                    // Source CIDR or group members (the original required both).
                    "ip saddr 10.0.0.0/8 udp dport 53 counter accept".to_string(),
                    format!("ip saddr @m_{DB} udp dport 53 counter accept"),
                    "counter drop".to_string(),
                ]
            );
            assert_eq!(sets.keys().collect::<Vec<_>>(), [WEB, DB]);
            assert!(reasons.is_empty(), "{reasons:?}");
        } else {
            seen += 1;
            // The original rendered both groups as g0/s0 (nft merged them) and the
            // `deny` rule as accept.
            assert_eq!(
                chain(&r.text, &format!("g_{DB}")),
                [
                    format!("ip saddr @m_{WEB} tcp dport 5432 counter accept"),
                    "ip saddr 192.168.0.0/16 tcp dport 22 counter drop".to_string(),
                    "tcp dport 9100-9200 counter accept".to_string(),
                    "counter drop".to_string(),
                ]
            );
            assert_eq!(sets.keys().collect::<Vec<_>>(), [WEB]);
            assert_eq!(
                reasons,
                [format!(
                    "firewall group {DB} rule 3: portStart 3000 is greater than portEnd 2000"
                )]
            );
        }
    }
    assert_eq!(seen, 2);
}
