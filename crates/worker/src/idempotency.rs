//! `Idempotency-Key` bookkeeping: the purge of keys past their 24 hours.

use std::sync::Arc;

use keel_config::Settings;
use keel_kernel::idempotency::{IdempotencyStore, PurgeIdempotencyKeys, RETENTION};
use keel_kernel::jobs::{JobFailure, NewJob};
use keel_kernel::{AppState, MissingService};

use crate::queue::Handlers;
use crate::schedules::Schedule;

/// Registers the purge.
pub fn register(handlers: Handlers, state: &AppState) -> Result<Handlers, MissingService> {
    let store = state.get::<Arc<dyn IdempotencyStore>>()?;
    Ok(
        handlers.register(move |job: PurgeIdempotencyKeys, _context| {
            let store = Arc::clone(&store);
            async move {
                let purged = store
                    .purge(job.created_before)
                    .await
                    .map_err(JobFailure::transient)?;
                tracing::info!(purged, "expired idempotency keys purged");
                Ok(())
            }
        }),
    )
}

/// Hourly; keys answer retries for 24 h.
pub fn schedules(_settings: &Settings) -> Vec<Schedule> {
    vec![Schedule {
        name: "purge_idempotency_keys",
        cron: "0 31 * * * *".to_owned(),
        make: Arc::new(|tick| {
            let keep = chrono::Duration::from_std(RETENTION).unwrap_or(chrono::Duration::days(1));
            NewJob::of(&PurgeIdempotencyKeys {
                created_before: tick - keep,
            })
            .map_err(|e| e.to_string())
        }),
    }]
}
