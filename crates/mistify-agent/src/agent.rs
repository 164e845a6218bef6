//! The agent core: services, runners, pipelines, job submission and execution, start-up
//! recovery and draining. The REST layer (`crate::api`) only translates HTTP to these
//! calls.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use chrono::Utc;
use futures::FutureExt;
use mistify_client::{Guest, ImageRequest, Job, JobStatus, SnapshotRequest};
use mistify_rpc::merge::merge;
use mistify_rpc::{Client, RawStream, RpcError, Service, ServiceConfig};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{json, Value};
use tokio::sync::{broadcast, Notify};

use crate::config::{ActionDef, ActionType, Config, StageDef};
use crate::error::AgentError;
use crate::metrics::Metrics;
use crate::runner::{Reservation, Runner, AGENT_RUNNER};
use crate::store::Store;

/// The message of jobs found running when the agent starts.
pub const RESTARTED: &str = "agent restarted before the job finished";
/// The message of jobs still queued for a guest that was deleted.
pub const GUEST_DELETED: &str = "guest deleted";
/// The message of a cancelled job.
pub const CANCELLED: &str = "cancelled";

/// What an async job runs; stored with the job so it survives a restart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Work {
    /// A guest action on the guest as stored when the job starts.
    Guest { action: String, guest_id: String },
    /// `fetchImage` / `deleteImage` (or their container variants).
    Image {
        action: String,
        request: ImageRequest,
    },
    /// `createSnapshot`, `deleteSnapshot`, `rollbackSnapshot`.
    Snapshot {
        action: String,
        request: SnapshotRequest,
    },
}

impl Work {
    pub fn action(&self) -> &str {
        match self {
            Work::Guest { action, .. }
            | Work::Image { action, .. }
            | Work::Snapshot { action, .. } => action,
        }
    }
}

/// How the agent is set up.
#[derive(Debug, Clone)]
pub struct Settings {
    pub config: Config,
    pub db_path: PathBuf,
    pub joblog_max: usize,
    /// How long a SIGTERM waits for running jobs.
    pub drain_timeout: Duration,
    /// The HTTP server's limits (`mistify_rpc::limits`).
    pub limits: mistify_rpc::limits::Limits,
    /// HTTPS instead of HTTP (`--tls-cert`, `--tls-key`, `--client-ca`).
    pub tls: Option<TlsSettings>,
}

/// The agent's TLS: the server configuration and whether it requires client
/// certificates (mTLS).
#[derive(Debug, Clone)]
pub struct TlsSettings {
    pub config: Arc<rustls::ServerConfig>,
    pub client_certs: bool,
}

/// The agent.
pub struct Agent {
    pub config: Config,
    pub store: Arc<Store>,
    pub metrics: Metrics,
    services: HashMap<String, Service>,
    runners: Mutex<HashMap<String, Arc<Runner>>>,
    draining: AtomicBool,
    running: AtomicUsize,
    idle: Notify,
    job_events: broadcast::Sender<String>,
    drain_timeout: Duration,
    /// The HTTP server's limits, used by [`crate::serve`].
    pub limits: mistify_rpc::limits::Limits,
    /// HTTPS settings, used by [`crate::serve`].
    pub tls: Option<TlsSettings>,
}

fn now() -> chrono::DateTime<Utc> {
    Utc::now()
}

/// The MAC given to a NIC that has none: `02:` and the first five bytes of the MD5 of the
/// guest id (the first NIC; lochness's rule) or of `<id>-<index>` (further NICs).
pub fn derived_mac(guest_id: &str, index: usize) -> String {
    let digest = if index == 0 {
        md5::compute(guest_id.as_bytes())
    } else {
        md5::compute(format!("{guest_id}-{index}").as_bytes())
    };
    let mut mac = String::from("02");
    for b in &digest.0[..5] {
        mac.push_str(&format!(":{b:02x}"));
    }
    mac
}

