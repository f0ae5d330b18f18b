//! Composable CRUD for owned resources: the Rust form of list/read/create/update/delete/bulk
//! mixins.
//!
//! A domain describes its entity once by implementing [`Resource`] (its fields' rules, its
//! permissions, its list allow-list); [`Crud`] then provides every use case, each running the
//! permission check, validation, one transaction and its activity entry. Storage implements
//! [`CrudRepository`] once, generically (see `keel-infrastructure`'s `SeaCrud`). Rows are
//! always read and written through a [`RowScope`], which only this module can build, from the
//! caller: another owner's row is invisible, never forbidden.

use std::collections::BTreeSet;
use std::fmt::{Debug, Display};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::json;
use uuid::Uuid;

use crate::activity::{ActivityLog, NewActivity};
use crate::auth::{Caller, Permission, Scope};
use crate::clock::Clock;
use crate::error::{DomainError, FieldError};
use crate::id::UserId;
use crate::query::{ListQuery, ListSpec, Page, Position, Value};
use crate::repo::{RepoError, Transaction, UnitOfWork};
use crate::validation::FieldErrors;

/// Most items one bulk request may carry.
pub const MAX_BULK: usize = 100;

/// Bookkeeping every owned resource carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    /// Whose it is.
    pub owner: UserId,
    /// Incremented by every change (optimistic concurrency: a change may name the versions it expects).
    pub version: i64,
    /// Who created it (`None`: Keel itself).
    pub created_by: Option<UserId>,
    /// Who changed it last.
    pub updated_by: Option<UserId>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// Soft deletion; deleted rows are hidden from lists and reads until restored.
    pub deleted_at: Option<DateTime<Utc>>,
}

/// Activity names of a resource's changes, e.g. `project.created`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrudActions {
    /// After a create.
    pub created: &'static str,
    /// After an update.
    pub updated: &'static str,
    /// After a soft delete.
    pub deleted: &'static str,
    /// After a restore.
    pub restored: &'static str,
}

/// An owned, soft-deletable, versioned entity a domain exposes through [`Crud`].
pub trait Resource: Clone + Debug + Send + Sync + 'static {
    /// Its typed id.
    type Id: Copy + Eq + Debug + Display + Send + Sync + From<Uuid> + Into<Uuid>;
    /// Input of a create.
    type New: Debug + Send + Sync;
    /// Input of an update; `Default` changes nothing.
    type Patch: Debug + Default + PartialEq + Send + Sync;

    /// Singular name, for messages and the activity log (e.g. `project`).
    const KIND: &'static str;
    /// Needed for every use case: work with one's own rows.
    const ACCESS: Permission;
    /// Widens the scope to every owner's rows.
    const SEE_ALL: Permission;
    /// Sorting and filtering allowed on lists.
    const LIST: ListSpec;
    /// Activity names.
    const ACTIONS: CrudActions;
    /// Which rows a caller without [`Resource::SEE_ALL`] reaches besides their own (layer two).
    /// Data, so the SQL adapter and the in-memory fake apply the same rule.
    const SCOPE: ScopeRule = ScopeRule::Owner;

    /// Its id.
    fn id(&self) -> Self::Id;
    /// Its bookkeeping.
    fn meta(&self) -> &Meta;
    /// Its bookkeeping, for the service to update.
    fn meta_mut(&mut self) -> &mut Meta;
    /// Builds a new resource, or returns every rule the input breaks (field names relative to
    /// the input: the service prefixes them for bulk items).
    fn build(id: Self::Id, input: Self::New, meta: Meta) -> Result<Self, FieldErrors>;
    /// Applies a patch; returns the names of the fields it changed, or every rule it breaks.
    /// Business rules about transitions live here.
    fn apply(&mut self, patch: &Self::Patch) -> Result<Vec<&'static str>, FieldErrors>;

    /// The value of a field named in [`Resource::LIST`], for in-memory evaluation of
    /// [`Resource::SCOPE`]; `None` for a field it does not expose.
    fn field(&self, _name: &str) -> Option<Value> {
        None
    }
}

