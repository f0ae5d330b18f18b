//! Sign-up, sign-in, token refresh with reuse detection, sign-out, and per-request
//! authentication of access tokens and API keys.

use std::time::Duration;

use chrono::{DateTime, Utc};
use keel_kernel::validation::FieldErrors;
use keel_kernel::{
    Actor, Caller, DomainError, NewActivity, Origin, PermissionSet, RepoError, SessionId,
    Transaction, UserId,
};
use serde_json::json;

use super::{FORGOT_PER_EMAIL, Identity, IdentityService, REFRESH_PER_USER, REGISTER_PER_EMAIL};
use crate::error::IdentityError;
use crate::model::{
    API_KEY_PREFIX, Email, FULL_NAME_MAX_CHARS, MEMBER_ROLE, RefreshToken, Session, TokenId, User,
    UserStatus,
};

/// Failed logins are counted over this window.
const FAILURE_WINDOW: Duration = Duration::from_secs(3600);
/// The longest a login backoff lasts.
const MAX_BACKOFF: Duration = Duration::from_secs(15 * 60);
/// API keys record their use at most this often (a write per request would be wasteful).
const TOUCH_EVERY: chrono::TimeDelta = chrono::TimeDelta::minutes(1);

/// Sign-up input.
#[derive(Debug, Clone)]
pub struct Registration {
    /// Email address.
    pub email: String,
    /// Password.
    pub password: String,
    /// Display name.
    pub full_name: Option<String>,
}

/// What a successful sign-in or refresh returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tokens {
    /// The JWT for `Authorization: Bearer`.
    pub access_token: String,
    /// The opaque token for `/auth/refresh`; shown once.
    pub refresh_token: String,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    /// The session both belong to.
    pub session: SessionId,
}

/// A session as its owner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionView {
    /// The session.
    pub session: Session,
    /// Whether the caller's access token belongs to it.
    pub current: bool,
}

/// Trims a display name; empty means none.
pub(super) fn check_full_name(raw: Option<&str>, errors: &mut FieldErrors) -> Option<String> {
    let name = raw.map(str::trim).filter(|n| !n.is_empty())?;
    if name.chars().count() > FULL_NAME_MAX_CHARS {
        errors.add(
            "full_name",
            "length",
            format!("must be at most {FULL_NAME_MAX_CHARS} characters long"),
        );
    } else if name.chars().any(char::is_control) {
        errors.add(
            "full_name",
            "control_characters",
            "must not contain control characters",
        );
    }
    Some(name.to_owned())
}

fn failures_key(email: &str) -> String {
    format!("identity:login-failures:{email}")
}

fn lock_key(email: &str) -> String {
    format!("identity:login-lock:{email}")
}

/// 1 s after the threshold, doubling with each further failure, capped.
fn backoff(failures_past_threshold: u64) -> Duration {
    let exponent = u32::try_from(failures_past_threshold.min(20)).unwrap_or(20);
    Duration::from_secs(1u64 << exponent).min(MAX_BACKOFF)
}

fn truncate(value: Option<&str>, max: usize) -> Option<String> {
    value.map(|v| v.chars().take(max).collect())
}

impl Identity {
    /// Opens a session for `user` and stores its first refresh token (in `tx`).
    pub(super) async fn start_session(
        &self,
        tx: &mut dyn Transaction,
        user: UserId,
        origin: &Origin,
        now: DateTime<Utc>,
    ) -> Result<(Session, String), IdentityError> {
        let expires_at = now + self.settings.refresh_max_ttl;
        let session = Session {
            id: SessionId::new(),
            user_id: user,
            user_agent: truncate(origin.user_agent.as_deref(), 512),
            ip: origin.ip.map(|ip| ip.to_string()),
            created_at: now,
            last_used_at: now,
            idle_expires_at: (now + self.settings.refresh_idle_ttl).min(expires_at),
            expires_at,
            revoked_at: None,
            revoked_reason: None,
        };
        self.ports.sessions.insert(tx, &session).await?;
        let refresh = self.new_refresh_token(tx, session.id, now).await?;
        Ok((session, refresh))
    }

