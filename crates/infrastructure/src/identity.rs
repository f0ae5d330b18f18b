//! Identity's repositories on sea-orm: accounts, roles and the permission catalogue,
//! sessions and refresh tokens, one-time tokens and API keys.

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use keel_identity::model::{
    ApiKey, Email, OneTimeToken, PermissionInfo, RefreshToken, Role, RoleId, Session, TokenId,
    TokenPurpose, User, UserStatus,
};
use keel_identity::repository::{
    ApiKeyRepository, OneTimeTokenRepository, RoleRepository, SessionRepository, UserRepository,
};
use keel_kernel::{
    ApiKeyId, ListQuery, Page, Permission, PermissionSet, RepoError, SessionId, Transaction, UserId,
};
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, DatabaseConnection, EntityTrait,
    IntoActiveModel, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, Set, TransactionTrait,
};
use uuid::Uuid;

use crate::error::repo_err;
use crate::listing::{Listable, fetch_page};
use crate::unit_of_work::sea_txn;

/// sea-orm entities of the identity tables.
pub mod entities {
    /// `users`
    pub mod users {
        use sea_orm::entity::prelude::*;

        /// One account.
        #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
        #[sea_orm(table_name = "users")]
        pub struct Model {
            /// Id.
            #[sea_orm(primary_key, auto_increment = false)]
            pub id: Uuid,
            /// Lowercased email.
            pub email: String,
            /// Display name.
            pub full_name: Option<String>,
            /// PHC hash.
            pub password_hash: String,
            /// Status name.
            pub status: String,
            /// Verification time.
            pub email_verified_at: Option<DateTimeUtc>,
            /// Last password change.
            pub password_changed_at: DateTimeUtc,
            /// Creation.
            pub created_at: DateTimeUtc,
            /// Last change.
            pub updated_at: DateTimeUtc,
            /// Soft deletion.
            pub deleted_at: Option<DateTimeUtc>,
        }

        /// No relations declared.
        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub enum Relation {}

        impl ActiveModelBehavior for ActiveModel {}
    }

    /// `roles`
    pub mod roles {
        use sea_orm::entity::prelude::*;

        /// One role.
        #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
        #[sea_orm(table_name = "roles")]
        pub struct Model {
            /// Id.
            #[sea_orm(primary_key, auto_increment = false)]
            pub id: Uuid,
            /// Unique name.
            pub name: String,
            /// Purpose.
            pub description: String,
            /// Managed by Keel.
            pub is_system: bool,
            /// Creation.
            pub created_at: DateTimeUtc,
        }

        /// No relations declared.
        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub enum Relation {}

        impl ActiveModelBehavior for ActiveModel {}
    }

    /// `permissions`
    pub mod permissions {
        use sea_orm::entity::prelude::*;

        /// One catalogued permission.
        #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
        #[sea_orm(table_name = "permissions")]
        pub struct Model {
            /// `resource:action`.
            #[sea_orm(primary_key, auto_increment = false)]
            pub name: String,
            /// What it allows.
            pub description: String,
        }

        /// No relations declared.
        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub enum Relation {}

        impl ActiveModelBehavior for ActiveModel {}
    }

    /// `role_permissions`
    pub mod role_permissions {
        use sea_orm::entity::prelude::*;

        /// One grant of a permission to a role.
        #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
        #[sea_orm(table_name = "role_permissions")]
        pub struct Model {
            /// Role.
            #[sea_orm(primary_key, auto_increment = false)]
            pub role_id: Uuid,
            /// Permission name.
            #[sea_orm(primary_key, auto_increment = false)]
            pub permission: String,
        }

        /// No relations declared.
        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub enum Relation {}

        impl ActiveModelBehavior for ActiveModel {}
    }

    /// `user_roles`
    pub mod user_roles {
        use sea_orm::entity::prelude::*;

        /// One grant of a role to a user.
        #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
        #[sea_orm(table_name = "user_roles")]
        pub struct Model {
            /// User.
            #[sea_orm(primary_key, auto_increment = false)]
            pub user_id: Uuid,
            /// Role.
            #[sea_orm(primary_key, auto_increment = false)]
            pub role_id: Uuid,
            /// Grant time.
            pub created_at: DateTimeUtc,
        }

        /// No relations declared.
        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub enum Relation {}

        impl ActiveModelBehavior for ActiveModel {}
    }

    /// `sessions`
    pub mod sessions {
        use sea_orm::entity::prelude::*;

