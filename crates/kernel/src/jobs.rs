//! Background jobs as domain vocabulary: payload types, their retry policy, and the port a use
//! case enqueues through. The queue itself (apalis) lives in infrastructure and the worker.
//!
//! A job is enqueued *inside* the use case's transaction, so a rolled-back change enqueues
//! nothing and a committed one cannot lose its job.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::auth::Origin;
use crate::id::UserId;
use crate::repo::{RepoError, Transaction};

crate::define_id!(
    /// Identifies one job (UUIDv7, so job ids sort by enqueue time).
    JobId
);

/// A priority tier; each has its own worker concurrency (`jobs.queues.<name>.concurrency`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Queue {
    /// Interactive work a user waits on (mail with a link in it).
    High,
    /// Everything else.
    #[default]
    Default,
    /// Maintenance that may lag (purges, reports).
    Low,
}

impl Queue {
    /// Every queue, highest priority first.
    pub const ALL: [Queue; 3] = [Queue::High, Queue::Default, Queue::Low];
    /// Every queue's name, highest priority first.
    pub const NAMES: &'static [&'static str] = &["high", "default", "low"];

    /// The queue's name in config, metrics and storage.
    pub const fn as_str(self) -> &'static str {
        match self {
            Queue::High => "high",
            Queue::Default => "default",
            Queue::Low => "low",
        }
    }

    /// Parses a queue name.
    pub fn parse(name: &str) -> Option<Queue> {
        Queue::ALL.into_iter().find(|q| q.as_str() == name)
    }
}

impl std::fmt::Display for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a job is retried: attempts, exponential backoff with jitter, and a per-attempt timeout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1 = never retried).
    pub max_attempts: u32,
    /// Delay before the first retry; doubles each time.
    #[serde(with = "millis")]
    pub backoff: Duration,
    /// Upper bound of the delay.
    #[serde(with = "millis")]
    pub max_backoff: Duration,
    /// How long one attempt may run before it counts as failed.
    #[serde(with = "millis")]
    pub timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(300),
            timeout: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// The delay before retrying after failed attempt `attempt` (1-based), before jitter:
    /// `backoff · 2^(attempt-1)`, capped at `max_backoff`.
    pub fn delay_after(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(30));
        self.backoff.saturating_mul(factor).min(self.max_backoff)
    }

    /// [`Self::delay_after`] with "equal jitter": a uniform pick in `[delay/2, delay]`, so
    /// replicas retrying the same failure do not stampede. `unit` is a random number in [0, 1).
    pub fn jittered_delay_after(&self, attempt: u32, unit: f64) -> Duration {
        let delay = self.delay_after(attempt);
        let half = delay / 2;
        half + half.mul_f64(unit.clamp(0.0, 1.0))
    }
}

mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

/// A job payload: a plain serde type next to the domain logic it drives.
pub trait Job: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// A stable name (`<domain>.<action>`), stored with the job and used to find its handler.
    const KIND: &'static str;
    /// The queue it runs on.
    const QUEUE: Queue = Queue::Default;

    /// Its retry policy.
    fn policy() -> RetryPolicy {
        RetryPolicy::default()
    }

    /// A key that makes the job's side effect happen once even when it runs twice (mail).
    fn dedupe_key(&self) -> Option<String> {
        None
    }
}

/// A job ready to be enqueued: payload, routing, policy and where it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct NewJob {
    /// Its id, known before the commit so the caller can return it.
    pub id: JobId,
    /// [`Job::KIND`].
    pub kind: String,
    /// [`Job::QUEUE`].
    pub queue: Queue,
    /// The serialized payload.
    pub payload: serde_json::Value,
    /// [`Job::policy`].
    pub policy: RetryPolicy,
    /// [`Job::dedupe_key`].
    pub dedupe_key: Option<String>,
    /// Not before this instant (`None` = now).
    pub run_at: Option<DateTime<Utc>>,
    /// The user who caused it: the one who may read its state.
    pub owner: Option<UserId>,
    /// The request that enqueued it, for log correlation.
    pub request_id: Option<String>,
    /// The W3C `traceparent` of that request, continued by the job's span.
    pub trace_parent: Option<String>,
}

/// A payload did not serialize.
#[derive(Debug, thiserror::Error)]
#[error("job payload `{kind}` does not serialize: {source}")]
pub struct PayloadError {
    /// The job kind.
    pub kind: &'static str,
    /// Why.
    #[source]
    pub source: serde_json::Error,
}

impl From<PayloadError> for RepoError {
    fn from(error: PayloadError) -> Self {
        RepoError::Other(Box::new(error))
    }
}

impl NewJob {
    /// A job for `payload`, with its kind's queue, policy and dedupe key.
    pub fn of<J: Job>(payload: &J) -> Result<Self, PayloadError> {
        Ok(Self {
            id: JobId::new(),
            kind: J::KIND.to_owned(),
            queue: J::QUEUE,
            payload: serde_json::to_value(payload).map_err(|source| PayloadError {
                kind: J::KIND,
                source,
            })?,
            policy: J::policy(),
            dedupe_key: payload.dedupe_key(),
            run_at: None,
            owner: None,
            request_id: None,
            trace_parent: None,
        })
    }

