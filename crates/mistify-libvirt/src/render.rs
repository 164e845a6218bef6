//! From a [`Guest`] to the typed XML of [`crate::xml`]: disk naming, disk types, NICs in
//! either network mode, metadata, the VNC console.

use std::path::Path;
use std::str::FromStr;

use mistify_rpc::Guest;
use mistify_types::Nic;

use crate::error::{Error, Result};
use crate::xml;

/// How guest NICs reach the host network.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum NetworkMode {
    /// The original's layout: one libvirt network per NIC, named by its MAC, bridged to
    /// the Open vSwitch bridge `nic.network`, with the `vlan-all` port group carrying the
    /// NIC's VLANs.
    #[default]
    Ovs,
    /// A plain Linux bridge `nic.network`; no libvirt network is defined.
    Bridge,
}

impl FromStr for NetworkMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ovs" => Ok(NetworkMode::Ovs),
            "bridge" => Ok(NetworkMode::Bridge),
            other => Err(format!("unknown network mode {other:?} (ovs or bridge)")),
        }
    }
}

impl std::fmt::Display for NetworkMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NetworkMode::Ovs => "ovs",
            NetworkMode::Bridge => "bridge",
        })
    }
}

/// What shapes the XML besides the guest itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Root `type` of the domain XML when the guest has no type of its own (`kvm`).
    pub domain_type: String,
    pub network_mode: NetworkMode,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            domain_type: "kvm".into(),
            network_mode: NetworkMode::Ovs,
        }
    }
}

/// How a disk's source is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskKind {
    /// A regular file: `<disk type="file">` with `<source file=…>`.
    File,
    /// Anything else that exists (a block device): `<disk type="block">` with `dev=`.
    Block,
}

/// The target name of the disk at `index`: `vda` … `vdz`, then `vdaa`, `vdab`, … as
/// libvirt itself counts.
pub fn disk_name(index: usize) -> String {
    let mut letters = Vec::new();
    let mut n = index + 1;
    while n > 0 {
        n -= 1;
        letters.push(b'a' + (n % 26) as u8);
        n /= 26;
    }
    letters.reverse();
    format!("vd{}", String::from_utf8_lossy(&letters))
}

/// Rewrites every disk to bus `virtio` and device `vda`, `vdb`, ….
pub fn name_disks(guest: &mut Guest) {
    for (i, disk) in guest.disks.iter_mut().enumerate() {
        disk.bus = "virtio".into();
        disk.device = disk_name(i);
    }
}

/// Looks at a disk source on this host: a regular file, something else, or an error
/// when it is empty or missing.
pub fn disk_kind(device: &str, source: &str) -> Result<DiskKind> {
    if source.is_empty() {
        return Err(Error::invalid(format!("disk {device} has no source")));
    }
    match std::fs::metadata(Path::new(source)) {
        Ok(meta) if meta.is_file() => Ok(DiskKind::File),
        Ok(_) => Ok(DiskKind::Block),
        Err(e) => Err(Error::invalid(format!(
            "source {source:?} of disk {device} is not usable: {e}"
        ))),
    }
}

/// Refuses any string of the guest that XML cannot carry.
pub fn check_guest_text(guest: &Guest) -> Result<()> {
    xml::check_text("guest id", &guest.id)?;
    xml::check_text("guest type", &guest.kind)?;
    for nic in &guest.nics {
        for (what, value) in [
            ("nic name", &nic.name),
            ("nic network", &nic.network),
            ("nic model", &nic.model),
            ("nic mac", &nic.mac),
        ] {
            xml::check_text(what, value)?;
        }
    }
    for disk in &guest.disks {
        for (what, value) in [
            ("disk device", &disk.device),
            ("disk bus", &disk.bus),
            ("disk source", &disk.source),
            ("disk image", &disk.image),
            ("disk volume", &disk.volume),
        ] {
            xml::check_text(what, value)?;
        }
    }
    for (k, v) in &guest.metadata {
        xml::check_text("metadata key", k)?;
        xml::check_text("metadata value", v)?;
    }
    Ok(())
}

