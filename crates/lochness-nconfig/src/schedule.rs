//! When to run, and with which keys: a pure state machine over time stamps (the daemon
//! feeds it changes, clock readings and run outcomes; tests feed it made-up instants).
//!
//! - Changed keys collect into a batch; the batch is due 100 ms after its last key or
//!   1 s after its first, whichever comes first.
//! - One run at a time: keys that arrive during a run form the next batch, due by the
//!   same rule (at once if its time has passed when the run ends).
//! - A failed run's keys are carried over: they join the next batch, which still waits
//!   for a new change (a failure is retried on the next change, not in a loop).
//! - A full run (the one at start, and after a watch lost its history) is a batch of
//!   its own kind that makes the next run a full one.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// Quiet time that closes a batch.
pub const QUIET: Duration = Duration::from_millis(100);
/// Longest a batch waits after its first key.
pub const MAX_WAIT: Duration = Duration::from_secs(1);

/// The keys of one run, and whether it must be a full run regardless of their tags.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    /// A full run is required (start-up, or changes were lost).
    pub full: bool,
    /// The changed keys.
    pub keys: BTreeSet<String>,
}

impl Batch {
    /// Whether there is nothing to run.
    pub fn is_empty(&self) -> bool {
        !self.full && self.keys.is_empty()
    }

    fn absorb(&mut self, other: Batch) {
        self.full |= other.full;
        self.keys.extend(other.keys);
    }
}

/// Where the daemon is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// No run; the pending batch (maybe empty) waits for its time.
    Idle,
    /// A run of this batch is going on.
    Running(Batch),
}

/// The scheduler (see the module documentation).
#[derive(Debug, Clone)]
pub struct Scheduler {
    phase: Phase,
    pending: Batch,
    first: Option<Instant>,
    last: Option<Instant>,
    /// Due at once regardless of the timers (the start-up run).
    immediate: bool,
    /// The keys of the last failed run, for the next one.
    carried: Batch,
}

impl Scheduler {
    /// Idle at `now`, with the start-up full run due at once.
    pub fn new(now: Instant) -> Scheduler {
        Scheduler {
            phase: Phase::Idle,
            pending: Batch {
                full: true,
                keys: BTreeSet::new(),
            },
            first: Some(now),
            last: Some(now),
            immediate: true,
            carried: Batch::default(),
        }
    }

    /// The phase.
    pub fn phase(&self) -> &Phase {
        &self.phase
    }

    /// Keys waiting for the next run (pending and carried over).
    pub fn waiting(&self) -> usize {
        self.pending.keys.len() + self.carried.keys.len()
    }

    fn touch(&mut self, now: Instant) {
        self.first.get_or_insert(now);
        self.last = Some(now);
    }

    /// A key changed at `now`.
    pub fn changed(&mut self, key: String, now: Instant) {
        self.pending.keys.insert(key);
        self.touch(now);
    }

    /// Changes were lost at `now` (a watch's history was compacted): the next run is
    /// a full one, batched like a change.
    pub fn lost(&mut self, now: Instant) {
        self.pending.full = true;
        self.touch(now);
    }

    /// When the pending batch is due; `None` while a run is going on or nothing is
    /// pending.
    pub fn due(&self) -> Option<Instant> {
        if self.phase != Phase::Idle || self.pending.is_empty() {
            return None;
        }
        match (self.first, self.last) {
            (Some(first), _) if self.immediate => Some(first),
            (Some(first), Some(last)) => Some((last + QUIET).min(first + MAX_WAIT)),
            _ => None,
        }
    }

    /// Starts the run of the pending batch with the carried-over keys; `None` when
    /// nothing is due at `now` (or a run is going on).
    pub fn start(&mut self, now: Instant) -> Option<Batch> {
        if self.due().is_none_or(|due| due > now) {
            return None;
        }
        let mut batch = std::mem::take(&mut self.pending);
        batch.absorb(std::mem::take(&mut self.carried));
        self.first = None;
        self.last = None;
        self.immediate = false;
        self.phase = Phase::Running(batch.clone());
        Some(batch)
    }