impl Agent {
    /// Opens the store, recovers jobs interrupted by a crash or a stop, creates the
    /// runners and starts their workers.
    pub fn start(settings: Settings) -> Result<Arc<Agent>, AgentError> {
        let store = Arc::new(Store::open(&settings.db_path, settings.joblog_max)?);
        let client = Client::new();
        let services = settings
            .config
            .services
            .iter()
            .map(|(name, def)| {
                let cfg = ServiceConfig::local(def.port)
                    .path(def.path.clone())
                    .timeout(def.timeout)
                    .idle_timeout(def.timeout)
                    .max_pending(def.max_pending)
                    .token(def.token.clone());
                (name.clone(), client.service(name.clone(), cfg))
            })
            .collect();
        let (job_events, _) = broadcast::channel(1024);
        let agent = Arc::new(Agent {
            config: settings.config,
            store,
            metrics: Metrics::default(),
            services,
            runners: Mutex::new(HashMap::new()),
            draining: AtomicBool::new(false),
            running: AtomicUsize::new(0),
            idle: Notify::new(),
            job_events,
            drain_timeout: settings.drain_timeout,
            limits: settings.limits,
            tls: settings.tls,
        });
        agent.recover()?;
        Ok(agent)
    }

    fn recover(self: &Arc<Self>) -> Result<(), AgentError> {
        let stamp = now();
        for (job, _) in self.store.jobs_in(JobStatus::Running)? {
            self.store.update_job(&job.id, |j| {
                j.status = JobStatus::Error;
                j.message = RESTARTED.into();
                j.updated_at = stamp;
                true
            })?;
            self.metrics.job_finished(JobStatus::Error);
            tracing::warn!(job = %job.id, guest = %job.guest_id, action = %job.action, "{RESTARTED}");
        }
        self.ensure_runner(AGENT_RUNNER);
        for id in self.store.guest_ids() {
            self.ensure_runner(&id);
        }
        for (job, spec) in self.store.jobs_in(JobStatus::Queued)? {
            let resumed = spec
                .and_then(|s| serde_json::from_value::<Work>(s).ok())
                .and_then(|_| self.runner(&job.guest_id))
                .and_then(|r| r.reserve().ok().map(|res| (r, res)));
            match resumed {
                Some((runner, reservation)) => {
                    tracing::info!(job = %job.id, guest = %job.guest_id, action = %job.action, "resuming queued job");
                    self.enqueue(&runner, reservation, job.id);
                }
                None => {
                    self.finish_job(
                        &job.id,
                        Err(
                            "cannot resume after a restart: guest deleted or job unreadable".into(),
                        ),
                    )?;
                }
            }
        }
        Ok(())
    }

    // ------------------------------------------------------------------ runners

    /// The runner of `id`, if any.
    pub fn runner(&self, id: &str) -> Option<Arc<Runner>> {
        self.runners.lock().ok().and_then(|r| r.get(id).cloned())
    }

    /// The runner of `id`, created if needed.
    pub fn ensure_runner(&self, id: &str) -> Arc<Runner> {
        let Ok(mut runners) = self.runners.lock() else {
            // A poisoned lock means a panic while holding it; nothing sensible remains.
            return Runner::new(id);
        };
        runners
            .entry(id.to_string())
            .or_insert_with(|| Runner::new(id))
            .clone()
    }

    /// Queues job `id` on `runner` and makes sure a worker runs it; a job refused
    /// because the guest was deleted meanwhile becomes `Error` / `guest deleted`.
    fn enqueue(self: &Arc<Self>, runner: &Arc<Runner>, reservation: Reservation, id: String) {
        if let Err(id) = reservation.send(id) {
            if let Err(e) = self.fail_if_queued(&id) {
                tracing::error!(job = %id, "cannot fail a job of a deleted guest: {e}");
            }
            return;
        }
        if runner.claim() {
            tokio::spawn(self.clone().worker(runner.clone()));
        }
    }

    fn remove_runner(&self, id: &str) {
        if let Ok(mut runners) = self.runners.lock() {
            runners.remove(id);
        }
    }

    /// Queue depth of every runner (for metrics).
    pub fn queue_depths(&self) -> Vec<(String, usize)> {
        self.runners
            .lock()
            .map(|r| r.values().map(|r| (r.id.clone(), r.depth())).collect())
            .unwrap_or_default()
    }

    // ----------------------------------------------------------------- services

    pub fn action(&self, name: &str) -> Result<&ActionDef, AgentError> {
        self.config
            .action(name)
            .ok_or_else(|| AgentError::NotConfigured(name.to_string()))
    }

    fn service(&self, stage: &StageDef) -> Result<&Service, AgentError> {
        self.services
            .get(&stage.service)
            .ok_or_else(|| AgentError::Internal(format!("unknown service {}", stage.service)))
    }

