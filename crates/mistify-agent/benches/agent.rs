//! Agent figures, measured in one run on this machine (release build):
//!
//! * `GET /guests/{id}/metrics/cpu` through the agent vs the same `Test.CPUMetrics` call
//!   made directly to `test-rpc-service`: requests/s, p50, p99, and the ratio, with
//!   the CPU time per request of the load generator, the agent and the sub-agent on
//!   each side (the cores of the machine are shared by all three: the ratio follows
//!   from these sums);
//! * `GET /guests` with 10 and with 10,000 guests;
//! * one job update with 10, 1,000 and 100,000 jobs kept;
//! * the agent's RSS idle, under load and with 10,000 guests.
//!
//! Load: 32 connections from 2 client threads, each with its own event loop (as
//! `wrk -t2 -c32` makes them), for `BENCH_SECONDS`
//! (default 10) per figure. The through-the-agent and direct loads alternate for
//! `BENCH_ROUNDS` rounds (default 3): on a shared VM the CPU the host lends (the `steal`
//! of `/proc/stat`, printed with every load) changes within seconds, and alternating
//! rounds keeps a slow stretch from landing on one side only. `BENCH_AGENT_THREADS=N`
//! starts the agent with `--worker-threads N`. Run with
//! `cargo build --release --workspace --bins --examples &&
//!  cargo bench -p mistify-agent --bench agent` (the bench runs no build of its own).
//!
//! `BENCH_AGENTS=label=PATH,label=PATH,…` compares agent binaries instead (e.g. builds
//! with and without a shortcut): each round loads `metrics/cpu` through each of them in
//! turn, then the sub-agent directly; it prints each one's throughput, latency, CPU per
//! request and peak RSS, and its throughput relative to the first.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use mistify_agent::store::Store;
use mistify_client::{Guest, Job, JobStatus};
use mistify_e2e::{example, free_port, Daemon};

/// What one load measured.
struct Sample {
    /// Latency of every successful request, µs.
    latencies: Vec<u32>,
    secs: f64,
    errors: u64,
    /// The share of CPU time the host took from this VM during the load, %.
    steal: f64,
}

struct Figures {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
    steal: f64,
}

impl Figures {
    /// The figures of one or more loads taken together.
    fn of(samples: &[&Sample]) -> Figures {
        let mut all: Vec<u32> = samples
            .iter()
            .flat_map(|s| s.latencies.iter().copied())
            .collect();
        all.sort_unstable();
        let pct = |p: f64| {
            all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
                .copied()
                .unwrap_or(0) as f64
                / 1000.0
        };
        let secs: f64 = samples.iter().map(|s| s.secs).sum();
        Figures {
            rps: all.len() as f64 / secs,
            p50_ms: pct(0.50),
            p99_ms: pct(0.99),
            errors: samples.iter().map(|s| s.errors).sum(),
            steal: samples.iter().map(|s| s.steal * s.secs).sum::<f64>() / secs,
        }
    }
}

/// CPU time counters of the whole machine (`/proc/stat`): (steal, total), in ticks.
fn cpu_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    let total = fields.iter().take(8).sum();
    (fields.get(7).copied().unwrap_or(0), total)
}

/// CPU time a process has used, user and system, all threads, in ms (from
/// `/proc/PID/stat`, counted in USER_HZ ticks, 100 per second on Linux).
fn process_cpu_ms(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name, which is in parentheses and may hold spaces:
    // the state, then numbers (some negative), utime and stime the 12th and 13th.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (ticks(11) + ticks(12)) as f64 * 10.0
}

/// Runs `f` and gives, with its result, the CPU ms each of `pids` used meanwhile.
fn cpu_during<T>(pids: &[u32], f: impl FnOnce() -> T) -> (T, Vec<f64>) {
    let before: Vec<f64> = pids.iter().map(|&p| process_cpu_ms(p)).collect();
    let out = f();
    let used = pids
        .iter()
        .zip(before)
        .map(|(&p, b)| process_cpu_ms(p) - b)
        .collect();
    (out, used)
}