        /// One session.
        #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
        #[sea_orm(table_name = "sessions")]
        pub struct Model {
            /// Id (`sid`).
            #[sea_orm(primary_key, auto_increment = false)]
            pub id: Uuid,
            /// Owner.
            pub user_id: Uuid,
            /// User agent at sign-in.
            pub user_agent: Option<String>,
            /// Address at sign-in.
            pub ip: Option<String>,
            /// Sign-in.
            pub created_at: DateTimeUtc,
            /// Last password proof (null: at sign-in, for sessions older than the column).
            pub authenticated_at: Option<DateTimeUtc>,
            /// Last refresh.
            pub last_used_at: DateTimeUtc,
            /// Sliding expiry.
            pub idle_expires_at: DateTimeUtc,
            /// Absolute expiry.
            pub expires_at: DateTimeUtc,
            /// Revocation.
            pub revoked_at: Option<DateTimeUtc>,
            /// Why revoked.
            pub revoked_reason: Option<String>,
        }

        /// No relations declared.
        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub enum Relation {}

        impl ActiveModelBehavior for ActiveModel {}
    }

    /// `refresh_tokens`
    pub mod refresh_tokens {
        use sea_orm::entity::prelude::*;

        /// One refresh token digest.
        #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
        #[sea_orm(table_name = "refresh_tokens")]
        pub struct Model {
            /// Id.
            #[sea_orm(primary_key, auto_increment = false)]
            pub id: Uuid,
            /// Session.
            pub session_id: Uuid,
            /// HMAC digest.
            pub digest: String,
            /// Issue.
            pub created_at: DateTimeUtc,
            /// Exchange.
            pub rotated_at: Option<DateTimeUtc>,
            /// The token issued in exchange.
            pub replaced_by: Option<Uuid>,
        }

        /// No relations declared.
        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub enum Relation {}

        impl ActiveModelBehavior for ActiveModel {}
    }

    /// `one_time_tokens`
    pub mod one_time_tokens {
        use sea_orm::entity::prelude::*;

        /// One reset or verification token digest.
        #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
        #[sea_orm(table_name = "one_time_tokens")]
        pub struct Model {
            /// Id.
            #[sea_orm(primary_key, auto_increment = false)]
            pub id: Uuid,
            /// Owner.
            pub user_id: Uuid,
            /// Purpose name.
            pub purpose: String,
            /// HMAC digest.
            pub digest: String,
            /// Expiry.
            pub expires_at: DateTimeUtc,
            /// Use.
            pub used_at: Option<DateTimeUtc>,
            /// Issue.
            pub created_at: DateTimeUtc,
        }

        /// No relations declared.
        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub enum Relation {}

        impl ActiveModelBehavior for ActiveModel {}
    }

    /// `api_keys`
    pub mod api_keys {
        use sea_orm::entity::prelude::*;

        /// One API key.
        #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
        #[sea_orm(table_name = "api_keys")]
        pub struct Model {
            /// Id.
            #[sea_orm(primary_key, auto_increment = false)]
            pub id: Uuid,
            /// Owner.
            pub user_id: Uuid,
            /// Label.
            pub name: String,
            /// Public lookup part.
            pub prefix: String,
            /// HMAC digest of the secret part.
            pub digest: String,
            /// Pepper of the digest.
            pub pepper_id: String,
            /// JSON array of permission names.
            #[sea_orm(column_type = "JsonBinary")]
            pub scopes: Json,
            /// Expiry.
            pub expires_at: Option<DateTimeUtc>,
            /// Last use.
            pub last_used_at: Option<DateTimeUtc>,
            /// Creation.
            pub created_at: DateTimeUtc,
        }

        /// No relations declared.
        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub enum Relation {}

        impl ActiveModelBehavior for ActiveModel {}
    }
}

use entities::{
    api_keys, one_time_tokens, permissions, refresh_tokens, role_permissions, roles, sessions,
    user_roles, users,
};

fn corrupt(what: &str, detail: impl std::fmt::Display) -> RepoError {
    RepoError::Other(format!("stored {what} is invalid: {detail}").into())
}

fn user_from(model: users::Model) -> Result<User, RepoError> {
    Ok(User {
        id: UserId::from_uuid(model.id),
        email: Email::parse(&model.email).map_err(|e| corrupt("email", e))?,
        full_name: model.full_name,
        password_hash: model.password_hash,
        status: model
            .status
            .parse::<UserStatus>()
            .map_err(|e| corrupt("status", e))?,
        email_verified_at: model.email_verified_at,
        password_changed_at: model.password_changed_at,
        created_at: model.created_at,
        updated_at: model.updated_at,
        deleted_at: model.deleted_at,
    })
}

fn user_to(user: &User) -> users::Model {
    users::Model {
        id: user.id.as_uuid(),
        email: user.email.as_str().to_owned(),
        full_name: user.full_name.clone(),
        password_hash: user.password_hash.clone(),
        status: user.status.as_str().to_owned(),
        email_verified_at: user.email_verified_at,
        password_changed_at: user.password_changed_at,
        created_at: user.created_at,
        updated_at: user.updated_at,
        deleted_at: user.deleted_at,
    }
}