    /// The run ended (`ok`: exit status 0). A failed run's batch is carried over to
    /// the next run, which waits for the next change.
    pub fn finished(&mut self, ok: bool) {
        if let Phase::Running(batch) = std::mem::replace(&mut self.phase, Phase::Idle) {
            if !ok {
                self.carried.absorb(batch);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(base: Instant, n: u64) -> Instant {
        base + Duration::from_millis(n)
    }

    fn keys(b: &Batch) -> Vec<&str> {
        b.keys.iter().map(String::as_str).collect()
    }

    #[test]
    fn start_up_run_is_full_and_immediate() {
        let t = Instant::now();
        let mut s = Scheduler::new(t);
        let b = s.start(t).expect("due at once");
        assert!(b.full && b.keys.is_empty());
        assert_eq!(s.phase(), &Phase::Running(b));
        assert_eq!(s.due(), None);
        s.finished(true);
        assert_eq!(s.phase(), &Phase::Idle);
        assert_eq!(s.due(), None, "nothing pending");
    }

    #[test]
    fn quiet_time_closes_a_batch() {
        let t = Instant::now();
        let mut s = Scheduler::new(t);
        s.start(t);
        s.finished(true);
        s.changed("a".into(), ms(t, 0));
        s.changed("b".into(), ms(t, 50));
        assert_eq!(s.due(), Some(ms(t, 150)));
        assert_eq!(s.start(ms(t, 149)), None);
        let b = s.start(ms(t, 150)).unwrap();
        assert!(!b.full);
        assert_eq!(keys(&b), ["a", "b"]);
    }

    #[test]
    fn a_steady_stream_is_cut_after_a_second() {
        let t = Instant::now();
        let mut s = Scheduler::new(t);
        s.start(t);
        s.finished(true);
        for i in 0..20 {
            s.changed(format!("k{i:02}"), ms(t, i * 60));
        }
        // Last key at 1140 ms, but the first was at 0: due at 1000 ms.
        assert_eq!(s.due(), Some(ms(t, 1000)));
    }

    #[test]
    fn changes_during_a_run_form_the_next_batch() {
        let t = Instant::now();
        let mut s = Scheduler::new(t);
        s.start(t);
        s.changed("during".into(), ms(t, 10));
        assert_eq!(s.due(), None, "one run at a time");
        assert_eq!(s.start(ms(t, 5000)), None);
        s.finished(true);
        assert_eq!(s.due(), Some(ms(t, 110)), "its time has passed: at once");
        let b = s.start(ms(t, 5000)).unwrap();
        assert_eq!(keys(&b), ["during"]);
        assert!(!b.full);
    }

    #[test]
    fn a_failed_run_is_retried_with_the_next_change() {
        let t = Instant::now();
        let mut s = Scheduler::new(t);
        s.start(t);
        s.finished(true);
        s.changed("a".into(), ms(t, 0));
        let first = s.start(ms(t, 100)).unwrap();
        s.finished(false);
        assert_eq!(s.due(), None, "no retry loop: wait for a change");
        assert_eq!(s.waiting(), 1);
        s.changed("b".into(), ms(t, 500));
        let retry = s.start(ms(t, 600)).unwrap();
        assert_eq!(keys(&retry), ["a", "b"]);
        assert_eq!(keys(&first), ["a"]);
        s.finished(true);
        s.changed("c".into(), ms(t, 700));
        assert_eq!(
            keys(&s.start(ms(t, 800)).unwrap()),
            ["c"],
            "carried once only"
        );
    }

    #[test]
    fn a_failed_start_up_run_makes_the_retry_full() {
        let t = Instant::now();
        let mut s = Scheduler::new(t);
        s.start(t);
        s.finished(false);
        s.changed("a".into(), ms(t, 10));
        let b = s.start(ms(t, 110)).unwrap();
        assert!(b.full);
    }

    #[test]
    fn lost_history_is_a_full_run() {
        let t = Instant::now();
        let mut s = Scheduler::new(t);
        s.start(t);
        s.finished(true);
        s.lost(ms(t, 0));
        assert_eq!(s.due(), Some(ms(t, 100)));
        assert!(s.start(ms(t, 100)).unwrap().full);
    }
}
