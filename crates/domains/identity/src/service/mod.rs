//! Identity use cases.
//!
//! [`Identity`] holds the ports; [`Identity::for_caller`] binds them to one caller. Every use
//! case checks its permission first (deny by default), validates, runs its writes in one
//! transaction together with their activity entry, and invalidates cached session state after
//! the commit.

mod accounts;
mod api_keys;
mod external;
mod mfa;
mod oidc;
mod roles;
mod sessions;

use std::sync::Arc;
use std::time::Duration;

pub use accounts::{Me, Registration, UserPatch, UserWithRoles};
pub use api_keys::{NewApiKey, NewApiKeyRequest};
use chrono::{DateTime, Utc};
pub use external::{ExternalUser, ExternalUserChange, SyncOutcome};
use keel_kernel::activity::ActivityLog;
use keel_kernel::auth::SYSTEM;
use keel_kernel::jobs::JobQueue;
use keel_kernel::mail::MailTemplates;
use keel_kernel::throttle::{Cache, Counters, Quota, check};
use keel_kernel::{
    Caller, Clock, DomainError, NewActivity, Permission, PermissionSet, SessionId, Transaction,
    UnitOfWork, UserId,
};
pub use mfa::{MfaStatus, SecondFactor, TotpEnrolment};
pub use oidc::{ProviderRedirect, ProviderSignIn};
use serde::{Deserialize, Serialize};
pub use sessions::{SessionView, Tokens};

use crate::error::IdentityError;
use crate::model::{Email, Role, RoleId, User, UserStatus};
use crate::password::PasswordPolicy;
use crate::repository::{
    ApiKeyRepository, ExternalIdentityRepository, MfaRepository, OneTimeTokenRepository,
    RoleRepository, SessionRepository, UserRepository,
};
use crate::security::{AccessTokens, IdentityProviders, PasswordHasher, Secrets};

/// Every port identity uses.
#[derive(Debug)]
pub struct IdentityPorts {
    /// Accounts.
    pub users: Arc<dyn UserRepository>,
    /// Roles and the permission catalogue.
    pub roles: Arc<dyn RoleRepository>,
    /// Sessions and refresh tokens.
    pub sessions: Arc<dyn SessionRepository>,
    /// Reset and verification tokens.
    pub one_time_tokens: Arc<dyn OneTimeTokenRepository>,
    /// API keys.
    pub api_keys: Arc<dyn ApiKeyRepository>,
    /// Second factors.
    pub mfa: Arc<dyn MfaRepository>,
    /// Links to accounts at external identity providers.
    pub external: Arc<dyn ExternalIdentityRepository>,
    /// Transactions.
    pub unit_of_work: Arc<dyn UnitOfWork>,
    /// The activity log.
    pub activity: Arc<dyn ActivityLog>,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// Password hashing.
    pub hasher: Arc<dyn PasswordHasher>,
    /// Access tokens.
    pub access_tokens: Arc<dyn AccessTokens>,
    /// Random tokens and digests.
    pub secrets: Arc<dyn Secrets>,
    /// Rate-limit and backoff counters.
    pub counters: Arc<dyn Counters>,
    /// The session-state cache.
    pub cache: Arc<dyn Cache>,
    /// Background jobs (mail is delivered by one).
    pub jobs: Arc<dyn JobQueue>,
    /// The mails' wording.
    pub templates: Arc<dyn MailTemplates>,
    /// External identity providers (OpenID Connect).
    pub providers: Arc<dyn IdentityProviders>,
}

