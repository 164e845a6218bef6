//! One test per row of the transition table (`docs/supervisor.md`, "States"), in the
//! table's order, plus the views and the sweep that finds no hidden transition.

use super::*;
use crate::api::State;

/// A fixed origin for the monotonic and the wall clock.
struct Clock {
    at: Instant,
    wall: Time,
}

impl Clock {
    fn new() -> Clock {
        Clock {
            at: Instant::now(),
            wall: Time::now(),
        }
    }

    /// `ms` milliseconds after the origin.
    fn ms(&self, ms: u64) -> Now {
        let d = Duration::from_millis(ms);
        Now {
            at: self.at + d,
            wall: Time(self.wall.0 + chrono::Duration::milliseconds(ms as i64)),
        }
    }
}

fn cfg() -> ServiceConfig {
    ServiceConfig::new("a")
}

fn svc_with(cfg: ServiceConfig, clock: &Clock) -> Service {
    Service::new(cfg, false, clock.ms(0))
}

fn svc(clock: &Clock) -> Service {
    svc_with(cfg(), clock)
}

fn log(text: &str) -> Effect {
    Effect::Log(text.into())
}

fn reason(text: &str) -> Effect {
    Effect::Reason(text.into())
}

fn stop(reason: &str, then: Then) -> Option<Stop> {
    Some(Stop {
        reason: reason.into(),
        then,
    })
}

fn running(clock: &Clock, ready: Ready, stop: Option<Stop>) -> Phase {
    Phase::Running {
        pid: Some(42),
        since: clock.at,
        ready,
        exited: false,
        stop,
    }
}

fn starting(stop: Option<Stop>) -> Phase {
    Phase::Starting {
        why: WHY_ENABLED.into(),
        early: Early::default(),
        stop,
    }
}

fn stopping(reason: &str, then: Then) -> Phase {
    Phase::Stopping {
        pid: Some(42),
        stop: Stop {
            reason: reason.into(),
            then,
        },
    }
}

fn waiting(why: Option<&str>) -> Phase {
    Phase::Waiting {
        why: why.map(str::to_string),
    }
}

fn wait_then(why: &str) -> Then {
    Then::Wait {
        why: Some(why.into()),
    }
}

/// `s` in `phase`, with some start history and failures (to see limits reset).
fn with_history(mut s: Service, phase: Phase, clock: &Clock) -> Service {
    s.phase = phase;
    s.starts = [clock.at].into();
    s.failures = 3;
    s
}

fn limits_reset(s: &Service) -> bool {
    s.starts.is_empty() && s.failures == 0
}

// ---------------------------------------------------------------- operator events

#[test]
fn enable_from_disabled_waits() {
    let c = Clock::new();
    let mut s = with_history(svc(&c), Phase::Disabled, &c);
    let fx = s.handle(Event::Enable, c.ms(1));
    assert_eq!(fx, [log("Enabling service a"), reason("Enabled")]);
    assert_eq!(s.phase, waiting(Some("Enabled service")));
    assert!(limits_reset(&s));
    assert_eq!(s.reason, "Enabled");
    assert_eq!(s.stamp, c.ms(1).wall);
}

#[test]
fn enable_during_a_disabling_stop_starts_after_it() {
    let c = Clock::new();
    for phase in [
        starting(stop(DISABLED, Then::Disable)),
        running(&c, Ready::Yes, stop(DISABLED, Then::Disable)),
        stopping(DISABLED, Then::Disable),
    ] {
        let mut s = with_history(svc(&c), phase.clone(), &c);
        let fx = s.handle(Event::Enable, c.ms(1));
        assert_eq!(fx, [log("Enabling service a"), reason("Enabled")]);
        assert_eq!(
            s.stop().map(|s| &s.then),
            Some(&wait_then("Enabled service"))
        );
        assert_eq!(s.stop().map(|s| s.reason.as_str()), Some(DISABLED));
        assert!(limits_reset(&s));
    }
}

#[test]
fn enable_when_enabled_changes_nothing() {
    let c = Clock::new();
    for phase in [
        waiting(None),
        Phase::Failed,
        running(&c, Ready::Yes, None),
        stopping(SHUTTING_DOWN, Then::Shutdown),
    ] {
        let mut s = with_history(svc(&c), phase.clone(), &c);
        assert_eq!(s.handle(Event::Enable, c.ms(1)), []);
        assert_eq!(s.phase, phase);
        assert_eq!(s.failures, 3, "a fault is not cleared");
    }
}

#[test]
fn conflict_refuses_enable() {
    let c = Clock::new();
    let mut s = svc(&c);
    let fx = s.handle(
        Event::Conflict {
            rival: "b:x".into(),
        },
        c.ms(1),
    );
    assert_eq!(
        fx,
        [
            log("Cannot enable a: conflicts with b:x"),
            reason("Disabled due to conflict")
        ]
    );
    assert_eq!(s.phase, Phase::Disabled);
}

#[test]
fn disable_when_disabled_changes_nothing() {
    let c = Clock::new();
    let mut s = svc(&c);
    s.reason = DISABLED.into();
    assert_eq!(s.handle(Event::Disable, c.ms(1)), []);
    let mut s = svc(&c);
    s.phase = stopping(DISABLED, Then::Disable);
    s.reason = DISABLED.into();
    assert_eq!(s.handle(Event::Disable, c.ms(1)), []);
}

#[test]
fn disable_idle_service() {
    let c = Clock::new();
    for phase in [
        Phase::Disabled, // reason "Added service"
        waiting(Some("Enabled service")),
        Phase::BackOff {
            attempt: 2,
            until: c.at,
        },
        Phase::Failed,
        Phase::Throttled { until: c.wall },
    ] {
        let mut s = svc(&c);
        s.phase = phase;
        let fx = s.handle(Event::Disable, c.ms(1));
        assert_eq!(fx, [log("Disabling service a"), reason("Disabled")]);
        assert_eq!(s.phase, Phase::Disabled);
    }
}

