//! Builds the application state the api and the worker share: the adapters configuration
//! chooses (Redis or memory for counters and cache), then every feature's services on them
//! (each feature's `register`, listed once in `keel_infrastructure`).

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use keel_config::Settings;
use keel_infrastructure::activity::SeaActivity;
use keel_infrastructure::http_client::ReqwestHttpClient;
use keel_infrastructure::idempotency::SeaIdempotencyStore;
use keel_infrastructure::jobs::{RedisQueues, SeaJobQueue};
use keel_infrastructure::mail_templates::FileTemplates;
use keel_infrastructure::storage::Storage;
use keel_infrastructure::stores::{MemoryCache, MemoryCounters, RedisStore};
use keel_infrastructure::{Adapters, DatabaseConnection, ProcessWide, SeaUnitOfWork};
use keel_kernel::http::HttpClient;
use keel_kernel::idempotency::IdempotencyStore;
use keel_kernel::mail::MailTemplates;
use keel_kernel::storage::ObjectStorage;
use keel_kernel::throttle::{Cache, Counters};
use keel_kernel::{AppState, AppStateBuilder, SystemClock};
use secrecy::ExposeSecret;

/// What every state of a process shares, connected once: the settings, Redis when
/// `redis.url` is set, the counters and cache on it (or in memory), the outbound HTTP client
/// (its circuits are per host, for the whole process), the mail templates (checked once), and
/// the process-wide
/// resources features keep one of per process (the password hasher's slots and memory).
///
/// An api on PostgreSQL builds one state per HTTP worker, each on that worker's own pool
/// ([`Foundation::state_on`]); everything here is shared by all of them.
#[derive(Clone)]
pub struct Foundation {
    settings: Arc<Settings>,
    redis: Option<RedisStore>,
    job_queues: Option<RedisQueues>,
    counters: Arc<dyn Counters>,
    cache: Arc<dyn Cache>,
    http: Arc<dyn HttpClient>,
    mail_templates: Arc<dyn MailTemplates>,
    storage: Storage,
    process: ProcessWide,
}

impl std::fmt::Debug for Foundation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Foundation")
            .field("redis", &self.redis.is_some())
            .finish_non_exhaustive()
    }
}

impl Foundation {
    /// Connects what configuration asks for (Redis, waiting for it up to a few seconds).
    pub async fn connect(settings: &Settings) -> anyhow::Result<Self> {
        let redis = match &settings.redis.url {
            Some(url) => Some(
                RedisStore::connect(url.expose_secret(), &settings.redis.key_prefix)
                    .await
                    .context("connecting to Redis (redis.url)")?,
            ),
            None => None,
        };
        let job_queues = job_queues(settings).await?;
        let (counters, cache): (Arc<dyn Counters>, Arc<dyn Cache>) = match &redis {
            Some(redis) => (Arc::new(redis.clone()), Arc::new(redis.clone())),
            None => (
                Arc::new(MemoryCounters::default()),
                Arc::new(MemoryCache::with_capacity(
                    settings
                        .cache
                        .memory_capacity_mib
                        .saturating_mul(1024 * 1024),
                )),
            ),
        };
        let http: Arc<dyn HttpClient> = Arc::new(
            ReqwestHttpClient::new(&settings.http_client)
                .context("building the outbound HTTP client (http_client)")?,
        );
        let mail_templates: Arc<dyn MailTemplates> = Arc::new(
            FileTemplates::load(Path::new(&settings.mail.templates_dir))
                .context("loading the mail templates (mail.templates_dir)")?,
        );
        let storage = Storage::new(settings).context("setting up object storage (storage)")?;
        Ok(Self {
            settings: Arc::new(settings.clone()),
            redis,
            job_queues,
            counters,
            cache,
            http,
            mail_templates,
            storage,
            process: ProcessWide::default(),
        })
    }