/// Identity's tunables, from the `auth` and `app` configuration sections.
#[derive(Debug, Clone)]
pub struct IdentitySettings {
    /// Password length bounds.
    pub password: PasswordPolicy,
    /// A session's refresh token must be used within this long (sliding).
    pub refresh_idle_ttl: Duration,
    /// A session ends this long after sign-in, however often it is refreshed.
    pub refresh_max_ttl: Duration,
    /// How long session and account state may be served from the cache.
    pub session_cache_ttl: Duration,
    /// Lifetime of password-reset links.
    pub reset_token_ttl: Duration,
    /// Lifetime of email-verification links.
    pub verification_token_ttl: Duration,
    /// New accounts start as `pending_verification` and are sent a verification mail.
    pub require_email_verification: bool,
    /// Consecutive failed logins for one email before backoff starts.
    pub login_backoff_after: u32,
    /// Base URL of links in mails.
    pub public_url: String,
    /// Sensitive actions (creating an API key) need a session whose password was proved
    /// this recently.
    pub reauthentication_window: Duration,
    /// Lifetime of an API key created without `expires_at`.
    pub api_key_default_ttl: Duration,
    /// Longest lifetime an API key may be given.
    pub api_key_max_ttl: Duration,
    /// How long after a refresh the same refresh token may be presented again (two tabs
    /// refreshing at once) and get the same successor instead of revoking the session.
    pub refresh_grace: Duration,
    /// The issuer authenticator apps show next to the account (`auth.mfa.issuer`).
    pub mfa_issuer: String,
    /// Roles whose permissions count only once their holder has a second factor on
    /// (`auth.mfa.required_roles`).
    pub mfa_required_roles: Vec<String>,
}

impl Default for IdentitySettings {
    fn default() -> Self {
        Self {
            password: PasswordPolicy::default(),
            refresh_idle_ttl: Duration::from_secs(14 * 24 * 3600),
            refresh_max_ttl: Duration::from_secs(90 * 24 * 3600),
            session_cache_ttl: Duration::from_secs(10),
            reset_token_ttl: Duration::from_secs(30 * 60),
            verification_token_ttl: Duration::from_secs(24 * 3600),
            require_email_verification: false,
            login_backoff_after: 5,
            public_url: "http://127.0.0.1:8080".to_owned(),
            reauthentication_window: Duration::from_secs(10 * 60),
            api_key_default_ttl: Duration::from_secs(90 * 24 * 3600),
            api_key_max_ttl: Duration::from_secs(365 * 24 * 3600),
            refresh_grace: Duration::from_secs(10),
            mfa_issuer: "Keel".to_owned(),
            mfa_required_roles: Vec::new(),
        }
    }
}

/// Per-account quotas (per-IP quotas are applied at the HTTP edge).
const REGISTER_PER_EMAIL: Quota = Quota::per_hour(10);
const FORGOT_PER_EMAIL: Quota = Quota::per_hour(5);
const VERIFY_PER_USER: Quota = Quota::per_hour(5);
const REFRESH_PER_SESSION: Quota = Quota::per_minute(120);

/// The identity service's dependencies; cheap to clone and shared by every request.
#[derive(Debug, Clone)]
pub struct Identity {
    ports: Arc<IdentityPorts>,
    settings: Arc<IdentitySettings>,
}

/// Identity use cases bound to one caller.
#[derive(Debug)]
pub struct IdentityService<'a> {
    identity: &'a Identity,
    caller: &'a Caller,
}

/// Account state as the per-request check needs it; cached for `session_cache_ttl`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct UserState {
    can_sign_in: bool,
    /// `false` while the account waits for email confirmation.
    verified: bool,
    permissions: Vec<String>,
}

impl UserState {
    fn of(user: &User, roles: &[Role]) -> Self {
        let permissions: std::collections::BTreeSet<String> = roles
            .iter()
            .flat_map(|role| role.permissions.iter().map(ToString::to_string))
            .collect();
        Self {
            can_sign_in: user.can_sign_in(),
            verified: user.status != UserStatus::PendingVerification,
            permissions: permissions.into_iter().collect(),
        }
    }

    fn permissions(&self) -> PermissionSet {
        self.permissions
            .iter()
            .filter_map(|p| keel_kernel::Permission::parse(p).ok())
            .collect()
    }
}

/// The account and roles `GET /auth/me` shows, cached beside [`UserState`] (filled by the
/// same read, forgotten by the same changes) so that read needs no database round trip while
/// the cache is warm. Never the password hash: a shared cache (Redis) holds this.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CachedAccount {
    id: UserId,
    email: String,
    full_name: Option<String>,
    status: UserStatus,
    email_verified_at: Option<DateTime<Utc>>,
    password_changed_at: DateTime<Utc>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    deleted_at: Option<DateTime<Utc>>,
    roles: Vec<CachedRole>,
}

