//! Idempotency keys: the first answer to a request sent with `Idempotency-Key`, replayed to the
//! same caller's retries for 24 hours.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{
    blob_null, integer_null, string_len, text_null, timestamp_with_time_zone,
};

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum IdempotencyKeys {
    Table,
    Scope,
    Key,
    Fingerprint,
    State,
    ClaimToken,
    Status,
    Headers,
    Body,
    CreatedAt,
    ClaimedAt,
}

// The trait is declared with an elided `SchemaManager` lifetime; impls must match it.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(IdempotencyKeys::Table)
                    // Who asked (`user:<id>` or `ip:<client>`) and their key: one row per pair.
                    .col(string_len(IdempotencyKeys::Scope, 128))
                    .col(string_len(IdempotencyKeys::Key, 255))
                    // SHA-256 of method, path and body: a different request under a used key.
                    .col(string_len(IdempotencyKeys::Fingerprint, 64))
                    .col(string_len(IdempotencyKeys::State, 16))
                    // Who holds the claim now: a request taken over after its lease cannot
                    // complete or release its successor's claim.
                    .col(string_len(IdempotencyKeys::ClaimToken, 36))
                    .col(integer_null(IdempotencyKeys::Status))
                    .col(text_null(IdempotencyKeys::Headers))
                    .col(blob_null(IdempotencyKeys::Body))
                    .col(timestamp_with_time_zone(IdempotencyKeys::CreatedAt))
                    .col(timestamp_with_time_zone(IdempotencyKeys::ClaimedAt))
                    .primary_key(
                        Index::create()
                            .col(IdempotencyKeys::Scope)
                            .col(IdempotencyKeys::Key),
                    )
                    .to_owned(),
            )
            .await?;
        // Purges by age.
        manager
            .create_index(
                Index::create()
                    .name("ix_idempotency_keys_created_at")
                    .table(IdempotencyKeys::Table)
                    .col(IdempotencyKeys::CreatedAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(IdempotencyKeys::Table).to_owned())
            .await
    }
}
