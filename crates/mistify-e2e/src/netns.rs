//! Network namespaces, veth pairs and bridges for the network-service tests (DHCP,
//! firewall), built with `ip` and torn down when the [`NetLab`] is dropped.
//!
//! Everything a lab creates carries its own short prefix (namespace and interface names
//! are global and interface names are limited to 15 characters), so parallel tests never
//! collide. Teardown order matters on Linux: the processes running inside a namespace keep
//! it (and its veth peers) alive, so a drop first kills and waits the lab's children and
//! any process left in its namespaces, then deletes the veths it made (which removes both
//! ends synchronously), then the namespaces.
//!
//! Needs root and `ip` (iproute2). Traffic stays inside the lab's namespaces. Tests
//! using it return early under `MISTIFY_SKIP=netns` ([`crate::skipped`]).

use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static LABS: AtomicU32 = AtomicU32::new(0);

/// A set of namespaces, links and processes owned by one test.
pub struct NetLab {
    prefix: String,
    namespaces: Vec<String>,
    /// Links this lab created, as (namespace, name): deleted first on drop.
    links: Vec<(Option<String>, String)>,
    children: Vec<Child>,
}

/// Runs `ip ARGS`, returning its stdout, or an error naming the command and its stderr.
pub fn ip(args: &[&str]) -> Result<String, String> {
    run(Command::new("ip").args(args))
}

