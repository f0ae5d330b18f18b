//! Identity's background jobs.

use chrono::{DateTime, Utc};
use keel_kernel::jobs::{Job, Queue, RetryPolicy};
use keel_kernel::mail::SendEmail;
use serde::{Deserialize, Serialize};

use crate::model::{TokenId, TokenPurpose};

/// Deletes credentials nobody can use any more: sessions (with their refresh tokens) that
/// ended, and reset/verification tokens that expired or were used. Scheduled every 15 min.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurgeExpiredCredentials {
    /// Credentials that ended before this instant go.
    pub ended_before: DateTime<Utc>,
}

impl Job for PurgeExpiredCredentials {
    const KIND: &'static str = "identity.purge_expired_credentials";
    const QUEUE: Queue = Queue::Low;
}

/// Mails a password-reset or verification link. The payload names the token, never the
/// token itself: the worker derives it again from the token id and a pepper the database does
/// not hold, so a copy of the job tables (or the outbox) opens no account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendTokenMail {
    /// The stored token record the link is for.
    pub token: TokenId,
    /// What the link does.
    pub purpose: TokenPurpose,
    /// The pepper the token is derived under.
    pub pepper_id: String,
    /// The recipient.
    pub to: String,
    /// How long the link works, for the mail's wording.
    pub ttl_secs: u64,
}

impl SendTokenMail {
    /// What the token is derived from: its purpose and record id.
    pub fn context(purpose: TokenPurpose, token: TokenId) -> String {
        format!("one-time-token:{}:{token}", purpose.as_str())
    }
}

impl Job for SendTokenMail {
    const KIND: &'static str = "identity.send_token_mail";
    // A user is waiting for the link.
    const QUEUE: Queue = Queue::High;

    fn policy() -> RetryPolicy {
        SendEmail::policy()
    }

    fn dedupe_key(&self) -> Option<String> {
        Some(format!("identity.{}:{}", self.purpose.as_str(), self.token))
    }
}
