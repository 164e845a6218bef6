//! Benchmark (not run by CI): snapshot download throughput through the agent compared
//! with `zfs send > /dev/null`, and guest disk creation time from a 16 MiB and a 1 GiB
//! image (a clone: should be flat).
//!
//! ```text
//! cargo build --workspace --bins --examples
//! cargo bench --profile dev -p mistify-zfs --bench zfs
//! ```
//! (With `--release` binaries, build them with `--release` and drop `--profile dev`.)

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use futures::StreamExt;
use mistify_client::Client as AgentClient;
use mistify_e2e::{free_port, Daemon};
use mistify_types::{Disk, Guest, ImageRequest, JobStatus, SnapshotRequest};
use serde_json::{json, Value};

const RUNS: usize = 5;

async fn complete(client: &AgentClient, job: Option<String>) {
    let job = job.expect("job id");
    let done = client
        .wait_job(&job, Duration::from_secs(600))
        .await
        .expect("job");
    assert_eq!(done.status, JobStatus::Complete, "{done:?}");
}

fn mib_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / (1 << 20) as f64 / d.as_secs_f64()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() {
    if mistify_e2e::skipped("zfs") {
        return;
    }
    let data_mb: u64 = std::env::var("BENCH_DATA_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let pool = TestPool::new();
    let p = pool.name.clone();
    let out = pool.dir.path().join("images");
    eprintln!("building images ({data_mb} MiB of data for the download test)…");
    make_image_filled(&p, "data", data_mb, data_mb, &out, false);
    make_image_filled(&p, "small", 16, 16, &out, false);
    make_image_filled(&p, "large", 1024, 64, &out, false);
    let server = image_server(&out, 0);
    let storage = storage(&p, &format!("127.0.0.1:{}", server.port), &[]);
    let fake_port = free_port();
    let _fake = Daemon::start(
        &mistify_e2e::example("test-rpc-service"),
        &["--port".into(), fake_port.to_string()],
        fake_port,
    );
    let agent = agent(pool.dir.path(), storage.port, fake_port);
    let client = AgentClient::new(&agent.url())
        .expect("client")
        .with_timeout(Duration::from_secs(600));
    for id in ["data", "small", "large"] {
        let a = client
            .fetch_image(&ImageRequest {
                id: id.into(),
                ..Default::default()
            })
            .await
            .expect("fetch");
        complete(&client, a.job_id).await;
    }

    // --- download throughput ---------------------------------------------------------
    let gid = uuid::Uuid::new_v4().to_string();
    let guest = Guest {
        id: gid.clone(),
        memory: 128,
        cpu: 1,
        disks: vec![Disk {
            image: "data".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let a = client.create_guest(&guest).await.expect("create");
    complete(&client, a.job_id).await;
    let a = client
        .create_snapshot(
            &gid,
            Some("0"),
            &SnapshotRequest {
                dest: "bench".into(),
                ..Default::default()
            },
        )
        .await
        .expect("snapshot");
    complete(&client, a.job_id).await;
    let snap = format!("{p}/guests/{gid}/disk-0@bench");

    // Baselines: `zfs send > /dev/null` (what the brief compares with; zfs-fuse then
    // writes straight to /dev/null) and `zfs send | cat > /dev/null` (any reader of the
    // stream through a pipe, which the sub-agent is).
    let shell = |cmd: String| {
        let mut times = Vec::new();
        for _ in 0..RUNS {
            let t = Instant::now();
            let ok = Command::new("sh")
                .args(["-c", &cmd])
                .stderr(Stdio::inherit())
                .status()
                .expect("sh")
                .success();
            assert!(ok, "{cmd}");
            times.push(t.elapsed());
        }
        median(times)
    };
    let to_null = shell(format!("zfs send {snap} > /dev/null"));
    let via_pipe = shell(format!("zfs send {snap} | cat > /dev/null"));
    let bytes: u64 = String::from_utf8_lossy(
        &Command::new("sh")
            .args(["-c", &format!("zfs send {snap} | wc -c")])
            .output()
            .expect("wc")
            .stdout,
    )
    .trim()
    .parse()
    .unwrap_or(0);

    // The clients are curl processes (as an operator would download), so that the
    // benchmark's own HTTP client does not compete for the two cores.
    let curl = |args: Vec<String>| {
        let mut times = Vec::new();
        for _ in 0..RUNS {
            let t = Instant::now();
            let o = Command::new("curl")
                .args(["-s", "-f", "-o", "/dev/null", "-w", "%{size_download}"])
                .args(&args)
                .output()
                .expect("curl");
            times.push(t.elapsed());
            assert!(o.status.success(), "curl {args:?}");
            let n: u64 = String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse()
                .unwrap_or(0);
            assert_eq!(n, bytes, "same stream length: curl {args:?}");
        }
        times
    };
    let sub = curl(vec![
        "-H".into(),
        "Content-Type: application/json".into(),
        "-d".into(),
        json!({"id": format!("guests/{gid}/disk-0@bench")}).to_string(),
        format!("{}/snapshots/download", storage.url()),
    ]);
    let proxied = curl(vec![format!(
        "{}/guests/{gid}/disks/0/snapshots/bench/download",
        agent.url()
    )]);
    // And once with the REST client library, for comparison.
    let t = Instant::now();
    let stream = client
        .download_snapshot(&gid, Some("0"), "bench")
        .await
        .expect("download");
    let mut chunks = stream.into_stream();
    let mut n = 0u64;
    while let Some(c) = chunks.next().await {
        n += c.expect("chunk").len() as u64;
    }
    let library = t.elapsed();
    assert_eq!(n, bytes);
    let (sub, agent_t) = (median(sub), median(proxied));
    let rate = |d: Duration| mib_s(bytes, d);
    println!(
        "snapshot stream of {:.1} MiB (median of {RUNS}; HTTP clients: curl):",
        bytes as f64 / (1 << 20) as f64
    );
    println!(
        "  zfs send > /dev/null        {:7.1} MiB/s  {to_null:?}",
        rate(to_null)
    );
    println!(
        "  zfs send | cat > /dev/null  {:7.1} MiB/s  {via_pipe:?}",
        rate(via_pipe)
    );
    println!(
        "  from mistify-zfs directly   {:7.1} MiB/s  {sub:?}",
        rate(sub)
    );
    println!(
        "  through the agent           {:7.1} MiB/s  {agent_t:?}",
        rate(agent_t)
    );
    println!(
        "  through the agent, mistify_client::Client {:7.1} MiB/s  {library:?}",
        rate(library)
    );
    println!(
        "  ratio agent / (send > /dev/null) = {:.2}; agent / (send | cat) = {:.2}",
        rate(agent_t) / rate(to_null),
        rate(agent_t) / rate(via_pipe)
    );

    // --- disk creation -------------------------------------------------------------
    let svc = client_rpc(storage.port);
    for (image, label) in [("small", "16 MiB"), ("large", "1 GiB")] {
        let mut times = Vec::new();
        for i in 0..5 {
            let g = format!("bench-{image}-{i}");
            let req = json!({"guest": {"id": g, "disks": [{"image": image}]}});
            let t = Instant::now();
            let r: Value = call(&svc, "CreateGuestDisks", &req).await.expect("create");
            times.push(t.elapsed());
            assert!(r["guest"]["disks"][0]["source"].is_string());
            let _: Value = call(&svc, "DeleteGuestsDisks", &req).await.expect("delete");
        }
        println!(
            "CreateGuestDisks from the {label} image: median {:?} (of {:?})",
            median(times.clone()),
            times
        );
    }
    let _: Value = call(&svc, "DeleteGuestsDisks", &json!({"guest": {"id": gid}}))
        .await
        .expect("cleanup");
}

fn client_rpc(port: u16) -> mistify_rpc::Service {
    client(port)
}
