//! The outbox: use cases enqueue into `job_outbox` inside their own transaction, and the relay
//! moves committed rows into apalis.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use keel_jobs::{JobRecord, JobState};
use keel_kernel::jobs::{JobId, JobQueue, NewJob, Queue, RetryPolicy};
use keel_kernel::{RepoError, Transaction, UserId};
use sea_orm::{ActiveModelTrait, Set};
// Dynamic SQL here is assembled from fixed fragments and integers; every value is bound.
use sqlx::Row;

use super::*;
use crate::error::repo_err;
use crate::unit_of_work::sea_txn;

/// The sea-orm entity for `job_outbox`.
pub mod entity {
    use sea_orm::entity::prelude::*;

    /// A committed job not yet moved into the queue.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "job_outbox")]
    pub struct Model {
        /// The job id as a ULID.
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        /// Queue name.
        pub queue: String,
        /// Job kind.
        pub kind: String,
        /// Payload JSON.
        #[sea_orm(column_type = "Text")]
        pub payload: String,
        /// Retry policy JSON.
        #[sea_orm(column_type = "Text")]
        pub policy: String,
        /// Side-effect dedupe key.
        pub dedupe_key: Option<String>,
        /// Owner (UUID text).
        pub owner_id: Option<String>,
        /// Originating request id.
        pub request_id: Option<String>,
        /// Originating W3C traceparent.
        pub trace_parent: Option<String>,
        /// Not before (unix seconds).
        pub run_at: i64,
        /// Enqueued at (unix milliseconds).
        pub created_at: i64,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// Enqueues into `job_outbox` inside the caller's sea-orm transaction.
#[derive(Debug, Clone, Default)]
pub struct SeaJobQueue;

#[async_trait]
impl JobQueue for SeaJobQueue {
    async fn enqueue(&self, tx: &mut dyn Transaction, job: NewJob) -> Result<JobId, RepoError> {
        let txn = sea_txn(tx)?;
        let now = Utc::now();
        let row = entity::ActiveModel {
            id: Set(task_id(job.id)),
            queue: Set(job.queue.as_str().to_owned()),
            kind: Set(job.kind.clone()),
            payload: Set(job.payload.to_string()),
            policy: Set(serde_json::to_string(&job.policy).map_err(other)?),
            dedupe_key: Set(job.dedupe_key.clone()),
            owner_id: Set(job.owner.map(|o| o.to_string())),
            request_id: Set(job.request_id.clone()),
            trace_parent: Set(job.trace_parent.clone()),
            run_at: Set(job.run_at.unwrap_or(now).timestamp()),
            created_at: Set(now.timestamp_millis()),
        };
        row.insert(txn).await.map_err(repo_err)?;
        Ok(job.id)
    }
}

impl JobStore {
    /// Moves up to `limit` outbox rows into their queues, atomically; returns how many moved.
    pub async fn relay(&self, limit: u32) -> Result<usize, RepoError> {
        match &self.pool {
            Pool::Sqlite(pool) => {
                let mut tx = pool.begin().await.map_err(sqlx_err)?;
                // The DELETE comes first so the transaction holds the write lock from its first
                // statement: two relays never read the same rows.
                let rows = sqlx::query(
                    "DELETE FROM job_outbox WHERE id IN \
                     (SELECT id FROM job_outbox ORDER BY id LIMIT ?) RETURNING *",
                )
                .bind(i64::from(limit))
                .fetch_all(&mut *tx)
                .await
                .map_err(sqlx_err)?;
                let moved = rows.len();
                let groups = group_tasks(rows.iter().map(outbox_row).collect())?;
                if let Some(redis) = &self.redis {
                    // Pushed before the rows' deletion commits: a crash in between pushes them
                    // again, and a push of an id Redis already holds changes nothing.
                    push_to_redis(redis, groups).await?;
                } else {
                    for (queue, tasks) in groups {
                        apalis_sqlite::queries::push_tasks(&mut *tx, &queue, &tasks)
                            .await
                            .map_err(other)?;
                    }
                }
                tx.commit().await.map_err(sqlx_err)?;
                Ok(moved)
            }
            Pool::Postgres(pool) => {
                let mut tx = pool.begin().await.map_err(sqlx_err)?;
                let rows = sqlx::query(
                    "DELETE FROM job_outbox WHERE id IN \
                     (SELECT id FROM job_outbox ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED) \
                     RETURNING *",
                )
                .bind(i64::from(limit))
                .fetch_all(&mut *tx)
                .await
                .map_err(sqlx_err)?;
                let moved = rows.len();
                let groups = group_tasks(rows.iter().map(outbox_row).collect())?;
                if let Some(redis) = &self.redis {
                    push_to_redis(redis, groups).await?;
                } else {
                    for (queue, tasks) in groups {
                        apalis_postgres::queries::push_tasks(&mut *tx, &queue, tasks)
                            .await
                            .map_err(other)?;
                    }
                }
                tx.commit().await.map_err(sqlx_err)?;
                Ok(moved)
            }
        }
    }

