//! Identity hardening: when a session last proved its password (re-authentication before
//! sensitive actions), and which token replaced a rotated refresh token (a short grace window
//! for two tabs refreshing at once); every outstanding reset or verification link ends.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{timestamp_with_time_zone_null, uuid_null};

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum Sessions {
    Table,
    AuthenticatedAt,
}

#[derive(DeriveIden)]
enum RefreshTokens {
    Table,
    ReplacedBy,
}

#[derive(DeriveIden)]
enum OneTimeTokens {
    Table,
    UsedAt,
}

// The trait is declared with an elided `SchemaManager` lifetime; impls must match it.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Nullable so existing rows need no rewrite: a session without it counts as
        // authenticated when it was created. One column per statement (SQLite's ALTER TABLE).
        manager
            .alter_table(
                Table::alter()
                    .table(Sessions::Table)
                    .add_column(timestamp_with_time_zone_null(Sessions::AuthenticatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(RefreshTokens::Table)
                    .add_column(uuid_null(RefreshTokens::ReplacedBy))
                    .to_owned(),
            )
            .await?;
        // Mail jobs queued before this release carried their links in clear text, and those
        // rows stay in the job tables until purged: end every outstanding reset and
        // verification link, so what a copy of those tables shows is worthless. Users ask for
        // a new link.
        let now: sea_orm_migration::sea_orm::prelude::DateTimeUtc =
            std::time::SystemTime::now().into();
        manager
            .exec_stmt(
                Query::update()
                    .table(OneTimeTokens::Table)
                    .value(OneTimeTokens::UsedAt, now)
                    .and_where(Expr::col(OneTimeTokens::UsedAt).is_null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(RefreshTokens::Table)
                    .drop_column(RefreshTokens::ReplacedBy)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Sessions::Table)
                    .drop_column(Sessions::AuthenticatedAt)
                    .to_owned(),
            )
            .await
    }
}
