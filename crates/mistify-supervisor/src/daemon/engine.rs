//! The state machine of one service, without I/O.
//!
//! A [`Service`] holds its [`Phase`] (where the service is in its life, each variant with
//! the data only it needs), its reason text and its counters. [`Service::handle`] takes an
//! [`Event`] and the time ([`Now`]) and returns the [`Effect`]s to perform: log lines,
//! reason changes, and provider calls, timers and probes for the runtime
//! ([`super::manager`]) to run outside its lock. Nothing here but [`Now::current`] reads a
//! clock; nothing spawns a task or touches another service: the dependency graph is the
//! manager's, which tells the engine what it found as events ([`Event::DepsMet`], [`Event::DepsUnmet`],
//! [`Event::Released`]).
//!
//! The visible state ([`api::State`]) and govisor's flags (`enabled`, `running`,
//! `failed`, `ready`, `pid`, `throttled_until`) are functions of the phase
//! ([`Service::info`]). The transition table is in `docs/supervisor.md`, section "States".

use crate::api::{self, Hex, ServiceInfo, Time};
use crate::daemon::manager::ServiceConfig;
use crate::manifest::Readiness;
use std::collections::VecDeque;
use std::time::Duration;
use tokio::time::Instant;

/// After how long a `ready: exec` service that is still up is reported `Healthy`.
pub const SETTLE: Duration = Duration::from_millis(500);
/// The longest restart back-off.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

// Reason texts and the words of the `Started` line (govisor's, byte-exact).
const ADDED: &str = "Added service";
const ENABLED: &str = "Enabled";
const DISABLED: &str = "Disabled";
const CONFLICT: &str = "Disabled due to conflict";
const STARTED: &str = "Started";
const HEALTHY: &str = "Healthy";
const UNMET: &str = "Unmet dependency";
const RESTARTING: &str = "Restarting";
const STOPPING_FOR_RESTART: &str = "Stopping for restart";
const CLEARED: &str = "Cleared fault";
const SHUTTING_DOWN: &str = "Shutting down";
const THROTTLED: &str = "Throttled: start limit reached";
const SELF_HEALING: &str = "Self-healing";
const WHY_ENABLED: &str = "Enabled service";
const WHY_DEPENDENCY: &str = "Dependency running";

/// The time of a transition: monotonic (durations, the start window) and wall clock
/// (what the API shows).
#[derive(Debug, Clone, Copy)]
pub struct Now {
    pub at: Instant,
    pub wall: Time,
}

impl Now {
    pub fn current() -> Now {
        Now {
            at: Instant::now(),
            wall: Time::now(),
        }
    }
}

/// Where a service is in its life.
#[derive(Debug, Clone, PartialEq)]
pub enum Phase {
    /// Not enabled.
    Disabled,
    /// Enabled and idle: starts once every dependency pattern has a ready provider.
    /// `why` ends the next `Started` line (`None`: "Dependency running").
    Waiting { why: Option<String> },
    /// Faulted, with `restart`: a retry timer runs (shown as `failed`). `attempt` counts
    /// the consecutive failures that chose the delay.
    BackOff { attempt: u32, until: Instant },
    /// Faulted: waits for clear, restart or disable.
    Failed,
    /// The start limit was hit: waits for clear, restart or disable.
    Throttled { until: Time },
    /// The provider's start call is under way. Readiness and exit reported meanwhile are
    /// kept in `early` and replayed once it returns; `stop` is a stop asked for meanwhile.
    Starting {
        why: String,
        early: Early,
        stop: Option<Stop>,
    },
    /// Started. `stop` is a stop that waits for the dependents to stop first.
    Running {
        pid: Option<u32>,
        since: Instant,
        ready: Ready,
        /// A one-shot that finished, or a long-runner that exited 0 without `failOnExit`
        /// (govisor keeps those "running").
        exited: bool,
        stop: Option<Stop>,
    },
    /// The provider's stop call is under way.
    Stopping { pid: Option<u32>, stop: Stop },
}

/// Reports that arrived while the start call was under way.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Early {
    pub ready: bool,
    pub exit: Option<Result<(), String>>,
}

/// A stop: its reason (the `Stopped NAME: <reason>` line) and what follows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Stop {
    pub reason: String,
    pub then: Then,
}

