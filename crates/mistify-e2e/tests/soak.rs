//! Soak: the agent under repeated crashes and under load, measured (`make soak`).
//!
//! * `agent_killed_with_jobs_in_flight`: `kill -9` on the agent while jobs are queued and
//!   running on a slow sub-agent, then a restart, `SOAK_ROUNDS` (100) times. Every round:
//!   the database passes redb's integrity check, the guests are exactly the expected set,
//!   no job is left `Queued` or `Running`, the hypervisor metadata written is there.
//! * `subagent_killed_under_the_supervisor`: the sub-agent killed with SIGKILL while a job
//!   runs on it, `SOAK_ROUNDS` times, both run by `mistify-supervisord`. Every affected
//!   job ends `Error` with a reason, the supervisor brings the sub-agent back, the agent
//!   is never restarted.
//! * `load_mixed_requests_across_1000_guests`: 64 clients mixing Info, Async and Stream
//!   requests across 1,000 guests for `SOAK_LOAD_SECONDS` (60) with default limits. At
//!   most 1 % answered 503, no other error, no growth: RSS after within 10 % of RSS
//!   before (both taken at rest: the agent with its 1,000 guests after a warm-up pass of
//!   the same load, a quarter as long, and once the load is over); throughput and
//!   latency percentiles printed.
//!
//! The two crash soaks take about a minute and run in `make test`; the load test is
//! `#[ignore]`d (its figures mean something on a release build only). `make soak` runs
//! all three on a release build and prints their figures (`SOAK:` lines).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mistify_client::{Client, GuestAction};
use mistify_e2e::{binary, example, free_port, wait_for_port, Daemon, TempDir};
use mistify_types::{Guest, Job, JobStatus};
use serde_json::{json, Value};

const RESTARTED: &str = "agent restarted before the job finished";

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn rounds() -> u64 {
    env_number("SOAK_ROUNDS", 100)
}

fn write_config(dir: &Path, config: &Value) -> PathBuf {
    let file = dir.join("agent.json");
    std::fs::write(&file, config.to_string()).expect("write the agent config");
    file
}

fn agent_args(config: &Path, db: &Path, port: u16) -> Vec<String> {
    mistify_e2e::agent_args(config, db, port, "error")
}

fn rpc_args(port: u16, delay_ms: u64) -> Vec<String> {
    vec![
        "--port".into(),
        port.to_string(),
        "--log-level".into(),
        "error".into(),
        "--delay-ms".into(),
        delay_ms.to_string(),
    ]
}

fn start_rpc(delay_ms: u64) -> Daemon {
    let port = free_port();
    Daemon::start(
        &example("test-rpc-service"),
        &rpc_args(port, delay_ms),
        port,
    )
}

