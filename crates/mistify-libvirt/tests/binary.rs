//! The `mistify-libvirt` binary over real HTTP on libvirt's test driver.

mod common;

use common::*;
use mistify_rpc::Guest;

#[tokio::test]
async fn every_method_through_the_lifecycle() {
    if mistify_e2e::skipped("libvirt") {
        return;
    }
    let (_daemon, svc) = start_binary(&["--max-connections", "2"]);
    let id = guest_id();
    let file = DiskFile::new(&id);
    let guest = full_guest(&id, &file);

    // Defined, not booted; disks renamed; the request's state kept.
    let created = call(&svc, "CreateGuest", Some(&guest)).await.unwrap();
    let devices: Vec<_> = created
        .disks
        .iter()
        .map(|d| (d.device.as_str(), d.bus.as_str()))
        .collect();
    assert_eq!(devices, [("vda", "virtio"), ("vdb", "virtio")]);
    assert_eq!(created.state, "create");
    assert_eq!(created.kind, "kvm");
    assert_eq!(status(&svc, &created).await.unwrap(), "shutoff");

    // A retry converges.
    let again = call(&svc, "CreateGuest", Some(&guest)).await.unwrap();
    assert_eq!(again, created);

    // Metrics of a shut-off guest are libvirt's refusal.
    let err = metrics(&svc, "CPUMetrics", &created).await.unwrap_err();
    assert!(err.to_string().contains("domain is not running"), "{err}");

    let g = call(&svc, "Run", Some(&created)).await.unwrap();
    assert_eq!(g.state, "running");
    // NIC devices come from libvirt; the name libvirt has no alias for stays.
    assert_eq!(g.nics[0].device, "testnet0");
    assert_eq!(g.nics[1].device, "testnet1");
    assert_eq!(g.nics[0].name, "eth0");
    assert_eq!(status(&svc, &g).await.unwrap(), "running");

    let g = call(&svc, "Shutdown", Some(&g)).await.unwrap();
    assert_eq!(g.state, "shutoff");
    assert_eq!(status(&svc, &g).await.unwrap(), "shutoff");
    // Shutting down a shut-off guest is a no-op.
    assert_eq!(
        call(&svc, "Shutdown", Some(&g)).await.unwrap().state,
        "shutoff"
    );

    let g = call(&svc, "Run", Some(&g)).await.unwrap();
    assert_eq!(g.state, "running");
    let g = call(&svc, "Reboot", Some(&g)).await.unwrap();
    assert_eq!(g.state, "running");
    let g = call(&svc, "Restart", Some(&g)).await.unwrap();
    assert_eq!(g.state, "running");

    let g = call(&svc, "Suspend", Some(&g)).await.unwrap();
    assert_eq!(g.state, "paused");
    assert_eq!(status(&svc, &g).await.unwrap(), "paused");
    assert_eq!(
        call(&svc, "Suspend", Some(&g)).await.unwrap().state,
        "paused"
    );
    let g = call(&svc, "Resume", Some(&g)).await.unwrap();
    assert_eq!(g.state, "running");
    assert_eq!(status(&svc, &g).await.unwrap(), "running");
    // Run on a paused guest resumes it.
    call(&svc, "Suspend", Some(&g)).await.unwrap();
    assert_eq!(call(&svc, "Run", Some(&g)).await.unwrap().state, "running");

    // The test driver's fixed CPU figures: two host CPUs.
    let cpu = metrics(&svc, "CPUMetrics", &g).await.unwrap();
    assert_eq!(cpu.kind, "cpu");
    assert!(cpu.guest.is_none());
    assert_eq!(cpu.cpu.len(), 2, "{cpu:?}");
    assert!((cpu.cpu[0].cpu_time - 24.386308517).abs() < 1e-6, "{cpu:?}");
    assert!(
        (cpu.cpu[1].vcpu_time - 23.151740628).abs() < 1e-6,
        "{cpu:?}"
    );

    // Disk figures for vda and vdb (legacy block stats on this driver).
    let disk = metrics(&svc, "DiskMetrics", &g).await.unwrap();
    assert_eq!(disk.kind, "disk");
    let keys: Vec<_> = disk.disk.keys().cloned().collect();
    assert_eq!(keys, ["vda", "vdb"]);
    assert_eq!(disk.disk["vda"].disk, "vda");
    assert!(disk.disk["vda"].read_ops > 0, "{disk:?}");
    assert!(disk.disk["vda"].read_bytes > 0, "{disk:?}");

    // NIC figures: by name, else by host device.
    let nic = metrics(&svc, "NicMetrics", &g).await.unwrap();
    let keys: Vec<_> = nic.nic.keys().cloned().collect();
    assert_eq!(keys, ["eth0", "testnet1"]);
    assert!(nic.nic["eth0"].rx_bytes > 0, "{nic:?}");
    // The MAC serves as the device too.
    let mut by_mac = g.clone();
    by_mac.nics[1].device = by_mac.nics[1].mac.clone();
    let nic = metrics(&svc, "NicMetrics", &by_mac).await.unwrap();
    assert!(nic.nic[&by_mac.nics[1].mac].tx_packets > 0, "{nic:?}");
    // A NIC without a device is libvirt's refusal, word for word the Go sub-agent's
    // answer (it passed the empty name to libvirt), not the figures of some interface.
    let mut blank = g.clone();
    blank.nics[1].device.clear();
    let err = metrics(&svc, "NicMetrics", &blank).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "[Code-8] [Domain-20] invalid argument: '' is not a known interface"
    );

    let g = call(&svc, "Poweroff", Some(&g)).await.unwrap();
    assert_eq!(g.state, "shutoff");
    assert_eq!(status(&svc, &g).await.unwrap(), "shutoff");

    // Delete removes everything; the guest is echoed; a retry converges.
    let deleted = call(&svc, "Delete", Some(&g)).await.unwrap();
    assert_eq!(deleted, g);
    assert!(!inspect(&svc, &g).await.0, "the domain is left");
    // Within a delete (the agent's action), a missing domain is not re-defined.
    let err = call_as(&svc, "Status", "delete", &g).await.unwrap_err();
    assert_eq!(err.to_string(), "[Code-42] [Domain-12] Domain not found");
    call(&svc, "Delete", Some(&g)).await.unwrap();
    assert!(!inspect(&svc, &g).await.0, "the domain is back");

    // The networks went with it: the same guest can be created again from scratch.
    call(&svc, "CreateGuest", Some(&guest)).await.unwrap();
    assert_eq!(status(&svc, &guest).await.unwrap(), "shutoff");
    call(&svc, "Delete", Some(&guest)).await.unwrap();
    assert!(!inspect(&svc, &guest).await.0);
}

