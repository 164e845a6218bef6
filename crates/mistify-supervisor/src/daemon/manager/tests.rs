//! The manager around the engine, with a fake provider and paused tokio time: timers,
//! back-off, the start limit, checks, cascades and generations, without processes.

use super::*;
use crate::api::State;
use std::collections::VecDeque;
use tokio::time::{sleep, Instant};

/// What the fakes were asked to do, in order: (time since the origin, "start a").
#[derive(Clone)]
struct Journal {
    t0: Instant,
    calls: Arc<Mutex<Vec<(Duration, String)>>>,
}

impl Journal {
    fn new() -> Journal {
        Journal {
            t0: Instant::now(),
            calls: Arc::default(),
        }
    }

    fn note(&self, what: String) {
        let at = self.t0.elapsed();
        self.calls.lock().expect("journal").push((at, what));
    }

    fn calls(&self) -> Vec<String> {
        let calls = self.calls.lock().expect("journal");
        calls.iter().map(|(_, c)| c.clone()).collect()
    }

    /// When `call` was made, in ms since the origin.
    fn times(&self, call: &str) -> Vec<u128> {
        let calls = self.calls.lock().expect("journal");
        calls
            .iter()
            .filter(|(_, c)| c == call)
            .map(|(t, _)| t.as_millis())
            .collect()
    }

    fn index(&self, call: &str) -> usize {
        let calls = self.calls();
        calls
            .iter()
            .position(|c| c == call)
            .unwrap_or_else(|| panic!("no {call:?} in {calls:?}"))
    }
}

/// A provider that does what it is told.
struct Fake {
    name: String,
    journal: Journal,
    /// Results of the coming start calls; then `Ok(Some(100 + n))`.
    script: Mutex<VecDeque<Result<Option<u32>, String>>>,
    /// Every start fails with this.
    fail: Option<String>,
    /// Reports ready from within its start (before the start returns).
    ready_at_start: bool,
    /// Exits by itself this long after each start.
    exit_after: Option<(Duration, Result<(), String>)>,
    /// `Some`: has a check, answering this.
    check: Option<Mutex<Result<(), String>>>,
    ctx: Mutex<Option<ProviderContext>>,
    starts: Mutex<u32>,
}

impl Fake {
    fn new(name: &str, journal: &Journal) -> Fake {
        Fake {
            name: name.into(),
            journal: journal.clone(),
            script: Mutex::default(),
            fail: None,
            ready_at_start: false,
            exit_after: None,
            check: None,
            ctx: Mutex::default(),
            starts: Mutex::new(0),
        }
    }

    /// The unit of the last start exits.
    fn exit(&self, outcome: Result<(), String>) {
        let ctx = self.ctx.lock().expect("ctx").clone();
        ctx.expect("never started").exited(outcome);
    }

    fn ctx(&self) -> ProviderContext {
        self.ctx
            .lock()
            .expect("ctx")
            .clone()
            .expect("never started")
    }

    fn set_check(&self, res: Result<(), String>) {
        if let Some(c) = &self.check {
            *c.lock().expect("check") = res;
        }
    }
}

#[async_trait]
impl Provider for Fake {
    async fn start(&self, ctx: ProviderContext) -> Result<Option<u32>, String> {
        self.journal.note(format!("start {}", self.name));
        *self.ctx.lock().expect("ctx") = Some(ctx.clone());
        let n = {
            let mut n = self.starts.lock().expect("starts");
            *n += 1;
            *n
        };
        if let Some(e) = &self.fail {
            return Err(e.clone());
        }
        let res = self
            .script
            .lock()
            .expect("script")
            .pop_front()
            .unwrap_or(Ok(Some(100 + n)));
        if res.is_ok() {
            if self.ready_at_start {
                ctx.ready();
            }
            if let Some((after, outcome)) = self.exit_after.clone() {
                let ctx = ctx.clone();
                tokio::spawn(async move {
                    sleep(after).await;
                    ctx.exited(outcome);
                });
            }
        }
        res
    }

    async fn stop(&self) {
        self.journal.note(format!("stop {}", self.name));
    }

    fn has_check(&self) -> bool {
        self.check.is_some()
    }

    async fn check(&self) -> Result<(), String> {
        match &self.check {
            Some(c) => c.lock().expect("check").clone(),
            None => Ok(()),
        }
    }
}