fn run(cmd: &mut Command) -> Result<String, String> {
    let shown = format!("{cmd:?}");
    let out: Output = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{shown}: cannot run: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{shown}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl NetLab {
    /// A new, empty lab. `tag` (at most 3 characters are used) names the test in the
    /// prefix, which also holds the process id and a per-process counter.
    /// Panics with a clear message when not root or `ip` is missing.
    pub fn new(tag: &str) -> NetLab {
        let uid = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("Uid:"))
                    .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
            })
            .unwrap_or_default();
        assert_eq!(
            uid, "0",
            "network namespace tests need root (ip netns); run `make test` as root"
        );
        ip(&["-V"]).expect("`ip` (iproute2) is missing: run scripts/install-deps.sh");
        let n = LABS.fetch_add(1, Ordering::Relaxed);
        let tag: String = tag
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(3)
            .collect();
        let prefix = format!("{tag}{:x}{n:x}", std::process::id() % 0xfff);
        NetLab {
            prefix,
            namespaces: Vec::new(),
            links: Vec::new(),
            children: Vec::new(),
        }
    }

    /// The lab's prefix (at most 3 + 3 + a few characters): combine it with short suffixes
    /// for names that must stay under 15 characters.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The full name of the lab's namespace or interface `short`.
    pub fn name(&self, short: &str) -> String {
        let name = format!("{}{short}", self.prefix);
        assert!(
            name.len() <= 15,
            "interface/namespace name {name} is over 15 characters: use a shorter suffix"
        );
        name
    }

    /// Creates the namespace `short` (full name [`NetLab::name`]) with its loopback up.
    pub fn netns(&mut self, short: &str) -> String {
        let ns = self.name(short);
        ip(&["netns", "add", &ns]).unwrap_or_else(|e| panic!("{e}"));
        self.namespaces.push(ns.clone());
        self.ns_ip(&ns, &["link", "set", "lo", "up"]);
        ns
    }

    /// Runs `ip -n NS ARGS`, panicking with the error.
    pub fn ns_ip(&self, ns: &str, args: &[&str]) -> String {
        let mut all = vec!["-n", ns];
        all.extend_from_slice(args);
        ip(&all).unwrap_or_else(|e| panic!("{e}"))
    }

    /// A veth pair: end `a` in namespace `a_ns`, end `b` in `b_ns` (names are full names
    /// from [`NetLab::name`]); both ends up. Addresses are the caller's business.
    pub fn veth(&mut self, a_ns: &str, a: &str, b_ns: &str, b: &str) {
        ip(&["link", "add", a, "type", "veth", "peer", "name", b])
            .unwrap_or_else(|e| panic!("{e}"));
        self.links.push((None, a.to_string()));
        ip(&["link", "set", a, "netns", a_ns]).unwrap_or_else(|e| panic!("{e}"));
        ip(&["link", "set", b, "netns", b_ns]).unwrap_or_else(|e| panic!("{e}"));
        if let Some(last) = self.links.last_mut() {
            last.0 = Some(a_ns.to_string());
        }
        self.ns_ip(a_ns, &["link", "set", a, "up"]);
        self.ns_ip(b_ns, &["link", "set", b, "up"]);
    }

    /// A bridge `name` in namespace `ns`, up.
    pub fn bridge(&mut self, ns: &str, name: &str) {
        self.ns_ip(ns, &["link", "add", name, "type", "bridge"]);
        self.links.push((Some(ns.to_string()), name.to_string()));
        self.ns_ip(ns, &["link", "set", name, "up"]);
    }

    /// Puts interface `port` of namespace `ns` on bridge `bridge` there.
    pub fn enslave(&self, ns: &str, port: &str, bridge: &str) {
        self.ns_ip(ns, &["link", "set", port, "master", bridge]);
    }

    /// `ip -n NS addr add CIDR dev DEV`.
    pub fn addr(&self, ns: &str, dev: &str, cidr: &str) {
        self.ns_ip(ns, &["addr", "add", cidr, "dev", dev]);
    }

    /// A command that runs `program` inside namespace `ns` (`ip netns exec`).
    pub fn command(&self, ns: &str, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns, program]);
        cmd
    }

    /// Runs `program ARGS` in `ns` to completion: its output, or an error with its stderr.
    pub fn exec(&self, ns: &str, program: &str, args: &[&str]) -> Result<String, String> {
        run(self.command(ns, program).args(args))
    }

    /// Sets the sysctl `key` (dotted, e.g. `net.bridge.bridge-nf-call-iptables`) of
    /// namespace `ns` to `value`. It writes through a procfs mounted privately for the
    /// write, so it works where `/proc/sys` is mounted read-only (a container, a build
    /// root) — network sysctls belong to the namespace, not to the mount.
    pub fn sysctl(&self, ns: &str, key: &str, value: &str) -> Result<(), String> {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        let script = format!("mount -t proc proc /proc && echo {value} > {path}");
        self.exec(ns, "unshare", &["-m", "sh", "-c", &script])
            .map(|_| ())
    }

    /// Starts `cmd` and keeps it: killed and waited when the lab is dropped (or earlier
    /// with [`NetLab::stop`]). Returns its pid.
    pub fn spawn(&mut self, cmd: &mut Command) -> u32 {
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let pid = child.id();
        self.children.push(child);
        pid
    }

    /// Kills (SIGKILL) and waits the lab's child `pid`; true when it was one.
    pub fn stop(&mut self, pid: u32) -> bool {
        match self.children.iter().position(|c| c.id() == pid) {
            Some(i) => {
                let mut child = self.children.remove(i);
                let _ = child.kill();
                let _ = child.wait();
                true
            }
            None => false,
        }
    }

    /// The pids of processes running in namespace `ns` (`ip netns pids`).
    pub fn pids(&self, ns: &str) -> Vec<u32> {
        ip(&["netns", "pids", ns])
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }
}

impl Drop for NetLab {
    fn drop(&mut self) {
        for mut child in self.children.drain(..) {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Processes the children left in the namespaces (a daemonised client, say).
        for ns in &self.namespaces {
            for pid in self.pids(ns) {
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for ns in &self.namespaces {
            while !self.pids(ns).is_empty() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        for (ns, link) in self.links.iter().rev() {
            let _ = match ns {
                Some(ns) => ip(&["-n", ns, "link", "del", link]),
                None => ip(&["link", "del", link]),
            };
        }
        for ns in self.namespaces.iter().rev() {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_prefix_and_stay_short() {
        let lab = NetLab {
            prefix: "fw1a2".into(),
            namespaces: Vec::new(),
            links: Vec::new(),
            children: Vec::new(),
        };
        assert_eq!(lab.name("hv"), "fw1a2hv");
        assert!(std::panic::catch_unwind(|| lab.name("0123456789ab")).is_err());
    }
}