fn session_from(model: sessions::Model) -> Session {
    Session {
        id: SessionId::from_uuid(model.id),
        user_id: UserId::from_uuid(model.user_id),
        user_agent: model.user_agent,
        ip: model.ip,
        created_at: model.created_at,
        authenticated_at: model.authenticated_at.unwrap_or(model.created_at),
        last_used_at: model.last_used_at,
        idle_expires_at: model.idle_expires_at,
        expires_at: model.expires_at,
        revoked_at: model.revoked_at,
        revoked_reason: model.revoked_reason,
    }
}

fn session_to(session: &Session) -> sessions::Model {
    sessions::Model {
        id: session.id.as_uuid(),
        user_id: session.user_id.as_uuid(),
        user_agent: session.user_agent.clone(),
        ip: session.ip.clone(),
        created_at: session.created_at,
        authenticated_at: Some(session.authenticated_at),
        last_used_at: session.last_used_at,
        idle_expires_at: session.idle_expires_at,
        expires_at: session.expires_at,
        revoked_at: session.revoked_at,
        revoked_reason: session.revoked_reason.clone(),
    }
}

fn scopes_from(json: &serde_json::Value) -> Result<PermissionSet, RepoError> {
    json.as_array()
        .ok_or_else(|| corrupt("API key scopes", "not an array"))?
        .iter()
        .map(|v| {
            v.as_str()
                .and_then(|name| Permission::parse(name).ok())
                .ok_or_else(|| corrupt("API key scope", v))
        })
        .collect()
}

fn api_key_from(model: api_keys::Model) -> Result<ApiKey, RepoError> {
    Ok(ApiKey {
        id: ApiKeyId::from_uuid(model.id),
        user_id: UserId::from_uuid(model.user_id),
        name: model.name,
        prefix: model.prefix,
        digest: model.digest,
        pepper_id: model.pepper_id,
        scopes: scopes_from(&model.scopes)?,
        expires_at: model.expires_at,
        last_used_at: model.last_used_at,
        created_at: model.created_at,
    })
}

fn one_time_from(model: one_time_tokens::Model) -> Result<OneTimeToken, RepoError> {
    Ok(OneTimeToken {
        id: TokenId::from_uuid(model.id),
        user_id: UserId::from_uuid(model.user_id),
        purpose: model
            .purpose
            .parse::<TokenPurpose>()
            .map_err(|e| corrupt("token purpose", e))?,
        digest: model.digest,
        expires_at: model.expires_at,
        used_at: model.used_at,
        created_at: model.created_at,
    })
}

fn refresh_from(model: refresh_tokens::Model) -> RefreshToken {
    RefreshToken {
        id: TokenId::from_uuid(model.id),
        session_id: SessionId::from_uuid(model.session_id),
        digest: model.digest,
        created_at: model.created_at,
        rotated_at: model.rotated_at,
        replaced_by: model.replaced_by.map(TokenId::from_uuid),
    }
}

impl Listable for users::Entity {
    fn column(field: &str) -> Option<users::Column> {
        Some(match field {
            "id" => users::Column::Id,
            "created_at" => users::Column::CreatedAt,
            "email" => users::Column::Email,
            "status" => users::Column::Status,
            "deleted_at" => users::Column::DeletedAt,
            _ => return None,
        })
    }

    fn search_columns() -> &'static [users::Column] {
        &[users::Column::Email, users::Column::FullName]
    }
}

/// Every identity repository on one connection pool.
#[derive(Debug, Clone)]
pub struct SeaIdentityStore {
    db: DatabaseConnection,
}

impl SeaIdentityStore {
    /// The store on this pool.
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }

    /// Roles matching `condition` (on `roles.id`), with their permissions, by name. The two
    /// queries run concurrently.
    async fn roles_where<C: ConnectionTrait>(
        &self,
        db: &C,
        role_ids: sea_orm::sea_query::SimpleExpr,
        permission_role_ids: sea_orm::sea_query::SimpleExpr,
    ) -> Result<Vec<Role>, RepoError> {
        let (rows, grants) = tokio::try_join!(
            roles::Entity::find()
                .filter(role_ids)
                .order_by_asc(roles::Column::Name)
                .all(db),
            role_permissions::Entity::find()
                .filter(permission_role_ids)
                .all(db),
        )
        .map_err(repo_err)?;
        let mut by_role: BTreeMap<Uuid, BTreeSet<String>> = BTreeMap::new();
        for grant in grants {
            by_role
                .entry(grant.role_id)
                .or_default()
                .insert(grant.permission);
        }
        rows.into_iter()
            .map(|row| {
                let permissions = by_role
                    .remove(&row.id)
                    .unwrap_or_default()
                    .iter()
                    .map(|name| Permission::parse(name).map_err(|e| corrupt("permission", e)))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Role {
                    id: RoleId::from_uuid(row.id),
                    name: row.name,
                    description: row.description,
                    is_system: row.is_system,
                    permissions,
                    created_at: row.created_at,
                })
            })
            .collect()
    }

    /// Roles with these ids.
    async fn roles_by_ids<C: ConnectionTrait>(
        &self,
        db: &C,
        ids: Vec<Uuid>,
    ) -> Result<Vec<Role>, RepoError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        self.roles_where(
            db,
            roles::Column::Id.is_in(ids.clone()),
            role_permissions::Column::RoleId.is_in(ids),
        )
        .await
    }

    /// `SELECT role_id FROM user_roles WHERE user_id = ?`, for use as a subquery.
    fn role_ids_of(user: UserId) -> sea_orm::sea_query::SelectStatement {
        sea_orm::sea_query::Query::select()
            .column(user_roles::Column::RoleId)
            .from(user_roles::Entity)
            .and_where(user_roles::Column::UserId.eq(user.as_uuid()))
            .to_owned()
    }
}

