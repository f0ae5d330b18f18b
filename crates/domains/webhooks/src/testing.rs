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

/// Endpoints and deliveries in memory.
#[derive(Debug, Default)]
pub struct InMemoryOutbound {
    endpoints: Mutex<Vec<crate::outbound::Endpoint>>,
    deliveries: Mutex<Vec<crate::outbound::Delivery>>,
}

impl InMemoryOutbound {
    /// Every delivery (for assertions).
    pub fn deliveries(&self) -> Vec<crate::outbound::Delivery> {
        self.deliveries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

#[async_trait]
impl crate::outbound::EndpointRepository for InMemoryOutbound {
    async fn list(&self) -> Result<Vec<crate::outbound::Endpoint>, RepoError> {
        Ok(self
            .endpoints
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone())
    }

    async fn list_in(
        &self,
        _tx: &mut dyn Transaction,
    ) -> Result<Vec<crate::outbound::Endpoint>, RepoError> {
        crate::outbound::EndpointRepository::list(self).await
    }

    async fn find(
        &self,
        id: crate::outbound::EndpointId,
    ) -> Result<Option<crate::outbound::Endpoint>, RepoError> {
        Ok(self
            .endpoints
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|e| e.id == id)
            .cloned())
    }

    async fn insert(
        &self,
        _tx: &mut dyn Transaction,
        endpoint: &crate::outbound::Endpoint,
    ) -> Result<(), RepoError> {
        self.endpoints
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(endpoint.clone());
        Ok(())
    }

    async fn delete(
        &self,
        _tx: &mut dyn Transaction,
        id: crate::outbound::EndpointId,
    ) -> Result<bool, RepoError> {
        let mut endpoints = self.endpoints.lock().unwrap_or_else(|p| p.into_inner());
        let before = endpoints.len();
        endpoints.retain(|e| e.id != id);
        self.deliveries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|d| d.endpoint_id != id);
        Ok(endpoints.len() != before)
    }
}

#[async_trait]
impl crate::outbound::DeliveryRepository for InMemoryOutbound {
    async fn insert(
        &self,
        _tx: &mut dyn Transaction,
        delivery: &crate::outbound::Delivery,
    ) -> Result<bool, RepoError> {
        let mut deliveries = self.deliveries.lock().unwrap_or_else(|p| p.into_inner());
        if deliveries
            .iter()
            .any(|d| d.endpoint_id == delivery.endpoint_id && d.event.id == delivery.event.id)
        {
            return Ok(false);
        }
        deliveries.push(delivery.clone());
        Ok(true)
    }

    async fn find(
        &self,
        id: crate::outbound::DeliveryId,
    ) -> Result<Option<crate::outbound::Delivery>, RepoError> {
        Ok(self.deliveries().into_iter().find(|d| d.id == id))
    }

    async fn list_for(
        &self,
        endpoint: crate::outbound::EndpointId,
        limit: u64,
    ) -> Result<Vec<crate::outbound::Delivery>, RepoError> {
        let mut found: Vec<_> = self
            .deliveries()
            .into_iter()
            .filter(|d| d.endpoint_id == endpoint)
            .collect();
        found.reverse();
        found.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        Ok(found)
    }

    async fn record_attempt(
        &self,
        id: crate::outbound::DeliveryId,
        attempt: &crate::outbound::DeliveryAttempt,
        state: crate::outbound::DeliveryState,
    ) -> Result<(), RepoError> {
        if let Some(d) = self
            .deliveries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter_mut()
            .find(|d| d.id == id)
        {
            d.attempts.push(attempt.clone());
            d.state = state;
        }
        Ok(())
    }

    async fn reopen(
        &self,
        _tx: &mut dyn Transaction,
        id: crate::outbound::DeliveryId,
        at: DateTime<Utc>,
    ) -> Result<bool, RepoError> {
        Ok(self
            .deliveries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter_mut()
            .find(|d| d.id == id && d.state != crate::outbound::DeliveryState::Pending)
            .map(|d| {
                d.state = crate::outbound::DeliveryState::Pending;
                d.updated_at = at;
            })
            .is_some())
    }
}

/// Secrets `whsec_<pepper>.<seed>`-shaped, from a counter; pepper `gone` derives nothing.
#[derive(Debug, Default)]
pub struct FakeKeys {
    next: std::sync::atomic::AtomicU32,
}

impl crate::outbound::SigningKeys for FakeKeys {
    fn new_seed(&self) -> (String, String) {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        ("p1".to_owned(), format!("seed{n}"))
    }

    fn secret(&self, pepper_id: &str, seed: &str) -> Option<String> {
        (pepper_id != "gone").then(|| format!("whsec_{pepper_id}{seed}"))
    }
}

/// Answers each send with the next scripted outcome (then `Answered(200)`), and keeps what
/// was sent: (url, webhook id, body).
#[derive(Debug, Default)]
pub struct ScriptedSender {
    script: Mutex<std::collections::VecDeque<crate::outbound::SendOutcome>>,
    sent: Mutex<Vec<(String, String, String)>>,
}

impl ScriptedSender {
    /// Queues outcomes.
    pub fn then(&self, outcomes: impl IntoIterator<Item = crate::outbound::SendOutcome>) {
        self.script
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(outcomes);
    }

    /// What was sent.
    pub fn sent(&self) -> Vec<(String, String, String)> {
        self.sent.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[async_trait]
impl crate::outbound::WebhookSender for ScriptedSender {
    async fn send(
        &self,
        request: crate::outbound::OutboundRequest<'_>,
    ) -> (crate::outbound::SendOutcome, std::time::Duration) {
        self.sent.lock().unwrap_or_else(|p| p.into_inner()).push((
            request.url.to_owned(),
            request.webhook_id.to_owned(),
            String::from_utf8_lossy(request.body).into_owned(),
        ));
        let outcome = self
            .script
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front()
            .unwrap_or(crate::outbound::SendOutcome::Answered(200));
        (outcome, std::time::Duration::from_millis(3))
    }
}
