//! Identity's background jobs.

use chrono::{DateTime, Utc};
use keel_kernel::jobs::{Job, Queue};
use serde::{Deserialize, Serialize};

/// Deletes credentials nobody can use any more: sessions (with their refresh tokens) that
/// ended, and reset/verification tokens that expired or were used. Scheduled every 15 min.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurgeExpiredCredentials {
    /// Credentials that ended before this instant go.
    pub ended_before: DateTime<Utc>,
}

impl Job for PurgeExpiredCredentials {
    const KIND: &'static str = "identity.purge_expired_credentials";
    const QUEUE: Queue = Queue::Low;
}
