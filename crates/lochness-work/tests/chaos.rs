//! The controllers under `mistify-supervisord` (restart on exit): cguestd, two cplacerd
//! and two cworkerd on a private etcd, three agents. While 100 guests are created and
//! then deleted through cguestd's REST API, a chaos loop kills (`kill -9`) a random
//! controller every 0.5–2 s and the supervisor starts it again. Requests that meet a
//! dead cguestd are retried, as any client of the API would. Afterwards every job is
//! finished (done, or error with a reason), no guest has a domain on two agents, the
//! reservations are the live guests' addresses and every allocation is exact — all zero
//! once every guest is deleted.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Agent, Cluster, Etcd};
use lochness::{Job, JobStatus};
use mistify_e2e::{binary, free_port};
use rand::Rng;

const GUESTS: usize = 100;
const LONG: Duration = Duration::from_secs(300);
/// The supervised controllers: (service name, program, extra flags).
const SERVICES: [(&str, &str); 5] = [
    ("cguestd", "cguestd"),
    ("cplacerd:a", "cplacerd"),
    ("cplacerd:b", "cplacerd"),
    ("cworkerd:a", "cworkerd"),
    ("cworkerd:b", "cworkerd"),
];

/// `mistify-supervisord` over the manifests in `dir/services`; stopped with SIGTERM (it
/// stops its services) when dropped.
struct Supervisor {
    child: Option<Child>,
    url: String,
}

impl Supervisor {
    fn start(dir: &Path) -> Supervisor {
        let port = free_port();
        let url = format!("http://127.0.0.1:{port}");
        let log = std::fs::File::create(dir.join("supervisord.out")).expect("log");
        let child = Command::new(binary("mistify-supervisord"))
            .args(["--addr", &url, "--dir"])
            .arg(dir)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("cannot start mistify-supervisord");
        let supervisor = Supervisor {
            child: Some(child),
            url,
        };
        mistify_e2e::wait_for_port(([127, 0, 0, 1], port).into(), Duration::from_secs(30))
            .expect("mistify-supervisord listens");
        supervisor
    }

    /// The service's `?full=1` info.
    async fn info(&self, name: &str) -> serde_json::Value {
        reqwest::get(format!("{}/services/{name}?full=1", self.url))
            .await
            .expect("supervisor")
            .json()
            .await
            .expect("service info")
    }

