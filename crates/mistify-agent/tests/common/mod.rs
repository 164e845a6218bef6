//! Shared set-up of the agent's integration tests: a fake sub-agent, a config pointing
//! at it, and the agent binary on free ports with its own store.
#![allow(dead_code)]

use std::path::Path;

use mistify_e2e::{example, free_port, Daemon};
use serde_json::Value;

pub use mistify_e2e::TempDir;

/// The recorded test configuration with its services moved to `port`.
pub fn test_config(port: u16) -> Value {
    mistify_e2e::agent_test_rpc_config(port)
}

/// `test-rpc-service` on a free port.
pub fn fake_subagent() -> Daemon {
    let port = free_port();
    Daemon::start(
        &example("test-rpc-service"),
        &[
            "--port".into(),
            port.to_string(),
            "--log-level".into(),
            "warn".into(),
        ],
        port,
    )
}

/// The agent with `config`, its store at `db`.
pub fn agent(config: &Value, dir: &Path, db: &Path, extra: &[&str]) -> Daemon {
    static CONFIGS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = CONFIGS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let file = dir.join(format!("agent-{n}.json"));
    std::fs::write(&file, config.to_string()).expect("config");
    let port = free_port();
    let mut args = mistify_e2e::agent_args(&file, db, port, "warn");
    args.extend(extra.iter().map(|s| s.to_string()));
    Daemon::start(
        &std::path::PathBuf::from(env!("CARGO_BIN_EXE_mistify-agent")),
        &args,
        port,
    )
}

/// An in-process fake sub-agent (built with mistify-rpc, real HTTP) whose guest
/// methods can be held at a gate, fail on demand, and record every call.
pub mod fake {
    use std::sync::{Arc, Mutex};

    use mistify_rpc::{
        GuestMetricsRequest, GuestMetricsResponse, GuestRequest, GuestResponse, RunningServer,
        Server, SnapshotRequest, SnapshotResponse,
    };
    use tokio::sync::Semaphore;

    #[derive(Clone, Default)]
    pub struct Control {
        /// Every method called, in order.
        pub calls: Arc<Mutex<Vec<String>>>,
        /// The request of every snapshot call.
        pub snapshot_requests: Arc<Mutex<Vec<SnapshotRequest>>>,
        /// When set, guest methods wait for a permit (one per call).
        pub gate: Arc<Mutex<Option<Arc<Semaphore>>>>,
    }

    impl Control {
        pub fn close_gate(&self) -> Arc<Semaphore> {
            let sem = Arc::new(Semaphore::new(0));
            *self.gate.lock().unwrap() = Some(sem.clone());
            sem
        }
        pub fn open_gate(&self) {
            if let Some(sem) = self.gate.lock().unwrap().take() {
                sem.add_permits(100_000);
            }
        }
        pub fn calls(&self) -> Vec<String> {
            self.calls.lock().unwrap().clone()
        }
        pub fn count(&self, method: &str) -> usize {
            self.calls().iter().filter(|m| *m == method).count()
        }
    }

    async fn guest_method(
        control: Control,
        name: &'static str,
        req: GuestRequest,
    ) -> Result<GuestResponse, String> {
        control.calls.lock().unwrap().push(name.to_string());
        let gate = control.gate.lock().unwrap().clone();
        if let Some(gate) = gate {
            if let Ok(p) = gate.acquire().await {
                p.forget();
            }
        }
        match req.args.get("fail") {
            Some(message) => Err(message.clone()),
            None if req.args.contains_key("null_guest") => Ok(GuestResponse::default()),
            None => {
                let mut guest = req.guest;
                if let (Some(g), Some(state)) = (guest.as_mut(), req.args.get("state")) {
                    g.state = state.clone();
                }
                Ok(GuestResponse {
                    guest,
                    ..Default::default()
                })
            }
        }
    }

    /// Methods `Fake.<Action>` for guest actions, `Fake.CPUMetrics`, snapshot methods.
    pub async fn start(control: Control) -> RunningServer {
        let mut server = Server::new("fake");
        for name in [
            "Fake.Create",
            "Fake.Delete",
            "Fake.Reboot",
            "Fake.Restart",
            "Fake.Poweroff",
            "Fake.Shutdown",
            "Fake.Run",
            "Fake.Suspend",
            "Fake.Resume",
            "Fake.Status",
        ] {
            let c = control.clone();
            server = server.method(name, move |req: GuestRequest| {
                guest_method(c.clone(), name, req)
            });
        }
        let c = control.clone();
        server = server.method("Fake.CPUMetrics", move |req: GuestMetricsRequest| {
            let c = c.clone();
            async move {
                c.calls.lock().unwrap().push("Fake.CPUMetrics".into());
                if let Some(message) = req.args.get("fail") {
                    return Err(message.clone());
                }
                Ok::<_, String>(GuestMetricsResponse {
                    guest: req.guest,
                    kind: "cpu".into(),
                    cpu: vec![mistify_rpc::GuestCpuMetrics {
                        cpu_time: 1.5,
                        vcpu_time: 0.5,
                    }],
                    ..Default::default()
                })
            }
        });
        for name in [
            "Fake.ListSnapshots",
            "Fake.GetSnapshot",
            "Fake.CreateSnapshot",
            "Fake.DeleteSnapshot",
            "Fake.RollbackSnapshot",
        ] {
            let c = control.clone();
            server = server.method(name, move |req: SnapshotRequest| {
                let c = c.clone();
                async move {
                    c.calls.lock().unwrap().push(name.to_string());
                    c.snapshot_requests.lock().unwrap().push(req.clone());
                    if req.id.contains("missing") {
                        return Err("not found".to_string());
                    }
                    Ok(SnapshotResponse {
                        snapshots: Some(vec![mistify_rpc::Snapshot {
                            id: req.id,
                            size: 1,
                        }]),
                    })
                }
            });
        }
        // Images: `img-ok` is there, `img-pending` still downloading, no other.
        let c = control.clone();
        server = server.method("Fake.GetImage", move |req: mistify_rpc::ImageRequest| {
            let c = c.clone();
            async move {
                c.calls.lock().unwrap().push("Fake.GetImage".into());
                let status = match req.id.as_str() {
                    "img-ok" => "complete",
                    "img-pending" => "pending",
                    _ => return Err("not found".to_string()),
                };
                Ok(mistify_rpc::ImageResponse {
                    images: Some(vec![mistify_rpc::Image {
                        id: req.id,
                        status: status.into(),
                        ..Default::default()
                    }]),
                })
            }
        });
        server
            .bind(([127, 0, 0, 1], 0).into())
            .await
            .unwrap()
            .spawn()
            .unwrap()
    }