    /// Every configured service with its URL (for `/healthz`).
    pub fn services(&self) -> impl Iterator<Item = (&String, &Service)> {
        self.services.iter()
    }

    async fn call_stage(
        &self,
        stage: &StageDef,
        request: &impl Serialize,
    ) -> Result<Value, AgentError> {
        let raw = self.call_stage_raw(stage, request).await?;
        serde_json::from_str(raw.get())
            .map_err(|e| AgentError::Stage(format!("{}: unreadable result: {e}", stage.method)))
    }

    /// One stage's call, its result as raw JSON.
    async fn call_stage_raw(
        &self,
        stage: &StageDef,
        request: &impl Serialize,
    ) -> Result<Box<serde_json::value::RawValue>, AgentError> {
        let service = self.service(stage)?;
        self.timed(stage, service.call_raw(&stage.method, request))
            .await
    }

    /// One stage's call, its result read by `seed` while the reply is decoded.
    async fn call_stage_seed<S, R>(
        &self,
        stage: &StageDef,
        request: &impl Serialize,
        seed: S,
    ) -> Result<R, AgentError>
    where
        S: for<'de> serde::de::DeserializeSeed<'de, Value = R>,
    {
        let service = self.service(stage)?;
        self.timed(stage, service.call_seed(&stage.method, request, seed))
            .await
    }

    /// A stage's call, its latency recorded by service and method.
    async fn timed<R>(
        &self,
        stage: &StageDef,
        call: impl std::future::Future<Output = Result<R, RpcError>>,
    ) -> Result<R, AgentError> {
        let start = Instant::now();
        let result = call.await;
        self.metrics.rpc_latency(
            &stage.service,
            &stage.method,
            start.elapsed(),
            result.is_ok(),
        );
        Ok(result?)
    }

    // --------------------------------------------------------------- pipelines

    /// Runs a guest action's stages: each stage gets the guest the previous one
    /// returned, with its own args; every returned guest is stored under the guest's id.
    async fn run_guest(&self, action: &str, guest_id: &str) -> Result<Guest, AgentError> {
        let def = self.action(action)?;
        let mut guest = self
            .store
            .guest(guest_id)
            .map(|g| (*g).clone())
            .ok_or_else(|| AgentError::Stage(GUEST_DELETED.into()))?;
        let mut response = json!({"guest": null});
        for stage in &def.stages {
            let request = mistify_rpc::GuestRequest {
                guest: Some(guest.clone()),
                action: action.to_string(),
                args: stage.args.clone(),
            };
            merge(&mut response, self.call_stage(stage, &request).await?);
            let returned = response
                .get("guest")
                .filter(|g| g.is_object())
                .ok_or_else(|| {
                    AgentError::Stage(format!("{}: sub-agent returned no guest", stage.method))
                })?;
            let mut next: Guest = serde_json::from_value(returned.clone()).map_err(|e| {
                AgentError::Stage(format!("{}: unreadable guest: {e}", stage.method))
            })?;
            if next.id != guest_id {
                tracing::warn!(guest = guest_id, returned = %next.id, stage = %stage.method,
                    "sub-agent returned another guest id; stored under the pipeline's id");
                next.id = guest_id.to_string();
            }
            // Unchanged (e.g. a status read that finds what is stored): no write.
            if self.store.guest(guest_id).as_deref() != Some(&next) {
                let store = self.store.clone();
                let to_store = next.clone();
                store.blocking(move |s| s.put_guest(&to_store)).await?;
            }
            guest = next;
        }
        Ok(guest)
    }

    /// Runs the stages of an image or snapshot action: the same request for each, the
    /// results merged into one response.
    pub async fn run_plain(
        &self,
        action: &str,
        request: &impl Serialize,
        empty: Value,
    ) -> Result<Value, AgentError> {
        let def = self.action(action)?;
        let mut response = empty;
        for stage in &def.stages {
            merge(&mut response, self.call_stage(stage, request).await?);
        }
        Ok(response)
    }

