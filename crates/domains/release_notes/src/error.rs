//! Failures of release-note use cases.

use keel_kernel::{DomainError, RepoError};

/// What a release-note use case can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    /// No release note with that id is visible to the caller.
    #[error("release note not found")]
    NotFound,
    /// Another release note already describes this version.
    #[error("a release note for version {0} already exists")]
    VersionTaken(String),
    /// Rejected for a reason every domain shares: invalid input, missing permission, storage.
    #[error(transparent)]
    Rejected(#[from] DomainError),
}

impl From<RepoError> for ReleaseError {
    fn from(error: RepoError) -> Self {
        Self::Rejected(error.into())
    }
}

impl From<ReleaseError> for DomainError {
    fn from(error: ReleaseError) -> Self {
        match error {
            ReleaseError::NotFound => DomainError::NotFound {
                resource: "release note",
            },
            ReleaseError::VersionTaken(version) => DomainError::Conflict {
                code: "release_note.version_taken",
                message: format!("a release note for version {version} already exists"),
                field: Some("version".to_owned()),
            },
            ReleaseError::Rejected(inner) => inner,
        }
    }
}
