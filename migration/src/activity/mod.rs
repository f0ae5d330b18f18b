//! Migrations of the `activity` feature.

use sea_orm_migration::MigrationTrait;

mod m20261124_000002_create_activity;

/// This feature's migrations (the crate orders all features' by name, i.e. by date).
pub(crate) fn migrations() -> Vec<Box<dyn MigrationTrait>> {
    vec![Box::new(m20261124_000002_create_activity::Migration)]
}
