//! Migrations of the `identity` feature.

use sea_orm_migration::MigrationTrait;

mod m20261124_000001_create_identity;
mod m20261130_000001_harden_identity;
mod m20261201_000003_create_mfa;
mod m20261202_000002_create_external_identities;

/// This feature's migrations (the crate orders all features' by name, i.e. by date).
pub(crate) fn migrations() -> Vec<Box<dyn MigrationTrait>> {
    vec![
        Box::new(m20261124_000001_create_identity::Migration),
        Box::new(m20261130_000001_harden_identity::Migration),
        Box::new(m20261201_000003_create_mfa::Migration),
        Box::new(m20261202_000002_create_external_identities::Migration),
    ]
}
