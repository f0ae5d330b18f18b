//! Accounts: the `users` table and the one-time tokens of account flows (email
//! verification, password reset).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use keel_identity::model::{
    Email, OneTimeToken, Role, RoleId, TokenId, TokenPurpose, User, UserStatus,
};
use keel_identity::repository::{OneTimeTokenRepository, UserRepository};
use keel_kernel::{ListQuery, Page, Permission, PermissionSet, RepoError, Transaction, UserId};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, EntityTrait, IntoActiveModel, PaginatorTrait,
    QueryFilter, QuerySelect,
};
use uuid::Uuid;

use super::entities::{one_time_tokens, role_permissions, roles, user_roles, users};
use super::{SeaIdentityStore, corrupt};
use crate::error::repo_err;
use crate::listing::{Listable, fetch_page};
use crate::unit_of_work::sea_txn;

pub(super) fn user_from(model: users::Model) -> Result<User, RepoError> {
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

pub(super) fn user_to(user: &User) -> users::Model {
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

pub(super) fn one_time_from(model: one_time_tokens::Model) -> Result<OneTimeToken, RepoError> {
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

    async fn find_by_email_in(
        &self,
        tx: &mut dyn Transaction,
        email: &Email,
    ) -> Result<Option<User>, RepoError> {
        let txn = sea_txn(tx)?;
        users::Entity::find()
            .filter(users::Column::Email.eq(email.as_str()))
            .filter(users::Column::DeletedAt.is_null())
            .one(txn)
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

    async fn roles_of_in(
        &self,
        tx: &mut dyn Transaction,
        user: UserId,
    ) -> Result<Vec<Role>, RepoError> {
        let txn = sea_txn(tx)?;
        self.roles_where(
            txn,
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

#[cfg(test)]
mod tests {
    use keel_identity::USER_LIST_SPEC;

    use super::users;
    use crate::listing::Listable;

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
