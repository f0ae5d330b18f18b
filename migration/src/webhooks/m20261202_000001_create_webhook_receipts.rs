//! Inbound webhooks: one receipt per (source, webhook id). The unique index is what makes a
//! redelivered webhook a no-op, however many replicas receive it at once.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{string_len, timestamp_with_time_zone, uuid};

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum WebhookReceipts {
    Table,
    Id,
    Source,
    WebhookId,
    EventType,
    JobId,
    ReceivedAt,
}

// The trait is declared with an elided `SchemaManager` lifetime; impls must match it.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(WebhookReceipts::Table)
                    .col(uuid(WebhookReceipts::Id).primary_key())
                    .col(string_len(WebhookReceipts::Source, 64))
                    .col(string_len(WebhookReceipts::WebhookId, 256))
                    .col(string_len(WebhookReceipts::EventType, 128))
                    .col(uuid(WebhookReceipts::JobId))
                    .col(timestamp_with_time_zone(WebhookReceipts::ReceivedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ux_webhook_receipts_source_webhook_id")
                    .table(WebhookReceipts::Table)
                    .col(WebhookReceipts::Source)
                    .col(WebhookReceipts::WebhookId)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_webhook_receipts_received_at")
                    .table(WebhookReceipts::Table)
                    .col(WebhookReceipts::ReceivedAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(WebhookReceipts::Table).to_owned())
            .await
    }
}
