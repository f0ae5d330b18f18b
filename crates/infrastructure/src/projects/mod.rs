// @generated from crates/domains/projects/domain.toml by `cargo xtask new-domain`; edit the spec
// or xtask/templates, then run `cargo xtask new-domain --regenerate projects`.
// Hand-written code goes in the files without this header.
//! Projects in the `projects` table, through the generic [`SeaCrud`]; custom queries are in
//! `custom.rs`.

pub mod custom;

use std::sync::Arc;

use keel_kernel::crud::Meta;
use keel_kernel::{AppStateBuilder, RepoError, UserId};
use keel_projects::model::{Project, ProjectId, ProjectStatus};
use keel_projects::service::Projects;

use crate::crud::{SeaCrud, SeaResource};
use crate::listing::Listable;
use crate::{Adapters, RegisterError};

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
        /// Status (its name).
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

/// Registers the project use cases and permissions, then what `custom.rs` adds.
pub fn register(adapters: &Adapters, state: &mut AppStateBuilder) -> Result<(), RegisterError> {
    state
        .permissions(keel_projects::policy::PERMISSIONS)
        .insert(Projects::new(
            Arc::new(SeaCrud::new(adapters.db.clone())),
            adapters.unit_of_work.clone(),
            adapters.activity_log(),
            adapters.clock.clone(),
        ));
    custom::register(adapters, state)
}

#[cfg(test)]
mod tests {
    use keel_kernel::crud::{Resource, ScopeRule};
    use keel_projects::policy::LIST_SPEC;

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

    /// The SQL form of `rules::SCOPE` needs its shared field's column.
    #[test]
    fn the_scope_rule_names_a_column() {
        if let ScopeRule::SharedRead(rule) | ScopeRule::Shared(rule) = <Project as Resource>::SCOPE
        {
            assert!(
                <Entity as Listable>::column(rule.field).is_some(),
                "rules::SCOPE shares by `{}`, which has no column",
                rule.field
            );
        }
    }
}
