//! The `api` process: the public HTTP server, the operations listener (`/health/*`,
//! `/metrics` on `ops.port`) and housekeeping tasks.

use actix_web::dev::Server;
/// Stops a running server (`stop(true)` drains in-flight requests first).
pub use actix_web::dev::ServerHandle;
use secrecy::ExposeSecret as _;
use std::sync::Arc;

use anyhow::Context as _;
use keel_api::server::WorkerState;
use keel_api::{HealthRegistry, api_server, ops_server};
use keel_config::Settings;
use keel_kernel::AppState;
use keel_telemetry::MetricsHandle;
use keel_worker::Supervisor;
use tokio_util::sync::CancellationToken;

use crate::background::{Pools, housekeeping};
use crate::startup::{bind, open_database_sized, readiness, trace_statements};
use crate::state::Foundation;

/// The api's own pool (startup, readiness probes, housekeeping) when each HTTP worker has its
/// own: nothing on the request path uses it.
const OWN_POOL_WHEN_PER_WORKER: u32 = 1;

/// Stops a running api gracefully (see [`ApiApplication::shutdown_handle`]).
#[derive(Clone)]
pub struct ShutdownHandle {
    server: ServerHandle,
    health: HealthRegistry,
    drain_delay: std::time::Duration,
}

impl std::fmt::Debug for ShutdownHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShutdownHandle")
            .field("drain_delay", &self.drain_delay)
            .finish_non_exhaustive()
    }
}

impl ShutdownHandle {
    /// Readiness 503 now, keep serving for the drain delay, then stop accepting and drain.
    pub async fn shutdown(&self) {
        self.health.start_draining();
        if !self.drain_delay.is_zero() {
            tracing::info!(drain_delay = ?self.drain_delay, "readiness is 503; still serving until the load balancer notices");
            tokio::time::sleep(self.drain_delay).await;
        }
        tracing::info!("draining in-flight requests");
        self.server.stop(true).await;
    }
}

/// A built, not yet running, api process.
pub struct ApiApplication {
    server: Server,
    port: u16,
    ops: Server,
    ops_port: u16,
    pools: Pools,
    metrics: MetricsHandle,
    health: HealthRegistry,
    settings: Settings,
    state: AppState,
}

impl std::fmt::Debug for ApiApplication {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiApplication")
            .field("port", &self.port)
            .field("ops_port", &self.ops_port)
            .finish_non_exhaustive()
    }
}

