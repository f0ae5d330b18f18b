//! Sessions and their refresh tokens.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use keel_identity::model::{RefreshToken, Session, TokenId};
use keel_identity::repository::SessionRepository;
use keel_kernel::{RepoError, SessionId, Transaction, UserId};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, EntityTrait, IntoActiveModel, QueryFilter,
    QueryOrder, QuerySelect, TransactionTrait,
};
use uuid::Uuid;

use super::SeaIdentityStore;
use super::entities::{refresh_tokens, sessions};
use crate::error::repo_err;
use crate::unit_of_work::sea_txn;

pub(super) fn session_from(model: sessions::Model) -> Session {
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

pub(super) fn session_to(session: &Session) -> sessions::Model {
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

pub(super) fn refresh_from(model: refresh_tokens::Model) -> RefreshToken {
    RefreshToken {
        id: TokenId::from_uuid(model.id),
        session_id: SessionId::from_uuid(model.session_id),
        digest: model.digest,
        created_at: model.created_at,
        rotated_at: model.rotated_at,
        replaced_by: model.replaced_by.map(TokenId::from_uuid),
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
