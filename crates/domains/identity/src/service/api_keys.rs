//! API keys: created, listed and deleted by their owner only.

use chrono::{DateTime, Utc};
use keel_kernel::DomainError;
use keel_kernel::validation::FieldErrors;
use keel_kernel::{ApiKeyId, NewActivity, Permission, PermissionSet};
use serde_json::json;

use super::IdentityService;
use crate::error::IdentityError;
use crate::model::{API_KEY_PREFIX, ApiKey};
use crate::policy::API_KEYS_MANAGE;

/// Longest key name.
const NAME_MAX_CHARS: usize = 100;

/// What the owner asks for.
#[derive(Debug, Clone, Default)]
pub struct NewApiKeyRequest {
    /// A label.
    pub name: String,
    /// Permissions the key may use; `None` means every permission the owner holds now.
    pub scopes: Option<Vec<String>>,
    /// Optional expiry, in the future.
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
    /// can narrow its owner's power, never widen it.
    pub async fn create_api_key(
        &self,
        request: NewApiKeyRequest,
    ) -> Result<NewApiKey, IdentityError> {
        self.caller.actor.require(&API_KEYS_MANAGE)?;
        let owner = self.user_id()?;
        let held = self.caller.actor.permissions().cloned().unwrap_or_default();
        let now = self.ports().clock.now();
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
        if request.expires_at.is_some_and(|at| at <= now) {
            errors.add("expires_at", "in_past", "must be in the future");
        }
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
            expires_at: request.expires_at,
            last_used_at: None,
            created_at: now,
        };
        let mut tx = self.ports().unit_of_work.begin().await?;
        self.ports().api_keys.insert(tx.as_mut(), &key).await?;
        let entry = NewActivity::new("api_key.created", "api_key", now)
            .resource(key.id)
            .changes(json!({ "name": key.name, "scopes": key.scopes }));
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
        Ok(self.ports().api_keys.list_for_owner(owner).await?)
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
