//! The storage port of the activity log (writes go through the kernel's `ActivityLog`).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use keel_kernel::{ListQuery, Page, RepoError};

use crate::model::ActivityEntry;
use crate::policy::ActivityScope;

/// Reads activity entries.
#[async_trait]
pub trait ActivityRepository: Send + Sync + std::fmt::Debug {
    /// One page of the entries `scope` allows.
    async fn list(
        &self,
        scope: ActivityScope,
        query: &ListQuery,
    ) -> Result<Page<ActivityEntry>, RepoError>;

    /// Deletes up to `limit` of the oldest entries created before `before`, in one short
    /// statement; returns how many went.
    async fn purge_batch(&self, before: DateTime<Utc>, limit: u64) -> Result<u64, RepoError>;
}
