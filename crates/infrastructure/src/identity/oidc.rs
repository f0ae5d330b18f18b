//! External identity providers over OpenID Connect, behind identity's `IdentityProviders`
//! port: the discovery document and the signing keys (JWKS) fetched through the shared HTTP
//! client and cached, access and ID tokens verified with jsonwebtoken, and the authorization
//! code exchange with PKCE.
//!
//! Why not the `openidconnect` crate: it verifies RSA signatures with the `rsa` crate, which
//! audit tools flag (RUSTSEC-2023-0071); jsonwebtoken on aws-lc-rs already verifies Keel's own
//! tokens, and the protocol around it is a discovery GET, a JWKS GET and one form POST.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use keel_config::{OidcProviderSettings, OidcSettings, provider_url_allowed};
use keel_identity::security::{IdentityProviders, ProviderClaims, ProviderError};
use keel_identity::service::ExternalUser;
use keel_kernel::http::{HttpClient, OutboundError, OutboundRequest};
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Signature algorithms accepted from providers: asymmetric only (a provider's "shared
/// secret" would be known to every client of it), never `none`.
const ALGORITHMS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// Longest token looked at; real ones are a few KiB.
const TOKEN_MAX_BYTES: usize = 16 * 1024;
/// Most signing keys kept per provider (real providers publish two or three).
const MAX_KEYS: usize = 32;
/// Longest subject accepted (the column's width).
const SUBJECT_MAX_CHARS: usize = 255;

/// The parts of a discovery document Keel uses.
#[derive(Debug, Clone, Deserialize)]
struct Metadata {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
}

/// A provider's signing key.
#[derive(Clone)]
struct SigningKey {
    kid: Option<String>,
    /// The algorithm the key is published for, when the JWK names one.
    algorithm: Option<Algorithm>,
    key: DecodingKey,
}

/// The provider's signing keys as last fetched.
#[derive(Default)]
struct KeySet {
    keys: Vec<SigningKey>,
    fetched: Option<Instant>,
}

/// What fetching remembers: the discovery document, and when keys were last asked for (the
/// refetch rate limit, successful or not).
#[derive(Default)]
struct Fetching {
    metadata: Option<(Metadata, Instant)>,
    metadata_attempted: Option<Instant>,
    keys_attempted: Option<Instant>,
}

/// A configured provider. What is known of it is fetched lazily: a provider that is down at
/// startup does not stop Keel, it only fails its own users' sign-ins until it is back.
struct Provider {
    name: String,
    settings: OidcProviderSettings,
    audience: String,
    /// Read by every verification without waiting for a fetch in progress.
    keys: std::sync::RwLock<Arc<KeySet>>,
    /// One fetch at a time per provider.
    fetching: tokio::sync::Mutex<Fetching>,
}

impl Provider {
    fn keys(&self) -> Arc<KeySet> {
        // A poisoned lock still holds a whole snapshot: it is only ever replaced at once.
        self.keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// The configured providers (`auth.oidc.providers`).
pub struct OidcProviders {
    providers: BTreeMap<String, Arc<Provider>>,
    http: Arc<dyn HttpClient>,
    leeway: u64,
    refetch_interval: Duration,
    max_age: Duration,
    production: bool,
}

impl std::fmt::Debug for OidcProviders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcProviders")
            .field("providers", &self.providers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

fn rejected(reason: impl Into<String>) -> ProviderError {
    ProviderError::Rejected(reason.into())
}

fn unreachable(error: impl Into<keel_kernel::error::BoxError>) -> ProviderError {
    ProviderError::Unreachable(error.into())
}

/// The `iss` of a JWT, read without verifying anything (only to pick the provider whose keys
/// then verify it).
fn peek_issuer(token: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Peek {
        iss: Option<String>,
    }
    let payload = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    serde_json::from_slice::<Peek>(&bytes).ok()?.iss
}

/// The value of a claim named `path`, or, when no claim has that whole name (which may hold
/// dots, as Auth0's namespaced `https://example.com/roles` does), at the dotted path
/// (`realm_access.roles`).
fn claim_at<'a>(claims: &'a Value, path: &str) -> Option<&'a Value> {
    claims.get(path).or_else(|| {
        path.split('.')
            .try_fold(claims, |value, part| value.get(part))
    })
}

/// The role values of a claim: a list of strings, or one string of space- or comma-separated
/// values; `None` for anything else (`null`, a number, an object), which says nothing.
fn role_values(value: Option<&Value>) -> Option<Vec<&str>> {
    match value? {
        Value::Array(items) => Some(items.iter().filter_map(Value::as_str).collect()),
        Value::String(text) => Some(text.split([' ', ',']).filter(|v| !v.is_empty()).collect()),
        _ => None,
    }
}

/// Whether a JWT's header `typ`, when present, is one an access token may carry.
fn header_typ_is_access(token: &str) -> bool {
    jsonwebtoken::decode_header(token)
        .ok()
        .and_then(|header| header.typ)
        .is_none_or(|typ| {
            ["jwt", "at+jwt", "application/at+jwt"]
                .iter()
                .any(|ok| typ.eq_ignore_ascii_case(ok))
        })
}

/// The S256 PKCE challenge of a verifier (RFC 7636).
fn code_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

impl OidcProviders {
    /// The providers of `[auth.oidc]`, reached through `http`.
    pub fn new(settings: &OidcSettings, http: Arc<dyn HttpClient>, production: bool) -> Self {
        let providers = settings
            .providers
            .iter()
            .map(|(name, provider)| {
                let audience = provider
                    .audience
                    .clone()
                    .unwrap_or_else(|| provider.client_id.clone());
                (
                    name.clone(),
                    Arc::new(Provider {
                        name: name.clone(),
                        settings: provider.clone(),
                        audience,
                        keys: std::sync::RwLock::default(),
                        fetching: tokio::sync::Mutex::new(Fetching::default()),
                    }),
                )
            })
            .collect();
        Self {
            providers,
            http,
            leeway: settings.clock_skew.as_secs(),
            refetch_interval: settings.jwks_refetch_interval,
            max_age: settings.jwks_max_age,
            production,
        }
    }

    /// Whether a URL a provider published may be used (the issuer's own rules).
    fn allowed(&self, raw: &str) -> bool {
        url::Url::parse(raw).is_ok_and(|url| provider_url_allowed(&url, self.production))
    }

    fn provider(&self, name: &str) -> Result<&Arc<Provider>, ProviderError> {
        self.providers
            .get(name)
            .ok_or(ProviderError::UnknownProvider)
    }

    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
    ) -> Result<T, ProviderError> {
        let response = self
            .http
            .send(OutboundRequest::get(url).header("accept", "application/json"))
            .await
            .and_then(|r| r.error_for_status())
            .map_err(unreachable)?;
        response.json::<T>().map_err(unreachable)
    }

    /// The discovery document, fetched when missing or older than `jwks_max_age`. A failed
    /// refresh keeps the copy it has.
    async fn metadata(
        &self,
        provider: &Provider,
        known: &mut Fetching,
    ) -> Result<Metadata, ProviderError> {
        if let Some((metadata, at)) = &known.metadata
            && (at.elapsed() < self.max_age
                || known
                    .metadata_attempted
                    .is_some_and(|at| at.elapsed() < self.refetch_interval))
        {
            // Fresh, or a refresh failed moments ago: the copy in hand, not another attempt.
            return Ok(metadata.clone());
        }
        known.metadata_attempted = Some(Instant::now());
        let url = format!(
            "{}/.well-known/openid-configuration",
            provider.settings.issuer.trim_end_matches('/')
        );
        let fetched = self.get_json::<Metadata>(&url).await.and_then(|metadata| {
            // OpenID Connect Discovery 1.0 §4.3: the document must name the issuer asked for.
            if metadata.issuer != provider.settings.issuer {
                return Err(unreachable(format!(
                    "the discovery document names issuer `{}`, not the configured `{}`",
                    metadata.issuer, provider.settings.issuer
                )));
            }
            for endpoint in [
                &metadata.authorization_endpoint,
                &metadata.token_endpoint,
                &metadata.jwks_uri,
            ] {
                if !self.allowed(endpoint) {
                    return Err(unreachable(format!(
                        "the discovery document's endpoint `{endpoint}` is not https (http only on loopback outside production)"
                    )));
                }
            }
            Ok(metadata)
        });
        match fetched {
            Ok(metadata) => {
                known.metadata = Some((metadata.clone(), Instant::now()));
                Ok(metadata)
            }
            Err(error) => {
                tracing::warn!(provider = %provider.name, error = %error, "identity provider discovery failed");
                match &known.metadata {
                    Some((metadata, _)) => Ok(metadata.clone()),
                    None => Err(error),
                }
            }
        }
    }

    /// Fetches the provider's keys (JWKS), keeping the signing keys Keel can use.
    async fn fetch_keys(
        &self,
        provider: &Provider,
        known: &mut Fetching,
    ) -> Result<(), ProviderError> {
        known.keys_attempted = Some(Instant::now());
        let metadata = self.metadata(provider, known).await?;
        #[derive(Deserialize)]
        struct Published {
            keys: Vec<Value>,
        }
        let set = self.get_json::<Published>(&metadata.jwks_uri).await;
        let set = match set {
            Ok(set) => set,
            Err(error) => {
                tracing::warn!(provider = %provider.name, error = %error, "fetching the identity provider's keys failed");
                return Err(error);
            }
        };
        let keys: Vec<SigningKey> = set
            .keys
            .into_iter()
            // A key of a type or curve Keel does not know is skipped, not a failure of the set.
            .filter_map(|value| serde_json::from_value::<Jwk>(value).ok())
            .filter(|jwk| {
                !matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption))
                    && !matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_))
            })
            .filter_map(|jwk| {
                // A key published for an algorithm Keel does not verify with (an encryption
                // algorithm, HMAC) is no signing key of this provider's for Keel.
                let algorithm = match jwk.common.key_algorithm.as_ref() {
                    Some(named) => Some(
                        named
                            .to_string()
                            .parse::<Algorithm>()
                            .ok()
                            .filter(|a| ALGORITHMS.contains(a))?,
                    ),
                    None => None,
                };
                let key = DecodingKey::from_jwk(&jwk).ok()?;
                Some(SigningKey {
                    kid: jwk.common.key_id.clone(),
                    algorithm,
                    key,
                })
            })
            .collect();
        tracing::info!(provider = %provider.name, keys = keys.len(), "fetched the identity provider's signing keys");
        // A provider that withdrew every key it had: none of the old ones is trusted on.
        let empty = keys.is_empty();
        let keys = Arc::new(KeySet {
            keys: keys.into_iter().take(MAX_KEYS).collect(),
            fetched: Some(Instant::now()),
        });
        *provider
            .keys
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = keys;
        if empty {
            return Err(unreachable("the provider publishes no usable signing key"));
        }
        Ok(())
    }

    /// The key that signed a token with header `kid` and `algorithm`: from the keys in hand
    /// while they are younger than `jwks_max_age`, else from a fetch. Fetches happen one at a
    /// time per provider and at most once per `jwks_refetch_interval`, whatever arrives (a
    /// stream of forged `kid`s, or tokens while the provider is down); meanwhile, a token
    /// whose key is in hand is verified without waiting.
    async fn key_for(
        &self,
        provider: &Provider,
        kid: Option<&str>,
        algorithm: Algorithm,
    ) -> Result<DecodingKey, ProviderError> {
        let find = |set: &KeySet| -> Option<DecodingKey> {
            let fits = |k: &&SigningKey| k.algorithm.is_none_or(|a| a == algorithm);
            let found = match kid {
                Some(kid) => set
                    .keys
                    .iter()
                    .filter(fits)
                    .find(|k| k.kid.as_deref() == Some(kid))
                    // A provider that labels no key: its single key for the algorithm.
                    .or_else(|| {
                        let mut unlabelled =
                            set.keys.iter().filter(fits).filter(|k| k.kid.is_none());
                        match (unlabelled.next(), unlabelled.next()) {
                            (Some(only), None) => Some(only),
                            _ => None,
                        }
                    }),
                // No `kid`: only unambiguous with a single candidate key.
                None => {
                    let mut candidates = set.keys.iter().filter(fits);
                    match (candidates.next(), candidates.next()) {
                        (Some(only), None) => Some(only),
                        _ => None,
                    }
                }
            };
            found.map(|k| k.key.clone())
        };
        let fresh = |set: &KeySet| set.fetched.is_some_and(|at| at.elapsed() < self.max_age);
        let keys = provider.keys();
        let in_hand = find(&keys);
        if let Some(key) = &in_hand
            && fresh(&keys)
        {
            return Ok(key.clone());
        }
        // Stale but usable: refresh if nobody else is, else use what is in hand.
        let mut fetching = match (&in_hand, provider.fetching.try_lock()) {
            (_, Ok(guard)) => guard,
            (Some(key), Err(_)) => return Ok(key.clone()),
            (None, Err(_)) => provider.fetching.lock().await,
        };
        // Someone may have fetched while this request waited.
        let keys = provider.keys();
        if let Some(key) = find(&keys)
            && fresh(&keys)
        {
            return Ok(key);
        }
        let may_fetch = fetching
            .keys_attempted
            .is_none_or(|at| at.elapsed() >= self.refetch_interval);
        let fetched = if may_fetch {
            self.fetch_keys(provider, &mut fetching).await
        } else {
            Ok(())
        };
        drop(fetching);
        let keys = provider.keys();
        match find(&keys) {
            Some(key) => Ok(key),
            // Nothing in hand at all: the provider is unreachable, not the token wrong.
            None if keys.keys.is_empty() => Err(fetched.err().unwrap_or_else(|| {
                unreachable("the provider's keys could not be fetched; retrying shortly")
            })),
            None => Err(rejected(format!(
                "signed with a key the provider does not publish (kid {})",
                kid.map_or_else(|| "none".to_owned(), |k| k.chars().take(64).collect())
            ))),
        }
    }

    /// Verifies a JWT of `provider`: algorithm, key, signature, `iss`, `aud`, `exp`/`nbf`/`iat`
    /// within the clock skew. Returns its claims.
    async fn verify(
        &self,
        provider: &Provider,
        token: &str,
        audience: &str,
        required: &[&str],
    ) -> Result<Value, ProviderError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| rejected(format!("header: {e}")))?;
        if !ALGORITHMS.contains(&header.alg) {
            return Err(rejected(format!(
                "algorithm {:?} is not accepted",
                header.alg
            )));
        }
        let key = self
            .key_for(provider, header.kid.as_deref(), header.alg)
            .await?;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&provider.settings.issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(required);
        validation.validate_nbf = true;
        validation.leeway = self.leeway;
        let claims = jsonwebtoken::decode::<Value>(token, &key, &validation)
            .map_err(|e| rejected(e.to_string()))?
            .claims;
        let now = chrono::Utc::now().timestamp();
        let leeway = i64::try_from(self.leeway).unwrap_or(300);
        match claims.get("iat").map(Value::as_i64) {
            Some(None) => return Err(rejected("`iat` is not a number of seconds")),
            Some(Some(iat)) if iat > now + leeway => {
                return Err(rejected("issued in the future"));
            }
            _ => {}
        }
        Ok(claims)
    }

    /// What verified claims say about the user.
    fn claims_of(provider: &Provider, claims: &Value) -> Result<ProviderClaims, ProviderError> {
        let subject = claims
            .get("sub")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty() && s.chars().count() <= SUBJECT_MAX_CHARS)
            .ok_or_else(|| rejected("no subject, or one longer than 255 characters"))?;
        let text = |name: &str| claims.get(name).and_then(Value::as_str).map(str::to_owned);
        let email_verified = match claims.get("email_verified") {
            Some(Value::Bool(verified)) => *verified,
            // Some providers send it as a string.
            Some(Value::String(text)) => text == "true",
            _ => false,
        };
        // Only mapped values count (no claim value names a Keel role by itself), and a token
        // without the claim says nothing about roles (an ID token often lacks what the access
        // token carries): the account keeps the roles it has.
        // The token's size (16 KiB at most) bounds the values; mapping before anything else
        // keeps a mapped value that comes late in a long list.
        let roles = provider
            .settings
            .roles_claim
            .as_deref()
            .and_then(|path| role_values(claim_at(claims, path)))
            .map(|values| {
                let map = &provider.settings.role_map;
                let roles: BTreeSet<String> = values
                    .into_iter()
                    .filter_map(|v| map.get(v).cloned())
                    .collect();
                roles.into_iter().collect()
            });
        Ok(ProviderClaims {
            provider: provider.name.clone(),
            user: ExternalUser {
                subject: subject.to_owned(),
                email: text("email"),
                name: text("name"),
                email_verified,
            },
            roles,
            allow_signup: provider.settings.allow_signup,
        })
    }

    /// OpenID Connect Core §3.1.3.7: with several audiences `azp` must be present, and when
    /// present it must be this client.
    fn check_authorized_party(provider: &Provider, claims: &Value) -> Result<(), ProviderError> {
        let several = claims
            .get("aud")
            .and_then(Value::as_array)
            .is_some_and(|aud| aud.len() > 1);
        match claims.get("azp").and_then(Value::as_str) {
            Some(azp) if azp != provider.settings.client_id => {
                Err(rejected("issued to another client (azp)"))
            }
            None if several => Err(rejected("several audiences and no azp")),
            _ => Ok(()),
        }
    }
}

