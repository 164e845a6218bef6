//! nfirewalld with real packets: a "hypervisor" network namespace holding a bridge, two
//! guest namespaces and a client namespace on it by veths (10.78.0.0/24 exists only
//! inside the namespaces). nfirewalld runs in the root namespace against a real etcd on
//! loopback and applies its table inside the hypervisor namespace (`--netns`). TCP and
//! UDP listeners run in the guests; every flow is a real connection (TCP) or a request
//! and its echo (UDP).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lochness::Context;
use lochness_firewall::apply::{Applier, ApplyError};
use mistify_e2e::etcd::Etcd;
use mistify_e2e::netns::NetLab;
use mistify_e2e::{free_port, Daemon, TempDir};

/// TCP and UDP echo listeners: `python3 -c LISTEN TCP_PORTS UDP_PORTS READY_FILE`.
const LISTEN: &str = r#"
import socket, sys, threading
tcp = [int(p) for p in sys.argv[1].split(',') if p]
udp = [int(p) for p in sys.argv[2].split(',') if p]
def serve_tcp(s):
    while True:
        c, _ = s.accept()
        try:
            c.sendall(b'hello')
        finally:
            c.close()
def serve_udp(s):
    while True:
        d, a = s.recvfrom(2048)
        s.sendto(d, a)
for p in tcp:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(('0.0.0.0', p))
    s.listen(64)
    threading.Thread(target=serve_tcp, args=(s,), daemon=True).start()
for p in udp:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(('0.0.0.0', p))
    threading.Thread(target=serve_udp, args=(s,), daemon=True).start()
open(sys.argv[3], 'w').close()
threading.Event().wait()
"#;

/// Probes flows at once: `python3 -c PROBE TIMEOUT proto:ip:port…`; prints `SPEC ok` or
/// `SPEC fail` per flow (TCP: connected and read the greeting; UDP: the echo came back).
const PROBE: &str = r#"
import socket, sys, threading
timeout = float(sys.argv[1])
res = {}
def probe(spec):
    proto, host, port = spec.split(':')
    ok = False
    try:
        if proto == 'tcp':
            s = socket.create_connection((host, int(port)), timeout=timeout)
            s.settimeout(timeout)
            ok = s.recv(5) == b'hello'
            s.close()
        else:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.settimeout(timeout)
            s.sendto(b'ping', (host, int(port)))
            ok = s.recvfrom(64)[0] == b'ping'
            s.close()
    except OSError:
        ok = False
    res[spec] = ok
ts = [threading.Thread(target=probe, args=(a,)) for a in sys.argv[2:]]
for t in ts:
    t.start()
for t in ts:
    t.join()
for a in sys.argv[2:]:
    print(a, 'ok' if res[a] else 'fail')
"#;

const G1: &str = "10.78.0.11";
const G2: &str = "10.78.0.12";
const CLIENT: &str = "10.78.0.50";
const TCP_PORTS: &str = "22,23,8000,8005,8010,8011,9000";
const UDP_PORTS: &str = "5353,7000,7002";

/// The lab: hypervisor namespace with the bridge, guests g1, g2 and the client.
struct Lab {
    lab: NetLab,
    hv: String,
    g1: String,
    g2: String,
    client: String,
}

