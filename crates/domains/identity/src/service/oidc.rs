//! Signing in through external identity providers (OpenID Connect): their access tokens act
//! for the linked account, and a browser signs in with the authorization code flow (PKCE,
//! `state` and `nonce`), ending in a Keel session.
//!
//! The provider's subject, never the address, finds the account: the link in
//! `external_identities` is the one the provider's user webhooks keep in step too. A subject
//! seen for the first time gets an account only where `allow_signup` says so, and only with
//! an address the provider confirmed that no Keel account holds. With a roles claim
//! configured, the provider decides the account's roles (the last administrator excepted).

use std::collections::BTreeSet;
use std::time::Duration;

use keel_kernel::{
    Actor, Caller, DomainError, NewActivity, Origin, RepoError, Transaction, UserId,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Identity, IdentityService, Tokens};
use crate::error::IdentityError;
use crate::model::{ADMIN_ROLE, ExternalIdentity, ExternalIdentityId, MEMBER_ROLE, User};
use crate::security::{ProviderClaims, ProviderError};

/// How long a started sign-in may take at the provider.
const PENDING_FOR: Duration = Duration::from_secs(10 * 60);

/// Longest `state` or authorization code looked at.
const PARAM_MAX_CHARS: usize = 2048;

fn pending_key(state: &str) -> String {
    format!("identity:oidc:pending:{state}")
}

fn used_key(state: &str) -> String {
    format!("identity:oidc:used:{state}")
}

fn link_key(provider: &str, subject: &str) -> String {
    format!("identity:external:v1:{provider}:{subject}")
}

/// The roles claim last applied to a subject's account: while a token brings the same, the
/// account's roles are not compared again (an unknown role name, or the last administrator
/// keeping `admin`, would otherwise mean a write every time the link cache expires).
fn applied_key(provider: &str, subject: &str) -> String {
    format!("identity:external:applied:v1:{provider}:{subject}")
}

/// How long an applied roles claim is trusted: roles changed in Keel meanwhile are put back
/// in line with the provider within this long.
const APPLIED_FOR: Duration = Duration::from_secs(3600);

/// A sign-in started at a provider, kept server-side until its callback (once).
#[derive(Debug, Serialize, Deserialize)]
struct Pending {
    provider: String,
    nonce: String,
    verifier: String,
    redirect_uri: String,
    return_to: String,
}

/// The account a provider's subject resolved to, with the roles last applied from its claims;
/// cached for `session_cache_ttl` so a provider's token costs no database round trip while warm.
#[derive(Debug, Serialize, Deserialize)]
struct ResolvedLink {
    user: UserId,
    roles: Option<Vec<String>>,
}

/// How a finished provider sign-in goes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderSignIn {
    /// A Keel session is open.
    SignedIn(Tokens),
    /// The account has a Keel second factor: the sign-in finishes at `POST /auth/mfa/verify`
    /// with this challenge and a code.
    SecondFactor {
        /// The five-minute, single-use challenge.
        challenge: String,
    },
}

/// Where to send a browser to sign in with a provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderRedirect {
    /// The provider's authorization URL (state, nonce and PKCE challenge included).
    pub url: String,
    /// The `state` the callback must bring back; the api binds it to the browser too.
    pub state: String,
}

/// A provider's failure as identity answers it: a refusal is a bad credential (401), an
/// outage is the upstream's (502).
fn provider_failure(error: ProviderError, refused: IdentityError) -> IdentityError {
    match error {
        ProviderError::UnknownProvider => IdentityError::NotFound("identity provider"),
        ProviderError::Rejected(_) => refused,
        ProviderError::Unreachable(cause) => keel_kernel::http::upstream(cause).into(),
    }
}

/// The Keel roles a provider's claims ask for: the mapped names plus `member`, which every
/// account holds.
fn wanted_roles(names: &[String]) -> BTreeSet<String> {
    names
        .iter()
        .cloned()
        .chain([MEMBER_ROLE.to_owned()])
        .collect()
}

