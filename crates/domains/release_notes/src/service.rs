//! Release-note use cases.

use std::sync::Arc;

use keel_kernel::auth::SYSTEM;
use keel_kernel::cache::CacheAside;
use keel_kernel::validation::FieldErrors;
use keel_kernel::{
    ActivityLog, Caller, Clock, ListQuery, NewActivity, Page, RepoError, UnitOfWork,
};
use serde_json::json;

use crate::error::ReleaseError;
use crate::model::{
    NewReleaseNote, ReleaseNote, ReleaseNoteId, ReleaseNotePatch, ReleaseStatus, check_body,
    check_title, check_version,
};
use crate::policy::{Visibility, WRITE};
use crate::repository::ReleaseNoteRepository;

/// The release-notes service's dependencies; cheap to clone and shared by every request.
#[derive(Debug, Clone)]
pub struct ReleaseNotes {
    repository: Arc<dyn ReleaseNoteRepository>,
    unit_of_work: Arc<dyn UnitOfWork>,
    activity: Arc<dyn ActivityLog>,
    clock: Arc<dyn Clock>,
    cache: CacheAside,
}

/// The cache tag of everything readers see: every change to what is published invalidates it.
const PUBLISHED: &str = "published";

impl ReleaseNotes {
    /// Wires the service to its ports. `cache` holds what every reader sees alike (the public
    /// list pages and the latest note).
    pub fn new(
        repository: Arc<dyn ReleaseNoteRepository>,
        unit_of_work: Arc<dyn UnitOfWork>,
        activity: Arc<dyn ActivityLog>,
        clock: Arc<dyn Clock>,
        cache: CacheAside,
    ) -> Self {
        Self {
            repository,
            unit_of_work,
            activity,
            clock,
            cache,
        }
    }

    /// The use cases as `caller` may run them.
    pub fn for_caller<'a>(&'a self, caller: &'a Caller) -> ReleaseNoteService<'a> {
        ReleaseNoteService { deps: self, caller }
    }

    /// The use cases run by Keel itself (seeding, jobs): every permission, every row.
    pub fn for_system(&self) -> ReleaseNoteService<'_> {
        ReleaseNoteService {
            deps: self,
            caller: &SYSTEM,
        }
    }
}

/// Release-note use cases bound to one caller. Every write checks the caller's permission
/// first (deny by default); reads return only what the caller's [`Visibility`] allows. Every
/// write is recorded in the activity log in its own transaction.
#[derive(Debug)]
pub struct ReleaseNoteService<'a> {
    deps: &'a ReleaseNotes,
    caller: &'a Caller,
}

