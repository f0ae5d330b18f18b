//! An in-memory receipt store for unit tests.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use keel_kernel::{RepoError, Transaction};

use crate::model::ReceiptRecord;
use crate::repository::WebhookReceiptRepository;

/// Receipts in a map; writes apply at once (the in-memory unit of work has no rollback).
#[derive(Debug, Default)]
pub struct InMemoryReceipts {
    rows: Mutex<BTreeMap<(String, String), ReceiptRecord>>,
}

#[async_trait]
impl WebhookReceiptRepository for InMemoryReceipts {
    async fn record(
        &self,
        _tx: &mut dyn Transaction,
        receipt: &ReceiptRecord,
    ) -> Result<bool, RepoError> {
        let mut rows = self.rows.lock().unwrap_or_else(|p| p.into_inner());
        let key = (receipt.source.clone(), receipt.webhook_id.clone());
        if rows.contains_key(&key) {
            return Ok(false);
        }
        rows.insert(key, receipt.clone());
        Ok(true)
    }

    async fn purge(&self, before: DateTime<Utc>) -> Result<u64, RepoError> {
        let mut rows = self.rows.lock().unwrap_or_else(|p| p.into_inner());
        let count = rows.len();
        rows.retain(|_, r| r.received_at >= before);
        Ok((count - rows.len()) as u64)
    }
}
