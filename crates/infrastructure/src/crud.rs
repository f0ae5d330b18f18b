//! The kernel's [`CrudRepository`] for any sea-orm entity: a resource gets list, read, insert,
//! update and bulk writes by declaring its mapping ([`SeaResource`]). The domain's row scope
//! ([`scope_condition`]) and soft deletion are applied in every query; bulk writes are one
//! statement each.

use std::marker::PhantomData;

use async_trait::async_trait;
use keel_kernel::crud::{CrudRepository, Deleted, Resource, RowScope};
use keel_kernel::{ListQuery, Page, RepoError, Transaction};
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, DatabaseConnection, EntityTrait, IdenStatic,
    IntoActiveModel, Iterable, QueryFilter, QuerySelect, Select,
};

use crate::error::repo_err;
use crate::listing::{Listable, fetch_page, to_sea};
use crate::unit_of_work::sea_txn;

type Model<R> = <<R as SeaResource>::Entity as EntityTrait>::Model;
type ActiveModel<R> = <<R as SeaResource>::Entity as EntityTrait>::ActiveModel;
type Column<R> = <<R as SeaResource>::Entity as EntityTrait>::Column;

/// How a [`Resource`] maps to its table.
pub trait SeaResource: Resource {
    /// The table.
    type Entity: EntityTrait + Listable;

    /// The row for this value.
    fn to_model(&self) -> Model<Self>;
    /// The value of a row (stored enum names are checked).
    fn from_model(model: Model<Self>) -> Result<Self, RepoError>;
    /// The primary key column.
    fn id_column() -> Column<Self>;
    /// The owner column.
    fn owner_column() -> Column<Self>;
    /// The version column.
    fn version_column() -> Column<Self>;
    /// The soft-deletion column.
    fn deleted_at_column() -> Column<Self>;
}

/// [`CrudRepository`] on a sea-orm connection pool.
#[derive(Debug)]
pub struct SeaCrud<R> {
    db: DatabaseConnection,
    _resource: PhantomData<fn() -> R>,
}

impl<R> SeaCrud<R> {
    /// The repository on this pool.
    pub fn new(db: DatabaseConnection) -> Self {
        Self {
            db,
            _resource: PhantomData,
        }
    }
}

/// Layer two in SQL: the rows `scope` reaches, built from the owner column and the domain's
/// [`ScopeRule`](keel_kernel::crud::ScopeRule) (its shared field's column comes from
/// [`Listable::column`]). Every generic query applies it, and so must every custom query.
pub fn scope_condition<R: SeaResource>(scope: RowScope) -> Result<Condition, RepoError> {
    let Some(owner) = scope.owner() else {
        return Ok(Condition::all());
    };
    let own = R::owner_column().eq(owner.as_uuid());
    let Some(rule) = scope.shared() else {
        return Ok(Condition::all().add(own));
    };
    let column = <R::Entity as Listable>::column(rule.field).ok_or_else(|| {
        RepoError::Other(
            format!(
                "scope field `{}` of {} has no column (scope rule and entity disagree)",
                rule.field,
                R::KIND
            )
            .into(),
        )
    })?;
    Ok(Condition::any()
        .add(own)
        .add(column.eq(to_sea(&rule.value.to_value()))))
}

fn scoped<R: SeaResource>(scope: RowScope) -> Result<Select<R::Entity>, RepoError> {
    Ok(R::Entity::find().filter(scope_condition::<R>(scope)?))
}

fn uuid_of<R: SeaResource>(id: R::Id) -> uuid::Uuid {
    id.into()
}

