//! The outbound use cases: endpoint management (`webhooks:manage`), the fan-out of an event
//! to the endpoints that follow it, and one delivery attempt.

use std::sync::Arc;
use std::time::Duration;

use keel_kernel::activity::ActivityLog;
use keel_kernel::jobs::{JobFailure, JobQueue, NewJob, RetryPolicy};
use keel_kernel::{Caller, Clock, DomainError, NewActivity, UnitOfWork};
use serde_json::json;

use super::model::{
    Delivery, DeliveryAttempt, DeliveryId, DeliveryState, Endpoint, EndpointId, NewEndpoint,
    OutboundEvent,
};
use super::ports::{
    DeliveryRepository, EndpointRepository, OutboundRequest, SendOutcome, SigningKeys,
    WebhookSender,
};
use crate::jobs::DeliverWebhook;
use crate::policy::MANAGE;

/// A URL as the activity log keeps it: without credentials, query or fragment (they may carry
/// a token the receiver checks).
fn without_secrets(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut url) => {
            url.set_query(None);
            url.set_fragment(None);
            let _ = url.set_username("");
            let _ = url.set_password(None);
            url.to_string()
        }
        Err(_) => String::new(),
    }
}

/// Newest deliveries listed per endpoint.
pub const DELIVERIES_LISTED: u64 = 100;

/// Every port outbound webhooks use.
#[derive(Debug)]
pub struct OutboundPorts {
    /// Endpoints.
    pub endpoints: Arc<dyn EndpointRepository>,
    /// Deliveries.
    pub deliveries: Arc<dyn DeliveryRepository>,
    /// Signing secrets.
    pub keys: Arc<dyn SigningKeys>,
    /// The network.
    pub sender: Arc<dyn WebhookSender>,
    /// Transactions.
    pub unit_of_work: Arc<dyn UnitOfWork>,
    /// The outbox.
    pub jobs: Arc<dyn JobQueue>,
    /// The activity log.
    pub activity: Arc<dyn ActivityLog>,
    /// Time.
    pub clock: Arc<dyn Clock>,
}

/// Tunables (`[webhooks.outbound]`).
#[derive(Debug, Clone)]
pub struct OutboundSettings {
    /// Private, loopback and link-local targets allowed (development).
    pub allow_private_targets: bool,
    /// Attempts per delivery, backoff between them, and each attempt's time limit.
    pub retry: RetryPolicy,
}

impl Default for OutboundSettings {
    fn default() -> Self {
        Self {
            allow_private_targets: false,
            retry: RetryPolicy {
                max_attempts: 16,
                backoff: Duration::from_secs(5),
                max_backoff: Duration::from_secs(3 * 3600),
                timeout: Duration::from_secs(30),
            },
        }
    }
}

/// An endpoint just created, with its signing secret: shown this once.
#[derive(Debug, Clone)]
pub struct CreatedEndpoint {
    /// The endpoint.
    pub endpoint: Endpoint,
    /// `whsec_…`.
    pub secret: String,
}

/// The outbound webhooks service; cheap to clone.
#[derive(Debug, Clone)]
pub struct OutboundWebhooks {
    ports: Arc<OutboundPorts>,
    settings: Arc<OutboundSettings>,
}

impl OutboundWebhooks {
    /// Wires the service.
    pub fn new(ports: OutboundPorts, settings: OutboundSettings) -> Self {
        Self {
            ports: Arc::new(ports),
            settings: Arc::new(settings),
        }
    }

    /// The settings in force.
    pub fn settings(&self) -> &OutboundSettings {
        &self.settings
    }