impl Identity {
    /// The actor behind a configured provider's access token: its linked account (created on
    /// first sight where allowed), with that account's permissions. No Keel session stands
    /// behind it, so account self-service is closed to it as it is to API keys.
    pub(super) async fn authenticate_provider_token(
        &self,
        token: &str,
    ) -> Result<Actor, IdentityError> {
        let claims = self
            .ports
            .providers
            .verify_access_token(token)
            .await
            .map_err(|e| provider_failure(e, IdentityError::InvalidToken))?
            .ok_or(IdentityError::InvalidToken)?;
        let user = self.resolve_external(&claims, &Origin::default()).await?;
        let state = self
            .user_state(user)
            .await?
            .filter(|s| s.can_sign_in)
            .ok_or(IdentityError::InvalidToken)?;
        if !state.verified {
            return Err(DomainError::EMAIL_UNVERIFIED.into());
        }
        let mut permissions = state.permissions();
        // A role that requires Keel's second factor never counts for a provider's token: no
        // code was presented for it, whatever the account has enrolled.
        let required = &self.settings.mfa_required_roles;
        if !required.is_empty()
            && let Some((account, mut roles)) = self.account(user).await?
            && roles.iter().any(|r| required.contains(&r.name))
        {
            roles.retain(|r| !required.contains(&r.name));
            permissions = super::UserState::of(&account, &roles).permissions();
        }
        Ok(Actor::Federated {
            id: user,
            provider: claims.provider,
            permissions,
        })
    }

    /// The account linked to the claims' subject, linked (and created) first when needed, its
    /// roles brought in line with the claims.
    async fn resolve_external(
        &self,
        claims: &ProviderClaims,
        origin: &Origin,
    ) -> Result<UserId, IdentityError> {
        let key = link_key(&claims.provider, &claims.user.subject);
        if let Ok(Some(bytes)) = self.ports.cache.get(&key).await
            && let Ok(known) = serde_json::from_slice::<ResolvedLink>(&bytes)
            && known.roles == claims.roles
        {
            return Ok(known.user);
        }
        let user = match self.linked_in_step(claims).await? {
            Some(user) => user,
            None => {
                // Two first requests of one new user race to link it: the loser of the insert
                // finds the winner's link on its second pass.
                match self.link_external(claims, origin).await {
                    Err(IdentityError::Rejected(DomainError::Conflict { .. })) => {
                        self.link_external(claims, origin).await?
                    }
                    other => other?,
                }
            }
        };
        self.cache(
            &key,
            &ResolvedLink {
                user,
                roles: claims.roles.clone(),
            },
        )
        .await;
        Ok(user)
    }

    /// The linked account when nothing needs writing (read without locks), else `None`.
    async fn linked_in_step(
        &self,
        claims: &ProviderClaims,
    ) -> Result<Option<UserId>, IdentityError> {
        let Some(link) = self
            .ports
            .external
            .find(&claims.provider, &claims.user.subject)
            .await?
        else {
            return Ok(None);
        };
        let Some(user) = link.user_id.filter(|_| !link.deleted) else {
            return Err(IdentityError::InvalidToken);
        };
        if let Some(names) = &claims.roles {
            let applied = applied_key(&claims.provider, &claims.user.subject);
            if let Ok(Some(bytes)) = self.ports.cache.get(&applied).await
                && serde_json::from_slice::<Vec<String>>(&bytes).is_ok_and(|a| &a == names)
            {
                return Ok(Some(user));
            }
            let held: BTreeSet<String> = self
                .ports
                .users
                .roles_of(user)
                .await?
                .into_iter()
                .map(|r| r.name)
                .collect();
            if held != wanted_roles(names) {
                // Nothing is written for an account that may not sign in anyway.
                if !self.user_state(user).await?.is_some_and(|s| s.can_sign_in) {
                    return Err(IdentityError::InvalidToken);
                }
                return Ok(None);
            }
        }
        Ok(Some(user))
    }

