//! Cryptography behind identity's ports: argon2id password hashing on a bounded blocking pool,
//! JWT access tokens (HS256, EdDSA or RS256 with key ids and a JWKS), and HMAC-SHA256 digests
//! of opaque tokens under rotating peppers.

use std::collections::BTreeMap;
use std::sync::Arc;

use argon2::password_hash::phc::{Output, ParamsString, PasswordHash, Salt};
use argon2::{Algorithm as ArgonAlgorithm, Argon2, Params, Version};
use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use hmac::{Hmac, KeyInit, Mac};
use jsonwebtoken::jwk::{Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use keel_config::{AuthSettings, JwtAlgorithm};
use keel_identity::security::{
    AccessClaims, AccessTokens, HashError, IssuedToken, PasswordHasher, Secrets, Verification,
};
use keel_kernel::error::BoxError;
use keel_kernel::{SessionId, UserId};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio::sync::Semaphore;

/// A security component could not be set up from configuration.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {message}")]
pub struct SecurityConfigError {
    /// The configuration key at fault.
    pub key: &'static str,
    /// What is wrong.
    pub message: String,
}

fn config_error(key: &'static str, message: impl std::fmt::Display) -> SecurityConfigError {
    SecurityConfigError {
        key,
        message: message.to_string(),
    }
}

/// Argon2id hashing off the async reactor, at most `hashing_concurrency` at a time and at
/// most `hashing_queue_limit` more waiting; past that a request is told "busy" at once.
#[derive(Debug, Clone)]
pub struct Argon2Hasher {
    params: Params,
    /// Hashes running now.
    permits: Arc<Semaphore>,
    /// Hashes running or waiting: bounded so a flood queues a little, then is refused fast
    /// instead of making every caller (logins included) wait behind it.
    admission: Arc<Semaphore>,
    dummy_hash: Arc<str>,
    /// Working memory, reused across hashes.
    memory: Arc<HashMemory>,
}

/// Argon2's working memory (`argon2_memory_kib` per hash), reused while hashes keep coming and
/// released when none is running. Allocating it per hash on whichever blocking thread ran it
/// left a freed block of that size in each of glibc's per-thread arenas: 729 MiB of RSS under a
/// sign-in load on two cores (found by `cargo xtask soak`). Keeping it forever cost an idle
/// process 19 MiB per hashing slot. Now a burst of sign-ins reuses the blocks and an idle api
/// holds none (the binaries' allocator, mimalloc, returns a freed block to the OS).
#[derive(Debug)]
struct HashMemory {
    /// Blocks per hash at the configured cost.
    blocks: usize,
    /// Buffers not in use now, and how many hashes are running.
    pool: std::sync::Mutex<MemoryPool>,
}

/// One running hash: on drop, its buffer goes back to the pool, or, when it was the last hash
/// running, everything is released.
struct Running<'a> {
    memory: &'a HashMemory,
    buffer: Option<Vec<argon2::Block>>,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        let released = {
            let mut pool = self.memory.pool();
            pool.running = pool.running.saturating_sub(1);
            if pool.running == 0 {
                // The last hash of a burst: give everything back.
                std::mem::take(&mut pool.free)
            } else {
                pool.free.extend(self.buffer.take());
                Vec::new()
            }
        };
        // Freed outside the lock (and this hash's buffer too, when it was not kept).
        drop(released);
    }
}

#[derive(Debug, Default)]
struct MemoryPool {
    free: Vec<Vec<argon2::Block>>,
    running: usize,
}

impl HashMemory {
    fn pool(&self) -> std::sync::MutexGuard<'_, MemoryPool> {
        self.pool
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs `work` with a buffer of `blocks` blocks: a pooled one at the configured cost, a
    /// throwaway one for a stored hash of another cost (verified once, then rehashed).
    fn with<T>(&self, blocks: usize, work: impl FnOnce(&mut [argon2::Block]) -> T) -> T {
        if blocks != self.blocks {
            return work(&mut vec![argon2::Block::default(); blocks]);
        }
        let pooled = {
            let mut pool = self.pool();
            pool.running += 1;
            pool.free.pop()
        };
        // Counted out even if `work` panics, so the last hash of a burst still releases.
        let mut running = Running {
            memory: self,
            buffer: Some(pooled.unwrap_or_else(|| vec![argon2::Block::default(); blocks])),
        };
        let buffer = running.buffer.as_deref_mut().unwrap_or_default();
        work(buffer)
    }

