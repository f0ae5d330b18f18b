//! The kernel's [`CrudRepository`] for any sea-orm entity: a resource gets list, read, insert,
//! update and bulk writes by declaring its mapping ([`SeaResource`]). The owner scope and soft
//! deletion are applied in every query; bulk writes are one statement each.

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
use crate::listing::{Listable, fetch_page};
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

    /// Layer two: the rows `scope` may see, as a condition added to every query. The default
    /// is "the owner's rows" (all rows when the scope has no owner). Override it for a custom
    /// scope, e.g. rows shared with everyone readable but only the owner's writable (see
    /// `docs/adding-a-domain.md`).
    fn scope_condition(scope: RowScope) -> Condition {
        match scope.owner() {
            Some(owner) => Condition::all().add(Self::owner_column().eq(owner.as_uuid())),
            None => Condition::all(),
        }
    }
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

fn scoped<R: SeaResource>(scope: RowScope) -> Select<R::Entity> {
    R::Entity::find().filter(R::scope_condition(scope))
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
        let live = scoped::<R>(scope).filter(R::deleted_at_column().is_null());
        let page = fetch_page(&self.db, live, query).await?;
        page.try_map(R::from_model)
    }

    async fn find(
        &self,
        scope: RowScope,
        id: R::Id,
        deleted: Deleted,
    ) -> Result<Option<R>, RepoError> {
        let mut select = scoped::<R>(scope).filter(R::id_column().eq(uuid_of::<R>(id)));
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
        scoped::<R>(scope)
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
