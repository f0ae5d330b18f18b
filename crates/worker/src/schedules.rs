//! Cron schedules declared in code, overridable by `jobs.schedules.<name>`. Every worker
//! replica runs the ticker; each tick's job carries the idempotency key `<name>@<tick>`, so
//! the queue keeps one job per tick however many replicas push it.

use std::str::FromStr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use keel_config::JobsSettings;
use keel_infrastructure::jobs::{DirectJob, JobStore};
use keel_kernel::jobs::NewJob;
use tokio_util::sync::CancellationToken;

use crate::TaskError;

/// Builds the job for one tick.
pub type MakeJob = Arc<dyn Fn(DateTime<Utc>) -> Result<NewJob, String> + Send + Sync>;

/// A recurring job.
#[derive(Clone)]
pub struct Schedule {
    /// Stable snake_case name, the key of its config override (no dots: environment
    /// variables could not name it).
    pub name: &'static str,
    /// Cron expression with seconds: `sec min hour day-of-month month day-of-week`.
    pub cron: String,
    /// The job each tick enqueues.
    pub make: MakeJob,
}

impl std::fmt::Debug for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Schedule")
            .field("name", &self.name)
            .field("cron", &self.cron)
            .finish_non_exhaustive()
    }
}

/// A schedule's cron expression does not parse.
#[derive(Debug, thiserror::Error)]
#[error("jobs.schedules.{name}.cron: `{cron}` is not a cron expression with seconds ({message})")]
pub struct ScheduleError {
    /// The schedule.
    pub name: String,
    /// The expression.
    pub cron: String,
    /// The parser's complaint.
    pub message: String,
}

/// A schedule ready to tick.
#[derive(Debug, Clone)]
pub struct Armed {
    schedule: Schedule,
    cron: cron::Schedule,
}

impl Armed {
    /// The schedule's name.
    pub fn name(&self) -> &'static str {
        self.schedule.name
    }
}

/// Applies the config overrides and parses every expression; disabled schedules are left out.
/// An override for a schedule nobody declared is an error too (a typo would silently do
/// nothing otherwise).
pub fn arm(schedules: Vec<Schedule>, settings: &JobsSettings) -> Result<Vec<Armed>, ScheduleError> {
    for name in settings.schedules.keys() {
        if !schedules.iter().any(|s| s.name == name) {
            return Err(ScheduleError {
                name: name.clone(),
                cron: String::new(),
                message: format!(
                    "no schedule has this name; known: {}",
                    schedules
                        .iter()
                        .map(|s| s.name)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
    }
    let mut armed = Vec::new();
    for mut schedule in schedules {
        let overrides = settings.schedules.get(schedule.name);
        if overrides.and_then(|o| o.enabled) == Some(false) {
            tracing::info!(
                schedule = schedule.name,
                "schedule disabled by configuration"
            );
            continue;
        }
        if let Some(cron) = overrides.and_then(|o| o.cron.clone()) {
            schedule.cron = cron;
        }
        let cron = cron::Schedule::from_str(&schedule.cron).map_err(|e| ScheduleError {
            name: schedule.name.to_owned(),
            cron: schedule.cron.clone(),
            message: e.to_string(),
        })?;
        armed.push(Armed { schedule, cron });
    }
    Ok(armed)
}

/// Ticks `armed` until cancelled, pushing one job per tick.
pub async fn run(armed: Armed, store: JobStore, token: CancellationToken) -> Result<(), TaskError> {
    let name = armed.schedule.name;
    loop {
        let Some(tick) = armed.cron.after(&Utc::now()).next() else {
            tracing::info!(schedule = name, "schedule has no further ticks");
            token.cancelled().await;
            return Ok(());
        };
        let wait = (tick - Utc::now()).to_std().unwrap_or_default();
        tokio::select! {
            biased;
            () = token.cancelled() => return Ok(()),
            () = tokio::time::sleep(wait) => {}
        }
        let job = (armed.schedule.make)(tick).map_err(TaskError)?;
        let direct = DirectJob {
            job,
            idempotency_key: Some(format!("{name}@{}", tick.timestamp())),
        };
        match store.push(direct).await {
            Ok(true) => tracing::info!(schedule = name, %tick, "schedule tick enqueued"),
            Ok(false) => {
                tracing::debug!(schedule = name, %tick, "tick already enqueued by another replica");
            }
            Err(error) => {
                tracing::warn!(schedule = name, %error, "could not enqueue the schedule tick");
            }
        }
    }
}