#[test]
fn disable_started_service_asks_for_a_stop() {
    let c = Clock::new();
    for phase in [starting(None), running(&c, Ready::Yes, None)] {
        let mut s = svc(&c);
        s.phase = phase;
        let fx = s.handle(Event::Disable, c.ms(1));
        assert_eq!(fx, [log("Disabling service a"), reason("Disabled")]);
        assert_eq!(s.stop(), stop(DISABLED, Then::Disable).as_ref());
        assert_eq!(s.state(), State::Disabled);
    }
}

#[test]
fn disable_during_a_stop_disables_after_it() {
    let c = Clock::new();
    for phase in [
        running(&c, Ready::Yes, stop(UNMET, Then::Wait { why: None })),
        stopping("Faulted: x", Then::Fail),
        stopping(STOPPING_FOR_RESTART, Then::Restart),
    ] {
        let mut s = svc(&c);
        s.phase = phase.clone();
        let fx = s.handle(Event::Disable, c.ms(1));
        assert_eq!(fx, [log("Disabling service a"), reason("Disabled")]);
        assert_eq!(s.stop().map(|s| &s.then), Some(&Then::Disable));
        // The stop keeps its reason (the `Stopped` line).
        assert_eq!(
            s.stop().map(|s| &s.reason),
            phase_stop_reason(&phase).as_ref()
        );
    }
    // A shutdown stays a shutdown.
    let mut s = svc(&c);
    s.phase = stopping(SHUTTING_DOWN, Then::Shutdown);
    s.reason = SHUTTING_DOWN.into();
    let fx = s.handle(Event::Disable, c.ms(1));
    assert_eq!(fx, [log("Disabling service a"), reason("Disabled")]);
    assert_eq!(s.phase, stopping(SHUTTING_DOWN, Then::Shutdown));
}

fn phase_stop_reason(p: &Phase) -> Option<String> {
    match p {
        Phase::Starting { stop, .. } | Phase::Running { stop, .. } => {
            stop.as_ref().map(|s| s.reason.clone())
        }
        Phase::Stopping { stop, .. } => Some(stop.reason.clone()),
        _ => None,
    }
}

#[test]
fn restart_disabled_changes_nothing() {
    let c = Clock::new();
    for phase in [
        Phase::Disabled,
        running(&c, Ready::Yes, stop(DISABLED, Then::Disable)),
        stopping(SHUTTING_DOWN, Then::Shutdown),
    ] {
        let mut s = svc(&c);
        s.phase = phase.clone();
        assert_eq!(s.handle(Event::Restart, c.ms(1)), []);
        assert_eq!(s.phase, phase);
    }
}

#[test]
fn restart_idle_service_waits_to_start() {
    let c = Clock::new();
    for phase in [
        waiting(None),
        Phase::BackOff {
            attempt: 2,
            until: c.at,
        },
        Phase::Failed,
        Phase::Throttled { until: c.wall },
    ] {
        let mut s = with_history(svc(&c), phase, &c);
        let fx = s.handle(Event::Restart, c.ms(1));
        assert_eq!(fx, [log("Restarting service a"), reason("Restarting")]);
        assert_eq!(s.phase, waiting(Some("Restarting")));
        assert!(limits_reset(&s));
    }
}

#[test]
fn restart_started_service_asks_for_a_stop() {
    let c = Clock::new();
    for phase in [starting(None), running(&c, Ready::Yes, None)] {
        let mut s = svc(&c);
        s.phase = phase;
        let fx = s.handle(Event::Restart, c.ms(1));
        assert_eq!(fx, [log("Restarting service a"), Effect::Bump]);
        assert_eq!(
            s.stop(),
            stop("Stopping for restart", Then::Restart).as_ref()
        );
        assert!(!s.running());
    }
}

#[test]
fn restart_during_a_stop_restarts_after_it() {
    let c = Clock::new();
    for phase in [
        running(&c, Ready::No, stop("Faulted: x", Then::Fail)),
        stopping(UNMET, Then::Wait { why: None }),
    ] {
        let mut s = svc(&c);
        s.phase = phase;
        let fx = s.handle(Event::Restart, c.ms(1));
        assert_eq!(fx, [log("Restarting service a"), Effect::Bump]);
        assert_eq!(s.stop().map(|s| &s.then), Some(&Then::Restart));
    }
}

#[test]
fn clear_failed_service_waits_to_start() {
    let c = Clock::new();
    for phase in [
        Phase::BackOff {
            attempt: 2,
            until: c.at,
        },
        Phase::Failed,
        Phase::Throttled { until: c.wall },
    ] {
        let mut s = with_history(svc(&c), phase, &c);
        let fx = s.handle(Event::Clear, c.ms(1));
        assert_eq!(fx, [log("Clearing fault on a"), reason("Cleared fault")]);
        assert_eq!(s.phase, waiting(Some("Cleared fault")));
        assert!(limits_reset(&s));
    }
}

#[test]
fn clear_during_a_fault_stop_starts_after_it() {
    let c = Clock::new();
    for phase in [
        running(&c, Ready::No, stop("Faulted: x", Then::Fail)),
        stopping("Faulted: x", Then::Fail),
    ] {
        let mut s = with_history(svc(&c), phase, &c);
        let fx = s.handle(Event::Clear, c.ms(1));
        assert_eq!(fx, [log("Clearing fault on a"), reason("Cleared fault")]);
        assert_eq!(s.stop().map(|s| &s.then), Some(&wait_then("Cleared fault")));
        assert!(!s.failed());
        assert!(limits_reset(&s));
    }
}