/// A constant a scope rule compares a field with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Literal {
    /// Text (also enum words).
    Text(&'static str),
    /// A boolean.
    Boolean(bool),
    /// An integer.
    Integer(i64),
}

impl Literal {
    /// The same value in the list language's terms (what adapters bind and compare).
    pub fn to_value(self) -> Value {
        match self {
            Self::Text(text) => Value::Text(text.to_owned()),
            Self::Boolean(flag) => Value::Boolean(flag),
            Self::Integer(number) => Value::Integer(number),
        }
    }
}

/// `field = value`, over a field named in the resource's [`Resource::LIST`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldIs {
    /// The public field name.
    pub field: &'static str,
    /// The value it must have.
    pub value: Literal,
}

/// Which rows a caller without the see-all permission reaches: always their own, and what the
/// rule shares besides. A domain declares it as [`Resource::SCOPE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScopeRule {
    /// Their own rows only.
    Owner,
    /// Their own rows, and every row matching the predicate for reading only (shared-read,
    /// owner-write): others' shared rows are listed and read, never changed.
    SharedRead(FieldIs),
    /// Their own rows, and every row matching the predicate, to read and to change.
    Shared(FieldIs),
}

/// Why rows are being read: a custom scope may show more rows than it lets change (say,
/// everyone reads shared rows but only their owner edits them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Listing or reading.
    Read,
    /// Reading in order to change (update, delete, restore).
    Write,
}

/// Which rows a query may touch: every owner's, or one owner's, and for what. Only built
/// from a caller (after the permission check), so a repository cannot be handed an unscoped
/// read by accident; repositories turn it into a condition inside every query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowScope {
    owner: Option<UserId>,
    shared: Option<FieldIs>,
    purpose: Purpose,
}

impl RowScope {
    /// `None` for every owner's rows, else the owner whose rows are visible.
    pub fn owner(&self) -> Option<UserId> {
        self.owner
    }

    /// Rows reachable besides the owner's (from [`Resource::SCOPE`] and the purpose); always
    /// `None` when [`RowScope::owner`] is `None`, since every row is reachable then.
    pub fn shared(&self) -> Option<FieldIs> {
        self.shared
    }

    /// Whether a row with this owner, whose fields `field` reads, is in scope: the in-memory
    /// form of the condition SQL adapters build from [`RowScope::owner`] and
    /// [`RowScope::shared`].
    pub fn admits(&self, owner: UserId, field: impl Fn(&str) -> Option<Value>) -> bool {
        match self.owner {
            None => true,
            Some(me) if me == owner => true,
            Some(_) => self
                .shared
                .is_some_and(|rule| field(rule.field) == Some(rule.value.to_value())),
        }
    }

    /// What the rows are read for.
    pub fn purpose(&self) -> Purpose {
        self.purpose
    }

    /// Layer one (the permission) and layer two (the scope) for `R`, from the caller: for
    /// custom queries a domain adds next to the generic use cases.
    pub fn for_caller<R: Resource>(caller: &Caller, purpose: Purpose) -> Result<Self, DomainError> {
        let actor = &caller.actor;
        actor.require(&R::ACCESS)?;
        Ok(match actor.owner_scope(&R::SEE_ALL)? {
            Scope::All => Self {
                owner: None,
                shared: None,
                purpose,
            },
            Scope::OwnedBy(user) => Self {
                owner: Some(user),
                shared: match (R::SCOPE, purpose) {
                    (ScopeRule::Owner, _) | (ScopeRule::SharedRead(_), Purpose::Write) => None,
                    (ScopeRule::SharedRead(rule) | ScopeRule::Shared(rule), _) => Some(rule),
                },
                purpose,
            },
        })
    }
}

/// Whether a read includes soft-deleted rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deleted {
    /// Live rows only.
    Exclude,
    /// Live and soft-deleted rows (restore needs them).
    Include,
}

