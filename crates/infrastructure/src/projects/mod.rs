//! Projects in the `projects` table, through the generic [`SeaCrud`](crate::crud::SeaCrud).

use async_trait::async_trait;
use keel_kernel::crud::{Meta, RowScope};
use keel_kernel::{RepoError, UserId};
use keel_projects::{Project, ProjectId, ProjectReportRepository, ProjectStatus};
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QuerySelect};

use crate::crud::SeaResource;
use crate::error::repo_err;
use crate::listing::Listable;

/// The sea-orm entity for `projects`.
pub mod entity {
    use sea_orm::entity::prelude::*;

    /// One row of `projects`.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "projects")]
    pub struct Model {
        /// Primary key (UUIDv7).
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        /// Name.
        pub name: String,
        /// Description.
        #[sea_orm(column_type = "Text", nullable)]
        pub description: Option<String>,
        /// Status name.
        pub status: String,
        /// Owner.
        pub owner_id: Uuid,
        /// Optimistic-concurrency version.
        pub version: i64,
        /// Creator.
        pub created_by: Option<Uuid>,
        /// Last editor.
        pub updated_by: Option<Uuid>,
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

use entity::{Column, Entity, Model};

impl Listable for Entity {
    fn column(field: &str) -> Option<Column> {
        Some(match field {
            "id" => Column::Id,
            "name" => Column::Name,
            "status" => Column::Status,
            "created_at" => Column::CreatedAt,
            "updated_at" => Column::UpdatedAt,
            "owner_id" => Column::OwnerId,
            _ => return None,
        })
    }

    fn search_columns() -> &'static [Column] {
        &[Column::Name, Column::Description]
    }
}

impl SeaResource for Project {
    type Entity = Entity;

    fn to_model(&self) -> Model {
        Model {
            id: self.id.as_uuid(),
            name: self.name.clone(),
            description: self.description.clone(),
            status: self.status.as_str().to_owned(),
            owner_id: self.meta.owner.as_uuid(),
            version: self.meta.version,
            created_by: self.meta.created_by.map(|id| id.as_uuid()),
            updated_by: self.meta.updated_by.map(|id| id.as_uuid()),
            created_at: self.meta.created_at,
            updated_at: self.meta.updated_at,
            deleted_at: self.meta.deleted_at,
        }
    }

    fn from_model(model: Model) -> Result<Self, RepoError> {
        Ok(Self {
            id: ProjectId::from_uuid(model.id),
            name: model.name,
            description: model.description,
            status: model
                .status
                .parse::<ProjectStatus>()
                .map_err(|e| RepoError::Other(e.into()))?,
            meta: Meta {
                owner: UserId::from_uuid(model.owner_id),
                version: model.version,
                created_by: model.created_by.map(UserId::from_uuid),
                updated_by: model.updated_by.map(UserId::from_uuid),
                created_at: model.created_at,
                updated_at: model.updated_at,
                deleted_at: model.deleted_at,
            },
        })
    }

    fn id_column() -> Column {
        Column::Id
    }

    fn owner_column() -> Column {
        Column::OwnerId
    }

    fn version_column() -> Column {
        Column::Version
    }

    fn deleted_at_column() -> Column {
        Column::DeletedAt
    }
}

/// The project reports on a connection pool.
#[derive(Debug, Clone)]
pub struct SeaProjectReports {
    db: DatabaseConnection,
}

impl SeaProjectReports {
    /// The reports on this pool.
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }
}

#[async_trait]
impl ProjectReportRepository for SeaProjectReports {
    async fn count_by_status(
        &self,
        scope: RowScope,
    ) -> Result<Vec<(ProjectStatus, u64)>, RepoError> {
        // The same scope condition as every CRUD query: one GROUP BY, never another owner's rows.
        let rows: Vec<(String, i64)> = Entity::find()
            .select_only()
            .column(Column::Status)
            .column_as(Column::Id.count(), "count")
            .filter(crate::crud::scope_condition::<Project>(scope)?)
            .filter(Column::DeletedAt.is_null())
            .group_by(Column::Status)
            .into_tuple()
            .all(&self.db)
            .await
            .map_err(repo_err)?;
        rows.into_iter()
            .map(|(status, count)| {
                let status = status
                    .parse::<ProjectStatus>()
                    .map_err(|e| RepoError::Other(e.into()))?;
                Ok((status, u64::try_from(count).unwrap_or_default()))
            })
            .collect()
    }
}

/// Registers the project use cases, its report and its permissions.
pub fn register(
    adapters: &crate::Adapters,
    state: &mut keel_kernel::AppStateBuilder,
) -> Result<(), crate::RegisterError> {
    use std::sync::Arc;
    state
        .permissions(keel_projects::PERMISSIONS)
        .insert(keel_projects::Projects::new(
            Arc::new(crate::crud::SeaCrud::new(adapters.db.clone())),
            adapters.unit_of_work.clone(),
            adapters.activity_log(),
            adapters.clock.clone(),
        ))
        .insert(keel_projects::ProjectReports::new(Arc::new(
            SeaProjectReports::new(adapters.db.clone()),
        )));
    Ok(())
}

#[cfg(test)]
mod tests {
    use keel_projects::LIST_SPEC;

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