    /// Buffers kept for reuse now (for tests).
    #[cfg(test)]
    fn kept(&self) -> usize {
        self.pool().free.len()
    }

    /// A new PHC string for `password` at `params`.
    fn hash(&self, params: &Params, password: &[u8]) -> Result<String, BoxError> {
        let salt = Salt::new(&random::<{ Salt::RECOMMENDED_LENGTH }>()?)?;
        let mut out = vec![0u8; params.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN)];
        let argon2 = Argon2::new(ArgonAlgorithm::Argon2id, Version::V0x13, params.clone());
        self.with(params.block_count(), |memory| {
            argon2.hash_password_into_with_memory(password, &salt, &mut out, memory)
        })?;
        Ok(PasswordHash {
            algorithm: ArgonAlgorithm::Argon2id.ident(),
            version: Some(Version::V0x13.into()),
            params: ParamsString::try_from(params)?,
            salt: Some(salt),
            hash: Some(Output::new(&out)?),
        }
        .to_string())
    }

    /// Whether `password` produces `stored` (at the stored algorithm, version and cost).
    fn verify(&self, password: &[u8], stored: &PasswordHash) -> bool {
        let (Some(salt), Some(expected)) = (&stored.salt, &stored.hash) else {
            return false;
        };
        let Ok(algorithm) = ArgonAlgorithm::try_from(stored.algorithm.as_str()) else {
            return false;
        };
        let version = match stored.version.map(Version::try_from).transpose() {
            Ok(version) => version.unwrap_or_default(),
            Err(_) => return false,
        };
        let Ok(params) = Params::try_from(stored) else {
            return false;
        };
        let argon2 = Argon2::new(algorithm, version, params.clone());
        let mut out = vec![0u8; expected.len()];
        let computed = self.with(params.block_count(), |memory| {
            argon2.hash_password_into_with_memory(password, salt, &mut out, memory)
        });
        // `Output` compares in constant time.
        computed.is_ok() && Output::new(&out).is_ok_and(|out| out == *expected)
    }
}

impl Argon2Hasher {
    /// A hasher with the configured parameters. Computes the dummy hash used for unknown
    /// accounts (one hash at startup).
    pub fn new(settings: &AuthSettings) -> Result<Self, SecurityConfigError> {
        let params = Params::new(
            settings.argon2_memory_kib,
            settings.argon2_iterations,
            settings.argon2_parallelism,
            None,
        )
        .map_err(|e| {
            config_error(
                "auth.argon2_memory_kib",
                format!("invalid argon2 parameters: {e}"),
            )
        })?;
        let concurrency = match settings.hashing_concurrency {
            0 => std::thread::available_parallelism().map_or(2, usize::from),
            n => n,
        };
        let memory = Arc::new(HashMemory {
            blocks: params.block_count(),
            pool: std::sync::Mutex::default(),
        });
        let dummy_hash = memory
            .hash(&params, b"keel dummy password for unknown accounts")
            .map_err(|e| config_error("auth.argon2_memory_kib", e))?;
        Ok(Self {
            params,
            permits: Arc::new(Semaphore::new(concurrency)),
            admission: Arc::new(Semaphore::new(
                concurrency.saturating_add(settings.hashing_queue_limit),
            )),
            dummy_hash: dummy_hash.into(),
            memory,
        })
    }

    /// Runs `work` on the blocking pool once a permit is free, or fails with
    /// [`HashError::Busy`] when the waiting line is full.
    async fn offload<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, HashError> {
        let Ok(admitted) = self.admission.clone().try_acquire_owned() else {
            metrics::counter!("password_hashing_rejected_total").increment(1);
            return Err(HashError::Busy);
        };
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| HashError::Failed(e.into()))?;
        // The permits live as long as the hash, not the request: a request dropped mid-hash
        // (timeout, shutdown) must not free a slot while argon2 still runs.
        tokio::task::spawn_blocking(move || {
            let _held = (admitted, permit);
            work()
        })
        .await
        .map_err(|e| HashError::Failed(e.into()))
    }
}

#[async_trait]
impl PasswordHasher for Argon2Hasher {
    async fn hash(&self, password: &str) -> Result<String, HashError> {
        let memory = Arc::clone(&self.memory);
        let params = self.params.clone();
        let password = password.to_owned();
        self.offload(move || {
            memory
                .hash(&params, password.as_bytes())
                .map_err(HashError::Failed)
        })
        .await?
    }

