//! Migrations of the `projects` feature.

use sea_orm_migration::MigrationTrait;

mod m20261125_000001_create_projects;

/// This feature's migrations (the crate orders all features' by name, i.e. by date).
pub(crate) fn migrations() -> Vec<Box<dyn MigrationTrait>> {
    vec![Box::new(m20261125_000001_create_projects::Migration)]
}
