//! Infrastructure errors, and the translation of database errors into the domain's terms.

use keel_kernel::RepoError;
use sea_orm::{DbErr, RuntimeErr, SqlErr};

/// What can go wrong while setting up or migrating storage.
#[derive(Debug, thiserror::Error)]
pub enum InfraError {
    /// The directory for the SQLite file could not be created.
    #[error("cannot create the directory {path} for the SQLite database: {source}")]
    SqliteDirectory {
        /// The directory.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The database did not accept a connection.
    #[error("cannot connect to the database at {url}: {source}")]
    Connect {
        /// The URL, password redacted.
        url: String,
        /// Why.
        #[source]
        source: DbErr,
    },
    /// A migration failed; the database is left as the last successful migration made it.
    #[error("migration failed: {0}")]
    Migration(#[source] DbErr),
    /// The job queue's tables could not be set up.
    #[error("job queue setup failed: {0}")]
    JobQueue(#[source] RepoError),
    /// Any other database error.
    #[error("database error: {0}")]
    Database(#[from] DbErr),
}

/// Translates a database error into the storage vocabulary the domain understands.
pub(crate) fn repo_err(err: DbErr) -> RepoError {
    if let Some(SqlErr::UniqueConstraintViolation(message)) = err.sql_err() {
        return RepoError::UniqueViolation {
            constraint: constraint_name(&err).unwrap_or(message),
        };
    }
    if is_unavailable(&err) {
        return RepoError::Unavailable(Box::new(err));
    }
    RepoError::Other(Box::new(err))
}

/// The violated constraint as the database names it (PostgreSQL), or the `table.column` SQLite
/// reports.
fn constraint_name(err: &DbErr) -> Option<String> {
    let sqlx_err = sqlx_error(err)?;
    let db_err = sqlx_err.as_database_error()?;
    if let Some(name) = db_err.constraint() {
        return Some(name.to_owned());
    }
    db_err
        .message()
        .strip_prefix("UNIQUE constraint failed: ")
        .map(str::to_owned)
}

fn sqlx_error(err: &DbErr) -> Option<&sqlx::Error> {
    match err {
        DbErr::Exec(RuntimeErr::SqlxError(e))
        | DbErr::Query(RuntimeErr::SqlxError(e))
        | DbErr::Conn(RuntimeErr::SqlxError(e)) => Some(e),
        _ => None,
    }
}

/// Errors a retry may cure: no connection, pool exhausted, database busy or shutting down.
fn is_unavailable(err: &DbErr) -> bool {
    if matches!(err, DbErr::ConnectionAcquire(_) | DbErr::Conn(_)) {
        return true;
    }
    let Some(sqlx_err) = sqlx_error(err) else {
        return false;
    };
    match sqlx_err {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db_err) => {
            let code = db_err.code().unwrap_or_default();
            // SQLite: 5 SQLITE_BUSY, 6 SQLITE_LOCKED, 517 SQLITE_BUSY_SNAPSHOT.
            // PostgreSQL: class 08 connection exceptions, 53 insufficient resources,
            // 57P01..57P03 shutdown, 40001 serialization failure, 40P01 deadlock.
            matches!(
                code.as_ref(),
                "5" | "6" | "517" | "40001" | "40P01" | "57P01" | "57P02" | "57P03"
            ) || code.starts_with("08")
                || code.starts_with("53")
        }
        _ => false,
    }
}

/// `text`, then each cause of `error` (not `error` itself) after a colon: a whole chain on one
/// log line.
pub(crate) fn with_causes(mut text: String, error: &dyn std::error::Error) -> String {
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