    async fn verify(&self, password: &str, hash: Option<&str>) -> Result<Verification, HashError> {
        let known = hash.is_some();
        let stored = hash.map_or_else(|| self.dummy_hash.to_string(), str::to_owned);
        let memory = Arc::clone(&self.memory);
        let current = self.params.clone();
        let password = password.to_owned();
        self.offload(move || {
            let Ok(parsed) = PasswordHash::new(&stored) else {
                // An unparsable stored hash never matches (and is logged by nobody: it cannot
                // come from Keel).
                return Verification {
                    matches: false,
                    needs_rehash: false,
                };
            };
            let matches = memory.verify(password.as_bytes(), &parsed);
            let outdated = parsed.algorithm.as_str() != "argon2id"
                || Params::try_from(&parsed).map_or(true, |p| {
                    p.m_cost() != current.m_cost()
                        || p.t_cost() != current.t_cost()
                        || p.p_cost() != current.p_cost()
                });
            Verification {
                matches: matches && known,
                needs_rehash: matches && known && outdated,
            }
        })
        .await
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    sid: String,
    iat: i64,
    exp: i64,
    iss: String,
    aud: String,
    jti: String,
}

/// JWT access tokens: the algorithm is pinned, and `iss`, `aud` and `exp` are required.
#[derive(Clone)]
pub struct JwtTokens {
    algorithm: Algorithm,
    key_id: Option<String>,
    encoding: EncodingKey,
    decoding: Vec<(Option<String>, DecodingKey)>,
    validation: Validation,
    issuer: String,
    audience: String,
    ttl: chrono::TimeDelta,
    jwks: Option<JwkSet>,
    /// Tokens already verified, by their full text: a token is sent with every request of its
    /// lifetime, and checking its signature and claims again each time cost 4 % of the api's
    /// CPU. A changed byte is another key and goes through the full check.
    verified: moka::sync::Cache<Box<str>, AccessClaims>,
}

/// Verified tokens kept per `JwtTokens`, i.e. per HTTP worker on PostgreSQL (a few hundred
/// bytes each); a token seen by the other worker is verified there once more.
const VERIFIED_TOKENS: u64 = 4096;
/// Longest a verified token is trusted without checking it again (its expiry still applies).
const VERIFIED_FOR: std::time::Duration = std::time::Duration::from_secs(60);

impl std::fmt::Debug for JwtTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtTokens")
            .field("algorithm", &self.algorithm)
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl JwtTokens {
    /// Keys and validation rules from `[auth]`.
    pub fn new(settings: &AuthSettings) -> Result<Self, SecurityConfigError> {
        let (algorithm, encoding, key_id) = match settings.jwt_algorithm {
            JwtAlgorithm::HS256 => (
                Algorithm::HS256,
                EncodingKey::from_secret(settings.jwt_secret.expose_secret().as_bytes()),
                None,
            ),
            asymmetric => {
                let pem = settings
                    .jwt_private_key
                    .as_ref()
                    .ok_or_else(|| config_error("auth.jwt_private_key", "is required"))?;
                let pem = pem.expose_secret().as_bytes();
                let (algorithm, key) = if asymmetric == JwtAlgorithm::EdDSA {
                    (Algorithm::EdDSA, EncodingKey::from_ed_pem(pem))
                } else {
                    (Algorithm::RS256, EncodingKey::from_rsa_pem(pem))
                };
                let key = key.map_err(|e| {
                    config_error(
                        "auth.jwt_private_key",
                        format!("not a usable {algorithm:?} PEM private key: {e}"),
                    )
                })?;
                (algorithm, key, Some(settings.jwt_key_id.clone()))
            }
        };

        let mut decoding = Vec::new();
        let mut jwks = None;
        if algorithm == Algorithm::HS256 {
            decoding.push((
                None,
                DecodingKey::from_secret(settings.jwt_secret.expose_secret().as_bytes()),
            ));
        } else {
            let mut current = Jwk::from_encoding_key(&encoding, algorithm)
                .map_err(|e| config_error("auth.jwt_private_key", e))?;
            current.common.key_id = key_id.clone();
            current.common.public_key_use = Some(PublicKeyUse::Signature);
            decoding.push((
                key_id.clone(),
                DecodingKey::from_jwk(&current)
                    .map_err(|e| config_error("auth.jwt_private_key", e))?,
            ));
            let mut keys = vec![current];
            for retired in &settings.jwt_retired_keys {
                let pem = retired.public_key.as_bytes();
                let key = if algorithm == Algorithm::EdDSA {
                    DecodingKey::from_ed_pem(pem)
                } else {
                    DecodingKey::from_rsa_pem(pem)
                }
                .map_err(|e| {
                    config_error("auth.jwt_retired_keys", format!("{}: {e}", retired.key_id))
                })?;
                let mut jwk = Jwk::from_decoding_key(&key, Some(algorithm))
                    .map_err(|e| config_error("auth.jwt_retired_keys", e))?;
                jwk.common.key_id = Some(retired.key_id.clone());
                jwk.common.public_key_use = Some(PublicKeyUse::Signature);
                decoding.push((Some(retired.key_id.clone()), key));
                keys.push(jwk);
            }
            jwks = Some(JwkSet { keys });
        }

        let mut validation = Validation::new(algorithm);
        validation.set_issuer(&[&settings.issuer]);
        validation.set_audience(&[&settings.audience]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        validation.leeway = 5;
        let ttl = chrono::TimeDelta::from_std(settings.access_token_ttl)
            .map_err(|e| config_error("auth.access_token_ttl", e))?;
        let tokens = Self {
            algorithm,
            key_id,
            encoding,
            decoding,
            validation,
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
            ttl,
            jwks,
            verified: moka::sync::Cache::builder()
                .max_capacity(VERIFIED_TOKENS)
                .time_to_live(VERIFIED_FOR)
                .build(),
        };
        // Prove the keys work now rather than at the first login.
        let probe = tokens
            .issue(UserId::new(), SessionId::new(), Utc::now())
            .map_err(|e| config_error("auth.jwt_algorithm", e))?;
        tokens
            .verify(&probe.token)
            .ok_or_else(|| config_error("auth.jwt_private_key", "issued tokens do not verify"))?;
        Ok(tokens)
    }

    /// The public keys for `/.well-known/jwks.json` (`None` with HS256: no public keys).
    pub fn jwks(&self) -> Option<&JwkSet> {
        self.jwks.as_ref()
    }
}

impl AccessTokens for JwtTokens {
    fn issue(
        &self,
        user: UserId,
        session: SessionId,
        now: DateTime<Utc>,
    ) -> Result<IssuedToken, BoxError> {
        let claims = Claims {
            sub: user.to_string(),
            sid: session.to_string(),
            iat: now.timestamp(),
            exp: (now + self.ttl).timestamp(),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            jti: uuid::Uuid::new_v4().to_string(),
        };
        let mut header = Header::new(self.algorithm);
        header.kid.clone_from(&self.key_id);
        let token = jsonwebtoken::encode(&header, &claims, &self.encoding)?;
        Ok(IssuedToken {
            token,
            expires_in: u64::try_from(self.ttl.num_seconds()).unwrap_or(0),
        })
    }

    fn verify(&self, token: &str) -> Option<AccessClaims> {
        // Expiry as jsonwebtoken checks it: `exp` plus the leeway is not yet past.
        let live = |claims: &AccessClaims| {
            claims
                .expires_at
                .timestamp()
                .saturating_add_unsigned(self.validation.leeway)
                >= Utc::now().timestamp()
        };
        if let Some(claims) = self.verified.get(token) {
            return live(&claims).then_some(claims);
        }
        let claims = self.verify_uncached(token)?;
        self.verified.insert(token.into(), claims);
        Some(claims)
    }
}

impl JwtTokens {
    /// Signature, algorithm, key and claims, checked from scratch.
    fn verify_uncached(&self, token: &str) -> Option<AccessClaims> {
        let header = jsonwebtoken::decode_header(token).ok()?;
        if header.alg != self.algorithm {
            return None;
        }
        let key = match (&header.kid, self.decoding.len()) {
            (_, 1) => &self.decoding[0].1,
            (Some(kid), _) => {
                &self
                    .decoding
                    .iter()
                    .find(|(id, _)| id.as_ref() == Some(kid))?
                    .1
            }
            (None, _) => &self.decoding[0].1,
        };
        let data = jsonwebtoken::decode::<Claims>(token, key, &self.validation).ok()?;
        let claims = data.claims;
        Some(AccessClaims {
            user: claims.sub.parse().ok()?,
            session: claims.sid.parse().ok()?,
            issued_at: DateTime::from_timestamp(claims.iat, 0)?,
            expires_at: DateTime::from_timestamp(claims.exp, 0)?,
        })
    }
}

type HmacSha256 = Hmac<Sha256>;

/// Random tokens and HMAC-SHA256 digests under the configured peppers.
#[derive(Clone)]
pub struct HmacSecrets {
    active: String,
    /// One keyed MAC per pepper, built once; cloned per digest.
    keyed: BTreeMap<String, HmacSha256>,
}

impl std::fmt::Debug for HmacSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HmacSecrets")
            .field("active", &self.active)
            .field("peppers", &self.keyed.keys().collect::<Vec<_>>())
            .finish()
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

fn random<const N: usize>() -> Result<[u8; N], BoxError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes)
        .map_err(|e| format!("the operating system's random source failed: {e}"))?;
    Ok(bytes)
}

