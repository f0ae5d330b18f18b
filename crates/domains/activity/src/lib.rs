//! The activity log: every auth event and every change, append-only. Entries are written by
//! each domain through `keel_kernel::ActivityLog` in the transaction of the change they
//! describe; this crate reads them back, scoped to the caller. There is no update or delete.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use keel_kernel::query::{FieldKind, FieldSpec, ListSpec};
use keel_kernel::{
    ApiKeyId, Caller, DomainError, ListQuery, Page, Permission, PermissionDef, RepoError, UserId,
};
use serde::Serialize;

keel_kernel::define_id!(
    /// Identifies an activity entry.
    ActivityId
);

/// See every entry, not only one's own.
pub const READ_ALL: Permission = Permission::from_static("activity:read");

/// Every permission this domain defines.
pub const PERMISSIONS: &[PermissionDef] = &[PermissionDef::new(
    READ_ALL,
    "Read every activity entry, not only one's own",
)];

/// One recorded event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActivityEntry {
    /// Identity.
    pub id: ActivityId,
    /// What happened, e.g. `auth.login`, `user.suspended`.
    pub action: String,
    /// `user`, `api_key`, `system` or `anonymous`.
    pub actor_type: String,
    /// The acting user (the key's owner for API keys).
    pub actor_user_id: Option<UserId>,
    /// The API key used, if any.
    pub actor_api_key_id: Option<ApiKeyId>,
    /// The user the entry concerns, when not the actor.
    pub subject_user_id: Option<UserId>,
    /// The kind of resource.
    pub resource_type: String,
    /// The resource's id.
    pub resource_id: Option<String>,
    /// Summary of what changed (never secrets).
    pub changes: serde_json::Value,
    /// Client address.
    pub ip: Option<String>,
    /// Client user agent.
    pub user_agent: Option<String>,
    /// Request id, to find the request's log lines.
    pub request_id: Option<String>,
    /// When.
    pub created_at: DateTime<Utc>,
}

/// Which entries a query may return; built here from the caller, never by adapters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActivityScope(Option<UserId>);

impl ActivityScope {
    /// `None` for every entry; `Some(user)` for entries the user did or that concern them.
    pub fn own_user(&self) -> Option<UserId> {
        self.0
    }
}

/// Sorting and filtering allowed on the activity list.
pub const LIST_SPEC: ListSpec = ListSpec {
    fields: &[
        FieldSpec::new("created_at", FieldKind::Timestamp)
            .sortable()
            .filterable(),
        FieldSpec::new("action", FieldKind::Text).filterable(),
        FieldSpec::new("resource_type", FieldKind::Text).filterable(),
        FieldSpec::new("resource_id", FieldKind::Text)
            .filterable()
            .nullable(),
        FieldSpec::new("actor_user_id", FieldKind::Uuid)
            .filterable()
            .nullable(),
        FieldSpec::new("subject_user_id", FieldKind::Uuid)
            .filterable()
            .nullable(),
        FieldSpec::new("request_id", FieldKind::Text)
            .filterable()
            .nullable(),
    ],
    default_sort: "-created_at",
    searchable: false,
};

/// Reads activity entries.
#[async_trait]
pub trait ActivityRepository: Send + Sync + std::fmt::Debug {
    /// One page of the entries `scope` allows.
    async fn list(
        &self,
        scope: ActivityScope,
        query: &ListQuery,
    ) -> Result<Page<ActivityEntry>, RepoError>;
}

/// The activity service.
#[derive(Debug, Clone)]
pub struct Activity {
    repository: Arc<dyn ActivityRepository>,
}

impl Activity {
    /// Wires the service.
    pub fn new(repository: Arc<dyn ActivityRepository>) -> Self {
        Self { repository }
    }

    /// Entries visible to `caller`: all with `activity:read`, else those they did or that
    /// concern them. Anonymous callers see nothing.
    pub async fn list(
        &self,
        caller: &Caller,
        query: ListQuery,
    ) -> Result<Page<ActivityEntry>, DomainError> {
        let scope = if caller.actor.can(&READ_ALL) {
            ActivityScope(None)
        } else {
            ActivityScope(Some(
                caller.actor.user_id().ok_or(DomainError::Unauthenticated)?,
            ))
        };
        Ok(self.repository.list(scope, &query).await?)
    }
}

#[cfg(test)]
mod tests {
    use futures_executor::block_on;
    use keel_kernel::{Actor, SessionId};

    use super::*;

    #[derive(Debug, Default)]
    struct Recorder(std::sync::Mutex<Vec<ActivityScope>>);

    #[async_trait]
    impl ActivityRepository for Recorder {
        async fn list(
            &self,
            scope: ActivityScope,
            query: &ListQuery,
        ) -> Result<Page<ActivityEntry>, RepoError> {
            self.0.lock().unwrap().push(scope);
            Ok(Page {
                items: vec![],
                total: 0,
                limit: query.limit,
                offset: Some(0),
                next_cursor: None,
            })
        }
    }

    #[test]
    fn members_see_their_own_entries_admins_all_anonymous_nothing() {
        let recorder = Arc::new(Recorder::default());
        let activity = Activity::new(recorder.clone());
        let member = UserId::new();
        let caller = |permissions: &[Permission], id| {
            Caller::new(Actor::User {
                id,
                session: SessionId::new(),
                permissions: permissions.iter().cloned().collect(),
            })
        };
        let query = || ListQuery::first_page(&LIST_SPEC);
        block_on(activity.list(&caller(&[], member), query())).unwrap();
        block_on(activity.list(&caller(&[READ_ALL], UserId::new()), query())).unwrap();
        assert!(matches!(
            block_on(activity.list(&Caller::new(Actor::Anonymous), query())),
            Err(DomainError::Unauthenticated)
        ));
        let scopes = recorder.0.lock().unwrap().clone();
        assert_eq!(scopes[0].own_user(), Some(member));
        assert_eq!(scopes[1].own_user(), None);
        assert_eq!(
            scopes.len(),
            2,
            "anonymous callers never reach the repository"
        );
    }

    #[test]
    fn the_list_spec_is_consistent() {
        assert_eq!(
            ListQuery::parse(&LIST_SPEC, [("sort", LIST_SPEC.default_sort)]).unwrap(),
            ListQuery::first_page(&LIST_SPEC)
        );
        assert!(Permission::parse(READ_ALL.as_str()).is_ok());
    }
}
