//! Applying and reverting schema migrations, safely when several processes start at once.
//!
//! Migrations run on a dedicated single-connection pool. On PostgreSQL a session advisory lock
//! serialises runners: a second replica waits, then finds nothing pending. On SQLite the whole
//! run is one `BEGIN IMMEDIATE` transaction: a second process waits for the write lock (up to
//! `database.sqlite_busy_timeout`), then sees the migrations already recorded.

use keel_config::DatabaseSettings;
use keel_migration::{Migrator, MigratorTrait};
use sea_orm::{
    ConnectionTrait, DatabaseBackend, DatabaseConnection, SqliteTransactionMode,
    TransactionOptions, TransactionTrait,
};
use sea_orm_migration::IntoSchemaManagerConnection;
use sea_orm_migration::migrator::MigrationStatus;

use crate::database::connect_with_pool_size;
use crate::error::InfraError;
use crate::jobs::JobStore;

/// Key of the PostgreSQL advisory lock held while migrating ("keelmigr" in ASCII).
const MIGRATION_LOCK_KEY: i64 = 0x6B65_656C_6D69_6772;

/// The state of one migration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationState {
    /// The migration's name, e.g. `m20261123_000001_create_release_notes`.
    pub name: String,
    /// Whether it has been applied.
    pub applied: bool,
}

#[derive(Debug, Clone, Copy)]
enum Operation {
    Up,
    Down(u32),
    Fresh,
}

/// Applies every pending migration; returns the names this call applied (empty when up to
/// date, or when a concurrent runner applied them first).
pub async fn apply_pending(settings: &DatabaseSettings) -> Result<Vec<String>, InfraError> {
    run(settings, Operation::Up).await
}

/// Reverts the last `steps` applied migrations; returns their names.
pub async fn rollback(settings: &DatabaseSettings, steps: u32) -> Result<Vec<String>, InfraError> {
    run(settings, Operation::Down(steps)).await
}

/// Drops every table and applies all migrations from scratch. Destroys all data.
pub async fn fresh(settings: &DatabaseSettings) -> Result<Vec<String>, InfraError> {
    run(settings, Operation::Fresh).await
}

/// Lists every migration known to this build and whether it is applied.
pub async fn status(settings: &DatabaseSettings) -> Result<Vec<MigrationState>, InfraError> {
    let db = connect_with_pool_size(settings, "keel-migrate", 1).await?;
    let result = Migrator::get_migration_with_status_read_only(&db)
        .await
        .map_err(InfraError::Migration)
        .map(|migrations| {
            migrations
                .iter()
                .map(|m| MigrationState {
                    name: m.name().to_owned(),
                    applied: m.status() == MigrationStatus::Applied,
                })
                .collect()
        });
    close(db).await;
    result
}

async fn run(settings: &DatabaseSettings, operation: Operation) -> Result<Vec<String>, InfraError> {
    let db = connect_with_pool_size(settings, "keel-migrate", 1).await?;
    let queue = JobStore::new(&db);
    if let Operation::Fresh = operation {
        queue.drop_all().await.map_err(InfraError::JobQueue)?;
    }
    let result = match db.get_database_backend() {
        DatabaseBackend::Postgres => run_postgres(&db, operation).await,
        _ => run_sqlite(&db, operation).await,
    };
    // The job queue's tables follow Keel's (apalis migrates them itself); rollbacks leave them.
    let result = match (result, operation) {
        (Ok(names), Operation::Up | Operation::Fresh) => match queue.migrate().await {
            Ok(()) => Ok(names),
            Err(error) => {
                close(db).await;
                return Err(InfraError::JobQueue(error));
            }
        },
        (other, _) => other,
    };
    close(db).await;
    result.map_err(InfraError::Migration)
}

async fn run_postgres(
    db: &DatabaseConnection,
    operation: Operation,
) -> Result<Vec<String>, sea_orm::DbErr> {
    tracing::debug!("waiting for the migration lock");
    db.execute_unprepared(&format!("SELECT pg_advisory_lock({MIGRATION_LOCK_KEY})"))
        .await?;
    let result = apply(db, operation).await;
    // The lock also ends with the session; unlocking explicitly frees it at once.
    let unlocked = db
        .execute_unprepared(&format!("SELECT pg_advisory_unlock({MIGRATION_LOCK_KEY})"))
        .await;
    let names = result?;
    unlocked?;
    Ok(names)
}

async fn run_sqlite(
    db: &DatabaseConnection,
    operation: Operation,
) -> Result<Vec<String>, sea_orm::DbErr> {
    if let Operation::Fresh = operation {
        // Dropping tables needs `PRAGMA foreign_keys = OFF`, which SQLite ignores inside a
        // transaction; `fresh` is a development command, so it runs unguarded.
        return apply(db, operation).await;
    }
    let options = TransactionOptions {
        sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
        ..TransactionOptions::default()
    };
    let txn = db.begin_with_options(options).await?;
    let names = apply(&txn, operation).await?;
    txn.commit().await?;
    Ok(names)
}

/// Runs the operation and returns the names of the migrations it applied or reverted, read
/// under the lock so concurrent runners report only their own work.
async fn apply<C>(conn: &C, operation: Operation) -> Result<Vec<String>, sea_orm::DbErr>
where
    C: ConnectionTrait + TransactionTrait,
    for<'c> &'c C: IntoSchemaManagerConnection<'c> + Send,
{
    let names = |migrations: Vec<sea_orm_migration::migrator::Migration>| {
        migrations
            .iter()
            .map(|m| m.name().to_owned())
            .collect::<Vec<_>>()
    };
    match operation {
        Operation::Up => {
            let pending = names(Migrator::get_pending_migrations(conn).await?);
            Migrator::up(conn, None).await?;
            Ok(pending)
        }
        Operation::Down(steps) => {
            let applied = names(Migrator::get_applied_migrations(conn).await?);
            let reverted = applied.into_iter().rev().take(steps as usize).collect();
            Migrator::down(conn, Some(steps)).await?;
            Ok(reverted)
        }
        Operation::Fresh => {
            Migrator::fresh(conn).await?;
            Ok(names(Migrator::get_applied_migrations(conn).await?))
        }
    }
}

async fn close(db: DatabaseConnection) {
    if let Err(error) = db.close().await {
        tracing::warn!(%error, "closing the migration connection failed");
    }
}
