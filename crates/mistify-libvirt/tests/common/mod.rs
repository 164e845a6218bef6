//! Shared set-up of the sub-agent's tests: guests, an RPC client, the binary or an
//! in-process server on a free port, all on libvirt's test driver.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use mistify_e2e::{free_port, Daemon};
use mistify_rpc::{
    Client, Guest, GuestMetricsRequest, GuestMetricsResponse, GuestRequest, GuestResponse,
    RpcError, Service, ServiceConfig,
};
use mistify_types::{Disk, Nic};

pub const TEST_URI: &str = "test:///default";

/// A fresh guest id.
pub fn guest_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A locally administered MAC derived from the guest id (as the Go tests did).
pub fn mac(id: &str, nic: u8) -> String {
    let d = md5::compute(id.as_bytes());
    format!(
        "02:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        d[0], d[1], d[2], d[3], nic
    )
}

/// A regular file to back a disk, removed at drop.
pub struct DiskFile(pub PathBuf);

impl DiskFile {
    pub fn new(id: &str) -> DiskFile {
        let path = std::env::temp_dir().join(format!("mistify-libvirt-{id}.img"));
        std::fs::write(&path, vec![0u8; 4096]).expect("disk file");
        DiskFile(path)
    }
    pub fn path(&self) -> String {
        self.0.to_string_lossy().into_owned()
    }
}

