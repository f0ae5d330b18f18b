//! An activity entry, as the log stores and returns it.

use chrono::{DateTime, Utc};
use keel_kernel::{ApiKeyId, UserId};
use serde::Serialize;

keel_kernel::define_id!(
    /// Identifies an activity entry.
    ActivityId
);

/// One recorded event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActivityEntry {
    /// Identity.
    pub id: ActivityId,
    /// What happened, e.g. `auth.login`, `user.suspended`.
    pub action: String,
    /// `user`, `api_key`, `system` or `anonymous`.
    pub actor_type: String,
    /// The acting user (the key's owner for API keys); hidden from a subject who is not the
    /// actor and lacks `activity:read`.
    pub actor_user_id: Option<UserId>,
    /// The API key used, if any; hidden like `actor_user_id`.
    pub actor_api_key_id: Option<ApiKeyId>,
    /// The user the entry concerns, when not the actor.
    pub subject_user_id: Option<UserId>,
    /// The kind of resource.
    pub resource_type: String,
    /// The resource's id.
    pub resource_id: Option<String>,
    /// Summary of what changed (never secrets).
    pub changes: serde_json::Value,
    /// Client address; hidden like `actor_user_id`.
    pub ip: Option<String>,
    /// Client user agent; hidden like `actor_user_id`.
    pub user_agent: Option<String>,
    /// Request id, to find the request's log lines.
    pub request_id: Option<String>,
    /// When.
    pub created_at: DateTime<Utc>,
}

impl ActivityEntry {
    /// Drops what identifies the actor (who, and from where), keeping the actor's kind, so
    /// the subject still learns that someone changed their account without learning the
    /// administrator's address, browser or id.
    pub(crate) fn without_actor_details(mut self) -> Self {
        self.actor_user_id = None;
        self.actor_api_key_id = None;
        self.ip = None;
        self.user_agent = None;
        self
    }
}
