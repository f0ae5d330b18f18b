//! Sessions: sign-in, refresh-token rotation, sign-out, the session list, and authenticating
//! a bearer token or an API key into an actor.

use std::time::Duration;

use chrono::{DateTime, Utc};
use keel_kernel::{
    Actor, Caller, DomainError, NewActivity, Origin, PermissionSet, SessionId, Transaction, UserId,
};
use serde_json::json;

use super::{Identity, IdentityService, REFRESH_PER_SESSION, client_bucket, hashing};
use crate::error::IdentityError;
use crate::model::{EMAIL_MAX_CHARS, Email, RefreshToken, Session, TokenId, User};

/// Longest password looked at: longer input cannot match any stored password (the policy's
/// maximum is at most this), so it is refused before any hashing.
pub(super) const PASSWORD_MAX_CHARS: usize = 1024;

/// Longest refresh token looked at (Keel's are 43 characters).
const TOKEN_MAX_CHARS: usize = 512;

/// Failed logins are counted over this window.
const FAILURE_WINDOW: Duration = Duration::from_secs(3600);

/// The longest a login backoff lasts.
const MAX_BACKOFF: Duration = Duration::from_secs(15 * 60);

/// API keys record their use at most this often (a write per request would be wasteful).
const TOUCH_EVERY: chrono::TimeDelta = chrono::TimeDelta::minutes(1);

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

fn attempts_key(email: &str, client: &str) -> String {
    format!("identity:password-attempts:{email}:{client}")
}

fn gate_key(email: &str, client: &str) -> String {
    format!("identity:password-gate:{email}:{client}")
}

fn account_attempts_key(email: &str) -> String {
    format!("identity:password-attempts:{email}")
}

fn account_gate_key(email: &str) -> String {
    format!("identity:password-gate:{email}")
}

fn known_key(email: &str, client: &str) -> String {
    format!("identity:known-client:{email}:{client}")
}

/// Attempts on one account from every client together, as a multiple of
/// `auth.login_backoff_after`, before unknown clients are slowed down (distributed guessing).
pub(super) const ACCOUNT_ATTEMPTS_FACTOR: u64 = 10;

/// How long a client the account signed in from counts as known.
const KNOWN_CLIENT_FOR: Duration = Duration::from_secs(30 * 24 * 3600);

/// 1 s at the threshold, doubling with each further attempt, capped.
fn backoff(attempts_past_threshold: u64) -> Duration {
    let exponent = u32::try_from(attempts_past_threshold.min(20)).unwrap_or(20);
    Duration::from_secs(1u64 << exponent).min(MAX_BACKOFF)
}

/// Refuses an email longer than any address can be, before it reaches a counter or a store.
pub(super) fn check_email_length(raw: &str) -> Result<(), IdentityError> {
    if raw.chars().count() > EMAIL_MAX_CHARS {
        return Err(DomainError::invalid(
            "email",
            "length",
            format!("must be at most {EMAIL_MAX_CHARS} characters long"),
        )
        .into());
    }
    Ok(())
}

/// What the successor of a refresh token is derived from: the presented token itself, which
/// the database never holds, so neither a copy of it (even with the peppers) nor anyone without
/// the old token can rebuild a successor.
fn successor_context(presented: &str) -> String {
    format!("refresh-successor:{presented}")
}

fn truncate(value: Option<&str>, max: usize) -> Option<String> {
    value.map(|v| v.chars().take(max).collect())
}

impl Identity {
    /// Counts an attempt to prove `email`'s password from `client` BEFORE the password is
    /// checked, so concurrent attempts cannot outrun the count.
    ///
    /// Per account *and* client: below `auth.login_backoff_after` attempts every one is
    /// checked; from there on one attempt per backoff step (1 s, 2 s, 4 s, … up to 15 min) is
    /// let through and the rest get 429 without being counted. A stranger hammering an account
    /// therefore slows only their own address. Per account, from every client together: past
    /// [`ACCOUNT_ATTEMPTS_FACTOR`] × that threshold in an hour (a distributed guess), clients
    /// the account has not signed in from recently get the same stepped backoff, while the
    /// owner's known clients keep their own counters. Fails open (logged by the adapter) when
    /// the counter store is down.
    pub(super) async fn admit_password_attempt(
        &self,
        email: &str,
        client: &str,
    ) -> Result<(), IdentityError> {
        let threshold = u64::from(self.settings.login_backoff_after.max(1));
        self.admit(
            &attempts_key(email, client),
            &gate_key(email, client),
            threshold,
        )
        .await?;
        let counters = &self.ports.counters;
        let known = matches!(counters.peek(&known_key(email, client)).await, Ok(Some(_)));
        if !known {
            self.admit(
                &account_attempts_key(email),
                &account_gate_key(email),
                threshold * ACCOUNT_ATTEMPTS_FACTOR,
            )
            .await?;
        }
        Ok(())
    }

