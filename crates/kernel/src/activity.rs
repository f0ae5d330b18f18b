//! The activity log port: every domain records what it changed, in the change's transaction.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::auth::Caller;
use crate::id::UserId;
use crate::repo::{RepoError, Transaction};

/// One thing that happened, as a domain describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct NewActivity {
    /// What happened, `resource.verb` in the past tense, e.g. `user.suspended`, `auth.login`.
    pub action: &'static str,
    /// The kind of thing it happened to, e.g. `user`, `release_note`.
    pub resource_type: &'static str,
    /// Its id, when there is one.
    pub resource_id: Option<String>,
    /// The user the entry concerns when that is not the actor (a failed login on an account,
    /// an admin suspending someone): they see it among their own entries.
    pub subject: Option<UserId>,
    /// A summary of what changed: field names, or `{field: {from, to}}` for non-secret fields.
    /// Never secrets.
    pub changes: Value,
    /// When it happened.
    pub at: DateTime<Utc>,
}

impl NewActivity {
    /// An entry with no change summary.
    pub fn new(action: &'static str, resource_type: &'static str, at: DateTime<Utc>) -> Self {
        Self {
            action,
            resource_type,
            resource_id: None,
            subject: None,
            changes: Value::Null,
            at,
        }
    }

    /// Names the resource.
    #[must_use]
    pub fn resource(mut self, id: impl std::fmt::Display) -> Self {
        self.resource_id = Some(id.to_string());
        self
    }

    /// Names the user the entry concerns.
    #[must_use]
    pub fn subject(mut self, user: UserId) -> Self {
        self.subject = Some(user);
        self
    }

    /// Attaches the change summary.
    #[must_use]
    pub fn changes(mut self, changes: Value) -> Self {
        self.changes = changes;
        self
    }
}

/// Appends activity entries. Implementations write in the given transaction, so an entry
/// exists exactly when the change it describes was committed.
#[async_trait]
pub trait ActivityLog: Send + Sync + std::fmt::Debug {
    /// Records `entry`, done by `caller` (actor, ip, user agent and request id are taken from
    /// it).
    async fn record(
        &self,
        tx: &mut dyn Transaction,
        caller: &Caller,
        entry: NewActivity,
    ) -> Result<(), RepoError>;
}

/// An activity log that keeps entries in memory, for unit tests.
#[derive(Debug, Default)]
pub struct InMemoryActivityLog {
    entries: std::sync::Mutex<Vec<(Caller, NewActivity)>>,
}

impl InMemoryActivityLog {
    /// The actions recorded so far, in order.
    pub fn actions(&self) -> Vec<&'static str> {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(_, e)| e.action)
            .collect()
    }

    /// Every entry recorded so far.
    pub fn entries(&self) -> Vec<(Caller, NewActivity)> {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

#[async_trait]
impl ActivityLog for InMemoryActivityLog {
    async fn record(
        &self,
        _tx: &mut dyn Transaction,
        caller: &Caller,
        entry: NewActivity,
    ) -> Result<(), RepoError> {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((caller.clone(), entry));
        Ok(())
    }
}