#[test]
fn clear_without_fault_only_resets_limits() {
    let c = Clock::new();
    for phase in [
        Phase::Disabled,
        waiting(None),
        running(&c, Ready::Yes, None),
        stopping(UNMET, Then::Wait { why: None }),
    ] {
        let mut s = with_history(svc(&c), phase.clone(), &c);
        assert_eq!(s.handle(Event::Clear, c.ms(1)), [Effect::Bump]);
        assert_eq!(s.phase, phase);
        assert!(limits_reset(&s));
    }
}

#[test]
fn shutdown_disables_idle_service() {
    let c = Clock::new();
    for phase in [
        Phase::Disabled,
        waiting(None),
        Phase::BackOff {
            attempt: 2,
            until: c.at,
        },
        Phase::Failed,
        Phase::Throttled { until: c.wall },
    ] {
        let mut s = svc(&c);
        s.phase = phase;
        assert_eq!(
            s.handle(Event::Shutdown, c.ms(1)),
            [reason("Shutting down")]
        );
        assert_eq!(s.phase, Phase::Disabled);
    }
}

#[test]
fn shutdown_stops_started_service() {
    let c = Clock::new();
    for phase in [
        starting(None),
        running(&c, Ready::Yes, None),
        running(&c, Ready::No, stop("Faulted: x", Then::Fail)),
        stopping(UNMET, Then::Restart),
    ] {
        let mut s = svc(&c);
        s.phase = phase;
        assert_eq!(
            s.handle(Event::Shutdown, c.ms(1)),
            [reason("Shutting down")]
        );
        assert_eq!(s.stop(), stop("Shutting down", Then::Shutdown).as_ref());
        assert!(!s.enabled());
    }
}

// ---------------------------------------------------------------- graph events

#[test]
fn dependencies_met_start_the_service() {
    let c = Clock::new();
    let mut s = svc(&c);
    s.phase = waiting(Some("Enabled service"));
    let fx = s.handle(Event::DepsMet, c.ms(5));
    assert_eq!(fx, [Effect::Bump, Effect::Start { generation: 1 }]);
    assert_eq!(s.phase, starting(None));
    assert_eq!(s.starts, [c.ms(5).at]);
    assert_eq!(s.restarts, 0);
    // Without a why: "Dependency running"; by self-healing: one more restart.
    s.phase = waiting(None);
    s.handle(Event::DepsMet, c.ms(6));
    assert!(matches!(&s.phase, Phase::Starting { why, .. } if why == "Dependency running"));
    s.phase = waiting(Some("Self-healing"));
    let fx = s.handle(Event::DepsMet, c.ms(7));
    assert_eq!(fx, [Effect::Bump, Effect::Start { generation: 3 }]);
    assert_eq!(s.restarts, 1);
}

#[test]
fn start_limit_throttles() {
    let c = Clock::new();
    let mut cfg = cfg();
    cfg.start_limit_burst = 3;
    cfg.start_limit_interval = Duration::from_secs(10);
    let mut s = svc_with(cfg, &c);
    s.phase = waiting(None);
    s.starts = [c.ms(0).at, c.ms(1000).at, c.ms(2000).at].into();
    let fx = s.handle(Event::DepsMet, c.ms(3000));
    assert_eq!(
        fx,
        [
            log("Service a restarting too quickly"),
            reason("Throttled: start limit reached")
        ]
    );
    // Until the oldest start leaves the window.
    assert_eq!(
        s.phase,
        Phase::Throttled {
            until: c.ms(10_000).wall
        }
    );
    // The window slides: a start older than the interval does not count.
    s.phase = waiting(None);
    let fx = s.handle(Event::DepsMet, c.ms(10_000));
    assert_eq!(fx, [Effect::Bump, Effect::Start { generation: 1 }]);
    assert_eq!(s.starts, [c.ms(1000).at, c.ms(2000).at, c.ms(10_000).at]);
    // A burst of 0 turns the limit off.
    s.cfg.start_limit_burst = 0;
    s.phase = waiting(None);
    s.starts = (0..100).map(|i| c.ms(10_000 + i).at).collect();
    let fx = s.handle(Event::DepsMet, c.ms(10_100));
    assert_eq!(fx, [Effect::Bump, Effect::Start { generation: 2 }]);
}

#[test]
fn dependencies_unmet_keep_waiting() {
    let c = Clock::new();
    let mut s = svc(&c);
    s.phase = waiting(Some("Enabled service"));
    assert_eq!(
        s.handle(Event::DepsUnmet, c.ms(1)),
        [reason("Unmet dependency")]
    );
    assert_eq!(s.phase, waiting(None));
    // Said once: the reason (and the serial) stay.
    s.phase = waiting(Some("Restarting"));
    assert_eq!(s.handle(Event::DepsUnmet, c.ms(2)), []);
    assert_eq!(s.phase, waiting(None));
}

#[test]
fn dependency_lost_asks_for_a_stop() {
    let c = Clock::new();
    for phase in [starting(None), running(&c, Ready::Yes, None)] {
        let mut s = svc(&c);
        s.phase = phase;
        assert_eq!(s.handle(Event::DepsUnmet, c.ms(1)), [Effect::Bump]);
        assert_eq!(
            s.stop(),
            stop("Unmet dependency", Then::Wait { why: None }).as_ref()
        );
        // Still shown by its readiness, but no longer running (dependents see it gone).
        assert!(!s.running() && !s.provides());
    }
}

#[test]
fn dependency_lost_is_ignored_with_keep() {
    let c = Clock::new();
    let mut cfg = cfg();
    cfg.keep_on_dependency_loss = true;
    for phase in [starting(None), running(&c, Ready::Yes, None)] {
        let mut s = svc_with(cfg.clone(), &c);
        s.phase = phase.clone();
        assert_eq!(s.handle(Event::DepsUnmet, c.ms(1)), []);
        assert_eq!(s.phase, phase);
    }
}