/// A [`Role`] as cached.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CachedRole {
    id: RoleId,
    name: String,
    description: String,
    is_system: bool,
    permissions: Vec<String>,
    created_at: DateTime<Utc>,
}

impl CachedAccount {
    fn of(user: &User, roles: &[Role]) -> Self {
        Self {
            id: user.id,
            email: user.email.as_str().to_owned(),
            full_name: user.full_name.clone(),
            status: user.status,
            email_verified_at: user.email_verified_at,
            password_changed_at: user.password_changed_at,
            created_at: user.created_at,
            updated_at: user.updated_at,
            deleted_at: user.deleted_at,
            roles: roles
                .iter()
                .map(|role| CachedRole {
                    id: role.id,
                    name: role.name.clone(),
                    description: role.description.clone(),
                    is_system: role.is_system,
                    permissions: role.permissions.iter().map(ToString::to_string).collect(),
                    created_at: role.created_at,
                })
                .collect(),
        }
    }

    /// The account (its password hash left empty: it is not cached) and its roles.
    fn into_parts(self) -> Option<(User, Vec<Role>)> {
        let user = User {
            id: self.id,
            email: Email::parse(&self.email).ok()?,
            full_name: self.full_name,
            password_hash: String::new(),
            status: self.status,
            email_verified_at: self.email_verified_at,
            password_changed_at: self.password_changed_at,
            created_at: self.created_at,
            updated_at: self.updated_at,
            deleted_at: self.deleted_at,
        };
        let roles = self
            .roles
            .into_iter()
            .map(|r| Role {
                id: r.id,
                name: r.name,
                description: r.description,
                is_system: r.is_system,
                permissions: r
                    .permissions
                    .iter()
                    .filter_map(|p| Permission::parse(p).ok())
                    .collect(),
                created_at: r.created_at,
            })
            .collect();
        Some((user, roles))
    }
}

fn account_key(user: UserId) -> String {
    format!("identity:account:v1:{user}")
}

fn user_key(user: UserId) -> String {
    // v2: the state gained `verified`; entries of the old shape are simply not read.
    format!("identity:user:v2:{user}")
}

fn session_key(session: SessionId) -> String {
    format!("identity:session:{session}")
}

impl Identity {
    /// Wires identity to its ports.
    pub fn new(ports: IdentityPorts, settings: IdentitySettings) -> Self {
        Self {
            ports: Arc::new(ports),
            settings: Arc::new(settings),
        }
    }

    /// The use cases as `caller` may run them.
    pub fn for_caller<'a>(&'a self, caller: &'a Caller) -> IdentityService<'a> {
        IdentityService {
            identity: self,
            caller,
        }
    }