    /// Counts an attempt on `attempts` and lets it through while under `threshold`, or when it
    /// opens the gate; a shut gate is answered before anything is counted.
    pub(super) async fn admit(
        &self,
        attempts: &str,
        gate: &str,
        threshold: u64,
    ) -> Result<(), IdentityError> {
        let counters = &self.ports.counters;
        let shut = |ttl: Duration| -> IdentityError {
            DomainError::RateLimited {
                retry_after: ttl.max(Duration::from_secs(1)),
            }
            .into()
        };
        if let Ok(Some(open)) = counters.peek(gate).await {
            return Err(shut(open.ttl));
        }
        let Ok(count) = counters.hit(attempts, FAILURE_WINDOW).await else {
            return Ok(());
        };
        if count.hits < threshold {
            return Ok(());
        }
        // Whoever creates the gate (hits == 1) is checked; the gate then stays shut for the
        // backoff step, and everyone else arriving meanwhile is refused.
        match counters.hit(gate, backoff(count.hits - threshold)).await {
            Ok(state) if state.hits > 1 => Err(shut(state.ttl)),
            _ => Ok(()),
        }
    }

    /// Forgets the attempts of `email` from `client` after a proof succeeded, and remembers
    /// the client as one the account uses.
    pub(super) async fn clear_password_attempts(&self, email: &str, client: &str) {
        let counters = &self.ports.counters;
        let _ = counters.clear(&attempts_key(email, client)).await;
        let _ = counters.clear(&gate_key(email, client)).await;
        let known = known_key(email, client);
        let _ = counters.hit(&known, KNOWN_CLIENT_FOR).await;
        let _ = counters.expire(&known, KNOWN_CLIENT_FOR).await;
    }

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
            authenticated_at: now,
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

    pub(super) async fn new_refresh_token(
        &self,
        tx: &mut dyn Transaction,
        session: SessionId,
        now: DateTime<Utc>,
    ) -> Result<String, IdentityError> {
        let plain = self.ports.secrets.token().map_err(DomainError::Internal)?;
        self.store_refresh_token(tx, TokenId::new(), session, &plain, now)
            .await?;
        Ok(plain)
    }

    pub(super) async fn store_refresh_token(
        &self,
        tx: &mut dyn Transaction,
        id: TokenId,
        session: SessionId,
        plain: &str,
        now: DateTime<Utc>,
    ) -> Result<(), IdentityError> {
        let (_, digest) = self.ports.secrets.digest(plain);
        self.ports
            .sessions
            .insert_refresh_token(
                tx,
                &RefreshToken {
                    id,
                    session_id: session,
                    digest,
                    created_at: now,
                    rotated_at: None,
                    replaced_by: None,
                },
            )
            .await?;
        Ok(())
    }

    pub(super) fn tokens(
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
        let Some(claims) = self.ports.access_tokens.verify(token) else {
            // Not Keel's: perhaps a configured identity provider's.
            return self.authenticate_provider_token(token).await;
        };
        if !self.session_is_live(claims.session, claims.user).await? {
            return Err(IdentityError::InvalidToken);
        }
        let state = self
            .user_state(claims.user)
            .await?
            .filter(|s| s.can_sign_in)
            .ok_or(IdentityError::InvalidToken)?;
        if !state.verified {
            return Ok(Actor::Unverified {
                id: claims.user,
                session: claims.session,
            });
        }
        Ok(Actor::User {
            id: claims.user,
            session: claims.session,
            permissions: state.permissions(),
        })
    }

