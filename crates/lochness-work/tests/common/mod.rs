//! What the end-to-end tests of cplacerd and cworkerd start: a private etcd on free
//! loopback ports, agents (`mistify-agent` with `test-rpc-service` behind it) registered
//! as live hypervisors, and the daemons themselves as child processes with their logs in
//! the test's temporary directory. Everything is killed when dropped.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lochness::{Context, Job, Resources};
use mistify_e2e::{example, free_port, Daemon, TempDir};

/// A private etcd (killed on drop) in `dir`.
pub struct Etcd {
    child: Child,
    pub url: String,
}

impl Etcd {
    pub fn start(dir: &Path) -> Etcd {
        let (client, peer) = (free_port(), free_port());
        let url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let log = std::fs::File::create(dir.join("etcd.log")).expect("etcd log");
        let child = Command::new("etcd")
            .arg("--name")
            .arg("default")
            .arg("--data-dir")
            .arg(dir.join("etcd-data"))
            .args(["--listen-client-urls", &url])
            .args(["--advertise-client-urls", &url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("default={peer_url}")])
            .args(["--log-level", "error", "--logger", "zap"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("cannot start etcd");
        let etcd = Etcd { child, url };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let health = mistify_e2e::stack::http_get(&format!("{}/health", etcd.url));
            if health.is_some_and(|(_, body)| body.contains("\"health\":\"true\"")) {
                return etcd;
            }
            assert!(
                Instant::now() < deadline,
                "etcd at {} is not healthy",
                etcd.url
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The etcd process's id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One hypervisor's agent: `test-rpc-service` (answering after `delay_ms`) and
/// `mistify-agent` in front of it.
pub struct Agent {
    pub rpc: Daemon,
    pub agent: Daemon,
}

impl Agent {
    pub fn start(dir: &Path, name: &str, delay_ms: u64) -> Agent {
        Agent::start_with(dir, name, delay_ms, &[])
    }

    /// [`Agent::start`] with some of the agent's actions pointed at other methods of the
    /// test service (`("create", "Test.NoSuchMethod")`: every create fails).
    pub fn start_with(dir: &Path, name: &str, delay_ms: u64, methods: &[(&str, &str)]) -> Agent {
        let rpc_port = free_port();
        let rpc = Daemon::start(
            &example("test-rpc-service"),
            &[
                "--port".into(),
                rpc_port.to_string(),
                "--log-level".into(),
                "warn".into(),
                "--delay-ms".into(),
                delay_ms.to_string(),
            ],
            rpc_port,
        );
        let mut config = mistify_e2e::agent_test_rpc_config(rpc_port);
        // The recorded configuration has neither `start` nor `suspend`: the test service
        // answers them like any guest action.
        let stage =
            |method: &str| serde_json::json!({"stages": [{"service": "test", "method": method}]});
        config["actions"]["start"] = stage("Test.Run");
        config["actions"]["suspend"] = stage("Test.Shutdown");
        for (action, method) in methods {
            config["actions"][*action] = stage(method);
        }
        let file = dir.join(format!("agent-{name}.json"));
        std::fs::write(&file, config.to_string()).expect("agent config");
        let port = free_port();
        let args =
            mistify_e2e::agent_args(&file, &dir.join(format!("agent-{name}.redb")), port, "warn");
        let agent = Daemon::start(&mistify_e2e::binary("mistify-agent"), &args, port);
        Agent { rpc, agent }
    }

    pub fn port(&self) -> u16 {
        self.agent.port
    }

    pub fn client(&self) -> mistify_client::Client {
        mistify_client::Client::new(&self.agent.url()).expect("agent client")
    }
}

/// A cplacerd or cworkerd child process, its stderr in a log file (killed on drop).
pub struct Proc {
    pub program: &'static str,
    child: Option<Child>,
    pub log: PathBuf,
    pub port: u16,
}

impl Proc {
    /// Starts `program` (`cplacerd` or `cworkerd`) on `etcd` with its metrics on a free
    /// port, claims under a lease of 2 s (unless `extra` sets `--lease-ttl`), and `extra`
    /// flags; waits until it listens.
    pub fn start(program: &'static str, dir: &Path, etcd: &str, extra: &[&str]) -> Proc {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let log = dir.join(format!("{program}-{n}.log"));
        let out = std::fs::File::create(&log).expect("log");
        let port = free_port();
        let bin = match program {
            "cplacerd" => env!("CARGO_BIN_EXE_cplacerd"),
            _ => env!("CARGO_BIN_EXE_cworkerd"),
        };
        let child = Command::new(bin)
            .args([
                "-k",
                etcd,
                "--http",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .args(if extra.contains(&"--lease-ttl") {
                &[][..]
            } else {
                &["--lease-ttl", "2s"][..]
            })
            .args(["-l", "info,lochness=debug,lochness_work=debug"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
        let mut proc = Proc {
            program,
            child: Some(child),
            log,
            port,
        };
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        if let Err(e) = mistify_e2e::wait_for_port(addr, Duration::from_secs(30)) {
            let status = proc
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            panic!(
                "{program} did not start ({e}, {status:?}):\n{}",
                proc.output()
            );
        }
        proc
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `kill -9`.
    pub fn kill_hard(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then waits for the exit; its status.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut()?;
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill_hard();
    }
}

/// The registered figures of each test hypervisor.
pub const HV_RESOURCES: Resources = Resources {
    memory: 1 << 20,
    disk: 1 << 30,
    cpu: 1024,
};

/// A cluster in etcd: one network with one subnet (10.80.0.0/16), a small flavor, and a
/// live hypervisor per agent (127.0.0.1, its `agentPort`, the subnet on `br0`).
pub struct Cluster {
    pub ctx: Context,
    pub network: String,
    pub subnet: String,
    pub flavor: String,
    /// Hypervisor id → the agent's port.
    pub hypervisors: BTreeMap<String, u16>,
}

impl Cluster {
    pub async fn new(etcd: &str, agents: &[&Agent]) -> Cluster {
        Cluster::sized(etcd, agents, HV_RESOURCES).await
    }

    /// [`Cluster::new`] with hypervisors of `size` (total and reported available).
    pub async fn sized(etcd: &str, agents: &[&Agent], size: Resources) -> Cluster {
        let ctx = Context::new(&[etcd], None).await.expect("context");
        let mut network = ctx.new_network();
        network.save().await.expect("network");
        let mut subnet = ctx.new_subnet();
        subnet.cidr = Some(lochness::codec::parse_cidr("10.80.0.0/16").expect("cidr"));
        subnet.start_range = Some("10.80.0.10".parse().expect("ip"));
        subnet.end_range = Some("10.80.250.250".parse().expect("ip"));
        subnet.gateway = Some("10.80.0.1".parse().expect("ip"));
        subnet.save().await.expect("subnet");
        network
            .add_subnet(&mut subnet)
            .await
            .expect("network subnet");
        let mut flavor = ctx.new_flavor();
        flavor.image = "289120e4-ed12-431d-8d18-48f8a94bb05a".into();
        flavor.resources = Resources {
            memory: 64,
            disk: 16,
            cpu: 1,
        };
        flavor.save().await.expect("flavor");
        let mut hypervisors = BTreeMap::new();
        for agent in agents {
            let id = add_hypervisor_sized(&ctx, &subnet, agent.port(), size).await;
            hypervisors.insert(id, agent.port());
        }
        Cluster {
            ctx,
            network: network.id.clone(),
            subnet: subnet.id.clone(),
            flavor: flavor.id.clone(),
            hypervisors,
        }
    }

    /// A new guest of the cluster's flavor and network, with its select-hypervisor job.
    pub async fn create_guest(&self) -> (lochness::Guest, Job) {
        let mut guest = self.ctx.new_guest();
        guest.flavor = self.flavor.clone();
        guest.network = self.network.clone();
        guest.kind = "kvm".into();
        let job = self
            .ctx
            .create_guest_with_job(&mut guest)
            .await
            .expect("create guest");
        (guest, job)
    }

    /// The agent client of hypervisor `id`.
    pub fn agent_of(&self, hypervisor: &str) -> mistify_client::Client {
        let port = self.hypervisors[hypervisor];
        mistify_client::Client::new(&format!("http://127.0.0.1:{port}")).expect("client")
    }
}

/// A live hypervisor on 127.0.0.1 with agent port `port` and `subnet` on `br0`; its id.
pub async fn add_hypervisor(ctx: &Context, subnet: &lochness::Subnet, port: u16) -> String {
    add_hypervisor_sized(ctx, subnet, port, HV_RESOURCES).await
}

/// [`add_hypervisor`] with `size` as its total and reported available resources.
pub async fn add_hypervisor_sized(
    ctx: &Context,
    subnet: &lochness::Subnet,
    port: u16,
    size: Resources,
) -> String {
    let mut hv = ctx.new_hypervisor();
    hv.ip = Some("127.0.0.1".parse().expect("ip"));
    hv.netmask = Some("255.0.0.0".parse().expect("mask"));
    hv.total_resources = size;
    hv.available_resources = size;
    hv.save().await.expect("hypervisor");
    hv.set_config("agentPort", &port.to_string())
        .await
        .expect("agentPort");
    hv.add_subnet(subnet, "br0")
        .await
        .expect("hypervisor subnet");
    // Alive: a plain heartbeat key (no lease), as the wire fixtures seed it.
    ctx.client()
        .put(
            ctx.abs(&lochness::keys::hypervisor_heartbeat(&hv.id)),
            "alive",
            None,
        )
        .await
        .expect("heartbeat");
    hv.id.clone()
}

/// Waits until every job in `ids` is `done` or `error` (bounded by `timeout`); the
/// records, or the jobs still open (`<job> <action> <status> guest <guest>`).
pub async fn try_finished(
    ctx: &Context,
    ids: &[String],
    timeout: Duration,
) -> Result<Vec<Job>, Vec<String>> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut jobs = Vec::new();
        let mut open = Vec::new();
        for id in ids {
            let job = ctx.job(id).await.expect("job");
            if !job.status.is_final() {
                open.push(format!(
                    "{} {} {} guest {}",
                    job.id, job.action, job.status, job.guest
                ));
            }
            jobs.push(job);
        }
        if open.is_empty() {
            return Ok(jobs);
        }
        if Instant::now() >= deadline {
            return Err(open);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// [`try_finished`], panicking with `logs(open jobs)` when some are still open.
pub async fn finished(
    ctx: &Context,
    ids: &[String],
    timeout: Duration,
    logs: &dyn Fn(&[String]) -> String,
) -> Vec<Job> {
    match try_finished(ctx, ids, timeout).await {
        Ok(jobs) => jobs,
        Err(open) => panic!(
            "{} jobs not finished after {timeout:?}: {open:?}\n{}",
            open.len(),
            logs(&open)
        ),
    }
}

/// Every key under the relative `prefix`.
pub async fn keys(ctx: &Context, prefix: &str) -> Vec<String> {
    ctx.get_prefix(prefix)
        .await
        .expect("keys")
        .into_iter()
        .map(|kv| kv.key)
        .collect()
}

/// A fresh temporary directory (`mistify-work-*`, removed on drop).
pub fn tempdir(name: &str) -> TempDir {
    TempDir::new(&format!("work-{name}"))
}

/// The last lines of each process's log.
pub fn logs(procs: &[&Proc]) -> String {
    procs
        .iter()
        .map(|p| {
            format!(
                "--- {} ({})\n{}",
                p.program,
                p.log.display(),
                mistify_e2e::tail(&p.output(), 40)
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every line of the daemons' logs in `dir` that holds one of `needles`, by file.
pub fn grep_logs(dir: &Path, needles: &[String]) -> String {
    let mut out = String::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    let mut files: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    files.sort();
    for f in files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "log"))
    {
        let text = std::fs::read_to_string(f).unwrap_or_default();
        for line in text
            .lines()
            .filter(|l| needles.iter().any(|n| l.contains(n.as_str())))
        {
            out.push_str(&format!("{}: {line}\n", f.display()));
        }
    }
    out
}

/// Each hypervisor's `allocated` figure is exactly the flavors of the guests placed
/// there (never over its total), `free` is total − allocated, and placement left the
/// reported `available` figure alone. Returns the number of guests linked, summed.
pub async fn check_resources(ctx: &Context, cluster: &Cluster) -> usize {
    let flavor = ctx.flavor(&cluster.flavor).await.expect("flavor").resources;
    let mut placed = 0;
    for id in cluster.hypervisors.keys() {
        let hv = ctx.hypervisor(id).await.expect("hypervisor");
        let n = hv.guests().len();
        placed += n;
        let held = Resources {
            memory: flavor.memory * n as u64,
            disk: flavor.disk * n as u64,
            cpu: flavor.cpu * n as u32,
        };
        let figures = ctx.hypervisor_resources(id).await.expect("resources");
        assert_eq!(
            figures.allocated, held,
            "allocated on hypervisor {id} with {n} guests"
        );
        assert!(
            figures.total.covers(&figures.allocated),
            "hypervisor {id} over its total: {figures:?}"
        );
        assert_eq!(
            figures.free,
            figures.total.saturating_sub(&held),
            "{figures:?}"
        );
        assert_eq!(
            figures.available, figures.total,
            "placement changed the reported figure"
        );
    }
    placed
}

/// The tails of the daemons' logs, then every line of the logs in `dir` naming a job or
/// guest of `open` (entries as [`finished`] lists them: the job id first, the guest id
/// last).
pub fn story(procs: &[&Proc], dir: &Path, open: &[String]) -> String {
    let needles: Vec<String> = open
        .iter()
        .flat_map(|o| {
            let words: Vec<&str> = o.split_whitespace().collect();
            [words.first(), words.last()]
                .into_iter()
                .flatten()
                .map(|w| w.to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    format!(
        "{}\n--- lines naming the open jobs\n{}",
        logs(procs),
        grep_logs(dir, &needles)
    )
}

/// A 3-member etcd cluster on loopback (each member killed on drop), its data and logs
/// in `dir`.
pub struct EtcdCluster {
    members: Vec<Option<Child>>,
    /// Each member's client URL.
    pub urls: Vec<String>,
}

impl EtcdCluster {
    pub fn start(dir: &Path) -> EtcdCluster {
        let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
        let initial = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut members = Vec::new();
        let mut urls = Vec::new();
        for (i, (client, peer)) in ports.iter().enumerate() {
            let url = format!("http://127.0.0.1:{client}");
            let peer_url = format!("http://127.0.0.1:{peer}");
            let log = std::fs::File::create(dir.join(format!("etcd-m{i}.log"))).expect("etcd log");
            let child = Command::new("etcd")
                .arg("--name")
                .arg(format!("m{i}"))
                .arg("--data-dir")
                .arg(dir.join(format!("etcd-m{i}")))
                .args(["--listen-client-urls", &url])
                .args(["--advertise-client-urls", &url])
                .args(["--listen-peer-urls", &peer_url])
                .args(["--initial-advertise-peer-urls", &peer_url])
                .args(["--initial-cluster", &initial])
                .args(["--initial-cluster-state", "new"])
                .args(["--initial-cluster-token", "lochness-faults"])
                .args(["--log-level", "error", "--logger", "zap"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("cannot start etcd");
            members.push(Some(child));
            urls.push(url);
        }
        let cluster = EtcdCluster { members, urls };
        let deadline = Instant::now() + Duration::from_secs(60);
        for url in &cluster.urls {
            loop {
                let health = mistify_e2e::stack::http_get(&format!("{url}/health"));
                if health.is_some_and(|(_, body)| body.contains("\"health\":\"true\"")) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "etcd member {url} is not healthy"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        cluster
    }

    /// Every member's client URL, comma-separated (as `--etcd` takes them).
    pub fn endpoints(&self) -> String {
        self.urls.join(",")
    }

    /// The index of the member that is the leader now, as the live members see it
    /// (`/v3/maintenance/status`: the member whose id is the leader's).
    pub async fn leader(&self) -> Option<usize> {
        let http = reqwest::Client::new();
        for (i, url) in self.urls.iter().enumerate() {
            if self.members[i].is_none() {
                continue;
            }
            let Ok(resp) = http
                .post(format!("{url}/v3/maintenance/status"))
                .body("{}")
                .send()
                .await
            else {
                continue;
            };
            let Ok(status) = resp.json::<serde_json::Value>().await else {
                continue;
            };
            let (member, leader) = (&status["header"]["member_id"], &status["leader"]);
            if !leader.is_null() && member == leader {
                return Some(i);
            }
        }
        None
    }

    /// `kill -9` member `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}

/// Every job record in etcd.
pub async fn all_jobs(ctx: &Context) -> Vec<Job> {
    let mut jobs = Vec::new();
    for kv in ctx.get_prefix(lochness::keys::JOBS).await.expect("jobs") {
        let id = kv.key.trim_start_matches(lochness::keys::JOBS);
        jobs.push(ctx.job(id).await.expect("job"));
    }
    jobs
}

/// What etcd and the agents hold agrees, whatever jobs ran: each guest linked to the one
/// hypervisor it names, the subnet's reservations exactly the guests' addresses (each
/// once, to its guest), each hypervisor's `allocated` exactly its guests' flavors, and
/// each agent holding exactly the guests placed on its hypervisor (so no guest has a
/// domain on two agents, and no deleted guest is left on one). The guests, by id.
pub async fn check_consistent(
    cluster: &Cluster,
    agents: &[&Agent],
) -> BTreeMap<String, lochness::Guest> {
    let ctx = &cluster.ctx;
    let guests: BTreeMap<String, lochness::Guest> = ctx
        .guests()
        .await
        .expect("guests")
        .into_iter()
        .map(|g| (g.id.clone(), g))
        .collect();
    let mut links: BTreeMap<String, String> = BTreeMap::new();
    for id in cluster.hypervisors.keys() {
        let hv = ctx.hypervisor(id).await.expect("hypervisor");
        for g in hv.guests() {
            assert!(
                links.insert(g.clone(), id.clone()).is_none(),
                "guest {g} is linked to two hypervisors"
            );
        }
    }
    let placed: BTreeMap<String, String> = guests
        .values()
        .filter(|g| !g.hypervisor.is_empty())
        .map(|g| (g.id.clone(), g.hypervisor.clone()))
        .collect();
    assert_eq!(links, placed, "hypervisor links are the guests' placements");
    let reserved = ctx
        .subnet(&cluster.subnet)
        .await
        .expect("subnet")
        .addresses();
    let held: BTreeMap<String, String> = guests
        .values()
        .filter_map(|g| Some((g.ip?.to_string(), g.id.clone())))
        .collect();
    let with_ip = guests.values().filter(|g| g.ip.is_some()).count();
    assert_eq!(held.len(), with_ip, "two guests hold one address");
    assert_eq!(reserved, held, "the reservations are the guests' addresses");
    check_resources(ctx, cluster).await;
    let mut seen: BTreeMap<String, u16> = BTreeMap::new();
    for agent in agents {
        let port = agent.port();
        let on_agent: std::collections::BTreeSet<String> = agent
            .client()
            .list_guests()
            .await
            .expect("guests")
            .into_iter()
            .map(|g| g.id)
            .collect();
        for g in &on_agent {
            if let Some(other) = seen.insert(g.clone(), port) {
                panic!("guest {g} has a domain on the agents on ports {other} and {port}");
            }
        }
        let expected: std::collections::BTreeSet<String> = guests
            .values()
            .filter(|g| cluster.hypervisors.get(&g.hypervisor) == Some(&port))
            .map(|g| g.id.clone())
            .collect();
        assert_eq!(on_agent, expected, "guests on the agent on port {port}");
    }
    guests
}
