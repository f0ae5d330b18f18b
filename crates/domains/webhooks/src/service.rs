//! Receiving a delivery: one receipt, one job, one transaction.

use std::sync::Arc;

use keel_kernel::jobs::{JobQueue, NewJob};
use keel_kernel::{Clock, DomainError, Origin, UnitOfWork};

use crate::jobs::ProcessInboundWebhook;
use crate::model::{InboundWebhook, Receipt, ReceiptRecord};
use crate::repository::WebhookReceiptRepository;

/// The webhooks service; cheap to clone.
#[derive(Debug, Clone)]
pub struct Webhooks {
    receipts: Arc<dyn WebhookReceiptRepository>,
    unit_of_work: Arc<dyn UnitOfWork>,
    jobs: Arc<dyn JobQueue>,
    clock: Arc<dyn Clock>,
}

impl Webhooks {
    /// Wires the service to its ports.
    pub fn new(
        receipts: Arc<dyn WebhookReceiptRepository>,
        unit_of_work: Arc<dyn UnitOfWork>,
        jobs: Arc<dyn JobQueue>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            receipts,
            unit_of_work,
            jobs,
            clock,
        }
    }

    /// Takes a delivery whose signature the adapter verified. The first time its (source,
    /// webhook id) is seen, the receipt and the job that processes it commit together;
    /// any later time (the sender retrying after a lost response, a replay within the
    /// signature tolerance) it is acknowledged and nothing is enqueued.
    pub async fn receive(
        &self,
        webhook: InboundWebhook,
        origin: &Origin,
    ) -> Result<Receipt, DomainError> {
        webhook.validate()?;
        let job = NewJob::of(&ProcessInboundWebhook {
            webhook: webhook.clone(),
        })
        .map_err(|e| DomainError::Internal(Box::new(e)))?
        .caused_by(None, origin);
        let receipt = ReceiptRecord {
            source: webhook.source,
            webhook_id: webhook.webhook_id,
            event_type: webhook.event_type,
            job_id: job.id,
            received_at: self.clock.now(),
        };
        let mut tx = self.unit_of_work.begin().await?;
        if !self.receipts.record(tx.as_mut(), &receipt).await? {
            return Ok(Receipt::Duplicate);
        }
        let job = self.jobs.enqueue(tx.as_mut(), job).await?;
        tx.commit().await?;
        Ok(Receipt::Accepted { job })
    }

    /// Deletes receipts received before `before`; returns how many.
    pub async fn purge_receipts(
        &self,
        before: chrono::DateTime<chrono::Utc>,
    ) -> Result<u64, DomainError> {
        Ok(self.receipts.purge(before).await?)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::Utc;
    use futures_executor::block_on;
    use keel_kernel::jobs::InMemoryJobQueue;
    use keel_kernel::repo::InMemoryUnitOfWork;
    use keel_kernel::{ManualClock, Origin};

    use super::*;
    use crate::testing::InMemoryReceipts;

    fn webhook(id: &str) -> InboundWebhook {
        InboundWebhook {
            source: "idp".to_owned(),
            webhook_id: id.to_owned(),
            event_type: "user.created".to_owned(),
            occurred_at: Utc::now(),
            data: serde_json::json!({ "id": "u1" }),
        }
    }

    fn service() -> (Webhooks, Arc<InMemoryJobQueue>) {
        let jobs = Arc::new(InMemoryJobQueue::default());
        (
            Webhooks::new(
                Arc::new(InMemoryReceipts::default()),
                Arc::new(InMemoryUnitOfWork),
                jobs.clone(),
                Arc::new(ManualClock::new(Utc::now())),
            ),
            jobs,
        )
    }

    #[test]
    fn a_delivery_is_processed_once_however_often_it_arrives() {
        let (service, jobs) = service();
        let origin = Origin::default();
        assert!(matches!(
            block_on(service.receive(webhook("msg_1"), &origin)).unwrap(),
            Receipt::Accepted { .. }
        ));
        for _ in 0..2 {
            assert_eq!(
                block_on(service.receive(webhook("msg_1"), &origin)).unwrap(),
                Receipt::Duplicate
            );
        }
        let mut other_source = webhook("msg_1");
        other_source.source = "billing".to_owned();
        assert!(matches!(
            block_on(service.receive(other_source, &origin)).unwrap(),
            Receipt::Accepted { .. }
        ));
        let payloads = jobs.payloads::<ProcessInboundWebhook>();
        assert_eq!(payloads.len(), 2);
        assert_eq!(payloads[0].webhook.webhook_id, "msg_1");
        assert_eq!(
            [&payloads[0].webhook.source, &payloads[1].webhook.source],
            ["idp", "billing"]
        );
    }

    #[test]
    fn ids_and_types_are_short_printable_text() {
        let (service, jobs) = service();
        for (id, kind, field) in [
            ("", "user.created", "webhook-id"),
            ("msg 1", "user.created", "webhook-id"),
            (&*"m".repeat(257), "user.created", "webhook-id"),
            ("msg_2", "", "type"),
            ("msg_3", "user\u{0}created", "type"),
        ] {
            let mut bad = webhook(id);
            bad.event_type = kind.to_owned();
            match block_on(service.receive(bad, &Origin::default())) {
                Err(DomainError::Validation(errors)) => assert_eq!(errors[0].field, field),
                other => panic!("expected a validation error for {id:?}/{kind:?}, got {other:?}"),
            }
        }
        assert!(jobs.enqueued().is_empty());
    }
}