    /// Pushes a job straight into its queue; `false` when its idempotency key was taken (the
    /// same schedule tick, pushed by another worker replica).
    pub async fn push(&self, direct: DirectJob) -> Result<bool, RepoError> {
        let queue = direct.job.queue.as_str().to_owned();
        let mut task = to_task(&direct.job)?;
        if let Some(key) = &direct.idempotency_key {
            let mut builder = task.into_builder();
            builder = builder.idempotency_key(key);
            task = builder.build();
        }
        if let Some(redis) = &self.redis {
            // apalis-redis claims the key with SETNX: a taken key pushes nothing.
            return Ok(redis.push(direct.job.queue, &[task]).await? == 1);
        }
        let exists = |error: &RepoError| {
            let text = format!("{error:?}");
            text.contains("UNIQUE") || text.contains("unique") || text.contains("23505")
        };
        match &self.pool {
            Pool::Sqlite(pool) => {
                let mut conn = pool.acquire().await.map_err(sqlx_err)?;
                let before = self.exists(&task_id(direct.job.id)).await?;
                apalis_sqlite::queries::push_tasks(&mut *conn, &queue, &[task])
                    .await
                    .map_err(other)?;
                // SQLite's insert ignores a taken key (`ON CONFLICT DO NOTHING`).
                Ok(!before && self.exists(&task_id(direct.job.id)).await?)
            }
            Pool::Postgres(pool) => {
                let mut conn = pool.acquire().await.map_err(sqlx_err)?;
                match apalis_postgres::queries::push_tasks(&mut *conn, &queue, vec![task])
                    .await
                    .map_err(other)
                {
                    Ok(()) => Ok(true),
                    Err(error) if exists(&error) => Ok(false),
                    Err(error) => Err(error),
                }
            }
        }
    }

    /// Moves a running job's next attempt to `at` (its retry backoff). The worker's
    /// acknowledgement that follows marks it failed; the queue skips it until then. On Redis
    /// the acknowledgement schedules the job itself, so this waits for it and then moves it.
    pub async fn defer(&self, queue: Queue, id: JobId, at: DateTime<Utc>) -> Result<(), RepoError> {
        if let Some(redis) = &self.redis {
            return redis.defer(queue, id, at).await;
        }
        let sql = match self.pool {
            Pool::Sqlite(_) => "UPDATE Jobs SET run_at = ? WHERE id = ?",
            Pool::Postgres(_) => "UPDATE apalis.jobs SET run_at = to_timestamp($1) WHERE id = $2",
        };
        self.execute(sql, &[Bind::Int(at.timestamp()), Bind::Text(task_id(id))])
            .await
            .map(|_| ())
    }

