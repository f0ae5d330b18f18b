//! Jobs on the app's own database: the transactional outbox use cases write to, and the apalis
//! queue the worker runs (SQLite `Jobs`, or PostgreSQL `apalis.jobs`).
//!
//! Why an outbox: a use case's writes go through a sea-orm transaction, and apalis pushes
//! through its own sqlx connection, so a job cannot be pushed inside the use case's
//! transaction directly. The use case inserts a `job_outbox` row instead; the worker moves
//! rows into apalis with apalis' own `push_tasks`, deleting them in the same database
//! transaction. A rollback leaves no row, a crash after commit leaves the row for the next
//! relay, and a relay never moves a row twice.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use keel_kernel::jobs::{
    JobFilter, JobId, JobQueue, JobRecord, JobRepository, JobState, NewJob, Queue, RetryPolicy,
};
use keel_kernel::{RepoError, Transaction, UserId};
use sea_orm::{ActiveModelTrait, DatabaseBackend, DatabaseConnection, Set};
use serde::{Deserialize, Serialize};
// Dynamic SQL here is assembled from fixed fragments and integers; every value is bound.
use sqlx::Row;
use ulid::Ulid;

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

/// What apalis stores as a job's arguments: the kind (to find its handler) and the payload.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobEnvelope {
    /// [`keel_kernel::Job::KIND`].
    pub kind: String,
    /// The serialized payload.
    pub payload: serde_json::Value,
}

/// Metadata keys Keel keeps on each apalis job.
pub mod meta {
    /// Job kind (also in the envelope; here so SQL can filter on it).
    pub const KIND: &str = "keel.kind";
    /// Owner's user id.
    pub const OWNER: &str = "keel.owner";
    /// Originating request id.
    pub const REQUEST_ID: &str = "keel.request_id";
    /// Originating W3C traceparent.
    pub const TRACE_PARENT: &str = "keel.trace_parent";
    /// Retry policy (JSON).
    pub const POLICY: &str = "keel.policy";
    /// Side-effect dedupe key.
    pub const DEDUPE_KEY: &str = "keel.dedupe_key";
}

/// The apalis id of a Keel job id: the same 128 bits, as a ULID (both sort by time).
pub fn task_id(id: JobId) -> String {
    Ulid::from(id.as_uuid().as_u128()).to_string()
}

/// The Keel id of an apalis task id.
pub fn job_id(task_id: &str) -> Option<JobId> {
    Ulid::from_string(task_id)
        .ok()
        .map(|u| JobId::from_uuid(uuid::Uuid::from_u128(u.0)))
}

fn created_at(id: &str) -> DateTime<Utc> {
    Ulid::from_string(id)
        .ok()
        .and_then(|u| {
            Utc.timestamp_millis_opt(i64::try_from(u.timestamp_ms()).ok()?)
                .single()
        })
        .unwrap_or_default()
}

fn other(error: impl std::error::Error + Send + Sync + 'static) -> RepoError {
    RepoError::Other(Box::new(error))
}

fn sqlx_err(error: sqlx::Error) -> RepoError {
    match error {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
            RepoError::Unavailable(Box::new(error))
        }
        other => RepoError::Other(Box::new(other)),
    }
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

/// A job to push straight into the queue (schedules), outside any use case.
#[derive(Debug, Clone)]
pub struct DirectJob {
    /// The job.
    pub job: NewJob,
    /// apalis' per-queue idempotency key: a second push with the same key is a no-op.
    pub idempotency_key: Option<String>,
}

#[derive(Debug, Clone)]
enum Pool {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

/// The job queue's storage: apalis' tables plus Keel's outbox, on one database.
#[derive(Debug, Clone)]
pub struct JobStore {
    pool: Pool,
}

/// One apalis task as Keel reads it back.
struct TaskRow {
    id: String,
    queue: String,
    status: String,
    attempts: i64,
    max_attempts: i64,
    run_at: Option<i64>,
    done_at: Option<i64>,
    last_result: Option<String>,
    metadata: HashMap<String, String>,
}

const SQLITE_FINISHED: &str =
    "(status IN ('Done', 'Killed') OR (status = 'Failed' AND attempts >= max_attempts))";

impl JobStore {
    /// The store on the app's connection pool (the same database the outbox lives in).
    pub fn new(db: &DatabaseConnection) -> Self {
        let pool = match db.get_database_backend() {
            DatabaseBackend::Postgres => Pool::Postgres(db.get_postgres_connection_pool().clone()),
            _ => Pool::Sqlite(db.get_sqlite_connection_pool().clone()),
        };
        Self { pool }
    }

