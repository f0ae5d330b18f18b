//! The `worker` process: the job queues, schedules and housekeeping, supervised, plus its own
//! health and metrics server.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use keel_activity::Activity;
use keel_activity::jobs::PurgeOldActivity;
use keel_api::ops_server;
use keel_config::{JobsSettings, Settings};
use keel_identity::jobs::{PurgeExpiredCredentials, SendTokenMail};
use keel_infrastructure::jobs::JobStore;
use keel_infrastructure::mail::{LettreMailer, MailDeliveries};
use keel_kernel::idempotency::PurgeIdempotencyKeys;
use keel_kernel::jobs::{JobFailure, JobRepository, NewJob, Probe, PurgeFinishedJobs, Queue};
use keel_kernel::mail::{Delivery, Mailer, SendEmail, deliver_once};
use keel_worker::Supervisor;
use keel_worker::jobs::{Handlers, relay_outbox, run_queue, sample_queue_depth};
use keel_worker::schedules::{self, Schedule};
use tokio_util::sync::CancellationToken;

use crate::background::housekeeping;
use crate::startup::{bind, open_database, readiness};

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
        let db = open_database(&settings, "keel-worker").await?;
        let health = readiness(&settings, &db);
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
        let store = JobStore::new(&db);
        let mailer: Arc<dyn Mailer> = Arc::new(
            LettreMailer::new(&settings.mail).context("setting up mail delivery ([mail])")?,
        );
        let services = crate::services::Services::build(&db, &settings)
            .await
            .context("building the domain services")?;
        let handlers = Arc::new(handlers(
            &store,
            mailer,
            MailDeliveries::new(db.clone()),
            services.identity,
            services.activity,
            services.idempotency,
        ));
        let armed = schedules::arm(
            builtin_schedules(&settings.jobs, settings.activity.retention),
            &settings.jobs,
        )?;
        tracing::info!(kinds = ?handlers.kinds(), schedules = armed.len(), "job handlers registered");
        let supervisor = housekeeping(
            Supervisor::new(settings.worker.shutdown_timeout),
            db.clone(),
            metrics,
            settings.database.max_connections,
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
        if let Err(error) = self.db.close().await {
            tracing::warn!(%error, "closing the database pool failed");
        }
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

/// Every job handler this worker runs.
fn handlers(
    store: &JobStore,
    mailer: Arc<dyn Mailer>,
    deliveries: MailDeliveries,
    identity: keel_identity::Identity,
    activity: Activity,
    idempotency: Arc<dyn keel_kernel::idempotency::IdempotencyStore>,
) -> Handlers {
    let purge_store = store.clone();
    let token_mail_identity = identity.clone();
    let token_mailer = Arc::clone(&mailer);
    let token_deliveries = deliveries.clone();
    Handlers::default()
        .register(move |job: SendTokenMail, context| {
            let identity = token_mail_identity.clone();
            let mailer = Arc::clone(&token_mailer);
            let deliveries = token_deliveries.clone();
            async move {
                // A link that can no longer be derived (its pepper was removed) never will be.
                let mail = identity
                    .compose_token_mail(&job)
                    .map_err(JobFailure::permanent)?;
                let key = mail.dedupe_key.clone();
                if deliver_once(mailer.as_ref(), &deliveries, mail, context.id).await?
                    == Delivery::AlreadySent
                {
                    tracing::info!(dedupe_key = %key, "mail already sent; skipping");
                }
                Ok(())
            }
        })
        .register(move |job: PurgeExpiredCredentials, _context| {
            let identity = identity.clone();
            async move {
                let (sessions, tokens) = identity
                    .for_system()
                    .purge_expired_credentials(job.ended_before)
                    .await
                    .map_err(JobFailure::transient)?;
                tracing::info!(sessions, tokens, "expired credentials purged");
                Ok(())
            }
        })
        .register(move |job: SendEmail, context| {
            let mailer = Arc::clone(&mailer);
            let deliveries = deliveries.clone();
            async move {
                let key = job.dedupe_key.clone();
                if deliver_once(mailer.as_ref(), &deliveries, job, context.id).await?
                    == Delivery::AlreadySent
                {
                    tracing::info!(dedupe_key = %key, "mail already sent; skipping");
                }
                Ok(())
            }
        })
        .register(|probe: Probe, context| async move {
            if probe.sleep_ms > 0 {
                tokio::time::sleep(Duration::from_millis(probe.sleep_ms)).await;
            }
            probe.outcome(context.attempt)
        })
        .register(move |job: PurgeFinishedJobs, _context| {
            let store = purge_store.clone();
            async move {
                let purged = store
                    .purge_finished(job.finished_before)
                    .await
                    .map_err(JobFailure::transient)?;
                tracing::info!(purged, before = %job.finished_before, "finished jobs purged");
                Ok(())
            }
        })
        .register(move |job: PurgeOldActivity, _context| {
            let activity = activity.clone();
            async move {
                let purged = activity
                    .purge_older_than(&keel_kernel::auth::SYSTEM, job.before)
                    .await
                    .map_err(JobFailure::transient)?;
                tracing::info!(purged, before = %job.before, "old activity entries purged");
                Ok(())
            }
        })
        .register(move |job: PurgeIdempotencyKeys, _context| {
            let idempotency = Arc::clone(&idempotency);
            async move {
                let purged = idempotency
                    .purge(job.created_before)
                    .await
                    .map_err(JobFailure::transient)?;
                tracing::info!(purged, "expired idempotency keys purged");
                Ok(())
            }
        })
}

/// The schedules declared in code (overridable by `jobs.schedules.<name>`).
fn builtin_schedules(settings: &JobsSettings, activity_retention: Duration) -> Vec<Schedule> {
    let retention =
        chrono::Duration::from_std(settings.retention).unwrap_or(chrono::Duration::days(7));
    let activity_retention = chrono::Duration::from_std(activity_retention).ok();
    vec![
        Schedule {
            name: "purge_expired_credentials",
            cron: "0 */15 * * * *".to_owned(),
            // A day of grace: a session that just ended still explains recent activity.
            make: Arc::new(|tick| {
                NewJob::of(&PurgeExpiredCredentials {
                    ended_before: tick - chrono::Duration::days(1),
                })
                .map_err(|e| e.to_string())
            }),
        },
        Schedule {
            name: "purge_finished_jobs",
            // Hourly, at a minute unlikely to collide with other hourly work.
            cron: "0 17 * * * *".to_owned(),
            make: Arc::new(move |tick| {
                NewJob::of(&PurgeFinishedJobs {
                    finished_before: tick - retention,
                })
                .map_err(|e| e.to_string())
            }),
        },
        Schedule {
            name: "purge_old_activity",
            // Hourly, half an hour from the jobs purge so the two never contend for the lock.
            cron: "0 47 * * * *".to_owned(),
            make: Arc::new(move |tick| {
                let before = activity_retention
                    .and_then(|retention| tick.checked_sub_signed(retention))
                    .ok_or_else(|| "activity.retention is out of range".to_owned())?;
                NewJob::of(&PurgeOldActivity { before }).map_err(|e| e.to_string())
            }),
        },
        Schedule {
            name: "purge_idempotency_keys",
            // Hourly; keys answer retries for 24 h.
            cron: "0 31 * * * *".to_owned(),
            make: Arc::new(|tick| {
                let keep = chrono::Duration::from_std(keel_kernel::idempotency::RETENTION)
                    .unwrap_or(chrono::Duration::days(1));
                NewJob::of(&PurgeIdempotencyKeys {
                    created_before: tick - keep,
                })
                .map_err(|e| e.to_string())
            }),
        },
    ]
}

/// Adds the queue workers, the outbox relay, the queue-depth gauge and the schedules.
fn job_tasks(
    mut supervisor: Supervisor,
    store: &JobStore,
    handlers: &Arc<Handlers>,
    settings: &JobsSettings,
    armed: Vec<schedules::Armed>,
) -> Supervisor {
    for queue in Queue::ALL {
        let name = match queue {
            Queue::High => "jobs-high",
            Queue::Default => "jobs-default",
            Queue::Low => "jobs-low",
        };
        let (store, handlers, settings) = (store.clone(), Arc::clone(handlers), settings.clone());
        supervisor = supervisor.task(name, move |token| {
            run_queue(
                store.clone(),
                Arc::clone(&handlers),
                queue,
                settings.clone(),
                token,
            )
        });
    }
    let relay_store = store.clone();
    let gauge_store = store.clone();
    supervisor = supervisor
        .periodic("jobs-outbox", settings.poll_interval, move || {
            let store = relay_store.clone();
            async move { relay_outbox(&store).await.map(|_| ()) }
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