    /// Every feature's services on the pool `db`, ready for a process to add its own (the
    /// worker adds its mailer) before [`AppStateBuilder::build`].
    ///
    /// Besides the features' services, the state holds the shared `Arc<dyn Counters>`, the
    /// `Arc<dyn IdempotencyStore>`, the `Arc<dyn HttpClient>`, the [`Storage`] and, when
    /// `redis.url` is set, the [`RedisStore`].
    pub fn state_on(&self, db: &DatabaseConnection) -> anyhow::Result<AppStateBuilder> {
        let adapters = Adapters {
            db: db.clone(),
            settings: self.settings.clone(),
            // Inside a request with an Idempotency-Key, every transaction also marks the key's
            // claim as committed, atomically with the effect; elsewhere it is the plain one.
            unit_of_work: Arc::new(keel_api::idempotency::MarkingUnitOfWork(Arc::new(
                SeaUnitOfWork::new(db.clone()),
            ))),
            activity: Arc::new(SeaActivity::new(db.clone())),
            clock: Arc::new(SystemClock),
            jobs: Arc::new(SeaJobQueue),
            job_queues: self.job_queues.clone(),
            counters: self.counters.clone(),
            cache: self.cache.clone(),
            http: self.http.clone(),
            mail_templates: self.mail_templates.clone(),
            storage: Arc::new(self.storage.clone()),
            process: self.process.clone(),
        };
        let mut state = AppState::builder();
        keel_infrastructure::register_features(&adapters, &mut state)
            .map_err(|error| anyhow::anyhow!(error))
            .context("building the features' services")?;
        let idempotency: Arc<dyn IdempotencyStore> = Arc::new(SeaIdempotencyStore::new(db.clone()));
        state
            .insert(self.counters.clone())
            .insert(idempotency)
            .insert(self.http.clone())
            .insert(self.storage.clone())
            .insert(Arc::new(self.storage.clone()) as Arc<dyn ObjectStorage>);
        if let Some(redis) = &self.redis {
            state.insert(redis.clone());
        }
        Ok(state)
    }
}

/// The job queues in Redis when `jobs.backend = "redis"` (configuration checked that
/// `redis.url` is set).
pub async fn job_queues(settings: &Settings) -> anyhow::Result<Option<RedisQueues>> {
    match (&settings.jobs.backend, &settings.redis.url) {
        (keel_config::JobsBackend::Redis, Some(url)) => Ok(Some(
            RedisQueues::connect(
                url.expose_secret(),
                &settings.redis.key_prefix,
                settings.jobs.retention,
            )
            .await
            .context("connecting to Redis for the job queues (jobs.backend, redis.url)")?,
        )),
        _ => Ok(None),
    }
}

/// [`Foundation::connect`], then [`Foundation::state_on`] `db`.
pub async fn state_builder(
    db: &DatabaseConnection,
    settings: &Settings,
) -> anyhow::Result<AppStateBuilder> {
    Foundation::connect(settings).await?.state_on(db)
}

/// [`state_builder`], finished.
pub async fn build_state(db: &DatabaseConnection, settings: &Settings) -> anyhow::Result<AppState> {
    Ok(state_builder(db, settings).await?.build())
}

/// Keel's startup bookkeeping: the permission catalogue and system roles, then the
/// configured first administrator when none exists.
pub async fn prepare(state: &AppState, settings: &Settings) -> anyhow::Result<()> {
    let identity = state.get::<keel_identity::Identity>()?;
    let system = identity.for_system();
    system
        .sync_rbac(state.permissions())
        .await
        .map_err(keel_kernel::DomainError::from)
        .context("seeding roles and permissions")?;
    if let (Some(email), Some(password)) = (
        &settings.bootstrap.admin_email,
        &settings.bootstrap.admin_password,
    ) && let Some(admin) = system
        .bootstrap_admin(email, password.expose_secret())
        .await
        .map_err(keel_kernel::DomainError::from)
        .context("creating the bootstrap administrator (bootstrap.admin_email)")?
    {
        tracing::info!(user = %admin.id, email = %admin.email, "bootstrap administrator created");
    }
    Ok(())
}
