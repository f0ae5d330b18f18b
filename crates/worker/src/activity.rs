//! The activity log's job: the purge of entries older than `activity.retention`.

use std::sync::Arc;

use keel_activity::Activity;
use keel_activity::jobs::PurgeOldActivity;
use keel_config::Settings;
use keel_kernel::jobs::{JobFailure, NewJob};
use keel_kernel::{AppState, MissingService};

use crate::queue::Handlers;
use crate::schedules::Schedule;

/// Registers the activity purge.
pub fn register(handlers: Handlers, state: &AppState) -> Result<Handlers, MissingService> {
    let activity = state.get::<Activity>()?;
    Ok(handlers.register(move |job: PurgeOldActivity, _context| {
        let activity = activity.clone();
        async move {
            let purged = activity
                .for_caller(&keel_kernel::auth::SYSTEM)
                .purge_older_than(job.before)
                .await
                .map_err(JobFailure::transient)?;
            tracing::info!(purged, before = %job.before, "old activity entries purged");
            Ok(())
        }
    }))
}

/// The hourly purge, half an hour from the jobs purge so the two never contend for the lock.
pub fn schedules(settings: &Settings) -> Vec<Schedule> {
    let retention = chrono::Duration::from_std(settings.activity.retention).ok();
    vec![Schedule {
        name: "purge_old_activity",
        cron: "0 47 * * * *".to_owned(),
        make: Arc::new(move |tick| {
            let before = retention
                .and_then(|retention| tick.checked_sub_signed(retention))
                .ok_or_else(|| "activity.retention is out of range".to_owned())?;
            NewJob::of(&PurgeOldActivity { before }).map_err(|e| e.to_string())
        }),
    }]
}
