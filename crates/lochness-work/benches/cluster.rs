//! Figures of the control plane. Not a test: it prints, it asserts nothing about speed.
//! Real etcd, real `cguestd`, `cplacerd` and `cworkerd` processes, real agents
//! (`mistify-agent` with `test-rpc-service` behind them). Run with
//!
//! ```text
//! cargo build --release --workspace --bins --examples
//! cargo bench -p lochness-work --bench cluster
//! ```
//!
//! (the bench runs no build of its own: it takes `cguestd`, `mistify-agent` and
//! `test-rpc-service` from the release directory).
//!
//! 1. Latency: `POST /guests` → its job `done` (placed, then created on the agent), over
//!    `BENCH_SEQUENTIAL` (50) creates one after the other, 2 hypervisors, 1 placer,
//!    1 worker: p50, p99, max.
//! 2. Throughput: `BENCH_GUESTS` (500) creates posted at once (32 in flight) over
//!    `BENCH_HYPERVISORS` (20) hypervisors, `BENCH_PLACERS` (4) placers and
//!    `BENCH_WORKERS` (8) workers: guests done per second from the first POST to the last
//!    job's end, jobs left open or in error, guests on two agents.
//! 3. Scale (`BENCH_SCALE=1`, the default; `0` skips it): `BENCH_SCALE_HVS` (1,000)
//!    hypervisors and `BENCH_SCALE_GUESTS` (100,000) guests written through the lochness
//!    library into a private etcd (how long that took, and the rate of plain
//!    `Guest::save`s against batched transactions); then against a real `cguestd`:
//!    `GET /guests?limit=1000` over every page, `GET /guests/{id}` for 1,000 random ids;
//!    three rounds of `BENCH_SCALE_JOBS` (2,000) `select-hypervisor` jobs placed by
//!    `cplacerd`s (no worker): one placer with `--batch 1` (each placement its own
//!    transaction), one placer with group commit (the default), `BENCH_SCALE_PLACERS`
//!    (4) placers with the default: placements per second, read from a watch on the
//!    placers' queue, and etcd's requests per placement; the RSS of `cguestd` and of
//!    each placer.
//!
//! `BENCH_SEQUENTIAL=0` or `BENCH_GUESTS=0` skip parts 1 and 2.
//!
//! When a job ends is read from an etcd watch on the jobs (started before the first
//! POST), so waiting adds no load of its own.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Agent, Cluster, Etcd, Proc};
use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use futures::StreamExt;
use lochness::{keys, ChangeKind, Context, Job, JobStatus, Resources};
use lochness_client::{Client, Endpoints, ListQuery};
use mistify_e2e::{free_port, Daemon, TempDir};
use rand::seq::IndexedRandom;

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// `--concurrency N` when the variable `name` is set (else the daemon's default).
fn concurrency(name: &str) -> Vec<&'static str> {
    match std::env::var(name).ok().filter(|v| !v.is_empty()) {
        Some(n) => vec!["--concurrency", Box::leak(n.into_boxed_str())],
        None => Vec::new(),
    }
}

fn subdir(root: &Path, name: &str) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).expect("bench dir");
    dir
}

/// `cguestd` on a free port against `etcd`.
fn cguestd(etcd: &str) -> Daemon {
    let port = free_port();
    Daemon::start(
        &mistify_e2e::binary("cguestd"),
        &[
            "--etcd".into(),
            etcd.into(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--port".into(),
            port.to_string(),
            "--log-level".into(),
            "warn".into(),
        ],
        port,
    )
}

fn client(guests: &Daemon) -> Client {
    Client::new(&Endpoints {
        guests: guests.url(),
        ..Endpoints::default()
    })
    .expect("client")
    .with_timeout(Duration::from_secs(120))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `p50 … ms, p99 … ms, max … ms` of `times` (sorted here).
fn summary(times: &mut [Duration]) -> String {
    times.sort();
    format!(
        "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        ms(percentile(times, 0.5)),
        ms(percentile(times, 0.99)),
        ms(times.last().copied().unwrap_or_default()),
    )
}

/// `VmHWM` (peak) and `VmRSS` (now) of process `pid`, in MiB.
fn rss(pid: u32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| -> f64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .map_or(f64::NAN, |kib| kib / 1024.0)
    };
    format!(
        "peak (VmHWM) {:.1} MiB, now (VmRSS) {:.1} MiB",
        field("VmHWM:"),
        field("VmRSS:")
    )
}

/// CPU time (user + system) process `pid` used so far, in seconds.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // After the command's `(name)`: state is the first field, utime the 12th, stime the 13th.
    let fields: Vec<u64> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .unwrap_or_default()
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    // SAFETY: sysconf has no preconditions.
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    fields.iter().sum::<u64>() as f64 / tick
}

