//! Guest runners: per guest (and the special `agent` runner for images) an Info lane
//! (at most 100 pipelines at once), a Stream lane (at most 5) and a FIFO queue of async
//! jobs (at most 100 waiting) executed one at a time.
//!
//! A runner costs a few hundred bytes while idle: its worker task exists only while
//! jobs are queued (the agent starts one when the first job arrives; it ends when the
//! queue is empty).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::AgentError;

/// Pipelines of Info actions running at once per runner.
pub const INFO_LIMIT: usize = 100;
/// Streams running at once per runner.
pub const STREAM_LIMIT: usize = 5;
/// Async jobs waiting per runner.
pub const QUEUE_LIMIT: usize = 100;
/// The runner of image jobs.
pub const AGENT_RUNNER: &str = "agent";

#[derive(Default)]
struct Queue {
    jobs: VecDeque<String>,
    /// Places promised to submissions that are still logging their job.
    reserved: usize,
    /// The guest was deleted: nothing more is accepted.
    closed: bool,
}

/// One runner.
pub struct Runner {
    pub id: String,
    info: Arc<Semaphore>,
    stream: Arc<Semaphore>,
    queue: Mutex<Queue>,
    /// A worker is running (or about to) for this runner.
    active: AtomicBool,
}

/// A place reserved in a runner's queue: the job can be logged, then queued.
pub struct Reservation {
    runner: Arc<Runner>,
    used: bool,
}

impl Reservation {
    /// Puts job `id` in the queue; gives it back when the runner was closed meanwhile
    /// (its guest deleted).
    pub fn send(mut self, id: String) -> Result<(), String> {
        self.used = true;
        let mut q = self.runner.lock();
        q.reserved = q.reserved.saturating_sub(1);
        if q.closed {
            return Err(id);
        }
        q.jobs.push_back(id);
        Ok(())
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.used {
            let mut q = self.runner.lock();
            q.reserved = q.reserved.saturating_sub(1);
        }
    }
}

impl Runner {
    pub fn new(id: &str) -> Arc<Runner> {
        Arc::new(Runner {
            id: id.to_string(),
            info: Arc::new(Semaphore::new(INFO_LIMIT)),
            stream: Arc::new(Semaphore::new(STREAM_LIMIT)),
            queue: Mutex::new(Queue::default()),
            active: AtomicBool::new(false),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        // The queue holds plain data: a panic elsewhere cannot leave it inconsistent.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A slot in the Info lane (waits while 100 are in use).
    pub async fn info_slot(&self) -> Result<OwnedSemaphorePermit, AgentError> {
        self.info
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| AgentError::Internal("runner closed".into()))
    }

    /// A slot in the Stream lane (waits while 5 are in use).
    pub async fn stream_slot(&self) -> Result<OwnedSemaphorePermit, AgentError> {
        self.stream
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| AgentError::Internal("runner closed".into()))
    }

    /// Reserves a place in the queue, or 503 when 100 jobs already wait.
    pub fn reserve(self: &Arc<Self>) -> Result<Reservation, AgentError> {
        let mut q = self.lock();
        if q.closed {
            return Err(AgentError::NotFound);
        }
        if q.jobs.len() + q.reserved >= QUEUE_LIMIT {
            return Err(AgentError::Unavailable {
                message: format!(
                    "the job queue of {} is full ({QUEUE_LIMIT} waiting)",
                    self.id
                ),
                retry_after: 5,
            });
        }
        q.reserved += 1;
        drop(q);
        Ok(Reservation {
            runner: self.clone(),
            used: false,
        })
    }

    /// The next queued job, if any.
    pub fn pop(&self) -> Option<String> {
        self.lock().jobs.pop_front()
    }

    /// Claims the right to run a worker; false when one already runs.
    pub fn claim(&self) -> bool {
        self.active
            .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }

    /// The worker stops: true when it must go on after all (a job arrived meanwhile and
    /// no other worker claimed it).
    pub fn release(&self) -> bool {
        self.active.store(false, Ordering::SeqCst);
        self.depth() > 0 && self.claim()
    }

    /// Closes the queue (the guest was deleted); the jobs that were still waiting.
    pub fn close(&self) -> Vec<String> {
        let mut q = self.lock();
        q.closed = true;
        q.jobs.drain(..).collect()
    }

    /// Jobs waiting in the queue.
    pub fn depth(&self) -> usize {
        self.lock().jobs.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_refuses_and_a_closed_one_gives_jobs_back() {
        let r = Runner::new("g");
        let mut held = Vec::new();
        for i in 0..QUEUE_LIMIT {
            let res = r.reserve().unwrap();
            if i % 2 == 0 {
                res.send(format!("j{i}")).unwrap();
            } else {
                held.push(res);
            }
        }
        assert!(matches!(r.reserve(), Err(AgentError::Unavailable { .. })));
        drop(held.pop());
        let last = r.reserve().unwrap();
        assert_eq!(r.pop().as_deref(), Some("j0"));
        assert_eq!(r.close().len(), QUEUE_LIMIT / 2 - 1);
        assert_eq!(last.send("late".into()), Err("late".into()));
        assert!(matches!(r.reserve(), Err(AgentError::NotFound)));
    }

    #[test]
    fn one_worker_at_a_time() {
        let r = Runner::new("g");
        assert!(r.claim());
        assert!(!r.claim());
        assert!(!r.release(), "nothing queued: the worker stops");
        r.reserve().unwrap().send("j".into()).unwrap();
        assert!(r.claim());
        assert!(r.release(), "a job is queued: the worker goes on");
        assert!(!r.claim());
    }
}