impl HmacSecrets {
    /// Peppers from `[auth]`.
    pub fn new(settings: &AuthSettings) -> Result<Self, SecurityConfigError> {
        if !settings.peppers.contains_key(&settings.active_pepper) {
            return Err(config_error(
                "auth.active_pepper",
                "must name one of auth.peppers",
            ));
        }
        random::<1>().map_err(|e| config_error("auth.peppers", e))?;
        let keyed = settings
            .peppers
            .iter()
            .map(|(id, pepper)| {
                <HmacSha256 as KeyInit>::new_from_slice(pepper.expose_secret().as_bytes())
                    .map(|mac| (id.clone(), mac))
                    .map_err(|e| config_error("auth.peppers", e))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            active: settings.active_pepper.clone(),
            keyed,
        })
    }

    fn mac(&self, pepper: &str, secret: &str) -> Option<HmacSha256> {
        let mut mac = self.keyed.get(pepper)?.clone();
        mac.update(secret.as_bytes());
        Some(mac)
    }

    fn hex_digest(&self, pepper: &str, secret: &str) -> String {
        self.mac(pepper, secret)
            .map(|mac| hex(&mac.finalize().into_bytes()))
            .unwrap_or_default()
    }
}

impl Secrets for HmacSecrets {
    fn token(&self) -> Result<String, BoxError> {
        Ok(URL_SAFE_NO_PAD.encode(random::<32>()?))
    }