/// What happens once a stop is done.
#[derive(Debug, Clone, PartialEq)]
pub enum Then {
    /// Back to waiting (`why` for the next `Started` line).
    Wait { why: Option<String> },
    /// Start again (reason `Restarting`, limits reset).
    Restart,
    /// Failed (or back-off with `restart`).
    Fail,
    /// Disabled (reason `Disabled`).
    Disable,
    /// Disabled, keeping the reason `Shutting down`.
    Shutdown,
}

impl Then {
    fn disables(&self) -> bool {
        matches!(self, Then::Disable | Then::Shutdown)
    }
}

/// Readiness of a running service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ready {
    /// Not ready: dependents wait.
    No,
    /// Ready (`ready: exec`): dependents may start; `Healthy` comes after [`SETTLE`].
    Settling,
    /// Ready and reported `Healthy`.
    Yes,
}

/// What a service is told.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The operator enables it (no enabled conflicting service).
    Enable,
    /// The operator enables it, refused: `rival` is enabled and conflicts.
    Conflict {
        rival: String,
    },
    Disable,
    Restart,
    Clear,
    /// The manager shuts down.
    Shutdown,
    /// Every dependency pattern has a ready provider.
    DepsMet,
    /// Some dependency pattern has no ready provider.
    DepsUnmet,
    /// No dependent needs it any more: a pending stop may proceed.
    Released,
    /// The provider's start returned (a process id, or why it failed).
    Started(Result<Option<u32>, String>),
    /// The unit is ready (notify, a probe, or the provider).
    Ready,
    /// The settle timer ([`SETTLE`]) of a `ready: exec` service ran out.
    Settled,
    /// The `readyTimeout` timer ran out.
    ReadyTimeout,
    /// The unit exited by itself: `Ok` for a clean exit.
    Exited(Result<(), String>),
    /// `checkFailures` consecutive checks failed (the last error).
    CheckFailed(String),
    /// The provider's stop returned.
    Stopped,
    /// The back-off timer ran out.
    Retry,
}

/// The timers the engine arms; each comes back as the event of the same name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    Settled,
    ReadyTimeout,
    Retry,
}

impl From<Timer> for Event {
    fn from(t: Timer) -> Event {
        match t {
            Timer::Settled => Event::Settled,
            Timer::ReadyTimeout => Event::ReadyTimeout,
            Timer::Retry => Event::Retry,
        }
    }
}

/// What the runtime does after a transition. Reports from `Start`, `Stop`, timers,
/// probes and checks come back stamped with `generation`; stale ones are dropped.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// A line for the service log (the runtime prefixes `[name] `).
    Log(String),
    /// The reason text is now this (bumps the serial).
    Reason(String),
    /// Something visible changed (bumps the serial).
    Bump,
    /// Call the provider's start.
    Start { generation: u64 },
    /// Call the provider's stop.
    Stop { generation: u64 },
    /// Send `timer` back after `delay`.
    Timer {
        generation: u64,
        delay: Duration,
        timer: Timer,
    },
    /// Probe `ready` (tcp, http) until it answers or `timeout` passes; then send `Ready`.
    Probe {
        generation: u64,
        ready: Readiness,
        timeout: Duration,
    },
    /// Run the provider's check every `interval`; send `CheckFailed` after `failures`
    /// consecutive failures.
    Checks {
        generation: u64,
        interval: Duration,
        failures: u32,
    },
}

/// One service: its configuration, phase, reason and counters.
#[derive(Debug, Clone)]
pub struct Service {
    cfg: ServiceConfig,
    /// Whether the provider has a check (asked once, when the service is added).
    has_check: bool,
    phase: Phase,
    reason: String,
    /// When the reason text last changed.
    stamp: Time,
    /// Counts starts and armed back-offs; reports carry it.
    generation: u64,
    /// Start times within the start-limit window.
    starts: VecDeque<Instant>,
    /// Starts by self-healing.
    restarts: u64,
    /// Consecutive failures (the back-off exponent).
    failures: u32,
}

/// The back-off before retry number `failures`: none for the first, then `base`
/// doubling per consecutive failure, capped at [`MAX_BACKOFF`].
pub fn backoff(failures: u32, base: Duration) -> Duration {
    let n = failures.max(1);
    if n <= 1 {
        return Duration::ZERO;
    }
    let factor = 1u32.checked_shl(n - 2).unwrap_or(u32::MAX);
    base.saturating_mul(factor).min(MAX_BACKOFF)
}