impl ApiApplication {
    /// Migrates (when `database.auto_migrate`), connects, binds the listener and builds the
    /// server. Fails fast, with a message naming the cause, on anything wrong.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let metrics = keel_telemetry::install_metrics()?;
        let per_worker = !settings.database.is_sqlite();
        let workers = keel_api::server::worker_count(&settings.server);
        // With a pool per worker, `database.max_connections` is shared out: one connection for
        // the process (startup, probes, housekeeping), the rest split evenly among the
        // workers, at least one each.
        let workers_u32 = u32::try_from(workers).unwrap_or(u32::MAX);
        let worker_pool = (settings
            .database
            .max_connections
            .saturating_sub(OWN_POOL_WHEN_PER_WORKER)
            / workers_u32)
            .max(1);
        let (own_pool, max_connections) = if per_worker {
            let all =
                OWN_POOL_WHEN_PER_WORKER.saturating_add(worker_pool.saturating_mul(workers_u32));
            if all > settings.database.max_connections {
                tracing::warn!(
                    max_connections = settings.database.max_connections,
                    workers,
                    opened = all,
                    "database.max_connections is below server.workers + 1: each HTTP worker still gets one connection"
                );
            }
            (OWN_POOL_WHEN_PER_WORKER, all)
        } else {
            let max = settings.database.max_connections;
            (max, max)
        };
        let db = open_database_sized(&settings, "keel-api", own_pool).await?;
        let foundation = Foundation::connect(&settings).await?;
        let state = foundation.state_on(&db)?.build();
        crate::state::prepare(&state, &settings).await?;
        let pools = Pools::new(db.clone(), max_connections);
        let per_worker = per_worker.then(|| {
            let (settings, pools) = (settings.clone(), pools.clone());
            let build: WorkerState = Arc::new(move || {
                let mut db =
                    keel_infrastructure::connect_lazy(&settings.database, "keel-api", worker_pool)?;
                trace_statements(&mut db, &settings);
                pools.add(db.clone());
                Ok(foundation.state_on(&db)?.build())
            });
            build
        });
        let mut health = readiness(&settings, &db);
        if let Ok(redis) = state.get::<keel_infrastructure::stores::RedisStore>() {
            health = health.with_optional(Arc::new(redis));
        }
        // Only attachments need it: a store that is away is reported, not a reason to take
        // the whole api out of the load balancer.
        if let Ok(storage) = state.get::<keel_infrastructure::storage::Storage>() {
            health = health.with_optional(Arc::new(storage));
        }
        let (listener, port) = bind(
            &settings.server.host,
            settings.server.port,
            "server.host, server.port",
        )?;
        let (ops_listener, ops_port) =
            bind(&settings.ops.host, settings.ops.port, "ops.host, ops.port")?;
        let ops = ops_server(
            ops_listener,
            settings.server.shutdown_timeout,
            health.clone(),
            metrics.clone(),
        )?;
        let server = api_server(
            listener,
            &settings,
            &state,
            per_worker,
            health.clone(),
            metrics.clone(),
        )?;
        Ok(Self {
            server,
            port,
            ops,
            ops_port,
            pools,
            metrics,
            health,
            settings,
            state,
        })
    }

    /// The application state on the process's own pool: the services requests use, sharing
    /// their caches (tests arrange data through it so the running api sees it at once).
    pub fn state(&self) -> AppState {
        self.state.clone()
    }

    /// The bound port (useful when `server.port` is 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The bound port of the operations listener (useful when `ops.port` is 0).
    pub fn ops_port(&self) -> u16 {
        self.ops_port
    }

    /// A handle that stops the server: `stop(true)` drains in-flight requests first.
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// A handle that stops the api the way SIGTERM does: readiness turns 503 at once,
    /// requests are served for `server.drain_delay`, then the listener closes and in-flight
    /// requests drain.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            server: self.server.handle(),
            health: self.health.clone(),
            drain_delay: self.settings.server.drain_delay,
        }
    }

    /// Serves until the server is stopped through its handle, then stops the operations
    /// listener and the background tasks and closes the pool.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        tracing::info!(
            port = self.port,
            ops_port = self.ops_port,
            environment = %self.settings.environment,
            "api listening"
        );
        let shutdown = CancellationToken::new();
        let background = housekeeping(
            Supervisor::new(self.settings.server.shutdown_timeout),
            self.pools.clone(),
            self.metrics.clone(),
            self.health.clone(),
        )
        .run(shutdown.clone());
        let background = tokio::spawn(background);

        // Beside the api server, and stopped after it: probes and scrapes keep answering while
        // the api drains.
        let ops_handle = self.ops.handle();
        let ops = tokio::spawn(self.ops);

        // Every replica's real-time events, from Redis onto this process's WebSockets.
        let relay = match (
            &self.settings.redis.url,
            self.state
                .get::<keel_infrastructure::realtime::RealtimeHub>(),
            self.state.get::<keel_infrastructure::stores::RedisStore>(),
        ) {
            (Some(url), Ok(hub), Ok(redis)) => Some(tokio::spawn(
                keel_infrastructure::realtime::relay_from_redis(
                    hub,
                    url.expose_secret().to_owned(),
                    redis.channel(keel_infrastructure::realtime::CHANNEL),
                ),
            )),
            _ => None,
        };

        let served = self.server.await;
        tracing::info!("http server stopped; in-flight requests drained");
        if let Some(relay) = relay {
            relay.abort();
        }
        ops_handle.stop(true).await;
        if let Ok(Err(error)) = ops.await {
            tracing::warn!(%error, "ops server failed");
        }
        shutdown.cancel();
        if let Ok(Err(error)) = background.await {
            tracing::warn!(%error, "background tasks did not stop cleanly");
        }
        self.pools.close().await;
        served.context("http server failed")
    }
}