    /// Runs a metrics action: each stage gets its own request with its args; the
    /// `kind` member (`cpu`, `disk`, `nic`) of the merged results, `null` when absent.
    pub async fn run_metrics(
        &self,
        action: &str,
        guest: &serde_json::value::RawValue,
        kind: &str,
    ) -> Result<Box<RawValue>, AgentError> {
        let def = self.action(action)?;
        /// `GuestMetricsRequest` by reference (same JSON), the guest as stored.
        #[derive(Serialize)]
        struct MetricsRequest<'a> {
            guest: &'a serde_json::value::RawValue,
            #[serde(rename = "type")]
            kind: &'a str,
            #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
            args: &'a std::collections::BTreeMap<String, String>,
        }
        if let [stage] = def.stages.as_slice() {
            // One stage (every shipped config): the `kind` member of its result is
            // taken while the reply is decoded, as the sub-agent wrote it; the guest
            // it echoes is skipped, and nothing is built.
            let request = MetricsRequest {
                guest,
                kind,
                args: &stage.args,
            };
            return self.call_stage_seed(stage, &request, Member(kind)).await;
        }
        let mut response = json!({"guest": null, "type": ""});
        for stage in &def.stages {
            let request = MetricsRequest {
                guest,
                kind,
                args: &stage.args,
            };
            merge(&mut response, self.call_stage(stage, &request).await?);
        }
        raw_member(response, kind)
    }

    /// Runs an Info guest action (e.g. `status`) and stores the guest it returns.
    pub async fn run_guest_info(&self, action: &str, guest_id: &str) -> Result<Guest, AgentError> {
        self.run_guest(action, guest_id).await
    }

    /// Opens the byte stream of a Stream action's one stage.
    pub async fn open_stream(
        &self,
        action: &str,
        request: &impl Serialize,
    ) -> Result<RawStream, AgentError> {
        let def = self.action(action)?;
        let stage = def
            .stages
            .first()
            .ok_or_else(|| AgentError::Internal(format!("{action} has no stage")))?;
        let service = self.service(stage)?;
        let stream = service.stream(request).await?;
        if matches!(
            stream.status,
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
        ) {
            // The sub-agent refused the agent itself (the service's `token`): a fault
            // between the agent and its sub-agent (502), not the caller's credentials.
            let status = stream.status;
            let text = stream
                .collect()
                .await
                .map(|b| String::from_utf8_lossy(&b[..b.len().min(512)]).into_owned())
                .unwrap_or_default();
            return Err(AgentError::Rpc(RpcError::Transport {
                service: service.name().to_string(),
                method: service.config().path.clone(),
                message: format!(
                    "the sub-agent refused the agent ({status}; check the service's token): {}",
                    text.trim_end()
                ),
            }));
        }
        Ok(stream)
    }

    // --------------------------------------------------------------------- jobs

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Logs a `Queued` job for `work` on runner `runner_id` and queues it; the job id.
    pub async fn submit(
        self: &Arc<Self>,
        runner_id: &str,
        work: Work,
    ) -> Result<String, AgentError> {
        if self.is_draining() {
            return Err(AgentError::Unavailable {
                message: "the agent is shutting down".into(),
                retry_after: 10,
            });
        }
        let def = self.action(work.action())?;
        if def.kind != ActionType::Async {
            return Err(AgentError::Internal(format!(
                "{} is not an async action",
                work.action()
            )));
        }
        let runner = self.runner(runner_id).ok_or(AgentError::NotFound)?;
        let reservation = runner.reserve()?;
        let stamp = now();
        let job = Job {
            id: uuid::Uuid::new_v4().to_string(),
            guest_id: runner_id.to_string(),
            action: work.action().to_string(),
            queued_at: stamp,
            updated_at: stamp,
            ..Job::default()
        };
        let spec = serde_json::to_value(&work).map_err(|e| AgentError::Internal(e.to_string()))?;
        self.store.add_job_async(job.clone(), Some(spec)).await?;
        let _ = self.job_events.send(job.id.clone());
        self.enqueue(&runner, reservation, job.id.clone());
        Ok(job.id)
    }

    /// Marks job `id` done; `Err(message)` for a failure. Blocks on the store: for
    /// start-up; running jobs end through [`Agent::end_job`].
    fn finish_job(&self, id: &str, outcome: Result<(), String>) -> Result<(), AgentError> {
        let (status, change) = job_end(outcome);
        self.store.update_job(id, change)?;
        self.metrics.job_finished(status);
        let _ = self.job_events.send(id.to_string());
        Ok(())
    }

    /// [`Agent::finish_job`] through the store's group commit: a commit waits for the
    /// disk, and must not hold up a runtime thread meanwhile.
    async fn end_job(&self, id: &str, outcome: Result<(), String>) -> Result<(), AgentError> {
        let (status, change) = job_end(outcome);
        self.store.update_job_async(id.to_string(), change).await?;
        self.metrics.job_finished(status);
        let _ = self.job_events.send(id.to_string());
        Ok(())
    }

    /// Removes the guest of a delete job and marks the job `Complete`, in one write.
    async fn finish_delete(&self, id: &str, guest: String) -> Result<(), AgentError> {
        let stamp = now();
        let job = id.to_string();
        let store = self.store.clone();
        store
            .blocking(move |s| {
                s.delete_guest_with_job(&guest, &job, |j| {
                    j.status = JobStatus::Complete;
                    j.message = String::new();
                    j.updated_at = stamp;
                    true
                })
            })
            .await?;
        self.metrics.job_finished(JobStatus::Complete);
        let _ = self.job_events.send(id.to_string());
        Ok(())
    }

    /// Cancels a job that has not started: it becomes `Error` / `cancelled`.
    pub async fn cancel(self: &Arc<Self>, id: &str) -> Result<Job, AgentError> {
        let stamp = now();
        let key = id.to_string();
        let outcome = self
            .store
            .blocking(move |s| {
                s.update_job(&key, |j| {
                    if j.status != JobStatus::Queued {
                        return false;
                    }
                    j.status = JobStatus::Error;
                    j.message = CANCELLED.into();
                    j.updated_at = stamp;
                    true
                })
            })
            .await?;
        match outcome {
            None => Err(AgentError::NotFound),
            Some((job, true)) => {
                self.metrics.job_finished(JobStatus::Error);
                let _ = self.job_events.send(job.id.clone());
                Ok(job)
            }
            Some((job, false)) => Err(AgentError::Conflict(format!(
                "job {} is {} and can no longer be cancelled",
                job.id, job.status
            ))),
        }
    }

    /// The job, once it is done or `wait` has passed.
    pub async fn wait_job(&self, id: &str, wait: Duration) -> Result<Job, AgentError> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut events = self.job_events.subscribe();
        loop {
            let job = self.store.job(id)?.ok_or(AgentError::NotFound)?;
            if job.status.is_done() || tokio::time::Instant::now() >= deadline {
                return Ok(job);
            }
            loop {
                match tokio::time::timeout_at(deadline, events.recv()).await {
                    Err(_) => break,
                    Ok(Ok(event)) if event != id => continue,
                    Ok(_) => break,
                }
            }
        }
    }

    /// Runs the runner's queued jobs one at a time, then ends.
    async fn worker(self: Arc<Self>, runner: Arc<Runner>) {
        loop {
            // While stopping, queued jobs stay `Queued`: they run after the next start.
            let next = if self.is_draining() {
                None
            } else {
                runner.pop()
            };
            let Some(job_id) = next else {
                if runner.release() && !self.is_draining() {
                    continue;
                }
                return;
            };
            self.running.fetch_add(1, Ordering::SeqCst);
            let deleted = self.run_job(&job_id).await;
            if self.running.fetch_sub(1, Ordering::SeqCst) == 1 {
                self.idle.notify_waiters();
            }
            if deleted {
                self.retire(&runner);
                return;
            }
        }
    }

    /// After a successful delete: no more jobs for this guest.
    fn retire(&self, runner: &Runner) {
        self.remove_runner(&runner.id);
        for id in runner.close() {
            if let Err(e) = self.fail_if_queued(&id) {
                tracing::error!(job = %id, "cannot fail a job of a deleted guest: {e}");
            }
        }
        // Jobs logged but never queued (a submission racing the delete).
        if let Ok(jobs) = self.store.guest_jobs(&runner.id, usize::MAX) {
            for job in jobs.iter().filter(|j| j.status == JobStatus::Queued) {
                let _ = self.fail_if_queued(&job.id);
            }
        }
    }

    fn fail_if_queued(&self, id: &str) -> Result<(), AgentError> {
        let stamp = now();
        let changed = self.store.update_job(id, |j| {
            if j.status != JobStatus::Queued {
                return false;
            }
            j.status = JobStatus::Error;
            j.message = GUEST_DELETED.into();
            j.updated_at = stamp;
            true
        })?;
        if matches!(changed, Some((_, true))) {
            self.metrics.job_finished(JobStatus::Error);
            let _ = self.job_events.send(id.to_string());
        }
        Ok(())
    }

    /// Runs one queued job; true when it deleted its guest.
    async fn run_job(&self, id: &str) -> bool {
        let stamp = now();
        let started = self
            .store
            .update_job_async(id.to_string(), move |j| {
                if j.status != JobStatus::Queued {
                    return false;
                }
                j.status = JobStatus::Running;
                j.started_at = stamp;
                j.updated_at = stamp;
                true
            })
            .await;
        match started {
            Ok(Some((_, true))) => {}
            Ok(_) => return false, // cancelled or pruned meanwhile
            Err(e) => {
                tracing::error!(job = id, "cannot start the job: {e}");
                return false;
            }
        }
        let _ = self.job_events.send(id.to_string());
        let work = match self.store.job_spec(id) {
            Ok(Some(spec)) => serde_json::from_value::<Work>(spec).map_err(|e| e.to_string()),
            Ok(None) => Err("the job has no spec".to_string()),
            Err(e) => Err(e.to_string()),
        };
        let (outcome, guest) = match work {
            Ok(work) => {
                let outcome = AssertUnwindSafe(self.execute(&work))
                    .catch_unwind()
                    .await
                    .unwrap_or_else(|_| Err(AgentError::Internal("the pipeline panicked".into())));
                let guest = match work {
                    Work::Guest { guest_id, .. } => Some(guest_id),
                    _ => None,
                };
                (outcome, guest)
            }
            Err(e) => (
                Err(AgentError::Internal(format!("cannot read the job: {e}"))),
                None,
            ),
        };
        if let (Ok(true), Some(guest)) = (&outcome, guest) {
            return match self.finish_delete(id, guest).await {
                Ok(()) => true,
                Err(e) => {
                    tracing::error!(job = id, "cannot remove the deleted guest: {e}");
                    if let Err(e) = self.end_job(id, Err(e.to_string())).await {
                        tracing::error!(job = id, "cannot record the end of the job: {e}");
                    }
                    false
                }
            };
        }
        let result = outcome.map(|_| ()).map_err(|e| e.to_string());
        if let Err(message) = &result {
            tracing::warn!(job = id, "job failed: {message}");
        }
        if let Err(e) = self.end_job(id, result).await {
            tracing::error!(job = id, "cannot record the end of the job: {e}");
        }
        false
    }

    /// Executes `work`; `Ok(true)` when its guest is to be removed (a delete).
    async fn execute(&self, work: &Work) -> Result<bool, AgentError> {
        match work {
            Work::Guest { action, guest_id } => {
                self.run_guest(action, guest_id).await?;
                // The guest record goes with the job's completion, in one write.
                Ok(action == "delete" || action == "containerDelete")
            }
            Work::Image { action, request } => {
                self.run_plain(action, request, json!({"images": null}))
                    .await?;
                Ok(false)
            }
            Work::Snapshot { action, request } => {
                self.run_plain(action, request, json!({"snapshots": null}))
                    .await?;
                Ok(false)
            }
        }
    }

    /// Stops accepting work, lets running jobs finish within the drain timeout, and
    /// leaves queued jobs `Queued` for the next start.
    pub async fn drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
        let deadline = tokio::time::Instant::now() + self.drain_timeout;
        loop {
            let notified = self.idle.notified();
            let running = self.running.load(Ordering::SeqCst);
            if running == 0 {
                tracing::info!("no job running; stopping");
                return;
            }
            tracing::info!(running, "waiting for running jobs before stopping");
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                tracing::warn!(
                    running = self.running.load(Ordering::SeqCst),
                    "drain timeout: stopping with jobs running (they will be marked failed on restart)"
                );
                return;
            }
        }
    }
}