impl Service {
    /// A new, disabled service (reason `Added service`).
    pub fn new(cfg: ServiceConfig, has_check: bool, now: Now) -> Service {
        Service {
            cfg,
            has_check,
            phase: Phase::Disabled,
            reason: ADDED.to_string(),
            stamp: now.wall,
            generation: 0,
            starts: VecDeque::new(),
            restarts: 0,
            failures: 0,
        }
    }

    pub fn cfg(&self) -> &ServiceConfig {
        &self.cfg
    }
    pub fn name(&self) -> &str {
        &self.cfg.name
    }
    pub fn phase(&self) -> &Phase {
        &self.phase
    }
    pub fn generation(&self) -> u64 {
        self.generation
    }

    // ------------------------------------------------------------------ views

    /// The visible state.
    pub fn state(&self) -> api::State {
        match &self.phase {
            Phase::Disabled => api::State::Disabled,
            Phase::Waiting { .. } => api::State::Waiting,
            Phase::BackOff { .. } | Phase::Failed => api::State::Failed,
            Phase::Throttled { .. } => api::State::Throttled,
            Phase::Stopping { .. } => api::State::Stopping,
            Phase::Starting { stop, .. } => {
                pending_state(stop.as_ref()).unwrap_or(api::State::Starting)
            }
            Phase::Running {
                ready,
                exited,
                stop,
                ..
            } => pending_state(stop.as_ref()).unwrap_or(if *exited {
                api::State::Exited
            } else if *ready == Ready::No {
                api::State::Starting
            } else {
                api::State::Running
            }),
        }
    }

    /// Enabled: the operator wants it (govisor's `enabled`).
    pub fn enabled(&self) -> bool {
        match &self.phase {
            Phase::Disabled => false,
            _ => !self.stop().is_some_and(|s| s.then.disables()),
        }
    }

    /// Started and not being stopped (govisor's `running`).
    pub fn running(&self) -> bool {
        matches!(self.phase, Phase::Running { stop: None, .. })
    }

    /// Faulted or throttled (govisor's `failed`).
    pub fn failed(&self) -> bool {
        match &self.phase {
            Phase::BackOff { .. } | Phase::Failed | Phase::Throttled { .. } => true,
            _ => self.stop().is_some_and(|s| s.then == Then::Fail),
        }
    }

    /// Started and ready.
    pub fn ready(&self) -> bool {
        matches!(&self.phase, Phase::Running { ready, .. } if *ready != Ready::No)
    }

    pub fn pid(&self) -> Option<u32> {
        match &self.phase {
            Phase::Running { pid, .. } | Phase::Stopping { pid, .. } => *pid,
            _ => None,
        }
    }

    pub fn throttled_until(&self) -> Option<Time> {
        match &self.phase {
            Phase::Throttled { until } => Some(*until),
            _ => None,
        }
    }

    /// Whether it satisfies its dependents now: running, ready, no stop pending.
    pub fn provides(&self) -> bool {
        self.running() && self.ready()
    }

    /// Neither started nor being stopped (no provider call or process of it exists).
    pub fn idle(&self) -> bool {
        !matches!(
            self.phase,
            Phase::Starting { .. } | Phase::Running { .. } | Phase::Stopping { .. }
        )
    }

    /// A start or stop is under way or pending.
    pub fn busy(&self) -> bool {
        match &self.phase {
            Phase::Starting { .. } | Phase::Stopping { .. } => true,
            Phase::Running { stop, .. } => stop.is_some(),
            _ => false,
        }
    }

    /// A `ready: exec` service within its settle time (ready, not yet `Healthy`).
    pub fn settling(&self) -> bool {
        matches!(
            self.phase,
            Phase::Running {
                ready: Ready::Settling,
                ..
            }
        )
    }

    /// Whether reports of `generation` still concern the running service.
    pub fn current(&self, generation: u64) -> bool {
        self.generation == generation && self.running()
    }

    /// The API view (`serial` is the runtime's).
    pub fn info(&self, serial: u64) -> ServiceInfo {
        ServiceInfo {
            name: self.cfg.name.clone(),
            description: self.cfg.description.clone(),
            enabled: self.enabled(),
            running: self.running(),
            failed: self.failed(),
            provides: self.cfg.provides.clone(),
            depends: self.cfg.depends.clone(),
            conflicts: self.cfg.conflicts.clone(),
            status: self.reason.clone(),
            tstamp: self.stamp,
            serial: Hex(serial),
            state: self.state(),
            reason: self.reason.clone(),
            ready: self.ready(),
            pid: self.pid(),
            restarts: self.restarts,
            throttled_until: self.throttled_until(),
        }
    }

