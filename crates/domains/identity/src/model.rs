//! Identity entities and value objects.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use keel_kernel::{ApiKeyId, Permission, PermissionSet, SessionId, UserId};
use serde::{Deserialize, Serialize};
use validator::ValidateEmail;

keel_kernel::define_id!(
    /// Identifies a role.
    RoleId
);

keel_kernel::define_id!(
    /// Identifies a stored token record (refresh token, reset or verification token).
    TokenId
);

/// Longest email address accepted (RFC 5321 path limit).
pub const EMAIL_MAX_CHARS: usize = 254;
/// Longest display name.
pub const FULL_NAME_MAX_CHARS: usize = 200;
/// Longest role name.
pub const ROLE_NAME_MAX_CHARS: usize = 64;

/// The role that holds every permission.
pub const ADMIN_ROLE: &str = "admin";
/// The role every new account gets.
pub const MEMBER_ROLE: &str = "member";

/// An email address, normalised (trimmed, lowercased) so uniqueness is case-insensitive.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Email(String);

impl Email {
    /// Parses and normalises an address.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let normalised = raw.trim().to_lowercase();
        if normalised.is_empty() || normalised.chars().count() > EMAIL_MAX_CHARS {
            return Err(format!(
                "must be an email address of at most {EMAIL_MAX_CHARS} characters"
            ));
        }
        if !normalised.validate_email() {
            return Err("must be a valid email address".to_owned());
        }
        Ok(Self(normalised))
    }

    /// The normalised address.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part before `@`.
    pub fn local_part(&self) -> &str {
        self.0.split('@').next().unwrap_or_default()
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where an account stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserStatus {
    /// Can sign in and act.
    Active,
    /// Signed up, email not yet confirmed (when verification is required).
    PendingVerification,
    /// Blocked by an administrator; every session stops working.
    Suspended,
    /// Closed.
    Deactivated,
}

impl UserStatus {
    /// The wire and storage names.
    pub const NAMES: &'static [&'static str] =
        &["active", "pending_verification", "suspended", "deactivated"];

    /// The wire and storage name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::PendingVerification => "pending_verification",
            Self::Suspended => "suspended",
            Self::Deactivated => "deactivated",
        }
    }

    /// Whether an account in this state may sign in.
    pub fn can_sign_in(self) -> bool {
        matches!(self, Self::Active | Self::PendingVerification)
    }
}

impl FromStr for UserStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "active" => Ok(Self::Active),
            "pending_verification" => Ok(Self::PendingVerification),
            "suspended" => Ok(Self::Suspended),
            "deactivated" => Ok(Self::Deactivated),
            other => Err(format!("unknown user status `{other}`")),
        }
    }
}

/// An account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Identity.
    pub id: UserId,
    /// Unique, normalised.
    pub email: Email,
    /// Display name.
    pub full_name: Option<String>,
    /// PHC string of the password hash; never leaves the service.
    pub password_hash: String,
    /// Account state.
    pub status: UserStatus,
    /// When the email was confirmed.
    pub email_verified_at: Option<DateTime<Utc>>,
    /// Last password change (or creation).
    pub password_changed_at: DateTime<Utc>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// Soft deletion time; deleted accounts cannot sign in and can be restored.
    pub deleted_at: Option<DateTime<Utc>>,
}

impl User {
    /// Whether the account may sign in and use its sessions.
    pub fn can_sign_in(&self) -> bool {
        self.deleted_at.is_none() && self.status.can_sign_in()
    }
}

/// A named set of permissions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    /// Identity.
    pub id: RoleId,
    /// Unique name, lowercase.
    pub name: String,
    /// What the role is for.
    pub description: String,
    /// Created and kept in shape by Keel (`admin`, `member`).
    pub is_system: bool,
    /// Granted permissions, sorted.
    pub permissions: Vec<Permission>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

