//! Release notes: one row per version, draft or published.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{
    string_len, text, timestamp_with_time_zone, timestamp_with_time_zone_null, uuid, uuid_null,
};

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum ReleaseNotes {
    Table,
    Id,
    Version,
    Title,
    Body,
    ChangeType,
    Status,
    PublishedAt,
    CreatedBy,
    CreatedAt,
    UpdatedAt,
}

// The trait is declared with an elided `SchemaManager` lifetime; impls must match it.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ReleaseNotes::Table)
                    .col(uuid(ReleaseNotes::Id).primary_key())
                    .col(string_len(ReleaseNotes::Version, 64))
                    .col(string_len(ReleaseNotes::Title, 200))
                    .col(text(ReleaseNotes::Body))
                    .col(string_len(ReleaseNotes::ChangeType, 16).check(
                        Expr::col(ReleaseNotes::ChangeType).is_in([
                            "feature",
                            "improvement",
                            "bugfix",
                            "breaking",
                        ]),
                    ))
                    .col(
                        string_len(ReleaseNotes::Status, 16)
                            .check(Expr::col(ReleaseNotes::Status).is_in(["draft", "published"])),
                    )
                    .col(timestamp_with_time_zone_null(ReleaseNotes::PublishedAt))
                    .col(uuid_null(ReleaseNotes::CreatedBy))
                    .col(timestamp_with_time_zone(ReleaseNotes::CreatedAt))
                    .col(timestamp_with_time_zone(ReleaseNotes::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ux_release_notes_version")
                    .table(ReleaseNotes::Table)
                    .col(ReleaseNotes::Version)
                    .unique()
                    .to_owned(),
            )
            .await?;
        // Serves the public feed: published notes, newest first.
        manager
            .create_index(
                Index::create()
                    .name("ix_release_notes_status_published_at")
                    .table(ReleaseNotes::Table)
                    .col(ReleaseNotes::Status)
                    .col(ReleaseNotes::PublishedAt)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_release_notes_created_at")
                    .table(ReleaseNotes::Table)
                    .col(ReleaseNotes::CreatedAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(ReleaseNotes::Table).to_owned())
            .await
    }
}
