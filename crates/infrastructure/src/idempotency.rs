//! Idempotency keys in the database (`idempotency_keys`): one row per caller and key, claimed
//! atomically by an insert, so every replica agrees on who runs a request.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use keel_kernel::idempotency::{Claim, IdempotencyStore, RETENTION, StoredResponse};
use keel_kernel::{RepoError, Transaction};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, Condition, DatabaseConnection, EntityTrait, IntoActiveModel, QueryFilter,
    TryInsertResult,
};

use crate::error::repo_err;
use crate::unit_of_work::sea_txn;

/// The sea-orm entity of `idempotency_keys`.
pub mod entity {
    use sea_orm::entity::prelude::*;

    /// One key of one caller.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "idempotency_keys")]
    pub struct Model {
        /// `user:<id>` or `ip:<client>`.
        #[sea_orm(primary_key, auto_increment = false)]
        pub scope: String,
        /// The caller's key.
        #[sea_orm(primary_key, auto_increment = false)]
        pub key: String,
        /// SHA-256 of method, path and body.
        pub fingerprint: String,
        /// `in_progress`, `committed` (the effect committed, the answer not yet stored) or
        /// `completed`.
        pub state: String,
        /// The current claim's token.
        pub claim_token: String,
        /// The answer's status.
        pub status: Option<i32>,
        /// The answer's replayed headers, as JSON pairs.
        pub headers: Option<String>,
        /// The answer's body.
        pub body: Option<Vec<u8>>,
        /// First claim.
        pub created_at: DateTimeUtc,
        /// Latest claim (a takeover after the lease moves it).
        pub claimed_at: DateTimeUtc,
    }

    /// No relations declared.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

use entity::{Column, Entity, Model};

const IN_PROGRESS: &str = "in_progress";
const COMMITTED: &str = "committed";
const COMPLETED: &str = "completed";

/// Idempotency keys on the app's connection pool.
#[derive(Debug, Clone)]
pub struct SeaIdempotencyStore {
    db: DatabaseConnection,
}

impl SeaIdempotencyStore {
    /// The store on this pool.
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }
}

fn delta(duration: std::time::Duration) -> chrono::TimeDelta {
    chrono::TimeDelta::from_std(duration).unwrap_or(chrono::TimeDelta::MAX)
}

fn stored(model: Model) -> Result<StoredResponse, RepoError> {
    let headers: Vec<(String, String)> = match model.headers.as_deref() {
        Some(json) => serde_json::from_str(json)
            .map_err(|e| RepoError::Other(format!("idempotency headers: {e}").into()))?,
        None => Vec::new(),
    };
    Ok(StoredResponse {
        status: u16::try_from(model.status.unwrap_or(500))
            .map_err(|e| RepoError::Other(format!("idempotency status: {e}").into()))?,
        headers,
        body: model.body.unwrap_or_default(),
    })
}

