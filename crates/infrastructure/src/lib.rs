//! Keel's infrastructure: sea-orm implementations of the domain ports, database connection
//! setup (SQLite by default, PostgreSQL by URL), the migration runner, and each feature's
//! wiring (`<feature>::register`).
//!
//! Domain crates define traits; this crate implements them. Nothing here decides a business
//! rule: repositories store and load, and apply the scope the domain hands them.

pub mod adapters;
pub mod crud;
pub mod database;
pub mod error;
pub mod http_client;
pub mod idempotency;
pub mod listing;
pub mod mail;
pub mod mail_templates;
pub mod migrate;
pub mod storage;
pub mod stores;
#[cfg(feature = "testing")]
pub mod testing;
pub mod unit_of_work;

pub use adapters::{Adapters, ProcessWide, RegisterError};
pub use database::{DatabaseHealth, PoolStats, connect, connect_lazy};
pub use error::InfraError;
/// Re-exported so the composition root can hold a connection without depending on sea-orm.
pub use sea_orm::DatabaseConnection;
pub use unit_of_work::SeaUnitOfWork;

/// Declares every feature's infrastructure module once; each has
/// `register(&Adapters, &mut AppStateBuilder)`, and [`register_features`] calls them in order.
macro_rules! features {
    ($($feature:ident),* $(,)?) => {
        $(pub mod $feature;)*

        /// Builds every feature's services on `adapters` and registers them, with their
        /// permissions, in `state`.
        pub fn register_features(
            adapters: &Adapters,
            state: &mut keel_kernel::AppStateBuilder,
        ) -> Result<(), RegisterError> {
            $($feature::register(adapters, state)?;)*
            Ok(())
        }
    };
}

features! {
    identity,
    activity,
    release_notes,
    projects,
    jobs,
    webhooks,
    realtime,
    // keel:new-domain:features
}