    async fn new_refresh_token(
        &self,
        tx: &mut dyn Transaction,
        session: SessionId,
        now: DateTime<Utc>,
    ) -> Result<String, IdentityError> {
        let plain = self.ports.secrets.token().map_err(DomainError::Internal)?;
        let (_, digest) = self.ports.secrets.digest(&plain);
        self.ports
            .sessions
            .insert_refresh_token(
                tx,
                &RefreshToken {
                    id: TokenId::new(),
                    session_id: session,
                    digest,
                    created_at: now,
                    rotated_at: None,
                },
            )
            .await?;
        Ok(plain)
    }

    fn tokens(
        &self,
        user: UserId,
        session: SessionId,
        refresh_token: String,
        now: DateTime<Utc>,
    ) -> Result<Tokens, IdentityError> {
        let issued = self
            .ports
            .access_tokens
            .issue(user, session, now)
            .map_err(DomainError::Internal)?;
        Ok(Tokens {
            access_token: issued.token,
            refresh_token,
            expires_in: issued.expires_in,
            session,
        })
    }

    /// The actor behind an access token. Any invalid token, revoked session or account that
    /// may not sign in is [`IdentityError::InvalidToken`].
    pub async fn authenticate_bearer(&self, token: &str) -> Result<Actor, IdentityError> {
        let claims = self
            .ports
            .access_tokens
            .verify(token)
            .ok_or(IdentityError::InvalidToken)?;
        if !self.session_is_live(claims.session, claims.user).await? {
            return Err(IdentityError::InvalidToken);
        }
        let state = self
            .user_state(claims.user)
            .await?
            .filter(|s| s.can_sign_in)
            .ok_or(IdentityError::InvalidToken)?;
        Ok(Actor::User {
            id: claims.user,
            session: claims.session,
            permissions: state.permissions(),
        })
    }

    /// The actor behind an API key (`keel_<prefix>_<secret>`): its owner, with the owner's
    /// current permissions narrowed to the key's scopes.
    pub async fn authenticate_api_key(&self, presented: &str) -> Result<Actor, IdentityError> {
        let (prefix, secret) = presented
            .strip_prefix(API_KEY_PREFIX)
            .and_then(|rest| rest.split_once('_'))
            .filter(|(prefix, secret)| {
                !prefix.is_empty()
                    && prefix.len() <= 16
                    && !secret.is_empty()
                    && secret.len() <= 128
            })
            .ok_or(IdentityError::InvalidToken)?;
        let key = self
            .ports
            .api_keys
            .find_by_prefix(prefix)
            .await?
            .ok_or(IdentityError::InvalidToken)?;
        if !self
            .ports
            .secrets
            .verify(&key.pepper_id, secret, &key.digest)
        {
            return Err(IdentityError::InvalidToken);
        }
        let now = self.ports.clock.now();
        if key.expires_at.is_some_and(|at| at <= now) {
            return Err(IdentityError::InvalidToken);
        }
        let state = self
            .user_state(key.user_id)
            .await?
            .filter(|s| s.can_sign_in)
            .ok_or(IdentityError::InvalidToken)?;
        if key.last_used_at.is_none_or(|at| now - at >= TOUCH_EVERY) {
            // Best effort: a failed bookkeeping write must not fail the request.
            let _ = self.ports.api_keys.touch(key.id, now).await;
        }
        Ok(Actor::ApiKey {
            id: key.id,
            owner: key.user_id,
            permissions: state.permissions().intersection(&key.scopes),
        })
    }
}