#[async_trait]
impl UserRepository for SeaIdentityStore {
    async fn list(&self, query: &ListQuery) -> Result<Page<User>, RepoError> {
        let page = fetch_page(&self.db, users::Entity::find(), query).await?;
        page.try_map(user_from)
    }

    async fn find(&self, id: UserId) -> Result<Option<User>, RepoError> {
        users::Entity::find_by_id(id.as_uuid())
            .one(&self.db)
            .await
            .map_err(repo_err)?
            .map(user_from)
            .transpose()
    }

    async fn find_by_email(&self, email: &Email) -> Result<Option<User>, RepoError> {
        users::Entity::find()
            .filter(users::Column::Email.eq(email.as_str()))
            .filter(users::Column::DeletedAt.is_null())
            .one(&self.db)
            .await
            .map_err(repo_err)?
            .map(user_from)
            .transpose()
    }

    async fn find_in(
        &self,
        tx: &mut dyn Transaction,
        id: UserId,
    ) -> Result<Option<User>, RepoError> {
        let txn = sea_txn(tx)?;
        users::Entity::find_by_id(id.as_uuid())
            .one(txn)
            .await
            .map_err(repo_err)?
            .map(user_from)
            .transpose()
    }

    async fn find_for_update(
        &self,
        tx: &mut dyn Transaction,
        id: UserId,
    ) -> Result<Option<User>, RepoError> {
        let txn = sea_txn(tx)?;
        users::Entity::find_by_id(id.as_uuid())
            .lock_exclusive()
            .one(txn)
            .await
            .map_err(repo_err)?
            .map(user_from)
            .transpose()
    }

    async fn insert(&self, tx: &mut dyn Transaction, user: &User) -> Result<(), RepoError> {
        let txn = sea_txn(tx)?;
        users::Entity::insert(user_to(user).into_active_model())
            .exec_without_returning(txn)
            .await
            .map_err(repo_err)?;
        Ok(())
    }

    async fn update(&self, tx: &mut dyn Transaction, user: &User) -> Result<(), RepoError> {
        let txn = sea_txn(tx)?;
        users::Entity::update(user_to(user).into_active_model().reset_all())
            .exec(txn)
            .await
            .map_err(repo_err)?;
        Ok(())
    }

    async fn roles_of(&self, user: UserId) -> Result<Vec<Role>, RepoError> {
        self.roles_where(
            &self.db,
            roles::Column::Id.in_subquery(Self::role_ids_of(user)),
            role_permissions::Column::RoleId.in_subquery(Self::role_ids_of(user)),
        )
        .await
    }

    async fn permissions_of(&self, user: UserId) -> Result<PermissionSet, RepoError> {
        role_permissions::Entity::find()
            .filter(role_permissions::Column::RoleId.in_subquery(Self::role_ids_of(user)))
            .all(&self.db)
            .await
            .map_err(repo_err)?
            .into_iter()
            .map(|grant| Permission::parse(&grant.permission).map_err(|e| corrupt("permission", e)))
            .collect()
    }

    async fn grant_role(
        &self,
        tx: &mut dyn Transaction,
        user: UserId,
        role: RoleId,
        at: DateTime<Utc>,
    ) -> Result<bool, RepoError> {
        let txn = sea_txn(tx)?;
        let existing = user_roles::Entity::find_by_id((user.as_uuid(), role.as_uuid()))
            .one(txn)
            .await
            .map_err(repo_err)?;
        if existing.is_some() {
            return Ok(false);
        }
        user_roles::Entity::insert(
            user_roles::Model {
                user_id: user.as_uuid(),
                role_id: role.as_uuid(),
                created_at: at,
            }
            .into_active_model(),
        )
        .exec_without_returning(txn)
        .await
        .map_err(repo_err)?;
        Ok(true)
    }

    async fn revoke_role(
        &self,
        tx: &mut dyn Transaction,
        user: UserId,
        role: RoleId,
    ) -> Result<bool, RepoError> {
        let txn = sea_txn(tx)?;
        let result = user_roles::Entity::delete_by_id((user.as_uuid(), role.as_uuid()))
            .exec(txn)
            .await
            .map_err(repo_err)?;
        Ok(result.rows_affected > 0)
    }

