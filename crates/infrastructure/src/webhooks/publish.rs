//! Keel's events: every activity entry a use case records is an event. One that an endpoint
//! follows is handed to `webhooks.fan_out` in the same transaction (the outbox), so it goes
//! out exactly when the change commits. One about a resource with a real-time topic goes to
//! WebSocket connections: through the outbox and Redis to every replica when Redis is
//! configured, else onto this process's bus once the transaction commits.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use keel_kernel::activity::ActivityLog;
use keel_kernel::jobs::{JobQueue, NewJob};
use keel_kernel::realtime::{PublishRealtimeEvent, RealtimeEvent};
use keel_kernel::{Caller, NewActivity, RepoError, Transaction};
use keel_webhooks::FanOutWebhookEvent;
use keel_webhooks::outbound::{EndpointRepository, EventId, OutboundEvent};
use serde_json::json;

use crate::activity::SeaActivity;

/// Actions never published: sign-in attempts carry what a stranger typed (and there are many),
/// and endpoint changes carry endpoint URLs.
fn private(action: &str) -> bool {
    action.starts_with("auth.") || action.starts_with("webhook_")
}

/// How long this process trusts its view of which event types endpoints follow. A change
/// recorded by this process refreshes it at once; another replica's within this long.
const FRESH_FOR: Duration = Duration::from_secs(5);

/// The event types some endpoint follows (`*` for all), as last read; one per process.
#[derive(Debug, Default)]
pub struct Subscriptions {
    view: Mutex<View>,
}

#[derive(Debug, Default)]
struct View {
    read: Option<(Instant, Arc<BTreeSet<String>>)>,
    /// After a change to an endpoint, nothing is cached until this instant: a transaction
    /// reading before that change commits must not keep the old view for [`FRESH_FOR`].
    uncached_until: Option<Instant>,
}

impl Subscriptions {
    fn fresh(&self) -> Option<Arc<BTreeSet<String>>> {
        let view = self.view.lock().unwrap_or_else(PoisonError::into_inner);
        view.read
            .as_ref()
            .filter(|(read, _)| read.elapsed() < FRESH_FOR)
            .map(|(_, types)| types.clone())
    }

    fn store(&self, types: BTreeSet<String>) -> Arc<BTreeSet<String>> {
        let types = Arc::new(types);
        let mut view = self.view.lock().unwrap_or_else(PoisonError::into_inner);
        if view
            .uncached_until
            .is_none_or(|until| Instant::now() >= until)
        {
            view.read = Some((Instant::now(), types.clone()));
        }
        types
    }

    fn forget(&self) {
        let mut view = self.view.lock().unwrap_or_else(PoisonError::into_inner);
        view.read = None;
        // Longer than a transaction can wait for SQLite's write lock (busy timeout, 5 s).
        view.uncached_until = Some(Instant::now() + Duration::from_secs(10));
    }
}

/// The activity log that also publishes: records the entry, then enqueues its fan-out when an
/// endpoint follows its action.
#[derive(Debug, Clone)]
pub struct PublishingActivity {
    /// Where entries are stored.
    pub log: Arc<SeaActivity>,
    /// The endpoints (read in the use case's transaction when the view is stale).
    pub endpoints: Arc<dyn EndpointRepository>,
    /// The outbox.
    pub jobs: Arc<dyn JobQueue>,
    /// The process's view of the subscriptions.
    pub subscriptions: Arc<Subscriptions>,
    /// The process's real-time hub.
    pub realtime: crate::realtime::RealtimeHub,
}

impl PublishingActivity {
    async fn followed(&self, tx: &mut dyn Transaction) -> Result<Arc<BTreeSet<String>>, RepoError> {
        if let Some(types) = self.subscriptions.fresh() {
            return Ok(types);
        }
        let types = self
            .endpoints
            .list_in(tx)
            .await?
            .into_iter()
            .flat_map(|endpoint| endpoint.events)
            .collect();
        Ok(self.subscriptions.store(types))
    }
}

#[async_trait]
impl ActivityLog for PublishingActivity {
    async fn record(
        &self,
        tx: &mut dyn Transaction,
        caller: &Caller,
        entry: NewActivity,
    ) -> Result<(), RepoError> {
        if private(entry.action) {
            let endpoints_changed = entry.action.starts_with("webhook_endpoint.");
            self.log.record(tx, caller, entry).await?;
            if endpoints_changed {
                // Its own transaction has not committed yet: the next reads see the change.
                self.subscriptions.forget();
            }
            return Ok(());
        }
        let event = OutboundEvent {
            id: EventId::new(),
            event_type: entry.action.to_owned(),
            occurred_at: entry.at,
            data: json!({
                "resource": entry.resource_type,
                "id": entry.resource_id,
                "subject": entry.subject,
                "actor": { "type": caller.actor.kind(), "id": caller.actor.user_id() },
                "changes": entry.changes,
            }),
        };
        let live = self
            .realtime
            .topic_of(entry.resource_type)
            .map(|topic| RealtimeEvent {
                topic: topic.name.to_owned(),
                event: event.event_type.clone(),
                data: event.data.clone(),
                owner: entry.subject,
            });
        self.log.record(tx, caller, entry).await?;
        if let Some(live) = live {
            if self.realtime.via_redis {
                let job = NewJob::of(&PublishRealtimeEvent { event: live })?
                    .caused_by(caller.actor.user_id(), &caller.origin);
                self.jobs.enqueue(tx, job).await?;
            } else {
                let hub = self.realtime.clone();
                crate::unit_of_work::after_commit(tx, move || hub.publish_local(live))?;
            }
        }
        let followed = self.followed(tx).await?;
        if followed.contains("*") || followed.contains(&event.event_type) {
            let job = NewJob::of(&FanOutWebhookEvent { event })?
                .caused_by(caller.actor.user_id(), &caller.origin);
            self.jobs.enqueue(tx, job).await?;
        }
        Ok(())
    }
}