    /// Links the subject (creating its account when allowed) and applies the claimed roles,
    /// in one transaction under the link's lock.
    async fn link_external(
        &self,
        claims: &ProviderClaims,
        origin: &Origin,
    ) -> Result<UserId, IdentityError> {
        let system = Caller {
            actor: Actor::System,
            origin: origin.clone(),
        };
        let service = self.for_caller(&system);
        let now = self.ports.clock.now();
        let mut tx = self.ports.unit_of_work.begin().await?;
        let existing = self
            .ports
            .external
            .find_for_update(tx.as_mut(), &claims.provider, &claims.user.subject)
            .await?;
        let (user, created) = match existing {
            // Deleted at the provider (its webhook said so): nothing signs in until it says
            // otherwise.
            Some(link) if link.deleted => return Err(IdentityError::InvalidToken),
            Some(link) => (link.user_id.ok_or(IdentityError::InvalidToken)?, false),
            None => {
                if !claims.allow_signup {
                    return Err(IdentityError::SignupClosed);
                }
                let mut link = ExternalIdentity {
                    id: ExternalIdentityId::new(),
                    provider: claims.provider.clone(),
                    subject: claims.user.subject.clone(),
                    user_id: None,
                    email: None,
                    deleted: false,
                    synced_at: now,
                    created_at: now,
                    updated_at: now,
                };
                self.ports
                    .external
                    .insert(tx.as_mut(), &link)
                    .await
                    .map_err(|e| match e {
                        RepoError::UniqueViolation { constraint } => {
                            IdentityError::Rejected(DomainError::Conflict {
                                code: "external_identity.linked_concurrently",
                                message: format!(
                                    "a concurrent sign-in linked the subject ({constraint})"
                                ),
                                field: None,
                            })
                        }
                        other => other.into(),
                    })?;
                let outcome = service
                    .upsert_linked(tx.as_mut(), &mut link, claims.user.clone(), now)
                    .await
                    .map_err(|e| match e {
                        // The address belongs to an account that is not this subject's: never
                        // taken over by a provider that claims it.
                        IdentityError::EmailTaken => IdentityError::ExternalEmailTaken,
                        other => other,
                    })?;
                link.updated_at = now;
                self.ports.external.update(tx.as_mut(), &link).await?;
                let super::SyncOutcome::Created(user) = outcome else {
                    return Err(DomainError::internal(
                        "a new link resolved to an existing account",
                    )
                    .into());
                };
                (user, true)
            }
        };
        // A suspended or deleted account gets no role changes, nor activity entries.
        let account = self
            .ports
            .users
            .find_for_update(tx.as_mut(), user)
            .await?
            .filter(User::can_sign_in)
            .ok_or(IdentityError::InvalidToken)?;
        let roles_changed = match &claims.roles {
            Some(names) => {
                service
                    .apply_claimed_roles(tx.as_mut(), &account, names)
                    .await?
            }
            None => None,
        };
        if created || roles_changed.is_some() {
            let mut changes =
                json!({ "provider": claims.provider, "subject": claims.user.subject });
            if created {
                changes["change"] = json!("created");
            }
            if let Some(roles) = &roles_changed {
                changes["roles"] = json!(roles);
            }
            let entry = NewActivity::new("user.synced", "user", now)
                .resource(user)
                .subject(user)
                .changes(changes);
            self.record(tx.as_mut(), &system, entry).await?;
        }
        tx.commit().await?;
        self.forget(Some(user), &[]).await;
        if let Some(names) = &claims.roles
            && let Ok(bytes) = serde_json::to_vec(names)
        {
            let key = applied_key(&claims.provider, &claims.user.subject);
            let _ = self.ports.cache.set(&key, bytes, APPLIED_FOR).await;
        }
        Ok(user)
    }
}