    async fn count_active_with_role(
        &self,
        tx: &mut dyn Transaction,
        role: RoleId,
    ) -> Result<u64, RepoError> {
        let txn = sea_txn(tx)?;
        let holders: Vec<Uuid> = user_roles::Entity::find()
            .filter(user_roles::Column::RoleId.eq(role.as_uuid()))
            .all(txn)
            .await
            .map_err(repo_err)?
            .into_iter()
            .map(|grant| grant.user_id)
            .collect();
        if holders.is_empty() {
            return Ok(0);
        }
        users::Entity::find()
            .filter(users::Column::Id.is_in(holders))
            .filter(users::Column::Status.eq(UserStatus::Active.as_str()))
            .filter(users::Column::DeletedAt.is_null())
            .count(txn)
            .await
            .map_err(repo_err)
    }

    async fn holds_role(
        &self,
        tx: &mut dyn Transaction,
        user: UserId,
        role: RoleId,
    ) -> Result<bool, RepoError> {
        let txn = sea_txn(tx)?;
        Ok(
            user_roles::Entity::find_by_id((user.as_uuid(), role.as_uuid()))
                .one(txn)
                .await
                .map_err(repo_err)?
                .is_some(),
        )
    }

    async fn holders_of(&self, role: RoleId) -> Result<Vec<UserId>, RepoError> {
        Ok(user_roles::Entity::find()
            .filter(user_roles::Column::RoleId.eq(role.as_uuid()))
            .all(&self.db)
            .await
            .map_err(repo_err)?
            .into_iter()
            .map(|grant| UserId::from_uuid(grant.user_id))
            .collect())
    }
}

#[async_trait]
impl RoleRepository for SeaIdentityStore {
    async fn list(&self) -> Result<Vec<Role>, RepoError> {
        let ids = roles::Entity::find()
            .all(&self.db)
            .await
            .map_err(repo_err)?
            .into_iter()
            .map(|r| r.id)
            .collect();
        self.roles_by_ids(&self.db, ids).await
    }

    async fn find(&self, id: RoleId) -> Result<Option<Role>, RepoError> {
        Ok(self.roles_by_ids(&self.db, vec![id.as_uuid()]).await?.pop())
    }

    async fn find_by_name(&self, name: &str) -> Result<Option<Role>, RepoError> {
        let Some(row) = roles::Entity::find()
            .filter(roles::Column::Name.eq(name))
            .one(&self.db)
            .await
            .map_err(repo_err)?
        else {
            return Ok(None);
        };
        Ok(self.roles_by_ids(&self.db, vec![row.id]).await?.pop())
    }

    async fn find_by_name_in(
        &self,
        tx: &mut dyn Transaction,
        name: &str,
    ) -> Result<Option<Role>, RepoError> {
        let txn = sea_txn(tx)?;
        let Some(row) = roles::Entity::find()
            .filter(roles::Column::Name.eq(name))
            .one(txn)
            .await
            .map_err(repo_err)?
        else {
            return Ok(None);
        };
        Ok(self.roles_by_ids(txn, vec![row.id]).await?.pop())
    }

    async fn insert(&self, tx: &mut dyn Transaction, role: &Role) -> Result<(), RepoError> {
        let txn = sea_txn(tx)?;
        roles::Entity::insert(
            roles::Model {
                id: role.id.as_uuid(),
                name: role.name.clone(),
                description: role.description.clone(),
                is_system: role.is_system,
                created_at: role.created_at,
            }
            .into_active_model(),
        )
        .exec_without_returning(txn)
        .await
        .map_err(repo_err)?;
        let permissions: PermissionSet = role.permissions.iter().cloned().collect();
        self.set_permissions(tx, role.id, &permissions).await
    }

    async fn set_permissions(
        &self,
        tx: &mut dyn Transaction,
        role: RoleId,
        permissions: &PermissionSet,
    ) -> Result<(), RepoError> {
        let txn = sea_txn(tx)?;
        role_permissions::Entity::delete_many()
            .filter(role_permissions::Column::RoleId.eq(role.as_uuid()))
            .exec(txn)
            .await
            .map_err(repo_err)?;
        let rows: Vec<role_permissions::ActiveModel> = permissions
            .iter()
            .map(|p| role_permissions::ActiveModel {
                role_id: Set(role.as_uuid()),
                permission: Set(p.to_string()),
            })
            .collect();
        if !rows.is_empty() {
            role_permissions::Entity::insert_many(rows)
                .exec_without_returning(txn)
                .await
                .map_err(repo_err)?;
        }
        Ok(())
    }

    async fn lock(&self, tx: &mut dyn Transaction, id: RoleId) -> Result<(), RepoError> {
        let txn = sea_txn(tx)?;
        roles::Entity::find_by_id(id.as_uuid())
            .lock_exclusive()
            .one(txn)
            .await
            .map_err(repo_err)?;
        Ok(())
    }

