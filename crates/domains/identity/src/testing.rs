//! In-memory repositories and port fakes for unit tests of identity and of code using it.
//!
//! The store honours uniqueness (emails, role names, key prefixes), scoping by owner and the
//! single-use rule of one-time tokens. Lists ignore sort, filters and search: the query
//! language is tested against real databases.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use keel_kernel::activity::InMemoryActivityLog;
use keel_kernel::error::BoxError;
use keel_kernel::jobs::InMemoryJobQueue;
use keel_kernel::mail::{self, SendEmail};
use keel_kernel::query::Position;
use keel_kernel::repo::InMemoryUnitOfWork;
use keel_kernel::throttle::{InMemoryCache, InMemoryCounters};
use keel_kernel::{
    ApiKeyId, Clock, ListQuery, Page, PermissionSet, RepoError, SessionId, Transaction, UserId,
};

use crate::model::{
    ApiKey, Email, ExternalIdentity, OneTimeToken, PermissionInfo, RefreshToken, Role, RoleId,
    Session, TokenId, TokenPurpose, TotpFactor, User, UserStatus,
};
use crate::repository::{
    ApiKeyRepository, ExternalIdentityRepository, MfaRepository, OneTimeTokenRepository,
    RoleRepository, SessionRepository, UserRepository,
};
use crate::security::{
    AccessClaims, AccessTokens, HashError, IdentityProviders, IssuedToken, PasswordHasher,
    ProviderClaims, ProviderError, Secrets, Verification,
};
use crate::service::IdentityPorts;

#[derive(Debug, Default)]
struct State {
    users: Vec<User>,
    roles: Vec<Role>,
    grants: Vec<(UserId, RoleId)>,
    catalog: Vec<PermissionInfo>,
    sessions: Vec<Session>,
    refresh: Vec<RefreshToken>,
    tokens: Vec<OneTimeToken>,
    keys: Vec<ApiKey>,
    factors: Vec<TotpFactor>,
    /// (owner, digest, used at)
    recovery_codes: Vec<(UserId, String, Option<DateTime<Utc>>)>,
    links: Vec<ExternalIdentity>,
}

/// Every identity repository over one in-memory state.
#[derive(Debug, Default)]
pub struct InMemoryIdentityStore {
    state: Mutex<State>,
    account_reads: std::sync::atomic::AtomicU64,
}

