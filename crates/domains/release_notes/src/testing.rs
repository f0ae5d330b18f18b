//! An in-memory [`ReleaseNoteRepository`] for unit tests of code that uses the service.
//!
//! It honours visibility, uniqueness of versions, the page size and the offset, and orders by
//! publication date, newest first. It ignores `sort`, filters, search and cursors: the query
//! language is tested against real databases in the infrastructure and end-to-end suites.

use std::sync::Mutex;

use async_trait::async_trait;
use keel_kernel::query::Position;
use keel_kernel::{ListQuery, Page, RepoError, Transaction};

use crate::model::{ChangeType, NewReleaseNote, ReleaseNote, ReleaseNoteId, ReleaseStatus};
use crate::policy::Visibility;
use crate::repository::ReleaseNoteRepository;

/// Release notes kept in a vector.
#[derive(Debug, Default)]
pub struct InMemoryReleaseNotes {
    notes: Mutex<Vec<ReleaseNote>>,
}

impl InMemoryReleaseNotes {
    fn with_notes<T>(&self, f: impl FnOnce(&mut Vec<ReleaseNote>) -> T) -> T {
        let mut notes = self
            .notes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut notes)
    }
}

fn visible(visibility: Visibility, note: &ReleaseNote) -> bool {
    !visibility.published_only() || note.status == ReleaseStatus::Published
}

fn version_taken(notes: &[ReleaseNote], note: &ReleaseNote) -> bool {
    notes
        .iter()
        .any(|other| other.id != note.id && other.version == note.version)
}

fn unique_violation() -> RepoError {
    RepoError::UniqueViolation {
        constraint: "version".to_owned(),
    }
}

#[async_trait]
impl ReleaseNoteRepository for InMemoryReleaseNotes {
    async fn list(
        &self,
        visibility: Visibility,
        query: &ListQuery,
    ) -> Result<Page<ReleaseNote>, RepoError> {
        let offset = match query.position {
            Position::Offset(offset) => offset,
            Position::After(_) => 0,
        };
        self.with_notes(|notes| {
            let mut matching: Vec<_> = notes
                .iter()
                .filter(|note| visible(visibility, note))
                .cloned()
                .collect();
            matching.sort_by(|a, b| b.published_at.cmp(&a.published_at).then(b.id.cmp(&a.id)));
            let total = matching.len() as u64;
            let items = matching
                .into_iter()
                .skip(usize::try_from(offset).unwrap_or(usize::MAX))
                .take(query.limit as usize)
                .collect();
            Ok(Page {
                items,
                total,
                limit: query.limit,
                offset: Some(offset),
                next_cursor: None,
            })
        })
    }

    async fn find(
        &self,
        visibility: Visibility,
        id: ReleaseNoteId,
    ) -> Result<Option<ReleaseNote>, RepoError> {
        Ok(self.with_notes(|notes| {
            notes
                .iter()
                .find(|note| note.id == id && visible(visibility, note))
                .cloned()
        }))
    }

    async fn latest_published(&self) -> Result<Option<ReleaseNote>, RepoError> {
        Ok(self.with_notes(|notes| {
            notes
                .iter()
                .filter(|note| note.status == ReleaseStatus::Published)
                .max_by_key(|note| (note.published_at, note.id))
                .cloned()
        }))
    }

    async fn find_for_update(
        &self,
        _tx: &mut dyn Transaction,
        id: ReleaseNoteId,
    ) -> Result<Option<ReleaseNote>, RepoError> {
        Ok(self.with_notes(|notes| notes.iter().find(|note| note.id == id).cloned()))
    }

    async fn insert(&self, _tx: &mut dyn Transaction, note: &ReleaseNote) -> Result<(), RepoError> {
        self.with_notes(|notes| {
            if version_taken(notes, note) {
                return Err(unique_violation());
            }
            notes.push(note.clone());
            Ok(())
        })
    }

    async fn update(&self, _tx: &mut dyn Transaction, note: &ReleaseNote) -> Result<(), RepoError> {
        self.with_notes(|notes| {
            if version_taken(notes, note) {
                return Err(unique_violation());
            }
            if let Some(stored) = notes.iter_mut().find(|stored| stored.id == note.id) {
                *stored = note.clone();
            }
            Ok(())
        })
    }

    async fn delete(
        &self,
        _tx: &mut dyn Transaction,
        id: ReleaseNoteId,
    ) -> Result<bool, RepoError> {
        Ok(self.with_notes(|notes| {
            let before = notes.len();
            notes.retain(|note| note.id != id);
            notes.len() != before
        }))
    }
}

/// Builds a valid [`NewReleaseNote`] with fake but realistic values (a random version, a
/// catch-phrase title, a Markdown body); override what a test cares about.
#[derive(Debug, Clone)]
pub struct NewReleaseNoteFactory {
    note: NewReleaseNote,
}

impl Default for NewReleaseNoteFactory {
    fn default() -> Self {
        Self::new()
    }
}

impl NewReleaseNoteFactory {
    /// A plausible release note.
    pub fn new() -> Self {
        use fake::Fake;
        use fake::faker::company::en::CatchPhrase;
        use fake::faker::lorem::en::Sentences;

        let version = format!(
            "{}.{}.{}",
            (0..10).fake::<u32>(),
            (0..50).fake::<u32>(),
            (0..100).fake::<u32>()
        );
        let bullets: Vec<String> = Sentences(2..5).fake();
        let body = format!(
            "## What's new\n{}",
            bullets
                .iter()
                .map(|line| format!("- {line}"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        let change_type = match (0..4).fake::<u8>() {
            0 => ChangeType::Feature,
            1 => ChangeType::Improvement,
            2 => ChangeType::Bugfix,
            _ => ChangeType::Breaking,
        };
        Self {
            note: NewReleaseNote {
                version,
                title: CatchPhrase().fake(),
                body,
                change_type,
            },
        }
    }

    /// Sets the version.
    #[must_use]
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.note.version = version.into();
        self
    }

    /// Sets the title.
    #[must_use]
    pub fn title(mut self, title: impl Into<String>) -> Self {
        self.note.title = title.into();
        self
    }

    /// Sets the kind of change.
    #[must_use]
    pub fn change_type(mut self, change_type: ChangeType) -> Self {
        self.note.change_type = change_type;
        self
    }

    /// The input.
    pub fn build(self) -> NewReleaseNote {
        self.note
    }
}
