//! Accounts: registration, the caller's own profile and password, email verification and
//! password reset, and the administration of users.

use chrono::{DateTime, Utc};
use keel_kernel::mail::SendEmail;
use keel_kernel::validation::FieldErrors;
use keel_kernel::{
    DomainError, ListQuery, NewActivity, NewJob, Page, PermissionSet, RepoError, SessionId,
    Transaction, UserId,
};
use serde_json::json;

use super::sessions::{PASSWORD_MAX_CHARS, check_email_length};
use super::{
    FORGOT_PER_EMAIL, Identity, IdentityService, REGISTER_PER_EMAIL, client_bucket, hashing,
};
use crate::error::IdentityError;
use crate::jobs::SendTokenMail;
use crate::mail;
use crate::model::{
    Email, FULL_NAME_MAX_CHARS, MEMBER_ROLE, OneTimeToken, Role, TokenId, TokenPurpose, User,
    UserStatus,
};
use crate::policy::{USERS_READ, USERS_WRITE};

/// The caller's account with its roles and effective permissions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Me {
    /// The account; its `password_hash` is empty (the hash never leaves the service).
    pub user: User,
    /// Granted roles.
    pub roles: Vec<Role>,
    /// What the caller may do right now (narrowed by the API key's scopes, if one is used).
    pub permissions: PermissionSet,
}

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

/// An account with its roles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserWithRoles {
    /// The account.
    pub user: User,
    /// Its roles.
    pub roles: Vec<Role>,
}