fn build_lab(dir: &Path) -> Lab {
    let mut lab = NetLab::new("fw");
    let hv = lab.netns("hv");
    let br = lab.name("br");
    lab.bridge(&hv, &br);
    let mut ns = BTreeMap::new();
    for (short, ip) in [("g1", G1), ("g2", G2), ("c", CLIENT)] {
        let n = lab.netns(short);
        let (port, end) = (
            lab.name(&format!("p{short}")),
            lab.name(&format!("e{short}")),
        );
        lab.veth(&hv, &port, &n, &end);
        lab.enslave(&hv, &port, &br);
        lab.addr(&n, &end, &format!("{ip}/24"));
        ns.insert(short, n);
    }
    for short in ["g1", "g2"] {
        let ready = dir.join(format!("ready-{short}"));
        let mut cmd = lab.command(&ns[short], "python3");
        cmd.args(["-c", LISTEN, TCP_PORTS, UDP_PORTS])
            .arg(&ready)
            .stdin(Stdio::null());
        lab.spawn(&mut cmd);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ready.exists() {
            assert!(
                Instant::now() < deadline,
                "the listener in {short} did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Lab {
        hv,
        g1: ns["g1"].clone(),
        g2: ns["g2"].clone(),
        client: ns["c"].clone(),
        lab,
    }
}

impl Lab {
    /// Probes `flows` (proto:ip:port) from namespace `from`.
    fn probe(&self, from: &str, flows: &[String], timeout: f64) -> BTreeMap<String, bool> {
        let mut args = vec!["-c".to_string(), PROBE.to_string(), timeout.to_string()];
        args.extend(flows.iter().cloned());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = self.lab.exec(from, "python3", &args).unwrap();
        out.lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(spec, r)| (spec.to_string(), r == "ok"))
            .collect()
    }

    fn ns(&self, name: &str) -> &str {
        match name {
            "g1" => &self.g1,
            "g2" => &self.g2,
            _ => &self.client,
        }
    }

    /// Checks every (from, flow, allowed) of `expected`; a mismatch fails with the lot.
    fn expect(&self, expected: &[(&str, &str, bool)]) {
        let mut wrong = Vec::new();
        for from in ["g1", "g2", "c"] {
            let flows: Vec<String> = expected
                .iter()
                .filter(|(f, _, _)| *f == from)
                .map(|(_, flow, _)| flow.to_string())
                .collect();
            if flows.is_empty() {
                continue;
            }
            let got = self.probe(self.ns(from), &flows, 0.5);
            for (f, flow, allowed) in expected.iter().filter(|(f, _, _)| *f == from) {
                if got.get(*flow) != Some(allowed) {
                    wrong.push(format!(
                        "{f} -> {flow}: expected {}, got {:?}",
                        if *allowed { "ok" } else { "fail" },
                        got.get(*flow)
                    ));
                }
            }
        }
        assert!(wrong.is_empty(), "flows:\n{}", wrong.join("\n"));
    }

    /// Polls one flow from `from` until it gives `allowed`, at most `within`.
    fn until(&self, from: &str, flow: &str, allowed: bool, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            let got = self.probe(self.ns(from), &[flow.to_string()], 0.2);
            if got.get(flow) == Some(&allowed) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
        }
    }

    fn nft(&self, args: &[&str]) -> Result<String, String> {
        self.lab.exec(&self.hv, "nft", args)
    }
}

/// nfirewalld as a child process with its log in a file (killed on drop).
struct Firewall {
    child: Child,
    log: PathBuf,
    url: String,
}

