//! The sub-agent served in this process over real HTTP, so that the test can look at
//! libvirt's test driver directly (its state is shared by every connection of one
//! process): the XML libvirt stored, the networks, the pool's reconnects.

mod common;

use std::time::Duration;

use common::*;
use mistify_libvirt::pool::Pool;
use mistify_libvirt::render::{NetworkMode, Options};
use mistify_libvirt::{server, xml, Libvirt};
use mistify_rpc::RunningServer;
use virt::connect::Connect;

/// A direct connection that also keeps the test driver's state alive for the test.
fn keeper() -> Connect {
    mistify_libvirt::pool::quiet_libvirt();
    Connect::open(Some(TEST_URI)).expect("test driver")
}

async fn serve(lv: Libvirt) -> (RunningServer, mistify_rpc::Service) {
    let bound = server(lv)
        .bind(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("bind");
    let port = bound.local_addr().expect("addr").port();
    (bound.spawn().expect("spawn"), service(port))
}

fn domain_xml(conn: &Connect, id: &str) -> xml::Domain {
    let dom = conn.lookup_domain_by_name(id).expect("domain defined");
    xml::Domain::from_xml(&dom.xml_desc(0).expect("xml")).expect("parse")
}

fn network_exists(conn: &Connect, name: &str) -> bool {
    conn.lookup_network_by_name(name).is_ok()
}

#[tokio::test]
async fn libvirt_stores_the_xml_we_meant() {
    if mistify_e2e::skipped("libvirt") {
        return;
    }
    let conn = keeper();
    let (_server, svc) = serve(Libvirt::new(Pool::new(TEST_URI, 2), Options::default())).await;
    let id = guest_id();
    let file = DiskFile::new(&id);
    let guest = full_guest(&id, &file);
    call(&svc, "CreateGuest", Some(&guest)).await.unwrap();

    let dom = domain_xml(&conn, &id);
    assert_eq!(dom.kind, "kvm");
    assert_eq!(dom.uuid.as_deref(), Some(id.as_str()));
    // The disk element follows the source.
    let disks = &dom.devices.disks;
    assert_eq!(disks.len(), 2);
    assert_eq!(disks[0].kind, "file");
    assert_eq!(
        disks[0].source.as_ref().and_then(|s| s.file.clone()),
        Some(file.path())
    );
    assert_eq!(
        disks[0].target.as_ref().map(|t| t.dev.as_str()),
        Some("vda")
    );
    assert_eq!(disks[1].kind, "block");
    assert_eq!(
        disks[1]
            .source
            .as_ref()
            .and_then(|s| s.dev.clone())
            .as_deref(),
        Some("/dev/null")
    );
    assert_eq!(
        disks[1]
            .target
            .as_ref()
            .map(|t| (t.dev.as_str(), t.bus.as_str())),
        Some(("vdb", "virtio"))
    );
    // NICs: the port group only where there are VLANs.
    let ifaces = &dom.devices.interfaces;
    assert_eq!(ifaces.len(), 2);
    let src0 = ifaces[0].source.clone().unwrap_or_default();
    assert_eq!(src0.network.as_deref(), Some(guest.nics[0].mac.as_str()));
    assert_eq!(src0.portgroup.as_deref(), Some("vlan-all"));
    assert_eq!(ifaces[1].source.clone().unwrap_or_default().portgroup, None);
    // The VNC console.
    let vnc = dom
        .devices
        .graphics
        .iter()
        .find(|g| g.kind == "vnc")
        .expect("vnc");
    assert_eq!(vnc.autoport.as_deref(), Some("yes"));
    assert_eq!(vnc.listen.as_deref(), Some("127.0.0.1"));
    // Both metadata namespaces, read back from libvirt.
    let meta = dom.metadata.clone().expect("metadata");
    let mdisks = meta.device.expect("device metadata").disks;
    assert_eq!(mdisks[0].device, "vda");
    assert_eq!(mdisks[0].image, guest.disks[0].image);
    assert_eq!(mdisks[1].volume, guest.disks[1].volume);
    let params = meta.user.expect("user metadata").parameters;
    assert_eq!(params[0].name, "owner");
    assert_eq!(params[0].value, "tests <&> \"quoted\"");
    let d = conn.lookup_domain_by_name(&id).unwrap();
    let by_ns = d
        .metadata(
            virt::sys::VIR_DOMAIN_METADATA_ELEMENT as i32,
            Some(xml::USER_NS),
            0,
        )
        .expect("metadata by namespace");
    assert!(by_ns.contains("owner"), "{by_ns}");
    let by_ns = d
        .metadata(
            virt::sys::VIR_DOMAIN_METADATA_ELEMENT as i32,
            Some(xml::DEVICE_NS),
            0,
        )
        .expect("metadata by namespace");
    assert!(by_ns.contains("vdb"), "{by_ns}");

    // One network per NIC: defined, active, autostarted; VLANs in the port group.
    for (i, nic) in guest.nics.iter().enumerate() {
        let net = conn.lookup_network_by_name(&nic.mac).expect("network");
        assert!(net.is_active().unwrap());
        assert!(net.autostart().unwrap());
        let x = xml::Network::from_xml(&net.xml_desc(0).unwrap()).unwrap();
        assert_eq!(x.bridge.name, "mistify0");
        let tags: Vec<i64> = x
            .portgroup
            .map(|p| p.vlan.tags.iter().map(|t| t.id).collect())
            .unwrap_or_default();
        assert_eq!(tags, if i == 0 { vec![1, 20] } else { vec![] });
    }

    // Run reads the VNC port back when libvirt has one; Status keeps the request's.
    let g = call(&svc, "Run", Some(&guest)).await.unwrap();
    assert_eq!(g.state, "running");
    let live = domain_xml(&conn, &id);
    assert_eq!(g.vnc, live.vnc_port().unwrap_or(0));

    call(&svc, "Delete", Some(&g)).await.unwrap();
    assert!(conn.lookup_domain_by_name(&id).is_err());
    for nic in &guest.nics {
        assert!(!network_exists(&conn, &nic.mac), "{} left behind", nic.mac);
    }
}

#[tokio::test]
async fn a_failed_create_guest_leaves_no_network_behind() {
    if mistify_e2e::skipped("libvirt") {
        return;
    }
    let conn = keeper();
    let (_server, svc) = serve(Libvirt::new(Pool::new(TEST_URI, 1), Options::default())).await;
    let id = guest_id();
    let file = DiskFile::new(&id);
    let mut guest = full_guest(&id, &file);
    // libvirt accepts this as a network name but not as a MAC in the domain.
    guest.nics[1].mac = "02:00:00:00:00:zz".into();
    let err = call(&svc, "CreateGuest", Some(&guest)).await.unwrap_err();
    assert!(err.to_string().contains("mac address"), "{err}");
    for nic in &guest.nics {
        assert!(!network_exists(&conn, &nic.mac), "{} left behind", nic.mac);
    }
    assert!(conn.lookup_domain_by_name(&id).is_err());
    // Same with a domain libvirt refuses (no vCPU).
    let mut guest = full_guest(&id, &file);
    guest.cpu = 0;
    assert!(call(&svc, "CreateGuest", Some(&guest)).await.is_err());
    for nic in &guest.nics {
        assert!(!network_exists(&conn, &nic.mac), "{} left behind", nic.mac);
    }
}

#[tokio::test]
async fn bridge_mode_defines_no_network() {
    if mistify_e2e::skipped("libvirt") {
        return;
    }
    let conn = keeper();
    let options = Options {
        domain_type: "test".into(),
        network_mode: NetworkMode::Bridge,
    };
    let (_server, svc) = serve(Libvirt::new(Pool::new(TEST_URI, 1), options)).await;
    let id = guest_id();
    let file = DiskFile::new(&id);
    let guest = full_guest(&id, &file);
    let created = call(&svc, "CreateGuest", Some(&guest)).await.unwrap();
    // The root type comes from the option; the guest's type is not rewritten to it.
    assert_ne!(created.kind, "test");
    let dom = domain_xml(&conn, &id);
    assert_eq!(dom.kind, "test");
    for iface in &dom.devices.interfaces {
        assert_eq!(iface.kind, "bridge");
        assert_eq!(
            iface.source.clone().unwrap_or_default().bridge.as_deref(),
            Some("mistify0")
        );
    }
    for nic in &guest.nics {
        assert!(!network_exists(&conn, &nic.mac));
    }
    assert_eq!(
        call(&svc, "Run", Some(&created)).await.unwrap().state,
        "running"
    );
    call(&svc, "Delete", Some(&created)).await.unwrap();
    assert!(conn.lookup_domain_by_name(&id).is_err());
}

#[tokio::test]
async fn a_connection_closed_underneath_is_reopened() {
    if mistify_e2e::skipped("libvirt") {
        return;
    }
    let conn = keeper();
    let pool = Pool::new(TEST_URI, 1).acquire_timeout(Duration::from_secs(5));
    let lv = Libvirt::new(pool.clone(), Options::default());
    let (_server, svc) = serve(lv).await;
    let id = guest_id();
    let file = DiskFile::new(&id);
    let guest = full_guest(&id, &file);
    call(&svc, "CreateGuest", Some(&guest)).await.unwrap();
    assert_eq!(pool.opened(), 1);
    assert_eq!(pool.reconnects(), 0);

    assert_eq!(pool.close_idle_underneath(), 1);
    // The next call notices, opens a new connection and answers.
    assert_eq!(status(&svc, &guest).await.unwrap(), "shutoff");
    assert_eq!(pool.reconnects(), 1);
    assert_eq!(pool.opened(), 2);
    assert_eq!(status(&svc, &guest).await.unwrap(), "shutoff");
    assert_eq!(pool.opened(), 2);

    call(&svc, "Delete", Some(&guest)).await.unwrap();
    assert!(conn.lookup_domain_by_name(&id).is_err());
}

#[tokio::test]
async fn calls_beyond_the_pool_size_wait_their_turn() {
    if mistify_e2e::skipped("libvirt") {
        return;
    }
    let _conn = keeper();
    let pool = Pool::new(TEST_URI, 2);
    let (_server, svc) = serve(Libvirt::new(pool.clone(), Options::default())).await;
    let id = guest_id();
    let file = DiskFile::new(&id);
    let guest = full_guest(&id, &file);
    call(&svc, "CreateGuest", Some(&guest)).await.unwrap();
    let calls = (0..16).map(|_| {
        let (svc, guest) = (svc.clone(), guest.clone());
        async move { status(&svc, &guest).await }
    });
    for result in futures_join(calls).await {
        assert_eq!(result.unwrap(), "shutoff");
    }
    assert!(pool.opened() <= 2, "opened {}", pool.opened());
    call(&svc, "Delete", Some(&guest)).await.unwrap();
}

async fn futures_join<F>(futs: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.expect("task"));
    }
    out
}