#[tokio::test]
async fn legacy_create_defines_and_boots() {
    if mistify_e2e::skipped("libvirt") {
        return;
    }
    let (_daemon, svc) = start_binary(&[]);
    let id = guest_id();
    let guest = Guest {
        id: id.clone(),
        memory: 64,
        cpu: 1,
        ..Default::default()
    };
    let g = call(&svc, "Create", Some(&guest)).await.unwrap();
    assert_eq!(g.state, "running");
    assert_eq!(status(&svc, &g).await.unwrap(), "running");
    assert_eq!(
        call(&svc, "Create", Some(&guest)).await.unwrap().state,
        "running"
    );
    call(&svc, "Delete", Some(&g)).await.unwrap();
    assert!(!inspect(&svc, &g).await.0);
}

#[tokio::test]
async fn bad_input_is_refused_before_libvirt() {
    if mistify_e2e::skipped("libvirt") {
        return;
    }
    let (_daemon, svc) = start_binary(&[]);
    let empty = Guest::default();
    let not_uuid = Guest {
        id: "test".into(),
        ..Default::default()
    };
    for method in [
        "CreateGuest",
        "Create",
        "Delete",
        "Run",
        "Reboot",
        "Restart",
        "Shutdown",
        "Poweroff",
        "Status",
        "Suspend",
        "Resume",
    ] {
        for (what, guest) in [
            ("none", None),
            ("empty id", Some(&empty)),
            ("not a uuid", Some(&not_uuid)),
        ] {
            let err = call(&svc, method, guest).await.unwrap_err();
            assert!(
                err.to_string().starts_with("invalid argument"),
                "{method} with {what}: {err}"
            );
        }
    }
    for method in ["CPUMetrics", "DiskMetrics", "NicMetrics"] {
        for guest in [&empty, &not_uuid] {
            let err = metrics(&svc, method, guest).await.unwrap_err();
            assert!(
                err.to_string().starts_with("invalid argument"),
                "{method}: {err}"
            );
        }
    }
    // The test driver's own domain `test` was not touched (Poweroff was refused above).
    // A missing disk source is refused before anything is defined.
    let id = guest_id();
    let file = DiskFile::new(&id);
    let mut guest = full_guest(&id, &file);
    guest.disks[1].source = format!("/nonexistent/{id}");
    let err = call(&svc, "CreateGuest", Some(&guest)).await.unwrap_err();
    assert!(err.to_string().starts_with("invalid argument"), "{err}");
    assert!(status(&svc, &guest)
        .await
        .unwrap_err()
        .to_string()
        .contains("Domain not found"));
    // ... and its networks were not defined either: with a valid disk it now succeeds.
    guest.disks[1].source = "/dev/null".into();
    call(&svc, "CreateGuest", Some(&guest)).await.unwrap();
    call(&svc, "Delete", Some(&guest)).await.unwrap();
    // The sub-agent is still alive.
    assert!(!inspect(&svc, &guest).await.0);
}

