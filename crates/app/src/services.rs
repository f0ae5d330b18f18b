//! Builds the domain services on the infrastructure adapters chosen by configuration.

use std::sync::Arc;

use anyhow::Context as _;
use keel_activity::Activity;
use keel_config::Settings;
use keel_identity::password::PasswordPolicy;
use keel_identity::{Identity, IdentityPorts, IdentitySettings};
use keel_infrastructure::activity::SeaActivity;
use keel_infrastructure::crud::SeaCrud;
use keel_infrastructure::identity::{Argon2Hasher, HmacSecrets, JwtTokens, SeaIdentityStore};
use keel_infrastructure::jobs::{JobStore, SeaJobQueue};
use keel_infrastructure::projects::SeaProjectReports;
use keel_infrastructure::stores::{MemoryCache, MemoryCounters, RedisStore};
use keel_infrastructure::{DatabaseConnection, SeaReleaseNoteRepository, SeaUnitOfWork};
use keel_kernel::throttle::{Cache, Counters};
use keel_kernel::{PermissionDef, SystemClock};
use keel_projects::{ProjectReports, Projects};
use keel_release_notes::ReleaseNotes;
use secrecy::ExposeSecret;

/// Every permission every domain defines: the catalogue RBAC is synced to.
pub fn permission_catalog() -> Vec<PermissionDef> {
    keel_identity::PERMISSIONS
        .iter()
        .chain(keel_activity::PERMISSIONS)
        .chain(keel_release_notes::PERMISSIONS)
        .chain(keel_projects::PERMISSIONS)
        .chain(keel_kernel::jobs::PERMISSIONS)
        // keel:new-domain:permissions
        .cloned()
        .collect()
}

/// Every domain service, wired to the database and the configured adapters.
#[derive(Debug, Clone)]
pub struct Services {
    /// Release notes.
    pub release_notes: ReleaseNotes,
    /// Identity and access.
    pub identity: Identity,
    /// The activity log.
    pub activity: Activity,
    /// Projects (the example domain).
    pub projects: Projects,
    /// Project reports (its custom query).
    pub project_reports: ProjectReports,
    // keel:new-domain:services
    /// Background jobs: the store, and the outbox use cases enqueue into.
    pub jobs: keel_api::jobs::JobServices,
    /// The job store itself (the worker runs it).
    pub job_store: JobStore,
    /// Rate-limit counters (memory, or Redis when configured).
    pub counters: Arc<dyn Counters>,
    /// The JWKS document when access tokens are signed asymmetrically.
    pub jwks: Option<serde_json::Value>,
    /// The Redis store, when configured (for the readiness check).
    pub redis: Option<RedisStore>,
    /// Stored answers of `Idempotency-Key` requests.
    pub idempotency: Arc<dyn keel_kernel::idempotency::IdempotencyStore>,
}

impl Services {
    /// Wires the services to one connection pool. Fails, naming the configuration key, when a
    /// key, pepper, parameter or the Redis server is unusable.
    pub async fn build(db: &DatabaseConnection, settings: &Settings) -> anyhow::Result<Self> {
        // Inside a request with an Idempotency-Key, every transaction also marks the key's
        // claim as committed, atomically with the effect; elsewhere it is the plain one.
        let unit_of_work: Arc<dyn keel_kernel::UnitOfWork> = Arc::new(
            keel_api::idempotency::MarkingUnitOfWork(Arc::new(SeaUnitOfWork::new(db.clone()))),
        );
        let clock = Arc::new(SystemClock);
        let activity_store = Arc::new(SeaActivity::new(db.clone()));
        let store = Arc::new(SeaIdentityStore::new(db.clone()));

        let redis = match &settings.redis.url {
            Some(url) => Some(
                RedisStore::connect(url.expose_secret(), &settings.redis.key_prefix)
                    .await
                    .context("connecting to Redis (redis.url)")?,
            ),
            None => None,
        };
        let (counters, cache): (Arc<dyn Counters>, Arc<dyn Cache>) = match &redis {
            Some(redis) => (Arc::new(redis.clone()), Arc::new(redis.clone())),
            None => (
                Arc::new(MemoryCounters::default()),
                Arc::new(MemoryCache::default()),
            ),
        };

        let auth = &settings.auth;
        let tokens = JwtTokens::new(auth)?;
        let jwks = tokens.jwks().map(serde_json::to_value).transpose()?;
        let ports = IdentityPorts {
            users: store.clone(),
            roles: store.clone(),
            sessions: store.clone(),
            one_time_tokens: store.clone(),
            api_keys: store,
            unit_of_work: unit_of_work.clone(),
            activity: activity_store.clone(),
            clock: clock.clone(),
            hasher: Arc::new(Argon2Hasher::new(auth)?),
            access_tokens: Arc::new(tokens),
            secrets: Arc::new(HmacSecrets::new(auth)?),
            counters: counters.clone(),
            cache,
            jobs: Arc::new(SeaJobQueue),
        };
        let identity = Identity::new(
            ports,
            IdentitySettings {
                password: PasswordPolicy {
                    min_length: auth.password_min_length,
                    max_length: auth.password_max_length,
                },
                refresh_idle_ttl: auth.refresh_token_idle_ttl,
                refresh_max_ttl: auth.refresh_token_max_ttl,
                session_cache_ttl: auth.session_cache_ttl,
                reset_token_ttl: auth.reset_token_ttl,
                verification_token_ttl: auth.verification_token_ttl,
                require_email_verification: auth.require_email_verification,
                login_backoff_after: auth.login_backoff_after,
                public_url: settings.app.public_url.clone(),
                reauthentication_window: auth.reauthentication_window,
                api_key_default_ttl: auth.api_key_default_ttl,
                api_key_max_ttl: auth.api_key_max_ttl,
                refresh_grace: auth.refresh_token_grace,
            },
        );
        Ok(Self {
            release_notes: ReleaseNotes::new(
                Arc::new(SeaReleaseNoteRepository::new(db.clone())),
                unit_of_work.clone(),
                activity_store.clone(),
                clock.clone(),
            ),
            projects: Projects::new(
                Arc::new(SeaCrud::new(db.clone())),
                unit_of_work.clone(),
                activity_store.clone(),
                clock.clone(),
            ),
            project_reports: ProjectReports::new(Arc::new(SeaProjectReports::new(db.clone()))),
            // keel:new-domain:services-build
            jobs: keel_api::jobs::JobServices {
                repository: Arc::new(JobStore::new(db)),
                unit_of_work: unit_of_work.clone(),
                queue: Arc::new(SeaJobQueue),
            },
            job_store: JobStore::new(db),
            identity,
            activity: Activity::new(activity_store),
            counters,
            jwks,
            redis,
            idempotency: Arc::new(keel_infrastructure::idempotency::SeaIdempotencyStore::new(
                db.clone(),
            )),
        })
    }

    /// Keel's startup bookkeeping: the permission catalogue and system roles, then the
    /// configured first administrator when none exists.
    pub async fn prepare(&self, settings: &Settings) -> anyhow::Result<()> {
        let system = self.identity.for_system();
        system
            .sync_rbac(&permission_catalog())
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
}
