//! Keel's schema migrations, applied in order by `api migrate` (or at startup when
//! `database.auto_migrate` is on). Each migration is a module named
//! `mYYYYMMDD_NNNNNN_description` with `up` and `down`; `down` must undo `up` exactly.
//!
//! Table names: apalis (the job queue) owns `Jobs` and `Workers` in SQLite's main schema, so no
//! domain table may be called `jobs` or `workers`.

pub use sea_orm_migration::MigratorTrait;
use sea_orm_migration::prelude::*;

mod m20261123_000001_create_release_notes;
mod m20261124_000001_create_identity;
mod m20261124_000002_create_activity;
mod m20261125_000001_create_projects;
mod m20261126_000001_create_job_outbox;
mod m20261130_000001_harden_identity;
mod m20261130_000002_create_idempotency_keys;
// keel:new-domain:migration-modules

/// Every migration, oldest first.
#[derive(Debug)]
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261123_000001_create_release_notes::Migration),
            Box::new(m20261124_000001_create_identity::Migration),
            Box::new(m20261124_000002_create_activity::Migration),
            Box::new(m20261125_000001_create_projects::Migration),
            Box::new(m20261126_000001_create_job_outbox::Migration),
            Box::new(m20261130_000001_harden_identity::Migration),
            Box::new(m20261130_000002_create_idempotency_keys::Migration),
            // keel:new-domain:migrations
        ]
    }
}
