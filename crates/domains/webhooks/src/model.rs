//! A delivery as received, and the receipt that makes it count once.

use chrono::{DateTime, Utc};
use keel_kernel::jobs::JobId;
use keel_kernel::validation::FieldErrors;
use serde::{Deserialize, Serialize};

/// Longest `webhook-id` accepted (the sender's message id).
pub const WEBHOOK_ID_MAX_CHARS: usize = 256;
/// Longest event `type` accepted.
pub const EVENT_TYPE_MAX_CHARS: usize = 128;

/// A delivery whose signature was verified: who sent it, its id, and its payload.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InboundWebhook {
    /// The configured source it came from (`webhooks.inbound.<source>`).
    pub source: String,
    /// The sender's message id (`webhook-id`): the same for every retry of one message.
    pub webhook_id: String,
    /// The payload's `type`, such as `user.created`.
    pub event_type: String,
    /// When the event happened: the payload's `timestamp`, else the signed `webhook-timestamp`.
    /// Handlers order events by it, since retries can arrive after newer events.
    pub occurred_at: DateTime<Utc>,
    /// The payload's `data`.
    pub data: serde_json::Value,
}

impl InboundWebhook {
    /// Checks what the sender controls beyond the signature: ids and types are short, printable
    /// text. The fields are named as the sender wrote them.
    pub fn validate(&self) -> Result<(), keel_kernel::DomainError> {
        let mut errors = FieldErrors::new();
        let printable = |s: &str| s.chars().all(|c| c.is_ascii_graphic());
        if self.webhook_id.is_empty()
            || self.webhook_id.chars().count() > WEBHOOK_ID_MAX_CHARS
            || !printable(&self.webhook_id)
        {
            errors.add(
                "webhook-id",
                "format",
                format!("must be 1 to {WEBHOOK_ID_MAX_CHARS} printable ASCII characters"),
            );
        }
        if self.event_type.is_empty()
            || self.event_type.chars().count() > EVENT_TYPE_MAX_CHARS
            || !printable(&self.event_type)
        {
            errors.add(
                "type",
                "format",
                format!("must be 1 to {EVENT_TYPE_MAX_CHARS} printable ASCII characters"),
            );
        }
        errors.into_result()
    }
}

/// What became of a delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Receipt {
    /// First time seen: this job processes it.
    Accepted {
        /// The job.
        job: JobId,
    },
    /// Seen before (a retry by the sender, or a replay): acknowledged, not processed again.
    Duplicate,
}

/// The stored record of a delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceiptRecord {
    /// The source.
    pub source: String,
    /// The sender's message id.
    pub webhook_id: String,
    /// The event type.
    pub event_type: String,
    /// The job that processes it.
    pub job_id: JobId,
    /// When Keel received it.
    pub received_at: DateTime<Utc>,
}