    pub(super) async fn exists(&self, id: &str) -> Result<bool, RepoError> {
        Ok(self.fetch(id).await?.is_some())
    }
}

async fn push_to_redis(
    redis: &RedisQueues,
    groups: Vec<(String, Vec<CompactTask>)>,
) -> Result<(), RepoError> {
    for (queue, tasks) in groups {
        redis
            .push(Queue::parse(&queue).unwrap_or_default(), &tasks)
            .await?;
    }
    Ok(())
}

/// A decoded outbox row.
pub(super) struct OutboxRow {
    id: String,
    queue: String,
    kind: String,
    payload: String,
    policy: String,
    dedupe_key: Option<String>,
    owner_id: Option<String>,
    request_id: Option<String>,
    trace_parent: Option<String>,
    run_at: i64,
}

impl OutboxRow {
    pub(super) fn record(&self) -> JobRecord {
        let policy: RetryPolicy = serde_json::from_str(&self.policy).unwrap_or_default();
        JobRecord {
            id: job_id(&self.id).unwrap_or_else(|| JobId::from_uuid(uuid::Uuid::nil())),
            kind: self.kind.clone(),
            queue: Queue::parse(&self.queue).unwrap_or_default(),
            state: JobState::Enqueued,
            attempts: 0,
            max_attempts: policy.max_attempts,
            last_error: None,
            owner: self
                .owner_id
                .as_deref()
                .and_then(|o| o.parse().ok())
                .map(UserId::from_uuid),
            request_id: self.request_id.clone(),
            created_at: created_at(&self.id),
            run_at: Utc.timestamp_opt(self.run_at, 0).single(),
            finished_at: None,
        }
    }
}

pub(super) fn outbox_row<R>(row: &R) -> Result<OutboxRow, RepoError>
where
    R: Row,
    for<'c> &'c str: sqlx::ColumnIndex<R>,
    String: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Option<String>: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(OutboxRow {
        id: row.try_get("id").map_err(sqlx_err)?,
        queue: row.try_get("queue").map_err(sqlx_err)?,
        kind: row.try_get("kind").map_err(sqlx_err)?,
        payload: row.try_get("payload").map_err(sqlx_err)?,
        policy: row.try_get("policy").map_err(sqlx_err)?,
        dedupe_key: row.try_get("dedupe_key").map_err(sqlx_err)?,
        owner_id: row.try_get("owner_id").map_err(sqlx_err)?,
        request_id: row.try_get("request_id").map_err(sqlx_err)?,
        trace_parent: row.try_get("trace_parent").map_err(sqlx_err)?,
        run_at: row.try_get("run_at").map_err(sqlx_err)?,
    })
}

/// An apalis task (compact JSON arguments, Keel metadata) for a job.
fn to_task(job: &NewJob) -> Result<CompactTask, RepoError> {
    let envelope = JobEnvelope {
        kind: job.kind.clone(),
        payload: job.payload.clone(),
    };
    let mut metadata = HashMap::new();
    metadata.insert(meta::KIND.to_owned(), job.kind.clone());
    metadata.insert(
        meta::POLICY.to_owned(),
        serde_json::to_string(&job.policy).map_err(other)?,
    );
    let optional = [
        (meta::OWNER, job.owner.map(|o| o.to_string())),
        (meta::REQUEST_ID, job.request_id.clone()),
        (meta::TRACE_PARENT, job.trace_parent.clone()),
        (meta::DEDUPE_KEY, job.dedupe_key.clone()),
    ];
    for (key, value) in optional {
        if let Some(value) = value {
            metadata.insert(key.to_owned(), value);
        }
    }
    let run_at = job.run_at.unwrap_or_else(Utc::now).timestamp();
    Ok(
        apalis_core::task::builder::TaskBuilder::new(serde_json::to_vec(&envelope).map_err(other)?)
            .task_id(apalis_core::task::task_id::TaskId::from_string(task_id(
                job.id,
            )))
            .max_attempts(job.policy.max_attempts.max(1) as usize)
            .run_at_timestamp(u64::try_from(run_at).unwrap_or_default())
            .with_metadata(apalis_core::task::metadata::MetadataStore::from_map(
                metadata,
            ))
            .build(),
    )
}

fn group_tasks(
    rows: Vec<Result<OutboxRow, RepoError>>,
) -> Result<Vec<(String, Vec<CompactTask>)>, RepoError> {
    let mut groups: Vec<(String, Vec<CompactTask>)> = Vec::new();
    for row in rows {
        let row = row?;
        let job = NewJob {
            id: job_id(&row.id)
                .ok_or_else(|| RepoError::Other(format!("bad outbox id {}", row.id).into()))?,
            kind: row.kind.clone(),
            queue: Queue::parse(&row.queue).unwrap_or_default(),
            payload: serde_json::from_str(&row.payload).map_err(other)?,
            policy: serde_json::from_str(&row.policy).map_err(other)?,
            dedupe_key: row.dedupe_key.clone(),
            run_at: Utc.timestamp_opt(row.run_at, 0).single(),
            owner: row
                .owner_id
                .as_deref()
                .and_then(|o| o.parse().ok())
                .map(UserId::from_uuid),
            request_id: row.request_id.clone(),
            trace_parent: row.trace_parent.clone(),
        };
        let queue = job.queue.as_str().to_owned();
        let task = to_task(&job)?;
        match groups.iter_mut().find(|(q, _)| *q == queue) {
            Some((_, tasks)) => tasks.push(task),
            None => groups.push((queue, vec![task])),
        }
    }
    Ok(groups)
}
