//! Connecting to the database, and watching the pool.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::FutureExt as _;
use keel_config::{DatabaseSettings, redacted_url};
use keel_kernel::error::BoxError;
use keel_kernel::health::HealthCheck;
use sea_orm::{ConnectOptions, Database, DatabaseBackend, DatabaseConnection};
use secrecy::ExposeSecret;
use sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};

use crate::error::InfraError;

/// Statements slower than this are logged at WARN with their SQL (never their values).
const SLOW_STATEMENT: Duration = Duration::from_secs(1);

/// Opens the connection pool described by `settings`.
///
/// SQLite gets WAL mode (readers never block the writer), `synchronous = NORMAL` (durable
/// across application crashes, fast), foreign keys and a busy timeout; its directory is created
/// when missing. PostgreSQL connections carry `application_name` so they are recognisable in
/// `pg_stat_activity`.
pub async fn connect(
    settings: &DatabaseSettings,
    application_name: &str,
) -> Result<DatabaseConnection, InfraError> {
    connect_with_pool_size(settings, application_name, settings.max_connections).await
}

/// How long a pooled connection may sit idle before it is pinged on checkout. Busy connections
/// skip the ping: sqlx's default pings on every checkout, one more round trip per query.
const PING_IF_IDLE_FOR: Duration = Duration::from_secs(5);

/// The sea-orm options every pool of `settings` is opened with.
fn connect_options(
    settings: &DatabaseSettings,
    application_name: &str,
    max_connections: u32,
) -> ConnectOptions {
    let mut options = ConnectOptions::new(settings.url.expose_secret().to_owned());
    options
        .max_connections(max_connections)
        .min_connections(settings.min_connections.min(max_connections))
        .connect_timeout(settings.connect_timeout)
        .acquire_timeout(settings.acquire_timeout)
        .idle_timeout(settings.idle_timeout)
        .test_before_acquire_if_idle_for(PING_IF_IDLE_FOR)
        .sqlx_logging(true)
        .sqlx_logging_level(log::LevelFilter::Debug)
        .sqlx_slow_statements_logging_settings(log::LevelFilter::Warn, SLOW_STATEMENT);
    let busy_timeout = settings.sqlite_busy_timeout;
    options.map_sqlx_sqlite_opts(move |o| {
        o.journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(busy_timeout)
            .foreign_keys(true)
    });
    let application_name = application_name.to_owned();
    options.map_sqlx_postgres_opts(move |o| o.application_name(&application_name));
    options
}

/// Like [`connect`] with an explicit pool size (the migration runner uses one connection).
pub async fn connect_with_pool_size(
    settings: &DatabaseSettings,
    application_name: &str,
    max_connections: u32,
) -> Result<DatabaseConnection, InfraError> {
    let url = settings.url.expose_secret();
    if settings.is_sqlite() {
        ensure_sqlite_directory(url)?;
    }
    let options = connect_options(settings, application_name, max_connections);

    // Processes opening a new SQLite file at the same moment (an api and a worker started
    // together, concurrent migration runners) can find it locked while one of them switches
    // it to WAL, a step SQLite's busy handler does not wait for: retry within the busy timeout.
    let busy_timeout = settings.sqlite_busy_timeout;
    let deadline = std::time::Instant::now() + busy_timeout;
    loop {
        match Database::connect(options.clone()).await {
            Err(source)
                if settings.is_sqlite()
                    && source.to_string().contains("database is locked")
                    && std::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(25)).await;
            }
            result => {
                return result.map_err(|source| InfraError::Connect {
                    url: redacted_url(url),
                    source,
                });
            }
        }
    }
}

/// A pool of up to `max_connections` that opens no connection until one is needed, and then
/// opens it on the calling thread's runtime. Each api worker thread builds its own (on
/// PostgreSQL), so a connection's socket is driven by the thread that waits on it: a pool
/// shared by the workers makes every database reply cross threads (ADR 0012).
///
/// Call it inside a Tokio runtime: the pool starts its idle-connection reaper there.
pub fn connect_lazy(
    settings: &DatabaseSettings,
    application_name: &str,
    max_connections: u32,
) -> Result<DatabaseConnection, InfraError> {
    let url = settings.url.expose_secret();
    let mut options = connect_options(settings, application_name, max_connections);
    options.min_connections(0).connect_lazy(true);
    // A lazy connect opens nothing, so its future is ready at the first poll.
    Database::connect(options)
        .now_or_never()
        .unwrap_or_else(|| {
            Err(sea_orm::DbErr::Custom(
                "a lazy pool tried to connect while being built".to_owned(),
            ))
        })
        .map_err(|source| InfraError::Connect {
            url: redacted_url(url),
            source,
        })
}

/// Creates the directory of a file-backed SQLite URL such as `sqlite://./data/keel.db?mode=rwc`.
fn ensure_sqlite_directory(url: &str) -> Result<(), InfraError> {
    let path = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let path = path.split('?').next().unwrap_or_default();
    if path.is_empty() || path == ":memory:" {
        return Ok(());
    }
    match Path::new(path).parent() {
        Some(dir) if !dir.as_os_str().is_empty() => {
            std::fs::create_dir_all(dir).map_err(|source| InfraError::SqliteDirectory {
                path: dir.display().to_string(),
                source,
            })
        }
        _ => Ok(()),
    }
}

/// A snapshot of the pool, for the `db_pool_connections` gauge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    /// Open connections not in use.
    pub idle: u32,
    /// Connections lent out.
    pub in_use: u32,
}

impl PoolStats {
    /// Reads the pool's current counts.
    pub fn sample(db: &DatabaseConnection) -> Option<Self> {
        // The pool getters panic on the wrong backend, so dispatch on the backend first.
        let (size, idle) = match db.get_database_backend() {
            DatabaseBackend::Sqlite => {
                let pool = db.get_sqlite_connection_pool();
                (pool.size(), pool.num_idle())
            }
            DatabaseBackend::Postgres => {
                let pool = db.get_postgres_connection_pool();
                (pool.size(), pool.num_idle())
            }
            _ => return None,
        };
        let idle = u32::try_from(idle).unwrap_or(u32::MAX);
        Some(Self {
            idle,
            in_use: size.saturating_sub(idle),
        })
    }
}

/// The readiness check for the database: a round trip on a pooled connection.
#[derive(Debug, Clone)]
pub struct DatabaseHealth {
    db: DatabaseConnection,
}

impl DatabaseHealth {
    /// Checks this pool.
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }
}

#[async_trait]
impl HealthCheck for DatabaseHealth {
    fn name(&self) -> &'static str {
        "database"
    }

    async fn check(&self) -> Result<(), BoxError> {
        self.db.ping().await.map_err(|e| Box::new(e) as BoxError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_directories_are_created_for_file_urls_only() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("a/b/keel.db");
        ensure_sqlite_directory(&format!("sqlite://{}?mode=rwc", nested.display())).unwrap();
        assert!(dir.path().join("a/b").is_dir());
        ensure_sqlite_directory("sqlite::memory:").unwrap();
        ensure_sqlite_directory("sqlite://keel.db").unwrap();
    }
}
