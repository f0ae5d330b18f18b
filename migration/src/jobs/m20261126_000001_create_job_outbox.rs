//! Jobs: the transactional outbox use cases enqueue into, and the mail delivery ledger.
//!
//! The queue itself belongs to apalis (`Jobs`/`Workers` on SQLite, schema `apalis` on
//! PostgreSQL), set up by its own migrations right after these.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{
    big_integer, string_len, string_len_null, text, timestamp_with_time_zone, uuid_null,
};

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum JobOutbox {
    Table,
    Id,
    Queue,
    Kind,
    Payload,
    Policy,
    DedupeKey,
    OwnerId,
    RequestId,
    TraceParent,
    RunAt,
    CreatedAt,
}

#[derive(DeriveIden)]
enum MailDeliveries {
    Table,
    DedupeKey,
    JobId,
    SentAt,
}

// The trait is declared with an elided `SchemaManager` lifetime; impls must match it.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(JobOutbox::Table)
                    // The job id as a ULID (the id apalis gives the job when the worker moves it
                    // over), and plain integers for instants: the relay reads these rows with
                    // apalis' own sqlx pool, so they use types both sides agree on.
                    .col(string_len(JobOutbox::Id, 26).primary_key())
                    .col(string_len(JobOutbox::Queue, 16))
                    .col(string_len(JobOutbox::Kind, 128))
                    .col(text(JobOutbox::Payload))
                    .col(text(JobOutbox::Policy))
                    .col(string_len_null(JobOutbox::DedupeKey, 256))
                    .col(string_len_null(JobOutbox::OwnerId, 36))
                    .col(string_len_null(JobOutbox::RequestId, 128))
                    .col(string_len_null(JobOutbox::TraceParent, 64))
                    .col(big_integer(JobOutbox::RunAt))
                    .col(big_integer(JobOutbox::CreatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(MailDeliveries::Table)
                    .col(string_len(MailDeliveries::DedupeKey, 256).primary_key())
                    .col(uuid_null(MailDeliveries::JobId))
                    .col(timestamp_with_time_zone(MailDeliveries::SentAt))
                    .to_owned(),
            )
            .await?;
        // Purges by age.
        manager
            .create_index(
                Index::create()
                    .name("ix_mail_deliveries_sent_at")
                    .table(MailDeliveries::Table)
                    .col(MailDeliveries::SentAt)
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(MailDeliveries::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(JobOutbox::Table).to_owned())
            .await
    }
}
