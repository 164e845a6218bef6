//! The `Libvirt.*` methods: guest lifecycle, metrics, and the state mapping.

use std::collections::BTreeMap;

use mistify_rpc::{
    Guest, GuestCpuMetrics, GuestDiskMetrics, GuestMetricsRequest, GuestMetricsResponse,
    GuestNicMetrics, GuestRequest, GuestResponse,
};
use virt::connect::Connect;
use virt::domain::Domain;
use virt::network::Network;
use virt::sys;

use crate::error::{
    Error, Result, CODE_INVALID_ARG, CODE_NO_DOMAIN, CODE_NO_NETWORK, CODE_NO_SUPPORT,
};
use crate::pool::Pool;
use crate::raw;
use crate::render::{self, DiskKind, NetworkMode, Options};
use crate::xml;

/// libvirt's domain states, by number.
pub mod state {
    pub const NOSTATE: i32 = 0;
    pub const RUNNING: i32 = 1;
    pub const BLOCKED: i32 = 2;
    pub const PAUSED: i32 = 3;
    pub const SHUTDOWN: i32 = 4;
    pub const SHUTOFF: i32 = 5;
    pub const CRASHED: i32 = 6;
    pub const PMSUSPENDED: i32 = 7;
}

/// The name of a libvirt domain state in `guest.state`; `""` for numbers libvirt may
/// add later (the key is then omitted from the guest).
pub fn state_name(state: i32) -> &'static str {
    match state {
        state::NOSTATE => "unknown",
        state::RUNNING => "running",
        state::BLOCKED => "blocked",
        state::PAUSED => "paused",
        state::SHUTDOWN => "shutdown",
        state::SHUTOFF => "shutoff",
        state::CRASHED => "crashed",
        state::PMSUSPENDED => "suspended",
        _ => "",
    }
}

/// What `CreateGuest` writes into an empty `guest.type`, as the original did.
pub const ORIGINAL_GUEST_TYPE: &str = "kvm";

/// The lifecycle operations that share lookup, state read and guest echo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Status,
    Run,
    Reboot,
    Shutdown,
    Poweroff,
    Suspend,
    Resume,
}

/// The sub-agent: a connection pool and the XML options.
#[derive(Clone)]
pub struct Libvirt {
    pool: Pool,
    options: Options,
}

/// A guest that passed validation: present, with a UUID as id.
fn checked_guest(guest: Option<Guest>) -> Result<Guest> {
    let guest = guest.ok_or_else(|| Error::invalid(""))?;
    if guest.id.is_empty() {
        return Err(Error::invalid(""));
    }
    if uuid::Uuid::parse_str(&guest.id).is_err() {
        return Err(Error::invalid(format!(
            "guest id {:?} is not a UUID",
            guest.id
        )));
    }
    Ok(guest)
}

fn lookup(conn: &Connect, id: &str) -> Result<Domain> {
    Ok(conn.lookup_domain_by_name(id)?)
}

fn live_xml(dom: &Domain) -> Result<xml::Domain> {
    xml::Domain::from_xml(&dom.xml_desc(0)?)
}

fn set_vnc(guest: &mut Guest, dom: &xml::Domain) {
    if let Some(port) = dom.vnc_port() {
        guest.vnc = port;
    }
}

/// Copies what libvirt knows about each NIC (host device, alias) into the guest, matched
/// by MAC address; a NIC without MAC is matched by position. Only values libvirt has
/// overwrite the guest's.
fn update_nics(guest: &mut Guest, dom: &xml::Domain) {
    for (i, nic) in guest.nics.iter_mut().enumerate() {
        let found = if nic.mac.is_empty() {
            dom.devices.interfaces.get(i)
        } else {
            dom.devices.interfaces.iter().find(|iface| {
                iface
                    .mac
                    .as_ref()
                    .is_some_and(|m| m.address.eq_ignore_ascii_case(&nic.mac))
            })
        };
        let Some(iface) = found else { continue };
        if let Some(dev) = iface.target.as_ref().filter(|t| !t.dev.is_empty()) {
            nic.device = dev.dev.clone();
        }
        if let Some(alias) = iface.alias.as_ref().filter(|a| !a.name.is_empty()) {
            nic.name = alias.name.clone();
        }
    }
}