    /// The use cases run by Keel itself (bootstrap, seeding): every permission.
    pub fn for_system(&self) -> IdentityService<'_> {
        self.for_caller(&SYSTEM)
    }

    /// The settings in force.
    pub fn settings(&self) -> &IdentitySettings {
        &self.settings
    }

    /// Account state, from the cache when fresh. A miss reads the account and its roles once
    /// and caches both the state and what `GET /auth/me` shows.
    async fn user_state(&self, user: UserId) -> Result<Option<UserState>, IdentityError> {
        let key = user_key(user);
        if let Ok(Some(bytes)) = self.ports.cache.get(&key).await
            && let Ok(state) = serde_json::from_slice::<UserState>(&bytes)
        {
            return Ok(Some(state));
        }
        let Some((account, mut roles)) = self.load_account(user).await? else {
            return Ok(None);
        };
        // A role that requires a second factor grants nothing until its holder turns one on.
        let required = &self.settings.mfa_required_roles;
        if roles.iter().any(|r| required.contains(&r.name))
            && !self
                .ports
                .mfa
                .find(user)
                .await?
                .is_some_and(|f| f.is_active())
        {
            roles.retain(|r| !required.contains(&r.name));
        }
        let state = UserState::of(&account, &roles);
        self.cache(&key, &state).await;
        Ok(Some(state))
    }

    /// The account (without its password hash) and its roles, from the cache when fresh.
    async fn account(&self, user: UserId) -> Result<Option<(User, Vec<Role>)>, IdentityError> {
        if let Ok(Some(bytes)) = self.ports.cache.get(&account_key(user)).await
            && let Some(known) = serde_json::from_slice::<CachedAccount>(&bytes)
                .ok()
                .and_then(CachedAccount::into_parts)
        {
            return Ok(Some(known));
        }
        Ok(self.load_account(user).await?.map(|(mut account, roles)| {
            account.password_hash.clear();
            (account, roles)
        }))
    }

    /// Reads the account and its roles from the database, caching what `GET /auth/me` shows.
    async fn load_account(&self, user: UserId) -> Result<Option<(User, Vec<Role>)>, IdentityError> {
        let Some(account) = self.ports.users.find(user).await? else {
            return Ok(None);
        };
        let roles = self.ports.users.roles_of(user).await?;
        self.cache(&account_key(user), &CachedAccount::of(&account, &roles))
            .await;
        Ok(Some((account, roles)))
    }

    /// Stores `value` for `session_cache_ttl`; a cache outage only costs a database read per
    /// request.
    async fn cache(&self, key: &str, value: &impl Serialize) {
        if let Ok(bytes) = serde_json::to_vec(value) {
            let _ = self
                .ports
                .cache
                .set(key, bytes, self.settings.session_cache_ttl)
                .await;
        }
    }

    /// Whether `session` (of `user`) still honours access tokens, from the cache when fresh.
    async fn session_is_live(
        &self,
        session: SessionId,
        user: UserId,
    ) -> Result<bool, IdentityError> {
        let key = session_key(session);
        if let Ok(Some(bytes)) = self.ports.cache.get(&key).await {
            return Ok(bytes == user.to_string().as_bytes());
        }
        let now = self.ports.clock.now();
        let live = self
            .ports
            .sessions
            .find(session)
            .await?
            .is_some_and(|s| s.user_id == user && s.is_live(now));
        if live {
            let _ = self
                .ports
                .cache
                .set(
                    &key,
                    user.to_string().into_bytes(),
                    self.settings.session_cache_ttl,
                )
                .await;
        }
        Ok(live)
    }

    /// Drops cached state so the next request re-reads it (call after the commit).
    async fn forget(&self, user: Option<UserId>, sessions: &[SessionId]) {
        if let Some(user) = user {
            let _ = self.ports.cache.delete(&user_key(user)).await;
            let _ = self.ports.cache.delete(&account_key(user)).await;
        }
        for session in sessions {
            let _ = self.ports.cache.delete(&session_key(*session)).await;
        }
    }

    /// Counts a hit against a per-account quota; fails open when the counter store is down.
    async fn within_quota(&self, key: &str, quota: Quota) -> Result<(), IdentityError> {
        match check(self.ports.counters.as_ref(), key, quota).await {
            Ok(decision) => decision
                .into_result()
                .map(drop)
                .map_err(IdentityError::from),
            Err(_) => Ok(()),
        }
    }

    async fn record(
        &self,
        tx: &mut dyn Transaction,
        caller: &Caller,
        entry: NewActivity,
    ) -> Result<(), IdentityError> {
        Ok(self.ports.activity.record(tx, caller, entry).await?)
    }

    /// Records an entry in a transaction of its own (events that change nothing else).
    async fn record_alone(&self, caller: &Caller, entry: NewActivity) -> Result<(), IdentityError> {
        let mut tx = self.ports.unit_of_work.begin().await?;
        self.record(tx.as_mut(), caller, entry).await?;
        tx.commit().await?;
        Ok(())
    }
}

impl IdentityService<'_> {
    fn ports(&self) -> &IdentityPorts {
        &self.identity.ports
    }

    fn settings(&self) -> &IdentitySettings {
        &self.identity.settings
    }

    /// The signed-in user, or 401.
    fn user_id(&self) -> Result<UserId, IdentityError> {
        self.caller.actor.user_id().ok_or(IdentityError::Rejected(
            keel_kernel::DomainError::Unauthenticated,
        ))
    }

    /// The caller's session, or an error when signed in with an API key (or not at all).
    /// Unverified accounts pass: sign-out and verification are open to them.
    fn session_id(&self) -> Result<SessionId, IdentityError> {
        self.user_id()?;
        self.caller
            .actor
            .session_id()
            .ok_or(IdentityError::SessionRequired)
    }

    /// The caller's session for account self-service: API keys are refused (a leaked key must
    /// not manage the account that owns it), and so are unverified accounts.
    fn verified_session(&self) -> Result<SessionId, IdentityError> {
        let session = self.session_id()?;
        self.caller.actor.require_verified()?;
        Ok(session)
    }
}

