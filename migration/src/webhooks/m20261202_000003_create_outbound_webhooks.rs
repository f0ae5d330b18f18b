//! Outbound webhooks: subscribed endpoints (the signing secret is derived from a seed under a
//! pepper, never stored), one delivery per event and endpoint, and every attempt at it.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{
    big_integer, integer, integer_null, string_len, string_len_null, text, text_null,
    timestamp_with_time_zone, uuid, uuid_null,
};

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum WebhookEndpoints {
    Table,
    Id,
    Url,
    Events,
    Description,
    PepperId,
    Seed,
    CreatedBy,
    CreatedAt,
}

#[derive(DeriveIden)]
enum WebhookDeliveries {
    Table,
    Id,
    EndpointId,
    EventId,
    EventType,
    OccurredAt,
    Data,
    State,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum WebhookDeliveryAttempts {
    Table,
    Id,
    DeliveryId,
    Attempt,
    Status,
    Error,
    LatencyMs,
    At,
}

// The trait is declared with an elided `SchemaManager` lifetime; impls must match it.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(WebhookEndpoints::Table)
                    .col(uuid(WebhookEndpoints::Id).primary_key())
                    .col(string_len(WebhookEndpoints::Url, 2048))
                    .col(text(WebhookEndpoints::Events))
                    .col(string_len_null(WebhookEndpoints::Description, 500))
                    .col(string_len(WebhookEndpoints::PepperId, 64))
                    .col(string_len(WebhookEndpoints::Seed, 128))
                    .col(uuid_null(WebhookEndpoints::CreatedBy))
                    .col(timestamp_with_time_zone(WebhookEndpoints::CreatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(WebhookDeliveries::Table)
                    .col(uuid(WebhookDeliveries::Id).primary_key())
                    .col(uuid(WebhookDeliveries::EndpointId))
                    .col(uuid(WebhookDeliveries::EventId))
                    .col(string_len(WebhookDeliveries::EventType, 128))
                    .col(timestamp_with_time_zone(WebhookDeliveries::OccurredAt))
                    .col(text(WebhookDeliveries::Data))
                    .col(string_len(WebhookDeliveries::State, 16))
                    .col(timestamp_with_time_zone(WebhookDeliveries::CreatedAt))
                    .col(timestamp_with_time_zone(WebhookDeliveries::UpdatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_webhook_deliveries_endpoint")
                            .from(WebhookDeliveries::Table, WebhookDeliveries::EndpointId)
                            .to(WebhookEndpoints::Table, WebhookEndpoints::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_webhook_deliveries_endpoint_created")
                    .table(WebhookDeliveries::Table)
                    .col(WebhookDeliveries::EndpointId)
                    .col(WebhookDeliveries::CreatedAt)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ux_webhook_deliveries_endpoint_event")
                    .table(WebhookDeliveries::Table)
                    .col(WebhookDeliveries::EndpointId)
                    .col(WebhookDeliveries::EventId)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(WebhookDeliveryAttempts::Table)
                    .col(uuid(WebhookDeliveryAttempts::Id).primary_key())
                    .col(uuid(WebhookDeliveryAttempts::DeliveryId))
                    .col(integer(WebhookDeliveryAttempts::Attempt))
                    .col(integer_null(WebhookDeliveryAttempts::Status))
                    .col(text_null(WebhookDeliveryAttempts::Error))
                    .col(big_integer(WebhookDeliveryAttempts::LatencyMs))
                    .col(timestamp_with_time_zone(WebhookDeliveryAttempts::At))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_webhook_delivery_attempts_delivery")
                            .from(
                                WebhookDeliveryAttempts::Table,
                                WebhookDeliveryAttempts::DeliveryId,
                            )
                            .to(WebhookDeliveries::Table, WebhookDeliveries::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_webhook_delivery_attempts_delivery")
                    .table(WebhookDeliveryAttempts::Table)
                    .col(WebhookDeliveryAttempts::DeliveryId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            WebhookDeliveryAttempts::Table.into_iden(),
            WebhookDeliveries::Table.into_iden(),
            WebhookEndpoints::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}