    /// The actor behind an API key (`keel_<prefix>_<secret>`): its owner, with the owner's
    /// current permissions narrowed to the key's scopes.
    pub async fn authenticate_api_key(&self, presented: &str) -> Result<Actor, IdentityError> {
        let (prefix, secret) =
            crate::model::split_api_key(presented).ok_or(IdentityError::InvalidToken)?;
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
        if super::api_keys::effective_expiry(&key, self.settings.api_key_max_ttl) <= now {
            return Err(IdentityError::InvalidToken);
        }
        let state = self
            .user_state(key.user_id)
            .await?
            .filter(|s| s.can_sign_in)
            .ok_or(IdentityError::InvalidToken)?;
        if !state.verified {
            return Err(DomainError::EMAIL_UNVERIFIED.into());
        }
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
    /// Signs in with email and password. Unknown email and wrong password take the same path
    /// and give the same error. Every attempt is counted before the password is checked (see
    /// [`Identity::admit_password_attempt`]): past `login_backoff_after` attempts from one
    /// client for one address, further attempts wait an exponentially growing time (429).
    pub async fn login(&self, email: &str, password: &str) -> Result<Tokens, IdentityError> {
        check_email_length(email)?;
        if password.chars().count() > PASSWORD_MAX_CHARS {
            return Err(DomainError::invalid(
                "password",
                "length",
                format!("must be at most {PASSWORD_MAX_CHARS} characters long"),
            )
            .into());
        }
        let normalised = email.trim().to_lowercase();
        let client = client_bucket(self.caller.origin.ip);
        self.identity
            .admit_password_attempt(&normalised, &client)
            .await?;

        let user = match Email::parse(&normalised) {
            Ok(email) => self.ports().users.find_by_email(&email).await?,
            Err(_) => None,
        };
        let verification = self
            .ports()
            .hasher
            .verify(password, user.as_ref().map(|u| u.password_hash.as_str()))
            .await
            .map_err(hashing)?;
        let now = self.ports().clock.now();
        let user = match user {
            Some(user) if verification.matches => user,
            other => {
                let mut entry = NewActivity::new("auth.login_failed", "user", now)
                    .changes(json!({ "email": normalised }));
                if let Some(user) = other {
                    entry = entry.resource(user.id).subject(user.id);
                }
                self.identity.record_alone(self.caller, entry).await?;
                return Err(IdentityError::InvalidCredentials);
            }
        };
        self.identity
            .clear_password_attempts(&normalised, &client)
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
            Some(self.ports().hasher.hash(password).await.map_err(hashing)?)
        } else {
            None
        };
        // A second factor on: the password alone opens nothing (401 with a challenge).
        self.challenge_if_enrolled(&user, rehash.as_deref(), now)
            .await?;

        let mut tx = self.ports().unit_of_work.begin().await?;
        // Re-read under a lock: a reset, suspension or deletion that committed while we were
        // hashing wins over this sign-in (with what may be the old password).
        let mut user = self
            .ports()
            .users
            .find_for_update(tx.as_mut(), user.id)
            .await?
            .filter(|u| u.can_sign_in() && u.password_hash == user.password_hash)
            .ok_or(IdentityError::InvalidCredentials)?;
        if let Some(password_hash) = rehash {
            // Parameters changed since this hash was made: upgrade it while we know the password.
            user.password_hash = password_hash;
            self.ports().users.update(tx.as_mut(), &user).await?;
        }
        self.open_session(tx, &user, now, serde_json::Value::Null)
            .await
    }

    /// The end of a sign-in (in `tx`, which already holds the account's lock): a session,
    /// its `auth.login` entry (`changes` says how the sign-in was proved), the commit, tokens.
    pub(super) async fn open_session(
        &self,
        mut tx: Box<dyn keel_kernel::Transaction>,
        user: &User,
        now: DateTime<Utc>,
        changes: serde_json::Value,
    ) -> Result<Tokens, IdentityError> {
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
        let mut entry = NewActivity::new("auth.login", "session", now)
            .resource(session.id)
            .subject(user.id);
        if !changes.is_null() {
            entry = entry.changes(changes);
        }
        self.identity.record(tx.as_mut(), &as_user, entry).await?;
        tx.commit().await?;
        self.identity.tokens(user.id, session.id, refresh, now)
    }

