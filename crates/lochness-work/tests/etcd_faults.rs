//! The control plane on a 3-member etcd cluster loses the etcd leader (`kill -9`) while
//! guests are being placed: the lochness client, the placers' watches and the claim
//! leases move to the surviving members, placement goes on after the election, every
//! job finishes, and nothing is allocated twice.

mod common;

use std::time::{Duration, Instant};

use common::{Agent, Cluster, EtcdCluster, Proc};
use lochness::{Job, JobStatus};

const GUESTS: usize = 200;
/// Guests created before the leader is killed; the rest are created after.
const BEFORE: usize = 80;
const LONG: Duration = Duration::from_secs(300);

/// Creates a guest with its select-hypervisor job, retrying while etcd answers errors
/// (a request in flight to the killed member fails). A retry after a create that did
/// commit answers a conflict on the guest's id: then the guest and its job exist.
async fn create(cluster: &Cluster) -> String {
    let mut guest = cluster.ctx.new_guest();
    guest.flavor = cluster.flavor.clone();
    guest.network = cluster.network.clone();
    guest.kind = "kvm".into();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match cluster.ctx.create_guest_with_job(&mut guest).await {
            Ok(_) => return guest.id,
            Err(e) => {
                if cluster.ctx.guest(&guest.id).await.is_ok() {
                    return guest.id;
                }
                assert!(Instant::now() < deadline, "cannot create a guest: {e}");
                eprintln!("create {}: {e}; retrying", guest.id);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// The guests placed now (those with a hypervisor), read through any live member.
async fn placed(cluster: &Cluster) -> usize {
    loop {
        match cluster.ctx.guests().await {
            Ok(guests) => return guests.iter().filter(|g| !g.hypervisor.is_empty()).count(),
            Err(e) => {
                eprintln!("guests: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn losing_the_etcd_leader_mid_placement_loses_and_doubles_nothing() {
    if mistify_e2e::skipped("etcd") {
        return;
    }
    let dir = common::tempdir("etcd-faults");
    let mut etcd = EtcdCluster::start(dir.path());
    let endpoints = etcd.endpoints();
    let agents: Vec<Agent> = (0..3)
        .map(|i| Agent::start(dir.path(), &i.to_string(), 20))
        .collect();
    let agent_refs: Vec<&Agent> = agents.iter().collect();
    let cluster = Cluster::new(&endpoints, &agent_refs).await;
    let procs = [
        Proc::start("cplacerd", dir.path(), &endpoints, &["--concurrency", "2"]),
        Proc::start("cplacerd", dir.path(), &endpoints, &["--concurrency", "2"]),
        Proc::start("cworkerd", dir.path(), &endpoints, &["--concurrency", "16"]),
    ];
    let logs = |open: &[String]| common::story(&procs.iter().collect::<Vec<_>>(), dir.path(), open);

    let mut guests = Vec::new();
    for _ in 0..BEFORE {
        guests.push(create(&cluster).await);
    }
    // Placement is under way: some guests placed, not all.
    while placed(&cluster).await < 10 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let leader = etcd.leader().await.expect("an etcd leader");
    etcd.kill(leader);
    let at_kill = placed(&cluster).await;
    eprintln!("killed etcd member {leader} (the leader) with {at_kill} guests placed");
    for _ in BEFORE..GUESTS {
        guests.push(create(&cluster).await);
    }
    let new_leader = etcd.leader().await;
    assert!(
        new_leader.is_some_and(|l| l != leader),
        "no new leader: {new_leader:?}"
    );

    let ids: Vec<String> = common::all_jobs(&cluster.ctx)
        .await
        .into_iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(ids.len(), GUESTS, "one job per guest");
    let jobs = common::finished(&cluster.ctx, &ids, LONG, &logs).await;
    let failed: Vec<&Job> = jobs
        .iter()
        .filter(|j| j.status != JobStatus::Done)
        .collect();
    assert!(
        failed.iter().all(|j| !j.error.is_empty()),
        "a job failed without a reason: {failed:#?}"
    );
    // The hypervisors have room for every guest: each is placed and created.
    assert!(
        failed.is_empty(),
        "jobs not done: {failed:#?}\n{}",
        logs(&[])
    );
    assert!(common::keys(&cluster.ctx, "lochness/queue/")
        .await
        .is_empty());
    assert!(common::keys(&cluster.ctx, "lochness/claims/")
        .await
        .is_empty());
    // Placement went on after the election: every guest is placed, most of them after.
    assert!(at_kill < GUESTS);
    let state = common::check_consistent(&cluster, &agent_refs).await;
    assert_eq!(state.len(), GUESTS);
    assert!(
        state.values().all(|g| !g.hypervisor.is_empty()),
        "a guest was not placed"
    );
    // The daemons lived through it and stop cleanly on the surviving members.
    for mut p in procs {
        let status = p.terminate();
        assert!(
            status.is_some_and(|s| s.success()),
            "{} exited {status:?}:\n{}",
            p.program,
            p.output()
        );
    }
}
