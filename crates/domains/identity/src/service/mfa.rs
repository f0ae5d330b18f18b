//! Multi-factor authentication: a TOTP authenticator (RFC 6238) with single-use recovery
//! codes, asked for as a second sign-in step.
//!
//! The flow: `enrol_totp` (a fresh password proof) gives the secret once, as an `otpauth://`
//! URI; `confirm_totp` with a first code turns it on and gives ten recovery codes once. From
//! then on a right password answers `auth.mfa_required` with a five-minute challenge, and
//! `verify_mfa` with the challenge and a code (or a recovery code) opens the session.

use chrono::{DateTime, Utc};
use keel_kernel::mail::SendEmail;
use keel_kernel::throttle::Quota;
use keel_kernel::{DomainError, NewActivity, NewJob, RepoError, Transaction, UserId};
use serde_json::json;
use totp_rs::{Algorithm, TOTP};

use super::{IdentityService, Tokens, hashing};
use crate::error::IdentityError;
use crate::mail;
use crate::model::{OneTimeToken, TokenId, TokenPurpose, TotpFactor, User};
use crate::policy::USERS_WRITE;

/// Seconds per TOTP step.
const STEP_SECONDS: i64 = 30;
/// Steps either side of now whose codes are accepted (clock drift, a code typed at the edge).
const DRIFT_STEPS: i64 = 1;
/// Recovery codes issued at a time.
const RECOVERY_CODES: usize = 10;
/// How long a sign-in challenge may be answered.
const CHALLENGE_TTL: chrono::TimeDelta = chrono::TimeDelta::minutes(5);
/// Second-factor attempts per account: past this, 429 until the window ends.
const VERIFY_PER_USER: Quota = Quota {
    limit: 10,
    window: std::time::Duration::from_secs(15 * 60),
};
/// Longest code or challenge looked at.
const INPUT_MAX_CHARS: usize = 128;

/// A started enrolment: shown once, never stored in the clear.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TotpEnrolment {
    /// The shared secret, base32 (for typing into an authenticator).
    pub secret: String,
    /// The same as an `otpauth://totp/…` URI (for a QR code).
    pub otpauth_uri: String,
}

/// Where the caller's second factor stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MfaStatus {
    /// Sign-in asks for a code.
    pub enabled: bool,
    /// Unused recovery codes.
    pub recovery_codes_left: u32,
}

/// What answers a sign-in challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecondFactor {
    /// A six-digit code from the authenticator.
    Code(String),
    /// One of the recovery codes (single use).
    RecoveryCode(String),
}

