//! The job runner: one apalis worker per queue (on the app's database, or in Redis),
//! dispatching each job to the handler registered for its kind, with Keel's retry policy,
//! metrics and tracing.
//!
//! Retries are the storage's, not in-process sleeps: a failed attempt pushes the job's
//! `run_at` out by its backoff and releases it, so a retry waiting ten minutes holds no
//! concurrency slot and survives a worker restart.

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use apalis::layers::WorkerBuilderExt;
use apalis_core::backend::ext::BackendExt;
use apalis_core::backend::ext::poll_strategy::Strategy;
use apalis_core::error::{AbortError, BoxDynError};
use apalis_core::task::Task;
use apalis_core::worker::builder::WorkerBuilder;
use chrono::Utc;
use futures_util::FutureExt;
use keel_config::JobsSettings;
use keel_infrastructure::jobs::{JobEnvelope, JobStore, job_id, meta};
use keel_kernel::UserId;
use keel_kernel::jobs::{Job, JobFailure, JobId, Queue, RetryPolicy};
use keel_telemetry::names::{
    JOB_DURATION_SECONDS, JOBS_OLDEST_AGE_SECONDS, JOBS_QUEUED, JOBS_TOTAL,
};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::TaskError;
use crate::wakeups::Wakeups;

/// What a handler knows about the attempt it runs.
#[derive(Clone, Debug)]
pub struct JobContext {
    /// The job.
    pub id: JobId,
    /// Its kind.
    pub kind: String,
    /// Its queue.
    pub queue: Queue,
    /// This attempt (1-based).
    pub attempt: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// Who caused it.
    pub owner: Option<UserId>,
    /// The request that enqueued it.
    pub request_id: Option<String>,
    /// Its dedupe key.
    pub dedupe_key: Option<String>,
}

/// A boxed handler future.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<(), JobFailure>> + Send>>;
type Handler = Arc<dyn Fn(serde_json::Value, JobContext) -> HandlerFuture + Send + Sync>;

/// Job handlers by kind.
#[derive(Clone, Default)]
pub struct Handlers {
    by_kind: HashMap<&'static str, Handler>,
}

impl std::fmt::Debug for Handlers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.kinds()).finish()
    }
}

impl Handlers {
    /// Registers the handler of job type `J`.
    #[must_use]
    pub fn register<J, F, Fut>(mut self, handler: F) -> Self
    where
        J: Job,
        F: Fn(J, JobContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), JobFailure>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let erased: Handler = Arc::new(move |payload, context| {
            let handler = Arc::clone(&handler);
            Box::pin(async move {
                let job: J = serde_json::from_value(payload).map_err(|e| {
                    JobFailure::permanent(format!("payload is not a valid `{}`: {e}", J::KIND))
                })?;
                handler(job, context).await
            })
        });
        self.by_kind.insert(J::KIND, erased);
        self
    }

    /// The registered kinds, sorted.
    pub fn kinds(&self) -> Vec<&'static str> {
        let mut kinds: Vec<_> = self.by_kind.keys().copied().collect();
        kinds.sort_unstable();
        kinds
    }

    /// Runs one attempt with its policy's timeout; panics count as transient failures.
    pub async fn run(
        &self,
        payload: serde_json::Value,
        context: JobContext,
        timeout: Duration,
    ) -> Result<(), JobFailure> {
        let Some(handler) = self.by_kind.get(context.kind.as_str()) else {
            return Err(JobFailure::permanent(format!(
                "no handler for job kind `{}` in this worker",
                context.kind
            )));
        };
        let attempt = AssertUnwindSafe(handler(payload, context)).catch_unwind();
        match tokio::time::timeout(timeout, attempt).await {
            Err(_) => Err(JobFailure::Transient(format!(
                "timed out after {}",
                humantime(timeout)
            ))),
            Ok(Err(panic)) => Err(JobFailure::Transient(format!(
                "handler panicked: {}",
                panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "(no message)".to_owned())
            ))),
            Ok(Ok(result)) => result,
        }
    }
}

fn humantime(duration: Duration) -> String {
    format!("{:.1}s", duration.as_secs_f64())
}

/// The tower service apalis calls for each claimed job.
#[derive(Clone)]
struct Dispatch {
    handlers: Arc<Handlers>,
    store: JobStore,
    queue: Queue,
}