/// The status a job ends with and the change that records it.
fn job_end(outcome: Result<(), String>) -> (JobStatus, impl FnOnce(&mut Job) -> bool + Send) {
    let stamp = now();
    let status = if outcome.is_ok() {
        JobStatus::Complete
    } else {
        JobStatus::Error
    };
    let change = move |j: &mut Job| {
        j.status = status;
        j.message = outcome.err().unwrap_or_default();
        j.updated_at = stamp;
        true
    };
    (status, change)
}

/// The member `key` of a merged multi-stage result, as JSON text (`null` when absent).
fn raw_member(mut response: Value, key: &str) -> Result<Box<RawValue>, AgentError> {
    match response.get_mut(key).map(Value::take) {
        Some(part) => serde_json::value::to_raw_value(&part)
            .map_err(|e| AgentError::Internal(format!("cannot encode the result: {e}"))),
        None => Ok(RawValue::NULL.to_owned()),
    }
}

/// Reads the member `.0` of a JSON object (the last one if repeated, as a map would
/// keep it) as its JSON text, checked but not parsed into values; the other members
/// are skipped without being built or copied. Anything but an object, and an object
/// without the member, read as `null`, as the multi-stage path reads them.
struct Member<'k>(&'k str);

impl<'de> serde::de::DeserializeSeed<'de> for Member<'_> {
    type Value = Box<RawValue>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Member<'_> {
    type Value = Box<RawValue>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(hit) = map.next_key_seed(KeyIs(self.0))? {
            if hit {
                found = Some(map.next_value::<&'de RawValue>()?);
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok(found.unwrap_or(RawValue::NULL).to_owned())
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(RawValue::NULL.to_owned())
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(RawValue::NULL.to_owned())
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(RawValue::NULL.to_owned())
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(RawValue::NULL.to_owned())
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(RawValue::NULL.to_owned())
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(RawValue::NULL.to_owned())
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(RawValue::NULL.to_owned())
    }
}

/// Whether a map key equals `.0`, compared where it lies (no `String` per key).
struct KeyIs<'k>(&'k str);

