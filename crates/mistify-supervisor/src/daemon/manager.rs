//! The Manager: the runtime around the per-service state machine ([`super::engine`]).
//!
//! All bookkeeping happens under one short-held `std::sync::Mutex`: an event goes to the
//! service's engine, which answers with effects; log lines and serial bumps are applied
//! at once, provider calls (start, stop, check), timers and readiness probes run in their
//! own tasks once the lock is released, and report back through [`ProviderContext`],
//! stamped with a generation so stale reports are ignored. After every change
//! [`Inner::reconcile`] walks the dependency graph and tells each engine what it found
//! (dependencies met or lost, dependents gone): dependents stop before their dependencies
//! (independent branches in parallel) and start only once every dependency pattern has a
//! ready provider.

use crate::api::{Hex, LogRecord, ManagerInfo, ServiceInfo, Time};
use crate::daemon::engine::{self, Effect, Event, Now, Phase};
use crate::daemon::logring::{FileSink, LogRing};
use crate::manifest::{self, Manifest, Readiness, DEFAULT_START_LIMIT_BURST};
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;
use tokio::sync::watch;

pub use crate::daemon::engine::{MAX_BACKOFF, SETTLE};

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

struct Svc {
    /// The state machine: configuration, phase, reason, counters.
    core: engine::Service,
    manifest: Option<Manifest>,
    provider: Arc<dyn Provider>,
    log: LogRing,
    file: Option<FileSink>,
    serial: u64,
}

impl Svc {
    fn name(&self) -> &str {
        self.core.name()
    }

    fn cfg(&self) -> &ServiceConfig {
        self.core.cfg()
    }

    fn satisfies(&self, pattern: &str) -> bool {
        manifest::satisfies(&self.cfg().name, &self.cfg().provides, pattern)
    }

    fn info(&self) -> ServiceInfo {
        self.core.info(self.serial)
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
}

/// Work for outside the lock: an engine effect for a service's provider, a timer or a
/// probe.
struct Action {
    name: String,
    provider: Arc<dyn Provider>,
    effect: Effect,
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