/// Brings a network to: defined, autostarted, active. Returns whether this call defined it.
fn ensure_network(conn: &Connect, def: &xml::Network) -> Result<bool> {
    let (net, created) = match conn.lookup_network_by_name(&def.name) {
        Ok(net) => (net, false),
        Err(e) if e.code().to_raw() == CODE_NO_NETWORK => {
            (conn.define_network_xml(&def.to_xml()?)?, true)
        }
        Err(e) => return Err(e.into()),
    };
    let result = (|| -> Result<()> {
        if !net.autostart()? {
            net.set_autostart(true)?;
        }
        if !net.is_active()? {
            net.create()?;
        }
        Ok(())
    })();
    match result {
        Ok(()) => Ok(created),
        Err(e) => {
            if created {
                remove_network(&net);
            }
            Err(e)
        }
    }
}

/// Stops and undefines a network, ignoring what is already done.
fn remove_network(net: &Network) {
    if net.is_active().unwrap_or(false) {
        let _ = net.destroy();
    }
    if net.is_persistent().unwrap_or(true) {
        let _ = net.undefine();
    }
}

fn remove_networks_named(conn: &Connect, names: &[String]) {
    for name in names {
        if let Ok(net) = conn.lookup_network_by_name(name) {
            remove_network(&net);
        }
    }
}

