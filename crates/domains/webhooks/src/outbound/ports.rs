//! What outbound webhooks need from the outside: storage, signing secrets, the network.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use keel_kernel::{RepoError, Transaction};

use super::model::{Delivery, DeliveryAttempt, DeliveryId, DeliveryState, Endpoint, EndpointId};

/// Subscribed endpoints.
#[async_trait]
pub trait EndpointRepository: Send + Sync + std::fmt::Debug {
    /// Every endpoint, oldest first.
    async fn list(&self) -> Result<Vec<Endpoint>, RepoError>;
    /// Every endpoint, read inside `tx` (the activity log's publisher refreshes its view
    /// of the subscriptions there).
    async fn list_in(&self, tx: &mut dyn Transaction) -> Result<Vec<Endpoint>, RepoError>;
    /// One endpoint.
    async fn find(&self, id: EndpointId) -> Result<Option<Endpoint>, RepoError>;
    /// Stores a new endpoint.
    async fn insert(&self, tx: &mut dyn Transaction, endpoint: &Endpoint) -> Result<(), RepoError>;
    /// Deletes an endpoint and its deliveries; `false` when it was absent.
    async fn delete(&self, tx: &mut dyn Transaction, id: EndpointId) -> Result<bool, RepoError>;
}

/// Deliveries and their attempts.
#[async_trait]
pub trait DeliveryRepository: Send + Sync + std::fmt::Debug {
    /// Stores a new delivery (no attempts yet) unless the endpoint already has one for the
    /// event; `false` when it had.
    async fn insert(
        &self,
        tx: &mut dyn Transaction,
        delivery: &Delivery,
    ) -> Result<bool, RepoError>;
    /// One delivery with its attempts.
    async fn find(&self, id: DeliveryId) -> Result<Option<Delivery>, RepoError>;
    /// An endpoint's newest deliveries, with their attempts.
    async fn list_for(&self, endpoint: EndpointId, limit: u64) -> Result<Vec<Delivery>, RepoError>;
    /// Adds an attempt and sets the state.
    async fn record_attempt(
        &self,
        id: DeliveryId,
        attempt: &DeliveryAttempt,
        state: DeliveryState,
    ) -> Result<(), RepoError>;
    /// Puts a finished delivery back to `pending`; `false` when it is pending already (so
    /// two redeliveries at once enqueue one job).
    async fn reopen(
        &self,
        tx: &mut dyn Transaction,
        id: DeliveryId,
        at: DateTime<Utc>,
    ) -> Result<bool, RepoError>;
}

/// Signing secrets, derived from a stored seed under a configured pepper.
pub trait SigningKeys: Send + Sync + std::fmt::Debug {
    /// A fresh seed and the pepper that derives its secret: `(pepper_id, seed)`.
    fn new_seed(&self) -> (String, String);
    /// The `whsec_…` secret of a seed; `None` when its pepper is no longer configured.
    fn secret(&self, pepper_id: &str, seed: &str) -> Option<String>;
}

/// A signed request to send.
#[derive(Clone, Debug)]
pub struct OutboundRequest<'a> {
    /// The endpoint's URL.
    pub url: &'a str,
    /// `webhook-id`.
    pub webhook_id: &'a str,
    /// `webhook-timestamp`.
    pub timestamp: DateTime<Utc>,
    /// The JSON body.
    pub body: &'a [u8],
    /// The `whsec_…` secret to sign with.
    pub secret: &'a str,
}

/// What became of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SendOutcome {
    /// The endpoint answered with this status.
    Answered(u16),
    /// No answer: the connection failed or timed out.
    Failed(String),
    /// Not sent: the target resolved to an address deliveries may not reach.
    Refused(String),
}

/// Sends signed requests, never to a private address unless configured to.
#[async_trait]
pub trait WebhookSender: Send + Sync + std::fmt::Debug {
    /// Signs and sends; returns the outcome and how long it took.
    async fn send(&self, request: OutboundRequest<'_>) -> (SendOutcome, Duration);
}
