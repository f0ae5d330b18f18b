//! Webhooks' jobs: processing a received delivery (its source's handlers), the hourly purge
//! of old receipts, and outbound: the fan-out of an event to the endpoints that follow it and
//! each delivery attempt.

use std::sync::Arc;

use keel_config::Settings;
use keel_kernel::jobs::{JobFailure, NewJob};
use keel_kernel::{AppState, MissingService};
use keel_webhooks::{
    DeliverWebhook, FanOutWebhookEvent, Handled, InboundRoutes, OutboundWebhooks,
    ProcessInboundWebhook, PurgeWebhookReceipts, Webhooks,
};

use crate::queue::Handlers;
use crate::schedules::Schedule;

/// `webhook_deliveries_total{outcome}`: delivery attempts by outcome (`succeeded`,
/// `cancelled`, `retrying`, `refused`, `failed` is a `retrying` that was the last).
pub const WEBHOOK_DELIVERIES_TOTAL: &str = "webhook_deliveries_total";

/// Registers the webhook jobs.
pub fn register(handlers: Handlers, state: &AppState) -> Result<Handlers, MissingService> {
    let routes = state.get::<InboundRoutes>()?;
    let webhooks = state.get::<Webhooks>()?;
    let outbound = state.get::<OutboundWebhooks>()?;
    let fan_out = outbound.clone();
    Ok(handlers
        .register(move |job: ProcessInboundWebhook, _context| {
            let routes = routes.clone();
            async move {
                let webhook = &job.webhook;
                let outcomes = routes.dispatch(webhook).await?;
                if outcomes.is_empty() {
                    tracing::info!(
                        source = %webhook.source,
                        webhook_id = %webhook.webhook_id,
                        event_type = %webhook.event_type,
                        "webhook received; no handler follows this source"
                    );
                }
                for (handler, outcome) in outcomes {
                    let (applied, what) = match outcome {
                        Handled::Applied(what) => (true, what),
                        Handled::Ignored(what) => (false, what),
                    };
                    tracing::info!(
                        source = %webhook.source,
                        webhook_id = %webhook.webhook_id,
                        event_type = %webhook.event_type,
                        handler,
                        applied,
                        "{what}"
                    );
                }
                Ok(())
            }
        })
        .register(move |job: PurgeWebhookReceipts, _context| {
            let webhooks = webhooks.clone();
            async move {
                let purged = webhooks
                    .purge_receipts(job.received_before)
                    .await
                    .map_err(JobFailure::transient)?;
                tracing::info!(purged, "old webhook receipts purged");
                Ok(())
            }
        })
        .register(move |job: FanOutWebhookEvent, _context| {
            let outbound = fan_out.clone();
            async move {
                let event_type = job.event.event_type.clone();
                let deliveries = outbound
                    .fan_out(job.event)
                    .await
                    .map_err(JobFailure::transient)?;
                tracing::info!(%event_type, deliveries, "webhook event fanned out");
                Ok(())
            }
        })
        .register(move |job: DeliverWebhook, context| {
            let outbound = outbound.clone();
            async move {
                let result = outbound
                    .deliver(job.delivery, context.attempt, context.max_attempts)
                    .await;
                let outcome = match &result {
                    Ok(state) => state.as_str(),
                    Err(JobFailure::Permanent(_)) => "refused",
                    Err(JobFailure::Transient(_)) => "retrying",
                };
                metrics::counter!(WEBHOOK_DELIVERIES_TOTAL, "outcome" => outcome).increment(1);
                match &result {
                    Ok(_) => tracing::info!(delivery = %job.delivery, attempt = context.attempt, outcome, "webhook delivery attempt"),
                    Err(error) => tracing::warn!(delivery = %job.delivery, attempt = context.attempt, outcome, %error, "webhook delivery attempt failed"),
                }
                result.map(drop)
            }
        }))
}

/// The hourly receipt purge.
pub fn schedules(settings: &Settings) -> Vec<Schedule> {
    let retention = chrono::Duration::from_std(settings.webhooks.inbound_retention).ok();
    vec![Schedule {
        name: "purge_webhook_receipts",
        cron: "0 53 * * * *".to_owned(),
        make: Arc::new(move |tick| {
            let received_before = retention
                .and_then(|retention| tick.checked_sub_signed(retention))
                .ok_or_else(|| "webhooks.inbound_retention is out of range".to_owned())?;
            NewJob::of(&PurgeWebhookReceipts { received_before }).map_err(|e| e.to_string())
        }),
    }]
}