/// The test driver keeps its domains in memory: a new sub-agent process knows none.
/// Every method that needs the guest's domain re-defines it from the request's guest
/// (as CreateGuest does, networks included), shut off, and carries on.
#[tokio::test]
async fn a_domain_forgotten_by_libvirt_is_redefined_on_first_use() {
    if mistify_e2e::skipped("libvirt") {
        return;
    }
    let id = guest_id();
    let file = DiskFile::new(&id);
    let guest = full_guest(&id, &file);
    let (daemon, svc) = start_binary(&[]);
    let created = call(&svc, "CreateGuest", Some(&guest)).await.unwrap();
    let running = call(&svc, "Run", Some(&created)).await.unwrap();
    assert_eq!(running.state, "running");
    drop(daemon);

    // A new process: libvirt's test driver has forgotten everything.
    let (_daemon, svc) = start_binary(&[]);
    let (exists, networks) = inspect(&svc, &running).await;
    assert!(!exists, "a fresh test driver holds the domain");
    assert!(!networks.contains(&running.nics[0].mac), "{networks:?}");
    // Within a create or a delete, a missing domain stays missing.
    for action in ["delete", "containerDelete", "create"] {
        let err = call_as(&svc, "Status", action, &running).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "[Code-42] [Domain-12] Domain not found",
            "{action}"
        );
    }
    // A bare id is not a guest to define.
    let bare = Guest {
        id: id.clone(),
        ..Default::default()
    };
    let err = status(&svc, &bare).await.unwrap_err();
    assert_eq!(err.to_string(), "[Code-42] [Domain-12] Domain not found");
    assert!(!inspect(&svc, &running).await.0);

    // Status re-defines it: shut off, which is what libvirt now holds (the request's
    // `running` was the old process's); its networks are back too.
    let status = call(&svc, "Status", Some(&running)).await.unwrap();
    assert_eq!(status.state, "shutoff");
    let (exists, networks) = inspect(&svc, &running).await;
    assert!(exists);
    for nic in &running.nics {
        assert!(networks.contains(&nic.mac), "{networks:?}");
    }
    // ... and it starts.
    let started = call(&svc, "Run", Some(&status)).await.unwrap();
    assert_eq!(started.state, "running");
    assert_eq!(started.nics[0].device, "testnet0");
    let nic = metrics(&svc, "NicMetrics", &started).await.unwrap();
    assert!(nic.nic["eth0"].rx_bytes > 0, "{nic:?}");
    call(&svc, "Delete", Some(&started)).await.unwrap();

    // Run on a forgotten domain boots the re-defined one; metrics re-define too (and
    // then answer libvirt's refusal for a shut-off domain).
    let (_daemon, svc) = start_binary(&[]);
    let run = call(&svc, "Run", Some(&running)).await.unwrap();
    assert_eq!(run.state, "running");
    let (_daemon2, svc2) = start_binary(&[]);
    let err = metrics(&svc2, "CPUMetrics", &running).await.unwrap_err();
    assert!(err.to_string().contains("domain is not running"), "{err}");
    assert!(inspect(&svc2, &running).await.0);

    // Delete of a forgotten domain is a success without re-defining it.
    let (_daemon3, svc3) = start_binary(&[]);
    call(&svc3, "Delete", Some(&running)).await.unwrap();
    assert!(!inspect(&svc3, &running).await.0);

    // A guest that cannot be defined again (its disk file is gone) keeps libvirt's
    // answer.
    drop(file);
    let (_daemon4, svc4) = start_binary(&[]);
    let err = call(&svc4, "Run", Some(&running)).await.unwrap_err();
    assert_eq!(err.to_string(), "[Code-42] [Domain-12] Domain not found");
}

#[test]
fn version_flag() {
    if mistify_e2e::skipped("libvirt") {
        return;
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mistify-libvirt"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("mistify-libvirt "), "{text}");
}
