//! Kea DHCPv4 with real packets: kea-dhcp4 serves a veth in a server namespace, busybox
//! udhcpc asks from a client namespace with a guest's (or hypervisor's) MAC, and cdhcpd —
//! in the root namespace, on a real etcd with the cluster's guest API (cguestd) and
//! placer (cplacerd) — keeps Kea's reservations equal to etcd through the control socket.
//! Addresses (10.77.x.x) exist only inside the test's namespaces.

use std::collections::BTreeSet;
use std::io::{Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lochness::{Context, Resources};
use mistify_e2e::etcd::Etcd;
use mistify_e2e::netns::NetLab;
use mistify_e2e::{Daemon, TempDir};
use serde_json::{json, Value};

const DOMAIN: &str = "lochness.test";
const HV_MAC: &str = "52:54:00:77:00:05";

/// One Kea command over the control socket; the answer (None when unreachable).
fn kea(sock: &Path, command: &str) -> Option<Value> {
    let mut s = UnixStream::connect(sock).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(json!({ "command": command }).to_string().as_bytes())
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    serde_json::from_str(&out).ok()
}

/// The reserved MACs of Kea's running configuration.
fn reserved(sock: &Path) -> BTreeSet<String> {
    let Some(answer) = kea(sock, "config-get") else {
        return BTreeSet::new();
    };
    answer["arguments"]["Dhcp4"]["subnet4"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["reservations"].as_array().cloned().unwrap_or_default())
        .filter_map(|r| r["hw-address"].as_str().map(str::to_string))
        .collect()
}

fn poll(what: &str, timeout: Duration, diag: &dyn Fn() -> String, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(
            Instant::now() < deadline,
            "{what}: not within {timeout:?}\n{}",
            diag()
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

struct Lab {
    lab: NetLab,
    srv: String,
    cli: String,
    cli_if: String,
    dir: TempDir,
    kea_pid: Option<u32>,
}

impl Lab {
    fn kea_sock(&self) -> PathBuf {
        self.dir.path().join("kea4.sock")
    }

    /// Starts kea-dhcp4 in the server namespace with its original file; waits for its
    /// control socket.
    fn start_kea(&mut self) {
        let run = self.dir.path().join("run");
        std::fs::create_dir_all(&run).unwrap();
        let mut cmd = self.lab.command(&self.srv, "kea-dhcp4");
        cmd.arg("-c")
            .arg(self.dir.path().join("kea4.json"))
            .env("KEA_PIDFILE_DIR", &run)
            .env("KEA_LOCKFILE_DIR", &run)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(self.dir.path().join("kea.out")).unwrap())
            .stderr(Stdio::inherit());
        self.kea_pid = Some(self.lab.spawn(&mut cmd));
        let sock = self.kea_sock();
        poll(
            "Kea's control socket",
            Duration::from_secs(10),
            &|| self.kea_log(),
            || kea(&sock, "status-get").is_some_and(|a| a["result"] == 0),
        );
    }

    /// `kill -9` Kea (and wait for it).
    fn kill_kea(&mut self) {
        if let Some(pid) = self.kea_pid.take() {
            assert!(self.lab.stop(pid));
        }
    }

    fn kea_log(&self) -> String {
        mistify_e2e::tail(
            &std::fs::read_to_string(self.dir.path().join("kea.log")).unwrap_or_default(),
            15,
        )
    }

    /// udhcpc with `mac` (and extra args): Ok(the script's variables) or Err(udhcpc's output).
    fn dhcp(&self, mac: &str, extra: &[&str]) -> Result<Vec<(String, String)>, String> {
        self.lab
            .ns_ip(&self.cli, &["link", "set", &self.cli_if, "address", mac]);
        let result = self.dir.path().join("lease");
        let _ = std::fs::remove_file(&result);
        let script = self.dir.path().join("udhcpc.sh");
        let mut args = vec![
            "udhcpc",
            "-i",
            &self.cli_if,
            "-n",
            "-q",
            "-f",
            "-t",
            "3",
            "-T",
            "1",
        ];
        let script_s = script.display().to_string();
        args.extend(["-s", &script_s]);
        args.extend_from_slice(extra);
        self.lab.exec(&self.cli, "busybox", &args)?;
        let text = std::fs::read_to_string(&result).map_err(|e| format!("no lease file: {e}"))?;
        Ok(text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect())
    }
}

fn lab() -> Lab {
    let mut lab = NetLab::new("dh");
    let srv = lab.netns("s");
    let cli = lab.netns("c");
    let (srv_if, cli_if) = (lab.name("s0"), lab.name("c0"));
    lab.veth(&srv, &srv_if, &cli, &cli_if);
    lab.addr(&srv, &srv_if, "10.77.0.1/24");
    let dir = TempDir::new("lochness-dhcp-kea");
    let sock = dir.path().join("kea4.sock");
    let config = json!({"Dhcp4": {
        "interfaces-config": {"interfaces": [srv_if], "dhcp-socket-type": "raw"},
        "control-socket": {"socket-type": "unix", "socket-name": sock},
        "lease-database": {"type": "memfile", "persist": false},
        "valid-lifetime": 600, "renew-timer": 300, "rebind-timer": 500,
        "subnet4": [],
        "loggers": [{"name": "kea-dhcp4", "severity": "INFO",
                     "output_options": [{"output": dir.path().join("kea.log")}]}]
    }});
    std::fs::write(dir.path().join("kea4.json"), config.to_string()).unwrap();
    let lease = dir.path().join("lease");
    std::fs::write(
        dir.path().join("udhcpc.sh"),
        format!(
            "#!/bin/sh\nif [ \"$1\" = bound ]; then\n  for v in ip mask router boot_file sname hostname domain; do\n    eval \"echo $v=\\${{$v}}\" >> {}\n  done\nfi\nexit 0\n",
            lease.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        dir.path().join("udhcpc.sh"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    Lab {
        lab,
        srv,
        cli,
        cli_if,
        dir,
        kea_pid: None,
    }
}

fn get(vars: &[(String, String)], k: &str) -> String {
    vars.iter()
        .find(|(n, _)| n == k)
        .map(|(_, v)| v.clone())
        .unwrap_or_default()
}

/// A network with subnet 10.77.0.0/24 (gateway .1), a flavor, and a live hypervisor
/// (10.77.0.5, with a MAC) linked to the subnet: (network, flavor, hypervisor) ids.
async fn cluster(ctx: &Context) -> (String, String, String) {
    let mut network = ctx.new_network();
    network.save().await.unwrap();
    let mut subnet = ctx.new_subnet();
    subnet.cidr = Some(lochness::codec::parse_cidr("10.77.0.0/24").unwrap());
    subnet.start_range = Some("10.77.0.10".parse().unwrap());
    subnet.end_range = Some("10.77.0.200".parse().unwrap());
    subnet.gateway = Some("10.77.0.1".parse().unwrap());
    subnet.save().await.unwrap();
    network.add_subnet(&mut subnet).await.unwrap();
    let mut flavor = ctx.new_flavor();
    flavor.image = "289120e4-ed12-431d-8d18-48f8a94bb05a".into();
    flavor.resources = Resources {
        memory: 64,
        disk: 16,
        cpu: 1,
    };
    flavor.save().await.unwrap();
    let mut hv = ctx.new_hypervisor();
    hv.ip = Some("10.77.0.5".parse().unwrap());
    hv.netmask = Some("255.255.255.0".parse().unwrap());
    hv.gateway = Some("10.77.0.1".parse().unwrap());
    hv.mac = Some(lochness::Mac::parse(HV_MAC).unwrap());
    let size = Resources {
        memory: 1 << 20,
        disk: 1 << 30,
        cpu: 1024,
    };
    hv.total_resources = size;
    hv.available_resources = size;
    hv.save().await.unwrap();
    hv.add_subnet(&subnet, "br0").await.unwrap();
    ctx.client()
        .put(
            ctx.abs(&lochness::keys::hypervisor_heartbeat(&hv.id)),
            "alive",
            None,
        )
        .await
        .unwrap();
    (network.id.clone(), flavor.id.clone(), hv.id.clone())
}

/// Creates a guest through cguestd and waits for cplacerd to give it an address: (id, MAC, ip).
async fn create_guest(
    http: &reqwest::Client,
    api: &str,
    network: &str,
    flavor: &str,
) -> (String, String, String) {
    let resp = http
        .post(format!("{api}/guests"))
        .json(&json!({"flavor": flavor, "network": network, "type": "kvm"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let body: Value = resp.json().await.unwrap();
    let id = body["id"].as_str().unwrap().to_string();
    let mac = body["mac"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let g: Value = http
            .get(format!("{api}/guests/{id}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if let Some(ip) = g["ip"].as_str().filter(|ip| !ip.is_empty()) {
            return (id, mac, ip.to_string());
        }
        assert!(Instant::now() < deadline, "guest {id} not placed: {g}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kea_serves_exactly_the_reservations_in_etcd() {
    if mistify_e2e::skipped("netns") {
        return;
    }
    let mut lab = lab();
    lab.start_kea();
    let etcd = Etcd::start("lochness-dhcp-kea-etcd");
    let ctx = Context::new(&[etcd.url.as_str()], None).await.unwrap();
    let (network, flavor, hv) = cluster(&ctx).await;

    let api_port = mistify_e2e::free_port();
    let _cguestd = Daemon::start(
        &mistify_e2e::binary("cguestd"),
        &[
            "-k".into(),
            etcd.url.clone(),
            "--bind".into(),
            "127.0.0.1".into(),
            "-p".into(),
            api_port.to_string(),
        ],
        api_port,
    );
    let placer_port = mistify_e2e::free_port();
    let _cplacerd = Daemon::start(
        &mistify_e2e::binary("cplacerd"),
        &[
            "--etcd".into(),
            etcd.url.clone(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--http".into(),
            placer_port.to_string(),
        ],
        placer_port,
    );
    let port = mistify_e2e::free_port();
    let sock = lab.kea_sock();
    let cdhcpd_log = lab.dir.path().join("cdhcpd.log");
    let mut cdhcpd_cmd = Command::new(env!("CARGO_BIN_EXE_cdhcpd"));
    cdhcpd_cmd
        .args([
            "-d",
            DOMAIN,
            "-k",
            &etcd.url,
            "-l",
            "info",
            "--bind",
            "127.0.0.1",
        ])
        .args(["--http", &port.to_string(), "--kea-socket"])
        .arg(&sock)
        .args(["--kea-check-interval", "300ms", "--debounce", "50ms"])
        .stderr(std::fs::File::create(&cdhcpd_log).unwrap());
    let _cdhcpd = lab.lab.spawn(&mut cdhcpd_cmd);
    let kea_log = lab.dir.path().join("kea.log");
    let diag = || {
        format!(
            "cdhcpd:\n{}\nkea:\n{}",
            mistify_e2e::tail(
                &std::fs::read_to_string(&cdhcpd_log).unwrap_or_default(),
                20
            ),
            mistify_e2e::tail(&std::fs::read_to_string(&kea_log).unwrap_or_default(), 15)
        )
    };
    // The hypervisor's reservation arrives first, with its PXE options.
    poll(
        "the hypervisor's reservation",
        Duration::from_secs(20),
        &diag,
        || reserved(&sock).contains(HV_MAC),
    );
    let v = lab
        .dhcp(HV_MAC, &[])
        .unwrap_or_else(|e| panic!("{e}\n{}", diag()));
    assert_eq!(get(&v, "ip"), "10.77.0.5");
    assert_eq!(get(&v, "router"), "10.77.0.1");
    assert_eq!(get(&v, "mask"), "24");
    assert_eq!(get(&v, "hostname"), hv);
    assert_eq!(get(&v, "domain"), format!("nodes.{DOMAIN}"));
    assert_eq!(get(&v, "boot_file"), "undionly.kpxe");
    assert_eq!(get(&v, "sname"), format!("tftp.services.{DOMAIN}"));
    // iPXE (user class "iPXE") gets the boot script's URL instead.
    let v = lab
        .dhcp(HV_MAC, &["-x", "0x4d:69505845"])
        .unwrap_or_else(|e| panic!("{e}\n{}", diag()));
    assert_eq!(
        get(&v, "boot_file"),
        format!("http://ipxe.services.{DOMAIN}:8888/ipxe/${{net0/ip}}")
    );

    // A guest created through the cluster API is served within 2 s of its placement.
    let http = reqwest::Client::new();
    let api = format!("http://127.0.0.1:{api_port}");
    let (g1, mac1, ip1) = create_guest(&http, &api, &network, &flavor).await;
    poll(
        "the new guest's reservation",
        Duration::from_secs(2),
        &diag,
        || reserved(&sock).contains(&mac1),
    );
    let v = lab
        .dhcp(&mac1, &[])
        .unwrap_or_else(|e| panic!("{e}\n{}", diag()));
    assert_eq!(get(&v, "ip"), ip1);
    assert_eq!(get(&v, "router"), "10.77.0.1");
    assert_eq!(get(&v, "mask"), "24");
    assert_eq!(get(&v, "hostname"), g1);
    assert_eq!(get(&v, "domain"), format!("guests.{DOMAIN}"));
    assert_eq!(get(&v, "boot_file"), "", "guests get no PXE options");
    // An unknown MAC gets no lease (reservations only, no pool).
    let err = lab.dhcp("02:00:00:77:99:99", &[]).unwrap_err();
    assert!(err.contains("exit status: 1"), "{err}");

    // A deleted guest's MAC gets no lease.
    let (g2, mac2, ip2) = create_guest(&http, &api, &network, &flavor).await;
    poll(
        "the second guest's reservation",
        Duration::from_secs(2),
        &diag,
        || reserved(&sock).contains(&mac2),
    );
    assert_eq!(get(&lab.dhcp(&mac2, &[]).unwrap(), "ip"), ip2);
    ctx.guest(&g2).await.unwrap().destroy().await.unwrap();
    poll(
        "the deleted guest's reservation gone",
        Duration::from_secs(5),
        &diag,
        || !reserved(&sock).contains(&mac2),
    );
    let err = lab.dhcp(&mac2, &[]).unwrap_err();
    assert!(err.contains("exit status: 1"), "{err}");

    // kill -9 Kea and start it again with its original file (no reservations):
    // cdhcpd applies them again.
    lab.kill_kea();
    lab.start_kea();
    poll(
        "the reservations after Kea's restart",
        Duration::from_secs(10),
        &diag,
        || {
            let r = reserved(&sock);
            r.contains(&mac1) && r.contains(HV_MAC)
        },
    );
    assert_eq!(get(&lab.dhcp(&mac1, &[]).unwrap(), "ip"), ip1);

    // Kea down while guests change: a guest placed and one deleted meanwhile. Once Kea
    // is back, every reservation of etcd is there and nothing else.
    lab.kill_kea();
    let (g3, mac3, ip3) = create_guest(&http, &api, &network, &flavor).await;
    ctx.guest(&g1).await.unwrap().destroy().await.unwrap();
    let metrics_url = format!("http://127.0.0.1:{port}/metrics");
    poll(
        "the failed sync counted",
        Duration::from_secs(10),
        &diag,
        || {
            mistify_e2e::stack::http_get(&metrics_url)
                .is_some_and(|(_, b)| b.contains("cdhcpd_kea_failures_total{stage=\"get\"}"))
        },
    );
    lab.start_kea();
    let want: BTreeSet<String> = [HV_MAC.to_string(), mac3.clone()].into();
    poll(
        "every reservation after Kea is back",
        Duration::from_secs(10),
        &diag,
        || reserved(&sock) == want,
    );
    let v = lab
        .dhcp(&mac3, &[])
        .unwrap_or_else(|e| panic!("{e}\n{}", diag()));
    assert_eq!(
        (get(&v, "ip"), get(&v, "router"), get(&v, "mask")),
        (ip3, "10.77.0.1".into(), "24".into())
    );
    assert!(
        lab.dhcp(&mac1, &[]).is_err(),
        "the guest deleted while Kea was down has no lease"
    );
    let _ = g3;

    // Kea's own settings are the operator's: interfaces, control socket, lease database.
    let cfg = kea(&sock, "config-get").unwrap();
    let d = &cfg["arguments"]["Dhcp4"];
    assert_eq!(d["interfaces-config"]["interfaces"][0], lab.lab.name("s0"));
    assert_eq!(
        d["control-socket"]["socket-name"],
        sock.display().to_string()
    );
    assert_eq!(d["lease-database"]["persist"], false);
    let (_, metrics) = mistify_e2e::stack::http_get(&metrics_url).unwrap();
    assert!(metrics.contains("cdhcpd_kea_applies_total"), "{metrics}");
}
