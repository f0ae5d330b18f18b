//! What every feature is built on: the database, settings and the shared adapters. The app
//! builds one [`Adapters`]; each feature's `register` builds its services on it and puts them
//! in the application state.

use std::sync::Arc;

use keel_config::Settings;
use keel_kernel::activity::ActivityLog;
use keel_kernel::jobs::JobQueue;
use keel_kernel::throttle::{Cache, Counters};
use keel_kernel::{Clock, UnitOfWork};
use sea_orm::DatabaseConnection;

use crate::activity::SeaActivity;

/// The shared adapters a feature's services are built on.
#[derive(Debug, Clone)]
pub struct Adapters {
    /// The connection pool.
    pub db: DatabaseConnection,
    /// The whole configuration (a feature reads its own section).
    pub settings: Arc<Settings>,
    /// Transactions (the api wraps them to mark `Idempotency-Key` claims on commit).
    pub unit_of_work: Arc<dyn UnitOfWork>,
    /// The activity log's store: use cases append to it in their transaction.
    pub activity: Arc<SeaActivity>,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// The outbox use cases enqueue jobs into.
    pub jobs: Arc<dyn JobQueue>,
    /// Expiring counters (memory, or Redis when configured).
    pub counters: Arc<dyn Counters>,
    /// The cache (memory, or Redis when configured).
    pub cache: Arc<dyn Cache>,
}

impl Adapters {
    /// The activity log as the port use cases write to.
    pub fn activity_log(&self) -> Arc<dyn ActivityLog> {
        self.activity.clone()
    }
}

/// A feature's services could not be built: the message names the configuration key at fault.
pub type RegisterError = Box<dyn std::error::Error + Send + Sync>;
