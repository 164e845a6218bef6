//! The Manager: services, their dependency graph and explicit state machine.
//!
//! All bookkeeping happens under one short-held `std::sync::Mutex`; provider calls
//! (start, stop, check) and readiness probes run in their own tasks and report back
//! through [`ProviderContext`], stamped with a generation so stale reports are ignored.
//! After every change [`Inner::reconcile`] decides what to start and stop: dependents
//! stop before their dependencies (independent branches in parallel) and start only once
//! every dependency pattern has a ready provider.

use crate::api::{Hex, LogRecord, ManagerInfo, ServiceInfo, State, Time};
use crate::daemon::logring::{FileSink, LogRing};
use crate::manifest::{self, Manifest, Readiness, DEFAULT_START_LIMIT_BURST};
use async_trait::async_trait;
use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Errors of Manager operations (mapped to HTTP statuses at the API edge).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManagerError {
    #[error("Service not found")]
    NotFound,
    #[error("Conflicting service enabled")]
    Conflict,
    #[error("Service name already exists")]
    NameExists,
    #[error("Service is enabled")]
    Enabled,
    #[error("Manager is shutting down")]
    ShuttingDown,
}

/// What a [`Provider`] runs for a service: a process, or anything else that can be
/// started, stopped and checked.
#[async_trait]
pub trait Provider: Send + Sync + 'static {
    /// Starts the unit; returns its process id if it has one. Must not block long: wait
    /// for readiness through `ctx.ready()` (or the service's `ready` mode) instead.
    async fn start(&self, ctx: ProviderContext) -> Result<Option<u32>, String>;
    /// Stops the unit and waits until it is gone. Cannot fail.
    async fn stop(&self);
    /// Whether [`Provider::check`] probes anything (periodic checks run only then).
    fn has_check(&self) -> bool {
        false
    }
    /// A health probe.
    async fn check(&self) -> Result<(), String> {
        Ok(())
    }
}

/// The handle a provider uses to report about one start of its service.
#[derive(Clone)]
pub struct ProviderContext {
    mgr: Weak<Manager>,
    name: String,
    generation: u64,
}

impl ProviderContext {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Adds a line to the service log (and the consolidated log).
    pub fn log(&self, text: &str) {
        if let Some(m) = self.mgr.upgrade() {
            m.service_log(&self.name, text);
        }
    }

    /// The unit is ready (used with `ready: notify`, or by non-process providers).
    pub fn ready(&self) {
        self.event(Event::Ready);
    }

    /// The unit exited by itself: `Ok` for a clean exit, `Err(reason)` for a failure.
    pub fn exited(&self, outcome: Result<(), String>) {
        self.event(Event::Exited(outcome));
    }

    /// A `STATUS=` text from the unit.
    pub fn status(&self, text: &str) {
        self.log(&format!("status: {text}"));
    }

    fn event(&self, ev: Event) {
        if let Some(m) = self.mgr.upgrade() {
            m.event(&self.name, self.generation, ev);
        }
    }
}

/// How a service is supervised (independent of its provider).
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceConfig {
    pub name: String,
    pub description: String,
    pub provides: Vec<String>,
    pub depends: Vec<String>,
    /// `depends` only orders the start: losing a dependency later does not stop this
    /// service (manifest `onDependencyLoss: "keep"`). Shutdown still stops it first.
    pub keep_on_dependency_loss: bool,
    pub conflicts: Vec<String>,
    pub restart: bool,
    pub oneshot: bool,
    pub ready: Readiness,
    pub ready_timeout: Duration,
    pub restart_backoff: Duration,
    pub start_limit_burst: u32,
    pub start_limit_interval: Duration,
    pub check_interval: Duration,
    pub check_failures: u32,
    pub log_file: Option<PathBuf>,
}

impl ServiceConfig {
    /// A plain service with the defaults.
    pub fn new(name: &str) -> ServiceConfig {
        ServiceConfig {
            name: name.to_string(),
            description: String::new(),
            provides: Vec::new(),
            depends: Vec::new(),
            keep_on_dependency_loss: false,
            conflicts: Vec::new(),
            restart: false,
            oneshot: false,
            ready: Readiness::Exec,
            ready_timeout: manifest::DEFAULT_READY_TIMEOUT,
            restart_backoff: manifest::DEFAULT_RESTART_BACKOFF,
            start_limit_burst: DEFAULT_START_LIMIT_BURST,
            start_limit_interval: manifest::DEFAULT_START_LIMIT_INTERVAL,
            check_interval: manifest::DEFAULT_CHECK_INTERVAL,
            check_failures: manifest::DEFAULT_CHECK_FAILURES,
            log_file: None,
        }
    }

    pub fn from_manifest(m: &Manifest) -> ServiceConfig {
        ServiceConfig {
            name: m.name.clone(),
            description: m.description.clone(),
            provides: m.provides.clone(),
            depends: m.depends.clone(),
            keep_on_dependency_loss: m.keep_on_dependency_loss,
            conflicts: m.conflicts.clone(),
            restart: m.restart,
            oneshot: m.service_type == manifest::ServiceType::Oneshot,
            ready: m.ready.clone(),
            ready_timeout: m.ready_timeout,
            restart_backoff: m.restart_backoff,
            start_limit_burst: m.start_limit_burst,
            start_limit_interval: m.start_limit_interval,
            check_interval: m.check_interval,
            check_failures: m.check_failures,
            log_file: m.log_file.clone(),
        }
    }
}

