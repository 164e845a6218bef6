//! cdhcpd across etcd outages: after etcd comes back its watches resume from the last
//! revision they saw (changes made meanwhile arrive, no full read); when that revision
//! was compacted meanwhile, it reads everything again. cdhcpd is frozen (SIGSTOP) while
//! etcd restarts and changes, so the order of events is certain.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mistify_e2e::TempDir;

struct Etcd {
    child: Option<Child>,
    url: String,
    peer: String,
    dir: std::path::PathBuf,
}

impl Etcd {
    fn start(dir: &Path) -> Etcd {
        let mut e = Etcd {
            child: None,
            url: format!("http://127.0.0.1:{}", mistify_e2e::free_port()),
            peer: format!("http://127.0.0.1:{}", mistify_e2e::free_port()),
            dir: dir.join("etcd"),
        };
        e.run();
        e
    }

    fn run(&mut self) {
        let child = Command::new("etcd")
            .args(["--name", "default", "--data-dir"])
            .arg(&self.dir)
            .args([
                "--listen-client-urls",
                &self.url,
                "--advertise-client-urls",
                &self.url,
            ])
            .args([
                "--listen-peer-urls",
                &self.peer,
                "--initial-advertise-peer-urls",
                &self.peer,
            ])
            .args(["--initial-cluster", &format!("default={}", self.peer)])
            .args(["--log-level", "error"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd");
        self.child = Some(child);
        wait("etcd healthy", Duration::from_secs(30), || {
            mistify_e2e::stack::http_get(&format!("{}/health", self.url))
                .is_some_and(|(_, b)| b.contains("\"health\":\"true\""))
        });
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn ctl(&self, args: &[&str]) -> String {
        let out = Command::new("etcdctl")
            .args(["--endpoints", &self.url])
            .args(args)
            .output()
            .expect("etcdctl");
        assert!(
            out.status.success(),
            "etcdctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn revision(&self) -> i64 {
        let out = self.ctl(&["endpoint", "status", "-w", "json"]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v[0]["Status"]["header"]["revision"].as_i64().unwrap()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}

fn wait(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn signal(child: &Child, sig: &str) {
    Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
}

fn guest(n: u32) -> (String, String) {
    let id = format!("ffff00{n:02}-6666-4666-8666-0000000000{n:02}");
    let v = serde_json::json!({"id": id, "hypervisor": "aaaa0081-1111-4111-8111-000000000081",
        "subnet": "bbbb0081-2222-4222-8222-000000000081", "network": "cccc0081-3333-4333-8333-000000000081",
        "mac": format!("02:00:00:00:91:{n:02}"), "ip": format!("10.30.0.{}", 10 + n)});
    (format!("lochness/guests/{id}/metadata"), v.to_string())
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
fn watches_resume_after_an_outage_and_a_compacted_revision_reloads_everything() {
    let dir = TempDir::new("lochness-dhcp-resume");
    let mut etcd = Etcd::start(dir.path());
    let subnet = serde_json::json!({"id": "bbbb0081-2222-4222-8222-000000000081", "network": "cccc0081-3333-4333-8333-000000000081",
        "gateway": "10.30.0.1", "cidr": "10.30.0.0/24", "start": "10.30.0.10", "end": "10.30.0.50"});
    etcd.ctl(&[
        "put",
        "lochness/subnets/bbbb0081-2222-4222-8222-000000000081/metadata",
        &subnet.to_string(),
    ]);
    let (k1, v1) = guest(1);
    etcd.ctl(&["put", &k1, &v1]);
    let conf = dir.path().join("conf");
    std::fs::create_dir_all(&conf).unwrap();
    let port = mistify_e2e::free_port();
    let cdhcpd = Reaped(
        Command::new(env!("CARGO_BIN_EXE_cdhcpd"))
            .args(["-d", "lochness.test", "-k", &etcd.url, "-c"])
            .arg(&conf)
            .args([
                "--bind",
                "127.0.0.1",
                "--http",
                &port.to_string(),
                "--debounce",
                "20ms",
                "-l",
                "info",
            ])
            .spawn()
            .unwrap(),
    );
    let guests = conf.join("guests.conf");
    let has = |ip: &str| {
        std::fs::read_to_string(&guests)
            .unwrap_or_default()
            .contains(&format!("{ip};"))
    };
    let reloads = || {
        mistify_e2e::stack::http_get(&format!("http://127.0.0.1:{port}/metrics"))
            .and_then(|(_, b)| {
                b.lines()
                    .find(|l| l.starts_with("cdhcpd_model_reloads_total "))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            })
            .unwrap_or(0)
    };
    wait("the first guest", Duration::from_secs(20), || {
        has("10.30.0.11")
    });
    assert_eq!(reloads(), 1);

    // An outage: cdhcpd frozen, etcd restarted, a guest added meanwhile.
    signal(&cdhcpd.0, "-STOP");
    etcd.kill();
    etcd.run();
    let (k2, v2) = guest(2);
    etcd.ctl(&["put", &k2, &v2]);
    signal(&cdhcpd.0, "-CONT");
    wait(
        "the guest added during the outage",
        Duration::from_secs(20),
        || has("10.30.0.12"),
    );
    assert_eq!(reloads(), 1, "resumed from its revision, no full read");

    // Again, and this time the revisions cdhcpd has not seen are compacted away.
    signal(&cdhcpd.0, "-STOP");
    etcd.kill();
    etcd.run();
    let (k3, v3) = guest(3);
    etcd.ctl(&["put", &k3, &v3]);
    etcd.ctl(&["del", &k1]);
    let rev = etcd.revision();
    etcd.ctl(&["compact", &rev.to_string()]);
    signal(&cdhcpd.0, "-CONT");
    wait(
        "the full read after compaction",
        Duration::from_secs(20),
        || has("10.30.0.13") && !has("10.30.0.11") && has("10.30.0.12"),
    );
    wait("the reload counted", Duration::from_secs(5), || {
        reloads() == 2
    });
    drop(cdhcpd);
}
