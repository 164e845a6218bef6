//! How cdhcpd handles a Kea that refuses: the real cdhcpd binary against a scripted Kea
//! control socket (a unix socket served by the test, speaking Kea's one-command-per-
//! connection JSON protocol) that refuses the first `config-test` and the first
//! `config-set`. A refused test sets nothing; a failed set is followed at once by the
//! configuration Kea ran before; both are counted; the next check applies the
//! reservations; the operator's settings are sent back untouched.

use std::io::{Read as _, Write as _};
use std::os::unix::net::UnixListener;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mistify_e2e::etcd::Etcd;
use mistify_e2e::TempDir;
use serde_json::{json, Value};

#[derive(Default)]
struct FakeKea {
    config: Value,
    fail_test: u32,
    fail_set: u32,
    /// (command, its Dhcp4 argument) in order.
    log: Vec<(String, Value)>,
}

fn serve(listener: UnixListener, kea: Arc<Mutex<FakeKea>>) {
    for conn in listener.incoming() {
        let Ok(mut conn) = conn else { return };
        // Kea reads one JSON command; the client does not half-close, so read until the
        // text parses.
        let mut buf = Vec::new();
        let mut chunk = [0u8; 65536];
        let req: Value = loop {
            let n = conn.read(&mut chunk).unwrap_or(0);
            if n == 0 {
                break Value::Null;
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Ok(v) = serde_json::from_slice(&buf) {
                break v;
            }
        };
        let command = req["command"].as_str().unwrap_or("").to_string();
        let dhcp4 = req["arguments"]["Dhcp4"].clone();
        let answer = {
            let mut k = kea.lock().unwrap();
            k.log.push((command.clone(), dhcp4.clone()));
            match command.as_str() {
                "config-get" => {
                    json!({"result": 0, "arguments": {"Dhcp4": k.config, "hash": "ABC"}})
                }
                "config-test" if k.fail_test > 0 => {
                    k.fail_test -= 1;
                    json!({"result": 1, "text": "scripted refusal"})
                }
                "config-test" => json!({"result": 0, "text": "Configuration seems sane."}),
                "config-set" if k.fail_set > 0 => {
                    k.fail_set -= 1;
                    json!({"result": 1, "text": "scripted set failure"})
                }
                "config-set" => {
                    k.config = dhcp4;
                    json!({"result": 0, "text": "Configuration successful."})
                }
                _ => json!({"result": 2, "text": "unknown command"}),
            }
        };
        let _ = conn.write_all(answer.to_string().as_bytes());
    }
}

fn owned(dhcp4: &Value) -> usize {
    dhcp4["subnet4"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|s| s["user-context"]["cdhcpd"].is_object())
                .count()
        })
        .unwrap_or(0)
}