    /// Creates or upgrades apalis' tables (its own sqlx migrations). Safe to run from several
    /// processes at once: a runner that loses the race retries and finds them applied.
    pub async fn migrate(&self) -> Result<(), RepoError> {
        let mut last = None;
        for attempt in 0..5u64 {
            let result = match &self.pool {
                // Only the migrations: apalis' `setup` would also switch the shared pool to
                // `synchronous = OFF`.
                Pool::Sqlite(pool) => apalis_sqlite::SqliteStorage::migrations().run(pool).await,
                Pool::Postgres(pool) => {
                    apalis_postgres::PostgresStorage::<()>::migrations()
                        .run(pool)
                        .await
                }
            };
            match result {
                Ok(()) => return Ok(()),
                Err(error) => {
                    tracing::debug!(%error, attempt, "job queue migration lost a race; retrying");
                    last = Some(error);
                    tokio::time::sleep(std::time::Duration::from_millis(200 * (attempt + 1))).await;
                }
            }
        }
        Err(last.map_or_else(|| RepoError::Other("migration failed".into()), other))
    }

    /// Drops apalis' tables (for `migrate fresh`).
    pub async fn drop_all(&self) -> Result<(), RepoError> {
        match &self.pool {
            Pool::Sqlite(pool) => {
                for statement in [
                    "DROP TABLE IF EXISTS Jobs",
                    "DROP TABLE IF EXISTS Workers",
                    "DROP TABLE IF EXISTS _sqlx_migrations",
                ] {
                    sqlx::query(statement)
                        .execute(pool)
                        .await
                        .map_err(sqlx_err)?;
                }
            }
            Pool::Postgres(pool) => {
                for statement in [
                    "DROP SCHEMA IF EXISTS apalis CASCADE",
                    "DROP TABLE IF EXISTS _sqlx_migrations",
                ] {
                    sqlx::query(statement)
                        .execute(pool)
                        .await
                        .map_err(sqlx_err)?;
                }
            }
        }
        Ok(())
    }

    /// The SQLite pool, when the store is on SQLite.
    pub fn sqlite_pool(&self) -> Option<&sqlx::SqlitePool> {
        match &self.pool {
            Pool::Sqlite(pool) => Some(pool),
            Pool::Postgres(_) => None,
        }
    }