    fn short_id(&self) -> Result<String, BoxError> {
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        let mut id = String::with_capacity(10);
        while id.len() < 10 {
            for byte in random::<16>()? {
                // Rejection sampling keeps every character equally likely.
                if usize::from(byte) < 252 && id.len() < 10 {
                    id.push(char::from(ALPHABET[usize::from(byte) % ALPHABET.len()]));
                }
            }
        }
        Ok(id)
    }

    fn digest(&self, secret: &str) -> (String, String) {
        (self.active.clone(), self.hex_digest(&self.active, secret))
    }

    fn digests(&self, secret: &str) -> Vec<String> {
        let mut digests = vec![self.hex_digest(&self.active, secret)];
        for id in self.keyed.keys().filter(|id| **id != self.active) {
            digests.push(self.hex_digest(id, secret));
        }
        digests
    }

    fn verify(&self, pepper_id: &str, secret: &str, digest: &str) -> bool {
        match (self.mac(pepper_id, secret), unhex(digest)) {
            (Some(mac), Some(expected)) => mac.verify_slice(&expected).is_ok(),
            _ => false,
        }
    }

    fn derive(&self, context: &str) -> (String, String) {
        let token = self.derive_with(&self.active, context).unwrap_or_default();
        (self.active.clone(), token)
    }

