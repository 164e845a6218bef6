//! Crashes and stops: nothing the agent accepted is lost or left half-done.
//!
//! * `kill -9` with jobs running and queued: after the restart every guest and metadata
//!   key is there, the running job is `Error` (agent restarted…), the queued ones run.
//! * SIGTERM with jobs queued: the running one finishes, the queued ones wait and
//!   complete after the restart.
//! * `kill -9` during a create: the create can be retried and completes.

mod common;

use std::time::Duration;

use common::{agent, fake, queue, wait_done, TempDir};
use mistify_client::{Client, Guest, GuestAction, JobStatus};

const RESTARTED: &str = "agent restarted before the job finished";

/// A store directory, the gated fake behind it, and the agent config pointing at it.
struct Rig {
    dir: TempDir,
    db: std::path::PathBuf,
    control: fake::Control,
    _server: mistify_rpc::RunningServer,
    config: serde_json::Value,
}

impl Rig {
    async fn new(name: &str) -> Rig {
        let dir = TempDir::new(name);
        let db = dir.path().join("agent.redb");
        let control = fake::Control::default();
        let server = fake::start(control.clone()).await;
        let config = fake::config(server.addr().port(), &[]);
        Rig {
            dir,
            db,
            control,
            _server: server,
            config,
        }
    }

    /// An agent on this rig's store (a restart is a second call).
    fn agent(&self, extra: &[&str]) -> mistify_e2e::Daemon {
        agent(&self.config, self.dir.path(), &self.db, extra)
    }
}

async fn wait_until<F: Fn() -> bool>(what: &str, f: F) {
    for _ in 0..400 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_with_jobs_running_and_queued() {
    let rig = Rig::new("kill9").await;
    let control = &rig.control;
    let mut first = rig.agent(&[]);
    let client = Client::new(&first.url()).unwrap();
    let mut ids = Vec::new();
    for memory in [128, 256] {
        let a = client
            .create_guest(&common::sized(Guest {
                memory,
                ..Guest::default()
            }))
            .await
            .unwrap();
        assert_eq!(
            wait_done(&client, a.job_id.as_deref().unwrap())
                .await
                .status,
            JobStatus::Complete
        );
        ids.push(a.body.id);
    }
    let patch = [("rack".to_string(), Some("r7".to_string()))].into();
    client.patch_metadata(&patch).await.unwrap();
    let guest_patch = [("owner".to_string(), Some("ops".to_string()))].into();
    client
        .patch_guest_metadata(&ids[0], &guest_patch)
        .await
        .unwrap();

    control.close_gate();
    let running = queue(&client, &ids[0], GuestAction::Reboot).await;
    let queued: Vec<String> = vec![
        queue(&client, &ids[0], GuestAction::Shutdown).await,
        queue(&client, &ids[0], GuestAction::Start).await,
    ];
    wait_until("the reboot to reach the sub-agent", || {
        control.count("Fake.Reboot") == 1
    })
    .await;
    assert_eq!(
        client.get_job(&running).await.unwrap().status,
        JobStatus::Running
    );

    first.kill_hard();
    let second = rig.agent(&[]);
    let client = Client::new(&second.url()).unwrap();
    let guests = client.list_guests().await.unwrap();
    assert_eq!(guests.len(), 2);
    assert_eq!(
        client.get_guest(&ids[0]).await.unwrap().metadata["owner"],
        "ops"
    );
    assert_eq!(client.get_metadata().await.unwrap()["rack"], "r7");
    let job = client.get_job(&running).await.unwrap();
    assert_eq!(
        (job.status, job.message.as_str()),
        (JobStatus::Error, RESTARTED)
    );

    control.open_gate();
    for id in &queued {
        assert_eq!(
            wait_done(&client, id).await.status,
            JobStatus::Complete,
            "queued job {id}"
        );
    }
    for job in client.list_jobs(None).await.unwrap() {
        assert!(job.status.is_done(), "{job:?}");
    }
    // New work runs.
    let a = client
        .guest_action(&ids[1], GuestAction::Reboot)
        .await
        .unwrap();
    assert_eq!(
        wait_done(&client, a.job_id.as_deref().unwrap())
            .await
            .status,
        JobStatus::Complete
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_the_running_job_and_keeps_the_queue() {
    let rig = Rig::new("sigterm").await;
    let control = &rig.control;
    let mut first = rig.agent(&["--drain-timeout", "20"]);
    let client = Client::new(&first.url()).unwrap();
    let a = client
        .create_guest(&common::sized(Guest::default()))
        .await
        .unwrap();
    assert_eq!(
        wait_done(&client, a.job_id.as_deref().unwrap())
            .await
            .status,
        JobStatus::Complete
    );
    let id = a.body.id;

    control.close_gate();
    let running = queue(&client, &id, GuestAction::Reboot).await;
    let queued = [
        queue(&client, &id, GuestAction::Restart).await,
        queue(&client, &id, GuestAction::Poweroff).await,
    ];
    wait_until("the reboot to reach the sub-agent", || {
        control.count("Fake.Reboot") == 1
    })
    .await;

    first.signal_term();
    // Draining: new work is refused while the running job finishes.
    let mut refused = false;
    for _ in 0..100 {
        match client.guest_action(&id, GuestAction::Reboot).await {
            Err(e) if e.status() == Some(503) => {
                refused = true;
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    assert!(refused, "a draining agent must answer 503");
    control.open_gate();
    let status = first
        .wait_exit(Duration::from_secs(20))
        .expect("the agent did not stop");
    assert!(status.success(), "{status:?}");
    assert_eq!(
        control.count("Fake.Restart"),
        0,
        "queued jobs must not start while stopping"
    );

    let second = rig.agent(&[]);
    let client = Client::new(&second.url()).unwrap();
    assert_eq!(
        client.get_job(&running).await.unwrap().status,
        JobStatus::Complete
    );
    for job in &queued {
        assert_eq!(wait_done(&client, job).await.status, JobStatus::Complete);
    }
    assert_eq!(
        (
            control.count("Fake.Restart"),
            control.count("Fake.Poweroff")
        ),
        (1, 1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_create_then_retry() {
    let rig = Rig::new("kill9-create").await;
    let control = &rig.control;
    let mut first = rig.agent(&[]);
    let client = Client::new(&first.url()).unwrap();
    let id = "7d1c0c52-4d8f-4b1a-9a43-2f5cbe1e0a01";
    let guest = Guest {
        id: id.into(),
        memory: 512,
        cpu: 1,
        ..Guest::default()
    };
    control.close_gate();
    let job = client.create_guest(&guest).await.unwrap().job_id.unwrap();
    wait_until("the create to reach the sub-agent", || {
        control.count("Fake.Create") == 1
    })
    .await;
    first.kill_hard();
    control.open_gate();

    let second = rig.agent(&[]);
    let client = Client::new(&second.url()).unwrap();
    let failed = client.get_job(&job).await.unwrap();
    assert_eq!(
        (failed.status, failed.message.as_str()),
        (JobStatus::Error, RESTARTED)
    );
    let retry = client.create_guest(&guest).await.unwrap();
    assert_eq!(
        wait_done(&client, retry.job_id.as_deref().unwrap())
            .await
            .status,
        JobStatus::Complete
    );
    assert_eq!(client.get_guest(id).await.unwrap().memory, 512);
    // Once created, the id is taken.
    let again = client.create_guest(&guest).await.unwrap_err();
    assert_eq!(again.status(), Some(409));
}