impl Drop for DiskFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A guest with two NICs (VLANs `[1, 20]` and none) and two disks (a file and
/// `/dev/null`), with user metadata.
pub fn full_guest(id: &str, file: &DiskFile) -> Guest {
    Guest {
        id: id.into(),
        memory: 256,
        cpu: 1,
        state: "create".into(),
        nics: vec![
            Nic {
                name: "eth0".into(),
                network: "mistify0".into(),
                model: "virtio".into(),
                mac: mac(id, 1),
                vlans: Some(vec![1, 20]),
                ..Default::default()
            },
            Nic {
                network: "mistify0".into(),
                mac: mac(id, 2),
                ..Default::default()
            },
        ],
        disks: vec![
            Disk {
                bus: "sata".into(),
                device: "hda".into(),
                size: 64,
                source: file.path(),
                image: "289120e4-ed12-431d-8d18-48f8a94bb05a".into(),
                volume: format!("mistify/guests/{id}/disk-0"),
            },
            Disk {
                size: 64,
                source: "/dev/null".into(),
                volume: format!("mistify/guests/{id}/disk-1"),
                ..Default::default()
            },
        ],
        metadata: BTreeMap::from([("owner".to_string(), "tests <&> \"quoted\"".to_string())]),
        ..Default::default()
    }
}

/// The binary on a free port, on the test driver.
pub fn start_binary(extra: &[&str]) -> (Daemon, Service) {
    let port = free_port();
    let mut args: Vec<String> = vec![
        "--uri".into(),
        TEST_URI.into(),
        "--port".into(),
        port.to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let daemon = Daemon::start(
        std::path::Path::new(env!("CARGO_BIN_EXE_mistify-libvirt")),
        &args,
        port,
    );
    (daemon, service(port))
}

/// Our RPC client for the sub-agent on `port`.
pub fn service(port: u16) -> Service {
    Client::new().service("libvirt", ServiceConfig::local(port))
}

/// Calls a guest method with `guest`.
pub async fn call(svc: &Service, method: &str, guest: Option<&Guest>) -> Result<Guest, RpcError> {
    let req = GuestRequest {
        guest: guest.cloned(),
        action: method.to_lowercase(),
        ..Default::default()
    };
    let resp: GuestResponse = svc.call(&format!("Libvirt.{method}"), &req).await?;
    Ok(resp.guest.unwrap_or_default())
}

/// Calls a metrics method with `guest`.
pub async fn metrics(
    svc: &Service,
    method: &str,
    guest: &Guest,
) -> Result<GuestMetricsResponse, RpcError> {
    let req = GuestMetricsRequest {
        guest: Some(guest.clone()),
        ..Default::default()
    };
    svc.call(&format!("Libvirt.{method}"), &req).await
}

/// Whether libvirt holds a domain for `guest` (`Libvirt.Inspect`, which never re-defines
/// one), and every libvirt network by name.
pub async fn inspect(svc: &Service, guest: &Guest) -> (bool, Vec<String>) {
    let req = GuestRequest {
        guest: Some(guest.clone()),
        ..Default::default()
    };
    let reply: serde_json::Value = svc.call("Libvirt.Inspect", &req).await.expect("Inspect");
    let networks = reply["networks"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|n| n.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    (
        reply["domain_xml"].as_str().is_some_and(|x| !x.is_empty()),
        networks,
    )
}

/// Calls a guest method with `guest` and the request's `action` as given.
pub async fn call_as(
    svc: &Service,
    method: &str,
    action: &str,
    guest: &Guest,
) -> Result<Guest, RpcError> {
    let req = GuestRequest {
        guest: Some(guest.clone()),
        action: action.into(),
        ..Default::default()
    };
    let resp: GuestResponse = svc.call(&format!("Libvirt.{method}"), &req).await?;
    Ok(resp.guest.unwrap_or_default())
}

/// The state `Status` reports.
pub async fn status(svc: &Service, guest: &Guest) -> Result<String, RpcError> {
    Ok(call(svc, "Status", Some(guest)).await?.state)
}

/// The agent (`config/agent.json`, storage stages on `test-rpc-service`) in front of
/// this sub-agent on the test driver.
pub struct Stack {
    pub libvirt_port: u16,
    libvirt_args: Vec<String>,
    _libvirt: Daemon,
    _storage: Daemon,
    pub agent: Daemon,
    _dir: std::path::PathBuf,
}

impl Stack {
    /// Stops the sub-agent (SIGTERM) and starts a new process on the same port: the test
    /// driver's domains and networks are gone.
    pub fn restart_libvirt(&mut self) {
        self._libvirt.terminate(std::time::Duration::from_secs(10));
        self._libvirt = Daemon::start(
            std::path::Path::new(env!("CARGO_BIN_EXE_mistify-libvirt")),
            &self.libvirt_args,
            self.libvirt_port,
        );
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self._dir);
    }
}

/// Starts the sub-agent, the fake storage and the agent on free ports.
pub fn start_stack(libvirt_args: &[&str]) -> Stack {
    let lv_port = free_port();
    let mut args: Vec<String> = vec![
        "--uri".into(),
        "test:///default".into(),
        "--port".into(),
        lv_port.to_string(),
    ];
    args.extend(libvirt_args.iter().map(|a| a.to_string()));
    let libvirt = Daemon::start(
        std::path::Path::new(env!("CARGO_BIN_EXE_mistify-libvirt")),
        &args,
        lv_port,
    );
    let libvirt_args = args;
    let st_port = free_port();
    let storage = Daemon::start(
        &mistify_e2e::example("test-rpc-service"),
        &["--port".into(), st_port.to_string()],
        st_port,
    );
    let text = std::fs::read_to_string(
        mistify_e2e::workspace_root()
            .join("config")
            .join("agent.json"),
    )
    .expect("config/agent.json");
    let mut config: serde_json::Value = serde_json::from_str(&text).expect("config json");
    config["services"]["libvirt"]["port"] = lv_port.into();
    for name in ["storage", "storageDownload"] {
        config["services"][name]["port"] = st_port.into();
    }
    // The fake storage answers `Test.*` by echoing the guest.
    for (action, method) in [("create", "Test.Create"), ("delete", "Test.Delete")] {
        for stage in config["actions"][action]["stages"]
            .as_array_mut()
            .expect("stages")
        {
            if stage["service"] == "storage" {
                stage["method"] = method.into();
            }
        }
    }
    let dir = std::env::temp_dir().join(format!(
        "mistify-libvirt-agent-{}-{}",
        std::process::id(),
        lv_port
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("agent.json");
    std::fs::write(&file, config.to_string()).expect("write config");
    let port = free_port();
    let agent = Daemon::start(
        &mistify_e2e::binary("mistify-agent"),
        &[
            "-a".into(),
            format!("127.0.0.1:{port}"),
            "-c".into(),
            file.display().to_string(),
            "--db-path".into(),
            dir.join("agent.redb").display().to_string(),
        ],
        port,
    );
    Stack {
        libvirt_port: lv_port,
        libvirt_args,
        _libvirt: libvirt,
        _storage: storage,
        agent,
        _dir: dir,
    }
}