/// A permission and what it allows, as listed by `GET /permissions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PermissionInfo {
    /// `resource:action`.
    pub name: Permission,
    /// What it allows.
    pub description: String,
}

/// A sign-in session: the refresh-token family of one login on one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Identity (the `sid` claim).
    pub id: SessionId,
    /// Whose.
    pub user_id: UserId,
    /// The client's user agent at sign-in.
    pub user_agent: Option<String>,
    /// The client's address at sign-in.
    pub ip: Option<String>,
    /// Sign-in time.
    pub created_at: DateTime<Utc>,
    /// When the password was last proved in this session (sign-in, password change):
    /// sensitive actions need it to be recent (`auth.reauthentication_window`).
    pub authenticated_at: DateTime<Utc>,
    /// Last refresh.
    pub last_used_at: DateTime<Utc>,
    /// Sliding expiry: a refresh after this fails.
    pub idle_expires_at: DateTime<Utc>,
    /// Absolute cap, however often it is refreshed.
    pub expires_at: DateTime<Utc>,
    /// When it was revoked.
    pub revoked_at: Option<DateTime<Utc>>,
    /// Why: `logout`, `password_changed`, `refresh_token_reuse`, …
    pub revoked_reason: Option<String>,
}

impl Session {
    /// Whether access tokens of this session are honoured at `now`.
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        self.revoked_at.is_none() && self.expires_at > now
    }

    /// Whether its refresh token may be exchanged at `now`.
    pub fn can_refresh(&self, now: DateTime<Utc>) -> bool {
        self.is_live(now) && self.idle_expires_at > now
    }
}

/// A refresh token, stored only as a keyed digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshToken {
    /// Identity.
    pub id: TokenId,
    /// The session it belongs to.
    pub session_id: SessionId,
    /// HMAC digest of the token.
    pub digest: String,
    /// Issue time.
    pub created_at: DateTime<Utc>,
    /// Set when exchanged; presenting it again after the grace window means it was stolen.
    pub rotated_at: Option<DateTime<Utc>>,
    /// The token issued in exchange for this one.
    pub replaced_by: Option<TokenId>,
}

/// What a one-time token is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenPurpose {
    /// Sets a new password without the old one.
    PasswordReset,
    /// Confirms an email address.
    EmailVerification,
    /// Completes a sign-in whose password was right with a second factor.
    MfaChallenge,
}

impl TokenPurpose {
    /// The storage name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PasswordReset => "password_reset",
            Self::EmailVerification => "email_verification",
            Self::MfaChallenge => "mfa_challenge",
        }
    }
}

impl FromStr for TokenPurpose {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "password_reset" => Ok(Self::PasswordReset),
            "email_verification" => Ok(Self::EmailVerification),
            "mfa_challenge" => Ok(Self::MfaChallenge),
            other => Err(format!("unknown token purpose `{other}`")),
        }
    }
}

/// An account's TOTP authenticator (RFC 6238). The shared secret is never stored: it is
/// derived from `seed` under pepper `pepper_id` (configuration), so a copy of the database
/// cannot produce codes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TotpFactor {
    /// Whose.
    pub user_id: UserId,
    /// The pepper the secret is derived under.
    pub pepper_id: String,
    /// Random per enrolment: a new enrolment is a new secret.
    pub seed: String,
    /// Set once a code from the authenticator was accepted; until then sign-in ignores it.
    pub confirmed_at: Option<DateTime<Utc>>,
    /// The time step of the last accepted code: a code is never accepted twice.
    pub last_step: i64,
    /// Enrolment time.
    pub created_at: DateTime<Utc>,
}

impl TotpFactor {
    /// Whether sign-in asks for it.
    pub fn is_active(&self) -> bool {
        self.confirmed_at.is_some()
    }
}

