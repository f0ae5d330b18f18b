//! The mail port: domains compose messages, infrastructure delivers them.

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::BoxError;
use crate::jobs::{Job, JobFailure, JobId, Queue, RetryPolicy};
use crate::repo::RepoError;

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

impl Email {
    /// The message a template rendered, to `to`.
    pub fn rendered(to: impl Into<String>, rendered: Rendered) -> Self {
        Self {
            to: to.into(),
            subject: rendered.subject,
            text: rendered.text,
            html: rendered.html,
        }
    }
}

/// What a mail template produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// The subject line (one line, trimmed).
    pub subject: String,
    /// The plain-text body.
    pub text: String,
    /// The HTML body (values escaped).
    pub html: String,
}

/// A mail template is missing, malformed or needs a value it was not given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("mail template `{template}`: {message}")]
pub struct TemplateError {
    /// The template's name, e.g. `identity/password_reset`.
    pub template: String,
    /// What is wrong, with the file and line where known.
    pub message: String,
}

/// Renders mails from templates a team can change without touching Rust (files under
/// `mail.templates_dir` override the built-in ones).
pub trait MailTemplates: Send + Sync + std::fmt::Debug {
    /// Renders `template`'s subject, text and HTML with `context`.
    fn render(
        &self,
        template: &str,
        context: &serde_json::Value,
    ) -> Result<Rendered, TemplateError>;
}

/// Templates for unit tests: the subject is the template's name, the bodies list the context.
#[derive(Debug, Default, Clone, Copy)]
pub struct ListingTemplates;

impl MailTemplates for ListingTemplates {
    fn render(
        &self,
        template: &str,
        context: &serde_json::Value,
    ) -> Result<Rendered, TemplateError> {
        let body = match context.as_object() {
            Some(fields) => fields
                .iter()
                .map(|(key, value)| match value.as_str() {
                    Some(text) => format!("{key}: {text}\n"),
                    None => format!("{key}: {value}\n"),
                })
                .collect::<String>(),
            None => context.to_string(),
        };
        Ok(Rendered {
            subject: template.to_owned(),
            text: body.clone(),
            html: body,
        })
    }
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

/// Remembers which dedupe keys were handed to the transport.
#[async_trait]
pub trait DeliveryLedger: Send + Sync + std::fmt::Debug {
    /// Whether a message with this key was sent.
    async fn was_sent(&self, dedupe_key: &str) -> Result<bool, RepoError>;
    /// Records that it was (a second record is a no-op).
    async fn record(&self, dedupe_key: &str, job: JobId) -> Result<(), RepoError>;
}

/// What [`deliver_once`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Handed to the transport now.
    Sent,
    /// An earlier attempt already sent it.
    AlreadySent,
}

/// Runs a [`SendEmail`] job: sends unless the ledger knows its key, then records the key, so a
/// retried job never sends twice. Storage and transport errors are transient (retried).
pub async fn deliver_once(
    mailer: &dyn Mailer,
    ledger: &dyn DeliveryLedger,
    job: SendEmail,
    id: JobId,
) -> Result<Delivery, JobFailure> {
    if ledger
        .was_sent(&job.dedupe_key)
        .await
        .map_err(JobFailure::transient)?
    {
        return Ok(Delivery::AlreadySent);
    }
    mailer
        .send(job.email, Some(&job.dedupe_key))
        .await
        .map_err(JobFailure::transient)?;
    ledger
        .record(&job.dedupe_key, id)
        .await
        .map_err(JobFailure::transient)?;
    Ok(Delivery::Sent)
}

/// A ledger in memory, for unit tests.
#[derive(Debug, Default)]
pub struct InMemoryDeliveryLedger {
    keys: std::sync::Mutex<std::collections::BTreeSet<String>>,
}

#[async_trait]
impl DeliveryLedger for InMemoryDeliveryLedger {
    async fn was_sent(&self, dedupe_key: &str) -> Result<bool, RepoError> {
        Ok(self
            .keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(dedupe_key))
    }

    async fn record(&self, dedupe_key: &str, _job: JobId) -> Result<(), RepoError> {
        self.keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(dedupe_key.to_owned());
        Ok(())
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        // The futures here never wait on I/O: polling once with a no-op waker completes them.
        let mut future = std::pin::pin!(future);
        let mut context = std::task::Context::from_waker(std::task::Waker::noop());
        match future.as_mut().poll(&mut context) {
            std::task::Poll::Ready(output) => output,
            std::task::Poll::Pending => panic!("an in-memory future did not complete"),
        }
    }

    #[test]
    fn a_retried_mail_job_sends_once() {
        let mailer = InMemoryMailer::default();
        let ledger = InMemoryDeliveryLedger::default();
        let job = SendEmail {
            email: Email {
                to: "ada@example.com".into(),
                subject: "Reset your password".into(),
                text: "link".into(),
                html: "<p>link</p>".into(),
            },
            dedupe_key: "identity.password_reset:1".into(),
        };
        let id = JobId::new();
        assert_eq!(
            block_on(deliver_once(&mailer, &ledger, job.clone(), id)).unwrap(),
            Delivery::Sent
        );
        assert_eq!(
            block_on(deliver_once(&mailer, &ledger, job, id)).unwrap(),
            Delivery::AlreadySent
        );
        assert_eq!(mailer.sent().len(), 1);
    }
}