/// Storage of one resource type. Every method applies the scope; writes run in `tx`; bulk
/// writes are one statement each, so they succeed or fail as a whole.
#[async_trait]
pub trait CrudRepository<R: Resource>: Send + Sync + Debug {
    /// One page of live rows in scope.
    async fn list(&self, scope: RowScope, query: &ListQuery) -> Result<Page<R>, RepoError>;
    /// One row in scope.
    async fn find(
        &self,
        scope: RowScope,
        id: R::Id,
        deleted: Deleted,
    ) -> Result<Option<R>, RepoError>;
    /// Rows in scope, deleted or not, locked until `tx` ends.
    async fn find_for_update(
        &self,
        tx: &mut dyn Transaction,
        scope: RowScope,
        ids: &[R::Id],
    ) -> Result<Vec<R>, RepoError>;
    /// Inserts rows in one statement.
    async fn insert(&self, tx: &mut dyn Transaction, rows: &[R]) -> Result<(), RepoError>;
    /// Overwrites one row if it is still at `expected_version`; `false` when it is not.
    async fn update(
        &self,
        tx: &mut dyn Transaction,
        row: &R,
        expected_version: i64,
    ) -> Result<bool, RepoError>;
    /// Overwrites rows in one statement (they were read under lock in the same `tx`).
    async fn update_many(&self, tx: &mut dyn Transaction, rows: &[R]) -> Result<(), RepoError>;
}

/// Validation errors of bulk item `index`, renamed `items[index].field`.
fn prefixed(index: usize, errors: FieldErrors) -> Vec<FieldError> {
    errors
        .into_vec()
        .into_iter()
        .map(|mut e| {
            e.field = format!("items[{index}].{}", e.field);
            e
        })
        .collect()
}

fn not_found<R: Resource>() -> DomainError {
    DomainError::NotFound { resource: R::KIND }
}

/// The CRUD use cases of one resource; cheap to clone and shared by every request.
#[derive(Debug)]
pub struct Crud<R: Resource> {
    repository: Arc<dyn CrudRepository<R>>,
    unit_of_work: Arc<dyn UnitOfWork>,
    activity: Arc<dyn ActivityLog>,
    clock: Arc<dyn Clock>,
}

impl<R: Resource> Clone for Crud<R> {
    fn clone(&self) -> Self {
        Self {
            repository: Arc::clone(&self.repository),
            unit_of_work: Arc::clone(&self.unit_of_work),
            activity: Arc::clone(&self.activity),
            clock: Arc::clone(&self.clock),
        }
    }
}

impl<R: Resource> Crud<R> {
    /// Wires the use cases to their ports.
    pub fn new(
        repository: Arc<dyn CrudRepository<R>>,
        unit_of_work: Arc<dyn UnitOfWork>,
        activity: Arc<dyn ActivityLog>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            repository,
            unit_of_work,
            activity,
            clock,
        }
    }

    /// The use cases as `caller` may run them.
    pub fn for_caller<'a>(&'a self, caller: &'a Caller) -> CrudService<'a, R> {
        CrudService { crud: self, caller }
    }
}

/// The CRUD use cases bound to one caller.
#[derive(Debug)]
pub struct CrudService<'a, R: Resource> {
    crud: &'a Crud<R>,
    caller: &'a Caller,
}

