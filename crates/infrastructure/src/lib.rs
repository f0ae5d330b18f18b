//! Keel's infrastructure: sea-orm implementations of the domain ports, database connection
//! setup (SQLite by default, PostgreSQL by URL) and the migration runner.
//!
//! Domain crates define traits; this crate implements them. Nothing here decides a business
//! rule: repositories store and load, and apply the scope the domain hands them.

pub mod activity;
pub mod crud;
pub mod database;
pub mod error;
pub mod idempotency;
pub mod identity;
pub mod jobs;
pub mod listing;
pub mod mail;
pub mod migrate;
pub mod projects;
// keel:new-domain:modules

pub mod release_notes;
pub mod stores;
#[cfg(feature = "testing")]
pub mod testing;
pub mod unit_of_work;

pub use database::{DatabaseHealth, PoolStats, connect};
pub use error::InfraError;
pub use release_notes::SeaReleaseNoteRepository;
/// Re-exported so the composition root can hold a connection without depending on sea-orm.
pub use sea_orm::DatabaseConnection;
pub use unit_of_work::SeaUnitOfWork;
