//! Steps every Keel process takes before it serves: migrate, connect, check, bind.

use std::net::TcpListener;
use std::sync::Arc;

use anyhow::Context as _;
use keel_api::HealthRegistry;
use keel_config::Settings;
use keel_infrastructure::{DatabaseConnection, DatabaseHealth, migrate};

/// Applies pending migrations when `database.auto_migrate` is on (guarded against concurrent
/// processes), then opens the connection pool named `application_name`.
pub(crate) async fn open_database(
    settings: &Settings,
    application_name: &str,
) -> anyhow::Result<DatabaseConnection> {
    open_database_sized(
        settings,
        application_name,
        settings.database.max_connections,
    )
    .await
}

/// [`open_database`] with a pool of at most `max_connections`.
pub(crate) async fn open_database_sized(
    settings: &Settings,
    application_name: &str,
    max_connections: u32,
) -> anyhow::Result<DatabaseConnection> {
    if settings.database.auto_migrate {
        let applied = migrate::apply_pending(&settings.database)
            .await
            .context("applying migrations at startup")?;
        for name in &applied {
            tracing::info!(migration = %name, "migration applied");
        }
    }
    let mut db = keel_infrastructure::database::connect_with_pool_size(
        &settings.database,
        application_name,
        max_connections,
    )
    .await
    .context("connecting to the database")?;
    trace_statements(&mut db, settings);
    Ok(db)
}

/// Every statement on `db` becomes a span under the request or job that ran it (free unless
/// the trace is being recorded).
pub(crate) fn trace_statements(db: &mut DatabaseConnection, settings: &Settings) {
    let system = if settings.database.is_sqlite() {
        "sqlite"
    } else {
        "postgresql"
    };
    db.set_metric_callback(move |info| {
        keel_telemetry::traces::record_db_statement(
            system,
            &info.statement.sql,
            info.elapsed,
            info.failed,
        );
    });
}

/// The readiness checks of a process using `db`.
pub(crate) fn readiness(settings: &Settings, db: &DatabaseConnection) -> HealthRegistry {
    HealthRegistry::new(settings.health.check_timeout)
        .with(Arc::new(DatabaseHealth::new(db.clone())))
}

/// Binds `host:port`; `keys` names the configuration keys in the error message.
pub(crate) fn bind(host: &str, port: u16, keys: &str) -> anyhow::Result<(TcpListener, u16)> {
    let listener = TcpListener::bind((host, port))
        .with_context(|| format!("binding {host}:{port} ({keys})"))?;
    let port = listener.local_addr()?.port();
    Ok((listener, port))
}
