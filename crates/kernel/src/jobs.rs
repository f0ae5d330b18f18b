//! Background jobs as domain vocabulary: payload types, their retry policy, and the port a use
//! case enqueues through. The queue itself (apalis) lives in infrastructure and the worker.
//!
//! A job is enqueued *inside* the use case's transaction, so a rolled-back change enqueues
//! nothing and a committed one cannot lose its job.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::auth::{Caller, Origin, Permission, PermissionDef};
use crate::error::DomainError;
use crate::id::UserId;
use crate::repo::{RepoError, Transaction, UnitOfWork};

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

/// Where a job is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Committed, not yet handed to the queue (no worker has picked it up).
    Enqueued,
    /// Waiting in its queue (or for its `run_at`).
    Pending,
    /// Claimed by a worker (running, or waiting out a retry backoff).
    Running,
    /// An attempt failed; it will be tried again.
    Retrying,
    /// Done.
    Succeeded,
    /// Out of attempts, or failed permanently: kept for inspection until purged or retried.
    Dead,
}

impl JobState {
    /// Every state.
    pub const ALL: [JobState; 6] = [
        JobState::Enqueued,
        JobState::Pending,
        JobState::Running,
        JobState::Retrying,
        JobState::Succeeded,
        JobState::Dead,
    ];

    /// The state's name.
    pub const fn as_str(self) -> &'static str {
        match self {
            JobState::Enqueued => "enqueued",
            JobState::Pending => "pending",
            JobState::Running => "running",
            JobState::Retrying => "retrying",
            JobState::Succeeded => "succeeded",
            JobState::Dead => "dead",
        }
    }

    /// Parses a state name.
    pub fn parse(name: &str) -> Option<JobState> {
        JobState::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// Whether the job will not run again unless retried by hand.
    pub const fn is_finished(self) -> bool {
        matches!(self, JobState::Succeeded | JobState::Dead)
    }
}

/// What operators and the job's owner see of a job.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct JobRecord {
    /// Its id.
    pub id: JobId,
    /// [`Job::KIND`].
    pub kind: String,
    /// Its queue.
    pub queue: Queue,
    /// Its state.
    pub state: JobState,
    /// Attempts made so far.
    pub attempts: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// The last attempt's error, if it failed.
    pub last_error: Option<String>,
    /// Who caused it.
    pub owner: Option<UserId>,
    /// The request that enqueued it.
    pub request_id: Option<String>,
    /// When it was enqueued.
    pub created_at: DateTime<Utc>,
    /// When it may run (next).
    pub run_at: Option<DateTime<Utc>>,
    /// When it finished.
    pub finished_at: Option<DateTime<Utc>>,
}

/// Which jobs to list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JobFilter {
    /// Only this state.
    pub state: Option<JobState>,
    /// Only this queue.
    pub queue: Option<Queue>,
    /// Only this kind.
    pub kind: Option<String>,
    /// Page size (1..=100).
    pub limit: u32,
    /// Rows to skip.
    pub offset: u32,
}

/// Reads and manages stored jobs (operations, not enqueueing).
#[async_trait]
pub trait JobRepository: Send + Sync + std::fmt::Debug {
    /// One job, wherever it is (outbox or queue).
    async fn get(&self, id: JobId) -> Result<Option<JobRecord>, RepoError>;
    /// A page of jobs, newest first, and the total matching.
    async fn list(&self, filter: &JobFilter) -> Result<(Vec<JobRecord>, u64), RepoError>;
    /// Puts a dead job back in its queue with fresh attempts; `false` when it is not dead.
    async fn retry(&self, id: JobId) -> Result<bool, RepoError>;
    /// Deletes a finished job; `false` when it is absent or not finished.
    async fn delete(&self, id: JobId) -> Result<bool, RepoError>;
    /// Deletes finished jobs older than `before`; returns how many.
    async fn purge_finished(&self, before: DateTime<Utc>) -> Result<u64, RepoError>;
}

/// Read every job, not only one's own.
pub const JOBS_READ: Permission = Permission::from_static("jobs:read");
/// Retry and delete jobs.
pub const JOBS_MANAGE: Permission = Permission::from_static("jobs:manage");

/// The jobs permissions, for the RBAC catalogue.
pub static PERMISSIONS: &[PermissionDef] = &[
    PermissionDef::new(JOBS_READ, "List and read every background job"),
    PermissionDef::new(JOBS_MANAGE, "Retry and delete background jobs"),
];

/// Job operations as a caller may use them: owners read their own jobs, operators with
/// `jobs:read` read all, `jobs:manage` retries and deletes.
#[derive(Debug)]
pub struct JobsAccess<'a> {
    repository: &'a dyn JobRepository,
    caller: &'a Caller,
}

impl<'a> JobsAccess<'a> {
    /// The operations for `caller`.
    pub fn new(repository: &'a dyn JobRepository, caller: &'a Caller) -> Self {
        Self { repository, caller }
    }

    fn not_found() -> DomainError {
        DomainError::NotFound { resource: "job" }
    }

