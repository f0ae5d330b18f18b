//! Roles, the permission catalogue and who holds which role.

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use keel_identity::model::{PermissionInfo, Role, RoleId};
use keel_identity::repository::RoleRepository;
use keel_kernel::{Permission, PermissionSet, RepoError, Transaction, UserId};
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, IntoActiveModel, QueryFilter, QueryOrder,
    QuerySelect, Set,
};
use uuid::Uuid;

use super::entities::{permissions, role_permissions, roles, user_roles};
use super::{SeaIdentityStore, corrupt};
use crate::error::repo_err;
use crate::unit_of_work::sea_txn;

impl SeaIdentityStore {
    /// Roles matching `condition` (on `roles.id`), with their permissions, by name. The two
    /// queries run concurrently.
    pub(super) async fn roles_where<C: ConnectionTrait>(
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
    pub(super) async fn roles_by_ids<C: ConnectionTrait>(
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
    pub(super) fn role_ids_of(user: UserId) -> sea_orm::sea_query::SelectStatement {
        sea_orm::sea_query::Query::select()
            .column(user_roles::Column::RoleId)
            .from(user_roles::Entity)
            .and_where(user_roles::Column::UserId.eq(user.as_uuid()))
            .to_owned()
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