impl InMemoryIdentityStore {
    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn count_account_read(&self) {
        self.account_reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// How many times an account, its roles or its permissions were read by id (what a
    /// database round trip would cost), for assertions about caching.
    pub fn account_reads(&self) -> u64 {
        self.account_reads
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// All sessions (for assertions).
    pub fn sessions(&self) -> Vec<Session> {
        self.with(|s| s.sessions.clone())
    }
}

fn unique(constraint: &str) -> RepoError {
    RepoError::UniqueViolation {
        constraint: constraint.to_owned(),
    }
}

fn roles_of(state: &State, user: UserId) -> Vec<Role> {
    let mut roles: Vec<Role> = state
        .grants
        .iter()
        .filter(|(u, _)| *u == user)
        .filter_map(|(_, r)| state.roles.iter().find(|role| role.id == *r).cloned())
        .collect();
    roles.sort_by(|a, b| a.name.cmp(&b.name));
    roles
}

#[async_trait]
impl UserRepository for InMemoryIdentityStore {
    async fn list(&self, query: &ListQuery) -> Result<Page<User>, RepoError> {
        let offset = match query.position {
            Position::Offset(offset) => usize::try_from(offset).unwrap_or(usize::MAX),
            Position::After(_) => 0,
        };
        Ok(self.with(|s| Page {
            items: s
                .users
                .iter()
                .skip(offset)
                .take(query.limit as usize)
                .cloned()
                .collect(),
            total: s.users.len() as u64,
            limit: query.limit,
            offset: Some(offset as u64),
            next_cursor: None,
        }))
    }

    async fn find(&self, id: UserId) -> Result<Option<User>, RepoError> {
        self.count_account_read();
        Ok(self.with(|s| s.users.iter().find(|u| u.id == id).cloned()))
    }

    async fn find_by_email(&self, email: &Email) -> Result<Option<User>, RepoError> {
        Ok(self.with(|s| {
            s.users
                .iter()
                .find(|u| &u.email == email && u.deleted_at.is_none())
                .cloned()
        }))
    }

    async fn find_by_email_in(
        &self,
        _tx: &mut dyn Transaction,
        email: &Email,
    ) -> Result<Option<User>, RepoError> {
        UserRepository::find_by_email(self, email).await
    }

    async fn find_in(
        &self,
        _tx: &mut dyn Transaction,
        id: UserId,
    ) -> Result<Option<User>, RepoError> {
        UserRepository::find(self, id).await
    }

    async fn find_for_update(
        &self,
        _tx: &mut dyn Transaction,
        id: UserId,
    ) -> Result<Option<User>, RepoError> {
        UserRepository::find(self, id).await
    }

    async fn insert(&self, _tx: &mut dyn Transaction, user: &User) -> Result<(), RepoError> {
        self.with(|s| {
            if s.users.iter().any(|u| u.email == user.email) {
                return Err(unique("users.email"));
            }
            s.users.push(user.clone());
            Ok(())
        })
    }

    async fn update(&self, _tx: &mut dyn Transaction, user: &User) -> Result<(), RepoError> {
        self.with(|s| {
            if let Some(stored) = s.users.iter_mut().find(|u| u.id == user.id) {
                *stored = user.clone();
            }
        });
        Ok(())
    }

    async fn roles_of(&self, user: UserId) -> Result<Vec<Role>, RepoError> {
        self.count_account_read();
        Ok(self.with(|s| roles_of(s, user)))
    }

    async fn roles_of_in(
        &self,
        _tx: &mut dyn Transaction,
        user: UserId,
    ) -> Result<Vec<Role>, RepoError> {
        UserRepository::roles_of(self, user).await
    }

    async fn permissions_of(&self, user: UserId) -> Result<PermissionSet, RepoError> {
        self.count_account_read();
        Ok(self.with(|s| {
            roles_of(s, user)
                .into_iter()
                .flat_map(|r| r.permissions)
                .collect()
        }))
    }

    async fn grant_role(
        &self,
        _tx: &mut dyn Transaction,
        user: UserId,
        role: RoleId,
        _at: DateTime<Utc>,
    ) -> Result<bool, RepoError> {
        Ok(self.with(|s| {
            if s.grants.contains(&(user, role)) {
                false
            } else {
                s.grants.push((user, role));
                true
            }
        }))
    }

    async fn revoke_role(
        &self,
        _tx: &mut dyn Transaction,
        user: UserId,
        role: RoleId,
    ) -> Result<bool, RepoError> {
        Ok(self.with(|s| {
            let before = s.grants.len();
            s.grants.retain(|g| *g != (user, role));
            s.grants.len() != before
        }))
    }

    async fn count_active_with_role(
        &self,
        _tx: &mut dyn Transaction,
        role: RoleId,
    ) -> Result<u64, RepoError> {
        Ok(self.with(|s| {
            s.grants
                .iter()
                .filter(|(_, r)| *r == role)
                .filter(|(u, _)| {
                    s.users.iter().any(|user| {
                        user.id == *u
                            && user.status == UserStatus::Active
                            && user.deleted_at.is_none()
                    })
                })
                .count() as u64
        }))
    }

    async fn holds_role(
        &self,
        _tx: &mut dyn Transaction,
        user: UserId,
        role: RoleId,
    ) -> Result<bool, RepoError> {
        Ok(self.with(|s| s.grants.contains(&(user, role))))
    }

    async fn holders_of(&self, role: RoleId) -> Result<Vec<UserId>, RepoError> {
        Ok(self.with(|s| {
            s.grants
                .iter()
                .filter(|(_, r)| *r == role)
                .map(|(u, _)| *u)
                .collect()
        }))
    }
}

#[async_trait]
impl RoleRepository for InMemoryIdentityStore {
    async fn list(&self) -> Result<Vec<Role>, RepoError> {
        Ok(self.with(|s| {
            let mut roles = s.roles.clone();
            roles.sort_by(|a, b| a.name.cmp(&b.name));
            roles
        }))
    }

    async fn find(&self, id: RoleId) -> Result<Option<Role>, RepoError> {
        Ok(self.with(|s| s.roles.iter().find(|r| r.id == id).cloned()))
    }

    async fn find_by_name(&self, name: &str) -> Result<Option<Role>, RepoError> {
        Ok(self.with(|s| s.roles.iter().find(|r| r.name == name).cloned()))
    }

    async fn find_by_name_in(
        &self,
        _tx: &mut dyn Transaction,
        name: &str,
    ) -> Result<Option<Role>, RepoError> {
        RoleRepository::find_by_name(self, name).await
    }

    async fn insert(&self, _tx: &mut dyn Transaction, role: &Role) -> Result<(), RepoError> {
        self.with(|s| {
            if s.roles.iter().any(|r| r.name == role.name) {
                return Err(unique("roles.name"));
            }
            s.roles.push(role.clone());
            Ok(())
        })
    }

    async fn set_permissions(
        &self,
        _tx: &mut dyn Transaction,
        role: RoleId,
        permissions: &PermissionSet,
    ) -> Result<(), RepoError> {
        self.with(|s| {
            if let Some(stored) = s.roles.iter_mut().find(|r| r.id == role) {
                stored.permissions = permissions.iter().cloned().collect();
            }
        });
        Ok(())
    }

    async fn lock(&self, _tx: &mut dyn Transaction, _id: RoleId) -> Result<(), RepoError> {
        Ok(())
    }

    async fn upsert_permissions(
        &self,
        _tx: &mut dyn Transaction,
        catalog: &[PermissionInfo],
    ) -> Result<(), RepoError> {
        self.with(|s| {
            for info in catalog {
                s.catalog.retain(|c| c.name != info.name);
                s.catalog.push(info.clone());
            }
            s.catalog.sort_by(|a, b| a.name.cmp(&b.name));
        });
        Ok(())
    }

    async fn list_permissions(&self) -> Result<Vec<PermissionInfo>, RepoError> {
        Ok(self.with(|s| s.catalog.clone()))
    }
}

#[async_trait]
impl SessionRepository for InMemoryIdentityStore {
    async fn find(&self, id: SessionId) -> Result<Option<Session>, RepoError> {
        Ok(self.with(|s| s.sessions.iter().find(|x| x.id == id).cloned()))
    }

    async fn find_for_update(
        &self,
        _tx: &mut dyn Transaction,
        id: SessionId,
    ) -> Result<Option<Session>, RepoError> {
        SessionRepository::find(self, id).await
    }

    async fn insert(&self, _tx: &mut dyn Transaction, session: &Session) -> Result<(), RepoError> {
        self.with(|s| s.sessions.push(session.clone()));
        Ok(())
    }

    async fn update(&self, _tx: &mut dyn Transaction, session: &Session) -> Result<(), RepoError> {
        self.with(|s| {
            if let Some(stored) = s.sessions.iter_mut().find(|x| x.id == session.id) {
                *stored = session.clone();
            }
        });
        Ok(())
    }

    async fn live_for_user(
        &self,
        user: UserId,
        now: DateTime<Utc>,
    ) -> Result<Vec<Session>, RepoError> {
        Ok(self.with(|s| {
            s.sessions
                .iter()
                .filter(|x| x.user_id == user && x.is_live(now))
                .cloned()
                .collect()
        }))
    }

    async fn revoke_all(
        &self,
        _tx: &mut dyn Transaction,
        user: UserId,
        keep: Option<SessionId>,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<SessionId>, RepoError> {
        Ok(self.with(|s| {
            let mut revoked = Vec::new();
            for session in s.sessions.iter_mut() {
                if session.user_id == user && session.is_live(now) && Some(session.id) != keep {
                    session.revoked_at = Some(now);
                    session.revoked_reason = Some(reason.to_owned());
                    revoked.push(session.id);
                }
            }
            revoked
        }))
    }

    async fn insert_refresh_token(
        &self,
        _tx: &mut dyn Transaction,
        token: &RefreshToken,
    ) -> Result<(), RepoError> {
        self.with(|s| s.refresh.push(token.clone()));
        Ok(())
    }

    async fn lookup_refresh_token(
        &self,
        digests: &[String],
    ) -> Result<Option<RefreshToken>, RepoError> {
        Ok(self.with(|s| {
            s.refresh
                .iter()
                .find(|t| digests.contains(&t.digest))
                .cloned()
        }))
    }

    async fn find_refresh_token_by_id(
        &self,
        _tx: &mut dyn Transaction,
        id: TokenId,
    ) -> Result<Option<RefreshToken>, RepoError> {
        Ok(self.with(|s| s.refresh.iter().find(|t| t.id == id).cloned()))
    }

    async fn mark_rotated(
        &self,
        _tx: &mut dyn Transaction,
        id: TokenId,
        successor: TokenId,
        at: DateTime<Utc>,
    ) -> Result<bool, RepoError> {
        Ok(self.with(|s| {
            match s
                .refresh
                .iter_mut()
                .find(|t| t.id == id && t.rotated_at.is_none())
            {
                Some(token) => {
                    token.rotated_at = Some(at);
                    token.replaced_by = Some(successor);
                    true
                }
                None => false,
            }
        }))
    }

    async fn purge_ended(&self, before: DateTime<Utc>) -> Result<u64, RepoError> {
        Ok(self.with(|s| {
            let kept = s.sessions.len();
            s.sessions.retain(|x| {
                x.expires_at >= before
                    && x.idle_expires_at >= before
                    && x.revoked_at.is_none_or(|r| r >= before)
            });
            (kept - s.sessions.len()) as u64
        }))
    }
}

#[async_trait]
impl OneTimeTokenRepository for InMemoryIdentityStore {
    async fn insert(
        &self,
        _tx: &mut dyn Transaction,
        token: &OneTimeToken,
    ) -> Result<(), RepoError> {
        self.with(|s| s.tokens.push(token.clone()));
        Ok(())
    }

    async fn find(
        &self,
        purpose: TokenPurpose,
        digests: &[String],
    ) -> Result<Option<OneTimeToken>, RepoError> {
        Ok(self.with(|s| {
            s.tokens
                .iter()
                .find(|t| t.purpose == purpose && digests.contains(&t.digest))
                .cloned()
        }))
    }

    async fn consume(
        &self,
        _tx: &mut dyn Transaction,
        id: TokenId,
        at: DateTime<Utc>,
    ) -> Result<bool, RepoError> {
        Ok(self.with(|s| {
            match s
                .tokens
                .iter_mut()
                .find(|t| t.id == id && t.used_at.is_none())
            {
                Some(token) => {
                    token.used_at = Some(at);
                    true
                }
                None => false,
            }
        }))
    }

    async fn consume_all(
        &self,
        _tx: &mut dyn Transaction,
        user: UserId,
        purpose: TokenPurpose,
        at: DateTime<Utc>,
    ) -> Result<u64, RepoError> {
        Ok(self.with(|s| {
            let mut ended = 0;
            for token in s
                .tokens
                .iter_mut()
                .filter(|t| t.user_id == user && t.purpose == purpose && t.used_at.is_none())
            {
                token.used_at = Some(at);
                ended += 1;
            }
            ended
        }))
    }

    async fn purge(&self, before: DateTime<Utc>) -> Result<u64, RepoError> {
        Ok(self.with(|s| {
            let kept = s.tokens.len();
            s.tokens
                .retain(|t| t.expires_at >= before && t.used_at.is_none_or(|u| u >= before));
            (kept - s.tokens.len()) as u64
        }))
    }
}

#[async_trait]
impl MfaRepository for InMemoryIdentityStore {
    async fn find(&self, user: UserId) -> Result<Option<TotpFactor>, RepoError> {
        Ok(self.with(|s| s.factors.iter().find(|f| f.user_id == user).cloned()))
    }

    async fn find_for_update(
        &self,
        _tx: &mut dyn Transaction,
        user: UserId,
    ) -> Result<Option<TotpFactor>, RepoError> {
        MfaRepository::find(self, user).await
    }

    async fn save(&self, _tx: &mut dyn Transaction, factor: &TotpFactor) -> Result<(), RepoError> {
        self.with(|s| {
            s.factors.retain(|f| f.user_id != factor.user_id);
            s.factors.push(factor.clone());
        });
        Ok(())
    }

    async fn delete(&self, _tx: &mut dyn Transaction, user: UserId) -> Result<bool, RepoError> {
        Ok(self.with(|s| {
            let before = s.factors.len();
            s.factors.retain(|f| f.user_id != user);
            s.recovery_codes.retain(|(u, _, _)| *u != user);
            s.factors.len() < before
        }))
    }

    async fn replace_recovery_codes(
        &self,
        _tx: &mut dyn Transaction,
        user: UserId,
        _pepper_id: &str,
        digests: &[String],
        _at: DateTime<Utc>,
    ) -> Result<(), RepoError> {
        self.with(|s| {
            s.recovery_codes.retain(|(u, _, _)| *u != user);
            s.recovery_codes
                .extend(digests.iter().map(|d| (user, d.clone(), None)));
        });
        Ok(())
    }

    async fn use_recovery_code(
        &self,
        _tx: &mut dyn Transaction,
        user: UserId,
        digests: &[String],
        at: DateTime<Utc>,
    ) -> Result<bool, RepoError> {
        Ok(self.with(|s| {
            match s
                .recovery_codes
                .iter_mut()
                .find(|(u, d, used)| *u == user && used.is_none() && digests.contains(d))
            {
                Some(code) => {
                    code.2 = Some(at);
                    true
                }
                None => false,
            }
        }))
    }

    async fn recovery_codes_left(&self, user: UserId) -> Result<u32, RepoError> {
        Ok(self.with(|s| {
            s.recovery_codes
                .iter()
                .filter(|(u, _, used)| *u == user && used.is_none())
                .count() as u32
        }))
    }
}

#[async_trait]
impl ApiKeyRepository for InMemoryIdentityStore {
    async fn insert(&self, _tx: &mut dyn Transaction, key: &ApiKey) -> Result<(), RepoError> {
        self.with(|s| {
            if s.keys.iter().any(|k| k.prefix == key.prefix) {
                return Err(unique("api_keys.prefix"));
            }
            s.keys.push(key.clone());
            Ok(())
        })
    }

    async fn list_for_owner(&self, owner: UserId) -> Result<Vec<ApiKey>, RepoError> {
        Ok(self.with(|s| {
            s.keys
                .iter()
                .filter(|k| k.user_id == owner)
                .cloned()
                .collect()
        }))
    }

    async fn find_by_prefix(&self, prefix: &str) -> Result<Option<ApiKey>, RepoError> {
        Ok(self.with(|s| s.keys.iter().find(|k| k.prefix == prefix).cloned()))
    }

    async fn delete(
        &self,
        _tx: &mut dyn Transaction,
        owner: UserId,
        id: ApiKeyId,
    ) -> Result<bool, RepoError> {
        Ok(self.with(|s| {
            let before = s.keys.len();
            s.keys.retain(|k| !(k.id == id && k.user_id == owner));
            s.keys.len() != before
        }))
    }

    async fn delete_all_for(
        &self,
        _tx: &mut dyn Transaction,
        owner: UserId,
    ) -> Result<u64, RepoError> {
        Ok(self.with(|s| {
            let before = s.keys.len();
            s.keys.retain(|k| k.user_id != owner);
            (before - s.keys.len()) as u64
        }))
    }

    async fn touch(&self, id: ApiKeyId, at: DateTime<Utc>) -> Result<(), RepoError> {
        self.with(|s| {
            if let Some(key) = s.keys.iter_mut().find(|k| k.id == id) {
                key.last_used_at = Some(at);
            }
        });
        Ok(())
    }
}

#[async_trait]
impl ExternalIdentityRepository for InMemoryIdentityStore {
    async fn find(
        &self,
        provider: &str,
        subject: &str,
    ) -> Result<Option<ExternalIdentity>, RepoError> {
        Ok(self.with(|s| {
            s.links
                .iter()
                .find(|l| l.provider == provider && l.subject == subject)
                .cloned()
        }))
    }

    async fn find_for_update(
        &self,
        _tx: &mut dyn Transaction,
        provider: &str,
        subject: &str,
    ) -> Result<Option<ExternalIdentity>, RepoError> {
        ExternalIdentityRepository::find(self, provider, subject).await
    }

    async fn insert(
        &self,
        _tx: &mut dyn Transaction,
        link: &ExternalIdentity,
    ) -> Result<(), RepoError> {
        self.with(|s| {
            if s.links
                .iter()
                .any(|l| l.provider == link.provider && l.subject == link.subject)
            {
                return Err(unique("external_identities.provider_subject"));
            }
            s.links.push(link.clone());
            Ok(())
        })
    }

    async fn update(
        &self,
        _tx: &mut dyn Transaction,
        link: &ExternalIdentity,
    ) -> Result<(), RepoError> {
        self.with(|s| {
            if let Some(row) = s.links.iter_mut().find(|l| l.id == link.id) {
                *row = link.clone();
            }
        });
        Ok(())
    }
}

/// "Hashes" as `fake$<password>`; hashes starting `old$` report that they need a rehash.
#[derive(Debug, Default)]
pub struct FakeHasher {
    verifications: AtomicU64,
}

impl FakeHasher {
    /// How many verifications ran (unknown accounts included).
    pub fn verifications(&self) -> u64 {
        self.verifications.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl PasswordHasher for FakeHasher {
    async fn hash(&self, password: &str) -> Result<String, HashError> {
        Ok(format!("fake${password}"))
    }

    async fn verify(&self, password: &str, hash: Option<&str>) -> Result<Verification, HashError> {
        self.verifications.fetch_add(1, Ordering::SeqCst);
        Ok(match hash {
            Some(hash) => Verification {
                matches: hash.split_once('$').is_some_and(|(_, p)| p == password),
                needs_rehash: hash.starts_with("old$"),
            },
            None => Verification {
                matches: false,
                needs_rehash: false,
            },
        })
    }
}

/// Tokens of the form `<user>.<session>.<expiry unix seconds>`, checked against a clock.
#[derive(Debug)]
pub struct FakeAccessTokens {
    clock: Arc<dyn Clock>,
    ttl: TimeDelta,
}

impl FakeAccessTokens {
    /// Tokens that live `ttl`.
    pub fn new(clock: Arc<dyn Clock>, ttl: TimeDelta) -> Self {
        Self { clock, ttl }
    }
}

impl AccessTokens for FakeAccessTokens {
    fn issue(
        &self,
        user: UserId,
        session: SessionId,
        now: DateTime<Utc>,
    ) -> Result<IssuedToken, BoxError> {
        let expires_at = now + self.ttl;
        Ok(IssuedToken {
            token: format!("{user}.{session}.{}", expires_at.timestamp()),
            expires_in: u64::try_from(self.ttl.num_seconds()).unwrap_or(0),
        })
    }

    fn verify(&self, token: &str) -> Option<AccessClaims> {
        let mut parts = token.split('.');
        let user = parts.next()?.parse().ok()?;
        let session = parts.next()?.parse().ok()?;
        let expires_at = DateTime::from_timestamp(parts.next()?.parse().ok()?, 0)?;
        (expires_at > self.clock.now()).then_some(AccessClaims {
            user,
            session,
            issued_at: expires_at - self.ttl,
            expires_at,
        })
    }
}

/// Numbered tokens; the "digest" of `s` is `d:<s>` under pepper `p1`.
#[derive(Debug, Default)]
pub struct FakeSecrets {
    next: AtomicU64,
}

impl Secrets for FakeSecrets {
    fn token(&self) -> Result<String, BoxError> {
        Ok(format!("tok{}", self.next.fetch_add(1, Ordering::SeqCst)))
    }

    fn short_id(&self) -> Result<String, BoxError> {
        Ok(format!("id{}", self.next.fetch_add(1, Ordering::SeqCst)))
    }

    fn digest(&self, secret: &str) -> (String, String) {
        ("p1".to_owned(), format!("d:{secret}"))
    }

    fn digests(&self, secret: &str) -> Vec<String> {
        vec![format!("d:{secret}")]
    }

    fn verify(&self, pepper_id: &str, secret: &str, digest: &str) -> bool {
        pepper_id == "p1" && digest == format!("d:{secret}")
    }

    fn derive(&self, context: &str) -> (String, String) {
        ("p1".to_owned(), format!("drv:{context}"))
    }

    fn derive_with(&self, pepper_id: &str, context: &str) -> Option<String> {
        (pepper_id == "p1").then(|| format!("drv:{context}"))
    }
}

/// Fakes wired together, with handles to inspect them.
#[derive(Debug)]
pub struct Fakes {
    /// The ports, ready for `Identity::new`.
    pub ports: IdentityPorts,
    /// The store behind every repository.
    pub store: Arc<InMemoryIdentityStore>,
    /// Enqueued jobs (mail among them).
    pub jobs: Arc<InMemoryJobQueue>,
    /// Recorded activity.
    pub activity: Arc<InMemoryActivityLog>,
    /// The hasher.
    pub hasher: Arc<FakeHasher>,
    /// The cache.
    pub cache: Arc<InMemoryCache>,
    /// The identity providers.
    pub providers: Arc<FakeProviders>,
}

impl Fakes {
    /// Mail enqueued for delivery so far.
    pub fn sent_mail(&self) -> Vec<mail::Email> {
        self.jobs
            .payloads::<SendEmail>()
            .into_iter()
            .map(|job| job.email)
            .collect()
    }
}

/// Every port faked, on `clock`, with access tokens living 15 minutes.
pub fn fakes(clock: Arc<dyn Clock>) -> Fakes {
    let store = Arc::new(InMemoryIdentityStore::default());
    let jobs = Arc::new(InMemoryJobQueue::default());
    let activity = Arc::new(InMemoryActivityLog::default());
    let hasher = Arc::new(FakeHasher::default());
    let cache = Arc::new(InMemoryCache::default());
    let providers = Arc::new(FakeProviders::default());
    let ports = IdentityPorts {
        users: store.clone(),
        roles: store.clone(),
        sessions: store.clone(),
        one_time_tokens: store.clone(),
        api_keys: store.clone(),
        mfa: store.clone(),
        external: store.clone(),
        unit_of_work: Arc::new(InMemoryUnitOfWork),
        activity: activity.clone(),
        clock: clock.clone(),
        hasher: hasher.clone(),
        access_tokens: Arc::new(FakeAccessTokens::new(clock, TimeDelta::minutes(15))),
        secrets: Arc::new(FakeSecrets::default()),
        counters: Arc::new(InMemoryCounters::default()),
        cache: cache.clone(),
        jobs: jobs.clone(),
        templates: Arc::new(keel_kernel::mail::ListingTemplates),
        providers: providers.clone(),
    };
    Fakes {
        ports,
        store,
        jobs,
        activity,
        hasher,
        cache,
        providers,
    }
}

/// Builds a valid [`Registration`](crate::Registration) with fake but realistic values: a
/// unique address (a fresh suffix, so factories never collide), a passphrase that passes the
/// default policy, a full name. Override what a test cares about.
#[derive(Debug, Clone)]
pub struct RegistrationFactory {
    registration: crate::Registration,
}

impl Default for RegistrationFactory {
    fn default() -> Self {
        Self::new()
    }
}

impl RegistrationFactory {
    /// A plausible sign-up.
    pub fn new() -> Self {
        use fake::Fake;
        use fake::faker::internet::en::FreeEmailProvider;
        use fake::faker::lorem::en::Words;
        use fake::faker::name::en::{FirstName, LastName};

        let first: String = FirstName().fake();
        let last: String = LastName().fake();
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        let provider: String = FreeEmailProvider().fake();
        let words: Vec<String> = Words(4..6).fake();
        Self {
            registration: crate::Registration {
                email: format!(
                    "{}.{}.{}@{provider}",
                    first.to_lowercase(),
                    last.to_lowercase(),
                    &suffix[..8]
                )
                .replace(['\'', ' '], ""),
                // Four or more words and digits: long, and never on the common list.
                password: format!("{}-{}", words.join("-"), (1000..9999).fake::<u32>()),
                full_name: Some(format!("{first} {last}")),
            },
        }
    }

    /// Sets the email address.
    #[must_use]
    pub fn email(mut self, email: impl Into<String>) -> Self {
        self.registration.email = email.into();
        self
    }

    /// Sets the password.
    #[must_use]
    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.registration.password = password.into();
        self
    }

    /// Sets or clears the full name.
    #[must_use]
    pub fn full_name(mut self, full_name: Option<&str>) -> Self {
        self.registration.full_name = full_name.map(str::to_owned);
        self
    }

    /// The input.
    pub fn build(self) -> crate::Registration {
        self.registration
    }
}

/// Identity providers faked: a token or code given to [`FakeProviders::vouch`] verifies to its
/// claims; anything else is a provider's token that fails verification when it starts with
/// `idp.`, and nobody's otherwise.
#[derive(Debug, Default)]
pub struct FakeProviders {
    vouched: Mutex<std::collections::HashMap<String, ProviderClaims>>,
    /// The (state, nonce, verifier) of every authorization URL built.
    pub started: Mutex<Vec<(String, String, String)>>,
}

impl FakeProviders {
    /// Makes `token` (an access token or an authorization code) verify to `claims`.
    pub fn vouch(&self, token: &str, claims: ProviderClaims) {
        if let Ok(mut vouched) = self.vouched.lock() {
            vouched.insert(token.to_owned(), claims);
        }
    }

    fn claims(&self, token: &str) -> Option<ProviderClaims> {
        self.vouched.lock().ok()?.get(token).cloned()
    }
}

#[async_trait]
impl IdentityProviders for FakeProviders {
    fn knows(&self, provider: &str) -> bool {
        provider == "idp"
    }

    async fn verify_access_token(
        &self,
        token: &str,
    ) -> Result<Option<ProviderClaims>, ProviderError> {
        match self.claims(token) {
            Some(claims) => Ok(Some(claims)),
            None if token.starts_with("idp.") => {
                Err(ProviderError::Rejected("bad signature".into()))
            }
            None => Ok(None),
        }
    }

    async fn authorization_url(
        &self,
        provider: &str,
        _redirect_uri: &str,
        state: &str,
        nonce: &str,
        code_verifier: &str,
    ) -> Result<String, ProviderError> {
        if !self.knows(provider) {
            return Err(ProviderError::UnknownProvider);
        }
        if let Ok(mut started) = self.started.lock() {
            started.push((state.to_owned(), nonce.to_owned(), code_verifier.to_owned()));
        }
        Ok(format!("https://idp.test/authorize?state={state}"))
    }

    async fn exchange_code(
        &self,
        _provider: &str,
        code: &str,
        _redirect_uri: &str,
        _code_verifier: &str,
        _nonce: &str,
    ) -> Result<ProviderClaims, ProviderError> {
        self.claims(code)
            .ok_or_else(|| ProviderError::Rejected("unknown code".into()))
    }
}
