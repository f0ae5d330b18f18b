//! The activity log in the `activity` table: appended in the change's transaction, read back
//! within the caller's scope, purged in small batches past the retention.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use keel_activity::{ActivityEntry, ActivityId, ActivityRepository, ActivityScope};
use keel_kernel::activity::{ActivityLog, NewActivity};
use keel_kernel::{Actor, ApiKeyId, Caller, ListQuery, Page, RepoError, Transaction, UserId};
use sea_orm::sea_query::Query;
use sea_orm::{
    ColumnTrait, Condition, DatabaseConnection, EntityTrait, IntoActiveModel, Order, QueryFilter,
};

use crate::error::repo_err;
use crate::listing::{Listable, fetch_page};
use crate::unit_of_work::sea_txn;

/// The sea-orm entity for `activity`.
pub mod entity {
    use sea_orm::entity::prelude::*;

    /// One row of `activity`.
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "activity")]
    pub struct Model {
        /// Primary key (UUIDv7).
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        /// `resource.verb`.
        pub action: String,
        /// `user`, `api_key`, `system`, `anonymous`.
        pub actor_type: String,
        /// The acting user.
        pub actor_user_id: Option<Uuid>,
        /// The API key used.
        pub actor_api_key_id: Option<Uuid>,
        /// The user concerned.
        pub subject_user_id: Option<Uuid>,
        /// Kind of resource.
        pub resource_type: String,
        /// Its id.
        pub resource_id: Option<String>,
        /// Change summary.
        #[sea_orm(column_type = "JsonBinary")]
        pub changes: Json,
        /// Client address.
        pub ip: Option<String>,
        /// Client user agent.
        pub user_agent: Option<String>,
        /// Request id.
        pub request_id: Option<String>,
        /// When.
        pub created_at: DateTimeUtc,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

use entity::{Column, Entity, Model};

impl Listable for Entity {
    fn column(field: &str) -> Option<Column> {
        Some(match field {
            "id" => Column::Id,
            "created_at" => Column::CreatedAt,
            "action" => Column::Action,
            "resource_type" => Column::ResourceType,
            "resource_id" => Column::ResourceId,
            "actor_user_id" => Column::ActorUserId,
            "subject_user_id" => Column::SubjectUserId,
            "request_id" => Column::RequestId,
            _ => return None,
        })
    }

    fn search_columns() -> &'static [Column] {
        &[]
    }
}

fn truncate(value: Option<&str>, max: usize) -> Option<String> {
    value.map(|v| v.chars().take(max).collect())
}

/// Writes entries ([`ActivityLog`]) and reads them back ([`ActivityRepository`]).
#[derive(Debug, Clone)]
pub struct SeaActivity {
    db: DatabaseConnection,
}

impl SeaActivity {
    /// The activity log on this pool.
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }
}

#[async_trait]
impl ActivityLog for SeaActivity {
    async fn record(
        &self,
        tx: &mut dyn Transaction,
        caller: &Caller,
        entry: NewActivity,
    ) -> Result<(), RepoError> {
        let txn = sea_txn(tx)?;
        let api_key = match &caller.actor {
            Actor::ApiKey { id, .. } => Some(id.as_uuid()),
            _ => None,
        };
        let model = Model {
            id: ActivityId::new().as_uuid(),
            action: entry.action.to_owned(),
            actor_type: caller.actor.kind().to_owned(),
            actor_user_id: caller.actor.user_id().map(|id| id.as_uuid()),
            actor_api_key_id: api_key,
            subject_user_id: entry.subject.map(|id| id.as_uuid()),
            resource_type: entry.resource_type.to_owned(),
            resource_id: truncate(entry.resource_id.as_deref(), 64),
            changes: entry.changes,
            ip: caller.origin.ip.map(|ip| ip.to_string()),
            user_agent: truncate(caller.origin.user_agent.as_deref(), 512),
            request_id: truncate(caller.origin.request_id.as_deref(), 128),
            created_at: entry.at,
        };
        Entity::insert(model.into_active_model())
            .exec_without_returning(txn)
            .await
            .map_err(repo_err)?;
        Ok(())
    }
}

fn to_entry(model: Model) -> ActivityEntry {
    ActivityEntry {
        id: ActivityId::from_uuid(model.id),
        action: model.action,
        actor_type: model.actor_type,
        actor_user_id: model.actor_user_id.map(UserId::from_uuid),
        actor_api_key_id: model.actor_api_key_id.map(ApiKeyId::from_uuid),
        subject_user_id: model.subject_user_id.map(UserId::from_uuid),
        resource_type: model.resource_type,
        resource_id: model.resource_id,
        changes: model.changes,
        ip: model.ip,
        user_agent: model.user_agent,
        request_id: model.request_id,
        created_at: model.created_at,
    }
}

#[async_trait]
impl ActivityRepository for SeaActivity {
    async fn list(
        &self,
        scope: ActivityScope,
        query: &ListQuery,
    ) -> Result<Page<ActivityEntry>, RepoError> {
        let mut select = Entity::find();
        if let Some(user) = scope.own_user() {
            select = select.filter(
                Condition::any()
                    .add(Column::ActorUserId.eq(user.as_uuid()))
                    .add(Column::SubjectUserId.eq(user.as_uuid())),
            );
        }
        Ok(fetch_page(&self.db, select, query).await?.map(to_entry))
    }

    async fn purge_batch(&self, before: DateTime<Utc>, limit: u64) -> Result<u64, RepoError> {
        // `DELETE … WHERE id IN (SELECT id … ORDER BY created_at LIMIT n)`: one short statement
        // over the `created_at` index, portable to SQLite and PostgreSQL (neither needs
        // DELETE … LIMIT support).
        let oldest = Query::select()
            .column(Column::Id)
            .from(Entity)
            .and_where(Column::CreatedAt.lt(before))
            .order_by(Column::CreatedAt, Order::Asc)
            .limit(limit)
            .to_owned();
        let deleted = Entity::delete_many()
            .filter(Column::Id.in_subquery(oldest))
            .exec(&self.db)
            .await
            .map_err(repo_err)?;
        Ok(deleted.rows_affected)
    }
}

/// Registers the activity log's use cases and permissions.
pub fn register(
    adapters: &crate::Adapters,
    state: &mut keel_kernel::AppStateBuilder,
) -> Result<(), crate::RegisterError> {
    state
        .permissions(keel_activity::PERMISSIONS)
        .insert(keel_activity::Activity::new(adapters.activity.clone()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use keel_activity::LIST_SPEC;

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