    async fn upsert_permissions(
        &self,
        tx: &mut dyn Transaction,
        catalog: &[PermissionInfo],
    ) -> Result<(), RepoError> {
        let txn = sea_txn(tx)?;
        for info in catalog {
            permissions::Entity::insert(permissions::ActiveModel {
                name: Set(info.name.to_string()),
                description: Set(info.description.clone()),
            })
            .on_conflict(
                OnConflict::column(permissions::Column::Name)
                    .update_column(permissions::Column::Description)
                    .to_owned(),
            )
            .exec_without_returning(txn)
            .await
            .map_err(repo_err)?;
        }
        Ok(())
    }

    async fn list_permissions(&self) -> Result<Vec<PermissionInfo>, RepoError> {
        permissions::Entity::find()
            .order_by_asc(permissions::Column::Name)
            .all(&self.db)
            .await
            .map_err(repo_err)?
            .into_iter()
            .map(|row| {
                Ok(PermissionInfo {
                    name: Permission::parse(&row.name).map_err(|e| corrupt("permission", e))?,
                    description: row.description,
                })
            })
            .collect()
    }
}

#[async_trait]
impl SessionRepository for SeaIdentityStore {
    async fn find(&self, id: SessionId) -> Result<Option<Session>, RepoError> {
        Ok(sessions::Entity::find_by_id(id.as_uuid())
            .one(&self.db)
            .await
            .map_err(repo_err)?
            .map(session_from))
    }

    async fn find_for_update(
        &self,
        tx: &mut dyn Transaction,
        id: SessionId,
    ) -> Result<Option<Session>, RepoError> {
        let txn = sea_txn(tx)?;
        Ok(sessions::Entity::find_by_id(id.as_uuid())
            .lock_exclusive()
            .one(txn)
            .await
            .map_err(repo_err)?
            .map(session_from))
    }

    async fn insert(&self, tx: &mut dyn Transaction, session: &Session) -> Result<(), RepoError> {
        let txn = sea_txn(tx)?;
        sessions::Entity::insert(session_to(session).into_active_model())
            .exec_without_returning(txn)
            .await
            .map_err(repo_err)?;
        Ok(())
    }

    async fn update(&self, tx: &mut dyn Transaction, session: &Session) -> Result<(), RepoError> {
        let txn = sea_txn(tx)?;
        sessions::Entity::update(session_to(session).into_active_model().reset_all())
            .exec(txn)
            .await
            .map_err(repo_err)?;
        Ok(())
    }

    async fn live_for_user(
        &self,
        user: UserId,
        now: DateTime<Utc>,
    ) -> Result<Vec<Session>, RepoError> {
        Ok(sessions::Entity::find()
            .filter(sessions::Column::UserId.eq(user.as_uuid()))
            .filter(sessions::Column::RevokedAt.is_null())
            .filter(sessions::Column::ExpiresAt.gt(now))
            .order_by_desc(sessions::Column::CreatedAt)
            .all(&self.db)
            .await
            .map_err(repo_err)?
            .into_iter()
            .map(session_from)
            .collect())
    }

