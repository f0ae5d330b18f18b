//! The mail port: domains compose messages, infrastructure delivers them.

use async_trait::async_trait;

use crate::error::BoxError;

/// A message to one recipient, with text and HTML bodies.
#[derive(Debug, Clone, PartialEq, Eq)]
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

/// Delivers mail (file, log or SMTP transport, chosen by `mail.transport`).
#[async_trait]
pub trait Mailer: Send + Sync + std::fmt::Debug {
    /// Sends one message.
    async fn send(&self, email: Email) -> Result<(), BoxError>;
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
    async fn send(&self, email: Email) -> Result<(), BoxError> {
        self.sent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(email);
        Ok(())
    }
}
