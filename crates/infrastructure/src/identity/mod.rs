//! Identity's repositories on sea-orm: accounts, roles and the permission catalogue,
//! sessions and refresh tokens, one-time tokens, API keys and second factors.

mod accounts;
mod api_keys;
pub mod external;
mod mfa;
pub mod oidc;
mod roles;
mod security;
mod sessions;

use keel_kernel::RepoError;
use sea_orm::DatabaseConnection;
pub use security::{Argon2Hasher, HmacSecrets, JwtTokens, SecurityConfigError};

pub mod entities;

fn corrupt(what: &str, detail: impl std::fmt::Display) -> RepoError {
    RepoError::Other(format!("stored {what} is invalid: {detail}").into())
}

/// Every identity repository on one connection pool.
#[derive(Debug, Clone)]
pub struct SeaIdentityStore {
    db: DatabaseConnection,
}

impl SeaIdentityStore {
    /// The store on this pool.
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }
}

/// Builds identity on the store, the configured keys and peppers, and registers it with its
/// permissions and its public keys. Fails naming the `auth.*` key that is unusable.
pub fn register(
    adapters: &crate::Adapters,
    state: &mut keel_kernel::AppStateBuilder,
) -> Result<(), crate::RegisterError> {
    use std::sync::Arc;

    use keel_identity::password::PasswordPolicy;
    use keel_identity::security::PublicKeys;
    use keel_identity::{Identity, IdentityPorts, IdentitySettings};

    let settings = &adapters.settings;
    let auth = &settings.auth;
    let store = Arc::new(SeaIdentityStore::new(adapters.db.clone()));
    let tokens = JwtTokens::new(auth)?;
    let public_keys = PublicKeys(tokens.jwks().map(serde_json::to_value).transpose()?);
    let ports = IdentityPorts {
        users: store.clone(),
        roles: store.clone(),
        sessions: store.clone(),
        one_time_tokens: store.clone(),
        api_keys: store.clone(),
        mfa: store.clone(),
        external: store,
        unit_of_work: adapters.unit_of_work.clone(),
        activity: adapters.activity_log(),
        clock: adapters.clock.clone(),
        // One per process: its slots bound concurrent hashes, its memory is reused.
        hasher: adapters
            .process
            .get_or_try_init(|| Argon2Hasher::new(auth).map(Arc::new))?,
        access_tokens: Arc::new(tokens),
        secrets: Arc::new(HmacSecrets::new(auth)?),
        counters: adapters.counters.clone(),
        cache: adapters.cache.clone(),
        jobs: adapters.jobs.clone(),
        templates: adapters.mail_templates.clone(),
        providers: if auth.oidc.providers.is_empty() {
            Arc::new(keel_identity::security::NoProviders)
        } else {
            Arc::new(oidc::OidcProviders::new(
                &auth.oidc,
                adapters.http.clone(),
                settings.environment == keel_config::Environment::Production,
            ))
        },
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
            mfa_issuer: auth
                .mfa
                .issuer
                .clone()
                .unwrap_or_else(|| settings.app.name.clone()),
            mfa_required_roles: auth.mfa.required_roles.clone(),
        },
    );
    state
        .permissions(keel_identity::PERMISSIONS)
        .insert(identity)
        .insert(public_keys);
    Ok(())
}
