//! Migrations of the `webhooks` feature.

use sea_orm_migration::MigrationTrait;

mod m20261202_000001_create_webhook_receipts;

/// This feature's migrations (the crate orders all features' by name, i.e. by date).
pub(crate) fn migrations() -> Vec<Box<dyn MigrationTrait>> {
    vec![Box::new(
        m20261202_000001_create_webhook_receipts::Migration,
    )]
}