fn add(m: &Manager, cfg: ServiceConfig, fake: Fake) -> Arc<Fake> {
    let fake = Arc::new(fake);
    m.add_service(cfg, fake.clone()).expect("add");
    fake
}

fn info(m: &Manager, name: &str) -> ServiceInfo {
    m.service(name).expect("known service")
}

fn log_of(m: &Manager, name: &str) -> Vec<String> {
    let (records, _, _) = m.service_log_records(name, None).expect("known service");
    records.into_iter().map(|r| r.text).collect()
}

/// Lets `ms` of (virtual) time pass, running whatever is due meanwhile.
async fn run_for(ms: u64) {
    sleep(Duration::from_millis(ms)).await;
}

#[tokio::test(start_paused = true)]
async fn an_exec_service_is_healthy_after_the_settle_time() {
    let j = Journal::new();
    let m = Manager::new("t");
    add(&m, ServiceConfig::new("a"), Fake::new("a", &j));
    m.enable("a").expect("enable");
    run_for(1).await;
    let a = info(&m, "a");
    assert_eq!(
        (a.state, a.status.as_str(), a.ready, a.running, a.pid),
        (State::Running, "Started", true, true, Some(101))
    );
    run_for(497).await;
    assert_eq!(info(&m, "a").status, "Started");
    m.settle_startup(Duration::from_secs(5)).await;
    let settled = j.t0.elapsed();
    assert!(
        settled >= SETTLE && settled <= SETTLE + Duration::from_millis(2),
        "start-up settles once it is healthy: {settled:?}"
    );
    assert_eq!(info(&m, "a").status, "Healthy");
    assert_eq!(
        log_of(&m, "a")[1..],
        [
            "[a] Enabling service a",
            "[a] Started a: Enabled service",
            "[a] Service healthy"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn the_back_off_doubles_per_failure_and_is_capped_at_30s() {
    let j = Journal::new();
    let m = Manager::new("t");
    let mut cfg = ServiceConfig::new("a");
    cfg.restart = true;
    cfg.restart_backoff = Duration::from_millis(100);
    cfg.start_limit_burst = 0;
    let mut fake = Fake::new("a", &j);
    fake.fail = Some("boom".into());
    add(&m, cfg, fake);
    m.enable("a").expect("enable");
    run_for(200_000).await;
    let starts = j.times("start a");
    let gaps: Vec<u128> = starts.windows(2).map(|w| w[1] - w[0]).collect();
    let want = [
        0, 100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000, 30000,
    ];
    for (i, (got, want)) in gaps.iter().zip(want).enumerate() {
        assert!(
            *got >= want && *got <= want + 2,
            "gap {i}: {got} ms, want {want} ms ({gaps:?})"
        );
    }
    let a = info(&m, "a");
    assert_eq!(
        (a.state, a.failed, a.status.as_str()),
        (State::Failed, true, "Failed start:boom")
    );
    assert_eq!(a.restarts as usize, starts.len() - 1);
    assert!(log_of(&m, "a").contains(&"[a] Attempting self-healing".to_string()));
}

#[tokio::test(start_paused = true)]
async fn the_start_limit_throttles_until_cleared() {
    let j = Journal::new();
    let m = Manager::new("t");
    let mut cfg = ServiceConfig::new("a");
    cfg.restart = true;
    cfg.restart_backoff = Duration::from_millis(100);
    cfg.start_limit_burst = 3;
    cfg.start_limit_interval = Duration::from_secs(1);
    let mut fake = Fake::new("a", &j);
    fake.fail = Some("boom".into());
    add(&m, cfg, fake);
    m.enable("a").expect("enable");
    run_for(350).await;
    // Starts at 0, 0 and 100 ms; the retry at 300 ms finds 3 starts in the last second.
    assert_eq!(j.times("start a"), [0, 0, 100]);
    let a = info(&m, "a");
    assert_eq!(
        (a.state, a.failed, a.enabled, a.restarts),
        (State::Throttled, true, true, 2)
    );
    assert_eq!(a.status, "Throttled: start limit reached");
    let left = a
        .throttled_until
        .map(|t| (t.0 - Time::now().0).num_milliseconds());
    // The oldest start leaves the window at 1 s (the wall clock is not paused).
    assert!(left.is_some_and(|l| (650..=700).contains(&l)), "{left:?}");
    // It stays so, long after the window.
    run_for(60_000).await;
    assert_eq!(j.times("start a").len(), 3);
    assert_eq!(info(&m, "a").state, State::Throttled);
    let log = log_of(&m, "a");
    let told = log
        .iter()
        .filter(|l| *l == "[a] Service a restarting too quickly")
        .count();
    assert_eq!(told, 1);
    // Clear: a new episode (three more starts, throttled again).
    m.clear("a").expect("clear");
    run_for(1000).await;
    assert_eq!(j.times("start a").len(), 6);
    assert_eq!(info(&m, "a").state, State::Throttled);
    assert!(log_of(&m, "a").contains(&"[a] Failed to start a: boom".to_string()));
}

#[tokio::test(start_paused = true)]
async fn the_start_window_slides() {
    let j = Journal::new();
    let m = Manager::new("t");
    let mut cfg = ServiceConfig::new("a");
    cfg.restart = true;
    cfg.restart_backoff = Duration::from_secs(1);
    cfg.start_limit_burst = 2;
    cfg.start_limit_interval = Duration::from_secs(1);
    let mut fake = Fake::new("a", &j);
    fake.fail = Some("boom".into());
    add(&m, cfg, fake);
    m.enable("a").expect("enable");
    run_for(10_000).await;
    // Two starts at 0; the next ones come at least a second apart: never throttled.
    assert_eq!(j.times("start a"), [0, 0, 1000, 3000, 7000]);
    assert_eq!(info(&m, "a").state, State::Failed);
}

#[tokio::test(start_paused = true)]
async fn a_long_run_resets_the_back_off() {
    let j = Journal::new();
    let m = Manager::new("t");
    let mut cfg = ServiceConfig::new("a");
    cfg.restart = true;
    cfg.restart_backoff = Duration::from_secs(1);
    cfg.start_limit_interval = Duration::from_secs(10);
    let fake = add(&m, cfg, Fake::new("a", &j));
    m.enable("a").expect("enable");
    run_for(20_000).await;
    // Ran 20 s: restarted at once.
    fake.exit(Err("exit status 1".into()));
    run_for(1000).await;
    // Ran 1 s: the second failure in a row waits 1 s, the third 2 s.
    fake.exit(Err("exit status 1".into()));
    run_for(2000).await;
    fake.exit(Err("exit status 1".into()));
    run_for(3000).await;
    assert_eq!(j.times("start a"), [0, 20_000, 22_000, 25_000]);
    assert_eq!(info(&m, "a").restarts, 3);
}

#[tokio::test(start_paused = true)]
async fn a_service_never_ready_faults_after_its_ready_timeout() {
    let j = Journal::new();
    let m = Manager::new("t");
    let mut cfg = ServiceConfig::new("mute");
    cfg.ready = Readiness::Notify;
    cfg.ready_timeout = Duration::from_millis(300);
    add(&m, cfg, Fake::new("mute", &j));
    let mut after = ServiceConfig::new("after");
    after.depends = vec!["mute".into()];
    add(&m, after, Fake::new("after", &j));
    m.enable_all();
    run_for(299).await;
    assert_eq!(info(&m, "mute").state, State::Starting);
    assert_eq!(info(&m, "after").status, "Unmet dependency");
    run_for(2).await;
    let mute = info(&m, "mute");
    assert_eq!(
        (mute.state, mute.status.as_str()),
        (State::Failed, "Faulted: not ready after 300ms")
    );
    assert_eq!(j.calls(), ["start mute", "stop mute"]);
    let after = info(&m, "after");
    assert_eq!(
        (after.state, after.status.as_str()),
        (State::Waiting, "Unmet dependency")
    );
}

#[tokio::test(start_paused = true)]
async fn readiness_reported_during_the_start_counts() {
    let j = Journal::new();
    let m = Manager::new("t");
    let mut cfg = ServiceConfig::new("flag");
    cfg.ready = Readiness::Notify;
    let mut fake = Fake::new("flag", &j);
    fake.ready_at_start = true;
    add(&m, cfg, fake);
    m.enable("flag").expect("enable");
    run_for(1).await;
    let f = info(&m, "flag");
    assert_eq!(
        (f.state, f.ready, f.status.as_str()),
        (State::Running, true, "Healthy")
    );
    // The ready timeout of that start no longer matters.
    run_for(60_000).await;
    assert_eq!(info(&m, "flag").state, State::Running);
}

#[tokio::test(start_paused = true)]
async fn failing_checks_fault_the_service_after_the_threshold() {
    let j = Journal::new();
    let m = Manager::new("t");
    let mut cfg = ServiceConfig::new("c");
    cfg.check_interval = Duration::from_millis(100);
    cfg.check_failures = 2;
    let mut fake = Fake::new("c", &j);
    fake.check = Some(Mutex::new(Ok(())));
    let fake = add(&m, cfg, fake);
    m.enable("c").expect("enable");
    run_for(1050).await;
    assert_eq!(info(&m, "c").state, State::Running);
    fake.set_check(Err("check: exit status 1".into()));
    run_for(100).await;
    // One failure (at 1.1 s) is not enough.
    assert_eq!(info(&m, "c").state, State::Running);
    run_for(100).await;
    let c = info(&m, "c");
    assert_eq!(
        (c.state, c.status.as_str()),
        (State::Failed, "Faulted: check: exit status 1")
    );
    assert_eq!(j.times("stop c"), [1200]);
    let log = log_of(&m, "c");
    for line in [
        "[c] Check failed (1/2): check: exit status 1",
        "[c] Check failed (2/2): check: exit status 1",
        "[c] Service c faulted: check: exit status 1",
        "[c] Stopped c: Faulted: check: exit status 1",
    ] {
        assert!(log.contains(&line.to_string()), "{line:?} not in {log:#?}");
    }
}

#[tokio::test(start_paused = true)]
async fn dependents_stop_first_and_come_back_after_a_crash() {
    let j = Journal::new();
    let m = Manager::new("t");
    let mut db = ServiceConfig::new("db");
    db.restart = true;
    let db = add(&m, db, Fake::new("db", &j));
    let mut api = ServiceConfig::new("api");
    api.depends = vec!["db".into()];
    add(&m, api, Fake::new("api", &j));
    let mut web = ServiceConfig::new("web");
    web.depends = vec!["api".into()];
    add(&m, web, Fake::new("web", &j));
    m.enable_all();
    run_for(1000).await;
    assert_eq!(j.calls(), ["start db", "start api", "start web"]);
    db.exit(Err("signal: killed".into()));
    run_for(1000).await;
    assert_eq!(
        j.calls()[3..],
        [
            "stop web",
            "stop api",
            "stop db",
            "start db",
            "start api",
            "start web"
        ]
    );
    for n in ["db", "api", "web"] {
        let s = info(&m, n);
        assert_eq!(
            (s.state, s.enabled, s.failed),
            (State::Running, true, false)
        );
    }
    assert_eq!(info(&m, "db").restarts, 1);
    assert!(log_of(&m, "api").contains(&"[api] Stopped api: Unmet dependency".to_string()));
    assert!(log_of(&m, "db").contains(&"[db] Stopped db: Faulted: signal: killed".to_string()));
    assert!(log_of(&m, "db").contains(&"[db] Started db: Self-healing".to_string()));
    assert!(log_of(&m, "api").contains(&"[api] Started api: Dependency running".to_string()));
}

#[tokio::test(start_paused = true)]
async fn disable_cascades_to_dependents_which_return_on_enable() {
    let j = Journal::new();
    let m = Manager::new("t");
    add(&m, ServiceConfig::new("base"), Fake::new("base", &j));
    let mut mid = ServiceConfig::new("mid");
    mid.depends = vec!["base".into()];
    add(&m, mid, Fake::new("mid", &j));
    m.enable_all();
    run_for(1000).await;
    m.disable("base").expect("disable");
    m.settle("base", Duration::from_secs(30)).await;
    let mid = info(&m, "mid");
    assert_eq!(
        (mid.state, mid.enabled, mid.status.as_str(), mid.pid),
        (State::Waiting, true, "Unmet dependency", None)
    );
    let base = info(&m, "base");
    assert_eq!(
        (base.state, base.status.as_str()),
        (State::Disabled, "Disabled")
    );
    assert!(j.index("stop mid") < j.index("stop base"));
    m.enable("base").expect("enable");
    run_for(1000).await;
    assert_eq!(info(&m, "mid").state, State::Running);
    // Disabling twice changes nothing the second time.
    m.disable("base").expect("disable");
    let serial = m.service_serial("base");
    m.disable("base").expect("disable");
    assert_eq!(m.service_serial("base"), serial);
}

#[tokio::test(start_paused = true)]
async fn a_dependent_that_keeps_running_survives_and_still_stops_first_at_shutdown() {
    let j = Journal::new();
    let m = Manager::new("t");
    let mut db = ServiceConfig::new("db");
    db.restart = true;
    let db = add(&m, db, Fake::new("db", &j));
    let mut agent = ServiceConfig::new("agent");
    agent.depends = vec!["db".into()];
    agent.keep_on_dependency_loss = true;
    add(&m, agent, Fake::new("agent", &j));
    m.enable_all();
    run_for(1000).await;
    db.exit(Err("signal: killed".into()));
    run_for(1000).await;
    assert_eq!(
        j.calls(),
        ["start db", "start agent", "stop db", "start db"]
    );
    assert_eq!(info(&m, "agent").pid, Some(101));
    m.shutdown().await;
    assert_eq!(j.calls()[4..], ["stop agent", "stop db"]);
    for n in ["db", "agent"] {
        let s = info(&m, n);
        assert_eq!(
            (s.state, s.status.as_str()),
            (State::Disabled, "Shutting down")
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_oneshot_runs_before_its_dependents() {
    let j = Journal::new();
    let m = Manager::new("t");
    let mut setup = ServiceConfig::new("setup");
    setup.oneshot = true;
    let mut fake = Fake::new("setup", &j);
    fake.exit_after = Some((Duration::from_millis(300), Ok(())));
    add(&m, setup, fake);
    let mut app = ServiceConfig::new("app");
    app.depends = vec!["setup".into()];
    add(&m, app, Fake::new("app", &j));
    m.enable_all();
    run_for(1000).await;
    assert_eq!(j.times("start app"), [300]);
    let s = info(&m, "setup");
    assert_eq!(
        (s.state, s.ready, s.failed, s.running, s.pid),
        (State::Exited, true, false, true, None)
    );
    assert!(log_of(&m, "setup").contains(&"[setup] Service setup completed".to_string()));
}

#[tokio::test(start_paused = true)]
async fn restart_stops_dependents_and_brings_all_back() {
    let j = Journal::new();
    let m = Manager::new("t");
    add(&m, ServiceConfig::new("a"), Fake::new("a", &j));
    let mut b = ServiceConfig::new("b");
    b.depends = vec!["a".into()];
    add(&m, b, Fake::new("b", &j));
    m.enable_all();
    run_for(1000).await;
    m.restart("a").expect("restart");
    m.settle("a", Duration::from_secs(30)).await;
    assert_eq!(j.calls()[2..], ["stop b", "stop a", "start a", "start b"]);
    let log = log_of(&m, "a");
    let tail: Vec<&str> = log.iter().rev().take(3).rev().map(String::as_str).collect();
    assert_eq!(
        tail,
        [
            "[a] Restarting service a",
            "[a] Stopped a: Stopping for restart",
            "[a] Started a: Restarting"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn reports_of_an_older_start_are_ignored() {
    let j = Journal::new();
    let m = Manager::new("t");
    let fake = add(&m, ServiceConfig::new("a"), Fake::new("a", &j));
    m.enable("a").expect("enable");
    run_for(1000).await;
    let old = fake.ctx();
    m.restart("a").expect("restart");
    run_for(1000).await;
    old.exited(Err("exit status 1".into()));
    run_for(1).await;
    let a = info(&m, "a");
    assert_eq!((a.state, a.pid), (State::Running, Some(102)));
    // The current one is heard.
    fake.exit(Err("exit status 1".into()));
    run_for(1).await;
    assert_eq!(info(&m, "a").status, "Faulted: exit status 1");
}

#[tokio::test(start_paused = true)]
async fn a_conflicting_service_is_not_enabled() {
    let j = Journal::new();
    let m = Manager::new("t");
    add(&m, ServiceConfig::new("holder:x"), Fake::new("holder", &j));
    let mut rival = ServiceConfig::new("rival:x");
    rival.conflicts = vec!["holder".into()];
    add(&m, rival, Fake::new("rival", &j));
    m.enable("holder:x").expect("enable");
    assert_eq!(m.enable("rival:x"), Err(ManagerError::Conflict));
    let r = info(&m, "rival:x");
    assert_eq!(
        (r.enabled, r.status.as_str()),
        (false, "Disabled due to conflict")
    );
    m.disable("holder:x").expect("disable");
    assert_eq!(m.enable("rival:x"), Ok(()));
    assert_eq!(m.enable("nope"), Err(ManagerError::NotFound));
}