/// Removes the network called `name` if it exists.
fn delete_network(conn: &Connect, name: &str) -> Result<()> {
    let net = match conn.lookup_network_by_name(name) {
        Ok(net) => net,
        Err(e) if e.code().to_raw() == CODE_NO_NETWORK => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    if net.is_active()? {
        net.destroy()?;
    }
    if net.is_persistent()? {
        net.undefine()?;
    }
    Ok(())
}

fn undefine(dom: &Domain) -> Result<()> {
    let all = sys::VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
        | sys::VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
        | sys::VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA
        | sys::VIR_DOMAIN_UNDEFINE_NVRAM;
    let basic = sys::VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | sys::VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA;
    for flags in [all, basic] {
        match dom.undefine_flags(flags) {
            Ok(()) => return Ok(()),
            Err(e) => {
                let code = e.code().to_raw();
                if code != CODE_INVALID_ARG && code != CODE_NO_SUPPORT {
                    return Err(e.into());
                }
            }
        }
    }
    Ok(dom.undefine()?)
}

/// What `CreateGuest` checks and renders before anything is defined: disk names, disk
/// types by source, text XML can carry, the network and domain documents.
fn prepare(guest: &mut Guest, options: &Options) -> Result<(Vec<DiskKind>, Vec<xml::Network>)> {
    render::check_guest_text(guest)?;
    render::name_disks(guest);
    let kinds = guest
        .disks
        .iter()
        .map(|d| render::disk_kind(&d.device, &d.source))
        .collect::<Result<Vec<_>>>()?;
    let networks = match options.network_mode {
        NetworkMode::Ovs => guest.nics.iter().map(render::network).collect(),
        NetworkMode::Bridge => Vec::new(),
    };
    // Render once now so that XML problems surface before libvirt is touched.
    for net in &networks {
        net.to_xml()?;
    }
    render::domain(guest, options, None, &kinds).to_xml()?;
    Ok((kinds, networks))
}

/// Whether a request's `action` lets a missing domain be re-defined: any but a create
/// or a delete (`create`, `containerCreate`, `delete`, `containerDelete`, any case). A
/// metrics request carries no action: it may.
pub fn may_redefine(action: &str) -> bool {
    let lower = action.to_ascii_lowercase();
    let verb = lower.strip_prefix("container").unwrap_or(&lower);
    verb != "create" && verb != "delete"
}

/// The guest's domain. When libvirt has none (code 42: the test driver forgets its
/// domains with its process, a host lost a transient domain) and `redefine` holds the
/// request's guest, the domain and its networks are defined from it exactly as
/// `CreateGuest` does (shut off), and the call carries on; a guest that cannot be
/// defined (e.g. a disk source that is gone) keeps libvirt's `Domain not found`, the
/// reason logged.
fn domain_of(conn: &Connect, id: &str, redefine: Option<&(Guest, Options)>) -> Result<Domain> {
    let missing = match lookup(conn, id) {
        Ok(dom) => return Ok(dom),
        Err(e) if e.is_no_domain() => e,
        Err(e) => return Err(e),
    };
    let Some((guest, options)) = redefine else {
        return Err(missing);
    };
    let mut guest = guest.clone();
    let defined = prepare(&mut guest, options)
        .and_then(|(kinds, networks)| Libvirt::define(conn, &guest, options, &kinds, &networks));
    match defined {
        Ok(dom) => {
            tracing::warn!(guest = %id, "libvirt had no domain for this guest: re-defined it from the request's guest (shut off), as CreateGuest does");
            Ok(dom)
        }
        Err(why) => {
            tracing::warn!(guest = %id, error = %why, "libvirt has no domain for this guest and it cannot be re-defined from the request");
            Err(missing)
        }
    }
}

impl Libvirt {
    /// A sub-agent over `pool`, writing XML according to `options`.
    pub fn new(pool: Pool, options: Options) -> Libvirt {
        Libvirt { pool, options }
    }

    /// The connection pool.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The XML options.
    pub fn options(&self) -> &Options {
        &self.options
    }

    /// Checks a guest for `CreateGuest`/`Create` and renders everything libvirt will
    /// get, before anything is defined: disk names, disk types by source, text XML can
    /// carry, the network and domain documents.
    fn prepare(&self, guest: &mut Guest) -> Result<(Vec<DiskKind>, Vec<xml::Network>)> {
        prepare(guest, &self.options)
    }

    /// Defines (or redefines) the networks and the domain of `guest` on `conn`. Networks
    /// this call defined are removed again when a later step fails.
    fn define(
        conn: &Connect,
        guest: &Guest,
        options: &Options,
        kinds: &[DiskKind],
        networks: &[xml::Network],
    ) -> Result<Domain> {
        let mut created: Vec<String> = Vec::new();
        let result = (|| -> Result<Domain> {
            for net in networks {
                if ensure_network(conn, net)? {
                    created.push(net.name.clone());
                }
            }
            // Keep the UUID of an existing domain of that name so a retry redefines it;
            // a new domain gets the guest id as UUID.
            let uuid = match conn.lookup_domain_by_name(&guest.id) {
                Ok(dom) => dom.uuid_string()?,
                Err(e) if e.code().to_raw() == crate::error::CODE_NO_DOMAIN => guest.id.clone(),
                Err(e) => return Err(e.into()),
            };
            let def = render::domain(guest, options, Some(&uuid), kinds).to_xml()?;
            Ok(conn.define_domain_xml(&def)?)
        })();
        if result.is_err() {
            remove_networks_named(conn, &created);
        }
        result
    }

    /// `Libvirt.CreateGuest`: defines one network per NIC (in `ovs` mode) and the domain,
    /// without booting it. Disks become `vda`, `vdb`, … on virtio. A retry converges.
    pub async fn create_guest(&self, req: GuestRequest) -> Result<GuestResponse> {
        let mut guest = checked_guest(req.guest)?;
        let (kinds, networks) = self.prepare(&mut guest)?;
        let options = self.options.clone();
        let g = guest.clone();
        tracing::info!(guest = %guest.id, "defining guest");
        self.pool
            .run(move |conn| Self::define(conn, &g, &options, &kinds, &networks).map(drop))
            .await?;
        // The original reports an untyped guest as `kvm` (a virtual machine, as opposed
        // to a container); the XML root type is `--domain-type` regardless.
        if guest.kind.is_empty() {
            guest.kind = ORIGINAL_GUEST_TYPE.into();
        }
        Ok(GuestResponse {
            guest: Some(guest),
            ..Default::default()
        })
    }

    /// `Libvirt.Create`: as `CreateGuest`, then boots the domain; `guest.state` comes from
    /// libvirt. A retry converges.
    pub async fn create(&self, req: GuestRequest) -> Result<GuestResponse> {
        let mut guest = checked_guest(req.guest)?;
        let (kinds, networks) = self.prepare(&mut guest)?;
        let options = self.options.clone();
        let g = guest.clone();
        let st = self
            .pool
            .run(move |conn| {
                let dom = Self::define(conn, &g, &options, &kinds, &networks)?;
                if !dom.is_active()? {
                    dom.create()?;
                }
                raw::state(&dom)
            })
            .await?;
        guest.state = state_name(st).to_string();
        Ok(GuestResponse {
            guest: Some(guest),
            ..Default::default()
        })
    }

    /// `Libvirt.Delete`: stops and undefines the domain and removes the NICs' networks.
    /// An already deleted guest is not an error. The guest is echoed unchanged.
    pub async fn delete(&self, req: GuestRequest) -> Result<GuestResponse> {
        let guest = checked_guest(req.guest)?;
        let id = guest.id.clone();
        let macs: Vec<String> = match self.options.network_mode {
            NetworkMode::Ovs => guest
                .nics
                .iter()
                .filter(|n| !n.mac.is_empty())
                .map(|n| n.mac.clone())
                .collect(),
            NetworkMode::Bridge => Vec::new(),
        };
        tracing::info!(guest = %id, "deleting guest");
        self.pool
            .run(move |conn| {
                match lookup(conn, &id) {
                    Ok(dom) => {
                        if dom.is_active()? {
                            dom.destroy()?;
                        }
                        undefine(&dom)?;
                    }
                    Err(e) if e.is_no_domain() => {}
                    Err(e) => return Err(e),
                }
                for mac in &macs {
                    delete_network(conn, mac)?;
                }
                Ok(())
            })
            .await?;
        Ok(GuestResponse {
            guest: Some(guest),
            ..Default::default()
        })
    }

    /// The request's guest and the XML options, when a missing domain may be re-defined
    /// from them: an action that is neither a create nor a delete ([`may_redefine`]),
    /// and a whole guest (memory and CPUs, as the agent sends it; a bare id is not one).
    fn redefinition(&self, guest: &Guest, action: &str) -> Option<(Guest, Options)> {
        (may_redefine(action) && guest.memory > 0 && guest.cpu > 0)
            .then(|| (guest.clone(), self.options.clone()))
    }

    async fn lifecycle(&self, req: GuestRequest, action: Action) -> Result<GuestResponse> {
        let mut guest = checked_guest(req.guest)?;
        tracing::debug!(guest = %guest.id, ?action, "lifecycle");
        let id = guest.id.clone();
        let redefine = self.redefinition(&guest, &req.action);
        let (st, live) = self
            .pool
            .run(move |conn| {
                let dom = domain_of(conn, &id, redefine.as_ref())?;
                let before = raw::state(&dom)?;
                match action {
                    Action::Status => {}
                    Action::Run => match before {
                        state::RUNNING | state::BLOCKED => {}
                        state::PAUSED => dom.resume()?,
                        state::PMSUSPENDED => dom.pm_wakeup(0)?,
                        state::CRASHED => {
                            if dom.is_active()? {
                                dom.destroy()?;
                            }
                            dom.create()?;
                        }
                        _ => {
                            if !dom.is_active()? {
                                dom.create()?;
                            }
                        }
                    },
                    Action::Reboot => dom.reboot(0)?,
                    Action::Shutdown => {
                        if before != state::SHUTDOWN && before != state::SHUTOFF {
                            dom.shutdown()?;
                        }
                    }
                    Action::Poweroff => dom.destroy()?,
                    Action::Suspend => {
                        if before != state::PAUSED {
                            dom.suspend()?;
                        }
                    }
                    Action::Resume => match before {
                        state::RUNNING => {}
                        state::PMSUSPENDED => dom.pm_wakeup(0)?,
                        _ => dom.resume()?,
                    },
                }
                let live = match action {
                    Action::Run | Action::Status => Some(live_xml(&dom)?),
                    _ => None,
                };
                Ok((raw::state(&dom)?, live))
            })
            .await?;
        if let Some(live) = live {
            if action == Action::Run {
                update_nics(&mut guest, &live);
            }
            set_vnc(&mut guest, &live);
        }
        guest.state = state_name(st).to_string();
        Ok(GuestResponse {
            guest: Some(guest),
            ..Default::default()
        })
    }

    /// `Libvirt.Inspect` (ours, read-only; not in the Go sub-agent): the guest's domain
    /// XML as libvirt holds it (empty when there is no such domain) and the names of all
    /// libvirt networks. Lets tests and operators see what a guest left behind.
    pub async fn inspect(&self, req: GuestRequest) -> Result<Inspection> {
        let guest = checked_guest(req.guest)?;
        let id = guest.id.clone();
        self.pool
            .run(move |conn| {
                let domain_xml = match conn.lookup_domain_by_name(&id) {
                    Ok(dom) => dom.xml_desc(0)?,
                    Err(e) if e.code().to_raw() == CODE_NO_DOMAIN => String::new(),
                    Err(e) => return Err(e.into()),
                };
                let networks = conn.list_networks()?;
                let mut all = networks;
                all.extend(conn.list_defined_networks()?);
                all.sort();
                all.dedup();
                Ok(Inspection {
                    domain_xml,
                    networks: all,
                })
            })
            .await
    }

    /// `Libvirt.Status`: the guest with its current state (and VNC port).
    pub async fn status(&self, req: GuestRequest) -> Result<GuestResponse> {
        self.lifecycle(req, Action::Status).await
    }

    /// `Libvirt.Run`: boots a shut-off domain, resumes a paused one, restarts a crashed
    /// one; fills NIC devices/aliases and the VNC port from the live XML.
    pub async fn run(&self, req: GuestRequest) -> Result<GuestResponse> {
        self.lifecycle(req, Action::Run).await
    }

    /// `Libvirt.Reboot` (and `Libvirt.Restart`): the hypervisor's default reboot.
    pub async fn reboot(&self, req: GuestRequest) -> Result<GuestResponse> {
        self.lifecycle(req, Action::Reboot).await
    }

    /// `Libvirt.Shutdown`: asks the guest to shut down; nothing when already off.
    pub async fn shutdown(&self, req: GuestRequest) -> Result<GuestResponse> {
        self.lifecycle(req, Action::Shutdown).await
    }

    /// `Libvirt.Poweroff`: pulls the virtual power cord.
    pub async fn poweroff(&self, req: GuestRequest) -> Result<GuestResponse> {
        self.lifecycle(req, Action::Poweroff).await
    }

    /// `Libvirt.Suspend`: pauses the guest's CPUs; nothing when already paused.
    pub async fn suspend(&self, req: GuestRequest) -> Result<GuestResponse> {
        self.lifecycle(req, Action::Suspend).await
    }

    /// `Libvirt.Resume`: continues a paused (or PM-suspended) guest; nothing when running.
    pub async fn resume(&self, req: GuestRequest) -> Result<GuestResponse> {
        self.lifecycle(req, Action::Resume).await
    }

    /// `Libvirt.CPUMetrics`: per host CPU, the time this guest spent there (seconds).
    /// libvirt is asked for one CPU per call (`virt` 0.5 corrupts memory otherwise).
    pub async fn cpu_metrics(&self, req: GuestMetricsRequest) -> Result<GuestMetricsResponse> {
        let guest = checked_guest(req.guest)?;
        let redefine = self.redefinition(&guest, "");
        let cpu = self
            .pool
            .run(move |conn| {
                let dom = domain_of(conn, &guest.id, redefine.as_ref())?;
                let n = raw::cpu_count(&dom)?;
                let mut out = Vec::with_capacity(n as usize);
                for cpu in 0..n {
                    let start = i32::try_from(cpu).map_err(|_| Error::invalid("cpu index"))?;
                    let stats = dom.cpu_stats(start, 1, 0)?;
                    let first = stats.into_iter().next().unwrap_or_default();
                    out.push(GuestCpuMetrics {
                        cpu_time: first.cpu_time.unwrap_or(0) as f64 / 1e9,
                        vcpu_time: first.vcpu_time.unwrap_or(0) as f64 / 1e9,
                    });
                }
                Ok(out)
            })
            .await?;
        Ok(GuestMetricsResponse {
            guest: None,
            kind: "cpu".into(),
            cpu,
            ..Default::default()
        })
    }

    /// `Libvirt.DiskMetrics`: per guest disk (by target name), with
    /// `virDomainBlockStatsFlags`, falling back to the legacy block stats where the
    /// driver lacks the flags call (no times and flushes there).
    pub async fn disk_metrics(&self, req: GuestMetricsRequest) -> Result<GuestMetricsResponse> {
        let guest = checked_guest(req.guest)?;
        let redefine = self.redefinition(&guest, "");
        let disk = self
            .pool
            .run(move |conn| {
                let dom = domain_of(conn, &guest.id, redefine.as_ref())?;
                let mut out = BTreeMap::new();
                for d in &guest.disks {
                    let m = match raw::block_stats_flags(&dom, &d.device) {
                        Ok(params) => disk_from_params(&d.device, &params),
                        Err(e) if e.libvirt_code() == Some(CODE_NO_SUPPORT) => {
                            let s = dom.block_stats(&d.device)?;
                            GuestDiskMetrics {
                                disk: d.device.clone(),
                                read_ops: s.rd_req,
                                read_bytes: s.rd_bytes,
                                write_ops: s.wr_req,
                                write_bytes: s.wr_bytes,
                                ..Default::default()
                            }
                        }
                        Err(e) => return Err(e),
                    };
                    out.insert(d.device.clone(), m);
                }
                Ok(out)
            })
            .await?;
        Ok(GuestMetricsResponse {
            guest: None,
            kind: "disk".into(),
            disk,
            ..Default::default()
        })
    }

    /// `Libvirt.NicMetrics`: per NIC, the counters of its host-side interface
    /// `nic.device` (libvirt also takes the MAC there), keyed by `nic.name`, or the device
    /// when the NIC has no name. A NIC without a device is libvirt's refusal, as the Go
    /// sub-agent passed it on: `[Code-8] [Domain-20] invalid argument: '' is not a known
    /// interface` (`Run` fills the device from libvirt).
    pub async fn nic_metrics(&self, req: GuestMetricsRequest) -> Result<GuestMetricsResponse> {
        let guest = checked_guest(req.guest)?;
        let redefine = self.redefinition(&guest, "");
        let nic = self
            .pool
            .run(move |conn| {
                let dom = domain_of(conn, &guest.id, redefine.as_ref())?;
                let mut out = BTreeMap::new();
                for n in &guest.nics {
                    let s = dom.interface_stats(&n.device)?;
                    let key = if n.name.is_empty() {
                        n.device.clone()
                    } else {
                        n.name.clone()
                    };
                    out.insert(
                        key.clone(),
                        GuestNicMetrics {
                            name: key,
                            rx_bytes: s.rx_bytes,
                            rx_packets: s.rx_packets,
                            rx_errors: s.rx_errs,
                            rx_drops: s.rx_drop,
                            tx_bytes: s.tx_bytes,
                            tx_packets: s.tx_packets,
                            tx_errors: s.tx_errs,
                            tx_drops: s.tx_drop,
                        },
                    );
                }
                Ok(out)
            })
            .await?;
        Ok(GuestMetricsResponse {
            guest: None,
            kind: "nic".into(),
            nic,
            ..Default::default()
        })
    }
}

fn disk_from_params(device: &str, params: &[(String, i64)]) -> GuestDiskMetrics {
    let get = |name: &str| {
        params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| *v)
            .unwrap_or(0)
    };
    let secs = |name: &str| get(name) as f64 / 1e9;
    GuestDiskMetrics {
        disk: device.to_string(),
        read_ops: get("rd_operations"),
        read_bytes: get("rd_bytes"),
        read_time: secs("rd_total_times"),
        write_ops: get("wr_operations"),
        write_bytes: get("wr_bytes"),
        write_time: secs("wr_total_times"),
        flush_ops: get("flush_operations"),
        flush_time: secs("flush_total_times"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states() {
        assert_eq!(state_name(1), "running");
        assert_eq!(state_name(5), "shutoff");
        assert_eq!(state_name(7), "suspended");
        assert_eq!(state_name(99), "");
    }

    #[test]
    fn redefinition_is_for_actions_other_than_create_and_delete() {
        for action in ["", "status", "start", "Status", "reboot", "containerStart"] {
            assert!(may_redefine(action), "{action}");
        }
        for action in [
            "create",
            "delete",
            "containerCreate",
            "containerDelete",
            "Delete",
        ] {
            assert!(!may_redefine(action), "{action}");
        }
    }

    #[test]
    fn validation() {
        assert_eq!(
            checked_guest(None).err().map(|e| e.to_string()),
            Some("invalid argument".into())
        );
        let g = |id: &str| {
            Some(Guest {
                id: id.into(),
                ..Default::default()
            })
        };
        assert_eq!(
            checked_guest(g("")).err().map(|e| e.to_string()),
            Some("invalid argument".into())
        );
        assert!(checked_guest(g("test")).is_err());
        assert!(checked_guest(g("3f6d9a2e-8c41-4b7a-9e15-2a7c0d4b6e81")).is_ok());
    }
}

/// The reply of `Libvirt.Inspect`.
#[derive(Debug, Default, serde::Serialize)]
pub struct Inspection {
    /// The domain's XML (`virDomainGetXMLDesc`), empty when there is no such domain.
    pub domain_xml: String,
    /// Every libvirt network, active or defined, by name.
    pub networks: Vec<String>,
}