#[test]
fn released_service_stops() {
    let c = Clock::new();
    let mut s = svc(&c);
    s.generation = 4;
    s.phase = running(&c, Ready::Yes, stop(UNMET, Then::Wait { why: None }));
    let fx = s.handle(Event::Released, c.ms(1));
    assert_eq!(fx, [Effect::Bump, Effect::Stop { generation: 4 }]);
    assert_eq!(s.phase, stopping(UNMET, Then::Wait { why: None }));
    assert_eq!(s.pid(), Some(42));
    // A start under way is stopped once it returned.
    s.phase = starting(stop(UNMET, Then::Wait { why: None }));
    assert_eq!(s.handle(Event::Released, c.ms(2)), []);
}

// ---------------------------------------------------------------- provider events

#[test]
fn started_exec_settles() {
    let c = Clock::new();
    let mut s = svc(&c);
    s.generation = 2;
    s.phase = starting(None);
    let fx = s.handle(Event::Started(Ok(Some(7))), c.ms(3));
    assert_eq!(
        fx,
        [
            log("Started a: Enabled service"),
            reason("Started"),
            Effect::Timer {
                generation: 2,
                delay: SETTLE,
                timer: Timer::Settled
            }
        ]
    );
    assert_eq!(
        s.phase,
        Phase::Running {
            pid: Some(7),
            since: c.ms(3).at,
            ready: Ready::Settling,
            exited: false,
            stop: None
        }
    );
    assert_eq!(
        (s.state(), s.ready(), s.settling()),
        (State::Running, true, true)
    );
    // With a check, the checks run too.
    let mut cfg = cfg();
    cfg.check_interval = Duration::from_secs(2);
    cfg.check_failures = 4;
    let mut s = Service::new(cfg, true, c.ms(0));
    s.phase = starting(None);
    let fx = s.handle(Event::Started(Ok(None)), c.ms(3));
    assert_eq!(
        fx.last(),
        Some(&Effect::Checks {
            generation: 0,
            interval: Duration::from_secs(2),
            failures: 4
        })
    );
}

#[test]
fn started_waits_for_readiness() {
    let c = Clock::new();
    let timeout = |generation| Effect::Timer {
        generation,
        delay: Duration::from_secs(30),
        timer: Timer::ReadyTimeout,
    };
    let started = [log("Started a: Enabled service"), reason("Started")];
    // tcp / http: probed, and a timeout.
    for ready in [Readiness::Tcp(8080), Readiness::Http("http://x/".into())] {
        let mut cfg = cfg();
        cfg.ready = ready.clone();
        let mut s = svc_with(cfg, &c);
        s.phase = starting(None);
        let fx = s.handle(Event::Started(Ok(Some(7))), c.ms(3));
        let probe = Effect::Probe {
            generation: 0,
            ready,
            timeout: Duration::from_secs(30),
        };
        assert_eq!(
            fx,
            [started[0].clone(), started[1].clone(), probe, timeout(0)]
        );
        assert!(matches!(
            s.phase,
            Phase::Running {
                ready: Ready::No,
                ..
            }
        ));
        assert_eq!(s.state(), State::Starting);
    }
    // notify, and a oneshot (ready when it exits 0): only the timeout.
    let mut notify = cfg();
    notify.ready = Readiness::Notify;
    let mut oneshot = cfg();
    oneshot.oneshot = true;
    oneshot.ready = Readiness::Tcp(8080);
    for cfg in [notify, oneshot] {
        let mut s = svc_with(cfg, &c);
        s.phase = starting(None);
        let fx = s.handle(Event::Started(Ok(Some(7))), c.ms(3));
        assert_eq!(fx, [started[0].clone(), started[1].clone(), timeout(0)]);
        assert!(matches!(
            s.phase,
            Phase::Running {
                ready: Ready::No,
                ..
            }
        ));
    }
}

#[test]
fn started_replays_early_reports() {
    let c = Clock::new();
    let mut cfg = cfg();
    cfg.oneshot = true;
    cfg.ready = Readiness::Notify;
    let mut s = svc_with(cfg, &c);
    s.failures = 2;
    s.phase = Phase::Starting {
        why: "Restarting".into(),
        early: Early {
            ready: true,
            exit: Some(Ok(())),
        },
        stop: None,
    };
    let fx = s.handle(Event::Started(Ok(Some(7))), c.ms(3));
    assert_eq!(
        fx,
        [
            log("Started a: Restarting"),
            reason("Started"),
            Effect::Timer {
                generation: 0,
                delay: Duration::from_secs(30),
                timer: Timer::ReadyTimeout
            },
            log("Service healthy"),
            reason("Healthy"),
            // Healthy already: said once.
            log("Service a completed"),
        ]
    );
    assert_eq!(
        s.phase,
        Phase::Running {
            pid: None,
            since: c.ms(3).at,
            ready: Ready::Yes,
            exited: true,
            stop: None
        }
    );
    assert_eq!(s.state(), State::Exited);
    assert_eq!(s.failures, 0);
    // An early failure faults it at once (its stop waits for the dependents).
    let mut s = svc(&c);
    s.phase = Phase::Starting {
        why: "x".into(),
        early: Early {
            ready: false,
            exit: Some(Err("exit status 3".into())),
        },
        stop: None,
    };
    let fx = s.handle(Event::Started(Ok(Some(7))), c.ms(3));
    assert_eq!(
        fx[3..],
        [
            log("Failed: exit status 3"),
            log("Service a faulted: exit status 3"),
            Effect::Bump
        ]
    );
    assert_eq!(s.state(), State::Failed);
}

