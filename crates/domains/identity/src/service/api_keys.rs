//! API keys: created, listed and deleted by their owner only.

use chrono::{DateTime, Utc};
use keel_kernel::validation::FieldErrors;
use keel_kernel::{ApiKeyId, DomainError, NewActivity, Permission, PermissionSet};
use serde_json::json;

use super::IdentityService;
use crate::error::IdentityError;
use crate::model::{API_KEY_PREFIX, ApiKey};
use crate::policy::API_KEYS_MANAGE;

/// `now + duration`, saturating instead of overflowing.
fn later(now: DateTime<Utc>, duration: std::time::Duration) -> DateTime<Utc> {
    chrono::TimeDelta::from_std(duration)
        .ok()
        .and_then(|delta| now.checked_add_signed(delta))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// When a key stops working: its own expiry, or, for keys made before every key had one,
/// `auth.api_key_max_ttl` after its creation.
pub(super) fn effective_expiry(key: &ApiKey, max_ttl: std::time::Duration) -> DateTime<Utc> {
    key.expires_at
        .unwrap_or_else(|| later(key.created_at, max_ttl))
}

/// Longest key name.
const NAME_MAX_CHARS: usize = 100;

/// What the owner asks for.
#[derive(Debug, Clone, Default)]
pub struct NewApiKeyRequest {
    /// A label.
    pub name: String,
    /// Permissions the key may use; `None` means every permission the owner holds now.
    pub scopes: Option<Vec<String>>,
    /// Expiry, in the future and within `auth.api_key_max_ttl`; `None` means
    /// `auth.api_key_default_ttl` from now.
    pub expires_at: Option<DateTime<Utc>>,
}

/// A created key: the stored record and the key itself, shown this once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewApiKey {
    /// The record.
    pub key: ApiKey,
    /// `keel_<prefix>_<secret>`; Keel keeps only a digest.
    pub plaintext: String,
}

impl IdentityService<'_> {
    /// Creates a key for the caller. Its scopes must be permissions the caller holds: a key
    /// can narrow its owner's power, never widen it. Only a signed-in session whose password
    /// was proved within `auth.reauthentication_window` may create one, so neither another
    /// key nor a stolen access token can mint a long-lived credential; every key expires.
    pub async fn create_api_key(
        &self,
        request: NewApiKeyRequest,
    ) -> Result<NewApiKey, IdentityError> {
        self.caller.actor.require(&API_KEYS_MANAGE)?;
        let session = self.verified_session()?;
        let owner = self.user_id()?;
        let held = self.caller.actor.permissions().cloned().unwrap_or_default();
        let now = self.ports().clock.now();
        let window = chrono::TimeDelta::from_std(self.settings().reauthentication_window)
            .unwrap_or(chrono::TimeDelta::MAX);
        let mut errors = FieldErrors::new();
        let name = request.name.trim().to_owned();
        if name.is_empty() || name.chars().count() > NAME_MAX_CHARS {
            errors.add(
                "name",
                "length",
                format!("must be between 1 and {NAME_MAX_CHARS} characters long"),
            );
        }
        let scopes = match &request.scopes {
            None => held.clone(),
            Some(names) => {
                let mut scopes = PermissionSet::empty();
                for (i, name) in names.iter().enumerate() {
                    match Permission::parse(name) {
                        Ok(permission) if held.contains(&permission) => scopes.insert(permission),
                        Ok(_) => errors.add(
                            format!("scopes[{i}]"),
                            "not_held",
                            format!("you do not hold `{name}`, so a key of yours cannot either"),
                        ),
                        Err(_) => errors.add(
                            format!("scopes[{i}]"),
                            "unknown_permission",
                            format!("`{name}` is not a permission"),
                        ),
                    }
                }
                scopes
            }
        };
        let days = |d: std::time::Duration| d.as_secs() / 86_400;
        let longest = later(now, self.settings().api_key_max_ttl);
        let expires_at = match request.expires_at {
            Some(at) if at <= now => {
                errors.add("expires_at", "in_past", "must be in the future");
                at
            }
            Some(at) if at > longest => {
                errors.add(
                    "expires_at",
                    "too_far",
                    format!(
                        "must be at most {} days from now (auth.api_key_max_ttl)",
                        days(self.settings().api_key_max_ttl)
                    ),
                );
                at
            }
            Some(at) => at,
            None => later(now, self.settings().api_key_default_ttl).min(longest),
        };
        errors.into_result()?;

        let prefix = self
            .ports()
            .secrets
            .short_id()
            .map_err(DomainError::Internal)?;
        let secret = self
            .ports()
            .secrets
            .token()
            .map_err(DomainError::Internal)?;
        let (pepper_id, digest) = self.ports().secrets.digest(&secret);
        let key = ApiKey {
            id: ApiKeyId::new(),
            user_id: owner,
            name,
            prefix: prefix.clone(),
            digest,
            pepper_id,
            scopes,
            expires_at: Some(expires_at),
            last_used_at: None,
            created_at: now,
        };
        let mut tx = self.ports().unit_of_work.begin().await?;
        // Checked under the session's lock, so a key cannot slip in beside a concurrent reset
        // or sign-out that revokes the session (and deletes the account's keys).
        let current = self
            .ports()
            .sessions
            .find_for_update(tx.as_mut(), session)
            .await?
            .filter(|s| s.user_id == owner && s.is_live(now))
            .ok_or(IdentityError::InvalidToken)?;
        if now - current.authenticated_at > window {
            return Err(IdentityError::ReauthenticationRequired);
        }
        self.ports().api_keys.insert(tx.as_mut(), &key).await?;
        let entry = NewActivity::new("api_key.created", "api_key", now)
            .resource(key.id)
            .changes(json!({ "name": key.name, "scopes": key.scopes, "expires_at": expires_at }));
        self.identity
            .record(tx.as_mut(), self.caller, entry)
            .await?;
        tx.commit().await?;
        Ok(NewApiKey {
            plaintext: format!("{API_KEY_PREFIX}{prefix}_{secret}"),
            key,
        })
    }

    /// The caller's keys, newest first.
    pub async fn list_api_keys(&self) -> Result<Vec<ApiKey>, IdentityError> {
        self.caller.actor.require(&API_KEYS_MANAGE)?;
        let owner = self.user_id()?;
        let max = self.settings().api_key_max_ttl;
        Ok(self
            .ports()
            .api_keys
            .list_for_owner(owner)
            .await?
            .into_iter()
            .map(|mut key| {
                key.expires_at = Some(effective_expiry(&key, max));
                key
            })
            .collect())
    }

    /// Deletes one of the caller's keys; anyone else's is "not found".
    pub async fn delete_api_key(&self, id: ApiKeyId) -> Result<(), IdentityError> {
        self.caller.actor.require(&API_KEYS_MANAGE)?;
        let owner = self.user_id()?;
        let now = self.ports().clock.now();
        let mut tx = self.ports().unit_of_work.begin().await?;
        if !self.ports().api_keys.delete(tx.as_mut(), owner, id).await? {
            return Err(IdentityError::NotFound("API key"));
        }
        let entry = NewActivity::new("api_key.deleted", "api_key", now).resource(id);
        self.identity
            .record(tx.as_mut(), self.caller, entry)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}