/// `(placed, mean seconds per select-hypervisor step)` from a placer's `GET /metrics`.
async fn placer_figures(placer: &Proc) -> (f64, f64) {
    let reply = reqwest::Client::new()
        .get(format!("{}/metrics", placer.url()))
        .header("accept", "text/plain")
        .send()
        .await;
    let text = match reply {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    let value = |prefix: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    };
    let placed = value(r#"lochness_jobs_total{action="select-hypervisor",outcome="placed"}"#);
    let sum = value(r#"lochness_step_duration_seconds_sum{action="select-hypervisor"}"#);
    let count = value(r#"lochness_step_duration_seconds_count{action="select-hypervisor"}"#);
    (placed, if count > 0.0 { sum / count } else { 0.0 })
}

/// When each job reached `done` or `error`, from a watch on the job records.
struct JobWatch {
    ended: Arc<Mutex<HashMap<String, (Instant, JobStatus)>>>,
    changed: tokio::sync::watch::Receiver<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for JobWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl JobWatch {
    async fn start(ctx: &Context) -> JobWatch {
        let mut watch = ctx.watch(keys::JOBS, 0).await.expect("watch the jobs");
        let ended: Arc<Mutex<HashMap<String, (Instant, JobStatus)>>> = Arc::default();
        let (tx, changed) = tokio::sync::watch::channel(0u64);
        let map = ended.clone();
        let task = tokio::spawn(async move {
            while let Some(Ok(e)) = watch.next().await {
                let at = Instant::now();
                if e.kind == ChangeKind::Delete {
                    continue;
                }
                let Ok(job) = Job::from_stored(&e.id, &e.value, e.revision) else {
                    continue;
                };
                if job.status.is_final() {
                    map.lock()
                        .expect("lock")
                        .entry(job.id)
                        .or_insert((at, job.status));
                    tx.send_modify(|n| *n += 1);
                }
            }
        });
        JobWatch {
            ended,
            changed,
            task,
        }
    }

    fn get(&self, id: &str) -> Option<(Instant, JobStatus)> {
        self.ended.lock().expect("lock").get(id).copied()
    }

    /// Waits until job `id` ended (`None` after `timeout`).
    async fn wait(&self, id: &str, timeout: Duration) -> Option<(Instant, JobStatus)> {
        let mut rx = self.changed.clone();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            rx.borrow_and_update();
            if let Some(end) = self.get(id) {
                return Some(end);
            }
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                return None;
            }
        }
    }

    /// Waits until every job of `ids` ended, or until none ended for `stall`.
    async fn wait_all(&self, ids: &[String], stall: Duration) {
        let mut rx = self.changed.clone();
        loop {
            rx.borrow_and_update();
            let open = {
                let map = self.ended.lock().expect("lock");
                ids.iter().filter(|id| !map.contains_key(*id)).count()
            };
            if open == 0 || tokio::time::timeout(stall, rx.changed()).await.is_err() {
                return;
            }
        }
    }
}

/// A guest body of `cluster`'s flavor and network.
fn guest_body(cluster: &Cluster) -> serde_json::Value {
    serde_json::json!({"flavor": cluster.flavor, "network": cluster.network, "type": "kvm"})
}

/// The guests placed on more than one hypervisor, from the hypervisors' guest links.
async fn doubly_linked(ctx: &Context) -> (usize, usize) {
    let mut links: HashMap<String, usize> = HashMap::new();
    for kv in ctx.get_prefix(keys::HYPERVISORS).await.expect("links") {
        let Some(rest) = kv.key.strip_prefix(keys::HYPERVISORS) else {
            continue;
        };
        let (_, tail) = keys::split_id(rest);
        if let Some(guest) = tail.strip_prefix(keys::GUESTS_DIR) {
            *links.entry(guest.to_string()).or_default() += 1;
        }
    }
    let doubles = links.values().filter(|n| **n > 1).count();
    (links.len(), doubles)
}

async fn latency(dir: &Path) {
    let n = env_num("BENCH_SEQUENTIAL", 50);
    if n == 0 {
        return;
    }
    let etcd = Etcd::start(dir);
    let agents: Vec<Agent> = (0..2)
        .map(|i| Agent::start(dir, &format!("lat{i}"), 0))
        .collect();
    let refs: Vec<&Agent> = agents.iter().collect();
    let cluster = Cluster::new(&etcd.url, &refs).await;
    let _placer = Proc::start("cplacerd", dir, &etcd.url, &[]);
    let _worker = Proc::start("cworkerd", dir, &etcd.url, &[]);
    let api = cguestd(&etcd.url);
    let client = client(&api);
    let jobs = JobWatch::start(&cluster.ctx).await;
    let body = guest_body(&cluster);
    // Two creates first, off the figures (connections, each agent's first image fetch).
    for _ in 0..2 {
        let job = client.create_guest(&body).await.expect("POST /guests").id;
        jobs.wait(&job, Duration::from_secs(120)).await;
    }
    let mut times = Vec::with_capacity(n);
    let mut failed = 0;
    for _ in 0..n {
        let start = Instant::now();
        let job = client.create_guest(&body).await.expect("POST /guests").id;
        match jobs.wait(&job, Duration::from_secs(120)).await {
            Some((end, status)) => {
                if status != JobStatus::Done {
                    failed += 1;
                }
                times.push(end - start);
            }
            None => {
                failed += 1;
                times.push(start.elapsed());
            }
        }
    }
    println!(
        "latency: POST /guests -> job done, {n} sequential creates, 2 hypervisors, 1 placer, \
         1 worker: {}; not done {failed}",
        summary(&mut times),
    );
}

async fn throughput(dir: &Path) {
    let guests = env_num("BENCH_GUESTS", 500);
    if guests == 0 {
        return;
    }
    let hvs = env_num("BENCH_HYPERVISORS", 20);
    let placers = env_num("BENCH_PLACERS", 4);
    let workers = env_num("BENCH_WORKERS", 8);
    let etcd = Etcd::start(dir);
    let agents: Vec<Agent> = (0..hvs)
        .map(|i| Agent::start(dir, &format!("tp{i}"), 0))
        .collect();
    let refs: Vec<&Agent> = agents.iter().collect();
    let cluster = Cluster::new(&etcd.url, &refs).await;
    let placer_procs: Vec<Proc> = (0..placers)
        .map(|_| {
            Proc::start(
                "cplacerd",
                dir,
                &etcd.url,
                &concurrency("BENCH_PLACER_CONCURRENCY"),
            )
        })
        .collect();
    let worker_procs: Vec<Proc> = (0..workers)
        .map(|_| {
            Proc::start(
                "cworkerd",
                dir,
                &etcd.url,
                &concurrency("BENCH_WORKER_CONCURRENCY"),
            )
        })
        .collect();
    let api = cguestd(&etcd.url);
    // CPU seconds by kind of process, before and after the run.
    let cpu_by_kind = || {
        let sum = |pids: &[u32]| pids.iter().map(|p| cpu_secs(*p)).sum::<f64>();
        let procs = |ps: &[Proc]| ps.iter().filter_map(Proc::pid).collect::<Vec<u32>>();
        [
            ("etcd", sum(&[etcd.pid()])),
            ("cguestd", sum(&[api.pid()])),
            ("cplacerd", sum(&procs(&placer_procs))),
            ("cworkerd", sum(&procs(&worker_procs))),
            (
                "mistify-agent",
                sum(&agents.iter().map(|a| a.agent.pid()).collect::<Vec<_>>()),
            ),
            (
                "test-rpc-service",
                sum(&agents.iter().map(|a| a.rpc.pid()).collect::<Vec<_>>()),
            ),
        ]
    };
    let cpu_before = cpu_by_kind();
    let bench_cpu = cpu_secs(std::process::id());
    let etcd_before = etcd_counts(&etcd.url);
    let client = client(&api);
    let jobs = JobWatch::start(&cluster.ctx).await;
    let body = guest_body(&cluster);
    let start = Instant::now();
    let posted: Vec<String> = futures::stream::iter(0..guests)
        .map(|_| {
            let (client, body) = (client.clone(), body.clone());
            async move { client.create_guest(&body).await.expect("POST /guests").id }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    let posted_after = start.elapsed();
    jobs.wait_all(&posted, Duration::from_secs(120)).await;
    let ends: Vec<(Instant, JobStatus)> = posted.iter().filter_map(|id| jobs.get(id)).collect();
    let done = ends.iter().filter(|(_, s)| *s == JobStatus::Done).count();
    let errors = ends.len() - done;
    let open = guests - ends.len();
    let last = ends.iter().map(|(t, _)| *t).max().unwrap_or(start);
    let elapsed = last - start;
    // Double placements: a guest on two agents, or linked under two hypervisors.
    let mut on_agents: BTreeMap<String, usize> = BTreeMap::new();
    for agent in &agents {
        for g in agent.client().list_guests().await.expect("agent guests") {
            *on_agents.entry(g.id).or_default() += 1;
        }
    }
    let on_two_agents = on_agents.values().filter(|n| **n > 1).count();
    let (linked, double_links) = doubly_linked(&cluster.ctx).await;
    println!(
        "throughput: {guests} creates posted at once (32 in flight, all posted after {:.2} s), \
         {hvs} hypervisors, {placers} placers, {workers} workers: {done} done in {:.2} s = \
         {:.1} guests/s; in error {errors}, left open {open}; on the agents {} guests, on two \
         agents {on_two_agents}; linked in etcd {linked}, under two hypervisors {double_links}",
        posted_after.as_secs_f64(),
        elapsed.as_secs_f64(),
        done as f64 / elapsed.as_secs_f64(),
        on_agents.len(),
    );
    let mut parts: Vec<String> = cpu_by_kind()
        .iter()
        .zip(cpu_before.iter())
        .map(|((name, after), (_, before))| {
            format!(
                "{name} {:.1} ms",
                (after - before) * 1000.0 / done.max(1) as f64
            )
        })
        .collect();
    parts.push(format!(
        "the bench itself {:.1} ms",
        (cpu_secs(std::process::id()) - bench_cpu) * 1000.0 / done.max(1) as f64
    ));
    println!("throughput: CPU per guest done: {}", parts.join(", "));
    let etcd_after = etcd_counts(&etcd.url);
    let per_guest: Vec<String> = etcd_after
        .iter()
        .map(|(name, after)| {
            let before = etcd_before.get(name).copied().unwrap_or(0.0);
            format!("{name} {:.1}", (after - before) / done.max(1) as f64)
        })
        .collect();
    println!("throughput: etcd per guest done: {}", per_guest.join(", "));
}

/// One gauge of etcd's `/metrics` (0 when absent).
fn etcd_gauge(url: &str, name: &str) -> f64 {
    let text = mistify_e2e::stack::http_get(&format!("{url}/metrics"))
        .map(|(_, body)| body)
        .unwrap_or_default();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

/// Counters of etcd's `/metrics`: requests by gRPC method, proposals committed, WAL
/// fsyncs, watch events sent.
fn etcd_counts(url: &str) -> BTreeMap<String, f64> {
    let text = mistify_e2e::stack::http_get(&format!("{url}/metrics"))
        .map(|(_, body)| body)
        .unwrap_or_default();
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let name = if series.starts_with("grpc_server_handled_total{") {
            match series
                .split("grpc_method=\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
            {
                Some(method) => format!("{method} requests"),
                None => continue,
            }
        } else if series.starts_with("etcd_server_proposals_committed_total") {
            "proposals committed".to_string()
        } else if series.starts_with("etcd_disk_wal_fsync_duration_seconds_count") {
            "WAL fsyncs".to_string()
        } else if series.starts_with("etcd_debugging_mvcc_events_total") {
            "watch events sent".to_string()
        } else {
            continue;
        };
        *out.entry(name).or_insert(0.0) += value;
    }
    out.retain(|_, v| *v > 0.0);
    out
}

/// A new unplaced guest of `cluster`'s flavor and network (not saved).
fn new_guest(cluster: &Cluster) -> lochness::Guest {
    let mut g = cluster.ctx.new_guest();
    g.flavor = cluster.flavor.clone();
    g.network = cluster.network.clone();
    g.kind = "kvm".into();
    g
}

/// Guests written per transaction when seeding (etcd allows 128 compares and 128
/// operations per transaction by default: one compare per guest and two for the flavor
/// and network).
const SEED_BATCH: usize = 120;

/// Writes `guests` in one transaction, with `Guest::save`'s conditions: every guest new,
/// the flavor and network present.
async fn save_batch(ctx: &Context, cluster: &Cluster, guests: Vec<lochness::Guest>) -> usize {
    let mut cmps: Vec<Compare> = Vec::with_capacity(guests.len() + 2);
    let mut puts: Vec<TxnOp> = Vec::with_capacity(guests.len());
    for g in &guests {
        g.validate().expect("valid guest");
        let key = ctx.abs(&keys::guest_metadata(&g.id));
        cmps.push(Compare::create_revision(key.clone(), CompareOp::Equal, 0));
        puts.push(TxnOp::put(key, g.to_json(), None));
    }
    for key in [
        keys::flavor_metadata(&cluster.flavor),
        keys::network_metadata(&cluster.network),
    ] {
        cmps.push(Compare::create_revision(
            ctx.abs(&key),
            CompareOp::Greater,
            0,
        ));
    }
    let resp = ctx
        .txn(Txn::new().when(cmps).and_then(puts))
        .await
        .expect("seed transaction");
    assert!(resp.succeeded(), "a seeded guest existed already");
    guests.len()
}

async fn scale(dir: &Path) {
    if env_num("BENCH_SCALE", 1) == 0 {
        return;
    }
    let n_hvs = env_num("BENCH_SCALE_HVS", 1000);
    let n_guests = env_num("BENCH_SCALE_GUESTS", 100_000);
    let n_jobs = env_num("BENCH_SCALE_JOBS", 2000);
    let n_placers = env_num("BENCH_SCALE_PLACERS", 4);
    let n_gets = 1000;
    let etcd = Etcd::start(dir);
    let size = Resources {
        memory: 1 << 30,
        disk: 1 << 40,
        cpu: 1 << 20,
    };
    let cluster = Cluster::sized(&etcd.url, &[], size).await;
    let ctx = cluster.ctx.clone();
    let subnet = ctx.subnet(&cluster.subnet).await.expect("subnet");

    // Seeding. Hypervisors: each is four writes (metadata, agentPort, subnet link,
    // heartbeat), 32 hypervisors at a time.
    let seed_start = Instant::now();
    futures::stream::iter(0..n_hvs)
        .map(|_| common::add_hypervisor_sized(&ctx, &subnet, 1, size))
        .buffer_unordered(32)
        .collect::<Vec<String>>()
        .await;
    let hvs_took = seed_start.elapsed();
    // Guests: a sample with one `Guest::save` each (64 at a time), for comparison; the
    // rest in transactions of SEED_BATCH guests, 8 at a time.
    let sample = (n_guests / 20).min(5000);
    let mut ids: Vec<String> = Vec::with_capacity(n_guests);
    let t = Instant::now();
    let saved: Vec<String> = futures::stream::iter(0..sample)
        .map(|_| {
            let mut g = new_guest(&cluster);
            async move {
                g.save().await.expect("guest save");
                g.id
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let saves_took = t.elapsed();
    ids.extend(saved);
    let rest = n_guests - sample;
    let batches: Vec<Vec<lochness::Guest>> = (0..rest)
        .map(|_| new_guest(&cluster))
        .collect::<Vec<_>>()
        .chunks(SEED_BATCH)
        .map(<[_]>::to_vec)
        .collect();
    ids.extend(batches.iter().flatten().map(|g| g.id.clone()));
    let t = Instant::now();
    let written: usize = futures::stream::iter(batches)
        .map(|batch| save_batch(&ctx, &cluster, batch))
        .buffer_unordered(8)
        .collect::<Vec<usize>>()
        .await
        .into_iter()
        .sum();
    let batches_took = t.elapsed();
    let seed_took = seed_start.elapsed();
    let stored = ctx.count_keys(keys::GUESTS).await.expect("count guests");
    println!(
        "scale seed: {n_hvs} hypervisors + {n_guests} guests written in {:.1} s \
         (hypervisors {:.1} s = {:.0}/s, 32 at a time; {sample} guests by Guest::save, 64 at a \
         time: {:.0} guests/s; {written} guests in transactions of {SEED_BATCH}, 8 at a time: \
         {:.0} guests/s); guest keys in etcd {stored}",
        seed_took.as_secs_f64(),
        hvs_took.as_secs_f64(),
        n_hvs as f64 / hvs_took.as_secs_f64(),
        sample as f64 / saves_took.as_secs_f64(),
        written as f64 / batches_took.as_secs_f64(),
    );

    // Reads through cguestd, once etcd is done with the seeding (it persists and
    // snapshots 100,000 writes in the background for a while after the last answer).
    let settled = settle(etcd.pid(), Duration::from_secs(20)).await;
    println!(
        "scale seed: etcd quiet again {:.1} s after the seeding",
        settled.as_secs_f64()
    );
    let api = cguestd(&etcd.url);
    let client = client(&api);
    let idle = rss(api.pid());
    let mut pages = Vec::new();
    let mut listed = 0;
    let mut query = ListQuery::new().limit(1000);
    let t = Instant::now();
    loop {
        let start = Instant::now();
        let page = client
            .list::<lochness_client::Guest>(&query)
            .await
            .expect("GET /guests");
        pages.push(start.elapsed());
        listed += page.items.len();
        match page.next {
            Some(next) => query = ListQuery::new().limit(1000).after(next),
            None => break,
        }
    }
    let walk = t.elapsed();
    let n_pages = pages.len();
    println!(
        "scale list: GET /guests?limit=1000 over every page, {n_guests} guests in etcd: \
         {n_pages} pages, {listed} guests in {:.2} s; per page {}",
        walk.as_secs_f64(),
        summary(&mut pages),
    );
    // The same pages straight from etcd through the library: the floor under cguestd;
    // with each read bounded in the id space (the default) and with reads to the end of
    // the family (etcd counts every key up to a read's end), in this one run.
    for (label, bounded) in [
        ("bounded reads", true),
        ("reads to the family's end", false),
    ] {
        ctx.set_bounded_reads(bounded);
        let mut direct_pages = Vec::new();
        let mut request = lochness::PageRequest {
            after: None,
            limit: Some(1000),
        };
        let mut listed = 0;
        loop {
            let start = Instant::now();
            let page = ctx
                .guests_page(&request, &lochness::GuestFilter::default())
                .await
                .expect("Context::guests_page");
            direct_pages.push(start.elapsed());
            listed += page.items.len();
            match page.next {
                Some(next) => request.after = Some(next),
                None => break,
            }
        }
        assert_eq!(listed, n_guests, "{label}: every guest once");
        println!(
            "scale list: the same pages read straight from etcd (Context::guests_page), \
             {label}: {}",
            summary(&mut direct_pages),
        );
    }
    ctx.set_bounded_reads(true);
    // The same ranges without decoding the guests: etcd's share of a page.
    let mut raw_pages = Vec::new();
    let mut from = ctx.abs(keys::GUESTS);
    let end = format!("{}0", ctx.abs(keys::GUESTS).trim_end_matches('/'));
    loop {
        let start = Instant::now();
        let resp = ctx
            .client()
            .get(
                from.clone(),
                Some(
                    etcd_client::GetOptions::new()
                        .with_range(end.clone())
                        .with_limit(1001),
                ),
            )
            .await
            .expect("range");
        raw_pages.push(start.elapsed());
        let kvs = resp.kvs();
        if kvs.len() < 1001 {
            break;
        }
        let last = kvs[1000].key().to_vec();
        from = String::from_utf8_lossy(&last).into_owned();
    }
    println!(
        "scale list: the same ranges of 1,001 keys, not decoded: {}",
        summary(&mut raw_pages),
    );
    let picks: Vec<String> = {
        let mut rng = rand::rng();
        (0..n_gets)
            .filter_map(|_| ids.choose(&mut rng).cloned())
            .collect()
    };
    let mut gets = Vec::with_capacity(picks.len());
    for id in &picks {
        let start = Instant::now();
        let g: lochness_client::Guest = client.get(id).await.expect("GET /guests/{id}");
        gets.push(start.elapsed());
        assert_eq!(&g.id, id);
    }
    println!(
        "scale get: GET /guests/{{id}}, {} random ids one after the other, {n_guests} guests \
         in etcd: {}",
        gets.len(),
        summary(&mut gets),
    );
    // The same reads straight from etcd through the library: the floor under cguestd.
    let mut direct = Vec::with_capacity(picks.len());
    for id in &picks {
        let start = Instant::now();
        let g = ctx.guest(id).await.expect("Context::guest");
        direct.push(start.elapsed());
        assert_eq!(&g.id, id);
    }
    println!(
        "scale get: the same ids read straight from etcd (Context::guest): {}",
        summary(&mut direct),
    );
    println!(
        "scale rss: cguestd with {n_guests} guests in etcd: idle {idle}; after the list and \
         the gets {}",
        rss(api.pid())
    );

    // Placements: one placer with each placement written alone (`--batch 1`), the same
    // with the default (placements waiting on the subnet written together), then
    // `BENCH_SCALE_PLACERS` placers with the default; in this one run.
    let rounds = [
        ("one per transaction", "1", 1),
        ("batched", "32", 1),
        ("batched", "32", n_placers),
    ];
    for (label, batch, placers) in rounds {
        place_round(
            dir, &etcd, &cluster, n_hvs, n_guests, n_jobs, placers, label, batch,
        )
        .await;
    }
    println!(
        "scale rss: cguestd at the end: {}, CPU {:.1} s in all",
        rss(api.pid()),
        cpu_secs(api.pid())
    );
}

/// One round of the scale bench's placements: `n_jobs` `select-hypervisor` jobs, then
/// `n_placers` `cplacerd --batch <batch>` started after them, stopped at the end.
#[allow(clippy::too_many_arguments)]
async fn place_round(
    dir: &Path,
    etcd: &Etcd,
    cluster: &Cluster,
    n_hvs: usize,
    n_guests: usize,
    n_jobs: usize,
    n_placers: usize,
    label: &str,
    batch: &'static str,
) {
    let ctx = cluster.ctx.clone();
    // Placements: the jobs first, then the placers; placed = the job's entry left the
    // placers' queue.
    let mut queue = ctx
        .watch(keys::QUEUE_CREATE, 0)
        .await
        .expect("watch the queue");
    let t = Instant::now();
    let jobs: Vec<String> = futures::stream::iter(0..n_jobs)
        .map(|_| {
            let mut g = new_guest(cluster);
            let ctx = ctx.clone();
            async move {
                ctx.create_guest_with_job(&mut g)
                    .await
                    .expect("create guest with job")
                    .id
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let jobs_took = t.elapsed();
    // The creates' own events (puts) come first; count the deletes from here.
    let etcd_cpu = cpu_secs(etcd.pid());
    let etcd_before = etcd_counts(&etcd.url);
    if let Ok(dir) = std::env::var("BENCH_ETCD_METRICS") {
        let text = mistify_e2e::stack::http_get(&format!("{}/metrics", etcd.url))
            .map(|(_, body)| body)
            .unwrap_or_default();
        let _ = std::fs::write(format!("{dir}/{n_placers}-{batch}-before.txt"), text);
    }
    let start = Instant::now();
    let mut args = concurrency("BENCH_PLACER_CONCURRENCY");
    args.extend(["--batch", batch]);
    let placers: Vec<Proc> = (0..n_placers)
        .map(|_| Proc::start("cplacerd", dir, &etcd.url, &args))
        .collect();
    // etcd's watchers that fell behind (it then catches them up from its backend),
    // sampled while the placers work.
    let slow = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sampler = {
        let (url, slow) = (etcd.url.clone(), slow.clone());
        tokio::spawn(async move {
            loop {
                let now = tokio::task::spawn_blocking({
                    let url = url.clone();
                    move || etcd_gauge(&url, "etcd_debugging_mvcc_slow_watcher_total")
                })
                .await
                .unwrap_or(0.0);
                slow.fetch_max(now as u64, std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let mut left: Vec<Instant> = Vec::with_capacity(n_jobs);
    while left.len() < n_jobs {
        match tokio::time::timeout(Duration::from_secs(120), queue.next()).await {
            Ok(Some(Ok(e))) if e.kind == ChangeKind::Delete => left.push(Instant::now()),
            Ok(Some(Ok(_))) => {}
            _ => break,
        }
    }
    drop(queue);
    sampler.abort();
    if let Ok(dir) = std::env::var("BENCH_ETCD_METRICS") {
        let text = mistify_e2e::stack::http_get(&format!("{}/metrics", etcd.url))
            .map(|(_, body)| body)
            .unwrap_or_default();
        let _ = std::fs::write(format!("{dir}/{n_placers}-{batch}.txt"), text);
    }
    let first = left.first().copied().unwrap_or(start);
    let last = left.last().copied().unwrap_or(start);
    let mut in_error = 0;
    for id in &jobs {
        if ctx.job(id).await.expect("job").status == JobStatus::Error {
            in_error += 1;
        }
    }
    let open = ctx.count_keys(keys::QUEUE_CREATE).await.expect("queue");
    let (linked, double_links) = doubly_linked(&ctx).await;
    let steady = last - first;
    println!(
        "scale place ({label}): {n_jobs} select-hypervisor jobs (created in {:.1} s, 64 at a time) \
         over {n_hvs} hypervisors and {n_guests} guests, {n_placers} cplacerd started after: \
         {} left the queue, first after {:.2} s, last after {:.2} s; {:.0} placements/s from \
         the placers' start, {:.0}/s from the first placement; in error {in_error}, still \
         queued {open}; guests linked {linked}, under two hypervisors {double_links}",
        jobs_took.as_secs_f64(),
        left.len(),
        (first - start).as_secs_f64(),
        (last - start).as_secs_f64(),
        left.len() as f64 / (last - start).as_secs_f64(),
        left.len().saturating_sub(1) as f64 / steady.as_secs_f64(),
    );
    println!(
        "scale place ({label}): etcd CPU while placing {:.1} s; slow watchers at most {}",
        cpu_secs(etcd.pid()) - etcd_cpu,
        slow.load(std::sync::atomic::Ordering::Relaxed),
    );
    let etcd_after = etcd_counts(&etcd.url);
    let per_placement: Vec<String> = etcd_after
        .iter()
        .map(|(name, after)| {
            let before = etcd_before.get(name).copied().unwrap_or(0.0);
            format!("{name} {:.2}", (after - before) / left.len().max(1) as f64)
        })
        .collect();
    println!(
        "scale place ({label}): etcd per placement: {}",
        per_placement.join(", ")
    );
    for (i, p) in placers.iter().enumerate() {
        let (placed, mean) = placer_figures(p).await;
        let log = p.output();
        let count = |needle: &str| log.lines().filter(|l| l.contains(needle)).count();
        println!(
            "scale place ({label}): cplacerd {i} log: {} leases lost, {} jobs given back, \
             {} lost races, {} fresh cluster reads, {} index builds",
            count("lease lost"),
            count("giving the job back") + count("claim lost"),
            count("lost a race"),
            count("reading the cluster"),
            count("allocation index built"),
        );
        if let Some(pid) = p.pid() {
            println!(
                "scale place ({label}): cplacerd {i} with {n_hvs} hypervisors: placed {placed}, mean \
                 {:.1} ms per placement (claim to hand-over), CPU {:.1} s; {}",
                mean * 1000.0,
                cpu_secs(pid),
                rss(pid)
            );
        }
    }
}

/// Waits until process `pid` uses under a tenth of a CPU over half a second (at most
/// `limit`); how long that took.
async fn settle(pid: u32, limit: Duration) -> Duration {
    let start = Instant::now();
    let window = Duration::from_millis(500);
    while start.elapsed() < limit {
        let before = cpu_secs(pid);
        tokio::time::sleep(window).await;
        if cpu_secs(pid) - before < 0.1 * window.as_secs_f64() {
            break;
        }
    }
    start.elapsed()
}

/// The `cpu` line of `/proc/stat`: (steal, total) jiffies.
fn cpu_times() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    (fields.get(7).copied().unwrap_or(0), fields.iter().sum())
}

/// Runs `part`, then prints the share of CPU time the host took from the machine
/// meanwhile (`steal` of `/proc/stat`).
async fn measured(name: &str, part: impl std::future::Future<Output = ()>) {
    let (steal0, total0) = cpu_times();
    let start = Instant::now();
    part.await;
    let (steal1, total1) = cpu_times();
    println!(
        "{name}: part took {:.1} s, steal {:.1}%",
        start.elapsed().as_secs_f64(),
        100.0 * (steal1 - steal0) as f64 / (total1 - total0).max(1) as f64
    );
}

fn main() {
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            Some(
                l.strip_prefix("model name")?
                    .trim_start_matches([' ', '\t', ':'])
                    .to_string(),
            )
        })
        .unwrap_or_default();
    println!("machine: {cpus} CPUs ({model}), release build");
    let dir = TempDir::new("lochness-bench");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        measured("latency", latency(&subdir(dir.path(), "latency"))).await;
        measured("throughput", throughput(&subdir(dir.path(), "throughput"))).await;
        measured("scale", scale(&subdir(dir.path(), "scale"))).await;
    });
}