    /// The stop pending or under way.
    fn stop(&self) -> Option<&Stop> {
        match &self.phase {
            Phase::Starting { stop, .. } | Phase::Running { stop, .. } => stop.as_ref(),
            Phase::Stopping { stop, .. } => Some(stop),
            _ => None,
        }
    }

    fn stop_mut(&mut self) -> Option<&mut Stop> {
        match &mut self.phase {
            Phase::Starting { stop, .. } | Phase::Running { stop, .. } => stop.as_mut(),
            Phase::Stopping { stop, .. } => Some(stop),
            _ => None,
        }
    }

    /// Asks a started service to stop: a new pending stop for `reason`, or, when a stop
    /// was already asked for, `then` for it (its reason stays).
    fn ask_stop(&mut self, reason: &str, then: Then) {
        match &mut self.phase {
            Phase::Starting { stop, .. } | Phase::Running { stop, .. } => match stop {
                Some(s) => s.then = then,
                None => {
                    *stop = Some(Stop {
                        reason: reason.into(),
                        then,
                    })
                }
            },
            Phase::Stopping { stop, .. } => stop.then = then,
            _ => {}
        }
    }

    // ------------------------------------------------------------ transitions

    /// Applies `ev` at `now`; returns what to do. An empty list means nothing visible
    /// changed (the few silent changes are rows of the table too).
    pub fn handle(&mut self, ev: Event, now: Now) -> Vec<Effect> {
        let mut out = Vec::new();
        match ev {
            Event::Enable => self.on_enable(&mut out, now),
            Event::Conflict { rival } => self.on_conflict(&rival, &mut out, now),
            Event::Disable => self.on_disable(&mut out, now),
            Event::Restart => self.on_restart(&mut out, now),
            Event::Clear => self.on_clear(&mut out, now),
            Event::Shutdown => self.on_shutdown(&mut out, now),
            Event::DepsMet => self.on_deps_met(&mut out, now),
            Event::DepsUnmet => self.on_deps_unmet(&mut out, now),
            Event::Released => self.on_released(&mut out),
            Event::Started(Ok(pid)) => self.on_started(pid, &mut out, now),
            Event::Started(Err(e)) => self.on_start_failed(&e, &mut out, now),
            Event::Ready => self.on_ready(&mut out, now),
            Event::Settled => self.on_settled(&mut out, now),
            Event::ReadyTimeout => self.on_ready_timeout(&mut out, now),
            Event::Exited(outcome) => self.on_exited(outcome, &mut out, now),
            Event::CheckFailed(e) => self.on_check_failed(&e, &mut out, now),
            Event::Stopped => self.on_stopped(&mut out, now),
            Event::Retry => self.on_retry(&mut out),
        }
        out
    }

    fn set_reason(&mut self, out: &mut Vec<Effect>, text: &str, now: Now) {
        if self.reason != text {
            self.reason = text.to_string();
            self.stamp = now.wall;
        }
        out.push(Effect::Reason(text.to_string()));
    }

    fn log(&self, out: &mut Vec<Effect>, text: String) {
        out.push(Effect::Log(text));
    }

    /// Forgets the start history and the consecutive failures.
    fn reset_limits(&mut self) {
        self.starts.clear();
        self.failures = 0;
    }

    fn on_enable(&mut self, out: &mut Vec<Effect>, now: Now) {
        let why = Some(WHY_ENABLED.to_string());
        if self.phase == Phase::Disabled {
            self.phase = Phase::Waiting { why };
        } else if let Some(stop) = self.stop_mut().filter(|s| s.then == Then::Disable) {
            // Disabled while a stop is pending or under way: it starts again after it.
            stop.then = Then::Wait { why };
        } else {
            return;
        }
        self.reset_limits();
        self.log(out, format!("Enabling service {}", self.cfg.name));
        self.set_reason(out, ENABLED, now);
    }

    fn on_conflict(&mut self, rival: &str, out: &mut Vec<Effect>, now: Now) {
        // govisord's words (its service logger adds the `[name] ` prefix, as ours does).
        let name = &self.cfg.name;
        self.log(out, format!("Cannot enable {name}: conflicts with {rival}"));
        self.set_reason(out, CONFLICT, now);
    }

