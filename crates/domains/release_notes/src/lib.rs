//! Release notes ("What's New"): what changed in each version, drafted by writers and read by
//! everyone once published.
//!
//! Layout shared by every domain crate: `model` (entities and value objects), `policy`
//! (permissions and visibility), `repository` (the storage port), `service` (use cases),
//! `error`, and `testing` (an in-memory repository for unit tests).

pub mod error;
pub mod model;
pub mod policy;
pub mod repository;
pub mod service;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use error::ReleaseError;
pub use model::{
    ChangeType, NewReleaseNote, ReleaseNote, ReleaseNoteId, ReleaseNotePatch, ReleaseStatus,
    Version,
};
pub use policy::{LIST_SPEC, PERMISSIONS, Visibility, WRITE};
pub use repository::ReleaseNoteRepository;
pub use service::{ReleaseNoteService, ReleaseNotes};
