//! Outbound webhooks: endpoints subscribe to Keel's events; each event they follow becomes a
//! delivery, sent by a job, signed per Standard Webhooks, retried with backoff, logged per
//! attempt and redeliverable by an administrator.

pub mod model;
pub mod ports;
pub mod service;

pub use model::{
    Delivery, DeliveryAttempt, DeliveryId, DeliveryState, Endpoint, EndpointId, EventId,
    NewEndpoint, OutboundEvent, is_public,
};
pub use ports::{
    DeliveryRepository, EndpointRepository, OutboundRequest, SendOutcome, SigningKeys,
    WebhookSender,
};
pub use service::{CreatedEndpoint, OutboundPorts, OutboundSettings, OutboundWebhooks};