    /// Runs `f` under the lock, then reconciles; the resulting work runs after the lock
    /// is released.
    fn apply<R>(&self, f: impl FnOnce(&mut Inner, &mut Vec<Action>) -> R) -> R {
        let mut actions = Vec::new();
        let res = {
            let mut g = self.lock();
            let res = f(&mut g, &mut actions);
            g.reconcile(&mut actions);
            res
        };
        self.wake();
        for a in actions {
            self.execute(a);
        }
        res
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
            let core = engine::Service::new(cfg, provider.has_check(), Now::current());
            g.services.insert(
                name.clone(),
                Svc {
                    core,
                    manifest,
                    provider,
                    log: LogRing::new(),
                    file,
                    serial: 0,
                },
            );
            g.mgr_log(&format!("[{}] Added service [{name}]: {desc}", self.name));
            g.svc_log(
                &name,
                &format!("Added service {name} to {}: {desc}", self.name),
            );
            g.list_serial = g.list_serial.wrapping_add(1);
            g.list_time = Time::now();
            // The reason ("Added service") is the engine's; the serial moves.
            g.bump_svc(&name);
            // Warn about patterns nothing provides (they simply wait).
            let missing: Vec<String> = g
                .services
                .get(&name)
                .map(|s| s.cfg().depends.clone())
                .unwrap_or_default()
                .into_iter()
                .filter(|d| {
                    !g.services
                        .values()
                        .any(|t| t.name() != name && t.satisfies(d))
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
            if *s.core.phase() != Phase::Disabled {
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
        self.apply(|g, acts| g.enable(name, acts))
    }

    pub fn disable(&self, name: &str) -> Result<(), ManagerError> {
        self.operate(name, Event::Disable)
    }

    /// Stops the service (and the dependents that need it) and starts it again.
    /// A disabled service is left alone.
    pub fn restart(&self, name: &str) -> Result<(), ManagerError> {
        self.operate(name, Event::Restart)
    }

    /// Clears a fault (or the throttled state) and tries to start the service again.
    pub fn clear(&self, name: &str) -> Result<(), ManagerError> {
        self.operate(name, Event::Clear)
    }

    /// An operator's event for a known service.
    fn operate(&self, name: &str, ev: Event) -> Result<(), ManagerError> {
        self.apply(|g, acts| {
            if !g.services.contains_key(name) {
                return Err(ManagerError::NotFound);
            }
            g.step(name, ev, acts);
            Ok(())
        })
    }

    /// Enables every service in name order; conflicts are logged, the first one wins.
    pub fn enable_all(&self) {
        let names: Vec<String> = self.lock().services.keys().cloned().collect();
        for n in names {
            if let Err(e) = self.enable(&n) {
                tracing::warn!(service = %n, "not enabled at start-up: {e}");
                self.log_not_enabled(&n, &e);
            }
        }
    }

    /// Logs why the daemon could not enable `name`. A conflict is already in the log, in
    /// the service's own words (`Cannot enable …`), and govisord wrote nothing more.
    fn log_not_enabled(&self, name: &str, e: &ManagerError) {
        if *e != ManagerError::Conflict {
            self.log(&format!("[{}] Not enabling {name}: {e}", self.name));
        }
    }

    /// Stops every service in dependency order (dependents first, independent branches
    /// in parallel) and waits until all are stopped.
    pub async fn shutdown(&self) {
        self.apply(|g, acts| {
            g.shutting_down = true;
            let names: Vec<String> = g.services.keys().cloned().collect();
            for n in names {
                g.step(&n, Event::Shutdown, acts);
            }
        });
        self.wait_idle(None).await;
        self.log(&format!("*** Govisor stopped: {} ***", self.name));
    }

    /// Waits (up to `timeout`) until no start or stop is under way, so that a REST action
    /// answers after its effect, as govisor's synchronous operations did.
    /// Only `name` and the services that depend on it (directly or not) are watched.
    pub async fn settle(&self, name: &str, timeout: Duration) {
        self.settle_some(Some(name), timeout).await
    }

    /// As [`Manager::settle`], for every service.
    pub async fn settle_all(&self, timeout: Duration) {
        self.settle_some(None, timeout).await
    }

    async fn settle_some(&self, name: Option<&str>, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut rx = self.tick.subscribe();
        loop {
            rx.borrow_and_update();
            let busy = {
                let g = self.lock();
                let mut set: Vec<&Svc> = match name {
                    Some(name) => g.services.get(name).into_iter().collect(),
                    None => g.services.values().collect(),
                };
                // With a name, its dependents (directly or not) too.
                let mut i = if name.is_some() { 0 } else { set.len() };
                while i < set.len() {
                    let parent = set[i];
                    for c in g.services.values() {
                        if Inner::depends_on(c, parent) && !set.iter().any(|x| x.name() == c.name())
                        {
                            set.push(c);
                        }
                    }
                    i += 1;
                }
                set.iter().any(|s| s.core.busy())
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
            let busy = self
                .lock()
                .services
                .values()
                .any(|s| s.core.busy() || s.core.settling());
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
                    .any(|(_, s)| !s.core.idle())
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
                        self.log_not_enabled(&name, &e);
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
    /// a zero timeout). `value` returns `None` when the watched thing is gone. Whether
    /// it changed (or is gone).
    pub async fn watch<F>(&self, old: u64, timeout: Duration, value: F) -> bool
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
                _ => return true,
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                _ => return false,
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

    // ------------------------------------------------------------------ runtime

    /// A report of the provider, a timer or a probe for the start `generation`.
    fn event(&self, name: &str, generation: u64, ev: Event) {
        self.apply(|g, acts| {
            let current = g
                .services
                .get(name)
                .is_some_and(|s| s.core.generation() == generation);
            if current {
                g.step(name, ev, acts);
            }
        });
    }

    fn ctx(&self, name: &str, generation: u64) -> ProviderContext {
        ProviderContext {
            mgr: self.me.clone(),
            name: name.to_string(),
            generation,
        }
    }

    fn execute(&self, a: Action) {
        let Action {
            name,
            provider,
            effect,
        } = a;
        match effect {
            Effect::Start { generation } => {
                let ctx = self.ctx(&name, generation);
                tokio::spawn(async move {
                    let res = provider.start(ctx.clone()).await;
                    ctx.event(Event::Started(res));
                });
            }
            Effect::Stop { generation } => {
                let ctx = self.ctx(&name, generation);
                tokio::spawn(async move {
                    provider.stop().await;
                    ctx.event(Event::Stopped);
                });
            }
            Effect::Timer {
                generation,
                delay,
                timer,
            } => {
                let ctx = self.ctx(&name, generation);
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    ctx.event(timer.into());
                });
            }
            Effect::Probe {
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
            Effect::Checks {
                generation,
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
            // Applied under the lock by `Inner::step`.
            Effect::Log(_) | Effect::Reason(_) | Effect::Bump => {}
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
        g.services
            .get(&self.name)
            .is_some_and(|s| s.core.current(self.generation))
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

    /// Feeds `ev` to the service's engine and applies the effects: log lines and serial
    /// bumps now, the rest into `acts`. Whether anything changed.
    fn step(&mut self, name: &str, ev: Event, acts: &mut Vec<Action>) -> bool {
        let Some(s) = self.services.get_mut(name) else {
            return false;
        };
        let effects = s.core.handle(ev, Now::current());
        let provider = s.provider.clone();
        let changed = !effects.is_empty();
        for effect in effects {
            match effect {
                Effect::Log(text) => self.svc_log(name, &text),
                Effect::Reason(_) | Effect::Bump => self.bump_svc(name),
                effect => acts.push(Action {
                    name: name.to_string(),
                    provider: provider.clone(),
                    effect,
                }),
            }
        }
        changed
    }

    fn enable(&mut self, name: &str, acts: &mut Vec<Action>) -> Result<(), ManagerError> {
        if self.shutting_down {
            return Err(ManagerError::ShuttingDown);
        }
        let s = self.services.get(name).ok_or(ManagerError::NotFound)?;
        if s.core.enabled() {
            return Ok(());
        }
        let rival = self
            .services
            .values()
            .filter(|t| t.name() != name && t.core.enabled())
            .find(|t| {
                t.cfg().conflicts.iter().any(|c| s.satisfies(c))
                    || s.cfg().conflicts.iter().any(|c| t.satisfies(c))
            })
            .map(|t| t.name().to_string());
        if let Some(rival) = rival {
            self.step(name, Event::Conflict { rival }, acts);
            return Err(ManagerError::Conflict);
        }
        self.step(name, Event::Enable, acts);
        Ok(())
    }

    /// Whether every dependency pattern of `s` has a ready provider.
    fn deps_ok(&self, s: &Svc) -> bool {
        s.cfg().depends.iter().all(|d| {
            self.services
                .values()
                .any(|t| t.name() != s.name() && t.satisfies(d) && t.core.provides())
        })
    }

    /// Whether `child` depends on `parent` through any of its patterns.
    fn depends_on(child: &Svc, parent: &Svc) -> bool {
        child.name() != parent.name() && child.cfg().depends.iter().any(|d| parent.satisfies(d))
    }

    /// Whether a dependent of `s` that needs it has not stopped yet. A dependent that
    /// keeps running on dependency loss does not hold it, except at shutdown (dependents
    /// still stop first).
    fn held(&self, s: &Svc) -> bool {
        self.services.values().any(|c| {
            !c.core.idle()
                && Self::depends_on(c, s)
                && !self.deps_ok(c)
                && (!c.cfg().keep_on_dependency_loss || self.shutting_down)
        })
    }

    /// What the graph has to tell the service named `name`, if anything.
    fn graph_event(&self, name: &str) -> Option<Event> {
        let s = self.services.get(name)?;
        match s.core.phase() {
            Phase::Waiting { .. } if self.deps_ok(s) => Some(Event::DepsMet),
            Phase::Waiting { .. } => Some(Event::DepsUnmet),
            Phase::Starting { stop: None, .. } | Phase::Running { stop: None, .. } => {
                (!self.deps_ok(s)).then_some(Event::DepsUnmet)
            }
            Phase::Running { stop: Some(_), .. } => (!self.held(s)).then_some(Event::Released),
            _ => None,
        }
    }

    /// Tells every service what the graph says until nothing changes; the work to do
    /// outside the lock goes into `acts`.
    fn reconcile(&mut self, acts: &mut Vec<Action>) {
        for _round in 0..64 {
            let mut changed = false;
            let names: Vec<String> = self.services.keys().cloned().collect();
            for name in &names {
                if let Some(ev) = self.graph_event(name) {
                    changed |= self.step(name, ev, acts);
                }
            }
            if !changed {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests;
