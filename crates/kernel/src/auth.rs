//! Who is acting, what they may do, and which rows they may see.
//!
//! Authorization has two layers (see `docs/authorization.md`): a service checks a
//! [`Permission`] before every action (deny by default), and its repository applies a scope
//! inside every query, so rows outside it never leave the database.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;

use serde::Serialize;

use crate::error::DomainError;
use crate::id::{ApiKeyId, SessionId, UserId};

/// A permission name of the form `resource:action`, e.g. `release_notes:write`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Permission(Cow<'static, str>);

/// The text given is not of the form `resource:action`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a permission of the form resource:action (lowercase letters, digits, _)")]
pub struct InvalidPermission(pub String);

impl Permission {
    /// A permission known at compile time. Domains declare theirs as constants.
    ///
    /// The format is checked by [`Permission::parse`] in each domain's tests; a malformed
    /// constant is a programming error, caught there.
    pub const fn from_static(name: &'static str) -> Self {
        Self(Cow::Borrowed(name))
    }

    /// Parses a permission read from storage or input.
    pub fn parse(name: &str) -> Result<Self, InvalidPermission> {
        let valid_part = |part: &str| {
            !part.is_empty()
                && part.len() <= 64
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        };
        match name.split_once(':') {
            Some((resource, action)) if valid_part(resource) && valid_part(action) => {
                Ok(Self(Cow::Owned(name.to_owned())))
            }
            _ => Err(InvalidPermission(name.to_owned())),
        }
    }

    /// The full name, `resource:action`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A permission a domain defines, with what it allows (the catalogue `GET /permissions` lists).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PermissionDef {
    /// The permission.
    pub permission: Permission,
    /// What it allows, for administrators.
    pub description: &'static str,
    /// Whether every account gets it (through the `member` role) unless an administrator
    /// takes it away.
    pub for_members: bool,
}

impl PermissionDef {
    /// A definition (administrators only, until granted to a role).
    pub const fn new(permission: Permission, description: &'static str) -> Self {
        Self {
            permission,
            description,
            for_members: false,
        }
    }

    /// Grants it to the `member` role by default.
    #[must_use]
    pub const fn for_members(mut self) -> Self {
        self.for_members = true;
        self
    }
}

/// The permissions an actor holds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct PermissionSet(BTreeSet<Permission>);

impl PermissionSet {
    /// No permissions.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Whether `permission` is held.
    pub fn contains(&self, permission: &Permission) -> bool {
        self.0.contains(permission)
    }

    /// Adds a permission.
    pub fn insert(&mut self, permission: Permission) {
        self.0.insert(permission);
    }

    /// The permissions held in both sets (an API key's scopes narrow its owner's permissions).
    pub fn intersection(&self, other: &Self) -> Self {
        Self(self.0.intersection(&other.0).cloned().collect())
    }

    /// Iterates in name order.
    pub fn iter(&self) -> impl Iterator<Item = &Permission> {
        self.0.iter()
    }
}

impl FromIterator<Permission> for PermissionSet {
    fn from_iter<I: IntoIterator<Item = Permission>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

/// Who is performing an action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Actor {
    /// No credentials were presented.
    Anonymous,
    /// A signed-in user.
    User {
        /// The user.
        id: UserId,
        /// The session the access token belongs to.
        session: SessionId,
        /// Effective permissions from the user's roles.
        permissions: PermissionSet,
    },
    /// A request authenticated with an API key, acting for the key's owner.
    ApiKey {
        /// The key.
        id: ApiKeyId,
        /// The user who owns the key.
        owner: UserId,
        /// The owner's permissions narrowed by the key's scopes.
        permissions: PermissionSet,
    },
    /// A user acting through an external identity provider's access token: the linked account
    /// with its permissions, but no Keel session (account self-service is closed to it, as to
    /// API keys).
    Federated {
        /// The linked account.
        id: UserId,
        /// The configured provider that issued the token.
        provider: String,
        /// Effective permissions from the account's roles.
        permissions: PermissionSet,
    },
    /// A signed-in user whose email address is not confirmed while confirmation is required.
    /// Holds no permission: every permission check refuses with
    /// [`DomainError::EMAIL_UNVERIFIED`]; only the few use cases that allow it (reading the
    /// profile, verification, refresh, sign-out) look past that.
    Unverified {
        /// The user.
        id: UserId,
        /// The session the access token belongs to.
        session: SessionId,
    },
    /// Keel itself (seeding, scheduled jobs). Holds every permission; never built from a request.
    System,
}

