//! The activity log: append-only, no foreign keys (entries outlive what they describe).

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{
    json_binary, string_len, string_len_null, timestamp_with_time_zone, uuid, uuid_null,
};

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum Activity {
    Table,
    Id,
    Action,
    ActorType,
    ActorUserId,
    ActorApiKeyId,
    SubjectUserId,
    ResourceType,
    ResourceId,
    Changes,
    Ip,
    UserAgent,
    RequestId,
    CreatedAt,
}

// The trait is declared with an elided `SchemaManager` lifetime; impls must match it.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Activity::Table)
                    .col(uuid(Activity::Id).primary_key())
                    .col(string_len(Activity::Action, 64))
                    .col(string_len(Activity::ActorType, 16))
                    .col(uuid_null(Activity::ActorUserId))
                    .col(uuid_null(Activity::ActorApiKeyId))
                    .col(uuid_null(Activity::SubjectUserId))
                    .col(string_len(Activity::ResourceType, 64))
                    .col(string_len_null(Activity::ResourceId, 64))
                    .col(json_binary(Activity::Changes))
                    .col(string_len_null(Activity::Ip, 64))
                    .col(string_len_null(Activity::UserAgent, 512))
                    .col(string_len_null(Activity::RequestId, 128))
                    .col(timestamp_with_time_zone(Activity::CreatedAt))
                    .to_owned(),
            )
            .await?;
        for (name, column) in [
            ("ix_activity_created_at", Activity::CreatedAt),
            ("ix_activity_actor_user_id", Activity::ActorUserId),
            ("ix_activity_subject_user_id", Activity::SubjectUserId),
            ("ix_activity_action", Activity::Action),
        ] {
            manager
                .create_index(
                    Index::create()
                        .name(name)
                        .table(Activity::Table)
                        .col(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Activity::Table).to_owned())
            .await
    }
}
