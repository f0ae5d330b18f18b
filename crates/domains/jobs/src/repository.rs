//! The storage port of the job admin.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use keel_kernel::jobs::JobId;
use keel_kernel::{ListQuery, Page, RepoError};

use crate::model::JobRecord;

/// Reads and manages stored jobs (operations, not enqueueing).
#[async_trait]
pub trait JobRepository: Send + Sync + std::fmt::Debug {
    /// One job, wherever it is (outbox or queue).
    async fn get(&self, id: JobId) -> Result<Option<JobRecord>, RepoError>;
    /// A page of jobs as `query` asks (checked against [`crate::LIST_SPEC`]), with the total
    /// matching.
    async fn list(&self, query: &ListQuery) -> Result<Page<JobRecord>, RepoError>;
    /// Puts a dead job back in its queue with fresh attempts; `false` when it is not dead.
    async fn retry(&self, id: JobId) -> Result<bool, RepoError>;
    /// Deletes a finished job; `false` when it is absent or not finished.
    async fn delete(&self, id: JobId) -> Result<bool, RepoError>;
    /// Deletes finished jobs older than `before`; returns how many.
    async fn purge_finished(&self, before: DateTime<Utc>) -> Result<u64, RepoError>;
}
