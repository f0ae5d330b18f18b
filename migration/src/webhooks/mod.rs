//! Migrations of the `webhooks` feature.

use sea_orm_migration::MigrationTrait;

mod m20261202_000001_create_webhook_receipts;
mod m20261202_000003_create_outbound_webhooks;

/// This feature's migrations (the crate orders all features' by name, i.e. by date).
pub(crate) fn migrations() -> Vec<Box<dyn MigrationTrait>> {
    vec![
        Box::new(m20261202_000001_create_webhook_receipts::Migration),
        Box::new(m20261202_000003_create_outbound_webhooks::Migration),
    ]
}
