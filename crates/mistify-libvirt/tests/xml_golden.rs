//! Golden tests of the domain and network XML, and hostile strings.
//!
//! The golden files in `tests/golden/` were read and checked by hand against libvirt's
//! formats (`formatdomain`, `formatnetwork`) and the seed's metadata namespaces.

use std::collections::BTreeMap;

use mistify_libvirt::render::{self, DiskKind, NetworkMode, Options};
use mistify_libvirt::xml;
use mistify_rpc::Guest;
use mistify_types::{Disk, Nic};

const ID: &str = "5a0c6c1e-2f0a-4b7e-9a3e-0d1c2b3a4f50";

fn guest() -> Guest {
    let mut g = Guest {
        id: ID.into(),
        memory: 1024,
        cpu: 2,
        nics: vec![
            Nic {
                name: "eth0".into(),
                network: "mistify0".into(),
                model: "virtio".into(),
                mac: "02:6b:1f:00:aa:01".into(),
                vlans: Some(vec![1, 20]),
                ..Default::default()
            },
            Nic {
                network: "mistify0".into(),
                mac: "02:6b:1f:00:aa:02".into(),
                vlans: None,
                ..Default::default()
            },
        ],
        disks: vec![
            Disk {
                bus: "sata".into(),
                device: "hda".into(),
                source: "/var/lib/mistify/disk-0.img".into(),
                image: "289120e4-ed12-431d-8d18-48f8a94bb05a".into(),
                volume: "mistify/guests/g/disk-0".into(),
                size: 1024,
            },
            Disk {
                source: "/dev/zvol/mistify/guests/g/disk-1".into(),
                volume: "mistify/guests/g/disk-1".into(),
                ..Default::default()
            },
        ],
        metadata: BTreeMap::from([("owner".to_string(), "ops".to_string())]),
        ..Default::default()
    };
    render::name_disks(&mut g);
    g
}

const KINDS: [DiskKind; 2] = [DiskKind::File, DiskKind::Block];