impl tower_service::Service<Task<JobEnvelope>> for Dispatch {
    type Response = ();
    type Error = BoxDynError;
    type Future = Pin<Box<dyn Future<Output = Result<(), BoxDynError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, task: Task<JobEnvelope>) -> Self::Future {
        let handlers = Arc::clone(&self.handlers);
        let store = self.store.clone();
        let queue = self.queue;
        let ctx = task.ctx().clone();
        let envelope = task.args;
        Box::pin(async move {
            let metadata = ctx.metadata();
            let policy: RetryPolicy = metadata
                .get(meta::POLICY)
                .and_then(|p| serde_json::from_str(p).ok())
                .unwrap_or_default();
            let task_id = ctx.task_id().map(ToString::to_string).unwrap_or_default();
            let id = job_id(&task_id).unwrap_or_else(|| JobId::from_uuid(Default::default()));
            let mut number = u32::try_from(ctx.attempt()).unwrap_or(u32::MAX).max(1);
            if let Some(redis) = store.redis() {
                // apalis-redis counts an attempt when it is acknowledged, so one cut short by a
                // killed worker would not count and a job that kills its worker would run
                // forever. Keel counts starts itself.
                match redis.record_start(queue, id).await {
                    Ok(starts) => number = number.max(starts),
                    Err(error) => {
                        tracing::warn!(%error, job_id = %id, "could not count the job's start");
                    }
                }
            }
            let context = JobContext {
                id,
                kind: envelope.kind.clone(),
                queue,
                attempt: number,
                max_attempts: policy.max_attempts,
                owner: metadata
                    .get(meta::OWNER)
                    .and_then(|o| o.parse().ok())
                    .map(UserId::from_uuid),
                request_id: metadata.get(meta::REQUEST_ID).map(str::to_owned),
                dedupe_key: metadata.get(meta::DEDUPE_KEY).map(str::to_owned),
            };
            let span = tracing::info_span!(
                "job",
                otel.name = %format!("job {}", context.kind),
                otel.kind = "consumer",
                job_id = %context.id,
                job = %context.kind,
                queue = %queue,
                attempt = context.attempt,
                request_id = context.request_id.as_deref().unwrap_or_default(),
                trace_id = tracing::field::Empty,
                span_id = tracing::field::Empty,
            );
            // The job's span is a child of the span that enqueued it, across processes (the
            // W3C traceparent stored with the job).
            keel_telemetry::traces::continue_trace(&span, metadata.get(meta::TRACE_PARENT), None);
            if let Some((trace_id, span_id)) = keel_telemetry::traces::ids(&span) {
                span.record("trace_id", trace_id.as_str());
                span.record("span_id", span_id.as_str());
            }
            attempt(handlers, store, envelope.payload, context, policy)
                .instrument(span)
                .await
        })
    }
}

async fn attempt(
    handlers: Arc<Handlers>,
    store: JobStore,
    payload: serde_json::Value,
    context: JobContext,
    policy: RetryPolicy,
) -> Result<(), BoxDynError> {
    let started = Instant::now();
    let labels = [
        ("queue", context.queue.as_str().to_owned()),
        ("job", context.kind.clone()),
    ];
    tracing::debug!("job started");
    let result = handlers.run(payload, context.clone(), policy.timeout).await;
    let elapsed = started.elapsed();
    metrics::histogram!(JOB_DURATION_SECONDS, &labels).record(elapsed.as_secs_f64());
    let outcome = |name: &'static str| {
        metrics::counter!(JOBS_TOTAL, "queue" => context.queue.as_str(), "job" => context.kind.clone(), "outcome" => name)
            .increment(1);
    };
    match result {
        Ok(()) => {
            outcome("succeeded");
            tracing::info!(elapsed_ms = elapsed.as_millis() as u64, "job succeeded");
            Ok(())
        }
        Err(JobFailure::Permanent(error)) => {
            outcome("dead");
            tracing::error!(%error, "job failed permanently; it is dead");
            Err(Box::new(AbortError::new(error)))
        }
        Err(JobFailure::Transient(error)) if context.attempt >= policy.max_attempts => {
            outcome("dead");
            tracing::error!(%error, max_attempts = policy.max_attempts, "job failed its last attempt; it is dead");
            if store.redis().is_some() {
                // apalis-redis retries up to its own fixed limit; an abort makes it dead now.
                return Err(Box::new(AbortError::new(error)));
            }
            Err(error.into())
        }
        Err(JobFailure::Transient(error)) => {
            let delay = policy.jittered_delay_after(context.attempt, fastrand::f64());
            let at = Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default();
            if store.redis().is_some() {
                // apalis-redis schedules the retry when it acknowledges the failure, after this
                // returns: the backoff is applied once that happened.
                let (id, queue) = (context.id, context.queue);
                tokio::spawn(
                    async move {
                        if let Err(defer_error) = store.defer(queue, id, at).await {
                            tracing::warn!(error = %defer_error, "could not schedule the retry's backoff");
                        }
                    }
                    .in_current_span(),
                );
            } else if let Err(defer_error) = store.defer(context.queue, context.id, at).await {
                // The job is still retried, only sooner.
                tracing::warn!(error = %defer_error, "could not schedule the retry's backoff");
            }
            outcome("failed");
            tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "job attempt failed; will retry");
            Err(error.into())
        }
    }
}

/// A unique name for one queue worker of this process (apalis refuses a name a live worker
/// holds, and a restarted process must not wait for its old name to expire).
fn worker_name(queue: Queue) -> String {
    format!(
        "keel-{}-{}-{}",
        queue,
        std::process::id(),
        ulid::Ulid::generate()
    )
}