    /// Subscribes an endpoint; its secret is in the answer and nowhere else.
    pub async fn create_endpoint(
        &self,
        caller: &Caller,
        input: NewEndpoint,
    ) -> Result<CreatedEndpoint, DomainError> {
        caller.actor.require(&MANAGE)?;
        input.validate(self.settings.allow_private_targets)?;
        let (pepper_id, seed) = self.ports.keys.new_seed();
        let secret = self
            .ports
            .keys
            .secret(&pepper_id, &seed)
            .ok_or_else(|| DomainError::internal("the active pepper derives no secret"))?;
        let now = self.ports.clock.now();
        let mut events = input.events;
        events.sort();
        events.dedup();
        let endpoint = Endpoint {
            id: EndpointId::new(),
            url: input.url,
            events,
            description: input
                .description
                .map(|d| d.trim().to_owned())
                .filter(|d| !d.is_empty()),
            pepper_id,
            seed,
            created_by: caller.actor.user_id(),
            created_at: now,
        };
        let mut tx = self.ports.unit_of_work.begin().await?;
        self.ports.endpoints.insert(tx.as_mut(), &endpoint).await?;
        let entry = NewActivity::new("webhook_endpoint.created", "webhook_endpoint", now)
            .resource(endpoint.id)
            .changes(json!({ "url": without_secrets(&endpoint.url), "events": endpoint.events }));
        self.ports
            .activity
            .record(tx.as_mut(), caller, entry)
            .await?;
        tx.commit().await?;
        Ok(CreatedEndpoint { endpoint, secret })
    }

    /// Every endpoint.
    pub async fn list_endpoints(&self, caller: &Caller) -> Result<Vec<Endpoint>, DomainError> {
        caller.actor.require(&MANAGE)?;
        Ok(self.ports.endpoints.list().await?)
    }