#[async_trait]
impl IdentityProviders for OidcProviders {
    fn knows(&self, provider: &str) -> bool {
        self.providers.contains_key(provider)
    }

    async fn verify_access_token(
        &self,
        token: &str,
    ) -> Result<Option<ProviderClaims>, ProviderError> {
        if token.len() > TOKEN_MAX_BYTES {
            return Ok(None);
        }
        let Some(issuer) = peek_issuer(token) else {
            return Ok(None);
        };
        let Some(provider) = self
            .providers
            .values()
            .find(|p| p.settings.issuer == issuer)
        else {
            return Ok(None);
        };
        let result = async {
            let claims = self
                .verify(
                    provider,
                    token,
                    &provider.audience,
                    &["exp", "iss", "aud", "sub"],
                )
                .await?;
            // An ID token proves a sign-in to the client that asked for it; it is not a
            // credential for this API. What gives one away: a `nonce`, `at_hash` or `c_hash`,
            // Keycloak's `typ: "ID"`, or a header `typ` other than a JWT's or an access
            // token's (RFC 9068 `at+jwt`). With an `audience` of its own (not the client id),
            // the audience check alone already keeps them out.
            let id_token_typ = claims
                .get("typ")
                .and_then(Value::as_str)
                .is_some_and(|typ| typ.eq_ignore_ascii_case("id"));
            if ["nonce", "at_hash", "c_hash"]
                .iter()
                .any(|claim| claims.get(*claim).is_some())
                || id_token_typ
                || !header_typ_is_access(token)
            {
                return Err(rejected("an ID token is not an access token"));
            }
            let parties = &provider.settings.authorized_parties;
            if !parties.is_empty() {
                let party = claims
                    .get("azp")
                    .or_else(|| claims.get("client_id"))
                    .and_then(Value::as_str);
                if !party.is_some_and(|p| parties.iter().any(|allowed| allowed == p)) {
                    return Err(rejected(
                        "issued to a client that is not an authorized party",
                    ));
                }
            }
            Self::claims_of(provider, &claims)
        }
        .await;
        if let Err(error) = &result {
            // Debug, not info: forged tokens are free to send and must not flood the logs.
            let reason: String = error.to_string().chars().take(200).collect();
            tracing::debug!(provider = %provider.name, %reason, "refused an identity provider's access token");
        }
        result.map(Some)
    }

