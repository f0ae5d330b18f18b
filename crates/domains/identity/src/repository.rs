//! Storage ports for identity. Reads that a caller drives take the caller's scope; writes
//! take the use case's transaction.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use keel_kernel::{
    ApiKeyId, ListQuery, Page, PermissionSet, RepoError, SessionId, Transaction, UserId,
};

use crate::model::{
    ApiKey, Email, ExternalIdentity, OneTimeToken, PermissionInfo, RefreshToken, Role, RoleId,
    Session, TokenId, TokenPurpose, TotpFactor, User,
};

/// Accounts and their role grants.
#[async_trait]
pub trait UserRepository: Send + Sync + std::fmt::Debug {
    /// One page of accounts, including soft-deleted ones (administration only).
    async fn list(&self, query: &ListQuery) -> Result<Page<User>, RepoError>;
    /// An account by id, deleted or not.
    async fn find(&self, id: UserId) -> Result<Option<User>, RepoError>;
    /// A non-deleted account by normalised email.
    async fn find_by_email(&self, email: &Email) -> Result<Option<User>, RepoError>;
    /// [`UserRepository::find_by_email`], read in `tx`.
    async fn find_by_email_in(
        &self,
        tx: &mut dyn Transaction,
        email: &Email,
    ) -> Result<Option<User>, RepoError>;
    /// An account by id, read in `tx` (a use case never takes a second connection while its
    /// transaction holds one: under load that exhausts the pool).
    async fn find_in(
        &self,
        tx: &mut dyn Transaction,
        id: UserId,
    ) -> Result<Option<User>, RepoError>;
    /// An account by id, locked until `tx` ends.
    async fn find_for_update(
        &self,
        tx: &mut dyn Transaction,
        id: UserId,
    ) -> Result<Option<User>, RepoError>;
    /// Stores a new account; a taken email is a unique violation.
    async fn insert(&self, tx: &mut dyn Transaction, user: &User) -> Result<(), RepoError>;
    /// Overwrites an account.
    async fn update(&self, tx: &mut dyn Transaction, user: &User) -> Result<(), RepoError>;
    /// The roles granted to a user, with their permissions.
    async fn roles_of(&self, user: UserId) -> Result<Vec<Role>, RepoError>;
    /// [`UserRepository::roles_of`], read in `tx`.
    async fn roles_of_in(
        &self,
        tx: &mut dyn Transaction,
        user: UserId,
    ) -> Result<Vec<Role>, RepoError>;
    /// The union of the permissions of a user's roles.
    async fn permissions_of(&self, user: UserId) -> Result<PermissionSet, RepoError>;
    /// Grants a role; `false` when already granted.
    async fn grant_role(
        &self,
        tx: &mut dyn Transaction,
        user: UserId,
        role: RoleId,
        at: DateTime<Utc>,
    ) -> Result<bool, RepoError>;
    /// Revokes a role; `false` when not granted.
    async fn revoke_role(
        &self,
        tx: &mut dyn Transaction,
        user: UserId,
        role: RoleId,
    ) -> Result<bool, RepoError>;
    /// Active, non-deleted accounts holding the role, counted in `tx` (after its locks).
    async fn count_active_with_role(
        &self,
        tx: &mut dyn Transaction,
        role: RoleId,
    ) -> Result<u64, RepoError>;
    /// Whether the user holds the role, read in `tx`.
    async fn holds_role(
        &self,
        tx: &mut dyn Transaction,
        user: UserId,
        role: RoleId,
    ) -> Result<bool, RepoError>;
    /// Every account holding the role.
    async fn holders_of(&self, role: RoleId) -> Result<Vec<UserId>, RepoError>;
}

