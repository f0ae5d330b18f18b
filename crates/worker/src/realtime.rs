//! Real-time events: the job that hands a committed change to every replica through Redis.

use keel_config::Settings;
use keel_infrastructure::realtime::CHANNEL;
use keel_infrastructure::stores::RedisStore;
use keel_kernel::jobs::JobFailure;
use keel_kernel::realtime::PublishRealtimeEvent;
use keel_kernel::{AppState, MissingService};

use crate::queue::Handlers;
use crate::schedules::Schedule;

/// Registers the publisher. Without Redis the api publishes in process and enqueues none of
/// these; one left from a time with Redis is dropped with a log line.
pub fn register(handlers: Handlers, state: &AppState) -> Result<Handlers, MissingService> {
    let redis = state.get::<RedisStore>().ok();
    Ok(handlers.register(move |job: PublishRealtimeEvent, _context| {
        let redis = redis.clone();
        async move {
            let Some(redis) = redis else {
                tracing::warn!(event = %job.event.event, "a real-time event was dropped: redis.url is not set");
                return Ok(());
            };
            let payload = serde_json::to_string(&job.event).map_err(JobFailure::permanent)?;
            let receivers = redis
                .publish(CHANNEL, &payload)
                .await
                .map_err(JobFailure::transient)?;
            tracing::debug!(event = %job.event.event, receivers, "real-time event published");
            Ok(())
        }
    }))
}

/// No schedules.
pub fn schedules(_: &Settings) -> Vec<Schedule> {
    Vec::new()
}
