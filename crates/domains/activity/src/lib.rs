//! The activity log: every auth event and every change, append-only. Entries are written by
//! each domain through `keel_kernel::ActivityLog` in the transaction of the change they
//! describe; this crate reads them back, scoped to the caller. Nobody updates or deletes an
//! entry: only Keel itself purges entries older than the retention (`activity.retention`).

pub mod jobs;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use keel_kernel::query::{FieldKind, FieldSpec, FilterOp, ListSpec, Value};
use keel_kernel::{
    Actor, ApiKeyId, Caller, DomainError, FieldError, ListQuery, Page, Permission, PermissionDef,
    RepoError, UserId,
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

/// Entries one purge statement deletes at most: each batch is a short statement, so a purge
/// never holds the table's write lock (SQLite) or many row locks (PostgreSQL) for long.
pub const PURGE_BATCH: u64 = 1_000;

/// Batches one purge run deletes at most, so a run ends well within its job timeout even
/// after a long backlog; the next scheduled run continues.
pub const PURGE_MAX_BATCHES: u64 = 100;

/// One recorded event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActivityEntry {
    /// Identity.
    pub id: ActivityId,
    /// What happened, e.g. `auth.login`, `user.suspended`.
    pub action: String,
    /// `user`, `api_key`, `system` or `anonymous`.
    pub actor_type: String,
    /// The acting user (the key's owner for API keys); hidden from a subject who is not the
    /// actor and lacks `activity:read`.
    pub actor_user_id: Option<UserId>,
    /// The API key used, if any; hidden like `actor_user_id`.
    pub actor_api_key_id: Option<ApiKeyId>,
    /// The user the entry concerns, when not the actor.
    pub subject_user_id: Option<UserId>,
    /// The kind of resource.
    pub resource_type: String,
    /// The resource's id.
    pub resource_id: Option<String>,
    /// Summary of what changed (never secrets).
    pub changes: serde_json::Value,
    /// Client address; hidden like `actor_user_id`.
    pub ip: Option<String>,
    /// Client user agent; hidden like `actor_user_id`.
    pub user_agent: Option<String>,
    /// Request id, to find the request's log lines.
    pub request_id: Option<String>,
    /// When.
    pub created_at: DateTime<Utc>,
}

impl ActivityEntry {
    /// Drops what identifies the actor (who, and from where), keeping the actor's kind, so
    /// the subject still learns that someone changed their account without learning the
    /// administrator's address, browser or id.
    fn without_actor_details(mut self) -> Self {
        self.actor_user_id = None;
        self.actor_api_key_id = None;
        self.ip = None;
        self.user_agent = None;
        self
    }
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

    /// Deletes up to `limit` of the oldest entries created before `before`, in one short
    /// statement; returns how many went.
    async fn purge_batch(&self, before: DateTime<Utc>, limit: u64) -> Result<u64, RepoError>;
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
    ///
    /// Without `activity:read`, an entry someone else did (an administrator editing the
    /// caller's account, a failed sign-in on it) comes without the actor's id, API key, IP and
    /// user agent, and `actor_user_id` filters may name only the caller: otherwise filtering
    /// by a guessed id would reveal who acted.
    pub async fn list(
        &self,
        caller: &Caller,
        query: ListQuery,
    ) -> Result<Page<ActivityEntry>, DomainError> {
        if caller.actor.can(&READ_ALL) {
            return Ok(self.repository.list(ActivityScope(None), &query).await?);
        }
        caller.actor.require_verified()?;
        let me = caller.actor.user_id().ok_or(DomainError::Unauthenticated)?;
        check_actor_filters(&query, me)?;
        let page = self
            .repository
            .list(ActivityScope(Some(me)), &query)
            .await?;
        Ok(page.map(|entry| {
            if entry.actor_user_id == Some(me) {
                entry
            } else {
                entry.without_actor_details()
            }
        }))
    }

    /// Deletes entries created before `before`, in batches of [`PURGE_BATCH`] (at most
    /// [`PURGE_MAX_BATCHES`] per run). Keel itself only: the `activity.purge_old_entries` job.
    /// Returns how many entries went.
    pub async fn purge_older_than(
        &self,
        caller: &Caller,
        before: DateTime<Utc>,
    ) -> Result<u64, DomainError> {
        if caller.actor != Actor::System {
            return Err(DomainError::Forbidden {
                permission: "system".to_owned(),
            });
        }
        let mut purged = 0;
        for _ in 0..PURGE_MAX_BATCHES {
            let batch = self.repository.purge_batch(before, PURGE_BATCH).await?;
            purged += batch;
            if batch < PURGE_BATCH {
                break;
            }
        }
        Ok(purged)
    }
}