fn vlan(nic: &Nic) -> Option<xml::Vlan> {
    let tags: Vec<xml::Tag> = nic
        .vlans
        .iter()
        .flatten()
        .map(|&id| xml::Tag { id })
        .collect();
    (!tags.is_empty()).then_some(xml::Vlan { tags })
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

fn interface(nic: &Nic, mode: NetworkMode) -> xml::Interface {
    let has_vlans = nic.vlans.as_ref().is_some_and(|v| !v.is_empty());
    let (kind, source, vlan) = match mode {
        NetworkMode::Ovs => (
            "network",
            xml::InterfaceSource {
                network: Some(nic.mac.clone()),
                portgroup: has_vlans.then(|| xml::PORT_GROUP.to_string()),
                bridge: None,
            },
            None,
        ),
        NetworkMode::Bridge => (
            "bridge",
            xml::InterfaceSource {
                network: None,
                portgroup: None,
                bridge: Some(nic.network.clone()),
            },
            None,
        ),
    };
    xml::Interface {
        kind: kind.into(),
        mac: non_empty(&nic.mac).map(|address| xml::Mac { address }),
        source: Some(source),
        vlan,
        target: None,
        model: non_empty(&nic.model).map(|kind| xml::Model { kind }),
        alias: None,
    }
}

/// The typed domain of `guest`. `kinds[i]` is how disk `i` is attached (see
/// [`disk_kind`]); `uuid` is written when given.
pub fn domain(
    guest: &Guest,
    options: &Options,
    uuid: Option<&str>,
    kinds: &[DiskKind],
) -> xml::Domain {
    let kind = if guest.kind.is_empty() {
        options.domain_type.clone()
    } else {
        guest.kind.clone()
    };
    let disks = guest
        .disks
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let file = kinds.get(i).copied() == Some(DiskKind::File);
            xml::Disk {
                kind: if file { "file" } else { "block" }.into(),
                device: "disk".into(),
                driver: Some(xml::DiskDriver {
                    name: "qemu".into(),
                    kind: "raw".into(),
                }),
                source: Some(if file {
                    xml::DiskSource {
                        file: Some(d.source.clone()),
                        dev: None,
                    }
                } else {
                    xml::DiskSource {
                        file: None,
                        dev: Some(d.source.clone()),
                    }
                }),
                target: Some(xml::DiskTarget {
                    dev: d.device.clone(),
                    bus: d.bus.clone(),
                }),
            }
        })
        .collect();
    let device = (!guest.disks.is_empty()).then(|| xml::MetadataDevice {
        xmlns: xml::DEVICE_NS.into(),
        disks: guest
            .disks
            .iter()
            .map(|d| xml::MetadataDisk {
                device: d.device.clone(),
                image: d.image.clone(),
                volume: d.volume.clone(),
            })
            .collect(),
    });
    let user = (!guest.metadata.is_empty()).then(|| xml::UserMetadata {
        xmlns: xml::USER_NS.into(),
        parameters: guest
            .metadata
            .iter()
            .map(|(name, value)| xml::Parameter {
                name: name.clone(),
                value: value.clone(),
            })
            .collect(),
    });
    let metadata = (device.is_some() || user.is_some()).then_some(xml::Metadata { device, user });
    xml::Domain {
        kind,
        name: guest.id.clone(),
        uuid: uuid.map(str::to_string),
        memory: Some(xml::Memory {
            unit: "MiB".into(),
            value: guest.memory,
        }),
        vcpu: Some(u64::from(guest.cpu)),
        metadata,
        os: Some(xml::Os {
            kind: xml::OsType {
                arch: None,
                value: "hvm".into(),
            },
        }),
        devices: xml::Devices {
            interfaces: guest
                .nics
                .iter()
                .map(|n| interface(n, options.network_mode))
                .collect(),
            disks,
            graphics: vec![xml::Graphics::vnc()],
        },
    }
}

/// The per-NIC libvirt network of `ovs` mode: named by the MAC, bridged to the Open
/// vSwitch bridge `nic.network`; the `vlan-all` port group only when there are VLANs
/// (libvirt refuses an empty `<vlan>`).
pub fn network(nic: &Nic) -> xml::Network {
    xml::Network {
        name: nic.mac.clone(),
        uuid: None,
        forward: xml::Forward {
            mode: "bridge".into(),
        },
        bridge: xml::Bridge {
            name: nic.network.clone(),
        },
        virtualport: Some(xml::VirtualPort {
            kind: "openvswitch".into(),
        }),
        portgroup: vlan(nic).map(|vlan| xml::PortGroup {
            name: xml::PORT_GROUP.into(),
            vlan,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_names() {
        assert_eq!(disk_name(0), "vda");
        assert_eq!(disk_name(25), "vdz");
        assert_eq!(disk_name(26), "vdaa");
        assert_eq!(disk_name(27), "vdab");
        assert_eq!(disk_name(26 + 26 * 26), "vdaaa");
    }

    #[test]
    fn disk_kinds() {
        assert_eq!(disk_kind("vda", "/dev/null").ok(), Some(DiskKind::Block));
        let file = std::env::current_exe().expect("test binary path");
        assert_eq!(
            disk_kind("vda", &file.to_string_lossy()).ok(),
            Some(DiskKind::File)
        );
        assert!(disk_kind("vda", "/nonexistent/disk").is_err());
        assert!(disk_kind("vda", "").is_err());
    }

    #[test]
    fn modes_parse() {
        assert_eq!("ovs".parse::<NetworkMode>(), Ok(NetworkMode::Ovs));
        assert_eq!("bridge".parse::<NetworkMode>(), Ok(NetworkMode::Bridge));
        assert!("x".parse::<NetworkMode>().is_err());
    }
}