fn golden(name: &str) -> String {
    let path = format!("{}/tests/golden/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .trim_end()
        .to_string()
}

#[test]
fn domain_xml_ovs() {
    let xml = render::domain(&guest(), &Options::default(), Some(ID), &KINDS)
        .to_xml()
        .unwrap();
    assert_eq!(xml, golden("domain-ovs.xml"));
}

#[test]
fn domain_xml_bridge() {
    let options = Options {
        domain_type: "qemu".into(),
        network_mode: NetworkMode::Bridge,
    };
    let xml = render::domain(&guest(), &options, None, &KINDS)
        .to_xml()
        .unwrap();
    assert_eq!(xml, golden("domain-bridge.xml"));
}

#[test]
fn guest_type_wins_over_the_default_root_type() {
    let mut g = guest();
    g.kind = "test".into();
    let d = render::domain(&g, &Options::default(), None, &KINDS);
    assert_eq!(d.kind, "test");
    assert_eq!(g.kind, "test");
}

#[test]
fn network_xml_with_and_without_vlans() {
    let g = guest();
    assert_eq!(
        render::network(&g.nics[0]).to_xml().unwrap(),
        golden("network-vlans.xml")
    );
    assert_eq!(
        render::network(&g.nics[1]).to_xml().unwrap(),
        golden("network-no-vlans.xml")
    );
    // An empty list is no VLANs either: no empty <vlan>.
    let mut nic = g.nics[1].clone();
    nic.vlans = Some(vec![]);
    assert_eq!(
        render::network(&nic).to_xml().unwrap(),
        golden("network-no-vlans.xml")
    );
}

#[test]
fn domain_xml_reads_back_including_metadata() {
    let g = guest();
    let written = render::domain(&g, &Options::default(), Some(ID), &KINDS);
    let read = xml::Domain::from_xml(&written.to_xml().unwrap()).unwrap();
    let meta = read.metadata.expect("metadata");
    let disks = meta.device.expect("device metadata").disks;
    assert_eq!(disks.len(), 2);
    assert_eq!(disks[0].device, "vda");
    assert_eq!(disks[0].image, "289120e4-ed12-431d-8d18-48f8a94bb05a");
    assert_eq!(disks[1].volume, "mistify/guests/g/disk-1");
    let params = meta.user.expect("user metadata").parameters;
    assert_eq!(params.len(), 1);
    assert_eq!(
        (params[0].name.as_str(), params[0].value.as_str()),
        ("owner", "ops")
    );
    assert_eq!(read.devices.disks.len(), 2);
    assert_eq!(read.devices.interfaces.len(), 2);
}

/// Strings that would break a template: every one must come back unchanged.
const HOSTILE: &[&str] = &[
    "\"><evil/>",
    "'><evil attr='x'/>",
    "</name><name>other",
    "&amp; &lt; & < > \" '",
    "]]><![CDATA[x]]>",
    "<!-- comment -->",
    "<?xml version=\"1.0\"?>",
    "&#x0;&#0;",
    "tab\there\nnewline\r\nreturn",
    "ünïcødé ✓ 𝄞",
    "  leading and trailing  ",
    "",
];

#[test]
fn hostile_strings_never_break_the_xml() {
    for (i, s) in HOSTILE.iter().enumerate() {
        let mut g = guest();
        g.id = s.to_string();
        g.nics[0].model = s.to_string();
        g.nics[1].network = s.to_string();
        g.disks[0].source = s.to_string();
        g.disks[0].image = s.to_string();
        g.metadata = BTreeMap::from([(format!("k{i}{s}"), s.to_string())]);
        render::check_guest_text(&g).unwrap_or_else(|e| panic!("{s:?} refused: {e}"));
        let text = render::domain(&g, &Options::default(), None, &KINDS)
            .to_xml()
            .unwrap();
        let back = xml::Domain::from_xml(&text).unwrap_or_else(|e| panic!("{s:?}: {e}\n{text}"));
        // Attribute values: exactly as given (the XML parser normalises raw whitespace in
        // attributes, so the writer must have escaped it).
        assert_eq!(
            back.devices.interfaces[0]
                .model
                .as_ref()
                .map(|m| m.kind.as_str()),
            if s.is_empty() { None } else { Some(*s) },
            "model {s:?}\n{text}"
        );
        assert_eq!(
            back.devices.disks[0]
                .source
                .as_ref()
                .and_then(|x| x.file.as_deref()),
            Some(*s),
            "{text}"
        );
        let params = back
            .metadata
            .and_then(|m| m.user)
            .expect("user metadata")
            .parameters;
        assert_eq!(params[0].value, *s, "{text}");
        assert_eq!(params[0].name, format!("k{i}{s}"), "{text}");
        // Element text: the parser may trim surrounding whitespace, never change markup.
        assert_eq!(back.name.trim(), s.trim(), "{text}");
        assert_eq!(back.devices.disks.len(), 2, "{text}");
        assert_eq!(back.devices.interfaces.len(), 2, "{text}");

        let net = render::network(&g.nics[1]).to_xml().unwrap();
        let nb = xml::Network::from_xml(&net).unwrap_or_else(|e| panic!("{s:?}: {e}\n{net}"));
        assert_eq!(nb.bridge.name, *s, "{net}");
    }
}

#[test]
fn characters_xml_cannot_carry_are_refused() {
    for bad in ["nul\0", "bell\u{7}", "esc\u{1b}[0m", "\u{FFFE}", "\u{FFFF}"] {
        let mut g = guest();
        g.nics[0].name = bad.to_string();
        let err = render::check_guest_text(&g).expect_err(bad);
        assert!(err.to_string().starts_with("invalid argument"), "{err}");
        let mut g = guest();
        g.metadata.insert("k".into(), bad.into());
        assert!(render::check_guest_text(&g).is_err(), "{bad:?}");
    }
}
