//! The worker's run loop: supervised background tasks with restart and graceful shutdown.
//!
//! A [`Supervisor`] runs named tasks until a shutdown token is cancelled. A task that fails,
//! panics or returns early is restarted with exponential backoff (capped at a minute), so one
//! bad iteration never takes the process down. On shutdown every task gets the cancellation,
//! and the supervisor waits up to its deadline for them to finish their current work before
//! aborting the stragglers.

pub mod queue;
pub mod schedules;
pub mod wakeups;

/// Declares every module with jobs once: each has `register(Handlers, &AppState)` (its job
/// handlers, on services from the state) and `schedules(&Settings)` (its recurring jobs).
/// A feature without jobs is not listed.
macro_rules! features {
    ($($feature:ident),* $(,)?) => {
        $(pub mod $feature;)*

        /// Every job handler, on services from `state`.
        pub fn handlers(
            state: &keel_kernel::AppState,
        ) -> Result<queue::Handlers, keel_kernel::MissingService> {
            let handlers = queue::Handlers::default();
            $(let handlers = $feature::register(handlers, state)?;)*
            Ok(handlers)
        }

        /// Every schedule declared in code (overridable by `jobs.schedules.<name>`).
        pub fn schedules(settings: &keel_config::Settings) -> Vec<schedules::Schedule> {
            let mut all = Vec::new();
            $(all.extend($feature::schedules(settings));)*
            all
        }
    };
}

features! {
    mail,
    identity,
    jobs,
    activity,
    idempotency,
    projects,
    webhooks,
    realtime,
    // A feature with jobs adds its module here (generated domains have none).
}

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Longest pause between restarts of a failing task.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// A boxed, sendable task body.
pub type TaskFuture = Pin<Box<dyn Future<Output = Result<(), TaskError>> + Send>>;

type TaskFactory = Arc<dyn Fn(CancellationToken) -> TaskFuture + Send + Sync>;

/// A task's failure; the supervisor logs it and restarts the task.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TaskError(pub String);

impl TaskError {
    /// A failure described by any error.
    pub fn from_error(error: &dyn std::error::Error) -> Self {
        Self(error.to_string())
    }
}

/// Why the supervisor stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// Some tasks were still running when the shutdown deadline passed; they were aborted.
    #[error("shutdown deadline of {deadline:?} passed with tasks still running: {pending:?}")]
    ShutdownTimedOut {
        /// The deadline.
        deadline: Duration,
        /// Names of the aborted tasks.
        pending: Vec<&'static str>,
    },
}

struct Task {
    name: &'static str,
    factory: TaskFactory,
}

/// Runs background tasks until shutdown.
pub struct Supervisor {
    tasks: Vec<Task>,
    shutdown_timeout: Duration,
    initial_backoff: Duration,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor")
            .field(
                "tasks",
                &self.tasks.iter().map(|t| t.name).collect::<Vec<_>>(),
            )
            .field("shutdown_timeout", &self.shutdown_timeout)
            .finish()
    }
}

impl Supervisor {
    /// A supervisor that waits up to `shutdown_timeout` for tasks to stop.
    pub fn new(shutdown_timeout: Duration) -> Self {
        Self {
            tasks: Vec::new(),
            shutdown_timeout,
            initial_backoff: Duration::from_secs(1),
        }
    }

    /// Sets the first restart delay (doubled after each consecutive failure).
    #[must_use]
    pub fn with_initial_backoff(mut self, backoff: Duration) -> Self {
        self.initial_backoff = backoff;
        self
    }

    /// Adds a long-running task. It must return soon after its token is cancelled.
    #[must_use]
    pub fn task<F, Fut>(mut self, name: &'static str, run: F) -> Self
    where
        F: Fn(CancellationToken) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), TaskError>> + Send + 'static,
    {
        self.tasks.push(Task {
            name,
            factory: Arc::new(move |token| Box::pin(run(token))),
        });
        self
    }

    /// Adds a task that runs `tick` every `every` (first run immediately). A tick in progress
    /// at shutdown is allowed to finish.
    #[must_use]
    pub fn periodic<F, Fut>(self, name: &'static str, every: Duration, tick: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), TaskError>> + Send + 'static,
    {
        let tick = Arc::new(tick);
        self.task(name, move |token| {
            let tick = Arc::clone(&tick);
            async move {
                let mut interval = tokio::time::interval(every);
                interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        biased;
                        () = token.cancelled() => return Ok(()),
                        _ = interval.tick() => tick().await?,
                    }
                }
            }
        })
    }

    /// Runs every task until `shutdown` is cancelled, then waits for them up to the deadline.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), WorkerError> {
        let mut running = JoinSet::new();
        let mut names = HashMap::new();
        for task in self.tasks {
            tracing::info!(task = task.name, "background task started");
            let name = task.name;
            let handle = running.spawn(supervise(task, shutdown.clone(), self.initial_backoff));
            names.insert(handle.id(), name);
        }
        shutdown.cancelled().await;
        tracing::info!(
            deadline = ?self.shutdown_timeout,
            tasks = running.len(),
            "stopping background tasks"
        );
        let drained = tokio::time::timeout(self.shutdown_timeout, async {
            while let Some(finished) = running.join_next_with_id().await {
                let id = match &finished {
                    Ok((id, _)) => *id,
                    Err(error) => error.id(),
                };
                if let Some(name) = names.remove(&id) {
                    tracing::info!(task = name, "background task stopped");
                }
            }
        })
        .await;
        if drained.is_ok() {
            return Ok(());
        }
        running.abort_all();
        while running.join_next().await.is_some() {}
        let mut pending: Vec<&'static str> = names.into_values().collect();
        pending.sort_unstable();
        tracing::error!(
            ?pending,
            "background tasks aborted at the shutdown deadline"
        );
        Err(WorkerError::ShutdownTimedOut {
            deadline: self.shutdown_timeout,
            pending,
        })
    }
}

