//! The `worker` process: the job queues, schedules and housekeeping, supervised, plus its own
//! health and metrics server.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use keel_api::ops_server;
use keel_config::{JobsSettings, Settings};
use keel_infrastructure::jobs::JobStore;
use keel_infrastructure::mail::{LettreMailer, MailDeliveries};
use keel_kernel::jobs::Queue;
use keel_kernel::mail::Mailer;
use keel_worker::Supervisor;
use keel_worker::queue::{Handlers, run_queue, run_relay, sample_queue_depth};
use keel_worker::schedules;
use keel_worker::wakeups::Wakeups;
use tokio_util::sync::CancellationToken;

use crate::background::Pools;
use crate::background::housekeeping;
use crate::startup::{bind, open_database_sized, readiness};

/// A built, not yet running, worker process.
pub struct WorkerApplication {
    supervisor: Supervisor,
    ops: actix_web::dev::Server,
    ops_port: u16,
    db: keel_infrastructure::DatabaseConnection,
}

impl std::fmt::Debug for WorkerApplication {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerApplication")
            .field("ops_port", &self.ops_port)
            .field("supervisor", &self.supervisor)
            .finish_non_exhaustive()
    }
}

impl WorkerApplication {
    /// Migrates (when `database.auto_migrate`), connects, binds `worker.host:worker.port` for
    /// health and metrics, and registers the background tasks.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let metrics = keel_telemetry::install_metrics()?;
        // On PostgreSQL the job notifications hold one connection of the pool for good
        // (`LISTEN`): one more than `database.max_connections`, so the queues keep theirs.
        let listener = u32::from(!settings.database.is_sqlite());
        let db = open_database_sized(
            &settings,
            "keel-worker",
            settings.database.max_connections.saturating_add(listener),
        )
        .await?;
        let mut health = readiness(&settings, &db);
        // With the queues in Redis, a worker that cannot reach it cannot work.
        if let Some(queues) = crate::state::job_queues(&settings).await? {
            health = health.with(Arc::new(queues));
        }
        let health_sampler = health.clone();
        let (listener, ops_port) = bind(
            &settings.worker.host,
            settings.worker.port,
            "worker.host, worker.port",
        )?;
        let ops = ops_server(
            listener,
            settings.worker.shutdown_timeout,
            health,
            metrics.clone(),
        )?;
        let mailer: Arc<dyn Mailer> = Arc::new(
            LettreMailer::new(&settings.mail).context("setting up mail delivery ([mail])")?,
        );
        let mut state = crate::state_builder(&db, &settings).await?;
        state.insert(mailer).insert(MailDeliveries::new(db.clone()));
        let state = state.build();
        let store = state.get::<JobStore>()?;
        let handlers = Arc::new(keel_worker::handlers(&state)?);
        let armed = schedules::arm(keel_worker::schedules(&settings), &settings.jobs)?;
        tracing::info!(kinds = ?handlers.kinds(), schedules = armed.len(), "job handlers registered");
        let supervisor = housekeeping(
            Supervisor::new(settings.worker.shutdown_timeout),
            Pools::new(db.clone(), settings.database.max_connections),
            metrics,
            health_sampler,
        );
        let supervisor = job_tasks(supervisor, &store, &handlers, &settings.jobs, armed);
        Ok(Self {
            supervisor,
            ops,
            ops_port,
            db,
        })
    }

    /// The port of the health and metrics server.
    pub fn ops_port(&self) -> u16 {
        self.ops_port
    }

    /// Runs until `shutdown` is cancelled: stops taking work, lets running work finish up to
    /// `worker.shutdown_timeout`, then stops the ops server and closes the pool.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        tracing::info!(ops_port = self.ops_port, "worker running");
        let ops_handle = self.ops.handle();
        let ops = tokio::spawn(self.ops);
        let result = self.supervisor.run(shutdown).await;
        ops_handle.stop(true).await;
        if let Ok(Err(error)) = ops.await {
            tracing::warn!(%error, "ops server failed");
        }
        Pools::new(self.db.clone(), 0).close().await;
        tracing::info!("worker stopped");
        match result {
            // Jobs still running at the deadline are abandoned, not lost: the heartbeat
            // recovery hands them to another worker. Stopping as asked is a clean exit.
            Err(keel_worker::WorkerError::ShutdownTimedOut { pending, .. }) => {
                tracing::warn!(
                    ?pending,
                    "work abandoned at the shutdown deadline will run again elsewhere"
                );
                Ok(())
            }
            other => other.context("stopping background tasks"),
        }
    }
}

/// Adds the queue workers, the outbox relay, the queue-depth gauge and the schedules.
fn job_tasks(
    mut supervisor: Supervisor,
    store: &JobStore,
    handlers: &Arc<Handlers>,
    settings: &JobsSettings,
    armed: Vec<schedules::Armed>,
) -> Supervisor {
    let wakeups = Wakeups::default();
    for queue in Queue::ALL {
        let name = match queue {
            Queue::High => "jobs-high",
            Queue::Default => "jobs-default",
            Queue::Low => "jobs-low",
        };
        let (store, handlers, settings, wakeups) = (
            store.clone(),
            Arc::clone(handlers),
            settings.clone(),
            wakeups.clone(),
        );
        supervisor = supervisor.task(name, move |token| {
            run_queue(
                store.clone(),
                Arc::clone(&handlers),
                queue,
                settings.clone(),
                wakeups.clone(),
                token,
            )
        });
    }
    // On PostgreSQL, commits wake the relay and the queues (LISTEN/NOTIFY).
    if let Some(pool) = store.postgres_pool() {
        let (pool, wakeups) = (pool.clone(), wakeups.clone());
        supervisor = supervisor.task("jobs-wakeups", move |token| {
            wakeups.clone().listen(pool.clone(), token)
        });
    }
    let (relay_store, relay_wakeups) = (store.clone(), wakeups.clone());
    let poll_interval = settings.poll_interval;
    let gauge_store = store.clone();
    supervisor = supervisor
        .task("jobs-outbox", move |token| {
            run_relay(
                relay_store.clone(),
                relay_wakeups.clone(),
                poll_interval,
                token,
            )
        })
        .periodic("jobs-queued-gauge", Duration::from_secs(5), move || {
            let store = gauge_store.clone();
            async move { sample_queue_depth(&store).await }
        });
    for schedule in armed {
        let store = store.clone();
        supervisor = supervisor.task(schedule.name(), move |token| {
            schedules::run(schedule.clone(), store.clone(), token)
        });
    }
    supervisor
}