    /// The PostgreSQL pool, when the store is on PostgreSQL.
    pub fn postgres_pool(&self) -> Option<&sqlx::PgPool> {
        match &self.pool {
            Pool::Postgres(pool) => Some(pool),
            Pool::Sqlite(_) => None,
        }
    }

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
                for (queue, tasks) in group_tasks(rows.iter().map(outbox_row).collect())? {
                    apalis_sqlite::queries::push_tasks(&mut *tx, &queue, &tasks)
                        .await
                        .map_err(other)?;
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
                for (queue, tasks) in group_tasks(rows.iter().map(outbox_row).collect())? {
                    apalis_postgres::queries::push_tasks(&mut *tx, &queue, tasks)
                        .await
                        .map_err(other)?;
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
    /// acknowledgement that follows marks it failed; the queue skips it until then.
    pub async fn defer(&self, id: JobId, at: DateTime<Utc>) -> Result<(), RepoError> {
        let sql = match self.pool {
            Pool::Sqlite(_) => "UPDATE Jobs SET run_at = ? WHERE id = ?",
            Pool::Postgres(_) => "UPDATE apalis.jobs SET run_at = to_timestamp($1) WHERE id = $2",
        };
        self.execute(sql, &[Bind::Int(at.timestamp()), Bind::Text(task_id(id))])
            .await
            .map(|_| ())
    }

    async fn exists(&self, id: &str) -> Result<bool, RepoError> {
        Ok(self.fetch(id).await?.is_some())
    }

    /// Jobs waiting per queue (pending or retrying, in the queue or still in the outbox).
    pub async fn queued_counts(&self) -> Result<Vec<(Queue, i64)>, RepoError> {
        let (queue_sql, outbox_sql) = match &self.pool {
            Pool::Sqlite(_) => (
                "SELECT job_type, COUNT(*) FROM Jobs WHERE status IN ('Pending', 'Queued') \
                 OR (status = 'Failed' AND attempts < max_attempts) GROUP BY job_type",
                "SELECT queue, COUNT(*) FROM job_outbox GROUP BY queue",
            ),
            Pool::Postgres(_) => (
                "SELECT job_type, COUNT(*) FROM apalis.jobs WHERE status IN ('Pending', 'Queued') \
                 OR (status = 'Failed' AND attempts < max_attempts) GROUP BY job_type",
                "SELECT queue, COUNT(*) FROM job_outbox GROUP BY queue",
            ),
        };
        let mut counts: HashMap<Queue, i64> = Queue::ALL.into_iter().map(|q| (q, 0)).collect();
        for sql in [queue_sql, outbox_sql] {
            let rows: Vec<(String, i64)> = match &self.pool {
                Pool::Sqlite(pool) => sqlx::query_as(sql).fetch_all(pool).await,
                Pool::Postgres(pool) => sqlx::query_as(sql).fetch_all(pool).await,
            }
            .map_err(sqlx_err)?;
            for (name, count) in rows {
                if let Some(queue) = Queue::parse(&name) {
                    *counts.entry(queue).or_default() += count;
                }
            }
        }
        Ok(Queue::ALL.into_iter().map(|q| (q, counts[&q])).collect())
    }

    /// Per queue, how long (seconds) the oldest job that could run has been waiting: in the
    /// queue since its `run_at`, or in the outbox since it was committed. Queues with nothing
    /// waiting report 0.
    pub async fn oldest_waiting(&self) -> Result<Vec<(Queue, i64)>, RepoError> {
        let now = Utc::now();
        let queue_rows: Vec<(String, i64)> = match &self.pool {
            Pool::Sqlite(pool) => {
                sqlx::query_as(
                    "SELECT job_type, MIN(run_at) FROM Jobs \
                     WHERE status IN ('Pending', 'Queued') AND run_at <= ? GROUP BY job_type",
                )
                .bind(now.timestamp())
                .fetch_all(pool)
                .await
            }
            Pool::Postgres(pool) => {
                sqlx::query_as(
                    "SELECT job_type, EXTRACT(EPOCH FROM MIN(run_at))::bigint FROM apalis.jobs \
                     WHERE status IN ('Pending', 'Queued') AND run_at <= now() GROUP BY job_type",
                )
                .fetch_all(pool)
                .await
            }
        }
        .map_err(sqlx_err)?;
        let outbox_sql = "SELECT queue, MIN(created_at) FROM job_outbox GROUP BY queue";
        let outbox_rows: Vec<(String, i64)> = match &self.pool {
            Pool::Sqlite(pool) => sqlx::query_as(outbox_sql).fetch_all(pool).await,
            Pool::Postgres(pool) => sqlx::query_as(outbox_sql).fetch_all(pool).await,
        }
        .map_err(sqlx_err)?;
        let mut ages: HashMap<Queue, i64> = Queue::ALL.into_iter().map(|q| (q, 0)).collect();
        let waiting = queue_rows
            .into_iter()
            .map(|(name, since)| (name, now.timestamp() - since))
            .chain(
                outbox_rows
                    .into_iter()
                    .map(|(name, millis)| (name, (now.timestamp_millis() - millis) / 1000)),
            );
        for (name, age) in waiting {
            if let Some(queue) = Queue::parse(&name) {
                let oldest = ages.entry(queue).or_default();
                *oldest = (*oldest).max(age.max(0));
            }
        }
        Ok(Queue::ALL.into_iter().map(|q| (q, ages[&q])).collect())
    }

    async fn fetch(&self, id: &str) -> Result<Option<TaskRow>, RepoError> {
        let rows = self
            .select(&format!("WHERE id = {}", self.param(1)), &[id.into()], None)
            .await?;
        Ok(rows.into_iter().next())
    }

    fn param(&self, n: usize) -> String {
        match self.pool {
            Pool::Sqlite(_) => "?".to_owned(),
            Pool::Postgres(_) => format!("${n}"),
        }
    }

    async fn select(
        &self,
        filter: &str,
        binds: &[Bind],
        page: Option<(u32, u32)>,
    ) -> Result<Vec<TaskRow>, RepoError> {
        let paging = page.map_or(String::new(), |(limit, offset)| {
            format!(" ORDER BY id DESC LIMIT {limit} OFFSET {offset}")
        });
        match &self.pool {
            Pool::Sqlite(pool) => {
                let sql = format!(
                    "SELECT id, job_type, status, attempts, max_attempts, run_at, done_at, \
                     last_result, metadata FROM Jobs {filter}{paging}"
                );
                let query = bind_all!(sqlx::query(sqlx::AssertSqlSafe(sql.clone())), binds);
                let rows = query.fetch_all(pool).await.map_err(sqlx_err)?;
                rows.iter().map(task_row).collect()
            }
            Pool::Postgres(pool) => {
                let sql = format!(
                    "SELECT id, job_type, status, attempts::bigint AS attempts, \
                     max_attempts::bigint AS max_attempts, \
                     EXTRACT(EPOCH FROM run_at)::bigint AS run_at, \
                     EXTRACT(EPOCH FROM done_at)::bigint AS done_at, \
                     last_result::text AS last_result, \
                     hstore_to_json(metadata)::text AS metadata FROM apalis.jobs {filter}{paging}"
                );
                let query = bind_all!(sqlx::query(sqlx::AssertSqlSafe(sql.clone())), binds);
                let rows = query.fetch_all(pool).await.map_err(sqlx_err)?;
                rows.iter().map(task_row).collect()
            }
        }
    }

    async fn count(&self, filter: &str, binds: &[Bind], table: &str) -> Result<u64, RepoError> {
        let sql = format!("SELECT COUNT(*) FROM {table} {filter}");
        let count: i64 = match &self.pool {
            Pool::Sqlite(pool) => {
                let query = bind_all!(sqlx::query_scalar(sqlx::AssertSqlSafe(sql.clone())), binds);
                query.fetch_one(pool).await
            }
            Pool::Postgres(pool) => {
                let query = bind_all!(sqlx::query_scalar(sqlx::AssertSqlSafe(sql.clone())), binds);
                query.fetch_one(pool).await
            }
        }
        .map_err(sqlx_err)?;
        Ok(u64::try_from(count).unwrap_or_default())
    }

    async fn execute(&self, sql: &str, binds: &[Bind]) -> Result<u64, RepoError> {
        match &self.pool {
            Pool::Sqlite(pool) => {
                let query = bind_all!(sqlx::query(sqlx::AssertSqlSafe(sql.to_owned())), binds);
                query.execute(pool).await.map(|r| r.rows_affected())
            }
            Pool::Postgres(pool) => {
                let query = bind_all!(sqlx::query(sqlx::AssertSqlSafe(sql.to_owned())), binds);
                query.execute(pool).await.map(|r| r.rows_affected())
            }
        }
        .map_err(sqlx_err)
    }

    fn jobs_table(&self) -> &'static str {
        match self.pool {
            Pool::Sqlite(_) => "Jobs",
            Pool::Postgres(_) => "apalis.jobs",
        }
    }

    /// The WHERE clause and binds selecting `filter` in apalis' table.
    fn queue_filter(&self, filter: &JobFilter) -> (String, Vec<Bind>) {
        let mut clauses = Vec::new();
        let mut binds = Vec::new();
        if let Some(state) = filter.state {
            clauses.push(
                match state {
                    JobState::Enqueued => "1 = 0",
                    JobState::Pending => "status IN ('Pending', 'Queued')",
                    JobState::Running => "status = 'Running'",
                    JobState::Retrying => "(status = 'Failed' AND attempts < max_attempts)",
                    JobState::Succeeded => "status = 'Done'",
                    JobState::Dead => {
                        "(status = 'Killed' OR (status = 'Failed' AND attempts >= max_attempts))"
                    }
                }
                .to_owned(),
            );
        }
        if let Some(queue) = filter.queue {
            binds.push(Bind::Text(queue.as_str().to_owned()));
            clauses.push(format!("job_type = {}", self.param(binds.len())));
        }
        if let Some(kind) = &filter.kind {
            binds.push(Bind::Text(kind.clone()));
            let expr = match self.pool {
                Pool::Sqlite(_) => "json_extract(metadata, '$.\"keel.kind\"')",
                Pool::Postgres(_) => "(metadata -> 'keel.kind')",
            };
            clauses.push(format!("{expr} = {}", self.param(binds.len())));
        }
        let clause = if clauses.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", clauses.join(" AND "))
        };
        (clause, binds)
    }