/// Roles, the permission catalogue and their grants.
#[async_trait]
pub trait RoleRepository: Send + Sync + std::fmt::Debug {
    /// Every role, by name.
    async fn list(&self) -> Result<Vec<Role>, RepoError>;
    /// A role by id.
    async fn find(&self, id: RoleId) -> Result<Option<Role>, RepoError>;
    /// A role by name.
    async fn find_by_name(&self, name: &str) -> Result<Option<Role>, RepoError>;
    /// A role by name, read in `tx`.
    async fn find_by_name_in(
        &self,
        tx: &mut dyn Transaction,
        name: &str,
    ) -> Result<Option<Role>, RepoError>;
    /// Stores a new role with its permissions; a taken name is a unique violation.
    async fn insert(&self, tx: &mut dyn Transaction, role: &Role) -> Result<(), RepoError>;
    /// Replaces a role's permissions.
    async fn set_permissions(
        &self,
        tx: &mut dyn Transaction,
        role: RoleId,
        permissions: &PermissionSet,
    ) -> Result<(), RepoError>;
    /// Locks a role row until `tx` ends (serialises changes that count its holders).
    async fn lock(&self, tx: &mut dyn Transaction, id: RoleId) -> Result<(), RepoError>;
    /// Inserts or updates the catalogue of known permissions.
    async fn upsert_permissions(
        &self,
        tx: &mut dyn Transaction,
        catalog: &[PermissionInfo],
    ) -> Result<(), RepoError>;
    /// The catalogue.
    async fn list_permissions(&self) -> Result<Vec<PermissionInfo>, RepoError>;
}

