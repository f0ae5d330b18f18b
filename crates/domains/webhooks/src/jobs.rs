//! The jobs of this feature.

use std::time::Duration;

use chrono::{DateTime, Utc};
use keel_kernel::jobs::{Job, Queue, RetryPolicy};
use serde::{Deserialize, Serialize};

use crate::model::InboundWebhook;

/// Runs the handlers of one received delivery.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProcessInboundWebhook {
    /// The delivery.
    pub webhook: InboundWebhook,
}

impl Job for ProcessInboundWebhook {
    const KIND: &'static str = "webhooks.process_inbound";

    /// Handlers call Keel's own database: a few quick retries, then a long tail for an outage.
    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 12,
            backoff: Duration::from_secs(2),
            max_backoff: Duration::from_secs(600),
            timeout: Duration::from_secs(60),
        }
    }
}

/// Deletes old receipts (`webhooks.inbound_retention`): the `purge_webhook_receipts`
/// schedule's job. A delivery older than the signature tolerance is refused before its
/// receipt is looked up, so a receipt only has to outlive that tolerance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurgeWebhookReceipts {
    /// Receipts received before this instant go.
    pub received_before: DateTime<Utc>,
}

impl Job for PurgeWebhookReceipts {
    const KIND: &'static str = "webhooks.purge_receipts";
    const QUEUE: Queue = Queue::Low;
}

/// Creates the deliveries of one event (`webhooks.fan_out`); enqueued with the change that
/// caused the event, when an endpoint follows its type.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FanOutWebhookEvent {
    /// The event.
    pub event: crate::outbound::OutboundEvent,
}

impl Job for FanOutWebhookEvent {
    const KIND: &'static str = "webhooks.fan_out";
}

/// One attempt at one delivery (`webhooks.deliver`); its policy comes from
/// `[webhooks.outbound]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliverWebhook {
    /// The delivery.
    pub delivery: crate::outbound::DeliveryId,
}

impl Job for DeliverWebhook {
    const KIND: &'static str = "webhooks.deliver";
}
