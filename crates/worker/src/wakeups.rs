//! Starting jobs when they are committed rather than at the next poll. On PostgreSQL the outbox
//! and apalis' queue table announce inserts with `NOTIFY` (a trigger each, sent at commit),
//! and one listening connection per worker process wakes the outbox relay and the queue that
//! has work. Polling every `jobs.poll_interval` stays as the safety net: notifications sent
//! while the listener reconnects are lost, and jobs scheduled for later announce nothing.
//! SQLite has no notifications and keeps polling.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use apalis_postgres::{PgListener, PgPool};
use futures_util::Stream;
use keel_kernel::jobs::Queue;
use tokio::sync::Notify;
use tokio::sync::futures::OwnedNotified;
use tokio_util::sync::CancellationToken;

use crate::TaskError;

/// The channel the `job_outbox` trigger notifies (migration `m20261201_000001`).
pub const OUTBOX_CHANNEL: &str = "keel_job_outbox";
/// The channel apalis' trigger on `apalis.jobs` notifies, with `{"job_type": queue, …}`.
pub const QUEUE_CHANNEL: &str = "apalis::job::insert";

/// After a wake-up, a second one this much later: a job committed while its queue's fetch was
/// already running (and had read the table before the job was there) is not left to the poll.
const FOLLOW_UP: Duration = Duration::from_millis(10);

/// The wake-up signals of one worker process: one for the outbox relay, one per queue. Each
/// holds at most one pending wake-up, so a burst of commits costs one fetch, not one each.
#[derive(Debug, Clone, Default)]
pub struct Wakeups {
    outbox: Arc<Notify>,
    high: Arc<Notify>,
    default: Arc<Notify>,
    low: Arc<Notify>,
}

impl Wakeups {
    fn queue_signal(&self, queue: Queue) -> &Arc<Notify> {
        match queue {
            Queue::High => &self.high,
            Queue::Default => &self.default,
            Queue::Low => &self.low,
        }
    }

    /// Waits until a job has been committed to the outbox (or `wake_all`).
    pub async fn outbox_committed(&self) {
        self.outbox.notified().await;
    }

    /// A stream that yields when `queue` has new work: the apalis worker's wake-up strategy.
    pub fn queue(&self, queue: Queue) -> WakeStream {
        WakeStream::new(Arc::clone(self.queue_signal(queue)))
    }

    /// Wakes every queue (jobs were just moved into them).
    pub fn wake_queues(&self) {
        for queue in Queue::ALL {
            self.queue_signal(queue).notify_one();
        }
    }

    /// Wakes the relay and every queue: something may have been missed.
    pub fn wake_all(&self) {
        self.outbox.notify_one();
        for queue in Queue::ALL {
            self.queue_signal(queue).notify_one();
        }
    }

    /// Routes one notification to whoever it concerns.
    pub fn dispatch(&self, channel: &str, payload: &str) {
        if channel == OUTBOX_CHANNEL {
            self.outbox.notify_one();
            return;
        }
        #[derive(serde::Deserialize)]
        struct Inserted<'a> {
            job_type: &'a str,
        }
        // A queue this worker does not know (another application's apalis jobs) wakes nobody.
        if let Some(queue) =
            serde_json::from_str::<Inserted<'_>>(payload)
                .ok()
                .and_then(|inserted| {
                    Queue::ALL
                        .into_iter()
                        .find(|queue| queue.as_str() == inserted.job_type)
                })
        {
            self.queue_signal(queue).notify_one();
        }
    }

    /// Listens on PostgreSQL until `token` is cancelled, waking whoever a notification
    /// concerns. After (re)connecting it wakes everything once, since notifications sent while
    /// it was away are gone. Fails when it cannot connect; the supervisor retries.
    pub async fn listen(self, pool: PgPool, token: CancellationToken) -> Result<(), TaskError> {
        let mut listener = PgListener::connect_with(&pool)
            .await
            .map_err(|e| TaskError::from_error(&e))?;
        listener
            .listen_all([OUTBOX_CHANNEL, QUEUE_CHANNEL])
            .await
            .map_err(|e| TaskError::from_error(&e))?;
        tracing::debug!("listening for committed jobs");
        self.wake_all();
        loop {
            let received = tokio::select! {
                biased;
                () = token.cancelled() => return Ok(()),
                received = listener.try_recv() => received,
            };
            match received {
                Ok(Some(notification)) => {
                    self.dispatch(notification.channel(), notification.payload());
                }
                // The connection dropped; the next `try_recv` reconnects and listens again.
                Ok(None) => {
                    tracing::warn!("the job notification connection was lost; reconnecting");
                    self.wake_all();
                }
                Err(error) => return Err(TaskError::from_error(&error)),
            }
        }
    }
}

/// Yields once per wake-up of a queue, plus a follow-up shortly after each (see
/// [`FOLLOW_UP`]).
pub struct WakeStream {
    signal: Arc<Notify>,
    waiting: Pin<Box<OwnedNotified>>,
    follow_up: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl std::fmt::Debug for WakeStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WakeStream").finish_non_exhaustive()
    }
}

impl WakeStream {
    fn new(signal: Arc<Notify>) -> Self {
        let waiting = Box::pin(Arc::clone(&signal).notified_owned());
        Self {
            signal,
            waiting,
            follow_up: None,
        }
    }
}

impl Stream for WakeStream {
    type Item = ();

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<()>> {
        if self.waiting.as_mut().poll(cx).is_ready() {
            let next = Box::pin(Arc::clone(&self.signal).notified_owned());
            self.waiting = next;
            self.follow_up = Some(Box::pin(tokio::time::sleep(FOLLOW_UP)));
            return Poll::Ready(Some(()));
        }
        if let Some(follow_up) = self.follow_up.as_mut()
            && follow_up.as_mut().poll(cx).is_ready()
        {
            self.follow_up = None;
            return Poll::Ready(Some(()));
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt as _;

    use super::*;

    #[tokio::test]
    async fn a_queue_notification_wakes_that_queue_only_then_once_more() {
        let wakeups = Wakeups::default();
        let mut default = wakeups.queue(Queue::Default);
        let mut high = wakeups.queue(Queue::High);
        wakeups.dispatch(
            QUEUE_CHANNEL,
            r#"{"job_type":"default","id":"x","run_at":"now"}"#,
        );
        // Another application's queue, and garbage: nobody is woken.
        wakeups.dispatch(QUEUE_CHANNEL, r#"{"job_type":"reports"}"#);
        wakeups.dispatch(QUEUE_CHANNEL, "not json");
        assert_eq!(default.next().await, Some(()));
        // The follow-up, FOLLOW_UP later.
        assert_eq!(default.next().await, Some(()));
        let idle = tokio::time::timeout(Duration::from_millis(200), default.next()).await;
        assert!(idle.is_err(), "no third wake-up without a notification");
        let high_idle = tokio::time::timeout(Duration::from_millis(200), high.next()).await;
        assert!(high_idle.is_err(), "the high queue was not concerned");
    }

    #[tokio::test]
    async fn a_burst_of_commits_is_one_pending_wake_up() {
        let wakeups = Wakeups::default();
        for _ in 0..100 {
            wakeups.dispatch(OUTBOX_CHANNEL, "");
        }
        wakeups.outbox_committed().await;
        let second =
            tokio::time::timeout(Duration::from_millis(200), wakeups.outbox_committed()).await;
        assert!(second.is_err(), "the burst left one wake-up, not a hundred");
        wakeups.wake_all();
        wakeups.outbox_committed().await;
    }
}