    fn outbox_filter(&self, filter: &JobFilter) -> Option<(String, Vec<Bind>)> {
        if filter.state.is_some_and(|s| s != JobState::Enqueued) {
            return None;
        }
        let mut clauses = Vec::new();
        let mut binds = Vec::new();
        if let Some(queue) = filter.queue {
            binds.push(Bind::Text(queue.as_str().to_owned()));
            clauses.push(format!("queue = {}", self.param(binds.len())));
        }
        if let Some(kind) = &filter.kind {
            binds.push(Bind::Text(kind.clone()));
            clauses.push(format!("kind = {}", self.param(binds.len())));
        }
        let clause = if clauses.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", clauses.join(" AND "))
        };
        Some((clause, binds))
    }

    async fn outbox(
        &self,
        filter: &str,
        binds: &[Bind],
        page: Option<(u32, u32)>,
    ) -> Result<Vec<JobRecord>, RepoError> {
        let paging = page.map_or(String::new(), |(limit, offset)| {
            format!(" ORDER BY id DESC LIMIT {limit} OFFSET {offset}")
        });
        let sql = format!("SELECT * FROM job_outbox {filter}{paging}");
        let rows: Vec<OutboxRow> = match &self.pool {
            Pool::Sqlite(pool) => {
                let query = bind_all!(sqlx::query(sqlx::AssertSqlSafe(sql.clone())), binds);
                query
                    .fetch_all(pool)
                    .await
                    .map_err(sqlx_err)?
                    .iter()
                    .map(outbox_row)
                    .collect::<Result<_, _>>()?
            }
            Pool::Postgres(pool) => {
                let query = bind_all!(sqlx::query(sqlx::AssertSqlSafe(sql.clone())), binds);
                query
                    .fetch_all(pool)
                    .await
                    .map_err(sqlx_err)?
                    .iter()
                    .map(outbox_row)
                    .collect::<Result<_, _>>()?
            }
        };
        Ok(rows.into_iter().map(|r| r.record()).collect())
    }
}