impl Firewall {
    fn start(args: &[String], log: PathBuf, port: u16) -> Firewall {
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(mistify_e2e::binary("nfirewalld"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap();
        let mut fw = Firewall {
            child,
            log,
            url: format!("http://127.0.0.1:{port}"),
        };
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        if let Err(e) = mistify_e2e::wait_for_port(addr, Duration::from_secs(30)) {
            let status = fw.child.try_wait().ok().flatten();
            panic!(
                "nfirewalld did not start ({e}, {status:?}): {}",
                fw.log_text()
            );
        }
        fw
    }

    /// SIGTERM, then the exit code within `timeout`.
    fn terminate(&mut self, timeout: Duration) -> Option<i32> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn metric(&self, name: &str) -> f64 {
        let text = reqwest::get(format!("{}/metrics", self.url))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {text}"))
    }

    async fn healthy(&self) -> bool {
        reqwest::get(format!("{}/healthz", self.url))
            .await
            .is_ok_and(|r| r.status() == 200)
    }
}

impl Drop for Firewall {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn send(method: &str, url: &str, body: &str) -> (u16, String) {
    let client = reqwest::Client::new();
    let r = client
        .request(method.parse().unwrap(), url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// Writes `value` under the relative `key` as it is (data another tool wrote).
async fn put_raw(ctx: &Context, key: &str, value: &str) {
    ctx.client()
        .put(ctx.abs(key), value.to_string(), None)
        .await
        .unwrap();
}

fn rule(proto: &str, a: u32, b: u32, extra: &str) -> String {
    format!(r#"{{"protocol":"{proto}","portStart":{a},"portEnd":{b},"action":"accept"{extra}}}"#)
}

/// The valid rules of group A (g1's): a port range, a single port from a CIDR, UDP and
/// TCP from the members of group B, UDP from a CIDR.
fn a_rules(b: &str) -> Vec<String> {
    vec![
        rule("tcp", 8000, 8010, ""),
        rule("tcp", 22, 22, r#","source":"10.78.0.48/28""#),
        rule("udp", 5353, 5353, &format!(r#","group":"{b}""#)),
        rule("tcp", 9000, 9000, &format!(r#","group":"{b}""#)),
        rule("udp", 7000, 7000, r#","source":"10.78.0.50/32""#),
    ]
}

fn flow(proto: &str, ip: &str, port: u16) -> String {
    format!("{proto}:{ip}:{port}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_firewall_with_real_packets() {
    if mistify_e2e::skipped("netns") || mistify_e2e::skipped("etcd") {
        return;
    }
    let dir = TempDir::new("lochness-fw");
    let lab = build_lab(dir.path());
    assert_eq!(
        lab.lab
            .exec(
                &lab.hv,
                "cat",
                &["/proc/sys/net/bridge/bridge-nf-call-iptables"]
            )
            .unwrap()
            .trim(),
        "1",
        "bridged traffic reaches the inet hooks in the hypervisor namespace"
    );
    let check = |v: &[(&str, String, bool)]| {
        let refs: Vec<(&str, &str, bool)> =
            v.iter().map(|(f, fl, ok)| (*f, fl.as_str(), *ok)).collect();
        lab.expect(&refs);
    };
    // Without a ruleset every flow passes.
    check(&[
        ("c", flow("tcp", G1, 23), true),
        ("c", flow("udp", G1, 7002), true),
    ]);
    // A table that is not ours, with a rule, in the hypervisor namespace.
    let other = dir.path().join("other.nft");
    std::fs::write(
        &other,
        "table inet other {\n\tchain c {\n\t\ttype filter hook forward priority 10; policy accept;\n\t\tip daddr 10.99.0.1 accept\n\t}\n}\n",
    )
    .unwrap();
    lab.nft(&["-f", other.to_str().unwrap()]).unwrap();
    let other_before = lab.nft(&["list", "table", "inet", "other"]).unwrap();

    // The cluster: etcd, cguestd and cnetworkd; g1 and g2 placed on the hypervisor.
    let etcd = Etcd::start("lochness-fw-etcd");
    let ctx = Context::new(&[etcd.url.as_str()], None).await.unwrap();
    let api = |name: &str| {
        let port = free_port();
        let args: Vec<String> = [
            "--bind",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "--kv",
            &etcd.url,
            "--log-level",
            "warn",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        Daemon::start(&mistify_e2e::binary(name), &args, port)
    };
    let guests_api = api("cguestd");
    let networks_api = api("cnetworkd");

    let mut flavor = ctx.new_flavor();
    flavor.image = "debian-12".into();
    flavor.resources = lochness::Resources {
        memory: 1,
        disk: 1,
        cpu: 1,
    };
    flavor.save().await.unwrap();
    let mut network = ctx.new_network();
    network.save().await.unwrap();
    let mut subnet = ctx.new_subnet();
    subnet.cidr = Some(lochness::codec::parse_cidr("10.78.0.0/24").unwrap());
    subnet.start_range = Some(G1.parse().unwrap());
    subnet.end_range = Some(G2.parse().unwrap());
    subnet.gateway = Some("10.78.0.1".parse().unwrap());
    subnet.save().await.unwrap();
    network.add_subnet(&mut subnet).await.unwrap();
    let mut hv = ctx.new_hypervisor();
    hv.total_resources = lochness::Resources {
        memory: 64,
        disk: 64,
        cpu: 64,
    };
    hv.available_resources = hv.total_resources;
    hv.save().await.unwrap();
    hv.add_subnet(&subnet, "br0").await.unwrap();
    let (mut a, mut b, mut c) = (ctx.new_fwgroup(), ctx.new_fwgroup(), ctx.new_fwgroup());
    for g in [&mut b, &mut c, &mut a] {
        g.save().await.unwrap();
    }
    let missing = "0000dead-0000-4000-8000-00000000beef";
    // Groups A and B as another tool wrote them: their valid rules, and four the API
    // would refuse (A: start > end, an unknown protocol, a missing group; B: a CIDR that
    // does not parse).
    let mut stored = a_rules(&b.id);
    stored.extend([
        rule("tcp", 8012, 8011, ""),
        rule("sctp", 23, 23, ""),
        rule("tcp", 23, 23, &format!(r#","group":"{missing}""#)),
    ]);
    let raw = |id: &str, rules: &[String]| {
        format!(
            r#"{{"id":"{id}","metadata":{{}},"rules":[{}]}}"#,
            rules.join(",")
        )
    };
    put_raw(
        &ctx,
        &lochness::keys::fwgroup_metadata(&a.id),
        &raw(&a.id, &stored),
    )
    .await;
    let b_rules = [
        rule("tcp", 8005, 8005, ""),
        rule("tcp", 8010, 8010, r#","source":"10.78.0.0/33""#),
    ];
    put_raw(
        &ctx,
        &lochness::keys::fwgroup_metadata(&b.id),
        &raw(&b.id, &b_rules),
    )
    .await;
    let place = |fw: String| {
        let mut g = ctx.new_guest();
        g.flavor.clone_from(&flavor.id);
        g.network.clone_from(&network.id);
        g.fwgroup = fw;
        g
    };
    let mut g1 = place(a.id.clone());
    hv.add_guest(&mut g1).await.unwrap();
    let mut g2 = place(b.id.clone());
    hv.add_guest(&mut g2).await.unwrap();
    assert_eq!(
        (
            g1.ip.unwrap().to_string().as_str(),
            g2.ip.unwrap().to_string().as_str()
        ),
        (G1, G2)
    );
    // The client is a guest of the cluster elsewhere (not on this hypervisor), in C.
    let mut client = place(c.id.clone());
    client.ip = Some(CLIENT.parse().unwrap());
    client.save().await.unwrap();

    // nfirewalld, applying in the hypervisor namespace; its nft runs through a wrapper
    // that, while the file `break` exists, appends a rule nft rejects (a jump to a chain
    // that does not exist) to the ruleset it is given: a deliberately invalid ruleset
    // through the real nft and kernel.
    let wrapper = dir.path().join("nft-wrapper");
    let breaker = dir.path().join("break");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nif [ -e {b} ] && [ \"$1\" = -c ]; then\n  printf 'add rule inet mistify forward jump no_such_chain\\n' >> \"$3\"\nfi\nexec nft \"$@\"\n",
            b = breaker.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let rules_file = dir.path().join("rules").join("mistify.nft");
    std::fs::create_dir_all(rules_file.parent().unwrap()).unwrap();
    std::fs::write(
        rules_file.with_file_name("mistify.nft.tmpdeadbeef"),
        "stale",
    )
    .unwrap();
    let port = free_port();
    let args: Vec<String> = [
        "-k",
        &etcd.url,
        "-i",
        &hv.id,
        "-f",
        rules_file.to_str().unwrap(),
        "--netns",
        &lab.hv,
        "--nft",
        wrapper.to_str().unwrap(),
        "--http",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--debounce",
        "50ms",
        "--log-level",
        "info",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let fw = Firewall::start(&args, dir.path().join("nfirewalld.log"), port);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !fw.healthy().await {
        assert!(
            Instant::now() < deadline,
            "no ruleset loaded: {}",
            fw.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !rules_file
            .with_file_name("mistify.nft.tmpdeadbeef")
            .exists(),
        "a stale temporary file is removed at start"
    );
    let table = lab.nft(&["list", "table", "inet", "mistify"]).unwrap();
    assert!(table.contains("hook forward"), "{table}");
    assert_eq!(
        std::fs::read_to_string(&rules_file).unwrap().lines().nth(2),
        Some("table inet mistify"),
        "the rules file holds our table"
    );

    // The rules: g1 (group A) gets the port range, port 22 from the client's /28, UDP
    // 5353 and TCP 9000 from B's members (g2), UDP 7000 from the client's /32; g2 (group
    // B) gets TCP 8005 only; established replies pass.
    let before_change = [
        ("c", flow("tcp", G1, 8000), true),
        ("c", flow("tcp", G1, 8005), true),
        ("c", flow("tcp", G1, 8010), true),
        ("c", flow("tcp", G1, 8011), false),
        ("c", flow("tcp", G1, 22), true),
        ("g2", flow("tcp", G1, 22), false),
        ("g2", flow("tcp", G1, 9000), true),
        ("c", flow("tcp", G1, 9000), false),
        ("g2", flow("udp", G1, 5353), true),
        ("c", flow("udp", G1, 5353), false),
        ("c", flow("udp", G1, 7000), true),
        ("c", flow("udp", G1, 7002), false),
        ("g2", flow("udp", G1, 7000), false),
        ("c", flow("tcp", G1, 23), false),
        ("c", flow("tcp", G1, 8012), false),
        ("c", flow("tcp", G2, 8005), true),
        ("g1", flow("tcp", G2, 8005), true),
        ("c", flow("tcp", G2, 8010), false),
        ("g1", flow("tcp", G2, 22), false),
        ("c", flow("udp", G2, 5353), false),
    ];
    check(&before_change);
    // The four invalid stored rules were skipped with their reasons; the rest applies.
    assert_eq!(fw.metric("nfirewalld_skipped_rules").await, 4.0);
    let log = fw.log_text();
    for reason in [
        "rule 6: portStart 8012 is greater than portEnd 8011",
        "rule 7: protocol",
        "sctp",
        "rule 2: source",
        "10.78.0.0/33",
        &format!("rule 8: group {missing} does not exist"),
    ] {
        assert!(log.contains(reason), "log lacks {reason:?}:\n{log}");
    }

    // The client joins group B through the API: it is then a member and passes where
    // B's members pass, within 1 s.
    let (status, body) = send(
        "PATCH",
        &format!("{}/guests/{}", guests_api.url(), client.id),
        &format!(r#"{{"fwgroup":"{}"}}"#, b.id),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        lab.until("c", &flow("tcp", G1, 9000), true, Duration::from_secs(1)),
        "the new member did not pass within 1 s: {}",
        fw.log_text()
    );
    check(&[
        ("c", flow("tcp", G1, 9000), true),
        ("c", flow("udp", G1, 5353), true),
        ("c", flow("tcp", G1, 8011), false),
        ("c", flow("tcp", G2, 8005), true),
    ]);

    // Group A's rules change through the API (the invalid ones go, TCP 23 is allowed).
    let patch_a = |extra: &[String]| {
        let mut rules = a_rules(&b.id);
        rules.extend(extra.iter().cloned());
        format!(r#"{{"rules":[{}]}}"#, rules.join(","))
    };
    let a_url = format!("{}/fwgroups/{}", networks_api.url(), a.id);
    let (status, body) = send("PATCH", &a_url, &patch_a(&[rule("tcp", 23, 23, "")])).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        lab.until("c", &flow("tcp", G1, 23), true, Duration::from_secs(1)),
        "the new rule did not apply within 1 s"
    );
    let deadline = Instant::now() + Duration::from_secs(2);
    // A's invalid rules are gone; B's stays skipped.
    while fw.metric("nfirewalld_skipped_rules").await != 1.0 {
        assert!(Instant::now() < deadline, "skipped rules stay counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // B's stored rule whose source is not a CIDR is repaired through the API as well.
    let b_url = format!("{}/fwgroups/{}", networks_api.url(), b.id);
    let (status, body) = send(
        "PATCH",
        &b_url,
        &format!(r#"{{"rules":[{}]}}"#, rule("tcp", 8005, 8005, "")),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let deadline = Instant::now() + Duration::from_secs(2);
    while fw.metric("nfirewalld_skipped_rules").await != 0.0 {
        assert!(Instant::now() < deadline, "B's repaired rule stays skipped");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A ruleset nft refuses: the previous one stays in force, exactly.
    let in_force = lab.nft(&["list", "table", "inet", "mistify"]).unwrap();
    let file_before = std::fs::read_to_string(&rules_file).unwrap();
    let errors = fw.metric("nfirewalld_apply_errors_total").await;
    std::fs::write(&breaker, "").unwrap();
    let (status, body) = send("PATCH", &a_url, &patch_a(&[])).await;
    assert_eq!(status, 200, "{body}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while fw.metric("nfirewalld_apply_errors_total").await <= errors {
        assert!(
            Instant::now() < deadline,
            "no failed apply: {}",
            fw.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(fw
        .log_text()
        .contains("the previous ruleset stays in force"));
    assert_eq!(
        lab.nft(&["list", "table", "inet", "mistify"]).unwrap(),
        in_force
    );
    assert_eq!(std::fs::read_to_string(&rules_file).unwrap(), file_before);
    check(&[
        ("c", flow("tcp", G1, 23), true),
        ("c", flow("tcp", G1, 8005), true),
        ("c", flow("tcp", G1, 8011), false),
    ]);
    // The next change is tried again, and applies.
    std::fs::remove_file(&breaker).unwrap();
    let (status, body) = send("PATCH", &a_url, &patch_a(&[rule("udp", 7002, 7002, "")])).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        lab.until("c", &flow("udp", G1, 7002), true, Duration::from_secs(1)),
        "the change after a failure did not apply within 1 s"
    );
    check(&[
        ("c", flow("tcp", G1, 23), false),
        ("c", flow("tcp", G1, 8005), true),
        ("g2", flow("tcp", G1, 9000), true),
    ]);

    // A guest leaves its group (g2 to none): default deny of new inbound traffic, and it
    // is no longer a member of B.
    let (status, body) = send(
        "PATCH",
        &format!("{}/guests/{}", guests_api.url(), g2.id),
        &format!(r#"{{"fwgroup":"{}"}}"#, c.id),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        lab.until("g2", &flow("tcp", G1, 9000), false, Duration::from_secs(1)),
        "a guest that left the group still passed after 1 s"
    );
    check(&[
        ("c", flow("tcp", G1, 9000), true),
        ("c", flow("tcp", G2, 8005), false),
    ]);

    // The table that is not ours is exactly as it was after all those loads.
    assert_eq!(
        lab.nft(&["list", "table", "inet", "other"]).unwrap(),
        other_before
    );
    assert!(fw.metric("nfirewalld_applies_total").await >= 5.0);
    // No temporary file is left beside the rules file.
    let left: Vec<_> = std::fs::read_dir(rules_file.parent().unwrap())
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .collect();
    assert_eq!(left, [std::ffi::OsString::from("mistify.nft")]);
    drop(fw);
}

/// The apply layer on its own: a ruleset nft refuses changes nothing (the check refuses
/// it, and loading it anyway fails as a whole); another table is never touched; the
/// bridge sysctl is read where the rules apply.
#[tokio::test]
async fn a_refused_ruleset_leaves_the_previous_one() {
    if mistify_e2e::skipped("netns") {
        return;
    }
    let dir = TempDir::new("lochness-fw-apply");
    let mut lab = NetLab::new("fwa");
    let ns = lab.netns("hv");
    let br = lab.name("br");
    lab.bridge(&ns, &br);
    lab.exec(&ns, "nft", &["add", "table", "inet", "other"])
        .unwrap();
    let file = dir.path().join("rules.nft");
    let mut applier = Applier::new(&file, Some(ns.clone()), "nft");
    assert_eq!(applier.bridge_filtering().await, Ok(true));
    let good = "table inet mistify\ndelete table inet mistify\ntable inet mistify {\n\tset m_x {\n\t\ttype ipv4_addr\n\t\telements = { 10.78.0.1 }\n\t}\n\tchain forward {\n\t\ttype filter hook forward priority filter; policy accept;\n\t\tip saddr @m_x counter drop\n\t}\n}\n";
    applier.apply(good).await.unwrap();
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&file).unwrap().permissions());
    assert_eq!(
        mode & 0o777,
        0o600,
        "the rules file is root's only, as the original's"
    );
    assert_eq!(
        applier.apply(good).await.unwrap(),
        lochness_firewall::apply::Applied::Unchanged
    );
    let listed = applier.list_table("mistify").await.unwrap().unwrap();
    assert!(listed.contains("10.78.0.1"), "{listed}");
    // Valid up to its last rule, which jumps to a chain that does not exist.
    let bad = good
        .replace(
            "\t\tip saddr @m_x counter drop\n",
            "\t\tip saddr @m_x counter drop\n\t\tjump nowhere\n",
        )
        .replace("10.78.0.1", "10.78.0.2");
    match applier.apply(&bad).await {
        Err(ApplyError::Check(msg)) => assert!(msg.contains("nowhere") || !msg.is_empty()),
        other => panic!("expected a refused check, got {other:?}"),
    }
    assert_eq!(
        applier.list_table("mistify").await.unwrap().unwrap(),
        listed
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), good);
    // Loaded without the check, the transaction fails as a whole.
    let bad_file = dir.path().join("bad.nft");
    std::fs::write(&bad_file, &bad).unwrap();
    assert!(lab
        .exec(&ns, "nft", &["-f", bad_file.to_str().unwrap()])
        .is_err());
    assert_eq!(
        applier.list_table("mistify").await.unwrap().unwrap(),
        listed
    );
    assert!(lab
        .exec(&ns, "nft", &["list", "table", "inet", "other"])
        .is_ok());
    // Only the rules file is left in the directory.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    // With bridge-nf-call-iptables off in the namespace, the check says so.
    lab.sysctl(&ns, "net.bridge.bridge-nf-call-iptables", "0")
        .unwrap();
    assert_eq!(applier.bridge_filtering().await, Ok(false));
}

/// With `bridge-nf-call-iptables` at 0 where the rules would apply, bridged traffic would
/// bypass them: nfirewalld refuses to start and says why; `--allow-unbridged` starts it.
#[tokio::test]
async fn refuses_to_start_when_bridged_traffic_would_bypass_the_rules() {
    if mistify_e2e::skipped("netns") || mistify_e2e::skipped("etcd") {
        return;
    }
    let dir = TempDir::new("lochness-fw-unbridged");
    let mut lab = NetLab::new("fwu");
    let ns = lab.netns("hv");
    lab.sysctl(&ns, "net.bridge.bridge-nf-call-iptables", "0")
        .unwrap();
    let etcd = Etcd::start("lochness-fw-etcd");
    let ctx = Context::new(&[etcd.url.as_str()], None).await.unwrap();
    let mut hv = ctx.new_hypervisor();
    hv.save().await.unwrap();
    let file = dir.path().join("mistify.nft");
    let port = free_port();
    let args = |extra: &[&str]| -> Vec<String> {
        let port = port.to_string();
        let mut v: Vec<String> = [
            "-k",
            &etcd.url,
            "-i",
            &hv.id,
            "-f",
            file.to_str().unwrap(),
            "--netns",
            &ns,
            "--http",
            &port,
            "--bind",
            "127.0.0.1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let out = Command::new(mistify_e2e::binary("nfirewalld"))
        .args(args(&[]))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("bridge-nf-call-iptables is 0"), "{stderr}");
    assert!(!file.exists(), "nothing was written");
    // Told to run anyway, it loads its table (and reports the bypass in its metrics).
    let fw = Firewall::start(
        &args(&["--allow-unbridged"]),
        dir.path().join("nfirewalld.log"),
        port,
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !fw.healthy().await {
        assert!(Instant::now() < deadline, "no ruleset: {}", fw.log_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(fw.metric("nfirewalld_bridge_filtering").await, 0.0);
    assert!(lab
        .exec(&ns, "nft", &["list", "table", "inet", "mistify"])
        .is_ok());
    // SIGTERM ends it cleanly; its table stays in force.
    let mut fw = fw;
    assert_eq!(
        fw.terminate(Duration::from_secs(10)),
        Some(0),
        "{}",
        fw.log_text()
    );
    assert!(lab
        .exec(&ns, "nft", &["list", "table", "inet", "mistify"])
        .is_ok());
}