#[test]
fn start_error_while_disabling_disables() {
    let c = Clock::new();
    for then in [Then::Disable, Then::Shutdown] {
        let mut s = svc(&c);
        s.phase = starting(stop(DISABLED, then));
        let fx = s.handle(
            Event::Started(Err("exec: \"x\": not found".into())),
            c.ms(1),
        );
        assert_eq!(
            fx,
            [
                log("Failed to start a: exec: \"x\": not found"),
                reason("Failed start:exec: \"x\": not found")
            ]
        );
        assert_eq!(s.phase, Phase::Disabled);
        assert_eq!(s.failures, 1);
    }
}

#[test]
fn start_error_fails() {
    let c = Clock::new();
    for stop in [None, stop(STOPPING_FOR_RESTART, Then::Restart)] {
        let mut s = svc(&c);
        s.phase = starting(stop);
        let fx = s.handle(Event::Started(Err("boom".into())), c.ms(1));
        assert_eq!(
            fx,
            [log("Failed to start a: boom"), reason("Failed start:boom")]
        );
        assert_eq!(s.phase, Phase::Failed);
        assert_eq!(
            (s.state(), s.failed(), s.enabled()),
            (State::Failed, true, true)
        );
    }
}

#[test]
fn start_error_backs_off_with_restart() {
    let c = Clock::new();
    let mut cfg = cfg();
    cfg.restart = true;
    let mut s = svc_with(cfg, &c);
    s.generation = 5;
    s.failures = 1;
    s.phase = starting(None);
    let fx = s.handle(Event::Started(Err("boom".into())), c.ms(10));
    assert_eq!(
        fx,
        [
            log("Failed to start a: boom"),
            reason("Failed start:boom"),
            Effect::Timer {
                generation: 6,
                delay: Duration::from_millis(100),
                timer: Timer::Retry
            }
        ]
    );
    assert_eq!(
        s.phase,
        Phase::BackOff {
            attempt: 2,
            until: c.ms(110).at
        }
    );
    assert_eq!(s.state(), State::Failed);
}

#[test]
fn reports_during_start_are_kept() {
    let c = Clock::new();
    let mut s = svc(&c);
    s.phase = starting(None);
    assert_eq!(s.handle(Event::Ready, c.ms(1)), []);
    assert_eq!(s.handle(Event::Exited(Err("x".into())), c.ms(1)), []);
    assert_eq!(
        s.phase,
        Phase::Starting {
            why: WHY_ENABLED.into(),
            early: Early {
                ready: true,
                exit: Some(Err("x".into()))
            },
            stop: None
        }
    );
}

#[test]
fn ready_makes_it_healthy() {
    let c = Clock::new();
    for stop in [None, stop(UNMET, Then::Wait { why: None })] {
        let mut s = svc(&c);
        s.phase = running(&c, Ready::No, stop.clone());
        s.reason = STARTED.into();
        let fx = s.handle(Event::Ready, c.ms(1));
        assert_eq!(fx, [log("Service healthy"), reason("Healthy")]);
        assert_eq!(s.phase, running(&c, Ready::Yes, stop));
    }
    // Healthy already: not said again.
    let mut s = svc(&c);
    s.phase = running(&c, Ready::No, None);
    s.reason = HEALTHY.into();
    assert_eq!(s.handle(Event::Ready, c.ms(1)), []);
    assert_eq!(s.phase, running(&c, Ready::Yes, None));
    assert!(s.provides());
}

#[test]
fn settle_time_makes_it_healthy() {
    let c = Clock::new();
    let mut s = svc(&c);
    s.phase = running(&c, Ready::Settling, None);
    s.reason = STARTED.into();
    let fx = s.handle(Event::Settled, c.ms(500));
    assert_eq!(fx, [log("Service healthy"), reason("Healthy")]);
    assert_eq!(s.phase, running(&c, Ready::Yes, None));
    assert!(!s.settling());
}

#[test]
fn ready_timeout_faults() {
    let c = Clock::new();
    let mut cfg = cfg();
    cfg.ready_timeout = Duration::from_millis(300);
    let mut s = svc_with(cfg, &c);
    s.phase = running(&c, Ready::No, None);
    let fx = s.handle(Event::ReadyTimeout, c.ms(300));
    assert_eq!(
        fx,
        [
            log("Service a faulted: not ready after 300ms"),
            Effect::Bump
        ]
    );
    assert_eq!(
        s.phase,
        running(
            &c,
            Ready::No,
            stop("Faulted: not ready after 300ms", Then::Fail)
        )
    );
    assert_eq!(s.failures, 1);
    assert_eq!((s.state(), s.failed()), (State::Failed, true));
}

#[test]
fn oneshot_exit_0_completes() {
    let c = Clock::new();
    let mut cfg = cfg();
    cfg.oneshot = true;
    let mut s = svc_with(cfg, &c);
    s.failures = 2;
    s.phase = running(&c, Ready::No, None);
    let fx = s.handle(Event::Exited(Ok(())), c.ms(5));
    assert_eq!(
        fx,
        [
            log("Service a completed"),
            log("Service healthy"),
            reason("Healthy")
        ]
    );
    assert_eq!(
        s.phase,
        Phase::Running {
            pid: None,
            since: c.at,
            ready: Ready::Yes,
            exited: true,
            stop: None
        }
    );
    assert_eq!(s.failures, 0);
    assert_eq!((s.state(), s.provides()), (State::Exited, true));
}

#[test]
fn longrun_exit_0_is_exited() {
    let c = Clock::new();
    let mut s = svc(&c);
    s.phase = running(&c, Ready::Yes, None);
    assert_eq!(s.handle(Event::Exited(Ok(())), c.ms(5)), [Effect::Bump]);
    assert!(matches!(
        s.phase,
        Phase::Running {
            pid: None,
            ready: Ready::Yes,
            exited: true,
            stop: None,
            ..
        }
    ));
    // govisor's "running": still running and providing.
    assert_eq!(
        (s.state(), s.running(), s.provides()),
        (State::Exited, true, true)
    );
}