/// An administrator's change to an account; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserPatch {
    /// New display name; `Some(None)` clears it.
    pub full_name: Option<Option<String>>,
    /// New status.
    pub status: Option<UserStatus>,
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
            .map_err(hashing)?;
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

    /// Asks for a password-reset mail. Always succeeds (202) whether or not the account
    /// exists; only the per-email quota can refuse, and it counts unknown emails too.
    pub async fn forgot_password(&self, email: &str) -> Result<(), IdentityError> {
        check_email_length(email)?;
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

    pub(super) async fn own_account(&self) -> Result<User, IdentityError> {
        let user = self.user_id()?;
        self.ports()
            .users
            .find(user)
            .await?
            .ok_or(IdentityError::NotFound("user"))
    }

    /// The caller's account. Authenticating the request has just cached the account and its
    /// roles, so while that cache is warm this reads no database.
    pub async fn me(&self) -> Result<Me, IdentityError> {
        let (user, roles) = self
            .identity
            .account(self.user_id()?)
            .await?
            .ok_or(IdentityError::NotFound("user"))?;
        let permissions = self.caller.actor.permissions().cloned().unwrap_or_default();
        Ok(Me {
            user,
            roles,
            permissions,
        })
    }

    /// Changes the caller's display name (`None` clears it).
    pub async fn update_me(&self, full_name: Option<String>) -> Result<Me, IdentityError> {
        self.verified_session()?;
        let id = self.user_id()?;
        let mut errors = FieldErrors::new();
        let full_name = check_full_name(full_name.as_deref(), &mut errors);
        errors.into_result()?;
        let now = self.ports().clock.now();
        let mut tx = self.ports().unit_of_work.begin().await?;
        let mut user = self
            .ports()
            .users
            .find_for_update(tx.as_mut(), id)
            .await?
            .ok_or(IdentityError::NotFound("user"))?;
        if user.full_name != full_name {
            user.full_name = full_name;
            user.updated_at = now;
            self.ports().users.update(tx.as_mut(), &user).await?;
            let entry = NewActivity::new("user.profile_updated", "user", now)
                .resource(id)
                .changes(json!({ "fields": ["full_name"] }));
            self.identity
                .record(tx.as_mut(), self.caller, entry)
                .await?;
            tx.commit().await?;
            // The cached account shows the old name until forgotten.
            self.identity.forget(Some(id), &[]).await;
        } else {
            // Nothing changed: end the transaction before reading on another connection.
            drop(tx);
        }
        self.me().await
    }

    /// Changes the caller's password; every other session of theirs and every outstanding
    /// reset link stops working. Guesses at the current password are counted like failed
    /// logins (per account and client), so a stolen access token is no password oracle.
    pub async fn change_password(&self, current: &str, new: &str) -> Result<(), IdentityError> {
        let session = self.verified_session()?;
        let mut errors = FieldErrors::new();
        for (field, value) in [("current_password", current), ("new_password", new)] {
            if value.chars().count() > PASSWORD_MAX_CHARS {
                errors.add(
                    field,
                    "length",
                    format!("must be at most {PASSWORD_MAX_CHARS} characters long"),
                );
            }
        }
        errors.into_result()?;
        let user = self.own_account().await?;
        // Counted per account, whatever the address: only a holder of the account's token
        // gets here, so nobody else can use this counter to lock the owner out, and a thief
        // rotating addresses gets no fresh guesses.
        let (attempts, gate) = password_proof_counters(user.id);
        let threshold = u64::from(self.settings().login_backoff_after.max(1));
        self.identity.admit(&attempts, &gate, threshold).await?;
        let verification = self
            .ports()
            .hasher
            .verify(current, Some(&user.password_hash))
            .await
            .map_err(hashing)?;
        let mut errors = FieldErrors::new();
        if !verification.matches {
            errors.add(
                "current_password",
                "incorrect",
                "is not your current password",
            );
        }
        self.settings()
            .password
            .check(new, Some(&user.email), "new_password", &mut errors);
        if current == new {
            errors.add(
                "new_password",
                "unchanged",
                "must differ from the current password",
            );
        }
        if verification.matches {
            let _ = self.ports().counters.clear(&attempts).await;
            let _ = self.ports().counters.clear(&gate).await;
        }
        errors.into_result()?;
        let password_hash = self.ports().hasher.hash(new).await.map_err(hashing)?;
        let now = self.ports().clock.now();
        let mut tx = self.ports().unit_of_work.begin().await?;
        // Re-read under locks: a reset, suspension or sign-out that committed while we were
        // hashing wins, and this change (made with what may be a stolen old password) is
        // refused instead of overwriting it.
        let mut current_session = self
            .ports()
            .sessions
            .find_for_update(tx.as_mut(), session)
            .await?
            .filter(|s| s.user_id == user.id && s.is_live(now))
            .ok_or(IdentityError::InvalidToken)?;
        let fresh = self
            .ports()
            .users
            .find_for_update(tx.as_mut(), user.id)
            .await?
            .filter(|u| u.can_sign_in() && u.password_hash == user.password_hash)
            .ok_or(IdentityError::InvalidToken)?;
        // Proving the password re-authenticates this session.
        current_session.authenticated_at = now;
        self.ports()
            .sessions
            .update(tx.as_mut(), &current_session)
            .await?;
        let revoked = self
            .set_password(
                tx.as_mut(),
                fresh,
                password_hash,
                Some(session),
                "password_changed",
                now,
            )
            .await?;
        tx.commit().await?;
        self.identity
            .forget(self.caller.actor.user_id(), &revoked)
            .await;
        // The session that changed it passed any second factor: a guesser holding an old
        // challenge no longer keeps its owner waiting. (A reset does not clear it: whoever
        // reads the mailbox must not win fresh guesses by resetting.)
        let _ = self
            .ports()
            .counters
            .clear(&super::mfa::verify_key(user.id))
            .await;
        Ok(())
    }

    /// Stores a new password hash, revokes sessions (all but `keep`), every outstanding reset
    /// link and every API key (a password changes when someone may have taken the account, and
    /// a key they minted must not outlive that), and records it.
    pub(super) async fn set_password(
        &self,
        tx: &mut dyn Transaction,
        mut user: User,
        password_hash: String,
        keep: Option<SessionId>,
        reason: &'static str,
        now: DateTime<Utc>,
    ) -> Result<Vec<SessionId>, IdentityError> {
        user.password_hash = password_hash;
        user.password_changed_at = now;
        user.updated_at = now;
        self.ports().users.update(tx, &user).await?;
        let revoked = self
            .ports()
            .sessions
            .revoke_all(tx, user.id, keep, reason, now)
            .await?;
        let links_ended = self
            .ports()
            .one_time_tokens
            .consume_all(tx, user.id, TokenPurpose::PasswordReset, now)
            .await?;
        let keys_revoked = self.ports().api_keys.delete_all_for(tx, user.id).await?;
        // Second-factor challenges won with the old password end with it.
        self.ports()
            .one_time_tokens
            .consume_all(tx, user.id, TokenPurpose::MfaChallenge, now)
            .await?;
        let action = if keep.is_some() {
            "auth.password_changed"
        } else {
            "auth.password_reset"
        };
        let entry = NewActivity::new(action, "user", now)
            .resource(user.id)
            .subject(user.id)
            .changes(json!({
                "sessions_revoked": revoked.len(),
                "reset_links_ended": links_ended,
                "api_keys_revoked": keys_revoked,
            }));
        self.identity.record(tx, self.caller, entry).await?;
        Ok(revoked)
    }

    pub(super) async fn issue_one_time_token(
        &self,
        user: &User,
        purpose: TokenPurpose,
        ttl: std::time::Duration,
        action: &'static str,
    ) -> Result<(), IdentityError> {
        let now = self.ports().clock.now();
        let id = TokenId::new();
        // Derived, not random: the mail job names only the token id, and the worker derives
        // the token again under the pepper, which the database never holds.
        let (pepper_id, plain) = self
            .ports()
            .secrets
            .derive(&SendTokenMail::context(purpose, id));
        let (_, digest) = self.ports().secrets.digest(&plain);
        let token = OneTimeToken {
            id,
            user_id: user.id,
            purpose,
            digest,
            expires_at: now + ttl,
            used_at: None,
            created_at: now,
        };
        let mut tx = self.ports().unit_of_work.begin().await?;
        self.ports()
            .one_time_tokens
            .insert(tx.as_mut(), &token)
            .await?;
        let entry = NewActivity::new(action, "user", now)
            .resource(user.id)
            .subject(user.id);
        self.identity
            .record(tx.as_mut(), self.caller, entry)
            .await?;
        // The mail is a job in the same transaction: nothing is sent for a rolled-back
        // request, and a committed one cannot lose its mail (the worker retries delivery).
        let mail = SendTokenMail {
            token: token.id,
            purpose,
            pepper_id,
            to: user.email.as_str().to_owned(),
            ttl_secs: ttl.as_secs(),
        };
        let job = NewJob::of(&mail)
            .map_err(RepoError::from)?
            .caused_by(Some(user.id), &self.caller.origin);
        self.ports().jobs.enqueue(tx.as_mut(), job).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Issues a reset token and enqueues the mail with its link.
    pub(super) async fn send_password_reset(&self, user: &User) -> Result<(), IdentityError> {
        self.issue_one_time_token(
            user,
            TokenPurpose::PasswordReset,
            self.settings().reset_token_ttl,
            "auth.password_reset_requested",
        )
        .await
    }

    pub(super) async fn send_verification(&self, user: &User) -> Result<(), IdentityError> {
        self.issue_one_time_token(
            user,
            TokenPurpose::EmailVerification,
            self.settings().verification_token_ttl,
            "auth.email_verification_requested",
        )
        .await
    }

    /// The unused, unexpired token for `purpose` and the live account it belongs to.
    pub(super) async fn valid_token(
        &self,
        purpose: TokenPurpose,
        token: &str,
        now: DateTime<Utc>,
    ) -> Result<(OneTimeToken, User), IdentityError> {
        let digests = self.ports().secrets.digests(token);
        let found = self
            .ports()
            .one_time_tokens
            .find(purpose, &digests)
            .await?
            .filter(|t| t.used_at.is_none() && t.expires_at > now)
            .ok_or(IdentityError::InvalidOneTimeToken)?;
        let user = self
            .ports()
            .users
            .find(found.user_id)
            .await?
            .filter(|u| u.deleted_at.is_none())
            .ok_or(IdentityError::InvalidOneTimeToken)?;
        Ok((found, user))
    }

    /// Marks the token used in `tx`; fails when a concurrent request used it first.
    pub(super) async fn consume(
        &self,
        tx: &mut dyn Transaction,
        token: &OneTimeToken,
        now: DateTime<Utc>,
    ) -> Result<(), IdentityError> {
        if self
            .ports()
            .one_time_tokens
            .consume(tx, token.id, now)
            .await?
        {
            Ok(())
        } else {
            Err(IdentityError::InvalidOneTimeToken)
        }
    }

    /// Sets a new password with a reset token; the token works once, and every session of the
    /// account ends. A new password that breaks the policy leaves the token usable.
    pub async fn reset_password(&self, token: &str, new: &str) -> Result<(), IdentityError> {
        let now = self.ports().clock.now();
        let (found, user) = self
            .valid_token(TokenPurpose::PasswordReset, token, now)
            .await?;
        let mut errors = FieldErrors::new();
        self.settings()
            .password
            .check(new, Some(&user.email), "new_password", &mut errors);
        errors.into_result()?;
        let password_hash = self.ports().hasher.hash(new).await.map_err(hashing)?;
        let mut tx = self.ports().unit_of_work.begin().await?;
        self.consume(tx.as_mut(), &found, now).await?;
        let user = self
            .ports()
            .users
            .find_for_update(tx.as_mut(), user.id)
            .await?
            .ok_or(IdentityError::InvalidOneTimeToken)?;
        let user_id = user.id;
        let email = user.email.clone();
        let revoked = self
            .set_password(
                tx.as_mut(),
                user,
                password_hash,
                None,
                "password_reset",
                now,
            )
            .await?;
        tx.commit().await?;
        self.identity.forget(Some(user_id), &revoked).await;
        // A successful reset also lifts the backoff of the client that did it.
        self.identity
            .clear_password_attempts(email.as_str(), &client_bucket(self.caller.origin.ip))
            .await;
        Ok(())
    }

    /// Mails the caller a verification link (nothing to do when already verified). Open to
    /// unverified accounts (that is what it is for), not to API keys.
    pub async fn request_email_verification(&self) -> Result<(), IdentityError> {
        self.session_id()?;
        let user = self.own_account().await?;
        if user.email_verified_at.is_some() {
            return Ok(());
        }
        self.identity
            .within_quota(
                &format!("identity:verify:{}", user.id),
                super::VERIFY_PER_USER,
            )
            .await?;
        self.send_verification(&user).await
    }

    /// Confirms an email address with a verification token (works once).
    pub async fn confirm_email(&self, token: &str) -> Result<(), IdentityError> {
        let now = self.ports().clock.now();
        let (found, user) = self
            .valid_token(TokenPurpose::EmailVerification, token, now)
            .await?;
        let mut tx = self.ports().unit_of_work.begin().await?;
        self.consume(tx.as_mut(), &found, now).await?;
        let mut user = self
            .ports()
            .users
            .find_for_update(tx.as_mut(), user.id)
            .await?
            .ok_or(IdentityError::InvalidOneTimeToken)?;
        user.email_verified_at = Some(now);
        if user.status == UserStatus::PendingVerification {
            user.status = UserStatus::Active;
        }
        user.updated_at = now;
        self.ports().users.update(tx.as_mut(), &user).await?;
        let entry = NewActivity::new("auth.email_verified", "user", now)
            .resource(user.id)
            .subject(user.id);
        self.identity
            .record(tx.as_mut(), self.caller, entry)
            .await?;
        tx.commit().await?;
        self.identity.forget(Some(user.id), &[]).await;
        Ok(())
    }

    /// One page of accounts (`users:read`).
    pub async fn list_users(&self, query: ListQuery) -> Result<Page<User>, IdentityError> {
        self.require(&USERS_READ)?;
        Ok(self.ports().users.list(&query).await?)
    }

    /// One account with its roles (`users:read`), deleted or not.
    pub async fn get_user(&self, id: UserId) -> Result<UserWithRoles, IdentityError> {
        self.require(&USERS_READ)?;
        let user = self
            .ports()
            .users
            .find(id)
            .await?
            .ok_or(IdentityError::NotFound("user"))?;
        let roles = self.ports().users.roles_of(id).await?;
        Ok(UserWithRoles { user, roles })
    }

    /// Changes an account's name or status (`users:write`). Suspending or deactivating ends
    /// every session of the account at once.
    pub async fn update_user(
        &self,
        id: UserId,
        patch: UserPatch,
    ) -> Result<UserWithRoles, IdentityError> {
        self.require(&USERS_WRITE)?;
        self.require_outranks(id).await?;
        let mut errors = FieldErrors::new();
        let full_name = patch
            .full_name
            .as_ref()
            .map(|name| check_full_name(name.as_deref(), &mut errors));
        errors.into_result()?;
        let now = self.ports().clock.now();
        let mut tx = self.ports().unit_of_work.begin().await?;
        let mut user = self
            .ports()
            .users
            .find_for_update(tx.as_mut(), id)
            .await?
            .ok_or(IdentityError::NotFound("user"))?;
        let mut changes = serde_json::Map::new();
        let mut revoked = Vec::new();
        if let Some(full_name) = full_name
            && full_name != user.full_name
        {
            changes.insert("full_name".into(), json!({ "changed": true }));
            user.full_name = full_name;
        }
        if let Some(status) = patch.status
            && status != user.status
        {
            // Any status but active takes an administrator's power away (pending verification
            // too: an unverified account holds no permission), so the last one keeps theirs.
            if status != UserStatus::Active {
                self.ensure_not_last_admin(tx.as_mut(), &user).await?;
            }
            changes.insert(
                "status".into(),
                json!({ "from": user.status.as_str(), "to": status.as_str() }),
            );
            user.status = status;
            if !status.can_sign_in() {
                revoked = self
                    .ports()
                    .sessions
                    .revoke_all(tx.as_mut(), id, None, status.as_str(), now)
                    .await?;
            }
        }
        if !changes.is_empty() {
            user.updated_at = now;
            self.ports().users.update(tx.as_mut(), &user).await?;
            let entry = NewActivity::new("user.updated", "user", now)
                .resource(id)
                .subject(id)
                .changes(serde_json::Value::Object(changes));
            self.identity
                .record(tx.as_mut(), self.caller, entry)
                .await?;
            tx.commit().await?;
            self.identity.forget(Some(id), &revoked).await;
        } else {
            // Nothing changed: end the transaction before reading on another connection.
            drop(tx);
        }
        self.get_user(id).await
    }

    /// Soft-deletes an account (`users:write`); it cannot sign in until restored.
    pub async fn delete_user(&self, id: UserId) -> Result<(), IdentityError> {
        self.require(&USERS_WRITE)?;
        self.require_outranks(id).await?;
        let now = self.ports().clock.now();
        let mut tx = self.ports().unit_of_work.begin().await?;
        let mut user = self
            .ports()
            .users
            .find_for_update(tx.as_mut(), id)
            .await?
            .filter(|u| u.deleted_at.is_none())
            .ok_or(IdentityError::NotFound("user"))?;
        self.ensure_not_last_admin(tx.as_mut(), &user).await?;
        user.deleted_at = Some(now);
        user.updated_at = now;
        self.ports().users.update(tx.as_mut(), &user).await?;
        let revoked = self
            .ports()
            .sessions
            .revoke_all(tx.as_mut(), id, None, "account_deleted", now)
            .await?;
        let entry = NewActivity::new("user.deleted", "user", now)
            .resource(id)
            .subject(id);
        self.identity
            .record(tx.as_mut(), self.caller, entry)
            .await?;
        tx.commit().await?;
        self.identity.forget(Some(id), &revoked).await;
        Ok(())
    }

    /// Restores a soft-deleted account (`users:write`).
    pub async fn restore_user(&self, id: UserId) -> Result<UserWithRoles, IdentityError> {
        self.require(&USERS_WRITE)?;
        self.require_outranks(id).await?;
        let now = self.ports().clock.now();
        let mut tx = self.ports().unit_of_work.begin().await?;
        let mut user = self
            .ports()
            .users
            .find_for_update(tx.as_mut(), id)
            .await?
            .ok_or(IdentityError::NotFound("user"))?;
        if user.deleted_at.is_some() {
            user.deleted_at = None;
            user.updated_at = now;
            self.ports().users.update(tx.as_mut(), &user).await?;
            let entry = NewActivity::new("user.restored", "user", now)
                .resource(id)
                .subject(id);
            self.identity
                .record(tx.as_mut(), self.caller, entry)
                .await?;
            tx.commit().await?;
            self.identity.forget(Some(id), &[]).await;
        } else {
            drop(tx);
        }
        self.get_user(id).await
    }

    /// Creates an active, verified administrator (system caller: `api create-admin` and the
    /// `bootstrap.admin_*` settings).
    pub async fn create_admin(&self, email: &str, password: &str) -> Result<User, IdentityError> {
        self.require_system()?;
        let mut errors = FieldErrors::new();
        let parsed = Email::parse(email)
            .map_err(|message| errors.add("email", "format", message))
            .ok();
        self.settings()
            .password
            .check(password, parsed.as_ref(), "password", &mut errors);
        errors.into_result()?;
        let Some(email) = parsed else {
            return Err(
                DomainError::invalid("email", "format", "must be a valid email address").into(),
            );
        };
        if self.ports().users.find_by_email(&email).await?.is_some() {
            return Err(IdentityError::EmailTaken);
        }
        let password_hash = self
            .ports()
            .hasher
            .hash(password)
            .await
            .map_err(super::hashing)?;
        let admin = self.admin_role().await?;
        let member = self
            .ports()
            .roles
            .find_by_name(MEMBER_ROLE)
            .await?
            .ok_or_else(|| DomainError::internal("the member role is missing"))?;
        let now = self.ports().clock.now();
        let user = User {
            id: UserId::new(),
            email,
            full_name: None,
            password_hash,
            status: UserStatus::Active,
            email_verified_at: Some(now),
            password_changed_at: now,
            created_at: now,
            updated_at: now,
            deleted_at: None,
        };
        let mut tx = self.ports().unit_of_work.begin().await?;
        self.ports()
            .users
            .insert(tx.as_mut(), &user)
            .await
            .map_err(|e| match e {
                RepoError::UniqueViolation { .. } => IdentityError::EmailTaken,
                other => other.into(),
            })?;
        for role in [&admin, &member] {
            self.ports()
                .users
                .grant_role(tx.as_mut(), user.id, role.id, now)
                .await?;
        }
        let entry = NewActivity::new("user.admin_created", "user", now)
            .resource(user.id)
            .subject(user.id)
            .changes(json!({ "email": user.email.as_str() }));
        self.identity
            .record(tx.as_mut(), self.caller, entry)
            .await?;
        tx.commit().await?;
        Ok(user)
    }

    /// Creates the configured first administrator unless an active administrator exists.
    /// Returns the account when one was created.
    pub async fn bootstrap_admin(
        &self,
        email: &str,
        password: &str,
    ) -> Result<Option<User>, IdentityError> {
        let admin = self.admin_role().await?;
        let mut tx = self.ports().unit_of_work.begin().await?;
        let admins = self
            .ports()
            .users
            .count_active_with_role(tx.as_mut(), admin.id)
            .await?;
        drop(tx);
        if admins > 0 {
            return Ok(None);
        }
        self.create_admin(email, password).await.map(Some)
    }
}

impl Identity {
    /// The mail of a [`SendTokenMail`] job, with the link's token derived again (the worker
    /// runs this; the job itself holds no usable secret).
    pub fn compose_token_mail(&self, job: &SendTokenMail) -> Result<SendEmail, IdentityError> {
        let token = self
            .ports
            .secrets
            .derive_with(
                &job.pepper_id,
                &SendTokenMail::context(job.purpose, job.token),
            )
            .ok_or_else(|| {
                DomainError::internal(format!(
                    "pepper `{}` of a pending link mail is no longer configured",
                    job.pepper_id
                ))
            })?;
        let ttl = std::time::Duration::from_secs(job.ttl_secs);
        let public_url = &self.settings.public_url;
        let mail = mail::LinkMail {
            templates: self.ports.templates.as_ref(),
            to: &job.to,
            public_url,
            token: &token,
            ttl,
        };
        let email = match job.purpose {
            TokenPurpose::PasswordReset => mail.password_reset(),
            TokenPurpose::EmailVerification => mail.email_verification(),
            TokenPurpose::MfaChallenge => {
                return Err(DomainError::internal("a sign-in challenge is never mailed").into());
            }
        }
        .map_err(DomainError::internal)?;
        Ok(SendEmail {
            email,
            dedupe_key: keel_kernel::jobs::Job::dedupe_key(job).unwrap_or_default(),
        })
    }
}

/// The counters of password proofs by a signed-in account (a password change, turning a second
/// factor off): one budget per account, so switching endpoints gives no fresh guesses.
pub(super) fn password_proof_counters(user: keel_kernel::UserId) -> (String, String) {
    (
        format!("identity:password-change-attempts:{user}"),
        format!("identity:password-change-gate:{user}"),
    )
}
