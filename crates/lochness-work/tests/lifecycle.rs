//! cplacerd and cworkerd end to end: guests created through the library's enqueue
//! functions are placed, fetched and created on real agents; guest actions run; a
//! delete removes the guest from its agent and gives its address and resources back; a
//! guest that cannot be placed fails with the original's text and is deleted without an
//! agent; an agent that does not answer fails its job with the reason. The daemons serve
//! Prometheus metrics.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{Agent, Cluster, Etcd, Proc};
use lochness::{JobAction, JobStatus};

const LONG: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread")]
async fn guests_are_placed_created_acted_on_and_deleted() {
    if mistify_e2e::skipped("etcd") {
        return;
    }
    let dir = common::tempdir("lifecycle");
    let etcd = Etcd::start(dir.path());
    let agents = [
        Agent::start(dir.path(), "a", 0),
        Agent::start(dir.path(), "b", 0),
    ];
    let cluster = Cluster::new(&etcd.url, &[&agents[0], &agents[1]]).await;
    let ctx = &cluster.ctx;
    // Nothing is killed, and the steps are counted exactly below: the daemons' default
    // lease, which a stall of the machine does not lose.
    let placer = Proc::start("cplacerd", dir.path(), &etcd.url, &["--lease-ttl", "10s"]);
    let worker = Proc::start(
        "cworkerd",
        dir.path(),
        &etcd.url,
        &["--concurrency", "4", "--lease-ttl", "10s"],
    );
    let logs = |open: &[String]| common::story(&[&placer, &worker], dir.path(), open);

    // Five guests; a start queued right after the first one's create waits for it.
    let mut created = Vec::new();
    for _ in 0..5 {
        created.push(cluster.create_guest().await);
    }
    let early_start = ctx
        .queue_job(&created[0].0.id, JobAction::Start)
        .await
        .expect("start");
    let mut ids: Vec<String> = created.iter().map(|(_, j)| j.id.clone()).collect();
    ids.push(early_start.id.clone());
    let jobs = common::finished(ctx, &ids, LONG, &logs).await;
    for job in &jobs {
        assert_eq!(job.status, JobStatus::Done, "{job:?}\n{}", logs(&[]));
        assert!(
            job.started_at.is_some() && job.finished_at.is_some(),
            "{job:?}"
        );
        assert!(job.error.is_empty());
    }
    for (guest, job) in &created {
        let done = ctx.job(&job.id).await.expect("job");
        assert_eq!(
            done.action,
            JobAction::Create,
            "the select-hypervisor job ends as create"
        );
        let placed = ctx.guest(&guest.id).await.expect("guest");
        assert!(
            cluster.hypervisors.contains_key(&placed.hypervisor),
            "{placed:?}"
        );
        assert_eq!(placed.bridge, "br0");
        let on_agent = cluster
            .agent_of(&placed.hypervisor)
            .get_guest(&guest.id)
            .await
            .unwrap_or_else(|e| panic!("guest {} is not on its agent: {e}", guest.id));
        assert_eq!(
            on_agent.nics[0].address,
            placed.ip.map(|ip| ip.to_string()).unwrap_or_default()
        );
    }
    // The early start ran after the create on the agent.
    let first = ctx.guest(&created[0].0.id).await.expect("guest");
    let agent = cluster.agent_of(&first.hypervisor);
    let mut agent_jobs = agent.list_guest_jobs(&first.id, None).await.expect("jobs");
    agent_jobs.sort_by_key(|j| j.queued_at);
    let actions: Vec<&str> = agent_jobs.iter().map(|j| j.action.as_str()).collect();
    assert_eq!(actions, ["create", "start"], "{agent_jobs:?}");

    // Every guest action, suspend included, on the second guest.
    let second = ctx.guest(&created[1].0.id).await.expect("guest");
    let mut action_ids = Vec::new();
    for action in JobAction::GUEST_ACTIONS {
        action_ids.push(ctx.queue_job(&second.id, action).await.expect("action").id);
    }
    for job in common::finished(ctx, &action_ids, LONG, &logs).await {
        assert_eq!(job.status, JobStatus::Done, "{job:?}");
    }
    let agent = cluster.agent_of(&second.hypervisor);
    let seen: BTreeSet<String> = agent
        .list_guest_jobs(&second.id, None)
        .await
        .expect("jobs")
        .into_iter()
        .map(|j| j.action)
        .collect();
    for action in JobAction::GUEST_ACTIONS {
        assert!(seen.contains(action.as_str()), "{action} not run: {seen:?}");
    }

    // Delete: gone from the agent and from etcd, address and allocation given back.
    let flavor = ctx.flavor(&cluster.flavor).await.expect("flavor").resources;
    let before = ctx
        .hypervisor_resources(&second.hypervisor)
        .await
        .expect("resources");
    let delete = ctx
        .queue_job(&second.id, JobAction::Delete)
        .await
        .expect("delete");
    let done = common::finished(ctx, std::slice::from_ref(&delete.id), LONG, &logs).await;
    assert_eq!(done[0].status, JobStatus::Done, "{:?}", done[0]);
    let err = agent.get_guest(&second.id).await.unwrap_err();
    assert!(err.is_not_found(), "{err}");
    assert!(ctx.guest(&second.id).await.unwrap_err().is_not_found());
    let ip = second.ip.expect("ip").to_string();
    let reserved = ctx
        .subnet(&cluster.subnet)
        .await
        .expect("subnet")
        .addresses();
    assert!(!reserved.contains_key(&ip), "{ip} still reserved");
    assert_eq!(reserved.len(), 4);
    let hv = ctx
        .hypervisor(&second.hypervisor)
        .await
        .expect("hypervisor");
    assert!(!hv.guests().contains(&second.id));
    let after = ctx
        .hypervisor_resources(&second.hypervisor)
        .await
        .expect("resources");
    assert_eq!(after.allocated, before.allocated.saturating_sub(&flavor));
    assert_eq!(common::check_resources(ctx, &cluster).await, 4);

    // A guest of an unknown flavor is refused before anything is written; one whose
    // flavor fits no hypervisor fails placement with the reason, stays as it was, and its
    // delete needs no agent.
    let mut unknown = ctx.new_guest();
    unknown.flavor = "dddd0069-4444-4444-8444-000000000069".into();
    unknown.network = cluster.network.clone();
    let refused = ctx.create_guest_with_job(&mut unknown).await;
    assert!(
        refused.as_ref().is_err_and(|e| e.is_not_found()),
        "a guest of an unknown flavor: {refused:?}"
    );
    assert!(ctx.guest(&unknown.id).await.unwrap_err().is_not_found());
    let mut huge = ctx.new_flavor();
    huge.image = "289120e4-ed12-431d-8d18-48f8a94bb05a".into();
    huge.resources = lochness::Resources {
        memory: common::HV_RESOURCES.memory + 1,
        disk: 1,
        cpu: 1,
    };
    huge.save().await.expect("flavor");
    let mut lost = ctx.new_guest();
    lost.flavor = huge.id.clone();
    lost.network = cluster.network.clone();
    let job = ctx.create_guest_with_job(&mut lost).await.expect("guest");
    let failed = common::finished(ctx, std::slice::from_ref(&job.id), LONG, &logs).await;
    assert_eq!(
        (failed[0].status, failed[0].action),
        (JobStatus::Error, JobAction::SelectHypervisor),
        "{:?}",
        failed[0]
    );
    assert!(
        failed[0].error.contains(&lost.id),
        "the reason names the guest: {:?}",
        failed[0].error
    );
    assert_eq!((failed[0].started_at, failed[0].finished_at), (None, None));
    let unplaced = ctx.guest(&lost.id).await.expect("guest");
    assert!(unplaced.hypervisor.is_empty() && unplaced.ip.is_none());
    let delete = ctx
        .queue_job(&lost.id, JobAction::Delete)
        .await
        .expect("delete");
    let done = common::finished(ctx, std::slice::from_ref(&delete.id), LONG, &logs).await;
    assert_eq!(done[0].status, JobStatus::Done, "{:?}", done[0]);
    assert!(ctx.guest(&lost.id).await.unwrap_err().is_not_found());
    assert!(common::keys(ctx, "lochness/queue/").await.is_empty());
    assert!(common::keys(ctx, "lochness/claims/").await.is_empty());

    // Metrics and health: Prometheus text for a scraper, JSON otherwise.
    let http = reqwest::Client::new();
    let answer = http
        .get(format!("{}/metrics", worker.url()))
        .header(
            "accept",
            "application/openmetrics-text; version=1.0.0, text/plain;q=0.5",
        )
        .send()
        .await
        .expect("metrics");
    assert_eq!(answer.status(), 200);
    let content_type = answer.headers()["content-type"]
        .to_str()
        .unwrap_or("")
        .to_string();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let text = answer.text().await.expect("body");
    assert!(
        text.contains(r#"lochness_jobs_total{action="create",outcome="done"} 5"#),
        "{text}"
    );
    assert!(
        text.contains(r#"lochness_jobs_total{action="fetch",outcome="fetched"} 5"#),
        "{text}"
    );
    assert!(
        text.contains(r#"lochness_jobs_total{action="delete",outcome="done"} 2"#),
        "{text}"
    );
    assert!(
        text.contains("lochness_step_duration_seconds_bucket"),
        "{text}"
    );
    assert!(
        text.contains(r#"lochness_queue_depth{queue="work"} 0"#),
        "{text}"
    );
    assert!(text.contains("lochness_claims_held 0"), "{text}");
    let answer = http
        .get(format!("{}/metrics", placer.url()))
        .header("accept", "text/plain")
        .send()
        .await
        .expect("metrics");
    let content_type = answer.headers()["content-type"]
        .to_str()
        .unwrap_or("")
        .to_string();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let text = answer.text().await.expect("body");
    assert!(
        text.contains(r#"lochness_jobs_total{action="select-hypervisor",outcome="placed"} 5"#),
        "{text}"
    );
    assert!(
        text.contains(r#"lochness_jobs_total{action="select-hypervisor",outcome="unplaceable"} 1"#),
        "{text}"
    );
    let answer = http
        .get(format!("{}/metrics", placer.url()))
        .send()
        .await
        .expect("metrics");
    let content_type = answer.headers()["content-type"]
        .to_str()
        .unwrap_or("")
        .to_string();
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    let json: serde_json::Value = answer.json().await.expect("json");
    assert_eq!(json["jobs"]["select-hypervisor"]["placed"], 5, "{json}");
    assert_eq!(
        json["jobs"]["select-hypervisor"]["unplaceable"], 1,
        "{json}"
    );
    assert_eq!(json["claims_held"], 0, "{json}");
    let health = http
        .get(format!("{}/healthz", placer.url()))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status(), 200);
    assert!(health.text().await.expect("body").contains("cplacerd"));
    drop(agents);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_that_does_not_answer_fails_the_job_with_the_reason() {
    if mistify_e2e::skipped("etcd") {
        return;
    }
    let dir = common::tempdir("unreachable");
    let etcd = Etcd::start(dir.path());
    let cluster = Cluster::new(&etcd.url, &[]).await;
    let subnet = cluster.ctx.subnet(&cluster.subnet).await.expect("subnet");
    // A hypervisor whose agent port nothing listens on.
    let dead = mistify_e2e::free_port();
    common::add_hypervisor(&cluster.ctx, &subnet, dead).await;
    let placer = Proc::start("cplacerd", dir.path(), &etcd.url, &[]);
    let worker = Proc::start(
        "cworkerd",
        dir.path(),
        &etcd.url,
        &["--agent-retry-for", "2s"],
    );
    let logs = |open: &[String]| common::story(&[&placer, &worker], dir.path(), open);
    let (guest, job) = cluster.create_guest().await;
    let failed = common::finished(&cluster.ctx, std::slice::from_ref(&job.id), LONG, &logs).await;
    let job = &failed[0];
    assert_eq!(
        (job.status, job.action),
        (JobStatus::Error, JobAction::Fetch),
        "{job:?}"
    );
    assert!(
        job.error.starts_with(&format!(
            "fetch: the agent at http://127.0.0.1:{dead} did not answer POST /images for 2s"
        )),
        "{job:?}"
    );
    assert!(job.started_at.is_some() && job.finished_at.is_some());
    // The guest keeps its placement: deleting it is the operator's decision.
    assert!(!cluster
        .ctx
        .guest(&guest.id)
        .await
        .expect("guest")
        .hypervisor
        .is_empty());
    assert!(common::keys(&cluster.ctx, "lochness/queue/")
        .await
        .is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_agent_step_fails_the_job_and_leaves_the_guest_whole() {
    if mistify_e2e::skipped("etcd") {
        return;
    }
    let dir = common::tempdir("failing");
    let etcd = Etcd::start(dir.path());
    // An agent whose every create fails in its sub-agent.
    let broken = Agent::start_with(dir.path(), "broken", 0, &[("create", "Test.NoSuchMethod")]);
    let cluster = Cluster::new(&etcd.url, &[&broken]).await;
    let ctx = &cluster.ctx;
    let placer = Proc::start("cplacerd", dir.path(), &etcd.url, &[]);
    let worker = Proc::start("cworkerd", dir.path(), &etcd.url, &[]);
    let logs = |open: &[String]| common::story(&[&placer, &worker], dir.path(), open);
    let (guest, job) = cluster.create_guest().await;
    let failed = common::finished(ctx, std::slice::from_ref(&job.id), LONG, &logs).await;
    let job = &failed[0];
    assert_eq!(
        (job.status, job.action),
        (JobStatus::Error, JobAction::Create),
        "{job:?}"
    );
    assert!(
        job.error.starts_with("create: "),
        "the stage is named: {job:?}"
    );
    assert!(
        job.error.len() > "create: ".len(),
        "with the agent's reason: {job:?}"
    );
    assert!(
        job.started_at.is_some() && job.finished_at.is_some(),
        "{job:?}"
    );
    // Placed whole (address, allocation, link), never half: deleting it gives all back.
    let placed = ctx.guest(&guest.id).await.expect("guest");
    let hv = cluster
        .hypervisors
        .keys()
        .next()
        .expect("hypervisor")
        .clone();
    assert_eq!(placed.hypervisor, hv);
    let ip = placed.ip.expect("address").to_string();
    let reserved = ctx
        .subnet(&cluster.subnet)
        .await
        .expect("subnet")
        .addresses();
    assert_eq!(reserved.get(&ip), Some(&guest.id), "{reserved:?}");
    assert_eq!(common::check_resources(ctx, &cluster).await, 1);
    assert!(common::keys(ctx, "lochness/queue/").await.is_empty());
    assert!(common::keys(ctx, "lochness/claims/").await.is_empty());

    let delete = ctx
        .queue_job(&guest.id, JobAction::Delete)
        .await
        .expect("delete");
    let done = common::finished(ctx, std::slice::from_ref(&delete.id), LONG, &logs).await;
    assert_eq!(
        done[0].status,
        JobStatus::Done,
        "{:?}\n{}",
        done[0],
        logs(&[])
    );
    assert!(ctx.guest(&guest.id).await.unwrap_err().is_not_found());
    assert!(ctx
        .subnet(&cluster.subnet)
        .await
        .expect("subnet")
        .addresses()
        .is_empty());
    assert_eq!(common::check_resources(ctx, &cluster).await, 0);
    let figures = ctx.hypervisor_resources(&hv).await.expect("resources");
    assert_eq!(figures.allocated, lochness::Resources::default());
}

#[test]
fn help_names_the_flags_of_both_daemons() {
    for (bin, program) in [
        (env!("CARGO_BIN_EXE_cplacerd"), "cplacerd"),
        (env!("CARGO_BIN_EXE_cworkerd"), "cworkerd"),
    ] {
        let out = std::process::Command::new(bin)
            .arg("--help")
            .output()
            .expect("run --help");
        assert!(out.status.success(), "{program} --help: {out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        for flag in [
            "--etcd",
            "--log-level",
            "--http",
            "--lease-ttl",
            "--concurrency",
        ] {
            assert!(
                text.contains(flag),
                "{program} --help lacks {flag}:\n{text}"
            );
        }
        // A bad flag is refused before anything starts.
        let out = std::process::Command::new(bin)
            .args(["--concurrency", "0"])
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(2), "{program}: {out:?}");
    }
}
