//! An in-memory [`JobRepository`] and a record factory, for unit tests here and in other
//! crates (the `testing` feature).

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use keel_kernel::jobs::{JobId, Queue};
use keel_kernel::{RepoError, UserId};

use crate::model::{JobFilter, JobRecord, JobState};
use crate::repository::JobRepository;

/// Jobs kept in a map by id (ids are UUIDv7, so the map is in enqueue order).
#[derive(Debug, Default)]
pub struct InMemoryJobRepository {
    jobs: Mutex<BTreeMap<JobId, JobRecord>>,
}

impl InMemoryJobRepository {
    /// Stores `job`, replacing one with the same id.
    pub fn put(&self, job: JobRecord) {
        self.lock().insert(job.id, job);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<JobId, JobRecord>> {
        // A test that panicked while holding the lock has already failed.
        self.jobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A job record in `state`, caused by `owner`.
pub fn record(owner: Option<UserId>, state: JobState) -> JobRecord {
    JobRecord {
        id: JobId::new(),
        kind: "test.job".to_owned(),
        queue: Queue::Default,
        state,
        attempts: u32::from(state != JobState::Pending),
        max_attempts: 3,
        last_error: None,
        owner,
        request_id: None,
        created_at: Utc::now(),
        run_at: None,
        finished_at: state.is_finished().then(Utc::now),
    }
}

#[async_trait]
impl JobRepository for InMemoryJobRepository {
    async fn get(&self, id: JobId) -> Result<Option<JobRecord>, RepoError> {
        Ok(self.lock().get(&id).cloned())
    }

    async fn list(&self, filter: &JobFilter) -> Result<(Vec<JobRecord>, u64), RepoError> {
        let jobs = self.lock();
        let matching: Vec<&JobRecord> = jobs
            .values()
            .rev()
            .filter(|j| filter.state.is_none_or(|s| j.state == s))
            .filter(|j| filter.queue.is_none_or(|q| j.queue == q))
            .filter(|j| filter.kind.as_ref().is_none_or(|k| &j.kind == k))
            .collect();
        let total = matching.len() as u64;
        let page = matching
            .into_iter()
            .skip(filter.offset as usize)
            .take(filter.limit as usize)
            .cloned()
            .collect();
        Ok((page, total))
    }

    async fn retry(&self, id: JobId) -> Result<bool, RepoError> {
        let mut jobs = self.lock();
        match jobs.get_mut(&id) {
            Some(job) if job.state == JobState::Dead => {
                job.state = JobState::Pending;
                job.attempts = 0;
                job.finished_at = None;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn delete(&self, id: JobId) -> Result<bool, RepoError> {
        let mut jobs = self.lock();
        if jobs.get(&id).is_some_and(|j| j.state.is_finished()) {
            jobs.remove(&id);
            return Ok(true);
        }
        Ok(false)
    }

    async fn purge_finished(&self, before: DateTime<Utc>) -> Result<u64, RepoError> {
        let mut jobs = self.lock();
        let old: Vec<JobId> = jobs
            .values()
            .filter(|j| j.state.is_finished() && j.finished_at.is_some_and(|at| at < before))
            .map(|j| j.id)
            .collect();
        for id in &old {
            jobs.remove(id);
        }
        Ok(old.len() as u64)
    }
}
