//! Domain and network XML as typed structs, written and read with quick-xml's serde
//! support. Nothing is pasted into a template: every value goes through the serializer,
//! which escapes it, and strings XML cannot carry at all are refused first.
//!
//! The same structs read libvirt's own XML back (`Run`, `Status`, the tests): every field
//! has a default and unknown elements are ignored.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Namespace of the disk metadata (seed `003`): `device` with `disk{device,image,volume}`.
pub const DEVICE_NS: &str = "http://mistify.io/xml/device/1";
/// Namespace of the user metadata (seed `003`): `user_metadata` with `parameter{name,value}`.
pub const USER_NS: &str = "http://mistify.io/xml/user_metadata/1";
/// The port group every VLAN-tagged per-NIC network carries.
pub const PORT_GROUP: &str = "vlan-all";

/// A libvirt `<domain>`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Domain {
    #[serde(rename = "@type")]
    pub kind: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<Memory>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vcpu: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Metadata>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub os: Option<Os>,
    pub devices: Devices,
}

/// `<memory unit="MiB">N</memory>`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Memory {
    #[serde(rename = "@unit", skip_serializing_if = "String::is_empty")]
    pub unit: String,
    #[serde(rename = "$text")]
    pub value: u64,
}

/// `<os><type>hvm</type></os>`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Os {
    #[serde(rename = "type")]
    pub kind: OsType,
}

/// The text of `<os><type>`; libvirt adds `arch` and `machine` attributes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct OsType {
    #[serde(rename = "@arch", skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    #[serde(rename = "$text")]
    pub value: String,
}

/// `<metadata>` with the two mistify namespaces.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Metadata {
    #[serde(
        rename(serialize = "mistify:device", deserialize = "device"),
        skip_serializing_if = "Option::is_none"
    )]
    pub device: Option<MetadataDevice>,
    #[serde(
        rename(
            serialize = "mistify-user:user_metadata",
            deserialize = "user_metadata"
        ),
        skip_serializing_if = "Option::is_none"
    )]
    pub user: Option<UserMetadata>,
}

/// `<mistify:device xmlns:mistify="http://mistify.io/xml/device/1">`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MetadataDevice {
    #[serde(rename = "@xmlns:mistify", skip_deserializing)]
    pub xmlns: String,
    #[serde(rename(serialize = "mistify:disk", deserialize = "disk"))]
    pub disks: Vec<MetadataDisk>,
}

/// One disk of the device metadata.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MetadataDisk {
    #[serde(rename = "@device")]
    pub device: String,
    #[serde(rename = "@image")]
    pub image: String,
    #[serde(rename = "@volume")]
    pub volume: String,
}

/// `<mistify-user:user_metadata xmlns:mistify-user="http://mistify.io/xml/user_metadata/1">`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct UserMetadata {
    #[serde(rename = "@xmlns:mistify-user", skip_deserializing)]
    pub xmlns: String,
    #[serde(rename(serialize = "mistify-user:parameter", deserialize = "parameter"))]
    pub parameters: Vec<Parameter>,
}

/// One `name`/`value` pair of the user metadata.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Parameter {
    #[serde(rename = "@name")]
    pub name: String,
    #[serde(rename = "@value")]
    pub value: String,
}

/// `<devices>`: interfaces, disks and the console, in that order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Devices {
    #[serde(rename = "interface")]
    pub interfaces: Vec<Interface>,
    #[serde(rename = "disk")]
    pub disks: Vec<Disk>,
    #[serde(rename = "graphics")]
    pub graphics: Vec<Graphics>,
}

/// A guest NIC.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Interface {
    #[serde(rename = "@type")]
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mac: Option<Mac>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<InterfaceSource>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vlan: Option<Vlan>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<Target>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<Model>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alias: Option<Alias>,
}

/// `<mac address=…/>`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Mac {
    #[serde(rename = "@address")]
    pub address: String,
}

/// `<source network=… portgroup=…/>` or `<source bridge=…/>`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct InterfaceSource {
    #[serde(rename = "@network", skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    #[serde(rename = "@portgroup", skip_serializing_if = "Option::is_none")]
    pub portgroup: Option<String>,
    #[serde(rename = "@bridge", skip_serializing_if = "Option::is_none")]
    pub bridge: Option<String>,
}

/// `<target dev=…/>`: the host-side device, set by libvirt.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Target {
    #[serde(rename = "@dev")]
    pub dev: String,
}

/// `<model type=…/>`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Model {
    #[serde(rename = "@type")]
    pub kind: String,
}

/// `<alias name=…/>`: the hypervisor's device name (QEMU sets it).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Alias {
    #[serde(rename = "@name")]
    pub name: String,
}

/// `<vlan>` with one `<tag id=…/>` per VLAN.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Vlan {
    #[serde(rename = "tag")]
    pub tags: Vec<Tag>,
}

/// One VLAN tag.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Tag {
    #[serde(rename = "@id")]
    pub id: i64,
}

/// A guest disk.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Disk {
    /// `file` or `block`.
    #[serde(rename = "@type")]
    pub kind: String,
    #[serde(rename = "@device")]
    pub device: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driver: Option<DiskDriver>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<DiskSource>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<DiskTarget>,
}