#[async_trait]
impl<R> CrudRepository<R> for SeaCrud<R>
where
    R: SeaResource,
    Model<R>: IntoActiveModel<ActiveModel<R>> + Sync,
    ActiveModel<R>: ActiveModelTrait<Entity = R::Entity> + Send,
{
    async fn list(&self, scope: RowScope, query: &ListQuery) -> Result<Page<R>, RepoError> {
        let live = scoped::<R>(scope)?.filter(R::deleted_at_column().is_null());
        let page = fetch_page(&self.db, live, query).await?;
        page.try_map(R::from_model)
    }

    async fn find(
        &self,
        scope: RowScope,
        id: R::Id,
        deleted: Deleted,
    ) -> Result<Option<R>, RepoError> {
        let mut select = scoped::<R>(scope)?.filter(R::id_column().eq(uuid_of::<R>(id)));
        if deleted == Deleted::Exclude {
            select = select.filter(R::deleted_at_column().is_null());
        }
        select
            .one(&self.db)
            .await
            .map_err(repo_err)?
            .map(R::from_model)
            .transpose()
    }

    async fn find_for_update(
        &self,
        tx: &mut dyn Transaction,
        scope: RowScope,
        ids: &[R::Id],
    ) -> Result<Vec<R>, RepoError> {
        let txn = sea_txn(tx)?;
        scoped::<R>(scope)?
            .filter(R::id_column().is_in(ids.iter().map(|id| uuid_of::<R>(*id))))
            .lock_exclusive()
            .all(txn)
            .await
            .map_err(repo_err)?
            .into_iter()
            .map(R::from_model)
            .collect()
    }

    async fn insert(&self, tx: &mut dyn Transaction, rows: &[R]) -> Result<(), RepoError> {
        if rows.is_empty() {
            return Ok(());
        }
        let txn = sea_txn(tx)?;
        R::Entity::insert_many(rows.iter().map(|r| r.to_model().into_active_model()))
            .exec_without_returning(txn)
            .await
            .map_err(repo_err)?;
        Ok(())
    }

    async fn update(
        &self,
        tx: &mut dyn Transaction,
        row: &R,
        expected_version: i64,
    ) -> Result<bool, RepoError> {
        let txn = sea_txn(tx)?;
        // Conditional on the version read: a concurrent writer makes this touch no row.
        let result = R::Entity::update_many()
            .set(row.to_model().into_active_model().reset_all())
            .filter(R::id_column().eq(uuid_of::<R>(row.id())))
            .filter(R::version_column().eq(expected_version))
            .exec(txn)
            .await
            .map_err(repo_err)?;
        Ok(result.rows_affected == 1)
    }

    async fn update_many(&self, tx: &mut dyn Transaction, rows: &[R]) -> Result<(), RepoError> {
        if rows.is_empty() {
            return Ok(());
        }
        let txn = sea_txn(tx)?;
        let id = R::id_column();
        // One statement: INSERT … ON CONFLICT (id) DO UPDATE SET every other column. The rows
        // exist and are locked by the caller's transaction, so only the update branch runs.
        let others: Vec<Column<R>> = Column::<R>::iter()
            .filter(|c| c.as_str() != id.as_str())
            .collect();
        R::Entity::insert_many(rows.iter().map(|r| r.to_model().into_active_model()))
            .on_conflict(OnConflict::column(id).update_columns(others).to_owned())
            .exec_without_returning(txn)
            .await
            .map_err(repo_err)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! One scope declaration, two adapters: the same callers see and change the same rows in
    //! SQLite (through [`SeaCrud`]) and in the kernel's in-memory fake.

    use std::collections::BTreeSet;
    use std::sync::Arc;

    use keel_kernel::crud::{Crud, CrudActions, FieldIs, InMemoryCrud, Literal, Meta, ScopeRule};
    use keel_kernel::query::{FieldKind, FieldSpec, ListSpec, Value};
    use keel_kernel::repo::InMemoryUnitOfWork;
    use keel_kernel::validation::FieldErrors;
    use keel_kernel::{
        Actor, Caller, ManualClock, Permission, PermissionSet, SessionId, UnitOfWork, UserId,
    };
    use sea_orm::ConnectionTrait;
    use uuid::Uuid;

    use super::*;
    use crate::SeaUnitOfWork;

    #[allow(unreachable_pub)] // sea-orm's derives need public items.
    mod entity {
        use sea_orm::entity::prelude::*;

        #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
        #[sea_orm(table_name = "notes")]
        pub struct Model {
            #[sea_orm(primary_key, auto_increment = false)]
            pub id: Uuid,
            pub title: String,
            pub shared: bool,
            pub owner_id: Uuid,
            pub version: i64,
            pub created_by: Option<Uuid>,
            pub updated_by: Option<Uuid>,
            pub created_at: DateTimeUtc,
            pub updated_at: DateTimeUtc,
            pub deleted_at: Option<DateTimeUtc>,
        }

        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub enum Relation {}

        impl ActiveModelBehavior for ActiveModel {}
    }

    const ACCESS: Permission = Permission::from_static("notes:write");
    const SEE_ALL: Permission = Permission::from_static("notes:manage_all");

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    struct NoteId(Uuid);

    impl std::fmt::Display for NoteId {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            self.0.fmt(f)
        }
    }

    impl From<Uuid> for NoteId {
        fn from(id: Uuid) -> Self {
            Self(id)
        }
    }

    impl From<NoteId> for Uuid {
        fn from(id: NoteId) -> Self {
            id.0
        }
    }

    /// Shared notes are readable by everyone with `notes:write`, changeable by their owner.
    #[derive(Debug, Clone)]
    struct Note {
        id: NoteId,
        title: String,
        shared: bool,
        meta: Meta,
    }

    impl Resource for Note {
        type Id = NoteId;
        type New = (String, bool);
        type Patch = Option<String>;

        const KIND: &'static str = "note";
        const ACCESS: Permission = ACCESS;
        const SEE_ALL: Permission = SEE_ALL;
        const LIST: ListSpec = ListSpec {
            fields: &[FieldSpec::new("shared", FieldKind::Boolean).filterable()],
            default_sort: "id",
            searchable: false,
        };
        const ACTIONS: CrudActions = CrudActions {
            created: "note.created",
            updated: "note.updated",
            deleted: "note.deleted",
            restored: "note.restored",
        };
        const SCOPE: ScopeRule = ScopeRule::SharedRead(FieldIs {
            field: "shared",
            value: Literal::Boolean(true),
        });

        fn id(&self) -> NoteId {
            self.id
        }
        fn meta(&self) -> &Meta {
            &self.meta
        }
        fn meta_mut(&mut self) -> &mut Meta {
            &mut self.meta
        }
        fn build(
            id: NoteId,
            (title, shared): (String, bool),
            meta: Meta,
        ) -> Result<Self, FieldErrors> {
            Ok(Self {
                id,
                title,
                shared,
                meta,
            })
        }
        fn apply(&mut self, patch: &Option<String>) -> Result<Vec<&'static str>, FieldErrors> {
            Ok(match patch {
                Some(title) => {
                    self.title.clone_from(title);
                    vec!["title"]
                }
                None => Vec::new(),
            })
        }
        fn field(&self, name: &str) -> Option<Value> {
            (name == "shared").then_some(Value::Boolean(self.shared))
        }
    }

    impl Listable for entity::Entity {
        fn column(field: &str) -> Option<entity::Column> {
            Some(match field {
                "id" => entity::Column::Id,
                "shared" => entity::Column::Shared,
                _ => return None,
            })
        }
        fn search_columns() -> &'static [entity::Column] {
            &[]
        }
    }

    impl SeaResource for Note {
        type Entity = entity::Entity;

        fn to_model(&self) -> entity::Model {
            entity::Model {
                id: self.id.0,
                title: self.title.clone(),
                shared: self.shared,
                owner_id: self.meta.owner.as_uuid(),
                version: self.meta.version,
                created_by: self.meta.created_by.map(|id| id.as_uuid()),
                updated_by: self.meta.updated_by.map(|id| id.as_uuid()),
                created_at: self.meta.created_at,
                updated_at: self.meta.updated_at,
                deleted_at: self.meta.deleted_at,
            }
        }
        fn from_model(model: entity::Model) -> Result<Self, RepoError> {
            Ok(Self {
                id: NoteId(model.id),
                title: model.title,
                shared: model.shared,
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
        fn id_column() -> entity::Column {
            entity::Column::Id
        }
        fn owner_column() -> entity::Column {
            entity::Column::OwnerId
        }
        fn version_column() -> entity::Column {
            entity::Column::Version
        }
        fn deleted_at_column() -> entity::Column {
            entity::Column::DeletedAt
        }
    }

    fn member(id: UserId, see_all: bool) -> Caller {
        let mut permissions = vec![ACCESS];
        if see_all {
            permissions.push(SEE_ALL);
        }
        Caller::new(Actor::User {
            id,
            session: SessionId::new(),
            permissions: permissions.into_iter().collect::<PermissionSet>(),
        })
    }

    /// What each caller lists, and which of the others' notes each may rename.
    async fn outcomes(notes: &Crud<Note>) -> Vec<(BTreeSet<String>, BTreeSet<String>)> {
        let (ada, bob, admin) = (UserId::new(), UserId::new(), UserId::new());
        let mut created = Vec::new();
        for (owner, title, shared) in [
            (ada, "ada private", false),
            (ada, "ada shared", true),
            (bob, "bob private", false),
            (bob, "bob shared", true),
        ] {
            let note = notes
                .for_caller(&member(owner, false))
                .create((title.to_owned(), shared))
                .await
                .unwrap();
            created.push(note);
        }
        let mut seen = Vec::new();
        for caller in [member(ada, false), member(bob, false), member(admin, true)] {
            let service = notes.for_caller(&caller);
            let listed = service
                .list(ListQuery::first_page(&Note::LIST))
                .await
                .unwrap()
                .items
                .into_iter()
                .map(|n| n.title)
                .collect();
            let mut renamed = BTreeSet::new();
            for note in &created {
                if service
                    .update(note.id, Some(note.title.clone()), None)
                    .await
                    .is_ok()
                {
                    renamed.insert(note.title.clone());
                }
            }
            seen.push((listed, renamed));
        }
        seen
    }

    fn titles(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    #[tokio::test]
    async fn sql_and_the_in_memory_fake_apply_the_same_shared_read_rule() {
        let db = sea_orm::Database::connect("sqlite::memory:").await.unwrap();
        db.execute_unprepared(
            "CREATE TABLE notes (id uuid_text PRIMARY KEY, title TEXT NOT NULL, \
             shared BOOLEAN NOT NULL, owner_id uuid_text NOT NULL, version BIGINT NOT NULL, \
             created_by uuid_text, updated_by uuid_text, created_at TEXT NOT NULL, \
             updated_at TEXT NOT NULL, deleted_at TEXT)",
        )
        .await
        .unwrap();
        let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
        let activity = Arc::new(keel_kernel::activity::InMemoryActivityLog::default());
        let sql = Crud::<Note>::new(
            Arc::new(SeaCrud::new(db.clone())),
            Arc::new(SeaUnitOfWork::new(db)) as Arc<dyn UnitOfWork>,
            activity.clone(),
            clock.clone(),
        );
        let memory = Crud::<Note>::new(
            Arc::new(InMemoryCrud::default()),
            Arc::new(InMemoryUnitOfWork),
            activity,
            clock,
        );
        let expected = vec![
            (
                titles(&["ada private", "ada shared", "bob shared"]),
                titles(&["ada private", "ada shared"]),
            ),
            (
                titles(&["bob private", "bob shared", "ada shared"]),
                titles(&["bob private", "bob shared"]),
            ),
            (
                titles(&["ada private", "ada shared", "bob private", "bob shared"]),
                titles(&["ada private", "ada shared", "bob private", "bob shared"]),
            ),
        ];
        assert_eq!(outcomes(&sql).await, expected, "SQL");
        assert_eq!(outcomes(&memory).await, expected, "in memory");
    }
}
