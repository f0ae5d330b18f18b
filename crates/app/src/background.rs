//! Background tasks every Keel process runs: metrics upkeep, pool and process gauges, and
//! readiness sampled into `health_check_up`.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use keel_api::HealthRegistry;
use keel_infrastructure::{DatabaseConnection, PoolStats};
use keel_telemetry::names::DB_POOL_CONNECTIONS;
use keel_telemetry::{MetricsHandle, ProcessMetrics};
use keel_worker::Supervisor;

/// How often pool and process gauges are sampled and histograms drained.
const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// Longest the pools may take to close at exit.
const CLOSE_WITHIN: Duration = Duration::from_secs(5);
/// How often readiness checks run for `health_check_up` (a database round trip each).
const HEALTH_EVERY: Duration = Duration::from_secs(15);

/// Every connection pool of a process: its own, plus one per HTTP worker when the api gives
/// each worker its own (PostgreSQL). The pool gauges add them up.
#[derive(Debug, Clone)]
pub struct Pools {
    all: Arc<Mutex<Vec<DatabaseConnection>>>,
    max_connections: u32,
}

impl Pools {
    /// The process's pool; `max_connections` is the most all pools together may open.
    pub fn new(main: DatabaseConnection, max_connections: u32) -> Self {
        Self {
            all: Arc::new(Mutex::new(vec![main])),
            max_connections,
        }
    }

    /// Adds a worker's pool.
    pub fn add(&self, db: DatabaseConnection) {
        self.all
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(db);
    }

    fn snapshot(&self) -> Vec<DatabaseConnection> {
        self.all
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Idle and in-use connections over every pool.
    pub fn stats(&self) -> Option<PoolStats> {
        self.snapshot()
            .iter()
            .filter_map(PoolStats::sample)
            .reduce(|a, b| PoolStats {
                idle: a.idle + b.idle,
                in_use: a.in_use + b.in_use,
            })
    }

    /// Closes every pool (after the servers have drained). A pool waits for its connections
    /// to come back; one still held after a few seconds is left to the exit.
    pub async fn close(&self) {
        for db in self.snapshot() {
            match tokio::time::timeout(CLOSE_WITHIN, db.close()).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::warn!(%error, "closing a database pool failed"),
                Err(_) => tracing::warn!(
                    within = ?CLOSE_WITHIN,
                    "a database pool still had connections in use; exiting without them"
                ),
            }
        }
    }
}

/// Adds the housekeeping tasks to a supervisor.
pub fn housekeeping(
    supervisor: Supervisor,
    pools: Pools,
    metrics: MetricsHandle,
    health: HealthRegistry,
) -> Supervisor {
    let process = std::sync::Arc::new(ProcessMetrics::new());
    supervisor
        .periodic("process-gauges", SAMPLE_EVERY, move || {
            let process = process.clone();
            async move {
                process.sample();
                Ok(())
            }
        })
        .periodic("health-gauges", HEALTH_EVERY, move || {
            let health = health.clone();
            async move {
                health.sample().await;
                Ok(())
            }
        })
        .periodic("metrics-upkeep", SAMPLE_EVERY, move || {
            let metrics = metrics.clone();
            async move {
                metrics.run_upkeep();
                Ok(())
            }
        })
        .periodic("db-pool-gauges", SAMPLE_EVERY, move || {
            let pools = pools.clone();
            async move {
                let max_connections = pools.max_connections;
                if let Some(stats) = pools.stats() {
                    metrics::gauge!(DB_POOL_CONNECTIONS, "state" => "idle")
                        .set(f64::from(stats.idle));
                    metrics::gauge!(DB_POOL_CONNECTIONS, "state" => "in_use")
                        .set(f64::from(stats.in_use));
                    metrics::gauge!(DB_POOL_CONNECTIONS, "state" => "max")
                        .set(f64::from(max_connections));
                }
                Ok(())
            }
        })
}
