//! Identity: accounts, roles and permissions, sessions with refresh tokens, one-time tokens
//! and API keys.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{
    boolean, json_binary, string_len, string_len_null, timestamp_with_time_zone,
    timestamp_with_time_zone_null, uuid,
};

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
    Email,
    FullName,
    PasswordHash,
    Status,
    EmailVerifiedAt,
    PasswordChangedAt,
    CreatedAt,
    UpdatedAt,
    DeletedAt,
}

#[derive(DeriveIden)]
enum Roles {
    Table,
    Id,
    Name,
    Description,
    IsSystem,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Permissions {
    Table,
    Name,
    Description,
}

#[derive(DeriveIden)]
enum RolePermissions {
    Table,
    RoleId,
    Permission,
}

#[derive(DeriveIden)]
enum UserRoles {
    Table,
    UserId,
    RoleId,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Sessions {
    Table,
    Id,
    UserId,
    UserAgent,
    Ip,
    CreatedAt,
    LastUsedAt,
    IdleExpiresAt,
    ExpiresAt,
    RevokedAt,
    RevokedReason,
}

#[derive(DeriveIden)]
enum RefreshTokens {
    Table,
    Id,
    SessionId,
    Digest,
    CreatedAt,
    RotatedAt,
}

#[derive(DeriveIden)]
enum OneTimeTokens {
    Table,
    Id,
    UserId,
    Purpose,
    Digest,
    ExpiresAt,
    UsedAt,
    CreatedAt,
}

#[derive(DeriveIden)]
enum ApiKeys {
    Table,
    Id,
    UserId,
    Name,
    Prefix,
    Digest,
    PepperId,
    Scopes,
    ExpiresAt,
    LastUsedAt,
    CreatedAt,
}

fn cascade(
    name: &str,
    from: (impl IntoIden, impl IntoIden),
    to: (impl IntoIden, impl IntoIden),
) -> ForeignKeyCreateStatement {
    ForeignKey::create()
        .name(name)
        .from(from.0, from.1)
        .to(to.0, to.1)
        .on_delete(ForeignKeyAction::Cascade)
        .to_owned()
}

// The trait is declared with an elided `SchemaManager` lifetime; impls must match it.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Users::Table)
                    .col(uuid(Users::Id).primary_key())
                    .col(string_len(Users::Email, 254))
                    .col(string_len_null(Users::FullName, 200))
                    .col(string_len(Users::PasswordHash, 255))
                    .col(
                        string_len(Users::Status, 32).check(Expr::col(Users::Status).is_in([
                            "active",
                            "pending_verification",
                            "suspended",
                            "deactivated",
                        ])),
                    )
                    .col(timestamp_with_time_zone_null(Users::EmailVerifiedAt))
                    .col(timestamp_with_time_zone(Users::PasswordChangedAt))
                    .col(timestamp_with_time_zone(Users::CreatedAt))
                    .col(timestamp_with_time_zone(Users::UpdatedAt))
                    .col(timestamp_with_time_zone_null(Users::DeletedAt))
                    .to_owned(),
            )
            .await?;
        // Emails are stored lowercased, so a plain unique index is case-insensitive uniqueness.
        manager
            .create_index(
                Index::create()
                    .name("ux_users_email")
                    .table(Users::Table)
                    .col(Users::Email)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_users_created_at")
                    .table(Users::Table)
                    .col(Users::CreatedAt)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Roles::Table)
                    .col(uuid(Roles::Id).primary_key())
                    .col(string_len(Roles::Name, 64))
                    .col(string_len(Roles::Description, 500))
                    .col(boolean(Roles::IsSystem))
                    .col(timestamp_with_time_zone(Roles::CreatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ux_roles_name")
                    .table(Roles::Table)
                    .col(Roles::Name)
                    .unique()
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Permissions::Table)
                    .col(string_len(Permissions::Name, 129).primary_key())
                    .col(string_len(Permissions::Description, 500))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(RolePermissions::Table)
                    .col(uuid(RolePermissions::RoleId))
                    .col(string_len(RolePermissions::Permission, 129))
                    .primary_key(
                        Index::create()
                            .col(RolePermissions::RoleId)
                            .col(RolePermissions::Permission),
                    )
                    .foreign_key(&mut cascade(
                        "fk_role_permissions_role",
                        (RolePermissions::Table, RolePermissions::RoleId),
                        (Roles::Table, Roles::Id),
                    ))
                    .foreign_key(&mut cascade(
                        "fk_role_permissions_permission",
                        (RolePermissions::Table, RolePermissions::Permission),
                        (Permissions::Table, Permissions::Name),
                    ))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(UserRoles::Table)
                    .col(uuid(UserRoles::UserId))
                    .col(uuid(UserRoles::RoleId))
                    .col(timestamp_with_time_zone(UserRoles::CreatedAt))
                    .primary_key(
                        Index::create()
                            .col(UserRoles::UserId)
                            .col(UserRoles::RoleId),
                    )
                    .foreign_key(&mut cascade(
                        "fk_user_roles_user",
                        (UserRoles::Table, UserRoles::UserId),
                        (Users::Table, Users::Id),
                    ))
                    .foreign_key(&mut cascade(
                        "fk_user_roles_role",
                        (UserRoles::Table, UserRoles::RoleId),
                        (Roles::Table, Roles::Id),
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_user_roles_role_id")
                    .table(UserRoles::Table)
                    .col(UserRoles::RoleId)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Sessions::Table)
                    .col(uuid(Sessions::Id).primary_key())
                    .col(uuid(Sessions::UserId))
                    .col(string_len_null(Sessions::UserAgent, 512))
                    .col(string_len_null(Sessions::Ip, 64))
                    .col(timestamp_with_time_zone(Sessions::CreatedAt))
                    .col(timestamp_with_time_zone(Sessions::LastUsedAt))
                    .col(timestamp_with_time_zone(Sessions::IdleExpiresAt))
                    .col(timestamp_with_time_zone(Sessions::ExpiresAt))
                    .col(timestamp_with_time_zone_null(Sessions::RevokedAt))
                    .col(string_len_null(Sessions::RevokedReason, 64))
                    .foreign_key(&mut cascade(
                        "fk_sessions_user",
                        (Sessions::Table, Sessions::UserId),
                        (Users::Table, Users::Id),
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_sessions_user_id")
                    .table(Sessions::Table)
                    .col(Sessions::UserId)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(RefreshTokens::Table)
                    .col(uuid(RefreshTokens::Id).primary_key())
                    .col(uuid(RefreshTokens::SessionId))
                    .col(string_len(RefreshTokens::Digest, 64))
                    .col(timestamp_with_time_zone(RefreshTokens::CreatedAt))
                    .col(timestamp_with_time_zone_null(RefreshTokens::RotatedAt))
                    .foreign_key(&mut cascade(
                        "fk_refresh_tokens_session",
                        (RefreshTokens::Table, RefreshTokens::SessionId),
                        (Sessions::Table, Sessions::Id),
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ux_refresh_tokens_digest")
                    .table(RefreshTokens::Table)
                    .col(RefreshTokens::Digest)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_refresh_tokens_session_id")
                    .table(RefreshTokens::Table)
                    .col(RefreshTokens::SessionId)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(OneTimeTokens::Table)
                    .col(uuid(OneTimeTokens::Id).primary_key())
                    .col(uuid(OneTimeTokens::UserId))
                    .col(string_len(OneTimeTokens::Purpose, 32))
                    .col(string_len(OneTimeTokens::Digest, 64))
                    .col(timestamp_with_time_zone(OneTimeTokens::ExpiresAt))
                    .col(timestamp_with_time_zone_null(OneTimeTokens::UsedAt))
                    .col(timestamp_with_time_zone(OneTimeTokens::CreatedAt))
                    .foreign_key(&mut cascade(
                        "fk_one_time_tokens_user",
                        (OneTimeTokens::Table, OneTimeTokens::UserId),
                        (Users::Table, Users::Id),
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ux_one_time_tokens_digest")
                    .table(OneTimeTokens::Table)
                    .col(OneTimeTokens::Digest)
                    .unique()
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(ApiKeys::Table)
                    .col(uuid(ApiKeys::Id).primary_key())
                    .col(uuid(ApiKeys::UserId))
                    .col(string_len(ApiKeys::Name, 100))
                    .col(string_len(ApiKeys::Prefix, 16))
                    .col(string_len(ApiKeys::Digest, 64))
                    .col(string_len(ApiKeys::PepperId, 32))
                    .col(json_binary(ApiKeys::Scopes))
                    .col(timestamp_with_time_zone_null(ApiKeys::ExpiresAt))
                    .col(timestamp_with_time_zone_null(ApiKeys::LastUsedAt))
                    .col(timestamp_with_time_zone(ApiKeys::CreatedAt))
                    .foreign_key(&mut cascade(
                        "fk_api_keys_user",
                        (ApiKeys::Table, ApiKeys::UserId),
                        (Users::Table, Users::Id),
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ux_api_keys_prefix")
                    .table(ApiKeys::Table)
                    .col(ApiKeys::Prefix)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_api_keys_user_id")
                    .table(ApiKeys::Table)
                    .col(ApiKeys::UserId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            ApiKeys::Table.into_iden(),
            OneTimeTokens::Table.into_iden(),
            RefreshTokens::Table.into_iden(),
            Sessions::Table.into_iden(),
            UserRoles::Table.into_iden(),
            RolePermissions::Table.into_iden(),
            Permissions::Table.into_iden(),
            Roles::Table.into_iden(),
            Users::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}