    /// Exchanges a refresh token for a new pair. Every read runs in the exchange's own
    /// transaction, under the session's lock, and the rotation is conditional, so concurrent
    /// exchanges of one token serialise instead of tying up connections. The same token
    /// presented again within `auth.refresh_token_grace` (two tabs refreshing at once), while
    /// its successor is unused, gets that same successor; presented later, it revokes the whole
    /// session (someone else holds a copy) and is refused.
    pub async fn refresh(&self, refresh_token: &str) -> Result<Tokens, IdentityError> {
        if refresh_token.is_empty() || refresh_token.len() > TOKEN_MAX_CHARS {
            return Err(IdentityError::InvalidToken);
        }
        let digests = self.ports().secrets.digests(refresh_token);
        let now = self.ports().clock.now();
        let sessions = &self.ports().sessions;
        // Unknown tokens and over-quota sessions are refused before any transaction: a stream
        // of random tokens must not queue for the (SQLite) write lock.
        let found = sessions
            .lookup_refresh_token(&digests)
            .await?
            .ok_or(IdentityError::InvalidToken)?;
        self.identity
            .within_quota(
                &format!("identity:refresh:{}", found.session_id),
                REFRESH_PER_SESSION,
            )
            .await?;
        let mut tx = self.ports().unit_of_work.begin().await?;
        let mut session = sessions
            .find_for_update(tx.as_mut(), found.session_id)
            .await?
            .ok_or(IdentityError::InvalidToken)?;
        // Re-read under the session lock: a concurrent refresh may have rotated it meanwhile.
        let token = sessions
            .find_refresh_token_by_id(tx.as_mut(), found.id)
            .await?
            .ok_or(IdentityError::InvalidToken)?;

        if let Some(rotated_at) = token.rotated_at {
            if session.can_refresh(now)
                && let Some(successor) = self
                    .unused_successor(tx.as_mut(), &token, refresh_token, rotated_at, now)
                    .await?
            {
                // Recorded, so a thief racing the owner within the window leaves a trace.
                let entry = NewActivity::new("auth.refresh_token_regranted", "session", now)
                    .resource(session.id)
                    .subject(session.user_id)
                    .changes(json!({ "seconds_after_rotation": (now - rotated_at).num_seconds() }));
                self.identity
                    .record(tx.as_mut(), self.caller, entry)
                    .await?;
                tx.commit().await?;
                return self
                    .identity
                    .tokens(session.user_id, session.id, successor, now);
            }
            if session.revoked_at.is_none() {
                session.revoked_at = Some(now);
                session.revoked_reason = Some("refresh_token_reuse".to_owned());
                sessions.update(tx.as_mut(), &session).await?;
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
            .find_in(tx.as_mut(), session.user_id)
            .await?
            .filter(User::can_sign_in)
            .ok_or(IdentityError::InvalidToken)?;

        let successor = TokenId::new();
        if !sessions
            .mark_rotated(tx.as_mut(), token.id, successor, now)
            .await?
        {
            // Another exchange rotated it between our read and our write; it won.
            return Err(IdentityError::InvalidToken);
        }
        let (_, refresh) = self
            .ports()
            .secrets
            .derive(&successor_context(refresh_token));
        self.identity
            .store_refresh_token(tx.as_mut(), successor, session.id, &refresh, now)
            .await?;
        session.last_used_at = now;
        session.idle_expires_at = (now + self.settings().refresh_idle_ttl).min(session.expires_at);
        sessions.update(tx.as_mut(), &session).await?;
        tx.commit().await?;
        self.identity.tokens(user.id, session.id, refresh, now)
    }

    /// The successor of a token rotated within the grace window, if nobody used it yet.
    pub(super) async fn unused_successor(
        &self,
        tx: &mut dyn Transaction,
        token: &RefreshToken,
        presented: &str,
        rotated_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Option<String>, IdentityError> {
        let grace = chrono::TimeDelta::from_std(self.settings().refresh_grace)
            .unwrap_or(chrono::TimeDelta::zero());
        let Some(next) = token.replaced_by.filter(|_| now - rotated_at <= grace) else {
            return Ok(None);
        };
        let Some(next) = self
            .ports()
            .sessions
            .find_refresh_token_by_id(tx, next)
            .await?
            .filter(|next| next.rotated_at.is_none())
        else {
            return Ok(None);
        };
        let (_, plain) = self.ports().secrets.derive(&successor_context(presented));
        // A pepper rotated within the window derives another token: treat it as no grace.
        Ok(self
            .ports()
            .secrets
            .digests(&plain)
            .contains(&next.digest)
            .then_some(plain))
    }

    /// Ends the caller's session: its access and refresh tokens stop working.
    pub async fn logout(&self) -> Result<(), IdentityError> {
        let session = self.session_id()?;
        // Signing out of a session that has already ended (revoked elsewhere, while this
        // token was still cached as live) has nothing left to do: done, not 404.
        match self.revoke_own(session, "logout", "auth.logout").await {
            Err(IdentityError::NotFound(_)) => Ok(()),
            other => other,
        }
    }

    /// Ends every session and every API key of the caller (a signed-in session only: not with
    /// an API key).
    pub async fn logout_all(&self) -> Result<(), IdentityError> {
        self.verified_session()?;
        let user = self.user_id()?;
        let now = self.ports().clock.now();
        let mut tx = self.ports().unit_of_work.begin().await?;
        let revoked = self
            .ports()
            .sessions
            .revoke_all(tx.as_mut(), user, None, "logout_all", now)
            .await?;
        // Signing out everywhere is what someone does who fears another holds the account:
        // keys minted meanwhile go too.
        let keys_revoked = self
            .ports()
            .api_keys
            .delete_all_for(tx.as_mut(), user)
            .await?;
        let entry = NewActivity::new("auth.logout_all", "user", now)
            .resource(user)
            .changes(
                json!({ "sessions_revoked": revoked.len(), "api_keys_revoked": keys_revoked }),
            );
        self.identity
            .record(tx.as_mut(), self.caller, entry)
            .await?;
        tx.commit().await?;
        self.identity.forget(None, &revoked).await;
        Ok(())
    }

    /// The caller's live sessions, newest first.
    pub async fn sessions(&self) -> Result<Vec<SessionView>, IdentityError> {
        self.verified_session()?;
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
        self.verified_session()?;
        self.revoke_own(session, "revoked_by_user", "auth.session_revoked")
            .await
    }

    pub(super) async fn revoke_own(
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
}
