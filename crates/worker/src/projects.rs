//! Projects' job: the hourly sweep of attachment objects no row refers to (an upload whose
//! row was never written, a row whose object could not be deleted).

use std::sync::Arc;
use std::time::Duration;

use keel_config::Settings;
use keel_kernel::jobs::{JobFailure, NewJob};
use keel_kernel::{AppState, MissingService};
use keel_projects::attachments::{Attachments, PurgeOrphanedAttachments};

use crate::queue::Handlers;
use crate::schedules::Schedule;

/// How old an unreferenced object must be before it goes: far longer than any upload takes.
const GRACE: Duration = Duration::from_secs(60 * 60);

/// Registers the sweep.
pub fn register(handlers: Handlers, state: &AppState) -> Result<Handlers, MissingService> {
    let attachments = state.get::<Attachments>()?;
    Ok(
        handlers.register(move |job: PurgeOrphanedAttachments, _context| {
            let attachments = attachments.clone();
            async move {
                let purged = attachments
                    .purge_orphans(Duration::from_secs(job.grace_secs))
                    .await
                    .map_err(JobFailure::transient)?;
                tracing::info!(purged, "orphaned attachment objects removed");
                Ok(())
            }
        }),
    )
}

/// Hourly, at a minute no other schedule uses.
pub fn schedules(_: &Settings) -> Vec<Schedule> {
    vec![Schedule {
        name: "purge_orphaned_attachments",
        cron: "0 23 * * * *".to_owned(),
        make: Arc::new(|_| {
            NewJob::of(&PurgeOrphanedAttachments {
                grace_secs: GRACE.as_secs(),
            })
            .map_err(|e| e.to_string())
        }),
    }]
}
