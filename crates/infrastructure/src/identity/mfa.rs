//! Second factors: TOTP authenticators and recovery codes.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use keel_identity::model::TotpFactor;
use keel_identity::repository::MfaRepository;
use keel_kernel::{RepoError, Transaction, UserId};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter, QuerySelect};

use super::SeaIdentityStore;
use super::entities::{mfa_recovery_codes, mfa_totp};
use crate::error::repo_err;
use crate::unit_of_work::sea_txn;

fn factor_from(model: mfa_totp::Model) -> TotpFactor {
    TotpFactor {
        user_id: UserId::from_uuid(model.user_id),
        pepper_id: model.pepper_id,
        seed: model.seed,
        confirmed_at: model.confirmed_at,
        last_step: model.last_step,
        created_at: model.created_at,
    }
}

#[async_trait]
impl MfaRepository for SeaIdentityStore {
    async fn find(&self, user: UserId) -> Result<Option<TotpFactor>, RepoError> {
        Ok(mfa_totp::Entity::find_by_id(user.as_uuid())
            .one(&self.db)
            .await
            .map_err(repo_err)?
            .map(factor_from))
    }

    async fn find_for_update(
        &self,
        tx: &mut dyn Transaction,
        user: UserId,
    ) -> Result<Option<TotpFactor>, RepoError> {
        let txn = sea_txn(tx)?;
        Ok(mfa_totp::Entity::find_by_id(user.as_uuid())
            .lock_exclusive()
            .one(txn)
            .await
            .map_err(repo_err)?
            .map(factor_from))
    }

    async fn save(&self, tx: &mut dyn Transaction, factor: &TotpFactor) -> Result<(), RepoError> {
        let txn = sea_txn(tx)?;
        mfa_totp::Entity::delete_by_id(factor.user_id.as_uuid())
            .exec(txn)
            .await
            .map_err(repo_err)?;
        mfa_totp::Entity::insert(
            mfa_totp::Model {
                user_id: factor.user_id.as_uuid(),
                pepper_id: factor.pepper_id.clone(),
                seed: factor.seed.clone(),
                confirmed_at: factor.confirmed_at,
                last_step: factor.last_step,
                created_at: factor.created_at,
            }
            .into_active_model(),
        )
        .exec_without_returning(txn)
        .await
        .map_err(repo_err)?;
        Ok(())
    }

    async fn delete(&self, tx: &mut dyn Transaction, user: UserId) -> Result<bool, RepoError> {
        let txn = sea_txn(tx)?;
        // The authenticator's row first: a sign-in using a recovery code locks it before the
        // codes, and taking the two in the same order cannot deadlock.
        let deleted = mfa_totp::Entity::delete_by_id(user.as_uuid())
            .exec(txn)
            .await
            .map_err(repo_err)?;
        mfa_recovery_codes::Entity::delete_many()
            .filter(mfa_recovery_codes::Column::UserId.eq(user.as_uuid()))
            .exec(txn)
            .await
            .map_err(repo_err)?;
        Ok(deleted.rows_affected == 1)
    }

    async fn replace_recovery_codes(
        &self,
        tx: &mut dyn Transaction,
        user: UserId,
        pepper_id: &str,
        digests: &[String],
        at: DateTime<Utc>,
    ) -> Result<(), RepoError> {
        let txn = sea_txn(tx)?;
        mfa_recovery_codes::Entity::delete_many()
            .filter(mfa_recovery_codes::Column::UserId.eq(user.as_uuid()))
            .exec(txn)
            .await
            .map_err(repo_err)?;
        if digests.is_empty() {
            return Ok(());
        }
        mfa_recovery_codes::Entity::insert_many(digests.iter().map(|digest| {
            mfa_recovery_codes::Model {
                id: uuid::Uuid::now_v7(),
                user_id: user.as_uuid(),
                digest: digest.clone(),
                pepper_id: pepper_id.to_owned(),
                used_at: None,
                created_at: at,
            }
            .into_active_model()
        }))
        .exec_without_returning(txn)
        .await
        .map_err(repo_err)?;
        Ok(())
    }

    async fn use_recovery_code(
        &self,
        tx: &mut dyn Transaction,
        user: UserId,
        digests: &[String],
        at: DateTime<Utc>,
    ) -> Result<bool, RepoError> {
        let txn = sea_txn(tx)?;
        let candidates: Vec<uuid::Uuid> = mfa_recovery_codes::Entity::find()
            .select_only()
            .column(mfa_recovery_codes::Column::Id)
            .filter(mfa_recovery_codes::Column::UserId.eq(user.as_uuid()))
            .filter(mfa_recovery_codes::Column::Digest.is_in(digests.iter().cloned()))
            .filter(mfa_recovery_codes::Column::UsedAt.is_null())
            .into_tuple()
            .all(txn)
            .await
            .map_err(repo_err)?;
        for id in candidates {
            // Conditional on `used_at IS NULL`: of two concurrent uses, exactly one wins.
            let result = mfa_recovery_codes::Entity::update_many()
                .col_expr(mfa_recovery_codes::Column::UsedAt, Expr::value(at))
                .filter(mfa_recovery_codes::Column::Id.eq(id))
                .filter(mfa_recovery_codes::Column::UsedAt.is_null())
                .exec(txn)
                .await
                .map_err(repo_err)?;
            if result.rows_affected == 1 {
                return Ok(true);
            }
        }
        Ok(false)
    }

    async fn recovery_codes_left(&self, user: UserId) -> Result<u32, RepoError> {
        use sea_orm::PaginatorTrait;
        let left = mfa_recovery_codes::Entity::find()
            .filter(mfa_recovery_codes::Column::UserId.eq(user.as_uuid()))
            .filter(mfa_recovery_codes::Column::UsedAt.is_null())
            .count(&self.db)
            .await
            .map_err(repo_err)?;
        Ok(u32::try_from(left).unwrap_or(u32::MAX))
    }
}
