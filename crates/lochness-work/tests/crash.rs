//! Crash safety and concurrency of cplacerd and cworkerd with real agents: several
//! placers and workers share the queues; placers and workers are killed with `kill -9`
//! at random moments while jobs flow and restarted. Afterwards every job is done, no
//! guest was placed twice or got two create jobs on its agent, the subnet's
//! reservations are exactly the guests' addresses, and each hypervisor's resources
//! exactly its guests' flavors.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::{Agent, Cluster, Etcd, Proc};
use lochness::{Job, JobAction, JobStatus, Resources};
use rand::Rng;

const LONG: Duration = Duration::from_secs(300);
/// The agents and guests of the concurrency test.
const AGENTS: usize = 5;
const GUESTS: usize = 100;

/// Guests created with their jobs: every third also gets a reboot, every fifth is then
/// deleted; the ids of every job, and the guests that must be left.
struct Load {
    jobs: Vec<String>,
    deleted: BTreeSet<String>,
    kept: BTreeSet<String>,
}

impl Load {
    fn new() -> Load {
        Load {
            jobs: Vec::new(),
            deleted: BTreeSet::new(),
            kept: BTreeSet::new(),
        }
    }

    async fn add(&mut self, cluster: &Cluster, n: usize) {
        for _ in 0..n {
            let i = self.deleted.len() + self.kept.len();
            let (guest, job) = cluster.create_guest().await;
            self.jobs.push(job.id);
            if i.is_multiple_of(3) {
                let reboot = cluster.ctx.queue_job(&guest.id, JobAction::Reboot).await;
                self.jobs.push(reboot.expect("reboot").id);
            }
            if i.is_multiple_of(5) {
                let delete = cluster.ctx.queue_job(&guest.id, JobAction::Delete).await;
                self.jobs.push(delete.expect("delete").id);
                self.deleted.insert(guest.id);
            } else {
                self.kept.insert(guest.id);
            }
        }
    }
}