    /// Unsubscribes an endpoint; its pending deliveries are cancelled with it.
    pub async fn delete_endpoint(
        &self,
        caller: &Caller,
        id: EndpointId,
    ) -> Result<(), DomainError> {
        caller.actor.require(&MANAGE)?;
        let now = self.ports.clock.now();
        let mut tx = self.ports.unit_of_work.begin().await?;
        if !self.ports.endpoints.delete(tx.as_mut(), id).await? {
            return Err(DomainError::NotFound {
                resource: "webhook endpoint",
            });
        }
        let entry =
            NewActivity::new("webhook_endpoint.deleted", "webhook_endpoint", now).resource(id);
        self.ports
            .activity
            .record(tx.as_mut(), caller, entry)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// An endpoint's newest deliveries, with every attempt.
    pub async fn deliveries(
        &self,
        caller: &Caller,
        endpoint: EndpointId,
    ) -> Result<Vec<Delivery>, DomainError> {
        caller.actor.require(&MANAGE)?;
        if self.ports.endpoints.find(endpoint).await?.is_none() {
            return Err(DomainError::NotFound {
                resource: "webhook endpoint",
            });
        }
        Ok(self
            .ports
            .deliveries
            .list_for(endpoint, DELIVERIES_LISTED)
            .await?)
    }

    /// Sends a delivery again, with a fresh set of attempts (a failed one, or one the
    /// receiver lost). The `webhook-id` stays the same, so a receiver that did process it
    /// recognises the repeat.
    pub async fn redeliver(
        &self,
        caller: &Caller,
        id: DeliveryId,
    ) -> Result<Delivery, DomainError> {
        caller.actor.require(&MANAGE)?;
        let mut delivery = self
            .ports
            .deliveries
            .find(id)
            .await?
            .ok_or(DomainError::NotFound {
                resource: "webhook delivery",
            })?;
        let pending = || DomainError::Conflict {
            code: "webhook.delivery_pending",
            message: "the delivery is still being attempted".to_owned(),
            field: None,
        };
        if delivery.state == DeliveryState::Pending {
            return Err(pending());
        }
        let now = self.ports.clock.now();
        let mut tx = self.ports.unit_of_work.begin().await?;
        // Conditional: of two redeliveries at once, one reopens it and the other is refused.
        if !self.ports.deliveries.reopen(tx.as_mut(), id, now).await? {
            return Err(pending());
        }
        self.ports
            .jobs
            .enqueue(tx.as_mut(), self.delivery_job(id, caller)?)
            .await?;
        let entry =
            NewActivity::new("webhook_delivery.redelivered", "webhook_delivery", now).resource(id);
        self.ports
            .activity
            .record(tx.as_mut(), caller, entry)
            .await?;
        tx.commit().await?;
        delivery.state = DeliveryState::Pending;
        delivery.updated_at = now;
        Ok(delivery)
    }

    fn delivery_job(&self, delivery: DeliveryId, caller: &Caller) -> Result<NewJob, DomainError> {
        let mut job = NewJob::of(&DeliverWebhook { delivery })
            .map_err(|e| DomainError::Internal(Box::new(e)))?
            .caused_by(caller.actor.user_id(), &caller.origin);
        job.policy = self.settings.retry;
        Ok(job)
    }

    /// Creates a delivery, and the job that sends it, for every endpoint following the
    /// event (system: the `webhooks.fan_out` job). Returns how many.
    pub async fn fan_out(&self, event: OutboundEvent) -> Result<usize, DomainError> {
        let endpoints: Vec<Endpoint> = self
            .ports
            .endpoints
            .list()
            .await?
            .into_iter()
            .filter(|e| e.follows(&event.event_type))
            .collect();
        if endpoints.is_empty() {
            return Ok(0);
        }
        let now = self.ports.clock.now();
        let system = keel_kernel::auth::SYSTEM.clone();
        let mut tx = self.ports.unit_of_work.begin().await?;
        for endpoint in &endpoints {
            let delivery = Delivery {
                id: DeliveryId::new(),
                endpoint_id: endpoint.id,
                event: event.clone(),
                state: DeliveryState::Pending,
                attempts: Vec::new(),
                created_at: now,
                updated_at: now,
            };
            // A fan-out that runs again (a crash after its commit) finds its deliveries made.
            if self.ports.deliveries.insert(tx.as_mut(), &delivery).await? {
                self.ports
                    .jobs
                    .enqueue(tx.as_mut(), self.delivery_job(delivery.id, &system)?)
                    .await?;
            }
        }
        tx.commit().await?;
        Ok(endpoints.len())
    }

    /// Makes one attempt at a delivery (system: the `webhooks.deliver` job, attempt `attempt`
    /// of `max_attempts`). A 2xx ends it; anything else is retried until the last attempt,
    /// except a refused target, which no retry can change.
    pub async fn deliver(
        &self,
        id: DeliveryId,
        attempt: u32,
        max_attempts: u32,
    ) -> Result<DeliveryState, JobFailure> {
        // Gone with its endpoint: nothing left to send.
        let Some(delivery) = self
            .ports
            .deliveries
            .find(id)
            .await
            .map_err(JobFailure::transient)?
        else {
            return Ok(DeliveryState::Cancelled);
        };
        if delivery.state != DeliveryState::Pending {
            // Already decided (a crash after the answer was recorded): nothing to send.
            return Ok(delivery.state);
        }
        let Some(endpoint) = self
            .ports
            .endpoints
            .find(delivery.endpoint_id)
            .await
            .map_err(JobFailure::transient)?
        else {
            return Ok(DeliveryState::Cancelled);
        };
        let number = u32::try_from(delivery.attempts.len())
            .unwrap_or(u32::MAX)
            .saturating_add(1);
        let now = self.ports.clock.now();
        let Some(secret) = self.ports.keys.secret(&endpoint.pepper_id, &endpoint.seed) else {
            let failure = format!(
                "the endpoint's secret was derived under pepper `{}`, which is no longer configured",
                endpoint.pepper_id
            );
            self.record(
                id,
                number,
                None,
                Some(failure.clone()),
                Duration::ZERO,
                DeliveryState::Failed,
            )
            .await?;
            return Err(JobFailure::Permanent(failure));
        };
        let body = json!({
            "type": delivery.event.event_type,
            "timestamp": delivery.event.occurred_at,
            "data": delivery.event.data,
        })
        .to_string();
        let webhook_id = delivery.webhook_id();
        let (outcome, latency) = self
            .ports
            .sender
            .send(OutboundRequest {
                url: &endpoint.url,
                webhook_id: &webhook_id,
                timestamp: now,
                body: body.as_bytes(),
                secret: &secret,
            })
            .await;
        let last = attempt >= max_attempts;
        match outcome {
            SendOutcome::Answered(status) if (200..300).contains(&status) => {
                self.record(
                    id,
                    number,
                    Some(status),
                    None,
                    latency,
                    DeliveryState::Succeeded,
                )
                .await?;
                Ok(DeliveryState::Succeeded)
            }
            SendOutcome::Refused(why) => {
                self.record(
                    id,
                    number,
                    None,
                    Some(why.clone()),
                    latency,
                    DeliveryState::Failed,
                )
                .await?;
                Err(JobFailure::Permanent(why))
            }
            SendOutcome::Answered(status) => {
                let state = if last {
                    DeliveryState::Failed
                } else {
                    DeliveryState::Pending
                };
                let why = format!("the endpoint answered {status}");
                self.record(id, number, Some(status), Some(why.clone()), latency, state)
                    .await?;
                Err(JobFailure::Transient(why))
            }
            SendOutcome::Failed(why) => {
                let state = if last {
                    DeliveryState::Failed
                } else {
                    DeliveryState::Pending
                };
                self.record(id, number, None, Some(why.clone()), latency, state)
                    .await?;
                Err(JobFailure::Transient(why))
            }
        }
    }

    async fn record(
        &self,
        id: DeliveryId,
        attempt: u32,
        status: Option<u16>,
        error: Option<String>,
        latency: Duration,
        state: DeliveryState,
    ) -> Result<(), JobFailure> {
        let attempt = DeliveryAttempt {
            attempt,
            status,
            error,
            latency_ms: u64::try_from(latency.as_millis()).unwrap_or(u64::MAX),
            at: self.ports.clock.now(),
        };
        self.ports
            .deliveries
            .record_attempt(id, &attempt, state)
            .await
            .map_err(JobFailure::transient)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::Utc;
    use futures_executor::block_on;
    use keel_kernel::activity::InMemoryActivityLog;
    use keel_kernel::jobs::InMemoryJobQueue;
    use keel_kernel::repo::InMemoryUnitOfWork;
    use keel_kernel::{Actor, ManualClock, PermissionSet, SessionId, UserId};

    use super::*;
    use crate::testing::{FakeKeys, InMemoryOutbound, ScriptedSender};

    struct World {
        service: OutboundWebhooks,
        store: Arc<InMemoryOutbound>,
        sender: Arc<ScriptedSender>,
        jobs: Arc<InMemoryJobQueue>,
        admin: Caller,
    }

    fn world() -> World {
        let store = Arc::new(InMemoryOutbound::default());
        let sender = Arc::new(ScriptedSender::default());
        let jobs = Arc::new(InMemoryJobQueue::default());
        let service = OutboundWebhooks::new(
            OutboundPorts {
                endpoints: store.clone(),
                deliveries: store.clone(),
                keys: Arc::new(FakeKeys::default()),
                sender: sender.clone(),
                unit_of_work: Arc::new(InMemoryUnitOfWork),
                jobs: jobs.clone(),
                activity: Arc::new(InMemoryActivityLog::default()),
                clock: Arc::new(ManualClock::new(Utc::now())),
            },
            OutboundSettings::default(),
        );
        let admin = Caller::new(Actor::User {
            id: UserId::new(),
            session: SessionId::new(),
            permissions: [MANAGE].into_iter().collect::<PermissionSet>(),
        });
        World {
            service,
            store,
            sender,
            jobs,
            admin,
        }
    }

    fn event(event_type: &str) -> OutboundEvent {
        OutboundEvent {
            id: crate::outbound::EventId::new(),
            event_type: event_type.to_owned(),
            occurred_at: Utc::now(),
            data: json!({ "id": "p1" }),
        }
    }

    fn subscribe(w: &World, events: &[&str]) -> CreatedEndpoint {
        block_on(w.service.create_endpoint(
            &w.admin,
            NewEndpoint {
                url: "https://hooks.example.com/in".to_owned(),
                events: events.iter().map(|e| (*e).to_owned()).collect(),
                description: Some("  crm  ".to_owned()),
            },
        ))
        .unwrap()
    }

    #[test]
    fn only_managers_subscribe_and_the_secret_is_handed_out_once() {
        let w = world();
        let member = Caller::new(Actor::User {
            id: UserId::new(),
            session: SessionId::new(),
            permissions: PermissionSet::default(),
        });
        assert!(matches!(
            block_on(w.service.list_endpoints(&member)),
            Err(DomainError::Forbidden { .. })
        ));
        let created = subscribe(&w, &["project.created", "project.created"]);
        assert!(created.secret.starts_with("whsec_"));
        assert_eq!(created.endpoint.events, ["project.created"], "deduplicated");
        assert_eq!(created.endpoint.description.as_deref(), Some("crm"));
    }

    #[test]
    fn an_event_reaches_the_endpoints_that_follow_it_and_retries_until_it_is_accepted() {
        let w = world();
        let follows = subscribe(&w, &["project.created"]);
        subscribe(&w, &["project.deleted"]);
        let all = subscribe(&w, &["*"]);
        assert_eq!(
            block_on(w.service.fan_out(event("project.created"))).unwrap(),
            2
        );
        assert_eq!(w.jobs.payloads::<DeliverWebhook>().len(), 2);
        let delivery = w
            .store
            .deliveries()
            .into_iter()
            .find(|d| d.endpoint_id == follows.endpoint.id)
            .unwrap();
        assert!(
            w.store
                .deliveries()
                .iter()
                .any(|d| d.endpoint_id == all.endpoint.id)
        );

        w.sender.then([
            SendOutcome::Answered(503),
            SendOutcome::Failed("connection refused".into()),
        ]);
        assert!(matches!(
            block_on(w.service.deliver(delivery.id, 1, 3)),
            Err(JobFailure::Transient(_))
        ));
        assert!(matches!(
            block_on(w.service.deliver(delivery.id, 2, 3)),
            Err(JobFailure::Transient(_))
        ));
        assert_eq!(
            block_on(w.service.deliver(delivery.id, 3, 3)).unwrap(),
            DeliveryState::Succeeded
        );
        let done = block_on(DeliveryRepository::find(w.store.as_ref(), delivery.id))
            .unwrap()
            .unwrap();
        let statuses: Vec<_> = done
            .attempts
            .iter()
            .map(|a| (a.attempt, a.status))
            .collect();
        assert_eq!(statuses, [(1, Some(503)), (2, None), (3, Some(200))]);
        // Every attempt carries the same webhook id, and the event in the Standard shape.
        let sent = w.sender.sent();
        assert!(sent.iter().all(|(_, id, _)| *id == delivery.webhook_id()));
        let body: serde_json::Value = serde_json::from_str(&sent[0].2).unwrap();
        assert_eq!(body["type"], "project.created");
        assert_eq!(body["data"]["id"], "p1");
        // A job that runs again after success sends nothing.
        assert_eq!(
            block_on(w.service.deliver(delivery.id, 1, 3)).unwrap(),
            DeliveryState::Succeeded
        );
        assert_eq!(w.sender.sent().len(), 3);

        // Redelivery: a fresh job, attempts numbered on.
        let again = block_on(w.service.redeliver(&w.admin, delivery.id)).unwrap();
        assert_eq!(again.state, DeliveryState::Pending);
        assert!(matches!(
            block_on(w.service.redeliver(&w.admin, delivery.id)),
            Err(DomainError::Conflict { .. })
        ));
        block_on(w.service.deliver(delivery.id, 1, 3)).unwrap();
        let done = block_on(DeliveryRepository::find(w.store.as_ref(), delivery.id))
            .unwrap()
            .unwrap();
        assert_eq!(done.attempts.last().unwrap().attempt, 4);
    }

    #[test]
    fn the_last_failed_attempt_fails_the_delivery_and_a_refused_target_is_not_retried() {
        let w = world();
        subscribe(&w, &["*"]);
        block_on(w.service.fan_out(event("a.b"))).unwrap();
        block_on(w.service.fan_out(event("c.d"))).unwrap();
        let [first, second] = <[Delivery; 2]>::try_from(w.store.deliveries()).unwrap();
        w.sender.then([
            SendOutcome::Answered(500),
            SendOutcome::Refused("`x` resolves to no public address".into()),
        ]);
        assert!(matches!(
            block_on(w.service.deliver(first.id, 3, 3)),
            Err(JobFailure::Transient(_))
        ));
        assert!(matches!(
            block_on(w.service.deliver(second.id, 1, 3)),
            Err(JobFailure::Permanent(_))
        ));
        for id in [first.id, second.id] {
            assert_eq!(
                block_on(DeliveryRepository::find(w.store.as_ref(), id))
                    .unwrap()
                    .unwrap()
                    .state,
                DeliveryState::Failed
            );
        }
    }

    #[test]
    fn a_deleted_endpoint_cancels_what_is_left() {
        let w = world();
        let created = subscribe(&w, &["*"]);
        block_on(w.service.fan_out(event("a.b"))).unwrap();
        let delivery = w.store.deliveries().remove(0);
        block_on(w.service.delete_endpoint(&w.admin, created.endpoint.id)).unwrap();
        assert_eq!(
            block_on(w.service.deliver(delivery.id, 1, 3)).unwrap(),
            DeliveryState::Cancelled
        );
        assert!(w.sender.sent().is_empty());
        assert!(matches!(
            block_on(w.service.delete_endpoint(&w.admin, created.endpoint.id)),
            Err(DomainError::NotFound { .. })
        ));
    }
}
