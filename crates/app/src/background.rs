//! Background tasks every Keel process runs: metrics upkeep, pool and process gauges, and
//! readiness sampled into `health_check_up`.

use std::time::Duration;

use keel_api::HealthRegistry;
use keel_infrastructure::{DatabaseConnection, PoolStats};
use keel_telemetry::names::DB_POOL_CONNECTIONS;
use keel_telemetry::{MetricsHandle, ProcessMetrics};
use keel_worker::Supervisor;

/// How often pool and process gauges are sampled and histograms drained.
const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// How often readiness checks run for `health_check_up` (a database round trip each).
const HEALTH_EVERY: Duration = Duration::from_secs(15);

/// Adds the housekeeping tasks to a supervisor.
pub fn housekeeping(
    supervisor: Supervisor,
    db: DatabaseConnection,
    metrics: MetricsHandle,
    max_connections: u32,
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
            let db = db.clone();
            async move {
                if let Some(stats) = PoolStats::sample(&db) {
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