/// A recovery code as typed: case, spaces and dashes do not matter.
fn normalise_recovery_code(code: &str) -> String {
    code.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

fn step_of(at: DateTime<Utc>) -> i64 {
    at.timestamp().div_euclid(STEP_SECONDS)
}

impl IdentityService<'_> {
    /// The TOTP generator of `factor`: its secret is derived under the pepper, never stored.
    fn totp(&self, factor: &TotpFactor, account: &str) -> Result<TOTP, IdentityError> {
        let secret = self
            .ports()
            .secrets
            .derive_with(&factor.pepper_id, &totp_context(factor))
            .ok_or_else(|| {
                DomainError::internal(format!(
                    "pepper `{}` of an authenticator is no longer configured",
                    factor.pepper_id
                ))
            })?;
        let bytes = secret.as_bytes();
        let secret = bytes[..bytes.len().min(32)].to_vec();
        TOTP::new(
            Algorithm::SHA1,
            6,
            0,
            STEP_SECONDS as u64,
            secret,
            Some(self.settings().mfa_issuer.clone()),
            // The URI format reserves `:` between issuer and account.
            account.replace(':', ""),
        )
        .map_err(|e| DomainError::internal(format!("TOTP parameters: {e}")).into())
    }

    /// The step of the newest code `code` matches after `factor.last_step`, within the drift.
    fn matching_step(
        &self,
        factor: &TotpFactor,
        code: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<i64>, IdentityError> {
        let code = code.trim();
        if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Ok(None);
        }
        let totp = self.totp(factor, "account")?;
        let current = step_of(now);
        Ok(((current - DRIFT_STEPS)..=(current + DRIFT_STEPS))
            .rev()
            .filter(|step| *step > factor.last_step)
            .find(|step| {
                u64::try_from(step * STEP_SECONDS).is_ok_and(|time| totp.check(code, time))
            }))
    }

    /// The caller's second-factor status.
    pub async fn mfa_status(&self) -> Result<MfaStatus, IdentityError> {
        let user = self.user_id()?;
        let enabled = self
            .ports()
            .mfa
            .find(user)
            .await?
            .is_some_and(|f| f.is_active());
        let recovery_codes_left = if enabled {
            self.ports().mfa.recovery_codes_left(user).await?
        } else {
            0
        };
        Ok(MfaStatus {
            enabled,
            recovery_codes_left,
        })
    }

    /// Starts (or restarts) enrolling an authenticator: a signed-in session whose password was
    /// proved within `auth.reauthentication_window`, and no authenticator already on.
    pub async fn enrol_totp(&self) -> Result<TotpEnrolment, IdentityError> {
        let user = self.own_account().await?;
        let now = self.ports().clock.now();
        let mut tx = self.ports().unit_of_work.begin().await?;
        self.require_recent_password(tx.as_mut(), user.id, now)
            .await?;
        if self
            .ports()
            .mfa
            .find_for_update(tx.as_mut(), user.id)
            .await?
            .is_some_and(|f| f.is_active())
        {
            return Err(IdentityError::MfaAlreadyEnabled);
        }
        let seed = self
            .ports()
            .secrets
            .token()
            .map_err(DomainError::Internal)?;
        let mut factor = TotpFactor {
            user_id: user.id,
            pepper_id: String::new(),
            seed,
            confirmed_at: None,
            last_step: 0,
            created_at: now,
        };
        factor.pepper_id = self.ports().secrets.derive(&totp_context(&factor)).0;
        self.ports().mfa.save(tx.as_mut(), &factor).await?;
        let totp = self.totp(&factor, user.email.as_str())?;
        tx.commit().await?;
        Ok(TotpEnrolment {
            secret: totp.get_secret_base32(),
            otpauth_uri: totp.get_url(),
        })
    }

    /// Turns the enrolled authenticator on with a first code from it; returns the recovery
    /// codes, shown this once.
    ///
    /// Like a password change it ends every other session and every API key: from then on
    /// whatever acts for the account passed the second factor (a role in
    /// `auth.mfa.required_roles` is never used by something that did not).
    pub async fn confirm_totp(&self, code: &str) -> Result<Vec<String>, IdentityError> {
        let session = self.verified_session()?;
        let user = self.own_account().await?;
        self.identity
            .within_quota(&verify_key(user.id), VERIFY_PER_USER)
            .await?;
        let now = self.ports().clock.now();
        let mut tx = self.ports().unit_of_work.begin().await?;
        let mut factor = self
            .ports()
            .mfa
            .find_for_update(tx.as_mut(), user.id)
            .await?
            .ok_or(IdentityError::MfaNotEnrolled)?;
        if factor.is_active() {
            return Err(IdentityError::MfaAlreadyEnabled);
        }
        let step = self
            .matching_step(&factor, code, now)?
            .ok_or(IdentityError::InvalidMfaCode)?;
        factor.confirmed_at = Some(now);
        factor.last_step = step;
        self.ports().mfa.save(tx.as_mut(), &factor).await?;
        let codes = self
            .replace_recovery_codes(tx.as_mut(), user.id, now)
            .await?;
        let revoked = self
            .ports()
            .sessions
            .revoke_all(tx.as_mut(), user.id, Some(session), "mfa_enabled", now)
            .await?;
        let keys_revoked = self
            .ports()
            .api_keys
            .delete_all_for(tx.as_mut(), user.id)
            .await?;
        let entry = NewActivity::new("auth.mfa_enabled", "user", now)
            .resource(user.id)
            .subject(user.id)
            .changes(json!({
                "sessions_revoked": revoked.len(),
                "api_keys_revoked": keys_revoked,
            }));
        self.identity
            .record(tx.as_mut(), self.caller, entry)
            .await?;
        self.notify(tx.as_mut(), &user, "mfa_enabled", now).await?;
        tx.commit().await?;
        self.identity.forget(Some(user.id), &revoked).await;
        let _ = self.ports().counters.clear(&verify_key(user.id)).await;
        Ok(codes)
    }

    /// New recovery codes for the caller (the old ones stop working): a fresh password proof
    /// and an authenticator that is on.
    pub async fn regenerate_recovery_codes(&self) -> Result<Vec<String>, IdentityError> {
        let user = self.own_account().await?;
        let now = self.ports().clock.now();
        let mut tx = self.ports().unit_of_work.begin().await?;
        self.require_recent_password(tx.as_mut(), user.id, now)
            .await?;
        self.ports()
            .mfa
            .find_for_update(tx.as_mut(), user.id)
            .await?
            .filter(TotpFactor::is_active)
            .ok_or(IdentityError::MfaNotEnrolled)?;
        let codes = self
            .replace_recovery_codes(tx.as_mut(), user.id, now)
            .await?;
        let entry = NewActivity::new("auth.mfa_recovery_codes_replaced", "user", now)
            .resource(user.id)
            .subject(user.id);
        self.identity
            .record(tx.as_mut(), self.caller, entry)
            .await?;
        self.notify(tx.as_mut(), &user, "mfa_recovery_codes_replaced", now)
            .await?;
        tx.commit().await?;
        Ok(codes)
    }

    /// Turns the caller's second factor off; needs the current password (checked now, not a
    /// session's old proof): a stolen session alone cannot remove it.
    pub async fn disable_totp(&self, password: &str) -> Result<(), IdentityError> {
        self.verified_session()?;
        let user = self.own_account().await?;
        self.check_current_password(&user, password).await?;
        self.remove_mfa(&user, "auth.mfa_disabled", "mfa_disabled")
            .await
    }

    /// An administrator's reset for someone who lost their authenticator and codes
    /// (`users:write`, and outranking them); they sign in with their password alone again.
    pub async fn reset_mfa(&self, user: UserId) -> Result<(), IdentityError> {
        self.require(&USERS_WRITE)?;
        if self.caller.actor.user_id() == Some(user) {
            // Otherwise a stolen administrator session strips its own factor with no password.
            return Err(DomainError::Refused {
                code: "mfa.reset_own",
                message: "turn your own second factor off with DELETE /auth/mfa/totp and your password",
            }
            .into());
        }
        self.require_outranks(user).await?;
        let user = self
            .ports()
            .users
            .find(user)
            .await?
            .filter(|u| u.deleted_at.is_none())
            .ok_or(IdentityError::NotFound("user"))?;
        self.remove_mfa(&user, "auth.mfa_reset", "mfa_reset").await
    }

    /// Deletes `user`'s factor and recovery codes, recorded as `action` and mailed to the owner
    /// as `change`.
    async fn remove_mfa(
        &self,
        user: &User,
        action: &'static str,
        change: &'static str,
    ) -> Result<(), IdentityError> {
        let now = self.ports().clock.now();
        let mut tx = self.ports().unit_of_work.begin().await?;
        if !self.ports().mfa.delete(tx.as_mut(), user.id).await? {
            return Err(IdentityError::MfaNotEnrolled);
        }
        let entry = NewActivity::new(action, "user", now)
            .resource(user.id)
            .subject(user.id);
        self.identity
            .record(tx.as_mut(), self.caller, entry)
            .await?;
        self.notify(tx.as_mut(), user, change, now).await?;
        tx.commit().await?;
        self.identity.forget(Some(user.id), &[]).await;
        Ok(())
    }

    /// Mails `user` a notice of `change`, in `tx`: sent once the change commits, never for
    /// one that rolls back.
    async fn notify(
        &self,
        tx: &mut dyn Transaction,
        user: &User,
        change: &'static str,
        now: DateTime<Utc>,
    ) -> Result<(), IdentityError> {
        let email = mail::security_notice(
            self.ports().templates.as_ref(),
            user.email.as_str(),
            change,
            now,
        )
        .map_err(DomainError::internal)?;
        let notice = SendEmail {
            email,
            dedupe_key: format!(
                "identity.security_notice:{}:{change}:{}",
                user.id,
                now.timestamp_micros()
            ),
        };
        let job = NewJob::of(&notice)
            .map_err(RepoError::from)?
            .caused_by(Some(user.id), &self.caller.origin);
        self.ports().jobs.enqueue(tx, job).await?;
        Ok(())
    }

    /// The second sign-in step: the challenge from `login` and a code (or a recovery code).
    /// Attempts are counted per account before anything is checked.
    pub async fn verify_mfa(
        &self,
        challenge: &str,
        answer: SecondFactor,
    ) -> Result<Tokens, IdentityError> {
        let text = match &answer {
            SecondFactor::Code(code) | SecondFactor::RecoveryCode(code) => code,
        };
        if challenge.is_empty()
            || challenge.len() > INPUT_MAX_CHARS
            || text.chars().count() > INPUT_MAX_CHARS
        {
            return Err(IdentityError::InvalidMfaCode);
        }
        let now = self.ports().clock.now();
        let digests = self.ports().secrets.digests(challenge);
        let token = self
            .ports()
            .one_time_tokens
            .find(TokenPurpose::MfaChallenge, &digests)
            .await?
            .filter(|t| t.used_at.is_none() && t.expires_at > now)
            .ok_or(IdentityError::InvalidMfaCode)?;
        // A challenge won with a password that has since been reset is refused before it is
        // counted: a guesser holding one cannot keep the owner's budget spent.
        self.ports()
            .users
            .find(token.user_id)
            .await?
            .filter(|u| u.password_changed_at <= token.created_at)
            .ok_or(IdentityError::InvalidMfaCode)?;
        self.identity
            .within_quota(&verify_key(token.user_id), VERIFY_PER_USER)
            .await?;

        let mut tx = self.ports().unit_of_work.begin().await?;
        let user = self
            .ports()
            .users
            .find_for_update(tx.as_mut(), token.user_id)
            .await?
            // A password reset or change since the challenge was issued ends it: it was won
            // with the old password.
            .filter(|u| u.can_sign_in() && u.password_changed_at <= token.created_at)
            .ok_or(IdentityError::InvalidMfaCode)?;
        let mut factor = self
            .ports()
            .mfa
            .find_for_update(tx.as_mut(), user.id)
            .await?
            .filter(TotpFactor::is_active)
            .ok_or(IdentityError::InvalidMfaCode)?;
        let accepted = match &answer {
            SecondFactor::Code(code) => match self.matching_step(&factor, code, now)? {
                Some(step) => {
                    factor.last_step = step;
                    self.ports().mfa.save(tx.as_mut(), &factor).await?;
                    true
                }
                None => false,
            },
            SecondFactor::RecoveryCode(code) => {
                let digests = self.ports().secrets.digests(&normalise_recovery_code(code));
                self.ports()
                    .mfa
                    .use_recovery_code(tx.as_mut(), user.id, &digests, now)
                    .await?
            }
        };
        if !accepted {
            drop(tx);
            let entry = NewActivity::new("auth.mfa_failed", "user", now)
                .resource(user.id)
                .subject(user.id);
            self.identity.record_alone(self.caller, entry).await?;
            return Err(IdentityError::InvalidMfaCode);
        }
        if !self
            .ports()
            .one_time_tokens
            .consume(tx.as_mut(), token.id, now)
            .await?
        {
            // A concurrent request answered this challenge first.
            return Err(IdentityError::InvalidMfaCode);
        }
        let method = match answer {
            SecondFactor::Code(_) => "totp",
            SecondFactor::RecoveryCode(_) => "recovery_code",
        };
        let tokens = self
            .open_session(tx, &user, now, json!({ "mfa": method }))
            .await?;
        let _ = self.ports().counters.clear(&verify_key(user.id)).await;
        Ok(tokens)
    }

    /// After a right password: a challenge when the account has a second factor on (storing
    /// `rehash`, the password's upgraded hash, meanwhile: the second step never sees the
    /// password).
    pub(super) async fn challenge_if_enrolled(
        &self,
        user: &User,
        rehash: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(), IdentityError> {
        let active = self
            .ports()
            .mfa
            .find(user.id)
            .await?
            .is_some_and(|f| f.is_active());
        if !active {
            return Ok(());
        }
        let plain = self
            .ports()
            .secrets
            .token()
            .map_err(DomainError::Internal)?;
        let (_, digest) = self.ports().secrets.digest(&plain);
        let token = OneTimeToken {
            id: TokenId::new(),
            user_id: user.id,
            purpose: TokenPurpose::MfaChallenge,
            digest,
            expires_at: now + CHALLENGE_TTL,
            used_at: None,
            created_at: now,
        };
        let mut tx = self.ports().unit_of_work.begin().await?;
        // Re-read under a lock, as a sign-in without a second factor does: a reset,
        // suspension or deletion that committed while the password was hashing wins, and no
        // challenge is won with the old password.
        let mut locked = self
            .ports()
            .users
            .find_for_update(tx.as_mut(), user.id)
            .await?
            .filter(|u| u.can_sign_in() && u.password_hash == user.password_hash)
            .ok_or(IdentityError::InvalidCredentials)?;
        if let Some(password_hash) = rehash {
            locked.password_hash = password_hash.to_owned();
            self.ports().users.update(tx.as_mut(), &locked).await?;
        }
        self.ports()
            .one_time_tokens
            .insert(tx.as_mut(), &token)
            .await?;
        let entry = NewActivity::new("auth.mfa_challenged", "user", now)
            .resource(user.id)
            .subject(user.id);
        self.identity
            .record(tx.as_mut(), self.caller, entry)
            .await?;
        tx.commit().await?;
        Err(IdentityError::MfaRequired(plain))
    }

    /// Fails unless the caller's session proved its password within the window (read in
    /// `tx`, under the session's lock).
    async fn require_recent_password(
        &self,
        tx: &mut dyn keel_kernel::Transaction,
        user: UserId,
        now: DateTime<Utc>,
    ) -> Result<(), IdentityError> {
        let session = self.verified_session()?;
        let window = chrono::TimeDelta::from_std(self.settings().reauthentication_window)
            .unwrap_or(chrono::TimeDelta::MAX);
        let current = self
            .ports()
            .sessions
            .find_for_update(tx, session)
            .await?
            .filter(|s| s.user_id == user && s.is_live(now))
            .ok_or(IdentityError::InvalidToken)?;
        if now - current.authenticated_at > window {
            return Err(IdentityError::ReauthenticationRequired);
        }
        Ok(())
    }

    /// Checks `password` against the account's own, now.
    async fn check_current_password(
        &self,
        user: &User,
        password: &str,
    ) -> Result<(), IdentityError> {
        if password.is_empty() || password.chars().count() > INPUT_MAX_CHARS * 8 {
            return Err(wrong_password());
        }
        let (attempts, gate) = super::accounts::password_proof_counters(user.id);
        let threshold = u64::from(self.settings().login_backoff_after.max(1));
        self.identity.admit(&attempts, &gate, threshold).await?;
        let full = self
            .ports()
            .users
            .find(user.id)
            .await?
            .ok_or(IdentityError::NotFound("user"))?;
        let verification = self
            .ports()
            .hasher
            .verify(password, Some(&full.password_hash))
            .await
            .map_err(hashing)?;
        if verification.matches {
            let _ = self.ports().counters.clear(&attempts).await;
            let _ = self.ports().counters.clear(&gate).await;
            Ok(())
        } else {
            let entry =
                NewActivity::new("auth.mfa_disable_failed", "user", self.ports().clock.now())
                    .resource(user.id)
                    .subject(user.id);
            self.identity.record_alone(self.caller, entry).await?;
            Err(wrong_password())
        }
    }

    /// Stores ten fresh recovery codes (digests only) in `tx` and returns them.
    async fn replace_recovery_codes(
        &self,
        tx: &mut dyn keel_kernel::Transaction,
        user: UserId,
        now: DateTime<Utc>,
    ) -> Result<Vec<String>, IdentityError> {
        let mut codes = Vec::with_capacity(RECOVERY_CODES);
        let mut digests = Vec::with_capacity(RECOVERY_CODES);
        let mut pepper = String::new();
        for _ in 0..RECOVERY_CODES {
            let raw = self
                .ports()
                .secrets
                .short_id()
                .map_err(DomainError::Internal)?;
            let (pepper_id, digest) = self.ports().secrets.digest(&normalise_recovery_code(&raw));
            pepper = pepper_id;
            digests.push(digest);
            let split = raw.len() / 2;
            codes.push(format!("{}-{}", &raw[..split], &raw[split..]));
        }
        self.ports()
            .mfa
            .replace_recovery_codes(tx, user, &pepper, &digests, now)
            .await?;
        Ok(codes)
    }
}

fn wrong_password() -> IdentityError {
    DomainError::invalid("password", "incorrect", "is not your current password").into()
}

/// What an authenticator's secret is derived from.
fn totp_context(factor: &TotpFactor) -> String {
    format!("mfa-totp:{}:{}", factor.user_id, factor.seed)
}

/// The counter of second-factor attempts on `user`'s account.
pub(super) fn verify_key(user: UserId) -> String {
    format!("identity:mfa:{user}")
}
