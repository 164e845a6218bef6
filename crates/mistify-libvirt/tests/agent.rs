//! Our agent (`config/agent.json`) in front of this sub-agent on the test driver; the
//! storage stages go to the fake `test-rpc-service`. Every guest action goes through
//! REST and must complete, and the refreshed guest shows libvirt's state.

use std::time::Duration;

mod common;

use common::start_stack;
use mistify_client::{Client as AgentClient, GuestAction};
use mistify_types::{Disk, Guest, JobStatus, Nic};

async fn complete(client: &AgentClient, job: Option<String>, what: &str) {
    let job = job.unwrap_or_else(|| panic!("{what}: no job id"));
    let done = client
        .wait_job(&job, Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(done.status, JobStatus::Complete, "{what}: {done:?}");
}

async fn refreshed(base: &str, id: &str) -> Guest {
    let resp = reqwest::get(format!("{base}/guests/{id}?refresh=true"))
        .await
        .expect("GET guest");
    assert_eq!(resp.status().as_u16(), 200, "refresh of {id}");
    resp.json().await.expect("guest json")
}

#[tokio::test]
async fn agent_drives_the_guest_lifecycle_through_rest() {
    if mistify_e2e::skipped("libvirt") {
        return;
    }
    let stack = start_stack(&[]);
    let base = stack.agent.url();
    let client = AgentClient::new(&base).expect("client");
    let id = uuid::Uuid::new_v4().to_string();
    let guest = Guest {
        id: id.clone(),
        memory: 128,
        cpu: 1,
        nics: vec![Nic {
            network: "mistify0".into(),
            vlans: Some(vec![1]),
            ..Default::default()
        }],
        disks: vec![Disk {
            size: 64,
            source: "/dev/null".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let created = client.create_guest(&guest).await.expect("POST /guests");
    assert_eq!(created.status, 202);
    complete(&client, created.job_id, "create").await;
    let g = refreshed(&base, &id).await;
    assert_eq!(g.state, "shutoff");
    assert_eq!(g.disks[0].device, "vda");

    for (action, state) in [
        (GuestAction::Start, "running"),
        (GuestAction::Reboot, "running"),
        (GuestAction::Shutdown, "shutoff"),
        (GuestAction::Start, "running"),
        (GuestAction::Suspend, "paused"),
        (GuestAction::Resume, "running"),
        (GuestAction::Poweroff, "shutoff"),
    ] {
        let accepted = client
            .guest_action(&id, action)
            .await
            .unwrap_or_else(|e| panic!("{action:?}: {e}"));
        complete(&client, accepted.job_id, action.as_str()).await;
        assert_eq!(refreshed(&base, &id).await.state, state, "after {action:?}");
    }

    let accepted = client
        .guest_action(&id, GuestAction::Delete)
        .await
        .expect("delete");
    complete(&client, accepted.job_id, "delete").await;
    assert!(client.get_guest(&id).await.is_err(), "guest still listed");
}

/// libvirt's test driver forgets its domains with the sub-agent's process: after a
/// restart the agent's guests are found again, as the agent sends the whole guest with
/// each call and the sub-agent re-defines a missing domain from it.
#[tokio::test]
async fn guests_survive_a_restart_of_the_sub_agent() {
    if mistify_e2e::skipped("libvirt") {
        return;
    }
    let mut stack = start_stack(&[]);
    let base = stack.agent.url();
    let client = AgentClient::new(&base).expect("client");
    let mut ids = Vec::new();
    for _ in 0..2 {
        let guest = Guest {
            memory: 128,
            cpu: 1,
            nics: vec![Nic {
                network: "mistify0".into(),
                vlans: Some(vec![1]),
                ..Default::default()
            }],
            disks: vec![Disk {
                size: 64,
                source: "/dev/null".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let created = client.create_guest(&guest).await.expect("POST /guests");
        complete(&client, created.job_id, "create").await;
        ids.push(created.body.id);
    }
    // One started, one only created (its stored state is still `create`).
    let started = client
        .guest_action(&ids[0], GuestAction::Start)
        .await
        .expect("start");
    complete(&client, started.job_id, "start").await;
    assert_eq!(refreshed(&base, &ids[0]).await.state, "running");

    stack.restart_libvirt();

    // The running one is found shut off (what libvirt holds now) and starts again.
    assert_eq!(refreshed(&base, &ids[0]).await.state, "shutoff");
    for id in &ids {
        let accepted = client
            .guest_action(id, GuestAction::Start)
            .await
            .expect("start after the restart");
        complete(&client, accepted.job_id, "start after the restart").await;
        assert_eq!(refreshed(&base, id).await.state, "running");
        let nic = client.nic_metrics(id).await.expect("nic metrics");
        assert_eq!(nic.len(), 1, "{nic:?}");
    }

    stack.restart_libvirt();
    // A delete of a forgotten domain completes (nothing is re-defined for it).
    for id in &ids {
        let accepted = client
            .guest_action(id, GuestAction::Delete)
            .await
            .expect("delete");
        complete(&client, accepted.job_id, "delete").await;
        assert!(client.get_guest(id).await.is_err(), "guest still listed");
    }
}