    async fn revoke_all(
        &self,
        tx: &mut dyn Transaction,
        user: UserId,
        keep: Option<SessionId>,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<SessionId>, RepoError> {
        let txn = sea_txn(tx)?;
        let mut live = sessions::Entity::find()
            .filter(sessions::Column::UserId.eq(user.as_uuid()))
            .filter(sessions::Column::RevokedAt.is_null())
            .filter(sessions::Column::ExpiresAt.gt(now));
        if let Some(keep) = keep {
            live = live.filter(sessions::Column::Id.ne(keep.as_uuid()));
        }
        let ids: Vec<Uuid> = live
            .all(txn)
            .await
            .map_err(repo_err)?
            .into_iter()
            .map(|s| s.id)
            .collect();
        if !ids.is_empty() {
            sessions::Entity::update_many()
                .col_expr(
                    sessions::Column::RevokedAt,
                    sea_orm::sea_query::Expr::value(now),
                )
                .col_expr(
                    sessions::Column::RevokedReason,
                    sea_orm::sea_query::Expr::value(reason),
                )
                .filter(sessions::Column::Id.is_in(ids.clone()))
                .exec(txn)
                .await
                .map_err(repo_err)?;
        }
        Ok(ids.into_iter().map(SessionId::from_uuid).collect())
    }

    async fn insert_refresh_token(
        &self,
        tx: &mut dyn Transaction,
        token: &RefreshToken,
    ) -> Result<(), RepoError> {
        let txn = sea_txn(tx)?;
        refresh_tokens::Entity::insert(
            refresh_tokens::Model {
                id: token.id.as_uuid(),
                session_id: token.session_id.as_uuid(),
                digest: token.digest.clone(),
                created_at: token.created_at,
                rotated_at: token.rotated_at,
                replaced_by: token.replaced_by.map(|id| id.as_uuid()),
            }
            .into_active_model(),
        )
        .exec_without_returning(txn)
        .await
        .map_err(repo_err)?;
        Ok(())
    }

    async fn lookup_refresh_token(
        &self,
        digests: &[String],
    ) -> Result<Option<RefreshToken>, RepoError> {
        Ok(refresh_tokens::Entity::find()
            .filter(refresh_tokens::Column::Digest.is_in(digests.iter().cloned()))
            .one(&self.db)
            .await
            .map_err(repo_err)?
            .map(refresh_from))
    }

    async fn find_refresh_token_by_id(
        &self,
        tx: &mut dyn Transaction,
        id: TokenId,
    ) -> Result<Option<RefreshToken>, RepoError> {
        let txn = sea_txn(tx)?;
        Ok(refresh_tokens::Entity::find_by_id(id.as_uuid())
            .one(txn)
            .await
            .map_err(repo_err)?
            .map(refresh_from))
    }

    async fn mark_rotated(
        &self,
        tx: &mut dyn Transaction,
        id: TokenId,
        successor: TokenId,
        at: DateTime<Utc>,
    ) -> Result<bool, RepoError> {
        let txn = sea_txn(tx)?;
        // Conditional on `rotated_at IS NULL`: of two exchanges, exactly one updates a row.
        let result = refresh_tokens::Entity::update_many()
            .col_expr(
                refresh_tokens::Column::RotatedAt,
                sea_orm::sea_query::Expr::value(at),
            )
            .col_expr(
                refresh_tokens::Column::ReplacedBy,
                sea_orm::sea_query::Expr::value(successor.as_uuid()),
            )
            .filter(refresh_tokens::Column::Id.eq(id.as_uuid()))
            .filter(refresh_tokens::Column::RotatedAt.is_null())
            .exec(txn)
            .await
            .map_err(repo_err)?;
        Ok(result.rows_affected == 1)
    }

    async fn purge_ended(&self, before: DateTime<Utc>) -> Result<u64, RepoError> {
        let ended = Condition::any()
            .add(sessions::Column::ExpiresAt.lt(before))
            .add(sessions::Column::IdleExpiresAt.lt(before))
            .add(sessions::Column::RevokedAt.lt(before));
        let txn = self.db.begin().await.map_err(repo_err)?;
        // Refresh tokens first: the foreign key cascades too, but not on a SQLite connection
        // opened without `foreign_keys`.
        refresh_tokens::Entity::delete_many()
            .filter(
                refresh_tokens::Column::SessionId.in_subquery(
                    sea_orm::sea_query::Query::select()
                        .column(sessions::Column::Id)
                        .from(sessions::Entity)
                        .cond_where(ended.clone())
                        .to_owned(),
                ),
            )
            .exec(&txn)
            .await
            .map_err(repo_err)?;
        let result = sessions::Entity::delete_many()
            .filter(ended)
            .exec(&txn)
            .await
            .map_err(repo_err)?;
        txn.commit().await.map_err(repo_err)?;
        Ok(result.rows_affected)
    }
}

#[async_trait]
impl OneTimeTokenRepository for SeaIdentityStore {
    async fn insert(
        &self,
        tx: &mut dyn Transaction,
        token: &OneTimeToken,
    ) -> Result<(), RepoError> {
        let txn = sea_txn(tx)?;
        one_time_tokens::Entity::insert(
            one_time_tokens::Model {
                id: token.id.as_uuid(),
                user_id: token.user_id.as_uuid(),
                purpose: token.purpose.as_str().to_owned(),
                digest: token.digest.clone(),
                expires_at: token.expires_at,
                used_at: token.used_at,
                created_at: token.created_at,
            }
            .into_active_model(),
        )
        .exec_without_returning(txn)
        .await
        .map_err(repo_err)?;
        Ok(())
    }

    async fn find(
        &self,
        purpose: TokenPurpose,
        digests: &[String],
    ) -> Result<Option<OneTimeToken>, RepoError> {
        one_time_tokens::Entity::find()
            .filter(one_time_tokens::Column::Purpose.eq(purpose.as_str()))
            .filter(one_time_tokens::Column::Digest.is_in(digests.iter().cloned()))
            .one(&self.db)
            .await
            .map_err(repo_err)?
            .map(one_time_from)
            .transpose()
    }

    async fn consume(
        &self,
        tx: &mut dyn Transaction,
        id: TokenId,
        at: DateTime<Utc>,
    ) -> Result<bool, RepoError> {
        let txn = sea_txn(tx)?;
        // Conditional on `used_at IS NULL`: of two concurrent uses, exactly one updates a row.
        let result = one_time_tokens::Entity::update_many()
            .col_expr(
                one_time_tokens::Column::UsedAt,
                sea_orm::sea_query::Expr::value(at),
            )
            .filter(one_time_tokens::Column::Id.eq(id.as_uuid()))
            .filter(one_time_tokens::Column::UsedAt.is_null())
            .exec(txn)
            .await
            .map_err(repo_err)?;
        Ok(result.rows_affected == 1)
    }