impl IdentityService<'_> {
    /// Makes the account's roles those `names` map to (plus `member`), ignoring names no Keel
    /// role has. The last active administrator keeps `admin`: a provider's claim never locks
    /// everyone out. Returns the roles now held when anything changed.
    async fn apply_claimed_roles(
        &self,
        tx: &mut dyn Transaction,
        account: &User,
        names: &[String],
    ) -> Result<Option<Vec<String>>, IdentityError> {
        let wanted = wanted_roles(names);
        let held = self.ports().users.roles_of_in(tx, account.id).await?;
        let now = self.ports().clock.now();
        let mut changed = false;
        let mut result: BTreeSet<String> = BTreeSet::new();
        for role in &held {
            if wanted.contains(&role.name) {
                result.insert(role.name.clone());
                continue;
            }
            if role.name == ADMIN_ROLE {
                match self.ensure_not_last_admin(tx, account).await {
                    Ok(()) => {}
                    Err(IdentityError::LastAdmin) => {
                        result.insert(role.name.clone());
                        continue;
                    }
                    Err(other) => return Err(other),
                }
            }
            changed |= self
                .ports()
                .users
                .revoke_role(tx, account.id, role.id)
                .await?;
        }
        for name in &wanted {
            if held.iter().any(|r| &r.name == name) {
                continue;
            }
            if let Some(role) = self.ports().roles.find_by_name_in(tx, name).await? {
                changed |= self
                    .ports()
                    .users
                    .grant_role(tx, account.id, role.id, now)
                    .await?;
                result.insert(role.name);
            }
        }
        Ok(changed.then(|| result.into_iter().collect()))
    }

    /// Starts a browser sign-in at `provider`: a fresh `state`, `nonce` and PKCE verifier,
    /// kept server-side for ten minutes with where to send the browser afterwards.
    pub async fn start_provider_sign_in(
        &self,
        provider: &str,
        redirect_uri: &str,
        return_to: &str,
    ) -> Result<ProviderRedirect, IdentityError> {
        let providers = &self.ports().providers;
        if !providers.knows(provider) {
            return Err(IdentityError::NotFound("identity provider"));
        }
        let secret = || self.ports().secrets.token().map_err(DomainError::Internal);
        let (state, nonce, verifier) = (secret()?, secret()?, secret()?);
        let url = providers
            .authorization_url(provider, redirect_uri, &state, &nonce, &verifier)
            .await
            .map_err(|e| provider_failure(e, IdentityError::ProviderSignInFailed))?;
        let pending = Pending {
            provider: provider.to_owned(),
            nonce,
            verifier,
            redirect_uri: redirect_uri.to_owned(),
            return_to: return_to.to_owned(),
        };
        let bytes = serde_json::to_vec(&pending).map_err(|e| DomainError::Internal(e.into()))?;
        // Without the pending sign-in the callback cannot finish: an outage is the answer now.
        self.ports()
            .cache
            .set(&pending_key(&state), bytes, PENDING_FOR)
            .await
            .map_err(|e| DomainError::Unavailable(e.to_string().into()))?;
        Ok(ProviderRedirect { url, state })
    }

    /// Finishes a browser sign-in: the `state` must be one this service started for
    /// `provider` and not yet used; the code is exchanged with its verifier, the ID token
    /// checked (nonce included), and a Keel session opened for the linked account (or, with a
    /// Keel second factor on, a challenge for it). Returns that and where the browser goes
    /// next.
    pub async fn finish_provider_sign_in(
        &self,
        provider: &str,
        state: &str,
        code: &str,
    ) -> Result<(ProviderSignIn, String), IdentityError> {
        if state.is_empty()
            || state.len() > PARAM_MAX_CHARS
            || code.is_empty()
            || code.len() > PARAM_MAX_CHARS
        {
            return Err(IdentityError::ProviderStateInvalid);
        }
        let cache = &self.ports().cache;
        let pending = match cache.get(&pending_key(state)).await {
            Ok(Some(bytes)) => serde_json::from_slice::<Pending>(&bytes)
                .map_err(|_| IdentityError::ProviderStateInvalid)?,
            Ok(None) => return Err(IdentityError::ProviderStateInvalid),
            Err(e) => return Err(DomainError::Unavailable(e.to_string().into()).into()),
        };
        // Once: of two callbacks racing with one state, only the first goes on.
        let first = cache
            .add(&used_key(state), Vec::new(), PENDING_FOR)
            .await
            .map_err(|e| DomainError::Unavailable(e.to_string().into()))?;
        let _ = cache.delete(&pending_key(state)).await;
        if !first || pending.provider != provider {
            return Err(IdentityError::ProviderStateInvalid);
        }
        let claims = self
            .ports()
            .providers
            .exchange_code(
                provider,
                code,
                &pending.redirect_uri,
                &pending.verifier,
                &pending.nonce,
            )
            .await
            .map_err(|e| provider_failure(e, IdentityError::ProviderSignInFailed))?;
        let user = self
            .identity
            .resolve_external(&claims, &self.caller.origin)
            .await?;
        let now = self.ports().clock.now();
        let account = self
            .ports()
            .users
            .find(user)
            .await?
            .filter(User::can_sign_in)
            .ok_or(IdentityError::AccountInactive)?;
        // A second factor enrolled in Keel is asked for here too: the provider's sign-in
        // stands in for the password, not for the code.
        match self.challenge_if_enrolled(&account, None, now).await {
            Err(IdentityError::MfaRequired(challenge)) => {
                return Ok((
                    ProviderSignIn::SecondFactor { challenge },
                    pending.return_to,
                ));
            }
            other => other?,
        }
        let mut tx = self.ports().unit_of_work.begin().await?;
        let account = self
            .ports()
            .users
            .find_for_update(tx.as_mut(), user)
            .await?
            .filter(User::can_sign_in)
            .ok_or(IdentityError::AccountInactive)?;
        let tokens = self
            .open_session(
                tx,
                &account,
                now,
                json!({ "method": "oidc", "provider": provider }),
            )
            .await?;
        Ok((ProviderSignIn::SignedIn(tokens), pending.return_to))
    }
}
