//! Project attachments: one row per stored object (the object itself is in the object store,
//! under `storage_key`).

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{
    big_integer, string_len, timestamp_with_time_zone, uuid, uuid_null,
};

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum ProjectAttachments {
    Table,
    Id,
    ProjectId,
    Filename,
    ContentType,
    SizeBytes,
    Sha256,
    StorageKey,
    CreatedBy,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Projects {
    Table,
    Id,
}

// The trait is declared with an elided `SchemaManager` lifetime; impls must match it.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ProjectAttachments::Table)
                    .col(uuid(ProjectAttachments::Id).primary_key())
                    .col(uuid(ProjectAttachments::ProjectId))
                    .col(string_len(ProjectAttachments::Filename, 255))
                    .col(string_len(ProjectAttachments::ContentType, 100))
                    .col(big_integer(ProjectAttachments::SizeBytes))
                    .col(string_len(ProjectAttachments::Sha256, 64))
                    .col(string_len(ProjectAttachments::StorageKey, 400).unique_key())
                    .col(uuid_null(ProjectAttachments::CreatedBy))
                    .col(timestamp_with_time_zone(ProjectAttachments::CreatedAt))
                    // A project purged for good takes its rows along; the sweep then removes
                    // the objects no row refers to.
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_project_attachments_project")
                            .from(ProjectAttachments::Table, ProjectAttachments::ProjectId)
                            .to(Projects::Table, Projects::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_project_attachments_project_created_at")
                    .table(ProjectAttachments::Table)
                    .col(ProjectAttachments::ProjectId)
                    .col(ProjectAttachments::CreatedAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(ProjectAttachments::Table).to_owned())
            .await
    }
}