/// `conns` requests in flight for `secs` seconds against one `http://` URL, as `wrk -t2`
/// makes them: two threads, each running its own event loop over half the connections,
/// each connection sending the same request bytes (made once) and reading the reply
/// up to its `Content-Length`. A general HTTP client here would cost more CPU per
/// request than the servers measured, and more still as their latency grows: its
/// connection tasks and worker threads wake one another.
fn load(method: &str, url: &str, body: Option<&str>, conns: usize, secs: f64) -> Sample {
    const THREADS: usize = 2;
    let rest = url.strip_prefix("http://").expect("an http:// URL");
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let addr: std::net::SocketAddr = authority.parse().expect("an IP:port URL");
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {authority}\r\n");
    if let Some(b) = body {
        request.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            b.len()
        ));
    }
    request.push_str("\r\n");
    request.push_str(body.unwrap_or_default());
    let request = Arc::new(request.into_bytes());

    let (steal0, total0) = cpu_ticks();
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let n = conns / THREADS + usize::from(t < conns % THREADS);
            let request = request.clone();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(async move {
                    let tasks: Vec<_> = (0..n)
                        .map(|_| {
                            let request = request.clone();
                            tokio::spawn(async move { connection(addr, &request, deadline).await })
                        })
                        .collect();
                    let (mut latencies, mut errors) = (Vec::new(), 0);
                    for task in tasks {
                        let (l, e) = task.await.expect("load task");
                        latencies.extend(l);
                        errors += e;
                    }
                    (latencies, errors)
                })
            })
        })
        .collect();
    let (mut latencies, mut errors) = (Vec::new(), 0);
    for thread in threads {
        let (l, e) = thread.join().expect("load thread");
        latencies.extend(l);
        errors += e;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let (steal1, total1) = cpu_ticks();
    Sample {
        latencies,
        secs: elapsed,
        errors,
        steal: 100.0 * (steal1 - steal0) as f64 / (total1 - total0).max(1) as f64,
    }
}

/// One keep-alive connection sending `request` until `deadline`: the latency of each
/// 2xx reply in µs, and the count of other replies and failures (a failure reconnects).
async fn connection(
    addr: std::net::SocketAddr,
    request: &[u8],
    deadline: Instant,
) -> (Vec<u32>, u64) {
    let mut latencies = Vec::with_capacity(100_000);
    let mut errors = 0;
    let mut conn: Option<tokio::net::TcpStream> = None;
    let mut buf = Vec::with_capacity(64 * 1024);
    while Instant::now() < deadline {
        let t = Instant::now();
        let stream = match conn.as_mut() {
            Some(stream) => stream,
            None => match tokio::net::TcpStream::connect(addr).await {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    conn.insert(stream)
                }
                Err(_) => {
                    errors += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        match exchange(stream, request, &mut buf).await {
            Ok(status) if (200..300).contains(&status) => {
                latencies.push(t.elapsed().as_micros() as u32)
            }
            Ok(_) => errors += 1,
            Err(_) => {
                errors += 1;
                conn = None;
            }
        }
    }
    (latencies, errors)
}

/// Writes `request` and reads one reply with a `Content-Length` body; its status.
async fn exchange(
    conn: &mut tokio::net::TcpStream,
    request: &[u8],
    buf: &mut Vec<u8>,
) -> std::io::Result<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    conn.write_all(request).await?;
    buf.clear();
    loop {
        let head = {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut reply = httparse::Response::new(&mut headers);
            match reply.parse(buf) {
                Ok(httparse::Status::Complete(len)) => {
                    let body = reply
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                        .and_then(|h| {
                            std::str::from_utf8(h.value)
                                .ok()?
                                .trim()
                                .parse::<usize>()
                                .ok()
                        })
                        .ok_or_else(|| std::io::Error::other("a reply without Content-Length"))?;
                    Some((reply.code.unwrap_or(0), len + body))
                }
                Ok(httparse::Status::Partial) => None,
                Err(e) => return Err(std::io::Error::other(e)),
            }
        };
        if let Some((status, total)) = head {
            while buf.len() < total {
                if conn.read_buf(buf).await? == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
            }
            return Ok(status);
        }
        if conn.read_buf(buf).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
}

fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:")
}

/// A KiB figure of `/proc/PID/status` (`VmRSS:`, `RssAnon:`…).
fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0)
}