    fn on_disable(&mut self, out: &mut Vec<Effect>, now: Now) {
        if !self.enabled() && self.reason == DISABLED {
            return;
        }
        if self.idle() {
            self.phase = Phase::Disabled;
        } else if !self.stop().is_some_and(|s| s.then == Then::Shutdown) {
            self.ask_stop(DISABLED, Then::Disable);
        }
        self.log(out, format!("Disabling service {}", self.cfg.name));
        self.set_reason(out, DISABLED, now);
    }

    fn on_restart(&mut self, out: &mut Vec<Effect>, now: Now) {
        if !self.enabled() {
            return;
        }
        self.log(out, format!("Restarting service {}", self.cfg.name));
        if self.idle() {
            self.reset_limits();
            self.phase = Phase::Waiting {
                why: Some(RESTARTING.into()),
            };
            self.set_reason(out, RESTARTING, now);
            return;
        }
        self.ask_stop(STOPPING_FOR_RESTART, Then::Restart);
        out.push(Effect::Bump);
    }

    fn on_clear(&mut self, out: &mut Vec<Effect>, now: Now) {
        let was_failed = self.failed();
        self.reset_limits();
        if !was_failed {
            out.push(Effect::Bump);
            return;
        }
        let why = Some(CLEARED.to_string());
        match self.stop_mut() {
            // Faulted, its stop pending or under way: it starts again after it.
            Some(stop) => stop.then = Then::Wait { why },
            None => self.phase = Phase::Waiting { why },
        }
        self.log(out, format!("Clearing fault on {}", self.cfg.name));
        self.set_reason(out, CLEARED, now);
    }

    fn on_shutdown(&mut self, out: &mut Vec<Effect>, now: Now) {
        let stop = Stop {
            reason: SHUTTING_DOWN.into(),
            then: Then::Shutdown,
        };
        match &mut self.phase {
            Phase::Starting { stop: slot, .. } | Phase::Running { stop: slot, .. } => {
                *slot = Some(stop)
            }
            Phase::Stopping { stop: s, .. } => *s = stop,
            _ => self.phase = Phase::Disabled,
        }
        self.set_reason(out, SHUTTING_DOWN, now);
    }

    fn on_deps_met(&mut self, out: &mut Vec<Effect>, now: Now) {
        let Phase::Waiting { why } = &self.phase else {
            return;
        };
        let why = why.clone();
        // Sliding-window start limit.
        let window = self.cfg.start_limit_interval;
        self.starts
            .retain(|t| now.at.saturating_duration_since(*t) < window);
        let burst = self.cfg.start_limit_burst as usize;
        if burst > 0 && self.starts.len() >= burst {
            let oldest = self.starts.front().copied().unwrap_or(now.at);
            let left = window.saturating_sub(now.at.saturating_duration_since(oldest));
            let until = chrono::Duration::from_std(left)
                .ok()
                .and_then(|d| now.wall.0.checked_add_signed(d))
                .map_or(now.wall, Time);
            self.phase = Phase::Throttled { until };
            self.log(
                out,
                format!("Service {} restarting too quickly", self.cfg.name),
            );
            self.set_reason(out, THROTTLED, now);
            return;
        }
        self.generation = self.generation.wrapping_add(1);
        if why.as_deref() == Some(SELF_HEALING) {
            self.restarts = self.restarts.saturating_add(1);
        }
        self.starts.push_back(now.at);
        self.phase = Phase::Starting {
            why: why.unwrap_or_else(|| WHY_DEPENDENCY.into()),
            early: Early::default(),
            stop: None,
        };
        out.push(Effect::Bump);
        out.push(Effect::Start {
            generation: self.generation,
        });
    }

    fn on_deps_unmet(&mut self, out: &mut Vec<Effect>, now: Now) {
        let keep = self.cfg.keep_on_dependency_loss;
        match &mut self.phase {
            Phase::Waiting { why } => {
                *why = None;
                if self.reason != UNMET {
                    self.set_reason(out, UNMET, now);
                }
            }
            Phase::Starting { stop: slot, .. } | Phase::Running { stop: slot, .. }
                if slot.is_none() && !keep =>
            {
                *slot = Some(Stop {
                    reason: UNMET.into(),
                    then: Then::Wait { why: None },
                });
                out.push(Effect::Bump);
            }
            _ => {}
        }
    }