impl ReleaseNoteService<'_> {
    fn visibility(&self) -> Visibility {
        Visibility::for_actor(&self.caller.actor)
    }

    /// One page of the notes the actor may see (published ones for everyone, drafts too for
    /// writers).
    ///
    /// The public feed's first page (default order, no filter or search) is cached: it is
    /// what nearly every reader asks for. Other pages, filters and searches, and the
    /// writers' view with drafts, always come from the repository: cached, their unbounded
    /// variety would let anyone fill the cache.
    pub async fn list(&self, query: ListQuery) -> Result<Page<ReleaseNote>, ReleaseError> {
        let visibility = self.visibility();
        let repository = &self.deps.repository;
        let default = ListQuery::first_page(&crate::LIST_SPEC);
        let front_page = visibility.published_only()
            && query.search.is_none()
            && query.filters.is_empty()
            && query.position == default.position
            && query.sort == default.sort;
        if !front_page {
            return Ok(repository.list(visibility, &query).await?);
        }
        // At most one entry per page size (1..=100).
        let key = format!("front-page:{}", query.limit);
        self.deps
            .cache
            .get_or_load(&key, &[PUBLISHED], || async {
                Ok(repository.list(visibility, &query).await?)
            })
            .await
    }

    /// The most recently published note (cached).
    pub async fn latest(&self) -> Result<ReleaseNote, ReleaseError> {
        let repository = &self.deps.repository;
        let latest: Option<ReleaseNote> = self
            .deps
            .cache
            .get_or_load("latest", &[PUBLISHED], || async {
                Ok::<_, ReleaseError>(repository.latest_published().await?)
            })
            .await?;
        latest.ok_or(ReleaseError::NotFound)
    }

    /// Makes every reader's cached view stale after a committed change to what is published.
    /// A failure (Redis away) is logged by the cache and leaves entries to expire: the change
    /// itself is already stored.
    async fn published_changed(&self) {
        let _ = self.deps.cache.invalidate(&[PUBLISHED]).await;
    }

    /// One note, if the actor may see it.
    pub async fn get(&self, id: ReleaseNoteId) -> Result<ReleaseNote, ReleaseError> {
        self.deps
            .repository
            .find(self.visibility(), id)
            .await?
            .ok_or(ReleaseError::NotFound)
    }

    /// Drafts a new note.
    pub async fn create(&self, input: NewReleaseNote) -> Result<ReleaseNote, ReleaseError> {
        self.caller.actor.require(&WRITE)?;
        let mut errors = FieldErrors::new();
        let version = check_version(&input.version, &mut errors);
        let title = check_title(&input.title, &mut errors);
        let body = check_body(&input.body, &mut errors);
        errors.into_result()?;

        let now = self.deps.clock.now();
        let note = ReleaseNote {
            id: ReleaseNoteId::new(),
            version,
            title,
            body,
            change_type: input.change_type,
            status: ReleaseStatus::Draft,
            published_at: None,
            created_by: self.caller.actor.user_id(),
            created_at: now,
            updated_at: now,
        };

        let mut tx = self.deps.unit_of_work.begin().await?;
        self.deps
            .repository
            .insert(tx.as_mut(), &note)
            .await
            .map_err(|e| version_taken(e, &note))?;
        let entry = NewActivity::new("release_note.created", RESOURCE, now)
            .resource(note.id)
            .changes(json!({ "version": note.version.as_str(), "title": note.title }));
        self.deps
            .activity
            .record(tx.as_mut(), self.caller, entry)
            .await?;
        tx.commit().await?;
        Ok(note)
    }

    /// Changes some fields and/or publishes or unpublishes.
    pub async fn update(
        &self,
        id: ReleaseNoteId,
        patch: ReleaseNotePatch,
    ) -> Result<ReleaseNote, ReleaseError> {
        self.caller.actor.require(&WRITE)?;
        let mut tx = self.deps.unit_of_work.begin().await?;
        let mut note = self
            .deps
            .repository
            .find_for_update(tx.as_mut(), id)
            .await?
            .ok_or(ReleaseError::NotFound)?;
        if patch.is_empty() {
            return Ok(note);
        }

        let before = note.clone();
        let mut errors = FieldErrors::new();
        if let Some(raw) = &patch.version {
            note.version = check_version(raw, &mut errors);
        }
        if let Some(raw) = &patch.title {
            note.title = check_title(raw, &mut errors);
        }
        if let Some(raw) = &patch.body {
            note.body = check_body(raw, &mut errors);
        }
        errors.into_result()?;
        if let Some(change_type) = patch.change_type {
            note.change_type = change_type;
        }
        let now = self.deps.clock.now();
        match patch.published {
            Some(true) => note.publish(now),
            Some(false) => note.unpublish(),
            None => {}
        }
        note.updated_at = now;

        self.deps
            .repository
            .update(tx.as_mut(), &note)
            .await
            .map_err(|e| version_taken(e, &note))?;
        let public =
            before.status == ReleaseStatus::Published || note.status == ReleaseStatus::Published;
        let action = match (before.status, note.status) {
            (ReleaseStatus::Draft, ReleaseStatus::Published) => "release_note.published",
            (ReleaseStatus::Published, ReleaseStatus::Draft) => "release_note.unpublished",
            _ => "release_note.updated",
        };
        let entry = NewActivity::new(action, RESOURCE, now)
            .resource(note.id)
            .changes(json!({ "fields": changed_fields(&before, &note) }));
        self.deps
            .activity
            .record(tx.as_mut(), self.caller, entry)
            .await?;
        tx.commit().await?;
        if public {
            self.published_changed().await;
        }
        Ok(note)
    }

    /// Publishes a note (a no-op when it already is).
    pub async fn publish(&self, id: ReleaseNoteId) -> Result<ReleaseNote, ReleaseError> {
        self.update(
            id,
            ReleaseNotePatch {
                published: Some(true),
                ..ReleaseNotePatch::default()
            },
        )
        .await
    }

    /// Deletes a note for good.
    pub async fn delete(&self, id: ReleaseNoteId) -> Result<(), ReleaseError> {
        self.caller.actor.require(&WRITE)?;
        let mut tx = self.deps.unit_of_work.begin().await?;
        if !self.deps.repository.delete(tx.as_mut(), id).await? {
            return Err(ReleaseError::NotFound);
        }
        let entry =
            NewActivity::new("release_note.deleted", RESOURCE, self.deps.clock.now()).resource(id);
        self.deps
            .activity
            .record(tx.as_mut(), self.caller, entry)
            .await?;
        tx.commit().await?;
        self.published_changed().await;
        Ok(())
    }
}

