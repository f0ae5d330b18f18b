//! Migrations of the `release_notes` feature.

use sea_orm_migration::MigrationTrait;

mod m20261123_000001_create_release_notes;

/// This feature's migrations (the crate orders all features' by name, i.e. by date).
pub(crate) fn migrations() -> Vec<Box<dyn MigrationTrait>> {
    vec![Box::new(m20261123_000001_create_release_notes::Migration)]
}
