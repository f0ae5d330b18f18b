//! An in-memory [`JobRepository`] and a record factory, for unit tests here and in other
//! crates (the `testing` feature).

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use keel_kernel::jobs::{JobId, Queue};
use keel_kernel::query::{Direction, FilterOp, Position, Value};
use keel_kernel::{ListQuery, Page, RepoError, UserId};

use crate::model::{JobRecord, JobState};
use crate::policy::cursor_values;
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

    async fn list(&self, query: &ListQuery) -> Result<Page<JobRecord>, RepoError> {
        let jobs = self.lock();
        let descending = query
            .sort
            .first()
            .is_some_and(|key| key.direction == Direction::Desc);
        let mut matching: Vec<&JobRecord> = jobs
            .values()
            .filter(|job| query.filters.iter().all(|f| matches(job, f.field, &f.op)))
            .collect();
        if descending {
            matching.reverse();
        }
        let total = matching.len() as u64;
        let after = match &query.position {
            Position::After(cursor) => match cursor.values.last() {
                Some(Value::Uuid(id)) => Some(JobId::from_uuid(*id)),
                _ => None,
            },
            Position::Offset(_) => None,
        };
        let skip = usize::try_from(query.offset().unwrap_or(0)).unwrap_or(usize::MAX);
        let window: Vec<JobRecord> = matching
            .into_iter()
            .filter(|job| after.is_none_or(|a| if descending { job.id < a } else { job.id > a }))
            .skip(skip)
            .take(query.limit as usize + 1)
            .cloned()
            .collect();
        Page::of_window(window, query, total, |last| {
            Ok::<_, RepoError>(cursor_values(last).to_vec())
        })
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

/// The values of [`crate::LIST_SPEC`]'s fields on `job`, as the SQL adapter compares them.
fn value_of(job: &JobRecord, field: &str) -> Option<Value> {
    Some(match field {
        "state" => Value::Text(job.state.as_str().to_owned()),
        "queue" => Value::Text(job.queue.as_str().to_owned()),
        "kind" => Value::Text(job.kind.clone()),
        "created_at" => Value::Timestamp(job.created_at),
        _ => return None,
    })
}

fn matches(job: &JobRecord, field: &str, op: &FilterOp) -> bool {
    let Some(value) = value_of(job, field) else {
        return false;
    };
    match op {
        FilterOp::Eq(wanted) => value == *wanted,
        FilterOp::In(wanted) => wanted.contains(&value),
        // The spec allows no range filter on jobs.
        FilterOp::Gte(_) | FilterOp::Lte(_) => false,
    }
}