    fn derive_with(&self, pepper_id: &str, context: &str) -> Option<String> {
        // Its own label, so a derived token is never the digest of anything Keel stores.
        let mac = self.mac(pepper_id, &format!("keel-derived-token-v1\0{context}"))?;
        Some(URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use keel_config::{Settings, Sources};

    use super::*;

    fn auth(vars: &[(&str, &str)]) -> AuthSettings {
        Settings::load_from(&Sources::from_vars(vars.iter().copied()))
            .unwrap()
            .auth
    }

    #[test]
    fn a_remembered_token_still_expires_and_an_altered_one_is_checked_afresh() {
        let tokens = JwtTokens::new(&auth(&[])).unwrap();
        let issued = tokens
            .issue(UserId::new(), SessionId::new(), Utc::now())
            .unwrap();
        let claims = tokens.verify(&issued.token).unwrap();
        assert_eq!(tokens.verify(&issued.token), Some(claims), "served again");
        // One byte changed in the signature: not the remembered token, and not valid.
        let mut altered = issued.token.clone();
        let last = altered.pop().unwrap();
        altered.push(if last == 'A' { 'B' } else { 'A' });
        assert!(tokens.verify(&altered).is_none());
        // A remembered token past its expiry (and the leeway) is refused like any other.
        let expired = AccessClaims {
            expires_at: Utc::now() - chrono::TimeDelta::seconds(6),
            ..claims
        };
        tokens.verified.insert("remembered".into(), expired);
        assert!(tokens.verify("remembered").is_none());
        let within_leeway = AccessClaims {
            expires_at: Utc::now() - chrono::TimeDelta::seconds(2),
            ..claims
        };
        tokens.verified.insert("recent".into(), within_leeway);
        assert!(
            tokens.verify("recent").is_some(),
            "the leeway jsonwebtoken allows"
        );
    }

    #[test]
    fn hs256_tokens_verify_and_reject_tampering_other_keys_and_alg_none() {
        let tokens = JwtTokens::new(&auth(&[])).unwrap();
        let user = UserId::new();
        let session = SessionId::new();
        let issued = tokens.issue(user, session, Utc::now()).unwrap();
        let claims = tokens.verify(&issued.token).unwrap();
        assert_eq!((claims.user, claims.session), (user, session));
        assert_eq!(issued.expires_in, 900);

        let other = JwtTokens::new(&auth(&[(
            "APP__AUTH__JWT_SECRET",
            "another-secret-another-secret-another",
        )]))
        .unwrap();
        assert!(other.verify(&issued.token).is_none(), "another key");

        let (head, rest) = issued.token.split_once('.').unwrap();
        let (payload, signature) = rest.split_once('.').unwrap();
        let mut claims_json: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        claims_json["sub"] = serde_json::Value::String(UserId::new().to_string());
        let forged_payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims_json).unwrap());
        assert!(
            tokens
                .verify(&format!("{head}.{forged_payload}.{signature}"))
                .is_none(),
            "tampered"
        );

        let none_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        assert!(
            tokens
                .verify(&format!("{none_header}.{payload}."))
                .is_none(),
            "alg none"
        );

        let expired = tokens
            .issue(user, session, Utc::now() - chrono::TimeDelta::hours(1))
            .unwrap();
        assert!(tokens.verify(&expired.token).is_none(), "expired");

        let wrong_audience =
            JwtTokens::new(&auth(&[("APP__AUTH__AUDIENCE", "someone-else")])).unwrap();
        let foreign = wrong_audience.issue(user, session, Utc::now()).unwrap();
        assert!(tokens.verify(&foreign.token).is_none(), "audience");
    }

    #[test]
    fn peppered_digests_rotate_without_breaking_old_digests() {
        let old = HmacSecrets::new(&auth(&[])).unwrap();
        let secret = old.token().unwrap();
        assert_eq!(secret.len(), 43);
        let (old_id, old_digest) = old.digest(&secret);
        let rotated = HmacSecrets::new(&auth(&[
            (
                "APP__AUTH__PEPPERS__K2",
                "a-brand-new-pepper-of-enough-length-000",
            ),
            ("APP__AUTH__ACTIVE_PEPPER", "k2"),
        ]))
        .unwrap();
        assert!(rotated.verify(&old_id, &secret, &old_digest));
        assert!(!rotated.verify(&old_id, "other", &old_digest));
        let digests = rotated.digests(&secret);
        assert_eq!(digests.len(), 2);
        assert_eq!(digests[1], old_digest, "old digests are still found");
        assert_ne!(digests[0], old_digest);
        let id = rotated.short_id().unwrap();
        assert!(
            id.len() == 10
                && id
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        );
    }