    /// Records who caused the job and the request it came from.
    #[must_use]
    pub fn caused_by(mut self, owner: Option<UserId>, origin: &Origin) -> Self {
        self.owner = owner;
        self.request_id.clone_from(&origin.request_id);
        self.trace_parent.clone_from(&origin.trace_parent);
        self
    }

    /// Delays the job until `at`.
    #[must_use]
    pub fn run_at(mut self, at: DateTime<Utc>) -> Self {
        self.run_at = Some(at);
        self
    }
}

/// Enqueues jobs as part of a use case's transaction.
#[async_trait]
pub trait JobQueue: Send + Sync + std::fmt::Debug {
    /// Adds `job` to the transaction: it becomes visible to workers when `tx` commits, and
    /// disappears with it on rollback.
    async fn enqueue(&self, tx: &mut dyn Transaction, job: NewJob) -> Result<JobId, RepoError>;
}

/// Why a job attempt failed, as its handler sees it.
#[derive(Debug, thiserror::Error)]
pub enum JobFailure {
    /// Worth another attempt (a timeout, an unreachable server).
    #[error("{0}")]
    Transient(String),
    /// No attempt can succeed (a malformed payload, a rejected address): dead at once.
    #[error("{0}")]
    Permanent(String),
}

impl JobFailure {
    /// A transient failure from any error.
    pub fn transient(error: impl std::fmt::Display) -> Self {
        JobFailure::Transient(error.to_string())
    }

    /// A permanent failure from any error.
    pub fn permanent(error: impl std::fmt::Display) -> Self {
        JobFailure::Permanent(error.to_string())
    }
}

/// A job queue that keeps jobs in memory, for unit tests: committed or not is not modelled,
/// so tests assert on what a use case asked for.
#[derive(Debug, Default)]
pub struct InMemoryJobQueue {
    jobs: std::sync::Mutex<Vec<NewJob>>,
}

impl InMemoryJobQueue {
    /// Jobs enqueued so far.
    pub fn enqueued(&self) -> Vec<NewJob> {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Payloads of kind `J` enqueued so far.
    pub fn payloads<J: Job>(&self) -> Vec<J> {
        self.enqueued()
            .into_iter()
            .filter(|job| job.kind == J::KIND)
            .filter_map(|job| serde_json::from_value(job.payload).ok())
            .collect()
    }
}

#[async_trait]
impl JobQueue for InMemoryJobQueue {
    async fn enqueue(&self, _tx: &mut dyn Transaction, job: NewJob) -> Result<JobId, RepoError> {
        let id = job.id;
        self.jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(job);
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_jitter_stays_in_the_upper_half() {
        let policy = RetryPolicy {
            max_attempts: 10,
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(10),
            timeout: Duration::from_secs(1),
        };
        let delays: Vec<u64> = (1..=6).map(|a| policy.delay_after(a).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 10, 10]);
        assert_eq!(policy.delay_after(u32::MAX), Duration::from_secs(10));
        assert_eq!(
            policy.jittered_delay_after(3, 0.0),
            Duration::from_secs(2),
            "lowest pick is half the delay"
        );
        assert!(policy.jittered_delay_after(3, 0.999) < Duration::from_secs(4));
        assert!(policy.jittered_delay_after(3, 0.5) > Duration::from_secs(2));
    }

    #[test]
    fn queues_round_trip_their_names() {
        for queue in Queue::ALL {
            assert_eq!(Queue::parse(queue.as_str()), Some(queue));
        }
        assert_eq!(Queue::parse("urgent"), None);
    }

    #[derive(Serialize, Deserialize)]
    struct Ping {
        n: u32,
    }

    impl Job for Ping {
        const KIND: &'static str = "test.ping";
        const QUEUE: Queue = Queue::Low;
        fn dedupe_key(&self) -> Option<String> {
            Some(format!("ping:{}", self.n))
        }
    }

    #[test]
    fn a_new_job_carries_kind_queue_key_and_origin() {
        let origin = Origin {
            request_id: Some("req-1".into()),
            trace_parent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
            ..Origin::default()
        };
        let owner = UserId::new();
        let job = NewJob::of(&Ping { n: 7 })
            .unwrap()
            .caused_by(Some(owner), &origin);
        assert_eq!(job.kind, "test.ping");
        assert_eq!(job.queue, Queue::Low);
        assert_eq!(job.dedupe_key.as_deref(), Some("ping:7"));
        assert_eq!(job.owner, Some(owner));
        assert_eq!(job.request_id.as_deref(), Some("req-1"));
        assert_eq!(job.payload, serde_json::json!({"n": 7}));
    }
}
