//! Accounts kept in step with an external identity provider: its user events (received as
//! signed webhooks) create, update and delete the linked Keel accounts.
//!
//! The link, not the email, is the identity: an account that exists in Keel without a link is
//! never taken over by a provider user claiming its address. Events carry the time they
//! happened; the link remembers the newest applied, so a retried or late event never undoes
//! a newer one, and applying the same event twice changes nothing.

use chrono::{DateTime, Utc};
use keel_kernel::validation::FieldErrors;
use keel_kernel::{DomainError, NewActivity, RepoError, Transaction, UserId};
use serde::Deserialize;
use serde_json::json;

use super::IdentityService;
use super::accounts::check_full_name;
use crate::error::IdentityError;
use crate::model::{
    Email, ExternalIdentity, ExternalIdentityId, MEMBER_ROLE, NO_PASSWORD, User, UserStatus,
};

/// Longest provider subject accepted.
const SUBJECT_MAX_CHARS: usize = 255;

/// A provider's view of a user, as its events carry it (`data` of `user.created` and
/// `user.updated`; `user.deleted` needs only `id`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ExternalUser {
    /// The provider's stable id of the user.
    #[serde(rename = "id")]
    pub subject: String,
    /// The address.
    #[serde(default)]
    pub email: Option<String>,
    /// The display name.
    #[serde(default, alias = "full_name")]
    pub name: Option<String>,
    /// Whether the provider confirmed the address.
    #[serde(default)]
    pub email_verified: bool,
}

/// What a provider event asks of the linked account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExternalUserChange {
    /// `user.created` or `user.updated`: the account should exist and look like this.
    Upsert(ExternalUser),
    /// `user.deleted`: the account should be gone.
    Delete {
        /// The provider's id of the user.
        subject: String,
    },
}

impl ExternalUserChange {
    /// The change an event asks for; `Ok(None)` for event types that are not about users.
    pub fn from_event(event_type: &str, data: &serde_json::Value) -> Result<Option<Self>, String> {
        let user = || {
            ExternalUser::deserialize(data)
                .map_err(|e| format!("`{event_type}` data is not a user: {e}"))
        };
        match event_type {
            "user.created" | "user.updated" => Ok(Some(Self::Upsert(user()?))),
            "user.deleted" => Ok(Some(Self::Delete {
                subject: user()?.subject,
            })),
            _ => Ok(None),
        }
    }

    fn subject(&self) -> &str {
        match self {
            Self::Upsert(user) => &user.subject,
            Self::Delete { subject } => subject,
        }
    }
}

/// What a sync did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncOutcome {
    /// A new account was created and linked.
    Created(UserId),
    /// The linked account was brought in step (possibly restored).
    Updated(UserId),
    /// The linked account was deleted (none was linked: a tombstone was recorded).
    Deleted(Option<UserId>),
    /// The event is older than the last one applied: nothing changed.
    Stale,
}