/// Binds every value of `$binds` to `$query`, in order.
macro_rules! bind_all {
    ($query:expr, $binds:expr) => {{
        let mut query = $query;
        for bind in $binds {
            query = match bind {
                Bind::Text(v) => query.bind(v.clone()),
                Bind::Int(v) => query.bind(*v),
            };
        }
        query
    }};
}
use bind_all;

fn task_row<R>(row: &R) -> Result<TaskRow, RepoError>
where
    R: Row,
    for<'c> &'c str: sqlx::ColumnIndex<R>,
    String: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Option<String>: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Option<i64>: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let metadata: Option<String> = row.try_get("metadata").map_err(sqlx_err)?;
    Ok(TaskRow {
        id: row.try_get("id").map_err(sqlx_err)?,
        queue: row.try_get("job_type").map_err(sqlx_err)?,
        status: row.try_get("status").map_err(sqlx_err)?,
        attempts: row.try_get("attempts").map_err(sqlx_err)?,
        max_attempts: row.try_get("max_attempts").map_err(sqlx_err)?,
        run_at: row.try_get("run_at").map_err(sqlx_err)?,
        done_at: row.try_get("done_at").map_err(sqlx_err)?,
        last_result: row.try_get("last_result").map_err(sqlx_err)?,
        metadata: metadata
            .and_then(|m| serde_json::from_str(&m).ok())
            .unwrap_or_default(),
    })
}