impl Actor {
    /// The session of a signed-in user (not of API keys, which have none).
    pub fn session_id(&self) -> Option<SessionId> {
        match self {
            Self::User { session, .. } | Self::Unverified { session, .. } => Some(*session),
            _ => None,
        }
    }

    /// The permissions the actor holds (`None` for the system actor, which holds all).
    pub fn permissions(&self) -> Option<&PermissionSet> {
        match self {
            Self::User { permissions, .. }
            | Self::ApiKey { permissions, .. }
            | Self::Federated { permissions, .. } => Some(permissions),
            Self::Anonymous | Self::Unverified { .. } | Self::System => None,
        }
    }

    /// A short label for logs and the activity log: `user`, `api_key`, `federated`, `system`,
    /// `anonymous`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Anonymous => "anonymous",
            Self::User { .. } | Self::Unverified { .. } => "user",
            Self::ApiKey { .. } => "api_key",
            Self::Federated { .. } => "federated",
            Self::System => "system",
        }
    }

    /// The user on whose behalf the action runs, if any.
    pub fn user_id(&self) -> Option<UserId> {
        match self {
            Self::User { id, .. } | Self::Unverified { id, .. } | Self::Federated { id, .. } => {
                Some(*id)
            }
            Self::ApiKey { owner, .. } => Some(*owner),
            Self::Anonymous | Self::System => None,
        }
    }

    /// Whether the actor holds every permission in `set` (the system actor holds all).
    pub fn holds_all<'a>(&self, set: impl IntoIterator<Item = &'a Permission>) -> bool {
        set.into_iter().all(|permission| self.can(permission))
    }

    /// Fails with [`DomainError::EMAIL_UNVERIFIED`] for an unverified account; use cases that
    /// need no permission but must still be closed to such accounts call this.
    pub fn require_verified(&self) -> Result<(), DomainError> {
        match self {
            Self::Unverified { .. } => Err(DomainError::EMAIL_UNVERIFIED),
            _ => Ok(()),
        }
    }

    /// Whether the actor holds `permission`.
    pub fn can(&self, permission: &Permission) -> bool {
        match self {
            Self::System => true,
            Self::Anonymous | Self::Unverified { .. } => false,
            Self::User { permissions, .. }
            | Self::ApiKey { permissions, .. }
            | Self::Federated { permissions, .. } => permissions.contains(permission),
        }
    }

    /// Layer one of authorization: fails unless the actor holds `permission`.
    ///
    /// An anonymous actor gets [`DomainError::Unauthenticated`] (HTTP 401: signing in may
    /// help); a known one gets [`DomainError::Forbidden`] (HTTP 403).
    pub fn require(&self, permission: &Permission) -> Result<(), DomainError> {
        if self.can(permission) {
            Ok(())
        } else if matches!(self, Self::Anonymous) {
            Err(DomainError::Unauthenticated)
        } else if matches!(self, Self::Unverified { .. }) {
            Err(DomainError::EMAIL_UNVERIFIED)
        } else {
            Err(DomainError::Forbidden {
                permission: permission.to_string(),
            })
        }
    }

    /// The owner scope for a resource: everything with `see_all`, else the actor's own rows.
    ///
    /// Anonymous callers own nothing and get [`DomainError::Unauthenticated`].
    pub fn owner_scope(&self, see_all: &Permission) -> Result<Scope, DomainError> {
        if self.can(see_all) {
            return Ok(Scope::All);
        }
        if matches!(self, Self::Unverified { .. }) {
            return Err(DomainError::EMAIL_UNVERIFIED);
        }
        self.user_id()
            .map(Scope::OwnedBy)
            .ok_or(DomainError::Unauthenticated)
    }
}

