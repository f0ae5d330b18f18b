//! The mail port: domains compose messages, infrastructure delivers them.

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::BoxError;
use crate::jobs::{Job, Queue, RetryPolicy};

/// A message to one recipient, with text and HTML bodies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Email {
    /// The recipient's address.
    pub to: String,
    /// The subject line.
    pub subject: String,
    /// The plain-text body.
    pub text: String,
    /// The HTML body.
    pub html: String,
}

/// The job that delivers one message: use cases enqueue it in their transaction, the worker
/// sends it. `dedupe_key` makes a retried job never send twice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendEmail {
    /// What to send.
    pub email: Email,
    /// Unique per message (e.g. `identity.password_reset:<token id>`); also its Message-ID.
    pub dedupe_key: String,
}

impl Job for SendEmail {
    const KIND: &'static str = "mail.send";
    // A user is waiting for the link.
    const QUEUE: Queue = Queue::High;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 8,
            backoff: Duration::from_secs(5),
            max_backoff: Duration::from_secs(600),
            timeout: Duration::from_secs(60),
        }
    }

    fn dedupe_key(&self) -> Option<String> {
        Some(self.dedupe_key.clone())
    }
}

/// Delivers mail (file, log or SMTP transport, chosen by `mail.transport`).
#[async_trait]
pub trait Mailer: Send + Sync + std::fmt::Debug {
    /// Sends one message. `dedupe_key`, when given, becomes its `Message-ID`, so a message
    /// sent twice by a crash-and-retry is recognisable as one by every mail client.
    async fn send(&self, email: Email, dedupe_key: Option<&str>) -> Result<(), BoxError>;
}

/// A mailer that keeps messages in memory, for unit tests.
#[derive(Debug, Default)]
pub struct InMemoryMailer {
    sent: std::sync::Mutex<Vec<Email>>,
}

impl InMemoryMailer {
    /// Messages sent so far.
    pub fn sent(&self) -> Vec<Email> {
        self.sent.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[async_trait]
impl Mailer for InMemoryMailer {
    async fn send(&self, email: Email, _dedupe_key: Option<&str>) -> Result<(), BoxError> {
        self.sent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(email);
        Ok(())
    }
}