    fn require(&self, permission: &Permission) -> Result<(), DomainError> {
        self.caller.actor.require(permission)
    }

    /// One job: the caller's own, or any with `jobs:read`; others are 404, never 403.
    pub async fn get(&self, id: JobId) -> Result<JobRecord, DomainError> {
        if self.caller.actor.user_id().is_none() && !self.caller.actor.can(&JOBS_READ) {
            return Err(DomainError::Unauthenticated);
        }
        self.caller.actor.require_verified()?;
        let job = self.repository.get(id).await?.ok_or_else(Self::not_found)?;
        let own = job.owner.is_some() && job.owner == self.caller.actor.user_id();
        if own || self.caller.actor.can(&JOBS_READ) {
            Ok(job)
        } else {
            Err(Self::not_found())
        }
    }

    /// A page of jobs (needs `jobs:read`).
    pub async fn list(&self, filter: &JobFilter) -> Result<(Vec<JobRecord>, u64), DomainError> {
        self.require(&JOBS_READ)?;
        Ok(self.repository.list(filter).await?)
    }

    /// Puts a dead job back in its queue (needs `jobs:manage`); 409 when it is not dead.
    pub async fn retry(&self, id: JobId) -> Result<JobRecord, DomainError> {
        self.require(&JOBS_MANAGE)?;
        let job = self.repository.get(id).await?.ok_or_else(Self::not_found)?;
        if job.state != JobState::Dead || !self.repository.retry(id).await? {
            return Err(DomainError::Conflict {
                code: "job.not_dead",
                message: format!(
                    "only dead jobs can be retried; this one is {}",
                    job.state.as_str()
                ),
                field: None,
            });
        }
        self.repository.get(id).await?.ok_or_else(Self::not_found)
    }

    /// Deletes a finished job (needs `jobs:manage`); 409 while it may still run.
    pub async fn delete(&self, id: JobId) -> Result<(), DomainError> {
        self.require(&JOBS_MANAGE)?;
        let job = self.repository.get(id).await?.ok_or_else(Self::not_found)?;
        if !job.state.is_finished() || !self.repository.delete(id).await? {
            return Err(DomainError::Conflict {
                code: "job.not_finished",
                message: format!(
                    "only succeeded or dead jobs can be deleted; this one is {}",
                    job.state.as_str()
                ),
                field: None,
            });
        }
        Ok(())
    }
}

/// A diagnostic job operators enqueue to check the pipeline end to end (and to rehearse
/// failure handling): it sleeps, then fails its first `fail_attempts` attempts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probe {
    /// Attempts that fail before one succeeds.
    pub fail_attempts: u32,
    /// Fail permanently (dead at once) instead.
    pub permanent: bool,
    /// How long each attempt works before its outcome.
    pub sleep_ms: u64,
}

impl Job for Probe {
    const KIND: &'static str = "jobs.probe";

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 3,
            backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
            timeout: Duration::from_secs(60),
        }
    }
}

impl Probe {
    /// The outcome of attempt `attempt` (1-based).
    pub fn outcome(&self, attempt: u32) -> Result<(), JobFailure> {
        if self.permanent {
            Err(JobFailure::Permanent(
                "probe asked to fail permanently".to_owned(),
            ))
        } else if attempt <= self.fail_attempts {
            Err(JobFailure::Transient(format!(
                "probe failing attempt {attempt} of the first {}",
                self.fail_attempts
            )))
        } else {
            Ok(())
        }
    }
}

/// Deletes finished jobs older than the retention (`jobs.retention`): the `jobs.purge`
/// schedule's job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurgeFinishedJobs {
    /// Jobs finished before this instant go.
    pub finished_before: DateTime<Utc>,
}

impl Job for PurgeFinishedJobs {
    const KIND: &'static str = "jobs.purge";
    const QUEUE: Queue = Queue::Low;
}

/// Enqueues a [`Probe`] on `queue` with `max_attempts` (needs `jobs:manage`).
pub async fn enqueue_probe(
    caller: &Caller,
    unit_of_work: &dyn UnitOfWork,
    jobs: &dyn JobQueue,
    probe: &Probe,
    queue: Queue,
    max_attempts: u32,
) -> Result<JobId, DomainError> {
    caller.actor.require(&JOBS_MANAGE)?;
    let mut errors = crate::validation::FieldErrors::default();
    if !(1..=20).contains(&max_attempts) {
        errors.add("max_attempts", "range", "must be between 1 and 20");
    }
    if probe.sleep_ms > 60_000 {
        errors.add("sleep_ms", "range", "must be at most 60000");
    }
    if probe.fail_attempts > 20 {
        errors.add("fail_attempts", "range", "must be at most 20");
    }
    errors.into_result()?;
    let mut job = NewJob::of(probe)
        .map_err(RepoError::from)?
        .caused_by(caller.actor.user_id(), &caller.origin);
    job.queue = queue;
    job.policy.max_attempts = max_attempts;
    let mut tx = unit_of_work.begin().await?;
    let id = jobs.enqueue(tx.as_mut(), job).await?;
    tx.commit().await?;
    Ok(id)
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
