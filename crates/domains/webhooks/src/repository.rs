//! The receipt store port.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use keel_kernel::{RepoError, Transaction};

use crate::model::ReceiptRecord;

/// Receipts of inbound deliveries, unique per (source, webhook id).
#[async_trait]
pub trait WebhookReceiptRepository: Send + Sync + std::fmt::Debug {
    /// Stores `receipt` unless one with its source and webhook id exists; `false` when it
    /// did. A concurrent insert of the same pair waits for the other transaction, so exactly
    /// one caller gets `true`.
    async fn record(
        &self,
        tx: &mut dyn Transaction,
        receipt: &ReceiptRecord,
    ) -> Result<bool, RepoError>;

    /// Deletes receipts received before `before`; returns how many.
    async fn purge(&self, before: DateTime<Utc>) -> Result<u64, RepoError>;
}