/// Waits until no job in the newest 1,000 is `Queued` or `Running`; those jobs.
async fn settle(client: &Client, within: Duration) -> Vec<Job> {
    let deadline = Instant::now() + within;
    loop {
        let jobs = client.list_jobs(Some(1000)).await.expect("GET /jobs");
        if jobs.iter().all(|j| j.status.is_done()) {
            return jobs;
        }
        assert!(
            Instant::now() < deadline,
            "jobs still pending after {within:?}: {:?}",
            jobs.iter()
                .filter(|j| !j.status.is_done())
                .map(|j| (&j.id, &j.action, j.status))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Opens the store of a dead agent with redb, runs its integrity check and returns the
/// guest ids it holds and how long the check took.
fn check_store(db: &Path) -> (BTreeSet<String>, Duration) {
    use redb::{ReadableDatabase, ReadableTable, TableDefinition};
    const GUESTS: TableDefinition<&str, &[u8]> = TableDefinition::new("guests");
    let started = Instant::now();
    let mut database = redb::Database::open(db)
        .unwrap_or_else(|e| panic!("redb cannot open {}: {e}", db.display()));
    let clean = database
        .check_integrity()
        .unwrap_or_else(|e| panic!("integrity check of {}: {e}", db.display()));
    assert!(
        clean,
        "{}: the integrity check repaired the file",
        db.display()
    );
    let took = started.elapsed();
    let txn = database.begin_read().expect("read transaction");
    let table = txn.open_table(GUESTS).expect("guests table");
    let ids = table
        .iter()
        .expect("guests")
        .map(|entry| entry.expect("guest entry").0.value().to_string())
        .collect();
    (ids, took)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_killed_with_jobs_in_flight() {
    const DELAY_MS: u64 = 40;
    let rounds = rounds();
    let started = Instant::now();
    let dir = TempDir::new("soak-kill");
    let db = dir.path().join("agent.redb");
    let _rpc_daemon = start_rpc(DELAY_MS);
    let config = write_config(
        dir.path(),
        &mistify_e2e::agent_test_rpc_config(_rpc_daemon.port),
    );

    let mut expected: BTreeSet<String> = BTreeSet::new();
    // Delete jobs of the last round: job id → guest id.
    let mut deletes: BTreeMap<String, String> = BTreeMap::new();
    let mut rng = Lcg(0x5eed_0001);
    let (mut accepted, mut restarted, mut completed, mut other_errors) = (0u64, 0u64, 0u64, 0u64);
    let mut integrity_worst = Duration::ZERO;
    let mut in_flight_at_kill = 0usize;
    let mut last_round: Vec<String> = Vec::new();
    // The last pass only restarts and checks.
    for round in 0..=rounds {
        let port = free_port();
        let mut agent = Daemon::start(
            &binary("mistify-agent"),
            &agent_args(&config, &db, port),
            port,
        );
        let client = Client::new(&agent.url()).expect("client");
        if round > 0 {
            let jobs = settle(&client, Duration::from_secs(60)).await;
            for (job_id, guest) in std::mem::take(&mut deletes) {
                let job = client.get_job(&job_id).await.expect("delete job");
                if job.status == JobStatus::Complete {
                    expected.remove(&guest);
                }
            }
            let guests: BTreeSet<String> = client
                .list_guests()
                .await
                .expect("GET /guests")
                .into_iter()
                .map(|g| g.id)
                .collect();
            assert_eq!(
                guests, expected,
                "round {round}: the guests after the restart"
            );
            let metadata = client.get_metadata().await.expect("GET /metadata");
            assert_eq!(
                metadata.get("soak-round"),
                Some(&(round - 1).to_string()),
                "round {round}"
            );
            for id in std::mem::take(&mut last_round) {
                let job = client.get_job(&id).await.expect("job of the last round");
                match (job.status, job.message.as_str()) {
                    (JobStatus::Complete, _) => completed += 1,
                    (JobStatus::Error, RESTARTED) => restarted += 1,
                    (JobStatus::Error, _) => other_errors += 1,
                    (status, _) => panic!("round {round}: job {id} is {status}"),
                }
            }
            assert!(
                jobs.iter().all(|j| j.status.is_done()),
                "round {round}: a job left pending"
            );
        }
        if round == rounds {
            break;
        }

        // This round's work: sync metadata, two creates, a delete, four actions.
        let patch = [("soak-round".to_string(), Some(round.to_string()))].into();
        client
            .patch_metadata(&patch)
            .await
            .expect("PATCH /metadata");
        let mut queued = Vec::new();
        for _ in 0..2 {
            let created = client
                .create_guest(&Guest {
                    memory: 256,
                    cpu: 1,
                    ..Guest::default()
                })
                .await
                .expect("POST /guests");
            expected.insert(created.body.id.clone());
            queued.push(created.job_id.expect("create job id"));
        }
        let candidates: Vec<&String> = expected.iter().collect();
        if candidates.len() > 6 {
            let victim = candidates[rng.below(candidates.len() as u64) as usize].clone();
            let a = client
                .guest_action(&victim, GuestAction::Delete)
                .await
                .expect("delete");
            let job = a.job_id.expect("delete job id");
            deletes.insert(job.clone(), victim);
            queued.push(job);
        }
        let live: Vec<String> = expected
            .iter()
            .filter(|g| !deletes.values().any(|d| d == *g))
            .cloned()
            .collect();
        for _ in 0..4 {
            let guest = &live[rng.below(live.len() as u64) as usize];
            let action = [
                GuestAction::Reboot,
                GuestAction::Restart,
                GuestAction::Shutdown,
                GuestAction::Poweroff,
            ][rng.below(4) as usize];
            let a = client.guest_action(guest, action).await.expect("action");
            queued.push(a.job_id.expect("job id"));
        }
        accepted += queued.len() as u64;
        tokio::time::sleep(Duration::from_millis(rng.below(3 * DELAY_MS))).await;
        let mut pending = 0;
        for id in &queued {
            if !client.get_job(id).await.expect("job").status.is_done() {
                pending += 1;
            }
        }
        in_flight_at_kill += pending;
        agent.kill_hard();
        last_round = queued;

        let (stored, took) = check_store(&db);
        integrity_worst = integrity_worst.max(took);
        let gone: BTreeSet<&String> = deletes.values().collect();
        for id in &expected {
            assert!(
                stored.contains(id) || gone.contains(id),
                "round {round}: guest {id} lost by the crash"
            );
        }
        for id in &stored {
            assert!(expected.contains(id), "round {round}: unknown guest {id}");
        }
    }
    assert!(
        restarted > 0 && in_flight_at_kill > 0,
        "no kill hit a running job: the soak tested nothing"
    );
    assert_eq!(
        other_errors, 0,
        "jobs failed for another reason than the restart"
    );
    println!(
        "SOAK: agent kill -9: {rounds} rounds in {:.1} s; {accepted} jobs accepted, \
         {in_flight_at_kill} queued or running at the kills; after the restarts \
         {completed} Complete, {restarted} Error ({RESTARTED:?}), {other_errors} other; \
         {} guests at the end, every guest set exact; integrity check every round, slowest {:.1} ms",
        started.elapsed().as_secs_f64(),
        expected.len(),
        integrity_worst.as_secs_f64() * 1000.0
    );
}

/// A small deterministic generator (the soak is reproducible round by round).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        if n == 0 {
            0
        } else {
            (self.0 >> 33) % n
        }
    }
}

// ------------------------------------------------------------------ supervisor

/// `GET <supervisor>/services/<name>?full=1`.
async fn service(http: &reqwest::Client, supervisor: &str, name: &str) -> Value {
    let url = format!("{supervisor}/services/{name}?full=1");
    let reply = http
        .get(&url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let text = reply.text().await.expect("body");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("GET {url}: {e}: {text}"))
}

/// The pid of service `name` once it runs, is ready and its pid differs from `not`.
async fn ready_pid(http: &reqwest::Client, supervisor: &str, name: &str, not: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let info = service(http, supervisor, name).await;
        if let Some(pid) = info["pid"].as_u64() {
            if info["state"] == "running" && info["ready"] == true && pid != not {
                return pid;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{name} not running and ready: {info}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subagent_killed_under_the_supervisor() {
    // Long enough that the kill always lands while the call is at the sub-agent.
    const DELAY_MS: u64 = 1000;
    let rounds = rounds();
    let started = Instant::now();
    let dir = TempDir::new("soak-sup");
    let services = dir.path().join("services");
    std::fs::create_dir_all(&services).expect("services dir");
    let (rpc_port, agent_port, sup_port) = (free_port(), free_port(), free_port());
    let config = write_config(dir.path(), &mistify_e2e::agent_test_rpc_config(rpc_port));
    let db = dir.path().join("agent.redb");
    let mut rpc_command = vec![example("test-rpc-service").display().to_string()];
    rpc_command.extend(rpc_args(rpc_port, DELAY_MS));
    let mut agent_command = vec![binary("mistify-agent").display().to_string()];
    agent_command.extend(agent_args(&config, &db, agent_port));
    let manifests = [
        (
            "10-rpc.json",
            json!({
                "name": "subagent:test",
                "command": rpc_command,
                "restart": true,
                "restartBackoff": "10ms",
                "startLimitBurst": 0,
                "startLimitInterval": "100ms",
                "ready": format!("tcp:{rpc_port}"),
                "stopTime": "2s"
            }),
        ),
        (
            "50-agent.json",
            json!({
                "name": "agent:soak",
                "command": agent_command,
                "restart": true,
                "depends": ["subagent:test"],
                "onDependencyLoss": "keep",
                "ready": format!("tcp:{agent_port}"),
                "stopTime": "10s"
            }),
        ),
    ];
    for (file, manifest) in &manifests {
        std::fs::write(services.join(file), manifest.to_string()).expect("manifest");
    }
    let supervisor = format!("http://127.0.0.1:{sup_port}");
    // Its log (a few lines per restart) is kept to warnings.
    let mut supervisord = Daemon::start_with_env(
        &binary("mistify-supervisord"),
        &[
            "--addr".into(),
            supervisor.clone(),
            "--dir".into(),
            dir.path().display().to_string(),
        ],
        &[("RUST_LOG", "warn")],
        sup_port,
    );
    let http = reqwest::Client::new();
    let agent_pid = ready_pid(&http, &supervisor, "agent:soak", 0).await;
    let mut rpc_pid = ready_pid(&http, &supervisor, "subagent:test", 0).await;
    let client = Client::new(&format!("http://127.0.0.1:{agent_port}")).expect("client");

    let mut guests = Vec::new();
    for _ in 0..4 {
        let created = client
            .create_guest(&small_vm())
            .await
            .expect("POST /guests");
        guests.push((created.body.id, created.job_id.expect("job id")));
    }
    for (_, job) in &guests {
        let done = client
            .wait_job(job, Duration::from_secs(30))
            .await
            .expect("create job");
        assert_eq!(done.status, JobStatus::Complete, "{done:?}");
    }

    let mut reasons: BTreeMap<String, u64> = BTreeMap::new();
    let (mut followers_complete, mut followers_error) = (0u64, 0u64);
    let mut recovery_worst = Duration::ZERO;
    for round in 0..rounds {
        let guest = &guests[(round % guests.len() as u64) as usize].0;
        let running = client
            .guest_action(guest, GuestAction::Reboot)
            .await
            .expect("reboot")
            .job_id
            .expect("job id");
        // Queued behind it: runs after the kill, whatever the sub-agent's state.
        let follower = client
            .guest_action(guest, GuestAction::Restart)
            .await
            .expect("restart")
            .job_id
            .expect("job id");
        let deadline = Instant::now() + Duration::from_secs(10);
        while client.get_job(&running).await.expect("job").status != JobStatus::Running {
            assert!(
                Instant::now() < deadline,
                "round {round}: the job never ran"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // The call is at the sub-agent, which answers after DELAY_MS.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let killed = std::process::Command::new("kill")
            .args(["-KILL", &rpc_pid.to_string()])
            .status()
            .expect("kill");
        assert!(killed.success(), "round {round}: kill -9 {rpc_pid}");
        let killed_at = Instant::now();

        let job = client
            .wait_job(&running, Duration::from_secs(30))
            .await
            .expect("job");
        assert_eq!(job.status, JobStatus::Error, "round {round}: {job:?}");
        assert!(!job.message.is_empty(), "round {round}: no reason: {job:?}");
        *reasons.entry(job.message.clone()).or_default() += 1;
        let next = client
            .wait_job(&follower, Duration::from_secs(30))
            .await
            .expect("job");
        match next.status {
            JobStatus::Complete => followers_complete += 1,
            JobStatus::Error => {
                assert!(!next.message.is_empty(), "round {round}: {next:?}");
                followers_error += 1;
                *reasons.entry(next.message.clone()).or_default() += 1;
            }
            status => panic!("round {round}: follower {status}"),
        }
        rpc_pid = ready_pid(&http, &supervisor, "subagent:test", rpc_pid).await;
        recovery_worst = recovery_worst.max(killed_at.elapsed());
        let agent = service(&http, &supervisor, "agent:soak").await;
        assert_eq!(
            agent["pid"].as_u64(),
            Some(agent_pid),
            "round {round}: the agent was restarted: {agent}"
        );
        assert_eq!(agent["state"], "running", "round {round}: {agent}");
    }
    // The sub-agent is back: a job on it completes.
    let last = client
        .guest_action(&guests[0].0, GuestAction::Reboot)
        .await
        .expect("reboot")
        .job_id
        .expect("job id");
    let done = client
        .wait_job(&last, Duration::from_secs(30))
        .await
        .expect("job");
    assert_eq!(done.status, JobStatus::Complete, "{done:?}");
    let status = supervisord.terminate(Duration::from_secs(30));
    assert!(
        status.is_some_and(|s| s.success()),
        "supervisord stop: {status:?}"
    );
    println!(
        "SOAK: sub-agent kill -9 under the supervisor: {rounds} rounds in {:.1} s; \
         every running job Error with a reason; jobs queued behind them: {followers_complete} \
         Complete, {followers_error} Error with a reason; agent pid {agent_pid} throughout; \
         slowest round from the kill to both jobs ended and the sub-agent ready again {:.0} ms; reasons: {reasons:?}",
        started.elapsed().as_secs_f64(),
        recovery_worst.as_secs_f64() * 1000.0
    );
}

// ------------------------------------------------------------------ load

/// Concurrent clients of the load test.
const CLIENTS: usize = 64;

/// `VmRSS` of `pid` in KiB.
fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:")
}

/// A `kB` line of `/proc/PID/status` (`VmRSS:`, `RssAnon:`, …); 0 when absent.
fn status_kib(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// `anonymous+file` KiB of `pid`, for the figures.
fn rss_split(pid: u32) -> String {
    format!(
        "{}+{}",
        status_kib(pid, "RssAnon:"),
        status_kib(pid, "RssFile:")
    )
}

/// The value of the sample `name` (with its labels, as printed) in the agent's `/metrics`;
/// 0 when absent.
async fn metric(http: &reqwest::Client, base: &str, name: &str) -> f64 {
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics body");
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// `CLIENTS` clients sending the mix for `duration`: 60 % proxied Info (metrics),
/// 10 % local Info (`GET /guests/{id}`), 25 % Async (actions), 5 % Stream (downloads).
async fn load(
    http: &reqwest::Client,
    ids: &Arc<Vec<String>>,
    base: &str,
    duration: Duration,
) -> Tally {
    let stop_at = Instant::now() + duration;
    let workers = (0..CLIENTS).map(|worker| {
        let (http, ids, base) = (http.clone(), ids.clone(), base.to_string());
        tokio::spawn(async move {
            let mut rng = Lcg(worker as u64 + 1);
            let mut tally = Tally::default();
            while Instant::now() < stop_at {
                let id = &ids[rng.below(ids.len() as u64) as usize];
                // 60 % proxied Info, 10 % local Info, 25 % Async, 5 % Stream.
                let pick = rng.below(100);
                let (kind, request) = match pick {
                    0..=59 => {
                        let metric = ["cpu", "disk", "nic"][(pick % 3) as usize];
                        (0, http.get(format!("{base}/guests/{id}/metrics/{metric}")))
                    }
                    60..=69 => (1, http.get(format!("{base}/guests/{id}"))),
                    70..=94 => {
                        let action =
                            ["reboot", "restart", "shutdown", "poweroff"][(pick % 4) as usize];
                        (2, http.post(format!("{base}/guests/{id}/{action}")))
                    }
                    _ => (
                        3,
                        http.get(format!("{base}/guests/{id}/snapshots/s1/download")),
                    ),
                };
                let sent = Instant::now();
                let outcome = match request.send().await {
                    Ok(reply) => {
                        let status = reply.status().as_u16();
                        match reply.bytes().await {
                            Ok(body) => Ok((status, body)),
                            Err(e) => Err(format!("reading the body: {e}")),
                        }
                    }
                    Err(e) => Err(e.to_string()),
                };
                tally
                    .latencies_us
                    .push(u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX));
                tally.by_kind[kind] += 1;
                match outcome {
                    Ok((200 | 202, _)) => tally.ok += 1,
                    Ok((503, _)) => tally.shed += 1,
                    Ok((status, body)) => tally.errors.push(format!(
                        "{status}: {}",
                        String::from_utf8_lossy(&body[..body.len().min(200)])
                    )),
                    Err(e) => tally.errors.push(e),
                }
            }
            tally
        })
    });
    let mut total = Tally::default();
    for task in futures::future::join_all(workers).await {
        let t = task.expect("worker");
        total.ok += t.ok;
        total.shed += t.shed;
        total.errors.extend(t.errors);
        total.latencies_us.extend(t.latencies_us);
        for k in 0..4 {
            total.by_kind[k] += t.by_kind[k];
        }
    }
    total
}

/// Waits until the agent's queues are empty (`mistify_agent_queue_depth` 0).
async fn wait_queues_empty(http: &reqwest::Client, base: &str) -> Duration {
    let started = Instant::now();
    while metric(http, base, "mistify_agent_queue_depth").await > 0.0 {
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "the queues did not drain"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    started.elapsed()
}

/// Quiet time before an RSS figure (the last jobs and connections done).
const AT_REST: Duration = Duration::from_secs(3);

#[derive(Default)]
struct Tally {
    ok: u64,
    shed: u64,
    errors: Vec<String>,
    latencies_us: Vec<u32>,
    by_kind: [u64; 4],
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "load: run by `make soak` on a release build"]
async fn load_mixed_requests_across_1000_guests() {
    const GUESTS: usize = 1000;
    let seconds = env_number("SOAK_LOAD_SECONDS", 60);
    let dir = TempDir::new("soak-load");
    let rpc = start_rpc(0);
    let config = write_config(dir.path(), &mistify_e2e::agent_test_rpc_config(rpc.port));
    let port = free_port();
    let agent = Daemon::start(
        &binary("mistify-agent"),
        &agent_args(&config, &dir.path().join("agent.redb"), port),
        port,
    );
    wait_for_port(([127, 0, 0, 1], port).into(), Duration::from_secs(5)).expect("agent");
    let base = agent.url();
    let client = Client::new(&base).expect("client");

    // 1,000 guests, created 64 at a time, every create job complete.
    let ids: Arc<Vec<String>> = {
        let mut ids = Vec::with_capacity(GUESTS);
        let mut jobs = Vec::with_capacity(GUESTS);
        for chunk in 0..GUESTS.div_ceil(CLIENTS) {
            let batch = (chunk * CLIENTS..((chunk + 1) * CLIENTS).min(GUESTS)).map(|_| {
                let client = client.clone();
                tokio::spawn(async move { client.create_guest(&small_vm()).await })
            });
            for task in futures::future::join_all(batch).await {
                let created = task.expect("task").expect("POST /guests");
                ids.push(created.body.id);
                jobs.push(created.job_id.expect("job id"));
            }
        }
        for job in &jobs {
            let done = client
                .wait_job(job, Duration::from_secs(60))
                .await
                .expect("create job");
            assert_eq!(done.status, JobStatus::Complete, "{done:?}");
        }
        Arc::new(ids)
    };
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(CLIENTS)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("http client");
    // "Before": the agent at rest with its 1,000 guests after a warm-up pass of the
    // load (the allocator's working set in place): what comes after is growth.
    let warm_up = load(&http, &ids, &base, Duration::from_secs(seconds.div_ceil(4))).await;
    assert!(warm_up.errors.is_empty(), "{:?}", &warm_up.errors[..1]);
    wait_queues_empty(&http, &base).await;
    settle(&client, Duration::from_secs(60)).await;
    tokio::time::sleep(AT_REST).await;
    let rss_before = rss_kib(agent.pid());
    let split_before = rss_split(agent.pid());

    let peak = Arc::new(AtomicU64::new(rss_before));
    let stop_at = Instant::now() + Duration::from_secs(seconds);
    let sampler = {
        let peak = peak.clone();
        let pid = agent.pid();
        tokio::spawn(async move {
            while Instant::now() < stop_at {
                peak.fetch_max(rss_kib(pid), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    };
    let started = Instant::now();
    let mut total = load(&http, &ids, &base, Duration::from_secs(seconds)).await;
    let elapsed = started.elapsed();
    let _ = sampler.await;
    let backlog = metric(&http, &base, "mistify_agent_queue_depth").await;
    let drained_in = wait_queues_empty(&http, &base).await;
    settle(&client, Duration::from_secs(60)).await;
    let failed = metric(
        &http,
        &base,
        "mistify_agent_jobs_finished_total{status=\"Error\"}",
    )
    .await;
    let finished = metric(
        &http,
        &base,
        "mistify_agent_jobs_finished_total{status=\"Complete\"}",
    )
    .await;
    assert_eq!(failed, 0.0, "jobs failed under load");
    tokio::time::sleep(AT_REST).await;
    let rss_after = rss_kib(agent.pid());
    let split_after = rss_split(agent.pid());

    let requests = total.latencies_us.len() as u64;
    total.latencies_us.sort_unstable();
    let pct = |p: f64| {
        let i = ((requests as f64 * p).ceil() as usize).clamp(1, total.latencies_us.len()) - 1;
        f64::from(total.latencies_us[i]) / 1000.0
    };
    println!(
        "SOAK: load: {CLIENTS} clients, {GUESTS} guests, {:.1} s: {requests} requests \
         (proxied Info {}, local Info {}, Async {}, Stream {}), {:.0} req/s; {} ok, {} 503 \
         ({:.3} %), {} other errors; latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; \
         RSS (anonymous+file) at rest after a warm-up {} KiB ({split_before}), peak {} KiB, \
         at rest after it {} KiB ({split_after}; {:+.1} %); {finished} jobs Complete, \
         {failed} Error; {backlog} jobs queued when the load stopped, drained in {:.1} s",
        elapsed.as_secs_f64(),
        total.by_kind[0],
        total.by_kind[1],
        total.by_kind[2],
        total.by_kind[3],
        requests as f64 / elapsed.as_secs_f64(),
        total.ok,
        total.shed,
        100.0 * total.shed as f64 / requests.max(1) as f64,
        total.errors.len(),
        pct(0.50),
        pct(0.99),
        pct(1.0),
        rss_before,
        peak.load(Ordering::Relaxed),
        rss_after,
        100.0 * (rss_after as f64 - rss_before as f64) / rss_before.max(1) as f64,
        drained_in.as_secs_f64()
    );
    assert!(
        total.errors.is_empty(),
        "{} errors, the first: {:?}",
        total.errors.len(),
        &total.errors[..total.errors.len().min(5)]
    );
    assert!(
        total.shed * 100 <= requests,
        "{} of {requests} requests answered 503",
        total.shed
    );
    assert!(
        rss_after * 10 <= rss_before * 11,
        "RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
}

/// The smallest guest the agent accepts: a virtual machine needs memory and a CPU.
fn small_vm() -> Guest {
    Guest {
        memory: 256,
        cpu: 1,
        ..Guest::default()
    }
}