    fn on_released(&mut self, out: &mut Vec<Effect>) {
        let Phase::Running {
            pid,
            stop: Some(stop),
            ..
        } = &self.phase
        else {
            return;
        };
        self.phase = Phase::Stopping {
            pid: *pid,
            stop: stop.clone(),
        };
        out.push(Effect::Bump);
        out.push(Effect::Stop {
            generation: self.generation,
        });
    }

    fn on_started(&mut self, pid: Option<u32>, out: &mut Vec<Effect>, now: Now) {
        let Phase::Starting { why, early, stop } = &self.phase else {
            return;
        };
        let (why, early) = (why.clone(), early.clone());
        let exec = self.cfg.ready == Readiness::Exec && !self.cfg.oneshot;
        self.phase = Phase::Running {
            pid,
            since: now.at,
            ready: if exec { Ready::Settling } else { Ready::No },
            exited: false,
            stop: stop.clone(),
        };
        self.log(out, format!("Started {}: {why}", self.cfg.name));
        self.set_reason(out, STARTED, now);
        self.watch(exec, out);
        if early.ready {
            self.on_ready(out, now);
        }
        if let Some(outcome) = early.exit {
            self.on_exited(outcome, out, now);
        }
    }

    /// What watches a fresh start: the settle timer (`ready: exec`), or a probe
    /// (tcp, http) and the ready timeout; the periodic checks.
    fn watch(&self, exec: bool, out: &mut Vec<Effect>) {
        let (cfg, generation) = (&self.cfg, self.generation);
        if exec {
            out.push(Effect::Timer {
                generation,
                delay: SETTLE,
                timer: Timer::Settled,
            });
        } else {
            if !cfg.oneshot && matches!(cfg.ready, Readiness::Tcp(_) | Readiness::Http(_)) {
                out.push(Effect::Probe {
                    generation,
                    ready: cfg.ready.clone(),
                    timeout: cfg.ready_timeout,
                });
            }
            out.push(Effect::Timer {
                generation,
                delay: cfg.ready_timeout,
                timer: Timer::ReadyTimeout,
            });
        }
        if self.has_check {
            out.push(Effect::Checks {
                generation,
                interval: cfg.check_interval,
                failures: cfg.check_failures,
            });
        }
    }

    fn on_start_failed(&mut self, e: &str, out: &mut Vec<Effect>, now: Now) {
        let Phase::Starting { stop, .. } = &self.phase else {
            return;
        };
        let disable = stop.as_ref().is_some_and(|s| s.then.disables());
        self.failures = self.failures.saturating_add(1);
        self.log(out, format!("Failed to start {}: {e}", self.cfg.name));
        self.set_reason(out, &format!("Failed start:{e}"), now);
        if disable {
            self.phase = Phase::Disabled;
        } else {
            self.fail(out, now);
        }
    }

    /// Failed; with `restart`, a back-off timer first.
    fn fail(&mut self, out: &mut Vec<Effect>, now: Now) {
        if !self.cfg.restart {
            self.phase = Phase::Failed;
            return;
        }
        let delay = backoff(self.failures, self.cfg.restart_backoff);
        // A new generation: timers armed before are stale.
        self.generation = self.generation.wrapping_add(1);
        self.phase = Phase::BackOff {
            attempt: self.failures,
            until: now.at + delay,
        };
        out.push(Effect::Timer {
            generation: self.generation,
            delay,
            timer: Timer::Retry,
        });
    }

    fn healthy(&mut self, out: &mut Vec<Effect>, now: Now) {
        if self.reason != HEALTHY {
            self.log(out, "Service healthy".into());
            self.set_reason(out, HEALTHY, now);
        }
    }

    fn on_ready(&mut self, out: &mut Vec<Effect>, now: Now) {
        match &mut self.phase {
            Phase::Starting { early, .. } => early.ready = true,
            Phase::Running {
                ready: ready @ Ready::No,
                stop,
                ..
            } if stop.as_ref().is_none_or(|s| s.then != Then::Fail) => {
                *ready = Ready::Yes;
                self.healthy(out, now);
            }
            _ => {}
        }
    }

    fn on_settled(&mut self, out: &mut Vec<Effect>, now: Now) {
        if let Phase::Running {
            ready: ready @ (Ready::Settling | Ready::Yes),
            stop: None,
            ..
        } = &mut self.phase
        {
            *ready = Ready::Yes;
            self.healthy(out, now);
        }
    }