#[test]
fn exit_error_faults() {
    let c = Clock::new();
    let mut s = svc(&c);
    s.phase = running(&c, Ready::Yes, None);
    let fx = s.handle(Event::Exited(Err("exit status 1".into())), c.ms(5));
    assert_eq!(
        fx,
        [
            log("Failed: exit status 1"),
            log("Service a faulted: exit status 1"),
            Effect::Bump
        ]
    );
    assert!(
        matches!(&s.phase, Phase::Running { pid: None, ready: Ready::No, stop: Some(st), .. }
        if st.reason == "Faulted: exit status 1" && st.then == Then::Fail)
    );
}

#[test]
fn exit_during_a_stop_only_forgets_the_pid() {
    let c = Clock::new();
    for (phase, after) in [
        (
            running(&c, Ready::Yes, stop(DISABLED, Then::Disable)),
            Phase::Running {
                pid: None,
                since: c.at,
                ready: Ready::Yes,
                exited: false,
                stop: stop(DISABLED, Then::Disable),
            },
        ),
        (
            stopping(DISABLED, Then::Disable),
            Phase::Stopping {
                pid: None,
                stop: Stop {
                    reason: DISABLED.into(),
                    then: Then::Disable,
                },
            },
        ),
    ] {
        let mut s = svc(&c);
        s.phase = phase;
        assert_eq!(s.handle(Event::Exited(Err("x".into())), c.ms(5)), []);
        assert_eq!(s.phase, after);
    }
}

#[test]
fn check_failure_faults() {
    let c = Clock::new();
    let mut s = svc(&c);
    s.phase = running(&c, Ready::Yes, None);
    let fx = s.handle(Event::CheckFailed("check: exit status 1".into()), c.ms(5));
    assert_eq!(
        fx,
        [log("Service a faulted: check: exit status 1"), Effect::Bump]
    );
    assert_eq!(
        s.stop(),
        stop("Faulted: check: exit status 1", Then::Fail).as_ref()
    );
}

#[test]
fn a_fault_after_a_long_run_starts_a_new_episode() {
    let c = Clock::new();
    let mut cfg = cfg();
    cfg.start_limit_interval = Duration::from_secs(10);
    let mut s = svc_with(cfg, &c);
    s.phase = running(&c, Ready::Yes, None);
    s.failures = 4;
    s.starts = [c.at].into();
    // Shorter than the window: one more in the row.
    let mut short = s.clone();
    short.handle(Event::CheckFailed("x".into()), c.ms(9_999));
    assert_eq!((short.failures, short.starts.len()), (5, 1));
    // As long as the window: the count starts again.
    s.handle(Event::CheckFailed("x".into()), c.ms(10_000));
    assert_eq!((s.failures, s.starts.len()), (1, 0));
}

#[test]
fn stopped_then_disabled() {
    let c = Clock::new();
    let mut s = svc(&c);
    s.phase = stopping("Stopping for restart", Then::Disable);
    let fx = s.handle(Event::Stopped, c.ms(1));
    assert_eq!(
        fx,
        [log("Stopped a: Stopping for restart"), reason("Disabled")]
    );
    assert_eq!(s.phase, Phase::Disabled);
}

#[test]
fn stopped_at_shutdown() {
    let c = Clock::new();
    let mut s = svc(&c);
    s.phase = stopping(SHUTTING_DOWN, Then::Shutdown);
    let fx = s.handle(Event::Stopped, c.ms(1));
    assert_eq!(
        fx,
        [log("Stopped a: Shutting down"), reason("Shutting down")]
    );
    assert_eq!(s.phase, Phase::Disabled);
}

#[test]
fn stopped_then_waits() {
    let c = Clock::new();
    let mut s = svc(&c);
    s.phase = stopping(UNMET, Then::Wait { why: None });
    let fx = s.handle(Event::Stopped, c.ms(1));
    assert_eq!(
        fx,
        [
            log("Stopped a: Unmet dependency"),
            reason("Unmet dependency")
        ]
    );
    assert_eq!(s.phase, waiting(None));
    // Enabled again while it was stopped for a disable: the stop's reason is shown.
    s.phase = stopping(DISABLED, wait_then("Enabled service"));
    let fx = s.handle(Event::Stopped, c.ms(2));
    assert_eq!(fx, [log("Stopped a: Disabled"), reason("Disabled")]);
    assert_eq!(s.phase, waiting(Some("Enabled service")));
}

#[test]
fn stopped_then_restarts() {
    let c = Clock::new();
    let mut s = with_history(svc(&c), stopping(STOPPING_FOR_RESTART, Then::Restart), &c);
    let fx = s.handle(Event::Stopped, c.ms(1));
    assert_eq!(
        fx,
        [
            log("Stopped a: Stopping for restart"),
            reason("Stopping for restart"),
            reason("Restarting")
        ]
    );
    assert_eq!(s.phase, waiting(Some("Restarting")));
    assert!(limits_reset(&s));
}

#[test]
fn stopped_after_a_fault_fails() {
    let c = Clock::new();
    let mut s = svc(&c);
    s.phase = stopping("Faulted: exit status 1", Then::Fail);
    let fx = s.handle(Event::Stopped, c.ms(1));
    assert_eq!(
        fx,
        [
            log("Stopped a: Faulted: exit status 1"),
            reason("Faulted: exit status 1")
        ]
    );
    assert_eq!(s.phase, Phase::Failed);
}

#[test]
fn stopped_after_a_fault_backs_off_with_restart() {
    let c = Clock::new();
    let mut cfg = cfg();
    cfg.restart = true;
    cfg.restart_backoff = Duration::from_secs(1);
    let mut s = svc_with(cfg, &c);
    s.phase = stopping("Faulted: exit status 1", Then::Fail);
    s.failures = 3;
    let fx = s.handle(Event::Stopped, c.ms(1));
    assert_eq!(
        fx,
        [
            log("Stopped a: Faulted: exit status 1"),
            reason("Faulted: exit status 1"),
            Effect::Timer {
                generation: 1,
                delay: Duration::from_secs(2),
                timer: Timer::Retry
            }
        ]
    );
    assert_eq!(
        s.phase,
        Phase::BackOff {
            attempt: 3,
            until: c.ms(2001).at
        }
    );
}