/// A child killed and reaped when the test ends, also when it fails.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_refused_test_sets_nothing_and_a_failed_set_restores_the_previous_configuration() {
    let etcd = Etcd::start("lochness-dhcp-keafail");
    let put = |k: &str, v: &Value| {
        let out = Command::new("etcdctl")
            .args(["--endpoints", &etcd.url, "put", k, &v.to_string()])
            .output()
            .unwrap();
        assert!(out.status.success());
    };
    let sid = "bbbb0081-2222-4222-8222-000000000081";
    put(
        &format!("lochness/subnets/{sid}/metadata"),
        &json!({"id": sid, "gateway": "10.30.0.1", "cidr": "10.30.0.0/24", "start": "10.30.0.10", "end": "10.30.0.50"}),
    );
    let gid = "ffff0081-6666-4666-8666-000000000081";
    put(
        &format!("lochness/guests/{gid}/metadata"),
        &json!({"id": gid, "hypervisor": "aaaa0081-1111-4111-8111-000000000081", "subnet": sid,
                "mac": "02:00:00:00:81:01", "ip": "10.30.0.10"}),
    );

    let dir = TempDir::new("lochness-dhcp-keafail");
    let sock = dir.path().join("kea.sock");
    let operator = json!({
        "interfaces-config": {"interfaces": ["eth9"]},
        "control-socket": {"socket-type": "unix", "socket-name": sock},
        "lease-database": {"type": "memfile", "persist": false},
        "subnet4": [{"id": 7, "subnet": "192.0.2.0/24", "pools": [{"pool": "192.0.2.10 - 192.0.2.20"}]}],
        "client-classes": [{"name": "operators", "test": "option[60].text == 'x'"}],
    });
    let kea = Arc::new(Mutex::new(FakeKea {
        config: operator.clone(),
        fail_test: 1,
        fail_set: 1,
        ..FakeKea::default()
    }));
    let listener = UnixListener::bind(&sock).unwrap();
    {
        let kea = kea.clone();
        std::thread::spawn(move || serve(listener, kea));
    }
    let port = mistify_e2e::free_port();
    let cdhcpd = Reaped(
        Command::new(env!("CARGO_BIN_EXE_cdhcpd"))
            .args(["-d", "lochness.test", "-k", &etcd.url, "--kea-socket"])
            .arg(&sock)
            .args([
                "--kea-check-interval",
                "200ms",
                "--bind",
                "127.0.0.1",
                "--http",
                &port.to_string(),
            ])
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while owned(&kea.lock().unwrap().config) == 0 {
        assert!(
            Instant::now() < deadline,
            "never applied: {:?}",
            kea.lock().unwrap().log
        );
        std::thread::sleep(Duration::from_millis(25));
    }
    let metrics = mistify_e2e::stack::http_get(&format!("http://127.0.0.1:{port}/metrics"))
        .unwrap()
        .1;
    drop(cdhcpd);

    let k = kea.lock().unwrap();
    let commands: Vec<&str> = k.log.iter().map(|(c, _)| c.as_str()).collect();
    // Refused test: nothing set. Failed set: the previous configuration set again at
    // once. Then a clean round.
    assert_eq!(
        commands[..9],
        [
            "config-get",
            "config-test",
            "config-get",
            "config-test",
            "config-set",
            "config-set",
            "config-get",
            "config-test",
            "config-set"
        ],
        "{commands:?}"
    );
    assert_eq!(
        owned(&k.log[4].1),
        1,
        "the failed set carried the reservations"
    );
    assert_eq!(
        k.log[5].1, operator,
        "the restore is the configuration Kea ran before, untouched"
    );
    // The applied configuration: the operator's settings, subnet and class kept; ours added.
    let applied = &k.config;
    for key in ["interfaces-config", "control-socket", "lease-database"] {
        assert_eq!(applied[key], operator[key], "{key}");
    }
    assert!(applied.get("hash").is_none());
    let subnets = applied["subnet4"].as_array().unwrap();
    assert_eq!(subnets[0], operator["subnet4"][0]);
    let ours = &subnets[1];
    assert_eq!(
        ours["id"], 0xbbbb_0081_u32,
        "the subnet id is the first 32 bits of its UUID"
    );
    assert_eq!(ours["subnet"], "10.30.0.0/24");
    assert_eq!(ours["pools"], json!([]));
    assert_eq!(
        ours["option-data"],
        json!([{"name": "routers", "data": "10.30.0.1"}, {"name": "subnet-mask", "data": "255.255.255.0"}])
    );
    assert_eq!(
        ours["reservations"],
        json!([{"hw-address": "02:00:00:00:81:01", "ip-address": "10.30.0.10", "hostname": gid,
                "option-data": [{"name": "domain-name", "data": "guests.lochness.test"}]}])
    );
    assert_eq!(
        applied["client-classes"], operator["client-classes"],
        "no hypervisors: no classes of ours"
    );
    assert!(
        metrics.contains("cdhcpd_kea_failures_total{stage=\"test\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("cdhcpd_kea_failures_total{stage=\"set\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("cdhcpd_kea_applies_total 1"), "{metrics}");
    assert!(
        metrics.contains("cdhcpd_reservations{kind=\"guest\"} 1"),
        "{metrics}"
    );
}
