//! The activity log's background jobs.

use chrono::{DateTime, Utc};
use keel_kernel::jobs::{Job, Queue};
use serde::{Deserialize, Serialize};

/// Deletes activity entries older than the retention (`activity.retention`): the
/// `purge_old_activity` schedule's job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurgeOldActivity {
    /// Entries created before this instant go.
    pub before: DateTime<Utc>,
}

impl Job for PurgeOldActivity {
    const KIND: &'static str = "activity.purge_old_entries";
    const QUEUE: Queue = Queue::Low;
}
