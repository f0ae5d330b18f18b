//! Webhooks: deliveries other services sign with the Standard Webhooks scheme.
//!
//! The HTTP adapter checks the signature and the timestamp; this crate owns what happens to a
//! delivery that passed: [`Webhooks::receive`] stores a receipt keyed by (source, webhook id)
//! and enqueues [`ProcessInboundWebhook`] in the same transaction, so a delivery is processed
//! exactly once however often the sender retries it. What processing means is up to the
//! features: each registers an [`InboundHandler`] for the sources it cares about.
//!
//! Outbound ([`outbound`]): endpoints subscribe to Keel's events; each becomes a delivery that
//! a job signs and sends, with retries, a log of attempts and redelivery.

pub mod inbound;
pub mod jobs;
pub mod model;
pub mod outbound;
pub mod policy;
pub mod repository;
pub mod service;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use inbound::{Handled, InboundHandler, InboundRoutes};
pub use jobs::{DeliverWebhook, FanOutWebhookEvent, ProcessInboundWebhook, PurgeWebhookReceipts};
pub use model::{InboundWebhook, Receipt, ReceiptRecord};
pub use outbound::OutboundWebhooks;
pub use policy::PERMISSIONS;
pub use repository::WebhookReceiptRepository;
pub use service::Webhooks;