/// What etcd and the agents hold must be what the finished jobs say.
async fn check(
    cluster: &Cluster,
    agents: &[Agent],
    load: &Load,
    jobs: &[Job],
    logs: &str,
    dir: &std::path::Path,
) {
    let ctx = &cluster.ctx;
    let failed: Vec<&Job> = jobs
        .iter()
        .filter(|j| j.status != JobStatus::Done)
        .collect();
    assert!(failed.is_empty(), "jobs not done: {failed:#?}\n{logs}");
    assert!(common::keys(ctx, "lochness/queue/").await.is_empty());
    assert!(common::keys(ctx, "lochness/claims/").await.is_empty());

    // The guests left, each on exactly one hypervisor, with distinct addresses.
    let guests: BTreeMap<String, lochness::Guest> = ctx
        .guests()
        .await
        .expect("guests")
        .into_iter()
        .map(|g| (g.id.clone(), g))
        .collect();
    assert_eq!(
        guests.keys().cloned().collect::<BTreeSet<_>>(),
        load.kept,
        "the guests left in etcd"
    );
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
        .map(|g| {
            (
                g.ip.expect("placed guest has an address").to_string(),
                g.id.clone(),
            )
        })
        .collect();
    assert_eq!(reserved, held, "the reservations are the guests' addresses");
    common::check_resources(ctx, cluster).await;

    // On the agents: every kept guest on its own agent only, no deleted guest anywhere,
    // and no guest ever got two create jobs.
    let mut creates: BTreeMap<String, usize> = BTreeMap::new();
    for (port, agent) in agents.iter().map(|a| (a.port(), a)) {
        let client = agent.client();
        let on_agent: BTreeSet<String> = client
            .list_guests()
            .await
            .expect("guests")
            .into_iter()
            .map(|g| g.id)
            .collect();
        let expected: BTreeSet<String> = guests
            .values()
            .filter(|g| cluster.hypervisors[&g.hypervisor] == port)
            .map(|g| g.id.clone())
            .collect();
        assert_eq!(on_agent, expected, "guests on the agent on port {port}");
        for job in client.list_jobs(Some(100_000)).await.expect("jobs") {
            if job.action == "create" {
                *creates.entry(job.guest_id.clone()).or_default() += 1;
            }
        }
    }
    let twice: Vec<_> = creates.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "guests with two create jobs: {twice:?}\n{logs}"
    );
    for id in load.kept.iter().chain(&load.deleted) {
        if creates.get(id) != Some(&1) {
            let theirs: Vec<&Job> = jobs.iter().filter(|j| &j.guest == id).collect();
            let mut on_agents = String::new();
            for agent in agents {
                let listed = agent.client().list_guest_jobs(id, None).await;
                on_agents.push_str(&format!("agent {}: {listed:#?}\n", agent.port()));
            }
            panic!(
                "guest {id} has {:?} create jobs on the agents; its jobs: {theirs:#?}\n\
                 on the agents: {on_agents}\n{}",
                creates.get(id),
                common::grep_logs(dir, std::slice::from_ref(id))
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn several_placers_and_workers_share_the_queues() {
    if mistify_e2e::skipped("etcd") {
        return;
    }
    let dir = common::tempdir("several");
    let etcd = Etcd::start(dir.path());
    let agents: Vec<Agent> = (0..AGENTS)
        .map(|i| Agent::start(dir.path(), &i.to_string(), 20))
        .collect();
    // Room for 22 guests per hypervisor, 110 in all for 100 guests: placers racing for
    // the last places must not overcommit one.
    let cluster = Cluster::sized(
        &etcd.url,
        &agents.iter().collect::<Vec<_>>(),
        Resources {
            memory: 64 * 22,
            disk: 16 * 22,
            cpu: 22,
        },
    )
    .await;
    let mut load = Load::new();
    load.add(&cluster, GUESTS).await;
    // Nothing is killed here, so the leases are the daemons' default length: a stall of
    // the machine long enough to lose a 2 s lease (etcd's fsync under load) would hand
    // jobs over, and a step whose write was in flight then is counted by nobody or
    // redone (see the count below).
    let flags = |n: &'static str| ["--concurrency", n, "--lease-ttl", "10s"];
    let mut procs: Vec<Proc> = (0..4)
        .map(|_| Proc::start("cplacerd", dir.path(), &etcd.url, &flags("4")))
        .collect();
    procs.extend((0..8).map(|_| Proc::start("cworkerd", dir.path(), &etcd.url, &flags("8"))));
    let logs = |open: &[String]| common::story(&procs.iter().collect::<Vec<_>>(), dir.path(), open);
    let jobs = common::finished(&cluster.ctx, &load.jobs, LONG, &logs).await;
    check(&cluster, &agents, &load, &jobs, &logs(&[]), dir.path()).await;
    // Each job step was counted once, by the one process that did it.
    let mut total: BTreeMap<String, u64> = BTreeMap::new();
    for p in &procs {
        let text = reqwest::Client::new()
            .get(format!("{}/metrics", p.url()))
            .header("accept", "text/plain")
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("body");
        for line in text
            .lines()
            .filter(|l| l.starts_with("lochness_jobs_total{"))
        {
            let (series, n) = line.rsplit_once(' ').expect("sample");
            *total.entry(series.to_string()).or_default() += n.parse::<u64>().expect("count");
        }
    }
    let count = |action: &str, outcome: &str| {
        total
            .get(&format!(
                r#"lochness_jobs_total{{action="{action}",outcome="{outcome}"}}"#
            ))
            .copied()
            .unwrap_or(0)
    };
    let n = GUESTS as u64;
    assert_eq!(count("select-hypervisor", "placed"), n, "{total:?}");
    assert_eq!(count("fetch", "fetched"), n, "{total:?}");
    assert_eq!(count("create", "done"), n, "{total:?}");
    assert_eq!(count("reboot", "done"), n.div_ceil(3), "{total:?}");
    assert_eq!(
        count("delete", "done"),
        load.deleted.len() as u64,
        "{total:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_placers_and_workers_lose_no_job_and_double_nothing() {
    if mistify_e2e::skipped("etcd") {
        return;
    }
    let dir = common::tempdir("crash");
    let etcd = Etcd::start(dir.path());
    // A slow sub-agent: every guest action takes 200 ms, so kills land mid-job.
    let agents: Vec<Agent> = (0..3)
        .map(|i| Agent::start(dir.path(), &i.to_string(), 200))
        .collect();
    let cluster = Cluster::new(&etcd.url, &agents.iter().collect::<Vec<_>>()).await;
    let start = |i: usize| {
        let (program, extra): (&'static str, &[&str]) = if i < 2 {
            ("cplacerd", &["--concurrency", "2"])
        } else {
            ("cworkerd", &["--concurrency", "8"])
        };
        Proc::start(program, dir.path(), &etcd.url, extra)
    };
    let mut procs: Vec<Proc> = (0..5).map(start).collect();
    let mut load = Load::new();
    let mut kills = BTreeMap::<&str, usize>::new();
    // 12 rounds: 5 more guests, a random pause, one process killed and restarted.
    for _ in 0..12 {
        load.add(&cluster, 5).await;
        let (pause, victim) = {
            let mut rng = rand::rng();
            (rng.random_range(100..900), rng.random_range(0..procs.len()))
        };
        tokio::time::sleep(Duration::from_millis(pause)).await;
        procs[victim].kill_hard();
        *kills.entry(procs[victim].program).or_default() += 1;
        procs[victim] = start(victim);
    }
    eprintln!("kills: {kills:?}; {} jobs", load.jobs.len());
    let logs = |open: &[String]| common::story(&procs.iter().collect::<Vec<_>>(), dir.path(), open);
    let jobs = match common::try_finished(&cluster.ctx, &load.jobs, LONG).await {
        Ok(jobs) => jobs,
        Err(open) => {
            let mut agent_jobs = String::new();
            for agent in &agents {
                for job in agent.client().list_jobs(Some(100_000)).await.expect("jobs") {
                    if open.iter().any(|o| o.ends_with(&job.guest_id)) {
                        agent_jobs.push_str(&format!("{}: {job:?}\n", agent.port()));
                    }
                }
            }
            panic!(
                "jobs not finished: {open:?}\nthe agents' jobs of their guests:\n{agent_jobs}{}",
                logs(&open)
            );
        }
    };
    check(&cluster, &agents, &load, &jobs, &logs(&[]), dir.path()).await;
    // SIGTERM: each stops cleanly and gives its lease back.
    for p in &mut procs {
        let status = p.terminate();
        assert!(
            status.is_some_and(|s| s.success()),
            "{} exited {status:?}:\n{}",
            p.program,
            p.output()
        );
    }
}
