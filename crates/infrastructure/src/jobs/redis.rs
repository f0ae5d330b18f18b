//! `jobs.backend = "redis"`: the queues live in apalis' Redis storage, under
//! `<redis.key_prefix>:jobs:<queue>`. The outbox stays in the database, so a use case still
//! enqueues inside its own transaction; the relay moves committed rows into Redis.
//!
//! The layout (sets, sorted sets, one hash per job) is apalis-redis'; Keel reads it through
//! [`apalis_redis::Config`]'s key names and changes it only with the small atomic scripts
//! below, each mirroring a state change apalis itself makes.

use std::collections::HashMap;
use std::time::Duration;

use apalis_redis::Config;
use chrono::{DateTime, Utc};
use keel_jobs::JobState;
use keel_kernel::RepoError;
use keel_kernel::jobs::{JobId, Queue};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::admin::TaskRow;
use super::{CompactTask, task_id};

/// How long a command may take; jobs are durable, so a slow Redis is waited for a little
/// longer than the request path's cache would.
const TIMEOUT: Duration = Duration::from_secs(5);
/// How long startup waits for Redis to answer before refusing to start.
const STARTUP_WAIT: Duration = Duration::from_secs(10);
/// Ids read per pipelined round trip when listing.
const CHUNK: usize = 500;
/// Keel's count of a job's starts, kept in its metadata hash.
const STARTS: &str = "keel.starts";

/// The Redis side of the job store: one connection (multiplexed, reconnecting) and the key
/// prefix every queue lives under.
#[derive(Clone)]
pub struct RedisQueues {
    connection: ConnectionManager,
    prefix: String,
    /// How long a schedule tick's idempotency key is kept.
    idempotency_ttl: Duration,
}

impl std::fmt::Debug for RedisQueues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisQueues")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

fn redis_err(error: redis::RedisError) -> RepoError {
    if error.is_io_error()
        || error.is_timeout()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
    {
        RepoError::Unavailable(Box::new(error))
    } else {
        RepoError::Other(Box::new(error))
    }
}

fn apalis_err(error: apalis_redis::Error) -> RepoError {
    match error {
        apalis_redis::Error::Database(error) => redis_err(error),
        other => RepoError::Other(Box::new(other)),
    }
}

/// Moves a job that failed a retryable attempt to its backoff, once apalis has scheduled it.
const DEFER: &str = r"
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
  return 1
end
return 0
";

/// A finished job (succeeded, or dead) by its status and attempts, as `state_of` reads them.
const FINISHED: &str = r"
local function finished(meta)
  local status = redis.call('HGET', meta, 'status')
  if status == 'Done' or status == 'Killed' then return true end
  if status == 'Failed' then
    local attempts = tonumber(redis.call('HGET', meta, 'attempts') or '0') or 0
    local max = tonumber(redis.call('HGET', meta, 'max_attempts') or '0') or 0
    return attempts >= max
  end
  return false
end
";

