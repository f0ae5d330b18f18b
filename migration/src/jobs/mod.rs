//! Migrations of the `jobs` feature.

use sea_orm_migration::MigrationTrait;

mod m20261126_000001_create_job_outbox;
mod m20261201_000001_notify_job_outbox;

/// This feature's migrations (the crate orders all features' by name, i.e. by date).
pub(crate) fn migrations() -> Vec<Box<dyn MigrationTrait>> {
    vec![
        Box::new(m20261126_000001_create_job_outbox::Migration),
        Box::new(m20261201_000001_notify_job_outbox::Migration),
    ]
}