#[test]
fn retry_after_the_back_off_self_heals() {
    let c = Clock::new();
    let mut s = svc(&c);
    s.phase = Phase::BackOff {
        attempt: 1,
        until: c.at,
    };
    let fx = s.handle(Event::Retry, c.ms(1));
    assert_eq!(fx, [log("Attempting self-healing"), Effect::Bump]);
    assert_eq!(s.phase, waiting(Some("Self-healing")));
}

// ---------------------------------------------------------------- the rest

/// Sample phases: every variant, with the sub-cases the table tells apart.
fn samples(c: &Clock) -> Vec<Phase> {
    let mut v = vec![
        Phase::Disabled,
        waiting(None),
        waiting(Some("Enabled service")),
        Phase::BackOff {
            attempt: 1,
            until: c.at,
        },
        Phase::Failed,
        Phase::Throttled { until: c.wall },
        starting(None),
    ];
    let thens = [
        Then::Wait { why: None },
        Then::Restart,
        Then::Fail,
        Then::Disable,
        Then::Shutdown,
    ];
    for then in &thens {
        v.push(starting(stop("r", then.clone())));
        v.push(stopping("r", then.clone()));
    }
    for ready in [Ready::No, Ready::Settling, Ready::Yes] {
        for exited in [false, true] {
            for stop in std::iter::once(None).chain(thens.iter().map(|t| stop("r", t.clone()))) {
                v.push(Phase::Running {
                    pid: Some(42),
                    since: c.at,
                    ready,
                    exited,
                    stop,
                });
            }
        }
    }
    v
}

fn events() -> Vec<Event> {
    vec![
        Event::Enable,
        Event::Conflict { rival: "b".into() },
        Event::Disable,
        Event::Restart,
        Event::Clear,
        Event::Shutdown,
        Event::DepsMet,
        Event::DepsUnmet,
        Event::Released,
        Event::Started(Ok(Some(7))),
        Event::Started(Err("e".into())),
        Event::Ready,
        Event::Settled,
        Event::ReadyTimeout,
        Event::Exited(Ok(())),
        Event::Exited(Err("e".into())),
        Event::CheckFailed("e".into()),
        Event::Stopped,
        Event::Retry,
    ]
}

/// The changes the table lists without an effect: reports kept during a start, the pid
/// of a process that exited while being stopped, the why of a service that waits.
fn silent(before: &Phase, ev: &Event, after: &Phase) -> bool {
    match (before, ev, after) {
        (Phase::Starting { .. }, Event::Ready | Event::Exited(_), Phase::Starting { .. }) => true,
        (Phase::Running { stop: Some(_), .. } | Phase::Stopping { .. }, Event::Exited(_), _) => {
            after.clone() == without_pid(before)
        }
        (Phase::Waiting { .. }, Event::DepsUnmet, Phase::Waiting { why: None }) => true,
        // Ready (or settled) when `Healthy` was said already.
        (Phase::Running { .. }, Event::Ready | Event::Settled, _) => {
            after.clone() == with_ready(before)
        }
        _ => false,
    }
}

fn without_pid(p: &Phase) -> Phase {
    let mut p = p.clone();
    if let Phase::Running { pid, .. } | Phase::Stopping { pid, .. } = &mut p {
        *pid = None;
    }
    p
}

fn with_ready(p: &Phase) -> Phase {
    let mut p = p.clone();
    if let Phase::Running { ready, .. } = &mut p {
        *ready = Ready::Yes;
    }
    p
}

#[test]
fn no_event_changes_a_phase_without_an_effect_except_the_listed_ones() {
    let c = Clock::new();
    let mut silent_seen = 0;
    for (keep, restart, oneshot) in [
        (false, false, false),
        (true, true, false),
        (false, true, true),
    ] {
        for why in [HEALTHY, UNMET, DISABLED] {
            for phase in samples(&c) {
                for ev in events() {
                    let mut cfg = cfg();
                    cfg.keep_on_dependency_loss = keep;
                    cfg.restart = restart;
                    cfg.oneshot = oneshot;
                    let mut s = svc_with(cfg, &c);
                    s.phase = phase.clone();
                    s.reason = why.into();
                    let fx = s.handle(ev.clone(), c.ms(1));
                    if fx.is_empty() && s.phase != phase {
                        assert!(
                            silent(&phase, &ev, &s.phase),
                            "{phase:?} + {ev:?} -> {:?} without effects",
                            s.phase
                        );
                        silent_seen += 1;
                    }
                }
            }
        }
    }
    assert!(silent_seen > 0);
}

