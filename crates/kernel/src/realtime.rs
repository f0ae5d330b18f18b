//! Real-time events: what a WebSocket client may subscribe to, and who may see each event.
//!
//! A feature declares a [`Topic`] for a resource kind; every change to such a resource (its
//! activity entry) becomes a [`RealtimeEvent`] published after the change commits, and a
//! connection subscribed to the topic receives it only when [`Topic::may_see`] says so: the
//! same owner-or-see-all rule the feature's reads apply.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::auth::{Actor, Permission};
use crate::id::UserId;
use crate::jobs::{Job, Queue, RetryPolicy};

/// A stream of events about one kind of resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topic {
    /// What clients subscribe to (`projects`).
    pub name: &'static str,
    /// The activity entries' `resource_type` it carries (`project`).
    pub resource: &'static str,
    /// Needed to subscribe at all (the permission to read one's own).
    pub read: Permission,
    /// Sees everyone's events, not only those of resources it owns.
    pub see_all: Permission,
}

impl Topic {
    /// Whether `actor` may subscribe.
    pub fn may_subscribe(&self, actor: &Actor) -> bool {
        actor.can(&self.read) || actor.can(&self.see_all)
    }

    /// Whether `actor` may see `event`: its owner, or a holder of [`Topic::see_all`].
    pub fn may_see(&self, actor: &Actor, event: &RealtimeEvent) -> bool {
        event.topic == self.name
            && (actor.can(&self.see_all)
                || (actor.can(&self.read)
                    && event.owner.is_some()
                    && event.owner == actor.user_id()))
    }
}

/// One change, as connections receive it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RealtimeEvent {
    /// The topic.
    pub topic: String,
    /// The activity action (`project.updated`).
    pub event: String,
    /// `{resource, id, subject, actor, changes}`, as webhooks carry it.
    pub data: serde_json::Value,
    /// Whose resource it is.
    pub owner: Option<UserId>,
}

/// Hands an event to every replica (through Redis), enqueued with the change itself.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PublishRealtimeEvent {
    /// The event.
    pub event: RealtimeEvent,
}

impl Job for PublishRealtimeEvent {
    const KIND: &'static str = "realtime.publish";
    const QUEUE: Queue = Queue::High;

    /// A live view loses its value fast: a few quick retries, then it is dropped.
    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 3,
            backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(2),
            timeout: Duration::from_secs(10),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::PermissionSet;
    use crate::id::SessionId;

    const TOPIC: Topic = Topic {
        name: "widgets",
        resource: "widget",
        read: Permission::from_static("widgets:write"),
        see_all: Permission::from_static("widgets:manage_all"),
    };

    fn user(permissions: &[Permission]) -> Actor {
        Actor::User {
            id: UserId::new(),
            session: SessionId::new(),
            permissions: permissions.iter().cloned().collect::<PermissionSet>(),
        }
    }

    #[test]
    fn owners_and_see_all_holders_see_an_event_and_nobody_else() {
        let owner = user(&[TOPIC.read]);
        let event = RealtimeEvent {
            topic: "widgets".into(),
            event: "widget.created".into(),
            data: serde_json::Value::Null,
            owner: owner.user_id(),
        };
        assert!(TOPIC.may_see(&owner, &event));
        assert!(TOPIC.may_see(&user(&[TOPIC.see_all]), &event));
        assert!(!TOPIC.may_see(&user(&[TOPIC.read]), &event));
        assert!(!TOPIC.may_see(&user(&[]), &event));
        assert!(!TOPIC.may_subscribe(&user(&[])));
        let ownerless = RealtimeEvent {
            owner: None,
            ..event.clone()
        };
        assert!(!TOPIC.may_see(&owner, &ownerless));
        let other_topic = RealtimeEvent {
            topic: "gadgets".into(),
            ..event
        };
        assert!(!TOPIC.may_see(&user(&[TOPIC.see_all]), &other_topic));
    }
}

/// Why a receiver got no event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missed {
    /// It fell behind and events were dropped for it.
    Lagged,
    /// The feed is gone.
    Closed,
}

/// A connection's view of the feed: every event from the moment it subscribed.
#[async_trait::async_trait]
pub trait EventReceiver: Send {
    /// The next event.
    async fn next(&mut self) -> Result<std::sync::Arc<RealtimeEvent>, Missed>;
}

/// The process's real-time feed, as the HTTP adapter sees it: its topics, a receiver per
/// connection, and the connection count.
pub trait RealtimeFeed: Send + Sync + std::fmt::Debug {
    /// The topic named `name`.
    fn topic(&self, name: &str) -> Option<Topic>;
    /// Every topic's name.
    fn topic_names(&self) -> Vec<&'static str>;
    /// A receiver of every event from now on.
    fn listen(&self) -> Box<dyn EventReceiver>;
    /// Takes a connection slot unless `max` are taken; it is freed when the guard drops.
    fn admit(&self, max: usize) -> Option<Box<dyn std::any::Any + Send>>;
}