    fn on_ready_timeout(&mut self, out: &mut Vec<Effect>, now: Now) {
        if let Phase::Running {
            ready: Ready::No,
            stop: None,
            ..
        } = self.phase
        {
            let t = self.cfg.ready_timeout;
            self.fault(&format!("not ready after {t:?}"), out, now);
        }
    }

    fn on_exited(&mut self, outcome: Result<(), String>, out: &mut Vec<Effect>, now: Now) {
        let oneshot = self.cfg.oneshot;
        match &mut self.phase {
            Phase::Starting { early, .. } => early.exit = Some(outcome),
            Phase::Running {
                pid,
                ready,
                exited,
                stop: None,
                ..
            } => {
                *pid = None;
                match outcome {
                    Ok(()) if oneshot => {
                        *exited = true;
                        *ready = Ready::Yes;
                        self.failures = 0;
                        self.log(out, format!("Service {} completed", self.cfg.name));
                        self.healthy(out, now);
                    }
                    Ok(()) => {
                        // govisor keeps a long-runner that exited 0 "running".
                        *exited = true;
                        out.push(Effect::Bump);
                    }
                    Err(reason) => {
                        self.log(out, format!("Failed: {reason}"));
                        self.fault(&reason, out, now);
                    }
                }
            }
            // Being stopped: the exit is the stop's business.
            Phase::Running { pid, .. } | Phase::Stopping { pid, .. } => *pid = None,
            _ => {}
        }
    }

    fn on_check_failed(&mut self, e: &str, out: &mut Vec<Effect>, now: Now) {
        if matches!(self.phase, Phase::Running { stop: None, .. }) {
            self.fault(e, out, now);
        }
    }

    /// A running service failed: it is stopped (its dependents first), then failed.
    fn fault(&mut self, reason: &str, out: &mut Vec<Effect>, now: Now) {
        let window = self.cfg.start_limit_interval;
        let Phase::Running {
            since, ready, stop, ..
        } = &mut self.phase
        else {
            return;
        };
        if now.at.saturating_duration_since(*since) >= window {
            // It ran long enough: this is a new episode.
            self.failures = 0;
            self.starts.clear();
        }
        self.failures = self.failures.saturating_add(1);
        *ready = Ready::No;
        *stop = Some(Stop {
            reason: format!("Faulted: {reason}"),
            then: Then::Fail,
        });
        self.log(out, format!("Service {} faulted: {reason}", self.cfg.name));
        out.push(Effect::Bump);
    }

    fn on_stopped(&mut self, out: &mut Vec<Effect>, now: Now) {
        let Phase::Stopping { stop, .. } = &self.phase else {
            return;
        };
        let Stop { reason, then } = stop.clone();
        self.log(out, format!("Stopped {}: {reason}", self.cfg.name));
        match then {
            Then::Disable => {
                self.phase = Phase::Disabled;
                self.set_reason(out, DISABLED, now);
            }
            Then::Shutdown => {
                self.phase = Phase::Disabled;
                self.set_reason(out, &reason, now);
            }
            Then::Wait { why } => {
                self.phase = Phase::Waiting { why };
                self.set_reason(out, &reason, now);
            }
            Then::Restart => {
                self.set_reason(out, &reason, now);
                self.reset_limits();
                self.phase = Phase::Waiting {
                    why: Some(RESTARTING.into()),
                };
                self.set_reason(out, RESTARTING, now);
            }
            Then::Fail => {
                self.set_reason(out, &reason, now);
                self.fail(out, now);
            }
        }
    }

    fn on_retry(&mut self, out: &mut Vec<Effect>) {
        if matches!(self.phase, Phase::BackOff { .. }) {
            self.phase = Phase::Waiting {
                why: Some(SELF_HEALING.into()),
            };
            self.log(out, "Attempting self-healing".into());
            out.push(Effect::Bump);
        }
    }
}

/// The visible state of a started service whose stop is pending, when the stop decides
/// it: disabled, or failed.
fn pending_state(stop: Option<&Stop>) -> Option<api::State> {
    match stop.map(|s| &s.then) {
        Some(Then::Disable | Then::Shutdown) => Some(api::State::Disabled),
        Some(Then::Fail) => Some(api::State::Failed),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