/// A single-use, short-lived token sent by mail, stored only as a keyed digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OneTimeToken {
    /// Identity.
    pub id: TokenId,
    /// Whose.
    pub user_id: UserId,
    /// What for.
    pub purpose: TokenPurpose,
    /// HMAC digest of the token.
    pub digest: String,
    /// Expiry.
    pub expires_at: DateTime<Utc>,
    /// Set when used; a used token never works again.
    pub used_at: Option<DateTime<Utc>>,
    /// Issue time.
    pub created_at: DateTime<Utc>,
}

/// Prefix of every API key, so leaked keys are recognisable by secret scanners.
pub const API_KEY_PREFIX: &str = "keel_";

/// Longest public part of an API key accepted at lookup.
const API_KEY_PREFIX_MAX: usize = 16;
/// Longest secret part of an API key accepted before hashing.
const API_KEY_SECRET_MAX: usize = 128;

/// Splits a presented API key (`keel_<prefix>_<secret>`) into its lookup prefix and secret;
/// `None` for anything else, so malformed keys never reach the database or the hasher.
pub fn split_api_key(presented: &str) -> Option<(&str, &str)> {
    presented
        .strip_prefix(API_KEY_PREFIX)
        .and_then(|rest| rest.split_once('_'))
        .filter(|(prefix, secret)| {
            (1..=API_KEY_PREFIX_MAX).contains(&prefix.len())
                && (1..=API_KEY_SECRET_MAX).contains(&secret.len())
        })
}

/// A long-lived credential for programs, acting for its owner with narrowed permissions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// Identity.
    pub id: ApiKeyId,
    /// Whose.
    pub user_id: UserId,
    /// The owner's label for it.
    pub name: String,
    /// The public part of the key (`keel_<prefix>_<secret>`), unique, for lookup.
    pub prefix: String,
    /// HMAC digest of the secret part.
    pub digest: String,
    /// Which pepper made the digest (peppers rotate without invalidating keys).
    pub pepper_id: String,
    /// The permissions the key may use (intersected with the owner's at each request).
    pub scopes: PermissionSet,
    /// Optional expiry.
    pub expires_at: Option<DateTime<Utc>>,
    /// Last authenticated use (updated at most once a minute).
    pub last_used_at: Option<DateTime<Utc>>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalised_and_checked() {
        assert_eq!(
            Email::parse("  Ada@Example.COM ").unwrap().as_str(),
            "ada@example.com"
        );
        assert_eq!(Email::parse("ada@example.com").unwrap().local_part(), "ada");
        for bad in ["", "ada", "ada@", "@example.com", "a b@example.com"] {
            assert!(Email::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Email::parse(&format!("{}@example.com", "a".repeat(250))).is_err());
    }

    #[test]
    fn statuses_round_trip_and_gate_sign_in() {
        for name in UserStatus::NAMES {
            assert_eq!(name.parse::<UserStatus>().unwrap().as_str(), *name);
        }
        assert!(UserStatus::Active.can_sign_in());
        assert!(UserStatus::PendingVerification.can_sign_in());
        assert!(!UserStatus::Suspended.can_sign_in());
        assert!(!UserStatus::Deactivated.can_sign_in());
    }
}

keel_kernel::define_id!(
    /// Identifies a link between a Keel account and an account at an external provider.
    ExternalIdentityId
);

/// The stored password of an account that only an external provider signs in: not a PHC
/// string, so no password ever verifies against it (a password reset can set a real one).
pub const NO_PASSWORD: &str = "!external";

/// A provider's account (its subject) linked to a Keel account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalIdentity {
    /// Identity.
    pub id: ExternalIdentityId,
    /// The provider's configured name (the webhook source, the OIDC provider).
    pub provider: String,
    /// The provider's stable id of the user.
    pub subject: String,
    /// The Keel account; `None` once the provider deleted the user before Keel created one.
    pub user_id: Option<UserId>,
    /// The email the provider last reported.
    pub email: Option<String>,
    /// The provider deleted the user (the link stays as a tombstone).
    pub deleted: bool,
    /// When the last applied event happened at the provider: older events are ignored.
    pub synced_at: DateTime<Utc>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}