/// After how long a `ready: exec` service that is still up is reported `Healthy`.
pub const SETTLE: Duration = Duration::from_millis(500);
const SELF_HEALING: &str = "Self-healing";
/// The longest restart back-off.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Idle,
    Starting,
    Running,
    Stopping,
}

enum Event {
    StartDone(Result<Option<u32>, String>),
    Ready,
    Healthy,
    ReadyTimeout,
    Exited(Result<(), String>),
    CheckFailed(String),
    StopDone,
    Retry,
}

struct Svc {
    cfg: ServiceConfig,
    manifest: Option<Manifest>,
    provider: Arc<dyn Provider>,
    log: LogRing,
    file: Option<FileSink>,
    enabled: bool,
    phase: Phase,
    ready: bool,
    exited: bool,
    failed: bool,
    throttled: bool,
    throttled_until: Option<Time>,
    reason: String,
    stamp: Time,
    serial: u64,
    stop_reason: Option<String>,
    restart_after_stop: bool,
    start_why: Option<String>,
    pid: Option<u32>,
    starts: VecDeque<Instant>,
    restarts: u64,
    failures_in_row: u32,
    retry_pending: bool,
    retry_armed: bool,
    early_ready: bool,
    early_exit: Option<Result<(), String>>,
    started_at: Option<Instant>,
    generation: u64,
}

impl Svc {
    fn state(&self) -> State {
        match self.phase {
            Phase::Stopping => State::Stopping,
            _ if !self.enabled => State::Disabled,
            _ if self.throttled => State::Throttled,
            _ if self.failed => State::Failed,
            Phase::Starting => State::Starting,
            Phase::Running if self.exited => State::Exited,
            Phase::Running if !self.ready => State::Starting,
            Phase::Running => State::Running,
            Phase::Idle => State::Waiting,
        }
    }

    /// Whether this service currently satisfies its dependents.
    fn provides_now(&self) -> bool {
        self.enabled
            && self.phase == Phase::Running
            && self.ready
            && !self.failed
            && self.stop_reason.is_none()
    }

    fn satisfies(&self, pattern: &str) -> bool {
        manifest::satisfies(&self.cfg.name, &self.cfg.provides, pattern)
    }

    fn info(&self) -> ServiceInfo {
        ServiceInfo {
            name: self.cfg.name.clone(),
            description: self.cfg.description.clone(),
            enabled: self.enabled,
            running: self.phase == Phase::Running && self.stop_reason.is_none(),
            failed: self.failed,
            provides: self.cfg.provides.clone(),
            depends: self.cfg.depends.clone(),
            conflicts: self.cfg.conflicts.clone(),
            status: self.reason.clone(),
            tstamp: self.stamp,
            serial: Hex(self.serial),
            state: self.state(),
            reason: self.reason.clone(),
            ready: self.ready && self.phase == Phase::Running,
            pid: self.pid,
            restarts: self.restarts,
            throttled_until: if self.throttled {
                self.throttled_until
            } else {
                None
            },
        }
    }
}

struct Inner {
    serial: u64,
    updated: Time,
    list_serial: u64,
    list_time: Time,
    log: LogRing,
    logfile: Option<FileSink>,
    services: BTreeMap<String, Svc>,
    shutting_down: bool,
    pending: Vec<Action>,
}

enum Action {
    Start {
        name: String,
        generation: u64,
        provider: Arc<dyn Provider>,
    },
    Stop {
        name: String,
        generation: u64,
        provider: Arc<dyn Provider>,
    },
    Probe {
        name: String,
        generation: u64,
        ready: Readiness,
        timeout: Duration,
    },
    After {
        name: String,
        generation: u64,
        delay: Duration,
        event: fn() -> Event,
    },
    Checks {
        name: String,
        generation: u64,
        provider: Arc<dyn Provider>,
        interval: Duration,
        failures: u32,
    },
}

/// One supervisor instance.
pub struct Manager {
    name: String,
    created: Time,
    inner: Mutex<Inner>,
    tick: watch::Sender<u64>,
    watchers: std::sync::atomic::AtomicUsize,
    me: Weak<Manager>,
}

