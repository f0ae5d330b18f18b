//! The `worker` process: supervised background tasks plus its own health and metrics server.

use anyhow::Context as _;
use keel_api::ops_server;
use keel_config::Settings;
use keel_worker::Supervisor;
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
        let supervisor = housekeeping(
            Supervisor::new(settings.worker.shutdown_timeout),
            db.clone(),
            metrics,
            settings.database.max_connections,
        );
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
        result.context("stopping background tasks")
    }
}