#[derive(Debug, Clone)]
enum Bind {
    Text(String),
    #[allow(dead_code)]
    Int(i64),
}

impl From<&str> for Bind {
    fn from(value: &str) -> Self {
        Bind::Text(value.to_owned())
    }
}

/// A decoded outbox row.
struct OutboxRow {
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
    fn record(&self) -> JobRecord {
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

fn outbox_row<R>(row: &R) -> Result<OutboxRow, RepoError>
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

type CompactTask = apalis_core::task::Task<Vec<u8>>;

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

fn state_of(row: &TaskRow) -> JobState {
    match row.status.as_str() {
        "Running" => JobState::Running,
        "Done" => JobState::Succeeded,
        "Killed" => JobState::Dead,
        "Failed" if row.attempts >= row.max_attempts => JobState::Dead,
        "Failed" => JobState::Retrying,
        _ => JobState::Pending,
    }
}

/// The error text of apalis' stored result (`{"Err": "..."}`), if the last attempt failed.
fn last_error(result: Option<&str>) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(result?).ok()?;
    let error = value.get("Err")?;
    let text = error
        .as_str()
        .map_or_else(|| error.to_string(), str::to_owned);
    // Permanent failures travel as apalis' `AbortError`, whose text starts with its name.
    Some(match text.strip_prefix("AbortError: ") {
        Some(rest) => rest.to_owned(),
        None => text,
    })
}

fn record(row: &TaskRow) -> JobRecord {
    let state = state_of(row);
    let policy: Option<RetryPolicy> = row
        .metadata
        .get(meta::POLICY)
        .and_then(|p| serde_json::from_str(p).ok());
    JobRecord {
        id: job_id(&row.id).unwrap_or_else(|| JobId::from_uuid(uuid::Uuid::nil())),
        kind: row.metadata.get(meta::KIND).cloned().unwrap_or_default(),
        queue: Queue::parse(&row.queue).unwrap_or_default(),
        state,
        attempts: u32::try_from(row.attempts).unwrap_or_default(),
        max_attempts: policy.map_or_else(
            || u32::try_from(row.max_attempts).unwrap_or_default(),
            |p| p.max_attempts,
        ),
        last_error: if state == JobState::Succeeded {
            None
        } else {
            last_error(row.last_result.as_deref())
        },
        owner: row
            .metadata
            .get(meta::OWNER)
            .and_then(|o| o.parse().ok())
            .map(UserId::from_uuid),
        request_id: row.metadata.get(meta::REQUEST_ID).cloned(),
        created_at: created_at(&row.id),
        run_at: row.run_at.and_then(|s| Utc.timestamp_opt(s, 0).single()),
        finished_at: if state.is_finished() {
            row.done_at.and_then(|s| Utc.timestamp_opt(s, 0).single())
        } else {
            None
        },
    }
}

#[async_trait]
impl JobRepository for JobStore {
    async fn get(&self, id: JobId) -> Result<Option<JobRecord>, RepoError> {
        let key = task_id(id);
        if let Some(row) = self.fetch(&key).await? {
            return Ok(Some(record(&row)));
        }
        let filter = format!("WHERE id = {}", self.param(1));
        Ok(self
            .outbox(&filter, &[key.as_str().into()], None)
            .await?
            .into_iter()
            .next())
    }

    async fn list(&self, filter: &JobFilter) -> Result<(Vec<JobRecord>, u64), RepoError> {
        let limit = filter.limit.clamp(1, 100);
        // Both sources sort by id (time-ordered): take enough of each, merge, then page.
        let window = (limit + filter.offset, 0);
        let (clause, binds) = self.queue_filter(filter);
        let mut total = self.count(&clause, &binds, self.jobs_table()).await?;
        let mut records: Vec<JobRecord> = self
            .select(&clause, &binds, Some(window))
            .await?
            .into_iter()
            .map(|row| record(&row))
            .collect();
        if let Some((clause, binds)) = self.outbox_filter(filter) {
            total += self.count(&clause, &binds, "job_outbox").await?;
            records.extend(self.outbox(&clause, &binds, Some(window)).await?);
        }
        records.sort_by_key(|r| std::cmp::Reverse(r.id));
        let page = records
            .into_iter()
            .skip(filter.offset as usize)
            .take(limit as usize)
            .collect();
        Ok((page, total))
    }

