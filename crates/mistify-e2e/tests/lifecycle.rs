//! One hypervisor (the dev stack on free ports), driven through the agent's REST API
//! only: a guest's whole life, checked against what ZFS and libvirt (through the libvirt
//! sub-agent's JSON-RPC, whose test driver lives inside that process) hold at each step.
//!
//! fetch `sample` → create (image disk, blank disk, one NIC without MAC or VLANs) →
//! datasets and file disks → start, CPU and NIC metrics, reboot, shutdown, start,
//! suspend, resume (each job `Complete`, `?refresh=true` showing the state) → snapshots:
//! create, list, download (received by `zfs receive`), rollback → delete: no dataset, no
//! domain, no guest left.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use mistify_client::{Accepted, Client, GuestAction};
use mistify_e2e::stack::DevStack;
use mistify_e2e::{binary, skipped};
use mistify_types::{Disk, Guest, ImageRequest, JobStatus, Nic, SnapshotRequest};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

/// Every job and wait gets this long: generous, the machine is shared.
const JOB_DEADLINE: Duration = Duration::from_secs(300);

fn bin_dir() -> PathBuf {
    binary("mistify-supervisord")
        .parent()
        .expect("binary directory")
        .to_path_buf()
}

/// `zfs list -H -o name -r <root> [-t type]`.
fn zfs_names(root: &str, kind: &str) -> Vec<String> {
    let out = Command::new("zfs")
        .args(["list", "-H", "-o", "name", "-t", kind, "-r", root])
        .output()
        .expect("zfs list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// `zfs args…` under the mount lock.
fn zfs(args: &[&str]) -> (bool, String) {
    let out = mistify_e2e::stack::zfs_locked()
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("zfs");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Waits for the job of an accepted request and fails the test unless it is `Complete`.
async fn complete<T>(client: &Client, stack: &DevStack, what: &str, accepted: Accepted<T>) {
    assert_eq!(accepted.status, 202, "{what}: status");
    let job_id = accepted
        .job_id
        .unwrap_or_else(|| panic!("{what}: no X-Guest-Job-ID header"));
    let deadline = Instant::now() + JOB_DEADLINE;
    loop {
        let job = client
            .wait_job(&job_id, Duration::from_secs(30))
            .await
            .unwrap_or_else(|e| panic!("{what}: GET /jobs/{job_id}: {e}"));
        if job.status.is_done() {
            assert_eq!(
                job.status,
                JobStatus::Complete,
                "{what}: job {job_id} ended {} with {:?}\n--- supervisor\n{}",
                job.status,
                job.message,
                stack.log()
            );
            eprintln!("{what}: job {job_id} Complete");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: job {job_id} still {} after {JOB_DEADLINE:?}",
            job.status
        );
    }
}

/// The libvirt sub-agent's JSON-RPC (gorilla v1): the reply object (`result`, `error`).
async fn libvirt_rpc(stack: &DevStack, method: &str, params: Value) -> Value {
    let url = format!("http://127.0.0.1:{}/_mistify_RPC_", stack.libvirt_port);
    let reply = reqwest::Client::new()
        .post(&url)
        .json(&json!({"method": method, "params": [params], "id": 1}))
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method}: {e}"));
    let text = reply.text().await.expect("RPC reply");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method}: not JSON ({e}): {text}"))
}

/// `GET /guests/{id}?refresh=true`: the state libvirt reports (stored by the agent).
async fn refreshed_state(stack: &DevStack, id: &str) -> String {
    let url = format!("{}/guests/{id}?refresh=true", stack.agent);
    let reply = reqwest::get(&url).await.expect("GET refresh");
    let status = reply.status().as_u16();
    let text = reply.text().await.expect("body");
    assert_eq!(status, 200, "GET {url}: {text}");
    let guest: Value = serde_json::from_str(&text).expect("guest JSON");
    guest["state"].as_str().unwrap_or_default().to_string()
}

/// A guest action whose job must complete, then the refreshed state must be `expect`.
async fn act(client: &Client, stack: &DevStack, id: &str, action: GuestAction, expect: &str) {
    let accepted = client
        .guest_action(id, action)
        .await
        .unwrap_or_else(|e| panic!("POST /guests/{id}/{action}: {e}"));
    complete(client, stack, action.as_str(), accepted).await;
    let state = refreshed_state(stack, id).await;
    assert_eq!(state, expect, "state after {action}");
    // The refreshed state is what the agent stores.
    let stored = client.get_guest(id).await.expect("GET guest");
    assert_eq!(stored.state, expect, "stored state after {action}");
}

/// `GET` of a metrics route: 200 and JSON.
async fn metrics_json(stack: &DevStack, id: &str, kind: &str) -> Value {
    let url = format!("{}/guests/{id}/metrics/{kind}", stack.agent);
    let reply = reqwest::get(&url).await.expect("GET metrics");
    let status = reply.status().as_u16();
    let text = reply.text().await.expect("body");
    assert_eq!(status, 200, "GET {url}: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("GET {url}: not JSON ({e}): {text}"))
}

fn read_prefix(path: &Path, n: usize) -> Vec<u8> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut buf = vec![0u8; n];
    f.read_exact(&mut buf)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    buf
}

fn write_prefix(path: &Path, data: &[u8]) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    f.write_all(data)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    f.sync_all()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_lifecycle_over_rest() {
    if skipped("stack") || skipped("zfs") || skipped("libvirt") {
        return;
    }
    let started = Instant::now();
    let bin = bin_dir();
    let stack = tokio::task::spawn_blocking(move || DevStack::start(&bin, "life"))
        .await
        .expect("start task")
        .unwrap_or_else(|e| panic!("{e}"));
    let pool = stack.pool.clone();
    let client = Client::new(&stack.agent)
        .expect("client")
        .with_timeout(Duration::from_secs(120));

    // ---- image
    let fetched = client
        .fetch_image(&ImageRequest {
            id: "sample".into(),
            ..ImageRequest::default()
        })
        .await
        .expect("POST /images");
    complete(&client, &stack, "fetch sample", fetched).await;
    let image = client
        .get_image("sample")
        .await
        .expect("GET /images/sample");
    assert_eq!(image.id, "sample");

    // ---- create: one image disk, one blank 64 MB disk, one NIC without MAC or VLANs
    let request = Guest {
        memory: 256,
        cpu: 1,
        disks: vec![
            Disk {
                image: "sample".into(),
                ..Disk::default()
            },
            Disk {
                size: 64,
                ..Disk::default()
            },
        ],
        nics: vec![Nic {
            network: "default".into(),
            model: "virtio".into(),
            ..Nic::default()
        }],
        ..Guest::default()
    };
    let created = client.create_guest(&request).await.expect("POST /guests");
    let id = created.body.id.clone();
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "guest id {id:?}");
    complete(&client, &stack, "create", created).await;

    let guest = client.get_guest(&id).await.expect("GET guest");
    eprintln!(
        "created: {}",
        serde_json::to_string(&guest).unwrap_or_default()
    );
    let guest_ds = format!("{pool}/guests/{id}");
    let names = zfs_names(&pool, "filesystem,volume");
    for ds in [
        guest_ds.clone(),
        format!("{guest_ds}/disk-0"),
        format!("{guest_ds}/disk-1"),
    ] {
        assert!(names.contains(&ds), "no dataset {ds}: {names:?}");
    }
    assert_eq!(guest.disks.len(), 2, "disks: {:?}", guest.disks);
    for (i, disk) in guest.disks.iter().enumerate() {
        assert_eq!(
            disk.volume,
            format!("{guest_ds}/disk-{i}"),
            "disk {i} volume"
        );
        assert_eq!(
            disk.device,
            ["vda", "vdb"][i],
            "disk {i} device named by libvirt"
        );
        let source = Path::new(&disk.source);
        assert!(
            source.file_name().is_some_and(|n| n == "disk.img") && source.is_file(),
            "disk {i} source {:?} is not an existing disk.img file",
            disk.source
        );
    }
    // The blank disk is a sparse file of its size; the image disk a clone of `sample`.
    let blank_len = std::fs::metadata(&guest.disks[1].source)
        .expect("blank disk.img")
        .len();
    assert_eq!(blank_len, 64 << 20, "blank disk.img length");
    let (ok, origin) = zfs(&["get", "-H", "-o", "value", "origin", &guest.disks[0].volume]);
    assert!(
        ok && origin.trim().starts_with(&format!("{pool}/images/sample@")),
        "disk-0 origin: {origin}"
    );
    assert_eq!(guest.nics.len(), 1);
    let mac = guest.nics[0].mac.clone();
    assert!(mac.starts_with("02:"), "NIC MAC {mac:?}");
    assert_eq!(guest.nics[0].vlans, None, "NIC VLANs");

    // libvirt's domain XML has both disks as files at those sources, and the NIC's
    // network exists (`Libvirt.Inspect`, the sub-agent's read-only view).
    let seen = libvirt_rpc(&stack, "Libvirt.Inspect", json!({"guest": {"id": id}})).await;
    assert!(seen["error"].is_null(), "Libvirt.Inspect: {seen}");
    let xml = seen["result"]["domain_xml"].as_str().unwrap_or_default();
    assert_eq!(
        xml.matches("<disk type='file' device='disk'>").count(),
        2,
        "file disks in the domain XML:\n{xml}"
    );
    for disk in &guest.disks {
        assert!(
            xml.contains(&format!("<source file='{}'", disk.source)),
            "{} is not a disk of the domain:\n{xml}",
            disk.source
        );
    }
    let has_network = |v: &Value| {
        v["result"]["networks"]
            .as_array()
            .is_some_and(|n| n.iter().any(|x| x.as_str() == Some(mac.as_str())))
    };
    assert!(has_network(&seen), "no libvirt network for the NIC: {seen}");

    // libvirt has the domain (defined, not booted); its state from `Libvirt.Status`.
    let status = libvirt_rpc(&stack, "Libvirt.Status", json!({"guest": {"id": id}})).await;
    assert!(status["error"].is_null(), "Libvirt.Status: {status}");
    assert_eq!(status["result"]["guest"]["state"], "shutoff", "{status}");
    assert_eq!(refreshed_state(&stack, &id).await, "shutoff");

    // ---- lifecycle
    act(&client, &stack, &id, GuestAction::Start, "running").await;
    let started_guest = client.get_guest(&id).await.expect("GET guest");
    eprintln!(
        "after start: {}",
        serde_json::to_string(&started_guest).unwrap_or_default()
    );

    let cpu = metrics_json(&stack, &id, "cpu").await;
    eprintln!("cpu metrics: {cpu}");
    let cpus = cpu
        .as_array()
        .unwrap_or_else(|| panic!("cpu metrics {cpu}"));
    assert!(!cpus.is_empty(), "no CPU in {cpu}");
    for c in cpus {
        for key in ["cpu_time", "vcpu_time"] {
            let v = c[key]
                .as_f64()
                .unwrap_or_else(|| panic!("{key} in {c} is not a number"));
            assert!(v.is_finite() && v >= 0.0, "{key} = {v}");
        }
    }
    let typed = client.cpu_metrics(&id).await.expect("typed cpu metrics");
    assert_eq!(typed.len(), cpus.len());

    let nic = metrics_json(&stack, &id, "nic").await;
    eprintln!("nic metrics: {nic}");
    let nics = nic
        .as_object()
        .unwrap_or_else(|| panic!("nic metrics {nic}"));
    assert_eq!(nics.len(), 1, "one NIC in {nic}");
    for (key, m) in nics {
        assert_eq!(m["name"].as_str(), Some(key.as_str()), "{nic}");
        for field in [
            "rx_bytes",
            "rx_packets",
            "rx_errors",
            "rx_drops",
            "tx_bytes",
            "tx_packets",
            "tx_errors",
            "tx_drops",
        ] {
            let v = m[field]
                .as_i64()
                .unwrap_or_else(|| panic!("{field} in {m} is not an integer"));
            assert!(v >= 0, "{field} = {v}");
        }
    }
    client.nic_metrics(&id).await.expect("typed nic metrics");

    act(&client, &stack, &id, GuestAction::Reboot, "running").await;
    act(&client, &stack, &id, GuestAction::Shutdown, "shutoff").await;
    act(&client, &stack, &id, GuestAction::Start, "running").await;
    act(&client, &stack, &id, GuestAction::Suspend, "paused").await;
    act(&client, &stack, &id, GuestAction::Resume, "running").await;

    // ---- snapshots of the whole guest (recursive: the guest dataset and its disks)
    let blank = PathBuf::from(&guest.disks[1].source);
    let zeros = read_prefix(&blank, 4096);
    assert!(zeros.iter().all(|b| *b == 0), "blank disk not blank");
    let snap = |dest: &str| SnapshotRequest {
        dest: dest.into(),
        ..SnapshotRequest::default()
    };
    let accepted = client
        .create_snapshot(&id, None, &snap("first"))
        .await
        .expect("POST snapshots");
    complete(&client, &stack, "snapshot first", accepted).await;
    let listed = client
        .list_snapshots(&id, None)
        .await
        .expect("GET snapshots");
    let listed: Vec<String> = listed.into_iter().map(|s| s.id).collect();
    let family = |name: &str| {
        vec![
            format!("{guest_ds}@{name}"),
            format!("{guest_ds}/disk-0@{name}"),
            format!("{guest_ds}/disk-1@{name}"),
        ]
    };
    for s in family("first") {
        assert!(listed.contains(&s), "{s} not listed: {listed:?}");
    }
    let one = client
        .get_snapshot(&id, None, "first")
        .await
        .expect("GET snapshot");
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].id, format!("{guest_ds}@first"));

    // Download: the replication stream of the guest, fed to `zfs receive`.
    let recv = format!("{pool}/recv-test");
    let mut download = client
        .download_snapshot(&id, None, "first")
        .await
        .expect("GET download");
    // Under the mount lock, like every command that makes datasets on zfs-fuse.
    let mut child = tokio::process::Command::from(mistify_e2e::stack::zfs_locked())
        .args(["receive", "-u", &recv])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("zfs receive");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut bytes = 0u64;
    while let Some(chunk) = download.next().await {
        let chunk = chunk.expect("download chunk");
        bytes += chunk.len() as u64;
        if let Err(e) = stdin.write_all(&chunk).await {
            panic!("zfs receive stopped reading after {bytes} bytes: {e}");
        }
    }
    drop(stdin);
    let out = child.wait_with_output().await.expect("zfs receive");
    assert!(
        out.status.success(),
        "zfs receive {recv} of the {bytes}-byte download failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("download: {bytes} bytes received into {recv}");
    let received = zfs_names(&recv, "all");
    for ds in [
        recv.clone(),
        format!("{recv}@first"),
        format!("{recv}/disk-0@first"),
        format!("{recv}/disk-1@first"),
    ] {
        assert!(received.contains(&ds), "{ds} not received: {received:?}");
    }
    if let Err(e) = mistify_e2e::stack::destroy_dataset(&recv) {
        panic!("{e}");
    }
    assert!(
        zfs_names(&pool, "all")
            .iter()
            .all(|n| !n.starts_with(&recv)),
        "{recv} left"
    );

    // Rollback. A marker written to the blank disk after `first`, then `second` taken.
    write_prefix(&blank, b"MISTIFY-E2E-MARK");
    let accepted = client
        .create_snapshot(&id, None, &snap("second"))
        .await
        .expect("POST snapshots");
    complete(&client, &stack, "snapshot second", accepted).await;
    let all = zfs_names(&guest_ds, "snapshot");
    for s in family("second") {
        assert!(all.contains(&s), "{s} missing: {all:?}");
    }

    // As the original agent: the body's `recursive` is used as sent (false here), so
    // this rolls back the guest dataset alone; `destroyMoreRecent` drops its `second`.
    let accepted = client
        .rollback_snapshot(
            &id,
            None,
            "first",
            &SnapshotRequest {
                destroy_more_recent: true,
                ..SnapshotRequest::default()
            },
        )
        .await
        .expect("POST rollback");
    complete(&client, &stack, "rollback first", accepted).await;
    let all = zfs_names(&guest_ds, "snapshot");
    assert!(
        !all.contains(&format!("{guest_ds}@second")),
        "{guest_ds}@second survived the rollback: {all:?}"
    );
    eprintln!("after rollback {{destroyMoreRecent}}: {all:?}");

    // The whole guest, disks included: `recursive` in the body.
    let accepted = client
        .rollback_snapshot(
            &id,
            None,
            "first",
            &SnapshotRequest {
                destroy_more_recent: true,
                recursive: true,
                ..SnapshotRequest::default()
            },
        )
        .await
        .expect("POST rollback");
    complete(&client, &stack, "rollback first (recursive)", accepted).await;
    let all = zfs_names(&guest_ds, "snapshot");
    for s in family("first") {
        assert!(all.contains(&s), "{s} lost by the rollback: {all:?}");
    }
    assert!(
        all.iter().all(|s| !s.ends_with("@second")),
        "snapshots `second` survived the recursive rollback: {all:?}"
    );
    let back = read_prefix(&blank, 4096);
    assert!(
        back.iter().all(|b| *b == 0),
        "the blank disk still holds the marker after the rollback: {:?}",
        String::from_utf8_lossy(&back[..16])
    );

    // ---- delete
    let accepted = client
        .guest_action(&id, GuestAction::Delete)
        .await
        .expect("POST delete");
    complete(&client, &stack, "delete", accepted).await;
    let left: Vec<String> = zfs_names(&pool, "all")
        .into_iter()
        .filter(|n| n.contains(&id))
        .collect();
    assert!(left.is_empty(), "datasets of the guest left: {left:?}");
    assert!(
        !Path::new(&guest.disks[0].source).exists(),
        "{} left",
        guest.disks[0].source
    );
    let seen = libvirt_rpc(&stack, "Libvirt.Inspect", json!({"guest": {"id": id}})).await;
    assert!(seen["error"].is_null(), "Libvirt.Inspect: {seen}");
    assert_eq!(
        seen["result"]["domain_xml"], "",
        "the domain is still defined"
    );
    assert!(!has_network(&seen), "the NIC's network is left: {seen}");
    let status = libvirt_rpc(&stack, "Libvirt.Status", json!({"guest": {"id": id}})).await;
    let error = status["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("Domain not found"),
        "libvirt still knows the domain: {status}"
    );
    match client.get_guest(&id).await {
        Err(e) => assert!(e.is_not_found(), "GET /guests/{id}: {e}"),
        Ok(g) => panic!("the guest is still stored: {g:?}"),
    }
    let reply = reqwest::get(format!("{}/guests/{id}?refresh=true", stack.agent))
        .await
        .expect("GET refresh");
    assert_eq!(reply.status().as_u16(), 404, "refresh of a deleted guest");
    assert!(
        zfs_names(&pool, "all")
            .iter()
            .any(|n| n.ends_with("/images/sample")),
        "the image went with the guest"
    );
    eprintln!("lifecycle: {:?}", started.elapsed());
    tokio::task::spawn_blocking(move || drop(stack))
        .await
        .expect("stop task");
}
