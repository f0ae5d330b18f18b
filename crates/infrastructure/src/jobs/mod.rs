//! Jobs: the transactional outbox use cases write to (always the app's own database), and the
//! apalis queues the worker runs: in the database (SQLite `Jobs`, or PostgreSQL `apalis.jobs`)
//! or, with `jobs.backend = "redis"`, in Redis ([`RedisQueues`]).
//!
//! Why an outbox: a use case's writes go through a sea-orm transaction, and apalis pushes
//! through its own sqlx connection, so a job cannot be pushed inside the use case's
//! transaction directly. The use case inserts a `job_outbox` row instead; the worker moves
//! rows into apalis with apalis' own `push_tasks`, deleting them in the same database
//! transaction. A rollback leaves no row, a crash after commit leaves the row for the next
//! relay, and a relay never moves a row twice.

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

mod admin;
mod outbox;
mod redis;

use chrono::{DateTime, TimeZone, Utc};
use keel_kernel::RepoError;
use keel_kernel::jobs::{JobId, NewJob};
pub use outbox::{SeaJobQueue, entity};
pub use redis::RedisQueues;
use sea_orm::{DatabaseBackend, DatabaseConnection};
use serde::{Deserialize, Serialize};
// Dynamic SQL here is assembled from fixed fragments and integers; every value is bound.
use ulid::Ulid;

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

/// An apalis task with its arguments still encoded (JSON bytes), as every backend stores it.
type CompactTask = apalis_core::task::Task<Vec<u8>>;

/// The job queue's storage: Keel's outbox on the app's database, and apalis' queues on the
/// same database or in Redis.
#[derive(Debug, Clone)]
pub struct JobStore {
    pool: Pool,
    redis: Option<RedisQueues>,
}

impl JobStore {
    /// The store on the app's connection pool (the outbox and the queues on one database).
    pub fn new(db: &DatabaseConnection) -> Self {
        let pool = match db.get_database_backend() {
            DatabaseBackend::Postgres => Pool::Postgres(db.get_postgres_connection_pool().clone()),
            _ => Pool::Sqlite(db.get_sqlite_connection_pool().clone()),
        };
        Self { pool, redis: None }
    }

    /// The same outbox, with the queues in Redis (`jobs.backend = "redis"`).
    #[must_use]
    pub fn on_redis(mut self, queues: RedisQueues) -> Self {
        self.redis = Some(queues);
        self
    }

    /// The Redis queues, when the queues are in Redis.
    pub fn redis(&self) -> Option<&RedisQueues> {
        self.redis.as_ref()
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

    fn param(&self, n: usize) -> String {
        match self.pool {
            Pool::Sqlite(_) => "?".to_owned(),
            Pool::Postgres(_) => format!("${n}"),
        }
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

/// Registers the job admin's use cases and permissions, and the job store the worker runs.
pub fn register(
    adapters: &crate::Adapters,
    state: &mut keel_kernel::AppStateBuilder,
) -> Result<(), crate::RegisterError> {
    let store = match &adapters.job_queues {
        Some(queues) => JobStore::new(&adapters.db).on_redis(queues.clone()),
        None => JobStore::new(&adapters.db),
    };
    state
        .permissions(keel_jobs::PERMISSIONS)
        .insert(keel_jobs::Jobs::new(
            std::sync::Arc::new(store.clone()),
            adapters.unit_of_work.clone(),
            adapters.jobs.clone(),
        ))
        .insert(store);
    Ok(())
}