#[test]
fn events_outside_the_table_change_nothing() {
    // Reports for a phase that does not expect them (stale or late) are dropped.
    let c = Clock::new();
    let ignored: &[(Phase, Event)] = &[
        (Phase::Disabled, Event::DepsMet),
        (Phase::Failed, Event::DepsMet),
        (Phase::Failed, Event::DepsUnmet),
        (waiting(None), Event::Released),
        (waiting(None), Event::Started(Ok(Some(1)))),
        (
            running(&c, Ready::Yes, None),
            Event::Started(Err("e".into())),
        ),
        (running(&c, Ready::Yes, None), Event::Stopped),
        (running(&c, Ready::Yes, None), Event::Retry),
        (running(&c, Ready::Yes, None), Event::Ready),
        (running(&c, Ready::Yes, None), Event::ReadyTimeout),
        (
            running(&c, Ready::No, stop("Faulted: x", Then::Fail)),
            Event::Ready,
        ),
        (
            running(&c, Ready::Settling, stop(DISABLED, Then::Disable)),
            Event::Settled,
        ),
        (
            running(&c, Ready::No, stop(UNMET, Then::Wait { why: None })),
            Event::ReadyTimeout,
        ),
        (
            running(&c, Ready::Yes, stop(UNMET, Then::Wait { why: None })),
            Event::CheckFailed("e".into()),
        ),
        (stopping(UNMET, Then::Fail), Event::Released),
        (stopping(UNMET, Then::Fail), Event::CheckFailed("e".into())),
        (Phase::Failed, Event::Retry),
        (Phase::Failed, Event::Stopped),
        (Phase::Throttled { until: c.wall }, Event::DepsMet),
    ];
    for (phase, ev) in ignored {
        let mut s = svc(&c);
        s.phase = phase.clone();
        assert_eq!(s.handle(ev.clone(), c.ms(1)), [], "{phase:?} + {ev:?}");
        assert_eq!(&s.phase, phase, "{ev:?}");
    }
}

#[test]
#[rustfmt::skip]
fn visible_state_and_flags_of_each_phase() {
    let c = Clock::new();
    let wait = Then::Wait { why: None };
    let until = c.wall;
    // phase, state, enabled, running, failed, ready, pid, throttled_until
    #[allow(clippy::type_complexity)]
    let rows: Vec<(Phase, State, bool, bool, bool, bool, Option<u32>, Option<Time>)> = vec![
        (Phase::Disabled, State::Disabled, false, false, false, false, None, None),
        (waiting(None), State::Waiting, true, false, false, false, None, None),
        (Phase::BackOff { attempt: 1, until: c.at }, State::Failed, true, false, true, false, None, None),
        (Phase::Failed, State::Failed, true, false, true, false, None, None),
        (Phase::Throttled { until }, State::Throttled, true, false, true, false, None, Some(until)),
        (starting(None), State::Starting, true, false, false, false, None, None),
        (starting(stop("r", Then::Disable)), State::Disabled, false, false, false, false, None, None),
        (starting(stop("r", Then::Restart)), State::Starting, true, false, false, false, None, None),
        (running(&c, Ready::No, None), State::Starting, true, true, false, false, Some(42), None),
        (running(&c, Ready::Settling, None), State::Running, true, true, false, true, Some(42), None),
        (running(&c, Ready::Yes, None), State::Running, true, true, false, true, Some(42), None),
        (running(&c, Ready::Yes, stop("r", wait.clone())), State::Running, true, false, false, true, Some(42), None),
        (running(&c, Ready::Yes, stop("r", Then::Shutdown)), State::Disabled, false, false, false, true, Some(42), None),
        (running(&c, Ready::No, stop("r", Then::Fail)), State::Failed, true, false, true, false, Some(42), None),
        (
            Phase::Running { pid: None, since: c.at, ready: Ready::Yes, exited: true, stop: None },
            State::Exited, true, true, false, true, None, None,
        ),
        (stopping("r", wait), State::Stopping, true, false, false, false, Some(42), None),
        (stopping("r", Then::Fail), State::Stopping, true, false, true, false, Some(42), None),
        (stopping("r", Then::Disable), State::Stopping, false, false, false, false, Some(42), None),
    ];
    for (phase, state, enabled, running, failed, ready, pid, throttled) in rows {
        let mut s = svc(&c);
        s.phase = phase.clone();
        let i = s.info(9);
        assert_eq!(
            (i.state, i.enabled, i.running, i.failed, i.ready, i.pid, i.throttled_until),
            (state, enabled, running, failed, ready, pid, throttled),
            "{phase:?}"
        );
    }
}

#[test]
fn back_off_doubles_from_the_second_retry_up_to_30s() {
    let base = Duration::from_millis(100);
    let got: Vec<u64> = (0..14)
        .map(|n| backoff(n, base).as_millis() as u64)
        .collect();
    assert_eq!(
        got,
        [0, 0, 100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000, 30000]
    );
    assert_eq!(backoff(u32::MAX, base), MAX_BACKOFF);
    assert_eq!(backoff(u32::MAX, Duration::MAX), MAX_BACKOFF);
}

#[test]
fn a_new_service_is_disabled_and_added() {
    let c = Clock::new();
    let s = svc(&c);
    assert_eq!(
        (s.phase(), s.reason.as_str()),
        (&Phase::Disabled, "Added service")
    );
    assert_eq!(s.info(1).status, "Added service");
}

/// The transition table of `docs/supervisor.md` names these tests, in this file's order,
/// and every test here is named in that document.
#[test]
fn the_documented_table_names_these_tests_in_order() {
    let doc_path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/supervisor.md");
    let doc = std::fs::read_to_string(doc_path).expect("docs/supervisor.md");
    let here: Vec<&str> = include_str!("tests.rs")
        .split("#[test]\n")
        .skip(1)
        .filter_map(|t| t.split("fn ").nth(1)?.split('(').next())
        .collect();
    let table = doc
        .split("Transitions (")
        .nth(1)
        .and_then(|t| t.split("\nBack-off").next())
        .expect("the transition table");
    let named: Vec<&str> = table
        .lines()
        .filter(|l| l.starts_with("| "))
        .filter_map(|l| l.trim_end_matches('|').rsplit('|').next())
        .flat_map(|cell| cell.split('`').skip(1).step_by(2))
        .collect();
    assert!(named.len() >= 47, "{named:?}");
    let mut at = 0;
    for name in &named {
        let i = here[at..]
            .iter()
            .position(|t| t == name)
            .unwrap_or_else(|| panic!("{name} is not a test here, or is out of order"));
        at += i + 1;
    }
    for t in &here {
        assert!(
            doc.contains(&format!("`{t}`")),
            "{t} is not in the document"
        );
    }
}
