//! The agent core: its services, runners and store, start-up recovery and draining.
//!
//! The core is split by concern: [`crate::pipeline`] runs a configured action's stages
//! against the sub-agents, [`crate::jobs`] queues, runs and ends async jobs (one
//! transition function for every job status change), and [`crate::ops`] is what the
//! REST layer calls, one typed operation per request (runner slots, pipeline ids and
//! the create-retry rule live there). The REST layer (`crate::api`) only parses HTTP
//! into typed values, calls an operation and writes the answer.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mistify_rpc::{Client, Service, ServiceConfig};
use tokio::sync::{broadcast, Notify};

use crate::config::{ActionDef, Config};
use crate::error::AgentError;
use crate::metrics::Metrics;
use crate::runner::{Runner, AGENT_RUNNER};
use crate::store::Store;
use mistify_types::Action;

/// How the agent is set up.
#[derive(Debug, Clone)]
pub struct Settings {
    pub config: Config,
    pub db_path: PathBuf,
    pub joblog_max: usize,
    /// How long a SIGTERM waits for running jobs.
    pub drain_timeout: Duration,
    /// The HTTP server's limits (`mistify_http::Limits`).
    pub limits: mistify_http::Limits,
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
    pub(crate) running: AtomicUsize,
    pub(crate) idle: Notify,
    /// The id of every job whose status changed (long polls wait on it).
    pub(crate) job_events: broadcast::Sender<String>,
    drain_timeout: Duration,
    /// The HTTP server's limits, used by [`crate::serve`].
    pub limits: mistify_http::Limits,
    /// HTTPS settings, used by [`crate::serve`].
    pub tls: Option<TlsSettings>,
}

impl Agent {
    /// Opens the store, recovers jobs interrupted by a crash or a stop, creates the
    /// runners and starts their workers. Inside the tokio runtime.
    pub async fn start(settings: Settings) -> Result<Arc<Agent>, AgentError> {
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
        agent.ensure_runner(AGENT_RUNNER);
        for id in agent.store.guest_ids() {
            agent.ensure_runner(&id);
        }
        agent.recover().await?;
        Ok(agent)
    }

    // ------------------------------------------------------------------ runners

    /// The runner of `id`, if any.
    pub fn runner(&self, id: &str) -> Option<Arc<Runner>> {
        self.runners.lock().ok().and_then(|r| r.get(id).cloned())
    }

    /// The runner of `id`, or the internal error of a runner that should exist (every
    /// stored guest has one).
    pub(crate) fn runner_of(&self, id: &str) -> Result<Arc<Runner>, AgentError> {
        self.runner(id)
            .ok_or_else(|| AgentError::Internal(format!("the runner of {id} is missing")))
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

    pub(crate) fn remove_runner(&self, id: &str) {
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

    /// The stages of `action`, or 404 `<action>: Not configured`.
    pub fn action(&self, action: Action) -> Result<&ActionDef, AgentError> {
        self.config
            .action(action)
            .ok_or(AgentError::NotConfigured(action))
    }

    /// The service a stage names (checked to exist when the configuration was loaded).
    pub(crate) fn service(&self, name: &str) -> Result<&Service, AgentError> {
        self.services
            .get(name)
            .ok_or_else(|| AgentError::Internal(format!("unknown service {name}")))
    }

    /// Every configured service with its URL (for `/healthz`).
    pub fn services(&self) -> impl Iterator<Item = (&String, &Service)> {
        self.services.iter()
    }

    // ------------------------------------------------------------------ draining

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
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
