//! Migrations of the `Idempotency-Key` store (a platform table, not a feature).

use sea_orm_migration::MigrationTrait;

mod m20261130_000002_create_idempotency_keys;

/// This feature's migrations (the crate orders all features' by name, i.e. by date).
pub(crate) fn migrations() -> Vec<Box<dyn MigrationTrait>> {
    vec![Box::new(
        m20261130_000002_create_idempotency_keys::Migration,
    )]
}
