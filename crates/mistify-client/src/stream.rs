//! Byte streams with an idle timeout: a download may last as long as it keeps moving.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use tokio::time::{sleep, Instant, Sleep};

/// The error a stream yields when no chunk arrived within the idle timeout.
#[derive(Debug, thiserror::Error)]
#[error("no data received for {0:?}")]
pub struct IdleTimeoutError(pub Duration);

/// Wraps a stream of `Result<Bytes, E>` so that it fails with an error built from
/// [`IdleTimeoutError`] when the inner stream yields nothing for `idle`.
pub struct IdleTimeout<S> {
    inner: S,
    idle: Duration,
    timer: Pin<Box<Sleep>>,
    done: bool,
}

impl<S> IdleTimeout<S> {
    pub fn new(inner: S, idle: Duration) -> Self {
        IdleTimeout {
            inner,
            idle,
            timer: Box::pin(sleep(idle)),
            done: false,
        }
    }
}

impl<S, E> Stream for IdleTimeout<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: From<IdleTimeoutError>,
{
    type Item = Result<Bytes, E>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut self.inner).poll_next(cx) {
            Poll::Ready(item) => {
                let deadline = Instant::now() + self.idle;
                self.timer.as_mut().reset(deadline);
                if item.is_none() {
                    self.done = true;
                }
                Poll::Ready(item)
            }
            Poll::Pending => match self.timer.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    self.done = true;
                    Poll::Ready(Some(Err(E::from(IdleTimeoutError(self.idle)))))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

use std::future::Future as _;

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[derive(Debug)]
    struct E;
    impl From<IdleTimeoutError> for E {
        fn from(_: IdleTimeoutError) -> Self {
            E
        }
    }

    #[tokio::test(start_paused = true)]
    async fn slow_but_moving_stream_passes_and_stalled_one_fails() {
        let moving = futures::stream::iter(0..5).then(|i| async move {
            sleep(Duration::from_millis(80)).await;
            Ok::<_, E>(Bytes::from(vec![i as u8]))
        });
        let got: Vec<_> = IdleTimeout::new(Box::pin(moving), Duration::from_millis(100))
            .collect()
            .await;
        assert_eq!(got.len(), 5);
        assert!(got.iter().all(|r| r.is_ok()));

        let stalled = futures::stream::pending::<Result<Bytes, E>>();
        let mut s = IdleTimeout::new(stalled, Duration::from_millis(100));
        assert!(matches!(s.next().await, Some(Err(E))));
        assert!(s.next().await.is_none());
    }
}