    #[tokio::test]
    async fn argon2_verifies_and_asks_for_rehash_when_parameters_change() {
        let cheap = |memory: &'static str| {
            Argon2Hasher::new(&auth(&[
                ("APP__AUTH__ARGON2_MEMORY_KIB", memory),
                ("APP__AUTH__ARGON2_ITERATIONS", "1"),
            ]))
            .unwrap()
        };
        let hasher = cheap("1024");
        let hash = hasher.hash("plum-orbit-kettle-7").await.unwrap();
        assert!(hash.starts_with("$argon2id$"));
        let ok = hasher
            .verify("plum-orbit-kettle-7", Some(&hash))
            .await
            .unwrap();
        assert_eq!(
            ok,
            Verification {
                matches: true,
                needs_rehash: false
            }
        );
        let wrong = hasher.verify("nope", Some(&hash)).await.unwrap();
        assert!(!wrong.matches);
        let unknown = hasher.verify("plum-orbit-kettle-7", None).await.unwrap();
        assert!(!unknown.matches);
        let stronger = cheap("2048");
        let outdated = stronger
            .verify("plum-orbit-kettle-7", Some(&hash))
            .await
            .unwrap();
        assert_eq!(
            outdated,
            Verification {
                matches: true,
                needs_rehash: true
            }
        );
    }

    #[tokio::test]
    async fn hashes_interoperate_with_the_argon2_crates_own_and_memory_is_reused() {
        use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};

        let hasher = Argon2Hasher::new(&auth(&[
            ("APP__AUTH__ARGON2_MEMORY_KIB", "1024"),
            ("APP__AUTH__ARGON2_ITERATIONS", "1"),
        ]))
        .unwrap();
        let upstream = Argon2::new(
            ArgonAlgorithm::Argon2id,
            Version::V0x13,
            Params::new(1024, 1, 1, None).unwrap(),
        );
        // Hashes stored before Keel managed the working memory still verify, and Keel's verify
        // with the crate's own verifier.
        let theirs = upstream
            .hash_password(b"plum-orbit-kettle-7")
            .unwrap()
            .to_string();
        assert!(
            hasher
                .verify("plum-orbit-kettle-7", Some(&theirs))
                .await
                .unwrap()
                .matches
        );
        let ours = hasher.hash("plum-orbit-kettle-7").await.unwrap();
        assert!(
            upstream
                .verify_password(b"plum-orbit-kettle-7", ours.as_str())
                .is_ok()
        );
        assert!(
            upstream
                .verify_password(b"plum-orbit-kettle-8", ours.as_str())
                .is_err()
        );
        // Another algorithm of the family verifies too (and is then rehashed).
        let argon2i = Argon2::new(
            ArgonAlgorithm::Argon2i,
            Version::V0x13,
            Params::new(1024, 1, 1, None).unwrap(),
        )
        .hash_password(b"plum-orbit-kettle-7")
        .unwrap()
        .to_string();
        let old = hasher
            .verify("plum-orbit-kettle-7", Some(&argon2i))
            .await
            .unwrap();
        assert!(old.matches && old.needs_rehash);
        // Hashes one after another keep nothing once each is done.
        for _ in 0..3 {
            hasher.hash("plum-orbit-kettle-7").await.unwrap();
        }
        assert_eq!(hasher.memory.kept(), 0, "an idle hasher keeps no memory");
    }

    #[test]
    fn a_burst_of_hashes_reuses_buffers_and_the_last_one_releases_them() {
        let memory = Arc::new(HashMemory {
            blocks: 8,
            pool: std::sync::Mutex::default(),
        });
        let (entered, release) = (
            Arc::new(std::sync::Barrier::new(3)),
            Arc::new(std::sync::Barrier::new(3)),
        );
        // Two hashes overlap: when the first ends, the second still runs, so its buffer is kept.
        let threads: Vec<_> = (0..2)
            .map(|i| {
                let (memory, entered, release) = (memory.clone(), entered.clone(), release.clone());
                std::thread::spawn(move || {
                    memory.with(8, |_| {
                        entered.wait();
                        if i == 1 {
                            release.wait();
                        }
                    });
                    if i == 0 {
                        release.wait();
                    }
                })
            })
            .collect();
        entered.wait();
        release.wait();
        for thread in threads {
            thread.join().unwrap();
        }
        // Whichever order they finished in, the last one out gave everything back.
        assert_eq!(memory.kept(), 0);
        // While one runs, a finished one's buffer waits for reuse.
        memory.with(8, |_| {
            memory.with(8, |_| {});
            assert_eq!(memory.kept(), 1, "kept while another hash runs");
        });
        assert_eq!(memory.kept(), 0);
    }
}