    async fn consume_all(
        &self,
        tx: &mut dyn Transaction,
        user: UserId,
        purpose: TokenPurpose,
        at: DateTime<Utc>,
    ) -> Result<u64, RepoError> {
        let txn = sea_txn(tx)?;
        let result = one_time_tokens::Entity::update_many()
            .col_expr(
                one_time_tokens::Column::UsedAt,
                sea_orm::sea_query::Expr::value(at),
            )
            .filter(one_time_tokens::Column::UserId.eq(user.as_uuid()))
            .filter(one_time_tokens::Column::Purpose.eq(purpose.as_str()))
            .filter(one_time_tokens::Column::UsedAt.is_null())
            .exec(txn)
            .await
            .map_err(repo_err)?;
        Ok(result.rows_affected)
    }

    async fn purge(&self, before: DateTime<Utc>) -> Result<u64, RepoError> {
        let result = one_time_tokens::Entity::delete_many()
            .filter(
                Condition::any()
                    .add(one_time_tokens::Column::ExpiresAt.lt(before))
                    .add(one_time_tokens::Column::UsedAt.lt(before)),
            )
            .exec(&self.db)
            .await
            .map_err(repo_err)?;
        Ok(result.rows_affected)
    }
}

#[async_trait]
impl ApiKeyRepository for SeaIdentityStore {
    async fn insert(&self, tx: &mut dyn Transaction, key: &ApiKey) -> Result<(), RepoError> {
        let txn = sea_txn(tx)?;
        let scopes: Vec<String> = key.scopes.iter().map(ToString::to_string).collect();
        api_keys::Entity::insert(
            api_keys::Model {
                id: key.id.as_uuid(),
                user_id: key.user_id.as_uuid(),
                name: key.name.clone(),
                prefix: key.prefix.clone(),
                digest: key.digest.clone(),
                pepper_id: key.pepper_id.clone(),
                scopes: serde_json::json!(scopes),
                expires_at: key.expires_at,
                last_used_at: key.last_used_at,
                created_at: key.created_at,
            }
            .into_active_model(),
        )
        .exec_without_returning(txn)
        .await
        .map_err(repo_err)?;
        Ok(())
    }

    async fn list_for_owner(&self, owner: UserId) -> Result<Vec<ApiKey>, RepoError> {
        api_keys::Entity::find()
            .filter(api_keys::Column::UserId.eq(owner.as_uuid()))
            .order_by_desc(api_keys::Column::CreatedAt)
            .all(&self.db)
            .await
            .map_err(repo_err)?
            .into_iter()
            .map(api_key_from)
            .collect()
    }

    async fn find_by_prefix(&self, prefix: &str) -> Result<Option<ApiKey>, RepoError> {
        api_keys::Entity::find()
            .filter(api_keys::Column::Prefix.eq(prefix))
            .one(&self.db)
            .await
            .map_err(repo_err)?
            .map(api_key_from)
            .transpose()
    }

    async fn delete(
        &self,
        tx: &mut dyn Transaction,
        owner: UserId,
        id: ApiKeyId,
    ) -> Result<bool, RepoError> {
        let txn = sea_txn(tx)?;
        let result = api_keys::Entity::delete_many()
            .filter(api_keys::Column::Id.eq(id.as_uuid()))
            .filter(api_keys::Column::UserId.eq(owner.as_uuid()))
            .exec(txn)
            .await
            .map_err(repo_err)?;
        Ok(result.rows_affected > 0)
    }

    async fn delete_all_for(
        &self,
        tx: &mut dyn Transaction,
        owner: UserId,
    ) -> Result<u64, RepoError> {
        let txn = sea_txn(tx)?;
        let result = api_keys::Entity::delete_many()
            .filter(api_keys::Column::UserId.eq(owner.as_uuid()))
            .exec(txn)
            .await
            .map_err(repo_err)?;
        Ok(result.rows_affected)
    }

    async fn touch(&self, id: ApiKeyId, at: DateTime<Utc>) -> Result<(), RepoError> {
        api_keys::Entity::update_many()
            .col_expr(
                api_keys::Column::LastUsedAt,
                sea_orm::sea_query::Expr::value(at),
            )
            .filter(api_keys::Column::Id.eq(id.as_uuid()))
            .exec(&self.db)
            .await
            .map_err(repo_err)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use keel_identity::USER_LIST_SPEC;

    use super::*;

    #[test]
    fn every_listable_user_field_has_a_column() {
        for field in USER_LIST_SPEC.fields {
            assert!(
                <users::Entity as Listable>::column(field.name).is_some(),
                "{}",
                field.name
            );
        }
    }
}
