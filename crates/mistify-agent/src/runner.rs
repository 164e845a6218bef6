//! Guest runners: per guest (and the special `agent` runner for images) an Info lane
//! (at most 100 pipelines at once), a Stream lane (at most 5) and a FIFO queue of async
//! jobs (at most 100 waiting) executed one at a time by the runner's worker.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use crate::error::AgentError;

/// Pipelines of Info actions running at once per runner.
pub const INFO_LIMIT: usize = 100;
/// Streams running at once per runner.
pub const STREAM_LIMIT: usize = 5;
/// Async jobs waiting per runner.
pub const QUEUE_LIMIT: usize = 100;
/// The runner of image jobs.
pub const AGENT_RUNNER: &str = "agent";

/// One runner. Its worker task owns the receiving end of the queue.
pub struct Runner {
    pub id: String,
    info: Arc<Semaphore>,
    stream: Arc<Semaphore>,
    queue: mpsc::Sender<String>,
    /// Jobs queued and not yet started.
    waiting: AtomicUsize,
}

/// A place reserved in a runner's queue: the job can be logged, then sent.
pub struct Reservation {
    permit: mpsc::OwnedPermit<String>,
    runner: Arc<Runner>,
}

impl Reservation {
    /// Puts job `id` in the queue.
    pub fn send(self, id: String) {
        self.runner.waiting.fetch_add(1, Ordering::SeqCst);
        self.permit.send(id);
    }
}

impl Runner {
    /// A runner and the receiving end its worker must drain.
    pub fn new(id: &str) -> (Arc<Runner>, mpsc::Receiver<String>) {
        let (tx, rx) = mpsc::channel(QUEUE_LIMIT);
        let runner = Arc::new(Runner {
            id: id.to_string(),
            info: Arc::new(Semaphore::new(INFO_LIMIT)),
            stream: Arc::new(Semaphore::new(STREAM_LIMIT)),
            queue: tx,
            waiting: AtomicUsize::new(0),
        });
        (runner, rx)
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
        match self.queue.clone().try_reserve_owned() {
            Ok(permit) => Ok(Reservation {
                permit,
                runner: self.clone(),
            }),
            Err(mpsc::error::TrySendError::Full(_)) => Err(AgentError::Unavailable {
                message: format!(
                    "the job queue of {} is full ({QUEUE_LIMIT} waiting)",
                    self.id
                ),
                retry_after: 5,
            }),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(AgentError::NotFound),
        }
    }

    /// The worker took a job out of the queue.
    pub fn dequeued(&self) {
        let _ = self
            .waiting
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                Some(n.saturating_sub(1))
            });
    }

    /// Jobs waiting in the queue.
    pub fn depth(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }
}
