//! What features do with received deliveries: handlers, routed by source.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use keel_kernel::jobs::JobFailure;

use crate::model::InboundWebhook;

/// What a handler did with a delivery, for the job's log line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Handled {
    /// It changed something; the text says what.
    Applied(String),
    /// Nothing to do (an event type it does not follow, an event older than what it applied).
    Ignored(String),
}

/// Processes deliveries from the sources it is routed to. Runs in a job: an `Err` is retried
/// (transient) or ends the job (permanent), and a retry may follow a crash after a partial
/// run, so a handler must be idempotent.
#[async_trait]
pub trait InboundHandler: Send + Sync + std::fmt::Debug {
    /// A short name for logs (`identity.sync_users`).
    fn name(&self) -> &'static str;

    /// Processes one delivery.
    async fn handle(&self, webhook: &InboundWebhook) -> Result<Handled, JobFailure>;
}

/// Which handlers process which source's deliveries.
#[derive(Clone, Debug, Default)]
pub struct InboundRoutes {
    by_source: BTreeMap<String, Vec<Arc<dyn InboundHandler>>>,
}

impl InboundRoutes {
    /// No routes.
    pub fn new() -> Self {
        Self::default()
    }

    /// Routes `source`'s deliveries to `handler` too.
    #[must_use]
    pub fn route(mut self, source: &str, handler: Arc<dyn InboundHandler>) -> Self {
        self.by_source
            .entry(source.to_owned())
            .or_default()
            .push(handler);
        self
    }

    /// Runs every handler of the delivery's source, in registration order; stops at the first
    /// failure (the retry runs them all again, which idempotent handlers allow). A source
    /// without handlers is acknowledged and logged: it is configured to be received, and
    /// processing can be added later.
    pub async fn dispatch(
        &self,
        webhook: &InboundWebhook,
    ) -> Result<Vec<(&'static str, Handled)>, JobFailure> {
        let mut outcomes = Vec::new();
        for handler in self.by_source.get(&webhook.source).into_iter().flatten() {
            outcomes.push((handler.name(), handler.handle(webhook).await?));
        }
        Ok(outcomes)
    }

    /// The sources that have at least one handler.
    pub fn sources(&self) -> impl Iterator<Item = &str> {
        self.by_source.keys().map(String::as_str)
    }
}