/// Refuses `actor_user_id` filters naming anyone but `me` (see [`Activity::list`]).
fn check_actor_filters(query: &ListQuery, me: UserId) -> Result<(), DomainError> {
    let mine = |value: &Value| *value == Value::Uuid(me.as_uuid());
    let foreign = query
        .filters
        .iter()
        .filter(|filter| filter.field == "actor_user_id")
        .any(|filter| match &filter.op {
            FilterOp::Eq(value) => !mine(value),
            FilterOp::In(values) => !values.iter().all(mine),
            FilterOp::Gte(_) | FilterOp::Lte(_) => true,
        });
    if foreign {
        return Err(DomainError::Validation(vec![FieldError::new(
            "actor_user_id",
            "forbidden_value",
            "may name only your own id without the activity:read permission",
        )]));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use chrono::Duration;
    use futures_executor::block_on;
    use keel_kernel::{Actor, SessionId};

    use super::*;

    /// An in-memory activity table: applies the scope as the SQL adapter does and remembers
    /// every scope and purge batch asked for.
    #[derive(Debug, Default)]
    struct InMemory {
        entries: std::sync::Mutex<Vec<ActivityEntry>>,
        scopes: std::sync::Mutex<Vec<ActivityScope>>,
        batches: std::sync::Mutex<Vec<u64>>,
    }

    impl InMemory {
        fn with(entries: Vec<ActivityEntry>) -> Self {
            Self {
                entries: std::sync::Mutex::new(entries),
                ..Self::default()
            }
        }
    }

    #[async_trait]
    impl ActivityRepository for InMemory {
        async fn list(
            &self,
            scope: ActivityScope,
            query: &ListQuery,
        ) -> Result<Page<ActivityEntry>, RepoError> {
            self.scopes.lock().unwrap().push(scope);
            let items: Vec<ActivityEntry> = self
                .entries
                .lock()
                .unwrap()
                .iter()
                .filter(|e| {
                    scope.own_user().is_none_or(|user| {
                        e.actor_user_id == Some(user) || e.subject_user_id == Some(user)
                    })
                })
                .cloned()
                .collect();
            Ok(Page {
                total: items.len() as u64,
                items,
                limit: query.limit,
                offset: Some(0),
                next_cursor: None,
            })
        }

        async fn purge_batch(&self, before: DateTime<Utc>, limit: u64) -> Result<u64, RepoError> {
            let mut entries = self.entries.lock().unwrap();
            let mut old: Vec<ActivityId> = entries
                .iter()
                .filter(|e| e.created_at < before)
                .map(|e| e.id)
                .collect();
            old.truncate(usize::try_from(limit).unwrap());
            entries.retain(|e| !old.contains(&e.id));
            self.batches.lock().unwrap().push(old.len() as u64);
            Ok(old.len() as u64)
        }
    }

    fn user(id: UserId, permissions: &[Permission]) -> Caller {
        Caller::new(Actor::User {
            id,
            session: SessionId::new(),
            permissions: permissions.iter().cloned().collect(),
        })
    }

    fn entry(actor: Option<UserId>, subject: Option<UserId>, at: DateTime<Utc>) -> ActivityEntry {
        ActivityEntry {
            id: ActivityId::new(),
            action: "user.updated".to_owned(),
            actor_type: if actor.is_some() { "user" } else { "anonymous" }.to_owned(),
            actor_user_id: actor,
            actor_api_key_id: None,
            subject_user_id: subject,
            resource_type: "user".to_owned(),
            resource_id: subject.map(|s| s.to_string()),
            changes: serde_json::json!({"fields": ["full_name"]}),
            ip: Some("203.0.113.7".to_owned()),
            user_agent: Some("curl/8.5.0".to_owned()),
            request_id: Some("req-1".to_owned()),
            created_at: at,
        }
    }

    fn query() -> ListQuery {
        ListQuery::first_page(&LIST_SPEC)
    }

    #[test]
    fn members_see_their_own_entries_admins_all_anonymous_nothing() {
        let store = Arc::new(InMemory::default());
        let activity = Activity::new(store.clone());
        let member = UserId::new();
        block_on(activity.list(&user(member, &[]), query())).unwrap();
        block_on(activity.list(&user(UserId::new(), &[READ_ALL]), query())).unwrap();
        assert!(matches!(
            block_on(activity.list(&Caller::new(Actor::Anonymous), query())),
            Err(DomainError::Unauthenticated)
        ));
        let scopes = store.scopes.lock().unwrap().clone();
        assert_eq!(scopes[0].own_user(), Some(member));
        assert_eq!(scopes[1].own_user(), None);
        assert_eq!(
            scopes.len(),
            2,
            "anonymous callers never reach the repository"
        );
    }

    #[test]
    fn a_subject_sees_what_others_did_to_them_without_who_and_from_where() {
        let (admin, member) = (UserId::new(), UserId::new());
        let now = Utc::now();
        let by_admin = entry(Some(admin), Some(member), now);
        let by_member = entry(Some(member), None, now);
        let failed_login = entry(None, Some(member), now);
        let activity = Activity::new(Arc::new(InMemory::with(vec![
            by_admin.clone(),
            by_member.clone(),
            failed_login.clone(),
        ])));

        let seen = block_on(activity.list(&user(member, &[]), query())).unwrap();
        let find = |id| seen.items.iter().find(|e| e.id == id).unwrap();
        let hidden = find(by_admin.id);
        assert_eq!(
            (
                hidden.actor_user_id,
                hidden.actor_api_key_id,
                hidden.ip.as_deref(),
                hidden.user_agent.as_deref()
            ),
            (None, None, None, None)
        );
        assert_eq!(hidden.actor_type, "user", "the kind of actor stays visible");
        assert_eq!(hidden.subject_user_id, Some(member));
        assert_eq!(hidden.changes, by_admin.changes);
        assert_eq!(
            find(by_member.id),
            &by_member,
            "one's own acts keep everything"
        );
        assert_eq!(
            find(failed_login.id).ip,
            None,
            "an anonymous actor is someone else"
        );

        let admin_view = block_on(activity.list(&user(admin, &[READ_ALL]), query())).unwrap();
        assert!(
            admin_view.items.contains(&by_admin),
            "activity:read sees all"
        );
    }

    #[test]
    fn without_activity_read_actor_filters_may_name_only_oneself() {
        let (admin, member) = (UserId::new(), UserId::new());
        let activity = Activity::new(Arc::new(InMemory::default()));
        let filtered = |value: String| {
            ListQuery::parse(&LIST_SPEC, [("actor_user_id__in", value.as_str())]).unwrap()
        };
        let refused = block_on(activity.list(&user(member, &[]), filtered(admin.to_string())));
        assert!(
            matches!(&refused, Err(DomainError::Validation(errors)) if errors[0].field == "actor_user_id"),
            "{refused:?}"
        );
        assert!(block_on(activity.list(&user(member, &[]), filtered(member.to_string()))).is_ok());
        assert!(
            block_on(activity.list(&user(admin, &[READ_ALL]), filtered(member.to_string())))
                .is_ok()
        );
    }

    #[test]
    fn only_keel_purges_old_entries_in_bounded_batches() {
        let now = Utc::now();
        let old = usize::try_from(PURGE_BATCH).unwrap() * 2 + 5;
        let mut entries: Vec<ActivityEntry> = (0..old)
            .map(|_| entry(None, None, now - Duration::days(100)))
            .collect();
        let fresh = entry(None, None, now - Duration::days(1));
        entries.push(fresh.clone());
        let store = Arc::new(InMemory::with(entries));
        let activity = Activity::new(store.clone());
        let cutoff = now - Duration::days(90);

        let refused =
            block_on(activity.purge_older_than(&user(UserId::new(), &[READ_ALL]), cutoff));
        assert!(
            matches!(refused, Err(DomainError::Forbidden { .. })),
            "{refused:?}"
        );
        assert_eq!(store.entries.lock().unwrap().len(), old + 1, "nothing went");

        let purged =
            block_on(activity.purge_older_than(&keel_kernel::auth::SYSTEM, cutoff)).unwrap();
        assert_eq!(purged, old as u64);
        assert_eq!(*store.entries.lock().unwrap(), vec![fresh]);
        assert_eq!(
            *store.batches.lock().unwrap(),
            vec![PURGE_BATCH, PURGE_BATCH, 5],
            "one bounded statement per batch, until a short one"
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