/// Runs `queue`'s apalis worker until `token` is cancelled: it stops claiming jobs, and the
/// supervisor's deadline bounds how long running ones may finish. It fetches every
/// `jobs.poll_interval`, and on PostgreSQL also as soon as `wakeups` says the queue has work.
pub async fn run_queue(
    store: JobStore,
    handlers: Arc<Handlers>,
    queue: Queue,
    settings: JobsSettings,
    wakeups: Wakeups,
    token: CancellationToken,
) -> Result<(), TaskError> {
    let concurrency = match queue {
        Queue::High => settings.queues.high.concurrency,
        Queue::Default => settings.queues.default.concurrency,
        Queue::Low => settings.queues.low.concurrency,
    };
    let dispatch = Dispatch {
        handlers,
        store: store.clone(),
        queue,
    };
    let name = worker_name(queue);
    let stop = async move {
        token.cancelled().await;
        Ok::<(), std::io::Error>(())
    };
    let missed = settings.missed_heartbeats as usize;
    let result = if let Some(redis) = store.redis() {
        let config = redis
            .config(queue)
            .batch_size(concurrency)
            .heartbeat_interval(settings.heartbeat_interval)
            .missed_heartbeats(missed);
        let wake = Strategy::new()
            .stream(wakeups.queue(queue))
            .interval(settings.poll_interval);
        let backend = apalis_redis::RedisStorage::<JobEnvelope>::new(redis.connection())
            .with_config(config)
            .poll_with_strategy(wake);
        WorkerBuilder::new(name)
            .backend(backend)
            .concurrency(concurrency)
            .build(dispatch)
            .run_until(stop)
            .await
    } else if let Some(pool) = store.sqlite_pool() {
        let config = apalis_sqlite::Config::default()
            .queue(queue.as_str())
            .batch_size(concurrency)
            .heartbeat_interval(settings.heartbeat_interval)
            .missed_heartbeats(missed);
        let backend = apalis_sqlite::SqliteStorage::<JobEnvelope>::new(pool)
            .with_config(config)
            .poll_with_interval(settings.poll_interval);
        WorkerBuilder::new(name)
            .backend(backend)
            .concurrency(concurrency)
            .build(dispatch)
            .run_until(stop)
            .await
    } else if let Some(pool) = store.postgres_pool() {
        let config = apalis_postgres::Config::default()
            .queue(queue.as_str())
            .batch_size(concurrency)
            .heartbeat_interval(settings.heartbeat_interval)
            .missed_heartbeats(missed);
        let wake = Strategy::new()
            .stream(wakeups.queue(queue))
            .interval(settings.poll_interval);
        let backend = apalis_postgres::PostgresStorage::<JobEnvelope>::new(pool)
            .with_config(config)
            .poll_with_strategy(wake);
        WorkerBuilder::new(name)
            .backend(backend)
            .concurrency(concurrency)
            .build(dispatch)
            .run_until(stop)
            .await
    } else {
        return Err(TaskError("the job store has no pool".to_owned()));
    };
    result.map_err(|e| TaskError(format!("{queue} queue worker: {e}")))
}

/// Relays the outbox every `poll_interval`, and on PostgreSQL as soon as a job is committed to
/// it, until `token` is cancelled.
pub async fn run_relay(
    store: JobStore,
    wakeups: Wakeups,
    poll_interval: Duration,
    token: CancellationToken,
) -> Result<(), TaskError> {
    loop {
        let moved = relay_outbox(&store).await?;
        // Redis announces nothing for jobs due later (each relayed job is): this process's
        // queues look at once, other processes' at their next poll.
        if moved > 0 && store.redis().is_some() {
            wakeups.wake_queues();
        }
        tokio::select! {
            biased;
            () = token.cancelled() => return Ok(()),
            () = wakeups.outbox_committed() => {}
            () = tokio::time::sleep(poll_interval) => {}
        }
    }
}

/// Moves committed jobs from the outbox into their queues until none are left.
pub async fn relay_outbox(store: &JobStore) -> Result<usize, TaskError> {
    const BATCH: u32 = 200;
    let mut moved = 0;
    loop {
        let n = store
            .relay(BATCH)
            .await
            .map_err(|e| TaskError::from_error(&e))?;
        moved += n;
        if n < BATCH as usize {
            if moved > 0 {
                tracing::debug!(moved, "jobs moved from the outbox into their queues");
            }
            return Ok(moved);
        }
    }
}

/// Publishes `jobs_queued{queue}` and `jobs_oldest_age_seconds{queue}`.
pub async fn sample_queue_depth(store: &JobStore) -> Result<(), TaskError> {
    for (queue, count) in store
        .queued_counts()
        .await
        .map_err(|e| TaskError::from_error(&e))?
    {
        metrics::gauge!(JOBS_QUEUED, "queue" => queue.as_str()).set(count as f64);
    }
    for (queue, age) in store
        .oldest_waiting()
        .await
        .map_err(|e| TaskError::from_error(&e))?
    {
        metrics::gauge!(JOBS_OLDEST_AGE_SECONDS, "queue" => queue.as_str()).set(age as f64);
    }
    Ok(())
}
