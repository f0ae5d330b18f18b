//! What every feature is built on: the database, settings and the shared adapters. The app
//! builds one [`Adapters`]; each feature's `register` builds its services on it and puts them
//! in the application state.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use keel_config::Settings;
use keel_kernel::activity::ActivityLog;
use keel_kernel::cache::{CacheAside, Flights};
use keel_kernel::http::HttpClient;
use keel_kernel::jobs::JobQueue;
use keel_kernel::mail::MailTemplates;
use keel_kernel::storage::ObjectStorage;
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
    /// The queues in Redis the outbox is relayed to, when `jobs.backend = "redis"`.
    pub job_queues: Option<crate::jobs::RedisQueues>,
    /// Expiring counters (memory, or Redis when configured).
    pub counters: Arc<dyn Counters>,
    /// The cache (memory, or Redis when configured).
    pub cache: Arc<dyn Cache>,
    /// Outbound HTTP to other services (retries, circuit per host, metrics; `[http_client]`).
    pub http: Arc<dyn HttpClient>,
    /// The mails' wording: built-in templates, overridden by files in `mail.templates_dir`.
    pub mail_templates: Arc<dyn MailTemplates>,
    /// Where files live (`[storage]`: a directory or an S3-compatible service).
    pub storage: Arc<dyn ObjectStorage>,
    /// What the process keeps one of, however many sets of services it builds.
    pub process: ProcessWide,
}

impl Adapters {
    /// The activity log as the port use cases write to.
    /// The process's real-time hub (topics, and the bus WebSocket connections listen on).
    pub fn realtime(&self) -> crate::realtime::RealtimeHub {
        let via_redis = self.settings.redis.url.is_some();
        self.process
            .get_or_try_init(|| {
                Ok::<_, std::convert::Infallible>(crate::realtime::RealtimeHub::new(via_redis))
            })
            .unwrap_or_else(|never| match never {})
    }

    pub fn activity_log(&self) -> Arc<dyn ActivityLog> {
        let subscriptions = self
            .process
            .get_or_try_init(|| {
                Ok::<_, std::convert::Infallible>(Arc::new(
                    crate::webhooks::Subscriptions::default(),
                ))
            })
            .unwrap_or_else(|never| match never {});
        Arc::new(crate::webhooks::PublishingActivity {
            log: self.activity.clone(),
            endpoints: Arc::new(crate::webhooks::SeaOutbound::new(self.db.clone())),
            jobs: self.jobs.clone(),
            subscriptions,
            realtime: self.realtime(),
        })
    }

    /// A read-through cache for the feature `space` on the shared cache, configured by
    /// `[cache]`; its single-flight loads are shared by the whole process.
    pub fn cache_aside(&self, space: &'static str) -> CacheAside {
        let flights = self
            .process
            .get_or_try_init(|| Ok::<_, std::convert::Infallible>(Flights::default()))
            .unwrap_or_else(|never| match never {});
        CacheAside::new(self.cache.clone(), flights, space)
            .ttl(self.settings.cache.ttl)
            .enabled(self.settings.cache.enabled)
    }
}

/// Resources a process keeps one of however many states it builds (an api on PostgreSQL
/// builds one per HTTP worker, each on its own pool): a bound on concurrent work, memory kept
/// for reuse, an in-process cache. A feature asks for its resource by type; the first ask
/// creates it, later ones share it.
#[derive(Clone, Default)]
pub struct ProcessWide(Arc<Mutex<HashMap<TypeId, Arc<dyn Any + Send + Sync>>>>);

impl std::fmt::Debug for ProcessWide {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProcessWide")
    }
}

impl ProcessWide {
    /// The process's `T`, created by `init` on first use.
    pub fn get_or_try_init<T, E>(&self, init: impl FnOnce() -> Result<T, E>) -> Result<T, E>
    where
        T: Clone + Send + Sync + 'static,
    {
        // Held across `init` so two states built at once cannot create two.
        let mut resources = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(existing) = resources
            .get(&TypeId::of::<T>())
            .and_then(|r| r.downcast_ref::<T>())
        {
            return Ok(existing.clone());
        }
        let created = init()?;
        resources.insert(TypeId::of::<T>(), Arc::new(created.clone()));
        Ok(created)
    }
}

/// A feature's services could not be built: the message names the configuration key at fault.
pub type RegisterError = Box<dyn std::error::Error + Send + Sync>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_wide_resource_is_created_once_and_shared() {
        let process = ProcessWide::default();
        let first = process
            .get_or_try_init(|| Ok::<_, ()>(Arc::new(Mutex::new(1))))
            .unwrap();
        let second = process
            .clone()
            .get_or_try_init(|| Ok::<_, ()>(Arc::new(Mutex::new(2))))
            .unwrap();
        assert!(
            Arc::ptr_eq(&first, &second),
            "the second ask shares the first"
        );
        let failed = ProcessWide::default().get_or_try_init::<Arc<u8>, _>(|| Err("no"));
        assert_eq!(failed.err(), Some("no"));
    }
}