#[async_trait]
impl IdempotencyStore for SeaIdempotencyStore {
    async fn claim(
        &self,
        scope: &str,
        key: &str,
        fingerprint: &str,
        now: DateTime<Utc>,
        lease: std::time::Duration,
    ) -> Result<Claim, RepoError> {
        let token = uuid::Uuid::new_v4().to_string();
        let fresh = Model {
            scope: scope.to_owned(),
            key: key.to_owned(),
            fingerprint: fingerprint.to_owned(),
            state: IN_PROGRESS.to_owned(),
            claim_token: token.clone(),
            status: None,
            headers: None,
            body: None,
            created_at: now,
            claimed_at: now,
        };
        // The insert is the lock: of two first uses, exactly one adds the row.
        let inserted = Entity::insert(fresh.into_active_model())
            .on_conflict_do_nothing_on([Column::Scope, Column::Key])
            .exec_without_returning(&self.db)
            .await
            .map_err(repo_err)?;
        if matches!(inserted, TryInsertResult::Inserted(1)) {
            return Ok(Claim::Started(token));
        }
        // Taken over, atomically, when the old claim expired (24 h) or was abandoned mid-run
        // (a process killed while holding it).
        let expired = now - delta(RETENTION);
        let abandoned = now - delta(lease);
        let taken = Entity::update_many()
            .col_expr(Column::Fingerprint, Expr::value(fingerprint))
            .col_expr(Column::State, Expr::value(IN_PROGRESS))
            .col_expr(Column::ClaimToken, Expr::value(token.clone()))
            .col_expr(Column::Status, Expr::value(Option::<i32>::None))
            .col_expr(Column::Headers, Expr::value(Option::<String>::None))
            .col_expr(Column::Body, Expr::value(Option::<Vec<u8>>::None))
            .col_expr(Column::CreatedAt, Expr::value(now))
            .col_expr(Column::ClaimedAt, Expr::value(now))
            .filter(Column::Scope.eq(scope))
            .filter(Column::Key.eq(key))
            .filter(
                Condition::any().add(Column::CreatedAt.lt(expired)).add(
                    Condition::all()
                        .add(Column::State.eq(IN_PROGRESS))
                        .add(Column::ClaimedAt.lt(abandoned))
                        .add(Column::Fingerprint.eq(fingerprint)),
                ),
            )
            .exec(&self.db)
            .await
            .map_err(repo_err)?;
        if taken.rows_affected == 1 {
            return Ok(Claim::Started(token));
        }
        let Some(row) = Entity::find_by_id((scope.to_owned(), key.to_owned()))
            .one(&self.db)
            .await
            .map_err(repo_err)?
        else {
            // Released between our insert and our read: the caller may simply retry.
            return Ok(Claim::InProgress);
        };
        if row.fingerprint != fingerprint {
            return Ok(Claim::Mismatch);
        }
        if row.state == COMPLETED {
            return stored(row).map(Claim::Completed);
        }
        if row.state == COMMITTED && row.claimed_at < abandoned {
            // Its process died between committing and storing the answer.
            return Ok(Claim::AnswerLost);
        }
        Ok(Claim::InProgress)
    }

    async fn complete(
        &self,
        scope: &str,
        key: &str,
        token: &str,
        response: &StoredResponse,
    ) -> Result<(), RepoError> {
        let headers = serde_json::to_string(&response.headers)
            .map_err(|e| RepoError::Other(format!("idempotency headers: {e}").into()))?;
        Entity::update_many()
            .col_expr(Column::State, Expr::value(COMPLETED))
            .col_expr(Column::Status, Expr::value(i32::from(response.status)))
            .col_expr(Column::Headers, Expr::value(headers))
            .col_expr(Column::Body, Expr::value(response.body.clone()))
            .filter(Column::Scope.eq(scope))
            .filter(Column::Key.eq(key))
            .filter(Column::State.is_in([IN_PROGRESS, COMMITTED]))
            .filter(Column::ClaimToken.eq(token))
            .exec(&self.db)
            .await
            .map_err(repo_err)?;
        Ok(())
    }

    async fn mark_committed(
        &self,
        tx: &mut dyn Transaction,
        scope: &str,
        key: &str,
        token: &str,
    ) -> Result<(), RepoError> {
        let marked = Entity::update_many()
            .col_expr(Column::State, Expr::value(COMMITTED))
            .filter(Column::Scope.eq(scope))
            .filter(Column::Key.eq(key))
            .filter(Column::State.is_in([IN_PROGRESS, COMMITTED]))
            .filter(Column::ClaimToken.eq(token))
            .exec(sea_txn(tx)?)
            .await
            .map_err(repo_err)?;
        if marked.rows_affected != 1 {
            // Taken over after the lease (a slow original on a skewed clock): its effect must
            // not commit next to the retry's.
            return Err(RepoError::UniqueViolation {
                constraint: "idempotency_keys.claim_token".to_owned(),
            });
        }
        Ok(())
    }

    async fn release(&self, scope: &str, key: &str, token: &str) -> Result<(), RepoError> {
        Entity::delete_many()
            .filter(Column::Scope.eq(scope))
            .filter(Column::Key.eq(key))
            .filter(Column::State.eq(IN_PROGRESS))
            .filter(Column::ClaimToken.eq(token))
            .exec(&self.db)
            .await
            .map_err(repo_err)?;
        Ok(())
    }

    async fn purge(&self, before: DateTime<Utc>) -> Result<u64, RepoError> {
        Ok(Entity::delete_many()
            .filter(Column::CreatedAt.lt(before))
            .exec(&self.db)
            .await
            .map_err(repo_err)?
            .rows_affected)
    }
}
