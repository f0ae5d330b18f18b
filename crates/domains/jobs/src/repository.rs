//! The storage port of the job admin.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use keel_kernel::RepoError;
use keel_kernel::jobs::JobId;

use crate::model::{JobFilter, JobRecord};

/// Reads and manages stored jobs (operations, not enqueueing).
#[async_trait]
pub trait JobRepository: Send + Sync + std::fmt::Debug {
    /// One job, wherever it is (outbox or queue).
    async fn get(&self, id: JobId) -> Result<Option<JobRecord>, RepoError>;
    /// A page of jobs, newest first, and the total matching.
    async fn list(&self, filter: &JobFilter) -> Result<(Vec<JobRecord>, u64), RepoError>;
    /// Puts a dead job back in its queue with fresh attempts; `false` when it is not dead.
    async fn retry(&self, id: JobId) -> Result<bool, RepoError>;
    /// Deletes a finished job; `false` when it is absent or not finished.
    async fn delete(&self, id: JobId) -> Result<bool, RepoError>;
    /// Deletes finished jobs older than `before`; returns how many.
    async fn purge_finished(&self, before: DateTime<Utc>) -> Result<u64, RepoError>;
}
