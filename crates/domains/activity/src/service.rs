//! Activity use cases: [`Activity`] holds the port, [`Activity::for_caller`] binds it to one
//! caller.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use keel_kernel::query::{FilterOp, Value};
use keel_kernel::{Actor, Caller, DomainError, FieldError, ListQuery, Page, UserId};

use crate::error::ActivityError;
use crate::model::ActivityEntry;
use crate::policy::{ActivityScope, READ_ALL};
use crate::repository::ActivityRepository;

/// Entries one purge statement deletes at most: each batch is a short statement, so a purge
/// never holds the table's write lock (SQLite) or many row locks (PostgreSQL) for long.
pub const PURGE_BATCH: u64 = 1_000;

/// Batches one purge run deletes at most, so a run ends well within its job timeout even
/// after a long backlog; the next scheduled run continues.
pub const PURGE_MAX_BATCHES: u64 = 100;

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

    /// The use cases as `caller` may run them.
    pub fn for_caller<'a>(&'a self, caller: &'a Caller) -> ActivityService<'a> {
        ActivityService {
            activity: self,
            caller,
        }
    }
}

/// The activity use cases bound to one caller.
#[derive(Debug)]
pub struct ActivityService<'a> {
    activity: &'a Activity,
    caller: &'a Caller,
}

impl ActivityService<'_> {
    /// Entries visible to the caller: all with `activity:read`, else those they did or that
    /// concern them. Anonymous callers see nothing.
    ///
    /// Without `activity:read`, an entry someone else did (an administrator editing the
    /// caller's account, a failed sign-in on it) comes without the actor's id, API key, IP and
    /// user agent, and `actor_user_id` filters may name only the caller: otherwise filtering
    /// by a guessed id would reveal who acted.
    pub async fn list(&self, query: ListQuery) -> Result<Page<ActivityEntry>, ActivityError> {
        let caller = self.caller;
        let repository = &self.activity.repository;
        if caller.actor.can(&READ_ALL) {
            return Ok(repository.list(ActivityScope(None), &query).await?);
        }
        caller.actor.require_verified()?;
        let me = caller.actor.user_id().ok_or(DomainError::Unauthenticated)?;
        check_actor_filters(&query, me)?;
        let page = repository.list(ActivityScope(Some(me)), &query).await?;
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
    pub async fn purge_older_than(&self, before: DateTime<Utc>) -> Result<u64, ActivityError> {
        if self.caller.actor != Actor::System {
            return Err(DomainError::Forbidden {
                permission: "system".to_owned(),
            });
        }
        let mut purged = 0;
        for _ in 0..PURGE_MAX_BATCHES {
            let batch = self
                .activity
                .repository
                .purge_batch(before, PURGE_BATCH)
                .await?;
            purged += batch;
            if batch < PURGE_BATCH {
                break;
            }
        }
        Ok(purged)
    }
}

/// Refuses `actor_user_id` filters naming anyone but `me` (see [`ActivityService::list`]).
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
    use crate::model::{ActivityEntry, ActivityId};
    use crate::policy::{LIST_SPEC, READ_ALL};
    use crate::testing::InMemoryActivityRepository;
    use keel_kernel::Permission;

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
        let store = Arc::new(InMemoryActivityRepository::default());
        let activity = Activity::new(store.clone());
        let member = UserId::new();
        block_on(activity.for_caller(&user(member, &[])).list(query())).unwrap();
        block_on(
            activity
                .for_caller(&user(UserId::new(), &[READ_ALL]))
                .list(query()),
        )
        .unwrap();
        assert!(matches!(
            block_on(
                activity
                    .for_caller(&Caller::new(Actor::Anonymous))
                    .list(query())
            ),
            Err(DomainError::Unauthenticated)
        ));
        let scopes = store.scopes();
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
        let activity = Activity::new(Arc::new(InMemoryActivityRepository::with(vec![
            by_admin.clone(),
            by_member.clone(),
            failed_login.clone(),
        ])));

        let seen = block_on(activity.for_caller(&user(member, &[])).list(query())).unwrap();
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

        let admin_view =
            block_on(activity.for_caller(&user(admin, &[READ_ALL])).list(query())).unwrap();
        assert!(
            admin_view.items.contains(&by_admin),
            "activity:read sees all"
        );
    }

    #[test]
    fn without_activity_read_actor_filters_may_name_only_oneself() {
        let (admin, member) = (UserId::new(), UserId::new());
        let activity = Activity::new(Arc::new(InMemoryActivityRepository::default()));
        let filtered = |value: String| {
            ListQuery::parse(&LIST_SPEC, [("actor_user_id__in", value.as_str())]).unwrap()
        };
        let refused = block_on(
            activity
                .for_caller(&user(member, &[]))
                .list(filtered(admin.to_string())),
        );
        assert!(
            matches!(&refused, Err(DomainError::Validation(errors)) if errors[0].field == "actor_user_id"),
            "{refused:?}"
        );
        assert!(
            block_on(
                activity
                    .for_caller(&user(member, &[]))
                    .list(filtered(member.to_string()))
            )
            .is_ok()
        );
        assert!(
            block_on(
                activity
                    .for_caller(&user(admin, &[READ_ALL]))
                    .list(filtered(member.to_string()))
            )
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
        let store = Arc::new(InMemoryActivityRepository::with(entries));
        let activity = Activity::new(store.clone());
        let cutoff = now - Duration::days(90);

        let refused = block_on(
            activity
                .for_caller(&user(UserId::new(), &[READ_ALL]))
                .purge_older_than(cutoff),
        );
        assert!(
            matches!(refused, Err(DomainError::Forbidden { .. })),
            "{refused:?}"
        );
        assert_eq!(store.entries().len(), old + 1, "nothing went");

        let purged = block_on(
            activity
                .for_caller(&keel_kernel::auth::SYSTEM)
                .purge_older_than(cutoff),
        )
        .unwrap();
        assert_eq!(purged, old as u64);
        assert_eq!(store.entries(), vec![fresh]);
        assert_eq!(
            store.batches(),
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
