//! Throwaway databases for tests: a fresh SQLite file by default, or a fresh PostgreSQL
//! database on the server named by `TEST_DATABASE_URL` (e.g.
//! `postgres://postgres@127.0.0.1:5432/postgres`). Each test gets its own, so tests run in
//! parallel; the database is dropped when the value is.

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection};

/// The variable naming the PostgreSQL server to test against.
pub const TEST_DATABASE_URL: &str = "TEST_DATABASE_URL";

/// Prefix of every test database name; leftovers older than an hour are dropped.
const PREFIX: &str = "keel_test_";

/// A database that exists for one test.
#[derive(Debug)]
pub struct TestDatabase {
    url: String,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Sqlite { _dir: tempfile::TempDir },
    Postgres { admin_url: String, name: String },
    Borrowed,
}

/// Why a test database could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TestDatabaseError {
    /// The temporary directory could not be created.
    #[error("cannot create a temporary directory: {0}")]
    TempDir(#[from] std::io::Error),
    /// `TEST_DATABASE_URL` is not a usable URL.
    #[error("TEST_DATABASE_URL is not a postgres:// URL: {0}")]
    BadUrl(String),
    /// The PostgreSQL server refused.
    #[error("cannot create a test database on the TEST_DATABASE_URL server: {0}")]
    Postgres(#[from] sea_orm::DbErr),
}

impl TestDatabase {
    /// A fresh, empty database: PostgreSQL when `TEST_DATABASE_URL` is set, else SQLite.
    pub async fn create() -> Result<Self, TestDatabaseError> {
        match std::env::var(TEST_DATABASE_URL)
            .ok()
            .filter(|u| !u.is_empty())
        {
            Some(admin_url) => Self::postgres(admin_url).await,
            None => Self::sqlite(),
        }
    }

    /// A fresh SQLite database file in a temporary directory.
    pub fn sqlite() -> Result<Self, TestDatabaseError> {
        let dir = tempfile::tempdir()?;
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("keel.db").display());
        Ok(Self {
            url,
            kind: Kind::Sqlite { _dir: dir },
        })
    }

    async fn postgres(admin_url: String) -> Result<Self, TestDatabaseError> {
        let mut url =
            url::Url::parse(&admin_url).map_err(|e| TestDatabaseError::BadUrl(e.to_string()))?;
        if !matches!(url.scheme(), "postgres" | "postgresql") {
            return Err(TestDatabaseError::BadUrl(url.scheme().to_owned()));
        }
        let admin = admin_connection(&admin_url).await?;
        static CLEANED: OnceLock<()> = OnceLock::new();
        if CLEANED.set(()).is_ok() {
            drop_stale_databases(&admin).await;
        }
        let name = format!(
            "{PREFIX}{}_{}",
            unix_seconds(),
            uuid::Uuid::new_v4().simple()
        );
        admin
            .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
            .await?;
        admin.close().await.ok();
        url.set_path(&format!("/{name}"));
        Ok(Self {
            url: url.to_string(),
            kind: Kind::Postgres { admin_url, name },
        })
    }

    /// Another handle on an existing database (a second replica in a test); dropping it
    /// drops nothing.
    pub fn existing(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            kind: Kind::Borrowed,
        }
    }

    /// The database URL, for `database.url`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether this is a PostgreSQL database.
    pub fn is_postgres(&self) -> bool {
        self.url.starts_with("postgres")
    }

    /// Drops the PostgreSQL database now, killing its connections (to simulate an outage).
    pub async fn drop_now(&self) -> Result<(), TestDatabaseError> {
        if let Kind::Postgres { admin_url, name } = &self.kind {
            let admin = admin_connection(admin_url).await?;
            admin
                .execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .await?;
            admin.close().await.ok();
        }
        Ok(())
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Kind::Postgres { admin_url, name } = &self.kind else {
            return;
        };
        let (admin_url, name) = (admin_url.clone(), name.clone());
        // Drop runs outside any runtime (or inside one that must not block): use a thread.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let admin = admin_connection(&admin_url).await?;
                admin
                    .execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                    .await?;
                admin.close().await.ok();
                Ok::<(), TestDatabaseError>(())
            })
        })
        .join();
        if let Ok(Err(error)) = dropped {
            tracing::warn!(%error, "could not drop a test database");
        }
    }
}

async fn admin_connection(admin_url: &str) -> Result<DatabaseConnection, sea_orm::DbErr> {
    let mut options = ConnectOptions::new(admin_url.to_owned());
    options.max_connections(1).sqlx_logging(false);
    Database::connect(options).await
}

fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Databases left behind by killed test runs, older than an hour, are dropped.
async fn drop_stale_databases(admin: &DatabaseConnection) {
    let Ok(rows) = admin
        .query_all_raw(sea_orm::Statement::from_string(
            admin.get_database_backend(),
            format!("SELECT datname FROM pg_database WHERE datname LIKE '{PREFIX}%'"),
        ))
        .await
    else {
        return;
    };
    let cutoff = unix_seconds().saturating_sub(3600);
    for row in rows {
        let Ok(name) = row.try_get::<String>("", "datname") else {
            continue;
        };
        let created = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('_').next())
            .and_then(|secs| secs.parse::<u64>().ok());
        if created.is_some_and(|secs| secs < cutoff) {
            let _ = admin
                .execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .await;
        }
    }
}