impl IdentityService<'_> {
    /// Creates an account (`member` role) and returns it. Unknown fields never reach here: the
    /// input has no room for roles or status.
    pub async fn register(&self, input: Registration) -> Result<User, IdentityError> {
        let mut errors = FieldErrors::new();
        let email = Email::parse(&input.email)
            .map_err(|message| errors.add("email", "format", message))
            .ok();
        let full_name = check_full_name(input.full_name.as_deref(), &mut errors);
        self.settings()
            .password
            .check(&input.password, email.as_ref(), "password", &mut errors);
        errors.into_result()?;
        let Some(email) = email else {
            return Err(
                DomainError::invalid("email", "format", "must be a valid email address").into(),
            );
        };
        self.identity
            .within_quota(
                &format!("identity:register:{}", email.as_str()),
                REGISTER_PER_EMAIL,
            )
            .await?;
        if self.ports().users.find_by_email(&email).await?.is_some() {
            return Err(IdentityError::EmailTaken);
        }
        let password_hash = self
            .ports()
            .hasher
            .hash(&input.password)
            .await
            .map_err(DomainError::Internal)?;
        let now = self.ports().clock.now();
        let status = if self.settings().require_email_verification {
            UserStatus::PendingVerification
        } else {
            UserStatus::Active
        };
        let user = User {
            id: UserId::new(),
            email,
            full_name,
            password_hash,
            status,
            email_verified_at: None,
            password_changed_at: now,
            created_at: now,
            updated_at: now,
            deleted_at: None,
        };
        let member = self
            .ports()
            .roles
            .find_by_name(MEMBER_ROLE)
            .await?
            .ok_or_else(|| {
                DomainError::internal("the member role is missing; RBAC was not seeded")
            })?;

        let mut tx = self.ports().unit_of_work.begin().await?;
        self.ports()
            .users
            .insert(tx.as_mut(), &user)
            .await
            .map_err(|e| match e {
                RepoError::UniqueViolation { .. } => IdentityError::EmailTaken,
                other => other.into(),
            })?;
        self.ports()
            .users
            .grant_role(tx.as_mut(), user.id, member.id, now)
            .await?;
        let entry = NewActivity::new("user.registered", "user", now)
            .resource(user.id)
            .subject(user.id)
            .changes(json!({ "email": user.email.as_str(), "status": user.status.as_str() }));
        self.identity
            .record(tx.as_mut(), self.caller, entry)
            .await?;
        tx.commit().await?;

        if status == UserStatus::PendingVerification {
            self.send_verification(&user).await?;
        }
        Ok(user)
    }

    /// Signs in with email and password. Unknown email and wrong password take the same path
    /// and give the same error; after `login_backoff_after` consecutive failures for an email,
    /// further attempts are refused (429) for an exponentially growing time.
    pub async fn login(&self, email: &str, password: &str) -> Result<Tokens, IdentityError> {
        let normalised = email.trim().to_lowercase();
        let threshold = u64::from(self.settings().login_backoff_after.max(1));
        if let Ok(Some(lock)) = self.ports().counters.peek(&lock_key(&normalised)).await
            && !lock.ttl.is_zero()
        {
            return Err(DomainError::RateLimited {
                retry_after: lock.ttl.max(Duration::from_secs(1)),
            }
            .into());
        }

        let user = match Email::parse(&normalised) {
            Ok(email) => self.ports().users.find_by_email(&email).await?,
            Err(_) => None,
        };
        let verification = self
            .ports()
            .hasher
            .verify(password, user.as_ref().map(|u| u.password_hash.as_str()))
            .await
            .map_err(DomainError::Internal)?;
        let now = self.ports().clock.now();
        let user = match user {
            Some(user) if verification.matches => user,
            other => {
                let counters = &self.ports().counters;
                if let Ok(count) = counters
                    .hit(&failures_key(&normalised), FAILURE_WINDOW)
                    .await
                    && count.hits >= threshold
                {
                    let _ = counters
                        .hit(&lock_key(&normalised), backoff(count.hits - threshold))
                        .await;
                }
                let mut entry = NewActivity::new("auth.login_failed", "user", now)
                    .changes(json!({ "email": normalised }));
                if let Some(user) = other {
                    entry = entry.resource(user.id).subject(user.id);
                }
                self.identity.record_alone(self.caller, entry).await?;
                return Err(IdentityError::InvalidCredentials);
            }
        };
        let _ = self
            .ports()
            .counters
            .clear(&failures_key(&normalised))
            .await;
        if !user.can_sign_in() {
            let entry = NewActivity::new("auth.login_refused", "user", now)
                .resource(user.id)
                .subject(user.id)
                .changes(
                    json!({ "status": user.status.as_str(), "deleted": user.deleted_at.is_some() }),
                );
            self.identity.record_alone(self.caller, entry).await?;
            return Err(IdentityError::AccountInactive);
        }
        let rehash = if verification.needs_rehash {
            Some(
                self.ports()
                    .hasher
                    .hash(password)
                    .await
                    .map_err(DomainError::Internal)?,
            )
        } else {
            None
        };

        let mut tx = self.ports().unit_of_work.begin().await?;
        if let Some(password_hash) = rehash {
            // Parameters changed since this hash was made: upgrade it while we know the password.
            let mut upgraded = user.clone();
            upgraded.password_hash = password_hash;
            self.ports().users.update(tx.as_mut(), &upgraded).await?;
        }
        let (session, refresh) = self
            .identity
            .start_session(tx.as_mut(), user.id, &self.caller.origin, now)
            .await?;
        let as_user = Caller {
            actor: Actor::User {
                id: user.id,
                session: session.id,
                permissions: PermissionSet::empty(),
            },
            origin: self.caller.origin.clone(),
        };
        let entry = NewActivity::new("auth.login", "session", now)
            .resource(session.id)
            .subject(user.id);
        self.identity.record(tx.as_mut(), &as_user, entry).await?;
        tx.commit().await?;
        self.identity.tokens(user.id, session.id, refresh, now)
    }

    /// Exchanges a refresh token for a new pair. A token that was already exchanged revokes
    /// its whole session (someone else holds a copy) and is refused.
    pub async fn refresh(&self, refresh_token: &str) -> Result<Tokens, IdentityError> {
        let digests = self.ports().secrets.digests(refresh_token);
        let found = self
            .ports()
            .sessions
            .find_refresh_token(&digests)
            .await?
            .ok_or(IdentityError::InvalidToken)?;
        let now = self.ports().clock.now();
        let mut tx = self.ports().unit_of_work.begin().await?;
        let mut session = self
            .ports()
            .sessions
            .find_for_update(tx.as_mut(), found.session_id)
            .await?
            .ok_or(IdentityError::InvalidToken)?;
        // Re-read under the session lock: a concurrent refresh may have rotated it meanwhile.
        let token = self
            .ports()
            .sessions
            .find_refresh_token(&digests)
            .await?
            .ok_or(IdentityError::InvalidToken)?;

        if token.rotated_at.is_some() {
            if session.revoked_at.is_none() {
                session.revoked_at = Some(now);
                session.revoked_reason = Some("refresh_token_reuse".to_owned());
                self.ports().sessions.update(tx.as_mut(), &session).await?;
                let entry = NewActivity::new("auth.refresh_token_reused", "session", now)
                    .resource(session.id)
                    .subject(session.user_id)
                    .changes(json!({ "session_revoked": true }));
                self.identity
                    .record(tx.as_mut(), self.caller, entry)
                    .await?;
                tx.commit().await?;
                self.identity.forget(None, &[session.id]).await;
            }
            return Err(IdentityError::InvalidToken);
        }
        if !session.can_refresh(now) {
            return Err(IdentityError::InvalidToken);
        }
        let user = self
            .ports()
            .users
            .find(session.user_id)
            .await?
            .filter(User::can_sign_in)
            .ok_or(IdentityError::InvalidToken)?;
        self.identity
            .within_quota(&format!("identity:refresh:{}", user.id), REFRESH_PER_USER)
            .await?;

        self.ports()
            .sessions
            .mark_rotated(tx.as_mut(), token.id, now)
            .await?;
        let refresh = self
            .identity
            .new_refresh_token(tx.as_mut(), session.id, now)
            .await?;
        session.last_used_at = now;
        session.idle_expires_at = (now + self.settings().refresh_idle_ttl).min(session.expires_at);
        self.ports().sessions.update(tx.as_mut(), &session).await?;
        tx.commit().await?;
        self.identity.tokens(user.id, session.id, refresh, now)
    }

    /// Ends the caller's session: its access and refresh tokens stop working.
    pub async fn logout(&self) -> Result<(), IdentityError> {
        let session = self.session_id()?;
        self.revoke_own(session, "logout", "auth.logout").await
    }

    /// Ends every session of the caller.
    pub async fn logout_all(&self) -> Result<(), IdentityError> {
        let user = self.user_id()?;
        let now = self.ports().clock.now();
        let mut tx = self.ports().unit_of_work.begin().await?;
        let revoked = self
            .ports()
            .sessions
            .revoke_all(tx.as_mut(), user, None, "logout_all", now)
            .await?;
        let entry = NewActivity::new("auth.logout_all", "user", now)
            .resource(user)
            .changes(json!({ "sessions_revoked": revoked.len() }));
        self.identity
            .record(tx.as_mut(), self.caller, entry)
            .await?;
        tx.commit().await?;
        self.identity.forget(None, &revoked).await;
        Ok(())
    }

    /// The caller's live sessions, newest first.
    pub async fn sessions(&self) -> Result<Vec<SessionView>, IdentityError> {
        let user = self.user_id()?;
        let current = self.caller.actor.session_id();
        let now = self.ports().clock.now();
        let mut sessions = self.ports().sessions.live_for_user(user, now).await?;
        sessions.sort_by_key(|s| std::cmp::Reverse(s.created_at));
        Ok(sessions
            .into_iter()
            .map(|session| SessionView {
                current: Some(session.id) == current,
                session,
            })
            .collect())
    }

    /// Ends one of the caller's sessions; another user's session is "not found".
    pub async fn revoke_session(&self, session: SessionId) -> Result<(), IdentityError> {
        self.revoke_own(session, "revoked_by_user", "auth.session_revoked")
            .await
    }

    async fn revoke_own(
        &self,
        id: SessionId,
        reason: &str,
        action: &'static str,
    ) -> Result<(), IdentityError> {
        let user = self.user_id()?;
        let now = self.ports().clock.now();
        let mut tx = self.ports().unit_of_work.begin().await?;
        let mut session = self
            .ports()
            .sessions
            .find_for_update(tx.as_mut(), id)
            .await?
            .filter(|s| s.user_id == user && s.is_live(now))
            .ok_or(IdentityError::NotFound("session"))?;
        session.revoked_at = Some(now);
        session.revoked_reason = Some(reason.to_owned());
        self.ports().sessions.update(tx.as_mut(), &session).await?;
        let entry = NewActivity::new(action, "session", now).resource(id);
        self.identity
            .record(tx.as_mut(), self.caller, entry)
            .await?;
        tx.commit().await?;
        self.identity.forget(None, &[id]).await;
        Ok(())
    }

    /// Asks for a password-reset mail. Always succeeds (202) whether or not the account
    /// exists; only the per-email quota can refuse, and it counts unknown emails too.
    pub async fn forgot_password(&self, email: &str) -> Result<(), IdentityError> {
        let Ok(email) = Email::parse(email) else {
            return Err(
                DomainError::invalid("email", "format", "must be a valid email address").into(),
            );
        };
        self.identity
            .within_quota(
                &format!("identity:forgot:{}", email.as_str()),
                FORGOT_PER_EMAIL,
            )
            .await?;
        let Some(user) = self
            .ports()
            .users
            .find_by_email(&email)
            .await?
            .filter(User::can_sign_in)
        else {
            return Ok(());
        };
        self.send_password_reset(&user).await
    }
}
