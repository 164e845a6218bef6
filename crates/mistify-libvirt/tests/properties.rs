//! Property tests of the XML generation: any string the checks accept survives a domain
//! and network XML round trip unchanged (attributes) or up to surrounding whitespace
//! (element text), and every string they refuse holds a character XML cannot carry.

use std::collections::BTreeMap;

use mistify_libvirt::render::{self, DiskKind, Options};
use mistify_libvirt::xml;
use mistify_rpc::Guest;
use mistify_types::{Disk, Nic};
use proptest::prelude::*;

/// One NIC and one file disk carrying `text` in their free-text fields, `text` also as a
/// metadata key suffix and value.
fn carrying(text: &str) -> Guest {
    let mut g = Guest {
        id: format!("g{text}"),
        memory: 256,
        cpu: 1,
        nics: vec![Nic {
            name: "eth0".into(),
            network: text.into(),
            model: text.into(),
            mac: "02:00:00:00:00:01".into(),
            ..Default::default()
        }],
        disks: vec![Disk {
            source: text.into(),
            image: text.into(),
            ..Default::default()
        }],
        metadata: BTreeMap::from([(format!("k{text}"), text.to_string())]),
        ..Default::default()
    };
    render::name_disks(&mut g);
    g
}

/// A character XML 1.0 cannot carry (in text or attributes, escaped or not).
fn xml_cannot_carry(c: char) -> bool {
    !matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..='\u{10FFFF}')
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn accepted_text_round_trips_and_refused_text_has_a_forbidden_character(text in any::<String>()) {
        let g = carrying(&text);
        match render::check_guest_text(&g) {
            Err(_) => prop_assert!(text.chars().any(xml_cannot_carry), "refused {text:?}"),
            Ok(()) => {
                let domain = render::domain(&g, &Options::default(), None, &[DiskKind::File])
                    .to_xml()
                    .expect("render");
                let back = xml::Domain::from_xml(&domain).expect("parse back");
                let model = back.devices.interfaces[0].model.as_ref().map(|m| m.kind.clone());
                prop_assert_eq!(model, (!text.is_empty()).then(|| text.clone()));
                let source = back.devices.disks[0].source.as_ref().and_then(|s| s.file.clone());
                prop_assert_eq!(source, Some(text.clone()));
                let params = back.metadata.and_then(|m| m.user).expect("user metadata").parameters;
                prop_assert_eq!(&params[0].value, &text);
                prop_assert_eq!(&params[0].name, &format!("k{text}"));
                let name = format!("g{text}");
                prop_assert_eq!(back.name.trim(), name.trim());
                let network = render::network(&g.nics[0]).to_xml().expect("render");
                xml::Network::from_xml(&network).expect("network parses back");
            }
        }
    }
}
