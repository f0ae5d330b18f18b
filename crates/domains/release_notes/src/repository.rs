//! The storage port for release notes; `keel-infrastructure` implements it with sea-orm.

use async_trait::async_trait;
use keel_kernel::{ListQuery, Page, RepoError, Transaction};

use crate::model::{ReleaseNote, ReleaseNoteId};
use crate::policy::Visibility;

/// Stores release notes. Reads apply the caller's [`Visibility`] inside the query; writes run
/// in the use case's transaction.
#[async_trait]
pub trait ReleaseNoteRepository: Send + Sync + std::fmt::Debug {
    /// One page of the notes `visibility` allows, filtered and ordered as `query` says.
    async fn list(
        &self,
        visibility: Visibility,
        query: &ListQuery,
    ) -> Result<Page<ReleaseNote>, RepoError>;

    /// The note with this id, if `visibility` allows it.
    async fn find(
        &self,
        visibility: Visibility,
        id: ReleaseNoteId,
    ) -> Result<Option<ReleaseNote>, RepoError>;

    /// The most recently published note.
    async fn latest_published(&self) -> Result<Option<ReleaseNote>, RepoError>;

    /// The note with this id, locked against concurrent writers until `tx` ends.
    async fn find_for_update(
        &self,
        tx: &mut dyn Transaction,
        id: ReleaseNoteId,
    ) -> Result<Option<ReleaseNote>, RepoError>;

    /// Stores a new note. A taken version is [`RepoError::UniqueViolation`] on `version`.
    async fn insert(&self, tx: &mut dyn Transaction, note: &ReleaseNote) -> Result<(), RepoError>;

    /// Overwrites an existing note. A taken version is [`RepoError::UniqueViolation`].
    async fn update(&self, tx: &mut dyn Transaction, note: &ReleaseNote) -> Result<(), RepoError>;

    /// Deletes a note; `false` when it did not exist.
    async fn delete(&self, tx: &mut dyn Transaction, id: ReleaseNoteId) -> Result<bool, RepoError>;
}