/// Runs one task, restarting it after failures, until shutdown. Returns the task's name.
async fn supervise(
    task: Task,
    shutdown: CancellationToken,
    initial_backoff: Duration,
) -> &'static str {
    let mut consecutive_failures: u32 = 0;
    loop {
        // Each attempt runs in its own tokio task so a panic is caught, not propagated.
        let attempt = tokio::spawn((task.factory)(shutdown.child_token()));
        let mut attempt = AbortOnDrop(attempt);
        let outcome = (&mut attempt.0).await;
        if shutdown.is_cancelled() {
            return task.name;
        }
        match outcome {
            Ok(Ok(())) => {
                tracing::warn!(
                    task = task.name,
                    "background task returned early; restarting"
                );
            }
            Ok(Err(error)) => {
                tracing::error!(task = task.name, %error, "background task failed; restarting");
            }
            Err(join_error) => {
                tracing::error!(task = task.name, error = %join_error, "background task panicked; restarting");
            }
        }
        consecutive_failures = consecutive_failures.saturating_add(1);
        let backoff = initial_backoff
            .saturating_mul(2u32.saturating_pow(consecutive_failures.saturating_sub(1).min(16)))
            .min(MAX_BACKOFF);
        tokio::select! {
            () = shutdown.cancelled() => return task.name,
            () = tokio::time::sleep(backoff) => {}
        }
    }
}

/// Aborts the attempt when the supervising future is dropped (for example on abort).
struct AbortOnDrop(tokio::task::JoinHandle<Result<(), TaskError>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test]
    async fn periodic_tasks_tick_until_shutdown() {
        let ticks = Arc::new(AtomicU32::new(0));
        let counter = Arc::clone(&ticks);
        let shutdown = CancellationToken::new();
        let supervisor = Supervisor::new(Duration::from_secs(5)).periodic(
            "counter",
            Duration::from_millis(10),
            move || {
                let counter = Arc::clone(&counter);
                async move {
                    counter.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                }
            },
        );
        let run = tokio::spawn(supervisor.run(shutdown.clone()));
        while ticks.load(Ordering::SeqCst) < 3 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        shutdown.cancel();
        run.await.unwrap().unwrap();
        let after_stop = ticks.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            ticks.load(Ordering::SeqCst),
            after_stop,
            "no tick after shutdown"
        );
    }

    #[tokio::test]
    async fn failing_and_panicking_tasks_are_restarted() {
        let attempts = Arc::new(AtomicU32::new(0));
        let counter = Arc::clone(&attempts);
        let shutdown = CancellationToken::new();
        let supervisor = Supervisor::new(Duration::from_secs(5))
            .with_initial_backoff(Duration::from_millis(1))
            .task("flaky", move |token| {
                let attempt = counter.fetch_add(1, Ordering::SeqCst);
                async move {
                    match attempt {
                        0 => Err(TaskError("first attempt fails".into())),
                        1 => panic!("second attempt panics"),
                        _ => {
                            token.cancelled().await;
                            Ok(())
                        }
                    }
                }
            });
        let run = tokio::spawn(supervisor.run(shutdown.clone()));
        while attempts.load(Ordering::SeqCst) < 3 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        shutdown.cancel();
        run.await.unwrap().unwrap();
        assert_eq!(attempts.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn running_work_finishes_and_stragglers_are_aborted_at_the_deadline() {
        let finished = Arc::new(AtomicU32::new(0));
        let done = Arc::clone(&finished);
        let shutdown = CancellationToken::new();
        let supervisor = Supervisor::new(Duration::from_millis(300))
            .task("graceful", move |token| {
                let done = Arc::clone(&done);
                async move {
                    token.cancelled().await;
                    // Finishing the current unit of work after the signal.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    done.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                }
            })
            .task("stubborn", |_token| async {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok(())
            });
        let run = tokio::spawn(supervisor.run(shutdown.clone()));
        tokio::time::sleep(Duration::from_millis(20)).await;
        shutdown.cancel();
        let result = run.await.unwrap();
        assert_eq!(finished.load(Ordering::SeqCst), 1);
        match result {
            Err(WorkerError::ShutdownTimedOut { pending, .. }) => assert_eq!(pending, ["stubborn"]),
            other => panic!("expected a shutdown timeout, got {other:?}"),
        }
    }
}

#[cfg(test)]
mod feature_tests {
    #[test]
    fn handlers_refuse_a_state_without_their_services() {
        let missing = crate::handlers(&keel_kernel::AppState::default())
            .err()
            .map(|e| e.to_string());
        assert!(
            missing.as_deref().is_some_and(|m| m.contains("Mailer")),
            "{missing:?}"
        );
    }
}