    /// A config whose actions call the fake on `port`; `extra_args` go to every stage
    /// of the named actions (e.g. `("reboot", "fail", "boom")`).
    pub fn config(port: u16, extra_args: &[(&str, &str, &str)]) -> serde_json::Value {
        let mut actions = serde_json::Map::new();
        for (action, method) in [
            ("create", "Fake.Create"),
            ("delete", "Fake.Delete"),
            ("reboot", "Fake.Reboot"),
            ("restart", "Fake.Restart"),
            ("poweroff", "Fake.Poweroff"),
            ("shutdown", "Fake.Shutdown"),
            ("start", "Fake.Run"),
            ("suspend", "Fake.Suspend"),
            ("resume", "Fake.Resume"),
            ("status", "Fake.Status"),
            ("cpuMetrics", "Fake.CPUMetrics"),
            ("listSnapshots", "Fake.ListSnapshots"),
            ("getSnapshot", "Fake.GetSnapshot"),
            ("createSnapshot", "Fake.CreateSnapshot"),
            ("deleteSnapshot", "Fake.DeleteSnapshot"),
            ("rollbackSnapshot", "Fake.RollbackSnapshot"),
            ("getImage", "Fake.GetImage"),
        ] {
            let mut args = serde_json::Map::new();
            for (a, k, v) in extra_args {
                if *a == action {
                    args.insert(k.to_string(), v.to_string().into());
                }
            }
            actions.insert(action.into(), serde_json::json!({"stages": [{"service": "fake", "method": method, "args": args}]}));
        }
        serde_json::json!({"services": {"fake": {"port": port, "timeout": 30}}, "actions": actions})
    }
}

/// Queues `action` on guest `id` through `client`; the job id.
pub async fn queue(
    client: &mistify_client::Client,
    id: &str,
    action: mistify_client::GuestAction,
) -> String {
    client
        .guest_action(id, action)
        .await
        .expect("guest action")
        .job_id
        .expect("job id")
}

/// Polls job `id` until it is done (up to 20 s).
pub async fn wait_done(client: &mistify_client::Client, id: &str) -> mistify_client::Job {
    for _ in 0..400 {
        let job = client.get_job(id).await.expect("job");
        if job.status.is_done() {
            return job;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("job {id} did not finish");
}

/// A raw request; the status, headers and body text.
pub async fn raw(
    method: &str,
    url: &str,
    body: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, String) {
    raw_with_token(method, url, None, body).await
}

/// [`raw`] with `Authorization: Bearer <token>` when a token is given.
pub async fn raw_with_token(
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, String) {
    let client = reqwest::Client::new();
    let mut req = client.request(
        reqwest::Method::from_bytes(method.as_bytes()).expect("method"),
        url,
    );
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req
            .header("Content-Type", "application/json")
            .body(b.to_string());
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, resp.text().await.expect("body"))
}

/// An agent with the in-process fake behind it, and a REST client of the agent.
pub struct Setup {
    pub dir: TempDir,
    pub control: fake::Control,
    pub fake: mistify_rpc::RunningServer,
    pub agent: Daemon,
    pub client: mistify_client::Client,
}

/// `guest` with 128 MB and one CPU where it gives none (a create without them is 400).
pub fn sized(mut guest: mistify_client::Guest) -> mistify_client::Guest {
    if guest.memory == 0 {
        guest.memory = 128;
    }
    if guest.cpu == 0 {
        guest.cpu = 1;
    }
    guest
}

/// [`Setup`] with `fake::config(port, args)`.
pub async fn setup(name: &str, args: &[(&str, &str, &str)]) -> Setup {
    let dir = TempDir::new(name);
    let control = fake::Control::default();
    let fake = fake::start(control.clone()).await;
    let config = fake::config(fake.addr().port(), args);
    let agent = agent(&config, dir.path(), &dir.path().join("agent.redb"), &[]);
    let client = mistify_client::Client::new(&agent.url()).expect("client");
    Setup {
        dir,
        control,
        fake,
        agent,
        client,
    }
}

impl Setup {
    /// Creates `guest`, waits for the create job to complete, returns the 202 body.
    pub async fn new_guest(&self, guest: mistify_client::Guest) -> mistify_client::Guest {
        let accepted = self
            .client
            .create_guest(&sized(guest))
            .await
            .expect("create");
        assert_eq!(accepted.status, 202);
        let job = wait_done(&self.client, accepted.job_id.as_deref().expect("job id")).await;
        assert_eq!(job.status, mistify_client::JobStatus::Complete, "{job:?}");
        accepted.body
    }

    /// Queues `action` on guest `id`; the job id.
    pub async fn queue(&self, id: &str, action: mistify_client::GuestAction) -> String {
        queue(&self.client, id, action).await
    }
}