impl<'de> serde::de::DeserializeSeed<'de> for KeyIs<'_> {
    type Value = bool;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_str(self)
    }
}

impl serde::de::Visitor<'_> for KeyIs<'_> {
    type Value = bool;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a member name")
    }
    fn visit_str<E>(self, v: &str) -> Result<bool, E> {
        Ok(v == self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::{derived_mac, Member};

    #[test]
    fn a_member_is_found_where_it_lies() {
        use serde::de::DeserializeSeed;
        fn member(text: &str, key: &str) -> Result<String, serde_json::Error> {
            let mut de = serde_json::Deserializer::from_str(text);
            let raw = Member(key).deserialize(&mut de)?;
            de.end()?;
            Ok(raw.get().to_owned())
        }
        let reply = r#"{"guest":{"id":"g","nics":[{"mac":"02:00"}],"x":[[1],{"y":"\"z"}]},"type":"cpu","cpu":[{"cpu_time":1.5}]}"#;
        assert_eq!(
            member(reply, "cpu").expect("object"),
            r#"[{"cpu_time":1.5}]"#
        );
        assert_eq!(member(reply, "disk").expect("object"), "null");
        // An escaped name is compared unescaped; a repeated one keeps the last.
        assert_eq!(
            member(r#"{"c\u0070u":1,"cpu":2,"cpu":3}"#, "cpu").expect("object"),
            "3"
        );
        // The member's text is kept as the sub-agent wrote it, surrounding blanks aside.
        assert_eq!(
            member("{ \"cpu\" : [ 1 ,2 ] }", "cpu").expect("object"),
            "[ 1 ,2 ]"
        );
        // Anything but an object has no member.
        for other in [
            "[1,{\"cpu\":1}]",
            "\"cpu\"",
            "1",
            "-1",
            "1.5",
            "true",
            "null",
        ] {
            assert_eq!(member(other, "cpu").expect(other), "null", "{other}");
        }
        // Bad JSON anywhere is refused, in the member or in what is skipped.
        for bad in [
            r#"{"cpu":[1,}"#,
            r#"{"cpu":1"#,
            r#"{"cpu":1} x"#,
            r#"{"guest":{"id":},"cpu":1}"#,
            "[1,]",
        ] {
            assert!(member(bad, "cpu").is_err(), "{bad}");
        }
    }

    #[test]
    fn derived_macs_are_local_and_stable() {
        let a = derived_mac("5a0c7d7e-0000-4000-8000-000000000001", 0);
        assert!(a.starts_with("02:") && a.len() == 17, "{a}");
        assert_eq!(a, derived_mac("5a0c7d7e-0000-4000-8000-000000000001", 0));
        assert_ne!(a, derived_mac("5a0c7d7e-0000-4000-8000-000000000001", 1));
        // md5("") = d41d8cd98f00b204e9800998ecf8427e
        assert_eq!(derived_mac("", 0), "02:d4:1d:8c:d9:8f");
    }
}
