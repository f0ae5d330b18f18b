//! Migrations of the `projects` feature.

use sea_orm_migration::MigrationTrait;

mod m20261125_000001_create_projects;
mod m20261201_000002_create_project_attachments;

/// This feature's migrations (the crate orders all features' by name, i.e. by date).
pub(crate) fn migrations() -> Vec<Box<dyn MigrationTrait>> {
    vec![
        Box::new(m20261125_000001_create_projects::Migration),
        Box::new(m20261201_000002_create_project_attachments::Migration),
    ]
}
