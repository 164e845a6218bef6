//! Our agent in front of this sub-agent (storage → `mistify-zfs`, libvirt → the
//! `test-rpc-service` example): images, guest disks, snapshots, the download stream
//! through the agent, rollback and delete, checked against `zfs list`.
//! Needs the workspace's binaries and examples built (the build phase of `make test`).

mod common;

use std::time::Duration;

use common::*;
use futures::StreamExt;
use mistify_client::{Client as AgentClient, GuestAction};
use mistify_e2e::{free_port, Daemon};
use mistify_types::{Disk, Guest, ImageRequest, JobStatus, SnapshotRequest};

async fn complete(client: &AgentClient, job: Option<String>, what: &str) {
    let job = job.unwrap_or_else(|| panic!("{what}: no job id"));
    let done = client
        .wait_job(&job, Duration::from_secs(120))
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(done.status, JobStatus::Complete, "{what}: {done:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn agent_drives_images_disks_snapshots_and_download() {
    if mistify_e2e::skipped("zfs") {
        return;
    }
    let pool = TestPool::new();
    let p = pool.name.clone();
    let out = pool.dir.path().join("images");
    let image = "agent-image";
    make_image(&p, image, 16, &out, true);
    let server = image_server(&out, 0);
    let storage = storage(&p, &format!("127.0.0.1:{}", server.port), &[]);
    let fake_port = free_port();
    let _fake = Daemon::start(
        &mistify_e2e::example("test-rpc-service"),
        &["--port".into(), fake_port.to_string()],
        fake_port,
    );
    let agent = agent(pool.dir.path(), storage.port, fake_port);
    let client = AgentClient::new(&agent.url()).expect("client");

    // POST /images → fetched into the pool.
    let accepted = client
        .fetch_image(&ImageRequest {
            id: image.into(),
            ..Default::default()
        })
        .await
        .expect("POST /images");
    complete(&client, accepted.job_id, "fetchImage").await;
    assert!(pool.has(&format!("{p}/images/{image}@image")));
    let got = client.get_image(image).await.expect("GET /images/{id}");
    assert_eq!(got.status, "complete");
    assert_eq!(got.size, 16);
    let missing = client
        .get_image("no-such")
        .await
        .expect_err("unknown image");
    assert_eq!(missing.status(), Some(404), "{missing}");

    // POST /guests with an image disk and a blank disk → datasets.
    let id = uuid::Uuid::new_v4().to_string();
    let guest = Guest {
        id: id.clone(),
        memory: 128,
        cpu: 1,
        disks: vec![
            Disk {
                image: image.into(),
                ..Default::default()
            },
            Disk {
                size: 8,
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    let created = client.create_guest(&guest).await.expect("POST /guests");
    complete(&client, created.job_id, "create").await;
    let disk0 = format!("{p}/guests/{id}/disk-0");
    assert!(pool.has(&disk0) && pool.has(&format!("{p}/guests/{id}/disk-1")));
    let stored = client.get_guest(&id).await.expect("GET guest");
    assert_eq!(stored.disks[0].volume, disk0);
    let src0 = std::path::PathBuf::from(&stored.disks[0].source);
    assert_eq!(src0, pool.mountpoint(&disk0).join("disk.img"));
    let original = read(&src0);

    // POST …/snapshots (guest level: recursive).
    let accepted = client
        .create_snapshot(
            &id,
            None,
            &SnapshotRequest {
                dest: "first".into(),
                ..Default::default()
            },
        )
        .await
        .expect("POST snapshots");
    complete(&client, accepted.job_id, "createSnapshot").await;
    assert!(pool.has(&format!("{disk0}@first")));
    let listed = client
        .list_snapshots(&id, None)
        .await
        .expect("GET snapshots");
    assert_eq!(listed.len(), 3, "{listed:?}");

    // GET …/snapshots/first/download through the agent → zfs receive accepts it.
    let stream = client
        .download_snapshot(&id, None, "first")
        .await
        .expect("download");
    let mut bytes = Vec::new();
    let mut chunks = stream.into_stream();
    while let Some(chunk) = chunks.next().await {
        bytes.extend_from_slice(&chunk.expect("chunk"));
    }
    assert!(!bytes.is_empty());
    let recv = format!("{p}/fromagent");
    receive_stream(&recv, &bytes);
    assert!(
        pool.has(&format!("{recv}/disk-0@first")),
        "{:?}",
        pool.list()
    );
    assert_eq!(
        read(&pool.mountpoint(&format!("{recv}/disk-0")).join("disk.img")),
        original
    );
    destroy(&recv);

    // POST …/rollback restores the disk.
    std::fs::write(&src0, b"scribbled").unwrap();
    let accepted = client
        .rollback_snapshot(
            &id,
            None,
            "first",
            &SnapshotRequest {
                recursive: true,
                ..Default::default()
            },
        )
        .await
        .expect("rollback");
    complete(&client, accepted.job_id, "rollbackSnapshot").await;
    assert_eq!(read(&src0), original, "rollback restored disk-0");

    // POST …/delete → no dataset of the guest left.
    let accepted = client
        .guest_action(&id, GuestAction::Delete)
        .await
        .expect("delete");
    complete(&client, accepted.job_id, "delete").await;
    assert!(
        !pool.list().iter().any(|n| n.contains(&id)),
        "{:?}",
        pool.list()
    );
}

fn receive_stream(name: &str, stream: &[u8]) {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = mistify_e2e::stack::zfs_locked()
        .args(["receive", name])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("zfs receive");
    child.stdin.take().unwrap().write_all(stream).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "zfs receive: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