/// Turns a hashing failure into the domain's answer: a saturated hasher is a short outage
/// (503 with `Retry-After`), anything else a bug.
pub(crate) fn hashing(error: crate::security::HashError) -> IdentityError {
    match error {
        crate::security::HashError::Busy => IdentityError::Rejected(
            keel_kernel::DomainError::Unavailable("password hashing is saturated".into()),
        ),
        crate::security::HashError::Failed(cause) => {
            IdentityError::Rejected(keel_kernel::DomainError::Internal(cause))
        }
    }
}

/// The client a per-client counter is kept for: an IPv4 address, or the /64 network of an
/// IPv6 one (one subscriber usually holds a whole /64, so single addresses are free to rotate).
pub(crate) fn client_bucket(ip: Option<std::net::IpAddr>) -> String {
    match ip {
        Some(std::net::IpAddr::V4(v4)) => v4.to_string(),
        Some(std::net::IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let network = u128::from(v6) & !((1u128 << 64) - 1);
                format!("{}/64", std::net::Ipv6Addr::from(network))
            }
        },
        None => "unknown".to_owned(),
    }
}

/// Permission checks every sub-area uses, and the purge of expired credentials.
impl IdentityService<'_> {
    pub(super) fn require(&self, permission: &Permission) -> Result<(), IdentityError> {
        Ok(self.caller.actor.require(permission)?)
    }

    /// Fails naming the first permission in `set` the caller lacks: nobody hands out, takes
    /// away or defines power they do not hold themselves (an API key counts with its scopes).
    pub(super) fn require_holds<'p>(
        &self,
        set: impl IntoIterator<Item = &'p Permission>,
    ) -> Result<(), IdentityError> {
        match set.into_iter().find(|p| !self.caller.actor.can(p)) {
            Some(missing) => Err(DomainError::Forbidden {
                permission: missing.to_string(),
            }
            .into()),
            None => Ok(()),
        }
    }

    /// Fails unless the caller is Keel itself: minting administrators and reshaping the
    /// catalogue happen at startup and from the CLI, never over HTTP.
    pub(super) fn require_system(&self) -> Result<(), IdentityError> {
        if self.caller.actor == keel_kernel::Actor::System {
            Ok(())
        } else {
            Err(DomainError::Forbidden {
                permission: "system".to_owned(),
            }
            .into())
        }
    }

    /// Fails unless the caller holds every permission the `admin` role carries (Keel keeps it
    /// equal to every permission the code defines): granting or revoking `admin` and reshaping
    /// `member` are administrators' alone.
    pub(super) async fn require_admin(&self) -> Result<(), IdentityError> {
        let admin = self.admin_role().await?;
        if self.caller.actor.holds_all(&admin.permissions) {
            Ok(())
        } else {
            Err(IdentityError::AdminOnly)
        }
    }

    /// Fails unless the caller holds every permission `user` holds: an account manager cannot
    /// suspend, delete, restore or strip someone more powerful than themselves.
    pub(super) async fn require_outranks(&self, user: UserId) -> Result<(), IdentityError> {
        let theirs = self.ports().users.permissions_of(user).await?;
        self.require_holds(theirs.iter())
    }

    /// Deletes sessions that ended and one-time tokens that expired or were used before
    /// `before` (Keel itself only: the `identity.purge_expired_credentials` job). Returns the
    /// numbers of sessions and tokens removed.
    pub async fn purge_expired_credentials(
        &self,
        before: DateTime<Utc>,
    ) -> Result<(u64, u64), IdentityError> {
        self.require_system()?;
        let sessions = self.ports().sessions.purge_ended(before).await?;
        let tokens = self.ports().one_time_tokens.purge(before).await?;
        Ok((sessions, tokens))
    }
}

#[cfg(test)]
mod tests;
