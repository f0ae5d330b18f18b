//! Projects: owned, versioned, soft-deletable.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{
    big_integer, string_len, text_null, timestamp_with_time_zone, timestamp_with_time_zone_null,
    uuid, uuid_null,
};

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum Projects {
    Table,
    Id,
    Name,
    Description,
    Status,
    OwnerId,
    Version,
    CreatedBy,
    UpdatedBy,
    CreatedAt,
    UpdatedAt,
    DeletedAt,
}

#[derive(DeriveIden)]
enum Users {
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
                    .table(Projects::Table)
                    .col(uuid(Projects::Id).primary_key())
                    .col(string_len(Projects::Name, 200))
                    .col(text_null(Projects::Description))
                    .col(string_len(Projects::Status, 16).check(
                        Expr::col(Projects::Status).is_in([
                            "planned",
                            "active",
                            "completed",
                            "archived",
                        ]),
                    ))
                    .col(uuid(Projects::OwnerId))
                    .col(big_integer(Projects::Version))
                    .col(uuid_null(Projects::CreatedBy))
                    .col(uuid_null(Projects::UpdatedBy))
                    .col(timestamp_with_time_zone(Projects::CreatedAt))
                    .col(timestamp_with_time_zone(Projects::UpdatedAt))
                    .col(timestamp_with_time_zone_null(Projects::DeletedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_projects_owner")
                            .from(Projects::Table, Projects::OwnerId)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        // The owner's list, newest first, is the common read.
        manager
            .create_index(
                Index::create()
                    .name("ix_projects_owner_created_at")
                    .table(Projects::Table)
                    .col(Projects::OwnerId)
                    .col(Projects::CreatedAt)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_projects_created_at")
                    .table(Projects::Table)
                    .col(Projects::CreatedAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Projects::Table).to_owned())
            .await
    }
}