/// Samples the peak RSS of `pid` while `f` runs.
fn peak_rss_during<T>(pid: u32, f: impl FnOnce() -> T) -> (T, u64) {
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (stop, peak) = (stop.clone(), peak.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(rss_kib(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let out = f();
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    (out, peak.load(Ordering::Relaxed))
}

fn config(dir: &Path, fake_port: u16) -> std::path::PathBuf {
    let mut config = mistify_e2e::agent_test_rpc_config(fake_port);
    for s in config["services"]
        .as_object_mut()
        .expect("services")
        .values_mut()
    {
        s["max_pending"] = 64.into();
    }
    let file = dir.join("agent.json");
    std::fs::write(&file, config.to_string()).expect("config");
    file
}

fn start_agent(config: &Path, db: &Path) -> Daemon {
    start_agent_binary(Path::new(env!("CARGO_BIN_EXE_mistify-agent")), config, db)
}

fn start_agent_binary(binary: &Path, config: &Path, db: &Path) -> Daemon {
    let port = free_port();
    let mut args = mistify_e2e::agent_args(config, db, port, "error");
    // `BENCH_AGENT_THREADS=N` measures the agent with `--worker-threads N`.
    if let Ok(n) = std::env::var("BENCH_AGENT_THREADS") {
        args.extend(["--worker-threads".to_string(), n]);
    }
    Daemon::start(binary, &args, port)
}

/// An agent whose store holds `n` guests (written as the agent writes them), and its
/// RSS and anonymous RSS in KiB a second after it started.
fn agent_with_guests(dir: &Path, config: &Path, n: usize) -> (Daemon, (u64, u64)) {
    let db = dir.join(format!("guests-{n}.redb"));
    Store::open(&db, 1000)
        .expect("store")
        .put_guests(&(0..n).map(guest).collect::<Vec<_>>())
        .wait()
        .expect("guests");
    let agent = start_agent(config, &db);
    std::thread::sleep(Duration::from_secs(1));
    let rss = (rss_kib(agent.pid()), status_kib(agent.pid(), "RssAnon:"));
    (agent, rss)
}

fn guest(i: usize) -> Guest {
    Guest {
        id: format!("00000000-0000-4000-8000-{i:012}"),
        memory: 512,
        cpu: 1,
        state: "running".into(),
        nics: vec![mistify_client::Nic {
            network: "br0".into(),
            model: "virtio".into(),
            mac: format!("02:00:00:00:{:02x}:{:02x}", i / 256 % 256, i % 256),
            ..Default::default()
        }],
        ..Guest::default()
    }
}

fn job(i: usize, status: JobStatus) -> Job {
    let now = Utc::now();
    Job {
        id: format!("10000000-0000-4000-8000-{i:012}"),
        guest_id: guest(i % 50).id,
        action: "reboot".into(),
        queued_at: now,
        updated_at: now,
        status,
        ..Job::default()
    }
}

/// Mean time of one job update with `kept` jobs in the log.
fn job_update(dir: &Path, kept: usize) -> Duration {
    let store = Store::open(&dir.join(format!("jobs-{kept}.redb")), kept + 10).expect("store");
    let jobs: Vec<Job> = (0..kept).map(|i| job(i, JobStatus::Complete)).collect();
    store.import_jobs(&jobs).wait().expect("import");
    let probe = job(kept + 1, JobStatus::Queued);
    store.add_job(&probe, None).wait().expect("add");
    let rounds = 200;
    let start = Instant::now();
    for i in 0..rounds {
        store
            .update_job(&probe.id, move |j| {
                j.message = format!("update {i}");
                j.updated_at = Utc::now();
                true
            })
            .wait()
            .expect("update");
    }
    start.elapsed() / rounds
}

/// `BENCH_AGENTS`: `metrics/cpu` through each agent binary in turn, then directly, for
/// `rounds` rounds; figures per binary.
fn compare(agents: &str, secs: f64, rounds: usize) {
    let dir = std::env::temp_dir().join(format!("mistify-agent-compare-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let fake_port = free_port();
    let fake = Daemon::start(
        &example("test-rpc-service"),
        &[
            "--port".into(),
            fake_port.to_string(),
            "--log-level".into(),
            "error".into(),
        ],
        fake_port,
    );
    let config = config(&dir, fake_port);
    let variants: Vec<(String, Daemon)> = agents
        .split(',')
        .filter(|v| !v.is_empty())
        .enumerate()
        .map(|(i, v)| {
            let (label, path) = v.split_once('=').expect("label=PATH");
            let db = dir.join(format!("agent-{i}.redb"));
            Store::open(&db, 1000)
                .expect("store")
                .put_guests(&(0..10).map(guest).collect::<Vec<_>>())
                .wait()
                .expect("guests");
            let agent = start_agent_binary(Path::new(path), &config, &db);
            (label.to_string(), agent)
        })
        .collect();
    let gid = guest(0).id;
    let direct_body = serde_json::json!({
        "method": "Test.CPUMetrics", "id": 1,
        "params": [{"guest": guest(0), "type": "cpu"}],
    })
    .to_string();
    let direct_url = format!("http://127.0.0.1:{fake_port}/_mistify_RPC_");
    // Per variant: samples, CPU ms of (load generator, agent, sub-agent), peak RSS.
    let mut through: Vec<(Vec<Sample>, [f64; 3], u64)> =
        variants.iter().map(|_| (Vec::new(), [0.0; 3], 0)).collect();
    let mut direct = Vec::new();
    for _ in 0..rounds {
        for ((_, agent), acc) in variants.iter().zip(through.iter_mut()) {
            let url = format!("{}/guests/{gid}/metrics/cpu", agent.url());
            let pids = [std::process::id(), agent.pid(), fake.pid()];
            let ((sample, peak), used) = cpu_during(&pids, || {
                peak_rss_during(agent.pid(), || load("GET", &url, None, 32, secs))
            });
            acc.0.push(sample);
            for (sum, ms) in acc.1.iter_mut().zip(used) {
                *sum += ms;
            }
            acc.2 = acc.2.max(peak);
        }
        direct.push(load("POST", &direct_url, Some(&direct_body), 32, secs));
    }
    let direct = Figures::of(&direct.iter().collect::<Vec<_>>());
    println!("metrics/cpu through each agent binary, {rounds} rounds of {secs} s, 32 connections");
    println!();
    println!(
        "{:<28} {:>10} {:>8} {:>8} {:>8} {:>8} {:>12} {:>9} {:>7}",
        "agent",
        "req/s",
        "p50 ms",
        "p99 ms",
        "errors",
        "vs first",
        "agent µs/req",
        "peak MiB",
        "/direct"
    );
    let first = Figures::of(&through[0].0.iter().collect::<Vec<_>>()).rps;
    for ((label, _), (samples, cpu, peak)) in variants.iter().zip(&through) {
        let f = Figures::of(&samples.iter().collect::<Vec<_>>());
        let requests: usize = samples.iter().map(|s| s.latencies.len()).sum();
        println!(
            "{label:<28} {:>10.0} {:>8.2} {:>8.2} {:>8} {:>8.3} {:>12.1} {:>9.1} {:>7.2}",
            f.rps,
            f.p50_ms,
            f.p99_ms,
            f.errors,
            f.rps / first,
            cpu[1] * 1000.0 / requests.max(1) as f64,
            *peak as f64 / 1024.0,
            f.rps / direct.rps
        );
    }
    println!(
        "{:<28} {:>10.0} {:>8.2} {:>8.2} {:>8}",
        "Test.CPUMetrics directly", direct.rps, direct.p50_ms, direct.p99_ms, direct.errors
    );
    drop(variants);
    let _ = std::fs::remove_dir_all(&dir);
}

fn main() {
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3)
        .max(1);
    if let Ok(agents) = std::env::var("BENCH_AGENTS") {
        let secs: f64 = std::env::var("BENCH_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(10.0);
        return compare(&agents, secs, rounds);
    }
    let secs: f64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10.0);
    let dir = std::env::temp_dir().join(format!("mistify-agent-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");

    let fake_port = free_port();
    let fake = Daemon::start(
        &example("test-rpc-service"),
        &[
            "--port".into(),
            fake_port.to_string(),
            "--log-level".into(),
            "error".into(),
        ],
        fake_port,
    );
    let config = config(&dir, fake_port);

    // 10 guests, stored as the agent would, then served.
    let (agent, (rss_idle, anon_idle)) = agent_with_guests(&dir, &config, 10);

    let gid = guest(0).id;
    let cpu_url = format!("{}/guests/{gid}/metrics/cpu", agent.url());
    let direct_body = serde_json::json!({
        "method": "Test.CPUMetrics", "id": 1,
        "params": [{"guest": guest(0), "type": "cpu"}],
    })
    .to_string();
    let direct_url = format!("http://127.0.0.1:{fake_port}/_mistify_RPC_");
    let mut rss_load = 0;
    let mut pairs = Vec::new();
    // CPU ms used by the load generator (this process), the agent and the sub-agent,
    // through the agent and directly, over all rounds.
    let pids = [std::process::id(), agent.pid(), fake.pid()];
    let (mut cpu_through, mut cpu_direct) = ([0.0; 3], [0.0; 3]);
    for _ in 0..rounds {
        let ((through, peak), used) = cpu_during(&pids, || {
            peak_rss_during(agent.pid(), || load("GET", &cpu_url, None, 32, secs))
        });
        rss_load = rss_load.max(peak);
        for (sum, ms) in cpu_through.iter_mut().zip(used) {
            *sum += ms;
        }
        let (direct, used) = cpu_during(&pids, || {
            load("POST", &direct_url, Some(&direct_body), 32, secs)
        });
        for (sum, ms) in cpu_direct.iter_mut().zip(used) {
            *sum += ms;
        }
        pairs.push((through, direct));
    }
    let list10 = load("GET", &format!("{}/guests", agent.url()), None, 32, secs);
    drop(agent);

    let (agent, (rss_10k, anon_10k)) = agent_with_guests(&dir, &config, 10_000);
    let list10k = load("GET", &format!("{}/guests", agent.url()), None, 32, secs);
    drop(agent);

    let updates: Vec<(usize, Duration)> = [10, 1_000, 100_000]
        .into_iter()
        .map(|n| (n, job_update(&dir, n)))
        .collect();
    let _ = std::fs::remove_dir_all(&dir);

    println!(
        "mistify-agent figures, {secs} s per load, 32 connections, 2 client threads, release build"
    );
    println!();
    println!(
        "{:<48} {:>10} {:>9} {:>9} {:>7} {:>7}",
        "load", "req/s", "p50 ms", "p99 ms", "errors", "steal%"
    );
    let row = |name: &str, f: &Figures| {
        println!(
            "{name:<48} {:>10.0} {:>9.2} {:>9.2} {:>7} {:>7.1}",
            f.rps, f.p50_ms, f.p99_ms, f.errors, f.steal
        );
    };
    let mut ratios = Vec::new();
    for (i, (t, d)) in pairs.iter().enumerate() {
        let (t, d) = (Figures::of(&[t]), Figures::of(&[d]));
        row(
            &format!("round {}: metrics/cpu through the agent", i + 1),
            &t,
        );
        row(&format!("round {}: Test.CPUMetrics directly", i + 1), &d);
        ratios.push(t.rps / d.rps);
    }
    let through = Figures::of(&pairs.iter().map(|(t, _)| t).collect::<Vec<_>>());
    let direct = Figures::of(&pairs.iter().map(|(_, d)| d).collect::<Vec<_>>());
    row(
        &format!("metrics/cpu through the agent, {rounds} rounds"),
        &through,
    );
    row(
        &format!("Test.CPUMetrics directly, {rounds} rounds"),
        &direct,
    );
    row("GET /guests, 10 guests", &Figures::of(&[&list10]));
    row("GET /guests, 10,000 guests", &Figures::of(&[&list10k]));
    println!();
    let mut sorted = ratios.clone();
    sorted.sort_by(f64::total_cmp);
    println!(
        "agent / direct throughput ratio (metrics/cpu): {:.2} over all rounds; by round {}; median {:.2}",
        through.rps / direct.rps,
        ratios
            .iter()
            .map(|r| format!("{r:.2}"))
            .collect::<Vec<_>>()
            .join(", "),
        sorted[sorted.len() / 2]
    );
    // Where the CPU went: per request, what each process used. Through the agent, the
    // agent's share is what it adds; the ratio above follows from these sums when the
    // machine's cores are the limit.
    let per_request = |cpu: &[f64; 3], samples: Vec<&Sample>| {
        let requests: usize = samples.iter().map(|s| s.latencies.len()).sum();
        cpu.map(|ms| ms * 1000.0 / requests.max(1) as f64)
    };
    let t_cpu = per_request(&cpu_through, pairs.iter().map(|(t, _)| t).collect());
    let d_cpu = per_request(&cpu_direct, pairs.iter().map(|(_, d)| d).collect());
    println!(
        "CPU per metrics/cpu request, µs: through the agent: load generator {:.1}, agent {:.1}, sub-agent {:.1} (sum {:.1}); directly: load generator {:.1}, sub-agent {:.1} (sum {:.1})",
        t_cpu[0],
        t_cpu[1],
        t_cpu[2],
        t_cpu.iter().sum::<f64>(),
        d_cpu[0],
        d_cpu[2],
        d_cpu[0] + d_cpu[2],
    );
    println!(
        "agent CPU per request / (load generator + sub-agent CPU per direct request): {:.2}",
        t_cpu[1] / (d_cpu[0] + d_cpu[2]).max(f64::MIN_POSITIVE)
    );
    println!();
    println!("{:<48} {:>10}", "one job update, jobs kept", "mean");
    for (n, d) in &updates {
        println!("{:<48} {:>8.0}µs", format!("{n}"), d.as_secs_f64() * 1e6);
    }
    let base = updates[0].1.as_secs_f64();
    println!(
        "100,000 vs 10 jobs kept: {:.2}x",
        updates[2].1.as_secs_f64() / base
    );
    println!();
    println!("agent RSS: idle {:.1} MiB, peak under metrics load {:.1} MiB, idle with 10,000 guests {:.1} MiB",
        rss_idle as f64 / 1024.0, rss_load as f64 / 1024.0, rss_10k as f64 / 1024.0);
    // The rest is file-backed: executable and library pages mapped from the page cache,
    // shared with every process mapping them and reclaimable.
    println!(
        "of which anonymous (the agent's own memory): idle {:.1} MiB, with 10,000 guests {:.1} MiB",
        anon_idle as f64 / 1024.0,
        anon_10k as f64 / 1024.0
    );
}
