//! The job admin's own jobs: the diagnostic probe, and the purge of finished jobs older than
//! `jobs.retention`.

use std::sync::Arc;
use std::time::Duration;

use keel_config::Settings;
use keel_infrastructure::jobs::JobStore;
use keel_jobs::{JobRepository, Probe, PurgeFinishedJobs};
use keel_kernel::jobs::{JobFailure, NewJob};
use keel_kernel::{AppState, MissingService};

use crate::queue::Handlers;
use crate::schedules::Schedule;

/// Registers the probe and the purge.
pub fn register(handlers: Handlers, state: &AppState) -> Result<Handlers, MissingService> {
    let store = state.get::<JobStore>()?;
    Ok(handlers
        .register(|probe: Probe, context| async move {
            if probe.sleep_ms > 0 {
                tokio::time::sleep(Duration::from_millis(probe.sleep_ms)).await;
            }
            probe.outcome(context.attempt)
        })
        .register(move |job: PurgeFinishedJobs, _context| {
            let store = store.clone();
            async move {
                let purged = store
                    .purge_finished(job.finished_before)
                    .await
                    .map_err(JobFailure::transient)?;
                tracing::info!(purged, before = %job.finished_before, "finished jobs purged");
                Ok(())
            }
        }))
}

/// The hourly purge, at a minute unlikely to collide with other hourly work.
pub fn schedules(settings: &Settings) -> Vec<Schedule> {
    let retention =
        chrono::Duration::from_std(settings.jobs.retention).unwrap_or(chrono::Duration::days(7));
    vec![Schedule {
        name: "purge_finished_jobs",
        cron: "0 17 * * * *".to_owned(),
        make: Arc::new(move |tick| {
            NewJob::of(&PurgeFinishedJobs {
                finished_before: tick - retention,
            })
            .map_err(|e| e.to_string())
        }),
    }]
}