    /// SIGTERM, then waits for the exit; whether it exited 0.
    fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One manifest per controller, logs in `dir`; cguestd on `api_port`.
fn write_manifests(dir: &Path, etcd: &str, api_port: u16) {
    let services = dir.join("services");
    std::fs::create_dir_all(&services).expect("services dir");
    for (i, (name, program)) in SERVICES.iter().enumerate() {
        let port = if *program == "cguestd" {
            api_port
        } else {
            free_port()
        };
        let port_s = port.to_string();
        let mut command = vec![binary(program).display().to_string()];
        let flags: Vec<&str> = match *program {
            "cguestd" => vec!["-p", &port_s],
            "cplacerd" => vec!["--http", &port_s, "--lease-ttl", "2s", "--concurrency", "2"],
            _ => vec!["--http", &port_s, "--lease-ttl", "2s", "--concurrency", "8"],
        };
        command.extend(flags.into_iter().map(String::from));
        command.extend(
            ["--bind", "127.0.0.1", "-k", etcd, "-l", "info"]
                .into_iter()
                .map(String::from),
        );
        let manifest = serde_json::json!({
            "name": name,
            "command": command,
            "ready": format!("http:http://127.0.0.1:{port}/healthz"),
            "failOnExit": true,
            "restart": true,
            "restartBackoff": "100ms",
            "startLimitBurst": 0,
            // A run of a second resets the back-off, so a service killed again and
            // again is still restarted at once.
            "startLimitInterval": "1s",
            "stopTime": "10s",
            "logFile": dir.join(format!("{}.log", name.replace(':', "-"))).display().to_string(),
        });
        std::fs::write(
            services.join(format!("{i}-{}.json", name.replace(':', "-"))),
            manifest.to_string(),
        )
        .expect("manifest");
    }
}

/// Kills a random controller every 0.5–2 s until `stop`; the number of kills.
async fn chaos(supervisor: Arc<Supervisor>, stop: Arc<AtomicBool>, kills: Arc<AtomicUsize>) {
    while !stop.load(Ordering::SeqCst) {
        let (pause, victim) = {
            let mut rng = rand::rng();
            (
                rng.random_range(500..2000),
                rng.random_range(0..SERVICES.len()),
            )
        };
        tokio::time::sleep(Duration::from_millis(pause)).await;
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let info = supervisor.info(SERVICES[victim].0).await;
        if let Some(pid) = info["pid"].as_u64() {
            // SAFETY: kill(2) on a process the supervisor started for this test.
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
            }
            kills.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// POST /guests with the guest's own id, retried while cguestd is down or answers 5xx;
/// a 409 after a retry means an earlier attempt was committed.
async fn create(http: &reqwest::Client, api: &str, cluster: &Cluster) -> String {
    let id = cluster.ctx.new_guest().id;
    let body = serde_json::json!({
        "id": id,
        "flavor": cluster.flavor,
        "network": cluster.network,
        "type": "kvm",
    });
    let deadline = Instant::now() + LONG;
    loop {
        match http.post(format!("{api}/guests")).json(&body).send().await {
            Ok(r) if r.status() == 202 => return id,
            Ok(r) if r.status() == 409 && cluster.ctx.guest(&id).await.is_ok() => return id,
            Ok(r) if r.status().is_server_error() => {}
            Ok(r) => panic!("POST /guests: {} {:?}", r.status(), r.text().await),
            Err(_) => {}
        }
        assert!(Instant::now() < deadline, "cannot create guest {id}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// DELETE /guests/{id}, retried as [`create`]; a 404 after a retry means the guest is
/// already deleted.
async fn delete(http: &reqwest::Client, api: &str, id: &str) {
    let deadline = Instant::now() + LONG;
    loop {
        match http.delete(format!("{api}/guests/{id}")).send().await {
            Ok(r) if r.status() == 202 || r.status() == 404 => return,
            Ok(r) if r.status().is_server_error() => {}
            Ok(r) => panic!("DELETE /guests/{id}: {} {:?}", r.status(), r.text().await),
            Err(_) => {}
        }
        assert!(Instant::now() < deadline, "cannot delete guest {id}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until every job in etcd is final and the queues are empty; the jobs.
async fn settled(cluster: &Cluster, dir: &Path) -> Vec<Job> {
    let deadline = Instant::now() + LONG;
    loop {
        let jobs = common::all_jobs(&cluster.ctx).await;
        let open: Vec<String> = jobs
            .iter()
            .filter(|j| !j.status.is_final())
            .map(|j| format!("{} {} {} guest {}", j.id, j.action, j.status, j.guest))
            .collect();
        if open.is_empty()
            && common::keys(&cluster.ctx, "lochness/queue/")
                .await
                .is_empty()
        {
            let failed: Vec<&Job> = jobs
                .iter()
                .filter(|j| j.status == JobStatus::Error && j.error.is_empty())
                .collect();
            assert!(
                failed.is_empty(),
                "jobs failed without a reason: {failed:#?}"
            );
            return jobs;
        }
        assert!(
            Instant::now() < deadline,
            "{} jobs not finished: {open:?}\n{}",
            open.len(),
            common::grep_logs(
                dir,
                &open
                    .iter()
                    .filter_map(|o| o.split_whitespace().next().map(String::from))
                    .collect::<Vec<_>>()
            )
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn controllers_killed_at_random_under_the_supervisor_lose_and_double_nothing() {
    if mistify_e2e::skipped("etcd") {
        return;
    }
    let dir = common::tempdir("chaos");
    let etcd = Etcd::start(dir.path());
    let agents: Vec<Agent> = (0..3)
        .map(|i| Agent::start(dir.path(), &i.to_string(), 50))
        .collect();
    let agent_refs: Vec<&Agent> = agents.iter().collect();
    let cluster = Cluster::new(&etcd.url, &agent_refs).await;
    let api_port = free_port();
    let api = format!("http://127.0.0.1:{api_port}");
    write_manifests(dir.path(), &etcd.url, api_port);
    let supervisor = Arc::new(Supervisor::start(dir.path()));
    for (name, _) in SERVICES {
        let deadline = Instant::now() + Duration::from_secs(60);
        while supervisor.info(name).await["state"] != "running" {
            assert!(Instant::now() < deadline, "{name} does not run");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let kills = Arc::new(AtomicUsize::new(0));
    let chaos = tokio::spawn(chaos(supervisor.clone(), stop.clone(), kills.clone()));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("http");

    // Create every guest, and let them all be placed and created on the agents.
    let mut ids = Vec::new();
    for _ in 0..GUESTS {
        ids.push(create(&http, &api, &cluster).await);
    }
    let jobs = settled(&cluster, dir.path()).await;
    let state = common::check_consistent(&cluster, &agent_refs).await;
    assert_eq!(state.len(), GUESTS, "every guest created once");
    let failed = jobs.iter().filter(|j| j.status == JobStatus::Error).count();
    eprintln!(
        "created: {} jobs, {failed} failed, {} kills so far",
        jobs.len(),
        kills.load(Ordering::SeqCst)
    );

    // Delete them all.
    for id in &ids {
        delete(&http, &api, id).await;
    }
    let jobs = settled(&cluster, dir.path()).await;
    stop.store(true, Ordering::SeqCst);
    chaos.await.expect("chaos loop");
    let failed: Vec<&Job> = jobs
        .iter()
        .filter(|j| j.status == JobStatus::Error)
        .collect();
    eprintln!(
        "deleted: {} jobs in all, {} failed, {} kills",
        jobs.len(),
        failed.len(),
        kills.load(Ordering::SeqCst)
    );
    assert!(kills.load(Ordering::SeqCst) > 0, "nothing was killed");
    // Whatever failed left its guest whole; nothing else is left anywhere.
    let state = common::check_consistent(&cluster, &agent_refs).await;
    assert!(
        state.is_empty(),
        "guests left: {:?}; failed jobs: {failed:#?}",
        state.keys().collect::<Vec<_>>()
    );
    // SIGTERM: the supervisor stops every controller and exits 0.
    let mut supervisor = Arc::try_unwrap(supervisor).unwrap_or_else(|_| panic!("shared"));
    assert!(
        supervisor.stop(),
        "mistify-supervisord did not stop cleanly"
    );
}