impl<R: Resource> CrudService<'_, R> {
    fn scope(&self, purpose: Purpose) -> Result<RowScope, DomainError> {
        RowScope::for_caller::<R>(self.caller, purpose)
    }

    fn owner(&self) -> Result<UserId, DomainError> {
        self.caller
            .actor
            .user_id()
            .ok_or(DomainError::Unauthenticated)
    }

    async fn record(
        &self,
        tx: &mut dyn Transaction,
        action: &'static str,
        row: &R,
        changes: serde_json::Value,
    ) -> Result<(), DomainError> {
        let entry = NewActivity::new(action, R::KIND, row.meta().updated_at)
            .resource(row.id())
            .subject(row.meta().owner)
            .changes(changes);
        Ok(self.crud.activity.record(tx, self.caller, entry).await?)
    }

    /// One page of the caller's rows (every owner's with the see-all permission).
    pub async fn list(&self, query: ListQuery) -> Result<Page<R>, DomainError> {
        let scope = self.scope(Purpose::Read)?;
        Ok(self.crud.repository.list(scope, &query).await?)
    }

    /// One row; another owner's row is not found.
    pub async fn get(&self, id: R::Id) -> Result<R, DomainError> {
        let scope = self.scope(Purpose::Read)?;
        self.crud
            .repository
            .find(scope, id, Deleted::Exclude)
            .await?
            .ok_or_else(not_found::<R>)
    }

    fn fresh_meta(&self, owner: UserId) -> Meta {
        let now = self.crud.clock.now();
        Meta {
            owner,
            version: 1,
            created_by: self.caller.actor.user_id(),
            updated_by: self.caller.actor.user_id(),
            created_at: now,
            updated_at: now,
            deleted_at: None,
        }
    }

    /// Creates a row owned by the caller.
    pub async fn create(&self, input: R::New) -> Result<R, DomainError> {
        self.scope(Purpose::Write)?;
        let owner = self.owner()?;
        let row = R::build(R::Id::from(Uuid::now_v7()), input, self.fresh_meta(owner))
            .map_err(|errors| DomainError::Validation(errors.into_vec()))?;
        let mut tx = self.crud.unit_of_work.begin().await?;
        self.crud
            .repository
            .insert(tx.as_mut(), std::slice::from_ref(&row))
            .await?;
        self.record(tx.as_mut(), R::ACTIONS.created, &row, json!(null))
            .await?;
        tx.commit().await?;
        Ok(row)
    }

    /// Creates up to [`MAX_BULK`] rows in one statement: all or nothing. Every invalid item
    /// is reported, as `items[i].field`.
    pub async fn create_many(&self, inputs: Vec<R::New>) -> Result<Vec<R>, DomainError> {
        self.scope(Purpose::Write)?;
        let owner = self.owner()?;
        check_bulk_size(inputs.len())?;
        let mut errors = Vec::new();
        let mut rows = Vec::with_capacity(inputs.len());
        for (index, input) in inputs.into_iter().enumerate() {
            match R::build(R::Id::from(Uuid::now_v7()), input, self.fresh_meta(owner)) {
                Ok(row) => rows.push(row),
                Err(problems) => errors.extend(prefixed(index, problems)),
            }
        }
        if !errors.is_empty() {
            return Err(DomainError::Validation(errors));
        }
        let mut tx = self.crud.unit_of_work.begin().await?;
        self.crud.repository.insert(tx.as_mut(), &rows).await?;
        for row in &rows {
            self.record(
                tx.as_mut(),
                R::ACTIONS.created,
                row,
                json!({ "bulk": true }),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(rows)
    }

    /// Applies a patch. With `expected_versions`, the row must still be at one of those versions (else
    /// 412): the client changes what it last read, not what someone saved since.
    pub async fn update(
        &self,
        id: R::Id,
        patch: R::Patch,
        expected_versions: Option<&[i64]>,
    ) -> Result<R, DomainError> {
        let scope = self.scope(Purpose::Write)?;
        let mut tx = self.crud.unit_of_work.begin().await?;
        let mut row = self
            .crud
            .repository
            .find_for_update(tx.as_mut(), scope, &[id])
            .await?
            .pop()
            .filter(|r| r.meta().deleted_at.is_none())
            .ok_or_else(not_found::<R>)?;
        let expected = row.meta().version;
        if expected_versions.is_some_and(|versions| !versions.contains(&expected)) {
            return Err(DomainError::PreconditionFailed);
        }
        let changed = row
            .apply(&patch)
            .map_err(|errors| DomainError::Validation(errors.into_vec()))?;
        if changed.is_empty() {
            return Ok(row);
        }
        self.touch(&mut row);
        if !self
            .crud
            .repository
            .update(tx.as_mut(), &row, expected)
            .await?
        {
            return Err(DomainError::PreconditionFailed);
        }
        self.record(
            tx.as_mut(),
            R::ACTIONS.updated,
            &row,
            json!({ "fields": changed }),
        )
        .await?;
        tx.commit().await?;
        Ok(row)
    }

    /// Applies the same patch to up to [`MAX_BULK`] rows, in one statement: all or nothing.
    /// A row outside the caller's scope makes the whole request "not found".
    pub async fn update_many(&self, ids: &[R::Id], patch: R::Patch) -> Result<Vec<R>, DomainError> {
        let scope = self.scope(Purpose::Write)?;
        check_bulk_size(ids.len())?;
        let ids = unique(ids);
        let mut tx = self.crud.unit_of_work.begin().await?;
        let mut rows: Vec<R> = self
            .crud
            .repository
            .find_for_update(tx.as_mut(), scope, &ids)
            .await?
            .into_iter()
            .filter(|r| r.meta().deleted_at.is_none())
            .collect();
        if rows.len() != ids.len() {
            return Err(not_found::<R>());
        }
        let mut errors = Vec::new();
        let mut changes = Vec::with_capacity(rows.len());
        for (index, row) in rows.iter_mut().enumerate() {
            match row.apply(&patch) {
                Ok(changed) => changes.push(changed),
                Err(problems) => errors.extend(prefixed(index, problems)),
            }
        }
        if !errors.is_empty() {
            return Err(DomainError::Validation(errors));
        }
        for row in &mut rows {
            self.touch(row);
        }
        self.crud.repository.update_many(tx.as_mut(), &rows).await?;
        for (row, changed) in rows.iter().zip(changes) {
            self.record(
                tx.as_mut(),
                R::ACTIONS.updated,
                row,
                json!({ "fields": changed, "bulk": true }),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(rows)
    }

    /// Soft-deletes a row. With `expected_versions`, it must still be at one of those versions (else
    /// 412).
    pub async fn delete(
        &self,
        id: R::Id,
        expected_versions: Option<&[i64]>,
    ) -> Result<(), DomainError> {
        self.set_deleted(&[id], true, expected_versions)
            .await
            .map(drop)
    }

    /// Soft-deletes up to [`MAX_BULK`] rows in one statement: all or nothing.
    pub async fn delete_many(&self, ids: &[R::Id]) -> Result<(), DomainError> {
        check_bulk_size(ids.len())?;
        self.set_deleted(&unique(ids), true, None).await.map(drop)
    }

    /// Restores a soft-deleted row (a live row is returned unchanged).
    pub async fn restore(&self, id: R::Id) -> Result<R, DomainError> {
        self.set_deleted(&[id], false, None)
            .await?
            .pop()
            .ok_or_else(not_found::<R>)
    }

    async fn set_deleted(
        &self,
        ids: &[R::Id],
        delete: bool,
        expected_versions: Option<&[i64]>,
    ) -> Result<Vec<R>, DomainError> {
        let scope = self.scope(Purpose::Write)?;
        let mut tx = self.crud.unit_of_work.begin().await?;
        let mut rows = self
            .crud
            .repository
            .find_for_update(tx.as_mut(), scope, ids)
            .await?;
        // Deleting a deleted row, like reading it, finds nothing.
        if delete {
            rows.retain(|r| r.meta().deleted_at.is_none());
        }
        if rows.len() != ids.len() {
            return Err(not_found::<R>());
        }
        if let (Some(versions), [row]) = (expected_versions, rows.as_slice())
            && !versions.contains(&row.meta().version)
        {
            return Err(DomainError::PreconditionFailed);
        }
        let now = self.crud.clock.now();
        let mut changed = Vec::new();
        for row in &mut rows {
            let is_deleted = row.meta().deleted_at.is_some();
            if is_deleted != delete {
                row.meta_mut().deleted_at = delete.then_some(now);
                self.touch(row);
                changed.push(row.clone());
            }
        }
        if !changed.is_empty() {
            self.crud
                .repository
                .update_many(tx.as_mut(), &changed)
                .await?;
            let action = if delete {
                R::ACTIONS.deleted
            } else {
                R::ACTIONS.restored
            };
            for row in &changed {
                self.record(tx.as_mut(), action, row, json!(null)).await?;
            }
            tx.commit().await?;
        }
        Ok(rows)
    }

    fn touch(&self, row: &mut R) {
        let meta = row.meta_mut();
        meta.version += 1;
        meta.updated_at = self.crud.clock.now();
        meta.updated_by = self.caller.actor.user_id();
    }
}

fn check_bulk_size(len: usize) -> Result<(), DomainError> {
    if len == 0 || len > MAX_BULK {
        return Err(DomainError::invalid(
            "items",
            "length",
            format!("must hold between 1 and {MAX_BULK} items"),
        ));
    }
    Ok(())
}

fn unique<I: Copy + Into<Uuid> + From<Uuid>>(ids: &[I]) -> Vec<I> {
    let mut seen = BTreeSet::new();
    ids.iter()
        .copied()
        .filter(|id| seen.insert((*id).into()))
        .collect()
}

/// A [`CrudRepository`] over a vector, for unit tests of domains built on [`Crud`]. It honours
/// scopes, soft deletion and versions; lists ignore sort, filters and search (the query
/// language is tested against real databases) and order rows by creation.
#[derive(Debug)]
pub struct InMemoryCrud<R: Resource> {
    rows: Mutex<Vec<R>>,
}

impl<R: Resource> Default for InMemoryCrud<R> {
    fn default() -> Self {
        Self {
            rows: Mutex::new(Vec::new()),
        }
    }
}

impl<R: Resource> InMemoryCrud<R> {
    fn with<T>(&self, f: impl FnOnce(&mut Vec<R>) -> T) -> T {
        f(&mut self.rows.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

fn in_scope<R: Resource>(scope: RowScope, row: &R) -> bool {
    scope.admits(row.meta().owner, |name| row.field(name))
}

#[async_trait]
impl<R: Resource> CrudRepository<R> for InMemoryCrud<R> {
    async fn list(&self, scope: RowScope, query: &ListQuery) -> Result<Page<R>, RepoError> {
        let offset = match query.position {
            Position::Offset(offset) => usize::try_from(offset).unwrap_or(usize::MAX),
            Position::After(_) => 0,
        };
        Ok(self.with(|rows| {
            let visible: Vec<R> = rows
                .iter()
                .filter(|r| in_scope(scope, *r) && r.meta().deleted_at.is_none())
                .cloned()
                .collect();
            Page {
                total: visible.len() as u64,
                items: visible
                    .into_iter()
                    .skip(offset)
                    .take(query.limit as usize)
                    .collect(),
                limit: query.limit,
                offset: Some(offset as u64),
                next_cursor: None,
            }
        }))
    }

    async fn find(
        &self,
        scope: RowScope,
        id: R::Id,
        deleted: Deleted,
    ) -> Result<Option<R>, RepoError> {
        Ok(self.with(|rows| {
            rows.iter()
                .find(|r| {
                    r.id() == id
                        && in_scope(scope, *r)
                        && (deleted == Deleted::Include || r.meta().deleted_at.is_none())
                })
                .cloned()
        }))
    }

    async fn find_for_update(
        &self,
        _tx: &mut dyn Transaction,
        scope: RowScope,
        ids: &[R::Id],
    ) -> Result<Vec<R>, RepoError> {
        Ok(self.with(|rows| {
            rows.iter()
                .filter(|r| ids.contains(&r.id()) && in_scope(scope, *r))
                .cloned()
                .collect()
        }))
    }

    async fn insert(&self, _tx: &mut dyn Transaction, new: &[R]) -> Result<(), RepoError> {
        self.with(|rows| rows.extend(new.iter().cloned()));
        Ok(())
    }

    async fn update(
        &self,
        _tx: &mut dyn Transaction,
        row: &R,
        expected_version: i64,
    ) -> Result<bool, RepoError> {
        Ok(self.with(|rows| {
            match rows
                .iter_mut()
                .find(|r| r.id() == row.id() && r.meta().version == expected_version)
            {
                Some(stored) => {
                    *stored = row.clone();
                    true
                }
                None => false,
            }
        }))
    }

    async fn update_many(&self, _tx: &mut dyn Transaction, updated: &[R]) -> Result<(), RepoError> {
        self.with(|rows| {
            for row in updated {
                if let Some(stored) = rows.iter_mut().find(|r| r.id() == row.id()) {
                    *stored = row.clone();
                }
            }
        });
        Ok(())
    }
}