/// Sessions and their refresh tokens.
#[async_trait]
pub trait SessionRepository: Send + Sync + std::fmt::Debug {
    /// A session by id.
    async fn find(&self, id: SessionId) -> Result<Option<Session>, RepoError>;
    /// A session by id, locked until `tx` ends.
    async fn find_for_update(
        &self,
        tx: &mut dyn Transaction,
        id: SessionId,
    ) -> Result<Option<Session>, RepoError>;
    /// Stores a new session.
    async fn insert(&self, tx: &mut dyn Transaction, session: &Session) -> Result<(), RepoError>;
    /// Overwrites a session.
    async fn update(&self, tx: &mut dyn Transaction, session: &Session) -> Result<(), RepoError>;
    /// A user's sessions that are neither revoked nor past their absolute expiry at `now`.
    async fn live_for_user(
        &self,
        user: UserId,
        now: DateTime<Utc>,
    ) -> Result<Vec<Session>, RepoError>;
    /// Revokes every live session of `user` except `keep`; returns the revoked ids.
    async fn revoke_all(
        &self,
        tx: &mut dyn Transaction,
        user: UserId,
        keep: Option<SessionId>,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<SessionId>, RepoError>;
    /// Stores a refresh token.
    async fn insert_refresh_token(
        &self,
        tx: &mut dyn Transaction,
        token: &RefreshToken,
    ) -> Result<(), RepoError>;
    /// The refresh token with any of these digests (outside any transaction: a first look
    /// that refuses unknown tokens cheaply).
    async fn lookup_refresh_token(
        &self,
        digests: &[String],
    ) -> Result<Option<RefreshToken>, RepoError>;
    /// A refresh token by id, read in `tx`.
    async fn find_refresh_token_by_id(
        &self,
        tx: &mut dyn Transaction,
        id: TokenId,
    ) -> Result<Option<RefreshToken>, RepoError>;
    /// Marks a refresh token as exchanged for `successor`, only if it was not exchanged yet;
    /// `false` when a concurrent exchange won.
    async fn mark_rotated(
        &self,
        tx: &mut dyn Transaction,
        id: TokenId,
        successor: TokenId,
        at: DateTime<Utc>,
    ) -> Result<bool, RepoError>;
    /// Deletes sessions (and their refresh tokens) that ended before `before`: expired, idle
    /// too long, or revoked. Returns how many sessions.
    async fn purge_ended(&self, before: DateTime<Utc>) -> Result<u64, RepoError>;
}

/// Password-reset and email-verification tokens.
#[async_trait]
pub trait OneTimeTokenRepository: Send + Sync + std::fmt::Debug {
    /// Stores a token.
    async fn insert(&self, tx: &mut dyn Transaction, token: &OneTimeToken)
    -> Result<(), RepoError>;
    /// The token for `purpose` with any of these digests.
    async fn find(
        &self,
        purpose: TokenPurpose,
        digests: &[String],
    ) -> Result<Option<OneTimeToken>, RepoError>;
    /// Marks it used if it was not; `false` when someone used it first.
    async fn consume(
        &self,
        tx: &mut dyn Transaction,
        id: TokenId,
        at: DateTime<Utc>,
    ) -> Result<bool, RepoError>;
    /// Marks every unused token of `user` for `purpose` used (a newer reset or a password
    /// change ends the links still out there); returns how many.
    async fn consume_all(
        &self,
        tx: &mut dyn Transaction,
        user: UserId,
        purpose: TokenPurpose,
        at: DateTime<Utc>,
    ) -> Result<u64, RepoError>;
    /// Deletes tokens that expired, or were used, before `before`; returns how many.
    async fn purge(&self, before: DateTime<Utc>) -> Result<u64, RepoError>;
}

/// API keys, always scoped to their owner.
#[async_trait]
pub trait ApiKeyRepository: Send + Sync + std::fmt::Debug {
    /// Stores a key.
    async fn insert(&self, tx: &mut dyn Transaction, key: &ApiKey) -> Result<(), RepoError>;
    /// The owner's keys, newest first.
    async fn list_for_owner(&self, owner: UserId) -> Result<Vec<ApiKey>, RepoError>;
    /// A key by its public prefix (authentication).
    async fn find_by_prefix(&self, prefix: &str) -> Result<Option<ApiKey>, RepoError>;
    /// Deletes the owner's key; `false` when the owner has no such key.
    async fn delete(
        &self,
        tx: &mut dyn Transaction,
        owner: UserId,
        id: ApiKeyId,
    ) -> Result<bool, RepoError>;
    /// Deletes every key of `owner` (account recovery); returns how many.
    async fn delete_all_for(
        &self,
        tx: &mut dyn Transaction,
        owner: UserId,
    ) -> Result<u64, RepoError>;
    /// Records a use.
    async fn touch(&self, id: ApiKeyId, at: DateTime<Utc>) -> Result<(), RepoError>;
}

/// Second factors: an account's TOTP authenticator and its recovery codes (stored as keyed
/// digests).
#[async_trait]
pub trait MfaRepository: Send + Sync + std::fmt::Debug {
    /// The account's authenticator, confirmed or not.
    async fn find(&self, user: UserId) -> Result<Option<TotpFactor>, RepoError>;
    /// The same, locked until `tx` ends.
    async fn find_for_update(
        &self,
        tx: &mut dyn Transaction,
        user: UserId,
    ) -> Result<Option<TotpFactor>, RepoError>;
    /// Stores the account's authenticator, replacing any.
    async fn save(&self, tx: &mut dyn Transaction, factor: &TotpFactor) -> Result<(), RepoError>;
    /// Deletes the authenticator and every recovery code; `false` when there was none.
    async fn delete(&self, tx: &mut dyn Transaction, user: UserId) -> Result<bool, RepoError>;
    /// Replaces the account's recovery codes with these digests (each under `pepper_id`).
    async fn replace_recovery_codes(
        &self,
        tx: &mut dyn Transaction,
        user: UserId,
        pepper_id: &str,
        digests: &[String],
        at: DateTime<Utc>,
    ) -> Result<(), RepoError>;
    /// Marks the unused recovery code with any of these digests used; `false` when none is
    /// (unknown, or used before, also by a concurrent request).
    async fn use_recovery_code(
        &self,
        tx: &mut dyn Transaction,
        user: UserId,
        digests: &[String],
        at: DateTime<Utc>,
    ) -> Result<bool, RepoError>;
    /// How many unused recovery codes the account has.
    async fn recovery_codes_left(&self, user: UserId) -> Result<u32, RepoError>;
}

/// Links to accounts at external providers.
#[async_trait]
pub trait ExternalIdentityRepository: Send + Sync + std::fmt::Debug {
    /// The link of `subject` at `provider`, read without a lock.
    async fn find(
        &self,
        provider: &str,
        subject: &str,
    ) -> Result<Option<ExternalIdentity>, RepoError>;
    /// The link of `subject` at `provider`, locked until `tx` ends.
    async fn find_for_update(
        &self,
        tx: &mut dyn Transaction,
        provider: &str,
        subject: &str,
    ) -> Result<Option<ExternalIdentity>, RepoError>;
    /// Stores a new link; a concurrent insert of the same (provider, subject) is a
    /// [`RepoError::UniqueViolation`].
    async fn insert(
        &self,
        tx: &mut dyn Transaction,
        link: &ExternalIdentity,
    ) -> Result<(), RepoError>;
    /// Saves a changed link.
    async fn update(
        &self,
        tx: &mut dyn Transaction,
        link: &ExternalIdentity,
    ) -> Result<(), RepoError>;
}