impl Manager {
    /// A new Manager (an empty name becomes `govisor`). Must be called inside a tokio
    /// runtime, because providers are driven by tasks.
    pub fn new(name: &str) -> Arc<Manager> {
        let name = if name.is_empty() { "govisor" } else { name }.to_string();
        let created = Time::now();
        let (tick, _) = watch::channel(0);
        Arc::new_cyclic(|me| Manager {
            name,
            created,
            inner: Mutex::new(Inner {
                serial: created.nanos(),
                updated: created,
                list_serial: created.nanos(),
                list_time: Time::zero(),
                log: LogRing::new(),
                logfile: None,
                services: BTreeMap::new(),
                shutting_down: false,
                pending: Vec::new(),
            }),
            tick,
            watchers: std::sync::atomic::AtomicUsize::new(0),
            me: me.clone(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A poisoned lock only means a panic elsewhere; the data is still consistent
        // enough to keep supervising (and to stop everything).
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wake(&self) {
        self.tick.send_modify(|t| *t = t.wrapping_add(1));
    }

    /// Sends the consolidated log to a file as well (govisord's `--logfile`).
    pub fn set_logfile(&self, path: PathBuf) {
        self.lock().logfile = Some(FileSink::new(path));
    }

    /// Adds a line to the consolidated (manager) log.
    pub fn log(&self, text: &str) {
        {
            let mut g = self.lock();
            g.mgr_log(text);
        }
        self.wake();
    }

    fn service_log(&self, name: &str, text: &str) {
        {
            let mut g = self.lock();
            g.svc_log(name, text);
        }
        self.wake();
    }

    /// Writes the start-of-monitoring banner.
    pub fn start_monitoring(&self) {
        self.log(&format!(
            "*** Govisor starting monitoring: {} ***",
            self.name
        ));
    }

    /// Adds a service driven by `provider`.
    pub fn add_service(
        &self,
        cfg: ServiceConfig,
        provider: Arc<dyn Provider>,
    ) -> Result<(), ManagerError> {
        self.add(cfg, None, provider)
    }

    /// Adds a process service from a manifest.
    pub fn add_manifest(&self, m: Manifest) -> Result<(), ManagerError> {
        let provider = Arc::new(crate::daemon::process::Process::new(&m));
        self.add(ServiceConfig::from_manifest(&m), Some(m), provider)
    }

    fn add(
        &self,
        cfg: ServiceConfig,
        manifest: Option<Manifest>,
        provider: Arc<dyn Provider>,
    ) -> Result<(), ManagerError> {
        {
            let mut g = self.lock();
            if g.shutting_down {
                return Err(ManagerError::ShuttingDown);
            }
            let name = cfg.name.clone();
            if g.services.contains_key(&name) {
                g.mgr_log(&format!(
                    "[{}] Service name already exists: {name}",
                    self.name
                ));
                return Err(ManagerError::NameExists);
            }
            let desc = cfg.description.clone();
            let file = cfg.log_file.clone().map(FileSink::new);
            g.services.insert(
                name.clone(),
                Svc {
                    cfg,
                    manifest,
                    provider,
                    log: LogRing::new(),
                    file,
                    enabled: false,
                    phase: Phase::Idle,
                    ready: false,
                    exited: false,
                    failed: false,
                    throttled: false,
                    throttled_until: None,
                    reason: String::new(),
                    stamp: Time::now(),
                    serial: 0,
                    stop_reason: None,
                    restart_after_stop: false,
                    start_why: None,
                    pid: None,
                    starts: VecDeque::new(),
                    restarts: 0,
                    failures_in_row: 0,
                    retry_pending: false,
                    retry_armed: false,
                    early_ready: false,
                    early_exit: None,
                    started_at: None,
                    generation: 0,
                },
            );
            g.mgr_log(&format!("[{}] Added service [{name}]: {desc}", self.name));
            g.svc_log(
                &name,
                &format!("Added service {name} to {}: {desc}", self.name),
            );
            g.list_serial = g.list_serial.wrapping_add(1);
            g.list_time = Time::now();
            g.set_reason(&name, "Added service");
            // Warn about patterns nothing provides (they simply wait).
            let missing: Vec<String> = g
                .services
                .get(&name)
                .map(|s| s.cfg.depends.clone())
                .unwrap_or_default()
                .into_iter()
                .filter(|d| {
                    !g.services
                        .values()
                        .any(|t| t.cfg.name != name && t.satisfies(d))
                })
                .collect();
            for d in missing {
                tracing::warn!(service = %name, "no service provides dependency {d:?} (yet)");
            }
        }
        self.wake();
        Ok(())
    }

    /// Removes a disabled service.
    pub fn delete_service(&self, name: &str) -> Result<(), ManagerError> {
        {
            let mut g = self.lock();
            let s = g.services.get(name).ok_or(ManagerError::NotFound)?;
            if s.enabled || s.phase != Phase::Idle {
                return Err(ManagerError::Enabled);
            }
            g.services.remove(name);
            g.list_serial = g.list_serial.wrapping_add(1);
            g.list_time = Time::now();
            g.bump();
        }
        self.wake();
        Ok(())
    }

    /// Enables a service. Already enabled: nothing happens (a fault is not cleared).
    pub fn enable(&self, name: &str) -> Result<(), ManagerError> {
        let res = {
            let mut g = self.lock();
            g.enable(name)
        };
        self.run_reconcile();
        res
    }

    pub fn disable(&self, name: &str) -> Result<(), ManagerError> {
        {
            let mut g = self.lock();
            let s = g.services.get_mut(name).ok_or(ManagerError::NotFound)?;
            if !s.enabled && s.reason == "Disabled" {
                return Ok(());
            }
            s.enabled = false;
            s.failed = false;
            s.throttled = false;
            s.retry_pending = false;
            if s.phase != Phase::Idle && s.stop_reason.is_none() {
                s.stop_reason = Some("Disabled".into());
            }
            g.svc_log(name, &format!("Disabling service {name}"));
            g.set_reason(name, "Disabled");
        }
        self.run_reconcile();
        Ok(())
    }

    /// Stops the service (and the dependents that need it) and starts it again.
    /// A disabled service is left alone.
    pub fn restart(&self, name: &str) -> Result<(), ManagerError> {
        {
            let mut g = self.lock();
            let s = g.services.get_mut(name).ok_or(ManagerError::NotFound)?;
            if !s.enabled {
                return Ok(());
            }
            if s.phase == Phase::Idle {
                s.reset_limits();
                s.start_why = Some("Restarting".into());
                g.svc_log(name, &format!("Restarting service {name}"));
                g.set_reason(name, "Restarting");
            } else {
                s.restart_after_stop = true;
                if s.stop_reason.is_none() {
                    s.stop_reason = Some("Stopping for restart".into());
                }
                g.svc_log(name, &format!("Restarting service {name}"));
                g.bump_svc(name);
            }
        }
        self.run_reconcile();
        Ok(())
    }

    /// Clears a fault (or the throttled state) and tries to start the service again.
    pub fn clear(&self, name: &str) -> Result<(), ManagerError> {
        {
            let mut g = self.lock();
            let s = g.services.get_mut(name).ok_or(ManagerError::NotFound)?;
            let was_failed = s.failed || s.throttled;
            s.reset_limits();
            if was_failed {
                s.start_why = Some("Cleared fault".into());
                g.svc_log(name, &format!("Clearing fault on {name}"));
                g.set_reason(name, "Cleared fault");
            } else {
                g.bump_svc(name);
            }
        }
        self.run_reconcile();
        Ok(())
    }

    /// Enables every service in name order; conflicts are logged, the first one wins.
    pub fn enable_all(&self) {
        let names: Vec<String> = self.lock().services.keys().cloned().collect();
        for n in names {
            if let Err(e) = self.enable(&n) {
                tracing::warn!(service = %n, "not enabled at start-up: {e}");
                self.log(&format!("[{}] Not enabling {n}: {e}", self.name));
            }
        }
    }

    /// Stops every service in dependency order (dependents first, independent branches
    /// in parallel) and waits until all are stopped.
    pub async fn shutdown(&self) {
        {
            let mut g = self.lock();
            g.shutting_down = true;
            let names: Vec<String> = g.services.keys().cloned().collect();
            for n in names {
                if let Some(s) = g.services.get_mut(&n) {
                    s.enabled = false;
                    s.retry_pending = false;
                    if s.phase != Phase::Idle {
                        s.stop_reason = Some("Shutting down".into());
                    }
                }
                g.set_reason(&n, "Shutting down");
            }
        }
        self.run_reconcile();
        self.wait_idle(None).await;
        self.log(&format!("*** Govisor stopped: {} ***", self.name));
    }

    /// Waits (up to `timeout`) until no start or stop is under way, so that a REST action
    /// answers after its effect, as govisor's synchronous operations did.
    /// Only `name` and the services that depend on it (directly or not) are watched.
    pub async fn settle(&self, name: &str, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut rx = self.tick.subscribe();
        loop {
            rx.borrow_and_update();
            let busy = {
                let g = self.lock();
                let mut set: Vec<&Svc> = g.services.get(name).into_iter().collect();
                let mut i = 0;
                while i < set.len() {
                    let parent = set[i];
                    for c in g.services.values() {
                        if Inner::depends_on(c, parent)
                            && !set.iter().any(|x| x.cfg.name == c.cfg.name)
                        {
                            set.push(c);
                        }
                    }
                    i += 1;
                }
                set.iter().any(|s| {
                    matches!(s.phase, Phase::Starting | Phase::Stopping)
                        || (s.phase == Phase::Running && s.stop_reason.is_some())
                })
            };
            if !busy {
                return;
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                _ => return,
            }
        }
    }

    /// Waits (up to `timeout`) until the start-up has played out: no start or stop under
    /// way and no `ready: exec` service still waiting for its settle time to be called
    /// healthy. The daemon serves its API only after this, so that the first answers
    /// describe a steady state.
    pub async fn settle_startup(&self, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut rx = self.tick.subscribe();
        loop {
            rx.borrow_and_update();
            let busy = self.lock().services.values().any(|s| {
                matches!(s.phase, Phase::Starting | Phase::Stopping)
                    || (s.phase == Phase::Running && s.stop_reason.is_some())
                    || (s.phase == Phase::Running
                        && s.ready
                        && !s.failed
                        && s.reason == "Started"
                        && s.cfg.ready == Readiness::Exec)
            });
            if !busy {
                return;
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                _ => return,
            }
        }
    }

    /// Waits until every service (or the named ones) is stopped.
    async fn wait_idle(&self, only: Option<&[String]>) {
        let mut rx = self.tick.subscribe();
        loop {
            rx.borrow_and_update();
            let busy = {
                let g = self.lock();
                g.services
                    .iter()
                    .filter(|(n, _)| only.is_none_or(|o| o.contains(n)))
                    .any(|(_, s)| s.phase != Phase::Idle)
            };
            if !busy {
                return;
            }
            if tokio::time::timeout(Duration::from_secs(1), rx.changed())
                .await
                .is_ok_and(|r| r.is_err())
            {
                return;
            }
        }
    }

    /// Applies a new set of manifests (SIGHUP): removes services that are gone, replaces
    /// the ones that changed, adds new ones, enabling them when `enable` is set.
    pub async fn reload(&self, manifests: Vec<Manifest>, enable: bool) {
        let (gone, fresh): (Vec<String>, Vec<Manifest>) = {
            let g = self.lock();
            let gone = g
                .services
                .iter()
                .filter(|(n, s)| match manifests.iter().find(|m| &m.name == *n) {
                    None => s.manifest.is_some(),
                    Some(m) => s.manifest.as_ref() != Some(m),
                })
                .map(|(n, _)| n.clone())
                .collect();
            let fresh = manifests
                .into_iter()
                .filter(|m| {
                    g.services
                        .get(&m.name)
                        .is_none_or(|s| s.manifest.as_ref() != Some(m))
                })
                .collect();
            (gone, fresh)
        };
        for n in &gone {
            let _ = self.disable(n);
        }
        self.wait_idle(Some(&gone)).await;
        for n in &gone {
            if let Err(e) = self.delete_service(n) {
                tracing::warn!(service = %n, "cannot remove: {e}");
            } else {
                self.log(&format!("[{}] Removed service [{n}]", self.name));
            }
        }
        for m in fresh {
            let name = m.name.clone();
            match self.add_manifest(m) {
                Ok(()) if enable => {
                    if let Err(e) = self.enable(&name) {
                        self.log(&format!("[{}] Not enabling {name}: {e}", self.name));
                    }
                }
                Ok(()) => {}
                Err(e) => tracing::warn!(service = %name, "cannot add: {e}"),
            }
        }
    }

    // ------------------------------------------------------------------ reads

    pub fn info(&self) -> ManagerInfo {
        let g = self.lock();
        ManagerInfo {
            name: self.name.clone(),
            serial: Hex(g.serial),
            created: self.created,
            updated: g.updated,
        }
    }

    /// The service names (sorted), the list serial and the list time.
    pub fn services(&self) -> (Vec<String>, u64, Time) {
        let g = self.lock();
        (
            g.services.keys().cloned().collect(),
            g.list_serial,
            g.list_time,
        )
    }

    pub fn service(&self, name: &str) -> Option<ServiceInfo> {
        self.lock().services.get(name).map(Svc::info)
    }

    /// Every service's info, in name order.
    pub fn all(&self) -> Vec<ServiceInfo> {
        self.lock().services.values().map(Svc::info).collect()
    }

    /// A service's log: records newer than `since`, the current id, the time of the
    /// newest record. `None` for an unknown service.
    pub fn service_log_records(
        &self,
        name: &str,
        since: Option<u64>,
    ) -> Option<(Vec<LogRecord>, u64, Time)> {
        let g = self.lock();
        g.services
            .get(name)
            .map(|s| (s.log.records(since), s.log.current(), s.log.modified()))
    }

    /// The consolidated log, as [`Manager::service_log_records`].
    pub fn log_records(&self, since: Option<u64>) -> (Vec<LogRecord>, u64, Time) {
        let g = self.lock();
        (g.log.records(since), g.log.current(), g.log.modified())
    }

    /// Waits until `value()` differs from `old` or `timeout` passes (returns at once for
    /// a zero timeout). `value` returns `None` when the watched thing is gone.
    pub async fn watch<F>(&self, old: u64, timeout: Duration, value: F)
    where
        F: Fn(&Manager) -> Option<u64>,
    {
        struct Count<'a>(&'a std::sync::atomic::AtomicUsize);
        impl Drop for Count<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
        self.watchers
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let _count = Count(&self.watchers);
        let deadline = tokio::time::Instant::now() + timeout;
        let mut rx = self.tick.subscribe();
        loop {
            rx.borrow_and_update();
            match value(self) {
                Some(v) if v == old => {}
                _ => return,
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                _ => return,
            }
        }
    }

    /// How many long polls are waiting right now.
    pub fn watchers(&self) -> usize {
        self.watchers.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn serial(&self) -> u64 {
        self.lock().serial
    }
    pub fn list_serial(&self) -> u64 {
        self.lock().list_serial
    }
    pub fn service_serial(&self, name: &str) -> Option<u64> {
        self.lock().services.get(name).map(|s| s.serial)
    }
    pub fn service_log_id(&self, name: &str) -> Option<u64> {
        self.lock().services.get(name).map(|s| s.log.current())
    }
    pub fn log_id(&self) -> u64 {
        self.lock().log.current()
    }

    // ------------------------------------------------------------------ engine

    fn event(&self, name: &str, generation: u64, ev: Event) {
        {
            let mut g = self.lock();
            let Some(s) = g.services.get(name) else {
                return;
            };
            if s.generation != generation {
                return;
            }
            g.handle(name, ev);
        }
        self.run_reconcile();
    }

    fn run_reconcile(&self) {
        let actions = {
            let mut g = self.lock();
            g.reconcile()
        };
        self.wake();
        for a in actions {
            self.execute(a);
        }
    }

    fn ctx(&self, name: &str, generation: u64) -> ProviderContext {
        ProviderContext {
            mgr: self.me.clone(),
            name: name.to_string(),
            generation,
        }
    }

    fn execute(&self, a: Action) {
        match a {
            Action::Start {
                name,
                generation,
                provider,
            } => {
                let ctx = self.ctx(&name, generation);
                tokio::spawn(async move {
                    let res = provider.start(ctx.clone()).await;
                    ctx.event(Event::StartDone(res));
                });
            }
            Action::Stop {
                name,
                generation,
                provider,
            } => {
                let ctx = self.ctx(&name, generation);
                tokio::spawn(async move {
                    provider.stop().await;
                    ctx.event(Event::StopDone);
                });
            }
            Action::After {
                name,
                generation,
                delay,
                event,
            } => {
                let ctx = self.ctx(&name, generation);
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    ctx.event(event());
                });
            }
            Action::Probe {
                name,
                generation,
                ready,
                timeout,
            } => {
                let ctx = self.ctx(&name, generation);
                tokio::spawn(async move {
                    let deadline = tokio::time::Instant::now() + timeout;
                    while tokio::time::Instant::now() < deadline {
                        if !ctx.current() {
                            return;
                        }
                        if probe(&ready).await {
                            ctx.ready();
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                });
            }
            Action::Checks {
                name,
                generation,
                provider,
                interval,
                failures,
            } => {
                let ctx = self.ctx(&name, generation);
                tokio::spawn(async move {
                    let mut bad = 0u32;
                    loop {
                        tokio::time::sleep(interval).await;
                        if !ctx.current() {
                            return;
                        }
                        let res = tokio::time::timeout(interval, provider.check())
                            .await
                            .unwrap_or_else(|_| Err("check timed out".into()));
                        match res {
                            Ok(()) => bad = 0,
                            Err(e) => {
                                bad += 1;
                                ctx.log(&format!("Check failed ({bad}/{failures}): {e}"));
                                if bad >= failures {
                                    ctx.event(Event::CheckFailed(e));
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        }
    }
}

impl ProviderContext {
    /// Whether this start is still the service's current one (running).
    fn current(&self) -> bool {
        let Some(m) = self.mgr.upgrade() else {
            return false;
        };
        let g = m.lock();
        g.services.get(&self.name).is_some_and(|s| {
            s.generation == self.generation && s.phase == Phase::Running && s.stop_reason.is_none()
        })
    }
}

async fn probe(ready: &Readiness) -> bool {
    match ready {
        Readiness::Tcp(port) => tokio::time::timeout(
            Duration::from_millis(500),
            tokio::net::TcpStream::connect(("127.0.0.1", *port)),
        )
        .await
        .is_ok_and(|r| r.is_ok()),
        Readiness::Http(url) => {
            let Ok(client) = reqwest::Client::builder()
                .timeout(Duration::from_secs(1))
                .build()
            else {
                return false;
            };
            client
                .get(url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        }
        Readiness::Exec | Readiness::Notify => false,
    }
}

impl Svc {
    fn reset_limits(&mut self) {
        self.failed = false;
        self.throttled = false;
        self.throttled_until = None;
        self.retry_pending = false;
        self.retry_armed = false;
        self.starts.clear();
        self.failures_in_row = 0;
    }
}

impl Inner {
    fn bump(&mut self) -> u64 {
        self.serial = self.serial.wrapping_add(1);
        self.updated = Time::now();
        self.serial
    }

    fn bump_svc(&mut self, name: &str) {
        let serial = self.bump();
        if let Some(s) = self.services.get_mut(name) {
            s.serial = serial;
        }
    }

    fn set_reason(&mut self, name: &str, reason: &str) {
        let serial = self.bump();
        if let Some(s) = self.services.get_mut(name) {
            s.serial = serial;
            if s.reason != reason {
                s.reason = reason.to_string();
                s.stamp = Time::now();
            }
        }
    }

    fn mgr_log(&mut self, text: &str) {
        let now = Time::now();
        tracing::info!(target: "supervisor", "{text}");
        self.log.push(text, now);
        if let Some(f) = self.logfile.as_mut() {
            f.write(now, text);
        }
    }

    fn svc_log(&mut self, name: &str, text: &str) {
        let now = Time::now();
        let mut lines = Vec::new();
        for line in text.trim_matches('\n').split('\n') {
            lines.push(format!("[{name}] {line}"));
        }
        if let Some(s) = self.services.get_mut(name) {
            for l in &lines {
                s.log.push(l, now);
                if let Some(f) = s.file.as_mut() {
                    f.write(now, l);
                }
            }
        }
        for l in &lines {
            tracing::info!(target: "supervisor", service = %name, "{l}");
            self.log.push(l, now);
            if let Some(f) = self.logfile.as_mut() {
                f.write(now, l);
            }
        }
    }

    fn enable(&mut self, name: &str) -> Result<(), ManagerError> {
        if self.shutting_down {
            return Err(ManagerError::ShuttingDown);
        }
        let s = self.services.get(name).ok_or(ManagerError::NotFound)?;
        if s.enabled {
            return Ok(());
        }
        let rival = self
            .services
            .values()
            .filter(|t| t.cfg.name != name && t.enabled)
            .find(|t| {
                t.cfg.conflicts.iter().any(|c| s.satisfies(c))
                    || s.cfg.conflicts.iter().any(|c| t.satisfies(c))
            })
            .map(|t| t.cfg.name.clone());
        if let Some(r) = rival {
            self.svc_log(
                name,
                &format!("Not enabling {name}: conflicts with enabled {r}"),
            );
            self.set_reason(name, "Disabled due to conflict");
            return Err(ManagerError::Conflict);
        }
        if let Some(s) = self.services.get_mut(name) {
            s.enabled = true;
            s.reset_limits();
            s.start_why = Some("Enabled service".into());
        }
        self.svc_log(name, &format!("Enabling service {name}"));
        self.set_reason(name, "Enabled");
        Ok(())
    }

    fn deps_ok(&self, s: &Svc) -> bool {
        s.cfg.depends.iter().all(|d| {
            self.services
                .values()
                .any(|t| t.cfg.name != s.cfg.name && t.satisfies(d) && t.provides_now())
        })
    }

    /// Whether `child` depends on `parent` through any of its patterns.
    fn depends_on(child: &Svc, parent: &Svc) -> bool {
        child.cfg.name != parent.cfg.name && child.cfg.depends.iter().any(|d| parent.satisfies(d))
    }

    fn handle(&mut self, name: &str, ev: Event) {
        let Some(s) = self.services.get_mut(name) else {
            return;
        };
        match ev {
            Event::StartDone(Ok(pid)) => {
                if s.phase != Phase::Starting {
                    return;
                }
                s.phase = Phase::Running;
                s.pid = pid;
                s.started_at = Some(Instant::now());
                s.ready = false;
                s.exited = false;
                let why = s
                    .start_why
                    .take()
                    .unwrap_or_else(|| "Dependency running".into());
                let early_ready = std::mem::take(&mut s.early_ready);
                let early_exit = s.early_exit.take();
                let generation = s.generation;
                let cfg = s.cfg.clone();
                let provider = s.provider.clone();
                self.svc_log(name, &format!("Started {name}: {why}"));
                self.set_reason(name, "Started");
                let n = name.to_string();
                match (&cfg.ready, cfg.oneshot) {
                    (Readiness::Exec, false) => {
                        if let Some(s) = self.services.get_mut(name) {
                            s.ready = true;
                        }
                        self.pending.push(Action::After {
                            name: n.clone(),
                            generation,
                            delay: SETTLE,
                            event: || Event::Healthy,
                        });
                    }
                    (ready, oneshot) => {
                        if !oneshot && matches!(ready, Readiness::Tcp(_) | Readiness::Http(_)) {
                            self.pending.push(Action::Probe {
                                name: n.clone(),
                                generation,
                                ready: ready.clone(),
                                timeout: cfg.ready_timeout,
                            });
                        }
                        self.pending.push(Action::After {
                            name: n.clone(),
                            generation,
                            delay: cfg.ready_timeout,
                            event: || Event::ReadyTimeout,
                        });
                    }
                }
                if provider.has_check() {
                    self.pending.push(Action::Checks {
                        name: n,
                        generation,
                        provider,
                        interval: cfg.check_interval,
                        failures: cfg.check_failures,
                    });
                }
                if early_ready {
                    self.handle(name, Event::Ready);
                }
                if let Some(outcome) = early_exit {
                    self.handle(name, Event::Exited(outcome));
                }
            }
            Event::StartDone(Err(e)) => {
                if s.phase != Phase::Starting {
                    return;
                }
                s.phase = Phase::Idle;
                s.pid = None;
                s.failed = true;
                s.failures_in_row = s.failures_in_row.saturating_add(1);
                s.start_why = None;
                s.stop_reason = None;
                s.restart_after_stop = false;
                self.svc_log(name, &format!("Failed to start {name}: {e}"));
                self.set_reason(name, &format!("Failed start:{e}"));
                self.schedule_retry(name);
            }
            Event::Ready => {
                if s.phase == Phase::Starting {
                    s.early_ready = true;
                    return;
                }
                if s.phase != Phase::Running || s.ready || s.failed {
                    return;
                }
                s.ready = true;
                self.healthy(name);
            }
            Event::Healthy => {
                if s.phase == Phase::Running && s.ready && !s.failed && s.stop_reason.is_none() {
                    self.healthy(name);
                }
            }
            Event::ReadyTimeout => {
                if s.phase == Phase::Running && !s.ready && s.stop_reason.is_none() {
                    let t = s.cfg.ready_timeout;
                    self.fault(name, &format!("not ready after {t:?}"));
                }
            }
            Event::CheckFailed(e) => {
                if s.phase == Phase::Running && s.stop_reason.is_none() {
                    self.fault(name, &e);
                }
            }
            Event::Exited(outcome) => {
                if s.phase == Phase::Starting {
                    s.early_exit = Some(outcome);
                    return;
                }
                if s.phase != Phase::Running || s.stop_reason.is_some() {
                    // Being stopped (or a fault stop is already under way).
                    s.pid = None;
                    return;
                }
                s.pid = None;
                match outcome {
                    Ok(()) => {
                        // A one-shot is done (and ready); a long-runner without
                        // failOnExit stays "running" as in govisor.
                        s.exited = true;
                        if s.cfg.oneshot {
                            s.ready = true;
                            s.failures_in_row = 0;
                            self.svc_log(name, &format!("Service {name} completed"));
                            self.healthy(name);
                        } else {
                            self.bump_svc(name);
                        }
                    }
                    Err(reason) => {
                        self.svc_log(name, &format!("Failed: {reason}"));
                        self.fault(name, &reason);
                    }
                }
            }
            Event::StopDone => {
                if s.phase != Phase::Stopping {
                    return;
                }
                s.phase = Phase::Idle;
                s.pid = None;
                s.ready = false;
                s.exited = false;
                let reason = s.stop_reason.take().unwrap_or_else(|| "Stopped".into());
                let restart = std::mem::take(&mut s.restart_after_stop);
                let enabled = s.enabled;
                self.svc_log(name, &format!("Stopped {name}: {reason}"));
                let shown = if !enabled && reason != "Shutting down" {
                    "Disabled".to_string()
                } else {
                    reason.clone()
                };
                self.set_reason(name, &shown);
                if restart && enabled {
                    if let Some(s) = self.services.get_mut(name) {
                        s.reset_limits();
                        s.start_why = Some("Restarting".into());
                    }
                    self.set_reason(name, "Restarting");
                } else if reason.starts_with("Faulted: ") {
                    self.schedule_retry(name);
                }
            }
            Event::Retry => {
                if s.retry_pending && s.enabled && s.phase == Phase::Idle {
                    s.retry_pending = false;
                    s.retry_armed = false;
                    s.failed = false;
                    s.start_why = Some(SELF_HEALING.into());
                    self.svc_log(name, "Attempting self-healing");
                    self.bump_svc(name);
                }
            }
        }
    }

    fn healthy(&mut self, name: &str) {
        let already = self
            .services
            .get(name)
            .is_some_and(|s| s.reason == "Healthy");
        if !already {
            self.svc_log(name, "Service healthy");
            self.set_reason(name, "Healthy");
        }
    }

    /// Marks a running service failed and stops it (its dependents first).
    fn fault(&mut self, name: &str, reason: &str) {
        if let Some(s) = self.services.get_mut(name) {
            s.failed = true;
            s.ready = false;
            if let Some(t) = s.started_at {
                if t.elapsed() >= s.cfg.start_limit_interval {
                    // It ran long enough: this is a new episode.
                    s.failures_in_row = 0;
                    s.starts.clear();
                }
            }
            s.failures_in_row = s.failures_in_row.saturating_add(1);
            s.stop_reason = Some(format!("Faulted: {reason}"));
        }
        self.svc_log(name, &format!("Service {name} faulted: {reason}"));
        self.bump_svc(name);
    }

    fn schedule_retry(&mut self, name: &str) {
        if self.shutting_down {
            return;
        }
        if let Some(s) = self.services.get_mut(name) {
            if s.cfg.restart && s.enabled && !s.throttled {
                s.retry_pending = true;
            }
        }
    }

    /// Decides what to start and stop; returns the work to do outside the lock.
    fn reconcile(&mut self) -> Vec<Action> {
        let mut actions = std::mem::take(&mut self.pending);
        for _round in 0..64 {
            let mut changed = false;
            let names: Vec<String> = self.services.keys().cloned().collect();
            for name in &names {
                let Some(s) = self.services.get(name) else {
                    continue;
                };
                // Pending retries become timers (once).
                if s.retry_pending && s.phase == Phase::Idle && !s.retry_armed {
                    let n = s.failures_in_row.max(1);
                    let delay = if n <= 1 {
                        Duration::ZERO
                    } else {
                        let factor = 1u32.checked_shl(n - 2).unwrap_or(u32::MAX);
                        s.cfg
                            .restart_backoff
                            .saturating_mul(factor)
                            .min(MAX_BACKOFF)
                    };
                    let generation = s.generation;
                    actions.push(Action::After {
                        name: name.clone(),
                        generation,
                        delay,
                        event: || Event::Retry,
                    });
                    // Arm the timer once, under a new generation (older timers go stale).
                    if let Some(s) = self.services.get_mut(name) {
                        s.retry_armed = true;
                        s.generation = s.generation.wrapping_add(1);
                        let g2 = s.generation;
                        if let Some(Action::After { generation, .. }) = actions.last_mut() {
                            *generation = g2;
                        }
                    }
                    changed = true;
                    continue;
                }
                match s.phase {
                    Phase::Starting | Phase::Running if s.stop_reason.is_none() => {
                        let reason = if !s.enabled {
                            Some("Disabled")
                        } else if !s.cfg.keep_on_dependency_loss && !self.deps_ok(s) {
                            Some("Unmet dependency")
                        } else {
                            None
                        };
                        if let Some(r) = reason {
                            if let Some(s) = self.services.get_mut(name) {
                                s.stop_reason = Some(r.into());
                            }
                            self.bump_svc(name);
                            changed = true;
                        }
                    }
                    Phase::Running => {
                        // stop_reason is set: stop once no dependent needs us.
                        // A dependent that keeps running on dependency loss does not hold
                        // us, except at shutdown (dependents still stop first).
                        let blocked = self.services.values().any(|c| {
                            c.phase != Phase::Idle
                                && Self::depends_on(c, s)
                                && !self.deps_ok(c)
                                && (!c.cfg.keep_on_dependency_loss || self.shutting_down)
                        });
                        if !blocked {
                            let provider = s.provider.clone();
                            let generation = s.generation;
                            if let Some(s) = self.services.get_mut(name) {
                                s.phase = Phase::Stopping;
                            }
                            self.bump_svc(name);
                            actions.push(Action::Stop {
                                name: name.clone(),
                                generation,
                                provider,
                            });
                            changed = true;
                        }
                    }
                    Phase::Idle => {
                        if !s.enabled
                            || s.failed
                            || s.throttled
                            || s.retry_pending
                            || self.shutting_down
                        {
                            continue;
                        }
                        if !self.deps_ok(s) {
                            if let Some(s) = self.services.get_mut(name) {
                                s.start_why = None;
                            }
                            if self
                                .services
                                .get(name)
                                .is_some_and(|s| s.reason != "Unmet dependency")
                            {
                                self.set_reason(name, "Unmet dependency");
                                changed = true;
                            }
                            continue;
                        }
                        // Sliding-window start limit.
                        let now = Instant::now();
                        let window = s.cfg.start_limit_interval;
                        let burst = s.cfg.start_limit_burst as usize;
                        let recent: Vec<Instant> = s
                            .starts
                            .iter()
                            .copied()
                            .filter(|t| now.duration_since(*t) < window)
                            .collect();
                        if burst > 0 && recent.len() >= burst {
                            let oldest = recent.first().copied().unwrap_or(now);
                            let until = Time(
                                chrono::Utc::now()
                                    + chrono::Duration::from_std(
                                        window.saturating_sub(now.duration_since(oldest)),
                                    )
                                    .unwrap_or_default(),
                            );
                            if let Some(s) = self.services.get_mut(name) {
                                s.throttled = true;
                                s.failed = true;
                                s.throttled_until = Some(until);
                                s.starts = recent.into();
                            }
                            self.svc_log(name, &format!("Service {name} restarting too quickly"));
                            self.set_reason(name, "Throttled: start limit reached");
                            changed = true;
                            continue;
                        }
                        let provider = s.provider.clone();
                        let generation;
                        {
                            let Some(s) = self.services.get_mut(name) else {
                                continue;
                            };
                            s.generation = s.generation.wrapping_add(1);
                            generation = s.generation;
                            s.phase = Phase::Starting;
                            if s.start_why.as_deref() == Some(SELF_HEALING) {
                                s.restarts = s.restarts.saturating_add(1);
                            }
                            s.early_ready = false;
                            s.early_exit = None;
                            s.ready = false;
                            s.exited = false;
                            s.starts = recent.into();
                            s.starts.push_back(now);
                        }
                        self.bump_svc(name);
                        actions.push(Action::Start {
                            name: name.clone(),
                            generation,
                            provider,
                        });
                        changed = true;
                    }
                    Phase::Starting | Phase::Stopping => {}
                }
            }
            actions.append(&mut self.pending);
            if !changed {
                break;
            }
        }
        actions
    }
}