/// The activity log's name for release notes.
const RESOURCE: &str = "release_note";

/// Names of the fields whose values differ (never the values: bodies can be long).
fn changed_fields(before: &ReleaseNote, after: &ReleaseNote) -> Vec<&'static str> {
    let mut fields = Vec::new();
    if before.version != after.version {
        fields.push("version");
    }
    if before.title != after.title {
        fields.push("title");
    }
    if before.body != after.body {
        fields.push("body");
    }
    if before.change_type != after.change_type {
        fields.push("change_type");
    }
    if before.status != after.status {
        fields.push("status");
    }
    fields
}

/// A unique violation while writing a note can only be its version (ids are generated).
fn version_taken(error: RepoError, note: &ReleaseNote) -> ReleaseError {
    match error {
        RepoError::UniqueViolation { .. } => ReleaseError::VersionTaken(note.version.to_string()),
        other => other.into(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::{DateTime, Duration, Utc};
    use futures_executor::block_on;
    use keel_kernel::activity::InMemoryActivityLog;
    use keel_kernel::cache::{Flights, InMemoryCache};
    use keel_kernel::repo::InMemoryUnitOfWork;
    use keel_kernel::{Actor, DomainError, ManualClock, PermissionSet, SessionId, UserId};

    use super::*;
    use crate::LIST_SPEC;
    use crate::model::ChangeType;
    use crate::testing::InMemoryReleaseNotes;

    fn start() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-03-01T09:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    struct Fixture {
        service: ReleaseNotes,
        repository: Arc<InMemoryReleaseNotes>,
        clock: Arc<ManualClock>,
        activity: Arc<InMemoryActivityLog>,
        writer: Caller,
        reader: Caller,
    }

    fn user(permissions: PermissionSet) -> Caller {
        Caller::new(Actor::User {
            id: UserId::new(),
            session: SessionId::new(),
            permissions,
        })
    }

    fn fixture() -> Fixture {
        let clock = Arc::new(ManualClock::new(start()));
        let activity = Arc::new(InMemoryActivityLog::default());
        let repository = Arc::new(InMemoryReleaseNotes::default());
        let cache = CacheAside::new(
            Arc::new(InMemoryCache::default()),
            Flights::default(),
            "release_notes",
        );
        let service = ReleaseNotes::new(
            repository.clone(),
            Arc::new(InMemoryUnitOfWork),
            activity.clone(),
            clock.clone(),
            cache,
        );
        Fixture {
            service,
            repository,
            clock,
            activity,
            writer: user([WRITE].into_iter().collect()),
            reader: user(PermissionSet::empty()),
        }
    }

    fn input(version: &str) -> NewReleaseNote {
        NewReleaseNote {
            version: version.to_owned(),
            title: format!("Release {version}"),
            body: "## Added\n- things".to_owned(),
            change_type: ChangeType::Feature,
        }
    }

    fn domain(err: ReleaseError) -> DomainError {
        err.into()
    }

    #[test]
    fn writers_draft_and_publish_and_readers_see_only_published() {
        let f = fixture();
        let writer = f.service.for_caller(&f.writer);
        let draft = block_on(writer.create(input("1.0.0"))).unwrap();
        assert_eq!(draft.status, ReleaseStatus::Draft);
        assert_eq!(draft.created_by, f.writer.actor.user_id());

        let reader = f.service.for_caller(&f.reader);
        assert!(matches!(
            block_on(reader.get(draft.id)),
            Err(ReleaseError::NotFound)
        ));
        assert_eq!(
            block_on(reader.list(ListQuery::first_page(&LIST_SPEC)))
                .unwrap()
                .total,
            0
        );

        f.clock.advance(Duration::hours(1));
        let published = block_on(writer.publish(draft.id)).unwrap();
        assert_eq!(published.published_at, Some(start() + Duration::hours(1)));
        assert_eq!(block_on(reader.get(draft.id)).unwrap(), published);
        assert_eq!(block_on(reader.latest()).unwrap().id, draft.id);
        assert_eq!(
            f.activity.actions(),
            ["release_note.created", "release_note.published"]
        );
        let (caller, entry) = &f.activity.entries()[1];
        assert_eq!(caller, &f.writer);
        assert_eq!(entry.resource_id, Some(draft.id.to_string()));
    }

    #[test]
    fn readers_are_served_from_the_cache_until_what_is_published_changes() {
        let f = fixture();
        let writers = f.service.for_caller(&f.writer);
        let readers = f.service.for_caller(&f.reader);
        let first = block_on(writers.create(input("1.0.0"))).unwrap();
        block_on(writers.publish(first.id)).unwrap();
        assert_eq!(block_on(readers.latest()).unwrap().id, first.id);
        let page = block_on(readers.list(ListQuery::first_page(&LIST_SPEC))).unwrap();
        assert_eq!(page.total, 1);

        // A row changed behind the service's back (another process without the cache) is
        // not seen: the reads come from the cache.
        let mut sneaked = block_on(writers.create(input("9.9.9"))).unwrap();
        sneaked.publish(f.clock.now());
        let mut tx = block_on(InMemoryUnitOfWork.begin()).unwrap();
        block_on(f.repository.update(tx.as_mut(), &sneaked)).unwrap();
        assert_eq!(block_on(readers.latest()).unwrap().id, first.id, "cached");
        // A filtered list is never cached (its variety is unbounded): it sees the row at once.
        let filtered = ListQuery::parse(&LIST_SPEC, [("change_type", "feature")]).unwrap();
        assert_eq!(
            block_on(readers.list(filtered)).unwrap().total,
            2,
            "not cached"
        );
        // Writers' lists (with drafts) and searches never come from the cache.
        let all = block_on(writers.list(ListQuery::first_page(&LIST_SPEC))).unwrap();
        assert_eq!(all.total, 2);

        // Creating a draft changes nothing readers see; publishing does, at once.
        f.clock.advance(Duration::minutes(1));
        let second = block_on(writers.create(input("2.0.0"))).unwrap();
        assert_eq!(block_on(readers.latest()).unwrap().id, first.id);
        block_on(writers.publish(second.id)).unwrap();
        let latest = block_on(readers.latest()).unwrap();
        assert_ne!(
            latest.id, first.id,
            "publishing invalidated the cached latest"
        );
        let page = block_on(readers.list(ListQuery::first_page(&LIST_SPEC))).unwrap();
        assert_eq!(page.total, 3, "and the cached list");

        // Unpublishing and deleting invalidate too.
        block_on(writers.delete(sneaked.id)).unwrap();
        block_on(writers.update(
            second.id,
            ReleaseNotePatch {
                published: Some(false),
                ..ReleaseNotePatch::default()
            },
        ))
        .unwrap();
        assert_eq!(block_on(readers.latest()).unwrap().id, first.id);
        let page = block_on(readers.list(ListQuery::first_page(&LIST_SPEC))).unwrap();
        assert_eq!(page.total, 1);
    }

    #[test]
    fn factory_notes_are_valid() {
        let f = fixture();
        let writer = f.service.for_caller(&f.writer);
        for minor in 0..20 {
            let input = crate::testing::NewReleaseNoteFactory::new()
                .version(format!("2.{minor}.0"))
                .build();
            let note = block_on(writer.create(input.clone())).unwrap();
            assert_eq!(note.title, input.title.trim());
            assert_eq!(note.change_type, input.change_type);
        }
    }

    #[test]
    fn publishing_twice_keeps_the_first_date() {
        let f = fixture();
        let writer = f.service.for_caller(&f.writer);
        let note = block_on(writer.create(input("1.0.0"))).unwrap();
        let first = block_on(writer.publish(note.id)).unwrap();
        f.clock.advance(Duration::days(1));
        let second = block_on(writer.publish(note.id)).unwrap();
        assert_eq!(first.published_at, second.published_at);
    }

    #[test]
    fn every_write_needs_the_write_permission() {
        let f = fixture();
        let note = block_on(f.service.for_system().create(input("1.0.0"))).unwrap();
        let reader = f.service.for_caller(&f.reader);
        assert!(matches!(
            domain(block_on(reader.create(input("2.0.0"))).unwrap_err()),
            DomainError::Forbidden { .. }
        ));
        assert!(matches!(
            domain(block_on(reader.publish(note.id)).unwrap_err()),
            DomainError::Forbidden { .. }
        ));
        assert!(matches!(
            domain(
                block_on(
                    f.service
                        .for_caller(&Caller::new(Actor::Anonymous))
                        .delete(note.id)
                )
                .unwrap_err()
            ),
            DomainError::Unauthenticated
        ));
        // Nothing changed.
        assert_eq!(
            block_on(f.service.for_system().get(note.id))
                .unwrap()
                .status,
            ReleaseStatus::Draft
        );
    }

    #[test]
    fn invalid_input_names_every_field_and_stores_nothing() {
        let f = fixture();
        let writer = f.service.for_caller(&f.writer);
        let err = block_on(writer.create(NewReleaseNote {
            version: "latest".into(),
            title: " ".into(),
            body: "x".repeat(100_001),
            change_type: ChangeType::Bugfix,
        }))
        .unwrap_err();
        let DomainError::Validation(errors) = domain(err) else {
            panic!("expected a validation error")
        };
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["version", "title", "body"]);
        assert_eq!(
            block_on(writer.list(ListQuery::first_page(&LIST_SPEC)))
                .unwrap()
                .total,
            0
        );
    }

    #[test]
    fn a_version_can_have_only_one_note() {
        let f = fixture();
        let writer = f.service.for_caller(&f.writer);
        block_on(writer.create(input("1.0.0"))).unwrap();
        let err = block_on(writer.create(input("v1.0.0"))).unwrap_err();
        assert!(matches!(&err, ReleaseError::VersionTaken(v) if v == "1.0.0"));
        let other = block_on(writer.create(input("1.1.0"))).unwrap();
        let err = block_on(writer.update(
            other.id,
            ReleaseNotePatch {
                version: Some("1.0.0".into()),
                ..Default::default()
            },
        ))
        .unwrap_err();
        assert!(matches!(err, ReleaseError::VersionTaken(_)));
        assert_eq!(
            block_on(writer.get(other.id)).unwrap().version.as_str(),
            "1.1.0"
        );
    }

    #[test]
    fn patches_change_only_what_they_name() {
        let f = fixture();
        let writer = f.service.for_caller(&f.writer);
        let note = block_on(writer.create(input("1.0.0"))).unwrap();
        f.clock.advance(Duration::minutes(5));
        let patched = block_on(writer.update(
            note.id,
            ReleaseNotePatch {
                title: Some("  Better title ".into()),
                ..Default::default()
            },
        ))
        .unwrap();
        assert_eq!(patched.title, "Better title");
        assert_eq!(patched.body, note.body);
        assert_eq!(patched.version, note.version);
        assert_eq!(patched.updated_at, start() + Duration::minutes(5));
        let unpublished = block_on(writer.update(
            note.id,
            ReleaseNotePatch {
                published: Some(false),
                ..Default::default()
            },
        ))
        .unwrap();
        assert_eq!(unpublished.status, ReleaseStatus::Draft);
    }

    #[test]
    fn deleting_twice_is_not_found() {
        let f = fixture();
        let writer = f.service.for_caller(&f.writer);
        let note = block_on(writer.create(input("1.0.0"))).unwrap();
        block_on(writer.delete(note.id)).unwrap();
        assert!(matches!(
            block_on(writer.delete(note.id)),
            Err(ReleaseError::NotFound)
        ));
    }
}
