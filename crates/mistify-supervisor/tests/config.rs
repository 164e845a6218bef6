//! The shipped configuration: example manifests and the systemd unit.

mod common;

use mistify_supervisor::manifest::{load_dir_with, Loaded, Readiness};
use std::path::PathBuf;

fn config() -> PathBuf {
    mistify_e2e::workspace_root().join("config")
}

/// Loads the manifest set `config/services/<set>` as the daemon loads `<dir>/services`.
fn load_set(set: &str, env: &dyn Fn(&str) -> Option<String>) -> Loaded {
    let dir = mistify_e2e::TempDir::new("manifests");
    std::os::unix::fs::symlink(
        config().join("services").join(set),
        dir.path().join("services"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    load_dir_with(dir.path(), env)
}

#[test]
fn example_manifests_load_and_expand() {
    let env = |k: &str| match k {
        "ZFS_PORT" => Some("29999".to_string()),
        "MISTIFY_BIN" => Some("/opt/mistify/bin".to_string()),
        "HYPERVISOR_ID" => Some("6c6f6368-6e65-4573-8000-000000000001".to_string()),
        _ => None,
    };
    let loaded = load_set("prod", &env);
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    let names: Vec<&str> = loaded.manifests.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "subagent:zfs",
            "subagent:libvirt",
            "agent",
            "heartbeat",
            "nfirewalld",
            "nconfigd"
        ]
    );
    let heartbeat = &loaded.manifests[3];
    assert!(heartbeat
        .command
        .windows(2)
        .any(|w| w == ["--hypervisor-id", "6c6f6368-6e65-4573-8000-000000000001"]));
    let firewall = &loaded.manifests[4];
    assert!(firewall
        .command
        .windows(2)
        .any(|w| w == ["--id", "6c6f6368-6e65-4573-8000-000000000001"]));
    // Without its id the heartbeat and firewall manifests are refused, naming the
    // variable; the rest run.
    let bare = |k: &str| env(k).filter(|_| k != "HYPERVISOR_ID");
    let loaded = load_set("prod", &bare);
    assert_eq!(loaded.manifests.len(), 4);
    assert!(
        loaded
            .errors
            .iter()
            .any(|e| format!("{e:?}").contains("HYPERVISOR_ID")),
        "{:?}",
        loaded.errors
    );
    let zfs = &loaded.manifests[0];
    assert_eq!(zfs.command[0], "/opt/mistify/bin/mistify-zfs");
    assert_eq!(
        zfs.ready,
        Readiness::Http("http://127.0.0.1:29999/healthz".into())
    );
    assert!(zfs.command.contains(&"29999".to_string()));
    let agent = &loaded.manifests[2];
    // Both full names: a bare `subagent` would be satisfied by either one alone.
    assert_eq!(agent.depends, ["subagent:zfs", "subagent:libvirt"]);
    // A sub-agent's crash must not take the agent down (it answers 502 meanwhile).
    assert!(agent.keep_on_dependency_loss);
    assert_eq!(
        agent.ready,
        Readiness::Http("http://127.0.0.1:8080/healthz".into())
    );
}

#[test]
fn dev_stack_manifests_load_and_expand() {
    let env = |k: &str| match k {
        "ZFS_PORT" => Some("29999".to_string()),
        "MISTIFY_POOL" => Some("devpool".to_string()),
        _ => None,
    };
    let loaded = load_set("dev", &env);
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    let names: Vec<&str> = loaded.manifests.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "zfs_fuse:dev",
            "pool:dev",
            "images:dev",
            "sample_image:dev",
            "subagent:libvirt",
            "subagent:zfs",
            "agent:dev"
        ]
    );
    let zfs = &loaded.manifests[5];
    assert!(zfs.command.windows(2).any(|w| w == ["--zpool", "devpool"]));
    assert!(zfs.command.windows(2).any(|w| w == ["--disk-mode", "file"]));
    assert_eq!(
        zfs.ready,
        Readiness::Http("http://127.0.0.1:29999/healthz".into())
    );
    let pool = &loaded.manifests[1];
    assert_eq!(pool.ready, Readiness::Notify);
    assert!(
        pool.command[0].ends_with("/scripts/dev-pool.sh") && pool.command[1] == "up",
        "{:?}",
        pool.command
    );
    assert!(pool
        .env
        .contains(&("MISTIFY_POOL".to_string(), "devpool".to_string())));
    // The export's retries (20 s by default) fit in its stop time.
    assert!(pool.stop_time >= std::time::Duration::from_secs(30));
    assert!(loaded.manifests[6].keep_on_dependency_loss);
    assert_eq!(
        loaded.manifests[6].depends,
        ["subagent:zfs", "subagent:libvirt", "sample_image:dev"]
    );
}

#[test]
fn systemd_unit_verifies() {
    let unit = config().join("systemd").join("mistify-supervisord.service");
    let text = std::fs::read_to_string(&unit).unwrap_or_else(|e| panic!("{e}"));
    assert!(text.contains("Type=notify"));
    assert!(text.contains("ExecReload=/bin/kill -HUP $MAINPID"));
    let Ok(out) = std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output()
    else {
        eprintln!("SKIPPED: systemd-analyze is not installed");
        return;
    };
    if !out.status.success() {
        eprintln!("SKIPPED: systemd-analyze does not run here");
        return;
    }
    // Verify a copy that points at the binary we built (the unit names /usr/sbin).
    let dir = mistify_e2e::TempDir::new("unit");
    let copy = dir.path().join("mistify-supervisord.service");
    std::fs::write(
        &copy,
        text.replace("/usr/sbin/mistify-supervisord", common::DAEMON),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !err.contains("mistify-supervisord.service:"),
        "{err}"
    );
}

#[test]
fn cluster_and_controller_manifests_load_and_expand() {
    let env = |k: &str| match k {
        "GUESTS_PORT" => Some("28000".to_string()),
        "ETCD_ENDPOINTS" => Some("http://10.0.0.1:2379,http://10.0.0.2:2379".to_string()),
        _ => None,
    };
    let loaded = load_set("cluster", &env);
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    let names: Vec<&str> = loaded.manifests.iter().map(|m| m.name.as_str()).collect();
    for name in [
        "etcd:dev",
        "cguestd:dev",
        "chypervisord:dev",
        "cnetworkd:dev",
        "cplacerd:dev",
        "cworkerd:dev",
        "agent:hv2",
        "register:dev",
        "heartbeat:hv1",
        "heartbeat:hv2",
    ] {
        assert!(names.contains(&name), "{name} missing from {names:?}");
    }
    let guests = loaded
        .manifests
        .iter()
        .find(|m| m.name == "cguestd:dev")
        .expect("cguestd");
    assert!(guests.command.windows(2).any(|w| w == ["--port", "28000"]));
    assert_eq!(
        guests.ready,
        Readiness::Http("http://127.0.0.1:28000/healthz".into())
    );
    let loaded = load_set("controller", &env);
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    let names: Vec<&str> = loaded.manifests.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "cguestd",
            "chypervisord",
            "cnetworkd",
            "cplacerd",
            "cworkerd",
            "cbootstrapd",
            "cdhcpd"
        ]
    );
    for m in &loaded.manifests {
        assert!(
            m.command
                .windows(2)
                .any(|w| w == ["--etcd", "http://10.0.0.1:2379,http://10.0.0.2:2379"]),
            "{}: {:?}",
            m.name,
            m.command
        );
    }
}