/// `<driver name="qemu" type="raw"/>`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DiskDriver {
    #[serde(rename = "@name")]
    pub name: String,
    #[serde(rename = "@type")]
    pub kind: String,
}

/// `<source file=…/>` or `<source dev=…/>`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DiskSource {
    #[serde(rename = "@file", skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(rename = "@dev", skip_serializing_if = "Option::is_none")]
    pub dev: Option<String>,
}

/// `<target dev="vda" bus="virtio"/>`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DiskTarget {
    #[serde(rename = "@dev")]
    pub dev: String,
    #[serde(rename = "@bus")]
    pub bus: String,
}

/// `<graphics type="vnc" …/>`; libvirt writes the port it picked into `port`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Graphics {
    #[serde(rename = "@type")]
    pub kind: String,
    #[serde(rename = "@port", skip_serializing_if = "Option::is_none")]
    pub port: Option<String>,
    #[serde(rename = "@autoport", skip_serializing_if = "Option::is_none")]
    pub autoport: Option<String>,
    #[serde(rename = "@listen", skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
}

impl Graphics {
    /// The VNC console every guest gets: a port chosen by libvirt, loopback only.
    pub fn vnc() -> Self {
        Graphics {
            kind: "vnc".into(),
            port: None,
            autoport: Some("yes".into()),
            listen: Some("127.0.0.1".into()),
        }
    }
}

impl Domain {
    /// The VNC port libvirt assigned, if any (`-1` and absent mean none yet).
    pub fn vnc_port(&self) -> Option<i64> {
        self.devices
            .graphics
            .iter()
            .filter(|g| g.kind == "vnc")
            .filter_map(|g| g.port.as_deref()?.parse::<i64>().ok())
            .find(|p| *p > 0)
    }
}

/// A libvirt `<network>` (one per guest NIC in `ovs` mode).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Network {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    pub forward: Forward,
    pub bridge: Bridge,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub virtualport: Option<VirtualPort>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub portgroup: Option<PortGroup>,
}

/// `<forward mode="bridge"/>`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Forward {
    #[serde(rename = "@mode")]
    pub mode: String,
}

/// `<bridge name=…/>`: the host bridge.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Bridge {
    #[serde(rename = "@name")]
    pub name: String,
}

/// `<virtualport type="openvswitch"/>`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct VirtualPort {
    #[serde(rename = "@type")]
    pub kind: String,
}

/// `<portgroup name="vlan-all"><vlan>…</vlan></portgroup>`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PortGroup {
    #[serde(rename = "@name")]
    pub name: String,
    pub vlan: Vlan,
}

/// Refuses strings that XML 1.0 cannot represent even escaped (most control
/// characters, lone surrogates cannot occur in Rust strings, U+FFFE/U+FFFF).
pub fn check_text(what: &str, value: &str) -> Result<()> {
    let bad = value.chars().find(|&c| {
        let n = c as u32;
        !(n == 0x9
            || n == 0xA
            || n == 0xD
            || (0x20..=0xD7FF).contains(&n)
            || (0xE000..=0xFFFD).contains(&n)
            || (0x10000..=0x10FFFF).contains(&n))
    });
    match bad {
        Some(c) => Err(Error::invalid(format!(
            "{what} contains the character U+{:04X}, which XML cannot carry",
            c as u32
        ))),
        None => Ok(()),
    }
}

fn to_xml<T: Serialize>(root: &str, value: &T) -> Result<String> {
    let mut out = String::new();
    let mut ser = quick_xml::se::Serializer::with_root(&mut out, Some(root))
        .map_err(|e| Error::Xml(e.to_string()))?;
    ser.indent(' ', 2);
    ser.set_quote_level(quick_xml::se::QuoteLevel::Full);
    value
        .serialize(ser)
        .map_err(|e| Error::Xml(e.to_string()))?;
    Ok(out)
}

impl Domain {
    /// The XML document libvirt gets.
    pub fn to_xml(&self) -> Result<String> {
        to_xml("domain", self)
    }

    /// Reads a domain XML (libvirt's or ours).
    pub fn from_xml(xml: &str) -> Result<Domain> {
        quick_xml::de::from_str(xml).map_err(|e| Error::Xml(e.to_string()))
    }
}

impl Network {
    /// The XML document libvirt gets.
    pub fn to_xml(&self) -> Result<String> {
        to_xml("network", self)
    }

    /// Reads a network XML.
    pub fn from_xml(xml: &str) -> Result<Network> {
        quick_xml::de::from_str(xml).map_err(|e| Error::Xml(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vnc_port_from_libvirt_xml() {
        let running = "<domain type='kvm'><name>g</name><devices>\
            <graphics type='spice' port='5900'/>\
            <graphics type='vnc' port='5901' autoport='yes' listen='127.0.0.1'>\
            <listen type='address' address='127.0.0.1'/></graphics>\
            </devices></domain>";
        assert_eq!(Domain::from_xml(running).unwrap().vnc_port(), Some(5901));
        let shut_off = "<domain type='kvm'><name>g</name><devices>\
            <graphics type='vnc' port='-1' autoport='yes'/></devices></domain>";
        assert_eq!(Domain::from_xml(shut_off).unwrap().vnc_port(), None);
        let none = "<domain type='test'><name>g</name><devices/></domain>";
        assert_eq!(Domain::from_xml(none).unwrap().vnc_port(), None);
    }
}