    async fn retry(&self, id: JobId) -> Result<bool, RepoError> {
        let now = Utc::now().timestamp();
        let sql = match self.pool {
            Pool::Sqlite(_) => "UPDATE Jobs SET status = 'Pending', attempts = 0, run_at = ?, \
                 done_at = NULL, lock_by = NULL, lock_at = NULL, last_result = NULL \
                 WHERE id = ? AND (status = 'Killed' OR (status = 'Failed' AND attempts >= max_attempts))"
                .to_owned(),
            Pool::Postgres(_) => "UPDATE apalis.jobs SET status = 'Pending', attempts = 0, \
                 run_at = to_timestamp($1), done_at = NULL, lock_by = NULL, lock_at = NULL, \
                 last_result = NULL WHERE id = $2 AND (status = 'Killed' OR \
                 (status = 'Failed' AND attempts >= max_attempts))"
                .to_owned(),
        };
        let binds = [Bind::Int(now), Bind::Text(task_id(id))];
        Ok(self.execute(&sql, &binds).await? == 1)
    }

    async fn delete(&self, id: JobId) -> Result<bool, RepoError> {
        let sql = format!(
            "DELETE FROM {} WHERE id = {} AND {SQLITE_FINISHED}",
            self.jobs_table(),
            self.param(1)
        );
        Ok(self.execute(&sql, &[Bind::Text(task_id(id))]).await? == 1)
    }

    async fn purge_finished(&self, before: DateTime<Utc>) -> Result<u64, RepoError> {
        let sql = match self.pool {
            Pool::Sqlite(_) => format!("DELETE FROM Jobs WHERE {SQLITE_FINISHED} AND done_at < ?"),
            Pool::Postgres(_) => format!(
                "DELETE FROM apalis.jobs WHERE {SQLITE_FINISHED} AND done_at < to_timestamp($1)"
            ),
        };
        self.execute(&sql, &[Bind::Int(before.timestamp())]).await
    }
}

/// The record of mail already handed to the transport, by dedupe key: a retried `mail.send`
/// job finds its key here and does not send again.
#[derive(Debug, Clone)]
pub struct MailDeliveries {
    db: DatabaseConnection,
}

impl MailDeliveries {
    /// The ledger on `db`.
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }
}

#[async_trait]
impl keel_kernel::mail::DeliveryLedger for MailDeliveries {
    async fn was_sent(&self, dedupe_key: &str) -> Result<bool, RepoError> {
        use sea_orm::ConnectionTrait;
        let backend = self.db.get_database_backend();
        let sql = match backend {
            DatabaseBackend::Postgres => {
                "SELECT 1 AS one FROM mail_deliveries WHERE dedupe_key = $1"
            }
            _ => "SELECT 1 AS one FROM mail_deliveries WHERE dedupe_key = ?",
        };
        let row = self
            .db
            .query_one_raw(sea_orm::Statement::from_sql_and_values(
                backend,
                sql,
                [dedupe_key.into()],
            ))
            .await
            .map_err(repo_err)?;
        Ok(row.is_some())
    }

    async fn record(&self, dedupe_key: &str, job: JobId) -> Result<(), RepoError> {
        use sea_orm::ConnectionTrait;
        let backend = self.db.get_database_backend();
        let sql = match backend {
            DatabaseBackend::Postgres => {
                "INSERT INTO mail_deliveries (dedupe_key, job_id, sent_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (dedupe_key) DO NOTHING"
            }
            _ => {
                "INSERT INTO mail_deliveries (dedupe_key, job_id, sent_at) VALUES (?, ?, ?) \
                 ON CONFLICT (dedupe_key) DO NOTHING"
            }
        };
        self.db
            .execute_raw(sea_orm::Statement::from_sql_and_values(
                backend,
                sql,
                [dedupe_key.into(), job.as_uuid().into(), Utc::now().into()],
            ))
            .await
            .map_err(repo_err)?;
        Ok(())
    }
}
