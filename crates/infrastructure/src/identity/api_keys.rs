//! API keys.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use keel_identity::model::ApiKey;
use keel_identity::repository::ApiKeyRepository;
use keel_kernel::{ApiKeyId, Permission, PermissionSet, RepoError, Transaction, UserId};
use sea_orm::{ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter, QueryOrder};

use super::entities::api_keys;
use super::{SeaIdentityStore, corrupt};
use crate::error::repo_err;
use crate::unit_of_work::sea_txn;

pub(super) fn scopes_from(json: &serde_json::Value) -> Result<PermissionSet, RepoError> {
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

pub(super) fn api_key_from(model: api_keys::Model) -> Result<ApiKey, RepoError> {
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
