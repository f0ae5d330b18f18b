//! What identity needs from the outside world, as traits: password hashing, access tokens and
//! secret tokens. Infrastructure implements them (argon2, jsonwebtoken, HMAC); unit tests use
//! the fakes in `testing`.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use keel_kernel::error::BoxError;
use keel_kernel::{SessionId, UserId};

/// The outcome of checking a password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verification {
    /// Whether the password matches.
    pub matches: bool,
    /// Whether the stored hash uses outdated parameters and should be replaced.
    pub needs_rehash: bool,
}

/// Why hashing did not happen.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// Every hashing slot is taken and the waiting line is full: the caller is told to come
    /// back shortly instead of queueing without bound behind a flood.
    #[error("password hashing is saturated")]
    Busy,
    /// The hashing itself failed.
    #[error(transparent)]
    Failed(BoxError),
}

/// Hashes and checks passwords. Implementations run the work off the async reactor with
/// bounded concurrency and a bounded waiting line, so a flood of logins or password changes
/// cannot starve other requests.
#[async_trait]
pub trait PasswordHasher: Send + Sync + std::fmt::Debug {
    /// A new hash (PHC string) with the current parameters and a fresh salt.
    async fn hash(&self, password: &str) -> Result<String, HashError>;

    /// Checks `password` against `hash`. With no hash (unknown account) it still does the same
    /// work against a dummy hash and reports no match, so both cases take the same time.
    async fn verify(&self, password: &str, hash: Option<&str>) -> Result<Verification, HashError>;
}

/// The claims Keel puts in an access token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccessClaims {
    /// `sub`
    pub user: UserId,
    /// `sid`
    pub session: SessionId,
    /// `iat`
    pub issued_at: DateTime<Utc>,
    /// `exp`
    pub expires_at: DateTime<Utc>,
}

/// A freshly issued access token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedToken {
    /// The encoded token.
    pub token: String,
    /// Seconds until it expires.
    pub expires_in: u64,
}

/// Issues and verifies access tokens (JWTs). Verification pins the algorithm and checks
/// signature, issuer, audience and expiry; anything else is `None`.
pub trait AccessTokens: Send + Sync + std::fmt::Debug {
    /// A token for `user` in `session`, issued at `now`.
    fn issue(
        &self,
        user: UserId,
        session: SessionId,
        now: DateTime<Utc>,
    ) -> Result<IssuedToken, BoxError>;

    /// The claims of a valid token.
    fn verify(&self, token: &str) -> Option<AccessClaims>;
}

/// Random tokens and their keyed digests (HMAC under rotating peppers).
pub trait Secrets: Send + Sync + std::fmt::Debug {
    /// A fresh opaque token: 256 random bits, URL-safe.
    fn token(&self) -> Result<String, BoxError>;

    /// A short random identifier (the public part of an API key), lowercase alphanumeric.
    fn short_id(&self) -> Result<String, BoxError>;

    /// The digest of `secret` under the current pepper, with that pepper's id.
    fn digest(&self, secret: &str) -> (String, String);

    /// The digests of `secret` under every configured pepper, current first (lookups try them
    /// all, so a pepper can rotate without invalidating stored tokens).
    fn digests(&self, secret: &str) -> Vec<String>;

    /// Whether `digest` is the digest of `secret` under pepper `pepper_id` (constant time).
    fn verify(&self, pepper_id: &str, secret: &str, digest: &str) -> bool;

    /// A token derived from `context` under the current pepper, with that pepper's id. The
    /// same context always gives the same token, so a record naming only the context (a job
    /// payload, a rotated refresh token) can rebuild it later, while a copy of the database,
    /// which holds no pepper, cannot.
    fn derive(&self, context: &str) -> (String, String);

    /// The token derived from `context` under pepper `pepper_id`; `None` for an unknown pepper.
    fn derive_with(&self, pepper_id: &str, context: &str) -> Option<String>;
}

/// The JSON Web Key Set that verifies access tokens, served at `/.well-known/jwks.json`
/// (`None` with HS256, which has no public key).
#[derive(Debug, Clone, Default)]
pub struct PublicKeys(pub Option<serde_json::Value>);

/// What an external identity provider says about a user, from a token whose signature,
/// issuer, audience and lifetime were checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderClaims {
    /// The configured provider's name (the link's provider).
    pub provider: String,
    /// The user as the token describes them (`sub`, `email`, `email_verified`, `name`).
    pub user: crate::service::ExternalUser,
    /// Keel role names the provider's roles claim maps to; `None` when the provider does not
    /// manage roles (no `roles_claim`).
    pub roles: Option<Vec<String>>,
    /// Whether a user seen for the first time gets an account.
    pub allow_signup: bool,
}

/// Why a provider did not vouch for a user.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// No provider of that name is configured.
    #[error("no identity provider of that name is configured")]
    UnknownProvider,
    /// The token or the sign-in is not acceptable (bad signature, unknown key, wrong issuer
    /// or audience, expired, wrong nonce, the provider refused the code).
    #[error("{0}")]
    Rejected(String),
    /// The provider could not be reached, or answered with something unusable.
    #[error("the identity provider could not be reached: {0}")]
    Unreachable(BoxError),
}

/// The configured external identity providers (OpenID Connect): their access tokens, and the
/// authorization-code sign-in with PKCE.
#[async_trait]
pub trait IdentityProviders: Send + Sync + std::fmt::Debug {
    /// Whether a provider of that name is configured.
    fn knows(&self, provider: &str) -> bool;
    /// Verifies an access token issued by a configured provider; `Ok(None)` when no configured
    /// provider issued it (it is not theirs to judge).
    async fn verify_access_token(
        &self,
        token: &str,
    ) -> Result<Option<ProviderClaims>, ProviderError>;
    /// The provider's authorization URL for a sign-in bound to `state` and `nonce`, with the
    /// S256 challenge of `code_verifier`.
    async fn authorization_url(
        &self,
        provider: &str,
        redirect_uri: &str,
        state: &str,
        nonce: &str,
        code_verifier: &str,
    ) -> Result<String, ProviderError>;
    /// Exchanges an authorization code (with its PKCE verifier) and verifies the ID token it
    /// brings, `nonce` included.
    async fn exchange_code(
        &self,
        provider: &str,
        code: &str,
        redirect_uri: &str,
        code_verifier: &str,
        nonce: &str,
    ) -> Result<ProviderClaims, ProviderError>;
}

/// No provider configured: no token is a provider's, no sign-in can start.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProviders;

#[async_trait]
impl IdentityProviders for NoProviders {
    fn knows(&self, _: &str) -> bool {
        false
    }

    async fn verify_access_token(&self, _: &str) -> Result<Option<ProviderClaims>, ProviderError> {
        Ok(None)
    }

    async fn authorization_url(
        &self,
        _: &str,
        _: &str,
        _: &str,
        _: &str,
        _: &str,
    ) -> Result<String, ProviderError> {
        Err(ProviderError::UnknownProvider)
    }

    async fn exchange_code(
        &self,
        _: &str,
        _: &str,
        _: &str,
        _: &str,
        _: &str,
    ) -> Result<ProviderClaims, ProviderError> {
        Err(ProviderError::UnknownProvider)
    }
}