/// Where a request came from; recorded with every activity entry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Origin {
    /// The client's address (the peer, or the forwarded client when proxies are trusted).
    pub ip: Option<IpAddr>,
    /// The `User-Agent` header, truncated.
    pub user_agent: Option<String>,
    /// The request id.
    pub request_id: Option<String>,
    /// The request's W3C `traceparent` (the caller's trace, or one started for the request):
    /// jobs it enqueues continue that trace.
    pub trace_parent: Option<String>,
}

/// Who is acting and from where: what every service is built for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// Who.
    pub actor: Actor,
    /// From where.
    pub origin: Origin,
}

impl Caller {
    /// A caller with no request origin (tests, tools).
    pub fn new(actor: Actor) -> Self {
        Self {
            actor,
            origin: Origin::default(),
        }
    }
}

/// The system actor, for use cases Keel runs on its own behalf (`Service::for_system`).
pub static SYSTEM: Caller = Caller {
    actor: Actor::System,
    origin: Origin {
        ip: None,
        user_agent: None,
        request_id: None,
        trace_parent: None,
    },
};

/// Which rows of an owned resource a query may touch; repositories apply it in every query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Every row.
    All,
    /// Only rows owned by this user.
    OwnedBy(UserId),
}

#[cfg(test)]
mod tests {
    use super::*;

    const WRITE: Permission = Permission::from_static("release_notes:write");

    fn member(permissions: &[Permission]) -> Actor {
        Actor::User {
            id: UserId::new(),
            session: SessionId::new(),
            permissions: permissions.iter().cloned().collect(),
        }
    }

    #[test]
    fn permission_names_are_checked() {
        assert!(Permission::parse("release_notes:write").is_ok());
        for bad in ["", "x", "a:", ":b", "A:b", "a:b:c", "a b:c", "a:ü"] {
            assert!(Permission::parse(bad).is_err(), "{bad:?} must be rejected");
        }
        assert_eq!(Permission::parse(WRITE.as_str()).unwrap(), WRITE);
    }

    #[test]
    fn deny_by_default_with_the_right_status() {
        assert!(matches!(
            Actor::Anonymous.require(&WRITE),
            Err(DomainError::Unauthenticated)
        ));
        assert!(matches!(
            member(&[]).require(&WRITE),
            Err(DomainError::Forbidden { permission }) if permission == "release_notes:write"
        ));
        assert!(member(&[WRITE]).require(&WRITE).is_ok());
        assert!(Actor::System.require(&WRITE).is_ok());
    }

    #[test]
    fn unverified_accounts_hold_nothing_and_are_told_why() {
        let actor = Actor::Unverified {
            id: UserId::new(),
            session: SessionId::new(),
        };
        assert!(!actor.can(&WRITE));
        assert!(matches!(
            actor.require(&WRITE),
            Err(DomainError::Refused {
                code: "auth.email_unverified",
                ..
            })
        ));
        assert!(matches!(
            actor.owner_scope(&WRITE),
            Err(DomainError::Refused {
                code: "auth.email_unverified",
                ..
            })
        ));
        assert!(actor.require_verified().is_err());
        assert!(member(&[]).require_verified().is_ok());
        assert!(actor.user_id().is_some() && actor.session_id().is_some());
    }

    #[test]
    fn owner_scope_narrows_to_own_rows_without_the_see_all_permission() {
        let actor = member(&[]);
        let id = actor.user_id().unwrap();
        assert_eq!(actor.owner_scope(&WRITE).unwrap(), Scope::OwnedBy(id));
        assert_eq!(member(&[WRITE]).owner_scope(&WRITE).unwrap(), Scope::All);
        assert!(Actor::Anonymous.owner_scope(&WRITE).is_err());
    }

    #[test]
    fn api_key_permissions_are_the_intersection() {
        let owner: PermissionSet = [WRITE, Permission::from_static("users:read")]
            .into_iter()
            .collect();
        let scopes: PermissionSet = [WRITE].into_iter().collect();
        let narrowed = owner.intersection(&scopes);
        assert!(narrowed.contains(&WRITE));
        assert!(!narrowed.contains(&Permission::from_static("users:read")));
    }
}
