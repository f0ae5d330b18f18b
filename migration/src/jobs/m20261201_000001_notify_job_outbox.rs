//! Jobs: on PostgreSQL, a commit that enqueues into `job_outbox` notifies channel
//! `keel_job_outbox`, so a listening worker relays it at once instead of at its next poll.
//! SQLite has no notifications; its workers poll.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DatabaseBackend;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

// The trait is declared with an elided `SchemaManager` lifetime; impls must match it.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DatabaseBackend::Postgres {
            return Ok(());
        }
        let db = manager.get_connection();
        // Once per statement, and PostgreSQL folds identical notifications of a transaction
        // into one: a bulk insert wakes the worker once. Delivered only at commit.
        db.execute_unprepared(
            "CREATE OR REPLACE FUNCTION keel_notify_job_outbox() RETURNS trigger \
             LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_notify('keel_job_outbox', ''); \
             RETURN NULL; END $$",
        )
        .await?;
        db.execute_unprepared(
            "CREATE TRIGGER job_outbox_notify AFTER INSERT ON job_outbox \
             FOR EACH STATEMENT EXECUTE FUNCTION keel_notify_job_outbox()",
        )
        .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DatabaseBackend::Postgres {
            return Ok(());
        }
        let db = manager.get_connection();
        db.execute_unprepared("DROP TRIGGER IF EXISTS job_outbox_notify ON job_outbox")
            .await?;
        db.execute_unprepared("DROP FUNCTION IF EXISTS keel_notify_job_outbox()")
            .await?;
        Ok(())
    }
}
