//! Project attachments, written by hand: their rows in `project_attachments`, and the
//! service on the configured object store.

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use keel_kernel::{AppStateBuilder, ListQuery, Page, RepoError, Transaction, UserId};
use keel_projects::attachments::{
    Attachment, AttachmentId, AttachmentRepository, AttachmentSettings, Attachments,
};
use keel_projects::{ProjectId, Projects};
use sea_orm::{
    ColumnTrait, DatabaseConnection, EntityTrait, IntoActiveModel, QueryFilter, QuerySelect,
};

use crate::error::repo_err;
use crate::listing::{Listable, fetch_page};
use crate::unit_of_work::sea_txn;
use crate::{Adapters, RegisterError};

/// The sea-orm entity for `project_attachments`.
pub mod entity {
    use sea_orm::entity::prelude::*;

    /// One row of `project_attachments`.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "project_attachments")]
    pub struct Model {
        /// Primary key (UUIDv7).
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        /// The project.
        pub project_id: Uuid,
        /// The cleaned upload name.
        pub filename: String,
        /// The sniffed media type.
        pub content_type: String,
        /// Bytes.
        pub size_bytes: i64,
        /// SHA-256, lowercase hex.
        pub sha256: String,
        /// The object's key.
        pub storage_key: String,
        /// The uploader.
        pub created_by: Option<Uuid>,
        /// Upload time.
        pub created_at: DateTimeUtc,
    }

    /// No relations are navigated.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

use entity::{Column, Entity, Model};

impl Listable for Entity {
    fn column(field: &str) -> Option<Column> {
        Some(match field {
            "id" => Column::Id,
            "filename" => Column::Filename,
            "content_type" => Column::ContentType,
            "size_bytes" => Column::SizeBytes,
            "created_at" => Column::CreatedAt,
            _ => return None,
        })
    }

    fn search_columns() -> &'static [Column] {
        &[Column::Filename]
    }
}

fn to_domain(model: Model) -> Attachment {
    Attachment {
        id: AttachmentId::from_uuid(model.id),
        project_id: ProjectId::from_uuid(model.project_id),
        filename: model.filename,
        content_type: model.content_type,
        size_bytes: u64::try_from(model.size_bytes).unwrap_or_default(),
        sha256: model.sha256,
        storage_key: model.storage_key,
        created_by: model.created_by.map(UserId::from_uuid),
        created_at: model.created_at,
    }
}

/// Attachment rows on a pool.
#[derive(Debug, Clone)]
pub struct SeaAttachments {
    db: DatabaseConnection,
}

impl SeaAttachments {
    /// The rows on this pool.
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }
}

#[async_trait]
impl AttachmentRepository for SeaAttachments {
    async fn insert(&self, tx: &mut dyn Transaction, row: &Attachment) -> Result<(), RepoError> {
        let model = Model {
            id: row.id.as_uuid(),
            project_id: row.project_id.as_uuid(),
            filename: row.filename.clone(),
            content_type: row.content_type.clone(),
            size_bytes: i64::try_from(row.size_bytes).unwrap_or(i64::MAX),
            sha256: row.sha256.clone(),
            storage_key: row.storage_key.clone(),
            created_by: row.created_by.map(|u| u.as_uuid()),
            created_at: row.created_at,
        };
        Entity::insert(model.into_active_model())
            .exec_without_returning(sea_txn(tx)?)
            .await
            .map_err(repo_err)?;
        Ok(())
    }

    async fn list(
        &self,
        project: ProjectId,
        query: &ListQuery,
    ) -> Result<Page<Attachment>, RepoError> {
        let select = Entity::find().filter(Column::ProjectId.eq(project.as_uuid()));
        Ok(fetch_page(&self.db, select, query).await?.map(to_domain))
    }

    async fn find(
        &self,
        project: ProjectId,
        id: AttachmentId,
    ) -> Result<Option<Attachment>, RepoError> {
        Ok(Entity::find_by_id(id.as_uuid())
            .filter(Column::ProjectId.eq(project.as_uuid()))
            .one(&self.db)
            .await
            .map_err(repo_err)?
            .map(to_domain))
    }

    async fn delete(
        &self,
        tx: &mut dyn Transaction,
        project: ProjectId,
        id: AttachmentId,
    ) -> Result<bool, RepoError> {
        let result = Entity::delete_many()
            .filter(Column::Id.eq(id.as_uuid()))
            .filter(Column::ProjectId.eq(project.as_uuid()))
            .exec(sea_txn(tx)?)
            .await
            .map_err(repo_err)?;
        Ok(result.rows_affected > 0)
    }

    async fn known_keys(&self, keys: &[String]) -> Result<HashSet<String>, RepoError> {
        if keys.is_empty() {
            return Ok(HashSet::new());
        }
        let found: Vec<String> = Entity::find()
            .select_only()
            .column(Column::StorageKey)
            .filter(Column::StorageKey.is_in(keys.iter().cloned()))
            .into_tuple()
            .all(&self.db)
            .await
            .map_err(repo_err)?;
        Ok(found.into_iter().collect())
    }
}

/// Registers the attachments service on the configured object store.
pub(crate) fn register(
    adapters: &Adapters,
    state: &mut AppStateBuilder,
) -> Result<(), RegisterError> {
    let projects = state.get::<Projects>()?;
    let storage = &adapters.settings.storage;
    state.insert(Attachments::new(
        projects,
        Arc::new(SeaAttachments::new(adapters.db.clone())),
        adapters.storage.clone(),
        adapters.unit_of_work.clone(),
        adapters.activity_log(),
        adapters.clock.clone(),
        AttachmentSettings {
            max_bytes: storage.max_attachment_bytes,
            link_ttl: storage.link_ttl,
        },
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use keel_projects::attachments::LIST_SPEC;

    use super::*;

    #[test]
    fn every_listable_field_has_a_column() {
        for field in LIST_SPEC.fields {
            assert!(
                <Entity as Listable>::column(field.name).is_some(),
                "{}",
                field.name
            );
        }
    }
}