    async fn authorization_url(
        &self,
        provider: &str,
        redirect_uri: &str,
        state: &str,
        nonce: &str,
        code_verifier: &str,
    ) -> Result<String, ProviderError> {
        let provider = self.provider(provider)?;
        let metadata = {
            let mut fetching = provider.fetching.lock().await;
            self.metadata(provider, &mut fetching).await?
        };
        let mut url = url::Url::parse(&metadata.authorization_endpoint).map_err(unreachable)?;
        let scopes: BTreeSet<&str> = std::iter::once("openid")
            .chain(provider.settings.scopes.iter().map(String::as_str))
            .collect();
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &provider.settings.client_id)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("scope", &scopes.into_iter().collect::<Vec<_>>().join(" "))
            .append_pair("state", state)
            .append_pair("nonce", nonce)
            .append_pair("code_challenge", &code_challenge(code_verifier))
            .append_pair("code_challenge_method", "S256");
        Ok(url.into())
    }

    async fn exchange_code(
        &self,
        provider: &str,
        code: &str,
        redirect_uri: &str,
        code_verifier: &str,
        nonce: &str,
    ) -> Result<ProviderClaims, ProviderError> {
        let provider = self.provider(provider)?;
        let metadata = {
            let mut fetching = provider.fetching.lock().await;
            self.metadata(provider, &mut fetching).await?
        };
        let client_id = provider.settings.client_id.as_str();
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", code_verifier),
        ];
        let mut request = OutboundRequest::post(&metadata.token_endpoint)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("accept", "application/json");
        match &provider.settings.client_secret {
            // client_secret_basic (RFC 6749 §2.3.1): both parts form-encoded, then base64.
            Some(secret) => {
                let encode =
                    |s: &str| serde_urlencoded::to_string([("", s)]).map(|e| e[1..].to_owned());
                let id = encode(client_id).map_err(unreachable)?;
                let secret = encode(secret.expose_secret()).map_err(unreachable)?;
                request = request.header(
                    "authorization",
                    format!("Basic {}", STANDARD.encode(format!("{id}:{secret}"))),
                );
            }
            None => form.push(("client_id", client_id)),
        }
        let body = serde_urlencoded::to_string(&form).map_err(unreachable)?;
        let response = self
            .http
            .send(request.body(body.into_bytes()))
            .await
            .map_err(unreachable)?;
        if response.status >= 500 {
            return Err(unreachable(OutboundError::Unavailable {
                host: response.host.clone(),
                reason: format!("the token endpoint answered {}", response.status),
            }));
        }
        #[derive(Deserialize)]
        struct TokenAnswer {
            id_token: Option<String>,
            error: Option<String>,
        }
        let answer = response.json::<TokenAnswer>();
        let refusal = match &answer {
            _ if response.status >= 400 => Some(
                answer
                    .as_ref()
                    .ok()
                    .and_then(|a| a.error.clone())
                    .unwrap_or_else(|| response.status.to_string()),
            ),
            Ok(TokenAnswer {
                error: Some(error), ..
            }) => Some(error.clone()),
            _ => None,
        };
        if let Some(error) = refusal {
            let error: String = error.chars().take(64).collect();
            tracing::info!(provider = %provider.name, %error, "the identity provider refused the authorization code");
            return Err(rejected(format!("the provider refused the code: {error}")));
        }
        let id_token = answer
            .map_err(unreachable)?
            .id_token
            .ok_or_else(|| rejected("the token answer has no id_token"))?;
        let claims = self
            .verify(
                provider,
                &id_token,
                client_id,
                &["exp", "iss", "aud", "sub"],
            )
            .await?;
        // OpenID Connect Core §2: an ID token always says when it was issued.
        if claims.get("iat").is_none() {
            return Err(rejected("the ID token has no `iat`"));
        }
        Self::check_authorized_party(provider, &claims)?;
        // The nonce ties the ID token to this sign-in: a token replayed from another fails.
        if claims.get("nonce").and_then(Value::as_str) != Some(nonce) {
            return Err(rejected("the ID token's nonce is not this sign-in's"));
        }
        Self::claims_of(provider, &claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_read_from_lists_strings_and_nested_claims() {
        let claims = serde_json::json!({
            "groups": ["a", "b"],
            "scope": "x y,z",
            "realm_access": {"roles": ["admin"]},
            "https://keel.example/roles": ["ns"],
            "nothing": null,
        });
        assert_eq!(
            role_values(claim_at(&claims, "groups")),
            Some(vec!["a", "b"])
        );
        assert_eq!(
            role_values(claim_at(&claims, "scope")),
            Some(vec!["x", "y", "z"])
        );
        assert_eq!(
            role_values(claim_at(&claims, "realm_access.roles")),
            Some(vec!["admin"])
        );
        assert_eq!(
            role_values(claim_at(&claims, "https://keel.example/roles")),
            Some(vec!["ns"])
        );
        assert_eq!(role_values(claim_at(&claims, "missing.path")), None);
        assert_eq!(role_values(claim_at(&claims, "nothing")), None);
    }

    #[test]
    fn the_pkce_challenge_is_rfc_7636_s256() {
        // RFC 7636 appendix B.
        assert_eq!(
            code_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn the_issuer_is_peeked_without_trusting_anything() {
        let payload = URL_SAFE_NO_PAD.encode(br#"{"iss":"https://idp.example"}"#);
        assert_eq!(
            peek_issuer(&format!("e30.{payload}.sig")).as_deref(),
            Some("https://idp.example")
        );
        assert_eq!(peek_issuer("not-a-jwt"), None);
        assert_eq!(peek_issuer("a.!!!.c"), None);
    }
}
