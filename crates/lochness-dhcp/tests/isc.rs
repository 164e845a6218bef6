//! The ISC output against the recordings of the original cdhcpd
//! (`tests/fixtures/wire/lochness-renderers.json`): a fresh etcd holding the recording's
//! seed, the real cdhcpd binary writing into an empty directory, the files compared byte
//! for byte by the fixture's own checker. Then changes in etcd reach the files, unchanged
//! content is not rewritten, and the reload command runs once per change.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use mistify_e2e::etcd::Etcd;
use mistify_e2e::TempDir;

fn wire() -> PathBuf {
    mistify_e2e::fixtures_dir().join("wire")
}

fn seed(etcd: &Etcd) {
    let out = Command::new("python3")
        .arg(wire().join("lochness-seed.py"))
        .arg(wire().join("lochness-renderers.json"))
        .args(["--etcd", &etcd.url])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "seeding failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

struct Cdhcpd(std::process::Child);

impl Drop for Cdhcpd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn cdhcpd(args: &[&str]) -> Cdhcpd {
    Cdhcpd(
        Command::new(env!("CARGO_BIN_EXE_cdhcpd"))
            .args(args)
            .spawn()
            .expect("cdhcpd"),
    )
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "{what} not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

fn etcdctl(etcd: &Etcd, args: &[&str]) {
    let out = Command::new("etcdctl")
        .args(["--endpoints", &etcd.url])
        .args(args)
        .output()
        .expect("etcdctl");
    assert!(
        out.status.success(),
        "etcdctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_recorded_files_are_written_byte_for_byte() {
    let etcd = Etcd::start("lochness-dhcp-isc");
    seed(&etcd);
    let dir = TempDir::new("lochness-dhcp-isc");
    let conf = format!("{}/", dir.path().display());
    let reloads = dir.path().join("reloads");
    let reload = format!("echo x >> {}", reloads.display());
    // The recording's arguments, plus ours: no listener, a reload command.
    let _d = cdhcpd(&[
        "-d",
        "lochness.test",
        "-k",
        &etcd.url,
        "-c",
        &conf,
        "--http",
        "0",
        "--isc-reload",
        &reload,
        "--debounce",
        "50ms",
    ]);
    let (hv, guests) = (
        dir.path().join("hypervisors.conf"),
        dir.path().join("guests.conf"),
    );
    wait_for("both files", Duration::from_secs(20), || {
        hv.is_file() && guests.is_file() && reloads.is_file()
    });
    let out = Command::new("python3")
        .arg(wire().join("lochness-render-check.py"))
        .arg(wire().join("lochness-renderers.json"))
        .arg("--dhcp-dir")
        .arg(dir.path())
        .output()
        .expect("python3");
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}");
    assert!(out.status.success(), "{text}");
    assert_eq!(text.lines().last(), Some("2 passed, 0 failed"));
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&guests).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o644);
    assert_eq!(
        read(&reloads).lines().count(),
        1,
        "one reload for the first write"
    );

    // A change that does not touch DHCP (a guest's metadata map) rewrites nothing.
    let ino = |p: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
    let (hv_ino, g_ino) = (ino(&hv), ino(&guests));
    let g1 = "ffff0081-6666-4666-8666-000000000081";
    let key = format!("lochness/guests/{g1}/metadata");
    let mut guest = serde_json::Value::Null;
    let fx: serde_json::Value =
        serde_json::from_str(&read(&wire().join("lochness-renderers.json"))).unwrap();
    for g in fx["seed"]["entities"]["guests"].as_array().unwrap() {
        if g["json"]["id"] == g1 {
            guest = g["json"].clone();
        }
    }
    guest["metadata"] = serde_json::json!({"note": "not DHCP"});
    etcdctl(&etcd, &["put", &key, &guest.to_string()]);
    // A change that does: guest 1 gets another address (the marker of that render).
    guest["ip"] = serde_json::json!("10.30.0.44");
    etcdctl(&etcd, &["put", &key, &guest.to_string()]);
    wait_for("the new address", Duration::from_secs(10), || {
        read(&guests).contains("10.30.0.44;")
    });
    assert_eq!(
        ino(&hv),
        hv_ino,
        "hypervisors.conf is unchanged and was not rewritten"
    );
    assert_ne!(
        ino(&guests),
        g_ino,
        "guests.conf was replaced (a new file renamed over it)"
    );
    wait_for("the second reload", Duration::from_secs(10), || {
        read(&reloads).lines().count() == 2
    });

    // A deleted guest's host block goes; a new hypervisor's comes, upper-case MAC.
    etcdctl(
        &etcd,
        &["del", "--prefix", &format!("lochness/guests/{g1}/")],
    );
    let hv3 = serde_json::json!({"id": "aaaa0083-1111-4111-8111-000000000083", "ip": "192.168.80.13",
        "netmask": "255.255.255.0", "gateway": "192.168.80.1", "mac": "52:54:00:8a:00:83"});
    etcdctl(
        &etcd,
        &[
            "put",
            "lochness/hypervisors/aaaa0083-1111-4111-8111-000000000083/metadata",
            &hv3.to_string(),
        ],
    );
    // A hypervisor without an address is left out (the original printed `<nil>`, which
    // dhcpd refuses); the rest of the file is still written (and passed dhcpd's check).
    let hv4 = serde_json::json!({"id": "aaaa0084-1111-4111-8111-000000000084", "mac": "52:54:00:8a:00:84"});
    etcdctl(
        &etcd,
        &[
            "put",
            "lochness/hypervisors/aaaa0084-1111-4111-8111-000000000084/metadata",
            &hv4.to_string(),
        ],
    );
    wait_for("the delete", Duration::from_secs(10), || {
        !read(&guests).contains(g1)
    });
    wait_for("the new hypervisor", Duration::from_secs(10), || {
        read(&hv).contains("52:54:00:8A:00:83;")
    });
    // A later change on the same prefix marks the render that has seen hypervisor 4.
    let mut hv3b = hv3.clone();
    hv3b["gateway"] = serde_json::json!("192.168.80.254");
    etcdctl(
        &etcd,
        &[
            "put",
            "lochness/hypervisors/aaaa0083-1111-4111-8111-000000000083/metadata",
            &hv3b.to_string(),
        ],
    );
    wait_for("the marker", Duration::from_secs(10), || {
        read(&hv).contains("192.168.80.254;")
    });
    assert!(!read(&hv).contains("aaaa0084"), "{}", read(&hv));
    assert!(!read(&hv).contains("<nil>"));
    // No temporary file is left in the directory.
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.contains("tmp")), "{names:?}");
}

#[test]
fn a_file_the_dhcpd_check_refuses_is_not_installed() {
    let etcd = Etcd::start("lochness-dhcp-check");
    seed(&etcd);
    let dir = TempDir::new("lochness-dhcp-check");
    let conf = format!("{}/", dir.path().display());
    // A dhcpd that refuses every file.
    let fake = dir.path().join("fake-dhcpd");
    std::fs::write(&fake, "#!/bin/sh\necho \"refused $*\" >&2\nexit 1\n").unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let port = mistify_e2e::free_port();
    let _d = cdhcpd(&[
        "-d",
        "lochness.test",
        "-k",
        &etcd.url,
        "-c",
        &conf,
        "--http",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--isc-check",
        "always",
        "--dhcpd",
        &fake.display().to_string(),
    ]);
    let url = format!("http://127.0.0.1:{port}/metrics");
    wait_for("the failure counted", Duration::from_secs(20), || {
        mistify_e2e::stack::http_get(&url).is_some_and(|(_, body)| {
            body.contains("cdhcpd_isc_file_failures_total{file=\"guests.conf\"} 1")
        })
    });
    assert!(!dir.path().join("guests.conf").exists());
    assert!(!dir.path().join("hypervisors.conf").exists());
}