/// Puts a dead job back in its queue with its attempts reset (KEYS: meta, dead set,
/// scheduled set; ARGV: id, now).
const RETRY: &str = r"
local status = redis.call('HGET', KEYS[1], 'status')
if not status or status == 'Done' or not finished(KEYS[1]) then return 0 end
redis.call('SREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[1], 'done_at', 'locked_by', 'locked_at', 'keel.starts')
redis.call('HSET', KEYS[1], 'status', 'Pending', 'attempts', 0, 'result', '')
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
return 1
";

/// Deletes finished jobs (KEYS: meta prefix, data hash, done set, dead set; ARGV: finished
/// before (unix seconds, 0 for any), ids...).
const DELETE: &str = r"
local deleted = 0
local before = tonumber(ARGV[1])
for i = 2, #ARGV do
  local id = ARGV[i]
  local meta = KEYS[1] .. ':' .. id
  local done_at = tonumber(redis.call('HGET', meta, 'done_at') or '0') or 0
  if finished(meta) and (before == 0 or done_at < before) then
    redis.call('SREM', KEYS[3], id)
    redis.call('SREM', KEYS[4], id)
    redis.call('HDEL', KEYS[2], id)
    redis.call('DEL', meta)
    deleted = deleted + 1
  end
end
return deleted
";

impl RedisQueues {
    /// Connects to `url`, waiting up to 10 s for Redis to answer; queues live under
    /// `<prefix>:jobs:`.
    pub async fn connect(
        url: &str,
        prefix: &str,
        idempotency_ttl: Duration,
    ) -> Result<Self, RepoError> {
        let client = redis::Client::open(url).map_err(redis_err)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(TIMEOUT))
            .set_response_timeout(Some(TIMEOUT))
            .set_number_of_retries(2);
        let queues = Self {
            connection: ConnectionManager::new_lazy_with_config(client, config)
                .map_err(redis_err)?,
            prefix: prefix.to_owned(),
            idempotency_ttl,
        };
        let started = std::time::Instant::now();
        loop {
            match queues.ping().await {
                Ok(()) => return Ok(queues),
                Err(error) if started.elapsed() >= STARTUP_WAIT => return Err(error),
                Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }

    /// One round trip.
    pub async fn ping(&self) -> Result<(), RepoError> {
        let mut connection = self.connection.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut connection)
            .await
            .map(drop)
            .map_err(redis_err)
    }

    /// The connection the queue workers share.
    pub fn connection(&self) -> ConnectionManager {
        self.connection.clone()
    }

    /// apalis' configuration of `queue` (its key names); the worker adds its own settings.
    pub fn config(&self, queue: Queue) -> Config {
        Config::default()
            .queue(format!("{}:jobs:{}", self.prefix, queue.as_str()))
            .idempotency_ttl(Some(self.idempotency_ttl))
    }

    /// Pushes tasks into `queue` (a task whose id is already there is left as it is).
    pub(super) async fn push(
        &self,
        queue: Queue,
        tasks: &[CompactTask],
    ) -> Result<usize, RepoError> {
        let mut connection = self.connection.clone();
        let (now, later) =
            apalis_redis::queries::push_tasks(&mut connection, &self.config(queue), tasks)
                .await
                .map_err(apalis_err)?;
        Ok((now + later) as usize)
    }

    /// Moves job `id`'s next attempt to `at` once apalis has put it back in `queue`'s schedule
    /// after a failed attempt. apalis acknowledges a result after the handler returns, so this
    /// waits (up to two seconds; apalis' own delay is at least one) for that to happen.
    pub(super) async fn defer(
        &self,
        queue: Queue,
        id: JobId,
        at: DateTime<Utc>,
    ) -> Result<(), RepoError> {
        let config = self.config(queue);
        let script = redis::Script::new(DEFER);
        let mut connection = self.connection.clone();
        for _ in 0..100 {
            let moved: i64 = script
                .key(config.scheduled_jobs_set())
                .arg(task_id(id))
                .arg(at.timestamp())
                .invoke_async(&mut connection)
                .await
                .map_err(redis_err)?;
            if moved == 1 {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(RepoError::Other(
            "the failed attempt was not acknowledged within 2 s".into(),
        ))
    }

    /// Counts a start of job `id` (in its metadata, `keel.starts`) and returns the count.
    pub async fn record_start(&self, queue: Queue, id: JobId) -> Result<u32, RepoError> {
        let mut connection = self.connection.clone();
        let starts: i64 = redis::cmd("HINCRBY")
            .arg(format!(
                "{}:{}",
                self.config(queue).job_meta_hash(),
                task_id(id)
            ))
            .arg(STARTS)
            .arg(1)
            .query_async(&mut connection)
            .await
            .map_err(redis_err)?;
        Ok(u32::try_from(starts).unwrap_or(u32::MAX))
    }

    /// The job `id`, in whichever queue holds it.
    pub(super) async fn fetch(&self, id: &str) -> Result<Option<TaskRow>, RepoError> {
        for queue in Queue::ALL {
            if let Some(row) = self.rows(queue, &[id.to_owned()]).await?.pop().flatten() {
                return Ok(Some(row));
            }
        }
        Ok(None)
    }

    /// Every job `queue` holds (succeeded and dead ones until purged).
    pub(super) async fn all(&self, queue: Queue) -> Result<Vec<TaskRow>, RepoError> {
        let mut connection = self.connection.clone();
        let ids: Vec<String> = redis::cmd("HKEYS")
            .arg(self.config(queue).job_data_hash())
            .query_async(&mut connection)
            .await
            .map_err(redis_err)?;
        let mut rows = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(CHUNK) {
            rows.extend(self.rows(queue, chunk).await?.into_iter().flatten());
        }
        Ok(rows)
    }

    /// The rows of `ids` in `queue` (`None` where a job is not there), in one round trip.
    async fn rows(&self, queue: Queue, ids: &[String]) -> Result<Vec<Option<TaskRow>>, RepoError> {
        let config = self.config(queue);
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.cmd("HGETALL")
                .arg(format!("{}:{id}", config.job_meta_hash()))
                .cmd("ZSCORE")
                .arg(config.scheduled_jobs_set())
                .arg(id);
        }
        let mut connection = self.connection.clone();
        let replies: Vec<(HashMap<String, String>, Option<f64>)> =
            pipe.query_async(&mut connection).await.map_err(redis_err)?;
        Ok(ids
            .iter()
            .zip(replies)
            .map(|(id, (mut fields, scheduled))| {
                let status = fields.remove("status")?;
                let number = |value: Option<String>| {
                    value
                        .and_then(|v| v.parse::<i64>().ok())
                        .unwrap_or_default()
                };
                // An attempt cut short by a killed worker counts too.
                let attempts = number(fields.remove("attempts")).max(number(fields.remove(STARTS)));
                let max_attempts = number(fields.remove("max_attempts"));
                let done_at = fields.remove("done_at").and_then(|v| v.parse().ok());
                let last_result = fields.remove("result").filter(|r| !r.is_empty());
                // What is left is the task's metadata (Keel's `keel.*` keys among apalis' own).
                Some(TaskRow {
                    id: id.clone(),
                    queue: queue.as_str().to_owned(),
                    status,
                    attempts,
                    max_attempts,
                    // Scores are whole seconds.
                    run_at: scheduled.map(|s| s as i64),
                    done_at,
                    last_result,
                    metadata: fields,
                })
            })
            .collect())
    }

    /// Puts dead job `id` back in its queue; `false` when it is not dead (or not there).
    pub(super) async fn retry(&self, id: &str) -> Result<bool, RepoError> {
        let script = redis::Script::new(&format!("{FINISHED}{RETRY}"));
        let mut connection = self.connection.clone();
        for queue in Queue::ALL {
            let config = self.config(queue);
            let retried: i64 = script
                .key(format!("{}:{id}", config.job_meta_hash()))
                .key(config.dead_jobs_set())
                .key(config.scheduled_jobs_set())
                .arg(id)
                .arg(Utc::now().timestamp())
                .invoke_async(&mut connection)
                .await
                .map_err(redis_err)?;
            if retried == 1 {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Deletes those of `ids` in `queue` that finished (before `before`, when given).
    pub(super) async fn delete(
        &self,
        queue: Queue,
        ids: &[String],
        before: Option<DateTime<Utc>>,
    ) -> Result<u64, RepoError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let config = self.config(queue);
        let script = redis::Script::new(&format!("{FINISHED}{DELETE}"));
        let mut invocation = script.prepare_invoke();
        invocation
            .key(config.job_meta_hash())
            .key(config.job_data_hash())
            .key(config.done_jobs_set())
            .key(config.dead_jobs_set())
            .arg(before.map_or(0, |b| b.timestamp()));
        for id in ids {
            invocation.arg(id);
        }
        let mut connection = self.connection.clone();
        invocation
            .invoke_async::<u64>(&mut connection)
            .await
            .map_err(redis_err)
    }

    /// Deletes finished job `id`, in whichever queue holds it.
    pub(super) async fn delete_one(&self, id: &str) -> Result<bool, RepoError> {
        for queue in Queue::ALL {
            if self.delete(queue, &[id.to_owned()], None).await? == 1 {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Deletes jobs that finished before `before`, in every queue.
    pub(super) async fn purge_finished(&self, before: DateTime<Utc>) -> Result<u64, RepoError> {
        let mut purged = 0;
        for queue in Queue::ALL {
            let config = self.config(queue);
            let mut connection = self.connection.clone();
            let (done, dead): (Vec<String>, Vec<String>) = redis::pipe()
                .cmd("SMEMBERS")
                .arg(config.done_jobs_set())
                .cmd("SMEMBERS")
                .arg(config.dead_jobs_set())
                .query_async(&mut connection)
                .await
                .map_err(redis_err)?;
            for chunk in done.chunks(CHUNK).chain(dead.chunks(CHUNK)) {
                purged += self.delete(queue, chunk, Some(before)).await?;
            }
        }
        Ok(purged)
    }

    /// Jobs waiting per queue: scheduled (new, or retrying after a backoff) or due and not yet
    /// claimed.
    pub(super) async fn queued_counts(&self) -> Result<Vec<(Queue, i64)>, RepoError> {
        let mut pipe = redis::pipe();
        for queue in Queue::ALL {
            let config = self.config(queue);
            pipe.cmd("ZCARD")
                .arg(config.scheduled_jobs_set())
                .cmd("LLEN")
                .arg(config.active_jobs_list());
        }
        let mut connection = self.connection.clone();
        let counts: Vec<(i64, i64)> = pipe.query_async(&mut connection).await.map_err(redis_err)?;
        Ok(Queue::ALL
            .into_iter()
            .zip(counts)
            .map(|(queue, (scheduled, due))| (queue, scheduled + due))
            .collect())
    }

    /// Per queue, the time (unix seconds) since which its oldest due job has been waiting.
    pub(super) async fn oldest_due(&self) -> Result<Vec<(Queue, Option<i64>)>, RepoError> {
        let now = Utc::now().timestamp();
        let mut oldest = Vec::new();
        for queue in Queue::ALL {
            let config = self.config(queue);
            let mut connection = self.connection.clone();
            let (scheduled, head): (Vec<(String, f64)>, Option<String>) = redis::pipe()
                .cmd("ZRANGEBYSCORE")
                .arg(config.scheduled_jobs_set())
                .arg("-inf")
                .arg(now)
                .arg("WITHSCORES")
                .arg("LIMIT")
                .arg(0)
                .arg(1)
                .cmd("LINDEX")
                .arg(config.active_jobs_list())
                .arg(0)
                .query_async(&mut connection)
                .await
                .map_err(redis_err)?;
            let mut since = scheduled.first().map(|(_, score)| *score as i64);
            // A job moved to the due list no longer has its time: its last attempt's end, or
            // its creation, bounds how long it has waited.
            if let Some(id) = head {
                let row = self.rows(queue, std::slice::from_ref(&id)).await?.pop();
                let created = super::created_at(&id).timestamp();
                let waited_from = row
                    .flatten()
                    .and_then(|row| row.done_at)
                    .map_or(created, |done| done.max(created));
                since = Some(since.map_or(waited_from, |s| s.min(waited_from)));
            }
            oldest.push((queue, since));
        }
        Ok(oldest)
    }
}

#[async_trait::async_trait]
impl keel_kernel::health::HealthCheck for RedisQueues {
    fn name(&self) -> &'static str {
        "job_queues"
    }

    async fn check(&self) -> Result<(), keel_kernel::error::BoxError> {
        self.ping()
            .await
            .map_err(|e| Box::new(e) as keel_kernel::error::BoxError)
    }
}

/// The jobs of `rows` the selection asks for (state and kind; the queues were chosen before).
pub(super) fn selected(
    state: Option<&Vec<JobState>>,
    kinds: Option<&Vec<String>>,
    row: &TaskRow,
) -> bool {
    state.is_none_or(|states| states.contains(&super::admin::state_of(row)))
        && kinds.is_none_or(|kinds| {
            row.metadata
                .get(super::meta::KIND)
                .is_some_and(|kind| kinds.contains(kind))
        })
}
