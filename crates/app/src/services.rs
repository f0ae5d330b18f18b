//! Builds the domain services on the infrastructure adapters.

use std::sync::Arc;

use keel_infrastructure::{DatabaseConnection, SeaReleaseNoteRepository, SeaUnitOfWork};
use keel_kernel::SystemClock;
use keel_releases::ReleaseNotes;

/// Every domain service, wired to the database.
#[derive(Debug, Clone)]
pub struct Services {
    /// Release notes.
    pub release_notes: ReleaseNotes,
}

impl Services {
    /// Wires the services to one connection pool.
    pub fn new(db: &DatabaseConnection) -> Self {
        let unit_of_work = Arc::new(SeaUnitOfWork::new(db.clone()));
        let clock = Arc::new(SystemClock);
        Self {
            release_notes: ReleaseNotes::new(
                Arc::new(SeaReleaseNoteRepository::new(db.clone())),
                unit_of_work,
                clock,
            ),
        }
    }
}
