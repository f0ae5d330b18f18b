//! Job states and records, and the two jobs this feature owns (the probe and the purge).

use std::time::Duration;

use chrono::{DateTime, Utc};
use keel_kernel::UserId;
use keel_kernel::jobs::{Job, JobFailure, JobId, Queue, RetryPolicy};
use serde::{Deserialize, Serialize};

/// Where a job is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Committed, not yet handed to the queue (no worker has picked it up).
    Enqueued,
    /// Waiting in its queue (or for its `run_at`).
    Pending,
    /// Claimed by a worker (running, or waiting out a retry backoff).
    Running,
    /// An attempt failed; it will be tried again.
    Retrying,
    /// Done.
    Succeeded,
    /// Out of attempts, or failed permanently: kept for inspection until purged or retried.
    Dead,
}

impl JobState {
    /// Every state.
    pub const ALL: [JobState; 6] = [
        JobState::Enqueued,
        JobState::Pending,
        JobState::Running,
        JobState::Retrying,
        JobState::Succeeded,
        JobState::Dead,
    ];

    /// Every state's name, in life order.
    pub const NAMES: &'static [&'static str] = &[
        "enqueued",
        "pending",
        "running",
        "retrying",
        "succeeded",
        "dead",
    ];

    /// The state's name.
    pub const fn as_str(self) -> &'static str {
        match self {
            JobState::Enqueued => "enqueued",
            JobState::Pending => "pending",
            JobState::Running => "running",
            JobState::Retrying => "retrying",
            JobState::Succeeded => "succeeded",
            JobState::Dead => "dead",
        }
    }

    /// Parses a state name.
    pub fn parse(name: &str) -> Option<JobState> {
        JobState::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// Whether the job will not run again unless retried by hand.
    pub const fn is_finished(self) -> bool {
        matches!(self, JobState::Succeeded | JobState::Dead)
    }
}

/// What operators and the job's owner see of a job.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct JobRecord {
    /// Its id.
    pub id: JobId,
    /// [`Job::KIND`].
    pub kind: String,
    /// Its queue.
    pub queue: Queue,
    /// Its state.
    pub state: JobState,
    /// Attempts made so far.
    pub attempts: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// The last attempt's error, if it failed.
    pub last_error: Option<String>,
    /// Who caused it.
    pub owner: Option<UserId>,
    /// The request that enqueued it.
    pub request_id: Option<String>,
    /// When it was enqueued.
    pub created_at: DateTime<Utc>,
    /// When it may run (next).
    pub run_at: Option<DateTime<Utc>>,
    /// When it finished.
    pub finished_at: Option<DateTime<Utc>>,
}

/// A diagnostic job operators enqueue to check the pipeline end to end (and to rehearse
/// failure handling): it sleeps, then fails its first `fail_attempts` attempts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probe {
    /// Attempts that fail before one succeeds.
    pub fail_attempts: u32,
    /// Fail permanently (dead at once) instead.
    pub permanent: bool,
    /// How long each attempt works before its outcome.
    pub sleep_ms: u64,
}

impl Job for Probe {
    const KIND: &'static str = "jobs.probe";

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 3,
            backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
            timeout: Duration::from_secs(60),
        }
    }
}

impl Probe {
    /// The outcome of attempt `attempt` (1-based).
    pub fn outcome(&self, attempt: u32) -> Result<(), JobFailure> {
        if self.permanent {
            Err(JobFailure::Permanent(
                "probe asked to fail permanently".to_owned(),
            ))
        } else if attempt <= self.fail_attempts {
            Err(JobFailure::Transient(format!(
                "probe failing attempt {attempt} of the first {}",
                self.fail_attempts
            )))
        } else {
            Ok(())
        }
    }
}

/// Deletes finished jobs older than the retention (`jobs.retention`): the `jobs.purge`
/// schedule's job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurgeFinishedJobs {
    /// Jobs finished before this instant go.
    pub finished_before: DateTime<Utc>,
}

impl Job for PurgeFinishedJobs {
    const KIND: &'static str = "jobs.purge";
    const QUEUE: Queue = Queue::Low;
}
