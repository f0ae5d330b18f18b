//! Release notes in the `release_notes` table.

use async_trait::async_trait;
use keel_kernel::{ListQuery, Page, RepoError, Transaction, UserId};
use keel_release_notes::model::{ChangeType, ReleaseStatus};
use keel_release_notes::{ReleaseNote, ReleaseNoteId, ReleaseNoteRepository, Version, Visibility};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseConnection, EntityTrait, IntoActiveModel, QueryFilter,
    QueryOrder, QuerySelect, Select,
};

use crate::error::repo_err;
use crate::listing::{Listable, fetch_page};
use crate::unit_of_work::sea_txn;

/// The sea-orm entity for `release_notes`.
pub mod entity {
    use sea_orm::entity::prelude::*;

    /// One row of `release_notes`.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "release_notes")]
    pub struct Model {
        /// Primary key (UUIDv7).
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        /// Canonical semantic version; unique.
        pub version: String,
        /// Summary line.
        pub title: String,
        /// Markdown body.
        #[sea_orm(column_type = "Text")]
        pub body: String,
        /// `feature`, `improvement`, `bugfix` or `breaking`.
        pub change_type: String,
        /// `draft` or `published`.
        pub status: String,
        /// Set while published.
        pub published_at: Option<DateTimeUtc>,
        /// Author; NULL when created by Keel itself.
        pub created_by: Option<Uuid>,
        /// Creation time.
        pub created_at: DateTimeUtc,
        /// Last change.
        pub updated_at: DateTimeUtc,
    }

    /// No relations yet.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

use entity::{Column, Entity, Model};

impl Listable for Entity {
    fn column(field: &str) -> Option<Column> {
        Some(match field {
            "id" => Column::Id,
            "version" => Column::Version,
            "title" => Column::Title,
            "change_type" => Column::ChangeType,
            "status" => Column::Status,
            "published_at" => Column::PublishedAt,
            "created_at" => Column::CreatedAt,
            _ => return None,
        })
    }

    fn search_columns() -> &'static [Column] {
        &[Column::Title, Column::Body, Column::Version]
    }
}

fn to_domain(model: Model) -> Result<ReleaseNote, RepoError> {
    let corrupt = |what: &str, value: &str| {
        RepoError::Other(
            format!(
                "release note {}: stored {what} `{value}` is invalid",
                model.id
            )
            .into(),
        )
    };
    Ok(ReleaseNote {
        id: ReleaseNoteId::from_uuid(model.id),
        version: Version::parse(&model.version).map_err(|_| corrupt("version", &model.version))?,
        change_type: model
            .change_type
            .parse::<ChangeType>()
            .map_err(|_| corrupt("change_type", &model.change_type))?,
        status: model
            .status
            .parse::<ReleaseStatus>()
            .map_err(|_| corrupt("status", &model.status))?,
        title: model.title,
        body: model.body,
        published_at: model.published_at,
        created_by: model.created_by.map(UserId::from_uuid),
        created_at: model.created_at,
        updated_at: model.updated_at,
    })
}

fn to_model(note: &ReleaseNote) -> Model {
    Model {
        id: note.id.as_uuid(),
        version: note.version.to_string(),
        title: note.title.clone(),
        body: note.body.clone(),
        change_type: note.change_type.as_str().to_owned(),
        status: note.status.as_str().to_owned(),
        published_at: note.published_at,
        created_by: note.created_by.map(|id| id.as_uuid()),
        created_at: note.created_at,
        updated_at: note.updated_at,
    }
}

/// Applies a caller's visibility to a query: the scope is part of every read.
fn scoped(visibility: Visibility) -> Select<Entity> {
    let select = Entity::find();
    if visibility.published_only() {
        select.filter(Column::Status.eq(ReleaseStatus::Published.as_str()))
    } else {
        select
    }
}

/// [`ReleaseNoteRepository`] on a sea-orm connection pool.
#[derive(Debug, Clone)]
pub struct SeaReleaseNoteRepository {
    db: DatabaseConnection,
}

impl SeaReleaseNoteRepository {
    /// A repository on this pool.
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }
}

#[async_trait]
impl ReleaseNoteRepository for SeaReleaseNoteRepository {
    async fn list(
        &self,
        visibility: Visibility,
        query: &ListQuery,
    ) -> Result<Page<ReleaseNote>, RepoError> {
        let page = fetch_page(&self.db, scoped(visibility), query).await?;
        page.try_map(to_domain)
    }

    async fn find(
        &self,
        visibility: Visibility,
        id: ReleaseNoteId,
    ) -> Result<Option<ReleaseNote>, RepoError> {
        scoped(visibility)
            .filter(Column::Id.eq(id.as_uuid()))
            .one(&self.db)
            .await
            .map_err(repo_err)?
            .map(to_domain)
            .transpose()
    }

    async fn latest_published(&self) -> Result<Option<ReleaseNote>, RepoError> {
        Entity::find()
            .filter(Column::Status.eq(ReleaseStatus::Published.as_str()))
            .order_by_desc(Column::PublishedAt)
            .order_by_desc(Column::Id)
            .one(&self.db)
            .await
            .map_err(repo_err)?
            .map(to_domain)
            .transpose()
    }

    async fn find_for_update(
        &self,
        tx: &mut dyn Transaction,
        id: ReleaseNoteId,
    ) -> Result<Option<ReleaseNote>, RepoError> {
        let txn = sea_txn(tx)?;
        Entity::find_by_id(id.as_uuid())
            .lock_exclusive()
            .one(txn)
            .await
            .map_err(repo_err)?
            .map(to_domain)
            .transpose()
    }

    async fn insert(&self, tx: &mut dyn Transaction, note: &ReleaseNote) -> Result<(), RepoError> {
        let txn = sea_txn(tx)?;
        Entity::insert(to_model(note).into_active_model())
            .exec_without_returning(txn)
            .await
            .map_err(repo_err)?;
        Ok(())
    }

    async fn update(&self, tx: &mut dyn Transaction, note: &ReleaseNote) -> Result<(), RepoError> {
        let txn = sea_txn(tx)?;
        // Every column is written: the domain hands over the whole entity.
        to_model(note)
            .into_active_model()
            .reset_all()
            .update(txn)
            .await
            .map_err(repo_err)?;
        Ok(())
    }

    async fn delete(&self, tx: &mut dyn Transaction, id: ReleaseNoteId) -> Result<bool, RepoError> {
        let txn = sea_txn(tx)?;
        let result = Entity::delete_by_id(id.as_uuid())
            .exec(txn)
            .await
            .map_err(repo_err)?;
        Ok(result.rows_affected > 0)
    }
}

/// Registers the release-note use cases and permissions.
pub fn register(
    adapters: &crate::Adapters,
    state: &mut keel_kernel::AppStateBuilder,
) -> Result<(), crate::RegisterError> {
    state.permissions(keel_release_notes::PERMISSIONS).insert(
        keel_release_notes::ReleaseNotes::new(
            std::sync::Arc::new(SeaReleaseNoteRepository::new(adapters.db.clone())),
            adapters.unit_of_work.clone(),
            adapters.activity_log(),
            adapters.clock.clone(),
            adapters.cache_aside("release_notes"),
        ),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use keel_release_notes::LIST_SPEC;

    use super::*;

    #[test]
    fn every_listable_field_has_a_column() {
        for field in LIST_SPEC.fields {
            assert!(
                <Entity as Listable>::column(field.name).is_some(),
                "`{}` is in the list spec but has no column",
                field.name
            );
        }
        assert!(<Entity as Listable>::column("id").is_some());
    }
}