impl IdentityService<'_> {
    /// Applies a provider's user event that happened at `at` (system caller: the webhook
    /// job). Idempotent, and ordered by `at`: see the module documentation.
    pub async fn sync_external_user(
        &self,
        provider: &str,
        change: ExternalUserChange,
        at: DateTime<Utc>,
    ) -> Result<SyncOutcome, IdentityError> {
        self.require_system()?;
        let subject = change.subject();
        if subject.is_empty() || subject.chars().count() > SUBJECT_MAX_CHARS {
            return Err(DomainError::invalid(
                "data.id",
                "format",
                format!("must be 1 to {SUBJECT_MAX_CHARS} characters"),
            )
            .into());
        }
        let now = self.ports().clock.now();
        let mut tx = self.ports().unit_of_work.begin().await?;
        let existing = self
            .ports()
            .external
            .find_for_update(tx.as_mut(), provider, subject)
            .await?;
        // Older than what was applied: stale. At the same instant a deletion wins, so "created"
        // and "deleted" stamped in one second end deleted whatever order they arrive in.
        let deleting = matches!(change, ExternalUserChange::Delete { .. });
        if existing.as_ref().is_some_and(|link| {
            link.synced_at > at || (link.synced_at == at && link.deleted && !deleting)
        }) {
            return Ok(SyncOutcome::Stale);
        }
        let mut link = match existing {
            Some(link) => link,
            None => {
                // Inserted first: two first events for one subject racing each other collide
                // here (the loser's job is retried and finds the link) instead of on the email.
                let link = ExternalIdentity {
                    id: ExternalIdentityId::new(),
                    provider: provider.to_owned(),
                    subject: subject.to_owned(),
                    user_id: None,
                    email: None,
                    deleted: false,
                    synced_at: at,
                    created_at: now,
                    updated_at: now,
                };
                self.ports()
                    .external
                    .insert(tx.as_mut(), &link)
                    .await
                    .map_err(|e| match e {
                        RepoError::UniqueViolation { constraint } => {
                            IdentityError::Rejected(DomainError::Unavailable(
                                format!("a concurrent sync linked the subject ({constraint})")
                                    .into(),
                            ))
                        }
                        other => other.into(),
                    })?;
                link
            }
        };
        let (outcome, revoked) = match change {
            ExternalUserChange::Upsert(user) => {
                let outcome = self
                    .upsert_linked(tx.as_mut(), &mut link, user, now)
                    .await?;
                (outcome, Vec::new())
            }
            ExternalUserChange::Delete { .. } => {
                let mut revoked = Vec::new();
                let mut deleted_here = false;
                if let Some(id) = link.user_id
                    && let Some(mut account) =
                        self.ports().users.find_for_update(tx.as_mut(), id).await?
                    && account.deleted_at.is_none()
                {
                    self.ensure_not_last_admin(tx.as_mut(), &account).await?;
                    account.deleted_at = Some(now);
                    account.updated_at = now;
                    self.ports().users.update(tx.as_mut(), &account).await?;
                    revoked = self
                        .ports()
                        .sessions
                        .revoke_all(tx.as_mut(), id, None, "account_deleted", now)
                        .await?;
                    deleted_here = true;
                }
                // A tombstone when the provider's delete did the deleting (or there is no
                // account): only then may a later event restore it. An account an
                // administrator deleted in Keel stays deleted.
                link.deleted = link.deleted || deleted_here || link.user_id.is_none();
                (SyncOutcome::Deleted(link.user_id), revoked)
            }
        };
        link.synced_at = at;
        link.updated_at = now;
        self.ports().external.update(tx.as_mut(), &link).await?;
        let change = match outcome {
            SyncOutcome::Created(_) => "created",
            SyncOutcome::Updated(_) => "updated",
            SyncOutcome::Deleted(_) => "deleted",
            SyncOutcome::Stale => "stale",
        };
        let mut entry = NewActivity::new("user.synced", "user", now)
            .changes(json!({ "provider": provider, "subject": link.subject, "change": change }));
        if let Some(id) = link.user_id {
            entry = entry.resource(id).subject(id);
        }
        self.identity
            .record(tx.as_mut(), self.caller, entry)
            .await?;
        tx.commit().await?;
        self.identity.forget(link.user_id, &revoked).await;
        Ok(outcome)
    }

    /// Creates the linked account, or brings it in step (restoring it when the provider
    /// re-creates a user it had deleted).
    pub(super) async fn upsert_linked(
        &self,
        tx: &mut dyn Transaction,
        link: &mut ExternalIdentity,
        user: ExternalUser,
        now: DateTime<Utc>,
    ) -> Result<SyncOutcome, IdentityError> {
        let mut errors = FieldErrors::new();
        let email = match user.email.as_deref().map(Email::parse) {
            Some(Ok(email)) => Some(email),
            Some(Err(message)) => {
                errors.add("data.email", "format", message);
                None
            }
            None => None,
        };
        let full_name = check_full_name(user.name.as_deref(), &mut errors);
        // The checks name the wire field (`data.name`), not the account's.
        let errors = errors.into_vec().into_iter().map(|mut e| {
            if e.field == "full_name" {
                e.field = "data.name".to_owned();
            }
            e
        });
        let errors: Vec<_> = errors.collect();
        if !errors.is_empty() {
            return Err(DomainError::Validation(errors).into());
        }
        let verified_at = user.email_verified.then_some(now);
        let taken = |e: RepoError| match e {
            RepoError::UniqueViolation { .. } => IdentityError::EmailTaken,
            other => other.into(),
        };
        // Only an address the provider confirmed becomes an account's: an unconfirmed one
        // could be someone else's, kept from signing up (or later taken by a reset).
        let email = match email {
            Some(_) if !user.email_verified => {
                if link.user_id.is_none() {
                    return Err(DomainError::invalid(
                        "data.email_verified",
                        "unverified",
                        "the provider has not confirmed this address; the account is created once it has",
                    )
                    .into());
                }
                None
            }
            other => other,
        };
        let restoring = link.deleted;
        link.deleted = false;
        let account = match link.user_id {
            Some(id) => self.ports().users.find_for_update(tx, id).await?,
            None => None,
        };
        let Some(mut account) = account else {
            let Some(email) = email else {
                return Err(DomainError::invalid(
                    "data.email",
                    "required",
                    "is required to create the account",
                )
                .into());
            };
            // Never linked by address: the address may belong to someone else's account.
            if self
                .ports()
                .users
                .find_by_email_in(tx, &email)
                .await?
                .is_some()
            {
                return Err(IdentityError::EmailTaken);
            }
            let member = self
                .ports()
                .roles
                .find_by_name_in(tx, MEMBER_ROLE)
                .await?
                .ok_or_else(|| DomainError::internal("the member role is missing"))?;
            let account = User {
                id: UserId::new(),
                email: email.clone(),
                full_name,
                password_hash: NO_PASSWORD.to_owned(),
                status: UserStatus::Active,
                email_verified_at: verified_at,
                password_changed_at: now,
                created_at: now,
                updated_at: now,
                deleted_at: None,
            };
            self.ports()
                .users
                .insert(tx, &account)
                .await
                .map_err(taken)?;
            self.ports()
                .users
                .grant_role(tx, account.id, member.id, now)
                .await?;
            link.user_id = Some(account.id);
            link.email = Some(email.as_str().to_owned());
            return Ok(SyncOutcome::Created(account.id));
        };
        if let Some(email) = email {
            if email != account.email {
                account.email_verified_at = verified_at;
            }
            link.email = Some(email.as_str().to_owned());
            account.email = email;
        }
        if user.name.is_some() {
            account.full_name = full_name;
        }
        if verified_at.is_some() && account.email_verified_at.is_none() {
            account.email_verified_at = verified_at;
        }
        // Back only after the provider deleted it; an account an administrator deleted here
        // stays deleted whatever the provider says.
        if restoring {
            account.deleted_at = None;
        }
        account.updated_at = now;
        self.ports()
            .users
            .update(tx, &account)
            .await
            .map_err(taken)?;
        Ok(SyncOutcome::Updated(account.id))
    }
}
